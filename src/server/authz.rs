//! Envoy's `envoy.service.auth.v3.Authorization/Check`: extract, decide,
//! respond; one span (child of the caller's trace), one log line and the
//! decision metrics per check.

use crate::authn::resilience::{caller_deadline, ENVOY_DEADLINE};
use crate::authn::Authenticator;
use crate::authorizer::Authorizer;
use crate::decision::verdict::Decision;
use crate::decision::Outcome;
use crate::extract::AuthzRequest;
use crate::metrics::Metrics;
use crate::telemetry::{Escaped, EscapedText};
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
        let span = if crate::telemetry::spans_enabled() {
            tracing::info_span!("envoy.service.auth.v3.Authorization/Check", otel.kind = "server")
        } else {
            tracing::Span::none()
        };
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
        let (decision, status, reason) = summary(&outcome);
        if !span.is_disabled() {
            annotate(&span, &req, &outcome, status, reason);
        }
        span.in_scope(|| log_decision(&req, &outcome, started));
        self.metrics.observe_decision(decision, reason, started.elapsed());
        Ok(Response::new(crate::respond::envoy::check_response(
            engine.responder(),
            &outcome,
        )))
    }
}

fn summary(o: &Outcome) -> (&'static str, u16, &'static str) {
    match &o.decision {
        Decision::Allow => ("allow", 200, "allowed"),
        Decision::Deny(r) => ("deny", r.http_status(), r.label()),
    }
}

/// Span attributes (OpenTelemetry only; the log line carries its own fields).
fn annotate(span: &tracing::Span, req: &AuthzRequest, o: &Outcome, status: u16, reason: &'static str) {
    span.set_attribute("rpc.system", "grpc");
    span.set_attribute("rpc.service", "envoy.service.auth.v3.Authorization");
    span.set_attribute("rpc.method", "Check");
    span.set_attribute("http.request.method", req.method.clone());
    span.set_attribute("url.path", req.path.clone());
    span.set_attribute("hydra_authz.decision", if o.is_allowed() { "allow" } else { "deny" });
    span.set_attribute("hydra_authz.reason", reason);
    span.set_attribute("http.response.status_code", i64::from(status));
    if let Some(rule) = &o.rule_id {
        span.set_attribute("hydra_authz.rule_id", rule.clone());
    }
    if let Some(client) = o.identity.as_ref().and_then(|i| i.client_id.clone()) {
        span.set_attribute("hydra_authz.client_id", client);
    }
    if !o.required_scopes.is_empty() {
        span.set_attribute("hydra_authz.scopes.required", o.required_scopes.join(" "));
    }
    let scope_check = match (&o.decision, &o.identity) {
        (Decision::Deny(crate::decision::verdict::DenyReason::InsufficientScope(_)), _) => "insufficient",
        (Decision::Allow, Some(_)) => "granted",
        _ => "not_checked",
    };
    span.set_attribute("hydra_authz.scopes.result", scope_check);
    // hydra_authz.cache.hit is set by the cache layer when a token is verified.
}

/// The one line per decision. Fields only; the token appears as its
/// fingerprint. A check we could not decide (5xx) is logged at WARN, with
/// why, so Hydra trouble stands out without a second line; except while
/// the circuit is open or checks are shed: the breaker and the shedder log
/// their own state changes, and a WARN per check would flood a log kept at
/// `warn` during an outage.
fn log_decision(req: &AuthzRequest, o: &Outcome, started: Instant) {
    let (decision, status, reason) = summary(o);
    let detail = match &o.decision {
        Decision::Allow => String::new(),
        Decision::Deny(r) => match &o.failure {
            Some(why) => format!("{}: {why}", r.detail()),
            None => r.detail(),
        },
    };
    macro_rules! line {
        ($level:expr) => {
            tracing::event!(
                target: "hydra_authz::decision",
                $level,
                decision,
                status,
                reason,
                detail = %EscapedText(&detail),
                rule_id = %Escaped(o.rule_id.as_deref().unwrap_or("-")),
                client_id = %Escaped(o.identity.as_ref().and_then(|i| i.client_id.as_deref()).unwrap_or("-")),
                method = %Escaped(&req.method),
                host = %Escaped(&req.host),
                path = %Escaped(&req.path),
                latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                token_fp = o.token_fingerprint.as_deref().unwrap_or("-"),
                "decision"
            )
        };
    }
    let announced = matches!(
        &o.decision,
        Decision::Deny(crate::decision::verdict::DenyReason::Unavailable(kind)) if kind.is_announced()
    );
    if status >= 500 && !announced {
        line!(tracing::Level::WARN);
    } else {
        line!(tracing::Level::INFO);
    }
}
