//! `hydra-authz purge`: drop cached verdicts on a running instance through
//! its admin API, found (address and credentials) in the same config file
//! the instance runs with; with `[cluster]` that instance tells the whole
//! fleet. Exits 0 only when the purge was accepted (in a fleet: also
//! published to every replica).

use crate::admin_proto::admin_client::AdminClient;
use crate::admin_proto::purge_token_request::Target;
use crate::admin_proto::{PurgeAllRequest, PurgeTokenRequest};
use crate::config::Config;
use anyhow::Context;
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

#[derive(Debug, clap::Args)]
#[command(
    group(clap::ArgGroup::new("target").required(true).args(["token_file", "fingerprint", "subject", "client_id", "all"])),
    after_help = "Exit status: 0 when the instance accepted the purge (with [cluster]: and published it to the
fleet), 1 otherwise (the reason goes to stderr).

The admin API listens on server.admin_addr (127.0.0.1:9193 by default) and only
when credentials are configured; this command reads the address and the bearer
token (server.admin_token_file / admin_token_env) from --config.

Examples:
  hydra-authz purge --config /etc/hydra-authz/hydra-authz.toml --token-file ./revoked-token
  hydra-authz purge --config /etc/hydra-authz/hydra-authz.toml --fingerprint 1a2b3c4d
  hydra-authz purge --config /etc/hydra-authz/hydra-authz.toml --subject user-42       # logged out
  hydra-authz purge --config /etc/hydra-authz/hydra-authz.toml --client-id reader      # client deleted
  hydra-authz purge --config /etc/hydra-authz/hydra-authz.toml --all"
)]
pub struct PurgeArgs {
    /// File holding the token to purge (never on the command line: it would show in `ps`).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The 8-hex-digit fingerprint shown as `token_fp` in the logs.
    #[arg(long)]
    pub fingerprint: Option<String>,
    /// Every token of this subject (`sub`), e.g. after the user logged out.
    #[arg(long)]
    pub subject: Option<String>,
    /// Every token of this OAuth2 client, e.g. after it was deleted.
    #[arg(long)]
    pub client_id: Option<String>,
    /// Empty the whole cache.
    #[arg(long)]
    pub all: bool,
    /// With admin mTLS (server.admin_client_ca_file): our client certificate (PEM).
    #[arg(long, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// With TLS ([server.tls]): the CA that signed the server's certificate (PEM).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// With TLS: the name in the server's certificate (default: localhost).
    #[arg(long, default_value = "localhost")]
    pub tls_server_name: String,
}

pub async fn run(config: &Config, args: &PurgeArgs) -> anyhow::Result<()> {
    let server = &config.server;
    anyhow::ensure!(
        server.admin_enabled(),
        "the admin API is off in this config: set server.admin_token_file, admin_token_env or admin_client_ca_file"
    );
    let addr = super::health::reachable(server.admin_addr);
    // The admin listener serves TLS whenever [server.tls] has a certificate.
    let tls = server.tls.cert_file.is_some();
    if !tls && !addr.ip().is_loopback() {
        // As the server warns at start: the bearer token would cross the
        // network in clear unless the mesh encrypts it.
        eprintln!(
            "warning: the admin API at {addr} has no TLS ([server.tls]): the admin token crosses the network in clear \
             unless the mesh encrypts it"
        );
    }
    let mut endpoint = Endpoint::from_shared(format!("{}://{addr}", if tls { "https" } else { "http" }))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    if tls {
        let mut t = ClientTlsConfig::new().domain_name(args.tls_server_name.clone());
        if let Some(ca) = &args.ca_file {
            t = t.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) {
            t = t.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        endpoint = endpoint.tls_config(t)?;
    }
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach the admin API at {addr}"))?;
    let token = match (&server.admin_token_env, &server.admin_token_file) {
        (None, None) => None,
        (env, file) => Some(crate::secret::read(env.as_deref(), file.as_deref()).context("the admin token")?),
    };
    let bearer: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> = token
        .map(|t| format!("Bearer {t}").parse())
        .transpose()
        .context("the admin token is not a valid header value")?;
    let mut client = AdminClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
        if let Some(b) = &bearer {
            r.metadata_mut().insert("authorization", b.clone());
        }
        Ok(r)
    });
    let target = if let Some(path) = &args.token_file {
        Some(Target::Token(
            crate::secret::read(None, Some(path)).context("--token-file")?,
        ))
    } else if let Some(fp) = &args.fingerprint {
        Some(Target::Fingerprint(fp.clone()))
    } else if let Some(sub) = &args.subject {
        Some(Target::Subject(sub.clone()))
    } else {
        args.client_id.clone().map(Target::ClientId)
    };
    let result = match target {
        Some(target) => client.purge_token(PurgeTokenRequest { target: Some(target) }).await,
        None => client.purge_all(PurgeAllRequest {}).await,
    };
    let answer = result
        .map_err(|s| anyhow::anyhow!("purge refused: {} ({:?})", s.message(), s.code()))?
        .into_inner();
    if answer.fleet {
        eprintln!(
            "purged; published to the fleet ({} replicas notified)",
            answer.replicas_notified
        );
    } else {
        eprintln!("purged");
    }
    Ok(())
}

fn read(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| path.display().to_string())
}
