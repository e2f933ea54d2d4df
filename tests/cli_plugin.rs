//! `kiln plugin list | inspect | call`, run as a user would: the real binary, its output and
//! its exit codes.

mod support;

use std::process::{Command, Output};

use kiln::artifacts;
use serde_json::{Value, json};

struct Kiln {
    dir: tempfile::TempDir,
}

impl Kiln {
    /// A config file in a fresh directory, using the tests' shared component cache.
    fn new(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "[runtime]\ncache_dir = {:?}\n{extra}",
            support::shared_cache()
        );
        std::fs::write(dir.path().join("kiln.toml"), config).unwrap();
        Self { dir }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("KILN_CONFIG")
            .output()
            .unwrap()
    }
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

#[test]
fn list_shows_the_bundled_types() {
    let k = Kiln::new("");
    let out = k.run(&["plugin", "list"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    for t in [
        "OS::Heat::None",
        "OS::Heat::RandomString",
        "OS::Heat::TestResource",
        "Kiln::HTTP::Resource",
    ] {
        assert!(stdout.contains(t), "{t} missing from:\n{stdout}");
    }
    assert!(stdout.starts_with("TYPE"), "{stdout}");

    let out = k.run(&["plugin", "list", "--format", "json"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let backoff = doc
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "exponential-backoff")
        .unwrap();
    assert_eq!(backoff["world"], json!("retry-policy"));
    assert_eq!(backoff["contract"], json!("0.1.0"));
}

#[test]
fn list_includes_configured_components() {
    let k = Kiln::new(&format!(
        "[plugins.panicky]\ncomponent = {:?}\n",
        artifacts::FIXTURE_PANIC
    ));
    let (stdout, stderr) = text(&k.run(&["plugin", "list"]));
    assert!(
        stdout.contains("Fixture::Panic") && stdout.contains("panicky"),
        "{stdout}{stderr}"
    );
}

#[test]
fn a_plugins_directory_is_loaded_by_file_name() {
    let k = Kiln::new("plugins_dir = \"my-plugins\"\n[plugins.my-panic]\nmemory_mib = 16\n");
    let dir = k.dir.path().join("my-plugins");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(artifacts::FIXTURE_PANIC, dir.join("my_panic.wasm")).unwrap();
    std::fs::write(dir.join("notes.txt"), "not a plugin").unwrap();
    let (stdout, stderr) = text(&k.run(&["plugin", "list"]));
    let row = stdout
        .lines()
        .find(|l| l.starts_with("Fixture::Panic"))
        .unwrap_or_else(|| panic!("{stdout}{stderr}"));
    assert!(
        row.contains("my-panic") && row.contains("my_panic.wasm"),
        "{row}"
    );

    // A [plugins.NAME] with no component must name something that exists.
    let k = Kiln::new("[plugins.nothing]\nmemory_mib = 16\n");
    let out = k.run(&["plugin", "list"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "bad configuration: {stderr}");
    assert!(
        stderr.contains("plugins.nothing") && stderr.contains("no `component`"),
        "{stderr}"
    );
}

#[test]
fn inspect_prints_world_version_and_schema() {
    let k = Kiln::new("");
    let out = k.run(&["plugin", "inspect", artifacts::RANDOM_STRING]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("world:     resource-plugin (kiln:plugin@0.1.0)"),
        "{stdout}"
    );
    assert!(stdout.contains("type OS::Heat::RandomString"), "{stdout}");
    let length = stdout
        .lines()
        .find(|l| l.starts_with("length"))
        .expect("length row");
    assert!(
        length.contains("integer") && length.contains("32") && length.contains("replace"),
        "{length}"
    );

    let out = k.run(&[
        "plugin",
        "inspect",
        artifacts::EXPONENTIAL_BACKOFF,
        "--format",
        "json",
    ]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["world"], json!("retry-policy"));
}

#[test]
fn inspect_refuses_a_wrong_contract_version() {
    let k = Kiln::new("");
    let out = k.run(&["plugin", "inspect", artifacts::FIXTURE_WRONG_VERSION]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("kiln:plugin@9.0.0") && stderr.contains("incompatible"),
        "{stderr}"
    );
}

#[test]
fn call_runs_one_function_and_prints_json() {
    let k = Kiln::new("");
    let out = k.run(&[
        "plugin",
        "call",
        "random-string",
        "create",
        "-p",
        r#"{"length": 8, "sequence": "digits"}"#,
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["outcome"], json!("done"));
    assert_eq!(doc["attributes"]["value"].as_str().unwrap().len(), 8);

    // A file path works too, and a pending result says when to poll.
    let out = k.run(&[
        "plugin",
        "call",
        artifacts::TEST_RESOURCE,
        "create",
        "-p",
        r#"{"action_wait_secs": {"create": 5}}"#,
    ]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["outcome"], json!("pending"), "{doc}");
    assert_eq!(doc["poll_after_ms"], json!(5000));

    let out = k.run(&[
        "plugin",
        "call",
        "exponential-backoff",
        "decide",
        "--params",
        r#"{"jitter": "none", "initial_interval_ms": 250}"#,
        "--failure",
        r#"{"kind": "transient", "status": 503, "attempt": 2}"#,
    ]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc, json!({"decision": "retry-after", "delay_ms": 500}));
}

#[test]
fn call_exit_codes_tell_plugin_errors_faults_and_bad_input_apart() {
    let k = Kiln::new("[limits]\ncpu_time_ms = 200\n");
    let out = k.run(&[
        "plugin",
        "call",
        "test-resource",
        "create",
        "-p",
        r#"{"fail": true}"#,
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap()["error"]["kind"],
        json!("fatal")
    );

    let out = k.run(&["plugin", "call", artifacts::FIXTURE_LOOP, "create"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("CPU time limit of 200 ms exceeded"),
        "{stderr}"
    );

    let out = k.run(&["plugin", "call", "none", "create", "-p", "{not json"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("--properties"), "{stderr}");

    let out = k.run(&["plugin", "call", "nosuch", "create"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_bad_config_file_is_named_with_the_key() {
    let k = Kiln::new("[limits]\nmemroy_mib = 5\n");
    let out = k.run(&["plugin", "list"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("kiln.toml") && stderr.contains("memroy_mib"),
        "{stderr}"
    );
    // The line of the key (after the two the test writes first), and the key it meant.
    assert!(
        stderr.contains("at line 4") && stderr.contains("expected one of `memory_mib`"),
        "{stderr}"
    );
}
