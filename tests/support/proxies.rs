//! The forward-auth kits run for real: nginx (deploy/nginx/nginx.conf),
//! Caddy (deploy/caddy/Caddyfile) and Envoy's `http_service`
//! (deploy/envoy/envoy-http-service.yaml), each from the shipped file with
//! only its ports rewritten, in front of hydra-authz's forward-auth listener
//! and an echo upstream that counts what reaches it. All on loopback, every
//! child process killed on drop.

use super::free_port;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::process::{Child, Command};

/// The ports written in the kits: proxy listener, upstream, hydra-authz's
/// `[forward_auth] addr`, and the Envoy kit's admin port.
const KIT_PROXY: u16 = 8080;
const KIT_UPSTREAM: u16 = 8081;
const KIT_AUTHZ: u16 = 9194;
const KIT_ENVOY_ADMIN: u16 = 9902;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kit {
    Nginx,
    Caddy,
    EnvoyHttp,
}

impl Kit {
    pub fn name(self) -> &'static str {
        match self {
            Kit::Nginx => "nginx",
            Kit::Caddy => "caddy",
            Kit::EnvoyHttp => "envoy",
        }
    }
}

/// `<NAME>_BIN`, else `name` on `PATH`, else where
/// scripts/install-proxies.sh unpacks it (`.venv-deploy/<name>/bin`), as
/// deploy/tests/test_forward_auth_kits.py looks. Missing is a failure, not
/// a skip: CI installs both.
pub fn find_tool(name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(format!("{}_BIN", name.to_uppercase())) {
        return PathBuf::from(p);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if let Some(p) = on_path {
        return p;
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".venv-deploy")
        .join(name)
        .join("bin")
        .join(name);
    assert!(
        local.exists(),
        "no {name} binary: run `PATH=\"$(scripts/install-proxies.sh {name}):$PATH\"` \
         (scripts/test.sh does), or set {}_BIN",
        name.to_uppercase()
    );
    local
}

/// The demo echo upstream (answers with the method, path and headers it
/// got, repeated headers as a list), counting the requests that reach it.
pub struct Upstream {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = hydra_authz::demo::upstream::router().layer(tower::util::MapRequestLayer::new(
            move |req: axum::extract::Request| {
                counter.fetch_add(1, Ordering::SeqCst);
                req
            },
        ));
        let listener = tokio::net::TcpListener::bind(super::lo0())
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Upstream { addr, hits }
    }

    /// Requests that reached the upstream so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A running proxy from its shipped kit; killed when dropped.
pub struct Proxy {
    pub kit: Kit,
    pub addr: SocketAddr,
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
    _dir: tempfile::TempDir,
}

/// `text` with `from` (which must appear exactly once) replaced by `to`.
fn replace_once(kit: &str, text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "{kit}: `{from}` must appear exactly once"
    );
    text.replacen(from, to, 1)
}

