//! `kiln validate`: check a template with its environments and parameters against the
//! configured plugins' schemas, and report every error (exit 2) or a summary (exit 0).

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::plugin::plugin_set_failure;
use super::table::render;
use super::{Failure, Format, exit};
use crate::config::Config;
use crate::registry::PluginSet;
use crate::template::{self, SourceFile, Stack};

#[derive(Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    template: TemplateArgs,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// The files and values a stack is made from (`kiln validate`, `kiln stack create`).
#[derive(Args)]
pub struct TemplateArgs {
    /// The HOT template (YAML or JSON).
    #[arg(long, short = 't')]
    pub template: PathBuf,
    /// Environment files, applied in order (later ones override earlier ones).
    #[arg(long = "environment", short = 'e')]
    pub environments: Vec<PathBuf>,
    /// A parameter value, KEY=VALUE; repeatable. Overrides the environments.
    #[arg(long = "parameter", short = 'P', value_parser = key_value)]
    pub parameters: Vec<(String, String)>,
}

impl TemplateArgs {
    /// Reads the template and environment files; a missing file is bad input naming it.
    pub fn read(&self) -> Result<(SourceFile, Vec<SourceFile>), Failure> {
        let read = |p: &PathBuf| {
            SourceFile::read(p).map_err(|e| {
                Failure::new(exit::BAD_INPUT, format!("cannot read {}: {e}", p.display()))
            })
        };
        let environments = self
            .environments
            .iter()
            .map(read)
            .collect::<Result<_, _>>()?;
        Ok((read(&self.template)?, environments))
    }
}

pub(super) fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got '{s}'")),
    }
}

pub async fn run(args: ValidateArgs, config: &Config) -> Result<(), Failure> {
    let (template, environments) = args.template.read()?;
    let plugins = PluginSet::load(config).await.map_err(plugin_set_failure)?;
    match template::validate(
        &template,
        &environments,
        &args.template.parameters,
        &plugins,
    ) {
        Ok(stack) => {
            match args.format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&summary_json(&stack)).expect("JSON")
                ),
                Format::Table => print!("{}", summary_table(&stack)),
            }
            Ok(())
        }
        Err(errors) => {
            match args.format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({"valid": false, "errors": errors}))
                        .expect("JSON")
                ),
                Format::Table => errors.iter().for_each(|e| println!("{e}")),
            }
            let s = if errors.len() == 1 { "" } else { "s" };
            Err(Failure::new(
                exit::BAD_INPUT,
                format!("{} error{s} in {}", errors.len(), template.name),
            ))
        }
    }
}

fn shown(p: &template::Parameter) -> String {
    if p.hidden {
        "******".into()
    } else {
        match &p.value {
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        }
    }
}

fn summary_table(stack: &Stack) -> String {
    let mut out = format!(
        "{}: valid (heat_template_version {})\n",
        stack.file, stack.version
    );
    if !stack.description.is_empty() {
        out += &format!("{}\n", stack.description.trim_end());
    }
    if !stack.parameters.is_empty() {
        let rows: Vec<Vec<String>> = stack
            .parameters
            .iter()
            .map(|p| vec![p.name.clone(), p.kind.name().into(), shown(p)])
            .collect();
        out += &format!("\n{}", render(&["PARAMETER", "TYPE", "VALUE"], &rows));
    }
    let rows: Vec<Vec<String>> = stack
        .in_order()
        .map(|r| {
            let ty = if r.served_type == r.type_name {
                r.type_name.clone()
            } else {
                format!("{} -> {}", r.type_name, r.served_type)
            };
            vec![r.name.clone(), ty, r.depends_on.join(", ")]
        })
        .collect();
    out += &format!("\n{}", render(&["RESOURCE", "TYPE", "DEPENDS ON"], &rows));
    if !stack.outputs.is_empty() {
        let rows: Vec<Vec<String>> = stack
            .outputs
            .iter()
            .map(|o| vec![o.name.clone(), o.description.clone()])
            .collect();
        out += &format!("\n{}", render(&["OUTPUT", "DESCRIPTION"], &rows));
    }
    out
}

fn summary_json(stack: &Stack) -> serde_json::Value {
    json!({
        "valid": true,
        "template": stack.file,
        "heat_template_version": stack.version,
        "description": stack.description,
        "parameters": stack.parameters.iter().map(|p| json!({"name": p.name, "type": p.kind.name(), "value": if p.hidden { json!("******") } else { p.value.clone() }})).collect::<Vec<_>>(),
        "resources": stack.in_order().map(|r| json!({"name": r.name, "type": r.type_name, "served_type": r.served_type, "depends_on": r.depends_on})).collect::<Vec<_>>(),
        "outputs": stack.outputs.iter().map(|o| json!({"name": o.name, "description": o.description})).collect::<Vec<_>>(),
    })
}
