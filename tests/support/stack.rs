//! The end-to-end stack: a real OAuth2 server (npm oidc-provider, started
//! from tests/oauth2-server), hydra-authz, the echo upstream and a real Envoy
//! from deploy/envoy/envoy.yaml, all on ephemeral loopback ports.

use super::pki::Pki;
use hydra_authz::config::AuthKind;
use hydra_authz::demo::envoy::{self, Envoy, EnvoyPorts};
use hydra_authz::server::RunningServer;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// npm `oidc-provider` running tests/oauth2-server/server.mjs.
pub struct OAuth2Server {
    child: Child,
    pub base: String,
}

impl OAuth2Server {
    pub async fn start() -> OAuth2Server {
        // A start-up that prints nothing is retried: on a loaded 2-core
        // machine a node process has been seen to stay silent past 30 s.
        for attempt in 1..=3 {
            if let Some(server) = Self::try_start().await {
                return server;
            }
            eprintln!("OAuth2 server silent at start-up (attempt {attempt}); retrying");
        }
        panic!("the OAuth2 server (tests/oauth2-server) did not start three times");
    }

    async fn try_start() -> Option<OAuth2Server> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oauth2-server");
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "run `npm ci` in tests/oauth2-server (scripts/test.sh does it)"
        );
        let mut child = Command::new("node")
            .arg("server.mjs")
            .current_dir(&dir)
            .env("PORT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start node tests/oauth2-server/server.mjs");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = match tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            _ => return None,
        };
        let port: u16 = line
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok())
            .expect("READY <port>");
        Some(OAuth2Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
        })
    }

    pub fn introspection_url(&self) -> String {
        format!("{}/token/introspection", self.base)
    }

    /// client_credentials grant; the access token.
    pub async fn token(&self, client: &str, scope: &str) -> String {
        let r = http()
            .post(format!("{}/token", self.base))
            .basic_auth(client, Some(format!("{client}-secret")))
            .form(&[("grant_type", "client_credentials"), ("scope", scope)])
            .send()
            .await
            .expect("token request");
        assert_eq!(r.status(), 200, "token for {client}");
        let body: serde_json::Value = r.json().await.expect("token json");
        body["access_token"].as_str().expect("access_token").to_owned()
    }

    /// RFC 7009 revocation by the token's own client.
    pub async fn revoke(&self, client: &str, token: &str) {
        let r = http()
            .post(format!("{}/token/revocation", self.base))
            .basic_auth(client, Some(format!("{client}-secret")))
            .form(&[("token", token)])
            .send()
            .await
            .expect("revocation request");
        assert_eq!(r.status(), 200, "revocation");
    }

    pub async fn stop(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().expect("client")
}

pub fn envoy_binary() -> PathBuf {
    envoy::find_binary().expect("Envoy not found: set ENVOY_BIN or run scripts/install-envoy.sh (scripts/test.sh does)")
}

use super::free_port;

pub struct Stack {
    pub oauth2: OAuth2Server,
    pub authz: RunningServer,
    pub envoy: Envoy,
    _secret_dir: tempfile::TempDir,
    _pki: Option<Pki>,
}

/// How Envoy reaches hydra-authz.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum AuthzHop {
    /// Plain h2c over loopback, as in the shipped envoy.yaml.
    Plaintext,
    /// deploy/envoy/mtls-to-hydra-authz.yaml: Envoy presents a client
    /// certificate, hydra-authz requires one from the test CA.
    MutualTls,
    /// The same, minus Envoy's client certificate: hydra-authz must refuse.
    TlsWithoutClientCert,
}

impl Stack {
    pub async fn start() -> Stack {
        Self::start_with(AuthzHop::Plaintext).await
    }

    pub async fn start_with(hop: AuthzHop) -> Stack {
        let oauth2 = OAuth2Server::start().await;
        // hydra-authz authenticates to the introspection endpoint with client_secret_basic.
        let secret_dir = tempfile::tempdir().expect("tempdir");
        let secret = secret_dir.path().join("client-secret");
        std::fs::write(&secret, "hydra-authz-secret\n").expect("write secret");
        let mut config = super::config_for(&oauth2.introspection_url());
        config.introspection.auth.kind = AuthKind::ClientSecretBasic;
        config.introspection.auth.client_id = Some("hydra-authz".into());
        config.introspection.auth.client_secret_file = Some(secret);
        config.introspection.timeout_ms = 2_000;
        let pki = (hop != AuthzHop::Plaintext).then(Pki::new);
        if let Some(pki) = &pki {
            config.server.tls.cert_file = Some(pki.server_cert.clone());
            config.server.tls.key_file = Some(pki.server_key.clone());
            config.server.tls.client_ca_file = Some(pki.ca.clone());
        }
        let authz = super::start_authz(&config).await;

        let envoy = envoy_in_front_of(&authz, pki.as_ref().map(|p| (p, hop == AuthzHop::MutualTls))).await;
        Stack {
            oauth2,
            authz,
            envoy,
            _secret_dir: secret_dir,
            _pki: pki,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.envoy.listener)
    }
}

/// A real Envoy from the shipped envoy.yaml in front of `authz` and a fresh
/// echo upstream; over the mTLS hop when `tls` is given (with or without
/// Envoy's client certificate).
pub async fn envoy_in_front_of(authz: &RunningServer, tls: Option<(&Pki, bool)>) -> Envoy {
    envoy_in_front_of_edited(authz, tls, |yaml| yaml).await
}

/// [`envoy_in_front_of`], with the rendered bootstrap passed through `edit`
/// first (e.g. to drop a hardening default and show what we do without it).
pub async fn envoy_in_front_of_edited(
    authz: &RunningServer,
    tls: Option<(&Pki, bool)>,
    edit: impl FnOnce(String) -> String,
) -> Envoy {
    envoy_for_ports(authz.grpc_addr.port(), authz.http_addr.port(), tls, edit).await
}

