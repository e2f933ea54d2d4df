//! `kiln plugin list | inspect | call`: what plugin authors and operators use to see and try
//! plugins without running a stack.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use super::table::render;
use super::{Failure, Format, exit};
use crate::allow_list::AllowList;
use crate::config::{Config, PluginConfig};
use crate::plugin_set::PluginSet;
use crate::runtime::{
    CallContext, CallError, Constraint, Current, Decision, ErrorInfo, Failure as PolicyFailure,
    Operation, Plugin, PluginError, PluginRuntime, PluginSpec, PropertySchema, PropertyType,
    Source, ThrottledInfo, TypeSchema, World,
};

#[derive(Subcommand)]
pub enum PluginCommand {
    /// List the plugins this configuration loads and the types they serve.
    List {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show a component's world, contract version, types and property schemas.
    Inspect {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Make one call to a plugin and print the result as JSON (for plugin authors).
    Call(Box<CallArgs>),
}

#[derive(Clone, Copy, ValueEnum)]
enum Function {
    Describe,
    Create,
    Update,
    Delete,
    Check,
    Poll,
    Validate,
    Decide,
}

#[derive(Args)]
pub struct CallArgs {
    /// A plugin name from the configuration (or bundled), or a path to a .wasm component.
    plugin: String,
    #[arg(value_enum)]
    function: Function,
    /// Resource type (default: the plugin's first type).
    #[arg(long = "type")]
    type_name: Option<String>,
    /// Properties as JSON, or @FILE. Schema defaults fill in what is missing.
    #[arg(long, short = 'p', default_value = "{}")]
    properties: String,
    /// For update: the previous properties (JSON or @FILE).
    #[arg(long)]
    old_properties: Option<String>,
    /// For update/delete/check: the physical id; for poll: ignored.
    #[arg(long, default_value = "")]
    physical_id: String,
    /// For update/delete/check: the stored state; for poll: the pending state (JSON or @FILE).
    #[arg(long, default_value = "null")]
    state: String,
    #[arg(long, default_value = "cli")]
    stack: String,
    #[arg(long, default_value = "resource")]
    resource: String,
    #[arg(long, default_value_t = 1)]
    attempt: u32,
    /// Default: derived from stack, resource and function.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// For a .wasm file: origins it may reach (`scheme://host[:port]`), repeatable.
    #[arg(long = "allow-http")]
    allow_http: Vec<String>,
    /// For validate/decide: the policy's parameters (JSON or @FILE).
    #[arg(long, default_value = "{}")]
    params: String,
    /// For decide: the failure, e.g. '{"kind":"transient","status":503,"attempt":2}'.
    #[arg(long, default_value = "{}")]
    failure: String,
}

pub async fn run(cmd: PluginCommand, config: &Config) -> Result<(), Failure> {
    match cmd {
        PluginCommand::List { format } => list(config, format).await,
        PluginCommand::Inspect { file, format } => inspect(config, &file, format).await,
        PluginCommand::Call(args) => call(config, *args).await,
    }
}

async fn load_set(config: &Config) -> Result<PluginSet, Failure> {
    PluginSet::load(config).await.map_err(plugin_set_failure)
}

/// A plugin set that cannot load: bad configuration is bad input, anything else a plugin fault.
pub(super) fn plugin_set_failure(e: anyhow::Error) -> Failure {
    let code = if e.is::<crate::config::ConfigError>() {
        exit::BAD_INPUT
    } else {
        exit::PLUGIN_FAULT
    };
    Failure::new(code, format!("{e:#}"))
}

async fn list(config: &Config, format: Format) -> Result<(), Failure> {
    let set = load_set(config).await?;
    let mut rows = Vec::new();
    let mut items = Vec::new();
    for p in set.plugins() {
        let version = p.info().map(|i| i.version.clone()).unwrap_or_default();
        let served: Vec<String> = p.info().map_or(Vec::new(), |i| {
            i.types.iter().map(|t| t.type_name.clone()).collect()
        });
        let shown = if served.is_empty() {
            vec!["-".to_string()]
        } else {
            served.clone()
        };
        for t in shown {
            rows.push(vec![
                t,
                p.name().to_string(),
                version.clone(),
                p.world().name().to_string(),
                p.origin().to_string(),
            ]);
        }
        items.push(json!({
            "name": p.name(), "version": version, "world": p.world().name(),
            "contract": p.contract_version(), "origin": p.origin(), "types": served,
        }));
    }
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&items).unwrap()),
        Format::Table => print!(
            "{}",
            render(&["TYPE", "PLUGIN", "VERSION", "WORLD", "SOURCE"], &rows)
        ),
    }
    Ok(())
}

