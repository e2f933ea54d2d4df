//! The REST API for tests: an API server in this process (with an engine beside it, as
//! `kiln serve` runs them) on 127.0.0.1, and a small JSON client for it over real HTTP.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use kiln::config::{ApiConfig, TokenConfig};

/// A running API (and engine) on one database.
pub struct ApiServer {
    pub base: String,
    pub engine: kiln::engine::Engine,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ApiServer {
    /// Serves `db_url` with these tokens (none: the open API) and body limit.
    pub async fn start(db_url: &str, tokens: Vec<TokenConfig>, max_body_bytes: usize) -> Self {
        let store = kiln::store::Store::open(db_url).await.unwrap();
        // Idle workers look for jobs often, so that tests see progress soon.
        let config = kiln::config::EngineConfig {
            workers: 8,
            poll_interval_ms: 50,
            ..Default::default()
        };
        let engine = super::stacks::tuned(store, config, &[]).await;
        let api = ApiConfig {
            tokens,
            events_page_size: 50,
            ..ApiConfig::default()
        };
        let auth = kiln::api::Auth::from_config(&api).unwrap();
        let (stop, stopping) = watch::channel(false);
        let service =
            kiln::service::Service::new(engine.clone(), api.events_page_size, Default::default());
        let state = kiln::api::state(service, auth, stopping.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut until = stopping.clone();
        let server = tokio::spawn(async move {
            kiln::api::serve(listener, state, max_body_bytes, async move {
                let _ = until.wait_for(|s| *s).await;
            })
            .await
            .unwrap()
        });
        let running = tokio::spawn({
            let engine = engine.clone();
            async move { engine.run(stopping).await }
        });
        Self {
            base,
            engine,
            stop,
            tasks: vec![server, running],
        }
    }

    pub fn client(&self, token: Option<&str>) -> Client {
        Client::new(&self.base, token)
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .expect("the API and engine stop")
                .unwrap();
        }
    }
}

/// A token of `project` with `role` ("member" or "admin").
pub fn token(secret: &str, project: &str, admin: bool) -> TokenConfig {
    TokenConfig {
        token: Some(secret.into()),
        project: project.into(),
        role: if admin {
            kiln::config::Role::Admin
        } else {
            kiln::config::Role::Member
        },
        ..TokenConfig::default()
    }
}

/// An HTTP answer: status and JSON body (Null when it was not JSON; `text` keeps it).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    /// The error code of an error reply.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// Asserts the status, showing the body when it differs.
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(self.status, status, "unexpected answer: {}", self.text);
        self
    }
}

/// An open server-sent event stream.
pub struct EventStream {
    res: reqwest::Response,
    /// What arrived and is not a whole message yet.
    text: String,
    deadline: tokio::time::Instant,
    within: Duration,
}

impl EventStream {
    /// The next message that has data, as (event name, JSON data).
    pub async fn next(&mut self) -> (String, Value) {
        loop {
            while let Some(end) = self.text.find("\n\n") {
                let message: String = self.text.drain(..end + 2).collect();
                let field = |name: &str| {
                    message
                        .lines()
                        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
                };
                if let (Some(event), Some(data)) = (field("event:"), field("data:")) {
                    return (event, serde_json::from_str(&data).unwrap());
                }
            }
            let chunk = tokio::time::timeout_at(self.deadline, self.res.chunk())
                .await
                .unwrap_or_else(|_| panic!("stream messages arrive within {:?}", self.within))
                .unwrap()
                .expect("the stream stays open");
            self.text.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str, token: Option<&str>) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            token: token.map(str::to_string),
            http: reqwest::Client::new(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<String>,
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let res = req.send().await.expect("the API answers");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            body,
            text,
            headers,
        }
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let ct = body.as_ref().map(|_| "application/json");
        self.raw(method, path, ct, body.map(|b| b.to_string()))
            .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call("POST", path, Some(body)).await
    }

    /// The error code of a request that must answer `status`.
    pub async fn code(&self, status: u16, method: &str, path: &str, body: Option<Value>) -> String {
        self.call(method, path, body)
            .await
            .expect(status)
            .code()
            .to_string()
    }

    /// Opens an event stream (it must answer 200 `text/event-stream`); its messages must
    /// come `within` this time from now.
    pub async fn stream(&self, path: &str, within: Duration) -> EventStream {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.expect("the API answers");
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        EventStream {
            res,
            text: String::new(),
            deadline: tokio::time::Instant::now() + within,
            within,
        }
    }

    /// `POST /v1/stacks` of a template's text; the reply as it came.
    pub async fn create(&self, name: &str, template: &str) -> Reply {
        self.post(
            "/v1/stacks",
            json!({"name": name, "template": {"name": "stack.yaml", "text": template}}),
        )
        .await
    }

    /// Waits (generously) until the stack's action is no longer IN_PROGRESS; its `stack`.
    pub async fn settle(&self, stack: &str) -> Value {
        let what = format!("stack {stack} to settle");
        super::procs::wait_for(Duration::from_secs(180), &what, async || {
            let r = self.get(&format!("/v1/stacks/{stack}?outputs=false")).await;
            let s = r.body["stack"].clone();
            (r.status == 200 && s["status"] != "IN_PROGRESS").then_some(s)
        })
        .await
    }

    /// Waits until `check` holds of the stack's `GET /v1/stacks/{stack}` answer.
    pub async fn wait_stack(&self, stack: &str, what: &str, check: impl Fn(&Value) -> bool) {
        super::procs::wait_until(Duration::from_secs(180), what, async || {
            let r = self.get(&format!("/v1/stacks/{stack}")).await;
            r.status == 200 && check(&r.body)
        })
        .await
    }
}
