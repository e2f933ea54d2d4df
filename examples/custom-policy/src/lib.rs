//! `linear-backoff`: an example retry policy. Waits `step_ms` × attempt (capped at `max_ms`),
//! gives up after `max_attempts`, never retries `invalid`/`fatal` (nor `conflict` unless
//! `retry_conflicts`), and honours a throttled error's retry-after.
//!
//! Use it from kiln.toml:
//!
//! ```toml
//! [plugins.linear-backoff]
//! component = "examples/custom-policy/target/wasm32-wasip2/release/linear_backoff.wasm"
//!
//! [retry.policies.linear]
//! component = "linear-backoff"
//! params = { step_ms = 250, max_attempts = 4 }
//! ```

use kiln_plugin_sdk::prelude::*;
use kiln_plugin_sdk::{Decision, Failure, Policy};

struct LinearBackoff;

struct Params {
    step_ms: u64,
    max_ms: u64,
    max_attempts: u32,
    retry_conflicts: bool,
}

impl Params {
    /// Each error names the parameter, so `kiln` can report it at start.
    fn parse(params: &Value) -> Result<Self, String> {
        let mut p = Params {
            step_ms: 500,
            max_ms: 10_000,
            max_attempts: 5,
            retry_conflicts: false,
        };
        let Some(map) = params.as_object() else {
            return Err(format!("parameters must be a JSON object, got {params}"));
        };
        for (key, v) in map {
            let bad = || format!("parameter '{key}' has a bad value: {v}");
            match key.as_str() {
                "step_ms" => p.step_ms = v.as_u64().filter(|n| *n > 0).ok_or_else(bad)?,
                "max_ms" => p.max_ms = v.as_u64().ok_or_else(bad)?,
                "max_attempts" => {
                    p.max_attempts = v
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(bad)?
                }
                "retry_conflicts" => p.retry_conflicts = v.as_bool().ok_or_else(bad)?,
                _ => {
                    return Err(format!(
                        "unknown parameter '{key}' (known: step_ms, max_ms, max_attempts, retry_conflicts)"
                    ));
                }
            }
        }
        Ok(p)
    }
}

impl Policy for LinearBackoff {
    fn validate(params: &Value) -> Result<(), String> {
        Params::parse(params).map(|_| ())
    }

    fn decide(params: &Value, failure: &Failure) -> Decision {
        let p = match Params::parse(params) {
            Ok(p) => p,
            Err(e) => return Decision::GiveUp(e),
        };
        match failure.error.kind() {
            "invalid" | "fatal" => {
                return Decision::GiveUp(format!("{} errors are not retried", failure.error.kind()));
            }
            "conflict" if !p.retry_conflicts => {
                return Decision::GiveUp("conflicts are not retried".into());
            }
            _ => {}
        }
        if failure.attempt >= p.max_attempts {
            return Decision::GiveUp(format!("reached max_attempts ({})", p.max_attempts));
        }
        let delay = (p.step_ms * u64::from(failure.attempt)).min(p.max_ms);
        Decision::RetryAfter(delay.max(failure.error.retry_after_ms().unwrap_or(0)))
    }
}

kiln_plugin_sdk::export_policy!(LinearBackoff);
