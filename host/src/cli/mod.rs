//! The `kiln` command line.

mod plugin;
mod table;

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Resource-type and retry-policy plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
}

#[derive(Clone, Copy, Default, ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
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
    let result = match cli.command {
        Command::Plugin(cmd) => match load_config(cli.config.as_deref()) {
            Ok(config) => plugin::run(cmd, &config).await,
            Err(f) => Err(f),
        },
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
    match path {
        Some(p) => Config::load(p).map_err(bad),
        None if std::path::Path::new("kiln.toml").exists() => {
            Config::load("kiln.toml".as_ref()).map_err(bad)
        }
        None => Ok(Config::default()),
    }
}
