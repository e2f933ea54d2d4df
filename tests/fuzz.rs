//! The fuzz targets' bodies (host/src/fuzzing.rs) replayed in the suite: every seed and every
//! input a fuzzer once crashed on (`fuzz/regressions/<target>/`), then a bounded, seeded run of
//! simple mutations of those seeds. The coverage-guided runs are `scripts/fuzz` (cargo fuzz).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Runs one input; true when it was accepted (validated, parsed).
type Body = fn(&[u8]) -> bool;

const TARGETS: [(&str, Body, &[&str]); 3] = [
    (
        "template",
        kiln::fuzzing::template,
        &["tests/templates", "examples"],
    ),
    (
        "environment",
        kiln::fuzzing::environment,
        &["tests/templates"],
    ),
    ("config", kiln::fuzzing::config, &["examples"]),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Files under `dir` (recursively) with one of the extensions the target reads.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else if !matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("rs" | "wasm" | "lock" | "sh" | "md")
        ) {
            out.push(path);
        }
    }
}

fn inputs(target: &str, extra: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in [
        format!("fuzz/seeds/{target}"),
        format!("fuzz/regressions/{target}"),
    ]
    .iter()
    .map(String::as_str)
    .chain(extra.iter().copied())
    {
        files(&root().join(dir), &mut out);
    }
    out.sort();
    out
}

/// Runs `body`: whether it accepted the input, or the panic's message.
fn run(body: Body, data: &[u8]) -> Result<bool, String> {
    catch_unwind(AssertUnwindSafe(|| body(data))).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".into())
    })
}

#[test]
fn every_seed_and_saved_crash_passes() {
    let mut failures = Vec::new();
    for (target, body, extra) in TARGETS {
        let inputs = inputs(target, extra);
        assert!(inputs.len() >= 3, "{target}: only {} inputs", inputs.len());
        let mut accepted = 0;
        for path in inputs {
            let data = std::fs::read(&path).unwrap();
            match run(body, &data) {
                Ok(ok) => accepted += usize::from(ok),
                Err(message) => failures.push(format!("{target} on {}: {message}", path.display())),
            }
        }
        // Seeds that are all refused would keep the fuzzer away from evaluation.
        if accepted < 2 {
            failures.push(format!("{target}: only {accepted} seeds accepted"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Tokens that matter to YAML, TOML and HOT, spliced in by the mutator.
const TOKENS: &[&str] = &[
    "\n",
    "\n  ",
    ": ",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "&a ",
    "*a",
    "!!str ",
    "'",
    "\"",
    "#",
    "get_attr: [",
    "get_param: ",
    "get_resource: ",
    "list_join",
    "str_replace",
    "repeat",
    "map_merge",
    "if: [",
    "equals",
    "condition: ",
    "depends_on: ",
    "resource_registry",
    "parameter_defaults",
    "OS::Heat::ResourceGroup",
    "count: ",
    "%index%",
    "type: ",
    "1e308",
    "-1",
    "0x",
    "null",
    "true",
    "=",
    "[[",
    "]]",
    "\"\"\"",
    "ms",
    "_ms = ",
    "[plugins.",
    "[api]",
];

fn mutate(rng: &mut StdRng, seed: &[u8], others: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let at = rng.random_range(0..=data.len());
        match rng.random_range(0..5) {
            0 if !data.is_empty() => {
                let i = at.min(data.len() - 1);
                data[i] ^= 1 << rng.random_range(0..8);
            }
            1 => {
                let end = (at + rng.random_range(0..16)).min(data.len());
                data.drain(at..end);
            }
            2 => {
                let token = TOKENS[rng.random_range(0..TOKENS.len())];
                data.splice(at..at, token.bytes());
            }
            3 => {
                let other = &others[rng.random_range(0..others.len())];
                let from = rng.random_range(0..=other.len());
                let to = (from + rng.random_range(0..64)).min(other.len());
                data.splice(at..at, other[from..to].iter().copied());
            }
            _ => {
                let end = (at + rng.random_range(0..32)).min(data.len());
                let copy = data[at..end].to_vec();
                data.splice(at..at, copy);
            }
        }
    }
    data
}

/// A fixed number of mutated inputs per target, from a fixed seed: the same run on every
/// machine. A failure prints the input to save under fuzz/regressions/.
#[test]
fn mutated_seeds_never_break_an_invariant() {
    let runs: usize = std::env::var("KILN_FUZZ_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let mut rng = StdRng::seed_from_u64(19);
    for (target, body, extra) in TARGETS {
        let seeds: Vec<Vec<u8>> = inputs(target, extra)
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        for i in 0..runs {
            let seed = &seeds[rng.random_range(0..seeds.len())];
            let data = mutate(&mut rng, seed, &seeds);
            if let Err(message) = run(body, &data) {
                panic!(
                    "{target}, mutation {i}: {message}\ninput ({} bytes): {:?}",
                    data.len(),
                    String::from_utf8_lossy(&data)
                );
            }
        }
        eprintln!("{target}: {runs} mutated inputs, no failure");
    }
}
