//! A loaded plugin and its calls. Every call gets a fresh store (no state leaks between calls,
//! a fault poisons nothing), the plugin's limits, and a deadline enforced twice: by epoch
//! interruption inside wasm (CPU) and by a timeout around the whole call (wall clock).
//! Longer than a file should be, on purpose: one wrapper per function of the WIT worlds, each
//! beside the next, so that the contract's calls are read in one place.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use wasmtime::{Store, UpdateDeadline};

use super::bindings::policy::exports::kiln::plugin::policy as pol;
use super::bindings::policy::{RetryPolicy, RetryPolicyPre};
use super::bindings::resource::{ResourcePlugin, ResourcePluginPre};
use super::contract::{check_contract, check_info};
use super::error::{CallError, Fault, FaultCause, LoadError};
use super::host_state::{CallLabel, HostState, Stop};
use super::outcome::{CheckReport, Outcome, OutputCheck, UpdateOutcome};
use super::wasmtime_engine::TICK;
use super::{CacheOutcome, CallContext, Current, PluginError, PluginInfo, RuntimeInner};
use crate::allow_list::AllowList;
use crate::config::Limits;
use crate::credentials::Credentials;

/// Where a plugin's wasm comes from.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    /// In-memory bytes (bundled plugins); `origin` names them in messages.
    Bytes {
        origin: String,
        bytes: Arc<[u8]>,
    },
}

/// What to load and how to run it.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    pub name: String,
    pub source: Source,
    pub limits: Limits,
    pub allow_http: AllowList,
    /// Added as a header to every HTTP request the plugin sends.
    pub credentials: Option<Arc<Credentials>>,
}

/// Which world a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    ResourcePlugin,
    RetryPolicy,
}

impl World {
    pub fn name(self) -> &'static str {
        match self {
            World::ResourcePlugin => "resource-plugin",
            World::RetryPolicy => "retry-policy",
        }
    }
}

/// What every call of one plugin shares (also read by the host functions).
pub(crate) struct PluginShared {
    pub(crate) name: String,
    pub(crate) origin: String,
    pub(crate) limits: Limits,
    pub(crate) allow_http: AllowList,
    pub(crate) http: reqwest::Client,
    pub(crate) credentials: Option<Arc<Credentials>>,
}

enum Pre {
    Resource(ResourcePluginPre<HostState>),
    Policy(RetryPolicyPre<HostState>),
}

/// A loaded plugin. Cheap to clone.
#[derive(Clone)]
pub struct Plugin {
    shared: Arc<PluginShared>,
    pre: Arc<Pre>,
    runtime: Arc<RuntimeInner>,
    info: Option<Arc<PluginInfo>>,
    contract: String,
    cache: CacheOutcome,
    imports: Arc<Vec<String>>,
    exports: Arc<Vec<String>>,
}

