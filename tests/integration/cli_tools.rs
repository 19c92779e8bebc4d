//! Operator tooling, run as the real binary: `check`, `token`,
//! `rules from-openapi`, and `config check` warnings, against the
//! Hydra-shaped server and the real OAuth2 server (oidc-provider).

use crate::support;
use std::sync::Arc;

use hydra_authz::authn::{Authenticator, AuthnError, Identity};
use hydra_authz::config::Config;
use hydra_authz::decision::Engine;
use hydra_authz::extract::credential::Token;
use hydra_authz::extract::AuthzRequest;
use std::collections::HashMap;
use std::path::Path;
use std::process::Output;
use support::hydra::FakeHydra;
use support::stack::OAuth2Server;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const SEED_OPENAPI: &str = "config/examples/seed-api.openapi.yaml";

async fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_hydra-authz"));
    cmd.args(args).current_dir(ROOT).env_remove("HYDRA_AUTHZ_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().await.expect("run hydra-authz")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The shipped config pointed at `url`, written to a temp file.
fn config_file(dir: &tempfile::TempDir, url: &str, extra: &str) -> String {
    let shipped = std::fs::read_to_string(Path::new(ROOT).join("config/hydra-authz.toml")).expect("read");
    // A generous timeout: the first introspections at a freshly started node
    // server, on 2 cores shared with the other suites, can exceed the shipped 800 ms.
    let text = shipped
        .replace("http://127.0.0.1:4445/admin/oauth2/introspect", url)
        .replace("timeout_ms = 800", "timeout_ms = 5000")
        .replace("kind = \"none\"", extra);
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).expect("write");
    path.to_string_lossy().into_owned()
}

