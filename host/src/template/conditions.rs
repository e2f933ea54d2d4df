//! The `conditions` section and `condition` keys: boolean values known at validation time,
//! which decide whether resources and outputs exist and which branch each `if` takes.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::error::{Errors, join};
use super::expr::{Expr, Names};
use super::functions::{Scope, fold};
use super::graph;
use super::yaml::{Node, Pos};

/// Evaluates the `conditions` section; conditions may name each other (not in a cycle).
pub(crate) fn evaluate(
    section: &Node,
    names: &Names,
    params: &BTreeMap<String, Value>,
    errors: &mut Errors,
) -> BTreeMap<String, bool> {
    let mut exprs: BTreeMap<String, (Expr, Pos)> = BTreeMap::new();
    let mut order = Vec::new();
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (key, def) in section.entries() {
        let expr = Expr::parse(def, &join("conditions", &key.name), names, errors);
        let mut refs: BTreeSet<String> = expr
            .condition_refs()
            .into_iter()
            .map(|(n, _)| n.to_string())
            .collect();
        // A bare name is a reference too.
        if let Some(Value::String(other)) = expr.as_value() {
            refs.insert(other.clone());
        }
        refs.retain(|r| names.conditions.contains(r));
        deps.insert(key.name.clone(), refs);
        order.push(key.name.clone());
        exprs.insert(key.name.clone(), (expr, def.pos));
    }
    let order = match graph::order(&order, &deps) {
        Ok(o) => o,
        Err(cycle) => {
            let pos = exprs[&cycle[0]].1;
            errors.at(
                pos,
                &join("conditions", &cycle[0]),
                format!(
                    "conditions refer to each other in a cycle: {}",
                    cycle.join(" -> ")
                ),
            );
            // All false, so that what uses them is still checked without more errors.
            return exprs.into_keys().map(|name| (name, false)).collect();
        }
    };
    let mut values = BTreeMap::new();
    for name in order {
        let (expr, pos) = exprs
            .remove(&name)
            .expect("every ordered condition was parsed");
        let value = decide(
            expr,
            pos,
            &join("conditions", &name),
            params,
            &values,
            errors,
        );
        values.insert(name, value);
    }
    values
}

/// The truth of one condition: a boolean, a condition's name, or a condition function.
pub(crate) fn decide(
    expr: Expr,
    pos: Pos,
    path: &str,
    params: &BTreeMap<String, Value>,
    conditions: &BTreeMap<String, bool>,
    errors: &mut Errors,
) -> bool {
    let scope = Scope {
        params,
        conditions,
        resolver: None,
    };
    let before = errors.list.len();
    match fold(expr, &scope, errors.file, errors.list) {
        Expr::Value(Value::Bool(b)) => b,
        Expr::Value(Value::String(name)) if conditions.contains_key(&name) => conditions[&name],
        Expr::Value(Value::String(name)) => {
            errors.at(pos, path, format!("unknown condition '{name}'"));
            false
        }
        // Already reported by fold.
        _ if errors.list.len() > before => false,
        Expr::Value(v) => {
            errors.at(pos, path, format!("a condition must be a boolean, a condition name or a condition function, got {v}"));
            false
        }
        _ => {
            errors.at(
                pos,
                path,
                "a condition cannot depend on resources or on the stack's identity",
            );
            false
        }
    }
}
