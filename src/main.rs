//! The `hydra-authz` binary: a thin CLI over the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use hydra_authz::config::{Config, DEFAULT_CONFIG_PATH};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "hydra-authz",
    version,
    about = "Envoy/Istio external authorizer backed by Ory Hydra token introspection"
)]
struct Cli {
    /// Config file (TOML). Env vars HYDRA_AUTHZ_<SECTION>__<KEY> override it.
    #[arg(long, global = true, env = "HYDRA_AUTHZ_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the authorizer (the default command).
    Serve,
    /// Inspect configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Run a self-contained demo on loopback: dev issuer, Envoy, echo upstream.
    /// DEVELOPMENT ONLY.
    Demo {
        /// Envoy binary (default: $ENVOY_BIN, .venv-envoy, then PATH).
        #[arg(long)]
        envoy: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file (plus HYDRA_AUTHZ_* env) and print the effective config, secrets redacted.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.config;
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => runtime().and_then(|rt| rt.block_on(serve(config))),
        Command::Config {
            command: ConfigCommand::Check,
        } => config_check(config),
        Command::Demo { envoy } => runtime().and_then(|rt| rt.block_on(demo(envoy))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hydra-authz: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

async fn serve(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    let telemetry = hydra_authz::telemetry::init(&config.log, &config.telemetry)?;
    let server = hydra_authz::server::start(&config).await?;
    hydra_authz::server::termination_signal().await;
    let result = server.shutdown().await;
    telemetry.shutdown();
    result
}

fn config_check(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    // Also build the engine: reads the referenced secrets and compiles rules.
    hydra_authz::server::build_engine(&config, Default::default())?;
    println!("# {}: OK", path.display());
    print!("{}", config.to_redacted_toml());
    Ok(())
}

async fn demo(envoy: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::from_toml_str(hydra_authz::demo::DEFAULT_CONFIG)?;
    let _telemetry = hydra_authz::telemetry::init(&config.log, &config.telemetry)?;
    hydra_authz::demo::run(hydra_authz::demo::DemoOptions { envoy }).await
}
