//! Local JWT validation (introspection.mode = jwt | auto) against the dev
//! issuer in Hydra's jwt access-token strategy, EdDSA and ES256.

use crate::support;

use base64::Engine;
use hydra_authz::config::{Config, VerifyMode};
use hydra_authz::demo::issuer::{DevIssuer, IssuerAddrs, TokenFormat};
use support::hydra::FakeHydra;
use support::{bearer, config_for, lo0, start_authz, Answer, Checker};

async fn jwt_issuer(format: TokenFormat) -> (DevIssuer, IssuerAddrs) {
    DevIssuer::serve_with(lo0(), lo0(), 3600, format).await.expect("issuer")
}

async fn authz(introspection_url: &str, jwks_url: &str, mode: VerifyMode, f: impl FnOnce(&mut Config)) -> Checker {
    let mut c = config_for(introspection_url);
    c.introspection.mode = mode;
    c.introspection.jwt.jwks_url = jwks_url.to_owned();
    f(&mut c);
    let server = start_authz(&c).await;
    let check = Checker::connect(server.grpc_addr).await;
    std::mem::forget(server); // lives for the test process
    check
}

async fn get(check: &Checker, path: &str, token: &str) -> Answer {
    let method = if path == "/echo" { "POST" } else { "GET" };
    Answer::of(&check.check(method, path, &[("authorization", &bearer(token))]).await)
}

fn description(a: &Answer) -> String {
    a.www_authenticate().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn jwt_mode_verifies_locally_without_introspection() {
    let (issuer, addrs) = jwt_issuer(TokenFormat::JwtEdDsa).await;
    let check = authz(&addrs.introspection_url(), &addrs.jwks_url(), VerifyMode::Jwt, |_| {}).await;
    let reader = issuer.mint("reader", &["read_date"]).expect("mint");
    assert_eq!(reader.split('.').count(), 3, "a JWT");

    let a = get(&check, "/date", &reader).await;
    assert_eq!(a.http_status, 200, "{}", a.body);
    assert_eq!(a.headers["x-client-id"], "reader");
    assert_eq!(a.headers["x-scopes"], "read_date", "scopes from the scp claim");
    assert_eq!(get(&check, "/echo", &reader).await.http_status, 403);
    assert_eq!(issuer.introspections(), 0, "no introspection in jwt mode");

    // Signature tampered: one character in the middle of the signature changed
    // (not the last one, whose low bits are base64 padding).
    let sig_at = reader.rfind('.').expect("signature") + 10;
    let mut forged = reader.clone().into_bytes();
    forged[sig_at] = if forged[sig_at] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ascii");
    let a = get(&check, "/date", &forged).await;
    assert_eq!(a.http_status, 401);
    assert!(description(&a).contains("bad_signature"), "{}", description(&a));

    // Payload swapped for one with more scopes, original signature kept.
    let parts: Vec<&str> = reader.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1]).expect("b64")).expect("json");
    claims["scp"] = serde_json::json!(["read_date", "post_echo"]);
    let swapped = format!("{}.{}.{}", parts[0], b64.encode(claims.to_string()), parts[2]);
    assert_eq!(get(&check, "/echo", &swapped).await.http_status, 401);

    let expired = issuer.mint_with_ttl("reader", &["read_date"], -120);
    let a = get(&check, "/date", &expired).await;
    assert_eq!(a.http_status, 401);
    assert!(description(&a).contains("expired"), "{}", description(&a));

    // alg=none and HS256 (a key-confusion attempt) are refused before any key lookup.
    let header = serde_json::json!({"alg": "none", "typ": "JWT", "kid": "x"});
    let none = format!("{}.{}.", b64.encode(header.to_string()), parts[1]);
    let a = get(&check, "/date", &none).await;
    assert_eq!(a.http_status, 401);
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"guess"),
    )
    .expect("hs256");
    let a = get(&check, "/date", &hs).await;
    assert_eq!(a.http_status, 401);
    assert!(description(&a).contains("algorithm_not_allowed"), "{}", description(&a));
}

