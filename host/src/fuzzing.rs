//! What the fuzz targets run (`fuzz/`, `cargo fuzz`), kept in the library so that the suite
//! replays every saved crash and the corpus through the same code (`tests/fuzz.rs`). Each entry
//! takes any bytes, says whether they were accepted, must never panic, and asserts what has to
//! hold for every input: a validated stack survives its JSON round trip (engines store and
//! reload it) and evaluates without panicking; every error names its file; a config that parses
//! serialises and parses again (the `KILN_*` overrides go through that round trip).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::{Value, json};

use crate::config::{Config, TemplateLimits};
use crate::runtime::{
    AttributeSchema, Bounds, Constraint, PropertySchema, PropertyType, TypeSchema,
};
use crate::template::{Resolver, SourceFile, Stack, TemplateError, validate_within};

/// Smaller than the defaults so that one input stays fast (a group of 20,000 members is a
/// limit test, not a fuzz case); inputs past them still take the refusal paths.
fn limits() -> TemplateLimits {
    TemplateLimits {
        max_bytes: 256 * 1024,
        max_nodes: 50_000,
        max_alias_nodes: 5_000,
        max_depth: 64,
        max_resources: 200,
        max_concurrent: 1,
    }
}

/// A template: validate it; if it validates, round-trip and evaluate it.
pub fn template(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let file = source("stack.yaml", text);
    check(validate_within(&file, &[], &[], &*CATALOG, &limits()))
}

/// An environment file applied to a template that uses parameters of every type, a mapped
/// type and a group: the environment merge, the registry and parameter conversion.
pub fn environment(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let env = source("env.yaml", text);
    let stack = source("stack.yaml", ENV_TEMPLATE);
    check(validate_within(&stack, &[env], &[], &*CATALOG, &limits()))
}

/// A `kiln.toml`: parse and check it; a config that passes serialises, parses again to the
/// same thing, and takes an environment override.
pub fn config(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let Ok(config) = Config::parse(text, "kiln.toml") else {
        return false;
    };
    let again = toml::to_string(&config).expect("a checked config serialises");
    let reparsed = Config::parse(&again, "reserialised")
        .unwrap_or_else(|e| panic!("a checked config, serialised, is refused: {e}\n{again}"));
    assert_eq!(
        toml::to_string(&reparsed).expect("serialises"),
        again,
        "a config changes in its round trip"
    );
    let vars = [("KILN_ENGINE__WORKERS".to_string(), "3".to_string())];
    if let Err(e) = config.with_env(vars) {
        panic!("a checked config refuses a valid override: {e}");
    }
    true
}

fn source(name: &str, text: &str) -> SourceFile {
    SourceFile {
        name: name.into(),
        text: text.into(),
    }
}

/// Checks a validation's result; true when the input was accepted.
fn check(result: Result<Stack, Vec<TemplateError>>) -> bool {
    let stack = match result {
        Ok(stack) => stack,
        Err(errors) => {
            assert!(!errors.is_empty(), "refused with no error");
            for e in errors {
                let shown = e.to_string();
                assert!(
                    shown.starts_with("stack.yaml:") || shown.starts_with("env.yaml:"),
                    "an error that names no file: {shown}"
                );
            }
            return false;
        }
    };
    // What an engine stores is what every other engine reloads.
    let stored = serde_json::to_string(&stack).expect("a stack serialises");
    let reloaded: Stack = serde_json::from_str(&stored)
        .unwrap_or_else(|e| panic!("a stored stack does not reload: {e}\n{stored}"));
    assert_eq!(reloaded, stack, "a stack changes in its JSON round trip");
    for name in &stack.order {
        let _ = stack.properties(name, &Answers);
    }
    for output in &stack.outputs {
        let _ = stack.output(&output.name, &Answers);
    }
    true
}

/// Every resource done, with an attribute for every name (a map for `show`).
struct Answers;

