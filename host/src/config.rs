//! `kiln.toml`: every key has a default, and an unknown key is an error naming it.
//! Longer than a file should be, on purpose: it is the config schema, every section and key
//! with its default and its check, which an operator reads in one place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::allow_list::AllowList;

/// The sections whose keys `KILN_<SECTION>__<KEY>` may set (the ones of plain keys; retry
/// rules and plugins are written in the file).
const ENV_SECTIONS: [&str; 7] = [
    "database",
    "engine",
    "runtime",
    "limits",
    "templates",
    "api",
    "log",
];

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub database: DatabaseConfig,
    pub engine: EngineConfig,
    pub runtime: RuntimeConfig,
    /// `[limits]`: defaults for every plugin call.
    pub limits: Limits,
    /// `[retry]`: named retry policies and the rules that choose them.
    pub retry: RetryConfig,
    /// `[plugins.NAME]`: a component file, or settings for a bundled plugin of that name.
    pub plugins: BTreeMap<String, PluginConfig>,
    /// `[api]`: the REST API and web view of `kiln api` / `kiln serve`.
    pub api: ApiConfig,
    /// `[log]`: what the process logs (to stderr) and how.
    pub log: LogConfig,
    /// `[templates]`: how large a template may be, and how many are validated at once.
    pub templates: TemplateLimits,
}

/// The REST API (`kiln api`, `kiln serve`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Where the API listens. Port 0 picks a free port (the address is printed at start).
    pub listen: std::net::SocketAddr,
    /// Largest request body (a template with its environments, as JSON); larger ones get 413.
    pub max_body_bytes: u64,
    /// Events per page of `GET /v1/stacks/{stack}/events` when the caller asks for none.
    pub events_page_size: u32,
    /// Bearer tokens, each bound to a project (`[[api.tokens]]`). With none (and no
    /// `token_file`) the API is open, as the admin of project `default`, and only a loopback
    /// `listen` address is allowed.
    pub tokens: Vec<TokenConfig>,
    /// A TOML file of more `[[tokens]]` (same keys), read at start; relative to this file.
    pub token_file: Option<PathBuf>,
    /// Requests per second each caller (each token; the one open caller) may make, on
    /// average; past it, 429 `rate_limited` with `Retry-After`. 0: no limit. `/healthz`,
    /// `/readyz`, `/metrics` and the web view's files are never limited.
    pub rate_limit_per_second: f64,
    /// Requests a caller may make at once above the rate (the bucket's size).
    pub rate_limit_burst: u32,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            // Heat's orchestration API port.
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8004)),
            max_body_bytes: 8 << 20,
            events_page_size: 100,
            tokens: Vec::new(),
            token_file: None,
            rate_limit_per_second: 0.0,
            rate_limit_burst: 100,
        }
    }
}

/// `[templates]`: how large a template may be, checked while it is read, so that a hostile one
/// (a few lines of nested YAML aliases, a list nested ten thousand deep, a file of many
/// megabytes) is refused in milliseconds and a few MB, before anything is built from it.
/// Heat's `max_template_size`, `max_resources_per_stack` and its YAML loader's limits are the
/// model; the defaults are far above what a real template needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TemplateLimits {
    /// Largest template or environment file, in bytes.
    pub max_bytes: u64,
    /// Most YAML nodes (scalars, lists, mappings) a file may have, aliases counted as what they
    /// copy.
    pub max_nodes: u64,
    /// Most nodes all of a file's aliases together may copy: anchors save typing in real
    /// templates; copying thousands of nodes is how a small file grows huge.
    pub max_alias_nodes: u64,
    /// Deepest nesting of lists and mappings.
    pub max_depth: u32,
    /// Most resources in a stack (groups' members counted), as Heat's
    /// `max_resources_per_stack`.
    pub max_resources: u64,
    /// Templates validated at once by one process; more wait for a turn (validation is CPU
    /// work that must not starve the rest of the process). 0: one per CPU.
    pub max_concurrent: u32,
}

