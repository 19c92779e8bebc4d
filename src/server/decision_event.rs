//! One decision event per check, whichever front door it came through: the
//! span (a child of the caller's trace), its attributes, the decision's log
//! line and the decision metrics, computed once and emitted from here.

use crate::decision::verdict::{Decision, DenyReason};
use crate::decision::Outcome;
use crate::extract::AuthzRequest;
use crate::metrics::Metrics;
use crate::telemetry::{capped, Escaped};
use std::time::Instant;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Which front door asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// Envoy's gRPC `Check`.
    Grpc,
    /// An HTTP forward-auth call (nginx, Caddy, Traefik, Envoy http_service).
    Http,
}

impl Front {
    pub fn label(self) -> &'static str {
        match self {
            Front::Grpc => "grpc",
            Front::Http => "http",
        }
    }
}

/// The span of one check; none at all when nothing consumes spans (no
/// trace export), so the hot path pays nothing for it.
pub fn span(front: Front) -> tracing::Span {
    if !crate::telemetry::spans_enabled() {
        return tracing::Span::none();
    }
    match front {
        Front::Grpc => tracing::info_span!("envoy.service.auth.v3.Authorization/Check", otel.kind = "server"),
        Front::Http => tracing::info_span!("forward-auth", otel.kind = "server"),
    }
}

/// Span attributes, the log line and the metrics of one decision.
pub fn record(
    span: &tracing::Span,
    front: Front,
    req: &AuthzRequest,
    o: &Outcome,
    started: Instant,
    metrics: &Metrics,
) {
    let (decision, status, reason) = summary(o);
    if !span.is_disabled() {
        annotate(span, front, req, o, status, reason);
    }
    span.in_scope(|| log_decision(front, req, o, started));
    metrics.observe_decision(decision, reason, started.elapsed());
}

/// Decided on an identity verified earlier, during an issuer outage.
fn served_stale(o: &Outcome) -> bool {
    o.identity.as_ref().is_some_and(|i| i.served_stale)
}

fn summary(o: &Outcome) -> (&'static str, u16, &'static str) {
    match &o.decision {
        Decision::Allow => (crate::metrics::ALLOWED.decision, 200, crate::metrics::ALLOWED.reason),
        Decision::Deny(r) => ("deny", r.http_status(), r.label()),
    }
}

/// Span attributes (OpenTelemetry only; the log line carries its own fields).
fn annotate(span: &tracing::Span, front: Front, req: &AuthzRequest, o: &Outcome, status: u16, reason: &'static str) {
    if front == Front::Grpc {
        span.set_attribute("rpc.system", "grpc");
        span.set_attribute("rpc.service", "envoy.service.auth.v3.Authorization");
        span.set_attribute("rpc.method", "Check");
    }
    span.set_attribute("hydra_authz.front", front.label());
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
        (Decision::Deny(DenyReason::InsufficientScope(_)), _) => "insufficient",
        (Decision::Allow, Some(_)) => "granted",
        _ => "not_checked",
    };
    span.set_attribute("hydra_authz.scopes.result", scope_check);
    if served_stale(o) {
        span.set_attribute("hydra_authz.stale", true);
    }
    // hydra_authz.cache.hit is set by the cache layer when a token is verified.
}

/// The one line per decision. Fields only; the token appears as its
/// fingerprint; `stale=true` marks an allow by stale-if-error; `detail`
/// (our prose, which may quote the issuer) is a quoted string. A check we could not decide (5xx) is logged at WARN, with
/// why, so Hydra trouble stands out without a second line; except while
/// the circuit is open or checks are shed: the breaker and the shedder log
/// their own state changes, and a WARN per check would flood a log kept at
/// `warn` during an outage.
fn log_decision(front: Front, req: &AuthzRequest, o: &Outcome, started: Instant) {
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
                front = front.label(),
                status,
                reason,
                detail = &*capped(&detail),
                rule_id = %Escaped(o.rule_id.as_deref().unwrap_or("-")),
                client_id = %Escaped(o.identity.as_ref().and_then(|i| i.client_id.as_deref()).unwrap_or("-")),
                method = %Escaped(&req.method),
                host = %Escaped(&req.host),
                path = %Escaped(&req.path),
                latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                token_fp = o.token_fingerprint.as_deref().unwrap_or("-"),
                stale = served_stale(o),
                "decision"
            )
        };
    }
    let announced = matches!(
        &o.decision,
        Decision::Deny(DenyReason::Unavailable(kind)) if kind.is_announced()
    );
    if status >= 500 && !announced {
        line!(tracing::Level::WARN);
    } else {
        line!(tracing::Level::INFO);
    }
}
