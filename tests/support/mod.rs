//! Shared helpers of the integration tests: loading the plugins that host/build.rs compiled,
//! call contexts, and a fake REST cloud on 127.0.0.1.
#![allow(dead_code)]

pub mod api;
pub mod browser;
pub mod cloud;
pub mod db;
pub mod procs;
pub mod skip;
pub mod stacks;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln::allow_list::AllowList;
use kiln::config::{Limits, RuntimeConfig};
use kiln::runtime::{CallContext, Operation, Plugin, PluginRuntime, PluginSpec, Source};

/// A cache shared by the tests of one target dir, so each plugin compiles once per build.
pub fn shared_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("component-cache")
}

pub fn runtime_config(cache: &Path) -> RuntimeConfig {
    RuntimeConfig {
        cache_dir: Some(cache.to_path_buf()),
        ..RuntimeConfig::default()
    }
}

pub fn runtime() -> PluginRuntime {
    PluginRuntime::new(&runtime_config(&shared_cache()), 64).expect("runtime")
}

pub fn spec(name: &str, path: &str, limits: Limits, allow: &[&str]) -> PluginSpec {
    PluginSpec {
        name: name.to_string(),
        source: Source::File(PathBuf::from(path)),
        limits,
        allow_http: AllowList::parse(allow).expect("allow list"),
        credentials: None,
    }
}

pub async fn load(runtime: &PluginRuntime, name: &str, path: &str) -> Plugin {
    load_with(runtime, name, path, Limits::default(), &[]).await
}

pub async fn load_with(
    runtime: &PluginRuntime,
    name: &str,
    path: &str,
    limits: Limits,
    allow: &[&str],
) -> Plugin {
    match runtime.load(spec(name, path, limits, allow)).await {
        Ok(p) => p,
        Err(e) => panic!("loading {name}: {e}"),
    }
}

pub fn ctx(resource_type: &str, resource: &str, operation: Operation) -> CallContext {
    CallContext {
        stack: "test-stack".into(),
        resource: resource.into(),
        resource_type: resource_type.into(),
        operation,
        attempt: 1,
        idempotency_key: format!("test-stack/{resource}/{}/1", operation.as_str()),
        deadline_ms: 0,
    }
}

/// Shorthand for the bytes of a bundled plugin, to load it as in-memory source.
pub fn bytes_of(path: &str) -> Arc<[u8]> {
    std::fs::read(path).expect("plugin built").into()
}
