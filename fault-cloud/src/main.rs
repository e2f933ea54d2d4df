//! `fault-cloud`: the fault-injecting fake cloud in the foreground, until Ctrl-C or SIGTERM,
//! then a summary of what it saw.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use fault_cloud::{FaultConfig, FaultServer, FaultSpec, Mix, ParseError, StartError, parse_rate};

/// Exit codes, as `kiln`'s: 1 the server could not start (the port is taken), 2 bad input.
const FAILED: u8 = 1;
const BAD_INPUT: u8 = 2;

#[derive(Parser)]
#[command(
    name = "fault-cloud",
    version,
    about = "A fault-injecting fake REST cloud on 127.0.0.1 (for trying Kiln's retries and takeovers)"
)]
struct Args {
    /// Address to listen on: 127.0.0.1 only; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// A fault and its probability per request, repeatable: 500=0.1, 503=0.2, 429=0.05
    /// (Retry-After 1 s; 429:5 for 5 s), 401=0.01, hang=0.01, reset=0.05; `after:503=0.1` strikes
    /// after the request was handled (the object exists, the client does not know).
    #[arg(long = "rate", value_name = "KIND=P", value_parser = rate_arg)]
    rates: Vec<(FaultSpec, f64)>,
    /// Seed of the probabilistic faults (default: random, printed at start).
    #[arg(long)]
    seed: Option<u64>,
    /// Apply the probabilistic faults only to these methods, e.g. POST,PUT.
    #[arg(long, value_delimiter = ',', value_name = "METHODS")]
    only_methods: Vec<String>,
    /// Faults for the first requests, in order, e.g. 503,429:2,reset.
    #[arg(long, value_delimiter = ',', value_name = "FAULTS")]
    script: Vec<FaultSpec>,
    /// Create a new object for every POST, ignoring Idempotency-Key (a careless API).
    #[arg(long)]
    ignore_idempotency_keys: bool,
    /// Require `Authorization: Bearer TOKEN` on every cloud request (401 otherwise, before any
    /// fault); rotate it with `PUT /_kiln/token {"token": "new"}`.
    #[arg(long, value_name = "TOKEN", value_parser = token_arg)]
    token: Option<String>,
    /// Delay every cloud request by this many milliseconds before handling it (a distant cloud).
    #[arg(long, value_name = "N", default_value_t = 0)]
    latency_ms: u64,
}

fn token_arg(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("the token is empty".to_string());
    }
    Ok(s.to_string())
}

fn rate_arg(s: &str) -> Result<(FaultSpec, f64), ParseError> {
    parse_rate(s)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // Warnings (a failed accept, say) to stderr; FAULT_CLOUD_LOG=debug shows every connection.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FAULT_CLOUD_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

async fn run(args: Args) -> Result<(), (u8, String)> {
    let config = FaultConfig {
        listen: args.listen,
        mix: Mix {
            rates: args.rates.into_iter().collect(),
            only_methods: args.only_methods,
            seed: args.seed,
            latency_ms: args.latency_ms,
        },
        honour_idempotency_keys: !args.ignore_idempotency_keys,
        token: args.token,
    };
    let server = FaultServer::start(config).await.map_err(|e| {
        let code = match e {
            StartError::NotLocal(_) | StartError::BadMix(_) => BAD_INPUT,
            StartError::Bind { .. } => FAILED,
        };
        (code, e.to_string())
    })?;
    for fault in args.script {
        server.inject(fault);
    }
    let mix = server.mix();
    println!("fault server listening on {}", server.base_url());
    let rates: Vec<String> = mix.rates.iter().map(|(f, p)| format!("{f}={p}")).collect();
    println!(
        "faults: {}{}; seed {}; scripted {}; latency {} ms; {}",
        if rates.is_empty() {
            "none".to_string()
        } else {
            rates.join(" ")
        },
        if mix.only_methods.is_empty() {
            String::new()
        } else {
            format!(" on {}", mix.only_methods.join(","))
        },
        mix.seed.unwrap_or_default(),
        server.stats().scripted_pending,
        mix.latency_ms,
        // Not the token itself: the caller has it, the output may end up in a log.
        if server.token().is_some() {
            "bearer token required"
        } else {
            "no auth"
        },
    );
    println!(
        "control: {0}/_kiln/requests, {0}/_kiln/objects, {0}/_kiln/stats",
        server.base_url()
    );
    shutdown_signal().await;
    let stats = server.stats();
    server.shutdown().await;
    println!("fault server stopped\n{stats}");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
