//! `authz-bench server-instructions`: the whole server process counted by
//! callgrind (tonic, h2, the allocator, the log writer thread: everything
//! but the kernel), for the floor and for hydra-authz at each log setting.
//! `instructions` counts only the check function; this counts what a check
//! costs the process that answers it, so the ratio to the floor does not
//! move with the machine's speed the way throughput does.
//!
//! Each server runs twice under `valgrind --tool=callgrind`: WARMUP checks
//! then SIGTERM, and WARMUP + CHECKS checks then SIGTERM; the difference
//! over CHECKS is one check, start-up and shutdown cancel. Checks are sent
//! one at a time over one HTTP/2 connection, so every check pays its own
//! socket reads and writes (no batching under load: pessimistic for every
//! row alike).

use crate::{
    allow_answer, check_request, issuer, mint, spawn_authz_logging, spawn_authz_under, spawn_noop_under, LogSetting,
    Proc, Wrapper, CACHE_ON,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use hydra_authz::demo::issuer::TokenFormat;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::Channel;

/// One server to count.
enum Server<'a> {
    /// The no-op floor; with a file, answering those CheckResponse bytes (a'').
    Noop(Option<&'a Path>),
    HydraAuthz(LogSetting),
}

pub(crate) async fn run(checks: u64, warmup: u64, keep: Option<PathBuf>) -> anyhow::Result<()> {
    anyhow::ensure!(checks > 0, "--checks must be at least 1");
    let warm_and_counted = warmup
        .checked_add(checks)
        .ok_or_else(|| anyhow::anyhow!("--warmup + --checks is too large"))?;
    which_valgrind()?;
    let temp = tempfile::tempdir()?;
    let dir = match &keep {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            tempfile::Builder::new()
                .prefix("server-instructions-")
                .tempdir_in(d)?
                .keep()
        }
        None => temp.path().to_owned(),
    };
    let dir = dir.as_path();
    let (opaque, addrs) = issuer(TokenFormat::Opaque, Duration::ZERO).await?;
    let token = mint(&opaque, 1)
        .pop()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| anyhow::anyhow!("the seed client cannot mint"))?;
    let intro = addrs.introspection_url();
    // Row a'''s bytes: hydra-authz's own allow for this check (not under valgrind).
    let answer = dir.join("allow-answer.pb");
    {
        let plain = spawn_authz_logging(dir, "answer", CACHE_ON, &intro, LogSetting::WARN).await?;
        std::fs::write(&answer, allow_answer(&plain, &token).await?)?;
    }
    let parts = answer_parts(dir, &answer)?;
    let rows: [(&str, Server); 7] = [
        ("a. no-op floor (empty OK)", Server::Noop(None)),
        ("a''. no-op answering hydra-authz's allow", Server::Noop(Some(&answer))),
        (
            "a''-m. the same allow without its dynamic metadata",
            Server::Noop(Some(&parts[0])),
        ),
        (
            "a''-r. the same allow without its headers_to_remove",
            Server::Noop(Some(&parts[1])),
        ),
        (
            "b. hydra-authz, cache hits, log info pretty",
            Server::HydraAuthz(LogSetting::SHIPPED),
        ),
        (
            "b2. hydra-authz, cache hits, log info json",
            Server::HydraAuthz(LogSetting::HELM),
        ),
        (
            "b3. hydra-authz, cache hits, log warn pretty",
            Server::HydraAuthz(LogSetting::WARN),
        ),
    ];
    let mut counted = Vec::new();
    for (i, (name, server)) in rows.iter().enumerate() {
        let base = count(dir, &format!("{i}-base"), server, &intro, &token, warmup).await?;
        let full = count(dir, &format!("{i}-full"), server, &intro, &token, warm_and_counted).await?;
        let per_check = full.saturating_sub(base) as f64 / checks as f64;
        eprintln!("authz-bench: {name}: {per_check:.0} instructions per check");
        counted.push((*name, per_check));
    }
    if keep.is_some() {
        eprintln!(
            "authz-bench: callgrind outputs kept in {} (callgrind_annotate callgrind.N-full)",
            dir.display()
        );
    }
    let floor = counted[0].1;
    let same_answer = counted[1].1;
    println!(
        "\nServer instructions per check (callgrind, whole process, {checks} sequential checks after {warmup}; \
         floor ÷ row = the throughput ratio if the server's own instructions were all that differed):\n"
    );
    println!("| row | instructions per check | floor ÷ row | a'' ÷ row |");
    println!("|---|---:|---:|---:|");
    for (name, n) in &counted {
        println!("| {name} | {n:.0} | {:.2} | {:.2} |", floor / n, same_answer / n);
    }
    Ok(())
}

