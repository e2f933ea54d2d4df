//! What one plugin call's store holds: a WASI context that grants nothing, the captured output,
//! the memory limiter and the call's identity for logs; and what decided a fault, so that a
//! trap can be reported by its real cause (memory, CPU) rather than as a bare trap.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::plugin::PluginShared;
use super::stderr::TailPipe;

/// Who a call is for, attached to the plugin's log records.
#[derive(Debug, Clone, Default)]
pub struct CallLabel {
    pub stack: String,
    pub resource: String,
}

/// Why the host stopped a call, recorded before the trap unwinds.
#[derive(Debug, Clone)]
pub(crate) enum Stop {
    Memory { limit: u64, requested: u64 },
    Cpu { limit_ms: u64 },
}

pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) plugin: Arc<PluginShared>,
    pub(crate) label: CallLabel,
    pub(crate) deadline: Instant,
    pub(crate) stderr: TailPipe,
    pub(crate) stop: Option<Stop>,
    /// CPU ticks (10 ms epochs spent in wasm) used so far.
    pub(crate) cpu_ticks: u64,
    pub(crate) log_records: u32,
    /// Origins the call sent HTTP requests to (for retry budgets per target host).
    pub(crate) origins: Vec<String>,
}

impl HostState {
    pub(crate) fn new(plugin: Arc<PluginShared>, label: CallLabel, deadline: Instant) -> Self {
        let stderr = TailPipe::new(plugin.limits.max_stderr_bytes as usize);
        // Nothing granted: no preopens, env, args or network; stdin closed. Clocks and
        // randomness are the builder's defaults (real ones).
        let wasi = WasiCtx::builder()
            .stderr(stderr.clone())
            .stdout(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            plugin,
            label,
            deadline,
            stderr,
            stop: None,
            cpu_ticks: 0,
            log_records: 0,
            origins: Vec::new(),
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let limit = self.plugin.limits.memory_mib << 20;
        if desired as u64 > limit {
            self.stop = Some(Stop::Memory {
                limit,
                requested: desired as u64,
            });
            // An error (not `Ok(false)`) traps at once: a guest allocator that handles a failed
            // grow would otherwise retry or abort with a less clear message.
            return Err(wasmtime::format_err!(
                "memory limit exceeded: grow from {current} to {desired} bytes"
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// `kiln:plugin/types` has no functions; the bindings still ask for its (empty) host trait.
impl super::bindings::resource::kiln::plugin::types::Host for HostState {}
