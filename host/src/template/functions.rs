//! HOT intrinsic functions: their names, the template version that introduced each, the shape
//! of their arguments, and their evaluation — statically (`fold`, with parameters and
//! conditions) and later with a `Resolver` for `get_resource`/`get_attr`. Longer than a file
//! should be, on purpose: it is HOT's function library, one function beside the next.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Resolver;
use super::error::{TemplateError, error};
use super::expr::{At, Call, Expr, PSEUDO_PARAMETERS, collapse_list, collapse_map};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Function {
    GetParam,
    GetResource,
    GetAttr,
    ListJoin,
    StrReplace,
    StrReplaceStrict,
    StrReplaceVstrict,
    StrSplit,
    Repeat,
    MapMerge,
    MapReplace,
    If,
    Equals,
    Not,
    And,
    Or,
    Contains,
    Digest,
    ListConcat,
    ListConcatUnique,
}

/// The outline of a function's arguments, checked before evaluation where they are literal.
pub(crate) enum Shape {
    Any,
    List {
        min: usize,
        max: usize,
    },
    Map {
        required: &'static [&'static str],
        optional: &'static [&'static str],
    },
}

const MANY: usize = usize::MAX;
const REPLACE: Shape = Shape::Map {
    required: &["template", "params"],
    optional: &[],
};

/// Name, first template version (Heat's), argument shape, usage text.
const TABLE: [(Function, &str, &str, Shape, &str); 20] = [
    (
        Function::GetParam,
        "get_param",
        "2013-05-23",
        Shape::Any,
        "a parameter name or [name, key or index, ...]",
    ),
    (
        Function::GetResource,
        "get_resource",
        "2013-05-23",
        Shape::Any,
        "a resource name",
    ),
    (
        Function::GetAttr,
        "get_attr",
        "2013-05-23",
        Shape::Any,
        "[resource name, attribute name, key or index, ...]",
    ),
    (
        Function::ListJoin,
        "list_join",
        "2014-10-16",
        Shape::List { min: 2, max: MANY },
        "[delimiter, list, ...]",
    ),
    (
        Function::StrReplace,
        "str_replace",
        "2013-05-23",
        REPLACE,
        "{template: string, params: map}",
    ),
    (
        Function::StrReplaceStrict,
        "str_replace_strict",
        "2017-02-24",
        REPLACE,
        "{template: string, params: map}",
    ),
    (
        Function::StrReplaceVstrict,
        "str_replace_vstrict",
        "2018-03-02",
        REPLACE,
        "{template: string, params: map}",
    ),
    (
        Function::StrSplit,
        "str_split",
        "2015-10-15",
        Shape::List { min: 2, max: 3 },
        "[delimiter, string] or [delimiter, string, index]",
    ),
    (
        Function::Repeat,
        "repeat",
        "2015-04-30",
        Shape::Map {
            required: &["for_each", "template"],
            optional: &["permutations"],
        },
        "{for_each: {placeholder: list, ...}, template: value, permutations: boolean}",
    ),
    (
        Function::MapMerge,
        "map_merge",
        "2016-04-08",
        Shape::List { min: 1, max: MANY },
        "[map, map, ...]",
    ),
    (
        Function::MapReplace,
        "map_replace",
        "2016-10-14",
        Shape::List { min: 2, max: 2 },
        "[map, {keys: map, values: map}]",
    ),
    (
        Function::If,
        "if",
        "2016-10-14",
        Shape::List { min: 3, max: 3 },
        "[condition, value if true, value if false]",
    ),
    (
        Function::Equals,
        "equals",
        "2016-10-14",
        Shape::List { min: 2, max: 2 },
        "[value, value]",
    ),
    (
        Function::Not,
        "not",
        "2016-10-14",
        Shape::Any,
        "a condition",
    ),
    (
        Function::And,
        "and",
        "2016-10-14",
        Shape::List { min: 2, max: MANY },
        "[condition, condition, ...]",
    ),
    (
        Function::Or,
        "or",
        "2016-10-14",
        Shape::List { min: 2, max: MANY },
        "[condition, condition, ...]",
    ),
    (
        Function::Contains,
        "contains",
        "2017-09-01",
        Shape::List { min: 2, max: 2 },
        "[value, list]",
    ),
    (
        Function::Digest,
        "digest",
        "2015-04-30",
        Shape::List { min: 2, max: 2 },
        "[algorithm, value]",
    ),
    (
        Function::ListConcat,
        "list_concat",
        "2017-09-01",
        Shape::List { min: 0, max: MANY },
        "[list, list, ...]",
    ),
    (
        Function::ListConcatUnique,
        "list_concat_unique",
        "2017-09-01",
        Shape::List { min: 0, max: MANY },
        "[list, list, ...]",
    ),
];