#[tokio::test]
async fn unknown_kid_refreshes_the_jwks_at_a_bounded_rate() {
    let (issuer, addrs) = jwt_issuer(TokenFormat::JwtEdDsa).await;
    let check = authz(&addrs.introspection_url(), &addrs.jwks_url(), VerifyMode::Jwt, |c| {
        c.introspection.jwt.refresh_min_interval_ms = 300;
    })
    .await;
    let first = issuer.mint("reader", &["read_date"]).expect("mint");
    assert_eq!(get(&check, "/date", &first).await.http_status, 200);
    assert_eq!(issuer.jwks_fetches(), 1);

    // Hydra rotated its key: once the refresh interval has passed, a token
    // with the new kid triggers one refresh...
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    issuer.rotate_key();
    let rotated = issuer.mint("reader", &["read_date"]).expect("mint");
    assert_eq!(get(&check, "/date", &rotated).await.http_status, 200);
    assert_eq!(issuer.jwks_fetches(), 2);
    // ...but a stream of tokens with unknown kids does not hammer the JWKS.
    issuer.rotate_key();
    for _ in 0..20 {
        let unknown = issuer.mint("reader", &["read_date"]).expect("mint");
        let a = get(&check, "/date", &unknown).await;
        assert_eq!(a.http_status, 401);
        assert!(description(&a).contains("unknown_key"));
    }
    assert_eq!(issuer.jwks_fetches(), 2, "refresh_min_interval_ms bounds refreshes");
    assert_eq!(
        get(&check, "/date", &first).await.http_status,
        200,
        "known keys keep working"
    );
}

