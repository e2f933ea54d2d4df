//! What plugin calls return to the rest of Kiln, with the plugin's JSON text parsed and
//! checked: a plugin's output is untrusted input like any other.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::bindings::resource::exports::kiln::plugin::provider as wit;

/// A finished operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Done {
    pub physical_id: String,
    pub state: Value,
    pub attributes: Map<String, Value>,
}

/// An operation still running: poll again after `poll_after_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub state: Value,
    pub poll_after_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    Done(Done),
    Pending(Pending),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum UpdateOutcome {
    Done(Done),
    Pending(Pending),
    /// The plugin cannot apply the change in place.
    Replace {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftItem {
    pub property: String,
    pub expected: Value,
    pub actual: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    pub exists: bool,
    pub drifted: Vec<DriftItem>,
    pub attributes: Map<String, Value>,
}

/// Checks a plugin's output: valid JSON, attributes an object, total size within `max` bytes.
pub(crate) struct OutputCheck {
    max: usize,
    used: usize,
}

impl OutputCheck {
    pub(crate) fn new(max: u64) -> Self {
        Self {
            max: max as usize,
            used: 0,
        }
    }

    fn count(&mut self, what: &str, len: usize) -> Result<(), String> {
        self.used += len;
        if self.used > self.max {
            return Err(format!(
                "output over the limit of {} bytes (at {what})",
                self.max
            ));
        }
        Ok(())
    }

    fn json(&mut self, what: &str, text: &str) -> Result<Value, String> {
        self.count(what, text.len())?;
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(text).map_err(|e| format!("{what} is not valid JSON: {e}"))
    }

    fn object(&mut self, what: &str, text: &str) -> Result<Map<String, Value>, String> {
        match self.json(what, text)? {
            Value::Null => Ok(Map::new()),
            Value::Object(m) => Ok(m),
            other => Err(format!(
                "{what} must be a JSON object, got {}",
                kind(&other)
            )),
        }
    }

    pub(crate) fn done(&mut self, d: wit::Done) -> Result<Done, String> {
        self.count("physical-id", d.physical_id.len())?;
        Ok(Done {
            state: self.json("state", &d.state)?,
            attributes: self.object("attributes", &d.attributes)?,
            physical_id: d.physical_id,
        })
    }

    pub(crate) fn pending(&mut self, p: wit::Pending) -> Result<Pending, String> {
        Ok(Pending {
            state: self.json("pending state", &p.state)?,
            poll_after_ms: p.poll_after_ms,
        })
    }

    pub(crate) fn outcome(&mut self, o: wit::Outcome) -> Result<Outcome, String> {
        Ok(match o {
            wit::Outcome::Done(d) => Outcome::Done(self.done(d)?),
            wit::Outcome::Pending(p) => Outcome::Pending(self.pending(p)?),
        })
    }

    pub(crate) fn update_outcome(
        &mut self,
        o: wit::UpdateOutcome,
    ) -> Result<UpdateOutcome, String> {
        Ok(match o {
            wit::UpdateOutcome::Done(d) => UpdateOutcome::Done(self.done(d)?),
            wit::UpdateOutcome::Pending(p) => UpdateOutcome::Pending(self.pending(p)?),
            wit::UpdateOutcome::Replace(reason) => {
                self.count("replace reason", reason.len())?;
                UpdateOutcome::Replace { reason }
            }
        })
    }

    pub(crate) fn check_report(&mut self, r: wit::CheckReport) -> Result<CheckReport, String> {
        let mut drifted = Vec::with_capacity(r.drifted.len());
        for d in r.drifted {
            self.count("drift property", d.property.len())?;
            drifted.push(DriftItem {
                expected: self.json("drift expected", &d.expected)?,
                actual: self.json("drift actual", &d.actual)?,
                property: d.property,
            });
        }
        Ok(CheckReport {
            exists: r.exists,
            drifted,
            attributes: self.object("attributes", &r.attributes)?,
        })
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl super::Operation {
    /// The operation as a stable word: create, update, delete, check.
    pub fn as_str(self) -> &'static str {
        match self {
            super::Operation::Create => "create",
            super::Operation::Update => "update",
            super::Operation::Delete => "delete",
            super::Operation::Check => "check",
        }
    }
}
