//! The README's plugin-author quickstart, step by step: build the examples (hello-plugin, a
//! resource type; custom-policy, a retry policy) for wasm32-wasip2 with plain cargo, then use
//! them with the kiln binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

fn ok(o: Output, what: &str) -> String {
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{what} failed:\n{out}\n{err}");
    out.into_owned()
}

/// Builds an example crate as its README says and returns the component's path.
fn build_example(dir: &str, wasm: &str) -> PathBuf {
    let example = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(dir);
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(dir);
    let build = Command::new(option_env!("CARGO").unwrap_or("cargo"))
        .args([
            "build",
            "--target",
            "wasm32-wasip2",
            "--release",
            "--locked",
            "--quiet",
        ])
        .arg("--target-dir")
        .arg(&target)
        .current_dir(&example)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .unwrap();
    ok(build, &format!("cargo build of examples/{dir}"));
    let wasm = target.join("wasm32-wasip2/release").join(wasm);
    assert!(wasm.exists());
    wasm
}

#[test]
fn write_build_inspect_call() {
    let wasm = build_example("hello-plugin", "hello_plugin.wasm");
    let cache = tempfile::tempdir().unwrap();
    let kiln = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .env("XDG_CACHE_HOME", cache.path())
            .env_remove("KILN_CONFIG")
            .current_dir(cache.path())
            .output()
            .unwrap()
    };
    let wasm = wasm.to_str().unwrap();
    let shown = ok(kiln(&["plugin", "inspect", wasm]), "kiln plugin inspect");
    assert!(
        shown.contains("type Example::Greeting") && shown.contains("range 1..10"),
        "{shown}"
    );

    let out = ok(
        kiln(&[
            "plugin",
            "call",
            wasm,
            "create",
            "-p",
            r#"{"name": "Kiln", "repeat": 2}"#,
        ]),
        "kiln plugin call",
    );
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        doc["attributes"]["text"],
        json!("Hello, Kiln! Hello, Kiln!")
    );
    // The compiled component was cached under XDG_CACHE_HOME for the next run.
    assert!(cache.path().join("kiln/components/cache.key").exists());
}

#[test]
fn a_custom_retry_policy_is_configured_and_simulated() {
    let wasm = build_example("custom-policy", "linear_backoff.wasm");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kiln.toml");
    let write = |params: &str| {
        let text = format!(
            "[runtime]\ncache_dir = {:?}\n[plugins.linear-backoff]\ncomponent = {:?}\n\
             [retry.policies.linear]\ncomponent = \"linear-backoff\"\nparams = {params}\n\
             [[retry.rules]]\npolicy = \"linear\"\n",
            dir.path().join("cache"),
            wasm
        );
        std::fs::write(&config, text).unwrap();
    };
    let kiln = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("-c")
            .arg(&config)
            .args(args)
            .env_remove("KILN_CONFIG")
            .output()
            .unwrap()
    };
    write("{ step_ms = 250, max_attempts = 5 }");
    let out = ok(
        kiln(&[
            "retry",
            "simulate",
            "--errors",
            "503,503,409",
            "--format",
            "json",
        ]),
        "simulate",
    );
    let rows: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["policy"], json!("linear"));
    assert_eq!(
        (rows[0]["delay_ms"].clone(), rows[1]["delay_ms"].clone()),
        (json!(250), json!(500))
    );
    assert!(
        rows[2]["decision"]
            .as_str()
            .unwrap()
            .contains("conflicts are not retried"),
        "{rows}"
    );

    // The policy checks its own parameters before anything runs.
    write("{ step_ms = 0 }");
    let out = kiln(&["retry", "simulate", "--errors", "503"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("retry.policies.linear.params") && stderr.contains("step_ms"),
        "{stderr}"
    );
}
