//! Contract tests of the introspection client against a Hydra-shaped server:
//! every field and every failure mode Hydra (or the network) can produce.

use crate::support;

use hydra_authz::authn::{AuthnError, ClaimFailure, HydraIntrospector};
use hydra_authz::config::{AuthKind, IntrospectionConfig};
use hydra_authz::extract::credential::Token;
use std::time::Duration;
use support::hydra::{FakeHydra, Fault};

fn client(hydra: &FakeHydra) -> HydraIntrospector {
    client_with(hydra, |_| {})
}

fn client_with(hydra: &FakeHydra, f: impl FnOnce(&mut IntrospectionConfig)) -> HydraIntrospector {
    let mut cfg = IntrospectionConfig {
        url: hydra.introspection_url(),
        timeout_ms: 300,
        ..Default::default()
    };
    f(&mut cfg);
    HydraIntrospector::new(&cfg).expect("client")
}

fn unavailable_kind(r: Result<impl std::fmt::Debug, AuthnError>) -> &'static str {
    match r {
        Err(AuthnError::Unavailable { kind, .. }) => kind.label(),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn active_token_maps_every_hydra_field() {
    let hydra = FakeHydra::start().await;
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    let i = client(&hydra).verify(&Token::new(token)).await.expect("active");
    assert!(i.active);
    assert_eq!(i.client_id.as_deref(), Some("reader"));
    assert_eq!(i.sub.as_deref(), Some("reader"));
    assert_eq!(i.scopes(), vec!["read_date"]);
    assert_eq!(i.token_use.as_deref(), Some("access_token"));
    assert_eq!(i.token_type.as_deref(), Some("Bearer"));
    assert_eq!(i.iss.as_deref(), Some(format!("http://{}", hydra.addr).as_str()));
    assert!(i.exp.expect("exp") > i.iat.expect("iat"));
    assert_eq!(hydra.requests(), 1);
}

#[tokio::test]
async fn unknown_revoked_and_expired_tokens_are_rejected() {
    let hydra = FakeHydra::start().await;
    let c = client(&hydra);
    let rejected = |r: Result<_, AuthnError>| match r {
        Err(AuthnError::Rejected(f)) => f,
        other => panic!("expected Rejected, got {other:?}"),
    };
    assert_eq!(
        rejected(c.verify(&Token::new("ory_at_unknown")).await),
        ClaimFailure::Inactive
    );

    let t = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    assert!(c.verify(&Token::new(t.clone())).await.is_ok());
    hydra.issuer.revoke_token(&t);
    assert_eq!(rejected(c.verify(&Token::new(t)).await), ClaimFailure::Inactive);

    let expired = hydra.issuer.mint_with_ttl("reader", &["read_date"], -60);
    assert_eq!(rejected(c.verify(&Token::new(expired)).await), ClaimFailure::Inactive);
}

#[tokio::test]
async fn issuer_and_audience_policies_apply_to_active_tokens() {
    let hydra = FakeHydra::start().await;
    let t = Token::new(hydra.issuer.mint("reader", &["read_date"]).expect("mint"));
    let strict_iss = client_with(&hydra, |c| c.allowed_issuers = vec!["https://elsewhere".into()]);
    assert!(matches!(
        strict_iss.verify(&t).await,
        Err(AuthnError::Rejected(ClaimFailure::IssuerNotAllowed))
    ));
    let ok_iss = client_with(&hydra, |c| c.allowed_issuers = vec![format!("http://{}", hydra.addr)]);
    assert!(ok_iss.verify(&t).await.is_ok());
    // Hydra omits `aud` for tokens issued without an audience: a required audience then fails.
    let aud = client_with(&hydra, |c| c.required_audience = vec!["api".into()]);
    assert!(matches!(
        aud.verify(&t).await,
        Err(AuthnError::Rejected(ClaimFailure::AudienceMismatch))
    ));
}

#[tokio::test]
async fn every_failure_mode_is_unavailable_never_active() {
    let hydra = FakeHydra::start().await;
    let c = client(&hydra);
    let token = Token::new(hydra.issuer.mint("reader", &["read_date"]).expect("mint"));
    let cases = [
        (Fault::Status(500, None), "status"),
        (Fault::Status(502, None), "status"),
        (Fault::Status(503, Some(1)), "status"),
        (Fault::Status(429, Some(1)), "rate_limited"),
        (Fault::Status(401, None), "status"),
        (Fault::Garbage, "parse"),
        (Fault::ActiveAsString, "parse"),
        (Fault::ArrayBody, "parse"),
        (Fault::Huge(10 * 1024 * 1024), "too_large"),
        (Fault::WrongContentType, "content_type"),
        (Fault::Delay(Duration::from_millis(600)), "timeout"),
        (Fault::Hang, "timeout"),
        (Fault::ResetMidBody, "transport"),
        (Fault::ResetOnAccept, "transport"),
    ];
    for (fault, kind) in cases {
        hydra.set_fault(fault.clone());
        assert_eq!(unavailable_kind(c.verify(&token).await), kind, "{fault:?}");
    }
    // The client recovers as soon as Hydra does.
    hydra.set_fault(Fault::None);
    assert!(c.verify(&token).await.is_ok());
}

#[tokio::test]
async fn slow_but_in_time_answers_are_used() {
    let hydra = FakeHydra::start().await;
    let token = Token::new(hydra.issuer.mint("reader", &["read_date"]).expect("mint"));
    hydra.set_fault(Fault::Delay(Duration::from_millis(50)));
    let patient = client_with(&hydra, |c| c.timeout_ms = 3_000);
    assert!(patient.verify(&token).await.is_ok());
}

#[tokio::test]
async fn connection_refused_is_unavailable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let cfg = IntrospectionConfig {
        url: format!("http://127.0.0.1:{port}/admin/oauth2/introspect"),
        timeout_ms: 300,
        ..Default::default()
    };
    let c = HydraIntrospector::new(&cfg).expect("client");
    assert_eq!(unavailable_kind(c.verify(&Token::new("t")).await), "connect");
}

