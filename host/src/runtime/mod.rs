//! The plugin runtime: the one module that touches wasmtime. It compiles components once
//! (cached on disk), keeps an `InstancePre` per plugin, and runs every call in a fresh store
//! with the plugin's limits, a WASI context that grants nothing, and captured stderr.

mod bindings;
mod cache;
mod contract;
mod error;
mod host_state;
mod http;
mod log;
mod outcome;
mod plugin;
mod stderr;
mod wasmtime_engine;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Semaphore;
use wasmtime::component::{HasSelf, Linker};

pub use bindings::CONTRACT_VERSION;
pub use bindings::policy::exports::kiln::plugin::policy::{Decision, Failure};
pub use bindings::resource::exports::kiln::plugin::provider::{
    AttributeSchema, Bounds, Constraint, Current, PluginInfo, PropertySchema, PropertyType,
    TypeSchema,
};
pub use bindings::resource::kiln::plugin::types::{
    CallContext, ErrorInfo, Operation, PluginError, ThrottledInfo,
};
pub use cache::CacheOutcome;
pub use error::{CallError, Fault, FaultCause, LoadError};
pub use outcome::{CheckReport, Done, DriftItem, Outcome, Pending, UpdateOutcome};
pub use plugin::{Plugin, PluginSpec, Source, World};
pub use wasmtime_engine::Allocator;

use crate::config::RuntimeConfig;
use host_state::HostState;

/// Hosts plugins. Cheap to clone; all clones share the engine, cache and instance pool.
#[derive(Clone)]
pub struct PluginRuntime {
    inner: Arc<RuntimeInner>,
}

pub(crate) struct RuntimeInner {
    engine: wasmtime::Engine,
    linker: Linker<HostState>,
    cache: cache::ComponentCache,
    allocator: Allocator,
    /// Bounds live instances to the pool's size, so a burst of calls waits rather than fails.
    slots: Semaphore,
    http: reqwest::Client,
    _ticker: wasmtime_engine::Ticker,
}

impl PluginRuntime {
    /// Creates a runtime. `max_memory_mib` is the largest memory limit any plugin will get
    /// (it sizes the instance pool).
    pub fn new(config: &RuntimeConfig, max_memory_mib: u64) -> anyhow::Result<Self> {
        let (engine, allocator) = wasmtime_engine::build(config, max_memory_mib << 20)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        // The resource world's imports (log, http) are a superset of the policy world's (log).
        bindings::resource::ResourcePlugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let cache = cache::ComponentCache::open(&config.cache_dir(), &engine)?;
        // No redirects (each hop must pass the allow-list, and the plugin can follow them
        // itself) and no proxies from the environment.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        Ok(Self {
            inner: Arc::new(RuntimeInner {
                _ticker: wasmtime_engine::Ticker::start(&engine),
                engine,
                linker,
                cache,
                allocator,
                slots: Semaphore::new(config.max_concurrent_calls as usize),
                http,
            }),
        })
    }

    pub fn allocator(&self) -> Allocator {
        self.inner.allocator
    }

    /// Where `wasm` is (or would be) cached.
    pub fn cache_entry(&self, wasm: &[u8]) -> PathBuf {
        self.inner.cache.entry_path(wasm)
    }

    /// Loads a plugin: compile or fetch from cache, check the contract, link, and (for a
    /// resource plugin) cache its `describe`.
    pub async fn load(&self, spec: PluginSpec) -> Result<Plugin, LoadError> {
        plugin::load(self.inner.clone(), spec).await
    }
}
