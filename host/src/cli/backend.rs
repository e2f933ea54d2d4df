//! Where the stack commands run: in this process against the configured database (embedded
//! mode: `service::Service` as the local admin), or on a Kiln server (`--url` / `KILN_URL`,
//! over the REST API with `--token` / `KILN_TOKEN`). Both answer with the same types and the
//! same `ApiError`s, so every command prints the same either way.

use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::Failure;
use crate::app::{App, Plugins};
use crate::config::Config;
use crate::service::requests::{
    CancelStack, CreateStack, EventPage, OutputValue, Preview, ShowStack, UpdateStack,
    ValidateTemplate,
};
use crate::service::wire::{Engine, Event, Resource, Stack};
use crate::service::{ApiError, Caller, Service};

type Result<T> = std::result::Result<T, ApiError>;

pub enum Backend {
    Local { service: Service, caller: Caller },
    Remote(Client),
}

/// What a command needs of the local side: only the database (reading), or the plugins too
/// (validating templates and starting actions).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Store,
    Plugins,
}

/// The actions that take no options (`Backend::act`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Resume,
    Check,
    Delete,
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
        Ok(Backend::Local {
            service: app.service,
            caller: Caller::local(),
        })
    }

    /// In embedded mode, runs this process's engine until the returned sender is dropped or
    /// sent `true`: a waiting command does the work itself. A server's engines need no help.
    pub fn work(&self) -> Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)> {
        let Backend::Local { service, .. } = self else {
            return None;
        };
        let (stop_tx, stop) = watch::channel(false);
        let engine = service.engine().clone();
        let task = tokio::spawn(async move { engine.run(stop).await });
        Some((stop_tx, task))
    }

    pub async fn create(&self, req: CreateStack) -> Result<Stack> {
        match self {
            Backend::Local { service, caller } => service.create(caller, req).await,
            Backend::Remote(c) => {
                c.send("POST", &["stacks"], Some(json!(req)), Some("stack"))
                    .await
            }
        }
    }

    pub async fn update(&self, stack: &str, req: UpdateStack) -> Result<Stack> {
        match self {
            Backend::Local { service, caller } => service.update(caller, stack, req).await,
            Backend::Remote(c) => {
                c.send("PUT", &["stacks", stack], Some(json!(req)), Some("stack"))
                    .await
            }
        }
    }

    pub async fn preview(&self, stack: &str, req: UpdateStack) -> Result<Preview> {
        match self {
            Backend::Local { service, caller } => service.preview(caller, stack, req).await,
            Backend::Remote(c) => {
                let path = ["stacks", stack, "preview"];
                c.send("POST", &path, Some(json!(req)), None).await
            }
        }
    }

    /// Starts an action that takes no options.
    pub async fn act(&self, stack: &str, action: Act) -> Result<Stack> {
        match (self, action) {
            (Backend::Local { service, caller }, Act::Resume) => {
                service.resume(caller, stack).await
            }
            (Backend::Local { service, caller }, Act::Check) => service.check(caller, stack).await,
            (Backend::Local { service, caller }, Act::Delete) => {
                service.delete(caller, stack).await
            }
            (Backend::Remote(c), Act::Delete) => {
                c.send("DELETE", &["stacks", stack], None, Some("stack"))
                    .await
            }
            (Backend::Remote(c), Act::Resume | Act::Check) => {
                let verb = if action == Act::Resume {
                    "resume"
                } else {
                    "check"
                };
                c.send("POST", &["stacks", stack, verb], None, Some("stack"))
                    .await
            }
        }
    }

    pub async fn cancel(&self, stack: &str, req: CancelStack) -> Result<Stack> {
        match self {
            Backend::Local { service, caller } => service.cancel(caller, stack, req).await,
            Backend::Remote(c) => {
                let path = ["stacks", stack, "cancel"];
                c.send("POST", &path, Some(json!(req)), Some("stack")).await
            }
        }
    }

    pub async fn list(&self) -> Result<Vec<Stack>> {
        match self {
            Backend::Local { service, caller } => service.list(caller, None).await,
            Backend::Remote(c) => c.send("GET", &["stacks"], None, Some("stacks")).await,
        }
    }

    pub async fn show(&self, stack: &str, outputs: bool) -> Result<ShowStack> {
        match self {
            Backend::Local { service, caller } => service.show(caller, stack, outputs).await,
            Backend::Remote(c) => {
                let query = if outputs { "" } else { "outputs=false" };
                c.request("GET", &["stacks", stack], query, None, None)
                    .await
            }
        }
    }

    /// Every event after `after`, page by page.
    pub async fn events(&self, stack: &str, after: i64) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        let mut after = after;
        loop {
            let page: EventPage = match self {
                Backend::Local { service, caller } => {
                    service.events(caller, stack, after, None).await?
                }
                Backend::Remote(c) => {
                    let query = format!("after={after}&limit={}", crate::service::MAX_EVENTS_PAGE);
                    let path = ["stacks", stack, "events"];
                    c.request("GET", &path, &query, None, None).await?
                }
            };
            out.extend(page.events);
            match page.next {
                Some(next) => after = next,
                None => return Ok(out),
            }
        }
    }

    pub async fn outputs(&self, stack: &str) -> Result<Vec<OutputValue>> {
        match self {
            Backend::Local { service, caller } => service.outputs(caller, stack).await,
            Backend::Remote(c) => {
                let path = ["stacks", stack, "outputs"];
                c.send("GET", &path, None, Some("outputs")).await
            }
        }
    }

    pub async fn resources(&self, stack: &str) -> Result<Vec<Resource>> {
        match self {
            Backend::Local { service, caller } => service.resources(caller, stack).await,
            Backend::Remote(c) => {
                let path = ["stacks", stack, "resources"];
                c.send("GET", &path, None, Some("resources")).await
            }
        }
    }

    pub async fn resource(&self, stack: &str, name: &str) -> Result<Resource> {
        match self {
            Backend::Local { service, caller } => service.resource(caller, stack, name).await,
            Backend::Remote(c) => {
                let path = ["stacks", stack, "resources", name];
                c.send("GET", &path, None, Some("resource")).await
            }
        }
    }

    pub async fn engines(&self) -> Result<Vec<Engine>> {
        match self {
            Backend::Local { service, caller } => service.engines(caller).await,
            Backend::Remote(c) => c.send("GET", &["engines"], None, Some("engines")).await,
        }
    }

    pub async fn validate(&self, req: ValidateTemplate) -> Result<Value> {
        match self {
            Backend::Local { service, .. } => service.validate(&req),
            Backend::Remote(c) => c.send("POST", &["validate"], Some(json!(req)), None).await,
        }
    }
}

