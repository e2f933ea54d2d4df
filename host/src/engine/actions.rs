//! The stack actions an engine starts: create, delete, check, update (or supersede), resume,
//! and the rollback a failed action asked for. Each starts a traversal in the store; the
//! workers do the rest.

use super::{Engine, Sources, new_id};
use crate::model::Action;
use crate::store::{NewResource, NewStack, StackRow, StackUpdate, StoreError};
use crate::template;

impl Engine {
    /// Stores a validated stack in project `default` and starts creating it.
    pub async fn create_stack(
        &self,
        name: &str,
        stack: &template::Stack,
        sources: &Sources,
    ) -> Result<StackRow, StoreError> {
        self.create_stack_in("default", name, stack, sources).await
    }

    /// Stores a validated stack in `project` and starts creating it.
    pub async fn create_stack_in(
        &self,
        project: &str,
        name: &str,
        stack: &template::Stack,
        sources: &Sources,
    ) -> Result<StackRow, StoreError> {
        let new = NewStack {
            id: new_id(),
            name: name.to_string(),
            project: project.to_string(),
            on_failure: sources.options.on_failure,
            timeout_ms: sources.options.timeout_ms(),
            rollback: sources.options.rollback,
            template: serde_json::to_string(stack).expect("a stack serialises"),
            sources: serde_json::to_string(sources).expect("sources serialise"),
            resources: new_resources(stack),
        };
        let row = self.inner.store.create_stack(&new, &self.inner.id).await?;
        self.inner.wake.notify_waiters();
        Ok(row)
    }

    /// Starts deleting a stack: dependents first, in reverse dependency order. Objects an
    /// update replaced or removed and did not get to delete go too, in the order recorded
    /// when they were made.
    pub async fn delete_stack(&self, name_or_id: &str) -> Result<StackRow, StoreError> {
        let row = self.inner.store.find_stack(name_or_id).await?;
        let plan = self.plan(&row).await?;
        let rows = self.inner.store.resources(&row.id).await?;
        let removal = plan.removal_of(&rows);
        let ready: Vec<&str> = removal
            .names()
            .filter(|n| removal.after(n).is_empty())
            .collect();
        self.begin(&row.id, Action::Delete, &ready).await
    }

    /// Starts checking every resource of a stack against reality (plugin `check`): one that
    /// is gone or has drifted from its properties ends CHECK_FAILED, and the stack with it;
    /// a later update or resume repairs such resources.
    pub async fn check_stack(&self, name_or_id: &str) -> Result<StackRow, StoreError> {
        let row = self.inner.store.find_stack(name_or_id).await?;
        let rows = self.inner.store.resources(&row.id).await?;
        let all: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        self.begin(&row.id, Action::Check, &all).await
    }

    /// Starts a traversal of `action` with jobs for `ready`, and wakes this engine's workers.
    async fn begin(
        &self,
        stack_id: &str,
        action: Action,
        ready: &[&str],
    ) -> Result<StackRow, StoreError> {
        let row = self
            .inner
            .store
            .begin_traversal(stack_id, action, ready, &self.inner.id)
            .await?;
        self.inner.wake.notify_waiters();
        Ok(row)
    }

    /// Starts updating a stack to a new template: resources whose properties are unchanged
    /// are left alone, the rest are updated in place, replaced or created in dependency
    /// order, and what the new template no longer has (or replaced) is deleted last.
    pub async fn update_stack(
        &self,
        name_or_id: &str,
        stack: &template::Stack,
        sources: &Sources,
    ) -> Result<StackRow, StoreError> {
        let row = self.inner.store.find_stack(name_or_id).await?;
        self.begin_update(&row.id, stack, sources, None, false)
            .await
    }

    /// Like `update_stack`, but an update (or create, or rollback) in progress is superseded
    /// instead of refusing: see `Store::begin_update`.
    pub async fn supersede_stack(
        &self,
        name_or_id: &str,
        stack: &template::Stack,
        sources: &Sources,
    ) -> Result<StackRow, StoreError> {
        let row = self.inner.store.find_stack(name_or_id).await?;
        self.begin_update(&row.id, stack, sources, None, true).await
    }

