//! [`Props`]: typed access to a resource's properties (the JSON object the host passes).
//!
//! Every getter fails with an `invalid` error that names the property, so a plugin can use `?`
//! and the user sees which property is wrong. A property that is absent or `null` counts as not
//! set: the `opt_*` getters return `None`, the `*_or` getters the given default, the plain
//! getters an error saying the property is required.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::invalid;
use crate::types::PluginError;

/// A resource's properties: a JSON object with typed getters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Props(Map<String, Value>);

impl Props {
    /// Parses the `json` properties of a call; anything but a JSON object is `invalid`.
    pub fn parse(json: &str) -> Result<Self, PluginError> {
        let value: Value = serde_json::from_str(json)
            .map_err(|e| invalid(format!("properties are not valid JSON: {e}")))?;
        Self::from_value(value)
    }

    /// Wraps a JSON value, which must be an object (`null` gives empty properties).
    pub fn from_value(value: Value) -> Result<Self, PluginError> {
        match value {
            Value::Object(map) => Ok(Props(map)),
            Value::Null => Ok(Props::default()),
            other => Err(invalid(format!(
                "properties must be a JSON object, got {other}"
            ))),
        }
    }

    /// The raw value of a property; `None` when absent or `null`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    /// Whether the property is set (present and not `null`).
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// All properties as a JSON object.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// All properties as a JSON value.
    pub fn to_value(&self) -> Value {
        Value::Object(self.0.clone())
    }

