//! The one wiring: from a `Config`, the store, the plugins, the retry policies, the engine and
//! the service, built the same way for every CLI command, `serve`, `api` and `engine`, the
//! tests and the benches, so that nothing runs with other rules than the configured ones.
//! Its errors are its own; the CLI maps them to exit statuses.

use std::sync::Arc;

use crate::config::{Config, ConfigError};
use crate::engine::Engine;
use crate::plugin_set::PluginSet;
use crate::retry::RetryPolicies;
use crate::service::Service;
use crate::store::{Store, StoreError};

/// Why the application could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot open the database {url}: {source}")]
    Database { url: String, source: StoreError },
    /// A plugin could not be loaded (or its configuration is wrong: see `is_bad_input`).
    #[error("{0:#}")]
    Plugins(anyhow::Error),
    /// A retry policy's configuration is wrong.
    #[error("{0}")]
    RetryPolicies(ConfigError),
}

impl AppError {
    /// The user's input (the config file, the database URL) is at fault, not the machine.
    pub fn is_bad_input(&self) -> bool {
        match self {
            AppError::Database { source, .. } => matches!(source, StoreError::BadUrl(_)),
            AppError::Plugins(e) => e.is::<ConfigError>(),
            AppError::RetryPolicies(_) => true,
        }
    }
}

/// What the process needs of the plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plugins {
    /// Every configured plugin and retry policy (to validate templates and work jobs).
    Load,
    /// None: only reading stacks, so nothing is loaded (or compiled).
    Skip,
}

/// A built application: its configuration, engine and service.
#[derive(Clone)]
pub struct App {
    pub config: Config,
    pub engine: Engine,
    pub service: Service,
}

impl App {
    pub async fn build(config: &Config, plugins: Plugins) -> Result<Self, AppError> {
        let store = open_store(config).await?;
        Self::on_store(config, store, plugins).await
    }

    /// On a store already open (a test's database, say).
    pub async fn on_store(
        config: &Config,
        store: Store,
        plugins: Plugins,
    ) -> Result<Self, AppError> {
        let config = config.clone();
        let engine = match plugins {
            Plugins::Load => {
                let set = PluginSet::load(&config).await.map_err(AppError::Plugins)?;
                let policies = RetryPolicies::load(&config.retry, &set)
                    .await
                    .map_err(AppError::RetryPolicies)?;
                Engine::new(store, Arc::new(set), Some(policies), config.engine.clone())
            }
            Plugins::Skip => {
                let mut bare = config.clone();
                bare.runtime.bundled_plugins = false;
                bare.runtime.plugins_dir = None;
                bare.plugins.clear();
                let set = PluginSet::load(&bare).await.map_err(AppError::Plugins)?;
                Engine::new(store, Arc::new(set), None, config.engine.clone())
            }
        };
        let service = Service::new(
            engine.clone(),
            config.api.events_page_size,
            config.templates,
        );
        Ok(Self {
            config,
            engine,
            service,
        })
    }
}

/// The configured database, migrated.
async fn open_store(config: &Config) -> Result<Store, AppError> {
    let url = config.database.url();
    Store::open(&url)
        .await
        .map_err(|source| AppError::Database { url, source })
}
