//! authz-bench: one run, one machine, every row measured against a baseline
//! from the same run. Loopback only; every load loop is bounded in time.
//!
//!   scripts/bench.sh [--duration-s 5] [--concurrency 32]   (builds hydra-authz and this tool, release)
//!
//! Rows (see README "Performance"):
//!   a  no-op ext_authz server (always allows; lives here only) — the floor
//!   b  hydra-authz, cache hits, at the shipped log settings       vs a
//!      (b: info pretty as config/, b2: info JSON as the Helm chart, b3: warn,
//!       b4: info pretty with the signed identity JWT on)
//!   c  hydra-authz, jwt mode (local EdDSA verification)           vs a
//!   d  hydra-authz uncached, Hydra-shaped issuer +0 ms / +5 ms      (introspections per check)
//!   e  real Envoy answering direct_response, driven by wrk: plain, + no-op ext_authz, + hydra-authz (cached)
//!   f  one hydra-authz, same run: gRPC Check (f) vs HTTP /forward-auth (f2)
//!   g  nginx kit driven by wrk: without auth_request (g), with hydra-authz (g2)
//!   z  open loop (fixed arrival rate, latency from the schedule): Zipf over
//!      10,000 tokens + 1 % new, Hydra +2 ms, cache off/on, 1k/s, 5k/s, saturation
//! plus p99 at a fixed 1,000 checks/s, and RSS idle / with 100,000 cached tokens.
//!
//! `authz-bench server-instructions` counts the whole server process under
//! callgrind instead (floor, a'' and its parts, b, b2, b3): the same
//! comparison without the machine's noise (server_instructions.rs).

use envoy_types::ext_authz::v3::pb::{Authorization, AuthorizationServer, CheckRequest, CheckResponse};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use hydra_authz::demo::issuer::{seed_clients, DevIssuer, IssuerAddrs, TokenFormat};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

/// hydra-authz's allocator (its src/main.rs): `instructions` runs the check
/// in this process, so it must allocate as the server does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod envoy;
mod front_doors;
mod instructions;
mod lean_client;
mod load;
mod memory;
mod open_loop;
mod rounds;
mod server_instructions;
mod servers;
mod soak;

pub(crate) use envoy::*;
pub(crate) use front_doors::*;
pub(crate) use lean_client::*;
pub(crate) use load::*;
pub(crate) use memory::*;
pub(crate) use open_loop::*;
pub(crate) use servers::*;
pub(crate) use soak::*;

#[derive(clap::Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Seconds of load per row.
    #[arg(long, default_value_t = 5)]
    duration_s: u64,
    /// Concurrent in-flight checks.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Envoy binary for rows e (default: $ENVOY_BIN, .venv-envoy, PATH).
    #[arg(long)]
    envoy: Option<PathBuf>,
    /// Skip the Envoy rows.
    #[arg(long)]
    no_envoy: bool,
    /// Skip the 100,000-token memory measurement.
    #[arg(long)]
    no_memory: bool,
    /// Run only these row groups, comma-separated, from: b (b2, b3, b'),
    /// b4, c, d, e, f, g, z, memory. The baselines a, a' and b always run.
    /// Default: all of them.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// With b: also measure a, b, b2 and b3 again in N interleaved rounds
    /// and report each ratio's median and range (see rounds.rs).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
}

/// The row groups `--only` selects from.
const GROUPS: [&str; 9] = ["b", "b4", "c", "d", "e", "f", "g", "z", "memory"];

