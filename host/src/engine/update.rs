//! One resource of an update traversal. The job decides when it runs, once its dependencies
//! are done (so their new ids and attributes are known): the properties resolve as in a
//! create and are compared with those last applied (`change::decide`). Unchanged: nothing is
//! called and no event is written. Otherwise the plugin updates in place, or a replacement is
//! created first and the old object moves to a row of its own that the update's cleanup
//! deletes; dependents then resolve against the new object. A resource an earlier action left
//! FAILED is checked (plugin `check`) before anything else is decided.

use crate::model::{Action, Status};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Engine;
use super::StoredResolver;
use super::builtin;
use super::change::{self, Change, Existing, decide, quoted};
use super::steps::{Step, applied, current_of, recorded};
use super::traversal_plan::TraversalPlan;
use crate::config::ReplaceOrder;
use crate::runtime::{CallError, Operation, Outcome, PluginError, UpdateOutcome};
use crate::store::{Claimed, ResourceRow, ResourceUpdate, StoreError};
use crate::template::{GROUP_TYPE, PAUSE_TYPE, Resource};

/// Which call of an update job a long operation belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Phase {
    /// No object yet: create one.
    Create,
    /// Change the object in place.
    Update,
    /// Create a replacement (the old object is deleted in the cleanup).
    Replace,
    /// Delete the object before creating its replacement (`[plugins.NAME] replace =
    /// "delete-first"`), then `Recreate`.
    DeleteFirst,
    /// Create the replacement of an object already deleted.
    Recreate,
}

impl Phase {
    fn operation(self) -> Operation {
        match self {
            Phase::Update => Operation::Update,
            Phase::DeleteFirst => Operation::Delete,
            Phase::Create | Phase::Replace | Phase::Recreate => Operation::Create,
        }
    }

    fn key(self) -> &'static str {
        match self {
            Phase::Create => "create",
            Phase::Update => "update",
            Phase::Replace | Phase::Recreate => "replace",
            Phase::DeleteFirst => "replace-delete",
        }
    }
}

/// The job's pending state while it polls: the plugin's state and the call it belongs to.
#[derive(Serialize, Deserialize)]
struct Polling {
    phase: Phase,
    state: Value,
}

/// What the job decided (stored with its first IN_PROGRESS event): every later attempt does
/// the same. Deciding again could choose otherwise (a check that failed this time, an object
/// an interrupted attempt already changed) and leave behind what the first choice created.
#[derive(Serialize, Deserialize)]
struct Decision {
    phase: Phase,
    why: String,
}

impl Decision {
    /// As the job row stores it.
    fn stored(phase: Phase, why: &str) -> String {
        serde_json::to_string(&Decision {
            phase,
            why: why.to_string(),
        })
        .expect("a decision serialises")
    }
}

/// Whether a row holds an object (a create reached the cloud and was not deleted since).
pub(super) fn holds_object(row: &ResourceRow) -> bool {
    (row.physical_id.is_some() || row.state.is_some())
        && !(row.action == Action::Delete && row.status == Status::Complete)
}

