//! `kiln stack ...`, `kiln resource ...` and `kiln engine`, in embedded mode: the engine runs in
//! this process against the configured database (SQLite by default), and a waiting command
//! works through jobs until its stack's action ends.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::plugin::plugin_set_failure;
use super::table::render;
use super::validate::{TemplateArgs, key_value};
use super::{Failure, Format, exit};
use crate::config::Config;
use crate::engine::{Engine, OnFailure, PlannedChange, Sources, StackOptions, StoredResolver};
use crate::registry::PluginSet;
use crate::retry::RetryPolicies;
use crate::store::{EventRow, StackRow, Store, StoreError, format_ms};
use crate::template::{self, SourceFile};

#[derive(Subcommand)]
pub enum StackCommand {
    /// Create a stack from a template and wait for it (with live progress).
    Create {
        name: String,
        #[command(flatten)]
        template: TemplateArgs,
        /// Return once the stack is stored; `kiln engine` (or any waiting command) does the work.
        #[arg(long)]
        no_wait: bool,
        /// What a resource failure does to the rest of an action: `stop` starts nothing new
        /// (running work finishes), `continue` goes on with what does not need it.
        #[arg(long, value_enum, default_value_t)]
        on_failure: OnFailure,
        /// Stop each action of the stack that takes longer: `90s`, `10m`, `2h`, or minutes
        /// as a bare number (as Heat's `--timeout`). Enforced by whichever engine leads.
        #[arg(long, value_parser = crate::duration::parse_secs)]
        timeout: Option<u64>,
        /// When an action fails, converge back on the template the stack had before it (a
        /// failed create deletes what it made).
        #[arg(long)]
        enable_rollback: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Update a stack to a new template, environments or parameters and wait for it:
    /// unchanged resources are left alone, the rest are updated in place, replaced (the new
    /// object first) or created, and removed ones are deleted last. Also how a FAILED stack
    /// is repaired without redoing what worked.
    Update {
        name: String,
        #[command(flatten)]
        args: UpdateArgs,
        /// Show what would change (as `stack preview`) and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Take over from a create, update or rollback in progress instead of being refused:
        /// its waiting work is dropped, its running calls finish, and this update decides
        /// every resource afresh.
        #[arg(long)]
        supersede: bool,
        #[arg(long)]
        no_wait: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show what `stack update` would do with these files and parameters, resource by
    /// resource and why, calling no plugin.
    Preview {
        name: String,
        #[command(flatten)]
        args: UpdateArgs,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Run a stack's last action again after it failed, keeping what worked: an update (or
    /// create) converges on the stored template, checking failed resources and creating
    /// missing ones; a delete deletes what is left.
    Resume {
        name: String,
        #[arg(long)]
        no_wait: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Delete a stack (dependents first) and wait for it.
    Delete {
        name: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Check every resource against reality (plugin `check`) and wait: one that is gone or
    /// has drifted ends CHECK_FAILED (exit 1); `stack update` or `stack resume` repairs it.
    Check {
        name: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Cancel the action in progress: nothing new starts on any engine, running calls finish
    /// and are recorded, and the action ends FAILED ("cancelled"); a stack with rollback
    /// enabled then rolls back, unless --no-rollback.
    Cancel {
        name: String,
        #[arg(long)]
        no_rollback: bool,
    },
    /// List stacks.
    List {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show a stack: status, reason, resource counts, outputs.
    Show {
        name: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// A stack's events, oldest first.
    Events {
        name: String,
        /// Keep printing events as they happen until the current action ends (JSON: one
        /// event per line).
        #[arg(long)]
        follow: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// A stack's outputs, resolved from its resources now.
    Outputs {
        name: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

/// The new definition of a stack for `stack update` and `stack preview`.
#[derive(Args)]
pub struct UpdateArgs {
    /// The new HOT template. With --existing it may be omitted: the stored one is kept.
    #[arg(long, short = 't', required_unless_present = "existing")]
    template: Option<PathBuf>,
    /// Environment files, in order. With --existing and none given, the stored ones are kept.
    #[arg(long = "environment", short = 'e')]
    environments: Vec<PathBuf>,
    /// A parameter value, KEY=VALUE; repeatable. With --existing it patches the stored values.
    #[arg(long = "parameter", short = 'P', value_parser = key_value)]
    parameters: Vec<(String, String)>,
    /// Start from what the stack was made from (template, environments, parameters).
    #[arg(long)]
    existing: bool,
    /// Change what a resource failure does (`stop` or `continue`); kept when not given.
    #[arg(long, value_enum)]
    on_failure: Option<OnFailure>,
    /// Change the stack's timeout (as for `stack create`; `0` removes it); kept when not given.
    #[arg(long, value_parser = crate::duration::parse_secs)]
    timeout: Option<u64>,
    /// Roll back failed actions from now on (this update included).
    #[arg(long, conflicts_with = "disable_rollback")]
    enable_rollback: bool,
    /// Stop rolling back failed actions.
    #[arg(long)]
    disable_rollback: bool,
}

#[derive(Subcommand)]
pub enum ResourceCommand {
    /// A stack's resources.
    List {
        stack: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// One resource, with its attributes.
    Show {
        stack: String,
        resource: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

pub(super) fn store_failure(e: StoreError) -> Failure {
    let code = match e {
        StoreError::StackNotFound(_) => exit::NOT_FOUND,
        StoreError::ActionInProgress { .. } | StoreError::StackExists(_) => exit::CONFLICT,
        _ => exit::FAILED,
    };
    Failure::new(code, e)
}

pub(super) async fn open(config: &Config) -> Result<Store, Failure> {
    let url = config.database.url();
    Store::open(&url).await.map_err(|e| {
        let code = if matches!(e, StoreError::BadUrl(_)) {
            exit::BAD_INPUT
        } else {
            exit::FAILED
        };
        Failure::new(code, format!("cannot open the database {url}: {e}"))
    })
}

pub(super) async fn engine(config: &Config) -> Result<Engine, Failure> {
    let store = open(config).await?;
    let plugins = PluginSet::load(config).await.map_err(plugin_set_failure)?;
    let policies = RetryPolicies::load(&config.retry, &plugins)
        .await
        .map_err(|e| Failure::new(exit::BAD_INPUT, e))?;
    Ok(Engine::new(store, Arc::new(plugins), config.engine.clone()).with_retry(policies))
}

pub async fn run_stack(cmd: StackCommand, config: &Config) -> Result<(), Failure> {
    match cmd {
        StackCommand::Create {
            name,
            template,
            no_wait,
            on_failure,
            timeout,
            enable_rollback,
            format,
        } => {
            let engine = engine(config).await?;
            let (stack, mut sources) = load_template(&template, engine.plugins())?;
            sources.options.on_failure = on_failure;
            sources.options.timeout_secs = timeout.filter(|t| *t > 0);
            sources.options.rollback = enable_rollback;
            let row = engine
                .create_stack(&name, &stack, &sources)
                .await
                .map_err(store_failure)?;
            after_start(&engine, &row, no_wait, format).await
        }
        StackCommand::Update {
            name,
            args,
            dry_run,
            supersede,
            no_wait,
            format,
        } => {
            let engine = engine(config).await?;
            let row = engine
                .store()
                .find_stack(&name)
                .await
                .map_err(store_failure)?;
            let (stack, sources) = update_sources(&engine, &row, &args).await?;
            if dry_run {
                let (row, changes) = engine
                    .preview(&row.id, &stack)
                    .await
                    .map_err(store_failure)?;
                print_preview(&row, &changes, format);
                return Ok(());
            }
            let row = if supersede {
                engine.supersede_stack(&row.id, &stack, &sources).await
            } else {
                engine.update_stack(&row.id, &stack, &sources).await
            }
            .map_err(store_failure)?;
            after_start(&engine, &row, no_wait, format).await
        }
        StackCommand::Preview { name, args, format } => {
            let engine = engine(config).await?;
            let row = engine
                .store()
                .find_stack(&name)
                .await
                .map_err(store_failure)?;
            let (stack, _) = update_sources(&engine, &row, &args).await?;
            let (row, changes) = engine
                .preview(&row.id, &stack)
                .await
                .map_err(store_failure)?;
            print_preview(&row, &changes, format);
            Ok(())
        }
        StackCommand::Resume {
            name,
            no_wait,
            format,
        } => {
            let engine = engine(config).await?;
            let row = engine.resume_stack(&name).await.map_err(store_failure)?;
            after_start(&engine, &row, no_wait, format).await
        }
        StackCommand::Delete { name, no_wait } => {
            let engine = engine(config).await?;
            let row = engine.delete_stack(&name).await.map_err(store_failure)?;
            wait_unless(&engine, &row, no_wait).await
        }
        StackCommand::Check { name, no_wait } => {
            let engine = engine(config).await?;
            let row = engine.check_stack(&name).await.map_err(store_failure)?;
            wait_unless(&engine, &row, no_wait).await
        }
        StackCommand::Cancel { name, no_rollback } => {
            let store = open(config).await?;
            let row = store.find_stack(&name).await.map_err(store_failure)?;
            let actor = format!("cli-{}", std::process::id());
            let row = store
                .cancel(&row.id, &actor, !no_rollback)
                .await
                .map_err(store_failure)?;
            println!(
                "{} {}_{}{}",
                row.name,
                row.action,
                row.status,
                if row.status == "IN_PROGRESS" {
                    " (cancelling: running calls finish)"
                } else {
                    ""
                }
            );
            Ok(())
        }
        StackCommand::List { format } => {
            let stacks = open(config)
                .await?
                .list_stacks()
                .await
                .map_err(store_failure)?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&stacks).unwrap()),
                Format::Table => {
                    let rows: Vec<Vec<String>> = stacks
                        .iter()
                        .map(|s| {
                            vec![
                                s.name.clone(),
                                format!("{}_{}", s.action, s.status),
                                format_ms(s.updated_at),
                                s.id.clone(),
                            ]
                        })
                        .collect();
                    print!("{}", render(&["NAME", "STATUS", "UPDATED", "ID"], &rows));
                }
            }
            Ok(())
        }
        StackCommand::Show { name, format } => show(&open(config).await?, &name, format).await,
        StackCommand::Events {
            name,
            follow,
            format,
        } => {
            let store = open(config).await?;
            let row = store.find_stack(&name).await.map_err(store_failure)?;
            if follow {
                return follow_events(&store, &row, format).await;
            }
            let events = store.events(&row.id, 0).await.map_err(store_failure)?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&events).unwrap()),
                Format::Table => {
                    let rows: Vec<Vec<String>> = events.iter().map(event_cells).collect();
                    print!(
                        "{}",
                        render(&["TIME", "RESOURCE", "STATUS", "REASON"], &rows)
                    );
                }
            }
            Ok(())
        }
        StackCommand::Outputs { name, format } => {
            let store = open(config).await?;
            let row = store.find_stack(&name).await.map_err(store_failure)?;
            print_outputs(&store, &row, format).await
        }
    }
}

pub async fn run_resource(cmd: ResourceCommand, config: &Config) -> Result<(), Failure> {
    let store = open(config).await?;
    match cmd {
        ResourceCommand::List { stack, format } => {
            let row = store.find_stack(&stack).await.map_err(store_failure)?;
            let resources = store.resources(&row.id).await.map_err(store_failure)?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&resources).unwrap()),
                Format::Table => {
                    let rows: Vec<Vec<String>> = resources
                        .iter()
                        .map(|r| {
                            vec![
                                r.name.clone(),
                                r.type_name.clone(),
                                format!("{}_{}", r.action, r.status),
                                r.physical_id.clone().unwrap_or_default(),
                                r.status_reason.clone(),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        render(&["NAME", "TYPE", "STATUS", "PHYSICAL ID", "REASON"], &rows)
                    );
                }
            }
            Ok(())
        }
        ResourceCommand::Show {
            stack,
            resource,
            format,
        } => {
            let row = store.find_stack(&stack).await.map_err(store_failure)?;
            let found = store
                .resources_named(&row.id, &[resource.as_str()])
                .await
                .map_err(store_failure)?;
            let Some(r) = found.into_iter().next() else {
                return Err(Failure::new(
                    exit::NOT_FOUND,
                    format!("stack '{}' has no resource '{resource}'", row.name),
                ));
            };
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&r).unwrap()),
                Format::Table => {
                    println!("name:        {}", r.name);
                    println!("type:        {}", r.type_name);
                    println!("status:      {}_{}", r.action, r.status);
                    println!("reason:      {}", r.status_reason);
                    println!("physical id: {}", r.physical_id.as_deref().unwrap_or(""));
                    println!("updated:     {}", format_ms(r.updated_at));
                    if let Some(Value::Object(attrs)) = &r.attributes {
                        let rows: Vec<Vec<String>> = attrs
                            .iter()
                            .map(|(k, v)| vec![k.clone(), cell(v)])
                            .collect();
                        print!("{}", render(&["ATTRIBUTE", "VALUE"], &rows));
                    }
                }
            }
            Ok(())
        }
    }
}

/// Validates the template files and keeps what they were, for the stack's record.
fn load_template(
    args: &TemplateArgs,
    plugins: &PluginSet,
) -> Result<(template::Stack, Sources), Failure> {
    let (file, environments) = args.read()?;
    let stack =
        template::validate(&file, &environments, &args.parameters, plugins).map_err(|errors| {
            let mut text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            let s = if errors.len() == 1 { "" } else { "s" };
            text.push(format!("{} error{s} in {}", errors.len(), file.name));
            Failure::new(exit::BAD_INPUT, text.join("\n"))
        })?;
    let sources = Sources {
        template: file.name,
        template_text: file.text,
        environments: environments.into_iter().map(|e| (e.name, e.text)).collect(),
        parameters: args.parameters.clone(),
        options: StackOptions::default(),
    };
    Ok((stack, sources))
}

/// The stack's new definition: the files given, or with `--existing` what it was made from,
/// with the files and parameters given replacing (parameters: patching) the stored ones.
async fn update_sources(
    engine: &Engine,
    row: &StackRow,
    args: &UpdateArgs,
) -> Result<(template::Stack, Sources), Failure> {
    let read = |p: &PathBuf| {
        SourceFile::read(p)
            .map_err(|e| Failure::new(exit::BAD_INPUT, format!("cannot read {}: {e}", p.display())))
    };
    let current = engine.sources(row).await.map_err(store_failure)?;
    let mut options = current.options.clone();
    if let Some(on_failure) = args.on_failure {
        options.on_failure = on_failure;
    }
    if let Some(timeout) = args.timeout {
        options.timeout_secs = (timeout > 0).then_some(timeout);
    }
    if args.enable_rollback || args.disable_rollback {
        options.rollback = args.enable_rollback;
    }
    let stored = args.existing.then_some(current);
    let file = match (&args.template, &stored) {
        (Some(path), _) => read(path)?,
        (None, Some(s)) => SourceFile {
            name: s.template.clone(),
            text: s.template_text.clone(),
        },
        (None, None) => unreachable!("clap requires --template without --existing"),
    };
    let environments: Vec<SourceFile> = match &stored {
        Some(s) if args.environments.is_empty() => s
            .environments
            .iter()
            .map(|(name, text)| SourceFile {
                name: name.clone(),
                text: text.clone(),
            })
            .collect(),
        _ => args
            .environments
            .iter()
            .map(read)
            .collect::<Result<_, _>>()?,
    };
    let mut parameters = stored.map(|s| s.parameters).unwrap_or_default();
    for (k, v) in &args.parameters {
        parameters.retain(|(old, _)| old != k);
        parameters.push((k.clone(), v.clone()));
    }
    let stack = template::validate(&file, &environments, &parameters, engine.plugins()).map_err(
        |errors| {
            let mut text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            let s = if errors.len() == 1 { "" } else { "s" };
            text.push(format!("{} error{s} in {}", errors.len(), file.name));
            Failure::new(exit::BAD_INPUT, text.join("\n"))
        },
    )?;
    let sources = Sources {
        template: file.name,
        template_text: file.text,
        environments: environments.into_iter().map(|e| (e.name, e.text)).collect(),
        parameters,
        options,
    };
    Ok((stack, sources))
}

/// After an action started: return at once (`--no-wait`), or wait and show the outcome.
async fn after_start(
    engine: &Engine,
    row: &StackRow,
    no_wait: bool,
    format: Format,
) -> Result<(), Failure> {
    if no_wait {
        println!("{} {}_{} (id {})", row.name, row.action, row.status, row.id);
        return Ok(());
    }
    let row = if row.status == "IN_PROGRESS" {
        wait(engine, row).await?
    } else {
        row.clone()
    };
    print_outputs(engine.store(), &row, format).await?;
    finished(&row)
}

/// After an action with no outputs to show (delete, check) started: return at once
/// (`--no-wait`), or wait for its end.
async fn wait_unless(engine: &Engine, row: &StackRow, no_wait: bool) -> Result<(), Failure> {
    if no_wait {
        println!("{} {}_{}", row.name, row.action, row.status);
        return Ok(());
    }
    finished(&wait(engine, row).await?)
}

/// A preview as a table (with each changed property) or JSON.
fn print_preview(row: &StackRow, changes: &[PlannedChange], format: Format) {
    let count = |a: &str| changes.iter().filter(|c| c.action == a).count();
    let summary = format!(
        "{} to create, {} to update in place, {} to replace, {} to delete, {} unchanged{}",
        count("create"),
        count("update"),
        count("replace"),
        count("delete"),
        count("unchanged"),
        match count("rejected") {
            0 => String::new(),
            n => format!(", {n} rejected (the update would fail)"),
        }
    );
    if let Format::Json = format {
        let doc = json!({"stack": row.name, "changes": changes, "summary": summary});
        println!("{}", serde_json::to_string_pretty(&doc).unwrap());
        return;
    }
    let mut rows = Vec::new();
    for c in changes.iter().filter(|c| c.action != "unchanged") {
        rows.push(vec![
            c.action.clone(),
            c.resource.clone(),
            c.type_name.clone(),
            c.reason.clone(),
        ]);
        for p in &c.properties {
            rows.push(vec![
                String::new(),
                format!("  .{}", p.name),
                String::new(),
                format!("{} -> {}", cell(&p.old), cell(&p.new)),
            ]);
        }
    }
    if !rows.is_empty() {
        print!("{}", render(&["ACTION", "RESOURCE", "TYPE", "WHY"], &rows));
    }
    println!("Preview of {}: {summary}.", row.name);
}

/// Prints the stack's events as they happen, until its current action has ended and every
/// event of it is shown.
async fn follow_events(store: &Store, row: &StackRow, format: Format) -> Result<(), Failure> {
    let mut last = 0;
    loop {
        // Read the status first: events written before an action ends are then all seen.
        let current = store.find_stack(&row.id).await.map_err(store_failure)?;
        let events = store.events(&row.id, last).await.map_err(store_failure)?;
        for e in &events {
            last = e.id;
            match format {
                Format::Json => println!("{}", serde_json::to_string(e).unwrap()),
                Format::Table => println!("{}", event_cells(e).join("  ")),
            }
        }
        let _ = std::io::stdout().flush();
        if current.status != "IN_PROGRESS" {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs the engine in this process until the stack's action ends, showing progress: every
/// event as a line, and on a terminal a status line with counts and current resources.
async fn wait(engine: &Engine, row: &StackRow) -> Result<StackRow, Failure> {
    let (stop_tx, stop) = watch::channel(false);
    let running = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run(stop).await }
    });
    let store = engine.store();
    let tty = std::io::stderr().is_terminal();
    // Show this action's events: from its "Stack ... started" event on.
    let earlier = store.events(&row.id, 0).await.map_err(store_failure)?;
    let mut last_event = earlier
        .iter()
        .rev()
        .find(|e| e.resource.is_none() && e.action == row.action && e.status == "IN_PROGRESS")
        .map_or(0, |e| e.id - 1);
    let mut watched = row.traversal;
    let result = loop {
        let current = store.find_stack(&row.id).await.map_err(store_failure)?;
        let events = store
            .events(&row.id, last_event)
            .await
            .map_err(store_failure)?;
        if tty {
            eprint!("\r\x1b[2K");
        }
        for e in &events {
            last_event = e.id;
            if !tty || e.status == "FAILED" || e.resource.is_none() {
                eprintln!("{}", event_cells(e).join("  "));
            }
        }
        if current.status != "IN_PROGRESS" {
            break current;
        }
        if current.traversal != watched {
            if current.action != "ROLLBACK" || current.traversal != watched + 1 {
                // Another action took over the stack.
                break current;
            }
            // The action failed and its rollback started: follow it to its end.
            watched = current.traversal;
        }
        if tty {
            let counts = store
                .resource_counts(&row.id)
                .await
                .map_err(store_failure)?;
            let shown: Vec<String> = counts
                .iter()
                .map(|(a, s, n)| format!("{n} {a}_{s}"))
                .collect();
            let busy = store
                .resources_in_progress(&row.id, 3)
                .await
                .map_err(store_failure)?;
            let busy = if busy.is_empty() {
                String::new()
            } else {
                format!(" — {}", busy.join(", "))
            };
            let line = format!(
                "{} {}_IN_PROGRESS: {}{busy}",
                current.name,
                current.action,
                shown.join(", ")
            );
            // One terminal line, so that the next redraw overwrites it.
            eprint!("{}", line.chars().take(110).collect::<String>());
            let _ = std::io::stderr().flush();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = stop_tx.send(true);
    let _ = running.await;
    Ok(result)
}

fn finished(row: &StackRow) -> Result<(), Failure> {
    if row.action == "ROLLBACK" {
        // Rolled back (or failed to): the action asked for did not happen.
        let outcome = if row.status == "COMPLETE" {
            "was rolled back".to_string()
        } else {
            format!("its rollback failed too: {}", row.status_reason)
        };
        return Err(Failure::new(
            exit::FAILED,
            format!(
                "{} ROLLBACK_{}: the action failed and {outcome}; see `kiln stack events {}`",
                row.name, row.status, row.name
            ),
        ));
    }
    if row.status == "COMPLETE" {
        println!("{} {}_COMPLETE", row.name, row.action);
        Ok(())
    } else {
        Err(Failure::new(
            exit::FAILED,
            format!(
                "{} {}_{}: {}",
                row.name, row.action, row.status, row.status_reason
            ),
        ))
    }
}

fn event_cells(e: &EventRow) -> Vec<String> {
    vec![
        format_ms(e.at),
        e.resource.clone().unwrap_or_else(|| "(stack)".into()),
        format!("{}_{}", e.action, e.status),
        e.reason.clone(),
    ]
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

async fn outputs(
    store: &Store,
    row: &StackRow,
) -> Result<Vec<(String, String, Result<Value, String>)>, Failure> {
    let text = store.stack_template(&row.id).await.map_err(store_failure)?;
    let stack: template::Stack = serde_json::from_str(&text)
        .map_err(|e| Failure::new(exit::FAILED, format!("stored template is corrupt: {e}")))?;
    let rows = store.resources(&row.id).await.map_err(store_failure)?;
    let resolver = StoredResolver::new(rows, &row.name, &row.id);
    Ok(stack
        .outputs
        .iter()
        .map(|o| {
            (
                o.name.clone(),
                o.description.clone(),
                stack.output(&o.name, &resolver).map_err(|e| e.to_string()),
            )
        })
        .collect())
}

async fn print_outputs(store: &Store, row: &StackRow, format: Format) -> Result<(), Failure> {
    let outs = outputs(store, row).await?;
    match format {
        Format::Json => {
            let map: serde_json::Map<String, Value> = outs
                .into_iter()
                .map(|(k, _, v)| (k, v.unwrap_or_else(|e| json!({"error": e}))))
                .collect();
            println!("{}", serde_json::to_string_pretty(&map).unwrap());
        }
        Format::Table if !outs.is_empty() => {
            let rows: Vec<Vec<String>> = outs
                .into_iter()
                .map(|(k, d, v)| {
                    vec![
                        k,
                        v.map_or_else(|e| format!("(unavailable: {e})"), |v| cell(&v)),
                        d,
                    ]
                })
                .collect();
            print!("{}", render(&["OUTPUT", "VALUE", "DESCRIPTION"], &rows));
        }
        Format::Table => {}
    }
    Ok(())
}

async fn show(store: &Store, name: &str, format: Format) -> Result<(), Failure> {
    let row = store.find_stack(name).await.map_err(store_failure)?;
    let counts = store
        .resource_counts(&row.id)
        .await
        .map_err(store_failure)?;
    if let Format::Json = format {
        let outs = outputs(store, &row).await?;
        let doc = json!({
            "stack": row,
            "resources": counts.iter().map(|(a, s, n)| json!({"status": format!("{a}_{s}"), "count": n})).collect::<Vec<_>>(),
            "outputs": outs.into_iter().map(|(k, _, v)| (k, v.unwrap_or_else(|e| json!({"error": e})))).collect::<serde_json::Map<_, _>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap());
        return Ok(());
    }
    println!("name:      {}", row.name);
    println!("id:        {}", row.id);
    println!("status:    {}_{}", row.action, row.status);
    println!("reason:    {}", row.status_reason);
    println!("created:   {}", format_ms(row.created_at));
    println!("updated:   {}", format_ms(row.updated_at));
    let shown: Vec<String> = counts
        .iter()
        .map(|(a, s, n)| format!("{n} {a}_{s}"))
        .collect();
    println!("resources: {}", shown.join(", "));
    print_outputs(store, &row, Format::Table).await
}
