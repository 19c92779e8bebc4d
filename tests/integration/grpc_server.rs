//! The gRPC server as Envoy sees it: every kind of request, the exact answer,
//! plus health, the admin Explain RPC, readiness and graceful shutdown.

use crate::support;

use hydra_authz::admin_proto::ExplainRequest;
use std::time::Duration;
use support::hydra::{FakeHydra, Fault};
use support::{bearer, Answer, Checker};

struct Env {
    hydra: FakeHydra,
    server: hydra_authz::server::RunningServer,
    check: Checker,
    reader: String,
    writer: String,
}

async fn env() -> Env {
    env_with(|_| {}).await
}

async fn env_with(f: impl FnOnce(&mut hydra_authz::config::Config)) -> Env {
    let (hydra, server, check) = support::authz_on_fake_hydra(f).await;
    let reader = hydra.issuer.mint("reader", &["read_date"]).expect("reader");
    let writer = hydra.issuer.mint("writer", &["post_echo"]).expect("writer");
    Env {
        hydra,
        server,
        check,
        reader,
        writer,
    }
}

#[tokio::test]
async fn seed_scenario_allows_with_identity_headers() {
    let e = env().await;
    let a = Answer::of(
        &e.check
            .check("GET", "/date?tz=utc", &[("authorization", &bearer(&e.reader))])
            .await,
    );
    assert_eq!((a.grpc_code, a.http_status), (0, 200));
    assert_eq!(a.headers["x-client-id"], "reader");
    assert_eq!(a.headers["x-scopes"], "read_date");
    assert_eq!(a.headers["x-subject"], "reader");
    assert_eq!(
        a.removed,
        twins_of(&["x-client-id", "x-scopes", "x-subject"]),
        "every header is set: only the underscore twins are removed"
    );

    let a = Answer::of(
        &e.check
            .check("POST", "/echo", &[("authorization", &bearer(&e.writer))])
            .await,
    );
    assert_eq!((a.http_status, a.headers["x-client-id"].as_str()), (200, "writer"));
}

#[tokio::test]
async fn wrong_scope_is_403_insufficient_scope_both_ways() {
    let e = env().await;
    for (method, path, token, needed) in [
        ("POST", "/echo", &e.reader, "post_echo"),
        ("GET", "/date", &e.writer, "read_date"),
    ] {
        let a = Answer::of(&e.check.check(method, path, &[("authorization", &bearer(token))]).await);
        assert_eq!((a.grpc_code, a.http_status), (7, 403));
        assert_eq!(
            a.www_authenticate(),
            Some(format!("Bearer realm=\"hydra-authz\", error=\"insufficient_scope\", scope=\"{needed}\"").as_str())
        );
        assert_eq!(a.problem()["type"], "urn:hydra-authz:problem:insufficient_scope");
        assert!(!a.body.contains(token.as_str()));
    }
}

