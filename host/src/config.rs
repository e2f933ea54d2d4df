//! `kiln.toml`: every key has a default, and an unknown key is an error naming it.
//! This part holds what the plugin runtime needs; the engine's sections join it later.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::allow_list::AllowList;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub runtime: RuntimeConfig,
    /// `[limits]`: defaults for every plugin call.
    pub limits: Limits,
    /// `[plugins.NAME]`: a component file, or settings for a bundled plugin of that name.
    pub plugins: BTreeMap<String, PluginConfig>,
}

/// How the host runs plugins.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Where precompiled components are cached. Default: `$XDG_CACHE_HOME/kiln/components`
    /// (or `~/.cache/kiln/components`).
    pub cache_dir: Option<PathBuf>,
    /// Pooling instance allocator: `auto` (use it when the address space can be reserved, else
    /// fall back), `on` (fail if it cannot), `off`.
    pub pooling: Pooling,
    /// Plugin instances alive at once in this process (the pool's size).
    pub max_concurrent_calls: u32,
    /// Serve the plugins compiled into the binary (none, random-string, test-resource,
    /// http-resource, exponential-backoff).
    pub bundled_plugins: bool,
}

/// Limits of one plugin call; `[plugins.NAME]` may override them.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory a plugin instance may grow to.
    pub memory_mib: u64,
    /// CPU time one call may spend executing wasm (measured in 10 ms epochs).
    pub cpu_time_ms: u64,
    /// Wall-clock limit of one call, host calls (HTTP) included.
    pub call_timeout_ms: u64,
    /// Largest HTTP request or response body a plugin may send or receive.
    pub max_http_body_bytes: u64,
    /// Largest result (state + attributes + ids) a call may return.
    pub max_output_bytes: u64,
    /// Largest log message; longer ones are cut.
    pub max_log_bytes: u64,
    /// How much of a plugin's stderr is kept for error reports.
    pub max_stderr_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    Auto,
    On,
    Off,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Path to the `.wasm` component; relative paths are relative to the config file.
    /// Omit it to configure a bundled plugin of the same name.
    pub component: Option<PathBuf>,
    /// Origins the plugin may send HTTP requests to: `scheme://host[:port]`, `*.domain`, `:*`.
    #[serde(default)]
    pub allow_http: Vec<String>,
    /// Per-plugin overrides of `[limits]`.
    pub memory_mib: Option<u64>,
    pub cpu_time_ms: Option<u64>,
    pub call_timeout_ms: Option<u64>,
    pub max_http_body_bytes: Option<u64>,
    pub max_output_bytes: Option<u64>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            pooling: Pooling::Auto,
            max_concurrent_calls: 64,
            bundled_plugins: true,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_mib: 64,
            cpu_time_ms: 10_000,
            call_timeout_ms: 30_000,
            max_http_body_bytes: 4 << 20,
            max_output_bytes: 1 << 20,
            max_log_bytes: 8 << 10,
            max_stderr_bytes: 16 << 10,
        }
    }
}

impl RuntimeConfig {
    pub fn cache_dir(&self) -> PathBuf {
        if let Some(dir) = &self.cache_dir {
            return dir.clone();
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from(".kiln"));
        base.join("kiln").join("components")
    }
}

impl PluginConfig {
    /// The effective limits: the plugin's overrides on top of the runtime's.
    pub fn limits(&self, base: &Limits) -> Limits {
        Limits {
            memory_mib: self.memory_mib.unwrap_or(base.memory_mib),
            cpu_time_ms: self.cpu_time_ms.unwrap_or(base.cpu_time_ms),
            call_timeout_ms: self.call_timeout_ms.unwrap_or(base.call_timeout_ms),
            max_http_body_bytes: self.max_http_body_bytes.unwrap_or(base.max_http_body_bytes),
            max_output_bytes: self.max_output_bytes.unwrap_or(base.max_output_bytes),
            ..base.clone()
        }
    }
}

/// A config error names the file and, where it can, the line and key.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        let mut config = Self::parse(&text, &path.display().to_string())?;
        // Component paths are relative to the file that names them.
        let base = path.parent().unwrap_or(Path::new("."));
        for plugin in config.plugins.values_mut() {
            if let Some(c) = &mut plugin.component
                && c.is_relative()
            {
                *c = base.join(&*c);
            }
        }
        Ok(config)
    }

    /// Parses config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let err = |message: String| ConfigError {
            path: origin.to_string(),
            message,
        };
        let config: Config =
            toml::from_str(text).map_err(|e| err(e.to_string().trim_end().to_string()))?;
        config.check().map_err(err)?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        let l = &self.limits;
        for (key, value) in [
            ("limits.memory_mib", l.memory_mib),
            ("limits.cpu_time_ms", l.cpu_time_ms),
            ("limits.call_timeout_ms", l.call_timeout_ms),
            (
                "runtime.max_concurrent_calls",
                self.runtime.max_concurrent_calls as u64,
            ),
        ] {
            if value == 0 {
                return Err(format!("{key} must be greater than 0"));
            }
        }
        for (name, plugin) in &self.plugins {
            AllowList::parse(&plugin.allow_http)
                .map_err(|e| format!("plugins.{name}.allow_http: {e}"))?;
            for (key, value) in [
                ("memory_mib", plugin.memory_mib),
                ("cpu_time_ms", plugin.cpu_time_ms),
                ("call_timeout_ms", plugin.call_timeout_ms),
            ] {
                if value == Some(0) {
                    return Err(format!("plugins.{name}.{key} must be greater than 0"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_file() {
        let c = Config::parse("", "kiln.toml").unwrap();
        assert_eq!(c.limits.memory_mib, 64);
        assert!(c.runtime.bundled_plugins);
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err =
            Config::parse("[limits]\nmemory_mib = 32\nmemroy = 1\n", "x/kiln.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("x/kiln.toml"), "{msg}");
        assert!(msg.contains("memroy") && msg.contains("line 3"), "{msg}");
        let err = Config::parse(
            "[plugins.web]\ncomponent = \"a.wasm\"\nallowed = []\n",
            "k.toml",
        )
        .unwrap_err();
        assert!(err.to_string().contains("allowed"), "{err}");
    }

    #[test]
    fn bad_allow_rule_names_the_plugin() {
        let err =
            Config::parse("[plugins.web]\nallow_http = [\"ftp://x\"]\n", "k.toml").unwrap_err();
        assert!(err.to_string().contains("plugins.web.allow_http"), "{err}");
    }

    #[test]
    fn plugin_overrides_limits() {
        let c = Config::parse("[plugins.web]\nmemory_mib = 8\n", "k.toml").unwrap();
        let l = c.plugins["web"].limits(&c.limits);
        assert_eq!((l.memory_mib, l.cpu_time_ms), (8, 10_000));
    }
}
