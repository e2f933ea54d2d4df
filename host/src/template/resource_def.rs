//! One resource's definition checked: its keys, type (mapped by the environment's registry),
//! properties against the type's schema, metadata, `depends_on`, deletion policy, condition
//! and timeout; and the evaluation of values that the rest of the template shares.

use std::collections::BTreeMap;

use serde_json::Value;

use super::conditions::decide;
use super::environment::Environment;
use super::error::{Errors, join};
use super::expr::{Expr, Names};
use super::functions::{Scope, fold};
use super::schema::{ResourceSchema, TypeCatalog};
use super::version::CONDITIONS_SINCE;
use super::yaml::{Node, Pos, Yaml};
use super::{DeletionPolicy, Resource};

const RESOURCE_KEYS: [&str; 9] = [
    "type",
    "properties",
    "metadata",
    "depends_on",
    "deletion_policy",
    "update_policy",
    "condition",
    "external_id",
    "timeout",
];

/// A `condition` key of a resource or output; true when absent.
pub(super) fn condition(
    def: &Node,
    path: &str,
    version: &str,
    names: &Names,
    scope: &Scope,
    errors: &mut Errors,
) -> bool {
    let Some((key, node)) = def.entries().iter().find(|(k, _)| k.name == "condition") else {
        return true;
    };
    let path = join(path, "condition");
    if version < CONDITIONS_SINCE {
        errors.at(
            key.pos,
            &path,
            format!("needs heat_template_version {CONDITIONS_SINCE} or later"),
        );
        return true;
    }
    let static_names = Names {
        static_only: true,
        ..*names
    };
    let expr = Expr::parse(node, &path, &static_names, errors);
    decide(
        expr,
        node.pos,
        &path,
        scope.params,
        scope.conditions,
        errors,
    )
}

/// Parses and folds one value.
/// A node parsed and folded as far as `scope` allows (a whole value when it is static).
pub(super) fn evaluate(
    node: &Node,
    path: &str,
    names: &Names,
    scope: &Scope,
    errors: &mut Errors,
) -> Expr {
    value(node, path, names, scope, errors)
}

pub(super) fn value(
    node: &Node,
    path: &str,
    names: &Names,
    scope: &Scope,
    errors: &mut Errors,
) -> Expr {
    let expr = Expr::parse(node, path, names, errors);
    fold(expr, scope, errors.file, errors.list)
}

/// A checked resource, whether its condition holds, and its `depends_on` with places.
pub(super) type Checked = (Resource, bool, Vec<(String, Pos)>);

