//! Hidden parameters' values kept out of what Kiln says. A hidden value flows into properties
//! like any other, so a message about a property (a type or constraint it breaks, a plugin's
//! error, a preview's old and new value) can carry it. Every such message passes through
//! [`Secrets`] before anyone sees it: each hidden value, wherever it appears in the text
//! (inside a longer string too), becomes `******`. Outputs and attributes derived from a
//! hidden value are shown, as Heat shows them: a template that outputs a secret asks for it.
//!
//! Values shorter than [`MIN_LEN`] characters are not masked: masking `1` or `on` would
//! garble every line number and word of a message while hiding nothing worth a secret.

use serde_json::Value;

use super::error::{EvalError, TemplateError};
use super::parameters::Parameter;

/// What a hidden value is replaced with (as Heat shows hidden parameters).
pub const MASK: &str = "******";
/// The shortest value masked.
pub const MIN_LEN: usize = 4;

/// The hidden values of one stack, longest first (so that a value containing another is
/// masked whole).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// The values of the hidden parameters: strings, numbers, and every string or number
    /// inside a list or JSON value.
    pub fn of(parameters: &[Parameter]) -> Self {
        let mut values = Vec::new();
        for p in parameters.iter().filter(|p| p.hidden) {
            leaves(&p.value, &mut values);
        }
        values.retain(|v| v.chars().count() >= MIN_LEN);
        Self(longest_first(values))
    }

    /// These and `other`'s.
    pub fn with(&self, other: &Secrets) -> Secrets {
        Self(longest_first(
            self.0.iter().chain(&other.0).cloned().collect(),
        ))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `text` with every hidden value masked.
    pub fn text(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.0 {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), MASK);
            }
        }
        out
    }

    /// `value` with every string (and key) that holds a hidden value masked.
    pub fn value(&self, value: &Value) -> Value {
        match value {
            _ if self.is_empty() => value.clone(),
            Value::String(s) => Value::String(self.text(s)),
            Value::Number(n) if self.0.contains(&n.to_string()) => Value::String(MASK.into()),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.value(v)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (self.text(k), self.value(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    pub fn error(&self, mut e: TemplateError) -> TemplateError {
        e.message = self.text(&e.message);
        e.path = self.text(&e.path);
        e
    }

    pub fn eval_error(&self, e: EvalError) -> EvalError {
        match e {
            EvalError::Invalid(errors) => {
                EvalError::Invalid(errors.into_iter().map(|e| self.error(e)).collect())
            }
            other => other,
        }
    }
}

fn longest_first(mut values: Vec<String>) -> Vec<String> {
    values.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    values.dedup();
    values
}

fn leaves(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|v| leaves(v, out)),
        Value::Object(map) => map.values().for_each(|v| leaves(v, out)),
        Value::Bool(_) | Value::Null => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::template::ParamType;

    fn param(name: &str, hidden: bool, value: Value) -> Parameter {
        Parameter {
            name: name.into(),
            kind: ParamType::String,
            label: String::new(),
            description: String::new(),
            hidden,
            immutable: false,
            value,
        }
    }

    #[test]
    fn masks_hidden_values_wherever_they_appear_and_nothing_else() {
        let secrets = Secrets::of(&[
            param("pw", true, json!("s3cret-pw")),
            param("pin", true, json!(123456)),
            param("short", true, json!("ab")),
            param("list", true, json!(["tok-one", {"k": "tok-two"}])),
            param("shown", false, json!("visible-value")),
        ]);
        assert_eq!(
            secrets.text("\"s3cret-pwXYZ\" is not one of ab, 123456, tok-two; visible-value"),
            "\"******XYZ\" is not one of ab, ******, ******; visible-value"
        );
        assert_eq!(
            secrets.value(&json!({"h": {"X-Pw": "s3cret-pw"}, "n": 123456, "tok-one": 1})),
            json!({"h": {"X-Pw": "******"}, "n": "******", "******": 1})
        );
        assert!(Secrets::of(&[param("shown", false, json!("visible"))]).is_empty());
    }

    #[test]
    fn a_longer_value_is_masked_whole_before_one_it_contains() {
        let secrets = Secrets::of(&[
            param("a", true, json!("abcd")),
            param("b", true, json!("abcdefgh")),
        ]);
        assert_eq!(secrets.text("x abcdefgh y abcd"), "x ****** y ******");
        let old = Secrets::of(&[param("c", true, json!("abcdefghij"))]);
        let both = Secrets::of(&[param("a", true, json!("abcd"))]).with(&old);
        assert_eq!(both.text("abcdefghij abcd"), "****** ******");
    }
}
