//! End to end: curl-like requests through a real Envoy, whose ext_authz
//! filter calls hydra-authz, which introspects tokens at a real OAuth2 server
//! (npm oidc-provider). The upstream echoes the headers it received.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use support::stack::{http, Stack};

struct Reply {
    status: StatusCode,
    www: Option<String>,
    body: Value,
}

async fn send(stack: &Stack, method: Method, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = http().request(method, stack.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("request through Envoy");
    let status = r.status();
    let www = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ascii").to_owned());
    let text = r.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply { status, www, body }
}

fn upstream_header<'a>(r: &'a Reply, name: &str) -> Option<&'a Value> {
    r.body["headers"].get(name)
}

#[tokio::test]
async fn seed_scenario_through_real_envoy_and_oauth2_server() {
    let stack = Stack::start().await;
    let reader = stack.oauth2.token("reader", "read_date").await;
    let writer = stack.oauth2.token("writer", "post_echo").await;
    let auth_r = format!("Bearer {reader}");
    let auth_w = format!("Bearer {writer}");

    // Reader may GET /date; the upstream learns who called.
    let r = send(&stack, Method::GET, "/date", &[("authorization", &auth_r)]).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(upstream_header(&r, "x-client-id"), Some(&Value::from("reader")));
    assert_eq!(upstream_header(&r, "x-scopes"), Some(&Value::from("read_date")));
    assert_eq!(
        upstream_header(&r, "x-subject"),
        None,
        "oidc-provider sends no sub for client_credentials"
    );

    // Reader may not POST /echo.
    let r = send(&stack, Method::POST, "/echo", &[("authorization", &auth_r)]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        r.www.as_deref(),
        Some("Bearer realm=\"hydra-authz\", error=\"insufficient_scope\", scope=\"post_echo\"")
    );
    assert_eq!(r.body["type"], "urn:hydra-authz:problem:insufficient_scope");

    // Writer: the reverse.
    let r = send(&stack, Method::POST, "/echo", &[("authorization", &auth_w)]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(upstream_header(&r, "x-client-id"), Some(&Value::from("writer")));
    let r = send(&stack, Method::GET, "/date", &[("authorization", &auth_w)]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // No token, garbage token, malformed header.
    let r = send(&stack, Method::GET, "/date", &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.www.as_deref(), Some("Bearer realm=\"hydra-authz\""));
    let r = send(&stack, Method::GET, "/date", &[("authorization", "Bearer garbage")]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.www.as_deref().is_some_and(|w| w.contains("error=\"invalid_token\"")));
    let r = send(&stack, Method::GET, "/date", &[("authorization", "Basic cmVhZGVyOnM=")]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // No rule for this route: default deny.
    let r = send(&stack, Method::GET, "/admin", &[("authorization", &auth_r)]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body["type"], "urn:hydra-authz:problem:no_rule");

    // A client-sent identity is overwritten on allow...
    let r = send(
        &stack,
        Method::GET,
        "/date",
        &[("authorization", &auth_r), ("x-client-id", "admin")],
    )
    .await;
    assert_eq!(upstream_header(&r, "x-client-id"), Some(&Value::from("reader")));
    // ...and removed on a public route (context_extensions public=true).
    let r = send(
        &stack,
        Method::GET,
        "/public",
        &[("x-client-id", "admin"), ("x-scopes", "root")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(upstream_header(&r, "x-client-id"), None);
    assert_eq!(upstream_header(&r, "x-scopes"), None);

    // Per-route scopes from Envoy context_extensions and route metadata.
    let r = send(&stack, Method::GET, "/ctx/date", &[("authorization", &auth_r)]).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = send(&stack, Method::GET, "/ctx/date", &[("authorization", &auth_w)]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = send(&stack, Method::GET, "/meta/echo", &[("authorization", &auth_w)]).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = send(&stack, Method::GET, "/meta/echo", &[("authorization", &auth_r)]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Revoked at the OAuth2 server: refused on the very next request.
    stack.oauth2.revoke("reader", &reader).await;
    let r = send(&stack, Method::GET, "/date", &[("authorization", &auth_r)]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.www.as_deref().is_some_and(|w| w.contains("error=\"invalid_token\"")));
}

#[tokio::test]
async fn oauth2_server_down_is_503_through_envoy() {
    let mut stack = Stack::start().await;
    let reader = stack.oauth2.token("reader", "read_date").await;
    let auth = format!("Bearer {reader}");
    let r = send(&stack, Method::GET, "/date", &[("authorization", &auth)]).await;
    assert_eq!(r.status, StatusCode::OK);

    stack.oauth2.stop().await;
    let r = send(&stack, Method::GET, "/date", &[("authorization", &auth)]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.body["type"], "urn:hydra-authz:problem:introspection_unavailable");
    assert_eq!(r.body["status"], 503);
}

#[tokio::test]
async fn hydra_authz_down_is_denied_by_envoy_not_allowed() {
    let stack = Stack::start().await;
    let reader = stack.oauth2.token("reader", "read_date").await;
    let auth = format!("Bearer {reader}");
    let Stack {
        authz, envoy, oauth2, ..
    } = stack;
    authz.shutdown().await.expect("shutdown");
    let url = format!("http://{}/date", envoy.listener);
    let r = http()
        .get(url)
        .header("authorization", auth)
        .send()
        .await
        .expect("request");
    // failure_mode_allow: false + status_on_error 503 in deploy/envoy/envoy.yaml.
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    drop(oauth2);
}
