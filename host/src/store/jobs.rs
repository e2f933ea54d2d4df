//! Jobs: claiming with a lease and a fencing token, and finishing a resource — its state, its
//! event, the dependents it makes ready and possibly the end of the traversal — in one
//! transaction. A write whose token is stale (another engine took the job over) is rejected.

use super::{Dialect, Result, Store, StoreError};

/// A job this engine holds.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub stack_id: String,
    pub resource: String,
    pub traversal: i64,
    pub operation: String,
    pub attempt: i64,
    /// Set when the job polls a long operation.
    pub pending_state: Option<String>,
    pub token: i64,
}

/// What a finished job writes to its resource.
#[derive(Debug, Clone)]
pub struct ResourceUpdate {
    pub action: String,
    pub status: String,
    pub reason: String,
    pub physical_id: Option<String>,
    pub state: Option<String>,
    pub attributes: Option<String>,
    pub properties: Option<String>,
}

/// A finished job: the resource's new state and which resources may now be ready.
pub struct Finish<'a> {
    pub update: ResourceUpdate,
    /// Resources waiting on this one (dependents for create, dependencies for delete).
    pub wake: &'a [String],
}

/// What finishing changed.
#[derive(Debug, Default)]
pub struct Finished {
    /// Jobs made for resources that became ready.
    pub scheduled: usize,
    /// The traversal ended with this job.
    pub traversal_done: bool,
}

impl Store {
    /// Claims the next due job, if any, for `lease_ms`. A job whose lease expired (its engine
    /// died or stalled) is claimable like a new one; the token grows with every claim.
    pub async fn claim(
        &self,
        engine: &str,
        lease_ms: i64,
        per_stack_limit: i64,
    ) -> Result<Option<Claimed>> {
        let q = match self.dialect {
            Dialect::Postgres => {
                "UPDATE jobs SET lease_owner = $1, lease_expires_at = NOW_MS + $2, token = token + 1
                 WHERE id = (
                     SELECT j.id FROM jobs j
                     WHERE j.due_at <= NOW_MS AND (j.lease_expires_at IS NULL OR j.lease_expires_at < NOW_MS)
                       AND (SELECT COUNT(*) FROM jobs r WHERE r.stack_id = j.stack_id AND r.lease_expires_at >= NOW_MS) < $3
                     ORDER BY j.due_at, j.id LIMIT 1
                     FOR UPDATE SKIP LOCKED)
                 RETURNING id, stack_id, resource, traversal, operation, attempt, pending_state, token"
            }
            // SQLite has one writer at a time: the UPDATE is the claim.
            Dialect::Sqlite => {
                "UPDATE jobs SET lease_owner = $1, lease_expires_at = NOW_MS + $2, token = token + 1
                 WHERE id = (
                     SELECT j.id FROM jobs j
                     WHERE j.due_at <= NOW_MS AND (j.lease_expires_at IS NULL OR j.lease_expires_at < NOW_MS)
                       AND (SELECT COUNT(*) FROM jobs r WHERE r.stack_id = j.stack_id AND r.lease_expires_at >= NOW_MS) < $3
                     ORDER BY j.due_at, j.id LIMIT 1)
                 RETURNING id, stack_id, resource, traversal, operation, attempt, pending_state, token"
            }
        };
        let row: Option<(i64, String, String, i64, String, i64, Option<String>, i64)> =
            sqlx::query_as(self.sql(q))
                .bind(engine)
                .bind(lease_ms)
                .bind(per_stack_limit)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(
            |(id, stack_id, resource, traversal, operation, attempt, pending_state, token)| {
                Claimed {
                    id,
                    stack_id,
                    resource,
                    traversal,
                    operation,
                    attempt,
                    pending_state,
                    token,
                }
            },
        ))
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

