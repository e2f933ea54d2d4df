//! One job, start to end: the claimed job is checked against its traversal (dropped if it
//! ended, timed out if past a deadline), its step runs (`steps.rs`), and the result is
//! recorded, fenced by the claim; then the traversal moves on (`traversal.rs`). The job's log
//! lines all carry its span.

use std::time::Instant;

use serde_json::Value;
use tracing::Instrument;

use super::Engine;
use super::steps::Step;
use crate::metrics;
use crate::model::{JobOp, OnFailure, Status};
use crate::store::{Claimed, ResourceUpdate, StoreError};

/// What working a job came to, for its log line.
enum Worked {
    /// Left over from a traversal that ended or was superseded.
    Dropped,
    /// Put back until a superseded action's call on the resource ends.
    AfterStaleCall,
    /// A long operation goes on: polled again after `delay_ms`.
    Pending { delay_ms: u64 },
    /// The call failed and runs again (`reason` says when and why).
    Retry { reason: String },
    /// The resource ended in this action: `CREATE_COMPLETE`, `DELETE_FAILED`...
    Ended { outcome: String, reason: String },
}

/// Logs what a job came to. A finished resource, a retry: info, one line each. A poll and
/// the rest: debug, since a long operation polls many times.
fn finished(worked: Worked, started: Instant) {
    let duration_ms = started.elapsed().as_millis() as u64;
    match worked {
        Worked::Ended { outcome, reason } => {
            tracing::info!(%outcome, %reason, duration_ms, "job finished: {outcome}")
        }
        Worked::Retry { reason } => {
            tracing::info!(
                outcome = "retry",
                duration_ms,
                "job will run again: {reason}"
            )
        }
        Worked::Pending { delay_ms } => tracing::debug!(
            outcome = "pending",
            duration_ms,
            "job pending: polling again in {delay_ms} ms"
        ),
        Worked::AfterStaleCall => tracing::debug!(
            outcome = "deferred",
            duration_ms,
            "job waits for a superseded call on its resource"
        ),
        Worked::Dropped => tracing::debug!(
            outcome = "dropped",
            duration_ms,
            "job dropped: its traversal ended or was superseded"
        ),
    }
}

impl Engine {
    /// Works one claimed job; true when it made new work or ended a traversal. Everything
    /// logged meanwhile (plugin log records included) carries the job's span: the stack, the
    /// traversal, the resource and the operation.
    pub(super) async fn process(&self, job: Claimed) -> bool {
        metrics::job_claimed(job.operation);
        let span = tracing::info_span!(
            "job",
            // The name is known once the stack's row is read (`process_inner`).
            stack = tracing::field::Empty,
            stack_id = %job.stack_id,
            traversal = job.traversal,
            resource = %job.resource,
            operation = %job.operation,
            attempt = job.attempt,
            job = job.id,
        );
        async {
            match self.process_inner(&job, Instant::now()).await {
                Ok(woke) => woke,
                Err(StoreError::Fenced(id)) => {
                    tracing::warn!(
                        job = id,
                        "job was taken over by another engine; dropping its result"
                    );
                    false
                }
                Err(e) => {
                    tracing::error!("job failed: {e}");
                    self.after_internal_error(&job, &e).await
                }
            }
        }
        .instrument(span)
        .await
    }

    /// An error of the engine itself (database, stored data) while working a job: the job
    /// comes back after a backoff, here or on another engine; one that keeps failing fails
    /// its resource with the error, so that the stack ends instead of waiting forever.
    async fn after_internal_error(&self, job: &Claimed, e: &StoreError) -> bool {
        const LIMIT: i64 = 5;
        let store = &self.inner.store;
        let engine = self.inner.id.as_str();
        match store
            .job_error(job, engine, &e.to_string(), 1000, LIMIT)
            .await
        {
            Ok(true) => {
                metrics::job_ended(job.operation, true);
                tracing::warn!("the resource failed after {LIMIT} internal errors");
                let ended = async {
                    let row = store.find_stack(&job.stack_id).await?;
                    if row.on_failure != OnFailure::Continue {
                        store
                            .stop_after_failure(&job.stack_id, job.traversal, engine)
                            .await?;
                    }
                    store
                        .try_finish_traversal(&job.stack_id, job.traversal, row.action, engine)
                        .await
                };
                if let Err(e) = ended.await {
                    tracing::warn!("ending the traversal after an internal error failed: {e}");
                }
                true
            }
            Ok(false) => false,
            // Otherwise the lease runs out and the job is retried as before.
            Err(e) => {
                tracing::warn!(job = job.id, "recording the error failed: {e}");
                false
            }
        }
    }