/// A Kiln server's REST API.
pub struct Client {
    base: url::Url,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(url: &str, token: Option<String>) -> std::result::Result<Self, Failure> {
        let bad = |why: String| Failure::new(super::exit::BAD_INPUT, format!("--url {url}: {why}"));
        let base = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        if !["http", "https"].contains(&base.scheme()) || base.cannot_be_a_base() {
            return Err(bad("expected http://HOST:PORT or https://HOST:PORT".into()));
        }
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self { base, token, http })
    }

    /// `/v1/` and the path's segments, each percent-encoded (`web[0]` is a resource name).
    fn url(&self, path: &[&str], query: &str) -> url::Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("checked to be a base")
            .pop_if_empty()
            .push("v1")
            .extend(path);
        url.set_query((!query.is_empty()).then_some(query));
        url
    }

    /// A request whose answer is the field `key` of the JSON reply (or the whole reply).
    async fn send<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &[&str],
        body: Option<Value>,
        key: Option<&str>,
    ) -> Result<T> {
        self.request(method, path, "", body, key).await
    }

    async fn request<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &[&str],
        query: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> Result<T> {
        let url = self.url(path, query);
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut req = self.http.request(method, url.clone());
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let unreachable = |e: reqwest::Error| {
            ApiError::new(
                "unreachable",
                format!("cannot reach the Kiln API at {}: {e}", self.base),
            )
        };
        let response = req.send().await.map_err(unreachable)?;
        let status = response.status();
        let text = response.text().await.map_err(unreachable)?;
        let reply: Value = serde_json::from_str(&text).map_err(|_| {
            ApiError::internal(format!(
                "{url} answered {status} with a body that is not JSON: {}",
                text.chars().take(200).collect::<String>()
            ))
        })?;
        if !status.is_success() {
            return Err(reply
                .get("error")
                .and_then(|e| serde_json::from_value(e.clone()).ok())
                .unwrap_or_else(|| {
                    ApiError::internal(format!("{url} answered {status}: {text}"))
                }));
        }
        let value = match key {
            Some(k) => reply.get(k).cloned().unwrap_or(Value::Null),
            None => reply,
        };
        serde_json::from_value(value).map_err(|e| {
            ApiError::internal(format!(
                "{url}: an answer this kiln does not understand: {e}"
            ))
        })
    }
}