    /// Records that work on the job's resource started (the first attempt, not each poll).
    pub async fn start(&self, job: &Claimed, engine: &str, action: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        self.check_token(&mut tx, job, engine).await?;
        sqlx::query(self.sql(
            "UPDATE resources SET action = $3, status = 'IN_PROGRESS', status_reason = '', updated_at = NOW_MS
             WHERE stack_id = $1 AND name = $2",
        ))
        .bind(&job.stack_id)
        .bind(&job.resource)
        .bind(action)
        .execute(&mut *tx)
        .await?;
        self.event(
            &mut tx,
            &job.stack_id,
            Some(&job.resource),
            action,
            "IN_PROGRESS",
            "state changed",
            None,
            engine,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn check_token(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        job: &Claimed,
        engine: &str,
    ) -> Result<()> {
        let held: Option<(i64,)> =
            sqlx::query_as("SELECT id FROM jobs WHERE id = $1 AND token = $2 AND lease_owner = $3")
                .bind(job.id)
                .bind(job.token)
                .bind(engine)
                .fetch_optional(&mut **tx)
                .await?;
        held.map(|_| ()).ok_or(StoreError::Fenced(job.id))
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
        let n = sqlx::query(self.sql(
            "UPDATE jobs SET due_at = NOW_MS + $4, pending_state = $5, lease_owner = NULL, lease_expires_at = NULL
             WHERE id = $1 AND token = $2 AND lease_owner = $3",
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

    /// Finishes a job: writes the resource, its event, jobs for resources that became ready,
    /// and ends the traversal when this was its last job. After a failure in the traversal no
    /// new work starts; what is running finishes and is recorded.
    pub async fn finish(
        &self,
        job: &Claimed,
        engine: &str,
        finish: Finish<'_>,
    ) -> Result<Finished> {
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
        let u = &finish.update;
        sqlx::query(self.sql(
            "UPDATE resources SET action = $3, status = $4, status_reason = $5, physical_id = $6, state = $7,
                    attributes = $8, properties = COALESCE($9, properties), updated_at = NOW_MS
             WHERE stack_id = $1 AND name = $2",
        ))
        .bind(&job.stack_id)
        .bind(&job.resource)
        .bind(&u.action)
        .bind(&u.status)
        .bind(&u.reason)
        .bind(&u.physical_id)
        .bind(&u.state)
        .bind(&u.attributes)
        .bind(&u.properties)
        .execute(&mut *tx)
        .await?;
        self.event(
            &mut tx,
            &job.stack_id,
            Some(&job.resource),
            &u.action,
            &u.status,
            &u.reason,
            u.physical_id.as_deref(),
            engine,
        )
        .await?;

        // Locks the stack row: completions of one stack serialise here, so exactly one of them
        // sees the traversal's last job go.
        let failed_now = i64::from(u.status == "FAILED");
        let (failed, traversal): (i64, i64) =
            sqlx::query_as(self.sql("UPDATE stacks SET failed = failed + $2, updated_at = NOW_MS WHERE id = $1 RETURNING failed, traversal"))
                .bind(&job.stack_id)
                .bind(failed_now)
                .fetch_one(&mut *tx)
                .await?;
        if traversal != job.traversal {
            // A job of a superseded traversal: its result is recorded, nothing more.
            tx.commit().await?;
            return Ok(Finished::default());
        }
        let mut ready = Vec::new();
        if failed == 0 {
            for name in finish.wake {
                let (left,): (i64,) = sqlx::query_as(
                    "UPDATE resources SET deps_left = deps_left - 1 WHERE stack_id = $1 AND name = $2 RETURNING deps_left",
                )
                .bind(&job.stack_id)
                .bind(name)
                .fetch_one(&mut *tx)
                .await?;
                if left == 0 {
                    ready.push(name.as_str());
                }
            }
        }
        self.insert_jobs(&mut tx, &job.stack_id, traversal, &job.operation, &ready)
            .await?;
        let (in_flight,): (i64,) = sqlx::query_as(
            "UPDATE stacks SET in_flight = in_flight - 1 + $2 WHERE id = $1 RETURNING in_flight",
        )
        .bind(&job.stack_id)
        .bind(ready.len() as i64)
        .fetch_one(&mut *tx)
        .await?;
        let traversal_done = in_flight == 0;
        if traversal_done {
            self.finish_traversal(&mut tx, &job.stack_id, &u.action, failed, engine)
                .await?;
        }
        tx.commit().await?;
        Ok(Finished {
            scheduled: ready.len(),
            traversal_done,
        })
    }
}
