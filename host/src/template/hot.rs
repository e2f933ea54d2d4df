//! Validation of a whole template: its sections, resources and outputs, with the environments
//! and parameter values applied, into a [`Stack`].

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::conditions::{self, decide};
use super::environment::Environment;
use super::error::{Errors, TemplateError, error, join};
use super::expr::{Expr, Names};
use super::functions::{Scope, fold};
use super::graph;
use super::parameters::{self, Supplied};
use super::schema::{ResourceSchema, TypeCatalog};
use super::yaml::{self, Node, Pos, Yaml};
use super::{DeletionPolicy, Output, Resource, SourceFile, Stack};

/// Every accepted `heat_template_version`: Heat's dates, then its release aliases.
pub const VERSIONS: [&str; 17] = [
    "2013-05-23",
    "2014-10-16",
    "2015-04-30",
    "2015-10-15",
    "2016-04-08",
    "2016-10-14",
    "2017-02-24",
    "2017-09-01",
    "2018-03-02",
    "2018-08-31",
    "2021-04-16",
    "newton",
    "ocata",
    "pike",
    "queens",
    "rocky",
    "wallaby",
];

const ALIASES: [(&str, &str); 6] = [
    ("newton", "2016-10-14"),
    ("ocata", "2017-02-24"),
    ("pike", "2017-09-01"),
    ("queens", "2018-03-02"),
    ("rocky", "2018-08-31"),
    ("wallaby", "2021-04-16"),
];

const SECTIONS: [&str; 7] = [
    "heat_template_version",
    "description",
    "parameter_groups",
    "parameters",
    "resources",
    "outputs",
    "conditions",
];
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
const OUTPUT_KEYS: [&str; 3] = ["value", "description", "condition"];
/// The first version with `conditions` and `condition`.
const CONDITIONS_SINCE: &str = "2016-10-14";

/// Validates a template with its environment files (later ones override earlier ones) and
/// `-P` values (which override both), checking resource types against `catalog`. Returns every
/// error found, sorted by file and line.
pub fn validate(
    template: &SourceFile,
    environments: &[SourceFile],
    parameters: &[(String, String)],
    catalog: &dyn TypeCatalog,
) -> Result<Stack, Vec<TemplateError>> {
    let mut list = Vec::new();
    let env = Environment::load(environments, &mut list);
    let stack = match yaml::parse(&template.text) {
        Ok(doc) => Some(check(template, &doc, &env, parameters, catalog, &mut list)),
        Err(es) => {
            list.extend(
                es.into_iter()
                    .map(|e| error(&template.name, e.pos, "", e.message)),
            );
            None
        }
    };
    match stack {
        Some(stack) if list.is_empty() => Ok(stack),
        _ => {
            list.sort();
            list.dedup();
            Err(list)
        }
    }
}

