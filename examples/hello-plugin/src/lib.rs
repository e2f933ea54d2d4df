//! `Example::Greeting`: a resource whose "real object" is a greeting text. It shows the parts of
//! a plugin: a schema (`describe`), create/update/delete, an attribute, a log record and an
//! error for bad input.

use kiln_plugin_sdk::prelude::*;

struct Greeting;

impl Resource for Greeting {
    fn describe() -> PluginInfo {
        PluginInfo::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")).with_type(
            ResourceType::new("Example::Greeting")
                .description("A greeting, computed once and kept.")
                .property(
                    Property::string("name")
                        .description("Who to greet.")
                        .required()
                        .update_allowed(),
                )
                .property(
                    Property::integer("repeat")
                        .description("How many times.")
                        .default(json!(1))
                        .range(1.0, 10.0)
                        .update_allowed(),
                )
                .attribute("text", "The greeting."),
        )
    }

    fn create(ctx: &CallContext, props: &Props) -> Result<Outcome, PluginError> {
        let text = greeting(props)?;
        log::info("greeting created", &[("resource", &ctx.resource)]);
        Ok(done(
            &ctx.idempotency_key,
            json!({"text": text}),
            json!({"text": text}),
        ))
    }

    fn update(
        _: &CallContext,
        current: &Current,
        _old: &Props,
        new: &Props,
    ) -> Result<UpdateOutcome, PluginError> {
        let text = greeting(new)?;
        Ok(done(
            &current.physical_id,
            json!({"text": text}),
            json!({"text": text}),
        )
        .into())
    }

    fn delete(_: &CallContext, _: &Current, _: &Props) -> Result<Outcome, PluginError> {
        Ok(deleted())
    }
}

fn greeting(props: &Props) -> Result<String, PluginError> {
    let name = props.string("name")?;
    if name.trim().is_empty() {
        return Err(invalid("name must not be empty"));
    }
    let repeat = props.integer_or("repeat", 1)?.clamp(1, 10) as usize;
    Ok(vec![format!("Hello, {name}!"); repeat].join(" "))
}

kiln_plugin_sdk::export_resource!(Greeting);