/// Row a'''s answer without its dynamic metadata, and without its
/// `headers_to_remove`: what each part of the answer costs.
fn answer_parts(dir: &Path, answer: &Path) -> anyhow::Result<[PathBuf; 2]> {
    use envoy_types::ext_authz::v3::pb::{CheckResponse, HttpResponse};
    use prost::Message as _;
    let full = CheckResponse::decode(std::fs::read(answer)?.as_slice())?;
    let mut no_metadata = full.clone();
    no_metadata.dynamic_metadata = None;
    let mut no_removals = full;
    if let Some(HttpResponse::OkResponse(ok)) = &mut no_removals.http_response {
        ok.headers_to_remove.clear();
    }
    let paths = [dir.join("allow-no-metadata.pb"), dir.join("allow-no-removals.pb")];
    std::fs::write(&paths[0], no_metadata.encode_to_vec())?;
    std::fs::write(&paths[1], no_removals.encode_to_vec())?;
    Ok(paths)
}

fn which_valgrind() -> anyhow::Result<()> {
    let ok = std::process::Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    anyhow::ensure!(ok, "valgrind is not installed (Debian: apt-get install valgrind)");
    Ok(())
}

/// Instructions the server process ran in its life, `checks` checks included.
async fn count(
    dir: &Path,
    tag: &str,
    server: &Server<'_>,
    intro: &str,
    token: &str,
    checks: u64,
) -> anyhow::Result<u64> {
    let out: PathBuf = dir.join(format!("callgrind.{tag}"));
    let wrap = Wrapper {
        argv: vec![
            "valgrind".into(),
            "--tool=callgrind".into(),
            format!("--callgrind-out-file={}", out.display()).into(),
            format!("--log-file={}.log", out.display()).into(),
        ],
        start_budget: Duration::from_secs(120),
    };
    let mut proc = match server {
        Server::Noop(answer) => spawn_noop_under(&wrap, *answer).await?,
        Server::HydraAuthz(log) => spawn_authz_under(&wrap, dir, tag, CACHE_ON, intro, *log).await?,
    };
    send(&proc, token, checks).await?;
    stop(&mut proc).await?;
    let text = std::fs::read_to_string(&out).map_err(|e| {
        anyhow::anyhow!(
            "{}: no callgrind output ({e}); see {}.log",
            out.display(),
            out.display()
        )
    })?;
    total(&text).ok_or_else(|| anyhow::anyhow!("{}: no instruction total", out.display()))
}

/// The instruction total of a callgrind output file (`summary:`, or
/// `totals:` in outputs that have no summary line).
fn total(callgrind_out: &str) -> Option<u64> {
    let line = |prefix: &str| callgrind_out.lines().find_map(|l| l.strip_prefix(prefix));
    line("summary:")
        .or_else(|| line("totals:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// `checks` allowed checks, one after another, over one connection.
async fn send(proc: &Proc, token: &str, checks: u64) -> anyhow::Result<()> {
    let channel = Channel::from_shared(format!("http://{}", proc.addr))?
        .connect_timeout(Duration::from_secs(30))
        .connect()
        .await?;
    let mut client = AuthorizationClient::new(channel);
    let request = check_request(token);
    for i in 0..checks {
        let answer = tokio::time::timeout(Duration::from_secs(30), client.check(request.clone()))
            .await
            .map_err(|_| anyhow::anyhow!("check {i} got no answer in 30 s"))??
            .into_inner();
        anyhow::ensure!(
            answer.status.as_ref().is_some_and(|s| s.code == 0),
            "check {i} was not allowed"
        );
    }
    Ok(())
}

/// SIGTERM, then wait: callgrind writes its counts when the process ends.
async fn stop(proc: &mut Proc) -> anyhow::Result<()> {
    // Never `kill 0` (the whole process group) for a child already gone.
    let pid = proc
        .child
        .id()
        .ok_or_else(|| anyhow::anyhow!("the server under valgrind has already exited"))?
        .to_string();
    let status = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await?;
    anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
    tokio::time::timeout(Duration::from_secs(120), proc.child.wait())
        .await
        .map_err(|_| anyhow::anyhow!("process {pid} did not end within 120 s of SIGTERM"))??;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_total_of_a_callgrind_file() {
        let out = "version: 1\ncmd: x\nevents: Ir\nfl=a\n0 5\nsummary: 125201225\ntotals: 1\n";
        assert_eq!(super::total(out), Some(125_201_225));
        assert_eq!(super::total("events: Ir\ntotals: 42\n"), Some(42));
        assert_eq!(super::total("events: Ir\n"), None);
        assert_eq!(super::total("summary: lots\n"), None);
    }
}
