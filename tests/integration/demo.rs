//! The Quick start's first command, as a newcomer runs it: `hydra-authz demo`
//! (the real binary, real Envoy), then the curl commands its banner prints.
//! The demo uses fixed ports (8080, 8081, 4444, 4445, 9191, 9192, 9901),
//! all below Linux's ephemeral range, so the other tests cannot take them.

use reqwest::StatusCode;
use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

const ENVOY: &str = "http://127.0.0.1:8080";

async fn get(
    client: &reqwest::Client,
    method: reqwest::Method,
    path: &str,
    auth: Option<&str>,
) -> (StatusCode, String, Value) {
    let mut req = client.request(method, format!("{ENVOY}{path}"));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let r = req.send().await.expect("request through the demo's Envoy");
    let status = r.status();
    let www = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ascii").to_owned())
        .unwrap_or_default();
    let text = r.text().await.expect("body");
    (status, www, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Both demos, one after the other (they share the fixed ports): on the
/// built-in issuer, then `--hydra` in front of the real Ory Hydra.
#[tokio::test]
async fn the_demo_shows_an_allow_and_every_kind_of_deny() {
    demo(&[]).await;
    let hydra = crate::support::ory::hydra_binary();
    demo(&["--hydra", hydra.to_str().expect("utf-8 path")]).await;
}

async fn demo(extra: &[&str]) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hydra-authz"))
        .arg("demo")
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start the demo");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (mut reader, mut writer, mut revoke) = (String::new(), String::new(), String::new());
    let mut issuer = String::new();
    let banner = async {
        while let Some(line) = lines.next_line().await.expect("read banner") {
            let line = line.trim().to_owned();
            if let Some(t) = line.strip_prefix("export READER=") {
                reader = t.to_owned();
            } else if let Some(t) = line.strip_prefix("export WRITER=") {
                writer = t.to_owned();
            } else if line.contains("-d token=$READER") {
                revoke = line
                    .split_whitespace()
                    .find(|w| w.starts_with("http://"))
                    .expect("revoke URL in the banner")
                    .to_owned();
            } else if line.contains(": token http://") {
                issuer = line.clone();
            } else if line.starts_with("Ctrl-C") {
                return;
            }
        }
        panic!("the demo exited before printing its banner");
    };
    tokio::time::timeout(Duration::from_secs(90), banner).await.expect(
        "the demo printed its banner within 90 s (ports 8080, 8081, 4444, 4445, 9191, 9192, 9901 must be free)",
    );
    assert!(!reader.is_empty() && !writer.is_empty() && !revoke.is_empty());
    let want = if extra.is_empty() {
        "Dev issuer (built in)"
    } else {
        "Ory Hydra (real)"
    };
    assert!(issuer.starts_with(want), "{issuer}");

    let client = reqwest::Client::builder().no_proxy().build().expect("client");
    let (r, w) = (format!("Bearer {reader}"), format!("Bearer {writer}"));
    use reqwest::Method;

    // Allow, with the injected identity, overwriting a spoofed one.
    let (status, _, body) = get(&client, Method::GET, "/date", Some(&r)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["headers"]["x-client-id"], "reader");
    assert_eq!(body["headers"]["x-scopes"], "read_date");
    assert_eq!(body["headers"]["x-subject"], "reader");
    let spoofed = client
        .get(format!("{ENVOY}/date"))
        .header("authorization", &r)
        .header("x-client-id", "admin")
        .send()
        .await
        .expect("request");
    let body: Value = spoofed.json().await.expect("json");
    assert_eq!(body["headers"]["x-client-id"], "reader");
    let (status, _, _) = get(&client, Method::POST, "/echo", Some(&w)).await;
    assert_eq!(status, StatusCode::OK);

    // Each kind of deny the banner lists.
    let (status, www, _) = get(&client, Method::GET, "/date", None).await;
    assert_eq!(
        (status, www.as_str()),
        (StatusCode::UNAUTHORIZED, "Bearer realm=\"hydra-authz\"")
    );
    let (status, www, _) = get(&client, Method::GET, "/date", Some("Bearer nope")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(www.contains("error=\"invalid_token\""), "{www}");
    let (status, www, _) = get(&client, Method::GET, "/date", Some("Basic abc")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(www.contains("error=\"invalid_request\""), "{www}");
    let (status, www, body) = get(&client, Method::POST, "/echo", Some(&r)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(www.contains("error=\"insufficient_scope\""), "{www}");
    assert_eq!(body["type"], "urn:hydra-authz:problem:insufficient_scope");
    let (status, _, body) = get(&client, Method::GET, "/admin", Some(&r)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // Revoked with the banner's command: refused on the next request.
    let revoked = client
        .post(&revoke)
        .basic_auth("reader", Some("reader-secret"))
        .form(&[("token", reader.as_str())])
        .send()
        .await
        .expect("revoke");
    assert!(revoked.status().is_success());
    let (status, _, _) = get(&client, Method::GET, "/date", Some(&r)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Ctrl-C (here SIGTERM) stops everything, Envoy included.
    let status = crate::support::sigterm_and_wait(&mut child, Duration::from_secs(20)).await;
    assert!(status.success(), "{status}");
    assert!(
        client.get(format!("{ENVOY}/date")).send().await.is_err(),
        "Envoy stopped with the demo"
    );
}
