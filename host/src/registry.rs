//! The plugins of one Kiln process: the bundled ones and those named in `kiln.toml`, loaded
//! into one runtime, with each resource type mapped to the plugin that serves it.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, bail};

use crate::allow_list::AllowList;
use crate::artifacts::BUNDLED;
use crate::config::{Config, PluginConfig};
use crate::runtime::{Plugin, PluginRuntime, PluginSpec, Source, TypeSchema, World};

pub struct PluginSet {
    runtime: PluginRuntime,
    plugins: BTreeMap<String, Plugin>,
    /// Resource type name -> (plugin name, index into that plugin's types).
    types: BTreeMap<String, (String, usize)>,
}

impl PluginSet {
    /// Loads every plugin the config names (and the bundled ones unless disabled).
    pub async fn load(config: &Config) -> anyhow::Result<Self> {
        let specs = specs(config)?;
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
        Ok(Self {
            runtime,
            plugins,
            types,
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
    let mut specs = Vec::new();
    let default = PluginConfig::default();
    let bundled = |name: &str| BUNDLED.iter().find(|(n, _, _)| *n == name);
    for (name, pc) in &config.plugins {
        if pc.component.is_none() && (bundled(name).is_none() || !config.runtime.bundled_plugins) {
            let names: Vec<&str> = BUNDLED.iter().map(|(n, _, _)| *n).collect();
            bail!(
                "plugins.{name}: no `component` file given, and there is no bundled plugin called '{name}' \
                 (bundled: {})",
                names.join(", ")
            );
        }
    }
    if config.runtime.bundled_plugins {
        for (name, _world, bytes) in BUNDLED {
            let pc = config.plugins.get(*name).unwrap_or(&default);
            if pc.component.is_some() {
                continue; // replaced by a file of the same name
            }
            specs.push(spec(
                config,
                name,
                pc,
                Source::Bytes {
                    origin: format!("bundled:{name}"),
                    bytes: Arc::from(*bytes),
                },
            )?);
        }
    }
    for (name, pc) in &config.plugins {
        if let Some(path) = &pc.component {
            specs.push(spec(config, name, pc, Source::File(path.clone()))?);
        }
    }
    Ok(specs)
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
    })
}