#[allow(clippy::too_many_arguments)]
pub(super) fn resource(
    name: &str,
    pos: Pos,
    def: &Node,
    env: &Environment,
    catalog: &dyn TypeCatalog,
    names: &Names,
    scope: &Scope,
    errors: &mut Errors,
) -> Option<Checked> {
    let path = join("resources", name);
    if name.contains('/') {
        // As in Heat; Kiln names the rows of replaced objects `NAME/replaced-N`.
        errors.at(pos, &path, "a resource name may not contain '/'");
        return None;
    }
    if !matches!(def.value, Yaml::Map(_)) {
        errors.at(
            def.pos,
            &path,
            format!("expected a mapping with a type, got {}", def.kind()),
        );
        return None;
    }
    for (k, _) in def.entries() {
        if k.name == "external_id" {
            errors.at(k.pos, &join(&path, "external_id"), "not supported by Kiln");
        } else if !RESOURCE_KEYS.contains(&k.name.as_str()) {
            errors.at(
                k.pos,
                &path,
                format!(
                    "unknown key '{}' (known: {})",
                    k.name,
                    RESOURCE_KEYS.join(", ")
                ),
            );
        }
    }
    let enabled = condition(def, &path, names.version, names, scope, errors);
    let Some(type_node) = def.get("type") else {
        errors.at(def.pos, &path, "type is missing");
        return None;
    };
    let Some(type_name) = type_node.as_str() else {
        errors.at(
            type_node.pos,
            &join(&path, "type"),
            format!("expected a type name, got {}", type_node.kind()),
        );
        return None;
    };
    let served = env.map_type(type_name);
    let schema = catalog.lookup(&served).map(ResourceSchema::from);
    if schema.is_none() {
        let via = if served != type_name {
            format!(" (mapped by resource_registry to '{served}')")
        } else {
            String::new()
        };
        errors.at(
            type_node.pos,
            &join(&path, "type"),
            format!("unknown resource type '{type_name}'{via}: no plugin serves it"),
        );
    }

    let props_path = join(&path, "properties");
    let props_node = def.get("properties");
    let properties = props_node.map_or(Expr::Value(Value::Null), |n| {
        value(n, &props_path, names, scope, errors)
    });
    let property_pos: BTreeMap<String, Pos> = props_node
        .map(|n| {
            n.entries()
                .iter()
                .map(|(k, v)| (k.name.clone(), v.pos))
                .collect()
        })
        .unwrap_or_default();
    if let (Some(schema), true) = (&schema, enabled) {
        let base = props_node.map_or(def.pos, |n| n.pos);
        for (prop, message) in schema.check_static(&properties) {
            let at = prop
                .as_ref()
                .and_then(|p| property_pos.get(p))
                .copied()
                .unwrap_or(base);
            errors.at(
                at,
                &prop.map_or(props_path.clone(), |p| join(&props_path, &p)),
                message,
            );
        }
    }
    let metadata = def.get("metadata").map_or(Expr::Value(Value::Null), |n| {
        value(n, &join(&path, "metadata"), names, scope, errors)
    });

    let depends_on = match def.get("depends_on").map(|n| (n, &n.value)) {
        None | Some((_, Yaml::Null)) => Vec::new(),
        Some((n, Yaml::Str(s))) => vec![(s.clone(), n.pos)],
        Some((_, Yaml::Seq(items))) if items.iter().all(|i| i.as_str().is_some()) => items
            .iter()
            .map(|i| (i.as_str().unwrap_or_default().to_string(), i.pos))
            .collect(),
        Some((n, _)) => {
            errors.at(
                n.pos,
                &join(&path, "depends_on"),
                "expected a resource name or a list of resource names",
            );
            Vec::new()
        }
    };
    let policy_path = join(&path, "deletion_policy");
    let deletion_policy = match def.get("deletion_policy") {
        None => DeletionPolicy::Delete,
        Some(n) => match value(n, &policy_path, names, scope, errors)
            .as_value()
            .and_then(Value::as_str)
        {
            Some("Delete" | "delete") => DeletionPolicy::Delete,
            Some("Retain" | "retain") => DeletionPolicy::Retain,
            Some("Snapshot" | "snapshot") => DeletionPolicy::Snapshot,
            _ => {
                errors.at(n.pos, &policy_path, "expected Delete, Retain or Snapshot");
                DeletionPolicy::Delete
            }
        },
    };
    let update_policy = def.get("update_policy").map_or(Value::Null, Node::to_json);
    let timeout_secs = def
        .get("timeout")
        .and_then(|n| timeout(n, &join(&path, "timeout"), names, scope, errors));
    let resource = Resource {
        name: name.to_string(),
        type_name: type_name.to_string(),
        served_type: served,
        depends_on: Vec::new(),
        properties,
        metadata,
        deletion_policy,
        update_policy,
        timeout_secs,
        pos,
        property_pos,
    };
    Some((resource, enabled, depends_on))
}

/// A resource's `timeout` (a Kiln extension): how long each of its operations may take, polls
/// and retries included. A duration with its unit (`90s`, `10m`, `2h`), so that it is never
/// mistaken for minutes or seconds.
pub(super) fn timeout(
    node: &Node,
    path: &str,
    names: &Names,
    scope: &Scope,
    errors: &mut Errors,
) -> Option<u64> {
    let value = value(node, path, names, scope, errors);
    let text = match value.as_value() {
        Some(Value::String(s)) if s.trim().ends_with(|c: char| c.is_ascii_alphabetic()) => {
            s.clone()
        }
        Some(v) => {
            errors.at(
                node.pos,
                path,
                format!("expected a duration with its unit, such as 90s, 10m or 2h; got {v}"),
            );
            return None;
        }
        None => {
            errors.at(
                node.pos,
                path,
                "must be known when the stack is validated (a value or get_param)",
            );
            return None;
        }
    };
    match crate::duration::parse_secs(&text) {
        Ok(0) => {
            errors.at(node.pos, path, "a timeout must be longer than 0");
            None
        }
        Ok(secs) => Some(secs),
        Err(e) => {
            errors.at(node.pos, path, e);
            None
        }
    }
}