/// The shipped envoy.yaml in front of whatever hydra-authz listens on
/// `authz_port` (e.g. the real binary as a child process). Its
/// `hydra_authz_http` cluster (the RFC 9728 route) points at a free port
/// nothing listens on; [`envoy_for_ports`] names hydra-authz's HTTP port.
pub async fn envoy_for_port(authz_port: u16, tls: Option<(&Pki, bool)>, edit: impl FnOnce(String) -> String) -> Envoy {
    envoy_for_ports(authz_port, free_port(), tls, edit).await
}

/// [`envoy_for_port`], with hydra-authz's Check port and its HTTP port
/// (`server.http_addr`, where the kit routes
/// `/.well-known/oauth-protected-resource`).
pub async fn envoy_for_ports(
    authz_port: u16,
    authz_http_port: u16,
    tls: Option<(&Pki, bool)>,
    edit: impl FnOnce(String) -> String,
) -> Envoy {
    let upstream = hydra_authz::demo::upstream::serve(super::lo0())
        .await
        .expect("upstream");
    envoy_for_upstream(authz_port, authz_http_port, upstream.port(), tls, edit).await
}

/// [`envoy_for_ports`], in front of an upstream of the caller's on
/// `upstream_port` (e.g. one that also echoes the query string).
pub async fn envoy_for_upstream(
    authz_port: u16,
    authz_http_port: u16,
    upstream_port: u16,
    tls: Option<(&Pki, bool)>,
    edit: impl FnOnce(String) -> String,
) -> Envoy {
    let ports = EnvoyPorts {
        admin: free_port(),
        listener: free_port(),
        authz: authz_port,
        authz_http: authz_http_port,
        upstream: upstream_port,
    };
    let mut rendered = envoy::render(ports).expect("render envoy.yaml");
    if let Some((pki, client_cert)) = tls {
        rendered = with_tls_hop(&rendered, pki, client_cert);
    }
    let rendered = edit(rendered);
    Envoy::start(&envoy_binary(), &rendered, ports)
        .await
        .expect("Envoy starts")
}

/// The shipped envoy.yaml with deploy/envoy/mtls-to-hydra-authz.yaml added to
/// the `hydra_authz` cluster, pointing at the test CA's files.
fn with_tls_hop(bootstrap: &str, pki: &Pki, client_cert: bool) -> String {
    let snippet = include_str!("../../deploy/envoy/mtls-to-hydra-authz.yaml");
    let path = |p: &Path| p.to_str().expect("utf-8 temp path").to_owned();
    let mut block = String::new();
    let mut skip = false;
    for line in snippet.lines().filter(|l| !l.trim_start().starts_with('#')) {
        // Without a client certificate: drop the two lines naming it.
        if !client_cert && line.trim_start().starts_with("tls_certificates:") {
            skip = true;
            continue;
        }
        if skip && line.trim_start().starts_with("private_key:") {
            skip = false;
            continue;
        }
        if skip {
            continue;
        }
        let line = line
            .replace("/etc/envoy/tls/ca.pem", &path(&pki.ca))
            .replace("/etc/envoy/tls/client.pem", &path(&pki.client_cert))
            .replace("/etc/envoy/tls/client.key", &path(&pki.client_key));
        block.push_str("      ");
        block.push_str(&line);
        block.push('\n');
    }
    let anchor = "    - name: hydra_authz\n";
    assert_eq!(
        bootstrap.matches(anchor).count(),
        1,
        "envoy.yaml names the hydra_authz cluster once"
    );
    bootstrap.replacen(anchor, &format!("{anchor}{block}"), 1)
}

/// The real hydra-authz binary as a child process, from `config` (written
/// to a temp file as TOML), on ephemeral loopback ports; ready when it
/// returns. Killed on drop.
pub struct AuthzProcess {
    pub child: tokio::process::Child,
    pub grpc_port: u16,
    pub http_port: u16,
    pub admin_port: u16,
    pub config_path: PathBuf,
    log: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    _dir: tempfile::TempDir,
}

impl AuthzProcess {
    pub async fn start(config: hydra_authz::config::Config) -> AuthzProcess {
        let mut p = Self::start_quiet(config).await;
        p.read_log();
        p
    }

    /// Started and ready, but its stderr is not read until
    /// [`AuthzProcess::read_log`]: the pipe fills, as with a stalled log
    /// collector.
    pub async fn start_quiet(mut config: hydra_authz::config::Config) -> AuthzProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let (grpc_port, http_port, admin_port) = (free_port(), free_port(), free_port());
        config.server.grpc_addr = ([127, 0, 0, 1], grpc_port).into();
        config.server.http_addr = ([127, 0, 0, 1], http_port).into();
        config.server.admin_addr = ([127, 0, 0, 1], admin_port).into();
        let config_path = dir.path().join("hydra-authz.toml");
        std::fs::write(&config_path, toml::to_string(&config).expect("config as TOML")).expect("write config");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hydra-authz"))
            .arg("--config")
            .arg(&config_path)
            .env_remove("HYDRA_AUTHZ_CONFIG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start hydra-authz");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        super::wait_ready(&mut child, http_port, || "(stderr not read yet)".to_owned()).await;
        AuthzProcess {
            child,
            grpc_port,
            http_port,
            admin_port,
            config_path,
            log,
            _dir: dir,
        }
    }

    /// Read its stderr from now on, into [`AuthzProcess::log`].
    pub fn read_log(&mut self) {
        if let Some(err) = self.child.stderr.take() {
            super::collect_output(err, self.log.clone());
        }
    }

    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().expect("log")).into_owned()
    }
}
