//! The lease queue: due jobs claimed with a lease on the database clock and a fencing token
//! that grows with every claim, leases renewed while calls run, and every write about a job
//! (its result, a poll, a retry, an event, an error) accepted only while the claim that makes
//! it still holds the job. What the traversal does with a finished job is `traversal/`'s.

use super::{Dialect, Event, Result, Store, StoreError};
use crate::model::{Action, EventStatus, JobOp, Status};

/// A job this engine holds.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub stack_id: String,
    pub resource: String,
    pub traversal: i64,
    pub operation: JobOp,
    pub attempt: i64,
    /// Set when the job polls a long operation.
    pub pending_state: Option<String>,
    /// What an earlier attempt of this (update) job decided to do, if one did (`job_started`).
    pub decision: Option<String>,
    pub token: i64,
    /// When the first failed attempt ended (database clock, ms), if one did.
    pub first_failure_at: Option<i64>,
    /// The delay chosen before this attempt, if it is a retry.
    pub last_delay_ms: Option<i64>,
    /// The failed attempts so far (JSON list of `retry::Attempt`).
    pub history: Option<String>,
    /// When the job first started work (database clock, ms).
    pub started_at: i64,
}

/// What `claim` found.
#[derive(Debug)]
pub enum Claim {
    Job(Claimed),
    /// A due job of this stack was left for later: `admit` refused it.
    Refused(String),
    Nothing,
}

/// What a finished job writes to its resource.
#[derive(Debug, Clone)]
pub struct ResourceUpdate {
    pub action: Action,
    pub status: Status,
    pub reason: String,
    pub physical_id: Option<String>,
    pub state: Option<String>,
    pub attributes: Option<String>,
    pub properties: Option<String>,
    /// The served type, when it changed (a replacement by another type).
    pub type_name: Option<String>,
    /// The names it depends on now (JSON list), when (re)applied.
    pub requires: Option<String>,
    /// `Delete` or `Retain`, when (re)applied.
    pub deletion_policy: Option<String>,
    /// A replacement: before the write, the object the row held moves to a new row of this
    /// name, which the update's cleanup deletes.
    pub retire_as: Option<String>,
    /// Nothing changed (an update found the resource as the template wants it): only mark it
    /// done in this traversal, with no event.
    pub unchanged: bool,
    /// A row to remove in the same transaction: the replaced object a rollback restored
    /// (its identity is now this row's).
    pub forget: Option<String>,
}

/// Each writer sets the action and status it means; the default is what a new row holds
/// (INIT_COMPLETE: nothing done yet), so that `..Default::default()` never claims an action.
impl Default for ResourceUpdate {
    fn default() -> Self {
        Self {
            action: Action::Init,
            status: Status::Complete,
            reason: String::new(),
            physical_id: None,
            state: None,
            attributes: None,
            properties: None,
            type_name: None,
            requires: None,
            deletion_policy: None,
            retire_as: None,
            unchanged: false,
            forget: None,
        }
    }
}

#[derive(sqlx::FromRow)]
struct ClaimRow {
    id: i64,
    stack_id: String,
    resource: String,
    traversal: i64,
    #[sqlx(try_from = "String")]
    operation: JobOp,
    attempt: i64,
    pending_state: Option<String>,
    decision: Option<String>,
    token: i64,
    first_failure_at: Option<i64>,
    last_delay_ms: Option<i64>,
    history: Option<String>,
    started_at: i64,
}

