//! The real binary: `hydra-authz --config` serves, becomes ready, and exits 0
//! on SIGTERM after draining.

use crate::support::free_port;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The shipped config on the given ports, with `edits` (from, to) applied.
fn shipped_config(dir: &tempfile::TempDir, grpc: u16, http: u16, edits: &[(&str, &str)]) -> std::path::PathBuf {
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/hydra-authz.toml")).expect("read");
    let mut config = shipped
        .replace("127.0.0.1:9191", &format!("127.0.0.1:{grpc}"))
        .replace("127.0.0.1:9192", &format!("127.0.0.1:{http}"));
    for (from, to) in edits {
        assert!(config.contains(from), "shipped config has {from}");
        config = config.replace(from, to);
    }
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config).expect("write");
    path
}

/// Also: `server.worker_threads` sizes the runtime (the start-up line says how many).
/// `hydra-authz --config path`, quiet, once `/readyz` on `http` says 200.
async fn serve_ready(path: &std::path::Path, http: u16) -> tokio::process::Child {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hydra-authz"))
        .arg("--config")
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start");
    crate::support::wait_ready(&mut child, http, String::new).await;
    child
}

#[test]
fn serves_until_sigterm_then_exits_zero() {
    let workers = serves_until_signal_then_exits_zero("TERM", 3);
    assert_eq!(workers, 3);
}

/// Ctrl-C in a terminal (and `docker stop` with STOPSIGNAL INT) is SIGINT.
#[test]
fn serves_until_sigint_then_exits_zero() {
    let workers = serves_until_signal_then_exits_zero("INT", 0);
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    assert_eq!(workers, cpus as u64, "0: one worker per CPU");
}

/// Start with `worker_threads`, signal, expect exit 0; the runtime's worker count.
fn serves_until_signal_then_exits_zero(signal: &str, worker_threads: usize) -> u64 {
    let (grpc, http) = (free_port(), free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let threads = format!("worker_threads = {worker_threads}");
    let path = shipped_config(
        &dir,
        grpc,
        http,
        &[
            ("format = \"pretty\"", "format = \"json\""),
            ("worker_threads = 0", &threads),
        ],
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_hydra-authz"))
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        assert!(child.try_wait().expect("wait").is_none(), "exited early");
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", http)) {
            use std::io::{Read, Write};
            let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut resp = String::new();
            let _ = s.read_to_string(&mut resp);
            if resp.starts_with("HTTP/1.1 200") {
                break true;
            }
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(ready, "/readyz never became 200");

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .expect("kill")
        .success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "did not exit after SIG{signal}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read");
    assert_eq!(status.code(), Some(0), "{stderr}");
    // JSON log format is honoured: every line parses.
    for line in stderr.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    assert!(stderr.contains("shutdown complete"), "{stderr}");
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "hydra-authz listening")
        .and_then(|v| v["workers"].as_u64())
        .unwrap_or_else(|| panic!("no start-up line with workers: {stderr}"))
}

/// SIGTERM to the real binary with checks in flight (the server's own gauge
/// says 16, each waiting on a slow Hydra): every one is answered 200, none
/// lost; then the process exits 0 and refuses new connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_loses_no_accepted_check() {
    use crate::support::hydra::{FakeHydra, Fault};
    use crate::support::{bearer, Answer, Checker};

    let hydra = FakeHydra::start().await;
    // Slow enough that the checks are surely still in flight at the signal.
    hydra.set_fault(Fault::Delay(Duration::from_millis(1_500)));
    let (grpc, http) = (free_port(), free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let url = hydra.introspection_url();
    let path = shipped_config(
        &dir,
        grpc,
        http,
        &[
            ("http://127.0.0.1:4445/admin/oauth2/introspect", &url),
            ("timeout_ms = 800", "timeout_ms = 5000"),
            // A check's whole budget must outlast Hydra's delay.
            (
                "[introspection.auth]",
                "[introspection.resilience]\nretry_budget_ms = 5000\n\n[introspection.auth]",
            ),
        ],
    );
    let mut child = serve_ready(&path, http).await;

    let grpc_addr = std::net::SocketAddr::from(([127, 0, 0, 1], grpc));
    let check = Checker::connect(grpc_addr).await;
    // Distinct tokens: single-flight would otherwise fold them into one introspection.
    let checks: Vec<_> = (0..16)
        .map(|_| {
            let (check, auth) = (
                check.clone(),
                bearer(&hydra.issuer.mint("reader", &["read_date"]).expect("mint")),
            );
            tokio::spawn(async move {
                check
                    .try_check("GET", "/date", &[("authorization", &auth)])
                    .await
                    .map(|r| Answer::of(&r).http_status)
            })
        })
        .collect();
    let http_addr = std::net::SocketAddr::from(([127, 0, 0, 1], http));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = crate::support::scrape_parsed(http_addr).await;
        if crate::support::metric(&s, "hydra_authz_checks_in_flight", &[]) >= 16.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the 16 checks never were in flight together");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let status = crate::support::sigterm_and_wait(&mut child, Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0));
    for c in checks {
        let answer = c.await.expect("task");
        assert_eq!(
            answer.as_ref().ok(),
            Some(&200),
            "a check in flight at SIGTERM was lost: {answer:?}"
        );
    }
    assert!(
        tokio::net::TcpStream::connect(grpc_addr).await.is_err(),
        "nothing listens after exit"
    );
}

