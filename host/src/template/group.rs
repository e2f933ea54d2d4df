//! `OS::Heat::ResourceGroup`, expanded when the template is validated into ordinary resources
//! the engine already knows how to create, update, replace and delete in parallel:
//!
//! - one member per index, named `NAME[i]`, from `resource_def` with `%index%` (or
//!   `index_var`) replaced by `i`; indices listed in `removal_policies` are skipped and never
//!   reused, so scaling down removes the highest indices unless told otherwise;
//! - the group itself, `NAME`, served by the engine (no plugin): it depends on every member
//!   and its attributes are `refs`, `refs_map` and, for each member attribute, the list of its
//!   values (`get_attr: [NAME, output]`);
//! - for `update_policy` `rolling_update` (or `batch_create`): members in batches of
//!   `max_batch_size` (fewer when `min_in_service` asks), each batch after the one before,
//!   with a pause node `NAME[pause-k]` between batches when `pause_time` is set: a durable
//!   timer (a job due later), which waits again only when the batch before it changed.
//!
//! Scaling is an update: members added are created, members removed are deleted in the
//! update's cleanup. Unlike Heat, the batch limits apply to every action on the members (Heat
//! applies `batch_create` to creates and `rolling_update` to updates).

use std::collections::BTreeSet;
use std::sync::LazyLock;

use serde_json::Value;

use super::error::Errors;
use super::expr::{Expr, Names};
use super::functions::Scope;
use super::schema::TypeCatalog;
use super::yaml::{Key, Node, Pos, Yaml};
use crate::runtime::TypeSchema;

/// The group's own type, served by the engine.
pub const GROUP_TYPE: &str = "OS::Heat::ResourceGroup";
/// A pause between batches, served by the engine.
pub const PAUSE_TYPE: &str = "Kiln::Internal::Pause";
/// More members than this is surely a mistake (a count off by orders of magnitude).
const MAX_COUNT: u64 = 10_000;

static BUILTINS: LazyLock<Vec<TypeSchema>> = LazyLock::new(|| {
    let open = |name: &str, description: &str| TypeSchema {
        type_name: name.into(),
        description: description.into(),
        properties: Vec::new(),
        open_properties: true,
        attributes: Vec::new(),
    };
    vec![
        open(
            GROUP_TYPE,
            "A group of like resources (expanded into its members).",
        ),
        open(PAUSE_TYPE, "A pause between batches of a group's members."),
    ]
});

/// Whether the engine serves `type_name` itself.
pub fn is_builtin(type_name: &str) -> bool {
    type_name == GROUP_TYPE || type_name == PAUSE_TYPE
}

/// The plugins' types and the engine's own.
pub(super) struct WithBuiltins<'a>(pub &'a dyn TypeCatalog);

impl TypeCatalog for WithBuiltins<'_> {
    fn lookup(&self, type_name: &str) -> Option<&TypeSchema> {
        BUILTINS
            .iter()
            .find(|t| t.type_name == type_name)
            .or_else(|| self.0.lookup(type_name))
    }
}

const GROUP_PROPERTIES: [&str; 4] = ["count", "resource_def", "removal_policies", "index_var"];

/// The template's resources with every group replaced by its members, pause nodes and the
/// group node. `map_type` maps a type through the environment's registry.
pub(super) fn expand(
    entries: &[(Key, Node)],
    map_type: &dyn Fn(&str) -> String,
    names: &Names,
    scope: &Scope,
    errors: &mut Errors,
) -> Vec<(Key, Node)> {
    let taken: BTreeSet<&str> = entries.iter().map(|(k, _)| k.name.as_str()).collect();
    let mut out = Vec::new();
    for (key, def) in entries {
        let is_group = def
            .get("type")
            .and_then(Node::as_str)
            .is_some_and(|t| map_type(t) == GROUP_TYPE);
        if !is_group {
            out.push((key.clone(), def.clone()));
            continue;
        }
        match Group::parse(&key.name, def, names, scope, errors) {
            Some(group) => {
                let expanded = group.expand(key, def);
                for (k, _) in &expanded[..expanded.len() - 1] {
                    if taken.contains(k.name.as_str()) {
                        errors.at(
                            k.pos,
                            &format!("resources.{}", k.name),
                            format!("the name is taken by a member of the group '{}'", key.name),
                        );
                    }
                }
                out.extend(expanded);
            }
            // Keep the name known, so that references to it report no second error.
            None => out.push((key.clone(), def.clone())),
        }
    }
    out
}