#[tokio::test]
async fn bearer_api_key_is_sent_for_ory_network() {
    let hydra = FakeHydra::start().await;
    std::env::set_var("CONTRACT_TEST_ORY_KEY", "ory_pat_example\n");
    let c = client_with(&hydra, |c| {
        c.auth.kind = AuthKind::Bearer;
        c.auth.token_env = Some("CONTRACT_TEST_ORY_KEY".into());
    });
    let _ = c.introspect(&Token::new("t")).await;
    assert_eq!(hydra.last_authorization().as_deref(), Some("Bearer ory_pat_example"));
}

#[tokio::test]
async fn client_secret_basic_from_a_file() {
    let hydra = FakeHydra::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("secret");
    std::fs::write(&path, "s3cr:t\n").expect("write");
    let c = client_with(&hydra, |c| {
        c.auth.kind = AuthKind::ClientSecretBasic;
        c.auth.client_id = Some("hydra authz".into());
        c.auth.client_secret_file = Some(path.clone());
    });
    let _ = c.introspect(&Token::new("t")).await;
    // base64("hydra+authz:s3cr%3At"): both parts form-encoded per RFC 6749 §2.3.1.
    assert_eq!(
        hydra.last_authorization().as_deref(),
        Some("Basic aHlkcmErYXV0aHo6czNjciUzQXQ=")
    );
}

#[tokio::test]
async fn missing_secret_fails_at_construction() {
    let cfg = IntrospectionConfig {
        auth: hydra_authz::config::IntrospectionAuth {
            kind: AuthKind::Bearer,
            token_env: Some("CONTRACT_TEST_DEFINITELY_UNSET".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let err = HydraIntrospector::new(&cfg).expect_err("no secret").to_string();
    assert!(err.contains("introspection.auth"), "{err}");
}

#[tokio::test]
async fn connections_are_reused() {
    let hydra = FakeHydra::start().await;
    let c = client(&hydra);
    let token = Token::new(hydra.issuer.mint("reader", &["read_date"]).expect("mint"));
    for _ in 0..1000 {
        c.verify(&token).await.expect("active");
    }
    assert_eq!(hydra.requests(), 1000);
    assert_eq!(
        hydra.connections(),
        1,
        "1,000 sequential introspections, one pooled keep-alive connection"
    );
}
