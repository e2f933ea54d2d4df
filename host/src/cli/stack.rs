//! `kiln stack ...`: in embedded mode the engine runs in this process
//! against the configured database (SQLite by default) and a waiting command works through
//! jobs until its stack's action ends; with `--url` the same commands ask a Kiln server
//! (`backend.rs`), and print the same. Waiting and its progress: `progress.rs`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::backend::{Backend, Needs, Target};
use super::progress::{after_start, event_cells, follow_events, wait_unless};
use super::table::render;
use super::validate::{TemplateArgs, key_value, parameter_map};
use super::{Failure, Format, api_failure, exit};
use crate::config::Config;
use crate::model::{OnFailure, PlannedAction, Status};
use crate::service::operations::{Act, Operations};
use crate::service::requests::{CancelStack, CreateStack, OutputValue, Preview, UpdateStack};
use crate::store::format_ms;
use crate::template::SourceFile;

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

/// What a command needs: starting actions and validating need the plugins.
fn needs(cmd: &StackCommand) -> Needs {
    match cmd {
        StackCommand::Create { .. }
        | StackCommand::Update { .. }
        | StackCommand::Preview { .. }
        | StackCommand::Resume { .. }
        | StackCommand::Delete { .. }
        | StackCommand::Check { .. } => Needs::Plugins,
        _ => Needs::Store,
    }
}

pub async fn run_stack(cmd: StackCommand, config: &Config, target: &Target) -> Result<(), Failure> {
    let backend = Backend::connect(config, target, needs(&cmd)).await?;
    let b = &backend;
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
            let (file, environments) = template.read()?;
            let req = CreateStack {
                name,
                template: file,
                environments,
                parameters: parameter_map(&template.parameters),
                on_failure,
                timeout_secs: timeout,
                enable_rollback,
                project: None,
            };
            let row = b.create(req).await.map_err(api_failure)?;
            after_start(b, &row, no_wait, format).await
        }
        StackCommand::Update {
            name,
            args,
            dry_run,
            supersede,
            no_wait,
            format,
        } => {
            let mut req = args.request()?;
            if dry_run {
                let preview = b.preview(&name, req).await.map_err(api_failure)?;
                print_preview(&preview, format);
                return Ok(());
            }
            req.supersede = supersede;
            let row = b.update(&name, req).await.map_err(api_failure)?;
            after_start(b, &row, no_wait, format).await
        }
        StackCommand::Preview { name, args, format } => {
            let preview = b
                .preview(&name, args.request()?)
                .await
                .map_err(api_failure)?;
            print_preview(&preview, format);
            Ok(())
        }
        StackCommand::Resume {
            name,
            no_wait,
            format,
        } => {
            let row = b.act(&name, Act::Resume).await.map_err(api_failure)?;
            after_start(b, &row, no_wait, format).await
        }
        StackCommand::Delete { name, no_wait } => {
            let row = b.act(&name, Act::Delete).await.map_err(api_failure)?;
            wait_unless(b, &row, no_wait).await
        }
        StackCommand::Check { name, no_wait } => {
            let row = b.act(&name, Act::Check).await.map_err(api_failure)?;
            wait_unless(b, &row, no_wait).await
        }
        StackCommand::Cancel { name, no_rollback } => {
            let req = CancelStack {
                rollback: Some(!no_rollback),
            };
            let row = b.cancel(&name, req).await.map_err(api_failure)?;
            println!(
                "{} {}_{}{}",
                row.name,
                row.action,
                row.status,
                if row.status == Status::InProgress {
                    " (cancelling: running calls finish)"
                } else {
                    ""
                }
            );
            Ok(())
        }
        StackCommand::List { format } => {
            let stacks = b.list().await.map_err(api_failure)?;
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
        StackCommand::Show { name, format } => show(b, &name, format).await,
        StackCommand::Events {
            name,
            follow,
            format,
        } => {
            let row = b.show(&name, false).await.map_err(api_failure)?.stack;
            if follow {
                return follow_events(b, &row, format).await;
            }
            let events = b.events(&row.id, 0).await.map_err(api_failure)?;
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
            let outs = b.outputs(&name).await.map_err(api_failure)?;
            print_outputs(&outs, format);
            Ok(())
        }
    }
}