impl Resolver for Answers {
    fn physical_id(&self, resource: &str) -> Option<String> {
        Some(format!("{resource}-id"))
    }
    fn attribute(&self, resource: &str, attribute: &str) -> Option<Value> {
        Some(match attribute {
            "show" => json!({"name": resource, "list": [1, 2], "map": {"k": "v"}}),
            "list" => json!(["a", "b"]),
            "map" => json!({"k": "v"}),
            _ => json!(format!("{resource}.{attribute}")),
        })
    }
    fn stack_parameter(&self, name: &str) -> Option<Value> {
        Some(json!(format!("pseudo:{name}")))
    }
}

/// The template the environment target runs against.
const ENV_TEMPLATE: &str = "heat_template_version: 2021-04-16
parameters:
  flavor: {type: string, default: small, constraints: [{allowed_values: [small, large]}]}
  count: {type: number, default: 2, constraints: [{range: {min: 0, max: 20}}]}
  names: {type: comma_delimited_list, default: 'a,b'}
  tags: {type: json, default: {}}
  on: {type: boolean, default: false}
  secret: {type: string, hidden: true, default: s3cret}
resources:
  server:
    type: My::Server
    properties:
      flavor: {get_param: flavor}
      size: {get_param: count}
      tags: {get_param: tags}
  group:
    type: OS::Heat::ResourceGroup
    properties:
      count: {get_param: count}
      resource_def:
        type: My::Server
        properties: {flavor: {get_param: flavor}, names: {get_param: names}}
outputs:
  ip: {value: {get_attr: [server, ip]}}
  on: {value: {get_param: on}}
";

/// A few types covering every property kind and constraint.
static CATALOG: LazyLock<BTreeMap<String, TypeSchema>> = LazyLock::new(|| {
    let prop = |name: &str, type_: PropertyType, required: bool| PropertySchema {
        name: name.into(),
        description: String::new(),
        type_,
        required,
        default: None,
        update_allowed: true,
        immutable: false,
        constraints: Vec::new(),
    };
    let bounds = |min, max| Bounds { min, max };
    let server = TypeSchema {
        type_name: "Test::Server".into(),
        description: String::new(),
        properties: vec![
            PropertySchema {
                constraints: vec![Constraint::AllowedPattern("[a-z0-9]+".into())],
                ..prop("flavor", PropertyType::String, true)
            },
            PropertySchema {
                constraints: vec![Constraint::Range(bounds(Some(0.0), Some(64.0)))],
                default: Some("1".into()),
                ..prop("size", PropertyType::Integer, false)
            },
            prop("ratio", PropertyType::Number, false),
            prop("on", PropertyType::Boolean, false),
            PropertySchema {
                constraints: vec![Constraint::Length(bounds(None, Some(5.0)))],
                ..prop("names", PropertyType::List, false)
            },
            prop("tags", PropertyType::Map, false),
            PropertySchema {
                constraints: vec![Constraint::AllowedValues(vec!["\"a\"".into(), "1".into()])],
                ..prop("any", PropertyType::Any, false)
            },
        ],
        open_properties: false,
        attributes: ["ip", "list", "map", "show"]
            .map(|name| AttributeSchema {
                name: name.into(),
                description: String::new(),
            })
            .to_vec(),
    };
    // Open stand-ins for the bundled types, so that the suite's templates are seeds that get
    // past type lookup.
    let open = |type_name: &str, attributes: &[&str]| TypeSchema {
        type_name: type_name.into(),
        description: String::new(),
        properties: vec![prop("value", PropertyType::Any, false)],
        open_properties: true,
        attributes: attributes
            .iter()
            .map(|name| AttributeSchema {
                name: (*name).into(),
                description: String::new(),
            })
            .collect(),
    };
    let mut catalog = BTreeMap::from([("Test::Server".to_string(), server)]);
    for t in [
        open("Test::Open", &["value"]),
        open("OS::Heat::None", &[]),
        open("OS::Heat::RandomString", &["value"]),
        open("OS::Heat::TestResource", &["output"]),
        open("Kiln::HTTP::Resource", &["id", "body"]),
    ] {
        catalog.insert(t.type_name.clone(), t);
    }
    catalog
});
