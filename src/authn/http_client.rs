//! The HTTP client for Hydra (introspection and JWKS): pooled keep-alive,
//! rustls with the system roots plus an optional private CA, optional client
//! certificate, a timeout, no redirects (a token must never be re-posted
//! elsewhere) and no proxy from the environment.
//!
//! With `[introspection.tls]` files, the client is rebuilt when they change
//! (re-read every `reload_interval_ms`, see [`FileBacked`]), so a renewed
//! client certificate or CA needs no restart.

use crate::authn::config::IntrospectionConfig;
use crate::file_backed::FileBacked;
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;

pub struct HydraClient(Arc<FileBacked<reqwest::Client>>);

impl std::fmt::Debug for HydraClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HydraClient")
    }
}

impl HydraClient {
    pub fn new(cfg: &IntrospectionConfig) -> anyhow::Result<Arc<HydraClient>> {
        let t = &cfg.tls;
        let mut files = Vec::new();
        if let Some(ca) = &t.ca_file {
            files.push((ca.clone(), "introspection.tls.ca_file".to_owned()));
        }
        let identity = match (&t.client_cert_file, &t.client_key_file) {
            (Some(cert), Some(key)) => {
                files.push((cert.clone(), "introspection.tls.client_cert_file".to_owned()));
                files.push((key.clone(), "introspection.tls.client_key_file".to_owned()));
                true
            }
            _ => false,
        };
        let (has_ca, timeout) = (t.ca_file.is_some(), Duration::from_millis(cfg.timeout_ms));
        let watched = !files.is_empty();
        let client = FileBacked::new("introspection.tls", files, move |parts| {
            // `parts` follows `files`: the CA bundle first when there is one.
            let (ca, rest) = if has_ca {
                (parts.first(), parts.get(1..).unwrap_or_default())
            } else {
                (None, parts)
            };
            build(timeout, ca, identity.then_some(rest))
        })?;
        if watched {
            client.watch(Duration::from_millis(t.reload_interval_ms));
        }
        Ok(Arc::new(HydraClient(client)))
    }

    /// The client to use for this request.
    pub fn get(&self) -> Arc<reqwest::Client> {
        self.0.get()
    }
}

/// A response's body, at most `max` bytes (`Ok(None)` when it is larger):
/// refused by its Content-Length before reading, then read chunk by chunk,
/// so a lying or missing length cannot make us buffer without bound.
pub async fn read_bounded(resp: &mut reqwest::Response, max: usize) -> Result<Option<Vec<u8>>, reqwest::Error> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > max {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// `ca`: a PEM bundle to trust besides the system roots; `identity`: the
/// client certificate and key files' bytes.
fn build(timeout: Duration, ca: Option<&Vec<u8>>, identity: Option<&[Vec<u8>]>) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("hydra-authz/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = ca {
        let certs =
            reqwest::Certificate::from_pem_bundle(pem).context("introspection.tls.ca_file: not a PEM bundle")?;
        anyhow::ensure!(
            !certs.is_empty(),
            "introspection.tls.ca_file: no certificate in the file"
        );
        for cert in certs {
            b = b.add_root_certificate(cert);
        }
    }
    if let Some(parts) = identity {
        let pem = parts.concat();
        b = b.identity(reqwest::Identity::from_pem(&pem).context("introspection.tls: bad client certificate or key")?);
    }
    Ok(b.build()?)
}
