//! The small HTTP listener: liveness and readiness for kubelets and load
//! balancers, and Prometheus metrics.

use super::ServerAuthn;
use crate::decision::Engine;
use crate::metrics::Metrics;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
struct AdminState {
    ready: Readiness,
    metrics: Arc<Metrics>,
    engine: Arc<arc_swap::ArcSwap<Engine<ServerAuthn>>>,
}

pub fn router(ready: Readiness, metrics: Arc<Metrics>, engine: Arc<arc_swap::ArcSwap<Engine<ServerAuthn>>>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState { ready, metrics, engine })
}

async fn metrics_text(State(s): State<AdminState>) -> impl IntoResponse {
    s.engine.load_full().authenticator().refresh_metrics().await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn readyz(State(s): State<AdminState>) -> (StatusCode, &'static str) {
    if s.ready.get() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