impl Args {
    fn wants(&self, group: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == group)
    }
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Internal: serve the no-op ext_authz on ADDR (row a's server process).
    NoopServer {
        addr: SocketAddr,
        /// Answer every check with this CheckResponse (protobuf bytes)
        /// instead of an empty OK: row a'', the floor that pays for the
        /// same answer as hydra-authz.
        #[arg(long)]
        answer: Option<std::path::PathBuf>,
    },
    /// Bounded soak: fixed rate for MINUTES with Hydra faults injected
    /// periodically; reports answers, false allows, RSS and open files.
    Soak {
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        #[arg(long, default_value_t = 500)]
        rate: u64,
    },
    /// CHECKS checks of one kind in one process, for valgrind callgrind
    /// (scripts/callgrind.sh runs 0 and N and divides the difference).
    Instructions {
        #[arg(long, value_enum)]
        case: instructions::Case,
        #[arg(long, default_value_t = 1_000)]
        checks: u64,
        /// The log format: pretty as config/hydra-authz.toml, json as the Helm chart.
        #[arg(long, value_enum, default_value_t = instructions::Format::Pretty)]
        log_format: instructions::Format,
        /// The log level: info as shipped (one decision line per check), or
        /// warn to count the check without its line.
        #[arg(long, default_value = "info")]
        log_level: String,
    },
    /// The whole server process under valgrind callgrind, floor and
    /// hydra-authz at each log setting: instructions per check and the
    /// ratio to the floor's (needs valgrind; a few minutes).
    ServerInstructions {
        #[arg(long, default_value_t = 2_000)]
        checks: u64,
        /// Checks before counting starts (connections, caches, buffers warm).
        #[arg(long, default_value_t = 200)]
        warmup: u64,
        /// Keep the callgrind outputs in a new directory under this one
        /// (for callgrind_annotate); by default they are deleted.
        #[arg(long)]
        keep: Option<PathBuf>,
    },
    /// Only the memory rows: RSS idle and with N cached tokens.
    Memory {
        #[arg(long, default_value_t = 100_000)]
        tokens: usize,
    },
}

/// The floor: answers every check without looking at it, with an empty OK
/// or (row a'') a fixed answer, cloned per check as a server would build it.
struct Noop(Option<CheckResponse>);

#[tonic::async_trait]
impl Authorization for Noop {
    async fn check(&self, _r: tonic::Request<CheckRequest>) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(self.0.clone().unwrap_or_else(|| CheckResponse {
            status: Some(envoy_types::pb::google::rpc::Status::default()),
            ..Default::default()
        })))
    }
}

/// A baseline row whose checks were not all allowed measured something
/// else (errors come back fast): refused rather than compared against.
fn floor((row, denied): (Row, u64)) -> anyhow::Result<Row> {
    anyhow::ensure!(
        denied == 0,
        "the floor answered {denied} checks with something other than an allow"
    );
    Ok(row)
}

#[derive(Default, Clone)]
pub(crate) struct Row {
    pub(crate) name: String,
    pub(crate) rps: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    pub(crate) rss_mib: f64,
    /// Server CPU time (user + system) per answered check, µs.
    pub(crate) cpu_us: Option<f64>,
    /// The load generator's own CPU time per check, µs (it shares the cores).
    pub(crate) load_cpu_us: Option<f64>,
    pub(crate) note: String,
}

