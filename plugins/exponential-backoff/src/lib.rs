//! `exponential-backoff`: Kiln's default retry policy. The delay grows by `multiplier` from
//! `initial_interval_ms` up to `max_interval_ms`, with jitter (AWS's "full", "equal" and
//! "decorrelated" schemes, or none) so that many failing resources do not retry in lockstep.
//!
//! `invalid` and `fatal` errors are never retried, nor are the kinds listed in
//! `non_retryable`. A `throttled` error's `retry-after` is honoured, clamped to
//! `max_retry_after_ms`. All randomness comes from `failure.random`, so a decision is
//! reproducible from its inputs.

use kiln_plugin_sdk::prelude::*;

struct ExponentialBackoff;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Jitter {
    None,
    Full,
    Equal,
    Decorrelated,
}

/// The validated parameters.
#[derive(Debug, Clone, PartialEq)]
struct Params {
    initial_interval_ms: u64,
    multiplier: f64,
    max_interval_ms: u64,
    /// The attempt that, having failed, ends retrying; 0 = unlimited.
    max_attempts: u64,
    max_elapsed_ms: Option<u64>,
    jitter: Jitter,
    max_retry_after_ms: u64,
    /// Error kinds (WIT spelling) not retried, besides `invalid` and `fatal`.
    non_retryable: Vec<String>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            initial_interval_ms: 1000,
            multiplier: 2.0,
            max_interval_ms: 60_000,
            max_attempts: 5,
            max_elapsed_ms: None,
            jitter: Jitter::Full,
            max_retry_after_ms: 300_000,
            non_retryable: Vec::new(),
        }
    }
}

const KINDS: [&str; 7] = [
    "transient",
    "throttled",
    "unauthorized",
    "conflict",
    "not-found",
    "invalid",
    "fatal",
];

fn uint(key: &str, v: &Value) -> Result<u64, String> {
    v.as_u64()
        .ok_or_else(|| format!("parameter '{key}' must be a non-negative integer, got {v}"))
}

impl Params {
    /// Parses and checks the parameters; each error names the parameter.
    fn parse(params: &Value) -> Result<Self, String> {
        let mut p = Params::default();
        let map = match params {
            Value::Null => return Ok(p),
            Value::Object(map) => map,
            other => return Err(format!("parameters must be a JSON object, got {other}")),
        };
        for (key, v) in map {
            match key.as_str() {
                "initial_interval_ms" => p.initial_interval_ms = uint(key, v)?,
                "max_interval_ms" => p.max_interval_ms = uint(key, v)?,
                "max_attempts" => p.max_attempts = uint(key, v)?,
                "max_retry_after_ms" => p.max_retry_after_ms = uint(key, v)?,
                "max_elapsed_ms" => {
                    p.max_elapsed_ms = if v.is_null() {
                        None
                    } else {
                        Some(uint(key, v)?)
                    }
                }
                "multiplier" => {
                    p.multiplier = v
                        .as_f64()
                        .filter(|m| m.is_finite() && *m >= 1.0)
                        .ok_or_else(|| {
                            format!("parameter 'multiplier' must be a number >= 1, got {v}")
                        })?
                }
                "jitter" => {
                    p.jitter = match v.as_str() {
                        Some("none") => Jitter::None,
                        Some("full") => Jitter::Full,
                        Some("equal") => Jitter::Equal,
                        Some("decorrelated") => Jitter::Decorrelated,
                        _ => {
                            return Err(format!(
                                "parameter 'jitter' must be one of \"none\", \"full\", \"equal\", \
                                 \"decorrelated\", got {v}"
                            ));
                        }
                    }
                }
                "non_retryable" => {
                    let bad = || {
                        format!(
                            "parameter 'non_retryable' must be a list of error kinds ({}), got {v}",
                            KINDS.join(", ")
                        )
                    };
                    let list = v.as_array().ok_or_else(bad)?;
                    p.non_retryable = list
                        .iter()
                        .map(|k| {
                            let kind = k.as_str().ok_or_else(bad)?.replace('_', "-");
                            KINDS
                                .contains(&kind.as_str())
                                .then_some(kind)
                                .ok_or_else(bad)
                        })
                        .collect::<Result<_, _>>()?;
                }
                _ => {
                    return Err(format!(
                        "unknown parameter '{key}' (known: initial_interval_ms, multiplier, \
                         max_interval_ms, max_attempts, max_elapsed_ms, jitter, \
                         max_retry_after_ms, non_retryable)"
                    ));
                }
            }
        }
        if p.max_attempts > u64::from(u32::MAX) {
            return Err(format!(
                "parameter 'max_attempts' must be at most {}",
                u32::MAX
            ));
        }
        if p.max_interval_ms < p.initial_interval_ms {
            return Err(format!(
                "parameter 'max_interval_ms' ({}) must not be less than initial_interval_ms ({})",
                p.max_interval_ms, p.initial_interval_ms
            ));
        }
        Ok(p)
    }
}

