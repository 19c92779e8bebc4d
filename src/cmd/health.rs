//! `hydra-authz health`: GET a running server's /readyz and exit 0 only on
//! 200. The container image is distroless (no shell, no curl), so Docker's
//! HEALTHCHECK needs the binary itself to be the probe.

use anyhow::Context;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Well below any sensible HEALTHCHECK --timeout, so a hung server is
/// reported by us, with a reason, rather than killed by the engine.
const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 when the URL answers HTTP 200, 1 otherwise (the reason goes to stderr).

Examples:
  # Probe http://<server.http_addr>/readyz from the config (a 0.0.0.0 or [::] bind is probed on loopback)
  hydra-authz health --config /etc/hydra-authz/hydra-authz.toml
  # Probe an explicit URL (the config is not read)
  hydra-authz health --url http://127.0.0.1:9192/healthz
  # Dockerfile (distroless: no shell, so exec form)
  HEALTHCHECK CMD [\"/usr/local/bin/hydra-authz\", \"health\", \"--config\", \"/etc/hydra-authz/hydra-authz.toml\"]"
)]
pub struct HealthArgs {
    /// URL to GET instead of http://<server.http_addr>/readyz from the config.
    #[arg(long)]
    pub url: Option<String>,
}

/// The readiness URL for a listener bound to `http_addr`. A wildcard bind
/// cannot be connected to; its own family's loopback reaches the same socket.
pub fn readyz_url(http_addr: SocketAddr) -> String {
    format!("http://{}/readyz", reachable(http_addr))
}

/// Where to connect to reach a listener bound to `addr`: a wildcard bind is
/// reached on its own family's loopback.
pub fn reachable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// Ok when `url` answers 200; otherwise an error saying why, in one line.
pub async fn run(url: &str) -> anyhow::Result<()> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("health: {url:?} is not a URL"))?;
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        // A probe of our own listener: never via a proxy, never elsewhere by redirect.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let resp = client
        .get(parsed)
        .send()
        .await
        // The URL is in our own context already; once is enough in one line.
        .map_err(reqwest::Error::without_url)
        .with_context(|| format!("health: GET {url} failed"))?;
    let status = resp.status();
    if status != reqwest::StatusCode::OK {
        anyhow::bail!("health: GET {url} answered HTTP {}, not 200", status.as_u16());
    }
    Ok(())
}
