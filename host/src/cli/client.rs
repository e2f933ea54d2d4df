//! A Kiln server's REST API as the CLI's `--url` uses it: the stack operations
//! (`service::Operations`) over HTTP, answering with the same types and `ApiError`s as the
//! service in this process.

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::Failure;
use crate::service::ApiError;
use crate::service::operations::{Act, Operations};
use crate::service::requests::{
    CancelStack, CreateStack, EventPage, OutputValue, Preview, ShowStack, UpdateStack,
    ValidateTemplate,
};
use crate::service::wire::{Engine, Resource, Stack};

type Result<T> = std::result::Result<T, ApiError>;

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

impl Operations for Client {
    async fn create(&self, req: CreateStack) -> Result<Stack> {
        self.send("POST", &["stacks"], Some(json!(req)), Some("stack"))
            .await
    }

    async fn update(&self, stack: &str, req: UpdateStack) -> Result<Stack> {
        self.send("PUT", &["stacks", stack], Some(json!(req)), Some("stack"))
            .await
    }

    async fn preview(&self, stack: &str, req: UpdateStack) -> Result<Preview> {
        let path = ["stacks", stack, "preview"];
        self.send("POST", &path, Some(json!(req)), None).await
    }

    async fn act(&self, stack: &str, action: Act) -> Result<Stack> {
        match action {
            Act::Delete => {
                self.send("DELETE", &["stacks", stack], None, Some("stack"))
                    .await
            }
            Act::Resume | Act::Check => {
                let verb = if action == Act::Resume {
                    "resume"
                } else {
                    "check"
                };
                self.send("POST", &["stacks", stack, verb], None, Some("stack"))
                    .await
            }
        }
    }

    async fn cancel(&self, stack: &str, req: CancelStack) -> Result<Stack> {
        let path = ["stacks", stack, "cancel"];
        self.send("POST", &path, Some(json!(req)), Some("stack"))
            .await
    }

    async fn list(&self) -> Result<Vec<Stack>> {
        self.send("GET", &["stacks"], None, Some("stacks")).await
    }

    async fn show(&self, stack: &str, outputs: bool) -> Result<ShowStack> {
        let query = if outputs { "" } else { "outputs=false" };
        self.request("GET", &["stacks", stack], query, None, None)
            .await
    }

    async fn events_page(&self, stack: &str, after: i64) -> Result<EventPage> {
        let query = format!("after={after}&limit={}", crate::service::MAX_EVENTS_PAGE);
        let path = ["stacks", stack, "events"];
        self.request("GET", &path, &query, None, None).await
    }

    async fn outputs(&self, stack: &str) -> Result<Vec<OutputValue>> {
        let path = ["stacks", stack, "outputs"];
        self.send("GET", &path, None, Some("outputs")).await
    }

    async fn resources(&self, stack: &str) -> Result<Vec<Resource>> {
        let path = ["stacks", stack, "resources"];
        self.send("GET", &path, None, Some("resources")).await
    }

    async fn resource(&self, stack: &str, name: &str) -> Result<Resource> {
        let path = ["stacks", stack, "resources", name];
        self.send("GET", &path, None, Some("resource")).await
    }

    async fn engines(&self) -> Result<Vec<Engine>> {
        self.send("GET", &["engines"], None, Some("engines")).await
    }

    async fn validate(&self, req: ValidateTemplate) -> Result<Value> {
        self.send("POST", &["validate"], Some(json!(req)), None)
            .await
    }
}
