//! The engine: turns stack actions into traversals of job rows and works through jobs with a
//! pool of worker tasks. Everything it needs to resume lives in the store; what it keeps in
//! memory (parsed templates) is a cache that any other engine can rebuild.
//!
//! `actions` starts stack actions; `run_loop` runs the workers; `job` works one claimed job
//! through its `steps` (`update` for updates; a failed call is judged by `retry/`); `traversal`
//! schedules what is ready and ends traversals; `maintenance` is the leader's periodic work.

mod actions;
mod builtin;
mod change;
mod job;
mod maintenance;
mod preview;
mod resolver;
mod run_loop;
mod steps;
mod traversal;
mod traversal_plan;
mod update;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::config::EngineConfig;
use crate::model::OnFailure;
use crate::plugin_set::PluginSet;
use crate::retry::RetryPolicies;
use crate::store::Store;
pub use change::Change;
pub use preview::{PlannedChange, PropertyChange};
pub use resolver::StoredResolver;
use traversal_plan::TraversalPlan;

/// One engine process's workers. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    store: Store,
    plugins: Arc<PluginSet>,
    config: EngineConfig,
    /// Wakes idle workers when this process makes new jobs (other processes' jobs are found
    /// by polling).
    wake: Notify,
    /// Parsed templates by stack id, tagged with their traversal.
    plans: Mutex<HashMap<String, Arc<TraversalPlan>>>,
    host: String,
    /// Retry policies; None in a process that only reads (then a failed call fails).
    retry: Option<Arc<RetryPolicies>>,
    /// Jobs this engine is working on, by stack (for the per-stack limit).
    running: Mutex<HashMap<String, usize>>,
}

/// What a stack was made from, kept for later updates (`--existing`) and for display.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Sources {
    pub template: String,
    pub template_text: String,
    pub environments: Vec<(String, String)>,
    pub parameters: Vec<(String, String)>,
    /// Absent in stacks stored before options existed: the defaults.
    #[serde(default)]
    pub options: StackOptions,
}

/// How a stack's actions behave, chosen at create and changeable by an update.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StackOptions {
    #[serde(default)]
    pub on_failure: OnFailure,
    /// How long each action may take, in seconds, before it is stopped as timed out (by any
    /// engine: the deadline is in the database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// A failed create or update converges back on the stack's previous template (for a
    /// create: deletes what it made), as Heat's `disable_rollback: false`.
    #[serde(default)]
    pub rollback: bool,
}

impl StackOptions {
    fn timeout_ms(&self) -> Option<i64> {
        self.timeout_secs.map(|s| (s as i64).saturating_mul(1000))
    }
}

impl Engine {
    /// Only `app::App` builds engines, so that every engine runs with the configured plugins
    /// and retry policies. Without policies (`None`: a process that only reads) a failed call
    /// fails at once.
    pub(crate) fn new(
        store: Store,
        plugins: Arc<PluginSet>,
        retry: Option<RetryPolicies>,
        config: EngineConfig,
    ) -> Self {
        let retry = retry.map(Arc::new);
        let host = hostname();
        let id = format!(
            "{host}-{}-{:04x}",
            std::process::id(),
            rand::random::<u16>()
        );
        Self {
            inner: Arc::new(Inner {
                id,
                store,
                plugins,
                config,
                wake: Notify::new(),
                plans: Mutex::new(HashMap::new()),
                running: Mutex::new(HashMap::new()),
                host,
                retry,
            }),
        }
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn plugins(&self) -> &PluginSet {
        &self.inner.plugins
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

fn new_id() -> String {
    let bytes: [u8; 16] = rand::random();
    let h = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
