//! A fake REST cloud on 127.0.0.1 for the `http-resource` plugin: the `items` collection of
//! kiln's fault server (`kiln::fault_server`), behind the small API the older tests use.

use std::net::SocketAddr;

use kiln::fault_server::{Fault, FaultConfig, FaultServer, FaultServerHandle};
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
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    /// 0 when the client got no response (a hang).
    pub status: u16,
}

pub struct FakeCloud {
    pub addr: SocketAddr,
    server: FaultServerHandle,
}

impl FakeCloud {
    pub async fn start() -> Self {
        let server = FaultServer::start(FaultConfig::default())
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
            Inject::Status(code) => Fault::Status(code),
            Inject::Throttle { retry_after_secs } => Fault::Throttle { retry_after_secs },
            Inject::Hang => Fault::Hang,
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
