//! Issue 12, against the running server: callers that cancel, pick absurd or
//! tiny deadlines, open connections and say nothing (or say it slowly), and
//! reach for the admin API; then requests spelled to slip past a rule. Each
//! case shows the exact answer and that the service still serves afterwards.

use crate::support;

use futures_util::StreamExt as _;
use hydra_authz::admin_proto::admin_client::AdminClient;
use hydra_authz::admin_proto::{PurgeAllRequest, PurgeTokenRequest};
use hydra_authz::config::Config;
use std::time::Duration;
use support::hydra::{FakeHydra, Fault};
use support::{bearer, check_request, Answer, Checker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn setup(f: impl FnOnce(&mut Config)) -> (FakeHydra, hydra_authz::server::RunningServer, Checker) {
    support::authz_on_fake_hydra(f).await
}

async fn status(check: &Checker, method: &str, path: &str, token: &str) -> i32 {
    Answer::of(&check.check(method, path, &[("authorization", &bearer(token))]).await).http_status
}

/// `hydra_authz_request_bodies_refused_total` as (`budget`, `too_large`).
async fn bodies_refused(server: &hydra_authz::server::RunningServer) -> (f64, f64) {
    let scrape = support::scrape_parsed(server.http_addr).await;
    let counted = |kind| support::metric(&scrape, "hydra_authz_request_bodies_refused_total", &[("kind", kind)]);
    (counted("budget"), counted("too_large"))
}

async fn readyz(server: &hydra_authz::server::RunningServer) -> (u16, String) {
    let r = reqwest::get(format!("http://{}/readyz", server.http_addr))
        .await
        .expect("readyz");
    (r.status().as_u16(), r.text().await.expect("body"))
}

/// A Check whose client gives up after `after` (the future is dropped, so
/// the HTTP/2 stream is reset and the server drops the check where it is).
async fn cancelled_check(check: &Checker, token: &str, after: Duration) {
    let _ = tokio::time::timeout(after, check.check("GET", "/date", &[("authorization", &bearer(token))])).await;
}

// ---- Availability -------------------------------------------------------

/// Checks cancelled while queued for an introspection slot: before the fix
/// each leaked a queue place, and after `max_waiting` of them every
/// uncached check was shed with 503, forever.
#[tokio::test]
async fn checks_cancelled_while_queued_leave_nothing_behind() {
    let (hydra, server, check) = setup(|c| {
        c.introspection.resilience.max_concurrent = 1;
        c.introspection.resilience.max_waiting = 2;
        c.introspection.timeout_ms = 2_000;
        c.introspection.resilience.retry_budget_ms = 2_000;
    })
    .await;
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    hydra.set_fault(Fault::Delay(Duration::from_millis(400)));
    // One check holds the only slot (a different token: no single-flight).
    let holder = {
        let check = check.clone();
        let other = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
        tokio::spawn(async move { status(&check, "GET", "/date", &other).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..6 {
        let t = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
        cancelled_check(&check, &t, Duration::from_millis(30)).await;
    }
    assert_eq!(holder.await.expect("holder"), 200);
    hydra.set_fault(Fault::None);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (code, body) = readyz(&server).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("checks queued: 0") && body.contains("introspections in flight: 0"),
        "{body}"
    );
    assert_eq!(status(&check, "GET", "/date", &token).await, 200, "not shed");
}

/// The half-open probe cancelled mid-introspection: before the fix the
/// probe flag stayed set and the circuit never closed again.
#[tokio::test]
async fn a_cancelled_probe_lets_the_circuit_close() {
    let (hydra, server, check) = setup(|c| {
        c.introspection.resilience.breaker_failures = 2;
        c.introspection.resilience.breaker_cooldown_ms = 200;
        c.introspection.resilience.max_retries = 0;
        c.introspection.resilience.retry_budget_ms = 2_000;
        c.introspection.timeout_ms = 2_000;
    })
    .await;
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    hydra.set_fault(Fault::Status(500, None));
    for _ in 0..2 {
        assert_eq!(status(&check, "GET", "/date", &token).await, 503);
    }
    assert!(readyz(&server).await.1.contains("circuit: open"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    hydra.set_fault(Fault::Delay(Duration::from_millis(500)));
    cancelled_check(&check, &token, Duration::from_millis(50)).await; // the probe
    hydra.set_fault(Fault::None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        status(&check, "GET", "/date", &token).await,
        200,
        "the next probe closes it"
    );
    let (code, body) = readyz(&server).await;
    assert_eq!(code, 200);
    assert!(body.contains("circuit: closed"), "{body}");
}

/// A burst of checks with a 1 ms grpc-timeout against a slow Hydra: the
/// caller's deadline is not Hydra's failure, so the breaker stays closed.
#[tokio::test]
async fn tiny_caller_deadlines_leave_the_breaker_closed() {
    let (hydra, server, check) = setup(|c| {
        c.introspection.resilience.breaker_failures = 3;
        c.introspection.resilience.max_retries = 0;
    })
    .await;
    hydra.set_fault(Fault::Delay(Duration::from_millis(50)));
    for _ in 0..20 {
        let t = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
        let mut req = tonic::Request::new(check_request("GET", "/date", &[("authorization", &bearer(&t))], &[]));
        req.metadata_mut().insert("grpc-timeout", "1m".parse().expect("value"));
        // Either our 503 or tonic's own deadline answer: never an allow.
        if let Ok(r) = check.request(req).await {
            assert_ne!(Answer::of(&r).http_status, 200);
        }
    }
    hydra.set_fault(Fault::None);
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    assert_eq!(status(&check, "GET", "/date", &token).await, 200);
    let scrape = support::scrape_parsed(server.http_addr).await;
    assert_eq!(support::metric(&scrape, "hydra_authz_circuit_open", &[]), 0.0);
}

/// grpc-timeout values that are not gRPC timeouts are ignored (our own
/// budget applies), never a panic.
#[tokio::test]
async fn absurd_grpc_timeouts_are_answered() {
    let (hydra, _server, check) = setup(|_| {}).await;
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    for value in [
        "18446744073709551615S",
        "99999999H",
        "123456789m",
        "1.5S",
        "-1m",
        "S",
        "10x",
    ] {
        let mut req = tonic::Request::new(check_request(
            "GET",
            "/date",
            &[("authorization", &bearer(&token))],
            &[],
        ));
        req.metadata_mut().insert("grpc-timeout", value.parse().expect("value"));
        let r = check.request(req).await.expect("answered");
        assert_eq!(Answer::of(&r).http_status, 200, "{value}");
    }
    assert_eq!(status(&check, "GET", "/date", &token).await, 200);
}

/// Reads until the peer closes (Ok(0) or an error); false if still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

fn tight_limits(c: &mut Config) {
    c.server.limits.header_read_timeout_ms = 300;
    c.server.limits.idle_timeout_ms = 1_000;
    c.server.limits.grpc_keepalive_interval_ms = 300;
    c.server.limits.grpc_keepalive_timeout_ms = 300;
}

/// Silent connections are closed on every listener (Check, admin, HTTP),
/// and a half-sent HTTP request (slowloris) too; the server still serves.
#[tokio::test]
async fn silent_and_slow_connections_are_closed_on_every_listener() {
    let (hydra, server, check) = setup(tight_limits).await;
    let admin = server.admin_addr.expect("admin on");
    for (name, addr) in [("grpc", server.grpc_addr), ("admin", admin), ("http", server.http_addr)] {
        let mut silent = TcpStream::connect(addr).await.expect("connect");
        assert!(
            closed_within(&mut silent, Duration::from_secs(3)).await,
            "{name}: silent connection kept open"
        );
    }
    let mut slow = TcpStream::connect(server.http_addr).await.expect("connect");
    slow.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    assert!(
        closed_within(&mut slow, Duration::from_secs(3)).await,
        "half-sent request kept open"
    );
    // A gRPC client that sent part of the preface and stalled.
    let mut stalled = TcpStream::connect(server.grpc_addr).await.expect("connect");
    stalled.write_all(b"PRI * HTTP/2.0\r\n").await.expect("write");
    assert!(
        closed_within(&mut stalled, Duration::from_secs(5)).await,
        "stalled preface kept open"
    );
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    assert_eq!(status(&check, "GET", "/date", &token).await, 200);
}

/// One keep-alive HTTP/1 request on a raw connection; returns the status line.
async fn http_request(stream: &mut TcpStream, path: &str) -> String {
    try_http_request(stream, path).await.expect("request")
}

/// [`http_request`], with a connection the server closed or reset as an error.
async fn try_http_request(stream: &mut TcpStream, path: &str) -> std::io::Result<String> {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await?;
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await?;
    Ok(String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned())
}

/// At `max_connections`, a new connection waits until one closes; an idle
/// connection is closed after `idle_timeout_ms`.
#[tokio::test]
async fn connection_limit_and_idle_timeout() {
    let (_hydra, server, _check) = setup(|c| {
        tight_limits(c);
        c.server.limits.max_connections = 2;
    })
    .await;
    let mut a = TcpStream::connect(server.http_addr).await.expect("a");
    let mut b = TcpStream::connect(server.http_addr).await.expect("b");
    assert!(http_request(&mut a, "/healthz").await.contains("200"));
    assert!(http_request(&mut b, "/healthz").await.contains("200"));
    let mut c = TcpStream::connect(server.http_addr).await.expect("c (in the backlog)");
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 1024];
    assert!(
        tokio::time::timeout(Duration::from_millis(200), c.read(&mut buf))
            .await
            .is_err(),
        "a third connection is not served while two are open"
    );
    drop(a);
    let n = tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf))
        .await
        .expect("served once a connection closed")
        .expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // b has been idle since its request: closed after idle_timeout_ms.
    assert!(
        closed_within(&mut b, Duration::from_secs(3)).await,
        "idle connection kept open"
    );
}

/// A peer outside `forward_auth.trusted_proxies` (only ever answered 400)
/// holds at most a few connections to the forward-auth port, so it cannot
/// hold the listener's memory in unfinished request heads; a trusted proxy,
/// which carries every client's checks, is not capped.
#[tokio::test]
async fn an_untrusted_peer_holds_few_forward_auth_connections() {
    let (_hydra, server, _check) = setup(|c| {
        c.forward_auth.addr = Some(support::lo0());
        c.forward_auth.trusted_proxies = vec!["127.0.0.2/32".parse().expect("net")];
    })
    .await;
    let addr = server.forward_auth_addr.expect("forward-auth on");
    let from = |ip: [u8; 4]| async move {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(std::net::SocketAddr::from((ip, 0)))
            .expect("bind a loopback address");
        socket.connect(addr).await.expect("connect")
    };
    let cap = hydra_authz::server::UNTRUSTED_FORWARD_AUTH_CONNECTIONS;
    for (ip, want) in [([127, 0, 0, 1], cap), ([127, 0, 0, 2], cap + 4)] {
        let mut held = Vec::new();
        for _ in 0..cap + 4 {
            held.push(from(ip).await);
        }
        let mut answered = 0;
        for conn in &mut held {
            let r = tokio::time::timeout(Duration::from_secs(2), try_http_request(conn, "/forward-auth")).await;
            if matches!(r, Ok(Ok(ref line)) if line.starts_with("HTTP/1.1 4")) {
                answered += 1;
            }
        }
        assert_eq!(answered, want, "{ip:?}");
    }
}

/// One peer holding connections to the probe port cannot take them all:
/// past `http_max_connections_per_peer` its connections are closed at once,
/// and the kubelet (another address; 127.0.0.2 is loopback too) is served.
#[tokio::test]
async fn one_peer_cannot_hold_every_probe_connection() {
    let (_hydra, server, check) = setup(|c| {
        c.server.limits.max_connections = 6;
        c.server.limits.http_max_connections_per_peer = 4;
    })
    .await;
    let from = |ip: [u8; 4]| async move {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(std::net::SocketAddr::from((ip, 0)))
            .expect("bind a loopback address");
        socket.connect(server.http_addr).await.expect("connect")
    };
    // The flood: every connection it can get, each kept alive.
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(from([127, 0, 0, 1]).await);
    }
    // Whether /healthz is answered 200 on `conn`; a connection past the
    // cap was closed (or reset) by the server: false, not a panic.
    async fn healthy(conn: &mut TcpStream) -> bool {
        let status = tokio::time::timeout(Duration::from_secs(2), try_http_request(conn, "/healthz")).await;
        matches!(status, Ok(Ok(ref r)) if r.starts_with("HTTP/1.1 200"))
    }
    let mut served = 0;
    for conn in &mut held {
        if healthy(conn).await {
            served += 1;
        }
    }
    assert_eq!(served, 4, "one address holds at most its share");
    // The kubelet, from another address: served at once, twice.
    for _ in 0..2 {
        let mut probe = from([127, 0, 0, 2]).await;
        let r = tokio::time::timeout(Duration::from_secs(2), http_request(&mut probe, "/readyz"))
            .await
            .expect("the probe is served while one peer floods");
        assert!(r.contains("200"), "{r}");
    }
    // The flood's share comes back as its connections close.
    // (The server sees the closes a moment later: asked again until then.)
    drop(held);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        if healthy(&mut from([127, 0, 0, 1]).await).await {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not served after its connections closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = Answer::of(&check.check("GET", "/date", &[]).await);
    assert_eq!(answer.http_status, 401, "still serving checks");
}

// ---- The admin API --------------------------------------------------------

/// The admin token file is re-read while serving: after a rotation (a new
/// Secret, no restart) the old token is refused and the new one works; a
/// file that then holds too short a token keeps the current one.
#[tokio::test]
async fn a_rotated_admin_token_replaces_the_old_one() {
    let (_hydra, server, _check) = setup(|c| c.server.tls.reload_interval_ms = 100).await;
    let admin = server.admin_addr.expect("admin on");
    let with = move |token: &'static str| async move {
        AdminClient::with_interceptor(support::channel(admin).await, move |mut r: tonic::Request<()>| {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().expect("value"));
            Ok(r)
        })
        .purge_all(PurgeAllRequest {})
        .await
        .map(|_| ())
        .map_err(|e| e.code())
    };
    const NEW: &str = "a-rotated-admin-token-0123456789";
    assert_eq!(with(support::ADMIN_TOKEN).await, Ok(()));
    assert_eq!(with(NEW).await, Err(tonic::Code::Unauthenticated));
    let file = server
        .live
        .running_config()
        .server
        .admin_token_file
        .expect("token file");
    std::fs::write(&file, format!("{NEW}\n")).expect("rotate");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while with(NEW).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "the new token never took effect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(with(support::ADMIN_TOKEN).await, Err(tonic::Code::Unauthenticated));
    // Too short to serve with: the current token stays.
    std::fs::write(&file, "short").expect("write");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(with(NEW).await, Ok(()));
    assert_eq!(with("short").await, Err(tonic::Code::Unauthenticated));
}