/// With `shutdown_delay_ms`, SIGTERM first turns readiness off while checks
/// on new connections are still answered; then the binary drains and exits 0.
#[tokio::test]
async fn shutdown_delay_reports_not_ready_while_still_serving() {
    let hydra = crate::support::hydra::FakeHydra::start().await;
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    let (grpc, http) = (free_port(), free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = shipped_config(
        &dir,
        grpc,
        http,
        &[
            ("shutdown_delay_ms = 0", "shutdown_delay_ms = 5000"),
            (
                "http://127.0.0.1:4445/admin/oauth2/introspect",
                &hydra.introspection_url(),
            ),
        ],
    );
    let mut child = serve_ready(&path, http).await;

    let pid = child.id().expect("running").to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let client = reqwest::Client::builder().no_proxy().build().expect("client");
    let readyz = format!("http://127.0.0.1:{http}/readyz");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = client.get(&readyz).send().await.map(|r| r.status().as_u16());
        if status.as_ref().is_ok_and(|s| *s == 503) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never said 503 after SIGTERM: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Not ready, yet a new connection is accepted and its check answered.
    let check = crate::support::Checker::connect(std::net::SocketAddr::from(([127, 0, 0, 1], grpc))).await;
    let a = crate::support::Answer::of(
        &check
            .check("GET", "/date", &[("authorization", &crate::support::bearer(&token))])
            .await,
    );
    assert_eq!(a.http_status, 200);
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits after the delay")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
}

/// Decision lines leave the request path through a queue: with nobody
/// reading the log (its pipe full, as with a stalled collector) checks are
/// still answered, and on SIGTERM every queued line is written before the
/// process exits.
#[tokio::test]
async fn no_decision_line_is_lost_on_sigterm() {
    let hydra = crate::support::hydra::FakeHydra::start().await;
    let mut config = crate::support::config_for(&hydra.introspection_url());
    config.log.format = hydra_authz::config::LogFormat::Json;
    let mut authz = crate::support::stack::AuthzProcess::start_quiet(config).await;
    let check = crate::support::Checker::connect(([127, 0, 0, 1], authz.grpc_port).into()).await;
    let reader = crate::support::bearer(&hydra.issuer.mint("reader", &["read_date"]).expect("mint"));
    // Far more than a pipe buffer (64 KiB) of JSON lines, far less than the queue.
    const CHECKS: usize = 2_000;
    for i in 0..CHECKS {
        // Allows and three kinds of deny.
        let (method, path, auth) = match i % 4 {
            0 => ("GET", "/date", reader.as_str()),
            1 => ("POST", "/echo", reader.as_str()),
            2 => ("GET", "/nope", reader.as_str()),
            _ => ("GET", "/date", "Bearer unknown-token"),
        };
        check.check(method, path, &[("authorization", auth)]).await;
    }
    let pid = authz.child.id().expect("running").to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    // The collector catches up only now.
    authz.read_log();
    let status = tokio::time::timeout(Duration::from_secs(15), authz.child.wait())
        .await
        .expect("exits after SIGTERM")
        .expect("wait");
    assert!(status.success(), "{status}");
    let decisions = |log: &str| {
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["message"] == "decision")
            .count()
    };
    // The stderr reader task may still be draining the closed pipe (10 s
    // at most: on a busy 2-core CI machine 2 s was once not enough).
    for _ in 0..500 {
        if decisions(&authz.log()) >= CHECKS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(decisions(&authz.log()), CHECKS, "{}", authz.log());
}

/// The pretty format writes no colour codes when stderr is not a terminal
/// (a container runtime or a log collector would keep them verbatim).
#[tokio::test]
async fn no_colour_codes_when_stderr_is_not_a_terminal() {
    let hydra = crate::support::hydra::FakeHydra::start().await;
    let config = crate::support::config_for(&hydra.introspection_url());
    assert_eq!(
        config.log.format,
        hydra_authz::config::LogFormat::Pretty,
        "the shipped format"
    );
    let authz = crate::support::stack::AuthzProcess::start(config).await;
    let check = crate::support::Checker::connect(([127, 0, 0, 1], authz.grpc_port).into()).await;
    check.check("GET", "/date", &[]).await;
    let mut log = String::new();
    for _ in 0..100 {
        log = authz.log();
        if log.contains("decision") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(log.contains("decision"), "{log}");
    assert!(!log.contains('\u{1b}'), "escape codes in a piped log: {log:?}");
}

/// Without trace export the decision line skips the tracing event and goes
/// straight to the log queue; the log filter still governs it per target
/// and per level, on the real binary: the allow's INFO line and the
/// issuer failure's WARN line (a 503) are kept or dropped as any event
/// would be, and every line kept is one parseable JSON object.
#[tokio::test]
async fn decision_lines_follow_the_log_filter() {
    let hydra = crate::support::hydra::FakeHydra::start().await;
    let reader = crate::support::bearer(&hydra.issuer.mint("reader", &["read_date"]).expect("mint"));
    // (log.level, decision lines at INFO, at WARN, other INFO lines kept)
    for (level, info, warn, other_info) in [
        ("info", 1, 1, true),
        ("info,hydra_authz::decision=off", 0, 0, true),
        ("info,hydra_authz::decision=warn", 0, 1, true),
        ("warn", 0, 1, false),
    ] {
        let mut config = crate::support::config_for(&hydra.introspection_url());
        config.log.level = level.into();
        config.log.format = hydra_authz::config::LogFormat::Json;
        config.introspection.resilience.max_retries = 0;
        let mut authz = crate::support::stack::AuthzProcess::start(config).await;
        let check = crate::support::Checker::connect(([127, 0, 0, 1], authz.grpc_port).into()).await;
        hydra.set_fault(crate::support::hydra::Fault::None);
        let allowed = crate::support::Answer::of(&check.check("GET", "/date", &[("authorization", &reader)]).await);
        assert_eq!(allowed.http_status, 200, "{level}");
        hydra.set_fault(crate::support::hydra::Fault::Status(500, None));
        let unknown = crate::support::bearer("not-cached-yet");
        let failed = crate::support::Answer::of(&check.check("GET", "/date", &[("authorization", &unknown)]).await);
        assert_eq!(failed.http_status, 503, "{level}");
        hydra.set_fault(crate::support::hydra::Fault::None);
        let status = crate::support::sigterm_and_wait(&mut authz.child, Duration::from_secs(15)).await;
        assert!(status.success(), "{level}: {status}");
        // The stderr reader may still be draining the closed pipe: wait
        // until the log stops growing (5 s at most).
        let mut seen = authz.log().len();
        for _ in 0..25 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = authz.log().len();
            if now == seen {
                break;
            }
            seen = now;
        }
        let lines: Vec<String> = authz.log().lines().map(str::to_owned).collect();
        let parsed: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{level}: not one JSON object ({e}): {l:?}")))
            .collect();
        let decisions = |lvl: &str| {
            parsed
                .iter()
                .filter(|v| v["target"] == "hydra_authz::decision" && v["level"] == lvl)
                .count()
        };
        assert_eq!(decisions("INFO"), info, "{level}: {lines:#?}");
        assert_eq!(decisions("WARN"), warn, "{level}: {lines:#?}");
        let others = parsed
            .iter()
            .filter(|v| v["target"] != "hydra_authz::decision" && v["level"] == "INFO")
            .count();
        assert_eq!(others > 0, other_info, "{level}: {lines:#?}");
        if let Some(allow) = parsed.iter().find(|v| v["decision"] == "allow") {
            assert_eq!(allow["status"], 200);
            assert_eq!(allow["client_id"], "reader");
            assert_eq!(allow["path"], "/date", "{allow}");
            assert!(allow["token_fp"].as_str().is_some_and(|fp| fp.len() == 8), "{allow}");
        }
        if let Some(fail) = parsed.iter().find(|v| v["status"] == 503) {
            assert_eq!(fail["reason"], "introspection_unavailable");
            assert!(fail["detail"].as_str().is_some_and(|d| d.contains("status")), "{fail}");
        }
    }
}
