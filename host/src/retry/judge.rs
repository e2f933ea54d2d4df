//! A failed call judged: the chosen policy decides, the budget of the plugin and host may
//! defer a retry (never drop it), the metrics count both, and the reason says all of it in the
//! words the events and the failed resource show.

use super::{Attempt, RetryPolicies, Verdict, as_plugin_error, summarize};
use crate::metrics::{BudgetLabels, RetryLabels, metrics};
use crate::runtime::{CallError, Operation, PluginError};

/// A call that failed, with what the job's row knows of the attempts before it.
pub struct FailedCall<'a> {
    /// The plugin that made the call (the budget and the metrics are per plugin).
    pub plugin: &'a str,
    pub resource_type: &'a str,
    pub operation: Operation,
    pub error: &'a CallError,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Since the first failed attempt ended.
    pub elapsed_ms: u64,
    /// The delay chosen before this attempt, if it was a retry.
    pub previous_delay_ms: Option<u64>,
    /// The failed attempts before this one.
    pub history: Vec<Attempt>,
}

/// What becomes of the call.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    /// Call again after `delay_ms`; `history` (JSON) is the attempts' record to keep.
    Retry {
        delay_ms: u64,
        history: String,
        reason: String,
    },
    /// The resource fails, for `reason`.
    GiveUp { reason: String },
}

impl RetryPolicies {
    pub async fn judge(&self, call: FailedCall<'_>) -> Judgement {
        let FailedCall {
            plugin,
            error: e,
            attempt,
            elapsed_ms,
            mut history,
            ..
        } = call;
        let error = as_plugin_error(e);
        history.push(Attempt {
            kind: error.kind().to_string(),
            status: error.status(),
        });
        let verdict = self
            .decide(
                call.resource_type,
                call.operation,
                &error,
                attempt,
                elapsed_ms,
                call.previous_delay_ms,
            )
            .await;
        match verdict {
            Verdict::RetryAfter { delay_ms, policy } => {
                // Retries to one plugin and host draw on a budget; an empty one defers them.
                let (key, grant) = self.budget(plugin, e.origins().last().map(String::as_str));
                let delay_ms = delay_ms.max(grant.wait_ms);
                let m = metrics();
                let bucket = BudgetLabels {
                    bucket: key.clone(),
                };
                m.budget_tokens.get_or_create(&bucket).set(grant.tokens);
                if grant.wait_ms > 0 {
                    m.budget_deferred.get_or_create(&bucket).inc();
                }
                m.retries
                    .get_or_create(&RetryLabels {
                        plugin: plugin.to_string(),
                        kind: error.kind().to_string(),
                        policy: policy.clone(),
                    })
                    .inc();
                let deferred = if grant.wait_ms > 0 {
                    format!(
                        "; retry budget {key} empty, deferred to its refill ({} retries deferred so far)",
                        grant.deferred
                    )
                } else {
                    String::new()
                };
                Judgement::Retry {
                    delay_ms,
                    history: serde_json::to_string(&history).expect("history serialises"),
                    reason: format!(
                        "attempt {attempt} failed: {e}; retrying in {delay_ms} ms (policy {policy}){deferred}"
                    ),
                }
            }
            Verdict::GiveUp { reason, policy } if history.len() == 1 => {
                exhausted(plugin, &error, &policy);
                Judgement::GiveUp {
                    reason: format!("{e} (not retried: {reason}; policy {policy})"),
                }
            }
            Verdict::GiveUp { reason, policy } => {
                exhausted(plugin, &error, &policy);
                Judgement::GiveUp {
                    reason: format!(
                        "{}; policy {policy}; last error: {e}",
                        summarize(&history, elapsed_ms, &reason)
                    ),
                }
            }
        }
    }
}

fn exhausted(plugin: &str, error: &PluginError, policy: &str) {
    metrics()
        .retries_exhausted
        .get_or_create(&RetryLabels {
            plugin: plugin.to_string(),
            kind: error.kind().to_string(),
            policy: policy.to_string(),
        })
        .inc();
}
