//! `never`: gives up at once, whatever failed. For resource types whose calls must not be
//! repeated, or to turn retries off for a rule. Takes no parameters.

use kiln_plugin_sdk::prelude::*;
use kiln_plugin_sdk::{Decision, Failure, Policy};

struct Never;

impl Policy for Never {
    fn validate(params: &Value) -> Result<(), String> {
        match params {
            Value::Null => Ok(()),
            Value::Object(m) if m.is_empty() => Ok(()),
            other => Err(format!("the never policy takes no parameters, got {other}")),
        }
    }

    fn decide(_: &Value, failure: &Failure) -> Decision {
        Decision::GiveUp(format!(
            "the never policy does not retry ({})",
            failure.error.kind()
        ))
    }
}

kiln_plugin_sdk::export_policy!(Never);
