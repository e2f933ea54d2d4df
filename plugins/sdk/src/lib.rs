//! # kiln-plugin-sdk: writing Kiln plugins in Rust
//!
//! Kiln's resource types and retry policies are WebAssembly components built for
//! `wasm32-wasip2` against the `kiln:plugin` WIT package (`wit/plugin.wit`, the contract). This
//! crate holds the generated bindings and the helpers that make a plugin one small file.
//!
//! ## Set-up
//!
//! A plugin is a `cdylib` that enables **exactly one** feature of this crate:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! kiln-plugin-sdk = { path = "../sdk", features = ["resource"] } # or ["policy"]
//! serde_json = "1"
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --profile plugin`; the `.wasm` in
//! `target/wasm32-wasip2/plugin/` is the component. Each feature embeds its world's type
//! information, and a binary carrying both worlds cannot become a component, so build resource
//! plugins and policies in separate cargo invocations (cargo unifies features within one).
//!
//! ## A resource plugin
//!
//! Implement [`Resource`] and export it with [`export_resource!`]:
//!
//! ```no_run
//! use kiln_plugin_sdk::prelude::*;
//!
//! struct Greeting;
//!
//! impl Resource for Greeting {
//!     fn describe() -> PluginInfo {
//!         PluginInfo::new("greeting", "0.1.0").with_type(
//!             ResourceType::new("Example::Greeting")
//!                 .description("A greeting, computed once.")
//!                 .property(Property::string("name").required().update_allowed())
//!                 .property(Property::integer("repeat").default(json!(1)).range(1.0, 10.0))
//!                 .attribute("text", "The greeting."),
//!         )
//!     }
//!
//!     fn create(ctx: &CallContext, props: &Props) -> Result<Outcome, PluginError> {
//!         let repeat = props.integer_or("repeat", 1)? as usize;
//!         let text = format!("hello {}! ", props.string("name")?).repeat(repeat);
//!         log::info("greeting created", &[("resource", &ctx.resource)]);
//!         Ok(done(&ctx.idempotency_key, json!({"text": text}), json!({"text": text})))
//!     }
//!
//!     // `name` is update-allowed: recompute in place, keeping the physical id.
//!     fn update(
//!         ctx: &CallContext,
//!         current: &Current,
//!         _old: &Props,
//!         new: &Props,
//!     ) -> Result<UpdateOutcome, PluginError> {
//!         let Outcome::Done(mut d) = Self::create(ctx, new)? else { unreachable!() };
//!         d.physical_id = current.physical_id.clone();
//!         Ok(Outcome::Done(d).into())
//!     }
//!
//!     fn delete(_: &CallContext, _: &Current, _: &Props) -> Result<Outcome, PluginError> {
//!         Ok(deleted())
//!     }
//! }
//!
//! kiln_plugin_sdk::export_resource!(Greeting);
//! ```
//!
//! What the helpers give you:
//!
//! * [`Props`]: typed getters over the properties (`string`, `integer_or`, `opt_map`,
//!   `parse_as::<T>`, ...) whose errors are `invalid` and name the property.
//! * Errors: [`transient`], [`throttled`], [`unauthorized`], [`conflict`], [`not_found`],
//!   [`invalid`], [`fatal`], plus [`PluginError::with_status`], `kind()`, `message()`.
//! * Results: [`done`], [`pending`], [`deleted`], [`replace`], [`report`], [`drift`];
//!   `Outcome` converts into `UpdateOutcome` with `.into()`; [`Current::state_value`].
//! * Schema: [`PluginInfo::new`], [`ResourceType`], [`Property`], [`Constraint::range`] and
//!   friends.
//! * HTTP ([`http`]): `Request::post(url).header(..).json(&v).send()?.error_for_status()?`,
//!   with host errors and HTTP statuses mapped to the right error kinds.
//! * [`log`]: `log::info("msg", &[("key", "value")])` into the host's log.
//! * [`now_ms`]: wall-clock milliseconds, comparable with `ctx.deadline_ms`.
//!
//! Never sleep in a call: return [`pending`] with a poll delay and finish in
//! [`Resource::poll`]. The host aborts a call at `ctx.deadline_ms`. `eprintln!` and panic
//! messages reach the operator (the tail of stderr is attached to a failed call's error).
//!
//! ## A retry policy
//!
//! Enable the `policy` feature, implement `Policy` (`validate` the parameters, `decide` on a
//! `Failure`) and export it with `export_policy!`. Decisions must be pure: take randomness
//! from `failure.random`.
//!
//! ```no_run
//! use kiln_plugin_sdk::prelude::*;
//!
//! struct Fixed;
//!
//! impl Policy for Fixed {
//!     fn validate(params: &Value) -> Result<(), String> {
//!         match params.get("delay_ms") {
//!             None => Ok(()),
//!             Some(v) if v.is_u64() => Ok(()),
//!             Some(v) => Err(format!("parameter 'delay_ms' must be an integer, got {v}")),
//!         }
//!     }
//!
//!     fn decide(params: &Value, failure: &Failure) -> Decision {
//!         match failure.error.kind() {
//!             "invalid" | "fatal" => Decision::GiveUp(failure.error.message().into()),
//!             _ if failure.attempt >= 3 => Decision::GiveUp("reached 3 attempts".into()),
//!             _ => Decision::RetryAfter(params["delay_ms"].as_u64().unwrap_or(1000)),
//!         }
//!     }
//! }
//!
//! kiln_plugin_sdk::export_policy!(Fixed);
//! ```
//!
//! ## Sandbox
//!
//! A plugin can do only what the host grants: the `log` and `http` imports (URLs checked
//! against the plugin's allow-list), clocks and randomness. Files, environment variables and
//! sockets are not available.

