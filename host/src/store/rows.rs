//! The rows of stacks, resources and events as the store returns them, what a new stack or an
//! update writes, and the decoding of rows (a stored name the model does not know is corrupt
//! data, not a panic).

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Result, StoreError, parsed};
use crate::model::{Action, EventStatus, OnFailure, Status};

#[derive(Debug, Clone)]
pub struct StackRow {
    pub id: String,
    pub name: String,
    /// The tenant it belongs to (the API token's project; `default` for the embedded CLI).
    pub project: String,
    pub action: Action,
    pub status: Status,
    pub status_reason: String,
    pub traversal: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// Set while a cancel of the current action is under way.
    pub cancel_requested_at: Option<i64>,
    pub on_failure: OnFailure,
    /// When the current action times out (the stack's timeout after it started), if the
    /// stack has a timeout.
    pub deadline_at: Option<i64>,
    /// The failed action asked for a rollback that has not started yet.
    pub rollback_pending: bool,
}

#[derive(Debug, Clone)]
pub struct ResourceRow {
    pub name: String,
    pub type_name: String,
    pub action: Action,
    pub status: Status,
    pub status_reason: String,
    pub physical_id: Option<String>,
    pub state: Option<String>,
    pub attributes: Option<serde_json::Value>,
    /// The properties last applied (JSON; see `applied_properties`).
    pub properties: Option<String>,
    pub updated_at: i64,
    /// The names it depended on when last applied (JSON list).
    pub requires: Option<String>,
    /// `Delete` or `Retain`, as last applied.
    pub deletion_policy: Option<String>,
    /// The traversal that last worked on it (its job's, once a job started on it).
    pub traversal: i64,
}

#[derive(Debug, Clone)]
pub struct EventRow {
    pub id: i64,
    pub resource: Option<String>,
    pub action: Action,
    pub status: EventStatus,
    pub reason: String,
    pub physical_id: Option<String>,
    pub engine: Option<String>,
    pub at: i64,
}

/// A resource of a new stack.
pub struct NewResource {
    pub name: String,
    pub type_name: String,
    /// How many resources it waits for (those with none start at once).
    pub deps: usize,
}

/// A stack's new definition, for an update.
pub struct StackUpdate {
    pub template: String,
    pub sources: String,
    /// A new `on_failure`, if it changes.
    pub on_failure: Option<OnFailure>,
    /// The stack's timeout from now on (None: none).
    pub timeout_ms: Option<i64>,
    /// Whether a failure of this and later actions rolls back.
    pub rollback: bool,
    /// For a rollback: the traversal of the failed action it undoes.
    pub rollback_of: Option<i64>,
    /// Take the stack over from a create, update or rollback in progress (`--supersede`).
    pub supersede: bool,
    /// Every resource of the new template (rows are made for those the stack lacks).
    pub resources: Vec<NewResource>,
}

pub struct NewStack {
    pub id: String,
    pub name: String,
    pub project: String,
    pub on_failure: OnFailure,
    pub timeout_ms: Option<i64>,
    pub rollback: bool,
    pub template: String,
    pub sources: String,
    pub resources: Vec<NewResource>,
}

/// The stack's header: everything but the (large) template, which `stack_template` reads.
pub(super) const STACK_COLUMNS: &str = "id, name, action, status, status_reason, traversal, created_at, updated_at, cancel_requested_at, on_failure, deadline_at, rollback_pending, project";

pub(super) fn stack_row(r: &AnyRow) -> Result<StackRow> {
    Ok(StackRow {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        action: parsed(r, 2)?,
        status: parsed(r, 3)?,
        status_reason: r.try_get(4)?,
        traversal: r.try_get(5)?,
        created_at: r.try_get(6)?,
        updated_at: r.try_get(7)?,
        cancel_requested_at: r.try_get(8)?,
        on_failure: parsed(r, 9)?,
        deadline_at: r.try_get(10)?,
        rollback_pending: r.try_get::<i64, _>(11)? == 1,
        project: r.try_get(12)?,
    })
}

/// Rows per multi-row INSERT: well under SQLite's and PostgreSQL's bind-parameter limits.
pub(super) const CHUNK: usize = 200;

impl ResourceRow {
    /// The properties last applied, if any were (a create that failed applied none).
    pub fn applied_properties(&self) -> Option<serde_json::Value> {
        self.properties
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok())
    }
}

pub(super) fn resource_row(r: &AnyRow) -> Result<ResourceRow> {
    let attributes: Option<String> = r.try_get(7)?;
    let attributes = attributes
        .map(|a| {
            serde_json::from_str(&a).map_err(|e| StoreError::Corrupt(format!("attributes: {e}")))
        })
        .transpose()?;
    Ok(ResourceRow {
        name: r.try_get(0)?,
        type_name: r.try_get(1)?,
        action: parsed(r, 2)?,
        status: parsed(r, 3)?,
        status_reason: r.try_get(4)?,
        physical_id: r.try_get(5)?,
        state: r.try_get(6)?,
        attributes,
        updated_at: r.try_get(8)?,
        properties: r.try_get(9)?,
        requires: r.try_get(10)?,
        deletion_policy: r.try_get(11)?,
        traversal: r.try_get(12)?,
    })
}

pub(super) fn event_row(r: &AnyRow) -> Result<EventRow> {
    Ok(EventRow {
        id: r.try_get(0)?,
        resource: r.try_get(1)?,
        action: parsed(r, 2)?,
        status: parsed(r, 3)?,
        reason: r.try_get(4)?,
        physical_id: r.try_get(5)?,
        engine: r.try_get(6)?,
        at: r.try_get(7)?,
    })
}

/// Milliseconds since the epoch as UTC `YYYY-MM-DD HH:MM:SS`.
pub fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_epoch_millis() {
        assert_eq!(super::format_ms(0), "1970-01-01 00:00:00");
        assert_eq!(super::format_ms(1_795_305_563_425), "2026-11-21 23:59:23");
    }
}
