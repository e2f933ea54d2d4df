//! The stack operations as one surface: what a caller can ask of Kiln, answered with the same
//! types and the same `ApiError`s whoever answers. The in-process service, seen as one caller
//! (`Session`), and the HTTP client of a Kiln server (`cli/client.rs`) both implement it, so a
//! command has one code path whether it runs embedded or against a server.

use std::future::Future;

use serde_json::Value;

use super::requests::{
    CancelStack, CreateStack, EventPage, OutputValue, Preview, ShowStack, UpdateStack,
    ValidateTemplate,
};
use super::wire::{Engine, Resource, Stack};
use super::{ApiError, Caller, Service};

type Result<T> = std::result::Result<T, ApiError>;

/// The actions that take no options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Resume,
    Check,
    Delete,
}

/// Every stack operation a caller can ask for (the REST API's routes, `api/stacks.rs`).
pub trait Operations: Sync {
    fn create(&self, req: CreateStack) -> impl Future<Output = Result<Stack>> + Send;
    /// `PUT`; with `existing`, `PATCH`.
    fn update(&self, stack: &str, req: UpdateStack) -> impl Future<Output = Result<Stack>> + Send;
    fn preview(
        &self,
        stack: &str,
        req: UpdateStack,
    ) -> impl Future<Output = Result<Preview>> + Send;
    fn act(&self, stack: &str, action: Act) -> impl Future<Output = Result<Stack>> + Send;
    fn cancel(&self, stack: &str, req: CancelStack) -> impl Future<Output = Result<Stack>> + Send;
    fn list(&self) -> impl Future<Output = Result<Vec<Stack>>> + Send;
    fn show(&self, stack: &str, outputs: bool) -> impl Future<Output = Result<ShowStack>> + Send;
    /// One page of events after `after` (an event id).
    fn events_page(
        &self,
        stack: &str,
        after: i64,
    ) -> impl Future<Output = Result<EventPage>> + Send;
    fn outputs(&self, stack: &str) -> impl Future<Output = Result<Vec<OutputValue>>> + Send;
    fn resources(&self, stack: &str) -> impl Future<Output = Result<Vec<Resource>>> + Send;
    fn resource(&self, stack: &str, name: &str) -> impl Future<Output = Result<Resource>> + Send;
    fn engines(&self) -> impl Future<Output = Result<Vec<Engine>>> + Send;
    fn validate(&self, req: ValidateTemplate) -> impl Future<Output = Result<Value>> + Send;
}

/// The service in this process, as one caller sees it.
#[derive(Clone)]
pub struct Session {
    pub service: Service,
    pub caller: Caller,
}

impl Operations for Session {
    async fn create(&self, req: CreateStack) -> Result<Stack> {
        self.service.create(&self.caller, req).await
    }

    async fn update(&self, stack: &str, req: UpdateStack) -> Result<Stack> {
        self.service.update(&self.caller, stack, req).await
    }

    async fn preview(&self, stack: &str, req: UpdateStack) -> Result<Preview> {
        self.service.preview(&self.caller, stack, req).await
    }

    async fn act(&self, stack: &str, action: Act) -> Result<Stack> {
        match action {
            Act::Resume => self.service.resume(&self.caller, stack).await,
            Act::Check => self.service.check(&self.caller, stack).await,
            Act::Delete => self.service.delete(&self.caller, stack).await,
        }
    }

    async fn cancel(&self, stack: &str, req: CancelStack) -> Result<Stack> {
        self.service.cancel(&self.caller, stack, req).await
    }

    async fn list(&self) -> Result<Vec<Stack>> {
        self.service.list(&self.caller, None).await
    }

    async fn show(&self, stack: &str, outputs: bool) -> Result<ShowStack> {
        self.service.show(&self.caller, stack, outputs).await
    }

    async fn events_page(&self, stack: &str, after: i64) -> Result<EventPage> {
        self.service.events(&self.caller, stack, after, None).await
    }

    async fn outputs(&self, stack: &str) -> Result<Vec<OutputValue>> {
        self.service.outputs(&self.caller, stack).await
    }

    async fn resources(&self, stack: &str) -> Result<Vec<Resource>> {
        self.service.resources(&self.caller, stack).await
    }

    async fn resource(&self, stack: &str, name: &str) -> Result<Resource> {
        self.service.resource(&self.caller, stack, name).await
    }

    async fn engines(&self) -> Result<Vec<Engine>> {
        self.service.engines(&self.caller).await
    }

    async fn validate(&self, req: ValidateTemplate) -> Result<Value> {
        self.service.validate(&req).await
    }
}