struct Group<'a> {
    name: &'a str,
    indices: Vec<u64>,
    index_var: String,
    def: &'a Node,
    batch: Option<Batches>,
}

struct Batches {
    size: usize,
    pause_secs: f64,
}

impl<'a> Group<'a> {
    fn parse(
        name: &'a str,
        def: &'a Node,
        names: &Names,
        scope: &Scope,
        errors: &mut Errors,
    ) -> Option<Self> {
        let path = format!("resources.{name}.properties");
        let null = Node {
            pos: def.pos,
            value: Yaml::Null,
        };
        let props = def.get("properties").unwrap_or(&null);
        for (k, _) in props.entries() {
            if !GROUP_PROPERTIES.contains(&k.name.as_str()) {
                errors.at(
                    k.pos,
                    &path,
                    format!(
                        "unknown property '{}' of {GROUP_TYPE} (it has: {})",
                        k.name,
                        GROUP_PROPERTIES.join(", ")
                    ),
                );
            }
        }
        let count = match props.get("count") {
            None => 1,
            Some(n) => {
                let at = format!("{path}.count");
                let v = static_value(n, &at, names, scope, errors)?;
                match as_count(&v) {
                    Some(c) if c <= MAX_COUNT => c,
                    Some(c) => {
                        errors.at(
                            n.pos,
                            &at,
                            format!("{c} members is over the limit of {MAX_COUNT}"),
                        );
                        return None;
                    }
                    None => {
                        errors.at(
                            n.pos,
                            &at,
                            format!("expected a whole number of members, got {v}"),
                        );
                        return None;
                    }
                }
            }
        };
        let Some(resource_def) = props.get("resource_def") else {
            errors.at(
                props.pos,
                &path,
                "resource_def is missing: what each member is",
            );
            return None;
        };
        if resource_def.get("type").and_then(Node::as_str).is_none() {
            errors.at(
                resource_def.pos,
                &format!("{path}.resource_def"),
                "expected a mapping with a type (and properties)",
            );
            return None;
        }
        let index_var = match props.get("index_var") {
            None => "%index%".to_string(),
            Some(n) => match n.as_str() {
                Some(s) if !s.is_empty() => s.to_string(),
                _ => {
                    errors.at(
                        n.pos,
                        &format!("{path}.index_var"),
                        "expected a non-empty string",
                    );
                    return None;
                }
            },
        };
        let mut removed = BTreeSet::new();
        if let Some(policies) = props.get("removal_policies") {
            let at = format!("{path}.removal_policies");
            let v = static_value(policies, &at, names, scope, errors)?;
            let lists = v.as_array().map(|a| {
                a.iter()
                    .map(|p| p.get("resource_list").and_then(Value::as_array))
                    .collect::<Option<Vec<_>>>()
            });
            let Some(Some(lists)) = lists else {
                errors.at(
                    policies.pos,
                    &at,
                    "expected a list of {resource_list: [member index, ...]}",
                );
                return None;
            };
            for item in lists.into_iter().flatten() {
                match as_count(item) {
                    Some(i) => {
                        removed.insert(i);
                    }
                    None => errors.at(
                        policies.pos,
                        &at,
                        format!("expected a member index, got {item}"),
                    ),
                }
            }
        }
        let indices: Vec<u64> = (0..)
            .filter(|i| !removed.contains(i))
            .take(count as usize)
            .collect();
        let batch = batches(name, def, count, names, scope, errors);
        Some(Self {
            name,
            indices,
            index_var,
            def,
            batch,
        })
    }

