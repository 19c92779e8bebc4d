//! The `hydra-authz` binary: a thin CLI over the library; each command lives
//! in `hydra_authz::cmd`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use hydra_authz::cmd;
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
    /// Decide one request as the server would, and explain why (exit 0 allow, 1 deny, 2 error).
    Check(cmd::check::CheckArgs),
    /// Inspect configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Work with rules.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Fetch a client-credentials access token and print only the token.
    Token(cmd::token::TokenArgs),
    /// Drop cached verdicts on a running instance through its admin API (address and credentials from --config).
    Purge(cmd::purge::PurgeArgs),
    /// Probe a running server's GET /readyz (exit 0 on HTTP 200, 1 otherwise): the container HEALTHCHECK.
    Health(cmd::health::HealthArgs),
    /// Run a self-contained demo on loopback: dev issuer, Envoy, echo upstream. DEVELOPMENT ONLY.
    Demo {
        /// Envoy binary (default: $ENVOY_BIN, .venv-envoy, then PATH).
        #[arg(long)]
        envoy: Option<PathBuf>,
        /// Run in front of the real Ory Hydra (this binary; scripts/demo.sh --hydra builds it) instead of the built-in issuer.
        #[arg(long)]
        hydra: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file (plus HYDRA_AUTHZ_* env), warn about dead rules, print the effective config (secrets redacted).
    Check(cmd::config::ConfigCheckArgs),
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Generate [[rules]] TOML from an OpenAPI 3.0/3.1 document's security requirements.
    FromOpenapi(cmd::rules::FromOpenApiArgs),
}

/// What every allocation of the server goes through; see Cargo.toml for why
/// not glibc's malloc. Benchmarks and `authz-bench instructions` set the same.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = cli.config;
    let result = match cli.command.unwrap_or(Command::Serve) {
        // The config first: it sizes the runtime.
        Command::Serve => Config::load(&path).map_err(anyhow::Error::from).and_then(|config| {
            let rt = server_runtime(config.server.worker_threads)?;
            let (result, logs) = rt.block_on(serve(path, config));
            // No task is left to log once the runtime is gone; then the
            // log queue's last lines are written and it closes.
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            drop(logs);
            result
        }),
        Command::Check(args) => {
            // Its own exit codes: 0 allow, 1 deny, 2 error or no decision.
            let outcome = Config::load(&path)
                .map_err(anyhow::Error::from)
                .and_then(|c| runtime()?.block_on(cmd::check::run(&c, args)));
            return match outcome {
                Ok(verdict) => ExitCode::from(verdict.exit_code()),
                Err(e) => {
                    eprintln!("hydra-authz: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Config {
            command: ConfigCommand::Check(args),
        } => Config::load(&path)
            .map_err(anyhow::Error::from)
            .and_then(|c| cmd::config::run(&path, &c, &args)),
        Command::Rules {
            command: RulesCommand::FromOpenapi(args),
        } => cmd::rules::from_openapi(&args),
        Command::Token(args) => runtime()
            .and_then(|rt| rt.block_on(cmd::token::run(&args)))
            .map(|t| println!("{t}")),
        Command::Purge(args) => Config::load(&path)
            .map_err(anyhow::Error::from)
            .and_then(|c| runtime()?.block_on(cmd::purge::run(&c, &args))),
        Command::Health(args) => {
            // With --url the config is not read: probing an explicit URL
            // should not depend on the config being loadable.
            let url = match args.url {
                Some(url) => Ok(url),
                None => Config::load(&path)
                    .map(|c| cmd::health::readyz_url(c.server.http_addr))
                    .map_err(anyhow::Error::from),
            };
            url.and_then(|url| runtime()?.block_on(cmd::health::run(&url)))
        }
        Command::Demo { envoy, hydra } => runtime().and_then(|rt| rt.block_on(demo(envoy, hydra))),
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
    server_runtime(0)
}

/// The server's runtime: `worker_threads` workers, or tokio's default (one
/// per CPU the process may use) for 0.
fn server_runtime(worker_threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if worker_threads > 0 {
        b.worker_threads(worker_threads);
    }
    b.enable_all().build().context("cannot start the tokio runtime")
}

/// Serves until SIGTERM/SIGINT; hands back the log writer's guard, which
/// the caller drops after the runtime.
async fn serve(path: PathBuf, config: Config) -> (anyhow::Result<()>, Option<hydra_authz::telemetry::LogWriterGuard>) {
    let telemetry = match hydra_authz::telemetry::init(&config.log, &config.telemetry) {
        Ok(t) => t,
        Err(e) => return (Err(e), None),
    };
    let result = serve_until_signal(path, &config).await;
    (result, telemetry.shutdown())
}

async fn serve_until_signal(path: PathBuf, config: &Config) -> anyhow::Result<()> {
    // Before the listeners: once /readyz says 200, SIGTERM must drain, not
    // kill, and SIGHUP must reload, not kill.
    let signal = hydra_authz::server::termination_signal()?;
    let hangups = hydra_authz::server::reload::Hangups::catch()?;
    let mut server = hydra_authz::server::start(config).await?;
    server.watch_config(path, hangups)?;
    // The server ends by itself only on error (a listener gone): exit with
    // it, so the orchestrator restarts us, rather than wait for a signal.
    let ended = tokio::select! {
        _ = signal => None,
        ended = server.wait() => Some(ended),
    };
    match ended {
        None => server.shutdown().await,
        Some(ended) => ended.and_then(|()| Err(anyhow::anyhow!("the server stopped without being asked to"))),
    }
}

async fn demo(envoy: Option<PathBuf>, hydra: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::from_toml_str(hydra_authz::demo::DEFAULT_CONFIG)?;
    let _telemetry = hydra_authz::telemetry::init(&config.log, &config.telemetry)?;
    hydra_authz::demo::run(hydra_authz::demo::DemoOptions { envoy, hydra }).await
}
