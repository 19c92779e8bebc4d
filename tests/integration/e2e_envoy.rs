//! End to end: curl-like requests through a real Envoy, whose ext_authz
//! filter calls hydra-authz, which introspects tokens at a real OAuth2 server
//! (npm oidc-provider). The upstream echoes the headers it received.

use crate::support;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use support::stack::{http, AuthzHop, Stack};

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
    // Forwarded facts the client wrote itself never reach the upstream (the
    // rules saw :authority; an upstream routing on X-Forwarded-Host would
    // serve another host), and X-Forwarded-For is the peer Envoy saw.
    let forged = [
        ("x-forwarded-host", "admin.example.com"),
        ("forwarded", "host=admin.example.com"),
        ("x-original-uri", "/admin"),
        ("x-forwarded-uri", "/admin"),
        ("x-original-url", "/admin"),
        ("x-rewrite-url", "/admin"),
        // Scheme, port, prefix and address headers frameworks trust.
        ("x-forwarded-ssl", "on-admin"),
        ("x-forwarded-scheme", "https-admin"),
        ("x-forwarded-port", "8443"),
        ("x-forwarded-prefix", "/admin"),
        ("x-real-ip", "10.9.8.7"),
        ("front-end-https", "on-admin"),
        ("x-url-scheme", "https-admin"),
    ];
    let mut headers = vec![("authorization", auth_r.as_str()), ("x-forwarded-for", "10.9.8.7")];
    headers.extend_from_slice(&forged);
    let r = send(&stack, Method::GET, "/date", &headers).await;
    // The peer Envoy saw, not the client's own list (an upstream reading
    // the leftmost entry would trust it).
    let xff = upstream_header(&r, "x-forwarded-for").and_then(Value::as_str);
    assert!(xff.is_some_and(|x| !x.is_empty() && !x.contains("10.9.8.7")), "{xff:?}");
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    for (k, v) in forged {
        let got = upstream_header(&r, k).and_then(Value::as_str);
        assert!(
            !got.is_some_and(|g| g.contains(v)),
            "the client's {k} reached the upstream: {:?}",
            r.body
        );
    }

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

