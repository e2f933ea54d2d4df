//! The leader's periodic work. Every engine tries to take or renew the leader lease each round;
//! the one holding it rescues the jobs and locks of dead engines, repairs traversals that
//! stalled (an engine died between finishing a job and scheduling what followed) and, less
//! often, prunes old rows. The store fences each of these by the leader's term.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use super::Engine;
use crate::metrics::metrics;
use crate::store::StoreError;

/// How often the leader prunes (much less often than it rescues).
const PRUNE_EVERY: Duration = Duration::from_secs(60);

impl Engine {
    /// Runs until the task is aborted; resigning is the caller's job (on shutdown). The lease
    /// is renewed on its own schedule, apart from the work, so that a slow maintenance
    /// statement never costs the term.
    pub(super) async fn maintain(&self) {
        let term = AtomicI64::new(0);
        tokio::join!(self.hold_lease(&term), self.work_as_leader(&term));
    }

    /// Takes or renews the leader lease every heartbeat; `term` is 0 while another leads.
    async fn hold_lease(&self, term: &AtomicI64) {
        let c = &self.inner.config;
        let mut tick = tokio::time::interval(c.heartbeat());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let led = match self
                .inner
                .store
                .lead(&self.inner.id, c.lease_ms as i64)
                .await
            {
                Ok(t) => t.map_or(0, |t| t.term),
                Err(e) => {
                    tracing::warn!("renewing the leader lease failed: {e}");
                    0
                }
            };
            let was = term.swap(led, Ordering::AcqRel);
            if led != was {
                if led > 0 {
                    tracing::info!(term = led, "this engine leads (maintenance runs here)");
                    metrics().leader_changes.inc();
                } else {
                    tracing::info!("this engine no longer leads");
                }
            }
        }
    }

    /// Every `maintenance_interval_ms`, while this engine leads, one round of maintenance
    /// (each statement fenced by the term in the store).
    async fn work_as_leader(&self, term: &AtomicI64) {
        let c = &self.inner.config;
        let mut tick = tokio::time::interval(Duration::from_millis(c.maintenance_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pruned_at: Option<Instant> = None;
        loop {
            tick.tick().await;
            let t = term.load(Ordering::Acquire);
            if t == 0 {
                continue;
            }
            if let Err(e) = self.maintenance_round(t, &mut pruned_at).await {
                tracing::warn!("maintenance failed: {e}");
            }
        }
    }

    async fn maintenance_round(
        &self,
        term: i64,
        pruned_at: &mut Option<Instant>,
    ) -> Result<(), StoreError> {
        let (store, id) = (&self.inner.store, self.inner.id.as_str());
        for (stack, resource, owner) in store.rescue_jobs(id, term).await? {
            tracing::info!(%stack, %resource, "rescued a job of engine {owner}, whose lease expired");
            metrics().jobs_rescued.inc();
        }
        for (stack, action, holder) in store.take_over_locks(id, term).await? {
            tracing::info!(%stack, %action, "took over the stack lock of {holder}");
            metrics().lock_takeovers.inc();
        }
        for stack in store.time_out_actions(id).await? {
            tracing::info!(%stack, "the stack's action timed out: stopping it");
        }
        self.repair_stalled().await?;
        for (stack, traversal) in store.pending_rollbacks().await? {
            // The engine that ended the failed action died before starting its rollback.
            self.ended(&stack, traversal).await?;
        }
        if pruned_at.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            let retention = self.inner.config.retention_days as i64 * 86_400_000;
            let n = store.prune(id, term, retention).await?;
            if n > 0 {
                tracing::info!("pruned {n} rows");
            }
            *pruned_at = Some(Instant::now());
        }
        Ok(())
    }

    /// For each traversal with no job left, schedules whatever is ready and ends it if done.
    pub(super) async fn repair_stalled(&self) -> Result<(), StoreError> {
        let store = &self.inner.store;
        for (stack_id, traversal, action) in store.stalled().await? {
            let row = store.find_stack(&stack_id).await?;
            if row.traversal != traversal {
                continue;
            }
            let plan = self.plan(&row).await?;
            let made = self.advance(&plan, traversal, action).await?;
            if made > 0 {
                tracing::info!(stack = %row.name, stack_id = %row.id, traversal, "repaired a stalled traversal: {made} jobs scheduled");
                self.inner.wake.notify_waiters();
            }
        }
        Ok(())
    }

    /// Wakes idle workers when another engine (or this one) makes jobs, on PostgreSQL; returns
    /// at once on SQLite, where workers poll.
    pub(super) async fn listen(&self) {
        let mut backoff = Duration::from_millis(500);
        loop {
            match self.inner.store.wakeups().await {
                Ok(None) => return,
                Ok(Some(mut wakeups)) => {
                    backoff = Duration::from_millis(500);
                    // One worker per signal; a worker that gets a job wakes the next (see
                    // `work`), so a burst of jobs fans out without a thundering herd.
                    while wakeups.next().await.is_ok() {
                        self.inner.wake.notify_one();
                    }
                    tracing::warn!("lost the job notification channel; polling until it is back");
                }
                Err(e) => tracing::warn!("cannot listen for job notifications ({e}); polling"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
}