/// Loads one component file on its own, with the configured limits.
async fn load_file(config: &Config, path: &Path, allow_http: &[String]) -> Result<Plugin, Failure> {
    let allow = AllowList::parse(allow_http)
        .map_err(|e| Failure::new(exit::BAD_INPUT, format!("--allow-http: {e}")))?;
    let limits = PluginConfig::default().limits(&config.limits);
    let runtime = PluginRuntime::new(&config.runtime, limits.memory_mib)
        .map_err(|e| Failure::new(exit::PLUGIN_FAULT, format!("{e:#}")))?;
    let name = path
        .file_stem()
        .map_or("plugin".into(), |s| s.to_string_lossy().into_owned());
    runtime
        .load(PluginSpec {
            name,
            source: Source::File(path.to_path_buf()),
            limits,
            allow_http: allow,
            credentials: None,
        })
        .await
        .map_err(|e| Failure::new(exit::PLUGIN_FAULT, e))
}

async fn inspect(config: &Config, file: &Path, format: Format) -> Result<(), Failure> {
    let p = load_file(config, file, &[]).await?;
    if let Format::Json = format {
        let doc = json!({
            "file": file, "world": p.world().name(), "contract": p.contract_version(),
            "imports": p.imports(), "exports": p.exports(), "plugin": p.info(),
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap());
        return Ok(());
    }
    println!("file:      {}", file.display());
    println!(
        "world:     {} (kiln:plugin@{})",
        p.world().name(),
        p.contract_version()
    );
    if let Some(info) = p.info() {
        println!("plugin:    {} {}", info.name, info.version);
    }
    println!("imports:   {}", p.imports().join(", "));
    println!("exports:   {}", p.exports().join(", "));
    for t in p.info().map(|i| i.types.as_slice()).unwrap_or_default() {
        print_type(t);
    }
    Ok(())
}

fn print_type(t: &TypeSchema) {
    println!("\ntype {}: {}", t.type_name, t.description);
    if t.open_properties {
        println!("(accepts any other properties)");
    }
    let rows: Vec<Vec<String>> = t.properties.iter().map(property_row).collect();
    if !rows.is_empty() {
        print!(
            "{}",
            render(
                &[
                    "PROPERTY",
                    "TYPE",
                    "REQUIRED",
                    "DEFAULT",
                    "CHANGE",
                    "CONSTRAINTS",
                    "DESCRIPTION"
                ],
                &rows
            )
        );
    }
    if !t.attributes.is_empty() {
        let rows: Vec<Vec<String>> = t
            .attributes
            .iter()
            .map(|a| vec![a.name.clone(), a.description.clone()])
            .collect();
        print!("{}", render(&["ATTRIBUTE", "DESCRIPTION"], &rows));
    }
}

fn property_row(p: &PropertySchema) -> Vec<String> {
    let change = if p.immutable {
        "immutable"
    } else if p.update_allowed {
        "in place"
    } else {
        "replace"
    };
    let constraints: Vec<String> = p.constraints.iter().map(constraint_text).collect();
    vec![
        p.name.clone(),
        type_name(p.type_).into(),
        if p.required {
            "yes".into()
        } else {
            "no".into()
        },
        p.default.clone().unwrap_or_default(),
        change.into(),
        constraints.join("; "),
        p.description.clone(),
    ]
}

fn type_name(t: PropertyType) -> &'static str {
    match t {
        PropertyType::String => "string",
        PropertyType::Number => "number",
        PropertyType::Integer => "integer",
        PropertyType::Boolean => "boolean",
        PropertyType::List => "list",
        PropertyType::Map => "map",
        PropertyType::Any => "any",
    }
}

