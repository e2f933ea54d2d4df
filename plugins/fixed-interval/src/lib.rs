//! `fixed-interval`: retries after the same delay each time, up to `max_attempts`, honouring a
//! throttled error's retry-after (up to `max_retry_after_ms`). Never retries `invalid`/`fatal`.
//! Parameters: `interval_ms` (default 1000), `max_attempts` (default 5; 0 = unlimited),
//! `max_retry_after_ms` (default 300000).

use kiln_plugin_sdk::prelude::*;
use kiln_plugin_sdk::{Decision, Failure, Policy};

struct FixedInterval;

struct Params {
    interval_ms: u64,
    max_attempts: u64,
    max_retry_after_ms: u64,
}

impl Params {
    fn parse(params: &Value) -> Result<Self, String> {
        let mut p = Params {
            interval_ms: 1000,
            max_attempts: 5,
            max_retry_after_ms: 300_000,
        };
        let Some(map) = params.as_object() else {
            return if params.is_null() {
                Ok(p)
            } else {
                Err(format!("parameters must be a JSON object, got {params}"))
            };
        };
        for (key, v) in map {
            let n = v.as_u64().ok_or_else(|| {
                format!("parameter '{key}' must be a non-negative integer, got {v}")
            });
            match key.as_str() {
                "interval_ms" => p.interval_ms = n?,
                "max_attempts" => p.max_attempts = n?,
                "max_retry_after_ms" => p.max_retry_after_ms = n?,
                _ => {
                    return Err(format!(
                        "unknown parameter '{key}' (known: interval_ms, max_attempts, max_retry_after_ms)"
                    ));
                }
            }
        }
        Ok(p)
    }
}

impl Policy for FixedInterval {
    fn validate(params: &Value) -> Result<(), String> {
        Params::parse(params).map(|_| ())
    }

    fn decide(params: &Value, failure: &Failure) -> Decision {
        let p = match Params::parse(params) {
            Ok(p) => p,
            Err(e) => return Decision::GiveUp(e),
        };
        let kind = failure.error.kind();
        if kind == "invalid" || kind == "fatal" {
            return Decision::GiveUp(format!(
                "{kind} errors are not retried: {}",
                failure.error.message()
            ));
        }
        if p.max_attempts != 0 && u64::from(failure.attempt) >= p.max_attempts {
            return Decision::GiveUp(format!("reached max_attempts ({})", p.max_attempts));
        }
        let asked = failure
            .error
            .retry_after_ms()
            .map_or(0, |ms| ms.min(p.max_retry_after_ms));
        Decision::RetryAfter(p.interval_ms.max(asked))
    }
}

kiln_plugin_sdk::export_policy!(FixedInterval);
