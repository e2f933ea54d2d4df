//! Building the results of provider calls from `serde_json` values.
//!
//! The WIT carries state and attributes as JSON text; these helpers serialize for you.

use serde_json::{Value, json};

use crate::error::fatal;
use crate::types::PluginError;
use crate::{CheckReport, Current, Done, Drift, Outcome, Pending, UpdateOutcome};

/// A finished operation: the object's physical id, the opaque state the host stores for later
/// calls, and the attribute values (a JSON object).
pub fn done(physical_id: impl Into<String>, state: Value, attributes: Value) -> Outcome {
    Outcome::Done(Done {
        physical_id: physical_id.into(),
        state: state.to_string(),
        attributes: attributes.to_string(),
    })
}

/// A finished `delete`: empty physical id, state and attributes.
pub fn deleted() -> Outcome {
    done("", json!({}), json!({}))
}

/// An operation still running: the host calls `poll` with `state` after `poll_after_ms`.
/// Return this instead of sleeping: a call that outlives its deadline is aborted.
pub fn pending(state: Value, poll_after_ms: u64) -> Outcome {
    Outcome::Pending(Pending {
        state: state.to_string(),
        poll_after_ms,
    })
}

/// An update that cannot be applied in place: the host replaces the resource.
pub fn replace(reason: impl Into<String>) -> UpdateOutcome {
    UpdateOutcome::Replace(reason.into())
}

/// What `check` observed: whether the object exists, which properties drifted, and the
/// current attribute values (a JSON object).
pub fn report(exists: bool, drifted: Vec<Drift>, attributes: Value) -> CheckReport {
    CheckReport {
        exists,
        drifted,
        attributes: attributes.to_string(),
    }
}

/// One drifted property: its template value and its real value.
pub fn drift(property: impl Into<String>, expected: &Value, actual: &Value) -> Drift {
    Drift {
        property: property.into(),
        expected: expected.to_string(),
        actual: actual.to_string(),
    }
}

/// Parses JSON text the host handed back (state); garbage there is a `fatal` error.
pub fn parse_json(json: &str) -> Result<Value, PluginError> {
    serde_json::from_str(json).map_err(|e| fatal(format!("stored state is not valid JSON: {e}")))
}

/// `update` may finish like any other operation: `Ok(done(..).into())`.
impl From<Outcome> for UpdateOutcome {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Done(d) => UpdateOutcome::Done(d),
            Outcome::Pending(p) => UpdateOutcome::Pending(p),
        }
    }
}

impl Current {
    /// The stored state as a JSON value (`{}` when empty).
    pub fn state_value(&self) -> Result<Value, PluginError> {
        if self.state.trim().is_empty() {
            Ok(json!({}))
        } else {
            parse_json(&self.state)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_serialize_json() {
        let Outcome::Done(d) = done("id-1", json!({"a": 1}), json!({"value": "x"})) else {
            panic!("not done")
        };
        assert_eq!(
            (d.physical_id.as_str(), d.state.as_str()),
            ("id-1", r#"{"a":1}"#)
        );
        assert_eq!(d.attributes, r#"{"value":"x"}"#);
        let Outcome::Pending(p) = pending(json!({"op": "create"}), 500) else {
            panic!()
        };
        assert_eq!(p.poll_after_ms, 500);
        assert!(matches!(
            UpdateOutcome::from(deleted()),
            UpdateOutcome::Done(_)
        ));
        let d = drift("body", &json!("a"), &json!("b"));
        assert_eq!(
            (d.expected.as_str(), d.actual.as_str()),
            (r#""a""#, r#""b""#)
        );
        let c = Current {
            physical_id: "p".into(),
            state: String::new(),
        };
        assert_eq!(c.state_value().unwrap(), json!({}));
        assert_eq!(parse_json("{").unwrap_err().kind(), "fatal");
    }
}