impl Store {
    /// Claims the next due job, if any, for `lease_ms`, and (unless it resumes polling) marks
    /// its resource IN_PROGRESS with an event, in one transaction. A job whose lease expired
    /// (its engine died or stalled) is claimable like a new one; the token grows with every
    /// claim. Jobs of the stacks in `skip` (those at this engine's per-stack limit) wait, and
    /// `admit` (called before anything is written) may still refuse the job's stack: then the
    /// claim is rolled back and `Refused` names the stack.
    pub async fn claim(
        &self,
        engine: &str,
        lease_ms: i64,
        skip: &[String],
        admit: impl FnOnce(&str) -> bool,
    ) -> Result<Claim> {
        let lock = match self.dialect {
            Dialect::Postgres => "FOR UPDATE SKIP LOCKED",
            // SQLite has one writer at a time: the UPDATE is the claim.
            Dialect::Sqlite => "",
        };
        let skip_list = if skip.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = (0..skip.len()).map(|i| format!("${}", i + 3)).collect();
            format!("AND j.stack_id NOT IN ({})", list.join(", "))
        };
        let q = format!(
            "UPDATE jobs SET lease_owner = $1, lease_expires_at = NOW_MS + $2, token = token + 1,
                    started_at = COALESCE(started_at, NOW_MS)
             WHERE id = (
                 SELECT j.id FROM jobs j
                 WHERE j.due_at <= NOW_MS AND (j.lease_expires_at IS NULL OR j.lease_expires_at < NOW_MS)
                   {skip_list}
                 ORDER BY j.due_at, j.id LIMIT 1 {lock})
             RETURNING id, stack_id, resource, traversal, operation, attempt, pending_state, decision, token,
                       first_failure_at, last_delay_ms, history, started_at"
        );
        let mut tx = self.begin().await?;
        let mut query = sqlx::query_as(self.sql_owned(q))
            .bind(engine)
            .bind(lease_ms);
        for stack in skip {
            query = query.bind(stack.as_str());
        }
        let row: Option<ClaimRow> = query.fetch_optional(&mut *tx).await?;
        let Some(r) = row else {
            tx.commit().await?;
            return Ok(Claim::Nothing);
        };
        if !admit(&r.stack_id) {
            tx.rollback().await?;
            return Ok(Claim::Refused(r.stack_id));
        }
        let job = Claimed {
            id: r.id,
            stack_id: r.stack_id,
            resource: r.resource,
            traversal: r.traversal,
            operation: r.operation,
            attempt: r.attempt,
            pending_state: r.pending_state,
            decision: r.decision,
            token: r.token,
            first_failure_at: r.first_failure_at,
            last_delay_ms: r.last_delay_ms,
            history: r.history,
            started_at: r.started_at,
        };
        // An update job first decides whether there is anything to do (see `job_started`).
        if job.pending_state.is_none() && job.operation != JobOp::Update {
            let action = job.operation.action();
            sqlx::query(self.sql(
                "UPDATE resources SET action = $3, status = 'IN_PROGRESS', status_reason = '', traversal = $4,
                        updated_at = NOW_MS
                 WHERE stack_id = $1 AND name = $2",
            ))
            .bind(&job.stack_id)
            .bind(&job.resource)
            .bind(action.as_str())
            .bind(job.traversal)
            .execute(&mut *tx)
            .await?;
            let reason = if job.attempt > 1 {
                format!("attempt {}", job.attempt)
            } else {
                "state changed".into()
            };
            let started = Event::job(&job, Status::InProgress, &reason);
            self.record(&mut tx, &started, engine).await?;
        }
        tx.commit().await?;
        Ok(Claim::Job(job))
    }

    /// Milliseconds until the next job is due (0 if one is due now), if any job is waiting.
    pub async fn next_due_in(&self) -> Result<Option<i64>> {
        let (due,): (Option<i64>,) = sqlx::query_as(self.sql(
            "SELECT MIN(due_at) - NOW_MS FROM jobs WHERE lease_expires_at IS NULL OR lease_expires_at < NOW_MS",
        ))
        .fetch_one(&self.pool)
        .await?;
        Ok(due.map(|d| d.max(0)))
    }

    /// Extends the leases of every job this engine holds.
    pub async fn extend_leases(&self, engine: &str, lease_ms: i64) -> Result<u64> {
        Ok(sqlx::query(
            self.sql("UPDATE jobs SET lease_expires_at = NOW_MS + $2 WHERE lease_owner = $1"),
        )
        .bind(engine)
        .bind(lease_ms)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Puts the job back to run again after `delay_ms` (a long operation's poll), keeping its
    /// place in the traversal.
    pub async fn reschedule(
        &self,
        job: &Claimed,
        engine: &str,
        delay_ms: i64,
        pending_state: Option<&str>,
    ) -> Result<()> {
        let n = sqlx::query(self.sql_owned(
            "UPDATE jobs SET due_at = DUE_AT, pending_state = $5, lease_owner = NULL, lease_expires_at = NULL
             WHERE id = $1 AND token = $2 AND lease_owner = $3"
                .replace("DUE_AT", DUE_AT),
        ))
        .bind(job.id)
        .bind(job.token)
        .bind(engine)
        .bind(delay_ms)
        .bind(pending_state)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if n == 1 {
            Ok(())
        } else {
            Err(StoreError::Fenced(job.id))
        }
    }

    /// Schedules the next attempt of a failed job after `delay_ms`, recording the failure in
    /// its history and an event saying what failed, when it runs again and which policy chose.
    pub async fn retry(
        &self,
        job: &Claimed,
        engine: &str,
        delay_ms: i64,
        history: &str,
        reason: &str,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let n = sqlx::query(self.sql_owned(
            "UPDATE jobs SET attempt = attempt + 1, due_at = DUE_AT, last_delay_ms = $4,
                    first_failure_at = COALESCE(first_failure_at, NOW_MS), history = $5, pending_state = NULL,
                    lease_owner = NULL, lease_expires_at = NULL
             WHERE id = $1 AND token = $2 AND lease_owner = $3"
                .replace("DUE_AT", DUE_AT),
        ))
        .bind(job.id)
        .bind(job.token)
        .bind(engine)
        .bind(delay_ms)
        .bind(history)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            return Err(StoreError::Fenced(job.id));
        }
        self.record(
            &mut tx,
            &Event::job(job, EventStatus::Retry, reason),
            engine,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Fails with `Fenced` unless this engine still holds the job; otherwise locks its row
    /// until `tx` ends (a no-op UPDATE rather than a SELECT), so that what `tx` writes about
    /// the job lands only while the job is held.
    async fn hold(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        job: &Claimed,
        engine: &str,
    ) -> Result<()> {
        let held = sqlx::query(
            "UPDATE jobs SET token = token WHERE id = $1 AND token = $2 AND lease_owner = $3",
        )
        .bind(job.id)
        .bind(job.token)
        .bind(engine)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if held != 1 {
            return Err(StoreError::Fenced(job.id));
        }
        Ok(())
    }

    /// Records an event about a job this engine still holds (for example a credentials refresh
    /// between two calls); like every other write of a job, it is fenced by the job's token.
    pub async fn job_event(
        &self,
        job: &Claimed,
        engine: &str,
        status: EventStatus,
        reason: &str,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        self.hold(&mut tx, job, engine).await?;
        self.record(&mut tx, &Event::job(job, status, reason), engine)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks the job's resource IN_PROGRESS for `action`, with an event saying why, and
    /// stores the job's `decision` with it: an update job calls it once it has decided to act
    /// (a resource left unchanged gets no event), and every later attempt of the job reads the
    /// decision back from its claim.
    pub async fn job_started(
        &self,
        job: &Claimed,
        engine: &str,
        action: Action,
        reason: &str,
        decision: &str,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        // Storing the decision is also the fence (as `hold`): one statement, not two.
        let held = sqlx::query(
            "UPDATE jobs SET decision = $4 WHERE id = $1 AND token = $2 AND lease_owner = $3",
        )
        .bind(job.id)
        .bind(job.token)
        .bind(engine)
        .bind(decision)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if held != 1 {
            return Err(StoreError::Fenced(job.id));
        }
        sqlx::query(self.sql(
            "UPDATE resources SET action = $3, status = 'IN_PROGRESS', status_reason = $4, traversal = $5,
                    updated_at = NOW_MS
             WHERE stack_id = $1 AND name = $2",
        ))
        .bind(&job.stack_id)
        .bind(&job.resource)
        .bind(action.as_str())
        .bind(reason)
        .bind(job.traversal)
        .execute(&mut *tx)
        .await?;
        let started = Event::resource(
            &job.stack_id,
            &job.resource,
            action,
            Status::InProgress,
            reason,
        );
        self.record(&mut tx, &started, engine).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records an error inside the engine while working the job: the job comes back after
    /// `delay_ms` (not after its lease), and at the `limit`-th such error its resource fails
    /// with the error instead. Returns whether it failed.
    pub async fn job_error(
        &self,
        job: &Claimed,
        engine: &str,
        error: &str,
        delay_ms: i64,
        limit: i64,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let errors: Option<(i64,)> = sqlx::query_as(self.sql(
            "UPDATE jobs SET internal_errors = internal_errors + 1, due_at = NOW_MS + $4,
                    lease_owner = NULL, lease_expires_at = NULL
             WHERE id = $1 AND token = $2 AND lease_owner = $3 RETURNING internal_errors",
        ))
        .bind(job.id)
        .bind(job.token)
        .bind(engine)
        .bind(delay_ms)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((errors,)) = errors else {
            return Err(StoreError::Fenced(job.id));
        };
        if errors < limit {
            tx.commit().await?;
            return Ok(false);
        }
        let reason = format!("internal error ({errors} times on this job): {error}");
        sqlx::query("DELETE FROM jobs WHERE id = $1")
            .bind(job.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(self.sql(
            "UPDATE resources SET status = 'FAILED', status_reason = $3, traversal = $4, updated_at = NOW_MS
             WHERE stack_id = $1 AND name = $2",
        ))
        .bind(&job.stack_id)
        .bind(&job.resource)
        .bind(&reason)
        .bind(job.traversal)
        .execute(&mut *tx)
        .await?;
        self.record(&mut tx, &Event::job(job, Status::Failed, &reason), engine)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Removes a job that belongs to a traversal no longer running (superseded or ended).
    pub async fn drop_job(&self, job: &Claimed, engine: &str) -> Result<()> {
        sqlx::query("DELETE FROM jobs WHERE id = $1 AND token = $2 AND lease_owner = $3")
            .bind(job.id)
            .bind(job.token)
            .bind(engine)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Finishes a job: removes it (only if this engine still holds it), writes the resource and
    /// its event. Then call `schedule_ready` and `try_finish_traversal`.
    pub async fn finish(&self, job: &Claimed, engine: &str, u: &ResourceUpdate) -> Result<()> {
        let mut tx = self.begin().await?;
        let n = sqlx::query("DELETE FROM jobs WHERE id = $1 AND token = $2 AND lease_owner = $3")
            .bind(job.id)
            .bind(job.token)
            .bind(engine)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n != 1 {
            return Err(StoreError::Fenced(job.id));
        }
        if u.unchanged {
            sqlx::query(self.sql(
                "UPDATE resources SET traversal = $3, requires = COALESCE($4, requires),
                        deletion_policy = COALESCE($5, deletion_policy), updated_at = NOW_MS
                 WHERE stack_id = $1 AND name = $2",
            ))
            .bind(&job.stack_id)
            .bind(&job.resource)
            .bind(job.traversal)
            .bind(&u.requires)
            .bind(&u.deletion_policy)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(());
        }
        if let Some(retired) = &u.retire_as {
            // The old object keeps its identity, properties and dependencies in its own row
            // until the cleanup deletes it; only rows that hold an object move.
            sqlx::query(self.sql(
                "INSERT INTO resources (stack_id, name, type, action, status, status_reason, physical_id, state,
                                        attributes, properties, traversal, updated_at, requires, deletion_policy)
                 SELECT stack_id, $3, type, action, 'COMPLETE', $4, physical_id, state, attributes, properties,
                        0, NOW_MS, requires, deletion_policy
                 FROM resources WHERE stack_id = $1 AND name = $2 AND (physical_id IS NOT NULL OR state IS NOT NULL)",
            ))
            .bind(&job.stack_id)
            .bind(&job.resource)
            .bind(retired)
            .bind(format!("replaced by a new {}; deleted when the update cleans up", job.resource))
            .execute(&mut *tx)
            .await?;
        }
        if let Some(restored) = &u.forget {
            sqlx::query("DELETE FROM resources WHERE stack_id = $1 AND name = $2")
                .bind(&job.stack_id)
                .bind(restored)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(self.sql(
            "UPDATE resources SET action = $3, status = $4, status_reason = $5, physical_id = $6, state = $7,
                    attributes = $8, properties = COALESCE($9, properties), traversal = $10, updated_at = NOW_MS,
                    type = COALESCE($11, type), requires = COALESCE($12, requires),
                    deletion_policy = COALESCE($13, deletion_policy)
             WHERE stack_id = $1 AND name = $2",
        ))
        .bind(&job.stack_id)
        .bind(&job.resource)
        .bind(u.action.as_str())
        .bind(u.status.as_str())
        .bind(&u.reason)
        .bind(&u.physical_id)
        .bind(&u.state)
        .bind(&u.attributes)
        .bind(&u.properties)
        .bind(job.traversal)
        .bind(&u.type_name)
        .bind(&u.requires)
        .bind(&u.deletion_policy)
        .execute(&mut *tx)
        .await?;
        let done = Event::resource(&job.stack_id, &job.resource, u.action, u.status, &u.reason)
            .with_physical_id(u.physical_id.as_deref());
        self.record(&mut tx, &done, engine).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Wakes the engines waiting for work (PostgreSQL `NOTIFY`; SQLite engines poll).
    pub async fn notify_jobs(&self) -> Result<()> {
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_notify('kiln_jobs', '')") // see wakeups.rs
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Hands back every job `engine` holds (a shutdown past its grace period): free for any
    /// engine at once, with a new token so that a call still running here cannot write.
    pub async fn release_jobs(&self, engine: &str) -> Result<u64> {
        let n = sqlx::query(
            "UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL, token = token + 1
             WHERE lease_owner = $1",
        )
        .bind(engine)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if n > 0 {
            self.notify_jobs().await?;
        }
        Ok(n)
    }
}

/// `NOW_MS + $4`, but never past the deadline of the job's stack: a poll or a retry waiting
/// for later wakes up when the action times out, to fail.
const DUE_AT: &str =
    "CASE WHEN (SELECT deadline_at FROM stacks WHERE id = jobs.stack_id) < NOW_MS + $4
     THEN (SELECT deadline_at FROM stacks WHERE id = jobs.stack_id) ELSE NOW_MS + $4 END";