/// Not on the Check port at all; on its own port only with the token.
#[tokio::test]
async fn admin_api_needs_its_own_port_and_credentials() {
    let (hydra, server, check) = setup(|c| c.introspection.cache.enabled = true).await;
    let on_check_port = AdminClient::new(support::channel(server.grpc_addr).await)
        .purge_all(PurgeAllRequest {})
        .await;
    assert_eq!(
        on_check_port.expect_err("not served on the Check port").code(),
        tonic::Code::Unimplemented
    );
    let admin = server.admin_addr.expect("admin on");
    let anonymous = AdminClient::new(support::channel(admin).await)
        .purge_all(PurgeAllRequest {})
        .await;
    assert_eq!(anonymous.expect_err("no token").code(), tonic::Code::Unauthenticated);
    let wrong = AdminClient::with_interceptor(support::channel(admin).await, |mut r: tonic::Request<()>| {
        r.metadata_mut()
            .insert("authorization", "Bearer not-the-token".parse().expect("value"));
        Ok(r)
    })
    .purge_token(PurgeTokenRequest {
        target: Some(hydra_authz::admin_proto::purge_token_request::Target::Fingerprint(
            "00000000".into(),
        )),
    })
    .await;
    assert_eq!(wrong.expect_err("wrong token").code(), tonic::Code::Unauthenticated);
    support::admin(&server)
        .await
        .purge_all(PurgeAllRequest {})
        .await
        .expect("with the token");
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    assert_eq!(status(&check, "GET", "/date", &token).await, 200);
}