    /// Members (in batches), pause nodes, and last the group node.
    fn expand(&self, key: &Key, group_def: &Node) -> Vec<(Key, Node)> {
        let pos = key.pos;
        let resource_def = self
            .def
            .get("properties")
            .and_then(|p| p.get("resource_def"))
            .expect("parsed");
        let members: Vec<(u64, String)> = self
            .indices
            .iter()
            .map(|i| (*i, format!("{}[{i}]", self.name)))
            .collect();
        let size = self.batch.as_ref().map_or(members.len().max(1), |b| b.size);
        let explicit: Vec<Node> = match group_def.get("depends_on").map(|n| &n.value) {
            Some(Yaml::Str(_)) => vec![group_def.get("depends_on").cloned().expect("present")],
            Some(Yaml::Seq(items)) => items.clone(),
            _ => Vec::new(),
        };
        let mut out = Vec::new();
        let mut before: Vec<Node> = Vec::new();
        for (k, batch) in members.chunks(size).enumerate() {
            let mut waits = explicit.clone();
            let pause = self.batch.as_ref().map_or(0.0, |b| b.pause_secs);
            if k > 0 && pause > 0.0 {
                let name = format!("{}[pause-{k}]", self.name);
                let props = map(
                    pos,
                    vec![
                        (
                            "seconds",
                            Node {
                                pos,
                                value: Yaml::Float(pause),
                            },
                        ),
                        ("after", seq(pos, before.clone())),
                    ],
                );
                out.push(resource(
                    &name,
                    pos,
                    vec![("type", text(pos, PAUSE_TYPE)), ("properties", props)],
                    group_def,
                ));
                waits.push(text(pos, &name));
            } else if k > 0 {
                let previous = &members[(k - 1) * size..k * size];
                waits.extend(previous.iter().map(|(_, n)| text(pos, n)));
            }
            before.clear();
            for (i, name) in batch {
                let def = with_index(resource_def, &self.index_var, *i);
                let mut entries: Vec<(&str, Node)> =
                    vec![("type", def.get("type").cloned().expect("checked"))];
                for key in ["properties", "metadata"] {
                    if let Some(n) = def.get(key) {
                        entries.push((key, n.clone()));
                    }
                }
                if !waits.is_empty() {
                    entries.push(("depends_on", seq(pos, waits.clone())));
                }
                for key in ["deletion_policy", "timeout"] {
                    if let Some(n) = group_def.get(key) {
                        entries.push((key, n.clone()));
                    }
                }
                out.push(resource(name, pos, entries, group_def));
                before.push(member_view(pos, name));
            }
        }
        let all: Vec<Node> = members.iter().map(|(_, n)| member_view(pos, n)).collect();
        let mut entries = vec![
            ("type", text(pos, GROUP_TYPE)),
            ("properties", map(pos, vec![("members", seq(pos, all))])),
        ];
        if let Some(m) = group_def.get("metadata") {
            entries.push(("metadata", m.clone()));
        }
        if let Some(d) = group_def.get("depends_on") {
            entries.push(("depends_on", d.clone()));
        }
        out.push(resource(self.name, pos, entries, group_def));
        out
    }
}