#[tokio::test]
async fn check_explains_allow_deny_and_errors_with_exit_codes() {
    let hydra = FakeHydra::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config_file(&dir, &hydra.introspection_url(), "kind = \"none\"");
    let reader = hydra.issuer.mint("reader", &["read_date"]).expect("mint");

    let allow = run(
        &[
            "check",
            "--config",
            &cfg,
            "--method",
            "GET",
            "--path",
            "/date",
            "--token-env",
            "T",
            "--header",
            "x-client-id: admin",
        ],
        &[("T", &reader)],
    )
    .await;
    assert_eq!(allow.status.code(), Some(0), "{}", stderr(&allow));
    let out = stdout(&allow);
    assert!(out.starts_with("ALLOW 200 allowed"), "{out}");
    assert!(out.contains("rule:      read-date"), "{out}");
    assert!(out.contains("set    x-client-id: reader"), "{out}");
    assert!(
        out.contains("claims: active ok (introspected); exp ok"),
        "claim checks shown: {out}"
    );
    assert!(
        out.contains("iss Some(") && out.contains("not checked (allowed_issuers is empty)"),
        "{out}"
    );
    assert!(!out.contains(&reader), "never prints the token");

    let deny = run(
        &[
            "check", "--config", &cfg, "--method", "POST", "--path", "/echo", "--token", &reader, "--output", "json",
        ],
        &[],
    )
    .await;
    assert_eq!(deny.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_str(&stdout(&deny)).expect("json output");
    assert_eq!(json["reason"], "insufficient_scope");
    assert_eq!(json["http_status"], 403);
    assert_eq!(json["required_scopes"], serde_json::json!(["post_echo"]));
    assert_eq!(json["granted_scopes"], serde_json::json!(["read_date"]));
    assert_eq!(json["scope_strategy"], "exact");
    assert!(json["response_headers"]["www-authenticate"]
        .as_str()
        .is_some_and(|w| w.contains("insufficient_scope")));
    assert!(!stdout(&deny).contains(&reader));
    let body: serde_json::Value =
        serde_json::from_str(json["response_body"].as_str().expect("body")).expect("problem+json body");
    assert_eq!(
        (body["status"].as_u64(), body["title"].is_string()),
        (Some(403), true),
        "{body}"
    );

    let ctx = run(
        &[
            "check",
            "--config",
            &cfg,
            "--path",
            "/reports",
            "--token",
            &reader,
            "--context-extension",
            "required_scopes=read_date",
        ],
        &[],
    )
    .await;
    assert_eq!(ctx.status.code(), Some(0), "{}", stdout(&ctx));

    let error = run(&["check", "--config", "/nonexistent.toml", "--path", "/date"], &[]).await;
    assert_eq!(error.status.code(), Some(2));
    let bad_header = run(
        &["check", "--config", &cfg, "--path", "/date", "--header", "no-colon"],
        &[],
    )
    .await;
    assert_eq!(bad_header.status.code(), Some(2));
}

/// The remaining `check` flags, `any_of` rules, first-match narration, and
/// exit code 2 when no decision can be made.
#[tokio::test]
async fn check_flags_alternatives_and_no_decision() {
    let hydra = FakeHydra::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let extra_rules =
        "\n[[rules]]\nid = \"admin-host\"\nhost = \"admin.example\"\npath = \"/admin\"\nscopes = [\"read_date\"]\n\
        [[rules]]\nid = \"alt\"\npath = \"/alt\"\nany_of = [[\"admin\"], [\"read_date\"]]\n\
        [[rules]]\nid = \"fallback\"\npath = \"/**\"\nscopes = [\"admin\"]\n";
    let cfg = config_file(&dir, &hydra.introspection_url(), "kind = \"none\"");
    let mut text = std::fs::read_to_string(&cfg).expect("read");
    text.push_str(extra_rules);
    std::fs::write(&cfg, text).expect("write");
    let reader = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{reader}\n")).expect("write");
    let tf = token_file.to_string_lossy().into_owned();
    let check = |extra: &[&str]| {
        let mut args = vec!["check", "--config", &cfg];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let run_check = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&refs, &[]).await
    };

    // --host (with a port, as Envoy's :authority carries) and --token-file.
    let on_host = run_check(check(&[
        "--host",
        "admin.example:8443",
        "--path",
        "/admin",
        "--token-file",
        &tf,
    ]))
    .await;
    assert_eq!(on_host.status.code(), Some(0), "{}", stdout(&on_host));
    assert!(stdout(&on_host).contains("rule:      admin-host"));
    let other_host = run_check(check(&[
        "--host",
        "api.example",
        "--path",
        "/admin",
        "--token-file",
        &tf,
    ]))
    .await;
    assert_eq!(other_host.status.code(), Some(1));
    let out = stdout(&other_host);
    assert!(out.contains("rule \"admin-host\": host does not match"), "{out}");
    assert!(out.contains("rule:      fallback"), "{out}");

    // Repeated --header: the token given as a header, next to another one; lower-case method.
    let bearer = format!("Authorization: Bearer {reader}");
    let headers = run_check(check(&[
        "--method", "get", "--path", "/date", "--header", "x-a: 1", "--header", &bearer,
    ]))
    .await;
    assert_eq!(headers.status.code(), Some(0), "{}", stdout(&headers));
    let out = stdout(&headers);
    assert!(
        out.contains("rule \"read-date\": matches (first match in file order: used)"),
        "{out}"
    );
    assert!(
        out.contains("rule \"fallback\": matches too, but not used: rule \"read-date\" comes first"),
        "{out}"
    );

    // any_of: needs one whole alternative, and says so.
    let alt = run_check(check(&["--path", "/alt", "--token-file", &tf])).await;
    assert_eq!(alt.status.code(), Some(0), "{}", stdout(&alt));
    assert!(
        stdout(&alt).contains("needs:     one of [admin] or [read_date] (strategy exact)"),
        "{}",
        stdout(&alt)
    );
    let json = run_check(check(&["--path", "/alt", "--output", "json"])).await;
    let json: serde_json::Value = serde_json::from_str(&stdout(&json)).expect("json");
    assert_eq!(json["any_of"], serde_json::json!(["admin", "read_date"]));
    assert_eq!(json["reason"], "missing_token");

    // Deny text shows the problem+json body.
    let deny = run_check(check(&["--method", "POST", "--path", "/echo", "--token-file", &tf])).await;
    assert_eq!(deny.status.code(), Some(1));
    assert!(stdout(&deny).contains("response body:\n  {"), "{}", stdout(&deny));
    assert!(stdout(&deny).contains("\"status\":403"), "{}", stdout(&deny));

    // Only one way to give the token.
    let both = run_check(check(&["--path", "/date", "--token", "x", "--token-file", &tf])).await;
    assert_eq!(both.status.code(), Some(2));
    assert!(stderr(&both).contains("cannot be used with"), "{}", stderr(&both));

    // Hydra failing: the server would answer 503; for scripts that is "no decision", exit 2.
    hydra.set_fault(support::hydra::Fault::ResetOnAccept);
    let down = run_check(check(&["--path", "/date", "--token-file", &tf])).await;
    assert_eq!(down.status.code(), Some(2), "{}", stdout(&down));
    assert!(stdout(&down).starts_with("DENY 503"), "{}", stdout(&down));
    assert!(stderr(&down).contains("no decision could be made"), "{}", stderr(&down));
}