fn read_kit(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

impl Proxy {
    /// Start `kit` on a free port in front of hydra-authz's forward-auth
    /// listener at `authz_port` and the upstream at `upstream_port`; ready
    /// (listening, and for Envoy /ready) when it returns.
    pub async fn start(kit: Kit, authz_port: u16, upstream_port: u16) -> Proxy {
        let dir = tempfile::Builder::new()
            .prefix(&format!("hydra-authz-{}", kit.name()))
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let (mut cmd, admin) = match kit {
            Kit::Nginx => {
                let mut conf = read_kit("deploy/nginx/nginx.conf");
                for (from, to) in [
                    (KIT_PROXY, port),
                    (KIT_UPSTREAM, upstream_port),
                    (KIT_AUTHZ, authz_port),
                ] {
                    conf = replace_once(
                        "nginx.conf",
                        &conf,
                        &format!("127.0.0.1:{from};"),
                        &format!("127.0.0.1:{to};"),
                    );
                }
                let conf_path = dir.path().join("nginx.conf");
                std::fs::write(&conf_path, conf).expect("write nginx.conf");
                let prefix = dir.path().join("prefix");
                std::fs::create_dir(&prefix).expect("nginx prefix");
                let mut cmd = Command::new(find_tool("nginx"));
                cmd.arg("-p")
                    .arg(&prefix)
                    .arg("-c")
                    .arg(&conf_path)
                    .args(["-e", "stderr"]);
                (cmd, None)
            }
            Kit::Caddy => {
                let mut conf = read_kit("deploy/caddy/Caddyfile");
                conf = replace_once(
                    "Caddyfile",
                    &conf,
                    &format!("http://:{KIT_PROXY} "),
                    &format!("http://:{port} "),
                );
                for (from, to) in [(KIT_UPSTREAM, upstream_port), (KIT_AUTHZ, authz_port)] {
                    conf = replace_once(
                        "Caddyfile",
                        &conf,
                        &format!("127.0.0.1:{from}"),
                        &format!("127.0.0.1:{to}"),
                    );
                }
                let conf_path = dir.path().join("Caddyfile");
                std::fs::write(&conf_path, conf).expect("write Caddyfile");
                let mut cmd = Command::new(find_tool("caddy"));
                cmd.args(["run", "--adapter", "caddyfile", "--config"])
                    .arg(&conf_path)
                    // autosave.json and the instance id, not under $HOME.
                    .env("XDG_CONFIG_HOME", dir.path().join("xdg-config"))
                    .env("XDG_DATA_HOME", dir.path().join("xdg-data"));
                (cmd, None)
            }
            Kit::EnvoyHttp => {
                let admin = free_port();
                let mut conf = read_kit("deploy/envoy/envoy-http-service.yaml");
                for (from, to) in [
                    (KIT_ENVOY_ADMIN, admin),
                    (KIT_PROXY, port),
                    (KIT_UPSTREAM, upstream_port),
                    (KIT_AUTHZ, authz_port),
                ] {
                    conf = replace_once(
                        "envoy-http-service.yaml",
                        &conf,
                        &format!("port_value: {from}\n"),
                        &format!("port_value: {to}\n"),
                    );
                }
                let conf_path = dir.path().join("envoy.yaml");
                std::fs::write(&conf_path, conf).expect("write envoy.yaml");
                let mut cmd = Command::new(super::stack::envoy_binary());
                cmd.arg("-c")
                    .arg(&conf_path)
                    .args(["--log-level", "warn", "--disable-hot-restart"]);
                (cmd, Some(admin))
            }
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", kit.name()));
        let output = Arc::new(Mutex::new(Vec::new()));
        super::collect_output(child.stdout.take().expect("stdout"), output.clone());
        super::collect_output(child.stderr.take().expect("stderr"), output.clone());
        let mut proxy = Proxy {
            kit,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            output,
            _dir: dir,
        };
        proxy.wait_ready(admin).await;
        proxy
    }

    /// Until the listener accepts connections (and Envoy's admin /ready
    /// says LIVE); 30 s at most, failing early if the process exits.
    async fn wait_ready(&mut self, envoy_admin: Option<u16>) {
        let client = super::stack::http();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("{} exited during start-up ({status}):\n{}", self.kit.name(), self.log());
            }
            let envoy_ready = match envoy_admin {
                None => true,
                Some(admin) => client
                    .get(format!("http://127.0.0.1:{admin}/ready"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success()),
            };
            if envoy_ready && tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} not ready on {} within 30 s:\n{}",
                self.kit.name(),
                self.addr,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stop the proxy the way its supervisor would: SIGTERM, then up to 5 s
    /// for it to exit. nginx's master stops its worker on SIGTERM; a SIGKILL
    /// (what `kill_on_drop` sends) would orphan the worker, still listening.
    fn terminate(&mut self) {
        let Some(pid) = self.child.id() else { return };
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What the proxy wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().expect("proxy output")).into_owned()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Then `kill_on_drop` as a last resort, should it still run.
        self.terminate();
    }
}
