//! Working one job: resolve the resource's properties from its dependencies in the store, call
//! the plugin in a fresh sandbox, and record the result (done, pending or failed).

use std::future::Future;
use std::time::Instant;

use serde_json::Value;
use tracing::Instrument;

use super::Engine;
use super::StoredResolver;
use super::builtin;
use super::plan::Plan;
use crate::credentials::Refresh;
use crate::metrics::{self, BudgetLabels, RefreshLabels, RetryLabels, metrics};
use crate::retry::{Attempt, Verdict, as_plugin_error, summarize};
use crate::runtime::{
    CallContext, CallError, Current, Done, Operation, Outcome, Plugin, PluginError,
};
use crate::store::{Claimed, ResourceRow, ResourceUpdate, StoreError, action_of};
use crate::template::{DeletionPolicy, Resource};

/// What became of a job.
pub(super) enum Step {
    Done(Box<ResourceUpdate>),
    Failed(String),
    Pending {
        delay_ms: u64,
        state: Value,
    },
    /// Run the call again after `delay_ms` (a retry policy's decision).
    Retry {
        delay_ms: u64,
        history: String,
        reason: String,
    },
}

impl Step {
    pub(super) fn done(update: ResourceUpdate) -> Self {
        Step::Done(Box::new(update))
    }
}

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
        metrics::job_claimed(&job.operation);
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
                metrics::job_ended(&job.operation, true);
                tracing::warn!("the resource failed after {LIMIT} internal errors");
                let ended = async {
                    let row = store.find_stack(&job.stack_id).await?;
                    if row.on_failure != "continue" {
                        store
                            .stop_after_failure(&job.stack_id, job.traversal, engine)
                            .await?;
                    }
                    let operation = row.action.to_ascii_lowercase();
                    store
                        .try_finish_traversal(&job.stack_id, job.traversal, &operation, engine)
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
            && row.status == "IN_PROGRESS"
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
        if row.traversal != job.traversal || row.status != "IN_PROGRESS" {
            // Left over from a traversal that ended or was superseded.
            store.drop_job(job, engine).await?;
            finished(Worked::Dropped, started);
            return Ok(false);
        }
        if job.operation == "update" && store.stale_call_running(job).await? {
            // A superseded action's call on this resource is still running: after it.
            store.reschedule(job, engine, 500, None).await?;
            finished(Worked::AfterStaleCall, started);
            return Ok(false);
        }
        let plan = self.plan(&row).await?;
        let action = action_of(&job.operation);
        // A cancel is checked before each step; a long operation being polled still finishes
        // (the cloud is doing it), anything else does not start.
        let timed_out =
            matches!((row.cancel_requested_at, row.deadline_at), (Some(c), Some(d)) if c >= d);
        // The resource's own timeout runs from its job's first start, across polls and retries.
        let own_timeout = plan
            .stack
            .resource(&job.resource)
            .and_then(|r| r.timeout_secs)
            .filter(|_| job.operation != "cleanup");
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
                        action: action.into(),
                        status: "FAILED".into(),
                        reason,
                        ..ResourceUpdate::default()
                    },
                )
                .await?
            }
        };
        store.finish(job, engine, &update).await?;
        metrics::job_ended(&job.operation, update.status == "FAILED");
        let outcome = format!("{}_{}", update.action, update.status);
        finished(
            Worked::Ended {
                outcome,
                reason: update.reason.clone(),
            },
            started,
        );
        // After the commit (see store/jobs.rs): what this made ready, and maybe the end.
        let traversal_op = row.action.to_ascii_lowercase();
        let made = if update.status == "FAILED" {
            // A check goes on: it reports on every resource.
            if row.on_failure != "continue" && job.operation != "check" {
                store
                    .stop_after_failure(&job.stack_id, job.traversal, engine)
                    .await?;
            }
            0
        } else {
            match job.operation.as_str() {
                "delete" => {
                    let next = plan
                        .removal
                        .as_ref()
                        .map_or(&[][..], |r| r.next(&job.resource));
                    let next: Vec<&str> = next.iter().map(String::as_str).collect();
                    self.schedule(&plan, job.traversal, "delete", &next).await?
                }
                "cleanup" => self.schedule_cleanup(&plan, job.traversal).await?,
                "check" => 0,
                op => {
                    let next: Vec<&str> = plan
                        .dependents(&job.resource)
                        .iter()
                        .map(String::as_str)
                        .collect();
                    match self.schedule(&plan, job.traversal, op, &next).await? {
                        0 if op == "update" => self.schedule_cleanup(&plan, job.traversal).await?,
                        made => made,
                    }
                }
            }
        };
        if made > 0 {
            return Ok(true);
        }
        let ended = store
            .try_finish_traversal(&job.stack_id, job.traversal, &traversal_op, engine)
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
        if u.status == "FAILED" {
            let rows = self
                .inner
                .store
                .resources_named(&job.stack_id, &[job.resource.as_str()])
                .await?;
            if let Some(r) = rows.first() {
                if job.operation == "update" && r.status == "IN_PROGRESS" {
                    // What the update was doing to it: creating, or updating/replacing.
                    u.action = r.action.clone();
                }
                u.physical_id = r.physical_id.clone();
                u.state = r.state.clone();
                u.attributes = r.attributes.as_ref().map(Value::to_string);
            }
        }
        Ok(u)
    }

    async fn step(&self, job: &Claimed, plan: &Plan) -> Result<Step, StoreError> {
        match job.operation.as_str() {
            "delete" | "cleanup" => self.step_delete(job, plan).await,
            "update" => self.step_update(job, plan).await,
            "check" => self.step_check(job, plan).await,
            _ => self.step_create(job, plan).await,
        }
    }

    /// The context of a call for this job; `phase` tells apart the calls one update job may
    /// make (an in-place update, or the create of a replacement), so each has its own key.
    pub(super) fn context(
        &self,
        plan: &Plan,
        job: &Claimed,
        resource_type: &str,
        operation: Operation,
        phase: &str,
    ) -> CallContext {
        CallContext {
            stack: plan.stack_name.clone(),
            resource: job.resource.clone(),
            resource_type: resource_type.to_string(),
            operation,
            attempt: job.attempt as u32,
            idempotency_key: format!(
                "{}/{}/{phase}/{}",
                plan.stack_id, job.resource, job.traversal
            ),
            deadline_ms: 0,
        }
    }

    /// Deletes the row's object: for a stack delete, or an update's cleanup of an object it
    /// removed or replaced (then the type and deletion policy are those last applied).
    async fn step_delete(&self, job: &Claimed, plan: &Plan) -> Result<Step, StoreError> {
        let rows = self
            .inner
            .store
            .resources_named(&job.stack_id, &[job.resource.as_str()])
            .await?;
        let Some(current) = rows.first() else {
            return Ok(Step::done(deleted("not found")));
        };
        if current.physical_id.is_none() && current.state.is_none() {
            return Ok(Step::done(deleted("never created")));
        }
        let (type_name, policy) = match plan.stack.resource(&job.resource) {
            Some(res) => (res.served_type.clone(), res.deletion_policy),
            None => (
                current.type_name.clone(),
                current
                    .deletion_policy
                    .as_deref()
                    .and_then(|p| serde_json::from_value(Value::String(p.into())).ok())
                    .unwrap_or_default(),
            ),
        };
        if builtin::is_builtin(&type_name) {
            return Ok(Step::done(deleted("state changed")));
        }
        if policy == DeletionPolicy::Retain {
            return Ok(Step::done(ResourceUpdate {
                reason: "retained (deletion_policy: Retain)".into(),
                ..deleted("")
            }));
        }
        let Some((plugin, _)) = self.inner.plugins.for_type(&type_name) else {
            return Ok(Step::Failed(format!(
                "no plugin serves the type {type_name}"
            )));
        };
        let props: Value = current.applied_properties().unwrap_or(Value::Null);
        let cur = current_of(current);
        let ctx = self.context(plan, job, &type_name, Operation::Delete, &job.operation);
        let polling = pending_of(job);
        let result = self
            .reauthorized(job, plugin, || async {
                match &polling {
                    Some(state) => plugin.poll(&ctx, &props, state).await,
                    None => plugin.delete(&ctx, &cur, &props).await,
                }
            })
            .await?;
        let why = match job.operation.as_str() {
            "cleanup" if job.resource.contains('/') => "deleted the replaced object",
            "cleanup" => "deleted: it is no longer in the template",
            _ => "state changed",
        };
        Ok(match result {
            Ok(Outcome::Done(_)) | Err(CallError::Plugin(PluginError::NotFound(_), _)) => {
                Step::done(deleted(why))
            }
            Ok(Outcome::Pending(p)) => Step::Pending {
                delay_ms: p.poll_after_ms,
                state: p.state,
            },
            Err(e) => {
                self.after_error(job, plugin.name(), &type_name, Operation::Delete, e)
                    .await?
            }
        })
    }

    /// Observes the row's object (plugin `check`): COMPLETE with fresh attributes when it
    /// exists as made; FAILED when it is gone or drifted, saying how.
    async fn step_check(&self, job: &Claimed, plan: &Plan) -> Result<Step, StoreError> {
        let rows = self
            .inner
            .store
            .resources_named(&job.stack_id, &[job.resource.as_str()])
            .await?;
        let Some(current) = rows.first() else {
            return Ok(Step::Failed("the resource has no row".into()));
        };
        if current.physical_id.is_none() && current.state.is_none() {
            return Ok(Step::Failed("it was never created".into()));
        }
        if builtin::is_builtin(&current.type_name) {
            // Nothing outside the database to look at.
            return Ok(Step::done(ResourceUpdate {
                action: "CHECK".into(),
                status: "COMPLETE".into(),
                reason: "served by the engine".into(),
                physical_id: current.physical_id.clone(),
                state: current.state.clone(),
                attributes: current.attributes.as_ref().map(Value::to_string),
                ..ResourceUpdate::default()
            }));
        }
        let Some((plugin, _)) = self.inner.plugins.for_type(&current.type_name) else {
            return Ok(Step::Failed(format!(
                "no plugin serves the type {}",
                current.type_name
            )));
        };
        let props: Value = current.applied_properties().unwrap_or(Value::Null);
        let ctx = self.context(plan, job, &current.type_name, Operation::Check, "check");
        let cur = current_of(current);
        let result = self
            .reauthorized(job, plugin, || plugin.check(&ctx, &cur, &props))
            .await?;
        Ok(match result {
            Ok(report) if !report.exists => Step::Failed("its object is gone".into()),
            Ok(report) if !report.drifted.is_empty() => {
                let drift: Vec<String> = report
                    .drifted
                    .iter()
                    .map(|d| format!("{} is {} (expected {})", d.property, d.actual, d.expected))
                    .collect();
                Step::Failed(format!("drifted: {}", drift.join("; ")))
            }
            Ok(report) => Step::done(ResourceUpdate {
                action: "CHECK".into(),
                status: "COMPLETE".into(),
                reason: "it exists as made".into(),
                physical_id: current.physical_id.clone(),
                state: current.state.clone(),
                attributes: Some(Value::Object(report.attributes).to_string()),
                ..ResourceUpdate::default()
            }),
            Err(e) => {
                self.after_error(job, plugin.name(), &current.type_name, Operation::Check, e)
                    .await?
            }
        })
    }

    async fn step_create(&self, job: &Claimed, plan: &Plan) -> Result<Step, StoreError> {
        let Some(res) = plan.stack.resource(&job.resource) else {
            return Ok(Step::Failed(format!(
                "resource {} is not in the stack's template",
                job.resource
            )));
        };
        let deps: Vec<&str> = res.depends_on.iter().map(String::as_str).collect();
        let rows = self
            .inner
            .store
            .resources_named(&job.stack_id, &deps)
            .await?;
        let resolver = StoredResolver::new(rows, &plan.stack_name, &plan.stack_id);
        let props = match plan.stack.properties(&job.resource, &resolver) {
            Ok(p) => p,
            Err(e) => return Ok(Step::Failed(e.to_string())),
        };
        let polling = pending_of(job);
        if builtin::is_builtin(&res.served_type) {
            let outcome = builtin::apply(
                &plan.stack_id,
                &job.resource,
                &res.served_type,
                &props,
                polling.is_some(),
            );
            return Ok(match outcome {
                Outcome::Done(d) => Step::done(applied(res, "CREATE", "state changed", d, &props)),
                Outcome::Pending(p) => Step::Pending {
                    delay_ms: p.poll_after_ms,
                    state: p.state,
                },
            });
        }
        let Some((plugin, _)) = self.inner.plugins.for_type(&res.served_type) else {
            return Ok(Step::Failed(format!(
                "no plugin serves the type {}",
                res.served_type
            )));
        };
        let ctx = self.context(plan, job, &res.served_type, Operation::Create, "create");
        let result = self
            .reauthorized(job, plugin, || async {
                match &polling {
                    Some(state) => plugin.poll(&ctx, &props, state).await,
                    None => plugin.create(&ctx, &props).await,
                }
            })
            .await?;
        Ok(match result {
            Ok(Outcome::Done(d)) => Step::done(applied(res, "CREATE", "state changed", d, &props)),
            Ok(Outcome::Pending(p)) => Step::Pending {
                delay_ms: p.poll_after_ms,
                state: p.state,
            },
            Err(e) => {
                self.after_error(job, plugin.name(), &res.served_type, Operation::Create, e)
                    .await?
            }
        })
    }

    /// Makes a call; if the cloud answers `unauthorized` and the plugin has host-held
    /// credentials, reads them again and, when they changed, makes the same call once more
    /// (same idempotency key) before any retry policy sees the error.
    pub(super) async fn reauthorized<T, F, Fut>(
        &self,
        job: &Claimed,
        plugin: &Plugin,
        call: F,
    ) -> Result<Result<T, CallError>, StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let used = plugin.credentials().map_or(0, |c| c.generation());
        let first = call().await;
        let (Err(CallError::Plugin(PluginError::Unauthorized(_), _)), Some(creds)) =
            (&first, plugin.credentials())
        else {
            return Ok(first);
        };
        // Another call refreshed the secret while this one ran: just use the new one.
        let refreshed = if used != creds.generation() {
            Ok(Refresh::Changed)
        } else {
            let refreshed = creds.refresh(used).await;
            let outcome = match &refreshed {
                Ok(Refresh::Changed) => "changed",
                Ok(Refresh::Unchanged) => "unchanged",
                Err(_) => "error",
            };
            metrics()
                .credential_refreshes
                .get_or_create(&RefreshLabels {
                    plugin: plugin.name().to_string(),
                    outcome: outcome.to_string(),
                })
                .inc();
            refreshed
        };
        let engine = self.inner.id.as_str();
        match refreshed {
            Ok(Refresh::Changed) => {
                let reason = format!(
                    "unauthorized: read new credentials from {}; calling again",
                    creds.describe()
                );
                self.inner
                    .store
                    .job_event(job, engine, "REAUTHORIZED", &reason)
                    .await?;
                Ok(call().await)
            }
            Ok(Refresh::Unchanged) => Ok(first),
            Err(e) => {
                tracing::warn!(plugin = plugin.name(), "refreshing credentials failed: {e}");
                Ok(first)
            }
        }
    }

    /// A failed call: the retry policy chosen by the rules decides between another attempt
    /// (when and why, recorded on the job) and giving up with the attempts' history.
    pub(super) async fn after_error(
        &self,
        job: &Claimed,
        plugin: &str,
        resource_type: &str,
        operation: Operation,
        e: CallError,
    ) -> Result<Step, StoreError> {
        let Some(policies) = &self.inner.retry else {
            return Ok(Step::Failed(e.to_string()));
        };
        let error = as_plugin_error(&e);
        let mut history: Vec<Attempt> = job
            .history
            .as_deref()
            .and_then(|h| serde_json::from_str(h).ok())
            .unwrap_or_default();
        history.push(Attempt {
            kind: error.kind().to_string(),
            status: error.status(),
        });
        let elapsed_ms = match job.first_failure_at {
            Some(first) => (self.inner.store.now_ms().await? - first).max(0) as u64,
            None => 0,
        };
        let previous = job.last_delay_ms.map(|d| d as u64);
        let attempt = job.attempt as u32;
        Ok(
            match policies
                .decide(
                    resource_type,
                    operation,
                    &error,
                    attempt,
                    elapsed_ms,
                    previous,
                )
                .await
            {
                Verdict::RetryAfter { delay_ms, policy } => {
                    // Retries to one plugin and host draw on a budget; an empty one defers them.
                    let (key, grant) =
                        policies.budget(plugin, e.origins().last().map(String::as_str));
                    let delay_ms = delay_ms.max(grant.wait_ms);
                    let m = metrics();
                    let bucket = BudgetLabels {
                        bucket: key.clone(),
                    };
                    m.budget_tokens.get_or_create(&bucket).set(grant.tokens);
                    if grant.wait_ms > 0 {
                        m.budget_deferred.get_or_create(&bucket).inc();
                    }
                    m.retries
                        .get_or_create(&RetryLabels {
                            plugin: plugin.to_string(),
                            kind: error.kind().to_string(),
                            policy: policy.clone(),
                        })
                        .inc();
                    let deferred = if grant.wait_ms > 0 {
                        format!(
                            "; retry budget {key} empty, deferred to its refill ({} retries deferred so far)",
                            grant.deferred
                        )
                    } else {
                        String::new()
                    };
                    Step::Retry {
                        delay_ms,
                        history: serde_json::to_string(&history).expect("history serialises"),
                        reason: format!(
                            "attempt {attempt} failed: {e}; retrying in {delay_ms} ms (policy {policy}){deferred}"
                        ),
                    }
                }
                Verdict::GiveUp { reason, policy } if history.len() == 1 => {
                    exhausted(plugin, &error, &policy);
                    Step::Failed(format!("{e} (not retried: {reason}; policy {policy})"))
                }
                Verdict::GiveUp { reason, policy } => {
                    exhausted(plugin, &error, &policy);
                    Step::Failed(format!(
                        "{}; policy {policy}; last error: {e}",
                        summarize(&history, elapsed_ms, &reason)
                    ))
                }
            },
        )
    }
}