#[tokio::test]
async fn token_and_check_against_the_real_oauth2_server() {
    let oauth2 = OAuth2Server::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("introspect-secret");
    std::fs::write(&secret, "hydra-authz-secret").expect("write");
    let auth = format!(
        "kind = \"client_secret_basic\"\nclient_id = \"hydra-authz\"\nclient_secret_file = \"{}\"",
        secret.display()
    );
    let cfg = config_file(&dir, &oauth2.introspection_url(), &auth);
    let token_url = format!("{}/token", oauth2.base);

    let tok = run(
        &[
            "token",
            "--token-url",
            &token_url,
            "--client-id",
            "writer",
            "--client-secret-env",
            "S",
            "--scope",
            "post_echo",
        ],
        &[("S", "writer-secret")],
    )
    .await;
    assert_eq!(tok.status.code(), Some(0), "{}", stderr(&tok));
    let token = stdout(&tok).trim().to_owned();
    assert_eq!(stdout(&tok).lines().count(), 1, "only the token is printed");
    assert!(!token.is_empty());

    let allow = run(
        &[
            "check", "--config", &cfg, "--method", "POST", "--path", "/echo", "--token", &token,
        ],
        &[],
    )
    .await;
    assert_eq!(allow.status.code(), Some(0), "{}{}", stdout(&allow), stderr(&allow));
    assert!(stdout(&allow).contains("set    x-client-id: writer"));
    let deny = run(
        &[
            "check", "--config", &cfg, "--method", "GET", "--path", "/date", "--token", &token,
        ],
        &[],
    )
    .await;
    assert_eq!(deny.status.code(), Some(1));

    let bad = run(
        &[
            "token",
            "--token-url",
            &token_url,
            "--client-id",
            "writer",
            "--client-secret-env",
            "S",
        ],
        &[("S", "wrong")],
    )
    .await;
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("invalid_client"), "{}", stderr(&bad));
    assert!(stdout(&bad).is_empty());
}