pub(crate) async fn load(
    runtime: Arc<RuntimeInner>,
    spec: PluginSpec,
) -> Result<Plugin, LoadError> {
    let plugin = spec.name.clone();
    let (origin, bytes): (String, Arc<[u8]>) = match &spec.source {
        Source::File(path) => {
            let bytes = tokio::fs::read(path).await.map_err(|e| LoadError::Read {
                plugin: plugin.clone(),
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            (path.display().to_string(), bytes.into())
        }
        Source::Bytes { origin, bytes } => (origin.clone(), bytes.clone()),
    };
    let not_component = |message: &str| LoadError::NotAComponent {
        plugin: plugin.clone(),
        origin: origin.clone(),
        message: message.to_string(),
    };
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 0x0d, 0, 0x01, 0]) => {}
        Some([0, b'a', b's', b'm', 0x01, 0, 0, 0]) => {
            return Err(not_component(
                "it is a core wasm module; build for --target wasm32-wasip2 (or wrap it with `wasm-tools component new`)",
            ));
        }
        _ => return Err(not_component("no wasm header")),
    }

    // Compiling is CPU-bound and can take seconds: keep it off the async workers.
    let (component, cache) = {
        let runtime = runtime.clone();
        let bytes = bytes.clone();
        tokio::task::spawn_blocking(move || runtime.cache.load_or_compile(&runtime.engine, &bytes))
            .await
            .expect("compile task panicked")
            .map_err(|e| LoadError::Compile {
                plugin: plugin.clone(),
                origin: origin.clone(),
                message: format!("{e:#}"),
            })?
    };

    let (world, contract, imports, exports) =
        check_contract(&runtime.engine, &component, &plugin, &origin)?;
    let contract_err = |message: String| LoadError::Contract {
        plugin: plugin.clone(),
        origin: origin.clone(),
        message,
    };
    let instance_pre = runtime
        .linker
        .instantiate_pre(&component)
        .map_err(|e| contract_err(format!("cannot link its imports: {e:#}")))?;
    let pre = match world {
        World::ResourcePlugin => Pre::Resource(
            ResourcePluginPre::new(instance_pre).map_err(|e| contract_err(format!("{e:#}")))?,
        ),
        World::RetryPolicy => Pre::Policy(
            RetryPolicyPre::new(instance_pre).map_err(|e| contract_err(format!("{e:#}")))?,
        ),
    };
    let shared = Arc::new(PluginShared {
        name: plugin.clone(),
        origin: origin.clone(),
        limits: spec.limits,
        allow_http: spec.allow_http,
        http: runtime.http.clone(),
        credentials: spec.credentials,
    });
    let mut loaded = Plugin {
        shared,
        pre: Arc::new(pre),
        runtime,
        info: None,
        contract,
        cache,
        imports: Arc::new(imports),
        exports: Arc::new(exports),
    };
    if world == World::ResourcePlugin {
        let info = loaded.describe().await.map_err(|e| LoadError::Describe {
            plugin: plugin.clone(),
            origin: origin.clone(),
            source: Box::new(e),
        })?;
        check_info(&info).map_err(contract_err)?;
        loaded.info = Some(Arc::new(info));
    }
    Ok(loaded)
}

