//! Kiln: an orchestration engine whose resource types and retry policies are sandboxed
//! WebAssembly components.

pub mod allow_list;
pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod duration;
pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod plugin_set;
pub mod retry;
pub mod runtime;
pub mod service;
pub mod store;
pub mod template;

/// Paths of the plugins built by `host/build.rs`, and the bytes of the bundled ones.
pub mod artifacts {
    include!(concat!(env!("OUT_DIR"), "/plugin_artifacts.rs"));
}
