use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Logging starts once the config (its `[log]` section) is read: see `cli::run`.
    kiln::cli::run(kiln::cli::Cli::parse()).await
}
