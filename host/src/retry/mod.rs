//! Retries: which policy decides for a failed call (rules from `kiln.toml`, first match wins),
//! asking it, and describing a resource's failed attempts when a policy gives up.
//!
//! Policies are sandboxed components and pure: the attempt count, the time since the first
//! failure, the previous delay and the history live in the job's row, so a scheduled retry
//! survives any engine restart and fires from whichever engine claims it when due.

mod budget;
mod history;
mod judge;

use std::collections::BTreeMap;

use serde_json::Value;

pub use budget::{Grant, RetryBudget};
pub use history::{Attempt, summarize};
pub use judge::{FailedCall, Judgement};

use crate::config::{ConfigError, RetryConfig, RetryRule};
use crate::plugin_set::PluginSet;
use crate::runtime::{
    CallError, Decision, ErrorInfo, Failure, Fault, FaultCause, Operation, Plugin, PluginError,
    World,
};

/// The policy used when no rule matches and `[retry.policies.default]` is not configured.
const DEFAULT_COMPONENT: &str = "exponential-backoff";

pub struct Policy {
    pub name: String,
    pub plugin: Plugin,
    pub params: Value,
}

/// The configured policies and rules, checked against the loaded plugins.
pub struct RetryPolicies {
    policies: BTreeMap<String, Policy>,
    rules: Vec<RetryRule>,
    budget: RetryBudget,
}

/// What to do after a failed call.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    RetryAfter { delay_ms: u64, policy: String },
    GiveUp { reason: String, policy: String },
}

impl RetryPolicies {
    /// Resolves each policy's component and has the policy check its own parameters, so that a
    /// bad parameter is reported at start, naming the key, before any stack runs.
    pub async fn load(config: &RetryConfig, plugins: &PluginSet) -> Result<Self, ConfigError> {
        let mut configured = config.policies.clone();
        if !configured.contains_key("default") {
            configured.insert(
                "default".into(),
                crate::config::PolicyConfig {
                    component: DEFAULT_COMPONENT.into(),
                    params: Default::default(),
                },
            );
        }
        let mut policies = BTreeMap::new();
        for (name, pc) in configured {
            let at = |key: &str| format!("retry.policies.{name}.{key}");
            let plugin = plugins
                .plugin(&pc.component)
                .filter(|p| p.world() == World::RetryPolicy)
                .ok_or_else(|| {
                    let known: Vec<&str> = plugins.policies().map(Plugin::name).collect();
                    ConfigError {
                        path: at("component"),
                        message: format!(
                            "no retry-policy plugin named '{}' (loaded: {})",
                            pc.component,
                            known.join(", ")
                        ),
                    }
                })?
                .clone();
            let params = serde_json::to_value(&pc.params).expect("TOML converts to JSON");
            match plugin.validate_params(&params).await {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => {
                    return Err(ConfigError {
                        path: at("params"),
                        message: reason,
                    });
                }
                Err(e) => {
                    return Err(ConfigError {
                        path: at("component"),
                        message: e.to_string(),
                    });
                }
            }
            policies.insert(
                name.clone(),
                Policy {
                    name,
                    plugin,
                    params,
                },
            );
        }
        Ok(Self {
            policies,
            rules: config.rules.clone(),
            budget: RetryBudget::new(&config.budget),
        })
    }

    /// The policy for a failure: the first rule whose types, operations and error kinds all
    /// match (an empty list matches anything), else `default`.
    pub fn choose(&self, resource_type: &str, operation: Operation, kind: &str) -> &Policy {
        let op = operation.as_str();
        let any_or = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
        self.rules
            .iter()
            .find(|r| {
                any_or(&r.types, resource_type)
                    && any_or(&r.operations, op)
                    && any_or(&r.errors, kind)
            })
            .and_then(|r| self.policies.get(&r.policy))
            .unwrap_or_else(|| &self.policies["default"])
    }

    /// The budget retries to `plugin` at `origin` draw on.
    pub fn budget(&self, plugin: &str, origin: Option<&str>) -> (String, Grant) {
        let key = match origin {
            Some(o) => format!("{plugin}@{o}"),
            None => plugin.to_string(),
        };
        let grant = self.budget.take(&key);
        (key, grant)
    }

    pub fn policy(&self, name: &str) -> Option<&Policy> {
        self.policies.get(name)
    }

    /// Asks the chosen policy what to do after `error` on attempt `attempt`.
    pub async fn decide(
        &self,
        resource_type: &str,
        operation: Operation,
        error: &PluginError,
        attempt: u32,
        elapsed_ms: u64,
        previous_delay_ms: Option<u64>,
    ) -> Verdict {
        let policy = self.choose(resource_type, operation, error.kind());
        decide_with(
            policy,
            resource_type,
            operation,
            error,
            attempt,
            elapsed_ms,
            previous_delay_ms,
            rand::random(),
        )
        .await
    }
}

/// One decision by one policy; `random` feeds its jitter (fixed by `kiln retry simulate`).
#[allow(clippy::too_many_arguments)]
pub async fn decide_with(
    policy: &Policy,
    resource_type: &str,
    operation: Operation,
    error: &PluginError,
    attempt: u32,
    elapsed_ms: u64,
    previous_delay_ms: Option<u64>,
    random: u64,
) -> Verdict {
    let failure = Failure {
        error: error.clone(),
        attempt,
        elapsed_ms,
        previous_delay_ms,
        operation,
        resource_type: resource_type.to_string(),
        random,
    };
    let name = policy.name.clone();
    match policy.plugin.decide(&policy.params, &failure).await {
        Ok(Decision::RetryAfter(delay_ms)) => Verdict::RetryAfter {
            delay_ms,
            policy: name,
        },
        Ok(Decision::GiveUp(reason)) => Verdict::GiveUp {
            reason,
            policy: name,
        },
        // A broken policy must not retry forever: the call fails, saying why.
        Err(e) => Verdict::GiveUp {
            reason: format!("retry policy '{name}' failed: {e}"),
            policy: name,
        },
    }
}

/// The error a policy reasons about for a failed call. A call that timed out may succeed next
/// time (transient); a trap, a limit or broken output will not (fatal).
pub fn as_plugin_error(e: &CallError) -> PluginError {
    match e {
        CallError::Plugin(p, _) => p.clone(),
        CallError::Fault(Fault {
            cause: FaultCause::Timeout { .. },
            ..
        }) => PluginError::Transient(ErrorInfo {
            message: e.to_string(),
            status: None,
        }),
        CallError::Fault(_) => PluginError::Fatal(ErrorInfo {
            message: e.to_string(),
            status: None,
        }),
    }
}