#[tokio::test]
async fn admin_api_is_off_without_credentials() {
    let (_hydra, server, _check) = setup(|c| {
        c.server.admin_token_file = None;
        c.server.admin_token_env = None;
    })
    .await;
    assert_eq!(server.admin_addr, None);
}

// ---- Canonical forms ---------------------------------------------------------

#[tokio::test]
async fn method_and_host_spellings_never_skip_a_rule() {
    let (hydra, _server, check) = setup(support::guarded_rules).await;
    let reader = bearer(&hydra.issuer.mint("reader", &["read_date"]).expect("mint"));
    let ask = |method: &'static str, host: &'static str, path: &'static str| {
        let check = check.clone();
        let reader = reader.clone();
        async move {
            let req = support::check_request_on_host(method, host, path, &[("authorization", &reader)]);
            Answer::of(&check.raw(req).await)
        }
    };
    let a = ask("DELETE", "api.local", "/items/1").await;
    assert_eq!(a.http_status, 403);
    assert_eq!(a.problem()["type"], "urn:hydra-authz:problem:insufficient_scope");
    // Other spellings never reach the weaker catch-all (nor an Envoy route's own policy).
    for method in ["delete", "Delete", "get"] {
        let a = ask(method, "api.local", "/items/1").await;
        assert_eq!(a.http_status, 400, "{method}");
        assert_eq!(a.problem()["type"], "urn:hydra-authz:problem:bad_request", "{method}");
    }
    assert_eq!(ask("GET", "api.local", "/items/1").await.http_status, 200);
    for host in [
        "admin.example.com",
        "ADMIN.Example.com",
        "admin.example.com.",
        "admin.example.com:8443",
        "Admin.Example.COM.:443",
    ] {
        let a = ask("GET", host, "/date").await;
        assert_eq!(a.http_status, 403, "{host}: the admin-date rule applies");
    }
    assert_eq!(ask("GET", "api.example.com", "/date").await.http_status, 200);
    for (method, host) in [
        ("GE T", "api.local"),
        ("GET\r\n", "api.local"),
        ("GET", "a b"),
        ("GET", "x\ny"),
    ] {
        let a = ask(method, host, "/date").await;
        assert_eq!(a.http_status, 400, "{method:?} {host:?}");
        assert_eq!(a.problem()["type"], "urn:hydra-authz:problem:bad_request");
    }
    assert_eq!(ask("GET", "api.local", "/date").await.http_status, 200, "still serving");
}