impl Engine {
    pub(super) async fn step_update(
        &self,
        job: &Claimed,
        plan: &TraversalPlan,
    ) -> Result<Step, StoreError> {
        let Some(res) = plan.stack.resource(&job.resource) else {
            return Ok(Step::Failed(format!(
                "resource {} is not in the stack's template",
                job.resource
            )));
        };
        let mut names = vec![job.resource.as_str()];
        names.extend(res.depends_on.iter().map(String::as_str));
        let rows = self
            .inner
            .store
            .resources_named(&job.stack_id, &names)
            .await?;
        let Some(current) = rows.iter().find(|r| r.name == job.resource).cloned() else {
            return Ok(Step::Failed(format!(
                "resource {} has no row",
                job.resource
            )));
        };
        let resolver = StoredResolver::new(rows, &plan.stack_name, &plan.stack_id);
        let props = match plan.stack.properties(&job.resource, &resolver) {
            Ok(p) => p,
            Err(e) => return Ok(Step::Failed(e.to_string())),
        };
        if let Some(text) = &job.pending_state {
            let Ok(polling) = serde_json::from_str::<Polling>(text) else {
                return Ok(Step::Failed(format!(
                    "corrupt pending state of {}",
                    job.resource
                )));
            };
            return self
                .call(
                    job,
                    plan,
                    res,
                    &current,
                    &props,
                    polling.phase,
                    Some(polling.state),
                )
                .await;
        }
        let earlier = job
            .decision
            .as_deref()
            .and_then(|d| serde_json::from_str::<Decision>(d).ok());
        let (phase, why) = match earlier {
            Some(d) => (d.phase, d.why),
            None => match self.decide(job, plan, res, &current, &props).await? {
                Ok(decided) => decided,
                Err(done) => return Ok(done),
            },
        };
        let decision = Decision::stored(phase, &why);
        let action = if phase == Phase::Create {
            Action::Create
        } else {
            Action::Update
        };
        let why = if job.attempt > 1 {
            format!("{why} (attempt {})", job.attempt)
        } else {
            why
        };
        self.inner
            .store
            .job_started(job, &self.inner.id, action, &why, &decision)
            .await?;
        self.call(job, plan, res, &current, &props, phase, None)
            .await
    }

    /// What to do, and why; or the job's end when there is nothing to call.
    async fn decide(
        &self,
        job: &Claimed,
        plan: &TraversalPlan,
        res: &Resource,
        current: &ResourceRow,
        props: &Value,
    ) -> Result<Result<(Phase, String), Step>, StoreError> {
        let old_props: Option<Value> = current.applied_properties();
        let wanted = if !holds_object(current) {
            None
        } else {
            Some(decide(
                &Existing {
                    type_name: &current.type_name,
                    properties: old_props.as_ref(),
                },
                &res.served_type,
                props,
                plan.stack.types.get(&res.served_type),
            ))
        };
        if matches!(wanted, None | Some(Change::Replace { .. }))
            && let Some(restored) = self.restore(job, res, current, props).await?
        {
            return Ok(Err(restored));
        }
        if !holds_object(current) {
            let why = if current.status == Status::Failed {
                "creating: its last create failed"
            } else {
                "creating: not created yet"
            };
            return Ok(Ok((Phase::Create, why.into())));
        }
        let failed = current.status != Status::Complete;
        if failed && let Some(found) = self.check_failed(job, plan, current, props).await {
            return Ok(Ok(found));
        }
        let change = wanted.expect("decided for an object that exists");
        Ok(match change {
            Change::Unchanged if failed => Err(Step::done(ResourceUpdate {
                action: current.action,
                status: Status::Complete,
                reason: "checked: it exists and matches the template".into(),
                physical_id: current.physical_id.clone(),
                state: current.state.clone(),
                attributes: current.attributes.as_ref().map(Value::to_string),
                ..recorded(res)
            })),
            Change::Unchanged => Err(Step::done(ResourceUpdate {
                unchanged: true,
                ..recorded(res)
            })),
            Change::Update { .. } if res.served_type == PAUSE_TYPE => Ok((
                Phase::Update,
                format!(
                    "pausing {} s: the batch before changed",
                    props.get("seconds").unwrap_or(&Value::Null)
                ),
            )),
            Change::Update { .. } if res.served_type == GROUP_TYPE => {
                Ok((Phase::Update, "gathering its members again".into()))
            }
            Change::Update { changed } => Ok((
                Phase::Update,
                format!("updating in place: {} changed", quoted(&changed)),
            )),
            Change::Replace { why, .. } => Ok(self.replacing(res, &why)),
            Change::Rejected { why } => Err(Step::Failed(why)),
        })
    }

