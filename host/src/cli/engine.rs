//! `kiln engine` (run the workers) and `kiln engine list` (every engine sharing the database,
//! judged on the database's clock).

use clap::{Args, Subcommand};
use tokio::sync::watch;

use super::api_failure;
use super::backend::{Backend, Needs, Target};
use super::table::render;
use super::{Failure, Format, exit};
use crate::config::Config;
use crate::service::operations::Operations;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EngineArgs {
    #[command(subcommand)]
    command: Option<EngineCommand>,
}

#[derive(Subcommand)]
enum EngineCommand {
    /// Every engine registered in the database: up, draining, stopped or dead (no heartbeat
    /// within its lease), with its jobs in flight, the stack locks it holds and who leads.
    List {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

pub async fn run(args: EngineArgs, config: &Config, target: &Target) -> Result<(), Failure> {
    match args.command {
        None => serve(config).await,
        Some(EngineCommand::List { format }) => list(config, target, format).await,
    }
}

/// Works through every stack's jobs until SIGINT/SIGTERM, then drains gracefully.
pub async fn serve(config: &Config) -> Result<(), Failure> {
    let engine = super::app(config).await?.engine;
    let (stop_tx, stop) = watch::channel(false);
    eprintln!(
        "engine {} working on {} (SIGTERM or Ctrl-C drains and stops)",
        engine.id(),
        config.database.url()
    );
    let metrics = match config.engine.metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                Failure::new(
                    exit::BAD_INPUT,
                    format!("engine.metrics_listen: cannot listen on {addr}: {e}"),
                )
            })?;
            let bound = listener
                .local_addr()
                .map_err(|e| Failure::new(exit::FAILED, e))?;
            eprintln!("metrics on http://{bound}/metrics");
            let store = engine.store().clone();
            Some(tokio::spawn(async move {
                let _ = axum::serve(listener, crate::metrics::router(store)).await;
            }))
        }
        None => None,
    };
    let running = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run(stop).await }
    });
    shutdown_signal().await;
    eprintln!(
        "engine {} draining (up to {} ms for running calls)",
        engine.id(),
        config.engine.grace_ms
    );
    let _ = stop_tx.send(true);
    let _ = running.await;
    if let Some(m) = metrics {
        m.abort();
    }
    eprintln!("engine {} stopped", engine.id());
    Ok(())
}

pub(super) async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn list(config: &Config, target: &Target, format: Format) -> Result<(), Failure> {
    let backend = Backend::connect(config, target, Needs::Store).await?;
    let engines = backend.engines().await.map_err(api_failure)?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&engines).unwrap()),
        Format::Table => {
            let rows: Vec<Vec<String>> = engines
                .iter()
                .map(|e| {
                    vec![
                        e.id.clone(),
                        e.host.clone(),
                        e.pid.to_string(),
                        e.status.to_string(),
                        format!("{:.1} s ago", e.heartbeat_age_ms as f64 / 1000.0),
                        e.jobs_in_flight.to_string(),
                        e.locks_held.to_string(),
                        if e.leader { "yes" } else { "" }.into(),
                        e.version.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                render(
                    &[
                        "ID",
                        "HOST",
                        "PID",
                        "STATUS",
                        "HEARTBEAT",
                        "JOBS",
                        "LOCKS",
                        "LEADER",
                        "VERSION"
                    ],
                    &rows
                )
            );
        }
    }
    Ok(())
}
