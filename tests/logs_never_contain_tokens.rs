//! House rule: no token in logs, at any level, in any format. This binary
//! installs a TRACE-level subscriber for every crate (hyper, h2, reqwest,
//! tonic included), in both log formats, and drives every decision path with
//! recognisable tokens.

mod support;

use support::hydra::{FakeHydra, Fault};
use support::{bearer, config_for, start_authz, Capture, Checker};
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_appears_in_logs_at_any_level() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("trace"))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(capture.clone())
                .with_ansi(false),
        )
        .with(tracing_subscriber::fmt::layer().json().with_writer(capture.clone()));
    tracing::subscriber::set_global_default(subscriber).expect("global subscriber");

    let hydra = FakeHydra::start().await;
    let mut config = config_for(&hydra.introspection_url());
    config.introspection.timeout_ms = 300;
    // The fifth Hydra fault below then finds the circuit open (an
    // unreadable answer does not count towards it: it may be one token's).
    config.introspection.resilience.breaker_failures = 3;
    let server = start_authz(&config).await;
    let check = Checker::connect(server.grpc_addr).await;

    let reader = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    let revoked = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    hydra.issuer.revoke_token(&revoked);
    let unknown = "ory_at_UNKNOWNTOKENVALUE0123456789";
    let in_basic = "c2VjcmV0LWJhc2ljLWNyZWRlbnRpYWw";
    let secrets = [reader.as_str(), revoked.as_str(), unknown, in_basic];

    let auth = |t: &str| bearer(t);
    check.check("GET", "/date", &[("authorization", &auth(&reader))]).await; // allow
    check.check("POST", "/echo", &[("authorization", &auth(&reader))]).await; // insufficient scope
    check.check("GET", "/date", &[("authorization", &auth(&revoked))]).await; // inactive
    check.check("GET", "/date", &[("authorization", &auth(unknown))]).await; // unknown
    check
        .check("GET", "/date", &[("authorization", &format!("Basic {in_basic}"))])
        .await; // malformed
    check.check("GET", "/nope", &[("authorization", &auth(&reader))]).await; // no rule
    for fault in [
        Fault::Status(500, None),
        Fault::Garbage,
        Fault::Hang,
        Fault::ResetMidBody,
        Fault::Status(500, None),
    ] {
        hydra.set_fault(fault);
        check.check("GET", "/date", &[("authorization", &auth(&reader))]).await;
        // 503 paths
    }
    hydra.set_fault(Fault::None);
    server.shutdown().await.expect("shutdown");

    let logs = capture.text();
    // The capture really saw the decisions (so an empty log cannot pass)...
    let fp = hydra_authz::extract::credential::fingerprint(&reader);
    assert!(logs.contains(fp.as_str()), "decision lines carry the token fingerprint");
    assert!(logs.contains("insufficient_scope") && logs.contains("introspection_unavailable"));
    assert!(logs.lines().count() > 50, "TRACE output from the stack was captured");
    // ...and never a token.
    for s in secrets {
        assert!(!logs.contains(s), "a token leaked into the logs");
    }

    // Exactly one decision line per check (11 above), each with every field.
    let decisions: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "hydra_authz::decision")
        .collect();
    assert_eq!(decisions.len(), 11, "one line per decision");
    for d in &decisions {
        for field in [
            "decision",
            "status",
            "reason",
            "detail",
            "rule_id",
            "client_id",
            "method",
            "path",
            "latency_us",
            "token_fp",
            "stale",
        ] {
            assert!(!d["fields"][field].is_null(), "{field} missing in {d}");
        }
    }
    let reasons: Vec<(&str, &str, i64)> = decisions
        .iter()
        .map(|d| {
            let f = &d["fields"];
            (
                d["level"].as_str().unwrap_or(""),
                f["reason"].as_str().unwrap_or(""),
                f["status"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        &reasons[..6],
        &[
            ("INFO", "allowed", 200),
            ("INFO", "insufficient_scope", 403),
            ("INFO", "invalid_token", 401),
            ("INFO", "invalid_token", 401),
            ("INFO", "invalid_request", 400),
            ("INFO", "no_rule", 403),
        ]
    );
    // Hydra failing: WARN, until the circuit opens; then the breaker's own
    // line has said so, and each check is INFO (no WARN flood in an outage).
    assert_eq!(
        &reasons[6..],
        &[
            ("WARN", "introspection_unavailable", 503),
            ("WARN", "introspection_unavailable", 503),
            ("WARN", "introspection_unavailable", 503),
            ("WARN", "introspection_unavailable", 503),
            ("INFO", "introspection_unavailable", 503),
        ]
    );
    assert!(
        decisions[10]["fields"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("circuit_open")),
        "{}",
        decisions[10]
    );
    assert!(
        logs.contains("introspection circuit opened"),
        "the breaker announced it"
    );
    assert_eq!(decisions[0]["fields"]["client_id"], "reader");
    assert_eq!(decisions[0]["fields"]["rule_id"], "read-date");
    assert!(
        decisions[6]["fields"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("status")),
        "a 503 says why on its own line: {}",
        decisions[6]
    );
}
