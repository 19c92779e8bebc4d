//! The HTTP front door (`[forward_auth]`): `/forward-auth` for nginx,
//! Caddy and Traefik, `<envoy_path_prefix>/…` for Envoy's `http_service`.
//! Same engine, same decision event and same answers as the gRPC Check; only
//! the extractor (`extract::forwarded`) and the responder (`respond::http`)
//! differ.

use super::decision_event::{self, Front};
use crate::authn::Authenticator;
use crate::authorizer::Authorizer;
use crate::extract::forwarded::{self, ForwardAuthConfig, FORWARD_AUTH_PATH};
use crate::metrics::Metrics;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Response, StatusCode, Uri};
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct FrontDoor<A> {
    engine: Arc<arc_swap::ArcSwap<Authorizer<A>>>,
    metrics: Arc<Metrics>,
    config: ForwardAuthConfig,
}

pub fn router<A: Authenticator>(
    engine: Arc<arc_swap::ArcSwap<Authorizer<A>>>,
    metrics: Arc<Metrics>,
    config: ForwardAuthConfig,
) -> Router {
    Router::new().fallback(handle::<A>).with_state(Arc::new(FrontDoor {
        engine,
        metrics,
        config,
    }))
}

async fn handle<A: Authenticator>(State(door): State<Arc<FrontDoor<A>>>, request: Request) -> Response<Body> {
    let started = Instant::now();
    let (parts, _body) = request.into_parts();
    let (method, uri, headers) = (parts.method, parts.uri, parts.headers);
    let path = uri.path();
    let trusted = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(addr)| door.config.trusts(addr.ip()));
    let req = if path == FORWARD_AUTH_PATH {
        forwarded::from_forward_auth(&door.config, trusted, &headers)
    } else if let Some(rest) = envoy_rest(&door.config.envoy_path_prefix, &uri) {
        forwarded::from_envoy_http(method.as_str(), rest, trusted, &headers)
    } else {
        let mut r = Response::new(Body::from(
            "not found: this port answers /forward-auth and the Envoy prefix\n",
        ));
        *r.status_mut() = StatusCode::NOT_FOUND;
        return r;
    };
    let _in_flight = door.metrics.in_flight();
    let span = decision_event::span(Front::Http);
    if !span.is_disabled() {
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&opentelemetry_http::HeaderExtractor(&headers))
        });
        let _ = span.set_parent(parent);
    }
    // One atomic load: this call keeps this engine even if a reload swaps it meanwhile.
    let authorizer = door.engine.load_full();
    let outcome = authorizer.engine().decide(&req).instrument(span.clone()).await;
    decision_event::record(&span, Front::Http, &req, &outcome, started, &door.metrics);
    crate::respond::http::forward_auth_response(authorizer.responder(), &outcome)
}

/// What follows `prefix` in the request target (path and query), when the
/// path is the prefix or under it.
fn envoy_rest<'u>(prefix: &str, uri: &'u Uri) -> Option<&'u str> {
    let target = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    let rest = target.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_prefix_is_a_whole_segment() {
        let uri = |s: &str| s.parse::<Uri>().expect("uri");
        assert_eq!(envoy_rest("/ext-authz", &uri("/ext-authz/date?x=1")), Some("/date?x=1"));
        assert_eq!(envoy_rest("/ext-authz", &uri("/ext-authz")), Some(""));
        assert_eq!(envoy_rest("/ext-authz", &uri("/ext-authz?x")), Some("?x"));
        assert_eq!(envoy_rest("/ext-authz", &uri("/ext-authzdate")), None);
        assert_eq!(envoy_rest("/ext-authz", &uri("/date")), None);
    }
}