mod bindings;
mod error;
pub mod log;
mod props;
mod time;

#[cfg(feature = "resource")]
pub mod http;
#[cfg(feature = "resource")]
mod outcome;
#[cfg(feature = "policy")]
mod policy;
#[cfg(feature = "resource")]
mod resource;
#[cfg(feature = "resource")]
mod schema;

pub use bindings::types;
pub use error::{conflict, fatal, invalid, not_found, throttled, transient, unauthorized};
pub use props::Props;
pub use time::now_ms;
pub use types::{CallContext, ErrorInfo, Json, Operation, PluginError, ThrottledInfo};

#[cfg(feature = "resource")]
pub use bindings::resource::exports::kiln::plugin::provider::{
    AttributeSchema, Bounds, CheckReport, Constraint, Current, Done, Drift, Outcome, Pending,
    PluginInfo, PropertySchema, PropertyType, TypeSchema, UpdateOutcome,
};
#[cfg(feature = "resource")]
pub use outcome::{deleted, done, drift, parse_json, pending, replace, report};
#[cfg(feature = "resource")]
pub use resource::Resource;
#[cfg(feature = "resource")]
pub use schema::{Property, ResourceType};

#[cfg(feature = "policy")]
pub use bindings::policy::exports::kiln::plugin::policy::{Decision, Failure};
#[cfg(feature = "policy")]
pub use policy::Policy;

/// Re-exported so plugins need no direct dependency for JSON.
pub use serde_json::{self, Map, Value, json};

/// `use kiln_plugin_sdk::prelude::*;` brings in what a plugin file usually needs.
pub mod prelude {
    pub use crate::log;
    pub use crate::{
        CallContext, Map, Operation, PluginError, Props, Value, conflict, fatal, invalid, json,
        not_found, now_ms, throttled, transient, unauthorized,
    };

    #[cfg(feature = "resource")]
    pub use crate::http::{Request, Response};
    #[cfg(feature = "resource")]
    pub use crate::{
        CheckReport, Constraint, Current, Outcome, PluginInfo, Property, PropertyType, Resource,
        ResourceType, UpdateOutcome, deleted, done, drift, pending, replace, report,
    };

    #[cfg(feature = "policy")]
    pub use crate::{Decision, Failure, Policy};
}

#[doc(hidden)]
pub mod __private {
    #[cfg(feature = "policy")]
    pub use crate::bindings::policy;
    #[cfg(feature = "policy")]
    pub use crate::bindings::policy::exports::kiln::plugin::policy::Guest as PolicyGuest;
    #[cfg(feature = "resource")]
    pub use crate::bindings::resource;
    #[cfg(feature = "resource")]
    pub use crate::bindings::resource::exports::kiln::plugin::provider::Guest as ProviderGuest;
    #[cfg(feature = "policy")]
    pub use crate::policy::{decide, validate};
    #[cfg(feature = "resource")]
    pub use crate::resource::{check, create, delete, poll, update};
}
