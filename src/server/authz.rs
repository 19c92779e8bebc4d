//! Envoy's `envoy.service.auth.v3.Authorization/Check`: extract, decide,
//! respond; the span, log line and metrics come from [`decision_event`].

use super::decision_event::{self, Front};
use crate::authn::resilience::{caller_deadline, ENVOY_DEADLINE};
use crate::authn::Authenticator;
use crate::authorizer::Authorizer;
use crate::extract::AuthzRequest;
use crate::metrics::Metrics;
use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest, CheckResponse};
use envoy_types::ext_authz::v3::CheckRequestExt;
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub struct AuthzService<A> {
    engine: Arc<arc_swap::ArcSwap<Authorizer<A>>>,
    metrics: Arc<Metrics>,
}

impl<A> AuthzService<A> {
    pub fn new(engine: Arc<arc_swap::ArcSwap<Authorizer<A>>>, metrics: Arc<Metrics>) -> Self {
        AuthzService { engine, metrics }
    }
}

#[tonic::async_trait]
impl<A: Authenticator> Authorization for AuthzService<A> {
    async fn check(&self, request: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        let started = Instant::now();
        let _in_flight = self.metrics.in_flight();
        // Answer before Envoy gives up: 90 % of its gRPC deadline.
        let envoy_deadline = caller_deadline(request.metadata().get("grpc-timeout").and_then(|v| v.to_str().ok()));
        let check = request.into_inner();
        // Without trace export nothing consumes the span: then none is made.
        let span = decision_event::span(Front::Grpc);
        if let Some(headers) = check.get_client_headers().filter(|_| !span.is_disabled()) {
            // W3C traceparent (and B3 when configured) from the client's request: our span joins the mesh trace.
            let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(headers));
            let _ = span.set_parent(parent);
        }
        let req = AuthzRequest::from_check(check);
        // One atomic load: this check keeps this engine even if a reload swaps it meanwhile.
        let engine = self.engine.load_full();
        let decide = engine.engine().decide(&req).instrument(span.clone());
        let outcome = match envoy_deadline {
            Some(d) => ENVOY_DEADLINE.scope(d, decide).await,
            None => decide.await,
        };
        decision_event::record(&span, Front::Grpc, &req, &outcome, started, &self.metrics);
        Ok(Response::new(crate::respond::envoy::check_response(
            engine.responder(),
            &outcome,
        )))
    }
}