    fn typed<'a, T>(
        &'a self,
        name: &str,
        expected: &str,
        extract: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<Option<T>, PluginError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => extract(v)
                .map(Some)
                .ok_or_else(|| invalid(format!("property '{name}' must be {expected}, got {v}"))),
        }
    }

    fn required<T>(name: &str, value: Option<T>) -> Result<T, PluginError> {
        value.ok_or_else(|| invalid(format!("property '{name}' is required")))
    }

    /// A string property, if set.
    pub fn opt_string(&self, name: &str) -> Result<Option<&str>, PluginError> {
        self.typed(name, "a string", Value::as_str)
    }

    /// A required string property.
    pub fn string(&self, name: &str) -> Result<&str, PluginError> {
        Self::required(name, self.opt_string(name)?)
    }

    /// A string property, or `default` when not set.
    pub fn string_or<'a>(&'a self, name: &str, default: &'a str) -> Result<&'a str, PluginError> {
        Ok(self.opt_string(name)?.unwrap_or(default))
    }

    /// An integer property, if set. A float with no fractional part (`3.0`) is accepted.
    pub fn opt_integer(&self, name: &str) -> Result<Option<i64>, PluginError> {
        self.typed(name, "an integer", |v| {
            v.as_i64().or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map(|f| f as i64)
            })
        })
    }

    /// A required integer property.
    pub fn integer(&self, name: &str) -> Result<i64, PluginError> {
        Self::required(name, self.opt_integer(name)?)
    }

    /// An integer property, or `default` when not set.
    pub fn integer_or(&self, name: &str, default: i64) -> Result<i64, PluginError> {
        Ok(self.opt_integer(name)?.unwrap_or(default))
    }

    /// A number property (integer or float), if set.
    pub fn opt_number(&self, name: &str) -> Result<Option<f64>, PluginError> {
        self.typed(name, "a number", Value::as_f64)
    }

    /// A required number property.
    pub fn number(&self, name: &str) -> Result<f64, PluginError> {
        Self::required(name, self.opt_number(name)?)
    }

    /// A number property, or `default` when not set.
    pub fn number_or(&self, name: &str, default: f64) -> Result<f64, PluginError> {
        Ok(self.opt_number(name)?.unwrap_or(default))
    }

    /// A boolean property, if set.
    pub fn opt_boolean(&self, name: &str) -> Result<Option<bool>, PluginError> {
        self.typed(name, "a boolean", Value::as_bool)
    }

    /// A required boolean property.
    pub fn boolean(&self, name: &str) -> Result<bool, PluginError> {
        Self::required(name, self.opt_boolean(name)?)
    }

    /// A boolean property, or `default` when not set.
    pub fn boolean_or(&self, name: &str, default: bool) -> Result<bool, PluginError> {
        Ok(self.opt_boolean(name)?.unwrap_or(default))
    }

    /// A list property, if set.
    pub fn opt_list(&self, name: &str) -> Result<Option<&Vec<Value>>, PluginError> {
        self.typed(name, "a list", Value::as_array)
    }

    /// A list property; an empty list when not set.
    pub fn list(&self, name: &str) -> Result<&[Value], PluginError> {
        Ok(self.opt_list(name)?.map(Vec::as_slice).unwrap_or(&[]))
    }

    /// A map (JSON object) property, if set.
    pub fn opt_map(&self, name: &str) -> Result<Option<&Map<String, Value>>, PluginError> {
        self.typed(name, "a map", Value::as_object)
    }

    /// A map property; an empty map when not set.
    pub fn map(&self, name: &str) -> Result<Map<String, Value>, PluginError> {
        Ok(self.opt_map(name)?.cloned().unwrap_or_default())
    }

    /// A property deserialized into any serde type, if set, e.g.
    /// `props.opt_parse::<BTreeMap<String, String>>("headers")`.
    pub fn opt_parse<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, PluginError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => T::deserialize(v)
                .map(Some)
                .map_err(|e| invalid(format!("property '{name}' is malformed: {e}"))),
        }
    }

    /// A required property deserialized into any serde type.
    pub fn parse_as<T: DeserializeOwned>(&self, name: &str) -> Result<T, PluginError> {
        Self::required(name, self.opt_parse(name)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn props(v: Value) -> Props {
        Props::from_value(v).unwrap()
    }

    #[test]
    fn typed_getters() {
        let p = props(
            json!({"s": "x", "i": 3, "f": 2.0, "n": 1.5, "b": true, "l": [1], "m": {"a": 1}, "z": null}),
        );
        assert_eq!(p.string("s").unwrap(), "x");
        assert_eq!(p.integer("i").unwrap(), 3);
        assert_eq!(p.integer("f").unwrap(), 2);
        assert_eq!(p.number("n").unwrap(), 1.5);
        assert_eq!(p.number("i").unwrap(), 3.0);
        assert!(p.boolean("b").unwrap());
        assert_eq!(p.list("l").unwrap(), &[json!(1)]);
        assert_eq!(p.map("m").unwrap()["a"], json!(1));
        assert_eq!(p.opt_string("z").unwrap(), None);
        assert_eq!(p.string_or("missing", "d").unwrap(), "d");
        assert_eq!(p.integer_or("missing", 7).unwrap(), 7);
        assert!(p.list("missing").unwrap().is_empty());
        let m: std::collections::BTreeMap<String, i64> = p.parse_as("m").unwrap();
        assert_eq!(m["a"], 1);
    }

    #[test]
    fn errors_name_the_property() {
        let p = props(json!({"s": 1, "n": 1.5}));
        let e = p.string("s").unwrap_err();
        assert_eq!(e.kind(), "invalid");
        assert!(
            e.message().contains("'s'") && e.message().contains("a string"),
            "{}",
            e.message()
        );
        assert!(p.integer("n").unwrap_err().message().contains("'n'"));
        assert_eq!(
            p.string("url").unwrap_err().message(),
            "property 'url' is required"
        );
        assert!(
            p.parse_as::<Vec<String>>("s")
                .unwrap_err()
                .message()
                .contains("'s'")
        );
    }

    #[test]
    fn parse_rejects_non_objects() {
        assert_eq!(Props::parse("[]").unwrap_err().kind(), "invalid");
        assert_eq!(Props::parse("{").unwrap_err().kind(), "invalid");
        assert_eq!(Props::parse("null").unwrap(), Props::default());
    }
}
