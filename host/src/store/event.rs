//! An event: one line of a stack's history, written in the transaction of the change it tells
//! about, so that the history never says more or less than the store holds.

use super::{Claimed, Result, Store};
use crate::model::{Action, EventStatus};

/// An event to record. `Event::stack` and `Event::resource` make the usual ones;
/// `with_physical_id` adds the object a resource event is about.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub stack_id: &'a str,
    /// None for an event about the whole stack (its action started, ended, was cancelled).
    pub resource: Option<&'a str>,
    pub action: Action,
    pub status: EventStatus,
    pub reason: &'a str,
    pub physical_id: Option<&'a str>,
}

impl<'a> Event<'a> {
    pub fn stack(
        stack_id: &'a str,
        action: Action,
        status: impl Into<EventStatus>,
        reason: &'a str,
    ) -> Self {
        Self {
            stack_id,
            resource: None,
            action,
            status: status.into(),
            reason,
            physical_id: None,
        }
    }

    pub fn resource(
        stack_id: &'a str,
        resource: &'a str,
        action: Action,
        status: impl Into<EventStatus>,
        reason: &'a str,
    ) -> Self {
        Self {
            resource: Some(resource),
            ..Self::stack(stack_id, action, status, reason)
        }
    }

    /// An event about a job's resource, for the action its operation performs.
    pub fn job(job: &'a Claimed, status: impl Into<EventStatus>, reason: &'a str) -> Self {
        Self::resource(
            &job.stack_id,
            &job.resource,
            job.operation.action(),
            status,
            reason,
        )
    }

    pub fn with_physical_id(self, physical_id: Option<&'a str>) -> Self {
        Self {
            physical_id,
            ..self
        }
    }
}

impl Store {
    /// Writes `event` in `tx`, as written by `engine`, at the database's time.
    pub(super) async fn record(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        event: &Event<'_>,
        engine: &str,
    ) -> Result<()> {
        sqlx::query(self.sql(
            "INSERT INTO events (stack_id, resource, action, status, reason, physical_id, engine, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, NOW_MS)",
        ))
        .bind(event.stack_id)
        .bind(event.resource)
        .bind(event.action.as_str())
        .bind(event.status.as_str())
        .bind(event.reason)
        .bind(event.physical_id)
        .bind(engine)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}
