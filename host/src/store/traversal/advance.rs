//! How a traversal moves on and ends: the resources that became ready get jobs, and the last
//! job's end (or a cancel, a timeout, a failure) ends the stack's action, once.
//!
//! No row is written by every job of a stack (no counter on the stack row): such a row would
//! serialise a stack's commits, each waiting for the one before to reach the disk. Instead,
//! readiness and the end of a traversal are decided from the resources' own rows by
//! conditional statements run *after* the finishing transaction commits. Of two jobs finishing
//! at once, the one whose check runs last sees both results, so a dependent or the end is never
//! missed; duplicates are stopped by the jobs' unique key and the stack's status. If an engine
//! dies between its commit and those checks, `stalled` finds the traversal and any engine
//! repairs it.

use sqlx::AssertSqlSafe;

use crate::model::{Action, JobOp, Status};
use crate::store::{Claimed, Event, Result, Store, parse_stored};

/// A resource that may be ready, and the resources that must be done (in this traversal, by
/// the same action) before it.
pub struct Candidate<'a> {
    pub name: &'a str,
    pub after: &'a [String],
}

impl Store {
    /// Ends a traversal, once: the stack's final status, the lock released, the last event.
    /// Returns false when it had already ended (or a job appeared meanwhile).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn end_traversal(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        stack_id: &str,
        traversal: i64,
        action: Action,
        ok: bool,
        reason: &str,
        engine: &str,
    ) -> Result<bool> {
        let status = if ok { Status::Complete } else { Status::Failed };
        let deleted = action == Action::Delete && ok;
        // A failed create or update of a stack with rollback enabled asks for its rollback
        // here, in the transaction that ends it (see `pending_rollbacks`).
        let ended: Option<(i64,)> = sqlx::query_as(self.sql(
            "UPDATE stacks SET status = $3, status_reason = $4, updated_at = NOW_MS,
                    deleted_at = CASE WHEN $5 = 1 THEN NOW_MS ELSE deleted_at END,
                    rollback_pending = CASE WHEN $3 = 'FAILED' AND action IN ('CREATE', 'UPDATE')
                                            AND rollback_enabled = 1 AND skip_rollback = 0
                                       THEN 1 ELSE 0 END
             WHERE id = $1 AND traversal = $2 AND status = 'IN_PROGRESS'
               AND NOT EXISTS (SELECT 1 FROM jobs WHERE stack_id = $1 AND traversal = $2)
             RETURNING rollback_pending",
        ))
        .bind(stack_id)
        .bind(traversal)
        .bind(status.as_str())
        .bind(reason)
        .bind(deleted as i64)
        .fetch_optional(&mut **tx)
        .await?;
        let Some((rollback,)) = ended else {
            return Ok(false);
        };
        let reason = if rollback == 1 {
            format!("{reason}; rolling back")
        } else {
            reason.to_string()
        };
        let reason = reason.as_str();
        if matches!(action, Action::Update | Action::Rollback) {
            // What the update's cleanup deleted is gone: its rows go (the events remain).
            sqlx::query(
                "DELETE FROM resources WHERE stack_id = $1 AND traversal = $2 AND action = 'DELETE'
                   AND status = 'COMPLETE'",
            )
            .bind(stack_id)
            .bind(traversal)
            .execute(&mut **tx)
            .await?;
        }
        sqlx::query("DELETE FROM stack_locks WHERE stack_id = $1")
            .bind(stack_id)
            .execute(&mut **tx)
            .await?;
        let ended = Event::stack(stack_id, action, status, reason);
        self.record(tx, &ended, engine).await?;
        Ok(true)
    }

    /// Stacks whose failed action asked for a rollback that has not started: (id, the failed
    /// traversal). The engine that ended the action starts it at once; the leader starts
    /// those whose engine died first.
    pub async fn pending_rollbacks(&self) -> Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT id, traversal FROM stacks WHERE rollback_pending = 1 AND status = 'FAILED'",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}