/// Three ways a request could be matched under one rule and served by
/// another route: a host name in IPv6 brackets (read as the name inside
/// before), a HEAD past a GET rule (frameworks answer HEAD with the GET
/// handler), a leading `//` merged away (some upstream parsers read
/// `//x/admin` as host x). Each gets the stricter answer, on the gRPC door.
#[tokio::test]
async fn brackets_head_and_double_slashes_never_steer_a_request_past_its_rule() {
    let (hydra, _server, check) = setup(|c| {
        let rule = |id: &str, host: Option<&str>, methods: &[&str], path: &str, scopes: &[&str], public: bool| {
            hydra_authz::config::RuleConfig {
                id: id.into(),
                host: host.map(str::to_owned),
                methods: methods.iter().map(|m| m.to_string()).collect(),
                path: path.into(),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                public,
                ..Default::default()
            }
        };
        c.rules = vec![
            rule("status", Some("status.example.com"), &[], "/**", &[], true),
            rule("export", None, &["GET"], "/export/**", &["admin"], false),
            rule("files", None, &[], "/files/**", &[], true),
            rule("rest", None, &[], "/**", &["read_date"], false),
        ];
    })
    .await;
    let reader = bearer(&hydra.issuer.mint("reader", &["read_date"]).expect("mint"));
    let ask = |method: &'static str, host: &'static str, path: &'static str, token: bool| {
        let check = check.clone();
        let reader = reader.clone();
        async move {
            let headers: Vec<(&str, &str)> = if token {
                vec![("authorization", &reader)]
            } else {
                vec![]
            };
            let req = support::check_request_on_host(method, host, path, &headers);
            Answer::of(&check.raw(req).await)
        }
    };
    // The status host is public; its name in brackets is no host at all.
    assert_eq!(
        ask("GET", "status.example.com:443", "/admin", false).await.http_status,
        200
    );
    for host in [
        "[status.example.com]",
        "[status.example.com]:443",
        "[::1]junk",
        "a:b:80",
        "api:x",
    ] {
        let a = ask("GET", host, "/admin", false).await;
        assert_eq!(a.http_status, 400, "{host}");
        assert_eq!(a.problem()["type"], "urn:hydra-authz:problem:bad_request", "{host}");
        assert_eq!(a.problem()["detail"], "the host is not a valid host name", "{host}");
    }
    // A real IPv6 literal is a host no host pattern names: the host-less rules.
    assert_eq!(ask("GET", "[::1]:8080", "/admin", false).await.http_status, 401);
    assert_eq!(ask("GET", "[::1]:8080", "/admin", true).await.http_status, 200);
    // HEAD meets the GET rule (403 for the reader), not the catch-all (200).
    for method in ["GET", "HEAD"] {
        let a = ask(method, "api.local", "/export/all", true).await;
        assert_eq!(a.http_status, 403, "{method}");
        assert_eq!(a.problem()["type"], "urn:hydra-authz:problem:insufficient_scope");
    }
    assert_eq!(ask("POST", "api.local", "/export/all", true).await.http_status, 200);
    // `//files/admin/...` is not `/files/admin/...` (public).
    for path in ["//files/admin/users", "//", "///files"] {
        let a = ask("GET", "api.local", path, false).await;
        assert_eq!(a.http_status, 400, "{path}");
        assert_eq!(a.problem()["detail"], "the path must not start with '//'", "{path}");
    }
    assert_eq!(ask("GET", "api.local", "/files//admin", false).await.http_status, 200);
    // No HTTP request at all (only a direct caller can send that), with a
    // route policy saying public: refused, not allowed for nothing.
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
    let bare = CheckRequest {
        attributes: Some(AttributeContext {
            context_extensions: [("public".to_string(), "true".to_string())].into(),
            ..Default::default()
        }),
    };
    let a = Answer::of(&check.raw(bare).await);
    assert_eq!(a.http_status, 400, "{}", a.body);
    assert_eq!(a.problem()["type"], "urn:hydra-authz:problem:bad_request");
    assert_eq!(
        ask("GET", "api.local", "/files/admin", false).await.http_status,
        200,
        "still serving"
    );
}

