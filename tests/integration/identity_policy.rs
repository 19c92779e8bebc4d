//! Identity and policy, part 2, through the real Envoy (deploy/envoy/envoy.yaml):
//! claim conditions (403 claim_mismatch), token sources (cookie, custom
//! header, query parameter; stripped before the upstream), and the signed
//! identity JWT (`[upstream_jwt]`) verified by an independent library (Node's
//! jose) against the live JWKS, through a key rotation.

use crate::identity::{bearer, far_future, introspection_endpoint, raw, Reply};
use crate::support;

use hydra_authz::config::{Config, RuleConfig};
use hydra_authz::demo::envoy::Envoy;
use hydra_authz::server::RunningServer;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::keys::{verify_once, write_key, Jose};
use support::stack::{envoy_for_upstream, envoy_in_front_of};

fn rule(id: &str, path: &str, f: impl FnOnce(&mut RuleConfig)) -> RuleConfig {
    let mut r = RuleConfig {
        id: id.into(),
        methods: vec!["GET".into()],
        path: path.into(),
        scopes: vec!["read_date".into()],
        ..Default::default()
    };
    f(&mut r);
    r
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The problem+json body of a deny, with its type and detail.
fn problem(r: &Reply) -> (String, String) {
    let v: Value = serde_json::from_str(&r.body).unwrap_or_else(|_| panic!("problem+json: {r:?}"));
    (
        v["type"].as_str().unwrap_or_default().to_owned(),
        v["detail"].as_str().unwrap_or_default().to_owned(),
    )
}

const CLAIM_MISMATCH: &str = "urn:hydra-authz:problem:claim_mismatch";

/// Rule conditions (`claims`, `audiences`, `clients`) through Envoy: an
/// accepted token gets through; a valid token failing one is 403
/// claim_mismatch naming the claim path, never its value, with no
/// challenge; an inactive token is 401 before any condition is looked at.
#[tokio::test]
async fn claim_conditions_through_real_envoy() {
    let base = |client: &str| json!({"active": true, "scope": "read_date", "client_id": client, "sub": client, "exp": far_future()});
    let with = |client: &str, extra: Value| {
        let mut v = base(client);
        for (k, x) in extra.as_object().expect("object") {
            v[k] = x.clone();
        }
        v
    };
    let url = introspection_endpoint(
        [
            (
                "acme",
                with("reader", json!({"aud": ["api"], "ext": {"tenant": "acme"}})),
            ),
            (
                "globex",
                with("reader", json!({"aud": ["api"], "ext": {"tenant": "globex"}})),
            ),
            ("noext", with("reader", json!({"aud": ["api"]}))),
            (
                "acme-web",
                with("reader", json!({"aud": ["web"], "ext": {"tenant": "acme"}})),
            ),
            (
                "writer",
                with("writer", json!({"aud": ["api"], "ext": {"tenant": "acme"}})),
            ),
        ]
        .into(),
    )
    .await;
    let mut c = support::config_for(&url);
    c.introspection.timeout_ms = 2_000;
    c.rules = vec![
        rule("date", "/date", |r| {
            r.claims.insert("ext.tenant".into(), strings(&["acme"]));
            r.audiences = strings(&["api"]);
        }),
        rule("writers", "/writers", |r| r.clients = strings(&["writer"])),
    ];
    let authz = support::start_authz(&c).await;
    let envoy = envoy_in_front_of(&authz, None).await;
    let l = envoy.listener;
    let get = |path: &'static str, token: &'static str| async move {
        raw(l, "GET", path, &[("authorization", &bearer(token))]).await
    };

    let r = get("/date", "acme").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.seen("x-client-id").as_deref(), Some("reader"), "{}", r.body);

    // The wrong tenant, no tenant, the wrong audience: 403 naming the claim.
    for (token, claim, value) in [
        ("globex", "ext.tenant", Some("globex")),
        ("noext", "ext.tenant", None),
        ("acme-web", "aud", Some("web")),
    ] {
        let r = get("/date", token).await;
        assert_eq!(r.status, 403, "{token}: {r:?}");
        assert!(!r.reached_upstream(), "{token}: {r:?}");
        assert_eq!(r.www(), None, "{token}: no challenge for a claim mismatch");
        let (kind, detail) = problem(&r);
        assert_eq!(kind, CLAIM_MISMATCH, "{token}: {r:?}");
        assert!(detail.contains(claim), "{token}: {detail}");
        if let Some(value) = value {
            assert!(!r.body.contains(value), "{token}: the value leaked: {}", r.body);
        }
    }

    // An inactive token: 401 invalid_token, not a claim mismatch.
    let r = get("/date", "unknown").await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(problem(&r).0, "urn:hydra-authz:problem:invalid_token", "{r:?}");
    assert!(r.www().is_some_and(|w| w.contains("invalid_token")), "{r:?}");
    assert!(!r.reached_upstream());

    // clients = ["writer"]: the reader's valid token is refused, naming client_id.
    let r = get("/writers", "acme").await;
    assert_eq!(r.status, 403, "{r:?}");
    let (kind, detail) = problem(&r);
    assert_eq!(kind, CLAIM_MISMATCH, "{r:?}");
    assert!(detail.contains("client_id"), "{detail}");
    assert!(!r.body.contains("reader"), "the value leaked: {}", r.body);
    assert_eq!(r.www(), None);
    let r = get("/writers", "writer").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.seen("x-client-id").as_deref(), Some("writer"));
}

