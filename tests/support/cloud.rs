//! A fake REST cloud on 127.0.0.1 for the `http-resource` plugin: the `items` collection of
//! the fault-cloud crate's server (`fault_cloud`), behind the small API the older tests use.

use std::net::SocketAddr;

use fault_cloud::{Fault, FaultConfig, FaultServer, FaultServerHandle, FaultSpec, Mix};
use serde_json::Value;

/// What to do instead of answering the next request.
#[derive(Debug, Clone)]
pub enum Inject {
    Status(u16),
    Throttle {
        retry_after_secs: u64,
    },
    /// Never answer (the client's timeout must end it).
    Hang,
    /// Answer as usual (so that the next fault strikes the request after this one).
    Pass,
    /// Handle the request (a POST creates its object), then answer with this status instead
    /// of the result: the ambiguous failure that idempotency keys exist for.
    StatusAfterHandling(u16),
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    /// 0 when the client got no response (a hang).
    pub status: u16,
    /// The object this request created (also when a fault after handling hid it).
    pub created: Option<String>,
}

pub struct FakeCloud {
    pub addr: SocketAddr,
    server: FaultServerHandle,
}

impl FakeCloud {
    pub async fn start() -> Self {
        Self::with_latency(0).await
    }

    /// A cloud whose every answer takes `latency_ms`: calls that hold their worker, as a real
    /// cloud's do, so that concurrency shows.
    pub async fn with_latency(latency_ms: u64) -> Self {
        let config = FaultConfig {
            mix: Mix {
                latency_ms,
                ..Mix::default()
            },
            ..FaultConfig::default()
        };
        let server = FaultServer::start(config)
            .await
            .expect("fault server starts");
        Self {
            addr: server.addr(),
            server,
        }
    }

    /// The fault server itself, for its stats and the rest of its API.
    pub fn server(&self) -> &FaultServerHandle {
        &self.server
    }

    /// The collection URL.
    pub fn url(&self) -> String {
        self.server.url("items")
    }

    /// The allow-list rule admitting this server.
    pub fn rule(&self) -> String {
        self.server.base_url()
    }

    pub fn inject(&self, fault: Inject) {
        self.server.inject(match fault {
            Inject::Status(code) => Fault::Status(code).into(),
            Inject::Throttle { retry_after_secs } => Fault::Throttle { retry_after_secs }.into(),
            Inject::Hang => Fault::Hang.into(),
            Inject::Pass => Fault::Pass.into(),
            Inject::StatusAfterHandling(code) => FaultSpec::after(Fault::Status(code)),
        });
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.server
            .requests()
            .into_iter()
            .map(|r| Recorded {
                method: r.method,
                path: r.path,
                idempotency_key: r.idempotency_key,
                status: r.status.unwrap_or(0),
                created: r.created,
            })
            .collect()
    }

    pub fn object(&self, id: &str) -> Option<Value> {
        self.server.object(id)
    }

    pub fn objects(&self) -> usize {
        self.server.object_count()
    }

    /// Changes an object behind the plugin's back (drift).
    pub fn set_field(&self, id: &str, key: &str, value: Value) {
        assert!(self.server.set_field(id, key, value), "no object {id}");
    }
}

/// `n` independent `Kiln::HTTP::Resource`s, each creating one object in the collection `url`.
pub fn http_stack(n: usize, url: &str) -> String {
    let mut text = String::from("heat_template_version: 2021-04-16\nresources:\n");
    for i in 0..n {
        text += &format!(
            "  r{i}:\n    type: Kiln::HTTP::Resource\n    properties: {{url: \"{url}\", body: {{n: {i}}}}}\n"
        );
    }
    text
}
