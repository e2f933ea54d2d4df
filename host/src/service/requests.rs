//! What callers send and get back: the REST API's JSON bodies, which the CLI also builds from
//! its flags and files, so that both run the same operation on the same input.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::wire::{Event, Stack};
use crate::engine::PlannedChange;
use crate::model::{Action, OnFailure, Status};
use crate::template::SourceFile;

/// `POST /v1/stacks`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateStack {
    pub name: String,
    pub template: SourceFile,
    #[serde(default)]
    pub environments: Vec<SourceFile>,
    /// Values as `-P KEY=VALUE` gives them; numbers and booleans are taken as their text.
    #[serde(default)]
    pub parameters: BTreeMap<String, Value>,
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Each action's timeout in seconds (none or 0: no timeout).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    #[serde(default)]
    pub enable_rollback: bool,
    /// The project to create it in: only an admin may name another than its own.
    #[serde(default)]
    pub project: Option<String>,
}

/// `PUT /v1/stacks/{stack}`, `PATCH` (as `existing: true`) and `POST .../preview`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateStack {
    /// The new template; with `existing` it may be left out to keep the stored one.
    #[serde(default)]
    pub template: Option<SourceFile>,
    /// The new environments; with `existing` and none given, the stored ones are kept.
    #[serde(default)]
    pub environments: Option<Vec<SourceFile>>,
    /// Parameter values; with `existing` they patch the stored ones.
    #[serde(default)]
    pub parameters: BTreeMap<String, Value>,
    /// Start from what the stack was made from (template, environments, parameters).
    #[serde(default)]
    pub existing: bool,
    #[serde(default)]
    pub on_failure: Option<OnFailure>,
    /// The stack's timeout from now on, in seconds; 0 removes it; absent keeps it.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Roll back failed actions from now on (this update included), or stop doing so.
    #[serde(default)]
    pub rollback: Option<bool>,
    /// Take over from a create, update or rollback in progress instead of being refused.
    #[serde(default)]
    pub supersede: bool,
}

/// `POST /v1/stacks/{stack}/cancel`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelStack {
    /// Roll back afterwards when the stack has rollback enabled (default true).
    #[serde(default)]
    pub rollback: Option<bool>,
}

/// `POST /v1/validate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateTemplate {
    pub template: SourceFile,
    #[serde(default)]
    pub environments: Vec<SourceFile>,
    #[serde(default)]
    pub parameters: BTreeMap<String, Value>,
}

/// How many resources are in one state, e.g. 3 in `CREATE_COMPLETE`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusCount {
    pub status: String,
    pub count: i64,
}

/// One output of a stack, resolved from its resources now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutputValue {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// Why the value is unavailable (a resource not created, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /v1/stacks/{stack}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShowStack {
    pub stack: Stack,
    pub resources: Vec<StatusCount>,
    /// A few of the resources being worked on now.
    #[serde(default)]
    pub in_progress: Vec<String>,
    /// Left out when asked for without (`?outputs=false`), as progress displays do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<OutputValue>>,
}

/// `GET /v1/stacks/{stack}/events`: a page, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// When the page is full: the `after` of the next page.
    pub next: Option<i64>,
}

/// `POST /v1/stacks/{stack}/preview`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Preview {
    pub stack: String,
    pub changes: Vec<PlannedChange>,
    pub summary: String,
}

/// One resource of `GET /v1/stacks/{stack}/graph`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GraphNode {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub action: Action,
    pub status: Status,
    pub status_reason: String,
    pub depends_on: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Graph {
    pub stack: Stack,
    pub nodes: Vec<GraphNode>,
}

/// A parameter value as the template layer takes it: text.
pub fn parameter_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A parameter map as `(key, text)` pairs.
pub fn parameter_pairs(map: &BTreeMap<String, Value>) -> Vec<(String, String)> {
    map.iter()
        .map(|(k, v)| (k.clone(), parameter_text(v)))
        .collect()
}