/// One byte, then silence, on the Check port: closed within the
/// header-read timeout (the whole HTTP/2 preface must arrive), not held
/// until the idle timeout; a non-HTTP/2 greeting is closed at once.
#[tokio::test]
async fn a_partial_http2_preface_does_not_hold_a_connection() {
    let (hydra, server, check) = setup(|c| {
        c.server.limits.header_read_timeout_ms = 300;
        c.server.limits.idle_timeout_ms = 30_000;
    })
    .await;
    let mut one_byte = TcpStream::connect(server.grpc_addr).await.expect("connect");
    one_byte.write_all(b"P").await.expect("write");
    assert!(
        closed_within(&mut one_byte, Duration::from_secs(3)).await,
        "held past header_read_timeout_ms"
    );
    let mut http1 = TcpStream::connect(server.grpc_addr).await.expect("connect");
    http1.write_all(b"GET / HTTP/1.1\r\n\r\n").await.expect("write");
    assert!(
        closed_within(&mut http1, Duration::from_secs(1)).await,
        "not HTTP/2: refused"
    );
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    assert_eq!(status(&check, "GET", "/date", &token).await, 200);
}

/// A CheckRequest far beyond any real one is refused before it is decoded
/// (tonic's default would take 4 MiB per message, 1,024 per connection).
#[tokio::test]
async fn oversized_check_messages_are_refused() {
    let (hydra, _server, check) = setup(|_| {}).await;
    let big = "x".repeat(300 * 1024);
    let req = tonic::Request::new(check_request("GET", "/date", &[("x-big", &big)], &[]));
    let err = check.request(req).await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    assert_eq!(status(&check, "GET", "/date", &token).await, 200);
}