    /// How `res` is replaced: create-first, unless its plugin is configured delete-first.
    fn replacing(&self, res: &Resource, why: &str) -> (Phase, String) {
        match self.inner.plugins.replace_order(&res.served_type) {
            ReplaceOrder::CreateFirst => (Phase::Replace, format!("replacing: {why}")),
            ReplaceOrder::DeleteFirst => (
                Phase::DeleteFirst,
                format!("replacing, the old object deleted first (replace = delete-first): {why}"),
            ),
        }
    }

    /// An object this resource replaced and whose cleanup has not run (an update failed, or
    /// this is its rollback) may be just what the template wants again: then it becomes the
    /// resource's object again, with no call, and the newer one goes in the cleanup.
    async fn restore(
        &self,
        job: &Claimed,
        res: &Resource,
        current: &ResourceRow,
        props: &Value,
    ) -> Result<Option<Step>, StoreError> {
        let copies = self
            .inner
            .store
            .replaced_copies(&job.stack_id, &job.resource)
            .await?;
        let Some(copy) = copies.into_iter().rev().find(|c| {
            holds_object(c)
                && c.type_name == res.served_type
                && c.applied_properties()
                    .is_some_and(|p| change::changed_properties(&p, props).is_empty())
        }) else {
            return Ok(None);
        };
        Ok(Some(Step::done(ResourceUpdate {
            action: Action::Update,
            status: Status::Complete,
            reason: format!(
                "restored the object it had replaced ({}): no call needed",
                copy.name
            ),
            physical_id: copy.physical_id.clone(),
            state: copy.state.clone(),
            attributes: copy.attributes.as_ref().map(Value::to_string),
            properties: copy.properties.clone(),
            type_name: Some(copy.type_name.clone()),
            retire_as: holds_object(current)
                .then(|| format!("{}/replaced-{}", job.resource, job.traversal)),
            forget: Some(copy.name.clone()),
            ..recorded(res)
        })))
    }

    /// A resource an earlier action left FAILED: is its object still there, and as it was
    /// made? Gone: create it again. Drifted: replace it. Otherwise (or when the check itself
    /// fails) the usual decision follows.
    async fn check_failed(
        &self,
        job: &Claimed,
        plan: &TraversalPlan,
        current: &ResourceRow,
        props: &Value,
    ) -> Option<(Phase, String)> {
        let (plugin, _) = self.inner.plugins.for_type(&current.type_name)?;
        let ctx = self.context(plan, job, &current.type_name, Operation::Check, "check");
        let applied: Value = current
            .applied_properties()
            .unwrap_or_else(|| props.clone());
        match plugin.check(&ctx, &current_of(current), &applied).await {
            Ok(report) if !report.exists => Some((
                Phase::Create,
                "creating again: it had failed and check found its object gone".into(),
            )),
            Ok(report) if !report.drifted.is_empty() => {
                let names: Vec<String> =
                    report.drifted.iter().map(|d| d.property.clone()).collect();
                Some((
                    Phase::Replace,
                    format!(
                        "replacing: it had failed and check found {} drifted",
                        quoted(&names)
                    ),
                ))
            }
            Ok(_) => None,
            Err(e) => {
                tracing::info!(resource = %job.resource, "checking a failed resource failed: {e}");
                None
            }
        }
    }

