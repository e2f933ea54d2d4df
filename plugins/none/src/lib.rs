//! `OS::Heat::None`: a resource that does nothing and accepts any properties, as in Heat.
//! Useful as a placeholder, and to exercise the engine without touching anything real.

use kiln_plugin_sdk::prelude::*;

struct NoneResource;

impl Resource for NoneResource {
    fn describe() -> PluginInfo {
        PluginInfo::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")).with_type(
            ResourceType::new("OS::Heat::None")
                .description("Does nothing; accepts any properties. A placeholder.")
                .open_properties(),
        )
    }

    /// The idempotency key is stable across retries, so a retried create yields the same id.
    fn create(ctx: &CallContext, _: &Props) -> Result<Outcome, PluginError> {
        Ok(done(&ctx.idempotency_key, json!({}), json!({})))
    }

    /// Any change applies in place: there is nothing to change.
    fn update(
        _: &CallContext,
        current: &Current,
        _: &Props,
        _: &Props,
    ) -> Result<UpdateOutcome, PluginError> {
        Ok(done(&current.physical_id, json!({}), json!({})).into())
    }

    fn delete(_: &CallContext, _: &Current, _: &Props) -> Result<Outcome, PluginError> {
        Ok(deleted())
    }

    fn check(_: &CallContext, _: &Current, _: &Props) -> Result<CheckReport, PluginError> {
        Ok(report(true, Vec::new(), json!({})))
    }

    /// None never returns `pending`; a stray poll simply finishes the operation.
    fn poll(ctx: &CallContext, _: &Props, _: &Value) -> Result<Outcome, PluginError> {
        Ok(match ctx.operation {
            Operation::Delete => deleted(),
            _ => done(&ctx.idempotency_key, json!({}), json!({})),
        })
    }
}

kiln_plugin_sdk::export_resource!(NoneResource);
