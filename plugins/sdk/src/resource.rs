//! The [`Resource`] trait a resource plugin implements, and [`export_resource!`](crate::export_resource).

use serde_json::{Value, json};

use crate::error::fatal;
use crate::outcome::{parse_json, replace, report};
use crate::props::Props;
use crate::types::{CallContext, PluginError};
use crate::{CheckReport, Current, Outcome, PluginInfo, UpdateOutcome};

/// A resource plugin: the provider calls with parsed properties and state.
///
/// Properties arrive validated and defaulted by the host (per [`describe`](Self::describe)),
/// but the [`Props`] getters still check types, so `?` is all the error handling needed.
/// Only `describe`, `create` and `delete` are required; the other calls have defaults.
pub trait Resource {
    /// The served types. Must be cheap and pure: the host calls it once at load.
    fn describe() -> PluginInfo;

    /// Creates the real object. Return [`done`](crate::done), or [`pending`](crate::pending)
    /// to be polled instead of waiting inside the call.
    fn create(ctx: &CallContext, props: &Props) -> Result<Outcome, PluginError>;

    /// Changes the object in place. Default: ask the host to replace the resource.
    fn update(
        ctx: &CallContext,
        current: &Current,
        old: &Props,
        new: &Props,
    ) -> Result<UpdateOutcome, PluginError> {
        let _ = (current, old, new);
        Ok(replace(format!(
            "{} cannot be updated in place",
            ctx.resource_type
        )))
    }

    /// Deletes the object. An object that is already gone is deleted: return
    /// [`deleted`](crate::deleted) (or a `not-found` error).
    fn delete(ctx: &CallContext, current: &Current, props: &Props) -> Result<Outcome, PluginError>;

    /// Observes the object. Default: it exists, has not drifted, attributes `{}`.
    fn check(
        ctx: &CallContext,
        current: &Current,
        props: &Props,
    ) -> Result<CheckReport, PluginError> {
        let _ = (ctx, current, props);
        Ok(report(true, Vec::new(), json!({})))
    }

    /// Continues an operation that returned `pending`; `ctx.operation` names it and `state` is
    /// the pending state. Default: a `fatal` error (the plugin never returns `pending`).
    fn poll(ctx: &CallContext, props: &Props, state: &Value) -> Result<Outcome, PluginError> {
        let _ = (props, state);
        Err(fatal(format!("{} has nothing to poll", ctx.resource_type)))
    }
}

/// Exports a [`Resource`] implementation as the component's `kiln:plugin/provider`.
///
/// Use once per plugin, at the crate root: `kiln_plugin_sdk::export_resource!(MyPlugin);`
#[macro_export]
macro_rules! export_resource {
    ($ty:ident) => {
        impl $crate::__private::ProviderGuest for $ty {
            fn describe() -> $crate::PluginInfo {
                <$ty as $crate::Resource>::describe()
            }
            fn create(
                ctx: $crate::CallContext,
                properties: $crate::Json,
            ) -> ::core::result::Result<$crate::Outcome, $crate::PluginError> {
                $crate::__private::create::<$ty>(ctx, properties)
            }
            fn update(
                ctx: $crate::CallContext,
                current: $crate::Current,
                old_properties: $crate::Json,
                new_properties: $crate::Json,
            ) -> ::core::result::Result<$crate::UpdateOutcome, $crate::PluginError> {
                $crate::__private::update::<$ty>(ctx, current, old_properties, new_properties)
            }
            fn delete(
                ctx: $crate::CallContext,
                current: $crate::Current,
                properties: $crate::Json,
            ) -> ::core::result::Result<$crate::Outcome, $crate::PluginError> {
                $crate::__private::delete::<$ty>(ctx, current, properties)
            }
            fn check(
                ctx: $crate::CallContext,
                current: $crate::Current,
                properties: $crate::Json,
            ) -> ::core::result::Result<$crate::CheckReport, $crate::PluginError> {
                $crate::__private::check::<$ty>(ctx, current, properties)
            }
            fn poll(
                ctx: $crate::CallContext,
                properties: $crate::Json,
                state: $crate::Json,
            ) -> ::core::result::Result<$crate::Outcome, $crate::PluginError> {
                $crate::__private::poll::<$ty>(ctx, properties, state)
            }
        }
        $crate::__private::resource::__export_resource_plugin!(
            $ty with_types_in $crate::__private::resource
        );
    };
}

// Glue called by `export_resource!`: JSON text in, parsed values to the trait.

#[doc(hidden)]
pub fn create<T: Resource>(ctx: CallContext, properties: String) -> Result<Outcome, PluginError> {
    T::create(&ctx, &Props::parse(&properties)?)
}

#[doc(hidden)]
pub fn update<T: Resource>(
    ctx: CallContext,
    current: Current,
    old: String,
    new: String,
) -> Result<UpdateOutcome, PluginError> {
    T::update(&ctx, &current, &Props::parse(&old)?, &Props::parse(&new)?)
}

#[doc(hidden)]
pub fn delete<T: Resource>(
    ctx: CallContext,
    current: Current,
    properties: String,
) -> Result<Outcome, PluginError> {
    T::delete(&ctx, &current, &Props::parse(&properties)?)
}

#[doc(hidden)]
pub fn check<T: Resource>(
    ctx: CallContext,
    current: Current,
    properties: String,
) -> Result<CheckReport, PluginError> {
    T::check(&ctx, &current, &Props::parse(&properties)?)
}

#[doc(hidden)]
pub fn poll<T: Resource>(
    ctx: CallContext,
    properties: String,
    state: String,
) -> Result<Outcome, PluginError> {
    T::poll(&ctx, &Props::parse(&properties)?, &parse_json(&state)?)
}
