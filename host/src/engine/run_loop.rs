//! The engine's run loop: worker tasks claiming and working jobs under the per-stack limit,
//! the heartbeat that keeps leases alive, the leader's maintenance, job notifications, and a
//! graceful drain on stop.

use std::time::Duration;

use tokio::sync::watch;

use super::Engine;
use crate::store::Claim;

impl Engine {
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
