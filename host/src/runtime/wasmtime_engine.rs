//! The wasmtime engine and its configuration: Cranelift, epoch interruption driven by a ticker
//! thread, and the pooling allocator when the address space can be reserved.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::config::{Pooling, RuntimeConfig};

/// One epoch: the granularity of CPU limits and of yielding to the async executor.
pub(crate) const TICK: Duration = Duration::from_millis(10);

/// Which instance allocator the engine ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocator {
    Pooling,
    OnDemand,
}

fn base_config() -> Config {
    let mut c = Config::new();
    c.wasm_component_model(true);
    c.epoch_interruption(true);
    c.cranelift_opt_level(wasmtime::OptLevel::Speed);
    c
}

/// Builds the engine; `max_memory` is the largest memory limit of any plugin.
pub(crate) fn build(
    config: &RuntimeConfig,
    max_memory: u64,
) -> anyhow::Result<(Engine, Allocator)> {
    if config.pooling != Pooling::Off {
        let n = config.max_concurrent_calls;
        let mut pool = PoolingAllocationConfig::default();
        // A component from wasm32-wasip2 has a handful of core instances (the program and the
        // adapter shims) and one or two memories and tables.
        pool.total_component_instances(n)
            .total_core_instances(n * 8)
            .total_memories(n * 2)
            .total_tables(n * 8)
            .total_stacks(n)
            .max_memory_size(max_memory as usize);
        let mut c = base_config();
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        match Engine::new(&c) {
            Ok(engine) => return Ok((engine, Allocator::Pooling)),
            Err(e) if config.pooling == Pooling::Auto => {
                tracing::warn!("pooling allocator unavailable ({e:#}); using on-demand allocation");
            }
            Err(e) => {
                anyhow::bail!("runtime.pooling = \"on\" but the pooling allocator failed: {e:#}")
            }
        }
    }
    let engine = Engine::new(&base_config())
        .map_err(|e| anyhow::anyhow!("cannot create the wasm engine: {e:#}"))?;
    Ok((engine, Allocator::OnDemand))
}

/// Advances the engine's epoch every tick until dropped.
pub(crate) struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Ticker {
    pub(crate) fn start(engine: &Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (engine, flag) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("kiln-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawn the epoch thread");
        Self { stop }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
