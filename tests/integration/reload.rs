//! Hot reload: validate then swap; bad files keep the running config;
//! checks in flight are unaffected; the binary reloads on file change and SIGHUP.

use crate::support;
use crate::support::free_port;

use std::path::Path;
use std::time::{Duration, Instant};
use support::hydra::{FakeHydra, Fault};
use support::{bearer, config_for, metric, metric_opt, start_authz, Answer, Checker};

fn write_config(path: &Path, introspection_url: &str, date_scope: &str, extra: &str) {
    let text = format!(
        "[server]\ngrpc_addr = \"127.0.0.1:0\"\nhttp_addr = \"127.0.0.1:0\"\n[introspection]\nurl = \"{introspection_url}\"\n{extra}\n[[rules]]\nid = \"date\"\nmethods = [\"GET\"]\npath = \"/date\"\nscopes = [\"{date_scope}\"]\n"
    );
    std::fs::write(path, text).expect("write config");
}

/// A server started from a config file (rule `date` needs `read_date`),
/// with a reader's token.
struct Served {
    hydra: FakeHydra,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    server: hydra_authz::server::RunningServer,
    check: Checker,
    reader: String,
}

async fn served_from_a_file() -> Served {
    let hydra = FakeHydra::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    write_config(&path, &hydra.introspection_url(), "read_date", "");
    let server = start_authz(&hydra_authz::config::Config::load(&path).expect("config")).await;
    let check = Checker::connect(server.grpc_addr).await;
    let reader = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    Served {
        hydra,
        _dir: dir,
        path,
        server,
        check,
        reader,
    }
}

async fn status(check: &Checker, token: &str) -> i32 {
    Answer::of(&check.check("GET", "/date", &[("authorization", &bearer(token))]).await).http_status
}

