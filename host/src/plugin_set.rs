//! The plugins of one Kiln process: the bundled ones and those named in `kiln.toml`, loaded
//! into one runtime, with each resource type mapped to the plugin that serves it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};

use crate::allow_list::AllowList;
use crate::artifacts::BUNDLED;
use crate::config::{Config, ConfigError, PluginConfig, ReplaceOrder};
use crate::credentials::Credentials;
use crate::runtime::{Plugin, PluginRuntime, PluginSpec, Source, TypeSchema, World};

pub struct PluginSet {
    runtime: PluginRuntime,
    plugins: BTreeMap<String, Plugin>,
    /// Resource type name -> (plugin name, index into that plugin's types).
    types: BTreeMap<String, (String, usize)>,
    /// Plugins whose objects an update replaces delete-first.
    delete_first: BTreeSet<String>,
}

impl PluginSet {
    /// Loads every plugin the config names (and the bundled ones unless disabled).
    pub async fn load(config: &Config) -> anyhow::Result<Self> {
        let mut specs = specs(config)?;
        // Secrets are read before any plugin runs, so a missing token file fails the start.
        for spec in &mut specs {
            if let Some(c) = config
                .plugins
                .get(&spec.name)
                .and_then(|p| p.credentials.as_ref())
            {
                let at = format!("plugins.{}.credentials", spec.name);
                let creds = Credentials::load(c, &at)
                    .await
                    .map_err(anyhow::Error::msg)?;
                spec.credentials = Some(Arc::new(creds));
            }
        }
        let max_memory = specs
            .iter()
            .map(|s| s.limits.memory_mib)
            .max()
            .unwrap_or(config.limits.memory_mib);
        let runtime = PluginRuntime::new(&config.runtime, max_memory)?;
        // Compile concurrently: on first start each component takes a while.
        let mut tasks = tokio::task::JoinSet::new();
        for spec in specs {
            let runtime = runtime.clone();
            tasks.spawn(async move { runtime.load(spec).await });
        }
        let mut plugins = BTreeMap::new();
        while let Some(loaded) = tasks.join_next().await {
            let plugin = loaded.context("plugin load task")??;
            plugins.insert(plugin.name().to_string(), plugin);
        }
        let mut types: BTreeMap<String, (String, usize)> = BTreeMap::new();
        for (name, plugin) in &plugins {
            for (i, t) in plugin
                .info()
                .map(|i| i.types.as_slice())
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                if let Some((other, _)) = types.insert(t.type_name.clone(), (name.clone(), i)) {
                    bail!(
                        "resource type {} is served by two plugins: '{other}' and '{name}'",
                        t.type_name
                    );
                }
            }
        }
        let delete_first = config
            .plugins
            .iter()
            .filter(|(_, p)| p.replace == ReplaceOrder::DeleteFirst)
            .map(|(name, _)| name.clone())
            .collect();
        Ok(Self {
            runtime,
            plugins,
            types,
            delete_first,
        })
    }

    pub fn runtime(&self) -> &PluginRuntime {
        &self.runtime
    }

    pub fn plugin(&self, name: &str) -> Option<&Plugin> {
        self.plugins.get(name)
    }

    pub fn plugins(&self) -> impl Iterator<Item = &Plugin> {
        self.plugins.values()
    }

    /// The plugin serving a resource type, and the type's schema.
    pub fn for_type(&self, type_name: &str) -> Option<(&Plugin, &TypeSchema)> {
        let (plugin, i) = self.types.get(type_name)?;
        let plugin = &self.plugins[plugin];
        Some((plugin, &plugin.info()?.types[*i]))
    }

    /// How an update replaces objects of `type_name` (`[plugins.NAME] replace`).
    pub fn replace_order(&self, type_name: &str) -> ReplaceOrder {
        match self.types.get(type_name) {
            Some((plugin, _)) if self.delete_first.contains(plugin) => ReplaceOrder::DeleteFirst,
            _ => ReplaceOrder::CreateFirst,
        }
    }

    /// Every served type, sorted by name.
    pub fn types(&self) -> impl Iterator<Item = (&str, &Plugin)> {
        self.types
            .iter()
            .map(|(t, (p, _))| (t.as_str(), &self.plugins[p]))
    }

    pub fn policies(&self) -> impl Iterator<Item = &Plugin> {
        self.plugins
            .values()
            .filter(|p| p.world() == World::RetryPolicy)
    }
}

/// Builds the load list: bundled plugins (with any `[plugins.NAME]` settings) and configured
/// components. Names are checked here so a typo is reported against the config key.
pub fn specs(config: &Config) -> anyhow::Result<Vec<PluginSpec>> {
    let default = PluginConfig::default();
    // Where each plugin comes from; later sources replace earlier ones of the same name:
    // bundled, then the plugins directory, then explicit `component` files.
    let mut sources: BTreeMap<String, Source> = BTreeMap::new();
    if config.runtime.bundled_plugins {
        for (name, _world, bytes) in BUNDLED {
            let source = Source::Bytes {
                origin: format!("bundled:{name}"),
                bytes: Arc::from(*bytes),
            };
            sources.insert(name.to_string(), source);
        }
    }
    if let Some(dir) = &config.runtime.plugins_dir {
        for path in wasm_files(dir)? {
            let name = path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .replace('_', "-");
            sources.insert(name, Source::File(path));
        }
    }
    for (name, pc) in &config.plugins {
        match &pc.component {
            Some(path) => {
                sources.insert(name.clone(), Source::File(path.clone()));
            }
            None if !sources.contains_key(name) => {
                return Err(ConfigError {
                    path: format!("plugins.{name}"),
                    message: format!(
                        "no `component` file given, and no bundled plugin or file in \
                         runtime.plugins_dir is called '{name}' (known: {})",
                        sources.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                }
                .into());
            }
            None => {}
        }
    }
    sources
        .into_iter()
        .map(|(name, source)| {
            spec(
                config,
                &name,
                config.plugins.get(&name).unwrap_or(&default),
                source,
            )
        })
        .collect()
}

/// The `.wasm` files of a plugins directory, sorted.
fn wasm_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| ConfigError {
        path: "runtime.plugins_dir".into(),
        message: format!("{}: {e}", dir.display()),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

fn spec(
    config: &Config,
    name: &str,
    pc: &PluginConfig,
    source: Source,
) -> anyhow::Result<PluginSpec> {
    Ok(PluginSpec {
        name: name.to_string(),
        source,
        limits: pc.limits(&config.limits),
        allow_http: AllowList::parse(&pc.allow_http)
            .map_err(|e| anyhow::anyhow!("plugins.{name}.allow_http: {e}"))?,
        credentials: None,
    })
}
