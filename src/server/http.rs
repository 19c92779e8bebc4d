//! The small HTTP listener: liveness and readiness for kubelets and load
//! balancers, and Prometheus metrics.

use super::ServerAuthn;
use crate::authn::resilience::{BreakerView, Resilient};
use crate::authorizer::Authorizer;
use crate::metrics::Metrics;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Ready once config is loaded and both listeners are up; false again as soon
/// as a shutdown starts, so traffic drains away before we stop.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct ProbeState {
    ready: Readiness,
    metrics: Arc<Metrics>,
    engine: Arc<arc_swap::ArcSwap<Authorizer<ServerAuthn>>>,
}

pub fn router(
    ready: Readiness,
    metrics: Arc<Metrics>,
    engine: Arc<arc_swap::ArcSwap<Authorizer<ServerAuthn>>>,
) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route(
            crate::respond::resource_metadata::WELL_KNOWN_PATH,
            get(resource_metadata),
        )
        .route("/.well-known/jwks.json", get(jwks))
        // A resource with a path publishes under it (RFC 9728 §3.1).
        .route(
            &format!(
                "{}/{{*resource_path}}",
                crate::respond::resource_metadata::WELL_KNOWN_PATH
            ),
            get(resource_metadata),
        )
        .with_state(ProbeState { ready, metrics, engine })
}

/// RFC 9728 §3: the document as JSON, 404 when not configured.
async fn resource_metadata(State(s): State<ProbeState>) -> axum::response::Response {
    match s.engine.load_full().resource_metadata() {
        Some(doc) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "max-age=300"),
            ],
            doc.to_owned(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The public keys of the identity JWT (`[upstream_jwt]`), 404 when off.
async fn jwks(State(s): State<ProbeState>) -> axum::response::Response {
    match s.engine.load_full().responder().jwks() {
        Some(doc) => (
            [
                (header::CONTENT_TYPE, "application/jwk-set+json"),
                // Short: a rotation must reach verifiers well within key_overlap_s.
                (header::CACHE_CONTROL, "max-age=30"),
            ],
            doc,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn metrics_text(State(s): State<ProbeState>) -> impl IntoResponse {
    s.engine.load_full().engine().authenticator().refresh_metrics().await;
    s.metrics.sync_log_lines_dropped(crate::telemetry::dropped_log_lines());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn readyz(State(s): State<ProbeState>) -> (StatusCode, String) {
    let (ready, detail) = serving_readiness(s.ready.get(), &s.engine.load_full());
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        format!("{}\n{detail}", if ready { "ready" } else { "not ready" }),
    )
}

/// Ready (started, and in jwt/auto mode the first JWKS fetch done), and
/// the introspection layer's bookkeeping is not stuck. A stuck
/// state cannot arise by construction (every guard is released on drop,
/// see `authn::resilience`); if it ever did, the authorizer could not
/// serve, and readiness says so rather than stay green. An open circuit is
/// *not* unready: Hydra is down, every replica would say the same, and a
/// fast 503 is the right answer meanwhile.
pub fn readiness<A>(started: bool, layer: &Resilient<A>) -> (bool, String) {
    let state = layer.state();
    let wedged = match state.breaker {
        // A probe is one check: it cannot legitimately outlive its budget.
        BreakerView::Probing(for_) => for_ > layer.budget() * 2 + Duration::from_secs(1),
        _ => false,
    };
    let breaker = match state.breaker {
        BreakerView::Closed => "closed".to_owned(),
        BreakerView::Open => "open".to_owned(),
        BreakerView::Probing(d) => format!("probing for {} ms", d.as_millis()),
    };
    let detail = format!(
        "circuit: {breaker}\nintrospections in flight: {}\nchecks queued: {}\n{}",
        state.in_use,
        state.waiting,
        if wedged {
            "wedged: the half-open probe outlived its budget\n"
        } else {
            ""
        }
    );
    (started && !wedged, detail)
}

/// [`readiness`] for the running engine: started, the verifier warmed up
/// (the first JWKS fetch in jwt/auto mode), and nothing stuck. `/readyz`
/// and gRPC health both ask this.
fn serving_readiness(started: bool, engine: &Authorizer<ServerAuthn>) -> (bool, String) {
    let cache = engine.engine().authenticator();
    // In jwt mode: not without a usable key set (every check would be a
    // 503), however the first fetches went.
    let verifier = crate::authorizer::verifier_of(engine);
    let (warmed, keys) = (verifier.prefetched(), verifier.can_verify());
    let (ready, mut detail) = readiness(started && warmed && keys, cache.inner());
    if warmed && !keys {
        detail.push_str(
            "no usable key set: none fetched yet, or older than max_stale_key_age_ms (introspection.jwt.jwks_url)\n",
        );
    }
    // A fleet without its purge subscription still serves (every check
    // verified afresh), so it stays ready; the detail says why it is slower.
    if let Some(fleet) = cache.fleet() {
        detail.push_str(&fleet.status());
        detail.push('\n');
    }
    (ready, detail)
}

/// Whether the engine could serve once the listeners run: false in jwt and
/// auto mode until the first key set fetch is done (gRPC health's first word).
pub(crate) fn warmed_up(engine: &Authorizer<ServerAuthn>) -> bool {
    serving_readiness(true, engine).0
}

/// gRPC health for the Authorization service and for the server as a whole
/// (`""`, what a `grpc_health_check {}` without a service name asks): the
/// same answer, so neither says SERVING while the other would not.
pub(crate) async fn set_health(health: &tonic_health::server::HealthReporter, serving: bool) {
    use tonic::server::NamedService;
    use tonic_health::ServingStatus;
    type Checked = super::authz::AuthorizationServer<super::authz::AuthzService<ServerAuthn>>;
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    for name in [Checked::NAME, ""] {
        health.set_service_status(name, status).await;
    }
}

/// Keep gRPC health in step with `/readyz` while serving.
pub async fn watch_health(
    ready: Readiness,
    engine: Arc<arc_swap::ArcSwap<Authorizer<ServerAuthn>>>,
    health: tonic_health::server::HealthReporter,
    mut serving: bool,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let (now, _) = serving_readiness(ready.get(), &engine.load_full());
        if now != serving {
            if now {
                tracing::info!("ready: serving");
            } else if serving {
                tracing::error!(
                    "not ready: see /readyz for why (the introspection layer stuck, or the key set not fetched)"
                );
            }
            serving = now;
            set_health(&health, now).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ResilienceConfig;

    #[tokio::test(start_paused = true)]
    async fn readiness_reports_a_stuck_probe() {
        let layer = Resilient::new((), &ResilienceConfig::default(), Arc::new(Metrics::new()));
        let (ready, detail) = readiness(true, &layer);
        assert!(ready, "{detail}");
        assert!(
            detail.contains("circuit: closed") && detail.contains("checks queued: 0"),
            "{detail}"
        );
        assert!(!readiness(false, &layer).0, "not started: not ready");
        layer.leak_a_probe();
        assert!(readiness(true, &layer).0, "a fresh probe is fine");
        tokio::time::advance(layer.budget() * 3 + Duration::from_secs(2)).await;
        let (ready, detail) = readiness(true, &layer);
        assert!(!ready, "{detail}");
        assert!(detail.contains("wedged"), "{detail}");
    }
}