#[tokio::test]
async fn token_against_the_hydra_shaped_issuer_with_post_auth() {
    let (issuer, addrs) = hydra_authz::demo::issuer::DevIssuer::serve(support::lo0(), support::lo0(), 60)
        .await
        .expect("issuer");
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("s");
    std::fs::write(&secret, "reader-secret\n").expect("write");
    let secret = secret.to_string_lossy().into_owned();
    let out = run(
        &[
            "token",
            "--token-url",
            &addrs.token_url(),
            "--client-id",
            "reader",
            "--client-secret-file",
            &secret,
            "--client-secret-post",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let token = stdout(&out).trim().to_owned();
    assert!(token.starts_with("ory_at_"));
    // Hydra grants the client's registered scopes when none are requested.
    let http = reqwest::Client::new();
    let body: serde_json::Value = serde_json::from_slice(
        &http
            .post(addrs.introspection_url())
            .form(&[("token", token.as_str())])
            .send()
            .await
            .expect("introspect")
            .bytes()
            .await
            .expect("body"),
    )
    .expect("json");
    assert_eq!(body["active"], true);
    assert_eq!(body["scope"], "read_date");
    drop(issuer);
}

#[tokio::test]
async fn from_openapi_reproduces_the_committed_seed_rules() {
    let out = run(&["rules", "from-openapi", "config/examples/seed-api.openapi.yaml"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let committed = std::fs::read_to_string(Path::new(ROOT).join("config/examples/seed-api.rules.toml")).expect("read");
    assert_eq!(stdout(&out), committed);
    assert!(
        stderr(&out).is_empty(),
        "no warnings for the seed API: {}",
        stderr(&out)
    );

    let missing = run(&["rules", "from-openapi", "config/examples/nope.yaml"], &[]).await;
    assert_eq!(missing.status.code(), Some(1));
}

/// Answers by token value, so two rule sets can be compared without a network.
struct ByName;

impl Authenticator for ByName {
    async fn authenticate(&self, token: &Token) -> Result<Arc<Identity>, AuthnError> {
        let scopes: &[&str] = match token.expose() {
            "reader" => &["read_date"],
            "writer" => &["post_echo"],
            "both" => &["read_date", "post_echo"],
            _ => &[],
        };
        Ok(Arc::new(Identity {
            client_id: Some(token.expose().into()),
            scopes: scopes.iter().map(|&s| Arc::from(s)).collect(),
            ..Default::default()
        }))
    }
}

#[tokio::test]
async fn generated_rules_decide_exactly_like_the_hand_written_ones() {
    let hand = Config::load(&Path::new(ROOT).join("config/hydra-authz.toml")).expect("shipped config");
    let mut generated = hand.clone();
    let text = std::fs::read_to_string(Path::new(ROOT).join("config/examples/seed-api.rules.toml")).expect("read");
    generated.rules = toml::from_str::<Config>(&text).expect("rules TOML").rules;
    let a = Engine::new(hand.engine_settings(), ByName).expect("engine");
    let b = Engine::new(generated.engine_settings(), ByName).expect("engine");
    let mut compared = 0;
    for method in ["GET", "POST", "PUT", "DELETE", "HEAD"] {
        for path in ["/date", "/echo", "/date/", "/date/x", "/echoes", "/", "/Date"] {
            for token in [
                None,
                Some("Bearer reader"),
                Some("Bearer writer"),
                Some("Bearer both"),
                Some("Bearer none"),
            ] {
                let headers: HashMap<String, String> = token
                    .map(|t| ("authorization".to_string(), t.to_string()))
                    .into_iter()
                    .collect();
                let req = AuthzRequest::from_parts(method, "api", path, &headers, HashMap::new());
                let (da, db) = (a.decide(&req).await.decision, b.decide(&req).await.decision);
                assert_eq!(da, db, "{method} {path} {token:?}");
                compared += 1;
            }
        }
    }
    assert_eq!(compared, 175);
}

#[tokio::test]
async fn config_check_warns_about_shadowed_rules_and_uncovered_routes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[[rules]]\nid = \"everything\"\npath = \"/**\"\nscopes = [\"admin\"]\n[[rules]]\nid = \"date\"\nmethods = [\"GET\"]\npath = \"/date\"\nscopes = [\"read_date\"]\n",
    )
    .expect("write");
    let p = path.to_string_lossy().into_owned();
    let out = run(&["config", "check", "--config", &p], &[]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("warning: rule \"date\" can never match: rule \"everything\""),
        "{}",
        stderr(&out)
    );

    std::fs::write(
        &path,
        "[[rules]]\nid = \"date\"\nmethods = [\"GET\"]\npath = \"/date\"\nscopes = [\"read_date\"]\n",
    )
    .expect("write");
    let out = run(&["config", "check", "--config", &p, "--openapi", SEED_OPENAPI], &[]).await;
    assert_eq!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(err.contains("warning: POST /echo"), "{err}");
    assert!(!err.contains("GET /date"), "{err}");
}

/// `config check` refuses what `serve` would refuse at start: here an
/// admin token too short to serve with.
#[tokio::test]
async fn config_check_refuses_a_guessable_admin_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    let token = dir.path().join("admin-token");
    let p = path.to_string_lossy().into_owned();
    for (secret, ok) in [("short-password", false), ("long-enough-admin-token-0123", true)] {
        std::fs::write(&token, format!("{secret}\n")).expect("write");
        std::fs::write(&path, format!("[server]\nadmin_token_file = \"{}\"\n", token.display())).expect("write");
        let out = run(&["config", "check", "--config", &p], &[]).await;
        assert_eq!(out.status.code() == Some(0), ok, "{secret}: {}", stderr(&out));
        if !ok {
            assert!(stderr(&out).contains("at least 16"), "{}", stderr(&out));
        }
    }
}

/// Host-scoped rules cover routes too: the lint has no host to try, so it
/// must not warn about them.
#[tokio::test]
async fn config_check_counts_host_scoped_rules_as_covering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[[rules]]\nid = \"date\"\nhost = \"api.example\"\nmethods = [\"GET\"]\npath = \"/date\"\nscopes = [\"read_date\"]\n\
         [[rules]]\nid = \"echo\"\nhost = \"*.example\"\nmethods = [\"POST\"]\npath = \"/echo\"\nscopes = [\"post_echo\"]\n",
    )
    .expect("write");
    let p = path.to_string_lossy().into_owned();
    let out = run(&["config", "check", "--config", &p, "--openapi", SEED_OPENAPI], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

/// `config check --envoy`: the shipped Envoy config is fully covered by the
/// shipped rules; a route added without a policy or a rule is reported.
#[tokio::test]
async fn config_check_finds_envoy_routes_no_rule_can_allow() {
    let out = run(
        &[
            "config",
            "check",
            "--config",
            "config/hydra-authz.toml",
            "--envoy",
            "deploy/envoy/envoy.yaml",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));

    let dir = tempfile::tempdir().expect("tempdir");
    let envoy = dir.path().join("envoy.yaml");
    let bootstrap = serde_json::json!({"static_resources": {"listeners": [{"filter_chains": [{"filters": [{
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "route_config": {"virtual_hosts": [{"name": "billing-api", "domains": ["*"], "routes": [
                {"match": {"prefix": "/billing"}, "route": {"cluster": "upstream"}},
                {"match": {"path": "/date"}, "route": {"cluster": "upstream"}},
                {"match": {"prefix": "/internal"}, "route": {"cluster": "upstream"},
                 "typed_per_filter_config": {"envoy.filters.http.ext_authz": {"disabled": true}}}
            ]}]},
            "http_filters": [{"name": "envoy.filters.http.ext_authz"}, {"name": "envoy.filters.http.router"}]
        }
    }]}]}]}});
    std::fs::write(&envoy, bootstrap.to_string()).expect("write");
    let e = envoy.to_string_lossy().into_owned();
    let out = run(
        &["config", "check", "--config", "config/hydra-authz.toml", "--envoy", &e],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "warnings only: {}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("virtual host \"billing-api\", prefix \"/billing\""),
        "{err}"
    );
    assert_eq!(
        err.matches("warning:").count(),
        1,
        "/date has a rule, /internal skips ext_authz: {err}"
    );
}