fn json_text(v: &Value) -> String {
    v.to_string()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A fresh, limited store for one call. Returns the store and the wall-clock limit.
fn new_store(plugin: &Plugin, label: CallLabel, limit: Duration) -> Store<HostState> {
    let runtime = &plugin.runtime;
    let mut store = Store::new(
        &runtime.engine,
        HostState::new(plugin.shared.clone(), label, Instant::now() + limit),
    );
    store.limiter(|s| s);
    let cpu_ticks = plugin
        .shared
        .limits
        .cpu_time_ms
        .div_ceil(TICK.as_millis() as u64)
        .max(1);
    let cpu_limit_ms = plugin.shared.limits.cpu_time_ms;
    store.set_epoch_deadline(1);
    // Each tick spent in wasm counts toward the CPU limit; between ticks the call yields so a
    // spinning plugin never starves the executor (and the wall-clock timeout can fire).
    store.epoch_deadline_callback(move |mut cx| {
        let state = cx.data_mut();
        state.cpu_ticks += 1;
        if state.cpu_ticks > cpu_ticks {
            state.stop = Some(Stop::Cpu {
                limit_ms: cpu_limit_ms,
            });
            return Err(wasmtime::format_err!("CPU time limit exceeded"));
        }
        Ok(UpdateDeadline::Yield(1))
    });
    store
}

impl Plugin {
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The secret the host adds to this plugin's HTTP requests, if configured.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.shared.credentials.as_deref()
    }

    /// The file or bundle the plugin came from.
    pub fn origin(&self) -> &str {
        &self.shared.origin
    }

    pub fn world(&self) -> World {
        match *self.pre {
            Pre::Resource(_) => World::ResourcePlugin,
            Pre::Policy(_) => World::RetryPolicy,
        }
    }

    /// The `kiln:plugin` version the plugin was built against.
    pub fn contract_version(&self) -> &str {
        &self.contract
    }

    /// What `describe` answered at load (resource plugins only).
    pub fn info(&self) -> Option<&PluginInfo> {
        self.info.as_deref()
    }

    /// Whether the compiled code came from the disk cache.
    pub fn cache_outcome(&self) -> &CacheOutcome {
        &self.cache
    }

    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    pub fn allow_http(&self) -> &AllowList {
        &self.shared.allow_http
    }

    /// The component's import and export names.
    pub fn imports(&self) -> &[String] {
        &self.imports
    }

    pub fn exports(&self) -> &[String] {
        &self.exports
    }

    fn fault(&self, function: &'static str, cause: FaultCause, stderr: String) -> CallError {
        CallError::Fault(Fault {
            plugin: self.shared.name.clone(),
            function,
            cause,
            stderr,
            origins: Vec::new(),
        })
    }

    /// The call's deadline: the caller's, never later than the plugin's timeout; written back
    /// into `ctx` so the plugin sees the real one.
    fn deadline(&self, ctx: &mut CallContext) -> Duration {
        let limit = self.shared.limits.call_timeout_ms;
        let now = now_ms();
        let own = now + limit;
        if ctx.deadline_ms == 0 || ctx.deadline_ms > own {
            ctx.deadline_ms = own;
        }
        Duration::from_millis(ctx.deadline_ms.saturating_sub(now))
    }

    /// Runs `f` on a fresh instance of the resource world and classifies what went wrong.
    async fn run_resource<R>(
        &self,
        function: &'static str,
        label: CallLabel,
        limit: Duration,
        f: impl AsyncFnOnce(&ResourcePlugin, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<(R, Vec<String>), CallError> {
        let Pre::Resource(pre) = &*self.pre else {
            return Err(self.fault(
                function,
                FaultCause::WrongWorld(format!(
                    "{function} needs a resource plugin; this is a retry policy"
                )),
                String::new(),
            ));
        };
        let _slot = self.runtime.slots.acquire().await.expect("never closed");
        let mut store = new_store(self, label, limit);
        let result = tokio::time::timeout(limit, async {
            let instance = pre.instantiate_async(&mut store).await?;
            f(&instance, &mut store).await
        })
        .await;
        let (result, origins) = self.finish(function, limit, store, result);
        result.map(|r| (r, origins))
    }

    async fn run_policy<R>(
        &self,
        function: &'static str,
        f: impl AsyncFnOnce(&RetryPolicy, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let Pre::Policy(pre) = &*self.pre else {
            return Err(self.fault(
                function,
                FaultCause::WrongWorld(format!(
                    "{function} needs a retry policy; this is a resource plugin"
                )),
                String::new(),
            ));
        };
        let limit = Duration::from_millis(self.shared.limits.call_timeout_ms);
        let _slot = self.runtime.slots.acquire().await.expect("never closed");
        let mut store = new_store(self, CallLabel::default(), limit);
        let result = tokio::time::timeout(limit, async {
            let instance = pre.instantiate_async(&mut store).await?;
            f(&instance, &mut store).await
        })
        .await;
        self.finish(function, limit, store, result).0
    }

    fn finish<R>(
        &self,
        function: &'static str,
        limit: Duration,
        store: Store<HostState>,
        result: Result<wasmtime::Result<R>, tokio::time::error::Elapsed>,
    ) -> (Result<R, CallError>, Vec<String>) {
        let state = store.into_data();
        let origins = state.origins;
        let stderr = state.stderr.contents();
        let with_origins = |e: CallError| match e {
            CallError::Fault(mut f) => {
                f.origins = origins.clone();
                CallError::Fault(f)
            }
            other => other,
        };
        let err = match result {
            Ok(Ok(r)) => return (Ok(r), origins),
            Err(_) => {
                let limit_ms = limit.as_millis() as u64;
                let e = self.fault(function, FaultCause::Timeout { limit_ms }, stderr);
                return (Err(with_origins(e)), origins);
            }
            Ok(Err(e)) => e,
        };
        let cause = match state.stop {
            Some(Stop::Memory { limit, requested }) => FaultCause::OutOfMemory { limit, requested },
            Some(Stop::Cpu { limit_ms }) => FaultCause::CpuTime { limit_ms },
            None => match err.downcast_ref::<wasmtime::Trap>() {
                Some(trap) => FaultCause::Trap(match trap {
                    wasmtime::Trap::UnreachableCodeReached => {
                        "wasm `unreachable` executed (a panic or abort in the plugin)".to_string()
                    }
                    other => other.to_string(),
                }),
                None => FaultCause::Host(format!("{err:#}")),
            },
        };
        let e = with_origins(self.fault(function, cause, stderr));
        (Err(e), origins)
    }

    /// Converts a plugin's answer: its error passes through (message capped), its output is
    /// checked against the contract.
    fn output<W, T>(
        &self,
        function: &'static str,
        (r, origins): (Result<W, PluginError>, Vec<String>),
        convert: impl FnOnce(&mut OutputCheck, W) -> Result<T, String>,
    ) -> Result<T, CallError> {
        let max = self.shared.limits.max_log_bytes as usize;
        let w = r.map_err(|e| CallError::Plugin(capped(e, max), origins))?;
        convert(
            &mut OutputCheck::new(self.shared.limits.max_output_bytes),
            w,
        )
        .map_err(|m| self.fault(function, FaultCause::BadOutput(m), String::new()))
    }

    /// `describe`: the types this plugin serves.
    pub async fn describe(&self) -> Result<PluginInfo, CallError> {
        let limit = Duration::from_millis(self.shared.limits.call_timeout_ms);
        self.run_resource("describe", CallLabel::default(), limit, async |p, s| {
            p.kiln_plugin_provider().call_describe(s).await
        })
        .await
        .map(|(info, _)| info)
    }

    pub async fn create(
        &self,
        ctx: &CallContext,
        properties: &Value,
    ) -> Result<Outcome, CallError> {
        let mut ctx = ctx.clone();
        let limit = self.deadline(&mut ctx);
        let props = json_text(properties);
        timed(&ctx, "create", async {
            let r = self
                .run_resource("create", label(&ctx), limit, async |p, s| {
                    p.kiln_plugin_provider().call_create(s, &ctx, &props).await
                })
                .await?;
            self.output("create", r, |c, o| c.outcome(o))
        })
        .await
    }

    pub async fn update(
        &self,
        ctx: &CallContext,
        current: &Current,
        old_properties: &Value,
        new_properties: &Value,
    ) -> Result<UpdateOutcome, CallError> {
        let mut ctx = ctx.clone();
        let limit = self.deadline(&mut ctx);
        let (old, new) = (json_text(old_properties), json_text(new_properties));
        timed(&ctx, "update", async {
            let r = self
                .run_resource("update", label(&ctx), limit, async |p, s| {
                    p.kiln_plugin_provider()
                        .call_update(s, &ctx, current, &old, &new)
                        .await
                })
                .await?;
            self.output("update", r, |c, o| c.update_outcome(o))
        })
        .await
    }

    pub async fn delete(
        &self,
        ctx: &CallContext,
        current: &Current,
        properties: &Value,
    ) -> Result<Outcome, CallError> {
        let mut ctx = ctx.clone();
        let limit = self.deadline(&mut ctx);
        let props = json_text(properties);
        timed(&ctx, "delete", async {
            let r = self
                .run_resource("delete", label(&ctx), limit, async |p, s| {
                    p.kiln_plugin_provider()
                        .call_delete(s, &ctx, current, &props)
                        .await
                })
                .await?;
            self.output("delete", r, |c, o| c.outcome(o))
        })
        .await
    }

    pub async fn check(
        &self,
        ctx: &CallContext,
        current: &Current,
        properties: &Value,
    ) -> Result<CheckReport, CallError> {
        let mut ctx = ctx.clone();
        let limit = self.deadline(&mut ctx);
        let props = json_text(properties);
        timed(&ctx, "check", async {
            let r = self
                .run_resource("check", label(&ctx), limit, async |p, s| {
                    p.kiln_plugin_provider()
                        .call_check(s, &ctx, current, &props)
                        .await
                })
                .await?;
            self.output("check", r, |c, o| c.check_report(o))
        })
        .await
    }

    pub async fn poll(
        &self,
        ctx: &CallContext,
        properties: &Value,
        state: &Value,
    ) -> Result<Outcome, CallError> {
        let mut ctx = ctx.clone();
        let limit = self.deadline(&mut ctx);
        let (props, state) = (json_text(properties), json_text(state));
        timed(&ctx, "poll", async {
            let r = self
                .run_resource("poll", label(&ctx), limit, async |p, s| {
                    p.kiln_plugin_provider()
                        .call_poll(s, &ctx, &props, &state)
                        .await
                })
                .await?;
            self.output("poll", r, |c, o| c.outcome(o))
        })
        .await
    }

    /// A retry policy's check of its parameters: `Ok(Err(reason))` when it rejects them.
    pub async fn validate_params(&self, params: &Value) -> Result<Result<(), String>, CallError> {
        let params = json_text(params);
        self.run_policy("validate", async |p, s| {
            p.kiln_plugin_policy().call_validate(s, &params).await
        })
        .await
    }

    /// A retry policy's decision about one failure.
    pub async fn decide(
        &self,
        params: &Value,
        failure: &pol::Failure,
    ) -> Result<pol::Decision, CallError> {
        let params = json_text(params);
        self.run_policy("decide", async |p, s| {
            p.kiln_plugin_policy()
                .call_decide(s, &params, failure)
                .await
        })
        .await
    }
}

/// Runs one resource call and records it in `kiln_plugin_call_duration_seconds`, by type,
/// function and outcome. The time includes the wait for a sandbox slot: what the engine waited.
async fn timed<T: Answer>(
    ctx: &CallContext,
    function: &'static str,
    call: impl Future<Output = Result<T, CallError>>,
) -> Result<T, CallError> {
    let started = Instant::now();
    let result = call.await;
    let outcome = match &result {
        Ok(answer) => answer.outcome(),
        Err(_) => "error",
    };
    let seconds = started.elapsed().as_secs_f64();
    crate::metrics::observe_plugin_call(&ctx.resource_type, function, outcome, seconds);
    result
}

/// A call's answer as the `outcome` label names it.
trait Answer {
    fn outcome(&self) -> &'static str;
}

impl Answer for Outcome {
    fn outcome(&self) -> &'static str {
        match self {
            Outcome::Done(_) => "ok",
            Outcome::Pending(_) => "pending",
        }
    }
}

impl Answer for UpdateOutcome {
    fn outcome(&self) -> &'static str {
        match self {
            // A plugin that cannot update in place answered as it should.
            UpdateOutcome::Done(_) | UpdateOutcome::Replace { .. } => "ok",
            UpdateOutcome::Pending(_) => "pending",
        }
    }
}

impl Answer for CheckReport {
    fn outcome(&self) -> &'static str {
        "ok"
    }
}

fn label(ctx: &CallContext) -> CallLabel {
    CallLabel {
        stack: ctx.stack.clone(),
        resource: ctx.resource.clone(),
    }
}

/// A plugin's error with its message cut to `max` bytes: it ends up in status reasons and events.
fn capped(mut e: PluginError, max: usize) -> PluginError {
    let m = e.message_mut();
    *m = super::log::cut(m, max);
    e
}

/// The engine runs calls on spawned tasks: the call futures must stay `Send`.
#[allow(dead_code)]
fn calls_are_send(p: &Plugin, ctx: &CallContext, c: &Current, v: &Value, f: &pol::Failure) {
    fn send<T: Send>(_: T) {}
    send(p.create(ctx, v));
    send(p.update(ctx, c, v, v));
    send(p.poll(ctx, v, v));
    send(p.decide(v, f));
}