impl UpdateArgs {
    /// The update as a request: the files given are read here; with `--existing` whatever
    /// is not given is kept from what the stack was made from (the service merges).
    fn request(&self) -> Result<UpdateStack, Failure> {
        let read = |p: &PathBuf| {
            SourceFile::read(p).map_err(|e| {
                Failure::new(exit::BAD_INPUT, format!("cannot read {}: {e}", p.display()))
            })
        };
        let template = self.template.as_ref().map(read).transpose()?;
        let environments = if self.environments.is_empty() {
            None
        } else {
            Some(
                self.environments
                    .iter()
                    .map(read)
                    .collect::<Result<_, _>>()?,
            )
        };
        let rollback = if self.enable_rollback || self.disable_rollback {
            Some(self.enable_rollback)
        } else {
            None
        };
        Ok(UpdateStack {
            template,
            environments,
            parameters: parameter_map(&self.parameters),
            existing: self.existing,
            on_failure: self.on_failure,
            timeout_secs: self.timeout,
            rollback,
            supersede: false,
        })
    }
}

/// A preview as a table (with each changed property) or JSON.
fn print_preview(preview: &Preview, format: Format) {
    let (changes, summary) = (&preview.changes, &preview.summary);
    if let Format::Json = format {
        let doc = json!({"stack": preview.stack, "changes": changes, "summary": summary});
        println!("{}", serde_json::to_string_pretty(&doc).unwrap());
        return;
    }
    let mut rows = Vec::new();
    for c in changes
        .iter()
        .filter(|c| c.action != PlannedAction::Unchanged)
    {
        rows.push(vec![
            c.action.to_string(),
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
    println!("Preview of {}: {summary}.", preview.stack);
}

pub(super) fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// Outputs as `kiln stack outputs --format json` prints them: name to value, or to
/// `{"error": why}` when unavailable.
fn outputs_map(outs: &[OutputValue]) -> serde_json::Map<String, Value> {
    outs.iter()
        .map(|o| {
            let v = match (&o.value, &o.error) {
                (Some(v), _) => v.clone(),
                (None, e) => json!({"error": e.clone().unwrap_or_default()}),
            };
            (o.name.clone(), v)
        })
        .collect()
}

pub(super) fn print_outputs(outs: &[OutputValue], format: Format) {
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&outputs_map(outs)).unwrap()
        ),
        Format::Table if !outs.is_empty() => {
            let rows: Vec<Vec<String>> = outs
                .iter()
                .map(|o| {
                    let value = match (&o.value, &o.error) {
                        (Some(v), _) => cell(v),
                        (None, e) => format!("(unavailable: {})", e.as_deref().unwrap_or("")),
                    };
                    vec![o.name.clone(), value, o.description.clone()]
                })
                .collect();
            print!("{}", render(&["OUTPUT", "VALUE", "DESCRIPTION"], &rows));
        }
        Format::Table => {}
    }
}

async fn show(b: &Backend, name: &str, format: Format) -> Result<(), Failure> {
    let shown = b.show(name, true).await.map_err(api_failure)?;
    let outs = shown.outputs.clone().unwrap_or_default();
    let row = &shown.stack;
    if let Format::Json = format {
        let doc = json!({
            "stack": row,
            "resources": shown.resources,
            "outputs": outputs_map(&outs),
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
    let counts: Vec<String> = shown
        .resources
        .iter()
        .map(|c| format!("{} {}", c.count, c.status))
        .collect();
    println!("resources: {}", counts.join(", "));
    print_outputs(&outs, Format::Table);
    Ok(())
}
