//! The engine: turns stack actions into traversals of job rows and works through jobs with a
//! pool of worker tasks. Everything it needs to resume lives in the store; what it keeps in
//! memory (parsed templates) is a cache that any other engine can rebuild.

mod plan;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::config::EngineConfig;
use crate::registry::PluginSet;
use crate::store::{NewResource, NewStack, StackRow, Store, StoreError};
use crate::template;
use plan::Plan;

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
}

/// What a stack was made from, kept for later updates (`--existing`) and for display.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Sources {
    pub template: String,
    pub template_text: String,
    pub environments: Vec<(String, String)>,
    pub parameters: Vec<(String, String)>,
}

impl Engine {
    pub fn new(store: Store, plugins: Arc<PluginSet>, config: EngineConfig) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
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

    /// Stores a validated stack and starts creating it.
    pub async fn create_stack(
        &self,
        name: &str,
        stack: &template::Stack,
        sources: &Sources,
    ) -> Result<StackRow, StoreError> {
        let new = NewStack {
            id: new_id(),
            name: name.to_string(),
            template: serde_json::to_string(stack).expect("a stack serialises"),
            sources: serde_json::to_string(sources).expect("sources serialise"),
            resources: stack
                .in_order()
                .map(|r| NewResource {
                    name: r.name.clone(),
                    type_name: r.served_type.clone(),
                    deps: r.depends_on.len(),
                })
                .collect(),
        };
        let row = self.inner.store.create_stack(&new, &self.inner.id).await?;
        self.inner.wake.notify_waiters();
        Ok(row)
    }

    /// Starts deleting a stack: dependents first, in reverse dependency order.
    pub async fn delete_stack(&self, name_or_id: &str) -> Result<StackRow, StoreError> {
        let row = self.inner.store.find_stack(name_or_id).await?;
        let plan = self.plan(&row).await?;
        let dependents: Vec<(String, usize)> = plan
            .stack
            .in_order()
            .map(|r| (r.name.clone(), plan.dependents(&r.name).len()))
            .collect();
        let row = self
            .inner
            .store
            .begin_delete(&row.id, &dependents, &self.inner.id)
            .await?;
        self.inner.wake.notify_waiters();
        Ok(row)
    }

    /// The stack's parsed template, from the cache when it is current.
    async fn plan(&self, row: &StackRow) -> Result<Arc<Plan>, StoreError> {
        if let Some(p) = self.inner.plans.lock().unwrap().get(&row.id)
            && p.traversal == row.traversal
        {
            return Ok(p.clone());
        }
        let template = self.inner.store.stack_template(&row.id).await?;
        let plan = Arc::new(Plan::parse(row, &template)?);
        let mut plans = self.inner.plans.lock().unwrap();
        // A cache, not a registry: bounded, and rebuilt from the store on a miss.
        if plans.len() >= 256 {
            plans.clear();
        }
        plans.insert(row.id.clone(), plan.clone());
        Ok(plan)
    }

    /// Runs the workers until `stop` turns true. Work left unfinished stays in the store (its
    /// leases expire and any engine takes it over).
    pub async fn run(&self, mut stop: watch::Receiver<bool>) {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..self.inner.config.workers {
            let (engine, stop) = (self.clone(), stop.clone());
            tasks.spawn(async move { engine.work(stop).await });
        }
        // Heartbeat: keep the leases of running jobs (a long create) alive.
        let engine = self.clone();
        let beat = Duration::from_millis(self.inner.config.lease_ms / 3);
        let heartbeat = tokio::spawn(async move {
            loop {
                tokio::time::sleep(beat).await;
                if let Err(e) = engine
                    .inner
                    .store
                    .extend_leases(&engine.inner.id, engine.inner.config.lease_ms as i64)
                    .await
                {
                    tracing::warn!("extending leases failed: {e}");
                }
            }
        });
        let _ = stop.wait_for(|s| *s).await;
        while tasks.join_next().await.is_some() {}
        heartbeat.abort();
    }

    /// One worker: claim, process, repeat; sleep until the next due job when idle.
    async fn work(&self, mut stop: watch::Receiver<bool>) {
        let c = &self.inner.config;
        let idle = Duration::from_millis(c.poll_interval_ms);
        while !*stop.borrow() {
            match self
                .inner
                .store
                .claim(
                    &self.inner.id,
                    c.lease_ms as i64,
                    c.max_concurrent_per_stack as i64,
                )
                .await
            {
                Ok(Some(job)) => {
                    if self.process(job).await {
                        self.inner.wake.notify_waiters();
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("claiming a job failed: {e}"),
            }
            let wait = match self.inner.store.next_due_in().await {
                Ok(Some(ms)) => idle.min(Duration::from_millis(ms as u64)),
                _ => idle,
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.wake.notified() => {}
                _ = stop.changed() => {}
            }
        }
    }
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
