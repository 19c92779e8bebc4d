//! `authz-bench instructions`: a fixed number of checks of one kind, in one
//! process, for valgrind's callgrind (`scripts/callgrind.sh`). Instruction
//! counts repeat to a fraction of a percent on shared machines where
//! timings move by tens of percent, so a regression shows without noise.
//!
//! The check goes through the real gRPC service function (decoding the
//! request's bytes into hydra-authz's view of it, extraction, engine,
//! responder, the decision event with its log line at the shipped settings
//! of `config/hydra-authz.toml`); only the socket and gRPC framing are left
//! out. The
//! script runs 0 and N checks and divides the difference by N, so start-up
//! and the one warm-up check cancel out.

use arc_swap::ArcSwap;
use envoy_types::ext_authz::v3::pb::CheckRequest;
use hydra_authz::config::Config;
use hydra_authz::demo::issuer::DevIssuer;
use hydra_authz::metrics::Metrics;
use hydra_authz::server::authz::Authorization;
use hydra_authz::server::authz::AuthzService;
use prost::Message;
use std::sync::Arc;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Case {
    /// A valid token answered from the cache (row b's check).
    CachedAllow,
    /// No credentials: 401 before any introspection.
    DenyBeforeIntrospection,
    /// Cache off: every check introspects at the in-process issuer over
    /// loopback HTTP (its instructions are counted too).
    UncachedAllow,
}

/// The shipped log settings: both at `info`, one decision line per check.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// `config/hydra-authz.toml`.
    Pretty,
    /// The Helm chart.
    Json,
}

pub(crate) fn run(case: Case, checks: u64, format: Format, level: String) -> anyhow::Result<()> {
    // One thread for the checks and the issuer (the log writer has its own).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let lo = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let (issuer, addrs) = DevIssuer::serve(lo, lo, 3600).await?;
        let mut config = Config::from_toml_str(hydra_authz::demo::DEFAULT_CONFIG)?;
        config.introspection.url = addrs.introspection_url();
        config.introspection.cache.enabled = case == Case::CachedAllow;
        config.log.level = level;
        config.log.format = match format {
            Format::Pretty => hydra_authz::config::LogFormat::Pretty,
            Format::Json => hydra_authz::config::LogFormat::Json,
        };
        let telemetry = hydra_authz::telemetry::init(&config.log, &config.telemetry)?;
        let metrics = Arc::new(Metrics::new());
        let authorizer = hydra_authz::authorizer::build(&config, metrics.clone(), None)?;
        let service = AuthzService::new(Arc::new(ArcSwap::new(authorizer)), metrics);
        let token = issuer
            .mint("reader", &["read_date"])
            .ok_or_else(|| anyhow::anyhow!("the seed client cannot mint"))?;
        let (full, expected) = match case {
            Case::DenyBeforeIntrospection => (request(None), 401),
            Case::CachedAllow | Case::UncachedAllow => (request(Some(&token)), 200),
        };
        // As tonic hands the frame to the codec.
        let frame = prost::bytes::Bytes::from(full.encode_to_vec());
        // Warm-up (in both runs): the first introspection, pools, lazies.
        for i in 0..=checks {
            let request = hydra_authz::extract::envoy_wire::CheckRequest::decode(frame.clone())?;
            let answer = service.check(tonic::Request::new(request)).await?.into_inner();
            // Measure the path we mean, or nothing: the first answer (in
            // both runs, so its decoding cancels) is read as Envoy would.
            if i == 0 {
                use envoy_types::ext_authz::v3::pb::{CheckResponse, HttpResponse};
                let status = match CheckResponse::decode(answer.as_bytes())?.http_response {
                    Some(HttpResponse::OkResponse(_)) => 200,
                    Some(HttpResponse::DeniedResponse(d)) => d.status.map_or(0, |s| s.code),
                    _ => 0,
                };
                anyhow::ensure!(status == expected, "expected {expected}, got {status}");
            }
        }
        drop(telemetry.shutdown());
        anyhow::Ok(())
    })
}

/// Row b's request, with or without its credentials.
fn request(token: Option<&str>) -> CheckRequest {
    match token {
        Some(t) => crate::check_request(t),
        None => hydra_authz::extract::envoy_check_request(
            "GET",
            "api.example.com",
            "/date",
            [(":authority", "api.example.com"), ("user-agent", "authz-bench")],
            [],
        ),
    }
}