fn main() -> anyhow::Result<()> {
    use clap::Parser;
    let args = Args::parse();
    if let Some(Cmd::Instructions {
        case,
        checks,
        log_format,
        log_level,
    }) = args.cmd
    {
        return instructions::run(case, checks, log_format, log_level);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if let Some(Cmd::Soak { minutes, rate }) = args.cmd {
        return rt.block_on(soak(Duration::from_secs(minutes * 60), rate));
    }
    if let Some(Cmd::ServerInstructions { checks, warmup, keep }) = args.cmd {
        return rt.block_on(server_instructions::run(checks, warmup, keep));
    }
    if let Some(Cmd::Memory { tokens }) = args.cmd {
        return rt.block_on(async move {
            let dir = tempfile::tempdir()?;
            println!("{}", memory(dir.path(), tokens).await?);
            Ok(())
        });
    }
    if let Some(Cmd::NoopServer { addr, answer }) = args.cmd {
        let answer = match answer {
            Some(path) => Some(<CheckResponse as prost::Message>::decode(
                std::fs::read(path)?.as_slice(),
            )?),
            None => None,
        };
        return rt.block_on(async move {
            tonic::transport::Server::builder()
                .add_service(AuthorizationServer::new(Noop(answer)))
                .serve(addr)
                .await?;
            Ok(())
        });
    }
    rt.block_on(run(args))
}

/// The protobuf bytes of `server`'s answer to row b's check with `token`.
async fn allow_answer(server: &Proc, token: &str) -> anyhow::Result<Vec<u8>> {
    let channel = Channel::from_shared(format!("http://{}", server.addr))?
        .connect()
        .await?;
    let answer = AuthorizationClient::new(channel)
        .check(check_request(token))
        .await?
        .into_inner();
    anyhow::ensure!(
        answer.status.as_ref().is_some_and(|s| s.code == 0),
        "row a'': hydra-authz did not allow row b's check"
    );
    Ok(prost::Message::encode_to_vec(&answer))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dur = Duration::from_secs(args.duration_s);
    let c = args.concurrency;
    if let Some(bad) = args.only.iter().find(|o| !GROUPS.contains(&o.as_str())) {
        anyhow::bail!("--only: unknown row group {bad:?} (choose from {})", GROUPS.join(","));
    }
    let dir = tempfile::tempdir()?;
    let mut rows: Vec<Row> = Vec::new();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "authz-bench: {cores} cores, {}s per row, concurrency {c}",
        args.duration_s
    );

    // a. no-op floor.
    let (opaque, opaque_addrs) = issuer(TokenFormat::Opaque, Duration::ZERO).await?;
    let one = mint(&opaque, 1);
    let noop = spawn_noop(None).await?;
    let mut a = floor(load_on(&noop, &one, c, dur, None).await?)?;
    a.name = "a. no-op ext_authz (floor)".into();
    rows.push(a.clone());
    // The floor below saturation, at the d' rows' rate: one gRPC round trip.
    let mut floor_paced = floor(load_on(&noop, &one, 4, dur, Some(200)).await?)?;
    floor_paced.name = "a'. no-op at a fixed 200 checks/s".into();
    rows.push(floor_paced.clone());

    // b. cached, at the settings operators ship (config/ and the Helm
    // chart), then at warn (no decision lines) as a separate contrast row.
    let intro = opaque_addrs.introspection_url();
    let cache_on = CACHE_ON;
    let cached = spawn_authz(dir.path(), "cached", cache_on, &intro).await?;
    let idle_rss = rss_mib(cached.pid());
    let before = opaque.introspections();
    let (mut b, denied) = load_on(&cached, &one, c, dur, None).await?;
    b.name = format!(
        "b. hydra-authz, cache hits ({}, as config/)",
        LogSetting::SHIPPED.label()
    );
    b.note = format!(
        "{:.2}x a; {} introspection(s); {denied} non-allow",
        b.rps / a.rps,
        opaque.introspections() - before
    );
    rows.push(b.clone());
    let b_variants = if args.wants("b") {
        vec![("b2", LogSetting::HELM), ("b3", LogSetting::WARN)]
    } else {
        Vec::new()
    };
    let mut b_servers = Vec::new();
    for (tag, log) in b_variants {
        let srv = spawn_authz_logging(dir.path(), tag, cache_on, &intro, log).await?;
        let (mut r, denied) = load_on(&srv, &one, c, dur, None).await?;
        r.name = format!(
            "{tag}. hydra-authz, cache hits ({}{})",
            log.label(),
            if tag == "b2" {
                ", as the Helm chart"
            } else {
                ", no decision lines"
            }
        );
        r.note = format!("{:.2}x a; {denied} non-allow", r.rps / a.rps);
        rows.push(r);
        b_servers.push((tag, log, srv));
    }
    let mut rounds_table = String::new();
    if args.rounds > 1 && !b_servers.is_empty() {
        // a''. the floor answering with hydra-authz's own allow for this
        // request: what the answer costs (encoding it, and the load
        // generator decoding it on the same cores), apart from the check.
        let answer = dir.path().join("allow-answer.pb");
        std::fs::write(&answer, allow_answer(&cached, &one[0]).await?)?;
        let same_answer = spawn_noop(Some(&answer)).await?;
        let mut contenders = vec![
            // The floor against itself: what the method reads when nothing differs.
            rounds::Contender {
                name: "a. the no-op floor again (control)".into(),
                server: &noop,
            },
            rounds::Contender {
                name: "a''. no-op answering hydra-authz's allow (same bytes)".into(),
                server: &same_answer,
            },
            rounds::Contender {
                name: rounds::label("b", LogSetting::SHIPPED),
                server: &cached,
            },
        ];
        contenders.extend(b_servers.iter().map(|(tag, log, srv)| rounds::Contender {
            name: rounds::label(tag, *log),
            server: srv,
        }));
        // Index 1: a'', the floor with the same answer.
        rounds_table = rounds::interleaved(&noop, &contenders, Some(1), &one, c, dur, args.rounds).await?;
        drop(same_answer);
    }
    drop(b_servers);

    // b4. the allow path with the signed identity JWT (issue 16).
    if args.wants("b4") {
        rows.push(identity_jwt_row(dir.path(), cache_on, &intro, &one[0], c, dur, a.rps, b.rps).await?);
    }

    // Fixed 1,000 checks/s against the cached server: latency when not saturated.
    if args.wants("b") {
        let (mut paced, _) = load_on(&cached, &one, 8, dur, Some(1000)).await?;
        paced.name = "b'. cache hits at a fixed 1,000 checks/s".into();
        paced.note = format!(
            "client-observed; server-side p99 ≤ {} µs (check_duration histogram bucket); target < 1 ms",
            server_p99_bucket_us(cached.metrics_addr)
                .await
                .map_or("?".into(), |v| format!("{v:.0}"))
        );
        rows.push(paced);
    }

    if args.wants("c") {
        rows.append(&mut jwt_mode_rows(dir.path(), &noop, &intro, a.rps, c, dur).await?);
    }
    if args.wants("d") {
        rows.append(&mut uncached_rows(dir.path(), &floor_paced, c, dur).await?);
    }

    // e. real Envoy with wrk.
    if args.wants("e") && !args.no_envoy {
        match envoy_rows(&args, dir.path(), noop.addr, cached.addr, &one[0], dur).await {
            Ok(mut r) => rows.append(&mut r),
            Err(e) => eprintln!("authz-bench: Envoy rows skipped: {e:#}"),
        }
    }

    // f and g: the HTTP front door of one hydra-authz (cache on), through
    // gRPC and /forward-auth, then behind the nginx kit (issue 17).
    if args.wants("f") || args.wants("g") {
        let forward_auth = free_addr();
        let extra = forward_auth_extra(cache_on, forward_auth);
        let front = spawn_authz(dir.path(), "front", &extra, &intro).await?;
        wait_port(forward_auth).await?;
        if args.wants("f") {
            rows.append(&mut forward_auth_rows(&front, forward_auth, &one[0], c, dur).await?);
        }
        if args.wants("g") {
            match nginx_rows(dir.path(), forward_auth, &one[0], c, dur).await {
                Ok(mut r) => rows.append(&mut r),
                Err(e) => eprintln!("authz-bench: nginx rows skipped: {e:#}"),
            }
        }
    }

    if args.wants("z") {
        rows.append(&mut open_loop_rows(dir.path(), &noop, c, dur).await?);
    }

    let mut mem = format!("RSS idle (hydra-authz, cache on): {idle_rss:.1} MiB");
    if args.wants("memory") && !args.no_memory {
        mem = memory(dir.path(), 100_000).await?;
    }
    print_table(&rows, &mem, cores);
    print!("{rounds_table}");
    drop((noop, cached));
    Ok(())
}

