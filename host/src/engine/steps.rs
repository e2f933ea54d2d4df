//! The step of each job operation: create, update (`update.rs`), delete, cleanup and check,
//! each a call into the resource's plugin in a fresh sandbox (or the engine's own built-in
//! types), with the job's idempotency key, and what it came to as a `Step`.

use std::future::Future;

use serde_json::Value;

use super::Engine;
use super::StoredResolver;
use super::builtin;
use super::traversal_plan::TraversalPlan;
use crate::credentials::Refresh;
use crate::metrics::{RefreshLabels, metrics};
use crate::model::{Action, EventStatus, JobOp, Status};
use crate::retry::{FailedCall, Judgement};
use crate::runtime::{
    CallContext, CallError, Current, Done, Operation, Outcome, Plugin, PluginError,
};
use crate::store::{Claimed, ResourceRow, ResourceUpdate, StoreError};
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

impl Engine {
    pub(super) async fn step(
        &self,
        job: &Claimed,
        plan: &TraversalPlan,
    ) -> Result<Step, StoreError> {
        match job.operation {
            JobOp::Delete | JobOp::Cleanup => self.step_delete(job, plan).await,
            JobOp::Update => self.step_update(job, plan).await,
            JobOp::Check => self.step_check(job, plan).await,
            JobOp::Create => self.step_create(job, plan).await,
        }
    }

    /// The context of a call for this job; `phase` tells apart the calls one update job may
    /// make (an in-place update, or the create of a replacement), so each has its own key.
    pub(super) fn context(
        &self,
        plan: &TraversalPlan,
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
    async fn step_delete(&self, job: &Claimed, plan: &TraversalPlan) -> Result<Step, StoreError> {
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
        let ctx = self.context(
            plan,
            job,
            &type_name,
            Operation::Delete,
            job.operation.as_str(),
        );
        let polling = pending_of(job);
        let result = self
            .reauthorized(job, plugin, || async {
                match &polling {
                    Some(state) => plugin.poll(&ctx, &props, state).await,
                    None => plugin.delete(&ctx, &cur, &props).await,
                }
            })
            .await?;
        let why = match job.operation {
            JobOp::Cleanup if job.resource.contains('/') => "deleted the replaced object",
            JobOp::Cleanup => "deleted: it is no longer in the template",
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
    async fn step_check(&self, job: &Claimed, plan: &TraversalPlan) -> Result<Step, StoreError> {
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
                action: Action::Check,
                status: Status::Complete,
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
                action: Action::Check,
                status: Status::Complete,
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

    async fn step_create(&self, job: &Claimed, plan: &TraversalPlan) -> Result<Step, StoreError> {
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
                Outcome::Done(d) => {
                    Step::done(applied(res, Action::Create, "state changed", d, &props))
                }
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
            Ok(Outcome::Done(d)) => {
                Step::done(applied(res, Action::Create, "state changed", d, &props))
            }
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
                    .job_event(job, engine, EventStatus::Reauthorized, &reason)
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
}

fn deleted(reason: &str) -> ResourceUpdate {
    ResourceUpdate {
        action: Action::Delete,
        status: Status::Complete,
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
    action: Action,
    reason: &str,
    d: Done,
    props: &Value,
) -> ResourceUpdate {
    ResourceUpdate {
        action,
        status: Status::Complete,
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

impl Engine {
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
        let elapsed_ms = match job.first_failure_at {
            Some(first) => (self.inner.store.now_ms().await? - first).max(0) as u64,
            None => 0,
        };
        let judged = policies
            .judge(FailedCall {
                plugin,
                resource_type,
                operation,
                error: &e,
                attempt: job.attempt as u32,
                elapsed_ms,
                previous_delay_ms: job.last_delay_ms.map(|d| d as u64),
                history: job
                    .history
                    .as_deref()
                    .and_then(|h| serde_json::from_str(h).ok())
                    .unwrap_or_default(),
            })
            .await;
        Ok(match judged {
            Judgement::Retry {
                delay_ms,
                history,
                reason,
            } => Step::Retry {
                delay_ms,
                history,
                reason,
            },
            Judgement::GiveUp { reason } => Step::Failed(reason),
        })
    }
}