#[tokio::test]
async fn every_kind_of_bad_credential_has_its_exact_answer() {
    let e = env().await;
    let expired = e.hydra.issuer.mint_with_ttl("reader", &["read_date"], -30);
    let revoked = e.hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    e.hydra.issuer.revoke_token(&revoked);
    let huge = format!("Bearer {}", "a".repeat(20_000));
    // (case, Authorization header, gRPC code, HTTP status, WWW-Authenticate)
    type Case<'a> = (&'a str, Option<String>, i32, i32, Option<&'a str>);
    let cases: Vec<Case> = vec![
        ("no token", None, 16, 401, Some("Bearer realm=\"hydra-authz\"")),
        (
            "garbage token",
            Some(bearer("not-a-real-token")),
            16,
            401,
            Some("Bearer realm=\"hydra-authz\", error=\"invalid_token\", error_description=\"inactive\""),
        ),
        (
            "expired",
            Some(bearer(&expired)),
            16,
            401,
            Some("Bearer realm=\"hydra-authz\", error=\"invalid_token\", error_description=\"inactive\""),
        ),
        (
            "revoked",
            Some(bearer(&revoked)),
            16,
            401,
            Some("Bearer realm=\"hydra-authz\", error=\"invalid_token\", error_description=\"inactive\""),
        ),
        (
            "basic scheme",
            Some("Basic cmVhZGVyOng=".into()),
            3,
            400,
            Some("Bearer realm=\"hydra-authz\", error=\"invalid_request\""),
        ),
        (
            "empty token",
            Some("Bearer ".into()),
            3,
            400,
            Some("Bearer realm=\"hydra-authz\", error=\"invalid_request\""),
        ),
        (
            "bad chars",
            Some("Bearer a\"b".into()),
            3,
            400,
            Some("Bearer realm=\"hydra-authz\", error=\"invalid_request\""),
        ),
        (
            "two credentials",
            Some(format!("{},{}", bearer(&e.reader), bearer(&e.writer))),
            3,
            400,
            Some("Bearer realm=\"hydra-authz\", error=\"invalid_request\""),
        ),
        (
            "huge",
            Some(huge),
            3,
            400,
            Some("Bearer realm=\"hydra-authz\", error=\"invalid_request\""),
        ),
    ];
    for (name, auth, grpc, http, www) in cases {
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let a = Answer::of(&e.check.check("GET", "/date", &headers).await);
        assert_eq!((a.grpc_code, a.http_status), (grpc, http), "{name}");
        assert_eq!(a.www_authenticate(), www, "{name}");
        assert_eq!(a.headers["content-type"], "application/problem+json", "{name}");
        assert_eq!(a.problem()["status"], http, "{name}");
    }

    // RFC 6750 §3.1: the token in the header and in the query is invalid_request.
    let both = format!("/date?access_token={}", e.reader);
    let asked = e.hydra.requests();
    let a = Answer::of(
        &e.check
            .check("GET", &both, &[("authorization", &bearer(&e.reader))])
            .await,
    );
    assert_eq!((a.grpc_code, a.http_status), (3, 400));
    assert_eq!(
        a.www_authenticate(),
        Some("Bearer realm=\"hydra-authz\", error=\"invalid_request\"")
    );
    // In the query alone it is not accepted: no credential, 401.
    let a = Answer::of(&e.check.check("GET", &both, &[]).await);
    assert_eq!((a.grpc_code, a.http_status), (16, 401));
    assert_eq!(e.hydra.requests(), asked, "neither was introspected");
}

#[tokio::test]
async fn unmatched_route_is_default_deny_without_introspection() {
    let e = env().await;
    let a = Answer::of(
        &e.check
            .check("DELETE", "/date", &[("authorization", &bearer(&e.reader))])
            .await,
    );
    assert_eq!((a.grpc_code, a.http_status), (7, 403));
    assert_eq!(a.www_authenticate(), None);
    assert_eq!(a.problem()["type"], "urn:hydra-authz:problem:no_rule");
    assert_eq!(e.hydra.requests(), 0);
}

#[tokio::test]
async fn spoofed_identity_headers_never_survive() {
    let e = env().await;
    let spoof = [
        ("authorization", bearer(&e.reader)),
        ("x-client-id", "admin".to_string()),
        ("x-scopes", "admin".to_string()),
        ("x-subject", "root".to_string()),
    ];
    let headers: Vec<(&str, &str)> = spoof.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = Answer::of(&e.check.check("GET", "/date", &headers).await);
    assert_eq!(a.headers["x-client-id"], "reader");
    assert_eq!(a.headers["x-scopes"], "read_date");
    assert_eq!(a.headers["x-subject"], "reader");

    // Public route: no identity, so all three are removed.
    let a = Answer::of(
        &e.check
            .check_with("GET", "/anything", &headers[1..], &[("public", "true")])
            .await,
    );
    assert_eq!(a.http_status, 200);
    assert!(a.headers.is_empty());
    let mut all = vec!["x-client-id".to_string(), "x-scopes".into(), "x-subject".into()];
    all.extend(twins_of(&["x-client-id", "x-scopes", "x-subject"]));
    assert_eq!(a.removed, all);
}

/// The underscore spellings of identity headers that hydra-authz removes.
fn twins_of(names: &[&str]) -> Vec<String> {
    names
        .iter()
        .flat_map(|n| hydra_authz::respond::header_twins(n))
        .collect()
}

#[tokio::test]
async fn context_extensions_set_per_route_scopes() {
    let e = env().await;
    let auth = [("authorization", bearer(&e.reader))];
    let h: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = Answer::of(
        &e.check
            .check_with("GET", "/reports", &h, &[("required_scopes", "read_date")])
            .await,
    );
    assert_eq!(a.http_status, 200);
    let a = Answer::of(
        &e.check
            .check_with("GET", "/reports", &h, &[("required_scopes", "read_date admin")])
            .await,
    );
    assert_eq!(a.http_status, 403);
    assert!(a
        .www_authenticate()
        .is_some_and(|w| w.contains("scope=\"read_date admin\"")));
    let a = Answer::of(&e.check.check_with("GET", "/reports", &h, &[("public", "maybe")]).await);
    assert_eq!(a.http_status, 500, "unreadable route policy fails closed");
}

