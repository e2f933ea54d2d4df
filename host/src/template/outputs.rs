//! The `outputs` section checked: each output's keys, its value (which may name only resources
//! that are created) and its condition.

use serde_json::Value;

use super::Output;
use super::error::{Errors, join};
use super::expr::{Expr, Names};
use super::functions::Scope;
use super::resource_def::{condition, value};
use super::validate::text;
use super::yaml::{Node, Yaml};

const OUTPUT_KEYS: [&str; 3] = ["value", "description", "condition"];

pub(super) fn outputs(
    section: &Node,
    version: &str,
    names: &Names,
    scope: &Scope,
    excluded: &dyn Fn(&str) -> bool,
    errors: &mut Errors,
) -> Vec<Output> {
    if !section.is_null() && !matches!(section.value, Yaml::Map(_)) {
        errors.at(
            section.pos,
            "outputs",
            format!("expected a mapping, got {}", section.kind()),
        );
    }
    let mut out = Vec::new();
    for (key, def) in section.entries() {
        let path = join("outputs", &key.name);
        if !matches!(def.value, Yaml::Map(_)) {
            errors.at(
                def.pos,
                &path,
                format!("expected a mapping with a value, got {}", def.kind()),
            );
            continue;
        }
        for (k, _) in def.entries() {
            if !OUTPUT_KEYS.contains(&k.name.as_str()) {
                errors.at(
                    k.pos,
                    &path,
                    format!(
                        "unknown key '{}' (known: {})",
                        k.name,
                        OUTPUT_KEYS.join(", ")
                    ),
                );
            }
        }
        let enabled = condition(def, &path, version, names, scope, errors);
        let description = def
            .get("description")
            .map(|d| text(d, &join(&path, "description"), errors))
            .unwrap_or_default();
        let value = match def.get("value") {
            Some(v) if enabled => value(v, &join(&path, "value"), names, scope, errors),
            Some(_) => Expr::Value(Value::Null),
            None => {
                errors.at(def.pos, &path, "value is missing");
                continue;
            }
        };
        for (target, at) in value.resource_refs() {
            if excluded(target) {
                errors.at(
                    at.pos(),
                    &at.path,
                    format!("resource '{target}' is not created: its condition is false"),
                );
            }
        }
        out.push(Output {
            name: key.name.clone(),
            description,
            value,
            pos: key.pos,
        });
    }
    out
}
