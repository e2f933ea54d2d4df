//! The engine: turns stack actions into traversals of job rows and works through jobs with a
//! pool of worker tasks. Everything it needs to resume lives in the store; what it keeps in
//! memory (parsed templates) is a cache that any other engine can rebuild.

mod builtin;
mod change;
mod maintenance;
mod plan;
mod preview;
mod resolver;
mod update;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::config::EngineConfig;
use crate::registry::PluginSet;
use crate::retry::RetryPolicies;
use crate::store::{
    Candidate, Claim, NewResource, NewStack, StackRow, StackUpdate, Store, StoreError,
};
use crate::template;
pub use change::Change;
use plan::{Plan, Removal, recorded_requires};
pub use preview::{PlannedChange, PropertyChange};
pub use resolver::StoredResolver;

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
    plans: Mutex<HashMap<String, Arc<Plan>>>,
    host: String,
    /// Retry policies; None when no policy plugin is loaded (then a failed call fails).
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

/// What a resource failure does to the rest of an action.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Start nothing new; running work finishes and is recorded (Heat's behaviour).
    #[default]
    Stop,
    /// Go on with every branch that does not need the failed resource.
    Continue,
}

impl OnFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Stop => "stop",
            OnFailure::Continue => "continue",
        }
    }
}

impl Engine {
    pub fn new(store: Store, plugins: Arc<PluginSet>, config: EngineConfig) -> Self {
        let retry = RetryPolicies::defaults(&plugins).map(Arc::new);
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

    /// Uses the configured retry policies (`RetryPolicies::load`) instead of the default one.
    /// Call before the engine is cloned or run.
    pub fn with_retry(mut self, policies: RetryPolicies) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("with_retry before the engine is shared")
            .retry = Some(Arc::new(policies));
        self
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

    /// Stores a validated stack in project `default` and starts creating it.
    pub async fn create_stack(
        &self,
        name: &str,
        stack: &template::Stack,
        sources: &Sources,
    ) -> Result<StackRow, StoreError> {
        self.create_stack_in("default", name, stack, sources).await
    }

    /// Stores a validated stack in `project` and starts creating it.
    pub async fn create_stack_in(
        &self,
        project: &str,
        name: &str,
        stack: &template::Stack,
        sources: &Sources,
    ) -> Result<StackRow, StoreError> {
        let new = NewStack {
            id: new_id(),
            name: name.to_string(),
            project: project.to_string(),
            on_failure: sources.options.on_failure.as_str().into(),
            timeout_ms: sources.options.timeout_ms(),
            rollback: sources.options.rollback,
            template: serde_json::to_string(stack).expect("a stack serialises"),
            sources: serde_json::to_string(sources).expect("sources serialise"),
            resources: new_resources(stack),
        };
        let row = self.inner.store.create_stack(&new, &self.inner.id).await?;
        self.inner.wake.notify_waiters();
        Ok(row)
    }

    /// Starts deleting a stack: dependents first, in reverse dependency order. Objects an
    /// update replaced or removed and did not get to delete go too, in the order recorded
    /// when they were made.
    pub async fn delete_stack(&self, name_or_id: &str) -> Result<StackRow, StoreError> {
        let row = self.inner.store.find_stack(name_or_id).await?;
        let plan = self.plan(&row).await?;
        let rows = self.inner.store.resources(&row.id).await?;
        let removal = plan.removal_of(&rows);
        let ready: Vec<&str> = removal
            .names()
            .filter(|n| removal.after(n).is_empty())
            .collect();
        let row = self
            .inner
            .store
            .begin_traversal(&row.id, "DELETE", &ready, &self.inner.id)
            .await?;
        self.inner.wake.notify_waiters();
        Ok(row)
    }

    /// Starts checking every resource of a stack against reality (plugin `check`): one that
    /// is gone or has drifted from its properties ends CHECK_FAILED, and the stack with it;
    /// a later update or resume repairs such resources.
    pub async fn check_stack(&self, name_or_id: &str) -> Result<StackRow, StoreError> {
        let row = self.inner.store.find_stack(name_or_id).await?;
        let rows = self.inner.store.resources(&row.id).await?;
        let all: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        let row = self
            .inner
            .store
            .begin_traversal(&row.id, "CHECK", &all, &self.inner.id)
            .await?;
        self.inner.wake.notify_waiters();
        Ok(row)
    }

    /// Starts updating a stack to a new template: resources whose properties are unchanged
    /// are left alone, the rest are updated in place, replaced or created in dependency
    /// order, and what the new template no longer has (or replaced) is deleted last.
    pub async fn update_stack(
        &self,
        name_or_id: &str,
        stack: &template::Stack,
        sources: &Sources,
    ) -> Result<StackRow, StoreError> {
        let row = self.inner.store.find_stack(name_or_id).await?;
        self.begin_update(&row.id, stack, sources, None, false)
            .await
    }

    /// Like `update_stack`, but an update (or create, or rollback) in progress is superseded
    /// instead of refusing: see `Store::begin_update`.
    pub async fn supersede_stack(
        &self,
        name_or_id: &str,
        stack: &template::Stack,
        sources: &Sources,
    ) -> Result<StackRow, StoreError> {
        let row = self.inner.store.find_stack(name_or_id).await?;
        self.begin_update(&row.id, stack, sources, None, true).await
    }

    /// Starts an UPDATE, or for `rollback_of` (the failed traversal) a ROLLBACK, towards
    /// `stack`.
    async fn begin_update(
        &self,
        stack_id: &str,
        stack: &template::Stack,
        sources: &Sources,
        rollback_of: Option<i64>,
        supersede: bool,
    ) -> Result<StackRow, StoreError> {
        let update = StackUpdate {
            supersede,
            template: serde_json::to_string(stack).expect("a stack serialises"),
            sources: serde_json::to_string(sources).expect("sources serialise"),
            on_failure: Some(sources.options.on_failure.as_str().into()),
            timeout_ms: sources.options.timeout_ms(),
            rollback: sources.options.rollback,
            rollback_of,
            resources: new_resources(stack),
        };
        let row = self
            .inner
            .store
            .begin_update(stack_id, &update, &self.inner.id)
            .await?;
        let plan = self.plan(&row).await?;
        let operation = if rollback_of.is_some() {
            "rollback"
        } else {
            "update"
        };
        self.advance(&plan, row.traversal, operation).await?;
        self.inner.wake.notify_waiters();
        self.inner.store.find_stack(&row.id).await
    }

    /// Starts the rollback a failed action asked for: an update back to the template the
    /// stack had before (after a failed create, to no resources at all). Returns None when
    /// it is not wanted any more (another action started, or it already started).
    pub(super) async fn start_rollback(
        &self,
        stack_id: &str,
        failed: i64,
    ) -> Result<Option<StackRow>, StoreError> {
        let store = &self.inner.store;
        let row = store.find_stack(stack_id).await?;
        if !row.rollback_pending || row.traversal != failed {
            return Ok(None);
        }
        let corrupt = |what: &str, e: serde_json::Error| {
            StoreError::Corrupt(format!("{what} of stack {}: {e}", row.name))
        };
        let current = self.sources(&row).await?;
        let (stack, mut sources) = match store.previous(stack_id).await? {
            Some((t, s)) => (
                serde_json::from_str::<template::Stack>(&t).map_err(|e| corrupt("template", e))?,
                serde_json::from_str::<Sources>(&s).map_err(|e| corrupt("sources", e))?,
            ),
            None => {
                // A failed create: back to nothing.
                let text = store.stack_template(stack_id).await?;
                let mut empty: template::Stack =
                    serde_json::from_str(&text).map_err(|e| corrupt("template", e))?;
                empty.resources.clear();
                empty.order.clear();
                empty.outputs.clear();
                (empty, current.clone())
            }
        };
        // The stack's options stay as they are now.
        sources.options = current.options;
        match self
            .begin_update(stack_id, &stack, &sources, Some(failed), false)
            .await
        {
            Ok(row) => Ok(Some(row)),
            // Someone else started an action (or this rollback) first.
            Err(StoreError::ActionInProgress { .. } | StoreError::StackNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Runs the stack's last action again after it failed or was cancelled, keeping what
    /// worked: a delete deletes what is left; a create or update converges on the stored
    /// template (an update to the same template).
    pub async fn resume_stack(&self, name_or_id: &str) -> Result<StackRow, StoreError> {
        let row = self.inner.store.find_stack(name_or_id).await?;
        if row.action == "DELETE" {
            return self.delete_stack(&row.id).await;
        }
        let text = self.inner.store.stack_template(&row.id).await?;
        let stack: template::Stack = serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("template of stack {}: {e}", row.name)))?;
        let sources = self.sources(&row).await?;
        self.update_stack(&row.id, &stack, &sources).await
    }

    /// What a stack was made from (its last create or update).
    pub async fn sources(&self, row: &StackRow) -> Result<Sources, StoreError> {
        let (text, _) = self.inner.store.stack_sources(&row.id).await?;
        serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("sources of stack {}: {e}", row.name)))
    }

