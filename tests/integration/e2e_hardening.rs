//! Issue 12 through a real Envoy (the shipped envoy.yaml): identity-header
//! twins, method case and host spellings, where the bypass would live.

use crate::support;

use hydra_authz::config::{Config, RuleConfig};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use support::hydra::FakeHydra;
use support::stack::{envoy_in_front_of_edited, http};

struct Env {
    hydra: FakeHydra,
    _authz: hydra_authz::server::RunningServer,
    envoy: hydra_authz::demo::envoy::Envoy,
}

async fn env(rules: impl FnOnce(&mut Config), edit: impl FnOnce(String) -> String) -> Env {
    let hydra = FakeHydra::start().await;
    let mut config = support::config_for(&hydra.introspection_url());
    rules(&mut config);
    let authz = support::start_authz(&config).await;
    let envoy = envoy_in_front_of_edited(&authz, None, edit).await;
    Env {
        hydra,
        _authz: authz,
        envoy,
    }
}

/// The shipped kit minus its underscore guard: what a deployment that copied
/// only our authorizer, not our Envoy settings, would run.
fn without_underscore_guard(yaml: String) -> String {
    let out: String = yaml
        .lines()
        .filter(|l| !l.contains("common_http_protocol_options") && !l.contains("headers_with_underscores_action"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(
        out.len(),
        yaml.len() + 1,
        "the shipped envoy.yaml sets headers_with_underscores_action"
    );
    out
}

fn public_health(c: &mut Config) {
    c.rules.push(RuleConfig {
        id: "health".into(),
        path: "/health".into(),
        public: true,
        ..Default::default()
    });
}

async fn get(e: &Env, method: &str, path: &str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut req = http().request(
        Method::from_bytes(method.as_bytes()).expect("method"),
        format!("http://{}{path}", e.envoy.listener),
    );
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("request through Envoy");
    let status = r.status();
    let text = r.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

const SPOOFS: [(&str, &str); 6] = [
    ("x_client_id", "admin"),
    ("X_Client_Id", "admin"),
    ("x-client_id", "admin"),
    ("x_client-id", "admin"),
    ("x_scopes", "admin"),
    ("x_subject", "root"),
];

/// Every header the upstream saw whose name, read as CGI/PHP/nginx read it
/// ('_' as '-', any case), is one of ours.
fn identity_headers_seen(body: &Value) -> Vec<(String, Value)> {
    body["headers"]
        .as_object()
        .expect("echoed headers")
        .iter()
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase().replace('_', "-");
            matches!(k.as_str(), "x-client-id" | "x-scopes" | "x-subject")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[tokio::test]
async fn the_shipped_kit_rejects_underscore_twins() {
    let e = env(|_| {}, |y| y).await;
    let token = e.hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    let auth = format!("Bearer {token}");
    for (name, value) in SPOOFS {
        let (status, _) = get(&e, "GET", "/date", &[("authorization", &auth), (name, value)]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}");
    }
    let (status, _) = get(&e, "GET", "/date", &[("authorization", &auth)]).await;
    assert_eq!(status, StatusCode::OK);
}

/// Dotted twins (`X.Client.Id`, read by PHP as `X-Client-Id`; also of a
/// forwarded header) pass Envoy's underscore guard; the gRPC Check sees
/// every header, and hydra-authz refuses them, on a protected and on a
/// public route, before the upstream sees anything. A dotted method
/// override is an override.
#[tokio::test]
async fn the_shipped_kit_refuses_dotted_twins() {
    let e = env(public_health, |y| y).await;
    let token = e.hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    let auth = format!("Bearer {token}");
    for path in ["/date", "/health"] {
        for name in [
            "X.Client.Id",
            "x.scopes",
            "x-client.id",
            "X.Subject",
            "X.Forwarded.Host",
        ] {
            let (status, body) = get(&e, "GET", path, &[("authorization", &auth), (name, "admin")]).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {name}: {body}");
            let detail = body["detail"].as_str().unwrap_or_default();
            assert!(
                detail.contains("spelled with a separator other than"),
                "{path} {name}: {body}"
            );
        }
    }
    let (status, body) = get(
        &e,
        "GET",
        "/date",
        &[("authorization", &auth), ("X.HTTP.Method.Override", "DELETE")],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // Other dotted names are none of our business.
    let (status, body) = get(&e, "GET", "/date", &[("authorization", &auth), ("x.trace.id", "1")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Without the kit's guard, hydra-authz itself removes every twin, on allow
/// and on a public route, and collapses duplicates of the real name.
#[tokio::test]
async fn hydra_authz_removes_underscore_and_case_twins_itself() {
    let e = env(public_health, without_underscore_guard).await;
    let token = e.hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    let auth = format!("Bearer {token}");
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend(SPOOFS);
    headers.extend([("X-Client-ID", "admin"), ("x-client-id", "root"), ("X-SCOPES", "admin")]);

    let (status, body) = get(&e, "GET", "/date", &headers).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut seen = identity_headers_seen(&body);
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen,
        vec![
            ("x-client-id".to_owned(), Value::from("reader")),
            ("x-scopes".to_owned(), Value::from("read_date")),
            ("x-subject".to_owned(), Value::from("reader")),
        ],
        "only our values, once each: {body}"
    );

    let (status, body) = get(&e, "GET", "/health", &headers[1..]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        identity_headers_seen(&body),
        vec![],
        "public route: no identity at all: {body}"
    );
}

/// `delete` (as HTTP/2 clients may send it, and Express reads as DELETE)
/// never reaches the weaker catch-all: refused, 400.
#[tokio::test]
async fn lowercase_methods_through_envoy_are_refused() {
    let e = env(support::guarded_rules, |y| y).await;
    let token = e.hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    let auth = format!("Bearer {token}");
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .expect("h2c client");
    for (method, want, problem) in [
        ("DELETE", StatusCode::FORBIDDEN, "insufficient_scope"),
        ("delete", StatusCode::BAD_REQUEST, "bad_request"),
    ] {
        let r = h2
            .request(
                Method::from_bytes(method.as_bytes()).expect("method"),
                format!("http://{}/items/1", e.envoy.listener),
            )
            .header("authorization", &auth)
            .send()
            .await
            .expect("request through Envoy");
        let status = r.status();
        let body = r.text().await.expect("body");
        // Envoy forwards `delete` as sent over HTTP/2; we refuse it.
        assert_eq!(status, want, "{method}: {body}");
        assert!(body.contains(problem), "{method}: {body}");
    }
    let (status, _) = get(&e, "GET", "/items/1", &[("authorization", &auth)]).await;
    assert_eq!(status, StatusCode::OK, "the catch-all still serves GET");
}

/// `Host: ADMIN.example.com.:port` is admin.example.com.
#[tokio::test]
async fn host_spellings_through_envoy_meet_the_host_rule() {
    let e = env(support::guarded_rules, |y| y).await;
    let token = e.hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    let auth = format!("Bearer {token}");
    for host in [
        "admin.example.com",
        "ADMIN.example.com",
        "admin.example.com.",
        "Admin.Example.Com.:8080",
    ] {
        let (status, body) = get(&e, "GET", "/date", &[("authorization", &auth), ("host", host)]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{host}: {body}");
        assert_eq!(body["type"], "urn:hydra-authz:problem:insufficient_scope", "{host}");
    }
    let (status, _) = get(
        &e,
        "GET",
        "/date",
        &[("authorization", &auth), ("host", "api.example.com")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

/// Envoy's `encode_raw_headers: true` sends the headers in `header_map`,
/// one line each, repeats not joined. Read the same as the joined map: the
/// seed answers hold, and two `Authorization` lines are two credentials
/// (400), never the last one.
#[tokio::test]
async fn raw_headers_from_envoy_are_read_like_the_joined_map() {
    let e = env(
        |c| {
            c.rules.insert(
                0,
                RuleConfig {
                    id: "cookie".into(),
                    path: "/cookie".into(),
                    scopes: vec!["read_date".into()],
                    token_from: vec!["cookie:session".into()],
                    ..Default::default()
                },
            )
        },
        |y| {
            let out = y.replace(
                "                      failure_mode_allow: false\n",
                "                      failure_mode_allow: false\n                      encode_raw_headers: true\n",
            );
            assert_ne!(out, y, "the shipped envoy.yaml sets failure_mode_allow once");
            out
        },
    )
    .await;
    let reader = e.hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    let writer = e.hydra.issuer.mint("writer", &["post_echo"]).expect("mint");
    let (r, w) = (format!("Bearer {reader}"), format!("Bearer {writer}"));
    let (status, body) = get(&e, "GET", "/date", &[("authorization", &r)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["headers"]["x-client-id"], "reader", "{body}");
    assert_eq!(get(&e, "GET", "/date", &[]).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(&e, "POST", "/echo", &[("authorization", &r)]).await.0,
        StatusCode::FORBIDDEN
    );
    // reqwest sends both lines; Envoy passes them as two header_map entries.
    let (status, body) = get(&e, "GET", "/date", &[("authorization", &w), ("authorization", &r)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // Raw values pass Envoy unchanged (in `headers` it would write '!' for
    // them): a cookie header the token is read from that is not UTF-8 is
    // refused, not read as "no token".
    let cookie = |v: Vec<u8>| async move {
        let value = reqwest::header::HeaderValue::from_bytes(&v).expect("obs-text is a header value");
        let r = http()
            .get(format!("http://{}/cookie", e.envoy.listener))
            .header("cookie", value)
            .send()
            .await
            .expect("request through Envoy");
        r.status()
    };
    assert_eq!(
        cookie(format!("session={reader}; x=1").into_bytes()).await,
        StatusCode::OK
    );
    let mut latin1 = format!("session={reader}; x=caf").into_bytes();
    latin1.push(0xe9);
    assert_eq!(cookie(latin1).await, StatusCode::BAD_REQUEST);
}