/// A JSON OpenAPI 3.1 document with two OAuth2 schemes: --scheme picks one,
/// --base-path prefixes, and what is printed loads as a config.
#[tokio::test]
async fn from_openapi_reads_json_with_scheme_and_base_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = dir.path().join("api.json");
    let doc = serde_json::json!({
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "servers": [{"url": "https://api.example/v2"}],
        "components": {"securitySchemes": {
            "partners": {"type": "oauth2", "flows": {"clientCredentials": {"tokenUrl": "https://h/t", "scopes": {}}}},
            "staff": {"type": "openIdConnect", "openIdConnectUrl": "https://h/.well-known/openid-configuration"}
        }},
        "paths": {
            "/orders/{order-id}": {"get": {"operationId": "getOrder", "security": [{"partners": ["orders.read"]}, {"staff": ["admin"]}]}},
            "/reports/{day}.csv": {"get": {"security": [{"staff": ["reports"]}]}}
        }
    });
    std::fs::write(&spec, doc.to_string()).expect("write");
    let s = spec.to_string_lossy().into_owned();

    let ambiguous = run(&["rules", "from-openapi", &s], &[]).await;
    assert_ne!(ambiguous.status.code(), Some(0));
    assert!(
        stderr(&ambiguous).contains("choose one with --scheme"),
        "{}",
        stderr(&ambiguous)
    );

    let out = run(&["rules", "from-openapi", &s, "--scheme", "partners"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rules: Config = toml::from_str(&stdout(&out)).expect("valid TOML");
    assert_eq!(rules.rules.len(), 1, "{}", stdout(&out));
    assert_eq!(rules.rules[0].path, "/v2/orders/{order-id}");
    assert_eq!(rules.rules[0].scopes, vec!["orders.read"]);
    assert!(
        stderr(&out).contains("does not use scheme \"partners\""),
        "{}",
        stderr(&out)
    );

    let out = run(
        &["rules", "from-openapi", &s, "--scheme", "staff", "--base-path", "/"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let rules: Config = toml::from_str(&text).expect("valid TOML");
    let paths: Vec<&str> = rules.rules.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, vec!["/orders/{order-id}", "/reports/*.csv"]);
    // And the server loads it.
    let cfg = dir.path().join("rules.toml");
    std::fs::write(&cfg, text).expect("write");
    let c = cfg.to_string_lossy().into_owned();
    let checked = run(&["config", "check", "--config", &c], &[]).await;
    assert_eq!(checked.status.code(), Some(0), "{}", stderr(&checked));
}

/// Every operator command documents itself with examples.
#[tokio::test]
async fn every_command_has_help_with_examples() {
    for cmd in [
        &["check", "--help"][..],
        &["token", "--help"],
        &["rules", "from-openapi", "--help"],
        &["config", "check", "--help"],
    ] {
        let out = run(cmd, &[]).await;
        assert_eq!(out.status.code(), Some(0), "{cmd:?}");
        let text = stdout(&out);
        assert!(
            text.contains("Examples:") && text.contains("hydra-authz "),
            "{cmd:?}: {text}"
        );
    }
}

/// `hydra-authz purge` finds the admin address and token in the config it
/// is given, and exits 0 only when the instance accepted the purge.
#[tokio::test]
async fn purge_uses_the_admin_api_the_config_describes() {
    let (hydra, server, check) = support::authz_on_fake_hydra(|c| c.introspection.cache.enabled = true).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = server.admin_addr.expect("admin on");
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{}\n", support::ADMIN_TOKEN)).expect("write");
    let wrong_file = dir.path().join("wrong-token");
    std::fs::write(&wrong_file, "not-the-admin-token").expect("write");
    let cfg = |token: &Path| {
        let base = config_file(&dir, &hydra.introspection_url(), "kind = \"none\"");
        let text = std::fs::read_to_string(&base).expect("read").replace(
            "[server]\n",
            &format!(
                "[server]\nadmin_addr = \"{admin}\"\nadmin_token_file = \"{}\"\n",
                token.display()
            ),
        );
        let path = dir.path().join(format!(
            "purge-{}.toml",
            token.file_name().and_then(|n| n.to_str()).unwrap_or("x")
        ));
        std::fs::write(&path, text).expect("write");
        path.to_string_lossy().into_owned()
    };
    let good = cfg(&token_file);
    let wrong = cfg(&wrong_file);

    // A cached token, revoked at Hydra: allowed until purged.
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    let auth = support::bearer(&token);
    let status = |check: &support::Checker| {
        let check = check.clone();
        let auth = auth.clone();
        async move { support::Answer::of(&check.check("GET", "/date", &[("authorization", &auth)]).await).http_status }
    };
    assert_eq!(status(&check).await, 200);
    hydra.issuer.revoke_token(&token);
    assert_eq!(status(&check).await, 200, "served from the cache");

    let refused = run(&["purge", "--config", &wrong, "--all"], &[]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("Unauthenticated"), "{}", stderr(&refused));
    assert_eq!(status(&check).await, 200, "a refused purge purged nothing");

    let bad = run(&["purge", "--config", &good, "--fingerprint", "xyz"], &[]).await;
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));

    let token_path = dir.path().join("revoked");
    std::fs::write(&token_path, &token).expect("write");
    let ok = run(
        &[
            "purge",
            "--config",
            &good,
            "--token-file",
            token_path.to_str().expect("utf-8"),
        ],
        &[],
    )
    .await;
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert_eq!(status(&check).await, 401, "purged: introspected again and refused");
    assert!(
        !stdout(&ok).contains(&token) && !stderr(&ok).contains(&token),
        "never echoes the token"
    );

    let all = run(&["purge", "--config", &good, "--all"], &[]).await;
    assert_eq!(all.status.code(), Some(0), "{}", stderr(&all));

    let off = config_file(&dir, &hydra.introspection_url(), "kind = \"none\"");
    let no_admin = run(&["purge", "--config", &off, "--all"], &[]).await;
    assert_eq!(no_admin.status.code(), Some(1));
    assert!(stderr(&no_admin).contains("admin API is off"), "{}", stderr(&no_admin));
}

