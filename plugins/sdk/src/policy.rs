//! The [`Policy`] trait a retry policy implements, and [`export_policy!`](crate::export_policy).

use serde_json::Value;

use crate::{Decision, Failure};

/// A retry policy. Policies are pure: everything a decision depends on arrives in `params`
/// and [`Failure`] (including `failure.random` for jitter), so decisions are reproducible.
pub trait Policy {
    /// Checks the parameters (a JSON object from `kiln.toml`) before any stack runs. The error
    /// must name the offending parameter.
    fn validate(params: &Value) -> Result<(), String>;

    /// Decides what to do after `failure`, with the validated parameters.
    fn decide(params: &Value, failure: &Failure) -> Decision;
}

/// Exports a [`Policy`] implementation as the component's `kiln:plugin/policy`.
///
/// Use once per plugin, at the crate root: `kiln_plugin_sdk::export_policy!(MyPolicy);`
#[macro_export]
macro_rules! export_policy {
    ($ty:ident) => {
        impl $crate::__private::PolicyGuest for $ty {
            fn validate(params: $crate::Json) -> ::core::result::Result<(), ::std::string::String> {
                $crate::__private::validate::<$ty>(params)
            }
            fn decide(params: $crate::Json, failure: $crate::Failure) -> $crate::Decision {
                $crate::__private::decide::<$ty>(params, failure)
            }
        }
        $crate::__private::policy::__export_retry_policy!(
            $ty with_types_in $crate::__private::policy
        );
    };
}

fn parse_params(params: &str) -> Result<Value, String> {
    if params.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_str(params).map_err(|e| format!("parameters are not valid JSON: {e}"))
}

// Glue called by `export_policy!`: JSON text in, parsed values to the trait.

#[doc(hidden)]
pub fn validate<T: Policy>(params: String) -> Result<(), String> {
    T::validate(&parse_params(&params)?)
}

#[doc(hidden)]
pub fn decide<T: Policy>(params: String, failure: Failure) -> Decision {
    match parse_params(&params) {
        Ok(params) => T::decide(&params, &failure),
        Err(e) => Decision::GiveUp(e),
    }
}
