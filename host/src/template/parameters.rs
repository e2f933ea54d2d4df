//! The `parameters` section: declarations (type, default, constraints, ...) and the value each
//! parameter ends up with, from `-P`, environments or its default.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::constraints::{Constraint, whole};
use super::error::{Errors, TemplateError, error, join};
use super::functions::{kind, text};
use super::yaml::{Node, Pos, Yaml};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    String,
    Number,
    Boolean,
    Json,
    CommaDelimitedList,
}

impl ParamType {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "string" => ParamType::String,
            "number" => ParamType::Number,
            "boolean" => ParamType::Boolean,
            "json" => ParamType::Json,
            "comma_delimited_list" => ParamType::CommaDelimitedList,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Number => "number",
            ParamType::Boolean => "boolean",
            ParamType::Json => "json",
            ParamType::CommaDelimitedList => "comma_delimited_list",
        }
    }

    /// Converts a value to this type as Heat does: strings (from `-P` or environments) are
    /// parsed, numbers and booleans become strings where a string is wanted.
    pub fn convert(self, v: &Value) -> Result<Value, String> {
        let fail = || {
            Err(format!(
                "expected a {}, got {} {}",
                self.name(),
                kind(v),
                short(v)
            ))
        };
        match (self, v) {
            (ParamType::String, Value::String(_)) => Ok(v.clone()),
            (ParamType::String, Value::Number(_) | Value::Bool(_)) => Ok(Value::String(text(v))),
            (ParamType::Number, Value::Number(_)) => Ok(v.clone()),
            (ParamType::Number, Value::String(s)) => {
                let s = s.trim();
                match s.parse::<i64>() {
                    Ok(i) => Ok(Value::from(i)),
                    Err(_) => s
                        .parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map(Value::Number)
                        .map_or_else(fail, Ok),
                }
            }
            (ParamType::Boolean, Value::Bool(_)) => Ok(v.clone()),
            (ParamType::Boolean, Value::String(_) | Value::Number(_)) => {
                boolean(&text(v)).map(Value::Bool).map_or_else(fail, Ok)
            }
            (ParamType::CommaDelimitedList, Value::Array(items)) => Ok(Value::Array(
                items.iter().map(|i| Value::String(text(i))).collect(),
            )),
            (ParamType::CommaDelimitedList, Value::String(s)) if s.trim().is_empty() => {
                Ok(Value::Array(Vec::new()))
            }
            (ParamType::CommaDelimitedList, Value::String(s)) => Ok(Value::Array(
                s.split(',')
                    .map(|p| Value::String(p.trim().to_string()))
                    .collect(),
            )),
            (ParamType::CommaDelimitedList, Value::Number(_)) => {
                Ok(Value::Array(vec![Value::String(text(v))]))
            }
            (ParamType::Json, Value::Object(_) | Value::Array(_)) => Ok(v.clone()),
            (ParamType::Json, Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(j @ (Value::Object(_) | Value::Array(_))) => Ok(j),
                Ok(_) => Err("expected a json map or list".into()),
                Err(e) => Err(format!("not valid JSON: {e}")),
            },
            _ => fail(),
        }
    }
}

