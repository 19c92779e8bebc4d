//! The Hydra fault matrix through a real Envoy: a client's request crosses
//! Envoy's ext_authz filter, hydra-authz and the Hydra-shaped server, which
//! misbehaves in each documented way. Every fault must end as a deny at the
//! client (503 from hydra-authz, never the upstream), and the very next
//! request after Hydra recovers must be allowed again.

use crate::support;

use reqwest::StatusCode;
use std::time::Duration;
use support::hydra::{FakeHydra, Fault};
use support::stack::{envoy_in_front_of, http};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hydra_fault_is_a_deny_at_the_client_and_recovery_is_immediate() {
    let hydra = FakeHydra::start().await;
    let mut config = support::config_for(&hydra.introspection_url());
    config.introspection.timeout_ms = 400;
    // Short retry budget: retried faults still end well inside Envoy's 1 s ext_authz timeout.
    config.introspection.resilience.retry_budget_ms = 500;
    // Keep the circuit closed, so each fault is seen by a real call.
    config.introspection.resilience.breaker_failures = 1_000;
    let authz = support::start_authz(&config).await;
    let envoy = envoy_in_front_of(&authz, None).await;
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    let url = format!("http://{}/date", envoy.listener);
    let client = http();
    let get = || async {
        let r = client
            .get(&url)
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .expect("request through Envoy");
        let status = r.status();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        (status, body)
    };

    let (status, body) = get().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["headers"]["x-client-id"], "reader", "reached the upstream");

    let faults = [
        ("accept then hang", Fault::Hang),
        ("500", Fault::Status(500, None)),
        ("502", Fault::Status(502, None)),
        ("503 with Retry-After", Fault::Status(503, Some(1))),
        ("429 with Retry-After", Fault::Status(429, Some(1))),
        ("401 (Hydra refuses our credentials)", Fault::Status(401, None)),
        ("garbage body", Fault::Garbage),
        ("active as a string", Fault::ActiveAsString),
        ("fields as a JSON array", Fault::ArrayBody),
        ("10 MiB body", Fault::Huge(10 * 1024 * 1024)),
        ("wrong content type", Fault::WrongContentType),
        ("reset mid-body", Fault::ResetMidBody),
        ("reset on accept", Fault::ResetOnAccept),
    ];
    for (name, fault) in faults {
        hydra.set_fault(fault);
        let (status, body) = get().await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{name}: {body}");
        assert_eq!(
            body["type"], "urn:hydra-authz:problem:introspection_unavailable",
            "{name}: hydra-authz's answer, not Envoy's own error: {body}"
        );
        assert!(
            body.get("headers").is_none(),
            "{name}: the upstream must not be reached"
        );
        hydra.set_fault(Fault::None);
        let (status, body) = get().await;
        assert_eq!(status, StatusCode::OK, "after {name}: {body}");
    }

    // Slow but within the timeout: decided normally.
    hydra.set_fault(Fault::Delay(Duration::from_millis(100)));
    assert_eq!(get().await.0, StatusCode::OK);
    hydra.set_fault(Fault::None);

    // Hydra gone altogether (connection refused).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut gone = config.clone();
    gone.introspection.url = format!("http://127.0.0.1:{port}/admin/oauth2/introspect");
    let authz2 = support::start_authz(&gone).await;
    let envoy2 = envoy_in_front_of(&authz2, None).await;
    let r = client
        .get(format!("http://{}/date", envoy2.listener))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = r.json().await.expect("problem+json");
    assert_eq!(body["type"], "urn:hydra-authz:problem:introspection_unavailable");
}