impl Default for TemplateLimits {
    fn default() -> Self {
        Self {
            max_bytes: 4 << 20,
            max_nodes: 2_000_000,
            max_alias_nodes: 100_000,
            max_depth: 64,
            max_resources: 20_000,
            max_concurrent: 0,
        }
    }
}

impl TemplateLimits {
    /// Every limit must allow something (0 for `max_concurrent` means one per CPU).
    pub fn check(&self) -> Result<(), String> {
        for (key, value) in [
            ("templates.max_bytes", self.max_bytes),
            ("templates.max_nodes", self.max_nodes),
            ("templates.max_alias_nodes", self.max_alias_nodes),
            ("templates.max_depth", u64::from(self.max_depth)),
            ("templates.max_resources", self.max_resources),
        ] {
            if value == 0 {
                return Err(format!("{key} must be at least 1"));
            }
        }
        Ok(())
    }

    /// Validations one process runs at once.
    pub fn concurrency(&self) -> usize {
        match self.max_concurrent {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n as usize,
        }
    }
}

/// One API caller.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The secret itself; or `token_sha256`, its SHA-256 in hex, to keep it out of the file.
    pub token: Option<String>,
    pub token_sha256: Option<String>,
    /// The project whose stacks this caller sees and acts on.
    pub project: String,
    /// `member` (its project only) or `admin` (every project, and the engines).
    #[serde(default)]
    pub role: Role,
    /// Who this is, for the logs and events (default: `PROJECT/ROLE`).
    pub name: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Member,
    Admin,
}

impl TokenConfig {
    /// Exactly one of `token` and `token_sha256`, and a project name.
    pub fn check(&self, at: &str) -> Result<(), String> {
        match (&self.token, &self.token_sha256) {
            (Some(t), None) if t.len() >= 16 => {}
            (Some(_), None) => return Err(format!("{at}.token: at least 16 characters")),
            (None, Some(h)) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {}
            (None, Some(_)) => {
                return Err(format!(
                    "{at}.token_sha256: 64 hexadecimal digits (a SHA-256)"
                ));
            }
            _ => {
                return Err(format!(
                    "{at}: give exactly one of `token` and `token_sha256`"
                ));
            }
        }
        let valid = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
        if self.project.is_empty() || !self.project.chars().all(valid) {
            return Err(format!(
                "{at}.project: a name of letters, digits, '-', '_' and '.' is required"
            ));
        }
        Ok(())
    }
}

/// Logging, to stderr. `KILN_LOG` (a tracing filter such as `info,kiln=debug`) overrides
/// `level`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (for a person) or `json` (one object per line, for a log pipeline).
    pub format: LogFormat,
    /// A tracing filter: `warn`, `info`, `info,kiln::engine=debug`, ...
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "warn".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Where the store lives.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (the embedded default: `$XDG_DATA_HOME/kiln/kiln.db`, or
    /// `~/.local/share/kiln/kiln.db`) or `postgres://USER@HOST:PORT/DB`. `KILN_DATABASE_URL`
    /// overrides it.
    pub url: Option<String>,
}

impl DatabaseConfig {
    pub fn url(&self) -> String {
        if let Ok(url) = std::env::var("KILN_DATABASE_URL") {
            return url;
        }
        if let Some(url) = &self.url {
            return url.clone();
        }
        let base = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from(".kiln"));
        format!("sqlite://{}", base.join("kiln").join("kiln.db").display())
    }
}

/// Retry policies (`[retry.policies.NAME]`) and rules (`[[retry.rules]]`, first match wins;
/// no match uses the policy `default`, which is `exponential-backoff` with its own defaults
/// unless configured).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub policies: BTreeMap<String, PolicyConfig>,
    pub rules: Vec<RetryRule>,
    /// `[retry.budget]`: how many retries per plugin and target host may run in a burst, and
    /// how fast the allowance refills.
    pub budget: BudgetConfig,
}

