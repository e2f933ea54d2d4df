//! The OpenAPI document the API serves at /openapi.json (`kiln::api::OPENAPI`, the text of
//! host/src/api/openapi.json): valid OpenAPI 3.1 by `openapi-spec-validator` (installed by
//! scripts/setup-tests), describing exactly the operations the router is built from
//! (`kiln::api::routes()`), and with every `$ref` pointing at a component that exists.

// Only the skip log of the shared support code (the rest needs far more than this test).
#[path = "support/skip.rs"]
mod skip;

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

/// The operations a Path Item can hold.
const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn document() -> Value {
    serde_json::from_str(kiln::api::OPENAPI)
        .unwrap_or_else(|e| panic!("host/src/api/openapi.json is not JSON: {e}"))
}

/// Whether `python3 -m openapi_spec_validator` can run here.
fn validator_available() -> bool {
    Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .output()
        .is_ok_and(|out| out.status.success())
}

#[test]
fn document_is_valid_openapi() {
    if !validator_available() {
        // Under CI this panics: there the validator must be installed.
        skip::skipped(
            "python3 with openapi-spec-validator not installed (scripts/setup-tests installs it)",
        );
        return;
    }
    // Validate the text compiled into the binary, which is what /openapi.json serves.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openapi.json");
    std::fs::write(&path, kiln::api::OPENAPI).unwrap();
    let out = Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&path)
        .output()
        .expect("run python3 -m openapi_spec_validator");
    if !out.status.success() {
        // Its message on a bad reference repeats the whole document: keep the start of it.
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text += &String::from_utf8_lossy(&out.stderr);
        if text.len() > 8000 {
            let cut = text.floor_char_boundary(8000);
            text.truncate(cut);
            text += "\n... (cut)";
        }
        panic!(
            "openapi-spec-validator rejects host/src/api/openapi.json ({}):\n{text}",
            out.status
        );
    }
}

#[test]
fn document_matches_the_routes() {
    let doc = document();
    let paths = doc["paths"]
        .as_object()
        .expect("the document has a `paths` object");
    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let routes = kiln::api::routes();
    let routed: BTreeSet<(String, String)> = routes
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        routed.len(),
        routes.len(),
        "kiln::api::routes() lists an operation twice"
    );
    let show = |set: Vec<&(String, String)>| {
        set.iter()
            .map(|(m, p)| format!("\n  {m} {p}"))
            .collect::<String>()
    };
    let missing: Vec<_> = routed.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routed).collect();
    let mut problems = String::new();
    if !missing.is_empty() {
        problems += &format!("\nrouted but not in openapi.json:{}", show(missing));
    }
    if !extra.is_empty() {
        problems += &format!(
            "\nin openapi.json but not routed (kiln::api::routes()):{}",
            show(extra)
        );
    }
    assert!(
        problems.is_empty(),
        "host/src/api/openapi.json does not match the routes:{problems}"
    );
}