/// Bytes Envoy's message types cannot hold (their strings are Rust
/// `String`s), sent as the server reads them: our view of the request.
async fn check_wire(
    addr: std::net::SocketAddr,
    method: &[u8],
    path: &[u8],
    headers: &[(&[u8], &[u8])],
) -> Result<envoy_types::ext_authz::v3::pb::CheckResponse, tonic::Status> {
    use hydra_authz::extract::envoy_wire as w;
    let request = w::CheckRequest::with_http(method, b"api.local", path, headers);
    let mut grpc = tonic::client::Grpc::new(support::channel(addr).await);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/envoy.service.auth.v3.Authorization/Check");
    let codec = tonic_prost::ProstCodec::<w::CheckRequest, envoy_types::ext_authz::v3::pb::CheckResponse>::default();
    grpc.unary(tonic::Request::new(request), path, codec)
        .await
        .map(tonic::Response::into_inner)
}

/// Bytes that are not UTF-8 where Envoy's proto says `string`: a refusal
/// with its reason where we read them, ignored where we do not (as the
/// HTTP front door ignores such a header), never a failed RPC that a
/// `failure_mode_allow` Envoy would let through.
#[tokio::test]
async fn request_bytes_that_are_not_text() {
    let (hydra, server, check) = setup(|_| {}).await;
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    let auth = bearer(&token);
    let auth: (&[u8], &[u8]) = (b"authorization", auth.as_bytes());
    let answer = |r: Result<_, tonic::Status>| {
        let r = r.expect("answered, not an RPC error");
        let a = Answer::of(&r);
        (a.grpc_code, a.http_status, a.body)
    };
    for (method, path) in [(&b"GET"[..], &b"/date\xff"[..]), (b"G\xe9T", b"/date")] {
        let (grpc, http, body) = answer(check_wire(server.grpc_addr, method, path, &[auth]).await);
        assert_eq!((grpc, http), (3, 400), "{body}");
        assert!(body.contains("not valid text"), "{body}");
    }
    let (grpc, http, body) = answer(
        check_wire(
            server.grpc_addr,
            b"GET",
            b"/date",
            &[(b"authorization", b"Bearer \xff\xfe")],
        )
        .await,
    );
    assert_eq!((grpc, http), (3, 400), "{body}");
    assert!(
        body.contains("problem:invalid_request") && body.contains("not valid text"),
        "{body}"
    );
    let (grpc, http, _) =
        answer(check_wire(server.grpc_addr, b"GET", b"/date", &[auth, (b"x-latin-1", b"caf\xe9")]).await);
    assert_eq!(
        (grpc, http),
        (0, 200),
        "an unread header that is not text does not matter"
    );
    assert_eq!(status(&check, "GET", "/date", &token).await, 200);
}

