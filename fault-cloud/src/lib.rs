//! A fault-injecting fake REST cloud on 127.0.0.1, for tests and examples: JSON collections that
//! honour `Idempotency-Key`, faults injected from a scripted queue or a seeded probabilistic mix
//! (statuses, 429 with `Retry-After`, hanging responses, connection resets), an optional bearer
//! token (401 until the client presents the current one; rotatable, to test credential refresh),
//! an optional fixed latency, and a record of every request so that a test can prove each object
//! was created exactly once.
//!
//! Control endpoints under `/_kiln/` (never faulted, delayed or asked for a token): `GET requests
//! | objects | stats | keys | rates`, `POST faults` (a JSON array of faults to queue), `PUT rates`
//! (a [`Mix`], latency included), `PUT token` (`{"token": "abc"}` or `{"token": null}`; there is
//! no GET: the token is never sent back).

mod auth;
mod cloud;
mod control;
mod fault;
mod injector;
mod objects;
mod record;
mod server;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::task::JoinHandle;

pub use auth::Auth;
pub use fault::{DEFAULT_RETRY_AFTER_SECS, Fault, FaultSpec, ParseError, parse_rate};
pub use injector::Mix;
pub use record::{KeyStats, RequestRecord, Stats};

use injector::Injector;
use objects::Objects;
use record::Log;

/// How to start a server.
#[derive(Debug, Clone)]
pub struct FaultConfig {
    /// Must be on 127.0.0.1; port 0 picks a free port.
    pub listen: SocketAddr,
    pub mix: Mix,
    /// `false` makes a careless API that creates a new object for every POST, so that tests can
    /// see what a repeated key would cost without the server's help.
    pub honour_idempotency_keys: bool,
    /// When set, every cloud request must carry `Authorization: Bearer <token>` or gets a 401
    /// (before any fault); `None` requires nothing. An empty token admits no request.
    pub token: Option<String>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            mix: Mix::default(),
            honour_idempotency_keys: true,
            token: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "refusing to listen on {0}: the fault server listens on 127.0.0.1 only (it is a test tool, not for other hosts)"
    )]
    NotLocal(SocketAddr),
    #[error("bad fault mix: {0}")]
    BadMix(#[from] ParseError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Everything the handlers share; one lock, never held across an await.
pub(crate) struct State {
    injector: Injector,
    objects: Objects,
    log: Log,
    /// The bearer token cloud requests must carry, if any.
    token: Option<String>,
}

impl State {
    fn stats(&self) -> Stats {
        Stats {
            objects_live: self.objects.live() as u64,
            scripted_pending: self.injector.queued() as u64,
            seed: self.injector.seed(),
            ..self.log.stats()
        }
    }
}

pub(crate) type Shared = Arc<Mutex<State>>;

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // A handler that panicked leaves consistent data (each update is one step): keep serving.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct FaultServer;

impl FaultServer {
    /// Binds and serves on the current tokio runtime until the handle is dropped or shut down.
    pub async fn start(config: FaultConfig) -> Result<FaultServerHandle, StartError> {
        if config.listen.ip() != Ipv4Addr::LOCALHOST {
            return Err(StartError::NotLocal(config.listen));
        }
        let mix = config.mix.validated()?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let shared: Shared = Arc::new(Mutex::new(State {
            injector: Injector::new(mix),
            objects: Objects::new(config.honour_idempotency_keys),
            log: Log::new(),
            token: config.token,
        }));
        let task = tokio::spawn(server::serve(listener, shared.clone()));
        Ok(FaultServerHandle { addr, shared, task })
    }
}

/// A running server; dropping it stops the server and closes its connections.
pub struct FaultServerHandle {
    addr: SocketAddr,
    shared: Shared,
    task: JoinHandle<()>,
}

impl FaultServerHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The URL of a collection, e.g. `url("items")`.
    pub fn url(&self, collection: &str) -> String {
        format!("http://{}/{collection}", self.addr)
    }

    /// Queues a fault for the next cloud request (FIFO, one per request); `Fault` converts to a
    /// fault that strikes before handling, [`FaultSpec::after`] to one that strikes after.
    pub fn inject(&self, fault: impl Into<FaultSpec>) {
        lock(&self.shared).injector.push(fault.into());
    }

    /// Replaces the probabilistic mix (and restarts the RNG when it names a seed).
    pub fn set_mix(&self, mix: Mix) -> Result<(), ParseError> {
        let mix = mix.validated()?;
        lock(&self.shared).injector.set_mix(mix);
        Ok(())
    }

    /// The current mix, with the seed in use.
    pub fn mix(&self) -> Mix {
        lock(&self.shared).injector.mix()
    }

    /// Rotates the bearer token (`None` stops requiring one). The old token is refused from the
    /// next request on, including requests already waiting out the latency: the token is checked
    /// when a request is handled.
    pub fn set_token(&self, token: Option<String>) {
        lock(&self.shared).token = token;
    }

    /// The bearer token cloud requests must carry now, if any.
    pub fn token(&self) -> Option<String> {
        lock(&self.shared).token.clone()
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared).log.records().to_vec()
    }

    /// Live objects by collection, then by id.
    pub fn objects(&self) -> BTreeMap<String, BTreeMap<String, Value>> {
        lock(&self.shared).objects.by_collection()
    }

    pub fn object_count(&self) -> usize {
        lock(&self.shared).objects.live()
    }

    /// An object by id (ids are unique across collections).
    pub fn object(&self, id: &str) -> Option<Value> {
        lock(&self.shared).objects.get(id).cloned()
    }

    /// Changes an object behind the client's back (drift); false when there is no such object.
    pub fn set_field(&self, id: &str, key: &str, value: Value) -> bool {
        match lock(&self.shared).objects.get_mut(id) {
            Some(Value::Object(o)) => {
                o.insert(key.to_string(), value);
                true
            }
            _ => false,
        }
    }

    pub fn stats(&self) -> Stats {
        lock(&self.shared).stats()
    }

    /// Requests and objects created per idempotency key.
    pub fn keys(&self) -> BTreeMap<String, KeyStats> {
        lock(&self.shared).log.keys().clone()
    }

    /// Stops the server and waits until its connections are closed.
    pub async fn shutdown(mut self) {
        self.task.abort();
        // The JoinError here is that abort; the connections were dropped with the task.
        let _ = (&mut self.task).await;
    }
}

impl Drop for FaultServerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}