/// c. jwt mode, and a2: the floor fed the same JWT-carrying requests.
async fn jwt_mode_rows(
    dir: &Path,
    noop: &Proc,
    intro: &str,
    a_rps: f64,
    c: usize,
    dur: Duration,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    // c. jwt mode. A JWT makes every CheckRequest several times larger for
    // the load generator too, so c is also compared with the floor fed the
    // same JWT-carrying requests (a2).
    let (jwt_iss, jwt_addrs) = issuer(TokenFormat::JwtEdDsa, Duration::ZERO).await?;
    let jwt_tokens = mint(&jwt_iss, 1);
    let mut a2 = floor(load_on(noop, &jwt_tokens, c, dur, None).await?)?;
    a2.name = "a2. no-op, same JWT-carrying requests as c".into();
    rows.push(a2.clone());
    let extra = format!(
        "mode = \"jwt\"\n[introspection.jwt]\njwks_url = \"{}\"",
        jwt_addrs.jwks_url()
    );
    let jwt = spawn_authz(dir, "jwt", &extra, intro).await?;
    let (mut cj, denied) = load_on(&jwt, &jwt_tokens, c, dur, None).await?;
    cj.name = "c. hydra-authz, jwt mode (EdDSA)".into();
    let verified = metric(jwt.metrics_addr, "hydra_authz_cache_misses_total")
        .await
        .unwrap_or(f64::NAN);
    cj.note = format!(
        "{:.2}x a, {:.2}x a2; {verified} signature verification(s) (JWT memo); {denied} non-allow",
        cj.rps / a_rps,
        cj.rps / a2.rps
    );
    rows.push(cj);
    drop(jwt);
    Ok(rows)
}

