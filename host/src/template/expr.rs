//! Template values as expressions: plain data with intrinsic function calls inside, parsed from
//! YAML with the checks that need only the template (function names and versions, argument
//! shapes, names of parameters, resources, attributes and conditions).
//!
//! Expressions are serde types: a validated stack stores its resources' properties as
//! expressions with everything static already folded in (see `functions::fold`), so that any
//! engine process can finish them later, from stored data, once referenced resources exist.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::Errors;
use super::functions::{Function, Shape};
use super::yaml::{Node, Pos, Yaml};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expr {
    /// Plain data, fully known.
    Value(Value),
    /// A list with a function call somewhere inside.
    List(Vec<Expr>),
    /// A mapping with a function call somewhere inside.
    Map(BTreeMap<String, Expr>),
    Call(Box<Call>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Call {
    pub function: Function,
    pub args: Expr,
    /// Where the call is, for errors found when it is evaluated.
    pub at: At,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct At {
    pub line: u32,
    pub col: u32,
    /// e.g. `outputs.url.value.list_join`.
    pub path: String,
}

impl At {
    pub fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            col: self.col,
        }
    }
}

/// Parameters whose values come from the stack being created (Heat's pseudo parameters); they
/// stay unevaluated until then.
pub const PSEUDO_PARAMETERS: [&str; 3] = ["OS::stack_name", "OS::stack_id", "OS::project_id"];

/// Functions Heat has that Kiln rejects with a clear message rather than treating as data.
const UNSUPPORTED: [&str; 5] = ["yaql", "get_file", "resource_facade", "filter", "make_url"];

/// What an expression may refer to.
pub(crate) struct Names<'a> {
    /// The template's canonical version date, e.g. `2016-10-14`.
    pub version: &'a str,
    pub parameters: &'a BTreeSet<String>,
    /// Resource name -> the attributes its type declares (None when the type is unknown).
    pub resources: &'a BTreeMap<String, Option<Vec<String>>>,
    pub conditions: &'a BTreeSet<String>,
    /// In the `conditions` section and in resource/output `condition`s, resources are unknown.
    pub static_only: bool,
}

impl Expr {
    /// Parses a YAML value, reporting every problem with its place.
    pub(crate) fn parse(node: &Node, path: &str, names: &Names, errors: &mut Errors) -> Expr {
        match &node.value {
            Yaml::Seq(items) => {
                let items: Vec<Expr> = items
                    .iter()
                    .enumerate()
                    .map(|(i, n)| Expr::parse(n, &format!("{path}[{i}]"), names, errors))
                    .collect();
                collapse_list(items)
            }
            Yaml::Map(entries) => {
                if let [(key, args)] = entries.as_slice() {
                    let at = At {
                        line: key.pos.line,
                        col: key.pos.col,
                        path: super::error::join(path, &key.name),
                    };
                    if let Some(function) = Function::from_name(&key.name) {
                        return parse_call(function, args, at, names, errors);
                    }
                    if UNSUPPORTED.contains(&key.name.as_str()) {
                        errors.at(
                            key.pos,
                            &at.path,
                            format!("function '{}' is not supported by Kiln", key.name),
                        );
                        return Expr::Value(Value::Null);
                    }
                }
                let map: BTreeMap<String, Expr> = entries
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.name.clone(),
                            Expr::parse(v, &super::error::join(path, &k.name), names, errors),
                        )
                    })
                    .collect();
                collapse_map(map)
            }
            _ => Expr::Value(node.to_json()),
        }
    }

    pub fn as_value(&self) -> Option<&Value> {
        match self {
            Expr::Value(v) => Some(v),
            _ => None,
        }
    }

    /// Every call inside, outermost first.
    pub fn calls(&self) -> Vec<&Call> {
        let mut out = Vec::new();
        self.walk(&mut |c| out.push(c));
        out
    }

    fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a Call)) {
        match self {
            Expr::Value(_) => {}
            Expr::List(items) => items.iter().for_each(|e| e.walk(f)),
            Expr::Map(map) => map.values().for_each(|e| e.walk(f)),
            Expr::Call(call) => {
                f(call);
                call.args.walk(f);
            }
        }
    }

    /// Resources this expression reads (`get_resource`, `get_attr`), with where.
    pub fn resource_refs(&self) -> Vec<(&str, &At)> {
        self.calls()
            .into_iter()
            .filter_map(|c| match (c.function, &c.args) {
                (Function::GetResource, Expr::Value(Value::String(name))) => {
                    Some((name.as_str(), &c.at))
                }
                (Function::GetAttr, Expr::List(items)) => {
                    Some((items.first()?.as_value()?.as_str()?, &c.at))
                }
                (Function::GetAttr, Expr::Value(Value::Array(items))) => {
                    Some((items.first()?.as_str()?, &c.at))
                }
                _ => None,
            })
            .collect()
    }

    /// Condition names this expression reads (arguments of `not`, `and`, `or`, `if`).
    pub fn condition_refs(&self) -> Vec<(&str, &At)> {
        self.calls()
            .into_iter()
            .flat_map(|c| condition_names(c).into_iter().map(move |n| (n, &c.at)))
            .collect()
    }
}

