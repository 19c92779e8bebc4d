//! An explained decision as a plain value: what the engine decided, why,
//! step by step, and what the caller and the upstream would see. The admin
//! `Explain` RPC and `hydra-authz check` both render this one value.

use crate::authn::Authenticator;
use crate::authorizer::Authorizer;
use crate::decision::verdict::Decision;
use crate::extract::AuthzRequest;
use std::borrow::Cow;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Explanation {
    pub allowed: bool,
    /// What the client would get (200 on allow).
    pub http_status: u16,
    /// "allowed" or the deny label.
    pub reason: String,
    pub detail: String,
    pub rule_id: String,
    pub required_scopes: Vec<String>,
    /// Alternative scope sets, each space-separated.
    pub any_of: Vec<String>,
    pub granted_scopes: Vec<String>,
    pub client_id: String,
    pub subject: String,
    pub steps: Vec<String>,
    /// On allow: what the upstream request gets and loses.
    pub headers_to_set: BTreeMap<String, String>,
    pub headers_to_remove: Vec<String>,
    /// On deny: what the client gets.
    pub response_headers: BTreeMap<String, String>,
    pub response_body: String,
}

/// Run the engine in explain mode (no side effects) and describe the result.
pub async fn explain<A: Authenticator>(authorizer: &Authorizer<A>, req: &AuthzRequest) -> Explanation {
    let (o, steps) = authorizer.engine().explain(req).await;
    let responder = authorizer.responder();
    let identity = o.identity.clone().unwrap_or_default();
    let mut e = Explanation {
        allowed: o.is_allowed(),
        rule_id: o.rule_id.as_deref().unwrap_or_default().to_owned(),
        required_scopes: o.required_scopes.to_vec(),
        any_of: o.any_of.iter().map(|set| set.join(" ")).collect(),
        granted_scopes: identity.scopes.iter().map(|s| s.to_string()).collect(),
        client_id: identity.client_id.as_deref().unwrap_or_default().to_owned(),
        subject: identity.subject.as_deref().unwrap_or_default().to_owned(),
        steps,
        ..Default::default()
    };
    match &o.decision {
        Decision::Allow => {
            e.http_status = 200;
            e.reason = "allowed".into();
            let h = responder.upstream_headers_for(&o);
            // A live signed identity JWT is a credential for the upstream:
            // explanations say it would be set, never show it.
            e.headers_to_set = h
                .set
                .into_iter()
                .map(|(k, v)| match responder.jwt_header() {
                    Some(jwt) if jwt == k => (k.into_owned(), "(signed identity JWT, not shown)".to_owned()),
                    _ => (k.into_owned(), v.into_owned()),
                })
                .collect();
            e.headers_to_remove = h.remove.into_iter().map(Cow::into_owned).collect();
        }
        Decision::Deny(reason) => {
            e.http_status = reason.http_status();
            e.reason = reason.label().into();
            e.detail = reason.detail();
            e.response_headers = responder.deny_headers(reason).into_iter().collect();
            e.response_body = super::Responder::problem_body(reason);
        }
    }
    e
}
