//! Stacks, their resources and events: starting an action (with the stack lock and the first
//! jobs, in one transaction) and reading what engines wrote.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::{Result, Store, StoreError};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StackRow {
    pub id: String,
    pub name: String,
    /// The tenant it belongs to (the API token's project; `default` for the embedded CLI).
    pub project: String,
    pub action: String,
    pub status: String,
    pub status_reason: String,
    pub traversal: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// Set while a cancel of the current action is under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_requested_at: Option<i64>,
    /// `stop` (nothing new starts after a resource fails) or `continue` (branches that do
    /// not need the failed resource go on).
    pub on_failure: String,
    /// When the current action times out (the stack's timeout after it started), if the
    /// stack has a timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_at: Option<i64>,
    /// The failed action asked for a rollback that has not started yet.
    #[serde(skip)]
    pub rollback_pending: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResourceRow {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub action: String,
    pub status: String,
    pub status_reason: String,
    pub physical_id: Option<String>,
    #[serde(skip)]
    pub state: Option<String>,
    pub attributes: Option<serde_json::Value>,
    /// The properties last applied (JSON; see `applied_properties`).
    #[serde(skip)]
    pub properties: Option<String>,
    pub updated_at: i64,
    /// The names it depended on when last applied (JSON list).
    #[serde(skip)]
    pub requires: Option<String>,
    /// `Delete` or `Retain`, as last applied.
    #[serde(skip)]
    pub deletion_policy: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRow {
    pub id: i64,
    pub resource: Option<String>,
    pub action: String,
    pub status: String,
    pub reason: String,
    pub physical_id: Option<String>,
    pub engine: Option<String>,
    pub at: i64,
}

/// A resource of a new stack.
pub struct NewResource {
    pub name: String,
    pub type_name: String,
    /// How many resources it waits for (those with none start at once).
    pub deps: usize,
}

/// A stack's new definition, for an update.
pub struct StackUpdate {
    pub template: String,
    pub sources: String,
    /// A new `on_failure`, if it changes.
    pub on_failure: Option<String>,
    /// The stack's timeout from now on (None: none).
    pub timeout_ms: Option<i64>,
    /// Whether a failure of this and later actions rolls back.
    pub rollback: bool,
    /// For a rollback: the traversal of the failed action it undoes.
    pub rollback_of: Option<i64>,
    /// Take the stack over from a create, update or rollback in progress (`--supersede`).
    pub supersede: bool,
    /// Every resource of the new template (rows are made for those the stack lacks).
    pub resources: Vec<NewResource>,
}

pub struct NewStack {
    pub id: String,
    pub name: String,
    pub project: String,
    pub on_failure: String,
    pub timeout_ms: Option<i64>,
    pub rollback: bool,
    pub template: String,
    pub sources: String,
    pub resources: Vec<NewResource>,
}

/// The stack's header: everything but the (large) template, which `stack_template` reads.
const STACK_COLUMNS: &str = "id, name, action, status, status_reason, traversal, created_at, updated_at, cancel_requested_at, on_failure, deadline_at, rollback_pending, project";

fn stack_row(r: &AnyRow) -> Result<StackRow> {
    Ok(StackRow {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        action: r.try_get(2)?,
        status: r.try_get(3)?,
        status_reason: r.try_get(4)?,
        traversal: r.try_get(5)?,
        created_at: r.try_get(6)?,
        updated_at: r.try_get(7)?,
        cancel_requested_at: r.try_get(8)?,
        on_failure: r.try_get(9)?,
        deadline_at: r.try_get(10)?,
        rollback_pending: r.try_get::<i64, _>(11)? == 1,
        project: r.try_get(12)?,
    })
}

/// Rows per multi-row INSERT: well under SQLite's and PostgreSQL's bind-parameter limits.
const CHUNK: usize = 200;

impl Store {
    /// Creates a stack and starts its CREATE traversal: resources, the lock, a job for each
    /// resource with no dependencies, and the first event, atomically.
    pub async fn create_stack(&self, new: &NewStack, engine: &str) -> Result<StackRow> {
        let mut tx = self.begin().await?;
        let exists: Option<(String,)> = sqlx::query_as(
            "SELECT id FROM stacks WHERE name = $1 AND project = $2 AND deleted_at IS NULL",
        )
        .bind(&new.name)
        .bind(&new.project)
        .fetch_optional(&mut *tx)
        .await?;
        if exists.is_some() {
            return Err(StoreError::StackExists(new.name.clone()));
        }
        let ready: Vec<&str> = new
            .resources
            .iter()
            .filter(|r| r.deps == 0)
            .map(|r| r.name.as_str())
            .collect();
        let done = new.resources.is_empty();
        sqlx::query(self.sql(
            "INSERT INTO stacks (id, name, action, status, template, sources, traversal, created_at, updated_at,
                                 on_failure, timeout_ms, deadline_at, rollback_enabled, project)
             VALUES ($1, $2, 'CREATE', $3, $4, $5, 1, NOW_MS, NOW_MS, $6, $7, NOW_MS + $7, $8, $9)",
        ))
        .bind(&new.id)
        .bind(&new.name)
        .bind(if done { "COMPLETE" } else { "IN_PROGRESS" })
        .bind(&new.template)
        .bind(&new.sources)
        .bind(&new.on_failure)
        .bind(new.timeout_ms)
        .bind(new.rollback as i64)
        .bind(&new.project)
        .execute(&mut *tx)
        .await?;
        self.insert_rows(&mut tx, &new.id, &new.resources).await?;
        if !done {
            sqlx::query(self.sql("INSERT INTO stack_locks (stack_id, action, holder, acquired_at) VALUES ($1, 'CREATE', $2, NOW_MS)"))
                .bind(&new.id)
                .bind(engine)
                .execute(&mut *tx)
                .await?;
        }
        self.insert_jobs(&mut tx, &new.id, 1, "create", &ready)
            .await?;
        let status = if done { "COMPLETE" } else { "IN_PROGRESS" };
        self.event(
            &mut tx,
            &new.id,
            None,
            "CREATE",
            status,
            "Stack CREATE started",
            None,
            engine,
        )
        .await?;
        let row = self.stack_in(&mut tx, &new.id).await?;
        tx.commit().await?;
        self.notify_jobs().await?;
        Ok(row)
    }

    /// Starts a DELETE traversal (jobs for `ready`: the rows nothing depends on) or a CHECK
    /// traversal (jobs for every row), under the stack lock.
    pub async fn begin_traversal(
        &self,
        stack_id: &str,
        action: &str,
        ready: &[&str],
        engine: &str,
    ) -> Result<StackRow> {
        let operation = action.to_ascii_lowercase();
        let mut tx = self.begin().await?;
        self.lock(&mut tx, stack_id, action, engine).await?;
        let (traversal,): (i64,) = sqlx::query_as(self.sql(
            "UPDATE stacks SET action = $2, status = 'IN_PROGRESS', status_reason = '', traversal = traversal + 1,
                    cancel_requested_at = NULL, updated_at = NOW_MS, deadline_at = NOW_MS + timeout_ms,
                    rollback_pending = 0, skip_rollback = 0
             WHERE id = $1 RETURNING traversal",
        ))
        .bind(stack_id)
        .bind(action)
        .fetch_one(&mut *tx)
        .await?;
        self.insert_jobs(&mut tx, stack_id, traversal, &operation, ready)
            .await?;
        self.event(
            &mut tx,
            stack_id,
            None,
            action,
            "IN_PROGRESS",
            &format!("Stack {action} started"),
            None,
            engine,
        )
        .await?;
        if ready.is_empty() {
            self.end_traversal(
                &mut tx,
                stack_id,
                traversal,
                action,
                true,
                &format!("Stack {action} completed successfully"),
                engine,
            )
            .await?;
        }
        let row = self.stack_in(&mut tx, stack_id).await?;
        tx.commit().await?;
        self.notify_jobs().await?;
        Ok(row)
    }

    /// Starts an UPDATE traversal towards a new template: takes the lock, keeps the current
    /// template and sources as the previous ones (for rollback), and makes rows for resources
    /// the stack lacks. Engines then schedule the work (`Engine::advance`); a crash before
    /// that leaves a stalled traversal, which the leader repairs.
    pub async fn begin_update(
        &self,
        stack_id: &str,
        update: &StackUpdate,
        engine: &str,
    ) -> Result<StackRow> {
        let action = if update.rollback_of.is_some() {
            "ROLLBACK"
        } else {
            "UPDATE"
        };
        let mut tx = self.begin().await?;
        let superseded = match self.lock(&mut tx, stack_id, action, engine).await {
            Ok(()) => None,
            Err(StoreError::ActionInProgress { action: held, .. })
                if update.supersede
                    && ["CREATE", "UPDATE", "ROLLBACK"].contains(&held.as_str()) =>
            {
                let dropped = self.supersede(&mut tx, stack_id, engine).await?;
                Some((held, dropped))
            }
            Err(e) => return Err(e),
        };
        // A rollback starts only if its failed action is still the stack's last one.
        let n = sqlx::query(self.sql(
            "UPDATE stacks SET previous_template = template, previous_sources = sources, template = $2,
                    sources = $3, action = $6, status = 'IN_PROGRESS', status_reason = '',
                    traversal = traversal + 1, cancel_requested_at = NULL, updated_at = NOW_MS,
                    on_failure = COALESCE($4, on_failure), timeout_ms = $5, deadline_at = NOW_MS + $5,
                    rollback_enabled = $7, rollback_pending = 0, skip_rollback = 0
             WHERE id = $1 AND deleted_at IS NULL
               AND ($8 < 0 OR (traversal = $8 AND rollback_pending = 1))",
        ))
        .bind(stack_id)
        .bind(&update.template)
        .bind(&update.sources)
        .bind(&update.on_failure)
        .bind(update.timeout_ms)
        .bind(action)
        .bind(update.rollback as i64)
        .bind(update.rollback_of.unwrap_or(-1))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::StackNotFound(stack_id.to_string()));
        }
        self.insert_rows(&mut tx, stack_id, &update.resources)
            .await?;
        let started = match superseded {
            Some((held, dropped)) => format!(
                "Stack {action} started, superseding the {held} in progress: {dropped} of its jobs \
                 not running were dropped; calls running finish and are recorded"
            ),
            None => format!("Stack {action} started"),
        };
        self.event(
            &mut tx,
            stack_id,
            None,
            action,
            "IN_PROGRESS",
            &started,
            None,
            engine,
        )
        .await?;
        let row = self.stack_in(&mut tx, stack_id).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Takes the stack lock over from the action in progress (a newer update supersedes it):
    /// its jobs that are not running are dropped (waiting, polling or retrying; the new update
    /// decides those resources afresh), and calls running now finish and are recorded, while
    /// the new traversal's job for the same resource waits for them (`stale_call_running`).
    /// Returns how many jobs were dropped.
    async fn supersede(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        stack_id: &str,
        engine: &str,
    ) -> Result<u64> {
        sqlx::query(self.sql(
            "UPDATE stack_locks SET action = 'UPDATE', holder = $2, acquired_at = NOW_MS, token = token + 1
             WHERE stack_id = $1",
        ))
        .bind(stack_id)
        .bind(engine)
        .execute(&mut **tx)
        .await?;
        let dropped = sqlx::query("DELETE FROM jobs WHERE stack_id = $1 AND lease_owner IS NULL")
            .bind(stack_id)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        Ok(dropped)
    }

    /// What the stack was made from (template text, environments, parameters; JSON), and what
    /// it was made from before its last update, if it had one.
    pub async fn stack_sources(&self, stack_id: &str) -> Result<(String, Option<String>)> {
        Ok(
            sqlx::query_as("SELECT sources, previous_sources FROM stacks WHERE id = $1")
                .bind(stack_id)
                .fetch_one(&self.pool)
                .await?,
        )
    }

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

    /// The template and sources a stack had before its last update (None after a create).
    pub async fn previous(&self, stack_id: &str) -> Result<Option<(String, String)>> {
        let (t, s): (Option<String>, Option<String>) =
            sqlx::query_as("SELECT previous_template, previous_sources FROM stacks WHERE id = $1")
                .bind(stack_id)
                .fetch_one(&self.pool)
                .await?;
        Ok(t.zip(s))
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
            return match row.status.as_str() {
                // Already cancelling: asking again is not an error.
                "IN_PROGRESS" => Ok(row),
                _ => Err(StoreError::NothingToCancel(row.name)),
            };
        };
        let why = if timed_out { "timed out" } else { "cancelled" };
        let dropped = self
            .drop_unstarted(&mut tx, stack_id, traversal, &action, why, engine)
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
        self.event(
            &mut tx,
            stack_id,
            None,
            &action,
            "IN_PROGRESS",
            &reason,
            None,
            engine,
        )
        .await?;
        tx.commit().await?;
        let operation = action.to_ascii_lowercase();
        self.try_finish_traversal(stack_id, traversal, &operation, engine)
            .await?;
        self.find_stack(stack_id).await
    }

    /// After a resource failed in a stack whose `on_failure` is `stop`: drops the traversal's
    /// jobs that have not started (and those waiting to retry), so that nothing new starts;
    /// running calls and polled long operations finish and are recorded. Returns how many
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
                &action,
                "stopped after another resource failed (on_failure: stop)",
                engine,
            )
            .await?;
        tx.commit().await?;
        Ok(dropped.len())
    }

    /// Deletes the traversal's jobs that are not running: not started yet, or waiting to
    /// retry (whose resource then fails, saying `why` it will not run again).
    async fn drop_unstarted(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        stack_id: &str,
        traversal: i64,
        action: &str,
        why: &str,
        engine: &str,
    ) -> Result<Vec<(String, i64)>> {
        let dropped: Vec<(String, i64)> = sqlx::query_as(
            "DELETE FROM jobs WHERE stack_id = $1 AND traversal = $2
               AND lease_owner IS NULL AND pending_state IS NULL
             RETURNING resource, attempt",
        )
        .bind(stack_id)
        .bind(traversal)
        .fetch_all(&mut **tx)
        .await?;
        for (resource, attempt) in dropped.iter().filter(|(_, a)| *a > 1) {
            // Waiting for a retry: its last attempt failed, and now it will not run again.
            let reason = format!("{why} while waiting to retry (attempt {attempt})");
            sqlx::query(self.sql(
                "UPDATE resources SET status = 'FAILED', status_reason = $3, updated_at = NOW_MS
                 WHERE stack_id = $1 AND name = $2",
            ))
            .bind(stack_id)
            .bind(resource)
            .bind(&reason)
            .execute(&mut **tx)
            .await?;
            self.event(
                tx,
                stack_id,
                Some(resource),
                action,
                "FAILED",
                &reason,
                None,
                engine,
            )
            .await?;
        }
        Ok(dropped)
    }

    /// Takes the stack lock, or reports who holds it.
    async fn lock(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        stack_id: &str,
        action: &str,
        engine: &str,
    ) -> Result<()> {
        let taken = sqlx::query(self.sql(
            "INSERT INTO stack_locks (stack_id, action, holder, acquired_at) VALUES ($1, $2, $3, NOW_MS)
             ON CONFLICT (stack_id) DO NOTHING",
        ))
        .bind(stack_id)
        .bind(action)
        .bind(engine)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if taken == 1 {
            return Ok(());
        }
        let (held, since, name, holder): (String, i64, String, String) = sqlx::query_as(
            "SELECT l.action, l.acquired_at, s.name, l.holder FROM stack_locks l JOIN stacks s ON s.id = l.stack_id WHERE l.stack_id = $1",
        )
        .bind(stack_id)
        .fetch_one(&mut **tx)
        .await?;
        Err(StoreError::ActionInProgress {
            stack: name,
            action: held,
            since: format_ms(since),
            holder,
        })
    }

    /// Rows (INIT) for the resources a stack lacks.
    async fn insert_rows(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        stack_id: &str,
        resources: &[NewResource],
    ) -> Result<()> {
        for chunk in resources.chunks(CHUNK) {
            let mut q = String::from(
                "INSERT INTO resources (stack_id, name, type, action, status, updated_at) VALUES ",
            );
            for i in 0..chunk.len() {
                let b = i * 2 + 2;
                q += &format!(
                    "{}($1, ${b}, ${}, 'INIT', 'COMPLETE', NOW_MS)",
                    if i > 0 { ", " } else { "" },
                    b + 1
                );
            }
            q += " ON CONFLICT (stack_id, name) DO NOTHING";
            let mut query = sqlx::query(self.sql_owned(q)).bind(stack_id);
            for r in chunk {
                query = query.bind(&r.name).bind(&r.type_name);
            }
            query.execute(&mut **tx).await?;
        }
        Ok(())
    }

    pub(super) async fn insert_jobs(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        stack_id: &str,
        traversal: i64,
        operation: &str,
        resources: &[&str],
    ) -> Result<()> {
        for chunk in resources.chunks(CHUNK) {
            let mut q = String::from(
                "INSERT INTO jobs (stack_id, resource, traversal, operation, due_at, created_at) VALUES ",
            );
            for i in 0..chunk.len() {
                q += &format!(
                    "{}($1, ${}, $2, $3, NOW_MS, NOW_MS)",
                    if i > 0 { ", " } else { "" },
                    i + 4
                );
            }
            q += " ON CONFLICT (stack_id, resource, traversal) DO NOTHING";
            let mut query = sqlx::query(self.sql_owned(q))
                .bind(stack_id)
                .bind(traversal)
                .bind(operation);
            for r in chunk {
                query = query.bind(*r);
            }
            query.execute(&mut **tx).await?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn event(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        stack_id: &str,
        resource: Option<&str>,
        action: &str,
        status: &str,
        reason: &str,
        physical_id: Option<&str>,
        engine: &str,
    ) -> Result<()> {
        sqlx::query(self.sql(
            "INSERT INTO events (stack_id, resource, action, status, reason, physical_id, engine, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, NOW_MS)",
        ))
        .bind(stack_id)
        .bind(resource)
        .bind(action)
        .bind(status)
        .bind(reason)
        .bind(physical_id)
        .bind(engine)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Ends a traversal, once: the stack's final status, the lock released, the last event.
    /// Returns false when it had already ended (or a job appeared meanwhile).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn end_traversal(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        stack_id: &str,
        traversal: i64,
        action: &str,
        ok: bool,
        reason: &str,
        engine: &str,
    ) -> Result<bool> {
        let status = if ok { "COMPLETE" } else { "FAILED" };
        let deleted = action == "DELETE" && ok;
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
        .bind(status)
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
        if action == "UPDATE" || action == "ROLLBACK" {
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
        self.event(tx, stack_id, None, action, status, reason, None, engine)
            .await?;
        Ok(true)
    }

    async fn stack_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        id: &str,
    ) -> Result<StackRow> {
        let q = AssertSqlSafe(format!("SELECT {STACK_COLUMNS} FROM stacks WHERE id = $1"));
        let row = sqlx::query(q).bind(id).fetch_one(&mut **tx).await?;
        stack_row(&row)
    }

    /// A live stack by name or id (a deleted one only by id), in any project.
    pub async fn find_stack(&self, name_or_id: &str) -> Result<StackRow> {
        self.find_stack_in(None, name_or_id).await
    }

    /// A live stack by name or id (a deleted one only by id), within `project` if given. One
    /// of another project is not found, exactly as a missing one (its existence is not
    /// leaked); a name live in several projects, looked up across projects, is ambiguous.
    pub async fn find_stack_in(&self, project: Option<&str>, name_or_id: &str) -> Result<StackRow> {
        let q = AssertSqlSafe(format!(
            "SELECT {STACK_COLUMNS} FROM stacks
             WHERE ((name = $1 AND deleted_at IS NULL) OR id = $1) AND (project = $2 OR $3 = 1)
             ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END LIMIT 3"
        ));
        let rows = sqlx::query(q)
            .bind(name_or_id)
            .bind(project.unwrap_or(""))
            .bind(project.is_none() as i64)
            .fetch_all(&self.pool)
            .await?;
        let rows: Vec<StackRow> = rows.iter().map(stack_row).collect::<Result<_>>()?;
        match rows.as_slice() {
            [] => Err(StoreError::StackNotFound(name_or_id.to_string())),
            [first, ..] if first.id == name_or_id => Ok(first.clone()),
            [only] => Ok(only.clone()),
            many => Err(StoreError::Ambiguous {
                name: name_or_id.to_string(),
                projects: many.iter().map(|r| r.project.clone()).collect(),
            }),
        }
    }

    /// The validated template (JSON) of a stack, as engines evaluate it.
    pub async fn stack_template(&self, stack_id: &str) -> Result<String> {
        let (t,): (String,) = sqlx::query_as("SELECT template FROM stacks WHERE id = $1")
            .bind(stack_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(t)
    }

    /// Live stacks, oldest first: all, or one project's.
    pub async fn list_stacks(&self) -> Result<Vec<StackRow>> {
        self.list_stacks_in(None).await
    }

    pub async fn list_stacks_in(&self, project: Option<&str>) -> Result<Vec<StackRow>> {
        let q = AssertSqlSafe(format!(
            "SELECT {STACK_COLUMNS} FROM stacks WHERE deleted_at IS NULL AND (project = $1 OR $2 = 1)
             ORDER BY created_at, name"
        ));
        sqlx::query(q)
            .bind(project.unwrap_or(""))
            .bind(project.is_none() as i64)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(stack_row)
            .collect()
    }

    pub async fn resources(&self, stack_id: &str) -> Result<Vec<ResourceRow>> {
        let rows = sqlx::query(
            "SELECT name, type, action, status, status_reason, physical_id, state, attributes, updated_at, properties,
                    requires, deletion_policy
             FROM resources WHERE stack_id = $1 ORDER BY name",
        )
        .bind(stack_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(resource_row).collect()
    }

    /// Some resources of a stack (the dependencies a job needs to resolve its properties).
    pub async fn resources_named(
        &self,
        stack_id: &str,
        names: &[&str],
    ) -> Result<Vec<ResourceRow>> {
        let mut out = Vec::with_capacity(names.len());
        for chunk in names.chunks(CHUNK) {
            let list: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let q = AssertSqlSafe(format!(
                "SELECT name, type, action, status, status_reason, physical_id, state, attributes, updated_at, properties,
                        requires, deletion_policy
                 FROM resources WHERE stack_id = $1 AND name IN ({})",
                list.join(", ")
            ));
            let mut query = sqlx::query(q).bind(stack_id);
            for n in chunk {
                query = query.bind(*n);
            }
            for row in query.fetch_all(&self.pool).await? {
                out.push(resource_row(&row)?);
            }
        }
        Ok(out)
    }

    /// The objects `name` replaced that are not deleted yet (rows `NAME/replaced-N`).
    pub async fn replaced_copies(&self, stack_id: &str, name: &str) -> Result<Vec<ResourceRow>> {
        let prefix = format!("{name}/replaced-");
        let rows = sqlx::query(
            "SELECT name, type, action, status, status_reason, physical_id, state, attributes, updated_at, properties,
                    requires, deletion_policy
             FROM resources WHERE stack_id = $1 AND SUBSTR(name, 1, CAST($3 AS INTEGER)) = $2 ORDER BY name",
        )
        .bind(stack_id)
        .bind(&prefix)
        .bind(prefix.chars().count() as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(resource_row).collect()
    }

    /// Events of a stack after `after` (an event id), oldest first.
    pub async fn events(&self, stack_id: &str, after: i64) -> Result<Vec<EventRow>> {
        self.events_page(stack_id, after, i64::MAX).await
    }

    /// At most `limit` events of a stack after `after`, oldest first.
    pub async fn events_page(
        &self,
        stack_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<EventRow>> {
        let rows = sqlx::query(
            "SELECT id, resource, action, status, reason, physical_id, engine, at FROM events
             WHERE stack_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(stack_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(EventRow {
                    id: r.try_get(0)?,
                    resource: r.try_get(1)?,
                    action: r.try_get(2)?,
                    status: r.try_get(3)?,
                    reason: r.try_get(4)?,
                    physical_id: r.try_get(5)?,
                    engine: r.try_get(6)?,
                    at: r.try_get(7)?,
                })
            })
            .collect()
    }

    /// Up to `limit` resources being worked on now.
    pub async fn resources_in_progress(&self, stack_id: &str, limit: i64) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT name FROM resources WHERE stack_id = $1 AND status = 'IN_PROGRESS' ORDER BY updated_at, name LIMIT $2",
        )
        .bind(stack_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(n,)| n).collect())
    }

    /// Resource counts by action and status.
    pub async fn resource_counts(&self, stack_id: &str) -> Result<Vec<(String, String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT action, status, COUNT(*) FROM resources WHERE stack_id = $1 GROUP BY action, status ORDER BY action, status",
        )
        .bind(stack_id)
        .fetch_all(&self.pool)
        .await?)
    }
}