/// d, d', d": uncached checks against a Hydra-shaped issuer +0 / +5 ms.
async fn uncached_rows(dir: &Path, floor_paced: &Row, c: usize, dur: Duration) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    // d. uncached, distinct tokens so single-flight rarely coalesces.
    for delay_ms in [0u64, 5] {
        let (iss, addrs, hydra_times) = timed_issuer(TokenFormat::Opaque, Duration::from_millis(delay_ms)).await?;
        let tokens = mint(&iss, 20_000);
        let url = addrs.introspection_url();
        let srv = spawn_authz(dir, &format!("uncached{delay_ms}"), "", &url).await?;
        let (mut d, denied) = load_on(&srv, &tokens, c, dur, None).await?;
        let checks = d.rps * dur.as_secs_f64();
        d.name = format!("d. hydra-authz uncached, Hydra +{delay_ms} ms");
        d.note = format!(
            "{:.2} introspections/check; saturated; {denied} non-allow",
            iss.introspections() as f64 / checks.max(1.0),
        );
        rows.push(d);
        // Overhead over Hydra's latency, measured below saturation, with the
        // hops any introspecting ext_authz pays subtracted (see the note).
        hydra_times.take_p50_us();
        let (mut dp, _) = load_on(&srv, &tokens, 4, dur, Some(200)).await?;
        let hydra_p50 = hydra_times.take_p50_us();
        dp.name = format!("d'. same at a fixed 200 checks/s, Hydra +{delay_ms} ms");
        // The other unavoidable hop: a client's own round trip to this
        // Hydra-shaped server at the same rate (what any introspecting
        // service pays before doing anything).
        let (mut rtt, _) = introspection_rtt(&url, &tokens, 4, dur, 200).await?;
        rtt.name = format!("d\". reference: bench → Hydra +{delay_ms} ms introspection round trip, 200/s");
        dp.note = format!(
            "Hydra's handler: {hydra_p50:.0} µs (p50). p50 minus the floor's gRPC hop (a') and minus a \
             client's own Hydra round trip (d\"): {:.0} µs (target ≤ 200); minus a' and Hydra's handler time \
             only: {:.0} µs",
            dp.p50_us - floor_paced.p50_us - rtt.p50_us,
            dp.p50_us - floor_paced.p50_us - hydra_p50
        );
        rows.push(dp);
        rows.push(rtt);
    }
    Ok(rows)
}

fn print_table(rows: &[Row], mem: &str, cores: usize) {
    println!("\n| row | checks/s | p50 µs | p99 µs | p99.9 µs | server CPU µs/check | server RSS MiB | notes |");
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {} | {} | {:.1} | {} |",
            r.name,
            r.rps,
            r.p50_us,
            r.p99_us,
            if r.p999_us > 0.0 {
                format!("{:.0}", r.p999_us)
            } else {
                "–".into()
            },
            r.cpu_us.map_or("–".into(), |c| format!("{c:.1}")),
            r.rss_mib,
            r.note
        );
    }
    println!(
        "\n{mem}\n{cores} cores; load generator, issuer and servers share them. Every hydra-authz row runs at {} unless its name says otherwise; stderr is drained through a pipe.",
        LogSetting::SHIPPED.label()
    );
}