/// The JWT memo: a verified JWT is not verified again (here every
/// verification would re-fetch the JWKS, since keys are stale at once).
#[tokio::test]
async fn verified_jwts_are_remembered_not_reverified() {
    let (issuer, addrs) = jwt_issuer(TokenFormat::JwtEdDsa).await;
    let check = authz(&addrs.introspection_url(), &addrs.jwks_url(), VerifyMode::Jwt, |c| {
        c.introspection.jwt.max_key_age_ms = 0;
        c.introspection.jwt.refresh_min_interval_ms = 100;
    })
    .await;
    // The start-up prefetch fetches once; count from there.
    for _ in 0..100 {
        if issuer.jwks_fetches() >= 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let base = issuer.jwks_fetches();
    assert_eq!(base, 1, "the prefetch");
    let interval = std::time::Duration::from_millis(150);
    let token = issuer.mint("reader", &["read_date"]).expect("mint");
    for _ in 0..3 {
        // Each past the refresh interval: without the memo, each would fetch.
        tokio::time::sleep(interval).await;
        assert_eq!(get(&check, "/date", &token).await.http_status, 200);
    }
    assert_eq!(issuer.jwks_fetches() - base, 1, "one verification, then the memo");
    // The memo is per token: a new token is verified (and re-fetches the
    // stale keys, in the background: the check does not wait for it).
    tokio::time::sleep(interval).await;
    let other = issuer.mint("reader", &["read_date"]).expect("mint");
    assert_eq!(get(&check, "/date", &other).await.http_status, 200);
    for _ in 0..100 {
        if issuer.jwks_fetches() - base >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(issuer.jwks_fetches() - base, 2);
}

/// A key the issuer retired stops being trusted once our copy of the JWKS
/// is older than max_key_age_ms and the re-fetch that starts has landed
/// (memo off, so every check verifies).
#[tokio::test]
async fn retired_keys_stop_verifying_after_max_key_age() {
    let (issuer, addrs) = jwt_issuer(TokenFormat::JwtEdDsa).await;
    let check = authz(&addrs.introspection_url(), &addrs.jwks_url(), VerifyMode::Jwt, |c| {
        c.introspection.jwt.max_key_age_ms = 1_500;
        c.introspection.jwt.refresh_min_interval_ms = 1_000;
        c.introspection.jwt.verified_ttl_ms = 0;
    })
    .await;
    let old = issuer.mint("reader", &["read_date"]).expect("mint");
    assert_eq!(get(&check, "/date", &old).await.http_status, 200);
    issuer.rotate_key();
    issuer.retire_previous_keys();
    // Within max_key_age our copy is trusted as fetched.
    assert_eq!(get(&check, "/date", &old).await.http_status, 200);
    assert_eq!(issuer.jwks_fetches(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(1_700)).await;
    // Due a re-fetch: this check starts it in the background and is still
    // answered with the keys held (a slow JWKS must not stall checks)...
    assert_eq!(get(&check, "/date", &old).await.http_status, 200);
    // ... and once that fetch has landed, the retired key is unknown.
    let mut a = get(&check, "/date", &old).await;
    for _ in 0..100 {
        if a.http_status != 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        a = get(&check, "/date", &old).await;
    }
    assert_eq!(a.http_status, 401, "{}", a.body);
    assert!(description(&a).contains("unknown_key"), "{}", description(&a));
    assert_eq!(issuer.jwks_fetches(), 2);
    let new = issuer.mint("reader", &["read_date"]).expect("mint");
    assert_eq!(get(&check, "/date", &new).await.http_status, 200);
}

#[tokio::test]
async fn es256_tokens_and_issuer_policy() {
    let (issuer, addrs) = jwt_issuer(TokenFormat::JwtEs256).await;
    let check = authz(&addrs.introspection_url(), &addrs.jwks_url(), VerifyMode::Jwt, |_| {}).await;
    let writer = issuer.mint("writer", &["post_echo"]).expect("mint");
    let a = get(&check, "/echo", &writer).await;
    assert_eq!(a.http_status, 200, "{}", a.body);
    assert_eq!(a.headers["x-client-id"], "writer");

    let strict = authz(&addrs.introspection_url(), &addrs.jwks_url(), VerifyMode::Jwt, |c| {
        c.introspection.allowed_issuers = vec!["https://someone-else".into()];
    })
    .await;
    let a = get(&strict, "/echo", &writer).await;
    assert_eq!(a.http_status, 401);
    assert!(description(&a).contains("issuer_not_allowed"));
    // Only EdDSA allowed: an ES256 token is refused.
    let eddsa_only = authz(&addrs.introspection_url(), &addrs.jwks_url(), VerifyMode::Jwt, |c| {
        c.introspection.jwt.algorithms = vec![hydra_authz::config::JwtAlgorithm::EdDSA];
    })
    .await;
    assert_eq!(get(&eddsa_only, "/echo", &writer).await.http_status, 401);
}

/// RS256, Hydra's default JWT algorithm, with a 2048-bit key generated here.
#[tokio::test]
async fn rs256_tokens_verify_and_forgeries_do_not() {
    let (issuer, addrs) = jwt_issuer(TokenFormat::JwtRs256).await;
    let check = authz(&addrs.introspection_url(), &addrs.jwks_url(), VerifyMode::Jwt, |_| {}).await;
    let reader = issuer.mint("reader", &["read_date"]).expect("mint");
    let header = jsonwebtoken::decode_header(&reader).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    let a = get(&check, "/date", &reader).await;
    assert_eq!(a.http_status, 200, "{}", a.body);
    assert_eq!(a.headers["x-client-id"], "reader");
    assert_eq!(get(&check, "/echo", &reader).await.http_status, 403);

    let sig_at = reader.rfind('.').expect("signature") + 10;
    let mut forged = reader.clone().into_bytes();
    forged[sig_at] = if forged[sig_at] == b'A' { b'B' } else { b'A' };
    let a = get(&check, "/date", &String::from_utf8(forged).expect("ascii")).await;
    assert_eq!(a.http_status, 401);
    assert!(description(&a).contains("bad_signature"), "{}", description(&a));

    // Only ES256 allowed: the RS256 token is refused.
    let es_only = authz(&addrs.introspection_url(), &addrs.jwks_url(), VerifyMode::Jwt, |c| {
        c.introspection.jwt.algorithms = vec![hydra_authz::config::JwtAlgorithm::ES256];
    })
    .await;
    let a = get(&es_only, "/date", &reader).await;
    assert_eq!(a.http_status, 401);
    assert!(description(&a).contains("algorithm_not_allowed"), "{}", description(&a));
}

#[tokio::test]
async fn auto_mode_verifies_jwts_locally_and_introspects_opaque_tokens() {
    let (jwt_iss, addrs) = jwt_issuer(TokenFormat::JwtEdDsa).await;
    let hydra = FakeHydra::start().await; // opaque tokens
    let check = authz(&hydra.introspection_url(), &addrs.jwks_url(), VerifyMode::Auto, |_| {}).await;
    let jwt = jwt_iss.mint("reader", &["read_date"]).expect("mint");
    let opaque = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    assert_eq!(get(&check, "/date", &jwt).await.http_status, 200);
    assert_eq!(hydra.requests(), 0, "the JWT was verified locally");
    assert_eq!(get(&check, "/date", &opaque).await.http_status, 200);
    assert_eq!(hydra.requests(), 1, "the opaque token was introspected");
}

#[tokio::test]
async fn jwks_unreachable_is_503() {
    let (issuer, _addrs) = jwt_issuer(TokenFormat::JwtEdDsa).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let check = authz(
        "http://127.0.0.1:1/x",
        &format!("http://127.0.0.1:{port}/.well-known/jwks.json"),
        VerifyMode::Jwt,
        |_| {},
    )
    .await;
    let token = issuer.mint("reader", &["read_date"]).expect("mint");
    assert_eq!(get(&check, "/date", &token).await.http_status, 503);
}

/// A replica that cannot fetch a key set at start is not ready (every JWT
/// would be a 503), and keeps trying with no check to prompt it: ready,
/// and allowing, once the JWKS answers. Before, `/readyz` turned 200
/// after the first four tries failed.
#[tokio::test]
async fn not_ready_until_a_key_set_is_fetched() {
    let (issuer, addrs) = jwt_issuer(TokenFormat::JwtEdDsa).await;
    // Bound but not yet answering: fetches wait and time out.
    let jwks_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let jwks_url = format!(
        "http://{}/.well-known/jwks.json",
        jwks_listener.local_addr().expect("addr")
    );
    let mut c = config_for("http://127.0.0.1:1/x");
    c.introspection.mode = VerifyMode::Jwt;
    c.introspection.timeout_ms = 200;
    c.introspection.jwt.jwks_url = jwks_url;
    c.introspection.jwt.refresh_min_interval_ms = 200;
    let server = start_authz(&c).await;
    let check = Checker::connect(server.grpc_addr).await;
    let readyz = format!("http://{}/readyz", server.http_addr);
    let ready = || async { reqwest::get(&readyz).await.expect("readyz") };
    // The start-up tries (about 2.5 s here) end without keys: still not ready.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = ready().await;
        assert_eq!(r.status(), 503);
        if r.text().await.unwrap_or_default().contains("no usable key set") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the prefetch never ended");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let token = issuer.mint("reader", &["read_date"]).expect("mint");
    assert_eq!(get(&check, "/date", &token).await.http_status, 503);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(ready().await.status(), 503, "still no keys");
    // The JWKS comes up: the issuer's key set, served on that port.
    let keys = reqwest::get(addrs.jwks_url())
        .await
        .expect("jwks")
        .text()
        .await
        .expect("body");
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let keys = keys.clone();
            async move { ([("content-type", "application/json")], keys) }
        }),
    );
    tokio::spawn(async move { axum::serve(jwks_listener, app).await });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while ready().await.status() != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "never ready after the JWKS came up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(get(&check, "/date", &token).await.http_status, 200);
    server.shutdown().await.expect("shutdown");
}

