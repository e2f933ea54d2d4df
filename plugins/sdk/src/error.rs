//! Constructors and accessors for [`PluginError`], the error every plugin call returns.
//!
//! The kind is what retry policies reason about: pick the one that says whether retrying can
//! help (see the variants' docs in the WIT).

use crate::types::{ErrorInfo, PluginError, ThrottledInfo};

fn info(message: impl Into<String>) -> ErrorInfo {
    ErrorInfo {
        message: message.into(),
        status: None,
    }
}

/// Temporary failure (5xx, timeout, connection reset): retrying may succeed.
pub fn transient(message: impl Into<String>) -> PluginError {
    PluginError::Transient(info(message))
}

/// Rate limited; `retry_after_ms` is how long the server asked to wait, if it said.
pub fn throttled(message: impl Into<String>, retry_after_ms: Option<u64>) -> PluginError {
    PluginError::Throttled(ThrottledInfo {
        message: message.into(),
        status: None,
        retry_after_ms,
    })
}

/// Credentials were refused (401).
pub fn unauthorized(message: impl Into<String>) -> PluginError {
    PluginError::Unauthorized(info(message))
}

/// The request conflicts with the current state of the target (409).
pub fn conflict(message: impl Into<String>) -> PluginError {
    PluginError::Conflict(info(message))
}

/// The object does not exist (404).
pub fn not_found(message: impl Into<String>) -> PluginError {
    PluginError::NotFound(info(message))
}

/// The request can never succeed as made (bad properties, other 4xx). Never retried.
pub fn invalid(message: impl Into<String>) -> PluginError {
    PluginError::Invalid(info(message))
}

/// Anything else that retrying will not fix. Never retried.
pub fn fatal(message: impl Into<String>) -> PluginError {
    PluginError::Fatal(info(message))
}

impl PluginError {
    /// Sets the protocol status code behind the error, e.g. `transient("..").with_status(503)`.
    pub fn with_status(mut self, status: u16) -> Self {
        match &mut self {
            PluginError::Throttled(t) => t.status = Some(status),
            PluginError::Transient(i)
            | PluginError::Unauthorized(i)
            | PluginError::Conflict(i)
            | PluginError::NotFound(i)
            | PluginError::Invalid(i)
            | PluginError::Fatal(i) => i.status = Some(status),
        }
        self
    }

    /// Prefixes the message with where it happened, e.g. `.context("POST http://api/items")`.
    pub fn context(mut self, context: &str) -> Self {
        match &mut self {
            PluginError::Throttled(t) => t.message = format!("{context}: {}", t.message),
            PluginError::Transient(i)
            | PluginError::Unauthorized(i)
            | PluginError::Conflict(i)
            | PluginError::NotFound(i)
            | PluginError::Invalid(i)
            | PluginError::Fatal(i) => i.message = format!("{context}: {}", i.message),
        }
        self
    }

    /// The kind as the WIT spells it: `transient`, `throttled`, `unauthorized`, `conflict`,
    /// `not-found`, `invalid` or `fatal`.
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

    /// The human-readable cause.
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

    /// The protocol status code, if any.
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

    /// The server's requested wait, for a `throttled` error.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            PluginError::Throttled(t) => t.retry_after_ms,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_see_what_constructors_set() {
        let e = throttled("slow down", Some(1500)).with_status(429);
        assert_eq!(e.kind(), "throttled");
        assert_eq!(e.message(), "slow down");
        assert_eq!(e.status(), Some(429));
        assert_eq!(e.retry_after_ms(), Some(1500));

        let e = not_found("gone").with_status(404);
        assert_eq!(
            (e.kind(), e.message(), e.status()),
            ("not-found", "gone", Some(404))
        );
        assert_eq!(e.retry_after_ms(), None);
        assert_eq!(fatal("x").status(), None);
        assert_eq!(
            conflict("taken").context("PUT /x").message(),
            "PUT /x: taken"
        );
    }
}
