//! Skipped tests, said out loud: a test that cannot run here (no Chromium, no PostgreSQL, no
//! OpenAPI validator) calls [`skipped`] and returns. The reason is printed (hidden in captured
//! output, like any test's) and appended as one line to the skip log, which `scripts/test`
//! empties before the run and prints at its end, so a skip is never silent.
//!
//! The log is the file named by `KILN_SKIP_LOG`, else `TARGET/test-skips.log`. Under CI (env
//! `CI`) nothing may be skipped: a missing tool is a failure, and [`skipped`] panics.
//!
//! Only std is used here: every test binary compiles this module.

use std::io::Write;
use std::path::PathBuf;

/// The file every skip is appended to: `KILN_SKIP_LOG`, else `TARGET/test-skips.log`.
fn log_path() -> PathBuf {
    if let Some(path) = std::env::var_os("KILN_SKIP_LOG") {
        return PathBuf::from(path);
    }
    // CARGO_TARGET_TMPDIR is TARGET/tmp, wherever the target dir is.
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("test-skips.log")
}

/// Records that the running test is skipped for `reason` (the caller then returns): prints it
/// and appends `BINARY::TEST: reason` to [`log_path`]. Under CI (env `CI`) it panics instead:
/// there every test must run.
pub fn skipped(reason: &str) {
    // libtest runs each test on a thread named after it.
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("?");
    let line = format!("{}::{test}: {reason}", env!("CARGO_CRATE_NAME"));
    if std::env::var_os("CI").is_some() {
        panic!("{line}\nunder CI (env CI) this is a failure, not a skip: every test must run");
    }
    eprintln!("SKIPPED {line}");
    let path = log_path();
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // One write of one line to a file opened for appending: the lines of tests running at
    // once do not interleave.
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    if let Err(e) = written {
        panic!("cannot record the skip in {}: {e}", path.display());
    }
}
