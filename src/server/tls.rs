//! TLS on the gRPC listener, with certificates that may change while we run:
//! cert-manager renews them and Kubernetes swaps a mounted Secret's files in
//! place. The files are re-read every `server.tls.reload_interval_ms`; when
//! their bytes changed and still make a valid config, new connections get
//! it (open connections keep theirs). A broken update is logged and the old
//! certificate stays: a renewal mistake must not take the listener down.

use crate::config::ServerTls;
use crate::file_backed::FileBacked;
use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

pub struct ReloadingTls {
    config: Arc<FileBacked<ServerConfig>>,
}

impl ReloadingTls {
    /// `None` when TLS is off. Errors name the config key, as at start-up.
    /// Re-reads the files every `reload_interval_ms` while the listener runs.
    pub fn load(files: &ServerTls) -> anyhow::Result<Option<Arc<ReloadingTls>>> {
        let (Some(cert), Some(key)) = (&files.cert_file, &files.key_file) else {
            return Ok(None);
        };
        let mut paths = vec![
            (cert.clone(), "server.tls.cert_file".to_owned()),
            (key.clone(), "server.tls.key_file".to_owned()),
        ];
        if let Some(ca) = &files.client_ca_file {
            paths.push((ca.clone(), "server.tls.client_ca_file".to_owned()));
        }
        let config = FileBacked::new("server.tls", paths, build)?;
        config.watch(Duration::from_millis(files.reload_interval_ms));
        Ok(Some(Arc::new(ReloadingTls { config })))
    }

    /// The TLS handshake for one accepted connection, with the certificate
    /// current at that moment; `listener::incoming` bounds it in time.
    pub fn handshake(self: Arc<Self>) -> impl Fn(TcpStream) -> tokio_rustls::Accept<TcpStream> + Send + Sync + 'static {
        move |tcp| TlsAcceptor::from(self.config.get()).accept(tcp)
    }
}

/// cert, key, and optionally the client CA, as PEM bytes in that order.
/// Whether two PEM bundles hold a certificate in common (compared as DER,
/// so line endings, comments and order do not hide one). Unreadable files
/// share nothing here: loading them fails on its own.
pub fn shares_a_certificate(a: &std::path::Path, b: &std::path::Path) -> bool {
    let ders = |p: &std::path::Path| -> Vec<Vec<u8>> {
        std::fs::read(p)
            .map(|pem| {
                CertificateDer::pem_slice_iter(&pem)
                    .filter_map(Result::ok)
                    .map(|c| c.as_ref().to_vec())
                    .collect()
            })
            .unwrap_or_default()
    };
    let theirs = ders(b);
    ders(a).iter().any(|c| theirs.contains(c))
}

fn build(parts: &[Vec<u8>]) -> anyhow::Result<ServerConfig> {
    let (cert_pem, key_pem) = match parts {
        [cert, key, ..] => (cert, key),
        _ => anyhow::bail!("server.tls: cert_file and key_file go together"),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .context("server.tls.cert_file: not a PEM certificate chain")?;
    anyhow::ensure!(!chain.is_empty(), "server.tls.cert_file: no certificate in the file");
    let key = PrivateKeyDer::from_pem_slice(key_pem).context("server.tls.key_file: not a PEM private key")?;

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("server.tls: TLS versions")?;
    let builder = match parts.get(2) {
        None => builder.with_no_client_auth(),
        Some(ca_pem) => {
            // mTLS: a client certificate signed by this CA is required.
            let mut roots = RootCertStore::empty();
            for ca in CertificateDer::pem_slice_iter(ca_pem) {
                roots
                    .add(ca.context("server.tls.client_ca_file: not a PEM bundle")?)
                    .context("server.tls.client_ca_file: unusable CA certificate")?;
            }
            anyhow::ensure!(
                !roots.is_empty(),
                "server.tls.client_ca_file: no certificate in the file"
            );
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .context("server.tls.client_ca_file")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .context("server.tls: cannot use this certificate and key")?;
    // gRPC is HTTP/2 only.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
