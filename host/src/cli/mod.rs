//! The `kiln` command line.

mod backend;
mod client;
mod engine;
mod plugin;
mod progress;
mod resource;
mod retry;
mod serve;
mod stack;
mod table;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Config;

/// Exit codes scripts can rely on.
pub mod exit {
    /// The operation failed (for `plugin call`: the plugin returned one of its errors).
    pub const FAILED: u8 = 1;
    /// Bad input: arguments, config file, JSON.
    pub const BAD_INPUT: u8 = 2;
    /// A plugin could not be loaded, or its call broke down (trap, limit, timeout).
    pub const PLUGIN_FAULT: u8 = 3;
    /// Another action is in progress on the stack (or the name is taken).
    pub const CONFLICT: u8 = 4;
    /// No such stack or resource.
    pub const NOT_FOUND: u8 = 5;

    /// The exit status of an operation's error, by its stable code (`service::error`).
    pub fn of_api_code(code: &str) -> u8 {
        match code {
            "invalid_template"
            | "invalid_body"
            | "invalid_query"
            | "ambiguous"
            | "payload_too_large"
            | "unsupported_media_type" => BAD_INPUT,
            "not_found" => NOT_FOUND,
            "stack_exists" | "action_in_progress" => CONFLICT,
            _ => FAILED,
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn each_error_code_has_its_exit_status() {
            let exits: Vec<(&str, u8)> = crate::service::CODES
                .iter()
                .map(|(code, _)| (*code, super::of_api_code(code)))
                .collect();
            assert_eq!(
                exits,
                [
                    ("invalid_template", 2),
                    ("invalid_body", 2),
                    ("invalid_query", 2),
                    ("ambiguous", 2),
                    ("unauthorized", 1),
                    ("forbidden", 1),
                    ("not_found", 5),
                    ("no_route", 1),
                    ("method_not_allowed", 1),
                    ("stack_exists", 4),
                    ("action_in_progress", 4),
                    ("nothing_to_cancel", 1),
                    ("payload_too_large", 2),
                    ("unsupported_media_type", 2),
                    ("rate_limited", 1),
                    ("internal", 1),
                    ("not_ready", 1),
                    ("unreachable", 1),
                    ("busy", 1),
                ]
            );
        }
    }
}

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Orchestration with sandboxed WebAssembly plugins"
)]
pub struct Cli {
    /// Config file. Default: ./kiln.toml when it exists, else built-in defaults.
    #[arg(long, short = 'c', global = true, env = "KILN_CONFIG")]
    config: Option<PathBuf>,
    /// A Kiln server (`kiln serve` or `kiln api`) to send `stack`, `resource`, `validate` and
    /// `engine list` commands to, e.g. http://127.0.0.1:8004. Default: run them here, on the
    /// configured database.
    #[arg(long, global = true, env = "KILN_URL")]
    url: Option<String>,
    /// The bearer token for --url.
    #[arg(long, global = true, env = "KILN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Resource-type and retry-policy plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Check a template (with environments and parameters) and report every error.
    Validate(validate::ValidateArgs),
    /// Stacks: create, delete, cancel, list, show, events, outputs.
    #[command(subcommand)]
    Stack(stack::StackCommand),
    /// A stack's resources.
    #[command(subcommand)]
    Resource(resource::ResourceCommand),
    /// Run an engine (work through every stack's jobs until SIGTERM, then drain), or
    /// `engine list` the engines sharing the database.
    Engine(engine::EngineArgs),
    /// Run the whole service in one process: an engine and the REST API with the web view
    /// (`[api] listen`, default 127.0.0.1:8004), until SIGTERM.
    Serve(serve::ServeArgs),
    /// Run the REST API and web view only; the work is done by `kiln engine` processes
    /// sharing the database.
    Api(serve::ServeArgs),
    /// Retry policies: simulate a policy's schedule.
    #[command(subcommand)]
    Retry(retry::RetryCommand),
}

#[derive(Clone, Copy, Default, ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// The application could not be built: bad input (config, database URL) exits 2, a plugin
/// that cannot load 3, anything else 1.
pub(crate) fn app_failure(e: crate::app::AppError) -> Failure {
    let code = if e.is_bad_input() {
        exit::BAD_INPUT
    } else if matches!(e, crate::app::AppError::Plugins(_)) {
        exit::PLUGIN_FAULT
    } else {
        exit::FAILED
    };
    Failure::new(code, e)
}

/// The application with every plugin loaded (to start actions or work jobs).
pub(crate) async fn app(config: &crate::config::Config) -> Result<crate::app::App, Failure> {
    crate::app::App::build(config, crate::app::Plugins::Load)
        .await
        .map_err(app_failure)
}

/// An operation's error as the CLI reports it: its message, and its code's exit status.
pub(crate) fn api_failure(e: crate::service::ApiError) -> Failure {
    Failure::new(exit::of_api_code(&e.code), e.message)
}

/// An error with the exit code it deserves.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl std::fmt::Display) -> Self {
        Self {
            code,
            message: message.to_string(),
        }
    }
}

pub async fn run(cli: Cli) -> ExitCode {
    let result = match load_config(cli.config.as_deref()) {
        Err(f) => Err(f),
        Ok(config) => {
            crate::logging::init(&config.log);
            let target = backend::Target {
                url: cli.url,
                token: cli.token,
            };
            match cli.command {
                Command::Plugin(cmd) => plugin::run(cmd, &config).await,
                Command::Validate(args) => validate::run(args, &config, &target).await,
                Command::Stack(cmd) => stack::run_stack(cmd, &config, &target).await,
                Command::Resource(cmd) => resource::run(cmd, &config, &target).await,
                Command::Engine(args) => engine::run(args, &config, &target).await,
                Command::Serve(args) => serve::serve(args, &config, true).await,
                Command::Api(args) => serve::serve(args, &config, false).await,
                Command::Retry(cmd) => retry::run(cmd, &config).await,
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn load_config(path: Option<&std::path::Path>) -> Result<Config, Failure> {
    let bad = |e: crate::config::ConfigError| Failure::new(exit::BAD_INPUT, e);
    let config = match path {
        Some(p) => Config::load(p).map_err(bad)?,
        None if std::path::Path::new("kiln.toml").exists() => {
            Config::load("kiln.toml".as_ref()).map_err(bad)?
        }
        None => Config::default(),
    };
    config.with_env(std::env::vars()).map_err(bad)
}