impl ResourceRow {
    /// The properties last applied, if any were (a create that failed applied none).
    pub fn applied_properties(&self) -> Option<serde_json::Value> {
        self.properties
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok())
    }
}

fn resource_row(r: &AnyRow) -> Result<ResourceRow> {
    let attributes: Option<String> = r.try_get(7)?;
    let attributes = attributes
        .map(|a| {
            serde_json::from_str(&a).map_err(|e| StoreError::Corrupt(format!("attributes: {e}")))
        })
        .transpose()?;
    Ok(ResourceRow {
        name: r.try_get(0)?,
        type_name: r.try_get(1)?,
        action: r.try_get(2)?,
        status: r.try_get(3)?,
        status_reason: r.try_get(4)?,
        physical_id: r.try_get(5)?,
        state: r.try_get(6)?,
        attributes,
        updated_at: r.try_get(8)?,
        properties: r.try_get(9)?,
        requires: r.try_get(10)?,
        deletion_policy: r.try_get(11)?,
    })
}

/// Milliseconds since the epoch as UTC `YYYY-MM-DD HH:MM:SS`.
pub fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_epoch_millis() {
        assert_eq!(super::format_ms(0), "1970-01-01 00:00:00");
        assert_eq!(super::format_ms(1_795_305_563_425), "2026-11-21 23:59:23");
    }
}