/// Every `$ref` in `value` (found at JSON pointer `at`), with where it is.
fn refs<'a>(value: &'a Value, at: &str, out: &mut Vec<(String, &'a Value)>) {
    match value {
        Value::Object(map) => {
            if let Some(target) = map.get("$ref") {
                out.push((at.to_string(), target));
            }
            for (key, v) in map {
                let key = key.replace('~', "~0").replace('/', "~1");
                refs(v, &format!("{at}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                refs(v, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_schema_reference_resolves() {
    let doc = document();
    let mut found = Vec::new();
    refs(&doc, "", &mut found);
    assert!(
        found.len() > 10,
        "expected the document to use components, found {} $ref",
        found.len()
    );
    let broken: Vec<String> = found
        .iter()
        .filter_map(|(at, target)| match target.as_str() {
            Some(r) if r.starts_with("#/components/") && doc.pointer(&r[1..]).is_some() => None,
            Some(r) => Some(format!("{at}: {r} names no component")),
            None => Some(format!("{at}: $ref is not a string: {target}")),
        })
        .collect();
    assert!(
        broken.is_empty(),
        "host/src/api/openapi.json has references that resolve to nothing:\n  {}",
        broken.join("\n  ")
    );
}

/// The properties of schema `name`, and those it requires.
fn properties(doc: &Value, name: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let schema = &doc["components"]["schemas"][name];
    let props = schema["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("schema {name} has no properties"))
        .keys()
        .cloned()
        .collect();
    let required = schema["required"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|k| k.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    (props, required)
}

/// A wire value fully filled in (every optional field set) has exactly the schema's properties,
/// and those it may leave out (`optional`) are the ones the schema does not require.
fn assert_shape(doc: &Value, name: &str, full: impl serde::Serialize, optional: &[&str]) {
    let value = serde_json::to_value(full).unwrap();
    let keys: BTreeSet<String> = value.as_object().unwrap().keys().cloned().collect();
    let (props, required) = properties(doc, name);
    assert_eq!(
        keys, props,
        "the fields of the wire type differ from the properties of schema {name} in \
         host/src/api/openapi.json"
    );
    let always: BTreeSet<String> = keys
        .iter()
        .filter(|k| !optional.contains(&k.as_str()))
        .cloned()
        .collect();
    assert_eq!(always, required, "schema {name}: required properties");
}

/// The names schema `name` lists for `property`.
fn enum_of(doc: &Value, name: &str, property: &str) -> Vec<String> {
    doc["components"]["schemas"][name]["properties"][property]["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("schema {name}.{property} lists no enum"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn names<T: std::fmt::Display>(all: &[T]) -> Vec<String> {
    all.iter().map(ToString::to_string).collect()
}

/// The document cannot drift from what the API sends: the wire types' fields
/// (`kiln::service::wire`) and the model's names (`kiln::model`) are what it says.
#[test]
fn document_matches_the_wire_types_and_the_model() {
    use kiln::model::{Action, EventStatus, Liveness, OnFailure, PlannedAction, Status};
    use kiln::service::wire::{Engine, Event, Resource, Stack};
    let doc = document();
    let stack = Stack {
        id: "id".into(),
        name: "web".into(),
        project: "default".into(),
        action: Action::Create,
        status: Status::Complete,
        status_reason: String::new(),
        traversal: 1,
        created_at: 0,
        updated_at: 0,
        cancel_requested_at: Some(0),
        on_failure: OnFailure::Stop,
        deadline_at: Some(0),
    };
    assert_shape(
        &doc,
        "Stack",
        &stack,
        &["cancel_requested_at", "deadline_at"],
    );
    let resource = Resource {
        name: "a".into(),
        type_name: "OS::Heat::None".into(),
        action: Action::Create,
        status: Status::Complete,
        status_reason: String::new(),
        physical_id: Some("p".into()),
        attributes: Some(Value::Null),
        updated_at: 0,
    };
    assert_shape(&doc, "Resource", &resource, &[]);
    let event = Event {
        id: 1,
        resource: Some("a".into()),
        action: Action::Create,
        status: EventStatus::Complete,
        reason: String::new(),
        physical_id: Some("p".into()),
        engine: Some("e".into()),
        at: 0,
    };
    assert_shape(&doc, "Event", &event, &[]);
    let engine = Engine {
        id: "e".into(),
        host: "h".into(),
        pid: 1,
        version: "v".into(),
        status: Liveness::Up,
        started_at: 0,
        heartbeat_at: 0,
        heartbeat_age_ms: 0,
        jobs_in_flight: 0,
        locks_held: 0,
        leader: false,
    };
    assert_shape(&doc, "Engine", &engine, &[]);

    // A stack's action is never INIT (only a resource not acted on yet is).
    let stack_actions: Vec<String> = names(Action::ALL)
        .into_iter()
        .filter(|a| a != "INIT")
        .collect();
    assert_eq!(enum_of(&doc, "Stack", "action"), stack_actions);
    for (schema, property, all) in [
        ("Stack", "status", names(Status::ALL)),
        ("Stack", "on_failure", names(OnFailure::ALL)),
        ("Resource", "action", names(Action::ALL)),
        ("Resource", "status", names(Status::ALL)),
        ("GraphNode", "action", names(Action::ALL)),
        ("GraphNode", "status", names(Status::ALL)),
        ("Event", "action", names(Action::ALL)),
        ("Event", "status", names(EventStatus::ALL)),
        ("Engine", "status", names(Liveness::ALL)),
        ("PlannedChange", "action", names(PlannedAction::ALL)),
    ] {
        assert_eq!(enum_of(&doc, schema, property), all, "{schema}.{property}");
    }
}