/// Heat's (oslo's strict) boolean strings.
pub(crate) fn boolean(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "on" | "1" => Some(true),
        "false" | "f" | "no" | "n" | "off" | "0" => Some(false),
        _ => None,
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!("{}...", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

/// A parameter with its final value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Parameter {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ParamType,
    pub label: String,
    pub description: String,
    /// Shown masked; the value is still stored, as Heat does.
    pub hidden: bool,
    pub immutable: bool,
    pub value: Value,
}

/// A declaration before it gets its value.
pub(crate) struct Declared {
    pub param: Parameter,
    pub pos: Pos,
    file: String,
    default: Option<Supplied>,
    constraints: Vec<(Constraint, Option<String>)>,
}

/// A value given for a parameter, and where it came from (for errors).
#[derive(Clone)]
pub(crate) struct Supplied {
    pub value: Value,
    pub file: String,
    pub pos: Pos,
    /// e.g. "-P", "parameter_defaults", "the default".
    pub source: &'static str,
}

const KEYS: [&str; 8] = [
    "type",
    "default",
    "hidden",
    "label",
    "description",
    "immutable",
    "constraints",
    "tags",
];
const CONSTRAINTS: [&str; 5] = [
    "range",
    "length",
    "allowed_values",
    "allowed_pattern",
    "custom_constraint",
];

/// Parses the `parameters` section.
pub(crate) fn declare(section: &Node, errors: &mut Errors) -> Vec<Declared> {
    let mut out = Vec::new();
    if !section.is_null() && !matches!(section.value, Yaml::Map(_)) {
        errors.at(
            section.pos,
            "parameters",
            format!("expected a mapping, got {}", section.kind()),
        );
    }
    for (key, def) in section.entries() {
        let path = join("parameters", &key.name);
        if !matches!(def.value, Yaml::Map(_)) {
            errors.at(
                def.pos,
                &path,
                format!("expected a mapping with a type, got {}", def.kind()),
            );
            continue;
        }
        for (k, _) in def.entries() {
            if !KEYS.contains(&k.name.as_str()) {
                errors.at(
                    k.pos,
                    &path,
                    format!("unknown key '{}' (known: {})", k.name, KEYS.join(", ")),
                );
            }
        }
        let kind = match def.get("type") {
            None => {
                errors.at(def.pos, &path, "type is missing");
                continue;
            }
            Some(t) => match t.as_str().and_then(ParamType::parse) {
                Some(k) => k,
                None => {
                    errors.at(
                        t.pos,
                        &join(&path, "type"),
                        format!("unknown type {} (types: string, number, boolean, json, comma_delimited_list)", t.to_json()),
                    );
                    continue;
                }
            },
        };
        let string = |name: &str, errors: &mut Errors| match def.get(name) {
            None => String::new(),
            Some(n) => n.as_str().map(str::to_string).unwrap_or_else(|| {
                errors.at(
                    n.pos,
                    &join(&path, name),
                    format!("expected a string, got {}", n.kind()),
                );
                String::new()
            }),
        };
        let flag = |name: &str, errors: &mut Errors| match def.get(name) {
            None => false,
            Some(n) => match n.value {
                Yaml::Bool(b) => b,
                _ => {
                    errors.at(
                        n.pos,
                        &join(&path, name),
                        format!("expected true or false, got {}", n.kind()),
                    );
                    false
                }
            },
        };
        let param = Parameter {
            name: key.name.clone(),
            kind,
            label: string("label", errors),
            description: string("description", errors),
            hidden: flag("hidden", errors),
            immutable: flag("immutable", errors),
            value: Value::Null,
        };
        let default = def
            .get("default")
            .filter(|d| !d.is_null())
            .map(|d| Supplied {
                value: d.to_json(),
                file: errors.file.to_string(),
                pos: d.pos,
                source: "the default",
            });
        let constraints = def
            .get("constraints")
            .map(|c| constraints(c, &join(&path, "constraints"), errors))
            .unwrap_or_default();
        out.push(Declared {
            param,
            pos: key.pos,
            file: errors.file.to_string(),
            default,
            constraints,
        });
    }
    out
}

fn constraints(node: &Node, path: &str, errors: &mut Errors) -> Vec<(Constraint, Option<String>)> {
    let Yaml::Seq(items) = &node.value else {
        errors.at(
            node.pos,
            path,
            format!("expected a list of constraints, got {}", node.kind()),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("{path}[{i}]");
        let description = item
            .get("description")
            .and_then(Node::as_str)
            .map(str::to_string);
        let kinds: Vec<_> = item
            .entries()
            .iter()
            .filter(|(k, _)| k.name != "description")
            .collect();
        let [(key, arg)] = kinds.as_slice() else {
            errors.at(
                item.pos,
                &path,
                format!(
                    "expected one of {} (and an optional description)",
                    CONSTRAINTS.join(", ")
                ),
            );
            continue;
        };
        let path = join(&path, &key.name);
        let bounds = |errors: &mut Errors| {
            let num = |k: &str| arg.get(k).and_then(|n| n.to_json().as_f64());
            let unknown = arg
                .entries()
                .iter()
                .any(|(k, _)| k.name != "min" && k.name != "max");
            let (min, max) = (num("min"), num("max"));
            if unknown
                || (min.is_none() && max.is_none())
                || arg.entries().len() != min.iter().chain(&max).count()
            {
                errors.at(
                    arg.pos,
                    &path,
                    "expected {min: number, max: number} with at least one of them",
                );
            }
            (min, max)
        };
        let constraint = match key.name.as_str() {
            "range" => {
                let (min, max) = bounds(errors);
                Constraint::Range { min, max }
            }
            "length" => {
                let (min, max) = bounds(errors);
                Constraint::Length { min, max }
            }
            "allowed_values" => match &arg.value {
                Yaml::Seq(values) => {
                    Constraint::AllowedValues(values.iter().map(Node::to_json).collect())
                }
                _ => {
                    errors.at(
                        arg.pos,
                        &path,
                        format!("expected a list of values, got {}", arg.kind()),
                    );
                    continue;
                }
            },
            "allowed_pattern" => match arg.as_str() {
                Some(p) => {
                    if let Err(e) = whole(p) {
                        errors.at(
                            arg.pos,
                            &path,
                            format!("not a valid regular expression: {e}"),
                        );
                    }
                    Constraint::AllowedPattern(p.to_string())
                }
                None => {
                    errors.at(
                        arg.pos,
                        &path,
                        format!("expected a regular expression, got {}", arg.kind()),
                    );
                    continue;
                }
            },
            // Custom constraints check cloud objects (flavors, images) that Kiln does not know.
            "custom_constraint" => continue,
            other => {
                errors.at(
                    key.pos,
                    &path,
                    format!(
                        "unknown constraint '{other}' (known: {})",
                        CONSTRAINTS.join(", ")
                    ),
                );
                continue;
            }
        };
        out.push((constraint, description));
    }
    out
}

/// Gives each declared parameter its value: `supplied` (already merged by precedence) or
/// the default. Errors point where the bad value was written.
pub(crate) fn resolve(
    declared: Vec<Declared>,
    supplied: &BTreeMap<String, Supplied>,
    errors: &mut Vec<TemplateError>,
) -> Vec<Parameter> {
    let mut out = Vec::new();
    for d in declared {
        let path = join("parameters", &d.param.name);
        let Some(given) = supplied.get(&d.param.name).or(d.default.as_ref()) else {
            errors.push(error(
                &d.file,
                d.pos,
                &path,
                "no value: give one with -P, in an environment file, or as a default",
            ));
            continue;
        };
        let shown = if d.param.hidden {
            "******".to_string()
        } else {
            short(&given.value)
        };
        let at = |msg: String| {
            error(
                &given.file,
                given.pos,
                &path,
                format!("{msg} (value {shown} from {})", given.source),
            )
        };
        match d.param.kind.convert(&given.value) {
            Err(e) => errors.push(at(e.replace(&short(&given.value), &shown))),
            Ok(value) => {
                for (c, description) in &d.constraints {
                    if let Err(e) = c.check(&value) {
                        errors.push(at(match description {
                            Some(text) => format!("does not satisfy the constraint: {text}"),
                            None if d.param.hidden => "does not satisfy a constraint".to_string(),
                            None => e,
                        }));
                    }
                }
                out.push(Parameter { value, ..d.param });
            }
        }
    }
    out
}