#[tokio::test]
async fn reload_swaps_rules_and_rejects_bad_files() {
    let Served {
        hydra,
        _dir,
        path,
        server,
        check,
        reader,
    } = served_from_a_file().await;
    assert_eq!(status(&check, &reader).await, 200);

    write_config(&path, &hydra.introspection_url(), "admin", "");
    server.live.reload_file(&path).expect("valid reload");
    assert_eq!(status(&check, &reader).await, 403, "new rules in force");

    std::fs::write(&path, "[[rules]]\nid = \"x\"\npath = \"no-slash\"\n").expect("write");
    let err = server.live.reload_file(&path).expect_err("invalid file").to_string();
    assert!(err.contains("rules[0].path"), "{err}");
    std::fs::write(&path, "not = [valid toml").expect("write");
    assert!(server.live.reload_file(&path).is_err());
    // An empty file parses as all defaults (no rules): what a reader sees
    // mid-rewrite, never applied.
    for empty in ["", " \n\t\n"] {
        std::fs::write(&path, empty).expect("write");
        let err = server.live.reload_file(&path).expect_err("empty file").to_string();
        assert!(err.contains("is empty"), "{err}");
    }
    assert_eq!(
        status(&check, &reader).await,
        403,
        "the running config survived both bad files"
    );

    let scrape = support::scrape_parsed(server.http_addr).await;
    let reloads = |result| metric(&scrape, "hydra_authz_config_reloads_total", &[("result", result)]);
    assert_eq!(reloads("success"), 1.0);
    assert_eq!(reloads("error"), 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_in_flight_are_unaffected_by_reloads() {
    let hydra = FakeHydra::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    write_config(&path, &hydra.introspection_url(), "read_date", "");
    let server = start_authz(&hydra_authz::config::Config::load(&path).expect("config")).await;
    let check = Checker::connect(server.grpc_addr).await;
    let tokens: Vec<String> = (0..60)
        .map(|_| hydra.issuer.mint("reader", &["read_date"]).expect("mint"))
        .collect();
    hydra.set_fault(Fault::Delay(Duration::from_millis(50)));

    let mut flights = Vec::new();
    for t in tokens {
        let c = check.clone();
        flights.push(tokio::spawn(async move { status(&c, &t).await }));
    }
    // Reload repeatedly while they run: rules-only changes and an [introspection] change.
    for i in 0..20 {
        let timeout = if i % 2 == 0 {
            "timeout_ms = 800"
        } else {
            "timeout_ms = 900"
        };
        write_config(&path, &hydra.introspection_url(), "read_date", timeout);
        server.live.reload_file(&path).expect("reload");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut answered = 0;
    for f in flights {
        assert_eq!(
            f.await.expect("join"),
            200,
            "no check failed or was lost during reloads"
        );
        answered += 1;
    }
    assert_eq!(answered, 60);
}

#[tokio::test]
async fn reload_keeps_the_cache_when_introspection_is_unchanged() {
    let hydra = FakeHydra::start().await;
    let mut config = config_for(&hydra.introspection_url());
    config.introspection.cache.enabled = true;
    let server = start_authz(&config).await;
    let check = Checker::connect(server.grpc_addr).await;
    let reader = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    assert_eq!(status(&check, &reader).await, 200);
    let mut same = config.clone();
    same.rules[0].id = "renamed".into();
    server.live.apply(same).expect("apply");
    assert_eq!(status(&check, &reader).await, 200);
    assert_eq!(hydra.requests(), 1, "cache kept across a rules-only reload");
}

#[tokio::test]
async fn the_binary_reloads_on_file_change_and_sighup() {
    let hydra = FakeHydra::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    let (grpc, http) = (free_port(), free_port());
    let listen = |scope: &str| {
        write_config(&path, &hydra.introspection_url(), scope, "");
        let text = std::fs::read_to_string(&path).expect("read");
        let text = text.replacen("127.0.0.1:0", &format!("127.0.0.1:{grpc}"), 1).replacen(
            "127.0.0.1:0",
            &format!("127.0.0.1:{http}"),
            1,
        );
        std::fs::write(&path, text).expect("write");
    };
    listen("read_date");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hydra-authz"))
        .arg("--config")
        .arg(&path)
        .kill_on_drop(true)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], grpc));
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let check = Checker::connect(addr).await;
    let reader = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    assert_eq!(status(&check, &reader).await, 200);

    // Edit the file: the watcher applies it.
    listen("admin");
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&check, &reader).await != 403 {
        assert!(Instant::now() < deadline, "file change not applied within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // SIGHUP reloads even an unchanged file.
    let http_addr = std::net::SocketAddr::from(([127, 0, 0, 1], http));
    let reloads = || async {
        let scrape = support::scrape_parsed(http_addr).await;
        // No sample until the first reload of that result.
        metric_opt(&scrape, "hydra_authz_config_reloads_total", &[("result", "success")]).unwrap_or(0.0)
    };
    let before = reloads().await;
    let pid = child.id().expect("pid").to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill")
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while reloads().await <= before {
        assert!(Instant::now() < deadline, "SIGHUP did not reload within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status(&check, &reader).await, 403);
    let _ = child.start_kill();
}

/// A reload is validated as it will run: the file alone may pass while,
/// with the restart-only sections put back as they run, it would not.
#[tokio::test]
async fn a_reload_is_validated_with_the_running_restart_only_sections() {
    let hydra = FakeHydra::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    let url = hydra.introspection_url();
    write_config(
        &path,
        &url,
        "read_date",
        "[forward_auth]\nuri_headers = [\"x-my-uri\"]\n",
    );
    let server = start_authz(&hydra_authz::config::Config::load(&path).expect("config")).await;
    let check = Checker::connect(server.grpc_addr).await;
    let reader = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    // Alone, valid: x-my-uri is not forward-auth's in this file. As it
    // would run ([forward_auth] needs a restart), one header told two things.
    write_config(
        &path,
        &url,
        "admin",
        "[headers.claims]\n\"x-my-uri\" = \"ext.tenant\"\n",
    );
    hydra_authz::config::Config::load(&path).expect("valid alone");
    let err = server.live.reload_file(&path).expect_err("refused as it would run");
    assert!(err.to_string().contains("sets for the upstream"), "{err}");
    assert_eq!(status(&check, &reader).await, 200, "the running rules stay");
}

/// A section read only at start ([server], [forward_auth], ...) changed in
/// the file is not recorded as applied: the running config keeps the
/// section as it runs (so every later reload still warns), while the rest
/// of the same file is applied.
#[tokio::test]
async fn restart_only_sections_are_not_recorded_as_applied() {
    let Served {
        hydra: _hydra,
        _dir,
        path,
        server,
        check,
        reader,
    } = served_from_a_file().await;
    let started = server.live.running_config();

    let text = std::fs::read_to_string(&path).expect("read");
    let text = text.replace("[server]\n", "[server]\nshutdown_delay_ms = 4321\n");
    let text = text.replace("scopes = [\"read_date\"]", "scopes = [\"admin\"]");
    std::fs::write(&path, &text).expect("write");
    for _ in 0..2 {
        server.live.reload_file(&path).expect("reload");
        let running = server.live.running_config();
        assert_eq!(running.server, started.server, "[server] stays as it runs");
        let on_disk = hydra_authz::config::Config::load(&path).expect("config");
        assert_eq!(
            hydra_authz::server::reload::restart_only_changes(&running, &on_disk),
            ["[server]"],
            "still pending on the next reload"
        );
    }
    assert_eq!(
        status(&check, &reader).await,
        403,
        "the rules of the same file are in force"
    );
}

/// The gRPC listener's request timeout is built at start from the retry
/// budget: a reload that raises the budget past it is refused (checks
/// would otherwise end as CANCELLED), one that lowers it applies, and the
/// server keeps answering with what runs.
#[tokio::test]
async fn a_reload_may_not_raise_the_retry_budget_past_the_listener_timeout() {
    let hydra = FakeHydra::start().await;
    let config = config_for(&hydra.introspection_url());
    let started = config.introspection.resilience.retry_budget_ms;
    let server = start_authz(&config).await;
    let check = Checker::connect(server.grpc_addr).await;
    let reader = hydra.issuer.mint("reader", &["read_date"]).expect("mint");

    let mut longer = config.clone();
    longer.introspection.resilience.retry_budget_ms = started * 4;
    let err = server.live.apply(longer).expect_err("refused").to_string();
    assert!(err.contains("needs a restart"), "{err}");
    assert_eq!(
        server.live.running_config().introspection.resilience.retry_budget_ms,
        started
    );

    let mut shorter = config.clone();
    shorter.introspection.resilience.retry_budget_ms = started / 2;
    server.live.apply(shorter).expect("a lower budget applies");
    assert_eq!(
        server.live.running_config().introspection.resilience.retry_budget_ms,
        started / 2
    );
    // Back up to the budget the listener was built for: still allowed.
    server.live.apply(config.clone()).expect("the start budget applies");
    assert_eq!(status(&check, &reader).await, 200);
}
