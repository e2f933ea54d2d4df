//! `kiln retry simulate`: the schedule a configured policy produces for a sequence of errors,
//! so that operators can tune policies without running stacks.

use clap::{Args, Subcommand};
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::plugin::plugin_set_failure;
use super::table::render;
use super::{Failure, Format, exit};
use crate::config::Config;
use crate::plugin_set::PluginSet;
use crate::retry::{RetryPolicies, Verdict, decide_with};
use crate::runtime::{ErrorInfo, Operation, PluginError, ThrottledInfo};

#[derive(Subcommand)]
pub enum RetryCommand {
    /// Print the schedule a policy would produce for a sequence of errors.
    Simulate(SimulateArgs),
}

#[derive(Args)]
pub struct SimulateArgs {
    /// The errors of successive attempts, comma-separated: an HTTP status (`503`, `429`,
    /// `429:2000` for a Retry-After of 2000 ms) or a kind (transient, throttled, unauthorized,
    /// conflict, not-found, invalid, fatal, timeout).
    #[arg(long)]
    errors: String,
    /// Use this policy; otherwise the rules choose by --type, --operation and each error.
    #[arg(long)]
    policy: Option<String>,
    #[arg(long = "type", default_value = "")]
    type_name: String,
    #[arg(long, default_value = "create")]
    operation: String,
    /// Seed of the jitter's random numbers (the same seed gives the same schedule).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub async fn run(cmd: RetryCommand, config: &Config) -> Result<(), Failure> {
    let RetryCommand::Simulate(a) = cmd;
    let bad = |m: String| Failure::new(exit::BAD_INPUT, m);
    let errors: Vec<PluginError> = a
        .errors
        .split(',')
        .map(|t| parse_error(t.trim()))
        .collect::<Result<_, _>>()
        .map_err(bad)?;
    let operation = match a.operation.as_str() {
        "create" => Operation::Create,
        "update" => Operation::Update,
        "delete" => Operation::Delete,
        "check" => Operation::Check,
        other => return Err(bad(format!("--operation: unknown operation '{other}'"))),
    };
    let plugins = PluginSet::load(config).await.map_err(plugin_set_failure)?;
    let policies = RetryPolicies::load(&config.retry, &plugins)
        .await
        .map_err(|e| Failure::new(exit::BAD_INPUT, e))?;
    if let Some(name) = &a.policy
        && policies.policy(name).is_none()
    {
        return Err(bad(format!("--policy: no policy named '{name}'")));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed);
    let (mut elapsed, mut previous) = (0u64, None);
    let mut rows = Vec::new();
    for (i, error) in errors.iter().enumerate() {
        let policy = match &a.policy {
            Some(name) => policies.policy(name).expect("checked above"),
            None => policies.choose(&a.type_name, operation, error.kind()),
        };
        let attempt = i as u32 + 1;
        let verdict = decide_with(
            policy,
            &a.type_name,
            operation,
            error,
            attempt,
            elapsed,
            previous,
            rng.random(),
        )
        .await;
        let shown = describe(error);
        match verdict {
            Verdict::RetryAfter { delay_ms, policy } => {
                elapsed += delay_ms;
                previous = Some(delay_ms);
                rows.push(json!({"attempt": attempt, "error": shown, "policy": policy, "decision": "retry", "delay_ms": delay_ms, "at_ms": elapsed}));
            }
            Verdict::GiveUp { reason, policy } => {
                rows.push(json!({"attempt": attempt, "error": shown, "policy": policy, "decision": format!("give up: {reason}"), "delay_ms": null, "at_ms": elapsed}));
                break;
            }
        }
    }
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&rows).unwrap()),
        Format::Table => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let ms = |v: &serde_json::Value| {
                        v.as_u64().map_or("-".into(), |n| format!("{n} ms"))
                    };
                    vec![
                        r["attempt"].to_string(),
                        r["error"].as_str().unwrap_or_default().into(),
                        r["policy"].as_str().unwrap_or_default().into(),
                        r["decision"].as_str().unwrap_or_default().into(),
                        ms(&r["delay_ms"]),
                        ms(&r["at_ms"]),
                    ]
                })
                .collect();
            print!(
                "{}",
                render(
                    &[
                        "ATTEMPT",
                        "ERROR",
                        "POLICY",
                        "DECISION",
                        "DELAY",
                        "CUMULATIVE"
                    ],
                    &cells
                )
            );
            if rows.last().is_some_and(|r| r["decision"] == "retry") {
                println!(
                    "(attempt {} is not in --errors: it succeeds)",
                    rows.len() + 1
                );
            }
        }
    }
    Ok(())
}

fn describe(e: &PluginError) -> String {
    match (e.status(), e) {
        (Some(s), PluginError::Throttled(t)) if t.retry_after_ms.is_some() => {
            format!(
                "{} ({s}, retry-after {} ms)",
                e.kind(),
                t.retry_after_ms.unwrap_or_default()
            )
        }
        (Some(s), _) => format!("{} ({s})", e.kind()),
        (None, _) => e.kind().to_string(),
    }
}

/// `503`, `429:2000` or a kind name, as the error a plugin would return.
fn parse_error(token: &str) -> Result<PluginError, String> {
    let info = |status: Option<u16>| ErrorInfo {
        message: format!("simulated {token}"),
        status,
    };
    let (head, retry_after) = match token.split_once(':') {
        Some((h, ms)) => (
            h,
            Some(
                ms.parse::<u64>()
                    .map_err(|_| format!("--errors: bad retry-after in '{token}'"))?,
            ),
        ),
        None => (token, None),
    };
    if let Ok(status) = head.parse::<u16>() {
        return Ok(match status {
            429 => PluginError::Throttled(ThrottledInfo {
                message: format!("simulated {token}"),
                status: Some(429),
                retry_after_ms: retry_after,
            }),
            401 => PluginError::Unauthorized(info(Some(401))),
            404 => PluginError::NotFound(info(Some(404))),
            409 => PluginError::Conflict(info(Some(409))),
            500..=599 => PluginError::Transient(info(Some(status))),
            400..=499 => PluginError::Invalid(info(Some(status))),
            _ => return Err(format!("--errors: {status} is not an error status")),
        });
    }
    Ok(match head {
        "transient" | "timeout" => PluginError::Transient(info(None)),
        "throttled" => PluginError::Throttled(ThrottledInfo {
            message: format!("simulated {token}"),
            status: None,
            retry_after_ms: retry_after,
        }),
        "unauthorized" => PluginError::Unauthorized(info(None)),
        "conflict" => PluginError::Conflict(info(None)),
        "not-found" => PluginError::NotFound(info(None)),
        "invalid" => PluginError::Invalid(info(None)),
        "fatal" => PluginError::Fatal(info(None)),
        other => {
            return Err(format!(
                "--errors: '{other}' is neither an HTTP status nor an error kind"
            ));
        }
    })
}