#[tokio::test]
async fn hydra_trouble_is_503_fail_closed() {
    let e = env().await;
    for fault in [
        Fault::Status(500, None),
        Fault::Status(429, Some(2)),
        Fault::Garbage,
        Fault::ActiveAsString,
        Fault::Hang,
        Fault::ResetMidBody,
    ] {
        e.hydra.set_fault(fault.clone());
        let a = Answer::of(
            &e.check
                .check("GET", "/date", &[("authorization", &bearer(&e.reader))])
                .await,
        );
        assert_eq!((a.grpc_code, a.http_status), (14, 503), "{fault:?}");
        assert_eq!(a.problem()["type"], "urn:hydra-authz:problem:introspection_unavailable");
    }
    e.hydra.set_fault(Fault::None);
    let a = Answer::of(
        &e.check
            .check("GET", "/date", &[("authorization", &bearer(&e.reader))])
            .await,
    );
    assert_eq!(a.http_status, 200, "healthy again once Hydra is");
}

#[tokio::test]
async fn strip_authorization_and_custom_header_names() {
    let e = env_with(|c| {
        c.headers.strip_authorization = true;
        c.headers.client_id = "x-caller".into();
    })
    .await;
    let a = Answer::of(
        &e.check
            .check("GET", "/date", &[("authorization", &bearer(&e.reader))])
            .await,
    );
    assert_eq!(a.headers["x-caller"], "reader");
    assert!(!a.headers.contains_key("x-client-id"));
    assert!(a.removed.contains(&"authorization".to_string()));
}

