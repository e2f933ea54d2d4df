//! The job queue as a whole, for metrics: how much work waits, how much runs, and how late the
//! oldest due job is, all judged on the database's clock.

use super::{Result, Store};

/// Counts of the jobs table, taken in one statement at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Claimable now: due, and no live lease.
    pub due: i64,
    /// Due later (a retry, a poll, a batch pause), and no live lease.
    pub waiting: i64,
    /// Held by an engine under a live lease.
    pub running: i64,
    /// How long the oldest due job has waited past its due time; 0 when none is due.
    pub oldest_due_age_ms: i64,
}

impl Store {
    pub async fn queue_stats(&self) -> Result<QueueStats> {
        // One reading of the clock for every comparison (PostgreSQL's `clock_timestamp()`
        // moves during a statement), bound as a parameter.
        let now = self.now_ms().await?;
        // The same "free" test as `claim`: no lease, or one that expired.
        let (due, waiting, running, oldest): (i64, i64, i64, Option<i64>) = sqlx::query_as(
            "SELECT
                 COUNT(CASE WHEN due_at <= $1 AND (lease_expires_at IS NULL OR lease_expires_at < $1) THEN 1 END),
                 COUNT(CASE WHEN due_at > $1 AND (lease_expires_at IS NULL OR lease_expires_at < $1) THEN 1 END),
                 COUNT(CASE WHEN lease_expires_at >= $1 THEN 1 END),
                 MIN(CASE WHEN due_at <= $1 AND (lease_expires_at IS NULL OR lease_expires_at < $1) THEN due_at END)
             FROM jobs",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(QueueStats {
            due,
            waiting,
            running,
            oldest_due_age_ms: oldest.map_or(0, |at| (now - at).max(0)),
        })
    }
}
