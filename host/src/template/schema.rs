//! Resource types as validation sees them: a catalog of the plugins' schemas, and the checks
//! of a resource's properties against its type (names, required, types, constraints,
//! defaults), used both statically and when properties are evaluated later.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::constraints::Constraint;
use super::expr::Expr;
use super::functions::{kind, text};
use super::parameters::boolean;
use crate::plugin_set::PluginSet;
use crate::runtime::{PropertyType, TypeSchema};

/// Where resource types come from.
pub trait TypeCatalog {
    fn lookup(&self, type_name: &str) -> Option<&TypeSchema>;
}

impl TypeCatalog for PluginSet {
    fn lookup(&self, type_name: &str) -> Option<&TypeSchema> {
        self.for_type(type_name).map(|(_, schema)| schema)
    }
}

impl TypeCatalog for BTreeMap<String, TypeSchema> {
    fn lookup(&self, type_name: &str) -> Option<&TypeSchema> {
        self.get(type_name)
    }
}

/// A type's schema, kept in the validated stack so that later evaluation checks against the
/// schema the stack was validated with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceSchema {
    pub type_name: String,
    pub open_properties: bool,
    pub properties: BTreeMap<String, PropertySpec>,
    pub attributes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PropertySpec {
    #[serde(rename = "type")]
    pub kind: Kind,
    pub required: bool,
    pub default: Option<Value>,
    pub constraints: Vec<Constraint>,
    /// Whether a change can be applied in place (the plugin's `update`); any other change
    /// replaces the resource. Absent in stacks stored before it was recorded: false.
    #[serde(default)]
    pub update_allowed: bool,
    /// Can never change after create, not even by replacement.
    #[serde(default)]
    pub immutable: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    String,
    Number,
    Integer,
    Boolean,
    List,
    Map,
    Any,
}

impl From<&TypeSchema> for ResourceSchema {
    fn from(t: &TypeSchema) -> Self {
        let kind = |p: PropertyType| match p {
            PropertyType::String => Kind::String,
            PropertyType::Number => Kind::Number,
            PropertyType::Integer => Kind::Integer,
            PropertyType::Boolean => Kind::Boolean,
            PropertyType::List => Kind::List,
            PropertyType::Map => Kind::Map,
            PropertyType::Any => Kind::Any,
        };
        ResourceSchema {
            type_name: t.type_name.clone(),
            open_properties: t.open_properties,
            properties: t
                .properties
                .iter()
                .map(|p| {
                    (
                        p.name.clone(),
                        PropertySpec {
                            kind: kind(p.type_),
                            required: p.required,
                            default: p
                                .default
                                .as_deref()
                                .and_then(|d| serde_json::from_str(d).ok()),
                            constraints: p.constraints.iter().map(Constraint::from).collect(),
                            update_allowed: p.update_allowed,
                            immutable: p.immutable,
                        },
                    )
                })
                .collect(),
            attributes: t.attributes.iter().map(|a| a.name.clone()).collect(),
        }
    }
}

/// A problem with one property (None: with the properties as a whole).
pub(crate) type Problem = (Option<String>, String);

impl ResourceSchema {
    /// Checks what is known before any resource exists: every literal property, unknown
    /// names, and required ones (a property computed from a resource counts as present).
    pub(crate) fn check_static(&self, properties: &Expr) -> Vec<Problem> {
        match properties {
            Expr::Value(v) => self.complete(v).err().unwrap_or_default(),
            Expr::Map(map) => {
                let mut problems = Vec::new();
                for (name, e) in map {
                    match e {
                        Expr::Value(v) => problems.extend(self.check_one(name, v).err()),
                        _ => problems.extend(self.unknown(name)),
                    }
                }
                problems.extend(self.missing(|name| {
                    map.get(name)
                        .is_some_and(|e| e.as_value() != Some(&Value::Null))
                }));
                problems
            }
            // The whole map comes from a function of resources: checked when evaluated.
            Expr::Call(_) => Vec::new(),
            Expr::List(_) => vec![(None, "expected a mapping of properties, got a list".into())],
        }
    }

    /// The properties the plugin gets: converted, checked, with defaults filled in. A null
    /// property counts as not set (as in Heat, where `if` may yield null to unset one).
    pub(crate) fn complete(&self, properties: &Value) -> Result<Value, Vec<Problem>> {
        let given = match properties {
            Value::Object(m) => m,
            Value::Null => &Map::new(),
            v => {
                return Err(vec![(
                    None,
                    format!("expected a mapping of properties, got {}", kind(v)),
                )]);
            }
        };
        let mut problems = Vec::new();
        let mut out = Map::new();
        let set = given.iter().filter(|(_, v)| !v.is_null());
        for (name, v) in set.clone() {
            match self.check_one(name, v) {
                Ok(v) => {
                    out.insert(name.clone(), v);
                }
                Err(p) => problems.push(p),
            }
        }
        // A property given but refused is not also "missing".
        problems.extend(self.missing(|name| set.clone().any(|(n, _)| n == name)));
        for (name, spec) in &self.properties {
            if let (false, Some(d)) = (out.contains_key(name), &spec.default) {
                out.insert(name.clone(), d.clone());
            }
        }
        if problems.is_empty() {
            Ok(Value::Object(out))
        } else {
            Err(problems)
        }
    }

    fn check_one(&self, name: &str, value: &Value) -> Result<Value, Problem> {
        let Some(spec) = self.properties.get(name) else {
            return match self.unknown(name) {
                Some(p) => Err(p),
                None => Ok(value.clone()),
            };
        };
        let fail = |m: String| (Some(name.to_string()), m);
        let v = convert(spec.kind, value).map_err(fail)?;
        for c in &spec.constraints {
            c.check(&v).map_err(fail)?;
        }
        Ok(v)
    }

