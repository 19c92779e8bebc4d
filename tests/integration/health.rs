//! `hydra-authz health`, run as the real binary because it is the container
//! image's HEALTHCHECK: exit 0 against a ready server, 1 with a one-line
//! reason when nothing (or something that is not ready) answers.

use crate::support::free_port;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hydra-authz");

/// The shipped config with the gRPC listener on `grpc` and the HTTP listener on `http_addr`.
fn config(dir: &tempfile::TempDir, grpc: u16, http_addr: &str) -> PathBuf {
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/hydra-authz.toml")).expect("read");
    assert!(
        shipped.contains("\"127.0.0.1:9192\""),
        "shipped config binds 127.0.0.1:9192"
    );
    let text = shipped
        .replace("127.0.0.1:9191", &format!("127.0.0.1:{grpc}"))
        .replace("\"127.0.0.1:9192\"", &format!("\"{http_addr}\""));
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).expect("write");
    path
}

/// The command without any HYDRA_AUTHZ_* from the test's environment, which
/// would override the config under test.
fn command(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("HYDRA_AUTHZ_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

async fn health(args: &[&str]) -> Output {
    let mut full = vec!["health"];
    full.extend_from_slice(args);
    command(&full).output().await.expect("run hydra-authz health")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit 1 and exactly one line on stderr that contains every one of `needles`.
fn assert_unhealthy(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} in {err}");
    }
}

#[tokio::test]
async fn health_exits_zero_against_a_ready_server() {
    let (grpc, http) = (free_port(), free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config(&dir, grpc, &format!("127.0.0.1:{http}"));
    let path = path.to_str().expect("utf-8 path");
    let mut server = command(&["--config", path])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start hydra-authz");

    // Ready by an independent client first, so a failure below is the
    // health command's, not a slow start's.
    crate::support::wait_ready(&mut server, http, String::new).await;
    let readyz = format!("http://127.0.0.1:{http}/readyz");

    let out = health(&["--config", path]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        out.stderr.is_empty() && out.stdout.is_empty(),
        "quiet when healthy: {}",
        stderr(&out)
    );
    let out = health(&["--url", &readyz]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Any answer but 200 is unhealthy: here a 404 from the same server.
    let out = health(&["--url", &format!("http://127.0.0.1:{http}/nope")]).await;
    assert_unhealthy(&out, &["/nope", "HTTP 404"]);

    let status = crate::support::sigterm_and_wait(&mut server, Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn health_exits_one_with_a_reason_when_nothing_listens_or_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing listens on a port just released; a wildcard bind in the config
    // is probed on the loopback of its family.
    let port = free_port();
    let v4 = config(&dir, free_port(), &format!("0.0.0.0:{port}"));
    let out = health(&["--config", v4.to_str().expect("utf-8")]).await;
    assert_unhealthy(&out, &[&format!("http://127.0.0.1:{port}/readyz"), "refused"]);
    let v6 = config(&dir, free_port(), &format!("[::]:{port}"));
    let out = health(&["--config", v6.to_str().expect("utf-8")]).await;
    assert_unhealthy(&out, &[&format!("http://[::1]:{port}/readyz")]);

    // Accepts connections (the kernel completes the handshake) but never
    // answers: the probe gives up after its own short timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/readyz", silent.local_addr().expect("addr"));
    let started = Instant::now();
    let out = health(&["--url", &url]).await;
    assert_unhealthy(&out, &[&url, "timed out"]);
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    drop(silent);

    let out = health(&["--url", "not a url"]).await;
    assert_unhealthy(&out, &["is not a URL"]);
    let out = health(&["--config", "/nonexistent/hydra-authz.toml"]).await;
    assert_unhealthy(&out, &["/nonexistent/hydra-authz.toml"]);
}