    /// The stack's parsed template, from the cache when it is current.
    async fn plan(&self, row: &StackRow) -> Result<Arc<Plan>, StoreError> {
        if let Some(p) = self.inner.plans.lock().unwrap().get(&row.id)
            && p.traversal == row.traversal
        {
            return Ok(p.clone());
        }
        let template = self.inner.store.stack_template(&row.id).await?;
        let mut plan = Plan::parse(row, &template)?;
        if row.action == "DELETE" || row.action == "CHECK" {
            // The rows to delete (or check) are fixed when the action starts.
            let rows = self.inner.store.resources(&row.id).await?;
            plan.removal = Some(plan.removal_of(&rows));
        }
        let plan = Arc::new(plan);
        let mut plans = self.inner.plans.lock().unwrap();
        // A cache, not a registry: bounded, and rebuilt from the store on a miss.
        if plans.len() >= 256 {
            plans.clear();
        }
        plans.insert(row.id.clone(), plan.clone());
        Ok(plan)
    }

    /// Runs the workers until `stop` turns true, then shuts down gracefully: claims nothing
    /// new, lets running calls finish within `grace_ms` (leases kept alive meanwhile), hands
    /// back what is left, resigns leadership and marks itself stopped. Work left unfinished
    /// stays in the store for any engine.
    pub async fn run(&self, mut stop: watch::Receiver<bool>) {
        let (store, id) = (&self.inner.store, self.inner.id.as_str());
        let c = &self.inner.config;
        if let Err(e) = store
            .register_engine(id, &self.inner.host, std::process::id(), c.lease_ms as i64)
            .await
        {
            tracing::warn!("registering engine {id} failed: {e}");
        }
        let (drain, draining) = watch::channel(false);
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..c.workers {
            let (engine, draining) = (self.clone(), draining.clone());
            workers.spawn(async move { engine.work(draining).await });
        }
        let mut background = tokio::task::JoinSet::new();
        background.spawn({
            let engine = self.clone();
            async move { engine.heartbeat().await }
        });
        background.spawn({
            let engine = self.clone();
            async move { engine.maintain().await }
        });
        background.spawn({
            let engine = self.clone();
            async move { engine.listen().await }
        });

        let _ = stop.wait_for(|s| *s).await;
        tracing::info!(
            "engine {id} draining: no new jobs; running calls may take {} ms to finish",
            c.grace_ms
        );
        if let Err(e) = store.engine_draining(id).await {
            tracing::warn!("marking engine {id} draining failed: {e}");
        }
        let _ = drain.send(true);
        let grace = Duration::from_millis(c.grace_ms);
        let drained = tokio::time::timeout(grace, async {
            while workers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            // Past the grace period: stop the calls (a dropped call leaves nothing behind in
            // the sandbox) and hand their jobs back at once, fenced by a new token.
            workers.shutdown().await;
            match store.release_jobs(id).await {
                Ok(n) => tracing::warn!("grace period over: handed back {n} running jobs"),
                Err(e) => {
                    tracing::warn!("handing back jobs failed (their leases will expire): {e}")
                }
            }
        }
        background.shutdown().await;
        if let Err(e) = store.resign(id).await {
            tracing::warn!("resigning leadership failed (the lease will expire): {e}");
        }
        if let Err(e) = store.engine_stopped(id).await {
            tracing::warn!("deregistering engine {id} failed: {e}");
        }
        tracing::info!("engine {id} stopped");
    }

    /// Keeps the leases of running jobs (a long create) and this engine's registration alive.
    async fn heartbeat(&self) {
        let c = &self.inner.config;
        let beat = c.heartbeat();
        let lease = c.lease_ms as i64;
        loop {
            tokio::time::sleep(beat).await;
            let store = &self.inner.store;
            if let Err(e) = store.extend_leases(&self.inner.id, lease).await {
                tracing::warn!("extending leases failed: {e}");
            }
            if let Err(e) = store.engine_heartbeat(&self.inner.id).await {
                tracing::warn!("engine heartbeat failed: {e}");
            }
        }
    }

    /// One worker: claim, process, repeat; sleep until the next due job when idle.
    async fn work(&self, mut stop: watch::Receiver<bool>) {
        let c = &self.inner.config;
        let idle = Duration::from_millis(c.poll_interval_ms);
        while !*stop.borrow() {
            let skip = self.saturated();
            // The slot is taken inside the claim's transaction, so the limit is exact.
            let mut taken = None;
            let admit = |stack: &str| {
                let ok = self.take_slot(stack);
                if ok {
                    taken = Some(stack.to_string());
                }
                ok
            };
            let claimed = self
                .inner
                .store
                .claim(&self.inner.id, c.lease_ms as i64, &skip, admit)
                .await;
            if let (Err(_), Some(stack)) = (&claimed, &taken) {
                self.release_slot(stack);
            }
            match claimed {
                Ok(Claim::Job(job)) => {
                    // There may be more: let an idle worker look while this one works.
                    self.inner.wake.notify_one();
                    let stack = job.stack_id.clone();
                    let woke = self.process(job).await;
                    if self.release_slot(&stack) || woke {
                        self.inner.wake.notify_waiters();
                    }
                    continue;
                }
                Ok(Claim::Refused(_)) => continue,
                Ok(Claim::Nothing) => {}
                Err(e) => tracing::warn!("claiming a job failed: {e}"),
            }
            // With stacks held back by the limit, due jobs may wait: sleep until woken.
            let wait = match self.inner.store.next_due_in().await {
                Ok(Some(ms)) if skip.is_empty() => idle.min(Duration::from_millis(ms as u64)),
                _ => idle,
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.wake.notified() => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Stacks whose jobs this engine runs `max_concurrent_per_stack` of already.
    fn saturated(&self) -> Vec<String> {
        let limit = self.inner.config.max_concurrent_per_stack as usize;
        let running = self.inner.running.lock().unwrap();
        running
            .iter()
            .filter(|(_, n)| **n >= limit)
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// Takes a slot of `stack` if it has one free under the per-stack limit.
    fn take_slot(&self, stack: &str) -> bool {
        let limit = self.inner.config.max_concurrent_per_stack as usize;
        let mut running = self.inner.running.lock().unwrap();
        let n = running.entry(stack.to_string()).or_default();
        if *n >= limit {
            return false;
        }
        *n += 1;
        true
    }

    /// Frees a slot of `stack`; true when the stack was at its limit (so a waiting job of it
    /// may now run).
    fn release_slot(&self, stack: &str) -> bool {
        let limit = self.inner.config.max_concurrent_per_stack as usize;
        let mut running = self.inner.running.lock().unwrap();
        let Some(n) = running.get_mut(stack) else {
            return false;
        };
        let was_full = *n >= limit;
        *n = n.saturating_sub(1);
        if *n == 0 {
            running.remove(stack);
        }
        was_full
    }
}

impl Engine {
    /// Schedules those of `names` whose prerequisites are done: for create and update, the
    /// resources each depends on; for delete, the rows that depend on each.
    async fn schedule(
        &self,
        plan: &Plan,
        traversal: i64,
        operation: &str,
        names: &[&str],
    ) -> Result<u64, StoreError> {
        let candidates: Vec<Candidate> = names
            .iter()
            .filter_map(|name| {
                let after = if operation == "delete" {
                    plan.removal.as_ref()?.after(name)
                } else if operation == "check" {
                    &[]
                } else {
                    plan.stack.resource(name)?.depends_on.as_slice()
                };
                Some(Candidate { name, after })
            })
            .collect();
        self.inner
            .store
            .schedule_ready(&plan.stack_id, traversal, operation, &candidates)
            .await
    }

    /// An update's cleanup, once every resource of its template is done: deletes the rows the
    /// template no longer has (removed resources, replaced objects), dependents first.
    async fn schedule_cleanup(&self, plan: &Plan, traversal: i64) -> Result<u64, StoreError> {
        let store = &self.inner.store;
        let n = plan.stack.resources.len();
        if !store.forward_complete(&plan.stack_id, traversal, n).await? {
            return Ok(0);
        }
        let rows = store.resources(&plan.stack_id).await?;
        let removal = Removal::new(
            rows.iter()
                .filter(|r| plan.stack.resource(&r.name).is_none())
                .map(|r| (r.name.clone(), recorded_requires(r))),
        );
        let candidates: Vec<Candidate> = removal
            .names()
            .map(|name| Candidate {
                name,
                after: removal.after(name),
            })
            .collect();
        store
            .schedule_ready(&plan.stack_id, traversal, "cleanup", &candidates)
            .await
    }

    /// Schedules everything of the traversal whose prerequisites are done, or ends it when
    /// nothing is left: after an update starts, and to repair a stalled traversal.
    async fn advance(
        &self,
        plan: &Plan,
        traversal: i64,
        operation: &str,
    ) -> Result<u64, StoreError> {
        // A rollback is an update (back to the previous template).
        let kind = if operation == "rollback" {
            "update"
        } else {
            operation
        };
        let made = if kind == "delete" || kind == "check" {
            let all: Vec<&str> = plan.removal.iter().flat_map(Removal::names).collect();
            self.schedule(plan, traversal, kind, &all).await?
        } else {
            let all: Vec<&str> = plan.stack.order.iter().map(String::as_str).collect();
            let made = self.schedule(plan, traversal, kind, &all).await?;
            if kind == "update" {
                made + self.schedule_cleanup(plan, traversal).await?
            } else {
                made
            }
        };
        if made == 0
            && self
                .inner
                .store
                .try_finish_traversal(&plan.stack_id, traversal, operation, &self.inner.id)
                .await?
        {
            self.ended(&plan.stack_id, traversal).await?;
        }
        Ok(made)
    }

    /// After this engine ended a traversal: starts the rollback it asked for, if any.
    pub(super) async fn ended(&self, stack_id: &str, traversal: i64) -> Result<(), StoreError> {
        if let Some(row) = Box::pin(self.start_rollback(stack_id, traversal)).await? {
            tracing::info!(
                stack = %row.name,
                stack_id = %row.id,
                failed_traversal = traversal,
                traversal = row.traversal,
                "rolling back the failed action"
            );
        }
        Ok(())
    }
}

/// A row for each of the stack's resources, in dependency order.
fn new_resources(stack: &template::Stack) -> Vec<NewResource> {
    stack
        .in_order()
        .map(|r| NewResource {
            name: r.name.clone(),
            type_name: r.served_type.clone(),
            deps: r.depends_on.len(),
        })
        .collect()
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
