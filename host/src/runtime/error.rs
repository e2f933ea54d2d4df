//! Errors of loading and calling plugins. A plugin's own error (its `plugin-error` variant) is
//! kept apart from a fault (trap, limit, bad output), which the plugin did not choose to return.

use std::fmt;

use super::bindings::resource::kiln::plugin::types::PluginError;

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("plugin '{plugin}': cannot read {path}: {message}")]
    Read {
        plugin: String,
        path: String,
        message: String,
    },
    #[error("plugin '{plugin}' ({origin}) is not a WebAssembly component: {message}")]
    NotAComponent {
        plugin: String,
        origin: String,
        message: String,
    },
    #[error(
        "plugin '{plugin}' ({origin}) was built for kiln:plugin@{found}, but this host speaks \
         kiln:plugin@{supported} and the two are incompatible; rebuild the plugin against this \
         release's wit/"
    )]
    IncompatibleContract {
        plugin: String,
        origin: String,
        found: String,
        supported: String,
    },
    #[error("plugin '{plugin}' ({origin}) does not fit the contract: {message}")]
    Contract {
        plugin: String,
        origin: String,
        message: String,
    },
    #[error("plugin '{plugin}' ({origin}): {message}")]
    Compile {
        plugin: String,
        origin: String,
        message: String,
    },
    #[error("plugin '{plugin}' ({origin}): describe failed: {source}")]
    Describe {
        plugin: String,
        origin: String,
        #[source]
        source: Box<CallError>,
    },
}

/// Why a plugin call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The plugin returned one of its errors (the kind a retry policy reasons about), and the
    /// origins (`scheme://host:port`) the call sent HTTP requests to.
    #[error("{}", describe_plugin_error(.0))]
    Plugin(PluginError, Vec<String>),
    /// The call broke down: trap, limit, timeout, bad output.
    #[error(transparent)]
    Fault(#[from] Fault),
}

/// A call that broke down, with what the operator needs to see why.
#[derive(Debug, thiserror::Error)]
pub struct Fault {
    pub plugin: String,
    pub function: &'static str,
    pub cause: FaultCause,
    /// The tail of what the plugin wrote to stderr/stdout during the call.
    pub stderr: String,
    /// The origins the call sent HTTP requests to before it broke down.
    pub origins: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FaultCause {
    /// The plugin trapped (a Rust panic shows as `unreachable`; its message is in stderr).
    Trap(String),
    /// The plugin tried to grow its memory past the limit.
    OutOfMemory { limit: u64, requested: u64 },
    /// The plugin computed for longer than its CPU time limit.
    CpuTime { limit_ms: u64 },
    /// The whole call (host calls included) ran past its deadline.
    Timeout { limit_ms: u64 },
    /// The plugin returned something the contract does not allow.
    BadOutput(String),
    /// The call is not one this plugin's world exports.
    WrongWorld(String),
    /// Instantiation or a host function failed.
    Host(String),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "plugin '{}' failed in {}: ", self.plugin, self.function)?;
        match &self.cause {
            FaultCause::Trap(t) => write!(f, "trapped: {t}")?,
            FaultCause::OutOfMemory { limit, requested } => write!(
                f,
                "out of memory: tried to grow linear memory to {} MiB, over the limit of {} MiB",
                requested.div_ceil(1 << 20),
                limit >> 20
            )?,
            FaultCause::CpuTime { limit_ms } => {
                write!(f, "CPU time limit of {limit_ms} ms exceeded")?
            }
            FaultCause::Timeout { limit_ms } => write!(f, "timed out after {limit_ms} ms")?,
            FaultCause::BadOutput(m) => write!(f, "broke the contract: {m}")?,
            FaultCause::WrongWorld(m) => write!(f, "{m}")?,
            FaultCause::Host(m) => write!(f, "{m}")?,
        }
        if !self.stderr.is_empty() {
            write!(f, "\n--- plugin stderr (tail) ---\n{}", self.stderr)?;
        }
        Ok(())
    }
}

impl CallError {
    /// The origins (`scheme://host:port`) the failed call sent HTTP requests to.
    pub fn origins(&self) -> &[String] {
        match self {
            CallError::Plugin(_, origins) => origins,
            CallError::Fault(f) => &f.origins,
        }
    }
}

impl PluginError {
    /// The error kind as a stable word: transient, throttled, unauthorized, ...
    pub fn kind(&self) -> &'static str {
        match self {
            PluginError::Transient(_) => "transient",
            PluginError::Throttled(_) => "throttled",
            PluginError::Unauthorized(_) => "unauthorized",
            PluginError::Conflict(_) => "conflict",
            PluginError::NotFound(_) => "not-found",
            PluginError::Invalid(_) => "invalid",
            PluginError::Fatal(_) => "fatal",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            PluginError::Throttled(t) => &t.message,
            PluginError::Transient(i)
            | PluginError::Unauthorized(i)
            | PluginError::Conflict(i)
            | PluginError::NotFound(i)
            | PluginError::Invalid(i)
            | PluginError::Fatal(i) => &i.message,
        }
    }

    pub(crate) fn message_mut(&mut self) -> &mut String {
        match self {
            PluginError::Throttled(t) => &mut t.message,
            PluginError::Transient(i)
            | PluginError::Unauthorized(i)
            | PluginError::Conflict(i)
            | PluginError::NotFound(i)
            | PluginError::Invalid(i)
            | PluginError::Fatal(i) => &mut i.message,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            PluginError::Throttled(t) => t.status,
            PluginError::Transient(i)
            | PluginError::Unauthorized(i)
            | PluginError::Conflict(i)
            | PluginError::NotFound(i)
            | PluginError::Invalid(i)
            | PluginError::Fatal(i) => i.status,
        }
    }
}

fn describe_plugin_error(e: &PluginError) -> String {
    let mut s = e.kind().to_string();
    if let Some(code) = e.status() {
        s += &format!(" ({code})");
    }
    s += ": ";
    s += e.message();
    if let PluginError::Throttled(t) = e
        && let Some(ms) = t.retry_after_ms
    {
        s += &format!(" (retry after {ms} ms)");
    }
    s
}