/// `random % (n + 1)`: a value in `0..=n` (uniform enough: `random` is 64 bits).
fn up_to(random: u64, n: u64) -> u64 {
    match n.checked_add(1) {
        Some(m) => random % m,
        None => random,
    }
}

/// The un-jittered delay before retrying after `attempt` failed.
fn base_delay(p: &Params, attempt: u32) -> u64 {
    let exp = attempt.saturating_sub(1).min(i32::MAX as u32) as i32;
    let raw = p.initial_interval_ms as f64 * p.multiplier.powi(exp);
    // f64 -> u64 saturates, so huge (or infinite) growth caps at max_interval.
    (raw as u64).min(p.max_interval_ms)
}

fn jittered(p: &Params, base: u64, previous: Option<u64>, random: u64) -> u64 {
    match p.jitter {
        Jitter::None => base,
        Jitter::Full => up_to(random, base),
        Jitter::Equal => base / 2 + up_to(random, base / 2),
        Jitter::Decorrelated => {
            let initial = p.initial_interval_ms;
            let upper = previous.unwrap_or(initial).saturating_mul(3).max(initial);
            initial
                .saturating_add(up_to(random, upper - initial))
                .min(p.max_interval_ms)
        }
    }
}

/// The whole decision, pure: same inputs, same answer.
fn decide(p: &Params, f: &Failure) -> Decision {
    let kind = f.error.kind();
    if matches!(kind, "invalid" | "fatal") || p.non_retryable.iter().any(|k| k == kind) {
        return Decision::GiveUp(format!(
            "{kind} errors are not retried: {}",
            f.error.message()
        ));
    }
    if p.max_attempts != 0 && u64::from(f.attempt) >= p.max_attempts {
        return Decision::GiveUp(format!("reached max_attempts ({})", p.max_attempts));
    }
    let mut delay = jittered(p, base_delay(p, f.attempt), f.previous_delay_ms, f.random);
    if let Some(retry_after) = f.error.retry_after_ms() {
        delay = delay.max(retry_after.min(p.max_retry_after_ms));
    }
    if let Some(max) = p.max_elapsed_ms
        && f.elapsed_ms.saturating_add(delay) > max
    {
        return Decision::GiveUp(format!(
            "would exceed max_elapsed_ms ({max}): {} ms elapsed + {delay} ms delay",
            f.elapsed_ms
        ));
    }
    Decision::RetryAfter(delay)
}

impl Policy for ExponentialBackoff {
    fn validate(params: &Value) -> Result<(), String> {
        Params::parse(params).map(|_| ())
    }

    fn decide(params: &Value, failure: &Failure) -> Decision {
        match Params::parse(params) {
            Ok(p) => decide(&p, failure),
            Err(e) => Decision::GiveUp(format!("invalid retry policy parameters: {e}")),
        }
    }
}