    fn unknown(&self, name: &str) -> Option<Problem> {
        if self.open_properties || self.properties.contains_key(name) {
            return None;
        }
        let known: Vec<&str> = self.properties.keys().map(String::as_str).collect();
        Some((
            Some(name.to_string()),
            format!(
                "unknown property of {} (it has: {})",
                self.type_name,
                known.join(", ")
            ),
        ))
    }

    fn missing(&self, present: impl Fn(&str) -> bool) -> Vec<Problem> {
        self.properties
            .iter()
            .filter(|(name, spec)| spec.required && spec.default.is_none() && !present(name))
            .map(|(name, _)| {
                (
                    Some(name.clone()),
                    "required property is missing".to_string(),
                )
            })
            .collect()
    }
}

/// Converts a value to a property type, as leniently as Heat: numeric strings for numbers,
/// numbers and booleans for strings, Heat's boolean words for booleans.
fn convert(k: Kind, v: &Value) -> Result<Value, String> {
    let fail = || Err(format!("expected {}, got {} {}", article(k), kind(v), v));
    match (k, v) {
        (Kind::Any, _)
        | (Kind::String, Value::String(_))
        | (Kind::List, Value::Array(_))
        | (Kind::Map, Value::Object(_)) => Ok(v.clone()),
        (Kind::String, Value::Number(_) | Value::Bool(_)) => Ok(Value::String(text(v))),
        (Kind::Number, Value::Number(_)) => Ok(v.clone()),
        (Kind::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(v.clone()),
        (Kind::Integer, Value::Number(n)) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 => Ok(Value::from(f as i64)),
            _ => fail(),
        },
        (Kind::Number, Value::String(s)) => match s.trim().parse::<i64>() {
            Ok(i) => Ok(Value::from(i)),
            Err(_) => s
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .map_or_else(fail, Ok),
        },
        (Kind::Integer, Value::String(s)) => {
            s.trim().parse::<i64>().map(Value::from).or_else(|_| fail())
        }
        (Kind::Boolean, Value::Bool(_)) => Ok(v.clone()),
        (Kind::Boolean, Value::String(_) | Value::Number(_)) => {
            boolean(&text(v)).map(Value::Bool).map_or_else(fail, Ok)
        }
        _ => fail(),
    }
}

fn article(k: Kind) -> &'static str {
    match k {
        Kind::String => "a string",
        Kind::Number => "a number",
        Kind::Integer => "an integer",
        Kind::Boolean => "a boolean",
        Kind::List => "a list",
        Kind::Map => "a map",
        Kind::Any => "anything",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> ResourceSchema {
        let spec = |kind, required, default: Option<Value>, constraints| PropertySpec {
            kind,
            required,
            default,
            constraints,
            update_allowed: false,
            immutable: false,
        };
        ResourceSchema {
            type_name: "T".into(),
            open_properties: false,
            properties: BTreeMap::from([
                (
                    "count".into(),
                    spec(
                        Kind::Integer,
                        false,
                        Some(json!(1)),
                        vec![Constraint::Range {
                            min: Some(1.0),
                            max: Some(9.0),
                        }],
                    ),
                ),
                ("name".into(), spec(Kind::String, true, None, vec![])),
                ("on".into(), spec(Kind::Boolean, false, None, vec![])),
            ]),
            attributes: vec!["out".into()],
        }
    }

    #[test]
    fn stacks_stored_before_update_allowed_still_load() {
        let old = json!({"type": "string", "required": false, "default": null, "constraints": []});
        let spec: PropertySpec = serde_json::from_value(old).unwrap();
        assert!(!spec.update_allowed);
    }

    #[test]
    fn converts_fills_defaults_and_checks() {
        let s = schema();
        assert_eq!(
            s.complete(&json!({"name": 5, "on": "yes"})).unwrap(),
            json!({"name": "5", "on": true, "count": 1})
        );
        assert_eq!(
            s.complete(&json!({"name": "x", "count": "3"})).unwrap(),
            json!({"name": "x", "count": 3})
        );
        let problems = s
            .complete(&json!({"count": 12, "colour": "red", "on": [1]}))
            .unwrap_err();
        assert_eq!(
            problems,
            vec![
                (
                    Some("colour".into()),
                    "unknown property of T (it has: count, name, on)".into()
                ),
                (Some("count".into()), "12 is out of range [1, 9]".into()),
                (
                    Some("on".into()),
                    "expected a boolean, got a list [1]".into()
                ),
                (Some("name".into()), "required property is missing".into()),
            ]
        );
    }

    #[test]
    fn a_required_property_given_but_refused_is_not_also_missing() {
        let problems = schema().complete(&json!({"name": [1, 2]})).unwrap_err();
        assert_eq!(
            problems,
            vec![(
                Some("name".into()),
                "expected a string, got a list [1,2]".into()
            )]
        );
    }

    #[test]
    fn static_check_skips_values_from_resources() {
        let s = schema();
        let call = Expr::Call(Box::new(super::super::expr::Call {
            function: super::super::functions::Function::GetResource,
            args: Expr::Value(json!("other")),
            at: super::super::expr::At {
                line: 1,
                col: 1,
                path: "p".into(),
            },
        }));
        let props = Expr::Map(BTreeMap::from([
            ("name".into(), call),
            ("count".into(), Expr::Value(json!("x"))),
        ]));
        assert_eq!(
            s.check_static(&props),
            vec![(
                Some("count".into()),
                "expected an integer, got a string \"x\"".into()
            )]
        );
    }
}