    /// Starts an UPDATE, or for `rollback_of` (the failed traversal) a ROLLBACK, towards
    /// `stack`.
    async fn begin_update(
        &self,
        stack_id: &str,
        stack: &template::Stack,
        sources: &Sources,
        rollback_of: Option<i64>,
        supersede: bool,
    ) -> Result<StackRow, StoreError> {
        let update = StackUpdate {
            supersede,
            template: serde_json::to_string(stack).expect("a stack serialises"),
            sources: serde_json::to_string(sources).expect("sources serialise"),
            on_failure: Some(sources.options.on_failure),
            timeout_ms: sources.options.timeout_ms(),
            rollback: sources.options.rollback,
            rollback_of,
            resources: new_resources(stack),
        };
        let row = self
            .inner
            .store
            .begin_update(stack_id, &update, &self.inner.id)
            .await?;
        let plan = self.plan(&row).await?;
        self.advance(&plan, row.traversal, row.action).await?;
        self.inner.wake.notify_waiters();
        self.inner.store.find_stack(&row.id).await
    }

    /// Starts the rollback a failed action asked for: an update back to the template the
    /// stack had before (after a failed create, to no resources at all). Returns None when
    /// it is not wanted any more (another action started, or it already started).
    pub(super) async fn start_rollback(
        &self,
        stack_id: &str,
        failed: i64,
    ) -> Result<Option<StackRow>, StoreError> {
        let store = &self.inner.store;
        let row = store.find_stack(stack_id).await?;
        if !row.rollback_pending || row.traversal != failed {
            return Ok(None);
        }
        let corrupt = |what: &str, e: serde_json::Error| {
            StoreError::Corrupt(format!("{what} of stack {}: {e}", row.name))
        };
        let current = self.sources(&row).await?;
        let (stack, mut sources) = match store.previous(stack_id).await? {
            Some((t, s)) => (
                serde_json::from_str::<template::Stack>(&t).map_err(|e| corrupt("template", e))?,
                serde_json::from_str::<Sources>(&s).map_err(|e| corrupt("sources", e))?,
            ),
            None => {
                // A failed create: back to nothing.
                let text = store.stack_template(stack_id).await?;
                let mut empty: template::Stack =
                    serde_json::from_str(&text).map_err(|e| corrupt("template", e))?;
                empty.resources.clear();
                empty.order.clear();
                empty.outputs.clear();
                (empty, current.clone())
            }
        };
        // The stack's options stay as they are now.
        sources.options = current.options;
        match self
            .begin_update(stack_id, &stack, &sources, Some(failed), false)
            .await
        {
            Ok(row) => Ok(Some(row)),
            // Someone else started an action (or this rollback) first.
            Err(StoreError::ActionInProgress { .. } | StoreError::StackNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Runs the stack's last action again after it failed or was cancelled, keeping what
    /// worked: a delete deletes what is left; a create or update converges on the stored
    /// template (an update to the same template).
    pub async fn resume_stack(&self, name_or_id: &str) -> Result<StackRow, StoreError> {
        let row = self.inner.store.find_stack(name_or_id).await?;
        if row.action == Action::Delete {
            return self.delete_stack(&row.id).await;
        }
        let text = self.inner.store.stack_template(&row.id).await?;
        let stack: template::Stack = serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("template of stack {}: {e}", row.name)))?;
        let sources = self.sources(&row).await?;
        self.update_stack(&row.id, &stack, &sources).await
    }

    /// What a stack was made from (its last create or update).
    pub async fn sources(&self, row: &StackRow) -> Result<Sources, StoreError> {
        let (text, _) = self.inner.store.stack_sources(&row.id).await?;
        serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("sources of stack {}: {e}", row.name)))
    }
}

/// A row for each of the stack's resources, in dependency order.
fn new_resources(stack: &template::Stack) -> Vec<NewResource> {
    stack
        .in_order()
        .map(|r| NewResource {
            name: r.name.clone(),
            type_name: r.served_type.clone(),
            deps: r.depends_on.len(),
        })
        .collect()
}