/// An echo upstream like the demo's, with the query string too; its port.
async fn echo_with_query() -> u16 {
    use axum::http::{HeaderMap, Uri};
    let app = axum::Router::new().fallback(|uri: Uri, headers: HeaderMap| async move {
        let mut h = serde_json::Map::new();
        for name in headers.keys() {
            let values: Vec<Value> = headers
                .get_all(name)
                .iter()
                .map(|v| Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect();
            let value = match values.len() {
                1 => values.into_iter().next().unwrap_or(Value::Null),
                _ => Value::Array(values),
            };
            h.insert(name.as_str().to_owned(), value);
        }
        axum::Json(json!({"path": uri.path(), "query": uri.query(), "headers": h}))
    });
    let listener = tokio::net::TcpListener::bind(support::lo0()).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// hydra-authz on FakeHydra, with `f` applied, and the kit's Envoy in front
/// of it and an upstream that echoes the query.
async fn source_stack(f: impl FnOnce(&mut Config)) -> (support::hydra::FakeHydra, RunningServer, Envoy) {
    let hydra = support::hydra::FakeHydra::start().await;
    let mut c = support::config_for(&hydra.introspection_url());
    c.introspection.timeout_ms = 2_000;
    f(&mut c);
    let authz = support::start_authz(&c).await;
    let upstream = echo_with_query().await;
    let envoy = envoy_for_upstream(authz.grpc_addr.port(), authz.http_addr.port(), upstream, None, |y| y).await;
    (hydra, authz, envoy)
}

/// `token_from` through Envoy: a cookie among others, a custom header and a
/// query parameter, each only where the rule names it; the same token twice
/// is fine, two different ones are 400; with `strip_authorization` the
/// credential is gone from what the upstream receives, wherever it was.
#[tokio::test]
async fn token_sources_through_real_envoy() {
    for strip in [false, true] {
        let (hydra, _authz, envoy) = source_stack(|c| {
            c.headers.strip_authorization = strip;
            c.rules = vec![
                rule("date", "/date", |r| {
                    r.token_from = strings(&["header", "cookie:session"])
                }),
                rule("plain", "/plain", |_| {}),
                rule("query", "/q", |r| r.token_from = strings(&["query:access_token"])),
                rule("api", "/api", |r| r.token_from = strings(&["header:x-api-token"])),
            ];
        })
        .await;
        let l: SocketAddr = envoy.listener;
        let tok = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
        let other = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
        assert_ne!(tok, other);
        let auth = bearer(&tok);
        let s = format!("strip={strip}");

        // The session cookie among several.
        let cookies = format!("theme=dark; session={tok}; lang=en");
        let r = raw(l, "GET", "/date", &[("cookie", &cookies)]).await;
        assert_eq!(r.status, 200, "{s}: {r:?}");
        assert_eq!(r.seen("x-client-id").as_deref(), Some("reader"), "{s}: {}", r.body);
        assert_eq!(r.seen("x-scopes").as_deref(), Some("read_date"), "{s}");
        let want_cookie = if strip { "theme=dark; lang=en" } else { cookies.as_str() };
        assert_eq!(r.seen("cookie").as_deref(), Some(want_cookie), "{s}: {}", r.body);

        // The session cookie alone: with strip, no cookie header is left.
        let only = format!("session={tok}");
        let r = raw(l, "GET", "/date", &[("cookie", &only)]).await;
        assert_eq!(r.status, 200, "{s}: {r:?}");
        let want = (!strip).then_some(only.as_str());
        assert_eq!(r.seen("cookie").as_deref(), want, "{s}: {}", r.body);

        // The same token in the header and the cookie: one credential.
        let r = raw(l, "GET", "/date", &[("authorization", &auth), ("cookie", &cookies)]).await;
        assert_eq!(r.status, 200, "{s}: {r:?}");
        assert_eq!(r.seen("x-client-id").as_deref(), Some("reader"), "{s}");
        if strip {
            let up = r.upstream();
            assert_eq!(up.get("authorization"), None, "{s}: {}", r.body);
            assert_eq!(
                r.seen("cookie").as_deref(),
                Some("theme=dark; lang=en"),
                "{s}: {}",
                r.body
            );
            assert!(
                !r.body.contains(&tok),
                "{s}: the credential reached the upstream (in the cookie?): {}",
                r.body
            );
        }

        // Two different tokens: 400 invalid_request, the upstream not called.
        let r = raw(
            l,
            "GET",
            "/date",
            &[("authorization", &bearer(&other)), ("cookie", &cookies)],
        )
        .await;
        assert_eq!(r.status, 400, "{s}: {r:?}");
        assert_eq!(problem(&r).0, "urn:hydra-authz:problem:invalid_request", "{s}: {r:?}");
        assert!(!r.reached_upstream(), "{s}: {r:?}");

        // A query token where the rule names no query source: ignored (401).
        let r = raw(l, "GET", &format!("/plain?access_token={tok}"), &[]).await;
        assert_eq!(r.status, 401, "{s}: {r:?}");
        assert_eq!(problem(&r).0, "urn:hydra-authz:problem:missing_token", "{s}: {r:?}");
        assert!(!r.reached_upstream(), "{s}: {r:?}");

        // Where it does: allowed; stripped from the query, other parameters kept.
        let r = raw(l, "GET", &format!("/q?a=1&access_token={tok}&b=2"), &[]).await;
        assert_eq!(r.status, 200, "{s}: {r:?}");
        assert_eq!(r.seen("x-client-id").as_deref(), Some("reader"), "{s}");
        let v = r.json();
        assert_eq!(v["path"], "/q", "{s}: {}", r.body);
        let want_query = if strip {
            "a=1&b=2".to_owned()
        } else {
            format!("a=1&access_token={tok}&b=2")
        };
        assert_eq!(v["query"], want_query.as_str(), "{s}: {}", r.body);

        // A custom header (dash name: the kit refuses underscores).
        let r = raw(l, "GET", "/api", &[("x-api-token", &tok)]).await;
        assert_eq!(r.status, 200, "{s}: {r:?}");
        assert_eq!(r.seen("x-client-id").as_deref(), Some("reader"), "{s}");
        let want = (!strip).then_some(tok.as_str());
        assert_eq!(r.seen("x-api-token").as_deref(), want, "{s}: {}", r.body);
        // `Authorization` is not among this rule's sources: a token there is
        // refused, never ignored (it would reach the upstream unverified).
        let r = raw(l, "GET", "/api", &[("authorization", &auth)]).await;
        assert_eq!(r.status, 400, "{s}: {r:?}");
        assert!(
            r.body
                .contains("this route does not take its token from the Authorization header"),
            "{s}: {r:?}"
        );
        assert!(!r.reached_upstream(), "{s}: {r:?}");
    }
}

const JWT_AUDIENCE: &str = "date-service";
const JWT_ISSUER: &str = "hydra-authz";

/// hydra-authz on FakeHydra with `[upstream_jwt]` on (`alg`, a fresh key in
/// `dir`), the kit's Envoy in front.
async fn jwt_stack(
    dir: &std::path::Path,
    alg: &str,
) -> (support::hydra::FakeHydra, RunningServer, Envoy, std::path::PathBuf) {
    let key = dir.join("identity-key.pem");
    write_key(&key, alg);
    let hydra = support::hydra::FakeHydra::start().await;
    let mut c = support::config_for(&hydra.introspection_url());
    c.introspection.timeout_ms = 2_000;
    c.upstream_jwt.enabled = true;
    c.upstream_jwt.algorithm = alg.into();
    c.upstream_jwt.key_file = Some(key.clone());
    c.upstream_jwt.audience = JWT_AUDIENCE.into();
    c.upstream_jwt.key_overlap_s = 2;
    c.upstream_jwt.reload_interval_ms = 200;
    c.rules.push(rule("public", "/public", |r| {
        r.public = true;
        r.scopes.clear();
    }));
    let authz = support::start_authz(&c).await;
    let envoy = envoy_in_front_of(&authz, None).await;
    (hydra, authz, envoy, key)
}

fn jwks_url(authz: &RunningServer) -> String {
    format!("http://{}/.well-known/jwks.json", authz.http_addr)
}

/// The identity JWT the upstream received for `GET /date` with `token`.
async fn identity_jwt(l: SocketAddr, token: &str, extra: &[(&str, &str)]) -> String {
    let auth = bearer(token);
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend_from_slice(extra);
    let r = raw(l, "GET", "/date", &headers).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.seen("x-identity-jwt")
        .unwrap_or_else(|| panic!("no x-identity-jwt upstream: {}", r.body))
}

fn kid(jwt: &str) -> String {
    jsonwebtoken::decode_header(jwt).expect("JWT header").kid.expect("kid")
}

/// The token's `exp` as FakeHydra's introspection tells it.
async fn token_exp(hydra: &support::hydra::FakeHydra, token: &str) -> i64 {
    let v: Value = support::stack::http()
        .post(hydra.introspection_url())
        .form(&[("token", token)])
        .send()
        .await
        .expect("introspect")
        .json()
        .await
        .expect("json");
    v["exp"].as_i64().unwrap_or_else(|| panic!("exp: {v}"))
}

/// `[upstream_jwt]` through Envoy: the upstream gets a JWT that jose
/// verifies against the live JWKS (iss, aud, signature) with the caller's
/// identity and an exp bounded by ttl and the token's own exp; a client's
/// forged header never reaches the upstream; a key rotation keeps both keys
/// verifying for key_overlap_s, then only the new one.
#[tokio::test]
async fn identity_jwt_verified_by_jose_through_real_envoy_es256_with_rotation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hydra, authz, envoy, key) = jwt_stack(dir.path(), "ES256").await;
    let l = envoy.listener;
    let jwks = jwks_url(&authz);
    let long = hydra.issuer.mint_with_ttl("reader", &["read_date"], 3600);
    let short = hydra.issuer.mint_with_ttl("reader", &["read_date"], 20);
    let (long_exp, short_exp) = (token_exp(&hydra, &long).await, token_exp(&hydra, &short).await);

    let before = hydra_authz::authn::introspection::now_unix();
    let jwt = identity_jwt(l, &long, &[]).await;
    let jwt_short = identity_jwt(l, &short, &[]).await;
    let after = hydra_authz::authn::introspection::now_unix();
    let (ok, answers) = verify_once(&jwks, JWT_ISSUER, JWT_AUDIENCE, &[&jwt, &jwt_short]).await;
    assert!(ok, "jose: {answers:?}");
    let (claims, header) = answers[0].clone().expect("verified");
    assert_eq!(header["alg"], "ES256", "{header}");
    assert_eq!(header["kid"], kid(&jwt).as_str(), "{header}");
    assert_eq!(claims["iss"], JWT_ISSUER);
    assert_eq!(claims["aud"], JWT_AUDIENCE);
    assert_eq!(claims["sub"], "reader", "{claims}");
    assert_eq!(claims["client_id"], "reader", "{claims}");
    assert_eq!(claims["scope"], "read_date", "{claims}");
    let (iat, exp) = (
        claims["iat"].as_i64().expect("iat"),
        claims["exp"].as_i64().expect("exp"),
    );
    assert!(before <= iat && iat <= after, "iat {iat} in [{before}, {after}]");
    assert!(
        exp <= long_exp && exp <= after + 60,
        "exp {exp}: ttl 60, token exp {long_exp}"
    );
    assert_eq!(exp, iat + 60, "ttl_s 60 (the token lives an hour)");
    // A token expiring sooner than ttl_s: the JWT ends with it.
    let (short_claims, _) = answers[1].clone().expect("verified");
    assert_eq!(short_claims["exp"].as_i64(), Some(short_exp), "{short_claims}");

    // jose does refuse: a changed signature, another audience.
    let (sig_start, last) = (jwt.rfind('.').expect("jws") + 1, jwt.len() - 2);
    assert!(sig_start < last);
    let mut bad = jwt.clone().into_bytes();
    bad[sig_start + 2] = if bad[sig_start + 2] == b'A' { b'B' } else { b'A' };
    let bad = String::from_utf8(bad).expect("ascii");
    let (ok, answers) = verify_once(&jwks, JWT_ISSUER, JWT_AUDIENCE, &[&bad]).await;
    assert!(!ok && answers[0].is_err(), "a forged signature verified: {answers:?}");
    let (ok, answers) = verify_once(&jwks, JWT_ISSUER, "another-service", &[&jwt]).await;
    assert!(!ok && answers[0].is_err(), "another audience verified: {answers:?}");

    // A client's own x-identity-jwt: replaced on an allow, removed on a public route.
    let spoofed = identity_jwt(l, &long, &[("x-identity-jwt", "forged"), ("X-Identity-JWT", "forged2")]).await;
    assert!(!spoofed.contains("forged"), "{spoofed}");
    let (ok, answers) = verify_once(&jwks, JWT_ISSUER, JWT_AUDIENCE, &[&spoofed]).await;
    assert!(ok, "{answers:?}");
    for token in [None, Some(bearer(&long))] {
        let mut headers = vec![("x-identity-jwt", "forged")];
        if let Some(t) = &token {
            headers.push(("authorization", t.as_str()));
        }
        let r = raw(l, "GET", "/public", &headers).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.seen("x-identity-jwt"), None, "token={}: {}", token.is_some(), r.body);
    }

    // Rotation: a new key file; wait (5 s at most) for a JWT with a new kid.
    let mut jose = Jose::start(&jwks, JWT_ISSUER, JWT_AUDIENCE).await;
    assert!(jose.verify(&jwt).await.is_ok(), "the persistent verifier works");
    let old = jwt;
    let old_kid = kid(&old);
    write_key(&key, "ES256");
    let deadline = Instant::now() + Duration::from_secs(5);
    let (new, sent) = loop {
        let sent = Instant::now();
        let j = identity_jwt(l, &long, &[]).await;
        if kid(&j) != old_kid {
            break (j, sent);
        }
        assert!(Instant::now() < deadline, "no JWT with a new kid within 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The old key retired no earlier than `sent`: both verify during the overlap.
    let old_during = jose.verify(&old).await;
    let new_during = jose.verify(&new).await;
    let checked = sent.elapsed();
    assert!(
        checked < Duration::from_secs(2),
        "the overlap checks took {checked:?}: the machine is too slow to see the 2 s overlap"
    );
    assert!(old_during.is_ok(), "old JWT during the overlap: {old_during:?}");
    let (new_claims, new_header) = new_during.expect("new JWT during the overlap");
    assert_eq!(new_header["kid"], kid(&new).as_str());
    assert_eq!(new_claims["client_id"], "reader");
    let doc: Value = support::stack::http()
        .get(&jwks)
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    let kids: Vec<&str> = doc["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert_eq!(kids, vec![kid(&new).as_str(), old_kid.as_str()], "{doc}");

    // After the overlap (bounded wait): the old JWT fails, the new one passes.
    let deadline = sent + Duration::from_secs(2 + 5);
    loop {
        match jose.verify(&old).await {
            Ok(_) => {
                assert!(Instant::now() < deadline, "the old key is still published");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                // The JWKS was fetched before this moment, and the old key
                // retired no earlier than `sent`.
                let gone = sent.elapsed();
                assert!(
                    gone >= Duration::from_secs(2),
                    "the old key went before key_overlap_s ({gone:?} after the rotation): {e}"
                );
                assert!(e.contains("ERR_JWKS_NO_MATCHING_KEY"), "{e}");
                break;
            }
        }
    }
    assert!(jose.verify(&new).await.is_ok(), "the new key still verifies");
}

/// EdDSA (Ed25519): one allow through Envoy, verified by jose.
#[tokio::test]
async fn identity_jwt_eddsa_verified_by_jose_through_real_envoy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hydra, authz, envoy, _key) = jwt_stack(dir.path(), "EdDSA").await;
    let tok = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    let jwt = identity_jwt(envoy.listener, &tok, &[]).await;
    let (ok, answers) = verify_once(&jwks_url(&authz), JWT_ISSUER, JWT_AUDIENCE, &[&jwt]).await;
    assert!(ok, "jose: {answers:?}");
    let (claims, header) = answers[0].clone().expect("verified");
    assert_eq!(header["alg"], "EdDSA", "{header}");
    assert_eq!(
        (
            claims["sub"].as_str(),
            claims["client_id"].as_str(),
            claims["scope"].as_str()
        ),
        (Some("reader"), Some("reader"), Some("read_date")),
        "{claims}"
    );
}
