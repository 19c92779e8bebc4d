//! Single-flight and the opt-in cache, counted at the Hydra-shaped server.

use crate::support;

use hydra_authz::admin_proto::purge_token_request::Target;
use hydra_authz::admin_proto::{PurgeAllRequest, PurgeTokenRequest};
use hydra_authz::config::Config;
use std::time::Duration;
use support::hydra::{FakeHydra, Fault};
use support::{bearer, config_for, metric, start_authz, Answer, Checker};

async fn setup(f: impl FnOnce(&mut Config)) -> (FakeHydra, hydra_authz::server::RunningServer, Checker) {
    let hydra = FakeHydra::start().await;
    let mut config = config_for(&hydra.introspection_url());
    f(&mut config);
    let server = start_authz(&config).await;
    let check = Checker::connect(server.grpc_addr).await;
    (hydra, server, check)
}

fn cached(c: &mut Config) {
    c.introspection.cache.enabled = true;
    c.introspection.cache.ttl_ms = 60_000;
}

async fn status(check: &Checker, token: &str) -> i32 {
    Answer::of(&check.check("GET", "/date", &[("authorization", &bearer(token))]).await).http_status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_with_one_fresh_token_makes_one_introspection_without_cache() {
    let (hydra, _server, check) = setup(|_| {}).await;
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    // Slow enough that all 100 checks are in flight together.
    hydra.set_fault(Fault::Delay(Duration::from_millis(300)));
    let burst: Vec<_> = (0..100)
        .map(|_| {
            let (c, t) = (check.clone(), token.clone());
            tokio::spawn(async move { status(&c, &t).await })
        })
        .collect();
    for b in burst {
        assert_eq!(b.await.expect("join"), 200);
    }
    assert_eq!(hydra.requests(), 1, "100 concurrent checks, one introspection");

    // Without the cache nothing outlives the flight: the next check asks again,
    // so a revocation takes effect at once.
    hydra.set_fault(Fault::None);
    hydra.issuer.revoke_token(&token);
    assert_eq!(status(&check, &token).await, 401);
    assert_eq!(hydra.requests(), 2);
}

#[tokio::test]
async fn cache_serves_repeats_until_purged() {
    let (hydra, server, check) = setup(cached).await;
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    for _ in 0..50 {
        assert_eq!(status(&check, &token).await, 200);
    }
    assert_eq!(hydra.requests(), 1);

    // Revoked at Hydra: still allowed from the cache (the documented staleness window)...
    hydra.issuer.revoke_token(&token);
    assert_eq!(status(&check, &token).await, 200);
    // ...until purged, after which the token is introspected again and refused.
    let mut admin = support::admin(&server).await;
    admin
        .purge_token(PurgeTokenRequest {
            target: Some(Target::Token(token.clone())),
        })
        .await
        .expect("purge");
    assert_eq!(status(&check, &token).await, 401);
    assert_eq!(hydra.requests(), 2);

    // By fingerprint (as logged) and all at once.
    let other = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    assert_eq!(status(&check, &other).await, 200);
    hydra.issuer.revoke_token(&other);
    let fp = hydra_authz::extract::credential::fingerprint(&other);
    admin
        .purge_token(PurgeTokenRequest {
            target: Some(Target::Fingerprint(fp.to_string())),
        })
        .await
        .expect("purge by fingerprint");
    assert_eq!(status(&check, &other).await, 401);
    let third = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    assert_eq!(status(&check, &third).await, 200);
    hydra.issuer.revoke_token(&third);
    admin.purge_all(PurgeAllRequest {}).await.expect("purge all");
    assert_eq!(status(&check, &third).await, 401);

    let bad = admin
        .purge_token(PurgeTokenRequest {
            target: Some(Target::Fingerprint("xyz".into())),
        })
        .await;
    assert_eq!(bad.expect_err("bad fingerprint").code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn cache_entries_never_outlive_the_token() {
    let (hydra, _server, check) = setup(cached).await;
    let token = hydra.issuer.mint_with_ttl("reader", &["read_date"], 1);
    assert_eq!(status(&check, &token).await, 200);
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(
        status(&check, &token).await,
        401,
        "expired: the cache entry went with it"
    );
    assert_eq!(hydra.requests(), 2);
}

#[tokio::test]
async fn negative_results_are_cached_only_when_asked() {
    let (hydra, _server, check) = setup(cached).await;
    assert_eq!(status(&check, "ory_at_unknown").await, 401);
    assert_eq!(status(&check, "ory_at_unknown").await, 401);
    assert_eq!(hydra.requests(), 2, "negative_ttl_ms = 0: not cached");

    let (hydra, _server, check) = setup(|c| {
        cached(c);
        c.introspection.cache.negative_ttl_ms = 60_000;
    })
    .await;
    assert_eq!(status(&check, "ory_at_unknown").await, 401);
    assert_eq!(status(&check, "ory_at_unknown").await, 401);
    assert_eq!(hydra.requests(), 1);
}

/// A failure is shared with the checks that waited on the same load (one
/// Hydra call for the burst, not one per waiter), then forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_during_a_hydra_failure_makes_one_call_and_keeps_nothing() {
    let (hydra, _server, check) = setup(|c| {
        c.introspection.timeout_ms = 500;
        c.introspection.resilience.max_retries = 0;
    })
    .await;
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    hydra.set_fault(Fault::Hang);
    let burst: Vec<_> = (0..50)
        .map(|_| {
            let (c, t) = (check.clone(), token.clone());
            tokio::spawn(async move { status(&c, &t).await })
        })
        .collect();
    for b in burst {
        assert_eq!(b.await.expect("join"), 503);
    }
    assert_eq!(hydra.requests(), 1, "50 concurrent checks, one introspection");
    hydra.set_fault(Fault::None);
    assert_eq!(status(&check, &token).await, 200);
    assert_eq!(hydra.requests(), 2);
}

#[tokio::test]
async fn failures_are_never_cached() {
    let (hydra, _server, check) = setup(cached).await;
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    hydra.set_fault(Fault::Status(500, None));
    assert_eq!(status(&check, &token).await, 503);
    hydra.set_fault(Fault::Garbage);
    assert_eq!(status(&check, &token).await, 503);
    hydra.set_fault(Fault::None);
    assert_eq!(status(&check, &token).await, 200);
    assert_eq!(hydra.requests(), 3);
}

#[tokio::test]
async fn cache_metrics_are_exported() {
    let (hydra, server, check) = setup(cached).await;
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    for _ in 0..3 {
        status(&check, &token).await;
    }
    let scrape = support::scrape_parsed(server.http_addr).await;
    assert_eq!(metric(&scrape, "hydra_authz_cache_hits_total", &[]), 2.0);
    assert_eq!(metric(&scrape, "hydra_authz_cache_misses_total", &[]), 1.0);
    assert_eq!(metric(&scrape, "hydra_authz_cache_entries", &[]), 1.0);
}
