//! The HTTP client for Hydra (introspection and JWKS): pooled keep-alive,
//! rustls with the system roots plus an optional private CA, optional client
//! certificate, a timeout, no redirects (a token must never be re-posted
//! elsewhere) and no proxy from the environment.
//!
//! The `[introspection.tls]` files are re-read every `reload_interval_ms`:
//! when their bytes changed and still build a client, later requests use it
//! (a renewed client certificate or CA needs no restart); a broken update is
//! logged and the working client stays.

use crate::config::IntrospectionConfig;
use anyhow::Context;
use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

pub struct HydraClient {
    cfg: IntrospectionConfig,
    current: ArcSwap<reqwest::Client>,
    /// SHA-256 over the TLS files' bytes, to notice a change.
    loaded: Mutex<[u8; 32]>,
}

impl std::fmt::Debug for HydraClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HydraClient")
            .field("tls", &self.cfg.tls)
            .finish_non_exhaustive()
    }
}

impl HydraClient {
    /// Build the client; with TLS files configured and inside a runtime,
    /// also start re-reading them (the task ends when the client is dropped,
    /// e.g. replaced by a config reload).
    pub fn new(cfg: &IntrospectionConfig) -> anyhow::Result<Arc<HydraClient>> {
        let (client, digest) = build(cfg)?;
        let me = Arc::new(HydraClient {
            cfg: cfg.clone(),
            current: ArcSwap::from_pointee(client),
            loaded: Mutex::new(digest),
        });
        let t = &cfg.tls;
        let has_files = t.ca_file.is_some() || t.client_cert_file.is_some();
        if let (true, Ok(rt)) = (has_files, tokio::runtime::Handle::try_current()) {
            rt.spawn(watch(Arc::downgrade(&me), Duration::from_millis(t.reload_interval_ms)));
        }
        Ok(me)
    }

    /// The client to use for this request.
    pub fn get(&self) -> Arc<reqwest::Client> {
        self.current.load_full()
    }

    /// Re-read the TLS files; `Ok(true)` when a new client is now used.
    pub fn reload_if_changed(&self) -> anyhow::Result<bool> {
        let digest = digest(&read_files(&self.cfg)?);
        if *self.loaded.lock().unwrap_or_else(PoisonError::into_inner) == digest {
            return Ok(false);
        }
        let (client, digest) = build(&self.cfg)?;
        self.current.store(Arc::new(client));
        *self.loaded.lock().unwrap_or_else(PoisonError::into_inner) = digest;
        Ok(true)
    }
}

async fn watch(client: Weak<HydraClient>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; the files were just read
    loop {
        tick.tick().await;
        let Some(client) = client.upgrade() else { return };
        match client.reload_if_changed() {
            Ok(true) => tracing::info!("introspection.tls: new files loaded"),
            Ok(false) => {}
            Err(e) => tracing::warn!("introspection.tls: keeping the current client: {e:#}"),
        }
    }
}

/// (CA bundle, client certificate + key), as configured.
struct Files {
    ca: Option<Vec<u8>>,
    identity: Option<Vec<u8>>,
}

fn read_files(cfg: &IntrospectionConfig) -> anyhow::Result<Files> {
    let read =
        |p: &Path, key: &str| std::fs::read(p).with_context(|| format!("introspection.tls.{key} {}", p.display()));
    let ca = cfg.tls.ca_file.as_deref().map(|p| read(p, "ca_file")).transpose()?;
    let identity = match (&cfg.tls.client_cert_file, &cfg.tls.client_key_file) {
        (Some(cert), Some(key)) => {
            let mut pem = read(cert, "client_cert_file")?;
            pem.extend(read(key, "client_key_file")?);
            Some(pem)
        }
        _ => None,
    };
    Ok(Files { ca, identity })
}

fn digest(f: &Files) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [&f.ca, &f.identity] {
        let bytes = part.as_deref().unwrap_or_default();
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    }
    h.finalize().into()
}

fn build(cfg: &IntrospectionConfig) -> anyhow::Result<(reqwest::Client, [u8; 32])> {
    let files = read_files(cfg)?;
    let timeout = Duration::from_millis(cfg.timeout_ms);
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("hydra-authz/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = &files.ca {
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
    if let Some(pem) = &files.identity {
        b = b.identity(reqwest::Identity::from_pem(pem).context("introspection.tls: bad client certificate or key")?);
    }
    Ok((b.build()?, digest(&files)))
}
