//! The leader's periodic work on the store: rescuing jobs whose engine's lease ran out, taking
//! over stack locks whose holder died, and pruning what is no longer needed. Every statement
//! is fenced by the leader's term, so a leader that was paused past its lease (and replaced)
//! changes nothing when it wakes up.

use super::{Event, Result, Store, parse_stored};
use crate::model::{Action, EventStatus, JobOp, Status};

/// The fence every maintenance statement carries: `$1` leads in term `$2`, unexpired.
const FENCE: &str = "EXISTS (SELECT 1 FROM leader WHERE name = 'maintenance' AND holder = $1 AND term = $2 AND expires_at >= NOW_MS)";

impl Store {
    /// Puts back jobs whose lease expired (their engine died or stalled), with a new token so
    /// that the old holder's late writes are refused, and an event for each.
    pub async fn rescue_jobs(
        &self,
        leader: &str,
        term: i64,
    ) -> Result<Vec<(String, String, String)>> {
        let mut tx = self.begin().await?;
        // Who held each job is part of the event: read the owners, then free each job only if
        // it is still theirs and still expired.
        // Rows locked by someone else are left for the next round: a busy (or paused) session
        // must not stall maintenance.
        let skip_locked = match self.dialect {
            super::Dialect::Postgres => "FOR UPDATE SKIP LOCKED",
            super::Dialect::Sqlite => "",
        };
        let owners: Vec<(i64, String, String, String, String)> =
            sqlx::query_as(self.sql_owned(format!(
                "SELECT id, stack_id, resource, operation, lease_owner FROM jobs
                 WHERE lease_owner IS NOT NULL AND lease_expires_at < NOW_MS {skip_locked}"
            )))
            .fetch_all(&mut *tx)
            .await?;
        let mut rescued = Vec::new();
        for (id, stack_id, resource, operation, owner) in owners {
            let n = sqlx::query(self.sql_owned(format!(
                "UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL, token = token + 1
                 WHERE id = $3 AND lease_owner = $4 AND lease_expires_at < NOW_MS AND {FENCE}"
            )))
            .bind(leader)
            .bind(term)
            .bind(id)
            .bind(&owner)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                continue;
            }
            let operation: JobOp = parse_stored(&operation)?;
            let reason =
                format!("the lease of engine {owner} expired; the job is free for any engine");
            let rescued_event = Event::resource(
                &stack_id,
                &resource,
                operation.action(),
                EventStatus::Rescued,
                &reason,
            );
            self.record(&mut tx, &rescued_event, leader).await?;
            rescued.push((stack_id, resource, owner));
        }
        tx.commit().await?;
        if !rescued.is_empty() {
            self.notify_jobs().await?;
        }
        Ok(rescued)
    }

    /// Takes over the locks of actions whose holding engine is dead (no heartbeat within its
    /// lease) or stopped: the leader becomes the holder with a new token, and the stack gets an
    /// event. The action itself goes on: its jobs are in the store for any engine.
    pub async fn take_over_locks(
        &self,
        leader: &str,
        term: i64,
    ) -> Result<Vec<(String, Action, String)>> {
        let mut tx = self.begin().await?;
        // Only engines are taken over from: a holder that never registered only submitted the
        // action (`stack create --no-wait`) and was never going to run it.
        let dead: Vec<(String, String, String)> = sqlx::query_as(self.sql(
            "SELECT l.stack_id, l.action, l.holder FROM stack_locks l
             JOIN engines e ON e.id = l.holder
             WHERE l.holder <> $1 AND (e.stopped_at IS NOT NULL OR e.heartbeat_at < NOW_MS - e.lease_ms)",
        ))
        .bind(leader)
        .fetch_all(&mut *tx)
        .await?;
        let mut taken = Vec::new();
        for (stack_id, action, holder) in dead {
            let n = sqlx::query(self.sql_owned(format!(
                "UPDATE stack_locks SET holder = $1, token = token + 1
                 WHERE stack_id = $3 AND holder = $4 AND {FENCE}"
            )))
            .bind(leader)
            .bind(term)
            .bind(&stack_id)
            .bind(&holder)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                continue;
            }
            let action: Action = parse_stored(&action)?;
            let reason = format!("stack lock taken over from {holder}, which is no longer running");
            let taken_event = Event::stack(&stack_id, action, Status::InProgress, &reason);
            self.record(&mut tx, &taken_event, leader).await?;
            taken.push((stack_id, action, holder));
        }
        tx.commit().await?;
        Ok(taken)
    }

    /// Deletes what nobody needs any more: jobs of traversals that ended, engines stopped or
    /// dead for `retention_ms`, and deleted stacks (with their events) older than that.
    pub async fn prune(&self, leader: &str, term: i64, retention_ms: i64) -> Result<u64> {
        let mut pruned = sqlx::query(self.sql_owned(format!(
            "DELETE FROM jobs WHERE {FENCE} AND NOT EXISTS (
                 SELECT 1 FROM stacks s WHERE s.id = jobs.stack_id
                 AND s.status = 'IN_PROGRESS' AND s.traversal = jobs.traversal)"
        )))
        .bind(leader)
        .bind(term)
        .execute(&self.pool)
        .await?
        .rows_affected();
        for q in [
            format!(
                "DELETE FROM engines WHERE {FENCE} AND id <> $1
                 AND COALESCE(stopped_at, heartbeat_at) < NOW_MS - $3"
            ),
            format!(
                "DELETE FROM events WHERE {FENCE} AND stack_id IN (
                     SELECT id FROM stacks WHERE deleted_at < NOW_MS - $3)"
            ),
            format!("DELETE FROM stacks WHERE {FENCE} AND deleted_at < NOW_MS - $3"),
        ] {
            pruned += sqlx::query(self.sql_owned(q))
                .bind(leader)
                .bind(term)
                .bind(retention_ms)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(pruned)
    }
}