/// An ID token signed by the same issuer with the same JWKS (as Hydra does)
/// is not an access token, in jwt and in auto mode; and a JWT access token
/// whose `typ` says something else is refused too.
#[tokio::test]
async fn id_tokens_are_not_access_tokens() {
    let (issuer, addrs) = jwt_issuer(TokenFormat::JwtEdDsa).await;
    for mode in [VerifyMode::Jwt, VerifyMode::Auto] {
        let check = authz(&addrs.introspection_url(), &addrs.jwks_url(), mode, |c| {
            // Any valid token may pass this route: only the token's kind is in question.
            c.rules[0].scopes.clear();
        })
        .await;
        let access = issuer.mint("reader", &["read_date"]).expect("mint");
        assert_eq!(get(&check, "/date", &access).await.http_status, 200, "{mode:?}");
        for nonce in [None, Some("n-0S6_WzA2Mj")] {
            let id_token = issuer.mint_id_token("reader", nonce).expect("id token");
            let a = get(&check, "/date", &id_token).await;
            assert_eq!(a.http_status, 401, "{mode:?} {nonce:?}");
            assert!(description(&a).contains("not_an_access_token"), "{}", description(&a));
        }
    }
}

/// A JWKS in front of the issuer's that can be switched off (503).
struct SwitchableJwks {
    url: String,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    fetches: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

async fn switchable_jwks(upstream: String) -> SwitchableJwks {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let up = Arc::new(AtomicBool::new(true));
    let fetches = Arc::new(AtomicU64::new(0));
    let app = {
        let (up, fetches) = (up.clone(), fetches.clone());
        axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let (up, fetches, upstream) = (up.clone(), fetches.clone(), upstream.clone());
                async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    if !up.load(Ordering::SeqCst) {
                        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, String::new());
                    }
                    let body = reqwest::get(upstream).await.expect("jwks").text().await.expect("body");
                    (axum::http::StatusCode::OK, body)
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind(lo0()).await.expect("bind");
    let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    SwitchableJwks { url, up, fetches }
}

/// While re-fetches fail, the keys we hold are kept (a JWKS outage is not
/// an API outage), but only up to `max_stale_key_age_ms` after their last
/// fetch: then nothing is trusted (503) until a fetch succeeds, so a key
/// the issuer removed cannot be kept alive by making our fetches fail.
#[tokio::test]
async fn keys_that_cannot_be_refetched_expire_after_max_stale_key_age() {
    use std::sync::atomic::Ordering;
    let (issuer, addrs) = jwt_issuer(TokenFormat::JwtEdDsa).await;
    let jwks = switchable_jwks(addrs.jwks_url()).await;
    let check = authz(&addrs.introspection_url(), &jwks.url, VerifyMode::Jwt, |c| {
        c.introspection.jwt.max_key_age_ms = 100;
        c.introspection.jwt.max_stale_key_age_ms = 1_000;
        c.introspection.jwt.refresh_min_interval_ms = 100;
        c.introspection.jwt.verified_ttl_ms = 0;
    })
    .await;
    let token = issuer.mint("reader", &["read_date"]).expect("mint");
    assert_eq!(get(&check, "/date", &token).await.http_status, 200);
    jwks.up.store(false, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        get(&check, "/date", &token).await.http_status,
        200,
        "stale keys kept a while"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1_000)).await;
    let a = get(&check, "/date", &token).await;
    assert_eq!(a.http_status, 503, "too old to trust: {}", a.body);
    jwks.up.store(true, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(get(&check, "/date", &token).await.http_status, 200, "fetched again");
}

/// A JWKS that cannot be fetched makes an unknown key "cannot decide"
/// (503), also for the tokens that arrive within the refresh interval after
/// the failed fetch (which no longer read as "unknown key", 401); fetches
/// stay bounded, and it recovers when the JWKS is back.
#[tokio::test]
async fn jwks_outage_is_503_for_unknown_keys_not_401() {
    use std::sync::atomic::Ordering;
    let (issuer, addrs) = jwt_issuer(TokenFormat::JwtEdDsa).await;
    let SwitchableJwks { url: jwks, up, fetches } = switchable_jwks(addrs.jwks_url()).await;
    let check = authz(&addrs.introspection_url(), &jwks, VerifyMode::Jwt, |c| {
        c.introspection.jwt.refresh_min_interval_ms = 400;
        // Fewer than the unknown-kid tokens below: one failed fetch told
        // again must not count again and open the breaker for known keys.
        c.introspection.resilience.breaker_failures = 3;
    })
    .await;
    let first = issuer.mint("reader", &["read_date"]).expect("mint");
    assert_eq!(get(&check, "/date", &first).await.http_status, 200);

    up.store(false, Ordering::SeqCst);
    issuer.rotate_key();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let before = fetches.load(Ordering::SeqCst);
    for _ in 0..5 {
        let unknown = issuer.mint("reader", &["read_date"]).expect("mint");
        assert_eq!(get(&check, "/date", &unknown).await.http_status, 503);
    }
    assert_eq!(
        fetches.load(Ordering::SeqCst) - before,
        1,
        "one failed fetch, then its verdict stands"
    );
    assert_eq!(
        get(&check, "/date", &first).await.http_status,
        200,
        "known keys keep working"
    );

    up.store(true, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let rotated = issuer.mint("reader", &["read_date"]).expect("mint");
    assert_eq!(get(&check, "/date", &rotated).await.http_status, 200);
}

/// A key set streamed without end is cut at `max_response_bytes` while it
/// is read (503 for the check), not buffered for as long as the HTTP
/// timeout lets it run; the server stays healthy.
#[tokio::test]
async fn an_endless_jwks_is_cut_while_it_is_read() {
    use futures_util::StreamExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let (issuer, addrs) = jwt_issuer(TokenFormat::JwtEdDsa).await;
    const CHUNK: usize = 64 * 1024;
    // At most 64 MiB, so the test is bounded even if nothing cuts it.
    const CHUNKS: u64 = 1024;
    let sent = Arc::new(AtomicU64::new(0));
    let app = {
        let sent = sent.clone();
        axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let sent = sent.clone();
                async move {
                    let chunks = futures_util::stream::iter(0..CHUNKS).map(move |_| {
                        sent.fetch_add(CHUNK as u64, Ordering::SeqCst);
                        Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b' '; CHUNK]))
                    });
                    axum::response::Response::builder()
                        .header("content-type", "application/json")
                        .body(axum::body::Body::from_stream(chunks))
                        .expect("response")
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind(lo0()).await.expect("bind");
    let jwks = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let check = authz(&addrs.introspection_url(), &jwks, VerifyMode::Jwt, |c| {
        c.introspection.max_response_bytes = CHUNK;
        c.introspection.timeout_ms = 3_000;
    })
    .await;
    let token = issuer.mint("reader", &["read_date"]).expect("mint");
    let a = get(&check, "/date", &token).await;
    assert_eq!(a.http_status, 503, "{}", a.body);
    // Give the streaming side time to notice the closed connection.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let streamed = sent.load(Ordering::SeqCst);
    assert!(
        streamed < CHUNKS * CHUNK as u64 / 2,
        "the key set was read on: {streamed} bytes streamed"
    );
}

/// A reload that changes `[introspection]` (here: a new key set) swaps the
/// new verifier in only once its key set has been fetched, as at start:
/// right after the reload, readiness holds and a token signed with the new
/// key is allowed without a fetch of its own.
#[tokio::test]
async fn a_reload_to_a_new_key_set_is_warm_before_it_serves() {
    use std::sync::atomic::Ordering;
    let (_old_issuer, old) = jwt_issuer(TokenFormat::JwtEdDsa).await;
    let (new_issuer, new) = jwt_issuer(TokenFormat::JwtEdDsa).await;
    let jwks = switchable_jwks(new.jwks_url()).await;
    let mut c = config_for(&old.introspection_url());
    c.introspection.mode = VerifyMode::Jwt;
    c.introspection.jwt.jwks_url = old.jwks_url();
    let server = start_authz(&c).await;
    let check = Checker::connect(server.grpc_addr).await;
    let token = new_issuer.mint("reader", &["read_date"]).expect("mint");
    assert_eq!(
        get(&check, "/date", &token).await.http_status,
        401,
        "not the running key set's"
    );

    let mut next = c.clone();
    next.introspection.jwt.jwks_url = jwks.url.clone();
    server.live.apply_warm(next).await.expect("reload");
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 1, "fetched before the swap");
    let readyz = reqwest::get(format!("http://{}/readyz", server.http_addr))
        .await
        .expect("readyz");
    assert_eq!(readyz.status(), 200, "never unready across the reload");
    let a = get(&check, "/date", &token).await;
    assert_eq!(a.http_status, 200, "{}", a.body);
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 1, "no fetch of its own");
    server.shutdown().await.expect("shutdown");
}

