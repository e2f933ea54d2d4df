//! Starting a stack action: the stack lock (one action per stack; an update may supersede),
//! the stack's new state, its resource rows and its first jobs, all in one transaction.

use crate::model::{Action, JobOp, OnFailure, Status};
use crate::store::rows::CHUNK;
use crate::store::{
    Event, NewResource, NewStack, Result, StackRow, StackUpdate, Store, StoreError,
};
use crate::store::{format_ms, parse_stored};

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
        let status = if done {
            Status::Complete
        } else {
            Status::InProgress
        };
        sqlx::query(self.sql(
            "INSERT INTO stacks (id, name, action, status, template, sources, traversal, created_at, updated_at,
                                 on_failure, timeout_ms, deadline_at, rollback_enabled, project)
             VALUES ($1, $2, 'CREATE', $3, $4, $5, 1, NOW_MS, NOW_MS, $6, $7, NOW_MS + $7, $8, $9)",
        ))
        .bind(&new.id)
        .bind(&new.name)
        .bind(status.as_str())
        .bind(&new.template)
        .bind(&new.sources)
        .bind(new.on_failure.as_str())
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
        self.insert_jobs(&mut tx, &new.id, 1, JobOp::Create, &ready)
            .await?;
        let started = Event::stack(&new.id, Action::Create, status, "Stack CREATE started");
        self.record(&mut tx, &started, engine).await?;
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
        action: Action,
        ready: &[&str],
        engine: &str,
    ) -> Result<StackRow> {
        let operation = action
            .job_op()
            .expect("begin_traversal starts a stack action");
        let mut tx = self.begin().await?;
        self.lock(&mut tx, stack_id, action, engine).await?;
        let (traversal,): (i64,) = sqlx::query_as(self.sql(
            "UPDATE stacks SET action = $2, status = 'IN_PROGRESS', status_reason = '', traversal = traversal + 1,
                    cancel_requested_at = NULL, updated_at = NOW_MS, deadline_at = NOW_MS + timeout_ms,
                    rollback_pending = 0, skip_rollback = 0
             WHERE id = $1 RETURNING traversal",
        ))
        .bind(stack_id)
        .bind(action.as_str())
        .fetch_one(&mut *tx)
        .await?;
        self.insert_jobs(&mut tx, stack_id, traversal, operation, ready)
            .await?;
        let reason = format!("Stack {action} started");
        let started = Event::stack(stack_id, action, Status::InProgress, &reason);
        self.record(&mut tx, &started, engine).await?;
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
            Action::Rollback
        } else {
            Action::Update
        };
        let mut tx = self.begin().await?;
        let superseded = match self.lock(&mut tx, stack_id, action, engine).await {
            Ok(()) => None,
            Err(StoreError::ActionInProgress { action: held, .. })
                if update.supersede
                    && [Action::Create, Action::Update, Action::Rollback].contains(&held) =>
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
        .bind(update.on_failure.map(OnFailure::as_str))
        .bind(update.timeout_ms)
        .bind(action.as_str())
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
        let started = Event::stack(stack_id, action, Status::InProgress, &started);
        self.record(&mut tx, &started, engine).await?;
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

    /// Takes the stack lock, or reports who holds it.
    async fn lock(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        stack_id: &str,
        action: Action,
        engine: &str,
    ) -> Result<()> {
        let taken = sqlx::query(self.sql(
            "INSERT INTO stack_locks (stack_id, action, holder, acquired_at) VALUES ($1, $2, $3, NOW_MS)
             ON CONFLICT (stack_id) DO NOTHING",
        ))
        .bind(stack_id)
        .bind(action.as_str())
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
            action: parse_stored(&held)?,
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
        operation: JobOp,
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
                .bind(operation.as_str());
            for r in chunk {
                query = query.bind(*r);
            }
            query.execute(&mut **tx).await?;
        }
        Ok(())
    }
}