/// The arguments of a call that name a condition (rather than spell one out).
fn condition_names(c: &Call) -> Vec<&str> {
    fn strings(e: &Expr) -> Vec<&str> {
        match e {
            Expr::Value(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            Expr::List(items) => items
                .iter()
                .filter_map(|i| i.as_value()?.as_str())
                .collect(),
            _ => Vec::new(),
        }
    }
    match c.function {
        Function::Not => c
            .args
            .as_value()
            .and_then(Value::as_str)
            .into_iter()
            .collect(),
        Function::And | Function::Or => strings(&c.args),
        Function::If => strings(&c.args)
            .into_iter()
            .take(1)
            .filter(|_| first_is_string(&c.args))
            .collect(),
        _ => Vec::new(),
    }
}

fn first_is_string(args: &Expr) -> bool {
    match args {
        Expr::Value(Value::Array(items)) => items.first().is_some_and(Value::is_string),
        Expr::List(items) => items
            .first()
            .and_then(Expr::as_value)
            .is_some_and(Value::is_string),
        _ => false,
    }
}

/// A list whose items are all plain data is plain data.
pub(crate) fn collapse_list(items: Vec<Expr>) -> Expr {
    if items.iter().all(|e| matches!(e, Expr::Value(_))) {
        Expr::Value(Value::Array(
            items
                .into_iter()
                .filter_map(|e| e.as_value().cloned())
                .collect(),
        ))
    } else {
        Expr::List(items)
    }
}

pub(crate) fn collapse_map(map: BTreeMap<String, Expr>) -> Expr {
    if map.values().all(|e| matches!(e, Expr::Value(_))) {
        Expr::Value(Value::Object(
            map.into_iter()
                .filter_map(|(k, e)| Some((k, e.as_value()?.clone())))
                .collect(),
        ))
    } else {
        Expr::Map(map)
    }
}

fn parse_call(function: Function, args: &Node, at: At, names: &Names, errors: &mut Errors) -> Expr {
    let pos = at.pos();
    if names.version < function.since() {
        errors.at(
            pos,
            &at.path,
            format!(
                "function '{}' needs heat_template_version {} or later (this template is {})",
                function.name(),
                function.since(),
                names.version
            ),
        );
        return Expr::Value(Value::Null);
    }
    let usage = || format!("expected {}", function.usage());
    match function {
        Function::GetParam => {
            let name = match &args.value {
                Yaml::Str(s) => Some(s.as_str()),
                Yaml::Seq(items) => items.first().and_then(Node::as_str),
                _ => None,
            };
            match name {
                None => errors.at(pos, &at.path, usage()),
                Some(n) if !names.parameters.contains(n) && !PSEUDO_PARAMETERS.contains(&n) => {
                    errors.at(args.pos, &at.path, format!("unknown parameter '{n}'"))
                }
                Some(_) => {}
            }
        }
        Function::GetResource => match args.as_str() {
            None => errors.at(pos, &at.path, usage()),
            Some(r) => check_resource(r, args.pos, &at.path, names, errors),
        },
        Function::GetAttr => match &args.value {
            Yaml::Seq(items)
                if items.len() >= 2
                    && items[0].as_str().is_some()
                    && items[1].as_str().is_some() =>
            {
                let (resource, attribute) = (
                    items[0].as_str().unwrap_or_default(),
                    items[1].as_str().unwrap_or_default(),
                );
                if items.len() > 2 && names.version < "2014-10-16" {
                    errors.at(
                        pos,
                        &at.path,
                        "a get_attr path needs heat_template_version 2014-10-16 or later",
                    );
                }
                check_resource(resource, items[0].pos, &at.path, names, errors);
                // `show` is Heat's map of all attributes.
                if let Some(Some(attrs)) = names.resources.get(resource)
                    && attribute != "show"
                    && !attrs.iter().any(|a| a == attribute)
                {
                    let known = if attrs.is_empty() {
                        "none".to_string()
                    } else {
                        attrs.join(", ")
                    };
                    errors.at(
                        items[1].pos,
                        &at.path,
                        format!("resource '{resource}' has no attribute '{attribute}' (its type has: {known})"),
                    );
                }
            }
            _ => errors.at(pos, &at.path, usage()),
        },
        _ => {
            if !function.shape().fits(args) {
                errors.at(pos, &at.path, usage());
                return Expr::Value(Value::Null);
            }
        }
    }
    let args = Expr::parse(args, &at.path, names, errors);
    let call = Call { function, args, at };
    for name in condition_names(&call) {
        if !names.conditions.contains(name) {
            errors.at(pos, &call.at.path, format!("unknown condition '{name}'"));
        }
    }
    Expr::Call(Box::new(call))
}

fn check_resource(name: &str, pos: Pos, path: &str, names: &Names, errors: &mut Errors) {
    if names.static_only {
        errors.at(pos, path, "conditions cannot refer to resources");
    } else if !names.resources.contains_key(name) {
        let known: Vec<&str> = names.resources.keys().map(String::as_str).collect();
        errors.at(
            pos,
            path,
            format!(
                "unknown resource '{name}' (resources: {})",
                known.join(", ")
            ),
        );
    }
}

impl Shape {
    /// Whether literal arguments have the right outline; arguments that are themselves
    /// function calls are checked when evaluated.
    fn fits(&self, args: &Node) -> bool {
        let is_call =
            args.entries().len() == 1 && Function::from_name(&args.entries()[0].0.name).is_some();
        match (self, &args.value) {
            _ if is_call => true,
            (Shape::Any, _) => true,
            (Shape::List { min, max }, Yaml::Seq(items)) => {
                items.len() >= *min && items.len() <= *max
            }
            (Shape::Map { required, optional }, Yaml::Map(entries)) => {
                required.iter().all(|k| args.get(k).is_some())
                    && entries.iter().all(|(k, _)| {
                        required.contains(&k.name.as_str()) || optional.contains(&k.name.as_str())
                    })
            }
            _ => false,
        }
    }
}
