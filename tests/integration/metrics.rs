//! `GET /metrics`: scraped after real checks and parsed with a Prometheus
//! text-format parser (prometheus-parse), counts asserted.

use crate::support;

use prometheus_parse::{Scrape, Value};
use support::hydra::{FakeHydra, Fault};
use support::{bearer, config_for, start_authz, Checker};

fn sample<'a>(s: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<&'a Value> {
    s.samples
        .iter()
        .find(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| &x.value)
}

fn number(v: Option<&Value>) -> f64 {
    match v {
        Some(Value::Counter(n) | Value::Gauge(n) | Value::Untyped(n)) => *n,
        other => panic!("not a number: {other:?}"),
    }
}

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
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = Scrape::parse(lines).expect("valid exposition format");

    let decisions = "hydra_authz_decisions_total";
    assert_eq!(
        number(sample(
            &scrape,
            decisions,
            &[("decision", "allow"), ("reason", "allowed")]
        )),
        2.0
    );
    assert_eq!(
        number(sample(
            &scrape,
            decisions,
            &[("decision", "deny"), ("reason", "insufficient_scope")]
        )),
        1.0
    );
    assert_eq!(
        number(sample(
            &scrape,
            decisions,
            &[("decision", "deny"), ("reason", "missing_token")]
        )),
        1.0
    );
    assert_eq!(
        number(sample(
            &scrape,
            decisions,
            &[("decision", "deny"), ("reason", "introspection_unavailable")]
        )),
        1.0
    );
    let errors = sample(&scrape, "hydra_authz_introspection_errors_total", &[("kind", "status")]);
    assert_eq!(number(errors), 1.0);
    assert_eq!(number(sample(&scrape, "hydra_authz_checks_in_flight", &[])), 0.0);
    assert_eq!(
        number(sample(
            &scrape,
            "hydra_authz_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        )),
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
