//! Where the stack commands run: in this process against the configured database (embedded
//! mode: the service as the local admin), or on a Kiln server (`--url` / `KILN_URL`, over the
//! REST API with `--token` / `KILN_TOKEN`, `client.rs`). Both are `service::Operations`, so
//! every command prints the same either way.

use serde_json::Value;
use tokio::sync::watch;

use super::Failure;
use super::client::Client;
use crate::app::{App, Plugins};
use crate::config::Config;
use crate::service::operations::{Act, Operations, Session};
use crate::service::requests::{
    CancelStack, CreateStack, EventPage, OutputValue, Preview, ShowStack, UpdateStack,
    ValidateTemplate,
};
use crate::service::wire::{Engine, Event, Resource, Stack};
use crate::service::{ApiError, Caller};

type Result<T> = std::result::Result<T, ApiError>;

pub enum Backend {
    Local(Session),
    Remote(Client),
}

/// What a command needs of the local side: only the database (reading), or the plugins too
/// (validating templates and starting actions).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Store,
    Plugins,
}

/// Where `kiln` talks to: the server named by `--url`, else the configured database.
pub struct Target {
    pub url: Option<String>,
    pub token: Option<String>,
}

impl Backend {
    pub async fn connect(
        config: &Config,
        target: &Target,
        needs: Needs,
    ) -> std::result::Result<Self, Failure> {
        if let Some(url) = &target.url {
            return Ok(Backend::Remote(Client::new(url, target.token.clone())?));
        }
        // Reading needs no plugins: skip loading (and compiling) them.
        let plugins = match needs {
            Needs::Plugins => Plugins::Load,
            Needs::Store => Plugins::Skip,
        };
        let app = App::build(config, plugins)
            .await
            .map_err(super::app_failure)?;
        Ok(Backend::Local(Session {
            service: app.service,
            caller: Caller::local(),
        }))
    }

    /// In embedded mode, runs this process's engine until the returned sender is dropped or
    /// sent `true`: a waiting command does the work itself. A server's engines need no help.
    pub fn work(&self) -> Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)> {
        let Backend::Local(session) = self else {
            return None;
        };
        let (stop_tx, stop) = watch::channel(false);
        let engine = session.service.engine().clone();
        let task = tokio::spawn(async move { engine.run(stop).await });
        Some((stop_tx, task))
    }

    /// Every event after `after`, page by page.
    pub async fn events(&self, stack: &str, after: i64) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        let mut after = after;
        loop {
            let page = self.events_page(stack, after).await?;
            out.extend(page.events);
            match page.next {
                Some(next) => after = next,
                None => return Ok(out),
            }
        }
    }
}

/// Each operation goes to whichever side this is.
macro_rules! either {
    ($self:ident . $op:ident ( $($arg:expr),* )) => {
        match $self {
            Backend::Local(s) => s.$op($($arg),*).await,
            Backend::Remote(c) => c.$op($($arg),*).await,
        }
    };
}

impl Operations for Backend {
    async fn create(&self, req: CreateStack) -> Result<Stack> {
        either!(self.create(req))
    }

    async fn update(&self, stack: &str, req: UpdateStack) -> Result<Stack> {
        either!(self.update(stack, req))
    }

    async fn preview(&self, stack: &str, req: UpdateStack) -> Result<Preview> {
        either!(self.preview(stack, req))
    }

    async fn act(&self, stack: &str, action: Act) -> Result<Stack> {
        either!(self.act(stack, action))
    }

    async fn cancel(&self, stack: &str, req: CancelStack) -> Result<Stack> {
        either!(self.cancel(stack, req))
    }

    async fn list(&self) -> Result<Vec<Stack>> {
        either!(self.list())
    }

    async fn show(&self, stack: &str, outputs: bool) -> Result<ShowStack> {
        either!(self.show(stack, outputs))
    }

    async fn events_page(&self, stack: &str, after: i64) -> Result<EventPage> {
        either!(self.events_page(stack, after))
    }

    async fn outputs(&self, stack: &str) -> Result<Vec<OutputValue>> {
        either!(self.outputs(stack))
    }

    async fn resources(&self, stack: &str) -> Result<Vec<Resource>> {
        either!(self.resources(stack))
    }

    async fn resource(&self, stack: &str, name: &str) -> Result<Resource> {
        either!(self.resource(stack, name))
    }

    async fn engines(&self) -> Result<Vec<Engine>> {
        either!(self.engines())
    }

    async fn validate(&self, req: ValidateTemplate) -> Result<Value> {
        either!(self.validate(req))
    }
}
