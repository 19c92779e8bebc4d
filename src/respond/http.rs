//! An [`Outcome`] as the answer to an HTTP forward-auth call (nginx
//! `auth_request`, Caddy `forward_auth`, Traefik `ForwardAuth`, Envoy
//! `http_service`): 200 with the identity headers for the proxy to copy
//! upstream, or the deny status with the same `WWW-Authenticate` and
//! problem+json body as the gRPC path.

use super::{Responder, UpstreamHeaders};
use crate::decision::verdict::Decision;
use crate::decision::Outcome;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Response, StatusCode};

/// Envoy's `http_service` removes the headers this names from the upstream
/// request; it is applied after `allowed_upstream_headers`, so it never
/// names a header we set. Proxies that cannot read it strip client copies
/// in their own config (see deploy/nginx, deploy/caddy).
pub const HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

pub fn forward_auth_response(responder: &Responder, o: &Outcome) -> Response<Body> {
    match &o.decision {
        Decision::Allow => {
            let h = responder.upstream_headers_for(o);
            responder.log_refused(&h, o);
            allow(h)
        }
        Decision::Deny(reason) => {
            let mut r = Response::new(Body::from(Responder::problem_body(reason)));
            *r.status_mut() = StatusCode::from_u16(reason.http_status()).unwrap_or(StatusCode::FORBIDDEN);
            for (k, v) in responder.deny_headers(reason) {
                insert(&mut r, &k, &v);
            }
            r
        }
    }
}

fn allow(h: UpstreamHeaders<'_>) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    insert(&mut r, "cache-control", "no-store");
    for (k, v) in &h.set {
        insert(&mut r, k, v);
    }
    let remove: Vec<&str> = h
        .remove
        .iter()
        .map(|name| name.as_ref())
        .filter(|name| !h.set.iter().any(|(set, _)| set.eq_ignore_ascii_case(name)))
        .collect();
    if !remove.is_empty() {
        insert(&mut r, HEADERS_TO_REMOVE, &remove.join(","));
    }
    r
}

/// Names come from validated config and values passed
/// `is_header_value_safe`; anything else is left out rather than panicking.
fn insert(r: &mut Response<Body>, name: &str, value: &str) {
    if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
        r.headers_mut().insert(k, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::Identity;
    use crate::decision::verdict::DenyReason;
    use crate::respond::headers::HeadersConfig;
    use std::sync::Arc;

    fn outcome(decision: Decision, identity: Option<Identity>, public: bool) -> Outcome {
        Outcome {
            decision,
            rule_id: Some("r".into()),
            public,
            identity: identity.map(Arc::new),
            ..Outcome::new()
        }
    }

    fn responder() -> Responder {
        Responder::new(HeadersConfig::default(), "api".into())
    }

    fn header<'r>(r: &'r Response<Body>, name: &str) -> Option<&'r str> {
        r.headers().get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn allow_sets_identity_and_lists_only_headers_it_does_not_set() {
        let who = Identity {
            client_id: Some("reader".into()),
            scopes: vec!["read_date".into()].into(),
            ..Default::default()
        };
        let r = forward_auth_response(&responder(), &outcome(Decision::Allow, Some(who), false));
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-client-id"), Some("reader"));
        assert_eq!(header(&r, "x-scopes"), Some("read_date"));
        assert_eq!(header(&r, "x-subject"), None);
        let remove: Vec<&str> = header(&r, HEADERS_TO_REMOVE).expect("list").split(',').collect();
        assert!(
            remove.contains(&"x-subject") && remove.contains(&"x_client_id"),
            "{remove:?}"
        );
        assert!(
            !remove.contains(&"x-client-id") && !remove.contains(&"x-scopes"),
            "{remove:?}"
        );
    }

    #[test]
    fn public_route_sets_nothing_and_removes_all() {
        let who = Identity {
            client_id: Some("reader".into()),
            ..Default::default()
        };
        let r = forward_auth_response(&responder(), &outcome(Decision::Allow, Some(who), true));
        assert_eq!(header(&r, "x-client-id"), None);
        let remove = header(&r, HEADERS_TO_REMOVE).expect("list");
        for name in ["x-client-id", "x-scopes", "x-subject", "x_scopes"] {
            assert!(remove.split(',').any(|n| n == name), "{name} in {remove}");
        }
    }

    #[test]
    fn deny_is_the_same_answer_as_grpc() {
        let r = forward_auth_response(
            &responder(),
            &outcome(
                Decision::Deny(DenyReason::InsufficientScope(vec!["post_echo".into()])),
                None,
                false,
            ),
        );
        assert_eq!(r.status(), 403);
        assert_eq!(
            header(&r, "www-authenticate"),
            Some("Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"post_echo\"")
        );
        assert_eq!(header(&r, "content-type"), Some("application/problem+json"));
        assert_eq!(header(&r, "x-client-id"), None);
        let r = forward_auth_response(
            &responder(),
            &outcome(
                Decision::Deny(DenyReason::TooLarge(
                    crate::extract::refusal::SizeProblem::TooManyHeaders,
                )),
                None,
                false,
            ),
        );
        assert_eq!(r.status(), 431);
    }
}
