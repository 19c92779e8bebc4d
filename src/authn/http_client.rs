//! The HTTP client for Hydra (introspection and JWKS): pooled keep-alive,
//! rustls with the system roots plus an optional private CA, optional client
//! certificate, a timeout, no redirects (a token must never be re-posted
//! elsewhere) and no proxy from the environment.

use crate::config::IntrospectionConfig;
use anyhow::Context;
use std::time::Duration;

pub fn build(cfg: &IntrospectionConfig) -> anyhow::Result<reqwest::Client> {
    let timeout = Duration::from_millis(cfg.timeout_ms);
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("hydra-authz/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &cfg.tls.ca_file {
        let pem = std::fs::read(path).with_context(|| format!("introspection.tls.ca_file {}", path.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("introspection.tls.ca_file {}: not a PEM bundle", path.display()))?
        {
            b = b.add_root_certificate(cert);
        }
    }
    if let (Some(cert), Some(key)) = (&cfg.tls.client_cert_file, &cfg.tls.client_key_file) {
        let mut pem =
            std::fs::read(cert).with_context(|| format!("introspection.tls.client_cert_file {}", cert.display()))?;
        pem.extend(std::fs::read(key).with_context(|| format!("introspection.tls.client_key_file {}", key.display()))?);
        b = b.identity(reqwest::Identity::from_pem(&pem).context("introspection.tls: bad client certificate or key")?);
    }
    Ok(b.build()?)
}