impl Function {
    fn entry(self) -> &'static (Function, &'static str, &'static str, Shape, &'static str) {
        TABLE
            .iter()
            .find(|e| e.0 == self)
            .expect("every function is in TABLE")
    }

    pub fn from_name(name: &str) -> Option<Function> {
        TABLE.iter().find(|e| e.1 == name).map(|e| e.0)
    }

    pub fn name(self) -> &'static str {
        self.entry().1
    }

    /// The heat_template_version that introduced the function.
    pub fn since(self) -> &'static str {
        self.entry().2
    }

    pub(crate) fn shape(self) -> &'static Shape {
        &self.entry().3
    }

    pub fn usage(self) -> &'static str {
        self.entry().4
    }
}

/// What evaluation can see.
pub(crate) struct Scope<'a> {
    pub params: &'a BTreeMap<String, Value>,
    pub conditions: &'a BTreeMap<String, bool>,
    /// None during static evaluation, which never evaluates resource references.
    pub resolver: Option<&'a dyn Resolver>,
}

#[derive(Debug)]
pub(crate) enum Fail {
    NotReady {
        resource: String,
        what: String,
        at: At,
    },
    Bad {
        at: At,
        message: String,
    },
}

impl Fail {
    pub fn into_error(self, file: &str) -> TemplateError {
        match self {
            Fail::Bad { at, message } => error(file, at.pos(), &at.path, message),
            Fail::NotReady { resource, what, at } => error(
                file,
                at.pos(),
                &at.path,
                format!("resource '{resource}' is not ready: {what}"),
            ),
        }
    }
}

/// Evaluates everything that does not depend on resources, leaving calls that do (and the
/// pseudo parameters of the stack) in place. `if` is always decided here: conditions are static.
pub(crate) fn fold(expr: Expr, scope: &Scope, file: &str, errors: &mut Vec<TemplateError>) -> Expr {
    match expr {
        Expr::Value(v) => Expr::Value(v),
        Expr::List(items) => collapse_list(
            items
                .into_iter()
                .map(|e| fold(e, scope, file, errors))
                .collect(),
        ),
        Expr::Map(map) => collapse_map(
            map.into_iter()
                .map(|(k, e)| (k, fold(e, scope, file, errors)))
                .collect(),
        ),
        Expr::Call(call) => {
            let Call { function, args, at } = *call;
            if function == Function::If {
                return fold_if(args, at, scope, file, errors);
            }
            let args = fold(args, scope, file, errors);
            let stays = match (&args, function) {
                (_, Function::GetResource | Function::GetAttr) => true,
                // Pseudo parameters are known once the stack is; a parameter whose value was
                // bad has been reported already.
                (Expr::Value(v), Function::GetParam) => {
                    let name = v.as_str().or_else(|| v.get(0).and_then(Value::as_str));
                    name.is_some_and(|n| !scope.params.contains_key(n))
                }
                (Expr::Value(_), _) => false,
                _ => true,
            };
            if stays {
                return Expr::Call(Box::new(Call { function, args, at }));
            }
            let call = Call { function, args, at };
            match eval_call(&call, scope) {
                Ok(v) => Expr::Value(v),
                Err(f) => {
                    errors.push(f.into_error(file));
                    Expr::Value(Value::Null)
                }
            }
        }
    }
}

