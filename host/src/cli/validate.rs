//! `kiln validate`: check a template with its environments and parameters against the
//! configured plugins' schemas (or a server's, with `--url`), and report every error (exit 2)
//! or a summary (exit 0).

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use serde_json::{Value, json};

use super::api_failure;
use super::backend::{Backend, Needs, Target};
use super::table::render;
use super::{Failure, Format, exit};
use crate::config::Config;
use crate::service::operations::Operations;
use crate::service::requests::ValidateTemplate;
use crate::template::SourceFile;

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

pub async fn run(args: ValidateArgs, config: &Config, target: &Target) -> Result<(), Failure> {
    let (template, environments) = args.template.read()?;
    let name = template.name.clone();
    let backend = Backend::connect(config, target, Needs::Plugins).await?;
    let req = ValidateTemplate {
        template,
        environments,
        parameters: parameter_map(&args.template.parameters),
    };
    match backend.validate(req).await {
        Ok(summary) => {
            match args.format {
                Format::Json => {
                    println!("{}", serde_json::to_string_pretty(&summary).expect("JSON"))
                }
                Format::Table => print!("{}", summary_table(&summary)),
            }
            Ok(())
        }
        Err(e) if e.code == "invalid_template" => {
            let errors = &e.errors;
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
                format!("{} error{s} in {name}", errors.len()),
            ))
        }
        Err(e) => Err(api_failure(e)),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

/// The summary (`service::validation_summary`) as a table: the same whether validated here
/// or by a server.
fn summary_table(v: &Value) -> String {
    let list = |key: &str| v[key].as_array().cloned().unwrap_or_default();
    let mut out = format!(
        "{}: valid (heat_template_version {})\n",
        text(&v["template"]),
        text(&v["heat_template_version"])
    );
    let description = text(&v["description"]);
    if !description.is_empty() {
        out += &format!("{}\n", description.trim_end());
    }
    let parameters = list("parameters");
    if !parameters.is_empty() {
        let rows: Vec<Vec<String>> = parameters
            .iter()
            .map(|p| vec![text(&p["name"]), text(&p["type"]), text(&p["value"])])
            .collect();
        out += &format!("\n{}", render(&["PARAMETER", "TYPE", "VALUE"], &rows));
    }
    let rows: Vec<Vec<String>> = list("resources")
        .iter()
        .map(|r| {
            let (ty, served) = (text(&r["type"]), text(&r["served_type"]));
            let ty = if served == ty {
                ty
            } else {
                format!("{ty} -> {served}")
            };
            let deps: Vec<String> = r["depends_on"]
                .as_array()
                .map(|d| d.iter().map(text).collect())
                .unwrap_or_default();
            vec![text(&r["name"]), ty, deps.join(", ")]
        })
        .collect();
    out += &format!("\n{}", render(&["RESOURCE", "TYPE", "DEPENDS ON"], &rows));
    let outputs = list("outputs");
    if !outputs.is_empty() {
        let rows: Vec<Vec<String>> = outputs
            .iter()
            .map(|o| vec![text(&o["name"]), text(&o["description"])])
            .collect();
        out += &format!("\n{}", render(&["OUTPUT", "DESCRIPTION"], &rows));
    }
    out
}

/// `-P KEY=VALUE` pairs as the request's parameter map (a later value for a key wins).
pub(super) fn parameter_map(pairs: &[(String, String)]) -> BTreeMap<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect()
}
