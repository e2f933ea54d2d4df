//! `OS::Heat::TestResource`: Heat's resource for testing orchestration. It stores `value` and
//! exposes it as `output`, and can be told to fail, to fail a number of attempts first (for
//! retry tests), to demand replacement on update, or to take a while (by returning `pending`
//! and being polled, never by sleeping).

use kiln_plugin_sdk::prelude::*;

struct TestResource;

fn op_name(op: Operation) -> &'static str {
    match op {
        Operation::Create => "create",
        Operation::Update => "update",
        Operation::Delete => "delete",
        Operation::Check => "check",
    }
}

/// `fail_attempts`: the first N attempts of a call fail with a retryable error.
fn maybe_fail_attempt(ctx: &CallContext, props: &Props) -> Result<(), PluginError> {
    let fail_attempts = props.integer_or("fail_attempts", 0)?;
    if i64::from(ctx.attempt) <= fail_attempts {
        return Err(transient(format!(
            "Test Resource {} failing attempt {} of {fail_attempts} (fail_attempts)",
            ctx.resource, ctx.attempt
        )));
    }
    Ok(())
}

fn maybe_fail(ctx: &CallContext, props: &Props) -> Result<(), PluginError> {
    if props.boolean_or("fail", false)? {
        return Err(fatal(format!("Test Resource failed {}", ctx.resource)));
    }
    Ok(())
}

/// How long the operation takes, in ms: `action_wait_secs.<op>` if set, else `wait_secs`.
fn wait_ms(props: &Props, op: Operation) -> Result<u64, PluginError> {
    let per_action = props.map("action_wait_secs")?;
    let secs = match per_action.get(op_name(op)) {
        None | Some(Value::Null) => props.number_or("wait_secs", 0.0)?,
        Some(v) => v.as_f64().ok_or_else(|| {
            invalid(format!(
                "property 'action_wait_secs' key '{}' must be a number, got {v}",
                op_name(op)
            ))
        })?,
    };
    if secs < 0.0 {
        return Err(invalid(format!(
            "wait for {} must not be negative, got {secs}",
            op_name(op)
        )));
    }
    Ok((secs * 1000.0).round() as u64)
}

/// The finished operation: `delete` leaves nothing, the others hold `value`.
fn finish(op: &str, physical_id: &str, value: &Value) -> Outcome {
    match op {
        "delete" => deleted(),
        _ => done(
            physical_id,
            json!({"value": value}),
            json!({"output": value}),
        ),
    }
}

/// Finishes now, or after the wait (by returning `pending` until `until_ms`).
fn finish_after(op: Operation, wait: u64, physical_id: &str, value: &Value) -> Outcome {
    if wait == 0 {
        return finish(op_name(op), physical_id, value);
    }
    let state = json!({
        "op": op_name(op),
        "until_ms": now_ms() + wait,
        "value": value,
        "physical_id": physical_id,
    });
    pending(state, wait)
}

impl Resource for TestResource {
    fn describe() -> PluginInfo {
        PluginInfo::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")).with_type(
            ResourceType::new("OS::Heat::TestResource")
                .description(
                    "A resource for testing orchestration: stores a value, can fail or wait.",
                )
                .property(
                    Property::string("value")
                        .description("The value stored and exposed as the attribute `output`.")
                        .default(json!("test_string"))
                        .update_allowed(),
                )
                .property(
                    Property::boolean("fail")
                        .description("Fail the operation (a fatal error).")
                        .default(json!(false))
                        .update_allowed(),
                )
                .property(
                    Property::boolean("update_replace")
                        .description("Make an update replace the resource.")
                        .default(json!(false))
                        .update_allowed(),
                )
                .property(
                    Property::map("action_wait_secs")
                        .description(
                            "Seconds each action takes, by action: create, update, delete.",
                        )
                        .update_allowed(),
                )
                .property(
                    Property::number("wait_secs")
                        .description(
                            "Seconds an action takes when action_wait_secs has no entry for it.",
                        )
                        .default(json!(0))
                        .constraint(Constraint::range(Some(0.0), None))
                        .update_allowed(),
                )
                .property(
                    Property::integer("fail_attempts")
                        .description("Fail this many attempts of each call with a transient error.")
                        .default(json!(0))
                        .constraint(Constraint::range(Some(0.0), None))
                        .update_allowed(),
                )
                .attribute("output", "The stored value."),
        )
    }

    fn create(ctx: &CallContext, props: &Props) -> Result<Outcome, PluginError> {
        maybe_fail_attempt(ctx, props)?;
        maybe_fail(ctx, props)?;
        let value = json!(props.string_or("value", "test_string")?);
        let wait = wait_ms(props, Operation::Create)?;
        Ok(finish_after(
            Operation::Create,
            wait,
            &ctx.idempotency_key,
            &value,
        ))
    }

    fn update(
        ctx: &CallContext,
        current: &Current,
        _old: &Props,
        new: &Props,
    ) -> Result<UpdateOutcome, PluginError> {
        if new.boolean_or("update_replace", false)? {
            return Ok(replace("update_replace is set"));
        }
        maybe_fail_attempt(ctx, new)?;
        maybe_fail(ctx, new)?;
        let value = json!(new.string_or("value", "test_string")?);
        let wait = wait_ms(new, Operation::Update)?;
        Ok(finish_after(Operation::Update, wait, &current.physical_id, &value).into())
    }

    fn delete(ctx: &CallContext, current: &Current, props: &Props) -> Result<Outcome, PluginError> {
        maybe_fail_attempt(ctx, props)?;
        let wait = wait_ms(props, Operation::Delete)?;
        Ok(finish_after(
            Operation::Delete,
            wait,
            &current.physical_id,
            &Value::Null,
        ))
    }

    fn check(_: &CallContext, current: &Current, _: &Props) -> Result<CheckReport, PluginError> {
        let value = current
            .state_value()?
            .get("value")
            .cloned()
            .unwrap_or(Value::Null);
        Ok(report(true, Vec::new(), json!({"output": value})))
    }

    fn poll(ctx: &CallContext, _: &Props, state: &Value) -> Result<Outcome, PluginError> {
        let op = state
            .get("op")
            .and_then(Value::as_str)
            .unwrap_or(op_name(ctx.operation));
        let until = state.get("until_ms").and_then(Value::as_u64).unwrap_or(0);
        let now = now_ms();
        if now < until {
            return Ok(pending(state.clone(), until - now));
        }
        let physical_id = state
            .get("physical_id")
            .and_then(Value::as_str)
            .unwrap_or(&ctx.idempotency_key);
        let value = state.get("value").cloned().unwrap_or(Value::Null);
        Ok(finish(op, physical_id, &value))
    }
}

kiln_plugin_sdk::export_resource!(TestResource);