    /// Works the job and logs what it came to (`finished`) as soon as that is known: before
    /// any line about what followed (the end of the traversal, a rollback).
    async fn process_inner(&self, job: &Claimed, started: Instant) -> Result<bool, StoreError> {
        let store = &self.inner.store;
        let engine = self.inner.id.as_str();
        let mut row = store.find_stack(&job.stack_id).await?;
        tracing::Span::current().record("stack", row.name.as_str());
        if row.cancel_requested_at.is_none()
            && row.status == Status::InProgress
            && let Some(deadline) = row.deadline_at
            && store.now_ms().await? >= deadline
        {
            // Past the deadline before the leader noticed: time the action out from here.
            row = match store.time_out(&row.id, engine).await {
                Ok(row) => row,
                Err(StoreError::NothingToCancel(_)) => store.find_stack(&job.stack_id).await?,
                Err(e) => return Err(e),
            };
        }
        if row.traversal != job.traversal || row.status != Status::InProgress {
            // Left over from a traversal that ended or was superseded.
            store.drop_job(job, engine).await?;
            finished(Worked::Dropped, started);
            return Ok(false);
        }
        if job.operation == JobOp::Update && store.stale_call_running(job).await? {
            // A superseded action's call on this resource is still running: after it.
            store.reschedule(job, engine, 500, None).await?;
            finished(Worked::AfterStaleCall, started);
            return Ok(false);
        }
        let plan = self.plan(&row).await?;
        let action = job.operation.action();
        // A cancel is checked before each step; a long operation being polled still finishes
        // (the cloud is doing it), anything else does not start.
        let timed_out =
            matches!((row.cancel_requested_at, row.deadline_at), (Some(c), Some(d)) if c >= d);
        // The resource's own timeout runs from its job's first start, across polls and retries.
        let own_timeout = plan
            .stack
            .resource(&job.resource)
            .and_then(|r| r.timeout_secs)
            .filter(|_| job.operation != JobOp::Cleanup);
        let left_ms = match own_timeout {
            Some(t) => Some(job.started_at + t as i64 * 1000 - store.now_ms().await?),
            None => None,
        };
        let step = if timed_out {
            // A timeout stops long operations too: the deadline is the user's.
            Step::Failed(if job.pending_state.is_some() {
                "timed out while its operation was still running".into()
            } else {
                "timed out before it started".into()
            })
        } else if let (Some(t), Some(left)) = (own_timeout, left_ms)
            && left <= 0
        {
            Step::Failed(format!("timed out after {t} s (the resource's timeout)"))
        } else if row.cancel_requested_at.is_some() && job.pending_state.is_none() {
            Step::Failed("cancelled before it started".into())
        } else {
            match self.step(job, &plan).await? {
                // Never wait past the resource's deadline: come back then, to fail.
                Step::Pending { delay_ms, state } => Step::Pending {
                    delay_ms: left_ms.map_or(delay_ms, |l| delay_ms.min(l.max(0) as u64)),
                    state,
                },
                Step::Retry {
                    delay_ms,
                    history,
                    reason,
                } => Step::Retry {
                    delay_ms: left_ms.map_or(delay_ms, |l| delay_ms.min(l.max(0) as u64)),
                    history,
                    reason,
                },
                step => step,
            }
        };
        // A plugin's message may quote a property, and a property a hidden parameter.
        let secrets = &plan.secrets;
        let step = match step {
            Step::Failed(reason) => Step::Failed(secrets.text(&reason)),
            Step::Retry {
                delay_ms,
                history,
                reason,
            } => Step::Retry {
                delay_ms,
                history: secrets.text(&history),
                reason: secrets.text(&reason),
            },
            Step::Done(mut update) => {
                update.reason = secrets.text(&update.reason);
                Step::Done(update)
            }
            pending => pending,
        };
        let update = match step {
            Step::Pending { delay_ms, state } => {
                store
                    .reschedule(job, engine, delay_ms as i64, Some(&state.to_string()))
                    .await?;
                finished(Worked::Pending { delay_ms }, started);
                return Ok(false);
            }
            Step::Retry {
                delay_ms,
                history,
                reason,
            } => {
                store
                    .retry(job, engine, delay_ms as i64, &history, &reason)
                    .await?;
                finished(Worked::Retry { reason }, started);
                return Ok(false);
            }
            Step::Done(update) => *update,
            Step::Failed(reason) => {
                self.keep_identity(
                    job,
                    ResourceUpdate {
                        action,
                        status: Status::Failed,
                        reason,
                        ..ResourceUpdate::default()
                    },
                )
                .await?
            }
        };
        store.finish(job, engine, &update).await?;
        metrics::job_ended(job.operation, update.status == Status::Failed);
        let outcome = format!("{}_{}", update.action, update.status);
        finished(
            Worked::Ended {
                outcome,
                reason: update.reason.clone(),
            },
            started,
        );
        // After the commit (see store/jobs.rs): what this made ready, and maybe the end.
        let made = if update.status == Status::Failed {
            // A check goes on: it reports on every resource.
            if row.on_failure != OnFailure::Continue && job.operation != JobOp::Check {
                store
                    .stop_after_failure(&job.stack_id, job.traversal, engine)
                    .await?;
            }
            0
        } else {
            match job.operation {
                JobOp::Delete => {
                    let next = plan
                        .removal
                        .as_ref()
                        .map_or(&[][..], |r| r.next(&job.resource));
                    let next: Vec<&str> = next.iter().map(String::as_str).collect();
                    self.schedule(&plan, job.traversal, JobOp::Delete, &next)
                        .await?
                }
                JobOp::Cleanup => self.schedule_cleanup(&plan, job.traversal).await?,
                JobOp::Check => 0,
                op @ (JobOp::Create | JobOp::Update) => {
                    let next: Vec<&str> = plan
                        .dependents(&job.resource)
                        .iter()
                        .map(String::as_str)
                        .collect();
                    match self.schedule(&plan, job.traversal, op, &next).await? {
                        0 if op == JobOp::Update => {
                            self.schedule_cleanup(&plan, job.traversal).await?
                        }
                        made => made,
                    }
                }
            }
        };
        if made > 0 {
            return Ok(true);
        }
        let ended = store
            .try_finish_traversal(&job.stack_id, job.traversal, row.action, engine)
            .await?;
        if ended {
            tracing::info!("the job ended the stack's {} action", row.action);
            self.ended(&job.stack_id, job.traversal).await?;
        }
        Ok(ended)
    }

    /// A failed create or delete keeps what the store knew of the object (its id and state),
    /// so that a later delete or retry can still find it.
    async fn keep_identity(
        &self,
        job: &Claimed,
        mut u: ResourceUpdate,
    ) -> Result<ResourceUpdate, StoreError> {
        if u.status == Status::Failed {
            let rows = self
                .inner
                .store
                .resources_named(&job.stack_id, &[job.resource.as_str()])
                .await?;
            if let Some(r) = rows.first() {
                if job.operation == JobOp::Update && r.status == Status::InProgress {
                    // What the update was doing to it: creating, or updating/replacing.
                    u.action = r.action;
                }
                u.physical_id = r.physical_id.clone();
                u.state = r.state.clone();
                u.attributes = r.attributes.as_ref().map(Value::to_string);
            }
        }
        Ok(u)
    }
}