impl Store {
    /// Makes a job for each candidate whose prerequisites are all done in this traversal, as
    /// long as the traversal runs and (unless the stack's `on_failure` is `continue`) nothing
    /// in it failed. Returns how many jobs it made. In an update a prerequisite is done whatever it
    /// needed (created, updated, replaced, or found unchanged).
    ///
    /// Several candidates are scheduled in one transaction: their jobs appear together, so
    /// workers cannot drain the first ones and end the traversal (`try_finish_traversal` sees
    /// no job and a failure) before the rest exist, as they could while an update's first
    /// jobs went in one statement at a time.
    pub async fn schedule_ready(
        &self,
        stack_id: &str,
        traversal: i64,
        operation: JobOp,
        candidates: &[Candidate<'_>],
    ) -> Result<u64> {
        let action = operation.action();
        let mut made = 0;
        // One candidate (a finished job's one dependent, say) needs no transaction of its own.
        // Several go in name order, so that two transactions never wait on each other's keys.
        let mut candidates: Vec<&Candidate<'_>> = candidates.iter().collect();
        candidates.sort_by_key(|c| c.name);
        let mut tx = if candidates.len() > 1 {
            Some(self.begin().await?)
        } else {
            None
        };
        for c in candidates {
            let list: Vec<String> = (0..c.after.len()).map(|i| format!("${}", i + 6)).collect();
            let prerequisites = if c.after.is_empty() {
                String::new()
            } else {
                format!(
                    "AND (SELECT COUNT(*) FROM resources WHERE stack_id = $1 AND name IN ({}) AND traversal = $3
                          AND (action = $5 OR $5 = 'UPDATE') AND status = 'COMPLETE') = {}",
                    list.join(", "),
                    c.after.len()
                )
            };
            let q = format!(
                "INSERT INTO jobs (stack_id, resource, traversal, operation, due_at, created_at)
                 SELECT $1, $2, $3, $4, NOW_MS, NOW_MS
                 WHERE EXISTS (SELECT 1 FROM stacks WHERE id = $1 AND traversal = $3 AND status = 'IN_PROGRESS'
                               AND cancel_requested_at IS NULL
                               AND (on_failure = 'continue'
                                    OR NOT EXISTS (SELECT 1 FROM resources WHERE stack_id = $1 AND traversal = $3
                                                   AND status = 'FAILED')))
                   AND NOT EXISTS (SELECT 1 FROM resources WHERE stack_id = $1 AND name = $2 AND traversal = $3)
                   {prerequisites}
                 ON CONFLICT (stack_id, resource, traversal) DO NOTHING"
            );
            let mut query = sqlx::query(self.sql_owned(q))
                .bind(stack_id)
                .bind(c.name)
                .bind(traversal)
                .bind(operation.as_str())
                .bind(action.as_str());
            for a in c.after {
                query = query.bind(a.as_str());
            }
            made += match tx.as_mut() {
                Some(tx) => query.execute(&mut **tx).await?,
                None => query.execute(&self.pool).await?,
            }
            .rows_affected();
        }
        if let Some(tx) = tx {
            tx.commit().await?;
        }
        if made > 0 {
            self.notify_jobs().await?;
        }
        Ok(made)
    }

