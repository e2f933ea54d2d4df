//! `kiln resource list | show`: a stack's resources, read locally or from a server.

use clap::Subcommand;
use serde_json::Value;

use super::backend::{Backend, Needs, Target};
use super::stack::cell;
use super::table::render;
use super::{Failure, Format, api_failure};
use crate::config::Config;
use crate::service::operations::Operations;
use crate::store::format_ms;

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

pub async fn run(cmd: ResourceCommand, config: &Config, target: &Target) -> Result<(), Failure> {
    let backend = Backend::connect(config, target, Needs::Store).await?;
    match cmd {
        ResourceCommand::List { stack, format } => {
            let resources = backend.resources(&stack).await.map_err(api_failure)?;
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
            let r = backend
                .resource(&stack, &resource)
                .await
                .map_err(api_failure)?;
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
