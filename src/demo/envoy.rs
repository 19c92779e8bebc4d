//! Run a real Envoy in front of hydra-authz, from the same bootstrap file
//! users copy (`deploy/envoy/envoy.yaml`). Used by `hydra-authz demo` and the
//! end-to-end tests.

use anyhow::Context;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// The shipped bootstrap. Its ports (9901, 8080, 9191, 9192, 8081) each appear once,
/// on a `port_value:` line, so [`render`] can rewrite them.
pub const BOOTSTRAP: &str = include_str!("../../deploy/envoy/envoy.yaml");

#[derive(Debug, Clone, Copy)]
pub struct EnvoyPorts {
    pub admin: u16,
    pub listener: u16,
    /// hydra-authz's Check listener (`server.grpc_addr`).
    pub authz: u16,
    /// hydra-authz's HTTP listener (`server.http_addr`), where the kit
    /// routes `/.well-known/oauth-protected-resource`.
    pub authz_http: u16,
    pub upstream: u16,
}

impl Default for EnvoyPorts {
    /// The ports written in the shipped file.
    fn default() -> Self {
        EnvoyPorts {
            admin: 9901,
            listener: 8080,
            authz: 9191,
            authz_http: 9192,
            upstream: 8081,
        }
    }
}

/// The shipped bootstrap with its ports replaced.
pub fn render(ports: EnvoyPorts) -> anyhow::Result<String> {
    let d = EnvoyPorts::default();
    let mut out = BOOTSTRAP.to_owned();
    for (from, to) in [
        (d.admin, ports.admin),
        (d.listener, ports.listener),
        (d.authz, ports.authz),
        (d.authz_http, ports.authz_http),
        (d.upstream, ports.upstream),
    ] {
        let needle = format!("port_value: {from}\n");
        anyhow::ensure!(
            out.matches(&needle).count() == 1,
            "envoy.yaml must contain `{}` exactly once",
            needle.trim()
        );
        out = out.replace(&needle, &format!("port_value: {to}\n"));
    }
    Ok(out)
}

/// Where to find Envoy: `$ENVOY_BIN`, the repo's `.venv-envoy` (made by
/// `scripts/install-envoy.sh`), then `envoy` on `PATH`.
pub fn find_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ENVOY_BIN") {
        return Some(PathBuf::from(p));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-envoy/lib");
    if let Ok(entries) = std::fs::read_dir(&venv) {
        for e in entries.flatten() {
            let bin = e.path().join("site-packages/envoy/_bin/envoy");
            if bin.is_file() {
                return Some(bin);
            }
        }
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("envoy"))
            .find(|p| p.is_file())
    })
}

/// A running Envoy; killed when dropped.
pub struct Envoy {
    child: Child,
    pub listener: SocketAddr,
    pub admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Envoy {
    /// Start Envoy with `config` and wait until its admin `/ready` says LIVE.
    pub async fn start(binary: &Path, config: &str, ports: EnvoyPorts) -> anyhow::Result<Envoy> {
        let dir = tempfile::Builder::new().prefix("hydra-authz-envoy").tempdir()?;
        let path = dir.path().join("envoy.yaml");
        std::fs::write(&path, config)?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&path)
            .args(["--log-level", "warn", "--disable-hot-restart"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start Envoy at {}", binary.display()))?;
        let mut envoy = Envoy {
            child,
            listener: SocketAddr::from(([127, 0, 0, 1], ports.listener)),
            admin: SocketAddr::from(([127, 0, 0, 1], ports.admin)),
            _dir: dir,
        };
        envoy.wait_ready(Duration::from_secs(30)).await?;
        Ok(envoy)
    }

    async fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::builder().no_proxy().build()?;
        let url = format!("http://{}/ready", self.admin);
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("Envoy exited during start-up: {status}");
            }
            if let Ok(r) = client.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("Envoy was not ready within {limit:?}")
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_rewrites_each_port_once() {
        let out = render(EnvoyPorts {
            admin: 1,
            listener: 2,
            authz: 3,
            authz_http: 5,
            upstream: 4,
        })
        .expect("render");
        for p in 1..=5 {
            assert_eq!(out.matches(&format!("port_value: {p}\n")).count(), 1);
        }
        assert!(!out.contains("port_value: 9191"));
        assert!(!out.contains("port_value: 9192"));
    }
}