fn check(
    template: &SourceFile,
    doc: &Node,
    env: &Environment,
    given: &[(String, String)],
    catalog: &dyn TypeCatalog,
    list: &mut Vec<TemplateError>,
) -> Stack {
    let mut errors = Errors {
        file: &template.name,
        list,
    };
    let catalog = &super::group::WithBuiltins(catalog);
    let null = Node {
        pos: doc.pos,
        value: Yaml::Null,
    };
    let section = |name: &str| doc.get(name).unwrap_or(&null);
    if !matches!(doc.value, Yaml::Map(_)) {
        errors.at(
            doc.pos,
            "",
            format!("a template must be a mapping, got {}", doc.kind()),
        );
    }
    for (key, _) in doc.entries() {
        if !SECTIONS.contains(&key.name.as_str()) {
            errors.at(
                key.pos,
                &key.name,
                format!("unknown section (sections: {})", SECTIONS.join(", ")),
            );
        }
    }
    let version = version(doc, &mut errors);
    if let Some((key, _)) = doc.entries().iter().find(|(k, _)| k.name == "conditions")
        && version.as_str() < CONDITIONS_SINCE
    {
        errors.at(
            key.pos,
            "conditions",
            format!("needs heat_template_version {CONDITIONS_SINCE} or later"),
        );
    }
    let description = text(section("description"), "description", &mut errors);

    // Parameters: template default < parameter_defaults < environment parameters < -P.
    let declared = parameters::declare(section("parameters"), &mut errors);
    let param_names: BTreeSet<String> = declared.iter().map(|d| d.param.name.clone()).collect();
    let mut supplied: BTreeMap<String, Supplied> = BTreeMap::new();
    supplied.extend(
        env.parameter_defaults
            .iter()
            .filter(|(k, _)| param_names.contains(*k))
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    for (name, s) in &env.parameters {
        if param_names.contains(name) {
            supplied.insert(name.clone(), s.clone());
        } else {
            errors.list.push(error(
                &s.file,
                s.pos,
                &join("parameters", name),
                unknown_param(name, &param_names),
            ));
        }
    }
    let params_pos = doc
        .entries()
        .iter()
        .find(|(k, _)| k.name == "parameters")
        .map_or(Pos { line: 1, col: 1 }, |(k, _)| k.pos);
    for (name, value) in given {
        match declared.iter().find(|d| &d.param.name == name) {
            Some(d) => {
                supplied.insert(
                    name.clone(),
                    Supplied {
                        value: Value::String(value.clone()),
                        file: template.name.clone(),
                        pos: d.pos,
                        source: "-P",
                    },
                );
            }
            None => errors.at(
                params_pos,
                &join("parameters", name),
                format!("{} (given with -P)", unknown_param(name, &param_names)),
            ),
        }
    }
    let params = parameters::resolve(declared, &supplied, errors.list);
    let values: BTreeMap<String, Value> = params
        .iter()
        .map(|p| (p.name.clone(), p.value.clone()))
        .collect();
    parameter_groups(section("parameter_groups"), &param_names, &mut errors);

    // Types first: get_attr checks attribute names against them.
    let mut types: BTreeMap<String, ResourceSchema> = BTreeMap::new();
    let mut attributes: BTreeMap<String, Option<Vec<String>>> = BTreeMap::new();
    let resources_node = section("resources");
    if !resources_node.is_null() && !matches!(resources_node.value, Yaml::Map(_)) {
        errors.at(
            resources_node.pos,
            "resources",
            format!("expected a mapping, got {}", resources_node.kind()),
        );
    }
    let condition_names: BTreeSet<String> = section("conditions")
        .entries()
        .iter()
        .map(|(k, _)| k.name.clone())
        .collect();
    let empty = BTreeMap::new();
    // Groups become their members first: everything after sees ordinary resources.
    let no_conditions = BTreeMap::new();
    let expanded = super::group::expand(
        resources_node.entries(),
        &|t| env.map_type(t),
        &Names {
            version: &version,
            parameters: &param_names,
            resources: &empty,
            conditions: &condition_names,
            static_only: true,
        },
        &Scope {
            params: &values,
            conditions: &no_conditions,
            resolver: None,
        },
        &mut errors,
    );
    for (key, def) in &expanded {
        let served = def
            .get("type")
            .and_then(Node::as_str)
            .map(|t| env.map_type(t));
        let schema = served
            .as_deref()
            .and_then(|t| catalog.lookup(t))
            .map(ResourceSchema::from);
        // A group answers get_attr for any attribute its members have.
        let known = schema
            .as_ref()
            .filter(|s| s.type_name != super::group::GROUP_TYPE)
            .map(|s| s.attributes.clone());
        attributes.insert(key.name.clone(), known);
        if let Some(s) = schema {
            types.insert(s.type_name.clone(), s);
        }
    }

    let static_names = Names {
        version: &version,
        parameters: &param_names,
        resources: &empty,
        conditions: &condition_names,
        static_only: true,
    };
    let conditions =
        conditions::evaluate(section("conditions"), &static_names, &values, &mut errors);
    let names = Names {
        resources: &attributes,
        static_only: false,
        ..static_names
    };
    let scope = Scope {
        params: &values,
        conditions: &conditions,
        resolver: None,
    };

    let mut all: Vec<Checked> = Vec::new();
    for (key, def) in &expanded {
        if let Some(r) = resource(
            &key.name,
            key.pos,
            def,
            env,
            catalog,
            &names,
            &scope,
            &mut errors,
        ) {
            all.push(r);
        }
    }
    let enabled: BTreeSet<String> = all
        .iter()
        .filter(|(_, on, _)| *on)
        .map(|(r, _, _)| r.name.clone())
        .collect();
    let known: BTreeSet<String> = all.iter().map(|(r, _, _)| r.name.clone()).collect();
    let excluded = |name: &str| known.contains(name) && !enabled.contains(name);
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (r, _, explicit) in all.iter().filter(|(_, on, _)| *on) {
        let mut set = BTreeSet::new();
        for (target, at) in r
            .properties
            .resource_refs()
            .into_iter()
            .chain(r.metadata.resource_refs())
        {
            if excluded(target) {
                errors.at(
                    at.pos(),
                    &at.path,
                    format!("resource '{target}' is not created: its condition is false"),
                );
            }
            set.insert(target.to_string());
        }
        for (target, pos) in explicit {
            let path = join(&join("resources", &r.name), "depends_on");
            if !known.contains(target.as_str()) {
                let list: Vec<&str> = known.iter().map(String::as_str).collect();
                errors.at(
                    *pos,
                    &path,
                    format!(
                        "unknown resource '{target}' (resources: {})",
                        list.join(", ")
                    ),
                );
            } else if excluded(target) {
                errors.at(
                    *pos,
                    &path,
                    format!("resource '{target}' is not created: its condition is false"),
                );
            }
            set.insert(target.clone());
        }
        set.retain(|t| enabled.contains(t.as_str()));
        deps.insert(r.name.clone(), set);
    }
    let mut resources: BTreeMap<String, Resource> = BTreeMap::new();
    let mut template_order = Vec::new();
    for (mut r, on, _) in all {
        if on {
            r.depends_on = deps[&r.name].iter().cloned().collect();
            template_order.push(r.name.clone());
            resources.insert(r.name.clone(), r);
        }
    }
    let order = graph::order(&template_order, &deps).unwrap_or_else(|cycle| {
        let r = &resources[&cycle[0]];
        errors.at(
            r.pos,
            &join("resources", &r.name),
            format!("dependency cycle: {}", cycle.join(" -> ")),
        );
        Vec::new()
    });

    let outputs = outputs(
        section("outputs"),
        &version,
        &names,
        &scope,
        &excluded,
        &mut errors,
    );
    Stack {
        file: template.name.clone(),
        version,
        description,
        parameters: params,
        conditions,
        resources,
        order,
        outputs,
        types,
    }
}

fn unknown_param(name: &str, declared: &BTreeSet<String>) -> String {
    let list: Vec<&str> = declared.iter().map(String::as_str).collect();
    format!(
        "unknown parameter '{name}' (the template declares: {})",
        if list.is_empty() {
            "none".into()
        } else {
            list.join(", ")
        }
    )
}

/// The canonical date of `heat_template_version` (the newest when missing or wrong, so that
/// the rest of the template is still checked).
fn version(doc: &Node, errors: &mut Errors) -> String {
    let newest = "2021-04-16".to_string();
    let Some(node) = doc.get("heat_template_version") else {
        if matches!(doc.value, Yaml::Map(_)) {
            errors.at(
                doc.pos,
                "heat_template_version",
                "missing: a HOT template starts with heat_template_version",
            );
        }
        return newest;
    };
    let given = match &node.value {
        Yaml::Str(s) => s.clone(),
        _ => node.to_json().to_string(),
    };
    if let Some((_, date)) = ALIASES.iter().find(|(alias, _)| *alias == given) {
        return date.to_string();
    }
    if VERSIONS.contains(&given.as_str()) {
        return given;
    }
    errors.at(
        node.pos,
        "heat_template_version",
        format!("unknown version '{given}' (valid: {})", VERSIONS.join(", ")),
    );
    newest
}

fn text(node: &Node, path: &str, errors: &mut Errors) -> String {
    match &node.value {
        Yaml::Null => String::new(),
        Yaml::Str(s) => s.clone(),
        _ => {
            errors.at(
                node.pos,
                path,
                format!("expected a string, got {}", node.kind()),
            );
            String::new()
        }
    }
}

fn parameter_groups(node: &Node, declared: &BTreeSet<String>, errors: &mut Errors) {
    let groups = match &node.value {
        Yaml::Null => return,
        Yaml::Seq(groups) => groups,
        _ => {
            return errors.at(
                node.pos,
                "parameter_groups",
                format!("expected a list, got {}", node.kind()),
            );
        }
    };
    for (i, group) in groups.iter().enumerate() {
        let path = format!("parameter_groups[{i}]");
        for (k, _) in group.entries() {
            if !["label", "description", "parameters"].contains(&k.name.as_str()) {
                errors.at(
                    k.pos,
                    &path,
                    format!(
                        "unknown key '{}' (known: label, description, parameters)",
                        k.name
                    ),
                );
            }
        }
        let names = group.get("parameters").map(|p| &p.value);
        let Some(Yaml::Seq(names)) = names else {
            errors.at(
                group.pos,
                &path,
                "expected {label, description, parameters: [name, ...]}",
            );
            continue;
        };
        for n in names {
            if !n.as_str().is_some_and(|n| declared.contains(n)) {
                errors.at(
                    n.pos,
                    &join(&path, "parameters"),
                    format!("unknown parameter {}", n.to_json()),
                );
            }
        }
    }
}

/// A `condition` key of a resource or output; true when absent.
fn condition(
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

fn value(node: &Node, path: &str, names: &Names, scope: &Scope, errors: &mut Errors) -> Expr {
    let expr = Expr::parse(node, path, names, errors);
    fold(expr, scope, errors.file, errors.list)
}

/// A checked resource, whether its condition holds, and its `depends_on` with places.
type Checked = (Resource, bool, Vec<(String, Pos)>);

#[allow(clippy::too_many_arguments)]
fn resource(
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
fn timeout(
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

fn outputs(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{AttributeSchema, PropertySchema, PropertyType, TypeSchema};

    fn catalog() -> BTreeMap<String, TypeSchema> {
        let server = TypeSchema {
            type_name: "Test::Server".into(),
            description: String::new(),
            properties: vec![PropertySchema {
                name: "flavor".into(),
                description: String::new(),
                type_: PropertyType::String,
                required: true,
                default: None,
                update_allowed: false,
                immutable: false,
                constraints: Vec::new(),
            }],
            open_properties: false,
            attributes: vec![AttributeSchema {
                name: "ip".into(),
                description: String::new(),
            }],
        };
        BTreeMap::from([("Test::Server".to_string(), server)])
    }

    fn run(text: &str) -> Result<Stack, Vec<String>> {
        let file = SourceFile {
            name: "stack.yaml".into(),
            text: text.into(),
        };
        validate(&file, &[], &[], &catalog())
            .map_err(|es| es.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn order_and_dependencies() {
        let stack = run("heat_template_version: rocky\nresources:\n  b:\n    type: Test::Server\n    properties:\n      flavor: {get_attr: [a, ip]}\n  a:\n    type: Test::Server\n    properties: {flavor: small}\n").unwrap();
        assert_eq!(stack.order, ["a", "b"]);
        assert_eq!(stack.resources["b"].depends_on, ["a"]);
        assert_eq!(stack.version, "2018-08-31");
    }

    #[test]
    fn error_classes_name_file_line_and_path() {
        let errors = run("heat_template_version: 2018-08-31\nresources:\n  web:\n    type: Test::Server\n    properties:\n      size: 1\n  db:\n    type: Test::Nope\n    depends_on: web\n  c:\n    type: Test::Server\n    depends_on: c\n    properties: {flavor: x}\noutputs:\n  ip: {value: {get_attr: [web, mac]}}\n").unwrap_err();
        assert_eq!(
            errors,
            [
                "stack.yaml:6:7: resources.web.properties.flavor: required property is missing",
                "stack.yaml:6:13: resources.web.properties.size: unknown property of Test::Server (it has: flavor)",
                "stack.yaml:8:11: resources.db.type: unknown resource type 'Test::Nope': no plugin serves it",
                "stack.yaml:10:3: resources.c: dependency cycle: c -> c",
                "stack.yaml:15:32: outputs.ip.value.get_attr: resource 'web' has no attribute 'mac' (its type has: ip)",
            ]
        );
    }

    #[test]
    fn missing_version_and_unknown_section() {
        assert_eq!(
            run("resources: {}\nextra: 1\n").unwrap_err(),
            [
                "stack.yaml:1:1: heat_template_version: missing: a HOT template starts with heat_template_version",
                "stack.yaml:2:1: extra: unknown section (sections: heat_template_version, description, parameter_groups, parameters, resources, outputs, conditions)",
            ]
        );
    }
}