fn fold_if(args: Expr, at: At, scope: &Scope, file: &str, errors: &mut Vec<TemplateError>) -> Expr {
    let mut items = match args {
        Expr::List(items) => items,
        Expr::Value(Value::Array(items)) => items.into_iter().map(Expr::Value).collect(),
        _ => Vec::new(),
    };
    if items.len() != 3 {
        errors.push(error(
            file,
            at.pos(),
            &at.path,
            format!("expected {}", Function::If.usage()),
        ));
        return Expr::Value(Value::Null);
    }
    let condition = match fold(items.remove(0), scope, file, errors) {
        Expr::Value(v) => condition(&v, scope, &at),
        _ => Err(Fail::Bad {
            at: at.clone(),
            message: "a condition cannot depend on resources".into(),
        }),
    };
    match condition {
        Ok(true) => fold(items.remove(0), scope, file, errors),
        Ok(false) => fold(items.remove(1), scope, file, errors),
        Err(f) => {
            errors.push(f.into_error(file));
            Expr::Value(Value::Null)
        }
    }
}

/// Evaluates an expression completely.
pub(crate) fn eval(expr: &Expr, scope: &Scope) -> Result<Value, Fail> {
    match expr {
        Expr::Value(v) => Ok(v.clone()),
        Expr::List(items) => items
            .iter()
            .map(|e| eval(e, scope))
            .collect::<Result<_, _>>()
            .map(Value::Array),
        Expr::Map(map) => map
            .iter()
            .map(|(k, e)| Ok((k.clone(), eval(e, scope)?)))
            .collect::<Result<_, _>>()
            .map(Value::Object),
        Expr::Call(call) => eval_call(call, scope),
    }
}

