//! Stopping an action early: a cancel, a timeout, or a failure under `on_failure: stop`. Jobs
//! not started are dropped; calls already running finish and are recorded.

use sqlx::AssertSqlSafe;

use crate::model::{Action, Status};
use crate::store::{Event, Result, StackRow, Store, StoreError, parse_stored};

impl Store {
    /// Cancels the action in progress, cooperatively, whichever engines work on it: no job of
    /// it starts any more (jobs not yet started, or waiting to retry, are dropped and engines
    /// check before each step); calls already running finish and are recorded, and so do
    /// long operations being polled (the cloud is already doing them). The action then ends
    /// FAILED, "cancelled". It needs no lock, so it always gets through.
    /// With `rollback` false (`--no-rollback`), a stack with rollback enabled does not roll
    /// back this action.
    pub async fn cancel(&self, stack_id: &str, engine: &str, rollback: bool) -> Result<StackRow> {
        if !rollback {
            sqlx::query(
                "UPDATE stacks SET skip_rollback = 1 WHERE id = $1 AND status = 'IN_PROGRESS'",
            )
            .bind(stack_id)
            .execute(&self.pool)
            .await?;
        }
        self.stop_action(stack_id, engine, false).await
    }

    /// Cancels the actions whose deadline passed (see `cancel`), whichever engine started
    /// them; their end says they timed out. Returns their stacks' names.
    pub async fn time_out_actions(&self, engine: &str) -> Result<Vec<String>> {
        let late: Vec<(String, String)> = sqlx::query_as(self.sql(
            "SELECT id, name FROM stacks WHERE status = 'IN_PROGRESS' AND deadline_at < NOW_MS
               AND cancel_requested_at IS NULL",
        ))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for (id, name) in late {
            match self.time_out(&id, engine).await {
                Ok(_) | Err(StoreError::NothingToCancel(_)) => out.push(name),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Cancels the stack's action because its deadline passed (see `cancel`).
    pub async fn time_out(&self, stack_id: &str, engine: &str) -> Result<StackRow> {
        self.stop_action(stack_id, engine, true).await
    }

    async fn stop_action(&self, stack_id: &str, engine: &str, timed_out: bool) -> Result<StackRow> {
        let mut tx = self.begin().await?;
        let marked: Option<(i64, String)> = sqlx::query_as(self.sql(
            "UPDATE stacks SET cancel_requested_at = NOW_MS, updated_at = NOW_MS
             WHERE id = $1 AND status = 'IN_PROGRESS' AND cancel_requested_at IS NULL
             RETURNING traversal, action",
        ))
        .bind(stack_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((traversal, action)) = marked else {
            let row = self.stack_in(&mut tx, stack_id).await?;
            tx.commit().await?;
            return match row.status {
                // Already cancelling: asking again is not an error.
                Status::InProgress => Ok(row),
                _ => Err(StoreError::NothingToCancel(row.name)),
            };
        };
        let action = parse_stored::<Action>(&action)?;
        let why = if timed_out { "timed out" } else { "cancelled" };
        let dropped = self
            .drop_unstarted(&mut tx, stack_id, traversal, action, why, engine, false)
            .await?;
        let asked = if timed_out {
            "timed out (the stack's timeout passed)"
        } else {
            "cancel requested"
        };
        let reason = format!(
            "Stack {action} {asked}: {} jobs not started were dropped; running ones finish",
            dropped.len()
        );
        let asked = Event::stack(stack_id, action, Status::InProgress, &reason);
        self.record(&mut tx, &asked, engine).await?;
        tx.commit().await?;
        self.try_finish_traversal(stack_id, traversal, action, engine)
            .await?;
        self.find_stack(stack_id).await
    }

    /// After a resource failed in a stack whose `on_failure` is `stop`: drops the traversal's
    /// jobs that have not started, so that nothing new starts. Jobs that started finish and
    /// are recorded: running calls, polled long operations, and also those waiting to retry or
    /// handed back by an engine (their call may have taken effect — a replacement made whose
    /// answer was lost — and only finishing them records what it made). Returns how many
    /// jobs it dropped; then `try_finish_traversal` may end the action.
    pub async fn stop_after_failure(
        &self,
        stack_id: &str,
        traversal: i64,
        engine: &str,
    ) -> Result<usize> {
        let mut tx = self.begin().await?;
        let action: Option<(String,)> = sqlx::query_as(
            "SELECT action FROM stacks WHERE id = $1 AND traversal = $2 AND status = 'IN_PROGRESS'",
        )
        .bind(stack_id)
        .bind(traversal)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((action,)) = action else {
            tx.commit().await?;
            return Ok(0);
        };
        let dropped = self
            .drop_unstarted(
                &mut tx,
                stack_id,
                traversal,
                parse_stored(&action)?,
                "stopped after another resource failed (on_failure: stop)",
                engine,
                true,
            )
            .await?;
        tx.commit().await?;
        Ok(dropped.len())
    }

    /// Deletes the traversal's jobs that are not running: not started yet, or (unless
    /// `keep_started`) started and now waiting (to retry, or handed back by an engine), whose
    /// resource then fails, saying `why` it will not run again.
    #[allow(clippy::too_many_arguments)]
    async fn drop_unstarted(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        stack_id: &str,
        traversal: i64,
        action: Action,
        why: &str,
        engine: &str,
        keep_started: bool,
    ) -> Result<Vec<(String, i64)>> {
        let keep = if keep_started {
            "AND started_at IS NULL"
        } else {
            ""
        };
        let dropped: Vec<(String, i64, Option<i64>)> = sqlx::query_as(AssertSqlSafe(format!(
            "DELETE FROM jobs WHERE stack_id = $1 AND traversal = $2
               AND lease_owner IS NULL AND pending_state IS NULL {keep}
             RETURNING resource, attempt, started_at"
        )))
        .bind(stack_id)
        .bind(traversal)
        .fetch_all(&mut **tx)
        .await?;
        for (resource, attempt, _) in dropped.iter().filter(|(_, _, s)| s.is_some()) {
            // It started: now it will not run again.
            let reason = if *attempt > 1 {
                format!("{why} while waiting to retry (attempt {attempt})")
            } else {
                format!("{why} after its attempt was cut short")
            };
            sqlx::query(self.sql(
                "UPDATE resources SET status = 'FAILED', status_reason = $3, updated_at = NOW_MS
                 WHERE stack_id = $1 AND name = $2",
            ))
            .bind(stack_id)
            .bind(resource)
            .bind(&reason)
            .execute(&mut **tx)
            .await?;
            let failed = Event::resource(stack_id, resource, action, Status::Failed, &reason);
            self.record(tx, &failed, engine).await?;
        }
        Ok(dropped.into_iter().map(|(r, a, _)| (r, a)).collect())
    }
}