/// deploy/envoy/mtls-to-hydra-authz.yaml, as shipped: Envoy reaches
/// hydra-authz over mutual TLS (hydra-authz serves TLS only, so every answer
/// below crossed the TLS hop) and decisions are unchanged.
#[tokio::test]
async fn envoy_reaches_hydra_authz_over_mtls() {
    let stack = Stack::start_with(AuthzHop::MutualTls).await;
    let reader = stack.oauth2.token("reader", "read_date").await;
    let auth = format!("Bearer {reader}");
    let r = send(&stack, Method::GET, "/date", &[("authorization", &auth)]).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(upstream_header(&r, "x-client-id"), Some(&Value::from("reader")));
    let r = send(&stack, Method::POST, "/echo", &[("authorization", &auth)]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = send(&stack, Method::GET, "/date", &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(envoy_stat(&stack, "cluster.hydra_authz.ssl.handshake").await >= 1);
}

/// One counter from Envoy's admin `/stats`.
async fn envoy_stat(stack: &Stack, name: &str) -> u64 {
    let url = format!(
        "http://{}/stats?filter=^{}$",
        stack.envoy.admin,
        name.replace('.', "\\.")
    );
    let text = http().get(url).send().await.expect("stats").text().await.expect("body");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// hydra-authz requires a client certificate from its CA: an Envoy without
/// one cannot reach it, and fails closed.
#[tokio::test]
async fn envoy_without_a_client_certificate_is_refused_and_fails_closed() {
    let stack = Stack::start_with(AuthzHop::TlsWithoutClientCert).await;
    let reader = stack.oauth2.token("reader", "read_date").await;
    let auth = format!("Bearer {reader}");
    let r = send(&stack, Method::GET, "/date", &[("authorization", &auth)]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    assert!(upstream_header(&r, "x-client-id").is_none());
    // Refused by hydra-authz at the handshake, not by Envoy's own checks.
    assert!(envoy_stat(&stack, "cluster.hydra_authz.ssl.connection_error").await >= 1);
    assert_eq!(envoy_stat(&stack, "cluster.hydra_authz.ssl.fail_verify_error").await, 0);
    assert_eq!(envoy_stat(&stack, "cluster.hydra_authz.ssl.handshake").await, 0);
}

/// A raw HTTP/1.1 request, so the path reaches Envoy byte for byte (HTTP
/// client libraries normalize `..` and escapes themselves).
async fn raw(stack: &Stack, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(stack.envoy.listener)
        .await
        .expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: api.local\r\nConnection: close\r\nContent-Length: 0\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp).await;
    let status = resp.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[tokio::test]
async fn path_tricks_never_reach_a_rule_they_should_not() {
    let stack = Stack::start().await;
    let writer = format!("Bearer {}", stack.oauth2.token("writer", "post_echo").await);
    let reader = format!("Bearer {}", stack.oauth2.token("reader", "read_date").await);
    // The writer may not read the date, however the path is spelled...
    for path in [
        "/date",
        "//date",
        "/%64ate",
        "/DATE",
        "/date/",
        "/date;x",
        "/date%3Bx",
        "/./date",
        "/x/../date",
        "/echo/../date",
        "/echo/%2e%2e/date",
        "/echo%2F..%2Fdate",
        "/echo\\..\\date",
        "/d%C3%A0te",
    ] {
        let (status, body) = raw(&stack, "GET", path, &[("authorization", &writer)]).await;
        assert_ne!(status, 200, "writer reached {path}: {body}");
        assert!(status >= 400, "{path}: {status}");
    }
    // ...and the reader may not post an echo.
    for path in [
        "/echo",
        "//echo",
        "/%65cho",
        "/date/../echo",
        "/date/%2e%2e/echo",
        "/echo;x",
        "/ECHO",
    ] {
        let (status, body) = raw(&stack, "POST", path, &[("authorization", &reader)]).await;
        assert_ne!(status, 200, "reader posted to {path}: {body}");
    }
    // A POST the upstream framework would run as another method is refused
    // (400), whatever the token may do.
    for (path, headers) in [
        ("/echo", vec![("x-http-method-override", "DELETE")]),
        ("/echo", vec![("X-HTTP-Method", "PUT")]),
        ("/echo?_method=DELETE", vec![]),
    ] {
        let mut headers = headers;
        headers.push(("authorization", &writer));
        let (status, body) = raw(&stack, "POST", path, &headers).await;
        assert_eq!(status, 400, "{path} {headers:?}: {body}");
        assert!(
            body.contains("method_override") || body.contains("method override"),
            "{body}"
        );
    }
    // Not only a POST: Slim and Flask's middleware override a GET too.
    let (status, body) = raw(
        &stack,
        "GET",
        "/date",
        &[("authorization", &reader), ("x-http-method-override", "DELETE")],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // The legitimate spellings still work.
    for path in ["/date", "//date", "/date?x=1", "/%64ate"] {
        assert_eq!(
            raw(&stack, "GET", path, &[("authorization", &reader)]).await.0,
            200,
            "{path}"
        );
    }
}

#[tokio::test]
async fn spoofed_identity_headers_in_every_form_end_as_ours() {
    let stack = Stack::start().await;
    let reader = format!("Bearer {}", stack.oauth2.token("reader", "read_date").await);
    let spoofs: Vec<Vec<(&str, &str)>> = vec![
        vec![("x-client-id", "admin")],
        vec![("X-Client-Id", "admin")],
        vec![("X-CLIENT-ID", "admin"), ("x-client-id", "root")],
        vec![("x-client-id", "admin, reader")],
        vec![("x-scopes", "admin post_echo"), ("X-Scopes", "root")],
        vec![("x-subject", "root"), ("X-Subject", "admin")],
    ];
    for spoof in spoofs {
        let mut headers = vec![("authorization", reader.as_str())];
        headers.extend(spoof.iter().copied());
        let (status, body) = raw(&stack, "GET", "/date", &headers).await;
        assert_eq!(status, 200, "{spoof:?}");
        let seen: serde_json::Value = serde_json::from_str(&body).expect("echo json");
        assert_eq!(seen["headers"]["x-client-id"], "reader", "{spoof:?}: {body}");
        assert_eq!(seen["headers"]["x-scopes"], "read_date", "{spoof:?}: {body}");
        assert!(
            seen["headers"].get("x-subject").is_none(),
            "no sub from oidc-provider, so removed: {spoof:?}: {body}"
        );
    }
    // On a public route every identity header is stripped, in any spelling.
    let (status, body) = raw(
        &stack,
        "GET",
        "/public",
        &[("X-Client-Id", "admin"), ("x-scopes", "root"), ("X-SUBJECT", "x")],
    )
    .await;
    assert_eq!(status, 200);
    let seen: serde_json::Value = serde_json::from_str(&body).expect("echo json");
    for h in ["x-client-id", "x-scopes", "x-subject"] {
        assert!(seen["headers"].get(h).is_none(), "{h}: {body}");
    }
}
