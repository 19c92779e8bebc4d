//! Shared helpers for the integration tests: start hydra-authz on ephemeral
//! loopback ports, talk to it as Envoy does, and read its answers.
#![allow(dead_code)] // each test binary uses a different subset

pub mod hydra;
pub mod keys;
pub mod ory;
pub mod otlp;
pub mod pki;
pub mod proxies;
pub mod redis;
pub mod stack;

use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use hydra_authz::config::Config;
use hydra_authz::server::RunningServer;
use std::collections::HashMap;
use std::net::SocketAddr;
use tonic::transport::Channel;

pub fn lo0() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// The shipped config (seed rules), pointed at `introspection_url`, on ephemeral ports.
pub fn config_for(introspection_url: &str) -> Config {
    let mut c = Config::from_toml_str(hydra_authz::demo::DEFAULT_CONFIG).expect("shipped config is valid");
    c.introspection.url = introspection_url.to_owned();
    c.server.grpc_addr = lo0();
    c.server.http_addr = lo0();
    c.server.drain_timeout_ms = 5_000;
    enable_admin(&mut c);
    c
}

/// The admin bearer token the test configs use.
pub const ADMIN_TOKEN: &str = "test-admin-token-not-a-secret";

/// Turn the admin API on: an ephemeral loopback port, and [`ADMIN_TOKEN`]
/// from a file (as an operator would mount it).
pub fn enable_admin(c: &mut Config) {
    use std::io::Write;
    let mut f = tempfile::NamedTempFile::new().expect("token file");
    f.write_all(ADMIN_TOKEN.as_bytes()).expect("write token");
    let (_, path) = f.keep().expect("keep token file");
    c.server.admin_addr = lo0();
    c.server.admin_token_file = Some(path);
}

pub type AdminClient = hydra_authz::admin_proto::admin_client::AdminClient<
    tonic::service::interceptor::InterceptedService<
        Channel,
        fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>,
    >,
>;

fn with_admin_token(mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    let v = format!("Bearer {ADMIN_TOKEN}").parse().expect("metadata value");
    r.metadata_mut().insert("authorization", v);
    Ok(r)
}

/// A client of `server`'s admin API, with the test credentials.
pub async fn admin(server: &RunningServer) -> AdminClient {
    let addr = server.admin_addr.expect("the admin API is on in test configs");
    hydra_authz::admin_proto::admin_client::AdminClient::with_interceptor(channel(addr).await, with_admin_token as _)
}

pub async fn start_authz(config: &Config) -> RunningServer {
    hydra_authz::server::start(config).await.expect("hydra-authz starts")
}

/// A Hydra-shaped server, hydra-authz in front of it (config adjusted by
/// `f`, introspection timeout 1 s: CI machines are loaded) and a client.
pub async fn authz_on_fake_hydra(f: impl FnOnce(&mut Config)) -> (hydra::FakeHydra, RunningServer, Checker) {
    let hydra = hydra::FakeHydra::start().await;
    let mut config = config_for(&hydra.introspection_url());
    config.introspection.timeout_ms = 1_000;
    f(&mut config);
    let server = start_authz(&config).await;
    let check = Checker::connect(server.grpc_addr).await;
    (hydra, server, check)
}

/// An Envoy-like gRPC client for `Authorization/Check`.
#[derive(Clone)]
pub struct Checker(AuthorizationClient<Channel>);

impl Checker {
    pub async fn connect(addr: SocketAddr) -> Checker {
        let ch = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        Checker(AuthorizationClient::new(ch))
    }

    pub async fn check(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> CheckResponse {
        self.check_with(method, path, headers, &[]).await
    }

    pub async fn check_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        context_extensions: &[(&str, &str)],
    ) -> CheckResponse {
        self.raw(check_request(method, path, headers, context_extensions)).await
    }

    /// As [`Checker::check`], returning the RPC error instead of panicking.
    pub async fn try_check(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<CheckResponse, tonic::Status> {
        let req = check_request(method, path, headers, &[]);
        self.0.clone().check(req).await.map(tonic::Response::into_inner)
    }

    /// A Check with request metadata of the caller's choosing (grpc-timeout, ...).
    pub async fn request(&self, req: tonic::Request<CheckRequest>) -> Result<CheckResponse, tonic::Status> {
        self.0.clone().check(req).await.map(tonic::Response::into_inner)
    }

    pub async fn raw(&self, req: CheckRequest) -> CheckResponse {
        self.0
            .clone()
            .check(req)
            .await
            .expect("Check RPC succeeds")
            .into_inner()
    }
}

pub fn check_request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    context_extensions: &[(&str, &str)],
) -> CheckRequest {
    hydra_authz::extract::envoy_check_request(
        method,
        "api.local",
        path,
        headers.iter().copied(),
        context_extensions.iter().copied(),
    )
}

/// A plaintext gRPC channel to a test server.
pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

/// The server's /metrics text.
pub async fn scrape(http_addr: SocketAddr) -> String {
    reqwest::get(format!("http://{http_addr}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics body")
}

/// The server's /metrics, parsed. It is OpenMetrics text; prometheus-parse
/// reads it (`# EOF` is a comment to it, `_total` samples come out untyped).
pub async fn scrape_parsed(http_addr: SocketAddr) -> prometheus_parse::Scrape {
    parse_metrics(&scrape(http_addr).await)
}

pub fn parse_metrics(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("valid exposition format")
}

/// The first sample of `metric` carrying all of `labels`.
pub fn sample<'a>(
    s: &'a prometheus_parse::Scrape,
    metric: &str,
    labels: &[(&str, &str)],
) -> Option<&'a prometheus_parse::Value> {
    s.samples
        .iter()
        .find(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| &x.value)
}