/// The batches of `update_policy.rolling_update` (else `batch_create`), if any.
fn batches(
    name: &str,
    def: &Node,
    count: u64,
    names: &Names,
    scope: &Scope,
    errors: &mut Errors,
) -> Option<Batches> {
    let policy = def.get("update_policy")?;
    let (kind, node) = ["rolling_update", "batch_create"]
        .into_iter()
        .find_map(|k| policy.get(k).map(|n| (k, n)))?;
    let path = format!("resources.{name}.update_policy.{kind}");
    let v = static_value(node, &path, names, scope, errors)?;
    let number = |key: &str| {
        v.get(key)
            .and_then(|x| x.as_f64().or_else(|| x.as_str()?.parse().ok()))
    };
    let max = number("max_batch_size").unwrap_or(1.0);
    let min_in_service = number("min_in_service").unwrap_or(0.0);
    let pause_secs = number("pause_time").unwrap_or(0.0);
    if max < 1.0 || min_in_service < 0.0 || pause_secs < 0.0 {
        errors.at(
            node.pos,
            &path,
            "max_batch_size must be at least 1; min_in_service and pause_time not negative",
        );
        return None;
    }
    // Keep at least min_in_service members out of each batch (never less than one at a time).
    let room = (count as f64 - min_in_service).max(1.0);
    Some(Batches {
        size: max.min(room).floor() as usize,
        pause_secs,
    })
}

fn static_value(
    node: &Node,
    path: &str,
    names: &Names,
    scope: &Scope,
    errors: &mut Errors,
) -> Option<Value> {
    if refers_to_resources(node) {
        errors.at(
            node.pos,
            path,
            "must be known when the stack is validated (a value or get_param), not from \
             another resource",
        );
        return None;
    }
    let before = errors.list.len();
    let expr = super::resource_def::evaluate(node, path, names, scope, errors);
    if errors.list.len() > before {
        return None;
    }
    match expr {
        Expr::Value(v) => Some(v),
        _ => {
            errors.at(
                node.pos,
                path,
                "must be known when the stack is validated (a value or get_param), not from \
                 another resource",
            );
            None
        }
    }
}

fn refers_to_resources(node: &Node) -> bool {
    match &node.value {
        Yaml::Map(entries) => entries.iter().any(|(k, v)| {
            matches!(k.name.as_str(), "get_attr" | "get_resource") || refers_to_resources(v)
        }),
        Yaml::Seq(items) => items.iter().any(refers_to_resources),
        _ => false,
    }
}

fn as_count(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `{name, id: {get_resource}, attributes: {get_attr: [.., show]}}`: what the group node and
/// pause nodes resolve about a member, so that they change when it does.
fn member_view(pos: Pos, member: &str) -> Node {
    map(
        pos,
        vec![
            ("name", text(pos, member)),
            ("id", map(pos, vec![("get_resource", text(pos, member))])),
            (
                "attributes",
                map(
                    pos,
                    vec![(
                        "get_attr",
                        seq(pos, vec![text(pos, member), text(pos, "show")]),
                    )],
                ),
            ),
        ],
    )
}

/// A resource definition; the group's `condition` applies to everything it expands to.
fn resource(name: &str, pos: Pos, mut entries: Vec<(&str, Node)>, group_def: &Node) -> (Key, Node) {
    if let Some(c) = group_def.get("condition") {
        entries.push(("condition", c.clone()));
    }
    (
        Key {
            name: name.to_string(),
            pos,
        },
        map(pos, entries),
    )
}

fn with_index(node: &Node, var: &str, i: u64) -> Node {
    let value = match &node.value {
        Yaml::Str(s) => Yaml::Str(s.replace(var, &i.to_string())),
        Yaml::Seq(items) => Yaml::Seq(items.iter().map(|n| with_index(n, var, i)).collect()),
        Yaml::Map(entries) => Yaml::Map(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), with_index(v, var, i)))
                .collect(),
        ),
        other => other.clone(),
    };
    Node {
        pos: node.pos,
        value,
    }
}

fn text(pos: Pos, s: &str) -> Node {
    Node {
        pos,
        value: Yaml::Str(s.to_string()),
    }
}

fn seq(pos: Pos, items: Vec<Node>) -> Node {
    Node {
        pos,
        value: Yaml::Seq(items),
    }
}

fn map(pos: Pos, entries: Vec<(&str, Node)>) -> Node {
    Node {
        pos,
        value: Yaml::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    (
                        Key {
                            name: k.to_string(),
                            pos,
                        },
                        v,
                    )
                })
                .collect(),
        ),
    }
}
