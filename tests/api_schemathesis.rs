//! Schemathesis (PyPI, installed by scripts/setup-tests) against a running `kiln serve` and the
//! `/openapi.json` it serves, with a token: generated requests to every operation, valid and
//! not, in its examples, coverage, fuzzing and stateful phases. No answer may be a 5xx, break
//! its documented schema, status code or content type. The run is bounded by examples per
//! operation (`KILN_SCHEMATHESIS_EXAMPLES`, 10 here) and a fixed seed; a longer run is the
//! same command with more (see the README).

mod support;

use std::process::Command;

use serde_json::Value;
use support::procs::ServeProc;

const TOKEN: &str = "schemathesis-token-0123456789";

fn schemathesis_available() -> bool {
    Command::new("python3")
        .args(["-m", "schemathesis.cli", "--version"])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// The operations the document declares but its own (`GET /openapi.json`, which schemathesis
/// reads rather than tests): every one must be tested.
fn operations() -> usize {
    let doc: Value = serde_json::from_str(kiln::api::OPENAPI).unwrap();
    doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(path, _)| *path != "/openapi.json")
        .map(|(_, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "put", "post", "delete", "patch"].contains(&k.as_str()))
                .count()
        })
        .sum()
}

/// The number after `label` in schemathesis' summary ("Tested: 28", "Selected: 28/28").
fn count(text: &str, label: &str) -> Option<(usize, Option<usize>)> {
    let rest = &text[text.rfind(label)? + label.len()..];
    let word = rest.split_whitespace().next()?;
    let mut parts = word.split('/').map(|n| n.parse::<usize>().ok());
    Some((parts.next()??, parts.next().flatten()))
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_requests_get_no_5xx_and_no_answer_outside_the_schema() {
    if !schemathesis_available() {
        support::skip::skipped(
            "python3 with schemathesis not installed (scripts/setup-tests installs it)",
        );
        return;
    }
    let serve = ServeProc::start(&format!(
        "[[api.tokens]]\ntoken = \"{TOKEN}\"\nproject = \"demo\"\nrole = \"admin\"\n"
    ))
    .await;
    let examples = std::env::var("KILN_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "10".into());
    let url = format!("http://{}/openapi.json", serve.addr);
    // One worker: hypothesis's lambda-source cache is not thread-safe on CPython 3.11 (a
    // "recursion depth mismatch" error inside schemathesis, not an answer of ours).
    let mut command = Command::new("python3");
    command
        .args(["-m", "schemathesis.cli", "run", &url])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,\
             content_type_conformance",
        ])
        .args(["--max-examples", &examples, "--seed", "19", "-w", "1"])
        .args(["--no-color"])
        .current_dir(std::env::temp_dir());
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("running schemathesis");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let tail = |t: &str| {
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(150)..].join("\n")
    };
    assert!(
        out.status.success(),
        "schemathesis failed ({}):\n{}\n{}",
        out.status,
        tail(&text),
        serve.log_tail()
    );
    // It selected every operation it found, tested every one it selected, and found them all.
    let n = operations();
    let selected = count(&text, "Selected:");
    let tested = count(&text, "Tested:").map(|(n, _)| n);
    assert!(
        selected == Some((n, Some(n))) && tested == Some(n),
        "schemathesis did not test all {n} operations (selected {selected:?}, tested \
         {tested:?}):\n{}",
        tail(&text)
    );
    for phase in ["Examples", "Coverage", "Fuzzing", "Stateful"] {
        assert!(
            text.lines()
                .any(|l| l.contains('✅') && l.trim_end().ends_with(phase)),
            "the {phase} phase did not pass:\n{}",
            tail(&text)
        );
    }
}
