//! Envoy's `envoy.service.auth.v3.Authorization/Check`: extract, decide,
//! respond, and log one line per decision.

use crate::authn::Authenticator;
use crate::decision::request::AuthzRequest;
use crate::decision::verdict::Decision;
use crate::decision::{Engine, Outcome};
use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest, CheckResponse};
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request, Response, Status};

pub struct AuthzService<A> {
    engine: Arc<Engine<A>>,
}

impl<A> AuthzService<A> {
    pub fn new(engine: Arc<Engine<A>>) -> Self {
        AuthzService { engine }
    }
}

#[tonic::async_trait]
impl<A: Authenticator> Authorization for AuthzService<A> {
    async fn check(&self, request: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        let started = Instant::now();
        let req = AuthzRequest::from_check(request.into_inner());
        let outcome = self.engine.decide(&req).await;
        log_decision(&req, &outcome, started);
        Ok(Response::new(self.engine.respond(&outcome)))
    }
}

/// The one line per decision. Fields only; the token appears as its fingerprint.
fn log_decision(req: &AuthzRequest, o: &Outcome, started: Instant) {
    let (decision, status, reason) = match &o.decision {
        Decision::Allow => ("allow", 200, "allowed"),
        Decision::Deny(r) => ("deny", r.http_status(), r.label()),
    };
    tracing::info!(
        target: "hydra_authz::decision",
        decision,
        status,
        reason,
        rule_id = o.rule_id.as_deref().unwrap_or("-"),
        client_id = o.identity.as_ref().and_then(|i| i.client_id.as_deref()).unwrap_or("-"),
        method = %req.method,
        path = %req.path,
        latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        token_fp = o.token_fingerprint.as_deref().unwrap_or("-"),
        "decision"
    );
}