/// A counter or gauge sample's value; `None` when there is no such sample.
pub fn metric_opt(s: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    use prometheus_parse::Value;
    match sample(s, metric, labels)? {
        Value::Counter(n) | Value::Gauge(n) | Value::Untyped(n) => Some(*n),
        other => panic!("{metric}{labels:?} is not a number: {other:?}"),
    }
}

/// As [`metric_opt`], for a sample that must exist.
pub fn metric(s: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    metric_opt(s, metric, labels).unwrap_or_else(|| panic!("no sample {metric}{labels:?}"))
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// What a CheckResponse says, flattened for assertions.
#[derive(Debug)]
pub struct Answer {
    pub grpc_code: i32,
    /// 200 on allow, else the denied HTTP status.
    pub http_status: i32,
    pub headers: HashMap<String, String>,
    pub removed: Vec<String>,
    pub body: String,
}

impl Answer {
    pub fn of(r: &CheckResponse) -> Answer {
        let grpc_code = r.status.as_ref().map_or(-1, |s| s.code);
        match &r.http_response {
            Some(HttpResponse::OkResponse(ok)) => Answer {
                grpc_code,
                http_status: 200,
                headers: ok
                    .headers
                    .iter()
                    .filter_map(|h| h.header.as_ref().map(|hv| (hv.key.clone(), hv.value.clone())))
                    .collect(),
                removed: ok.headers_to_remove.clone(),
                body: String::new(),
            },
            Some(HttpResponse::DeniedResponse(d)) => Answer {
                grpc_code,
                http_status: d.status.as_ref().map_or(-1, |s| s.code),
                headers: d
                    .headers
                    .iter()
                    .filter_map(|h| h.header.as_ref().map(|hv| (hv.key.clone(), hv.value.clone())))
                    .collect(),
                removed: Vec::new(),
                body: d.body.clone(),
            },
            _ => Answer {
                grpc_code,
                http_status: -1,
                headers: HashMap::new(),
                removed: Vec::new(),
                body: String::new(),
            },
        }
    }

    pub fn www_authenticate(&self) -> Option<&str> {
        self.headers.get("www-authenticate").map(String::as_str)
    }

    pub fn problem(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("problem+json body")
    }
}

/// A loopback port free right now, for a child process to bind.
///
/// Chosen at random below Linux's ephemeral range (32768–60999), where
/// `bind(0)` would pick: the tests open thousands of outgoing connections,
/// and one of them could take a freed ephemeral port before the child
/// process binds it.
pub fn free_port() -> u16 {
    for _ in 0..1_000 {
        let port = rand::random_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in 20000..32000");
}

/// Wait (20 s at most) until the hydra-authz child answers 200 on
/// `/readyz` at `http_port`; panics, with `log()`, if it exits first.
pub async fn wait_ready(child: &mut tokio::process::Child, http_port: u16, log: impl Fn() -> String) {
    let client = reqwest::Client::builder().no_proxy().build().expect("client");
    let readyz = format!("http://127.0.0.1:{http_port}/readyz");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !client.get(&readyz).send().await.is_ok_and(|r| r.status() == 200) {
        assert!(child.try_wait().expect("wait").is_none(), "exited early: {}", log());
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz never became 200: {}",
            log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// SIGTERM to a child process, then its exit status (panics past `limit`).
pub async fn sigterm_and_wait(
    child: &mut tokio::process::Child,
    limit: std::time::Duration,
) -> std::process::ExitStatus {
    let pid = child.id().expect("still running").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(sent.success(), "kill -TERM {pid}");
    tokio::time::timeout(limit, child.wait())
        .await
        .expect("exits after SIGTERM")
        .expect("wait")
}

/// A Check for `method path` on `host` (Envoy's `:authority`), with headers.
pub fn check_request_on_host(method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    let mut req = check_request(method, path, headers, &[]);
    if let Some(http) = req
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        http.host = host.to_owned();
    }
    req
}

/// Everything a child process writes to `out`, appended to `into` by a task
/// until end of file.
pub fn collect_output(
    mut out: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    into: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
) {
    use tokio::io::AsyncReadExt;
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf).await {
            if n == 0 {
                break;
            }
            into.lock().expect("output buffer").extend_from_slice(&buf[..n]);
        }
    });
}

/// An in-memory log sink for a tracing subscriber (the log tests' capture).
#[derive(Clone, Default)]
pub struct Capture(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

impl Capture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

/// Rules with a weaker catch-all behind each specific one: a request must
/// meet the specific rule whatever the spelling of its method or host.
pub fn guarded_rules(c: &mut Config) {
    let rule =
        |id: &str, host: Option<&str>, methods: &[&str], path: &str, scopes: &[&str]| hydra_authz::config::RuleConfig {
            id: id.into(),
            host: host.map(str::to_owned),
            methods: methods.iter().map(|m| m.to_string()).collect(),
            path: path.into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
    c.rules = vec![
        rule("delete-items", None, &["DELETE"], "/items/*", &["admin"]),
        rule("admin-date", Some("admin.example.com"), &[], "/date", &["admin"]),
        rule("items", None, &[], "/items/**", &["read_date"]),
        rule("date", None, &["GET"], "/date", &["read_date"]),
    ];
}
