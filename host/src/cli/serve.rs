//! `kiln serve` (an engine and the REST API in one process: the single-host default) and
//! `kiln api` (the API alone, in front of `kiln engine` processes on a shared database).

use std::net::SocketAddr;

use clap::Args;
use tokio::sync::watch;

use super::engine::shutdown_signal;
use super::{Failure, exit};
use crate::api::{self, Auth};
use crate::config::Config;

#[derive(Args)]
pub struct ServeArgs {
    /// Listen here instead of at `[api] listen` (port 0: any free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
}

/// Serves the API (and with `with_engine` runs an engine) until SIGINT/SIGTERM; then stops
/// taking requests, ends event streams, and drains the engine gracefully.
pub async fn serve(args: ServeArgs, config: &Config, with_engine: bool) -> Result<(), Failure> {
    let mut settings = config.api.clone();
    if let Some(listen) = args.listen {
        settings.listen = listen;
    }
    let auth = Auth::from_config(&settings).map_err(|e| Failure::new(exit::BAD_INPUT, e))?;
    let app = super::app(config).await?;
    let engine = app.engine.clone();
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| {
            Failure::new(
                exit::BAD_INPUT,
                format!("api.listen: cannot listen on {}: {e}", settings.listen),
            )
        })?;
    let bound = listener
        .local_addr()
        .map_err(|e| Failure::new(exit::FAILED, e))?;
    let (stop_tx, stop) = watch::channel(false);
    let running = with_engine.then(|| {
        eprintln!(
            "engine {} working on {} (SIGTERM or Ctrl-C drains and stops)",
            engine.id(),
            config.database.url()
        );
        let (engine, stop) = (engine.clone(), stop.clone());
        tokio::spawn(async move { engine.run(stop).await })
    });
    let access = if auth.is_open() {
        "open: no [[api.tokens]], loopback only".to_string()
    } else {
        "bearer tokens".to_string()
    };
    eprintln!("api on http://{bound} ({access}); web view at http://{bound}/ui/");
    let service = app.service;
    let state = api::state(service, auth, stop.clone());
    let max_body = usize::try_from(settings.max_body_bytes).unwrap_or(usize::MAX);
    let mut stopped = stop.clone();
    let server = tokio::spawn(api::serve(listener, state, max_body, async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    shutdown_signal().await;
    eprintln!("api on http://{bound} stopping");
    let _ = stop_tx.send(true);
    if let Ok(Err(e)) = server.await {
        eprintln!("api: {e}");
    }
    if let Some(running) = running {
        let _ = running.await;
    }
    eprintln!("stopped");
    Ok(())
}