/// A reload whose new key set cannot be fetched (here: nothing listens at
/// its `jwks_url`) is refused: the running verifier stays and keeps
/// verifying, and the reload counts as failed.
#[tokio::test]
async fn a_reload_to_an_unreachable_key_set_keeps_the_running_one() {
    let (issuer, addrs) = jwt_issuer(TokenFormat::JwtEdDsa).await;
    let mut c = config_for(&addrs.introspection_url());
    c.introspection.mode = VerifyMode::Jwt;
    c.introspection.jwt.jwks_url = addrs.jwks_url();
    let server = start_authz(&c).await;
    let check = Checker::connect(server.grpc_addr).await;
    let token = issuer.mint("reader", &["read_date"]).expect("mint");
    assert_eq!(get(&check, "/date", &token).await.http_status, 200);

    let closed = std::net::TcpListener::bind(lo0()).expect("bind");
    let nowhere = format!("http://{}/jwks.json", closed.local_addr().expect("addr"));
    drop(closed);
    let mut next = c.clone();
    next.introspection.jwt.jwks_url = nowhere;
    let err = server.live.apply_warm(next).await.expect_err("refused").to_string();
    assert!(err.contains("could not fetch its key set"), "{err}");
    assert_eq!(
        server.live.running_config().introspection.jwt.jwks_url,
        addrs.jwks_url()
    );
    let other = issuer.mint("reader", &["read_date"]).expect("mint");
    assert_eq!(
        get(&check, "/date", &other).await.http_status,
        200,
        "the running key set still verifies"
    );
    server.shutdown().await.expect("shutdown");
}
