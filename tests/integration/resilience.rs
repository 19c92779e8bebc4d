//! The resilient Hydra client: retries only what is safe, within the
//! deadline; Envoy's grpc-timeout is honoured; the breaker opens and closes;
//! concurrency to Hydra is bounded and excess is shed. Every failure is a
//! 503, never an allow.

use crate::support;

use hydra_authz::config::Config;
use std::time::{Duration, Instant};
use support::hydra::{FakeHydra, Fault};
use support::{bearer, check_request, Answer, Checker};

async fn setup(f: impl FnOnce(&mut Config)) -> (FakeHydra, Checker, hydra_authz::server::RunningServer) {
    let (hydra, server, check) = support::authz_on_fake_hydra(f).await;
    (hydra, check, server)
}

async fn status(check: &Checker, token: &str) -> i32 {
    Answer::of(&check.check("GET", "/date", &[("authorization", &bearer(token))]).await).http_status
}

#[tokio::test]
async fn retryable_failures_are_retried_others_are_not() {
    let (hydra, check, _s) = setup(|_| {}).await;
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    for code in [502u16, 503, 504] {
        let before = hydra.requests();
        hydra.set_fault_times(Fault::Status(code, None), 2);
        let got = status(&check, &token).await;
        assert_eq!(
            got,
            200,
            "{code} twice, then OK; requests {}",
            hydra.requests() - before
        );
        assert_eq!(hydra.requests() - before, 3, "{code}: two retries");
    }
    for fault in [
        // A rate limit that does not say when to come back: retrying would
        // only spend more of the quota every other check needs.
        Fault::Status(429, None),
        Fault::Status(500, None),
        Fault::Status(401, None),
        Fault::Garbage,
        Fault::ActiveAsString,
    ] {
        let before = hydra.requests();
        hydra.set_fault_times(fault.clone(), 1);
        assert_eq!(status(&check, &token).await, 503, "{fault:?}");
        assert_eq!(hydra.requests() - before, 1, "{fault:?} is not retried");
    }
    // A 429 that says when: retried like the others.
    let before = hydra.requests();
    hydra.set_fault_times(Fault::Status(429, Some(0)), 2);
    assert_eq!(status(&check, &token).await, 200);
    assert_eq!(hydra.requests() - before, 3, "429 with Retry-After: two retries");
    // Persistent 503: the first attempt plus max_retries (2), then 503.
    let before = hydra.requests();
    hydra.set_fault(Fault::Status(503, None));
    assert_eq!(status(&check, &token).await, 503);
    assert_eq!(hydra.requests() - before, 3);
    // `Retry-After: 0` does not lift max_retries (it was a busy loop until
    // the budget ran out), and a Retry-After past any budget (or past what
    // a clock can add) is one attempt, answered at once.
    for retry_after in [0, u32::MAX] {
        let before = hydra.requests();
        hydra.set_fault(Fault::Status(429, Some(retry_after)));
        assert_eq!(status(&check, &token).await, 503, "Retry-After: {retry_after}");
        let sent = hydra.requests() - before;
        let expected = if retry_after == 0 { 3 } else { 1 };
        assert_eq!(sent, expected, "Retry-After: {retry_after}");
    }
    hydra.set_fault(Fault::None);
    assert_eq!(status(&check, &token).await, 200, "healthy again");
}

#[tokio::test]
async fn retry_after_is_honoured_only_within_the_deadline() {
    let (hydra, check, _s) = setup(|_| {}).await;
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    // Retry-After: 30 s cannot fit in the 900 ms budget: answer 503 now, no second attempt.
    hydra.set_fault(Fault::Status(429, Some(30)));
    let started = Instant::now();
    assert_eq!(status(&check, &token).await, 503);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "did not wait for Retry-After: 30"
    );
    assert_eq!(hydra.requests(), 1);
}

#[tokio::test]
async fn envoys_grpc_deadline_bounds_the_check() {
    let (hydra, check, _s) = setup(|c| c.introspection.timeout_ms = 5_000).await;
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    hydra.set_fault(Fault::Hang);
    let mut req = tonic::Request::new(check_request(
        "GET",
        "/date",
        &[("authorization", &bearer(&token))],
        &[],
    ));
    req.set_timeout(Duration::from_millis(300)); // sent as grpc-timeout, as Envoy does
    let mut client = envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::new(
        support::channel(_s.grpc_addr).await,
    );
    // We answer (503) before the caller's deadline instead of letting it expire.
    let resp = client.check(req).await.expect("answered before grpc-timeout");
    assert_eq!(Answer::of(resp.get_ref()).http_status, 503);
    drop(check);
}