fn constraint_text(c: &Constraint) -> String {
    let bounds = |b: &crate::runtime::Bounds| {
        let f = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
        format!("{}..{}", f(b.min), f(b.max))
    };
    match c {
        Constraint::Range(b) => format!("range {}", bounds(b)),
        Constraint::Length(b) => format!("length {}", bounds(b)),
        Constraint::AllowedValues(v) => format!("one of {}", v.join(", ")),
        Constraint::AllowedPattern(p) => format!("pattern {p}"),
    }
}

/// JSON from an argument, or from a file with `@path`.
fn json_arg(name: &str, text: &str) -> Result<Value, Failure> {
    let bad = |m: String| Failure::new(exit::BAD_INPUT, format!("--{name}: {m}"));
    let text = match text.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read {path}: {e}")))?
        }
        None => text.to_string(),
    };
    serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))
}

async fn call(config: &Config, a: CallArgs) -> Result<(), Failure> {
    let path = Path::new(&a.plugin);
    let (plugin, _set) = if a.plugin.ends_with(".wasm") || path.is_file() {
        (load_file(config, path, &a.allow_http).await?, None)
    } else {
        let set = load_set(config).await?;
        let p = set.plugin(&a.plugin).cloned().ok_or_else(|| {
            let names: Vec<&str> = set.plugins().map(|p| p.name()).collect();
            Failure::new(
                exit::BAD_INPUT,
                format!(
                    "no plugin named '{}' (loaded: {})",
                    a.plugin,
                    names.join(", ")
                ),
            )
        })?;
        (p, Some(set))
    };

    let result = match (plugin.world(), a.function) {
        (World::RetryPolicy, Function::Validate) => {
            let params = json_arg("params", &a.params)?;
            plugin.validate_params(&params).await.map(|r| match r {
                Ok(()) => json!({"valid": true}),
                Err(reason) => json!({"valid": false, "reason": reason}),
            })
        }
        (World::RetryPolicy, Function::Decide) => {
            let params = json_arg("params", &a.params)?;
            let failure = policy_failure(&json_arg("failure", &a.failure)?)?;
            plugin.decide(&params, &failure).await.map(|d| match d {
                Decision::RetryAfter(ms) => json!({"decision": "retry-after", "delay_ms": ms}),
                Decision::GiveUp(reason) => json!({"decision": "give-up", "reason": reason}),
            })
        }
        (World::RetryPolicy, _) => {
            return Err(Failure::new(
                exit::BAD_INPUT,
                "a retry policy answers only `validate` and `decide`",
            ));
        }
        (World::ResourcePlugin, Function::Validate | Function::Decide) => {
            return Err(Failure::new(
                exit::BAD_INPUT,
                "`validate` and `decide` are retry-policy functions",
            ));
        }
        (World::ResourcePlugin, Function::Describe) => plugin
            .describe()
            .await
            .map(|i| serde_json::to_value(i).unwrap()),
        (World::ResourcePlugin, f) => resource_call(&plugin, f, &a).await?,
    };
    match result {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap());
            Ok(())
        }
        Err(CallError::Plugin(p, origins)) => {
            let doc =
                json!({"error": {"kind": p.kind(), "message": p.message(), "status": p.status()}});
            println!("{}", serde_json::to_string_pretty(&doc).unwrap());
            let e = CallError::Plugin(p, origins);
            Err(Failure::new(
                exit::FAILED,
                format!("the plugin returned an error: {e}"),
            ))
        }
        Err(e @ CallError::Fault(_)) => Err(Failure::new(exit::PLUGIN_FAULT, e)),
    }
}

