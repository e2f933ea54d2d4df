//! The one error shape of every stack operation, whoever asks: the REST API sends it as its
//! JSON body (`{"error": {...}}`) with the HTTP status its code implies, and the CLI prints
//! its message and exits with the code's exit status, whether it ran the operation itself or
//! read the error back from a server.

use serde::{Deserialize, Serialize};

use crate::store::StoreError;
use crate::template::TemplateError;

/// A failed operation: a stable `code` for programs, a `message` for people, and where the
/// problem is when it is in the caller's input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: String,
    pub message: String,
    /// Boxed: errors travel in every `Result`, and most have no location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Box<Location>>,
    /// Every problem of a template that did not validate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<TemplateError>,
    /// For `action_in_progress`: the action that holds the stack, and since when (as the
    /// fields `action` and `since`).
    #[serde(default, flatten)]
    pub held: Option<Box<Held>>,
    /// For `rate_limited` and `busy`: when to try again (also the `Retry-After` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Held {
    pub action: String,
    pub since: String,
}

/// Where in the caller's input the problem is: a template file's line, or a request body's
/// field (`path` as `template.text`, with the body's line and column).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Location {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// The stable codes, with their HTTP status (the CLI maps codes to its exit statuses).
pub const CODES: &[(&str, u16)] = &[
    ("invalid_template", 400),
    ("invalid_body", 400),
    ("invalid_query", 400),
    ("ambiguous", 400),
    ("unauthorized", 401),
    ("forbidden", 403),
    ("not_found", 404),
    ("no_route", 404),
    ("method_not_allowed", 405),
    ("stack_exists", 409),
    ("action_in_progress", 409),
    ("nothing_to_cancel", 409),
    ("payload_too_large", 413),
    ("unsupported_media_type", 415),
    ("rate_limited", 429),
    ("internal", 500),
    ("not_ready", 503),
    ("unreachable", 503),
    ("busy", 503),
];

impl ApiError {
    pub fn new(code: &str, message: impl std::fmt::Display) -> Self {
        debug_assert!(CODES.iter().any(|(c, _)| *c == code), "unknown code {code}");
        Self {
            code: code.to_string(),
            message: message.to_string(),
            location: None,
            errors: Vec::new(),
            held: None,
            retry_after_secs: None,
        }
    }

    /// An error the caller may retry after `secs` seconds.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn with_location(mut self, location: Location) -> Self {
        self.location = Some(Box::new(location));
        self
    }

    /// A template (with its environments and parameters) that did not validate: the message
    /// lists every error as `kiln validate` does, and the first one's place is the location.
    pub fn invalid_template(file: &str, errors: Vec<TemplateError>) -> Self {
        let mut lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let s = if errors.len() == 1 { "" } else { "s" };
        lines.push(format!("{} error{s} in {file}", errors.len()));
        let location = errors.first().map(|e| {
            Box::new(Location {
                file: Some(e.file.clone()),
                line: Some(e.line),
                column: Some(e.column),
                path: (!e.path.is_empty()).then(|| e.path.clone()),
            })
        });
        Self {
            location,
            errors,
            ..Self::new("invalid_template", lines.join("\n"))
        }
    }

    pub fn not_found(message: impl std::fmt::Display) -> Self {
        Self::new("not_found", message)
    }

    pub fn forbidden(message: impl std::fmt::Display) -> Self {
        Self::new("forbidden", message)
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new("internal", message)
    }

    /// The HTTP status of this error's code.
    pub fn status(&self) -> u16 {
        CODES
            .iter()
            .find(|(c, _)| *c == self.code)
            .map_or(500, |(_, s)| *s)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::StackNotFound(_) => Self::not_found(e),
            StoreError::StackExists(_) => Self::new("stack_exists", e),
            StoreError::Ambiguous { .. } => Self::new("ambiguous", e),
            StoreError::ActionInProgress {
                ref action,
                ref since,
                ..
            } => Self {
                held: Some(Box::new(Held {
                    action: action.to_string(),
                    since: since.clone(),
                })),
                ..Self::new("action_in_progress", &e)
            },
            StoreError::NothingToCancel(_) => Self::new("nothing_to_cancel", e),
            StoreError::Unreachable(_) => Self::new("unreachable", e),
            other => {
                tracing::error!("store error: {other}");
                Self::internal(other)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_status() {
        for (code, status) in CODES {
            assert_eq!(ApiError::new(code, "x").status(), *status);
        }
        let e: ApiError = StoreError::StackNotFound("web".into()).into();
        assert_eq!((e.code.as_str(), e.status()), ("not_found", 404));
    }

    #[test]
    fn action_in_progress_names_the_action_and_round_trips() {
        let e: ApiError = StoreError::ActionInProgress {
            stack: "web".into(),
            action: crate::model::Action::Update,
            since: "2026-12-01 10:00:00".into(),
            holder: "engine-1".into(),
        }
        .into();
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!((e.status(), json["action"].as_str()), (409, Some("UPDATE")));
        let back: ApiError = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
        let plain: ApiError =
            serde_json::from_str(r#"{"code":"not_found","message":"x"}"#).unwrap();
        assert_eq!(plain.held, None);
    }

    #[test]
    fn a_template_error_is_located_at_its_first_problem() {
        let err = |line| TemplateError {
            file: "t.yaml".into(),
            line,
            column: 3,
            path: "resources.a".into(),
            message: "bad".into(),
        };
        let e = ApiError::invalid_template("t.yaml", vec![err(4), err(9)]);
        assert_eq!(e.location.as_ref().unwrap().line, Some(4));
        assert!(e.message.ends_with("2 errors in t.yaml"), "{}", e.message);
    }
}