#[tokio::test]
async fn breaker_opens_then_a_probe_closes_it() {
    let (hydra, check, server) = setup(|c| {
        c.introspection.resilience.max_retries = 0;
        c.introspection.resilience.breaker_failures = 3;
        c.introspection.resilience.breaker_cooldown_ms = 300;
    })
    .await;
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    hydra.set_fault(Fault::Status(500, None));
    for _ in 0..3 {
        assert_eq!(status(&check, &token).await, 503);
    }
    assert_eq!(hydra.requests(), 3);
    // Open: denied at once, Hydra not asked.
    for _ in 0..5 {
        assert_eq!(status(&check, &token).await, 503);
    }
    assert_eq!(hydra.requests(), 3, "open circuit sends nothing to Hydra");
    let metrics = support::scrape(server.http_addr).await;
    assert!(metrics.contains("hydra_authz_circuit_open 1"), "{metrics}");
    assert!(
        metrics.contains("hydra_authz_introspection_errors_total{kind=\"circuit_open\"} 5"),
        "{metrics}"
    );

    hydra.set_fault(Fault::None);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        status(&check, &token).await,
        200,
        "the probe succeeds and closes the circuit"
    );
    assert_eq!(status(&check, &token).await, 200);
    let metrics = support::scrape(server.http_addr).await;
    assert!(metrics.contains("hydra_authz_circuit_open 0"), "{metrics}");
}

/// An answer too large or unreadable can be one token's own (its `ext`
/// from user-editable data): 503 for it, but repeating it must not open
/// the circuit for everyone. Nor can a 429, which a flood of made-up
/// tokens causes (and an open circuit would let stale-if-error serve a
/// token revoked since). Hydra is still asked each time, and a good
/// answer right after is decided normally (no cool-down to wait out).
#[tokio::test]
async fn unreadable_answers_cannot_open_the_circuit() {
    let (hydra, check, server) = setup(|c| {
        c.introspection.resilience.max_retries = 0;
        c.introspection.resilience.breaker_failures = 3;
        c.introspection.resilience.breaker_cooldown_ms = 60_000;
    })
    .await;
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    let mut asked = 0;
    for fault in [
        Fault::Huge(256 * 1024),
        Fault::Garbage,
        Fault::ArrayBody,
        Fault::Status(429, None),
    ] {
        hydra.set_fault(fault.clone());
        for _ in 0..5 {
            assert_eq!(status(&check, &token).await, 503, "{fault:?}");
        }
        asked += 5;
        assert_eq!(hydra.requests(), asked, "{fault:?}: every check still asks Hydra");
    }
    let metrics = support::scrape(server.http_addr).await;
    assert!(metrics.contains("hydra_authz_circuit_open 0"), "{metrics}");
    hydra.set_fault(Fault::None);
    assert_eq!(status(&check, &token).await, 200);
    // A fault of Hydra's own still opens it.
    hydra.set_fault(Fault::Status(500, None));
    for _ in 0..3 {
        assert_eq!(status(&check, &token).await, 503);
    }
    let metrics = support::scrape(server.http_addr).await;
    assert!(metrics.contains("hydra_authz_circuit_open 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_to_hydra_is_bounded_and_excess_is_shed() {
    let (hydra, check, _s) = setup(|c| {
        c.introspection.resilience.max_concurrent = 2;
        c.introspection.resilience.max_waiting = 2;
    })
    .await;
    hydra.set_fault(Fault::Delay(Duration::from_millis(200)));
    let tokens: Vec<String> = (0..12)
        .map(|_| hydra.issuer.mint("reader", &["read_date"]).expect("mint"))
        .collect();
    let tasks: Vec<_> = tokens
        .into_iter()
        .map(|t| {
            let c = check.clone();
            tokio::spawn(async move { status(&c, &t).await })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("join"));
    }
    let ok = answers.iter().filter(|s| **s == 200).count();
    let shed = answers.iter().filter(|s| **s == 503).count();
    assert_eq!(ok + shed, 12, "every check answered, 200 or 503 only: {answers:?}");
    assert!(ok >= 2, "the admitted ones pass: {answers:?}");
    assert!(shed >= 1, "the excess is shed: {answers:?}");
    assert!(
        hydra.max_in_flight() <= 2,
        "at most 2 calls in flight at Hydra, saw {}",
        hydra.max_in_flight()
    );
}
