//! Stacks, resources, events and engines as the API and the CLI's JSON show them: their own
//! structs, apart from the store's rows, so that a column renamed in the store cannot change
//! the API (the conversions below are where the two meet). `api/openapi.json` describes these.

use serde::{Deserialize, Serialize};

use crate::model::{Action, EventStatus, Liveness, OnFailure, Status};
use crate::store::{EngineStatus, EventRow, ResourceRow, StackRow};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stack {
    pub id: String,
    pub name: String,
    /// The tenant it belongs to (the API token's project; `default` for the embedded CLI).
    pub project: String,
    pub action: Action,
    pub status: Status,
    pub status_reason: String,
    /// The current action's number; each action is one traversal.
    pub traversal: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// Set while a cancel of the current action is under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_requested_at: Option<i64>,
    pub on_failure: OnFailure,
    /// When the current action times out, if the stack has a timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    pub name: String,
    /// The type that serves it.
    #[serde(rename = "type")]
    pub type_name: String,
    pub action: Action,
    pub status: Status,
    pub status_reason: String,
    pub physical_id: Option<String>,
    pub attributes: Option<serde_json::Value>,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: i64,
    /// None for an event about the whole stack.
    pub resource: Option<String>,
    pub action: Action,
    pub status: EventStatus,
    pub reason: String,
    pub physical_id: Option<String>,
    /// The engine that wrote it.
    pub engine: Option<String>,
    /// On the database's clock, ms since the epoch.
    pub at: i64,
}

/// An engine as `kiln engine list` and `GET /v1/engines` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Engine {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub version: String,
    pub status: Liveness,
    pub started_at: i64,
    pub heartbeat_at: i64,
    pub heartbeat_age_ms: i64,
    /// Jobs it holds an unexpired lease on.
    pub jobs_in_flight: i64,
    /// Stack locks (actions) it holds.
    pub locks_held: i64,
    /// Whether it holds the leader lease (and so runs maintenance).
    pub leader: bool,
}

impl From<StackRow> for Stack {
    fn from(r: StackRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            project: r.project,
            action: r.action,
            status: r.status,
            status_reason: r.status_reason,
            traversal: r.traversal,
            created_at: r.created_at,
            updated_at: r.updated_at,
            cancel_requested_at: r.cancel_requested_at,
            on_failure: r.on_failure,
            deadline_at: r.deadline_at,
        }
    }
}

impl From<ResourceRow> for Resource {
    fn from(r: ResourceRow) -> Self {
        Self {
            name: r.name,
            type_name: r.type_name,
            action: r.action,
            status: r.status,
            status_reason: r.status_reason,
            physical_id: r.physical_id,
            attributes: r.attributes,
            updated_at: r.updated_at,
        }
    }
}

impl From<EventRow> for Event {
    fn from(r: EventRow) -> Self {
        Self {
            id: r.id,
            resource: r.resource,
            action: r.action,
            status: r.status,
            reason: r.reason,
            physical_id: r.physical_id,
            engine: r.engine,
            at: r.at,
        }
    }
}

impl From<EngineStatus> for Engine {
    fn from(e: EngineStatus) -> Self {
        Self {
            id: e.id,
            host: e.host,
            pid: e.pid,
            version: e.version,
            status: e.status,
            started_at: e.started_at,
            heartbeat_at: e.heartbeat_at,
            heartbeat_age_ms: e.heartbeat_age_ms,
            jobs_in_flight: e.jobs_in_flight,
            locks_held: e.locks_held,
            leader: e.leader,
        }
    }
}

/// Rows as their wire form.
pub(crate) fn all<R, W: From<R>>(rows: Vec<R>) -> Vec<W> {
    rows.into_iter().map(W::from).collect()
}