async fn resource_call(
    plugin: &Plugin,
    f: Function,
    a: &CallArgs,
) -> Result<Result<Value, CallError>, Failure> {
    let info = plugin
        .info()
        .expect("resource plugins are described at load");
    let schema = match &a.type_name {
        Some(t) => info
            .types
            .iter()
            .find(|s| &s.type_name == t)
            .ok_or_else(|| {
                let names: Vec<&str> = info.types.iter().map(|t| t.type_name.as_str()).collect();
                Failure::new(
                    exit::BAD_INPUT,
                    format!("--type: plugin serves {}, not {t}", names.join(", ")),
                )
            })?,
        None => &info.types[0],
    };
    let props = with_defaults(schema, json_arg("properties", &a.properties)?)?;
    let operation = match f {
        Function::Update => Operation::Update,
        Function::Delete => Operation::Delete,
        Function::Check => Operation::Check,
        _ => Operation::Create,
    };
    let ctx = CallContext {
        stack: a.stack.clone(),
        resource: a.resource.clone(),
        resource_type: schema.type_name.clone(),
        operation,
        attempt: a.attempt,
        idempotency_key: a
            .idempotency_key
            .clone()
            .unwrap_or_else(|| format!("{}/{}/{}/1", a.stack, a.resource, operation.as_str())),
        deadline_ms: 0,
    };
    let state = json_arg("state", &a.state)?;
    let current = Current {
        physical_id: a.physical_id.clone(),
        state: state.to_string(),
    };
    let to_json = |v| serde_json::to_value(v).unwrap();
    Ok(match f {
        Function::Create => plugin.create(&ctx, &props).await.map(to_json),
        Function::Update => {
            let old = match &a.old_properties {
                Some(o) => with_defaults(schema, json_arg("old-properties", o)?)?,
                None => props.clone(),
            };
            plugin
                .update(&ctx, &current, &old, &props)
                .await
                .map(|o| serde_json::to_value(o).unwrap())
        }
        Function::Delete => plugin.delete(&ctx, &current, &props).await.map(to_json),
        Function::Check => plugin
            .check(&ctx, &current, &props)
            .await
            .map(|r| serde_json::to_value(r).unwrap()),
        Function::Poll => plugin.poll(&ctx, &props, &state).await.map(to_json),
        _ => unreachable!("handled by the caller"),
    })
}

/// Fills in schema defaults, as the engine does before calling a plugin.
fn with_defaults(schema: &TypeSchema, props: Value) -> Result<Value, Failure> {
    let Value::Object(mut map) = props else {
        return Err(Failure::new(
            exit::BAD_INPUT,
            "--properties must be a JSON object",
        ));
    };
    for p in &schema.properties {
        if !map.contains_key(&p.name)
            && let Some(d) = &p.default
        {
            map.insert(
                p.name.clone(),
                serde_json::from_str(d).unwrap_or(Value::Null),
            );
        }
    }
    Ok(Value::Object(map))
}

/// Builds a policy failure from a small JSON description, for `decide`.
fn policy_failure(v: &Value) -> Result<PolicyFailure, Failure> {
    let bad = |m: &str| Failure::new(exit::BAD_INPUT, format!("--failure: {m}"));
    let message = v["message"]
        .as_str()
        .unwrap_or("simulated failure")
        .to_string();
    let status = v["status"].as_u64().map(|s| s as u16);
    let info = ErrorInfo {
        message: message.clone(),
        status,
    };
    let error = match v["kind"].as_str().unwrap_or("transient") {
        "transient" => PluginError::Transient(info),
        "throttled" => PluginError::Throttled(ThrottledInfo {
            message,
            status,
            retry_after_ms: v["retry_after_ms"].as_u64(),
        }),
        "unauthorized" => PluginError::Unauthorized(info),
        "conflict" => PluginError::Conflict(info),
        "not-found" => PluginError::NotFound(info),
        "invalid" => PluginError::Invalid(info),
        "fatal" => PluginError::Fatal(info),
        _ => {
            return Err(bad(
                "kind must be transient, throttled, unauthorized, conflict, not-found, invalid or fatal",
            ));
        }
    };
    let operation = match v["operation"].as_str().unwrap_or("create") {
        "create" => Operation::Create,
        "update" => Operation::Update,
        "delete" => Operation::Delete,
        "check" => Operation::Check,
        _ => return Err(bad("operation must be create, update, delete or check")),
    };
    Ok(PolicyFailure {
        error,
        attempt: v["attempt"].as_u64().unwrap_or(1) as u32,
        elapsed_ms: v["elapsed_ms"].as_u64().unwrap_or(0),
        previous_delay_ms: v["previous_delay_ms"].as_u64(),
        operation,
        resource_type: v["resource_type"].as_str().unwrap_or("").to_string(),
        random: v["random"].as_u64().unwrap_or_else(rand::random),
    })
}
