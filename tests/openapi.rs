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