fn eval_call(call: &Call, scope: &Scope) -> Result<Value, Fail> {
    let at = &call.at;
    let bad = |message: String| Fail::Bad {
        at: at.clone(),
        message,
    };
    let usage = || bad(format!("expected {}", call.function.usage()));
    if call.function == Function::If {
        // Only the chosen branch is evaluated: the other may read resources that do not exist.
        let items: Vec<Expr> = match &call.args {
            Expr::List(items) => items.clone(),
            Expr::Value(Value::Array(items)) => items.iter().cloned().map(Expr::Value).collect(),
            _ => return Err(usage()),
        };
        let [c, yes, no] = items.as_slice() else {
            return Err(usage());
        };
        let chosen = if condition(&eval(c, scope)?, scope, at)? {
            yes
        } else {
            no
        };
        return eval(chosen, scope);
    }
    let args = eval(&call.args, scope)?;
    let list = || args.as_array().ok_or_else(usage);
    let text_at = |i: usize| list()?.get(i).and_then(Value::as_str).ok_or_else(usage);
    match call.function {
        Function::GetParam => {
            let (name, path) = match &args {
                Value::String(name) => (name.as_str(), &[][..]),
                Value::Array(items) => (text_at(0)?, &items[1..]),
                _ => return Err(usage()),
            };
            let value = if PSEUDO_PARAMETERS.contains(&name) {
                scope.resolver.and_then(|r| r.stack_parameter(name))
            } else {
                scope.params.get(name).cloned()
            };
            let value = value.ok_or_else(|| bad(format!("parameter '{name}' has no value")))?;
            walk(value, path).ok_or_else(|| {
                bad(format!(
                    "parameter '{name}' has nothing at path {}",
                    Value::from(path.to_vec())
                ))
            })
        }
        Function::GetResource => {
            let name = args.as_str().ok_or_else(usage)?;
            let id = scope.resolver.and_then(|r| r.physical_id(name));
            id.map(Value::String)
                .ok_or_else(|| not_ready(name, "it has no physical id", at))
        }
        Function::GetAttr => {
            let (resource, attribute) = (text_at(0)?, text_at(1)?);
            let resolver = scope
                .resolver
                .ok_or_else(|| not_ready(resource, "no resolver", at))?;
            if resolver.physical_id(resource).is_none() {
                return Err(not_ready(
                    resource,
                    &format!("attribute '{attribute}' was read before it exists"),
                    at,
                ));
            }
            // As Heat: an attribute without a value, or a path that leads nowhere, is null.
            let value = resolver
                .attribute(resource, attribute)
                .unwrap_or(Value::Null);
            Ok(walk(value, &list()?[2..]).unwrap_or(Value::Null))
        }
        Function::ListJoin => {
            let delimiter = text_at(0)?;
            let mut parts = Vec::new();
            for l in &list()?[1..] {
                let items = l
                    .as_array()
                    .ok_or_else(|| bad(format!("expected a list to join, got {}", kind(l))))?;
                parts.extend(items.iter().map(text));
            }
            Ok(Value::String(parts.join(delimiter)))
        }
        Function::StrReplace | Function::StrReplaceStrict | Function::StrReplaceVstrict => {
            let template = args.get("template").ok_or_else(usage)?;
            let template = match template {
                Value::String(s) => s.clone(),
                Value::Number(_) => text(template),
                _ => {
                    return Err(bad(format!(
                        "template must be a string, got {}",
                        kind(template)
                    )));
                }
            };
            let params = args
                .get("params")
                .and_then(Value::as_object)
                .ok_or_else(|| bad("params must be a map".into()))?;
            let strict = call.function != Function::StrReplace;
            for (key, value) in params {
                if strict && !template.contains(key.as_str()) {
                    return Err(bad(format!(
                        "the template does not contain the param '{key}'"
                    )));
                }
                if call.function == Function::StrReplaceVstrict && text(value).is_empty() {
                    return Err(bad(format!("the param '{key}' has an empty value")));
                }
            }
            Ok(Value::String(replace_all(&template, params)))
        }
        Function::StrSplit => {
            let (delimiter, s) = (text_at(0)?, text_at(1)?);
            let parts: Vec<Value> = s
                .split(delimiter)
                .map(|p| Value::String(p.into()))
                .collect();
            match list()?.get(2) {
                None => Ok(Value::Array(parts)),
                Some(i) => {
                    let index = index_of(i)
                        .ok_or_else(|| bad(format!("index must be an integer, got {i}")))?;
                    let n = parts.len();
                    parts
                        .into_iter()
                        .nth(index)
                        .ok_or_else(|| bad(format!("index {index} is out of range: {n} parts")))
                }
            }
        }
        Function::Repeat => repeat(&args).map_err(bad),
        Function::MapMerge => {
            let mut merged = Map::new();
            for m in list()? {
                let m = m
                    .as_object()
                    .ok_or_else(|| bad(format!("expected maps to merge, got {}", kind(m))))?;
                merged.extend(m.clone());
            }
            Ok(Value::Object(merged))
        }
        Function::MapReplace => map_replace(list()?).map_err(bad),
        Function::Equals => Ok(Value::Bool(list()?[0] == list()?[1])),
        Function::Not => Ok(Value::Bool(!condition(&args, scope, at)?)),
        Function::And | Function::Or => {
            let mut values = Vec::new();
            for c in list()? {
                values.push(condition(c, scope, at)?);
            }
            Ok(Value::Bool(if call.function == Function::And {
                values.iter().all(|b| *b)
            } else {
                values.iter().any(|b| *b)
            }))
        }
        Function::Contains => {
            let items = list()?[1]
                .as_array()
                .ok_or_else(|| bad("the second argument must be a list".into()))?;
            Ok(Value::Bool(items.contains(&list()?[0])))
        }
        Function::Digest => {
            let value = list()?[1]
                .as_str()
                .ok_or_else(|| bad("the value to digest must be a string".into()))?;
            digest(text_at(0)?, value.as_bytes())
                .map(Value::String)
                .map_err(bad)
        }
        Function::ListConcat | Function::ListConcatUnique => {
            let mut out: Vec<Value> = Vec::new();
            for l in list()? {
                let items = l.as_array().ok_or_else(|| {
                    bad(format!("expected lists to concatenate, got {}", kind(l)))
                })?;
                for item in items {
                    if call.function == Function::ListConcat || !out.contains(item) {
                        out.push(item.clone());
                    }
                }
            }
            Ok(Value::Array(out))
        }
        Function::If => unreachable!("handled above"),
    }
}