    /// Whether a call of an older (superseded) traversal is still running on `resource`.
    pub async fn stale_call_running(&self, job: &Claimed) -> Result<bool> {
        let found: Option<(i64,)> = sqlx::query_as(
            "SELECT id FROM jobs WHERE stack_id = $1 AND resource = $2 AND traversal < $3
               AND lease_owner IS NOT NULL LIMIT 1",
        )
        .bind(&job.stack_id)
        .bind(&job.resource)
        .bind(job.traversal)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    /// Whether every resource of an update's template (`n` of them) is done in this traversal:
    /// then its cleanup may start.
    pub async fn forward_complete(&self, stack_id: &str, traversal: i64, n: usize) -> Result<bool> {
        let (done,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM resources WHERE stack_id = $1 AND traversal = $2 AND status = 'COMPLETE'
               AND action <> 'DELETE'",
        )
        .bind(stack_id)
        .bind(traversal)
        .fetch_one(&self.pool)
        .await?;
        Ok(done as usize >= n)
    }

    /// Ends the traversal if nothing is left to do: no job remains and either a resource failed
    /// or every resource is done. Returns whether this call ended it (at most one call does).
    pub async fn try_finish_traversal(
        &self,
        stack_id: &str,
        traversal: i64,
        action: Action,
        engine: &str,
    ) -> Result<bool> {
        // A cheap read first: while jobs remain (almost always), nothing more to do.
        let job: Option<(i64,)> =
            sqlx::query_as("SELECT id FROM jobs WHERE stack_id = $1 AND traversal = $2 LIMIT 1")
                .bind(stack_id)
                .bind(traversal)
                .fetch_optional(&self.pool)
                .await?;
        if job.is_some() {
            return Ok(false);
        }
        let mut tx = self.begin().await?;
        let (cancelled, deadline, timeout): (Option<i64>, Option<i64>, Option<i64>) =
            sqlx::query_as(
                "SELECT cancel_requested_at, deadline_at, timeout_ms FROM stacks WHERE id = $1",
            )
            .bind(stack_id)
            .fetch_one(&mut *tx)
            .await?;
        if let Some(at) = cancelled {
            let reason = match (deadline, timeout) {
                (Some(d), Some(t)) if at >= d => {
                    format!("Stack {action} timed out after {} s", t / 1000)
                }
                _ => format!("Stack {action} cancelled"),
            };
            let ended = self
                .end_traversal(&mut tx, stack_id, traversal, action, false, &reason, engine)
                .await?;
            tx.commit().await?;
            return Ok(ended);
        }
        let (failed,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM resources WHERE stack_id = $1 AND traversal = $2 AND status = 'FAILED'")
                .bind(stack_id)
                .bind(traversal)
                .fetch_one(&mut *tx)
                .await?;
        if failed == 0 {
            // An update's resources end in whatever action each needed (or none).
            let (left,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM resources WHERE stack_id = $1
                 AND NOT (traversal = $2 AND (action = $3 OR $3 IN ('UPDATE', 'ROLLBACK')) AND status = 'COMPLETE')",
            )
            .bind(stack_id)
            .bind(traversal)
            .bind(action.as_str())
            .fetch_one(&mut *tx)
            .await?;
            if left > 0 {
                // Not scheduled yet: the finishing job's next step (or the repair) does it.
                tx.commit().await?;
                return Ok(false);
            }
        }
        let reason = if failed == 0 {
            format!("Stack {action} completed successfully")
        } else {
            let (name, why): (String, String) = sqlx::query_as(
                "SELECT name, status_reason FROM resources WHERE stack_id = $1 AND traversal = $2 AND status = 'FAILED'
                 ORDER BY updated_at, name LIMIT 1",
            )
            .bind(stack_id)
            .bind(traversal)
            .fetch_one(&mut *tx)
            .await?;
            let others = if failed > 1 {
                format!(" (and {} more)", failed - 1)
            } else {
                String::new()
            };
            format!("Resource {action} failed: {name}: {why}{others}")
        };
        let ended = self
            .end_traversal(
                &mut tx,
                stack_id,
                traversal,
                action,
                failed == 0,
                &reason,
                engine,
            )
            .await?;
        tx.commit().await?;
        Ok(ended)
    }

    /// Stacks in progress whose current traversal has no job left: an engine died between
    /// finishing a job and scheduling what followed. (stack id, traversal, its action).
    pub async fn stalled(&self) -> Result<Vec<(String, i64, Action)>> {
        let rows: Vec<(String, i64, String)> = sqlx::query_as(AssertSqlSafe(
            "SELECT s.id, s.traversal, s.action FROM stacks s
             WHERE s.status = 'IN_PROGRESS'
               AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.stack_id = s.id AND j.traversal = s.traversal)"
                .to_string(),
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, t, action)| Ok((id, t, parse_stored(&action)?)))
            .collect()
    }
}