/// A Check whose body never comes (the stream stays open with nothing
/// sent; a peer could also hold a half-sent message and the buffer it
/// fills) ends at the request timeout, headers' time plus the check's
/// budget, instead of holding its stream and memory for the life of the
/// connection; and a gRPC health request is held to a service name's size
/// (tonic's default 4 MiB per message, 1,024 streams a connection).
#[tokio::test]
async fn a_grpc_request_that_never_finishes_is_cut_and_health_messages_are_small() {
    let (hydra, server, check) = setup(|c| {
        c.server.limits.header_read_timeout_ms = 400;
        c.introspection.resilience.retry_budget_ms = 300;
    })
    .await;
    let channel = support::channel(server.grpc_addr).await;
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/envoy.service.auth.v3.Authorization/Check");
    let codec = tonic_prost::ProstCodec::<
        envoy_types::ext_authz::v3::pb::CheckRequest,
        envoy_types::ext_authz::v3::pb::CheckResponse,
    >::default();
    let never = futures_util::stream::pending::<envoy_types::ext_authz::v3::pb::CheckRequest>();
    let started = std::time::Instant::now();
    let got = tokio::time::timeout(
        Duration::from_secs(10),
        grpc.client_streaming(tonic::Request::new(never), path, codec),
    )
    .await
    .expect("the server ends the stalled request itself");
    let err = got.expect_err("no answer to a request that never came");
    assert_eq!(err.code(), tonic::Code::Cancelled, "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(600), "not before its time");

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .expect("health answers");
    assert_eq!(serving.get_ref().status, 1, "SERVING");
    let err = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "x".repeat(64 * 1024),
        })
        .await
        .expect_err("a 64 KiB service name is refused");
    // By the listener's body budget (one message of at most 4 KiB per
    // body), before tonic's own message limit (OUT_OF_RANGE) would.
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    // Counted, as a body longer than one message (the health service is
    // wrapped by the same budget as Check).
    let (budget, too_large) = bodies_refused(&server).await;
    assert_eq!((too_large, budget), (1.0, 0.0));

    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    assert_eq!(status(&check, "GET", "/date", &token).await, 200, "still serving");
}

