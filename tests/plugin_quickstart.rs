//! The README's plugin-author quickstart, step by step: build examples/hello-plugin for
//! wasm32-wasip2 with plain cargo, inspect it and call it with the kiln binary.

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

#[test]
fn write_build_inspect_call() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello-plugin");
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hello-plugin");
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
    ok(build, "cargo build of examples/hello-plugin");
    let wasm = target.join("wasm32-wasip2/release/hello_plugin.wasm");
    assert!(wasm.exists());

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