/// `config check --envoy` reads the Envoy Gateway kit's manifests: its two
/// routes carry their own scopes (no warning); a route only the Gateway-wide
/// policy covers falls back to [[rules]] and is reported when none matches;
/// an HTTPRoute no extAuth policy covers is reported as unprotected.
#[tokio::test]
async fn config_check_reads_envoy_gateway_manifests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config_file(&dir, "http://127.0.0.1:9/x", "kind = \"none\"");
    let kit = ["httproutes.yaml", "securitypolicies.yaml", "gateway.yaml"]
        .map(|f| std::fs::read_to_string(Path::new(ROOT).join("deploy/envoy-gateway/manifests").join(f)).expect("read"))
        .join("\n---\n");
    let shipped = dir.path().join("kit.yaml");
    std::fs::write(&shipped, &kit).expect("write");
    let out = run(
        &[
            "config",
            "check",
            "--config",
            &cfg,
            "--envoy",
            shipped.to_str().expect("utf-8"),
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));

    let extra = "\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: admin, namespace: demo}\nspec:\n  parentRefs: [{name: api}]\n  rules: [{matches: [{path: {type: PathPrefix, value: /admin}}]}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: open, namespace: other}\nspec:\n  parentRefs: [{name: elsewhere}]\n  rules: [{}]\n";
    let more = dir.path().join("more.yaml");
    std::fs::write(&more, format!("{kit}{extra}")).expect("write");
    let out = run(
        &[
            "config",
            "check",
            "--config",
            &cfg,
            "--envoy",
            more.to_str().expect("utf-8"),
        ],
        &[],
    )
    .await;
    let err = stderr(&out);
    assert!(
        err.contains("HTTPRoute demo/admin") && err.contains("no rule can match it"),
        "{err}"
    );
    assert!(
        err.contains("HTTPRoute other/open") && err.contains("served without authorization"),
        "{err}"
    );
}