/// Streams that each send most of a large Check message and then hold it
/// cannot make the process buffer without bound: past one budget for the
/// listener (32 MiB) further streams are refused at once instead of held
/// until the request timeout, and once the held ones are cut the service
/// answers checks again.
#[tokio::test]
async fn streams_holding_partial_messages_cannot_buffer_without_bound() {
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    use tonic::codegen::{http, Bytes, Service};
    let (hydra, server, check) = setup(|c| {
        c.server.limits.header_read_timeout_ms = 1_000;
        c.introspection.resilience.retry_budget_ms = 500;
    })
    .await;
    // 200 streams x 240 KiB = 47 MiB, over the budget; each declares a
    // 250 KB message (under the 256 KiB per-message limit) and never
    // finishes it.
    const STREAMS: usize = 200;
    let mut partial = vec![0u8; 5 + 240 * 1024];
    partial[1..5].copy_from_slice(&250_000u32.to_be_bytes());
    let partial = Bytes::from(partial);
    let channel = support::channel(server.grpc_addr).await;
    let started = std::time::Instant::now();
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        let mut channel = channel.clone();
        let first = partial.clone();
        streams.push(tokio::spawn(async move {
            let frames = futures_util::stream::once(async move { Ok::<_, tonic::Status>(Frame::data(first)) })
                .chain(futures_util::stream::pending());
            let req = http::Request::builder()
                .method("POST")
                .uri("/envoy.service.auth.v3.Authorization/Check")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(tonic::body::Body::new(StreamBody::new(frames)))
                .expect("request");
            let answered = match tower::ServiceExt::ready(&mut channel).await {
                Ok(ready) => ready.call(req).await,
                Err(e) => Err(e),
            };
            let status = answered.ok().and_then(|r| {
                r.headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            });
            (started.elapsed(), status)
        }));
    }
    let mut refused_at_once = 0;
    for s in streams {
        let (after, status) = s.await.expect("join");
        // Held ones end at the request timeout (1 s + 2 x 500 ms) as CANCELLED.
        if after < Duration::from_millis(1_500) && status.as_deref().is_some_and(|c| c != "0" && c != "1") {
            refused_at_once += 1;
        }
    }
    assert!(refused_at_once > 0, "no stream was refused over the budget");
    assert!(
        refused_at_once < STREAMS,
        "streams under the budget are held, not refused"
    );
    // Each refusal fails a check closed without a decision: counted.
    let (budget, too_large) = bodies_refused(&server).await;
    assert!(
        (1.0..=STREAMS as f64).contains(&budget) && budget >= refused_at_once as f64,
        "refused {refused_at_once}, counted {budget}"
    );
    assert_eq!(too_large, 0.0);
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    assert_eq!(status(&check, "GET", "/date", &token).await, 200, "still serving");
}

/// An HTTP/1 request head larger than the connection may buffer is refused
/// (431) instead of being read to hyper's ~400 KiB default.
#[tokio::test]
async fn an_oversized_http1_head_is_refused_early() {
    let (_hydra, server, _check) = setup(|_| {}).await;
    let mut tcp = TcpStream::connect(server.http_addr).await.expect("connect");
    let mut head = String::from("GET /healthz HTTP/1.1\r\nhost: x\r\n");
    // Five headers of 60 KiB: few enough for hyper's header count, 300 KiB
    // in all (hyper checks its limit between reads, so a head up to about
    // twice it may slip through; below its own ~400 KiB default).
    for i in 0..5 {
        head.push_str(&format!("x-filler-{i}: {}\r\n", "a".repeat(60 * 1024)));
    }
    head.push_str("\r\n");
    // The server may close before reading it all; what it said first counts.
    let _ = tcp.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.200}");
    let ok = reqwest::get(format!("http://{}/healthz", server.http_addr))
        .await
        .expect("still serving");
    assert_eq!(ok.status().as_u16(), 200);
}