fn exhausted(plugin: &str, error: &PluginError, policy: &str) {
    metrics()
        .retries_exhausted
        .get_or_create(&RetryLabels {
            plugin: plugin.to_string(),
            kind: error.kind().to_string(),
            policy: policy.to_string(),
        })
        .inc();
}

fn deleted(reason: &str) -> ResourceUpdate {
    ResourceUpdate {
        action: "DELETE".into(),
        status: "COMPLETE".into(),
        reason: reason.into(),
        ..ResourceUpdate::default()
    }
}

/// The state of a long operation this job polls, if it polls one.
fn pending_of(job: &Claimed) -> Option<Value> {
    job.pending_state
        .as_ref()
        .map(|s| serde_json::from_str::<Value>(s).unwrap_or(Value::Null))
}

/// The stored object of a row, as plugins see it.
pub(super) fn current_of(row: &ResourceRow) -> Current {
    Current {
        physical_id: row.physical_id.clone().unwrap_or_default(),
        state: row.state.clone().unwrap_or_else(|| "null".into()),
    }
}

/// A finished create or update of `res`: the object, the properties it was made with, and
/// what it needs and how it goes (for a later cleanup without its template).
pub(super) fn applied(
    res: &Resource,
    action: &str,
    reason: &str,
    d: Done,
    props: &Value,
) -> ResourceUpdate {
    ResourceUpdate {
        action: action.into(),
        status: "COMPLETE".into(),
        reason: reason.into(),
        physical_id: Some(d.physical_id),
        state: Some(d.state.to_string()),
        attributes: Some(Value::Object(d.attributes).to_string()),
        properties: Some(props.to_string()),
        type_name: Some(res.served_type.clone()),
        ..recorded(res)
    }
}

/// What a resource's row records of its definition: its dependencies and deletion policy.
pub(super) fn recorded(res: &Resource) -> ResourceUpdate {
    ResourceUpdate {
        requires: Some(serde_json::to_string(&res.depends_on).expect("names serialise")),
        deletion_policy: serde_json::to_value(res.deletion_policy)
            .ok()
            .and_then(|v| v.as_str().map(String::from)),
        ..ResourceUpdate::default()
    }
}
