//! HOT templates against the bundled plugins' real schemas: a template using every function
//! (validated, stored as JSON, reloaded and evaluated), each error class with its file, line
//! and path, environments, and `kiln validate` run as a process.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use kiln::config::Config;
use kiln::plugin_set::PluginSet;
use kiln::template::{EvalError, Resolver, SourceFile, Stack, TemplateError, validate};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

static PLUGINS: OnceCell<PluginSet> = OnceCell::const_new();

async fn plugins() -> &'static PluginSet {
    PLUGINS
        .get_or_init(|| async {
            let mut config = Config::default();
            config.runtime.cache_dir = Some(support::shared_cache());
            PluginSet::load(&config)
                .await
                .expect("bundled plugins load")
        })
        .await
}

fn file(name: &str) -> SourceFile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/templates")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    SourceFile {
        name: name.to_string(),
        text,
    }
}

async fn check(
    template: &str,
    envs: &[&str],
    params: &[(&str, &str)],
) -> Result<Stack, Vec<TemplateError>> {
    let envs: Vec<SourceFile> = envs.iter().map(|e| file(e)).collect();
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    validate(&file(template), &envs, &params, plugins().await)
}

async fn errors(template: &str, envs: &[&str], params: &[(&str, &str)]) -> Vec<String> {
    match check(template, envs, params).await {
        Ok(_) => panic!("{template} validated"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// Resources that are done, with their attributes.
#[derive(Default)]
struct Done(BTreeMap<String, Value>);

impl Resolver for Done {
    fn physical_id(&self, resource: &str) -> Option<String> {
        self.0
            .contains_key(resource)
            .then(|| format!("id-{resource}"))
    }
    fn attribute(&self, resource: &str, attribute: &str) -> Option<Value> {
        let attrs = self.0.get(resource)?;
        if attribute == "show" {
            Some(attrs.clone())
        } else {
            attrs.get(attribute).cloned()
        }
    }
    fn stack_parameter(&self, name: &str) -> Option<Value> {
        (name == "OS::stack_name").then(|| json!("demo"))
    }
}

#[tokio::test]
async fn every_function_round_trips_and_evaluates() {
    let stack = check("all_functions.yaml", &[], &[]).await.expect("valid");
    // Stored as JSON and reloaded, as the engine does.
    let stack: Stack = serde_json::from_str(&serde_json::to_string(&stack).unwrap()).unwrap();
    assert_eq!(stack.version, "2021-04-16");
    assert_eq!(stack.order, ["rand", "box", "test"]);
    assert_eq!(stack.resource("box").unwrap().depends_on, ["rand"]);
    assert_eq!(stack.resource("test").unwrap().depends_on, ["box"]);
    assert!(
        stack.resource("skipped").is_none(),
        "its condition is false"
    );
    assert_eq!(
        stack.conditions,
        BTreeMap::from([
            ("both".into(), true),
            ("either".into(), true),
            ("is_off".into(), false),
            ("is_on".into(), true)
        ])
    );

    let mut done = Done::default();
    let rand = stack.properties("rand", &done).unwrap();
    assert_eq!(rand["length"], 8);
    assert_eq!(
        rand["sequence"], "lettersdigits",
        "schema default filled in"
    );
    assert_eq!(rand["salt"].as_str().unwrap().len(), 64);
    let err = stack.properties("box", &done).unwrap_err();
    assert!(
        matches!(&err, EvalError::NotReady { resource, .. } if resource == "rand"),
        "{err}"
    );

    done.0.insert("rand".into(), json!({"value": "Xyz"}));
    // `path` (a get_attr path into a string) is null, and a null property counts as unset.
    let props = stack.properties("box", &done).unwrap();
    assert_eq!(
        props,
        json!({
            "joined": "alpha,beta,gamma",
            "replaced": "example.org:8080/Xyz",
            "strict": "a-b",
            "split": "y",
            "repeated": ["alpha:1", "alpha:2", "beta:1", "beta:2"],
            "zipped": [{"k1": "x"}, {"k2": "y"}],
            "merged": {"a": 3, "b": 2},
            "renamed": {"K1": "v1", "k2": "V2"},
            "chosen": "Xyz",
            "unchosen": "no",
            "has": true,
            "zone": "z1",
            "second": "beta",
            "md5": "900150983cd24fb0d6963f7d28e17f72",
            "lists": [1, 2, 2, 3],
            "unique": [1, 2, 3],
            "either": 1,
            "stack": "demo",
        })
    );
    let test = stack.properties("test", &done).unwrap();
    assert_eq!(
        test["value"], "8",
        "a number for a string property becomes a string"
    );
    assert_eq!(test["fail"], false);
    assert_eq!(test["wait_secs"], 2);

    done.0.insert("box".into(), json!({"a": 1}));
    assert_eq!(stack.output("random", &done).unwrap(), "Xyz");
    assert_eq!(stack.output("all", &done).unwrap(), json!({"a": 1}));
    assert_eq!(stack.output("gone", &done).unwrap(), Value::Null);
    assert!(matches!(
        stack.output("nope", &done),
        Err(EvalError::Unknown(_))
    ));
    let secret = stack
        .parameters
        .iter()
        .find(|p| p.name == "secret")
        .unwrap();
    assert!(secret.hidden);
}

#[tokio::test]
async fn properties_from_resources_are_checked_when_evaluated() {
    let stack = check("nova.yaml", &["env_registry.yaml"], &[])
        .await
        .expect("valid");
    let done = Done(BTreeMap::from([(
        "other".into(),
        json!({"output": ["not", "a", "string"]}),
    )]));
    match stack.properties("server", &done).unwrap_err() {
        EvalError::Invalid(errors) => assert_eq!(
            errors[0].to_string(),
            concat!(
                "nova.yaml:6:14: resources.server.properties.value: ",
                "expected a string, got a list [\"not\",\"a\",\"string\"]"
            )
        ),
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn several_errors_are_all_reported_in_order() {
    assert_eq!(
        errors("many_errors.yaml", &[], &[]).await,
        [
            "many_errors.yaml:3:1: parametrs: unknown section (sections: heat_template_version, description, parameter_groups, parameters, resources, outputs, conditions)",
            "many_errors.yaml:7:14: parameters.size: does not satisfy the constraint: Size is 1 to 10. (value 100 from the default)",
            "many_errors.yaml:16:15: resources.text.properties.colour: unknown property of OS::Heat::RandomString (it has: character_classes, character_sequences, length, salt, sequence)",
            "many_errors.yaml:20:32: resources.test.properties.value.get_attr: resource 'text' has no attribute 'nope' (its type has: value)",
            "many_errors.yaml:22:11: resources.ghost.type: unknown resource type 'OS::Nova::Server': no plugin serves it",
            "many_errors.yaml:25:17: resources.http.properties.url: required property is missing",
            "many_errors.yaml:26:3: resources.loop_a: dependency cycle: loop_a -> loop_b -> loop_a",
            "many_errors.yaml:35:18: resources.refs.depends_on: unknown resource 'missing' (resources: ghost, http, loop_a, loop_b, refs, test, text)",
            "many_errors.yaml:37:11: resources.refs.properties.a.yaql: function 'yaql' is not supported by Kiln",
            "many_errors.yaml:40:13: outputs.url.value.list_join: expected [delimiter, list, ...]",
            "many_errors.yaml:42:13: outputs.bad_digest.value.digest: unknown algorithm 'md4' (known: md5, sha1, sha224, sha256, sha384, sha512)",
        ]
    );
}

#[tokio::test]
async fn unknown_keys_bad_values_and_unsupported_parts() {
    assert_eq!(
        errors("unknown_keys.yaml", &[], &[]).await,
        [
            "unknown_keys.yaml:3:33: parameters.p: unknown key 'secret' (known: type, default, hidden, label, description, immutable, constraints, tags)",
            "unknown_keys.yaml:4:13: parameters.q.type: unknown type \"integer\" (types: string, number, boolean, json, comma_delimited_list)",
            "unknown_keys.yaml:8:5: resources.r: unknown key 'propertes' (known: type, properties, metadata, depends_on, deletion_policy, update_policy, condition, external_id, timeout)",
            "unknown_keys.yaml:9:22: resources.r.deletion_policy: expected Delete, Retain or Snapshot",
            "unknown_keys.yaml:10:5: resources.r.external_id: not supported by Kiln",
            "unknown_keys.yaml:14:13: resources.s.properties.fail: expected a boolean, got a string \"maybe\"",
            "unknown_keys.yaml:15:18: resources.s.properties.wait_secs: -1 is out of range >= 0",
            "unknown_keys.yaml:20:5: outputs.o: unknown key 'descripton' (known: value, description, condition)",
        ]
    );
}

#[tokio::test]
async fn versions() {
    let e = errors("bad_version.yaml", &[], &[]).await;
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("bad_version.yaml:1:24: heat_template_version: unknown version '2012-12-12' (valid: 2013-05-23, "));
    assert!(e[0].ends_with("rocky, wallaby)"), "{}", e[0]);
    assert_eq!(
        errors("old_version.yaml", &[], &[]).await,
        [
            "old_version.yaml:8:11: resources.r.properties.v.if: function 'if' needs heat_template_version 2016-10-14 or later (this template is 2015-04-30)",
            "old_version.yaml:9:11: resources.r.properties.w.map_merge: function 'map_merge' needs heat_template_version 2016-04-08 or later (this template is 2015-04-30)",
        ]
    );
}

#[tokio::test]
async fn yaml_problems_have_places() {
    assert_eq!(
        errors("yaml_errors.yaml", &[], &[]).await,
        ["yaml_errors.yaml:5:3: duplicate key 'a' (first at line 3)"]
    );
}

#[tokio::test]
async fn conditions_decide_what_exists() {
    assert_eq!(
        errors("conditions.yaml", &[], &[]).await,
        [
            "conditions.yaml:6:11: conditions.loop_a: conditions refer to each other in a cycle: loop_a -> loop_b -> loop_a",
            "conditions.yaml:14:17: resources.user.depends_on: resource 'only_prod' is not created: its condition is false",
            "conditions.yaml:16:13: resources.user.properties.ref.get_resource: resource 'only_prod' is not created: its condition is false",
            "conditions.yaml:19:13: outputs.o.value.get_attr: resource 'only_prod' is not created: its condition is false",
        ]
    );
}

fn param(stack: &Stack, name: &str) -> Value {
    stack
        .parameters
        .iter()
        .find(|p| p.name == name)
        .unwrap()
        .value
        .clone()
}

#[tokio::test]
async fn parameter_precedence() {
    let stack = check(
        "parameters.yaml",
        &["env_defaults.yaml"],
        &[("required", "r")],
    )
    .await
    .unwrap();
    assert_eq!(param(&stack, "flavor"), "from-defaults");
    assert_eq!(param(&stack, "size"), 2);
    assert_eq!(param(&stack, "zones"), json!(["a", "b"]));
    let stack = check(
        "parameters.yaml",
        &["env_defaults.yaml", "env_override.yaml"],
        &[("required", "r")],
    )
    .await
    .unwrap();
    assert_eq!(param(&stack, "flavor"), "from-environment");
    assert_eq!(param(&stack, "size"), 3);
    let stack = check(
        "parameters.yaml",
        &["env_defaults.yaml", "env_override.yaml"],
        &[
            ("required", "r"),
            ("flavor", "from-cli"),
            ("size", "4"),
            ("debug", "yes"),
            ("zones", ""),
        ],
    )
    .await
    .unwrap();
    assert_eq!(param(&stack, "flavor"), "from-cli");
    assert_eq!(param(&stack, "size"), 4);
    assert_eq!(param(&stack, "debug"), true);
    assert_eq!(param(&stack, "zones"), json!([]));
    assert_eq!(stack.properties("r", &Done::default()).unwrap()["size"], 4);
}

#[tokio::test]
async fn bad_parameter_values() {
    assert_eq!(
        errors(
            "parameters.yaml",
            &["env_bad.yaml"],
            &[("size", "many"), ("debug", "perhaps"), ("colour", "red")]
        )
        .await,
        [
            "env_bad.yaml:2:11: parameters.nosuch: unknown parameter 'nosuch' (the template declares: debug, flavor, required, size, zones)",
            "parameters.yaml:2:1: parameters.colour: unknown parameter 'colour' (the template declares: debug, flavor, required, size, zones) (given with -P)",
            "parameters.yaml:6:3: parameters.size: expected a number, got a string \"many\" (value \"many\" from -P)",
            "parameters.yaml:15:3: parameters.debug: expected a boolean, got a string \"perhaps\" (value \"perhaps\" from -P)",
            "parameters.yaml:18:3: parameters.required: no value: give one with -P, in an environment file, or as a default",
        ]
    );
    assert_eq!(
        errors("parameters.yaml", &["env_bad.yaml"], &[("required", "x")]).await[1..],
        [
            "env_bad.yaml:3:9: parameters.size: does not satisfy the constraint: Size is between 1 and 10. (value 99 from parameters)",
        ]
    );
}

#[tokio::test]
async fn resource_registry_maps_types() {
    let stack = check("nova.yaml", &["env_registry.yaml"], &[])
        .await
        .expect("valid");
    let server = stack.resource("server").unwrap();
    assert_eq!(
        (server.type_name.as_str(), server.served_type.as_str()),
        ("OS::Nova::Server", "OS::Heat::TestResource")
    );
    assert_eq!(
        stack.resource("other").unwrap().served_type,
        "OS::Heat::TestResource"
    );
    assert_eq!(server.depends_on, ["other"]);
    let e = errors("nova.yaml", &[], &[]).await;
    assert_eq!(
        e[0],
        "nova.yaml:4:11: resources.server.type: unknown resource type 'OS::Nova::Server': no plugin serves it"
    );
}

#[tokio::test]
async fn quickstart_example_validates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart/stack.yaml");
    let stack = validate(&SourceFile::read(&path).unwrap(), &[], &[], plugins().await)
        .expect("quickstart is valid");
    assert_eq!(
        stack.resource("stage_3").unwrap().depends_on,
        ["stage_2", "worker_a", "worker_b", "worker_c"]
    );
}

#[tokio::test]
async fn group_example_expands_into_batches() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/group/stack.yaml");
    let stack = validate(&SourceFile::read(&path).unwrap(), &[], &[], plugins().await)
        .expect("the group example is valid");
    // Indices 0, 2..=6 (1 is in removal_policies); batches of 2 with a pause between.
    let members: Vec<&str> = stack
        .order
        .iter()
        .map(String::as_str)
        .filter(|n| n.starts_with("web[") && !n.contains("pause"))
        .collect();
    assert_eq!(members.len(), 6);
    assert!(!members.contains(&"web[1]") && members.contains(&"web[6]"));
    assert_eq!(
        stack.resource("web[pause-1]").unwrap().depends_on,
        ["web[0]", "web[2]"]
    );
    assert_eq!(
        stack.resource("web[3]").unwrap().depends_on,
        ["web[pause-1]"]
    );
    assert_eq!(stack.resource("front").unwrap().depends_on, ["web"]);
    assert_eq!(stack.resource("web").unwrap().depends_on.len(), 6);
}

fn kiln(args: &[&str]) -> (Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kiln.toml");
    std::fs::write(
        &config,
        format!("[runtime]\ncache_dir = {:?}\n", support::shared_cache()),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--config")
        .arg(&config)
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, stdout)
}

#[test]
fn cli_validate_good_template() {
    let (out, stdout) = kiln(&[
        "validate",
        "-t",
        "examples/quickstart/stack.yaml",
        "-P",
        "environment=prod",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(
            "examples/quickstart/stack.yaml: valid (heat_template_version 2018-08-31)\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("environment     string  prod\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("admin_password  string  ******\n"),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("stage_3   OS::Heat::TestResource  stage_2, worker_a, worker_b, worker_c\n"),
        "{stdout}"
    );

    let (out, stdout) = kiln(&[
        "validate",
        "-t",
        "examples/quickstart/stack.yaml",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["valid"], true);
    assert_eq!(
        doc["resources"][0],
        json!({"name": "seed", "type": "OS::Heat::RandomString", "served_type": "OS::Heat::RandomString", "depends_on": []})
    );
}

#[test]
fn cli_validate_bad_template() {
    let (out, stdout) = kiln(&["validate", "-t", "tests/templates/many_errors.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stdout.lines().count(), 11, "{stdout}");
    assert!(
        stdout.starts_with("tests/templates/many_errors.yaml:3:1: parametrs: unknown section"),
        "{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("11 errors in tests/templates/many_errors.yaml")
    );

    let (out, stdout) = kiln(&[
        "validate",
        "-t",
        "tests/templates/many_errors.yaml",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        doc["errors"][0],
        json!({
            "file": "tests/templates/many_errors.yaml", "line": 3, "column": 1, "path": "parametrs",
            "message": "unknown section (sections: heat_template_version, description, parameter_groups, parameters, resources, outputs, conditions)"
        })
    );

    let (out, _) = kiln(&[
        "validate",
        "-t",
        "examples/quickstart/stack.yaml",
        "-P",
        "environment",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a -P without '=' is a usage error"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected KEY=VALUE"));
    let (out, _) = kiln(&["validate", "-t", "no/such/file.yaml"]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn resource_groups_expand_into_members_and_report_bad_definitions() {
    let lines = errors("group_errors.yaml", &[], &[]).await;
    let expected = [
        "group_errors.yaml:8:14: resources.dynamic.properties.count: must be known when the stack is validated",
        "group_errors.yaml:13:14: resources.huge.properties.count: 20000 members is over the limit of 10000",
        "resources.shapeless.properties: resource_def is missing: what each member is",
        "group_errors.yaml:19:7: resources.shapeless.properties: unknown property 'size' of OS::Heat::ResourceGroup",
        "resources.bad_member[0].properties.wait_secs: -1 is out of range >= 0",
        "resources.bad_member[1].properties.wait_secs: -1 is out of range >= 0",
        "resources.web[0]: the name is taken by a member of the group 'web'",
    ];
    for want in expected {
        assert!(
            lines.iter().any(|l| l.contains(want)),
            "no error like {want:?} in:\n{}",
            lines.join("\n")
        );
    }
}

#[tokio::test]
async fn resource_timeouts_need_a_unit() {
    assert_eq!(
        errors("timeouts.yaml", &[], &[]).await,
        [
            "timeouts.yaml:5:14: resources.bare.timeout: expected a duration with its unit, such as 90s, 10m or 2h; got 300",
            "timeouts.yaml:8:14: resources.zero.timeout: a timeout must be longer than 0",
            "timeouts.yaml:11:14: resources.odd.timeout: unknown unit 'd' in '5d': use s, m or h",
        ]
    );
}
