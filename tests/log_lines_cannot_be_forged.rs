//! Log integrity: control characters in anything a caller or the issuer
//! chooses (method, path, host, client_id) cannot split a decision line or
//! forge one, in either log format, as the server formats them
//! (`telemetry::log_layer`). Own binary: it installs a global subscriber.

mod support;

use hydra_authz::config::LogFormat;
use support::hydra::FakeHydra;
use support::{bearer, check_request_on_host, config_for, start_authz, Capture, Checker};
use tracing_subscriber::layer::SubscriberExt;

const FORGED: &str = "2030-01-01T00:00:00.000000Z  INFO hydra_authz::decision: decision decision=\"allow\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_cannot_split_or_forge_decision_lines() {
    let pretty = Capture::default();
    let json = Capture::default();
    let layers = vec![
        // Colours on: the harder case (the formatter's own escape codes).
        hydra_authz::telemetry::log_layer(LogFormat::Pretty, pretty.clone(), true),
        hydra_authz::telemetry::log_layer(LogFormat::Json, json.clone(), false),
    ];
    let subscriber = tracing_subscriber::registry()
        .with(layers)
        .with(tracing_subscriber::filter::Targets::new().with_target("hydra_authz::decision", tracing::Level::INFO));
    tracing::subscriber::set_global_default(subscriber).expect("global subscriber");

    let hydra = FakeHydra::start().await;
    let server = start_authz(&config_for(&hydra.introspection_url())).await;
    let check = Checker::connect(server.grpc_addr).await;
    let reader = bearer(&hydra.issuer.mint("reader", &["read_date"]).expect("mint"));
    let evil_client = bearer(&hydra.issuer.mint_with_claims(
        "reader",
        &["read_date"],
        serde_json::json!({ "client_id": format!("evil\r\n{FORGED}\u{1b}[2K\u{2028}") }),
    ));

    let nl = format!("\n{FORGED}");
    let cases: Vec<(String, String, String, String)> = vec![
        (format!("GET{nl}"), "api.local".into(), "/date".into(), reader.clone()),
        ("GET".into(), format!("api.local{nl}"), "/date".into(), reader.clone()),
        ("GET".into(), "api.local".into(), format!("/date{nl}"), reader.clone()),
        (
            "GET".into(),
            "api.local".into(),
            format!("/date%0A{}", FORGED.replace(' ', "%20")),
            reader.clone(),
        ),
        ("GET".into(), "api.local".into(), "/date".into(), evil_client.clone()),
        (
            "GET".into(),
            "api.local".into(),
            "/d\u{202e}ate\r".into(),
            reader.clone(),
        ),
    ];
    for (method, host, path, auth) in &cases {
        check
            .raw(check_request_on_host(method, host, path, &[("authorization", auth)]))
            .await;
    }
    // The service still serves normally afterwards.
    let ok = support::Answer::of(&check.check("GET", "/date", &[("authorization", &reader)]).await);
    assert_eq!(ok.http_status, 200);
    let decisions = cases.len() + 1;

    let pretty = pretty.text();
    let lines: Vec<&str> = pretty.lines().collect();
    // One line per decision; the evil client id also gets one WARN line
    // saying its header was removed (checked like the rest below).
    let decision_lines = lines
        .iter()
        .filter(|l| strip_sgr(l).contains(" decision decision="))
        .count();
    assert_eq!(decision_lines, decisions, "one line per decision:\n{pretty}");
    assert!(lines.len() <= decisions + 1, "{pretty}");
    for line in &lines {
        // The formatter's own colours (ESC [ digits m) aside, nothing
        // attacker-chosen may put a control character on the line.
        let plain = strip_sgr(line);
        let (head, _) = plain.split_once("hydra_authz::decision").expect("decision target");
        assert!(
            !head.contains("2030-01-01T"),
            "the line starts with forged text: {plain}"
        );
        assert!(
            !plain.chars().any(|c| c.is_control()),
            "control character in: {plain:?}"
        );
    }

    let json = json.text();
    let lines: Vec<&str> = json.lines().collect();
    let values: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
        .collect();
    let decision_lines = values.iter().filter(|v| v["message"] == "decision").count();
    assert_eq!(decision_lines, decisions, "one JSON line per decision:\n{json}");
    for (line, v) in lines.iter().zip(&values) {
        if v["message"] != "decision" {
            assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
            continue;
        }
        for field in ["method", "host", "path", "client_id"] {
            let s = v[field].as_str().unwrap_or_default();
            assert!(
                !s.chars().any(|c| c.is_control() || c == '\u{2028}' || c == '\u{202e}'),
                "{field}: {s:?}"
            );
        }
    }
    server.shutdown().await.expect("shutdown");
}

/// `line` without ANSI SGR sequences (`ESC [ <digits;> m`), which the
/// compact formatter itself writes.
fn strip_sgr(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find('\u{1b}') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let sgr = after.strip_prefix('[').and_then(|a| {
            let end = a.find(|c: char| !(c.is_ascii_digit() || c == ';'))?;
            (a.as_bytes()[end] == b'm').then_some(end + 2)
        });
        match sgr {
            Some(n) => rest = &after[n..],
            None => {
                out.push('\u{1b}');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}