fn not_ready(resource: &str, what: &str, at: &At) -> Fail {
    Fail::NotReady {
        resource: resource.into(),
        what: what.into(),
        at: at.clone(),
    }
}

/// A condition is a boolean or the name of one in the `conditions` section.
fn condition(value: &Value, scope: &Scope, at: &At) -> Result<bool, Fail> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(name) => scope
            .conditions
            .get(name)
            .copied()
            .ok_or_else(|| Fail::Bad {
                at: at.clone(),
                message: format!("unknown condition '{name}'"),
            }),
        v => Err(Fail::Bad {
            at: at.clone(),
            message: format!(
                "expected a condition (a boolean or a condition name), got {}",
                kind(v)
            ),
        }),
    }
}

/// Follows keys (maps) and indexes (lists) into a value.
fn walk(mut value: Value, path: &[Value]) -> Option<Value> {
    for step in path {
        value = match value {
            Value::Object(mut m) => m.remove(&text(step))?,
            Value::Array(mut a) => {
                let i = index_of(step)?;
                if i >= a.len() {
                    return None;
                }
                a.swap_remove(i)
            }
            _ => return None,
        };
    }
    Some(value)
}

fn index_of(v: &Value) -> Option<usize> {
    match v {
        Value::Number(n) => n.as_u64().map(|n| n as usize),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// A value as text where a string is needed (as Heat: null is empty, collections are JSON).
pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// Replaces every param in one left-to-right pass, longest key first where several match (as
/// Heat), so a replacement's text is never replaced again.
fn replace_all(template: &str, params: &Map<String, Value>) -> String {
    let mut keys: Vec<(&String, String)> = params
        .iter()
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k, text(v)))
        .collect();
    keys.sort_by_key(|k| std::cmp::Reverse(k.0.len()));
    let mut out = String::new();
    let mut rest = template;
    'outer: while let Some(c) = rest.chars().next() {
        for (key, value) in &keys {
            if let Some(after) = rest.strip_prefix(key.as_str()) {
                out.push_str(value);
                rest = after;
                continue 'outer;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Items one `repeat` may make.
const MAX_REPEAT: usize = 100_000;

fn repeat(args: &Value) -> Result<Value, String> {
    let for_each = args
        .get("for_each")
        .and_then(Value::as_object)
        .ok_or("for_each must be a map of placeholder to list")?;
    let template = args.get("template").ok_or("template is missing")?;
    let permutations = match args.get("permutations") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(v) => return Err(format!("permutations must be a boolean, got {}", kind(v))),
    };
    let mut lists = Vec::new();
    for (placeholder, values) in for_each {
        let values = values.as_array().ok_or_else(|| {
            format!(
                "for_each.{placeholder} must be a list, got {}",
                kind(values)
            )
        })?;
        lists.push((placeholder.as_str(), values));
    }
    // The product of the lists' lengths can be astronomic; refuse before building it.
    let count = lists
        .iter()
        .try_fold(1usize, |n, (_, v)| n.checked_mul(v.len().max(1)));
    if permutations && count.is_none_or(|n| n > MAX_REPEAT) {
        return Err(format!(
            "the permutations of for_each would make more than {MAX_REPEAT} items"
        ));
    }
    let rows: Vec<Vec<(&str, String)>> = if permutations {
        lists.iter().fold(vec![Vec::new()], |rows, (p, values)| {
            rows.iter()
                .flat_map(|row| {
                    values.iter().map(move |v| {
                        let mut row = row.clone();
                        row.push((*p, text(v)));
                        row
                    })
                })
                .collect()
        })
    } else {
        let len = lists.first().map_or(0, |(_, v)| v.len());
        if lists.iter().any(|(_, v)| v.len() != len) {
            return Err(
                "with permutations: false, every for_each list must have the same length".into(),
            );
        }
        (0..len)
            .map(|i| lists.iter().map(|(p, v)| (*p, text(&v[i]))).collect())
            .collect()
    };
    Ok(Value::Array(
        rows.iter().map(|row| substitute(template, row)).collect(),
    ))
}

fn substitute(template: &Value, row: &[(&str, String)]) -> Value {
    let in_text = |s: &str| row.iter().fold(s.to_string(), |s, (p, v)| s.replace(p, v));
    match template {
        Value::String(s) => Value::String(in_text(s)),
        Value::Array(items) => Value::Array(items.iter().map(|i| substitute(i, row)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (in_text(k), substitute(v, row)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn map_replace(args: &[Value]) -> Result<Value, String> {
    let map = args[0]
        .as_object()
        .ok_or_else(|| format!("the first argument must be a map, got {}", kind(&args[0])))?;
    let spec = args[1]
        .as_object()
        .ok_or("the second argument must be {keys: map, values: map}")?;
    if let Some(k) = spec.keys().find(|k| *k != "keys" && *k != "values") {
        return Err(format!("unknown key '{k}': expected keys and/or values"));
    }
    let table = |name: &str| -> Result<Map<String, Value>, String> {
        match spec.get(name) {
            None | Some(Value::Null) => Ok(Map::new()),
            Some(Value::Object(m)) => Ok(m.clone()),
            Some(v) => Err(format!("{name} must be a map, got {}", kind(v))),
        }
    };
    let (keys, values) = (table("keys")?, table("values")?);
    let mut out = Map::new();
    for (k, v) in map {
        let k = keys.get(k).map_or(k.clone(), text);
        let v = v.as_str().and_then(|s| values.get(s)).unwrap_or(v).clone();
        if out.insert(k.clone(), v).is_some() {
            return Err(format!("replacing keys makes the key '{k}' twice"));
        }
    }
    Ok(Value::Object(out))
}

fn digest(algorithm: &str, data: &[u8]) -> Result<String, String> {
    use sha2::Digest;
    Ok(match algorithm {
        "md5" => hex::encode(md5::Md5::digest(data)),
        "sha1" => hex::encode(sha1::Sha1::digest(data)),
        "sha224" => hex::encode(sha2::Sha224::digest(data)),
        "sha256" => hex::encode(sha2::Sha256::digest(data)),
        "sha384" => hex::encode(sha2::Sha384::digest(data)),
        "sha512" => hex::encode(sha2::Sha512::digest(data)),
        other => {
            return Err(format!(
                "unknown algorithm '{other}' (known: md5, sha1, sha224, sha256, sha384, sha512)"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use serde_json::{Value, json};

    use super::super::error::Errors;
    use super::super::expr::{Expr, Names};
    use super::super::yaml;
    use super::*;

    /// Parses and folds one value with parameters `p` (a json string param `s`, a list `l`)
    /// and conditions `yes`/`no`; returns the value or the error lines.
    fn run(text: &str) -> Result<Value, Vec<String>> {
        let params = BTreeMap::from([
            ("s".to_string(), json!("abc")),
            ("l".to_string(), json!(["a", "b"])),
        ]);
        let conditions = BTreeMap::from([("yes".to_string(), true), ("no".to_string(), false)]);
        let resources = BTreeMap::from([("r".to_string(), Some(vec!["out".to_string()]))]);
        let param_names: BTreeSet<String> = params.keys().cloned().collect();
        let condition_names: BTreeSet<String> = conditions.keys().cloned().collect();
        let names = Names {
            version: "2021-04-16",
            parameters: &param_names,
            resources: &resources,
            conditions: &condition_names,
            static_only: false,
        };
        let mut list = Vec::new();
        let mut errors = Errors {
            file: "t.yaml",
            list: &mut list,
        };
        let node = yaml::parse(&format!("v: {text}"), &Default::default()).unwrap();
        let expr = Expr::parse(node.get("v").unwrap(), "v", &names, &mut errors);
        let scope = Scope {
            params: &params,
            conditions: &conditions,
            resolver: None,
        };
        let folded = fold(expr, &scope, "t.yaml", &mut list);
        // validate() drops the same error found by both parsing and folding.
        list.dedup();
        if !list.is_empty() {
            return Err(list.iter().map(ToString::to_string).collect());
        }
        Ok(folded
            .as_value()
            .cloned()
            .unwrap_or_else(|| json!("<dynamic>")))
    }

    fn ok(text: &str) -> Value {
        run(text).unwrap_or_else(|e| panic!("{text}: {e:?}"))
    }

    fn err(text: &str) -> String {
        run(text).expect_err(text).join("\n")
    }

    #[test]
    fn get_param() {
        assert_eq!(ok("{get_param: s}"), "abc");
        assert_eq!(ok("{get_param: [l, 1]}"), "b");
        assert_eq!(
            err("{get_param: nope}"),
            "t.yaml:1:16: v.get_param: unknown parameter 'nope'"
        );
        assert_eq!(
            err("{get_param: [l, 5]}"),
            "t.yaml:1:5: v.get_param: parameter 'l' has nothing at path [5]"
        );
        assert_eq!(ok("{get_param: OS::stack_name}"), "<dynamic>");
    }

    #[test]
    fn resource_references_stay_for_later() {
        assert_eq!(ok("{get_resource: r}"), "<dynamic>");
        assert_eq!(ok("{get_attr: [r, out, {get_param: s}]}"), "<dynamic>");
        assert_eq!(
            err("{get_resource: x}"),
            "t.yaml:1:19: v.get_resource: unknown resource 'x' (resources: r)"
        );
        assert_eq!(
            err("{get_attr: [r, nope]}"),
            "t.yaml:1:19: v.get_attr: resource 'r' has no attribute 'nope' (its type has: out)"
        );
        assert_eq!(
            err("{get_attr: r}"),
            "t.yaml:1:5: v.get_attr: expected [resource name, attribute name, key or index, ...]"
        );
    }

    #[test]
    fn strings() {
        assert_eq!(
            ok("{list_join: ['-', [a, 1, null], {get_param: l}]}"),
            "a-1--a-b"
        );
        assert_eq!(
            err("{list_join: [',']}"),
            "t.yaml:1:5: v.list_join: expected [delimiter, list, ...]"
        );
        assert_eq!(
            err("{list_join: [',', x]}"),
            "t.yaml:1:5: v.list_join: expected a list to join, got a string"
        );
        assert_eq!(
            ok("{str_replace: {template: 'ab abc', params: {ab: X, abc: Y}}}"),
            "X Y"
        );
        assert_eq!(
            ok("{str_replace: {template: 'a', params: {a: [1]}}}"),
            "[1]"
        );
        assert_eq!(
            err("{str_replace: {template: a}}"),
            "t.yaml:1:5: v.str_replace: expected {template: string, params: map}"
        );
        assert_eq!(
            err("{str_replace_strict: {template: a, params: {b: c}}}"),
            "t.yaml:1:5: v.str_replace_strict: the template does not contain the param 'b'"
        );
        assert_eq!(
            err("{str_replace_vstrict: {template: a, params: {a: ''}}}"),
            "t.yaml:1:5: v.str_replace_vstrict: the param 'a' has an empty value"
        );
        assert_eq!(ok("{str_split: [',', 'a,b']}"), json!(["a", "b"]));
        assert_eq!(ok("{str_split: [',', 'a,b', '1']}"), "b");
        assert_eq!(
            err("{str_split: [',', 'a,b', 2]}"),
            "t.yaml:1:5: v.str_split: index 2 is out of range: 2 parts"
        );
    }

    #[test]
    fn collections() {
        assert_eq!(
            ok("{repeat: {for_each: {'%x%': [1, 2]}, template: {k: 'v%x%'}}}"),
            json!([{"k": "v1"}, {"k": "v2"}])
        );
        assert_eq!(
            ok("{repeat: {for_each: {A: [1, 2], B: [x, y]}, template: A-B, permutations: false}}"),
            json!(["1-x", "2-y"])
        );
        assert_eq!(
            err("{repeat: {for_each: {A: x}, template: A}}"),
            "t.yaml:1:5: v.repeat: for_each.A must be a list, got a string"
        );
        assert_eq!(
            err("{repeat: {for_each: {A: [1], B: []}, template: A, permutations: false}}"),
            "t.yaml:1:5: v.repeat: with permutations: false, every for_each list must have the same length"
        );
        let huge: Vec<String> = (0..400).map(|i| i.to_string()).collect();
        let list = huge.join(", ");
        let text = format!("{{repeat: {{for_each: {{A: [{list}], B: [{list}]}}, template: A-B}}}}");
        assert!(
            err(&text).contains("more than 100000 items"),
            "{}",
            err(&text)
        );
        assert_eq!(
            ok("{map_merge: [{a: 1}, {a: 2, b: 3}]}"),
            json!({"a": 2, "b": 3})
        );
        assert_eq!(
            err("{map_merge: [{a: 1}, [2]]}"),
            "t.yaml:1:5: v.map_merge: expected maps to merge, got a list"
        );
        assert_eq!(
            ok("{map_replace: [{a: x, b: y}, {keys: {a: c}, values: {y: z}}]}"),
            json!({"c": "x", "b": "z"})
        );
        assert_eq!(
            err("{map_replace: [{a: 1, b: 2}, {keys: {a: b}}]}"),
            "t.yaml:1:5: v.map_replace: replacing keys makes the key 'b' twice"
        );
        assert_eq!(ok("{list_concat: [[1], [1, 2]]}"), json!([1, 1, 2]));
        assert_eq!(ok("{list_concat_unique: [[1], [1, 2]]}"), json!([1, 2]));
        assert_eq!(
            err("{list_concat: [[1], 2]}"),
            "t.yaml:1:5: v.list_concat: expected lists to concatenate, got a number"
        );
    }

    #[test]
    fn conditions_and_if() {
        assert_eq!(ok("{if: [yes, 1, {get_resource: r}]}"), 1);
        assert_eq!(ok("{if: [{not: yes}, 1, 2]}"), 2);
        assert_eq!(ok("{and: [yes, {equals: [{get_param: s}, abc]}]}"), true);
        assert_eq!(ok("{or: [no, false]}"), false);
        assert_eq!(ok("{contains: [a, {get_param: l}]}"), true);
        assert_eq!(
            err("{not: maybe}"),
            "t.yaml:1:5: v.not: unknown condition 'maybe'"
        );
        assert_eq!(
            err("{and: [yes]}"),
            "t.yaml:1:5: v.and: expected [condition, condition, ...]"
        );
        assert_eq!(
            err("{if: [{equals: [{get_resource: r}, x]}, 1, 2]}"),
            "t.yaml:1:5: v.if: a condition cannot depend on resources"
        );
        assert_eq!(
            err("{contains: [a, b]}"),
            "t.yaml:1:5: v.contains: the second argument must be a list"
        );
    }

    #[test]
    fn digests() {
        assert_eq!(
            ok("{digest: [sha1, abc]}"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(ok("{digest: [sha512, '']}").as_str().unwrap().len(), 128);
        assert_eq!(
            err("{digest: [sha256, 1]}"),
            "t.yaml:1:5: v.digest: the value to digest must be a string"
        );
    }

    #[test]
    fn unsupported_functions() {
        assert_eq!(
            err("{yaql: {expression: '1'}}"),
            "t.yaml:1:5: v.yaql: function 'yaql' is not supported by Kiln"
        );
        assert_eq!(
            err("{get_file: x.txt}"),
            "t.yaml:1:5: v.get_file: function 'get_file' is not supported by Kiln"
        );
        // A mapping with more than one key is data, even when a key is a function's name.
        assert_eq!(
            ok("{get_param: s, other: 1}"),
            json!({"get_param": "s", "other": 1})
        );
    }
}
