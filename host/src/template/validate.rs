//! Validation of a whole template: its sections, resources and outputs, with the environments
//! and parameter values applied, into a [`Stack`]. Each resource is checked by `resource_def.rs`,
//! the outputs by `outputs.rs`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::conditions;
use super::environment::Environment;
use super::error::{Errors, TemplateError, error, join};
use super::expr::Names;
use super::functions::Scope;
use super::graph;
use super::outputs::outputs;
use super::parameters::{self, Supplied};
use super::resource_def::{Checked, resource};
use super::schema::{ResourceSchema, TypeCatalog};
use super::version::{CONDITIONS_SINCE, version};
use super::yaml::{self, Key, Node, Pos, Yaml};
use super::{Resource, SourceFile, Stack};
use crate::config::TemplateLimits;

const SECTIONS: [&str; 7] = [
    "heat_template_version",
    "description",
    "parameter_groups",
    "parameters",
    "resources",
    "outputs",
    "conditions",
];

/// Validates a template with its environment files (later ones override earlier ones) and
/// `-P` values (which override both), checking resource types against `catalog`. Returns every
/// error found, sorted by file and line.
pub fn validate(
    template: &SourceFile,
    environments: &[SourceFile],
    parameters: &[(String, String)],
    catalog: &dyn TypeCatalog,
) -> Result<Stack, Vec<TemplateError>> {
    validate_within(
        template,
        environments,
        parameters,
        catalog,
        &TemplateLimits::default(),
    )
}

/// [`validate`] within `limits` (`[templates]` of kiln.toml) rather than the defaults.
pub fn validate_within(
    template: &SourceFile,
    environments: &[SourceFile],
    parameters: &[(String, String)],
    catalog: &dyn TypeCatalog,
    limits: &TemplateLimits,
) -> Result<Stack, Vec<TemplateError>> {
    let mut list = Vec::new();
    let env = Environment::load(environments, limits, &mut list);
    let stack = match yaml::parse(&template.text, limits) {
        Ok(doc) => {
            let stack = check(template, &doc, &env, parameters, catalog, &mut list);
            let n = stack.resources.len() as u64;
            if n > limits.max_resources {
                let pos = doc.get("resources").map_or(doc.pos, |r| r.pos);
                list.push(error(
                    &template.name,
                    pos,
                    "resources",
                    format!(
                        "{n} resources (group members counted), more than \
                         templates.max_resources ({})",
                        limits.max_resources
                    ),
                ));
            }
            Some(stack)
        }
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
        stack => {
            // A message about a property may quote a hidden parameter's value.
            if let Some(stack) = stack {
                let secrets = stack.secrets();
                for e in &mut list {
                    *e = secrets.error(std::mem::take(e));
                }
            }
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
    let supplied = supplied(
        doc,
        &declared,
        &param_names,
        env,
        template,
        given,
        &mut errors,
    );
    let params = parameters::resolve(declared, &supplied, errors.list);
    let values: BTreeMap<String, Value> = params
        .iter()
        .map(|p| (p.name.clone(), p.value.clone()))
        .collect();
    parameter_groups(section("parameter_groups"), &param_names, &mut errors);

    // Types first: get_attr checks attribute names against them.
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
    let (types, attributes) = types_of(&expanded, env, catalog);

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
    let (deps, enabled, known) = dependencies(&all, &mut errors);
    let excluded = |name: &str| known.contains(name) && !enabled.contains(name);
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

/// The schema of each type the resources use, and the attributes each resource has (None for a
/// group, which answers for any attribute of its members, or for an unknown type).
#[allow(clippy::type_complexity)]
fn types_of(
    expanded: &[(Key, Node)],
    env: &Environment,
    catalog: &dyn TypeCatalog,
) -> (
    BTreeMap<String, ResourceSchema>,
    BTreeMap<String, Option<Vec<String>>>,
) {
    let mut types: BTreeMap<String, ResourceSchema> = BTreeMap::new();
    let mut attributes: BTreeMap<String, Option<Vec<String>>> = BTreeMap::new();
    for (key, def) in expanded {
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
    (types, attributes)
}

/// Each enabled resource's dependencies (the resources its properties and metadata refer to,
/// and its `depends_on`), with an error for each reference to an unknown resource or to one
/// whose condition is false; and the names of the enabled and of all resources.
#[allow(clippy::type_complexity)]
fn dependencies(
    all: &[Checked],
    errors: &mut Errors,
) -> (
    BTreeMap<String, BTreeSet<String>>,
    BTreeSet<String>,
    BTreeSet<String>,
) {
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
    (deps, enabled, known)
}

/// The values given for the declared parameters, by precedence: the environments'
/// `parameter_defaults`, then their `parameters`, then `-P`; a value for a parameter the
/// template does not declare is an error naming where it was given.
fn supplied(
    doc: &Node,
    declared: &[parameters::Declared],
    param_names: &BTreeSet<String>,
    env: &Environment,
    template: &SourceFile,
    given: &[(String, String)],
    errors: &mut Errors,
) -> BTreeMap<String, Supplied> {
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
                unknown_param(name, param_names),
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
                format!("{} (given with -P)", unknown_param(name, param_names)),
            ),
        }
    }
    supplied
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

pub(super) fn text(node: &Node, path: &str, errors: &mut Errors) -> String {
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
