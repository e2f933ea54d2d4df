//! Value constraints shared by template parameters and plugin property schemas: `range`,
//! `length`, `allowed_values`, `allowed_pattern`.

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::runtime;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Constraint {
    Range { min: Option<f64>, max: Option<f64> },
    Length { min: Option<f64>, max: Option<f64> },
    AllowedValues(Vec<Value>),
    AllowedPattern(String),
}

impl Constraint {
    /// Checks one value; the message says what was expected. A list is checked item by item
    /// for `allowed_values` and `allowed_pattern` (as Heat does for comma_delimited_list).
    pub fn check(&self, value: &Value) -> Result<(), String> {
        match self {
            Constraint::Range { min, max } => {
                let Some(n) = value.as_f64() else {
                    return Ok(());
                };
                if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
                    return Err(format!("{n} is out of range {}", bounds(*min, *max)));
                }
            }
            Constraint::Length { min, max } => {
                let len = match value {
                    Value::String(s) => s.chars().count(),
                    Value::Array(a) => a.len(),
                    Value::Object(o) => o.len(),
                    _ => return Ok(()),
                } as f64;
                if min.is_some_and(|m| len < m) || max.is_some_and(|m| len > m) {
                    return Err(format!(
                        "length {len} is out of range {}",
                        bounds(*min, *max)
                    ));
                }
            }
            Constraint::AllowedValues(allowed) => {
                for v in items(value) {
                    if !allowed.iter().any(|a| same(a, v)) {
                        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
                        return Err(format!(
                            "{v} is not one of the allowed values: {}",
                            list.join(", ")
                        ));
                    }
                }
            }
            Constraint::AllowedPattern(pattern) => {
                let re =
                    whole(pattern).map_err(|e| format!("bad allowed_pattern {pattern:?}: {e}"))?;
                for v in items(value) {
                    if let Some(s) = v.as_str()
                        && !re.is_match(s)
                    {
                        return Err(format!("{s:?} does not match the pattern {pattern:?}"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A regex that must match the whole string, as Heat's `allowed_pattern`.
pub fn whole(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

fn items(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(a) => a.iter().collect(),
        v => vec![v],
    }
}

/// Numbers compare by value (2 == 2.0); everything else as JSON.
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn bounds(min: Option<f64>, max: Option<f64>) -> String {
    match (min, max) {
        (Some(a), Some(b)) => format!("[{a}, {b}]"),
        (Some(a), None) => format!(">= {a}"),
        (None, Some(b)) => format!("<= {b}"),
        (None, None) => "(unbounded)".into(),
    }
}

impl From<&runtime::Constraint> for Constraint {
    fn from(c: &runtime::Constraint) -> Self {
        match c {
            runtime::Constraint::Range(b) => Constraint::Range {
                min: b.min,
                max: b.max,
            },
            runtime::Constraint::Length(b) => Constraint::Length {
                min: b.min,
                max: b.max,
            },
            // Plugins send JSON text; one that is not JSON is taken as a plain string.
            runtime::Constraint::AllowedValues(v) => Constraint::AllowedValues(
                v.iter()
                    .map(|t| serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.clone())))
                    .collect(),
            ),
            runtime::Constraint::AllowedPattern(p) => Constraint::AllowedPattern(p.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn range_and_length() {
        let r = Constraint::Range {
            min: Some(1.0),
            max: Some(10.0),
        };
        assert!(r.check(&json!(5)).is_ok());
        assert_eq!(
            r.check(&json!(11)).unwrap_err(),
            "11 is out of range [1, 10]"
        );
        let l = Constraint::Length {
            min: Some(2.0),
            max: None,
        };
        assert!(l.check(&json!("ab")).is_ok());
        assert_eq!(
            l.check(&json!([1])).unwrap_err(),
            "length 1 is out of range >= 2"
        );
    }

    #[test]
    fn allowed_values_and_pattern() {
        let a = Constraint::AllowedValues(vec![json!("a"), json!(2)]);
        assert!(a.check(&json!(2.0)).is_ok());
        assert!(a.check(&json!(["a", 2])).is_ok());
        assert_eq!(
            a.check(&json!("b")).unwrap_err(),
            "\"b\" is not one of the allowed values: \"a\", 2"
        );
        let p = Constraint::AllowedPattern("[a-z]+".into());
        assert!(p.check(&json!("abc")).is_ok());
        assert_eq!(
            p.check(&json!("abc1")).unwrap_err(),
            "\"abc1\" does not match the pattern \"[a-z]+\""
        );
    }
}