    /// Makes (or polls) the call of `phase` and says what became of it.
    #[allow(clippy::too_many_arguments)]
    async fn call(
        &self,
        job: &Claimed,
        plan: &TraversalPlan,
        res: &Resource,
        current: &ResourceRow,
        props: &Value,
        phase: Phase,
        polling: Option<Value>,
    ) -> Result<Step, StoreError> {
        if builtin::is_builtin(&res.served_type) {
            let outcome = builtin::apply(
                &plan.stack_id,
                &job.resource,
                &res.served_type,
                props,
                polling.is_some(),
            );
            return self.finished(job, res, props, phase, Ok(outcome)).await;
        }
        let Some((plugin, _)) = self.inner.plugins.for_type(&res.served_type) else {
            return Ok(Step::Failed(format!(
                "no plugin serves the type {}",
                res.served_type
            )));
        };
        let ctx = self.context(plan, job, &res.served_type, phase.operation(), phase.key());
        let old_props: Value = current.applied_properties().unwrap_or(Value::Null);
        let cur = current_of(current);
        let result: Result<Outcome, CallError> = match (&polling, phase) {
            // Deleting the old object: its call and polls carry the old properties.
            (Some(state), Phase::DeleteFirst) => {
                self.reauthorized(job, plugin, || plugin.poll(&ctx, &old_props, state))
                    .await?
            }
            (None, Phase::DeleteFirst) => {
                self.reauthorized(job, plugin, || plugin.delete(&ctx, &cur, &old_props))
                    .await?
            }
            (Some(state), _) => {
                self.reauthorized(job, plugin, || plugin.poll(&ctx, props, state))
                    .await?
            }
            (None, Phase::Update) => {
                let updated = self
                    .reauthorized(job, plugin, || plugin.update(&ctx, &cur, &old_props, props))
                    .await?;
                match updated {
                    Ok(UpdateOutcome::Done(d)) => Ok(Outcome::Done(d)),
                    Ok(UpdateOutcome::Pending(p)) => Ok(Outcome::Pending(p)),
                    Ok(UpdateOutcome::Replace { reason }) => {
                        // The plugin knows better than the schema: replace after all.
                        let (phase, why) = self.replacing(
                            res,
                            &format!("the plugin cannot update in place: {reason}"),
                        );
                        let decision = Decision::stored(phase, &why);
                        self.inner
                            .store
                            .job_started(job, &self.inner.id, Action::Update, &why, &decision)
                            .await?;
                        return Box::pin(self.call(job, plan, res, current, props, phase, None))
                            .await;
                    }
                    Err(e) => Err(e),
                }
            }
            (None, _) => {
                self.reauthorized(job, plugin, || plugin.create(&ctx, props))
                    .await?
            }
        };
        if phase == Phase::DeleteFirst
            && matches!(
                result,
                Ok(Outcome::Done(_)) | Err(CallError::Plugin(PluginError::NotFound(_), _))
            )
        {
            // The old object is gone: now its replacement.
            return Box::pin(self.call(job, plan, res, current, props, Phase::Recreate, None))
                .await;
        }
        self.finished(job, res, props, phase, result).await
    }

    /// What became of the call of `phase`.
    async fn finished(
        &self,
        job: &Claimed,
        res: &Resource,
        props: &Value,
        phase: Phase,
        result: Result<Outcome, CallError>,
    ) -> Result<Step, StoreError> {
        Ok(match result {
            Ok(Outcome::Done(d)) => {
                let (action, why) = match phase {
                    Phase::Create => (Action::Create, "state changed"),
                    Phase::Update => (Action::Update, "updated in place"),
                    Phase::Replace => (
                        Action::Update,
                        "replaced: the old object is deleted at cleanup",
                    ),
                    Phase::Recreate | Phase::DeleteFirst => {
                        (Action::Update, "replaced: the old object was deleted first")
                    }
                };
                let mut u = applied(res, action, why, d, props);
                if phase == Phase::Replace {
                    u.retire_as = Some(format!("{}/replaced-{}", job.resource, job.traversal));
                }
                Step::done(u)
            }
            Ok(Outcome::Pending(p)) => Step::Pending {
                delay_ms: p.poll_after_ms,
                state: serde_json::to_value(Polling {
                    phase,
                    state: p.state,
                })
                .expect("pending state serialises"),
            },
            Err(e) => {
                let plugin = self
                    .inner
                    .plugins
                    .for_type(&res.served_type)
                    .map_or("", |(p, _)| p.name());
                self.after_error(job, plugin, &res.served_type, phase.operation(), e)
                    .await?
            }
        })
    }
}