#[tokio::test]
async fn dynamic_metadata_names_the_caller_and_rule() {
    use envoy_types::pb::google::protobuf::value::Kind;
    let e = env().await;
    let r = e
        .check
        .check("GET", "/date", &[("authorization", &bearer(&e.reader))])
        .await;
    let meta = r.dynamic_metadata.expect("metadata");
    let get = |k: &str| match meta.fields.get(k).and_then(|v| v.kind.clone()) {
        Some(Kind::StringValue(s)) => s,
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(get("client_id"), "reader");
    assert_eq!(get("scopes"), "read_date");
    assert_eq!(get("subject"), "reader");
    assert_eq!(get("rule_id"), "read-date");
}

#[tokio::test]
async fn explain_rpc_runs_the_same_decision() {
    let e = env().await;
    let mut admin = support::admin(&e.server).await;
    let r = admin
        .explain(ExplainRequest {
            method: "POST".into(),
            host: "api.local".into(),
            path: "/echo".into(),
            headers: [("authorization".to_string(), bearer(&e.reader))].into(),
            ..Default::default()
        })
        .await
        .expect("explain")
        .into_inner();
    assert!(!r.allowed);
    assert_eq!(
        (r.http_status, r.reason.as_str(), r.rule_id.as_str()),
        (403, "insufficient_scope", "post-echo")
    );
    assert_eq!(r.required_scopes, vec!["post_echo"]);
    assert_eq!(r.granted_scopes, vec!["read_date"]);
    assert!(
        r.steps
            .iter()
            .any(|s| s.contains("rule \"read-date\": path does not match")),
        "{:?}",
        r.steps
    );
    assert!(!format!("{r:?}").contains(&e.reader), "explain never echoes the token");
    // The body the client would get, exactly as Check sends it; no made-up header.
    let check = Answer::of(
        &e.check
            .check("POST", "/echo", &[("authorization", &bearer(&e.reader))])
            .await,
    );
    assert_eq!(r.response_body, check.body);
    assert_eq!(
        r.response_headers.get("www-authenticate"),
        check.headers.get("www-authenticate")
    );
    assert!(
        !r.response_headers.contains_key("x-problem-body"),
        "{:?}",
        r.response_headers
    );

    let r = admin
        .explain(ExplainRequest {
            method: "GET".into(),
            path: "/date".into(),
            headers: [("Authorization".to_string(), bearer(&e.reader))].into(),
            ..Default::default()
        })
        .await
        .expect("explain")
        .into_inner();
    assert!(r.allowed);
    assert_eq!(r.headers_to_set["x-client-id"], "reader");
}

/// Every claim check, as Hydra's own answer can fail it: the exact 401 each
/// gives through Check, and that passing ones still pass (aud as a string
/// or a list).
#[tokio::test]
async fn each_claim_failure_is_401_invalid_token_with_its_description() {
    let hydra = FakeHydra::start().await;
    let iss = hydra.issuer.issuer().to_owned();
    let mut config = support::config_for(&hydra.introspection_url());
    config.introspection.timeout_ms = 1_000;
    config.introspection.required_audience = vec!["api".into()];
    config.introspection.allowed_issuers = vec![iss.clone()];
    let _server = support::start_authz(&config).await;
    let check = Checker::connect(_server.grpc_addr).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let cases: Vec<(serde_json::Value, i32, Option<&str>)> = vec![
        (serde_json::json!({"aud": "api"}), 200, None),
        (serde_json::json!({"aud": ["other", "api"]}), 200, None),
        (serde_json::json!({}), 401, Some("audience_mismatch")),
        (serde_json::json!({"aud": ["other"]}), 401, Some("audience_mismatch")),
        (
            serde_json::json!({"aud": "api", "iss": "https://evil.example/"}),
            401,
            Some("issuer_not_allowed"),
        ),
        (
            serde_json::json!({"aud": "api", "token_use": "refresh_token"}),
            401,
            Some("wrong_token_use"),
        ),
        (
            serde_json::json!({"aud": "api", "token_type": "refresh_token"}),
            401,
            Some("wrong_token_use"),
        ),
        (
            serde_json::json!({"aud": "api", "token_type": "urn:ietf:params:oauth:token-type:id_token"}),
            401,
            Some("wrong_token_use"),
        ),
        (
            serde_json::json!({"aud": "api", "nbf": now + 600}),
            401,
            Some("not_yet_valid"),
        ),
        (
            serde_json::json!({"aud": "api", "exp": now - 600}),
            401,
            Some("expired"),
        ),
        (
            serde_json::json!({"aud": "api", "iss": iss, "token_use": "access_token"}),
            200,
            None,
        ),
    ];
    for (claims, status, description) in cases {
        let token = hydra.issuer.mint_with_claims("reader", &["read_date"], claims.clone());
        let a = Answer::of(&check.check("GET", "/date", &[("authorization", &bearer(&token))]).await);
        assert_eq!(a.http_status, status, "{claims}");
        assert_eq!(
            hydra.issuer.last_token_type_hint().as_deref(),
            Some("access_token"),
            "RFC 7662 hint sent"
        );
        if let Some(d) = description {
            let challenge = a.www_authenticate().unwrap_or_default();
            assert!(challenge.contains("error=\"invalid_token\""), "{claims}: {challenge}");
            assert!(
                challenge.contains(&format!("error_description=\"{d}\"")),
                "{claims}: {challenge}"
            );
            assert_eq!(a.problem()["status"], 401);
        } else {
            assert_eq!(a.headers["x-client-id"], "reader", "{claims}");
        }
    }
}

/// Explain reads the cache and the circuit state but changes neither, and
/// moves no metric: debugging a denial must not change later decisions.
#[tokio::test]
async fn explain_changes_nothing_later_checks_see() {
    let e = env_with(|c| {
        c.introspection.cache.enabled = true;
        c.introspection.resilience.breaker_failures = 2;
        c.introspection.resilience.max_retries = 0;
    })
    .await;
    let mut admin = support::admin(&e.server).await;
    let explain = |token: String| ExplainRequest {
        method: "GET".into(),
        path: "/date".into(),
        headers: [("authorization".to_string(), bearer(&token))].into(),
        ..Default::default()
    };
    let metrics_before = support::scrape(e.server.http_addr).await;

    // Hydra failing: each Explain says 503, yet the circuit stays closed.
    e.hydra.set_fault(Fault::Status(500, None));
    for _ in 0..5 {
        let r = admin
            .explain(explain(e.reader.clone()))
            .await
            .expect("explain")
            .into_inner();
        assert_eq!((r.allowed, r.http_status), (false, 503), "{:?}", r.steps);
    }
    assert_eq!(
        e.hydra.requests(),
        5,
        "each Explain asked Hydra: the circuit did not open"
    );
    e.hydra.set_fault(Fault::None);

    // Hydra fine: Explain verifies but does not cache.
    let r = admin
        .explain(explain(e.reader.clone()))
        .await
        .expect("explain")
        .into_inner();
    assert!(r.allowed, "{:?}", r.steps);
    assert_eq!(e.hydra.requests(), 6);
    assert_eq!(
        support::scrape(e.server.http_addr).await,
        metrics_before,
        "Explain moved no metric"
    );
    let ok = |r: &envoy_types::ext_authz::v3::pb::CheckResponse| Answer::of(r).http_status == 200;
    assert!(ok(&e
        .check
        .check("GET", "/date", &[("authorization", &bearer(&e.reader))])
        .await));
    assert_eq!(e.hydra.requests(), 7, "the check found nothing cached by Explain");
    // Now cached by the check: Explain answers from the cache, like a check would.
    let r = admin
        .explain(explain(e.reader.clone()))
        .await
        .expect("explain")
        .into_inner();
    assert!(r.allowed);
    assert_eq!(e.hydra.requests(), 7);
}

#[tokio::test]
async fn grpc_health_and_http_probes() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let e = env().await;
    let ch = support::channel(e.server.grpc_addr).await;
    let mut health = HealthClient::new(ch);
    for service in ["", "envoy.service.auth.v3.Authorization"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(r.status, 1, "SERVING for {service:?}");
    }
    let http = reqwest::Client::new();
    for path in ["/healthz", "/readyz"] {
        let r = http
            .get(format!("http://{}{path}", e.server.http_addr))
            .send()
            .await
            .expect("probe");
        assert_eq!(r.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn shutdown_finishes_in_flight_checks_then_refuses() {
    let e = env().await;
    e.hydra.set_fault(Fault::Delay(Duration::from_millis(200)));
    let grpc_addr = e.server.grpc_addr;
    let readiness = e.server.readiness.clone();
    let mut in_flight = Vec::new();
    for _ in 0..10 {
        let c = e.check.clone();
        let auth = bearer(&e.reader);
        in_flight.push(tokio::spawn(async move {
            c.check("GET", "/date", &[("authorization", &auth)]).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stop = tokio::spawn(e.server.shutdown());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!readiness.get(), "not ready as soon as shutdown starts");
    for f in in_flight {
        let a = Answer::of(&f.await.expect("task"));
        assert_eq!(a.http_status, 200, "in-flight check completed");
    }
    stop.await.expect("join").expect("clean shutdown");
    assert!(
        tokio::net::TcpStream::connect(grpc_addr).await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn oversized_header_sets_are_431() {
    let e = env().await;
    let names: Vec<String> = (0..250).map(|i| format!("x-h{i}")).collect();
    let mut headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    let auth = bearer(&e.reader);
    headers.push(("authorization", &auth));
    let a = Answer::of(&e.check.check("GET", "/date", &headers).await);
    assert_eq!((a.grpc_code, a.http_status), (3, 431));
    assert_eq!(a.problem()["type"], "urn:hydra-authz:problem:request_too_large");
    assert_eq!(e.hydra.requests(), 0, "refused before any introspection");
}

/// During the shutdown delay gRPC health says NOT_SERVING for the server as
/// a whole (`""`, what `grpc_health_check {}` asks) as well as for the
/// Authorization service, while checks are still answered.
#[tokio::test]
async fn grpc_health_says_not_serving_for_every_name_while_draining() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let (hydra, server, check) = support::authz_on_fake_hydra(|c| c.server.shutdown_delay_ms = 1_500).await;
    let mut health = HealthClient::new(support::channel(server.grpc_addr).await);
    let status = |health: &mut HealthClient<tonic::transport::Channel>, service: &'static str| {
        let mut health = health.clone();
        async move {
            health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .expect("health")
                .into_inner()
                .status
        }
    };
    const NAMES: [&str; 2] = ["", "envoy.service.auth.v3.Authorization"];
    for service in NAMES {
        assert_eq!(status(&mut health, service).await, 1, "SERVING for {service:?}");
    }
    let stop = tokio::spawn(server.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    for service in NAMES {
        assert_eq!(status(&mut health, service).await, 2, "NOT_SERVING for {service:?}");
    }
    let reader = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    let a = Answer::of(
        &check
            .check("GET", "/date", &[("authorization", &bearer(&reader))])
            .await,
    );
    assert_eq!(a.http_status, 200, "still answering while draining");
    stop.await.expect("join").expect("clean shutdown");
}
