//! `GET /metrics`: scraped after real checks and parsed with a Prometheus
//! text-format parser (prometheus-parse), counts asserted.

use crate::support;

use prometheus_parse::Value;
use support::hydra::{FakeHydra, Fault};
use support::{bearer, config_for, metric, parse_metrics, sample, start_authz, Checker};

#[tokio::test]
async fn metrics_count_decisions_latency_and_introspection_errors() {
    let hydra = FakeHydra::start().await;
    let server = start_authz(&config_for(&hydra.introspection_url())).await;
    let check = Checker::connect(server.grpc_addr).await;
    let reader = bearer(&hydra.issuer.mint("reader", &["read_date"]).expect("mint"));

    check.check("GET", "/date", &[("authorization", &reader)]).await;
    check.check("GET", "/date", &[("authorization", &reader)]).await;
    check.check("POST", "/echo", &[("authorization", &reader)]).await;
    check.check("GET", "/date", &[]).await;
    hydra.set_fault(Fault::Status(500, None));
    check.check("GET", "/date", &[("authorization", &reader)]).await;

    let resp = reqwest::get(format!("http://{}/metrics", server.http_addr))
        .await
        .expect("scrape");
    assert_eq!(resp.status(), 200);
    let ctype = resp.headers()["content-type"].to_str().expect("ascii").to_owned();
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    let text = resp.text().await.expect("body");
    let scrape = parse_metrics(&text);

    let decisions = "hydra_authz_decisions_total";
    assert_eq!(
        metric(&scrape, decisions, &[("decision", "allow"), ("reason", "allowed")]),
        2.0
    );
    assert_eq!(
        metric(
            &scrape,
            decisions,
            &[("decision", "deny"), ("reason", "insufficient_scope")]
        ),
        1.0
    );
    assert_eq!(
        metric(&scrape, decisions, &[("decision", "deny"), ("reason", "missing_token")]),
        1.0
    );
    assert_eq!(
        metric(
            &scrape,
            decisions,
            &[("decision", "deny"), ("reason", "introspection_unavailable")]
        ),
        1.0
    );
    let errors = metric(&scrape, "hydra_authz_introspection_errors_total", &[("kind", "status")]);
    assert_eq!(errors, 1.0);
    assert_eq!(metric(&scrape, "hydra_authz_checks_in_flight", &[]), 0.0);
    assert_eq!(
        metric(
            &scrape,
            "hydra_authz_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    match sample(&scrape, "hydra_authz_check_duration_seconds", &[]) {
        Some(Value::Histogram(buckets)) => {
            let inf = buckets.iter().map(|b| b.count).fold(0.0, f64::max);
            assert_eq!(inf, 5.0, "five checks observed");
        }
        other => panic!("check histogram: {other:?}"),
    }
    match sample(&scrape, "hydra_authz_introspection_duration_seconds", &[]) {
        Some(Value::Histogram(buckets)) => {
            let inf = buckets.iter().map(|b| b.count).fold(0.0, f64::max);
            assert_eq!(inf, 4.0, "no token => no introspection");
        }
        other => panic!("introspection histogram: {other:?}"),
    }
    server.shutdown().await.expect("shutdown");
}