/// A token bucket per plugin and target host (per engine process).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    pub capacity: f64,
    pub refill_per_second: f64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            capacity: 100.0,
            refill_per_second: 10.0,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The retry-policy plugin that decides (a bundled or configured plugin's name).
    pub component: String,
    /// The policy's parameters; the policy itself checks them at start (its `validate`).
    #[serde(default)]
    pub params: toml::Table,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryRule {
    /// Resource types it applies to (all when empty).
    #[serde(default)]
    pub types: Vec<String>,
    /// create, update, delete, check (all when empty).
    #[serde(default)]
    pub operations: Vec<String>,
    /// Error kinds: transient, throttled, unauthorized, conflict, not-found, invalid, fatal
    /// (all when empty).
    #[serde(default)]
    pub errors: Vec<String>,
    /// The policy to use.
    pub policy: String,
}

pub const ERROR_KINDS: &[&str] = &[
    "transient",
    "throttled",
    "unauthorized",
    "conflict",
    "not-found",
    "invalid",
    "fatal",
];
pub const OPERATIONS: &[&str] = &["create", "update", "delete", "check"];

/// How an engine process works through jobs, and how engines judge each other.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Jobs one engine process works on at once.
    pub workers: u32,
    /// Jobs of one stack this engine process runs at once (so one big stack cannot take every
    /// worker from the others).
    pub max_concurrent_per_stack: u32,
    /// How long a claimed job, an engine's registration and the leader lease last without a
    /// heartbeat (on the database's clock). After that the engine is dead: its jobs and locks
    /// are taken over, and another engine leads.
    pub lease_ms: u64,
    /// How often an engine renews its leases; at most half of `lease_ms`.
    pub heartbeat_ms: u64,
    /// How often an idle engine looks for due jobs when nothing wakes it (PostgreSQL wakes
    /// engines at once with LISTEN/NOTIFY; SQLite engines rely on this).
    pub poll_interval_ms: u64,
    /// How often the leader runs maintenance: rescuing jobs and locks of dead engines and
    /// repairing stalled traversals.
    pub maintenance_interval_ms: u64,
    /// On SIGTERM, how long running calls may take to finish before they are handed back.
    pub grace_ms: u64,
    /// How long the leader keeps deleted stacks' events and stopped or dead engines' rows.
    pub retention_days: u64,
    /// Where `kiln engine` serves `GET /metrics` (Prometheus text), e.g. `127.0.0.1:9464`;
    /// none by default. Port 0 picks a free port (the address is printed at start).
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl EngineConfig {
    /// How often leases are renewed: `heartbeat_ms`, but never so rarely that a lease could not
    /// survive one late heartbeat (engines built in code skip the config file's check).
    pub fn heartbeat(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.heartbeat_ms.min(self.lease_ms / 3).max(1))
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            workers: 16,
            max_concurrent_per_stack: 64,
            lease_ms: 10_000,
            heartbeat_ms: 2_000,
            poll_interval_ms: 200,
            maintenance_interval_ms: 2_000,
            grace_ms: 30_000,
            retention_days: 7,
            metrics_listen: None,
        }
    }
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
    /// http-resource, exponential-backoff, fixed-interval, never).
    pub bundled_plugins: bool,
    /// A directory whose `*.wasm` files are loaded as plugins, each named after its file
    /// (`my_plugin.wasm` is `my-plugin`; `[plugins.my-plugin]` configures it).
    pub plugins_dir: Option<PathBuf>,
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
    /// `[plugins.NAME.credentials]`: a secret the host adds to the plugin's HTTP requests and
    /// reads again after an `unauthorized` error (the plugin never sees it).
    pub credentials: Option<crate::credentials::CredentialsConfig>,
    /// How an update replaces this plugin's objects: `create-first` (the new object exists
    /// before the old one goes; the default) or `delete-first` (for objects that cannot exist
    /// twice, such as a fixed name or address).
    #[serde(default)]
    pub replace: ReplaceOrder,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplaceOrder {
    #[default]
    CreateFirst,
    DeleteFirst,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            pooling: Pooling::Auto,
            max_concurrent_calls: 64,
            bundled_plugins: true,
            plugins_dir: None,
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
        // Paths are relative to the file that names them.
        let base = path.parent().unwrap_or(Path::new("."));
        let paths = config.plugins.values_mut().flat_map(|p| {
            let token_file = p.credentials.as_mut().and_then(|c| c.token_file.as_mut());
            p.component.as_mut().into_iter().chain(token_file)
        });
        let others = config
            .runtime
            .plugins_dir
            .as_mut()
            .into_iter()
            .chain(config.api.token_file.as_mut());
        for p in paths.chain(others) {
            if p.is_relative() {
                *p = base.join(&*p);
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

    /// Applies `KILN_<SECTION>__<KEY>=value` overrides (e.g. `KILN_ENGINE__WORKERS=4`,
    /// `KILN_LIMITS__MEMORY_MIB=32`); values are TOML (`4`, `true`, `["a"]`) or plain strings.
    /// An unknown section or key is an error naming the variable.
    pub fn with_env(
        self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table = toml::Table::try_from(&self).expect("a config serialises");
        let mut applied = Vec::new();
        for (name, value) in vars {
            let Some(rest) = name.strip_prefix("KILN_") else {
                continue;
            };
            let Some((section, key)) = rest.split_once("__") else {
                continue;
            };
            let err = |message: String| ConfigError {
                path: format!("environment variable {name}"),
                message,
            };
            let section = section.to_ascii_lowercase();
            if !ENV_SECTIONS.contains(&section.as_str()) {
                return Err(err(format!(
                    "unknown section `{section}` ({})",
                    ENV_SECTIONS.join(", ")
                )));
            }
            let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(value.clone()));
            let entry = table
                .entry(section)
                .or_insert_with(|| toml::Value::Table(Default::default()));
            if let toml::Value::Table(t) = entry {
                t.insert(key.to_ascii_lowercase(), parsed);
            }
            applied.push(name);
        }
        if applied.is_empty() {
            return Ok(self);
        }
        let origin = format!("environment ({})", applied.join(", "));
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError {
                    path: origin.clone(),
                    message: e.to_string().trim_end().to_string(),
                })?;
        config.check().map_err(|message| ConfigError {
            path: origin,
            message,
        })?;
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
            ("engine.workers", self.engine.workers as u64),
            (
                "engine.max_concurrent_per_stack",
                self.engine.max_concurrent_per_stack as u64,
            ),
            ("engine.lease_ms", self.engine.lease_ms),
            ("engine.heartbeat_ms", self.engine.heartbeat_ms),
            ("engine.poll_interval_ms", self.engine.poll_interval_ms),
            (
                "engine.maintenance_interval_ms",
                self.engine.maintenance_interval_ms,
            ),
            ("api.max_body_bytes", self.api.max_body_bytes),
            ("api.events_page_size", self.api.events_page_size as u64),
        ] {
            if value == 0 {
                return Err(format!("{key} must be greater than 0"));
            }
        }
        self.templates.check()?;
        if !(self.api.rate_limit_per_second >= 0.0 && self.api.rate_limit_per_second.is_finite()) {
            return Err("api.rate_limit_per_second must be a number, 0 or more".into());
        }
        if self.api.rate_limit_burst == 0 {
            return Err("api.rate_limit_burst must be greater than 0".into());
        }
        if self.engine.heartbeat_ms * 2 > self.engine.lease_ms {
            return Err(format!(
                "engine.heartbeat_ms ({}) must be at most half of engine.lease_ms ({}): a lease \
                 must survive a late heartbeat",
                self.engine.heartbeat_ms, self.engine.lease_ms
            ));
        }
        for (i, t) in self.api.tokens.iter().enumerate() {
            t.check(&format!("api.tokens[{i}]"))?;
        }
        for (name, p) in &self.plugins {
            if let Some(c) = &p.credentials {
                c.check(&format!("plugins.{name}.credentials"))?;
            }
        }
        let b = &self.retry.budget;
        for (key, v) in [
            ("capacity", b.capacity),
            ("refill_per_second", b.refill_per_second),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!(
                    "retry.budget.{key} must be a number greater than 0"
                ));
            }
        }
        for (i, rule) in self.retry.rules.iter().enumerate() {
            let at = format!("retry.rules[{i}]");
            if rule.policy != "default" && !self.retry.policies.contains_key(&rule.policy) {
                let known: Vec<&str> = self.retry.policies.keys().map(String::as_str).collect();
                return Err(format!(
                    "{at}.policy: no policy named '{}' (defined: default{}{})",
                    rule.policy,
                    if known.is_empty() { "" } else { ", " },
                    known.join(", ")
                ));
            }
            if let Some(op) = rule
                .operations
                .iter()
                .find(|o| !OPERATIONS.contains(&o.as_str()))
            {
                return Err(format!(
                    "{at}.operations: unknown operation '{op}' ({})",
                    OPERATIONS.join(", ")
                ));
            }
            if let Some(e) = rule
                .errors
                .iter()
                .find(|e| !ERROR_KINDS.contains(&e.as_str()))
            {
                return Err(format!(
                    "{at}.errors: unknown error kind '{e}' ({})",
                    ERROR_KINDS.join(", ")
                ));
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
    fn environment_overrides_keys_and_rejects_unknown_ones() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let c = Config::default()
            .with_env(env(&[
                ("KILN_ENGINE__WORKERS", "3"),
                ("KILN_LIMITS__MEMORY_MIB", "32"),
                ("KILN_DATABASE__URL", "sqlite:///tmp/x.db"),
                ("KILN_TEMPLATES__MAX_RESOURCES", "50"),
                ("PATH", "/bin"),
            ]))
            .unwrap();
        assert_eq!((c.engine.workers, c.limits.memory_mib), (3, 32));
        assert_eq!(c.templates.max_resources, 50);
        assert_eq!(c.database.url.as_deref(), Some("sqlite:///tmp/x.db"));
        let err = Config::default()
            .with_env(env(&[("KILN_ENGINE__WORKRES", "3")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("KILN_ENGINE__WORKRES") && err.contains("workres"),
            "{err}"
        );
        let err = Config::default()
            .with_env(env(&[("KILN_ENGNE__WORKERS", "3")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("KILN_ENGNE__WORKERS"), "{err}");
        let err = Config::default()
            .with_env(env(&[("KILN_ENGINE__WORKERS", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("engine.workers"), "{err}");
    }

    #[test]
    fn retry_rules_name_known_policies_operations_and_kinds() {
        let ok = "[retry.policies.fast]\ncomponent = \"exponential-backoff\"\nparams = { initial_interval_ms = 10 }\n\
                  [[retry.rules]]\ntypes = [\"Kiln::HTTP::Resource\"]\nerrors = [\"throttled\"]\npolicy = \"fast\"\n";
        let c = Config::parse(ok, "k.toml").unwrap();
        assert_eq!(c.retry.rules[0].policy, "fast");
        assert_eq!(
            c.retry.policies["fast"].params["initial_interval_ms"].as_integer(),
            Some(10)
        );
        for (bad, named) in [
            (
                "[[retry.rules]]\npolicy = \"slow\"\n",
                "retry.rules[0].policy",
            ),
            (
                "[[retry.rules]]\npolicy = \"default\"\noperations = [\"make\"]\n",
                "retry.rules[0].operations",
            ),
            (
                "[[retry.rules]]\npolicy = \"default\"\nerrors = [\"flaky\"]\n",
                "retry.rules[0].errors",
            ),
            (
                "[retry.policies.x]\ncomponent = \"y\"\nparmas = {}\n",
                "parmas",
            ),
        ] {
            let err = Config::parse(bad, "k.toml").unwrap_err().to_string();
            assert!(err.contains(named), "{err}");
        }
    }

    #[test]
    fn plugin_overrides_limits() {
        let c = Config::parse("[plugins.web]\nmemory_mib = 8\n", "k.toml").unwrap();
        let l = c.plugins["web"].limits(&c.limits);
        assert_eq!((l.memory_mib, l.cpu_time_ms), (8, 10_000));
    }
}