kiln_plugin_sdk::export_policy!(ExponentialBackoff);

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(error: PluginError, attempt: u32, random: u64) -> Failure {
        Failure {
            error,
            attempt,
            elapsed_ms: 0,
            previous_delay_ms: None,
            operation: Operation::Create,
            resource_type: "OS::Heat::TestResource".into(),
            random,
        }
    }

    fn params(v: Value) -> Params {
        Params::parse(&v).unwrap()
    }

    fn retry_after(d: Decision) -> u64 {
        match d {
            Decision::RetryAfter(ms) => ms,
            Decision::GiveUp(why) => panic!("gave up: {why}"),
        }
    }

    fn give_up(d: Decision) -> String {
        match d {
            Decision::GiveUp(why) => why,
            Decision::RetryAfter(ms) => panic!("retries after {ms} ms"),
        }
    }

    #[test]
    fn defaults() {
        assert_eq!(params(json!({})), Params::default());
        assert_eq!(params(Value::Null), Params::default());
    }

    #[test]
    fn no_jitter_grows_exponentially_up_to_the_cap() {
        let p = params(
            json!({"jitter": "none", "initial_interval_ms": 100, "max_interval_ms": 1000, "max_attempts": 0}),
        );
        let delays: Vec<u64> = (1..=6)
            .map(|a| retry_after(decide(&p, &failure(transient("x"), a, 7))))
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(base_delay(&p, u32::MAX), 1000);
    }

    #[test]
    fn full_and_equal_jitter_stay_in_range() {
        let full = params(json!({"jitter": "full", "initial_interval_ms": 1000}));
        let equal = params(json!({"jitter": "equal", "initial_interval_ms": 1000}));
        for random in [0, 1, 999, 1000, 1001, 123_456_789, u64::MAX] {
            let d = retry_after(decide(&full, &failure(transient("x"), 2, random)));
            assert!(d <= 2000, "{d}");
            let d = retry_after(decide(&equal, &failure(transient("x"), 2, random)));
            assert!((1000..=2000).contains(&d), "{d}");
        }
        assert_eq!(
            retry_after(decide(&full, &failure(transient("x"), 2, 2001))),
            0
        );
        assert_eq!(
            retry_after(decide(&full, &failure(transient("x"), 2, 2000))),
            2000
        );
    }

    #[test]
    fn decorrelated_jitter_uses_the_previous_delay() {
        let p = params(
            json!({"jitter": "decorrelated", "initial_interval_ms": 100, "max_interval_ms": 10_000}),
        );
        let mut f = failure(transient("x"), 2, 0);
        assert_eq!(retry_after(decide(&p, &f)), 100);
        f.previous_delay_ms = Some(1000);
        f.random = 2900; // span is 3000 - 100 + 1 = 2901
        assert_eq!(retry_after(decide(&p, &f)), 3000);
        f.previous_delay_ms = Some(9000);
        f.random = u64::MAX;
        assert!(retry_after(decide(&p, &f)) <= 10_000);
    }

    #[test]
    fn same_inputs_same_decision() {
        let p = Params::default();
        let f = failure(transient("x"), 3, 987_654_321);
        assert_eq!(retry_after(decide(&p, &f)), retry_after(decide(&p, &f)));
    }

    #[test]
    fn invalid_fatal_and_listed_kinds_are_not_retried() {
        let p = params(json!({"non_retryable": ["conflict", "not_found"]}));
        assert_eq!(
            give_up(decide(&p, &failure(invalid("bad"), 1, 0))),
            "invalid errors are not retried: bad"
        );
        assert_eq!(
            give_up(decide(&p, &failure(fatal("boom"), 1, 0))),
            "fatal errors are not retried: boom"
        );
        assert!(give_up(decide(&p, &failure(conflict("c"), 1, 0))).starts_with("conflict errors"));
        assert!(
            give_up(decide(&p, &failure(not_found("n"), 1, 0))).starts_with("not-found errors")
        );
        retry_after(decide(&p, &failure(unauthorized("u"), 1, 0)));
    }

    #[test]
    fn max_attempts_ends_retrying() {
        let p = params(json!({"max_attempts": 3}));
        retry_after(decide(&p, &failure(transient("x"), 2, 0)));
        assert_eq!(
            give_up(decide(&p, &failure(transient("x"), 3, 0))),
            "reached max_attempts (3)"
        );
        let unlimited = params(json!({"max_attempts": 0}));
        retry_after(decide(&unlimited, &failure(transient("x"), 1000, 0)));
    }

    #[test]
    fn throttled_retry_after_is_honoured_and_clamped() {
        let p = params(json!({"jitter": "none", "max_retry_after_ms": 10_000}));
        assert_eq!(
            retry_after(decide(&p, &failure(throttled("t", Some(5000)), 1, 0))),
            5000
        );
        assert_eq!(
            retry_after(decide(&p, &failure(throttled("t", Some(60_000)), 1, 0))),
            10_000
        );
        // A retry-after shorter than the backoff does not shorten it.
        assert_eq!(
            retry_after(decide(&p, &failure(throttled("t", Some(10)), 1, 0))),
            1000
        );
        assert_eq!(
            retry_after(decide(&p, &failure(throttled("t", None), 1, 0))),
            1000
        );
    }

    #[test]
    fn max_elapsed_gives_up_before_overrunning() {
        let p = params(json!({"jitter": "none", "max_elapsed_ms": 5000}));
        let mut f = failure(transient("x"), 1, 0);
        f.elapsed_ms = 4000;
        assert_eq!(retry_after(decide(&p, &f)), 1000);
        f.elapsed_ms = 4001;
        assert!(give_up(decide(&p, &f)).starts_with("would exceed max_elapsed_ms (5000)"));
    }

    #[test]
    fn validate_names_the_parameter() {
        let err = |v: Value| Params::parse(&v).unwrap_err();
        assert!(err(json!({"initial": 1})).contains("unknown parameter 'initial'"));
        assert!(err(json!({"multiplier": 0.5})).contains("'multiplier'"));
        assert!(err(json!({"multiplier": "2"})).contains("'multiplier'"));
        assert!(err(json!({"max_attempts": -1})).contains("'max_attempts'"));
        assert!(err(json!({"initial_interval_ms": 1.5})).contains("'initial_interval_ms'"));
        assert!(err(json!({"jitter": "lots"})).contains("'jitter'"));
        assert!(err(json!({"non_retryable": ["sometimes"]})).contains("'non_retryable'"));
        assert!(err(json!({"non_retryable": "conflict"})).contains("'non_retryable'"));
        assert!(err(json!({"max_interval_ms": 10})).contains("'max_interval_ms'"));
        assert!(err(json!([1])).contains("JSON object"));
        assert!(
            ExponentialBackoff::validate(&json!({"jitter": "equal", "max_elapsed_ms": 1})).is_ok()
        );
    }

    #[test]
    fn bad_params_at_decide_give_up() {
        let d = <ExponentialBackoff as Policy>::decide(
            &json!({"bogus": 1}),
            &failure(transient("x"), 1, 0),
        );
        assert!(give_up(d).contains("unknown parameter 'bogus'"));
    }
}
