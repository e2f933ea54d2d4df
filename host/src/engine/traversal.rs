//! Traversal control: the stack's parsed template (cached per traversal), scheduling what is
//! ready, an update's cleanup, advancing or ending a traversal, and the rollback its end may
//! ask for.

use std::sync::Arc;

use super::Engine;
use super::traversal_plan::{Removal, TraversalPlan, recorded_requires};
use crate::model::{Action, JobOp};
use crate::store::{Candidate, StackRow, StoreError};

impl Engine {
    /// The stack's parsed template, from the cache when it is current.
    pub(super) async fn plan(&self, row: &StackRow) -> Result<Arc<TraversalPlan>, StoreError> {
        if let Some(p) = self.inner.plans.lock().unwrap().get(&row.id)
            && p.traversal == row.traversal
        {
            return Ok(p.clone());
        }
        let template = self.inner.store.stack_template(&row.id).await?;
        let mut plan = TraversalPlan::parse(row, &template)?;
        if matches!(row.action, Action::Update | Action::Rollback)
            && let Some((previous, _)) = self.inner.store.previous(&row.id).await?
            && let Ok(previous) = serde_json::from_str::<crate::template::Stack>(&previous)
        {
            plan.secrets = plan.secrets.with(&previous.secrets());
        }
        if matches!(row.action, Action::Delete | Action::Check) {
            // The rows to delete (or check) are fixed when the action starts.
            let rows = self.inner.store.resources(&row.id).await?;
            plan.removal = Some(plan.removal_of(&rows));
        }
        let plan = Arc::new(plan);
        let mut plans = self.inner.plans.lock().unwrap();
        // A cache, not a registry: bounded, and rebuilt from the store on a miss.
        if plans.len() >= 256 {
            plans.clear();
        }
        plans.insert(row.id.clone(), plan.clone());
        Ok(plan)
    }

    /// Schedules those of `names` whose prerequisites are done: for create and update, the
    /// resources each depends on; for delete, the rows that depend on each.
    pub(super) async fn schedule(
        &self,
        plan: &TraversalPlan,
        traversal: i64,
        operation: JobOp,
        names: &[&str],
    ) -> Result<u64, StoreError> {
        let candidates: Vec<Candidate> = names
            .iter()
            .filter_map(|name| {
                let after = match operation {
                    JobOp::Delete => plan.removal.as_ref()?.after(name),
                    JobOp::Check => &[],
                    _ => plan.stack.resource(name)?.depends_on.as_slice(),
                };
                Some(Candidate { name, after })
            })
            .collect();
        self.inner
            .store
            .schedule_ready(&plan.stack_id, traversal, operation, &candidates)
            .await
    }

    /// An update's cleanup, once every resource of its template is done: deletes the rows the
    /// template no longer has (removed resources, replaced objects), dependents first.
    pub(super) async fn schedule_cleanup(
        &self,
        plan: &TraversalPlan,
        traversal: i64,
    ) -> Result<u64, StoreError> {
        let store = &self.inner.store;
        let n = plan.stack.resources.len();
        if !store.forward_complete(&plan.stack_id, traversal, n).await? {
            return Ok(0);
        }
        let rows = store.resources(&plan.stack_id).await?;
        let removal = Removal::new(
            rows.iter()
                .filter(|r| plan.stack.resource(&r.name).is_none())
                .map(|r| (r.name.clone(), recorded_requires(r))),
        );
        let candidates: Vec<Candidate> = removal
            .names()
            .map(|name| Candidate {
                name,
                after: removal.after(name),
            })
            .collect();
        store
            .schedule_ready(&plan.stack_id, traversal, JobOp::Cleanup, &candidates)
            .await
    }

    /// Schedules everything of the traversal (of the stack action `action`) whose
    /// prerequisites are done, or ends it when nothing is left: after an update starts, and to
    /// repair a stalled traversal.
    pub(super) async fn advance(
        &self,
        plan: &TraversalPlan,
        traversal: i64,
        action: Action,
    ) -> Result<u64, StoreError> {
        let Some(kind) = action.job_op() else {
            return Err(StoreError::Corrupt(format!(
                "stack {} runs a traversal of {action}, which is no stack action",
                plan.stack_id
            )));
        };
        let made = match kind {
            JobOp::Delete | JobOp::Check => {
                let all: Vec<&str> = plan.removal.iter().flat_map(Removal::names).collect();
                self.schedule(plan, traversal, kind, &all).await?
            }
            _ => {
                let all: Vec<&str> = plan.stack.order.iter().map(String::as_str).collect();
                let made = self.schedule(plan, traversal, kind, &all).await?;
                if kind == JobOp::Update {
                    made + self.schedule_cleanup(plan, traversal).await?
                } else {
                    made
                }
            }
        };
        if made == 0
            && self
                .inner
                .store
                .try_finish_traversal(&plan.stack_id, traversal, action, &self.inner.id)
                .await?
        {
            self.ended(&plan.stack_id, traversal).await?;
        }
        Ok(made)
    }

    /// After this engine ended a traversal: starts the rollback it asked for, if any.
    pub(super) async fn ended(&self, stack_id: &str, traversal: i64) -> Result<(), StoreError> {
        if let Some(row) = Box::pin(self.start_rollback(stack_id, traversal)).await? {
            tracing::info!(
                stack = %row.name,
                stack_id = %row.id,
                failed_traversal = traversal,
                traversal = row.traversal,
                "rolling back the failed action"
            );
        }
        Ok(())
    }
}
