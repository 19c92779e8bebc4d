//! The HTTP forward-auth front door (`[forward_auth]`): first called
//! directly, as nginx/Caddy/Traefik (`/forward-auth`) and Envoy's
//! `http_service` (`/ext-authz/...`) call it; then real nginx, Caddy and
//! Envoy, each from its shipped kit, in front of it and an echo upstream,
//! with tokens from a real OAuth2 server.

use crate::support;

use hydra_authz::config::{AuthKind, Config, RuleConfig};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::collections::BTreeMap;
use support::hydra::FakeHydra;
use support::proxies::{Kit, Proxy, Upstream};
use support::stack::{http, OAuth2Server};
use support::{bearer, config_for, lo0, metric, scrape_parsed, start_authz};

const IDENTITY: [&str; 3] = ["x-client-id", "x-scopes", "x-subject"];
const CHALLENGE_401: &str = "Bearer realm=\"hydra-authz\"";
const CHALLENGE_403: &str = "Bearer realm=\"hydra-authz\", error=\"insufficient_scope\", scope=\"post_echo\"";

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        let mut all = self.headers.get_all(name).iter();
        let first = all.next()?;
        assert!(
            all.next().is_none(),
            "{name} answered more than once: {:?}",
            self.headers
        );
        Some(first.to_str().expect("ascii header"))
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    /// `x-envoy-auth-headers-to-remove`, split.
    fn to_remove(&self) -> Vec<&str> {
        self.header("x-envoy-auth-headers-to-remove")
            .map(|v| v.split(',').collect())
            .unwrap_or_default()
    }

    /// A denial as hydra-authz writes it: status, challenge (when given),
    /// problem+json of that type, not cached, no identity.
    fn assert_problem(&self, status: u16, kind: &str, challenge: Option<&str>) {
        assert_eq!(self.status.as_u16(), status, "{:?} {}", self.headers, self.text);
        assert_eq!(self.header("www-authenticate"), challenge, "{:?}", self.headers);
        assert_eq!(self.header("content-type"), Some("application/problem+json"));
        assert_eq!(self.header("cache-control"), Some("no-store"));
        let body = self.json();
        assert_eq!(body["type"], format!("urn:hydra-authz:problem:{kind}"), "{body}");
        assert_eq!(body["status"], status);
        for h in IDENTITY {
            assert_eq!(self.header(h), None, "{h} on a denial");
        }
        assert_eq!(self.header("x-envoy-auth-headers-to-remove"), None);
    }
}

async fn send(method: Method, url: &str, headers: &[(&str, &str)]) -> Reply {
    send_body(method, url, headers, "").await
}

/// One request; `headers` are appended as given (a name twice is sent twice).
async fn send_body(method: Method, url: &str, headers: &[(&str, &str)], body: &'static str) -> Reply {
    let mut req = http().request(method, url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if !body.is_empty() {
        req = req.body(body);
    }
    let r = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.expect("body");
    Reply { status, headers, text }
}

/// The shipped config on `introspection_url`, with the forward-auth
/// listener on an ephemeral loopback port, a host-restricted rule in front
/// (Host `admin.example.com` needs `admin` for GET /date, so a test can
/// tell which host was checked) and a public `GET /public`.
fn forward_auth_config(introspection_url: &str) -> Config {
    let mut c = config_for(introspection_url);
    c.forward_auth.addr = Some(lo0());
    c.rules.insert(
        0,
        RuleConfig {
            id: "admin-host-date".into(),
            host: Some("admin.example.com".into()),
            methods: vec!["GET".into()],
            path: "/date".into(),
            scopes: vec!["admin".into()],
            ..Default::default()
        },
    );
    c.rules.push(RuleConfig {
        id: "public".into(),
        methods: vec!["GET".into()],
        path: "/public".into(),
        public: true,
        ..Default::default()
    });
    // A path a URL may not hold raw (`|`), before a public glob that its
    // raw spelling would otherwise fall to.
    c.rules.push(RuleConfig {
        id: "pipe-admin".into(),
        methods: vec!["GET".into()],
        path: "/x%7Cy".into(),
        scopes: vec!["admin".into()],
        ..Default::default()
    });
    c.rules.push(RuleConfig {
        id: "x-public".into(),
        methods: vec!["GET".into()],
        path: "/x*".into(),
        public: true,
        ..Default::default()
    });
    c
}

/// Decisions seen, by reason ("allowed" for allows), to compare with
/// `hydra_authz_decisions_total`.
#[derive(Default)]
struct Tally(BTreeMap<&'static str, f64>);

impl Tally {
    fn saw(&mut self, reason: &'static str) {
        *self.0.entry(reason).or_default() += 1.0;
    }

    async fn assert_metrics(&self, http_addr: std::net::SocketAddr) {
        let scrape = scrape_parsed(http_addr).await;
        for (reason, n) in &self.0 {
            let decision = if *reason == "allowed" { "allow" } else { "deny" };
            let got = metric(
                &scrape,
                "hydra_authz_decisions_total",
                &[("decision", decision), ("reason", reason)],
            );
            assert_eq!(got, *n, "decisions {decision}/{reason}");
        }
        let total: f64 = scrape
            .samples
            .iter()
            .filter(|s| s.metric == "hydra_authz_decisions_total")
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(n) | prometheus_parse::Value::Untyped(n) => n,
                ref other => panic!("decisions_total: {other:?}"),
            })
            .sum();
        assert_eq!(total, self.0.values().sum::<f64>(), "no other decision was counted");
    }
}

#[tokio::test]
async fn forward_auth_endpoint_answers_like_the_grpc_check() {
    let hydra = FakeHydra::start().await;
    let mut config = forward_auth_config(&hydra.introspection_url());
    config.introspection.timeout_ms = 1_000;
    let server = start_authz(&config).await;
    let fa = server.forward_auth_addr.expect("forward_auth.addr is set");
    let url = |p: &str| format!("http://{fa}{p}");
    let reader = bearer(&hydra.issuer.mint("reader", &["read_date"]).expect("mint"));
    let writer = bearer(&hydra.issuer.mint("writer", &["post_echo"]).expect("mint"));
    let mut tally = Tally::default();

    // Traefik / Caddy names: allowed, the identity for the proxy to copy.
    let r = send(
        Method::GET,
        &url("/forward-auth"),
        &[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/date?x=1"),
            ("x-forwarded-host", "api.local"),
            ("x-forwarded-proto", "http"),
            ("authorization", &reader),
        ],
    )
    .await;
    tally.saw("allowed");
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.header("x-client-id"), Some("reader"));
    assert_eq!(r.header("x-scopes"), Some("read_date"));
    assert_eq!(r.header("x-subject"), Some("reader"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.text, "");
    let mut removed = r.to_remove();
    removed.sort_unstable();
    assert_eq!(
        removed,
        ["x-client_id", "x_client-id", "x_client_id", "x_scopes", "x_subject"],
        "every underscore twin, none of the headers set"
    );

    // nginx names (X-Original-*), the host from Host; a POST checked as such.
    let r = send(
        Method::GET,
        &url("/forward-auth"),
        &[
            ("x-original-method", "POST"),
            ("x-original-uri", "/echo"),
            ("host", "api.local"),
            ("authorization", &writer),
        ],
    )
    .await;
    tally.saw("allowed");
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.header("x-client-id"), Some("writer"));
    assert_eq!(r.header("x-scopes"), Some("post_echo"));
    // Both conventions at once, agreeing (the nginx kit sends both).
    let both = [
        ("x-original-method", "GET"),
        ("x-original-uri", "/date"),
        ("x-forwarded-method", "GET"),
        ("x-forwarded-uri", "/date"),
        ("authorization", reader.as_str()),
    ];
    let r = send(Method::GET, &url("/forward-auth"), &both).await;
    tally.saw("allowed");
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.header("x-client-id"), Some("reader"));

    // HEAD works too (no body either way).
    let r = send(Method::HEAD, &url("/forward-auth"), &both).await;
    tally.saw("allowed");
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-client-id"), Some("reader"));
    assert_eq!(r.text, "");

    // The forwarded host is the one checked: admin.example.com needs `admin`.
    let r = send(
        Method::GET,
        &url("/forward-auth"),
        &[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/date"),
            ("x-forwarded-host", "admin.example.com"),
            ("authorization", &reader),
        ],
    )
    .await;
    tally.saw("insufficient_scope");
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json()["type"], "urn:hydra-authz:problem:insufficient_scope");

    // Denials: the same status, challenge and problem+json as gRPC.
    let get_date = [("x-forwarded-method", "GET"), ("x-forwarded-uri", "/date")];
    let r = send(Method::GET, &url("/forward-auth"), &get_date).await;
    tally.saw("missing_token");
    r.assert_problem(401, "missing_token", Some(CHALLENGE_401));
    let r = send(
        Method::GET,
        &url("/forward-auth"),
        &[get_date[0], get_date[1], ("authorization", "Bearer garbage")],
    )
    .await;
    tally.saw("invalid_token");
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.header("www-authenticate")
            .is_some_and(|w| w.contains("error=\"invalid_token\"")),
        "{:?}",
        r.headers
    );
    let r = send(
        Method::GET,
        &url("/forward-auth"),
        &[
            ("x-forwarded-method", "POST"),
            ("x-forwarded-uri", "/echo"),
            ("authorization", &reader),
        ],
    )
    .await;
    tally.saw("insufficient_scope");
    r.assert_problem(403, "insufficient_scope", Some(CHALLENGE_403));

    // Forwarded facts that disagree, repeat or are missing: 400, never a pick.
    let bad: [&[(&str, &str)]; 5] = [
        &[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/date"),
            ("x-original-uri", "/admin"),
        ],
        &[
            ("x-forwarded-method", "POST"),
            ("x-original-method", "GET"),
            ("x-forwarded-uri", "/date"),
        ],
        &[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/date"),
            ("x-forwarded-uri", "/date"),
        ],
        &[("x-forwarded-uri", "/date")],
        &[],
    ];
    for case in bad {
        let mut headers = case.to_vec();
        headers.push(("authorization", &reader));
        let r = send(Method::GET, &url("/forward-auth"), &headers).await;
        tally.saw("bad_request");
        r.assert_problem(400, "bad_request", None);
    }

    // Not an endpoint of this listener: 404, no decision.
    for path in ["/date", "/forward-auth/date", "/ext-authzdate", "/healthz"] {
        let r = send(Method::GET, &url(path), &[("authorization", &reader)]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.header("x-client-id"), None, "{path}");
    }

    // Envoy http_service: original method, Host and path behind the prefix.
    let r = send(
        Method::GET,
        &url("/ext-authz/date?x=1"),
        &[("host", "api.local"), ("authorization", &reader)],
    )
    .await;
    tally.saw("allowed");
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.header("x-client-id"), Some("reader"));
    assert_eq!(r.header("x-scopes"), Some("read_date"));
    let r = send(
        Method::GET,
        &url("/ext-authz/date"),
        &[("host", "admin.example.com"), ("authorization", &reader)],
    )
    .await;
    tally.saw("insufficient_scope");
    assert_eq!(r.status, StatusCode::FORBIDDEN, "Host is the one checked");
    let r = send(
        Method::POST,
        &url("/ext-authz/echo"),
        &[("host", "api.local"), ("authorization", &reader)],
    )
    .await;
    tally.saw("insufficient_scope");
    r.assert_problem(403, "insufficient_scope", Some(CHALLENGE_403));
    let r = send(
        Method::POST,
        &url("/ext-authz/echo"),
        &[("host", "api.local"), ("authorization", &writer)],
    )
    .await;
    tally.saw("allowed");
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-client-id"), Some("writer"));
    let r = send(Method::GET, &url("/ext-authz/date"), &[("host", "api.local")]).await;
    tally.saw("missing_token");
    r.assert_problem(401, "missing_token", Some(CHALLENGE_401));
    // A public route: allowed, no identity even with a token, every spelling removed.
    let r = send(
        Method::GET,
        &url("/ext-authz/public"),
        &[("host", "api.local"), ("authorization", &reader)],
    )
    .await;
    tally.saw("allowed");
    assert_eq!(r.status, StatusCode::OK);
    for h in IDENTITY {
        assert_eq!(r.header(h), None, "{h} on a public route");
        assert!(r.to_remove().contains(&h), "{h} in {:?}", r.to_remove());
    }

    // Counted like gRPC checks; the 404s were no decisions.
    tally.assert_metrics(server.http_addr).await;

    // Still healthy, still allowing.
    let ready = http()
        .get(format!("http://{}/readyz", server.http_addr))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::OK);
    let r = send(Method::GET, &url("/forward-auth"), &both).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-client-id"), Some("reader"));
    server.shutdown().await.expect("shutdown");
}

/// Forwarded headers describe the request; from a peer outside
/// `trusted_proxies` they are not believed: 400, never an allow, and the
/// token is not even introspected.
#[tokio::test]
async fn untrusted_peer_is_refused_even_with_a_valid_token() {
    let hydra = FakeHydra::start().await;
    let mut config = forward_auth_config(&hydra.introspection_url());
    config.forward_auth.trusted_proxies = vec!["10.0.0.0/8".parse().expect("cidr")];
    let server = start_authz(&config).await;
    let fa = server.forward_auth_addr.expect("forward_auth.addr is set");
    let reader = bearer(&hydra.issuer.mint("reader", &["read_date"]).expect("mint"));
    let mut tally = Tally::default();

    type Call<'a> = (Method, &'a str, Vec<(&'a str, &'a str)>);
    let calls: [Call; 4] = [
        (
            Method::GET,
            "/forward-auth",
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/date"),
                ("x-forwarded-host", "api.local"),
                ("authorization", &reader),
            ],
        ),
        (
            Method::GET,
            "/forward-auth",
            vec![
                ("x-original-method", "GET"),
                ("x-original-uri", "/date"),
                ("authorization", &reader),
            ],
        ),
        (
            Method::GET,
            "/ext-authz/date",
            vec![("host", "api.local"), ("authorization", &reader)],
        ),
        // Without a token too: 400 before anything else, not a 401 challenge.
        (
            Method::GET,
            "/forward-auth",
            vec![("x-forwarded-method", "GET"), ("x-forwarded-uri", "/public")],
        ),
    ];
    for (method, path, headers) in calls {
        let r = send(method, &format!("http://{fa}{path}"), &headers).await;
        tally.saw("bad_request");
        r.assert_problem(400, "bad_request", None);
        let detail = r.json()["detail"].as_str().expect("detail").to_owned();
        assert!(detail.contains("trusted_proxies"), "{path}: {detail}");
    }
    assert_eq!(hydra.requests(), 0, "an untrusted call never reaches Hydra");
    tally.assert_metrics(server.http_addr).await;
    server.shutdown().await.expect("shutdown");
}

// ------------------------------------------------------------------ real proxies

/// What a proxy kit does differently; the rest of the scenario is shared.
struct KitBehaviour {
    kit: Kit,
    /// Whether hydra-authz's problem+json body reaches the client on a
    /// denial (nginx's auth_request drops it; its kit writes a short one).
    passes_problem_body: bool,
    /// A request with a header name containing `_`: `Some(status)` when the
    /// proxy rejects it (Envoy), `None` when it drops the header and goes on.
    underscore_rejected: Option<u16>,
    /// A dotted spelling of an identity header (`X.Client.Id`, which PHP
    /// reads as `X-Client-Id`): `Some(status)` when it reaches hydra-authz,
    /// which refuses it (Envoy forwards dotted names to it), `None` when
    /// the proxy drops it (nginx: an invalid name; Caddy: the kit).
    dotted_refused: Option<u16>,
    /// What the client gets when hydra-authz is down.
    down_status: u16,
}

/// Identity headers, in any spelling (`x_client_id` too), that reached the
/// upstream, as the echo upstream reports them.
fn identity_seen(echo: &Value) -> Vec<(String, Value)> {
    let headers = echo["headers"].as_object().expect("echo headers");
    let mut seen: Vec<(String, Value)> = headers
        .iter()
        .filter(|(k, _)| IDENTITY.contains(&k.replace(['_', '.'], "-").as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    seen
}

fn identity(client: &str, scopes: &str) -> Vec<(String, Value)> {
    vec![
        ("x-client-id".to_owned(), Value::from(client)),
        ("x-scopes".to_owned(), Value::from(scopes)),
    ]
}

/// The seed scenario through a real proxy from its shipped kit, in front of
/// the in-process hydra-authz (forward-auth listener) and the echo upstream,
/// with tokens from the real OAuth2 server.
async fn seed_scenario_through(b: KitBehaviour) {
    let name = b.kit.name();
    let oauth2 = OAuth2Server::start().await;
    // As Stack::start_with: client_secret_basic to the introspection endpoint.
    let secret_dir = tempfile::tempdir().expect("tempdir");
    let secret = secret_dir.path().join("client-secret");
    std::fs::write(&secret, "hydra-authz-secret\n").expect("write secret");
    let mut config = forward_auth_config(&oauth2.introspection_url());
    config.introspection.auth.kind = AuthKind::ClientSecretBasic;
    config.introspection.auth.client_id = Some("hydra-authz".into());
    config.introspection.auth.client_secret_file = Some(secret);
    config.introspection.timeout_ms = 2_000;
    let authz = start_authz(&config).await;
    let fa_port = authz.forward_auth_addr.expect("forward_auth.addr is set").port();
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(b.kit, fa_port, upstream.addr.port()).await;
    let url = |p: &str| proxy.url(p);
    let log = || proxy.log();

    let reader_token = oauth2.token("reader", "read_date").await;
    let reader = bearer(&reader_token);
    let writer = bearer(&oauth2.token("writer", "post_echo").await);

    // Reader may GET /date; the upstream learns who called, from hydra-authz.
    let r = send(Method::GET, &url("/date"), &[("authorization", &reader)]).await;
    assert_eq!(r.status, StatusCode::OK, "{name}: {} {}", r.text, log());
    let echo = r.json();
    assert_eq!(
        (echo["method"].as_str(), echo["path"].as_str()),
        (Some("GET"), Some("/date"))
    );
    assert_eq!(identity_seen(&echo), identity("reader", "read_date"), "{name}: {echo}");

    // Reader may not POST /echo: 403 with the challenge, upstream untouched.
    let hits = upstream.hits();
    let r = send(Method::POST, &url("/echo"), &[("authorization", &reader)]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{name}: {}", r.text);
    assert_eq!(r.header("www-authenticate"), Some(CHALLENGE_403), "{name}");
    assert_eq!(r.header("content-type"), Some("application/problem+json"), "{name}");
    assert_eq!(r.header("cache-control"), Some("no-store"), "{name}");
    let want_type = if b.passes_problem_body {
        "urn:hydra-authz:problem:insufficient_scope"
    } else {
        "about:blank"
    };
    assert_eq!(r.json()["type"], want_type, "{name}");
    assert_eq!(r.json()["status"], 403, "{name}");
    assert_eq!(upstream.hits(), hits, "{name}: a denied request reached the upstream");

    // Writer may, body and all.
    let r = send_body(Method::POST, &url("/echo"), &[("authorization", &writer)], "hello").await;
    assert_eq!(r.status, StatusCode::OK, "{name}: {}", r.text);
    let echo = r.json();
    assert_eq!(
        (echo["method"].as_str(), echo["body_bytes"].as_u64()),
        (Some("POST"), Some(5))
    );
    assert_eq!(identity_seen(&echo), identity("writer", "post_echo"), "{name}: {echo}");

    // ...but not as a POST the upstream framework would run as a DELETE:
    // the kit lets hydra-authz see the override, which refuses it.
    let hits = upstream.hits();
    for (k, v) in [
        ("X-HTTP-Method-Override", "DELETE"),
        ("x-http-method", "PUT"),
        ("X-Method-Override", "PATCH"),
    ] {
        let r = send(Method::POST, &url("/echo"), &[("authorization", &writer), (k, v)]).await;
        assert!(!r.status.is_success(), "{name}: {k}: {} {}", r.status, r.text);
        if b.passes_problem_body {
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{name}: {k}: {}", r.text);
        }
    }
    assert_eq!(upstream.hits(), hits, "{name}: an overridden POST reached the upstream");

    // No token: 401 with hydra-authz's challenge.
    let hits = upstream.hits();
    let r = send(Method::GET, &url("/date"), &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{name}: {}", r.text);
    assert_eq!(r.header("www-authenticate"), Some(CHALLENGE_401), "{name}");
    assert_eq!(r.header("content-type"), Some("application/problem+json"), "{name}");
    let want_type = if b.passes_problem_body {
        "urn:hydra-authz:problem:missing_token"
    } else {
        "about:blank"
    };
    assert_eq!(r.json()["type"], want_type, "{name}");
    assert_eq!(upstream.hits(), hits, "{name}");

    // Spoofed identity headers on an allowed request: the upstream sees the
    // real identity only, however the client spelled or repeated them.
    let spoofs: [&[(&str, &str)]; 4] = [
        &[("X-Client-Id", "admin")],
        &[("x-scopes", "admin")],
        &[
            ("X-Client-Id", "admin"),
            ("x-client-id", "root"),
            ("X-SCOPES", "admin post_echo"),
        ],
        &[("x-subject", "root"), ("X-Subject", "admin")],
    ];
    for spoof in spoofs {
        let mut headers = vec![("authorization", reader.as_str())];
        headers.extend_from_slice(spoof);
        let r = send(Method::GET, &url("/date"), &headers).await;
        assert_eq!(r.status, StatusCode::OK, "{name}: {spoof:?}: {}", r.text);
        let echo = r.json();
        assert_eq!(
            identity_seen(&echo),
            identity("reader", "read_date"),
            "{name}: {spoof:?}: {echo}"
        );
    }
    // Underscore twins (CVE-2025-64484): dropped by nginx and Caddy,
    // rejected by Envoy; never at the upstream either way.
    let underscores = vec![("X_Client_Id", "admin"), ("x_scopes", "admin"), ("x-client_id", "root")];
    // Dotted twins: refused by hydra-authz where the proxy passes them,
    // dropped where it does not; one per request.
    let dotted = [("X.Client.Id", "admin"), ("x.scopes", "admin"), ("x-client.id", "root")].map(|t| vec![t]);
    for (twins, refused) in
        std::iter::once((underscores, b.underscore_rejected)).chain(dotted.into_iter().map(|t| (t, b.dotted_refused)))
    {
        for (path, token) in [("/date", Some(reader.as_str())), ("/public", None)] {
            let mut headers = twins.clone();
            headers.extend(token.map(|t| ("authorization", t)));
            let hits = upstream.hits();
            let r = send(Method::GET, &url(path), &headers).await;
            match refused {
                Some(status) => {
                    assert_eq!(r.status.as_u16(), status, "{name}: {path} {twins:?}: {}", r.text);
                    assert_eq!(
                        upstream.hits(),
                        hits,
                        "{name}: {path} {twins:?}: refused, yet reached the upstream"
                    );
                }
                None => {
                    assert_eq!(r.status, StatusCode::OK, "{name}: {path} {twins:?}: {}", r.text);
                    let want = match token {
                        Some(_) => identity("reader", "read_date"),
                        None => Vec::new(),
                    };
                    assert_eq!(identity_seen(&r.json()), want, "{name}: {path} {twins:?}: {}", r.text);
                }
            }
        }
    }

    // A public route: allowed without a token, and no identity header at
    // all reaches the upstream, whatever the client sent (with or without
    // a valid token of its own).
    let spoof = [("X-Client-Id", "admin"), ("x-scopes", "root"), ("X-SUBJECT", "x")];
    for token in [None, Some(reader.as_str())] {
        let mut headers = spoof.to_vec();
        headers.extend(token.map(|t| ("authorization", t)));
        let r = send(Method::GET, &url("/public"), &headers).await;
        assert_eq!(r.status, StatusCode::OK, "{name}: {}", r.text);
        let echo = r.json();
        assert_eq!(echo["path"], "/public");
        assert_eq!(
            identity_seen(&echo),
            Vec::new(),
            "{name}: token {}: {echo}",
            token.is_some()
        );
    }

    // Forwarded facts the client wrote itself never reach the upstream: it
    // would route on X-Forwarded-Host for a request authorized under the
    // Host the proxy saw, or read the auth subrequest's conventions.
    let forged = [
        ("X-Forwarded-Host", "admin.example.com"),
        ("Forwarded", "host=admin.example.com;proto=https"),
        ("X-Original-URI", "/admin"),
        ("X-Original-Method", "DELETE"),
        ("X-Forwarded-Uri", "/admin"),
        ("X-Forwarded-Method", "DELETE"),
        ("X-Original-Url", "/admin"),
        ("X-Rewrite-Url", "/admin"),
        // Scheme, port, prefix and address headers frameworks trust (Rack
        // reads X-Forwarded-Ssl before X-Forwarded-Proto).
        ("X-Forwarded-Ssl", "on-admin"),
        ("X-Forwarded-Scheme", "https-admin"),
        ("X-Forwarded-Port", "8443"),
        ("X-Forwarded-Prefix", "/admin"),
        ("X-Real-IP", "10.9.8.7"),
        ("Front-End-Https", "on-admin"),
        ("X-Url-Scheme", "https-admin"),
    ];
    let mut headers = vec![("authorization", reader.as_str())];
    headers.extend_from_slice(&forged);
    let r = send(Method::GET, &url("/date"), &headers).await;
    assert_eq!(r.status, StatusCode::OK, "{name}: {}", r.text);
    let echo = r.json();
    let seen = echo["headers"].as_object().expect("echo headers");
    for (k, v) in forged {
        let got = seen.get(&k.to_ascii_lowercase()).and_then(Value::as_str);
        assert_ne!(got, Some(v), "{name}: the client's {k} reached the upstream: {echo}");
        assert!(
            !got.is_some_and(|g| g.contains("admin")),
            "{name}: the client's {k} reached the upstream: {echo}"
        );
    }

    // `|` raw (as the client sent it; nginx passes $request_uri as is) or
    // escaped is one path to the upstream, and to the rules: never the
    // public glob's.
    for path in ["/x|y", "/x%7Cy", "/x%7cy"] {
        let hits = upstream.hits();
        let r = send(Method::GET, &url(path), &[("authorization", &reader)]).await;
        assert!(!r.status.is_success(), "{name}: {path}: {} {}", r.status, r.text);
        if b.passes_problem_body || r.status == StatusCode::FORBIDDEN {
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{name}: {path}: {}", r.text);
        }
        assert_eq!(upstream.hits(), hits, "{name}: {path}: reached the upstream");
    }
    let r = send(Method::GET, &url("/xz"), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{name}: the public glob itself: {}", r.text);

    // Revoked at the OAuth2 server: refused on the very next request (no cache).
    oauth2.revoke("reader", &reader_token).await;
    let hits = upstream.hits();
    let r = send(Method::GET, &url("/date"), &[("authorization", &reader)]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{name}: {}", r.text);
    assert!(
        r.header("www-authenticate")
            .is_some_and(|w| w.contains("error=\"invalid_token\"")),
        "{name}: {:?}",
        r.headers
    );
    assert_eq!(upstream.hits(), hits, "{name}");

    // hydra-authz down: the proxy denies (fails closed), the upstream is
    // not called, even for a request that was allowed a moment ago.
    authz.shutdown().await.expect("shutdown");
    let hits = upstream.hits();
    let r = send_body(Method::POST, &url("/echo"), &[("authorization", &writer)], "hello").await;
    assert_eq!(r.status.as_u16(), b.down_status, "{name}: {:?} {}", r.headers, r.text);
    assert!(!r.status.is_success(), "{name}");
    assert_eq!(r.header("x-client-id"), None, "{name}");
    assert_eq!(
        upstream.hits(),
        hits,
        "{name}: reached the upstream with hydra-authz down"
    );
    drop(proxy);
}

#[tokio::test]
async fn seed_scenario_through_real_nginx() {
    seed_scenario_through(KitBehaviour {
        kit: Kit::Nginx,
        passes_problem_body: false,
        underscore_rejected: None,
        dotted_refused: None,
        // The kit's error page: no answer from hydra-authz is 503.
        down_status: 503,
    })
    .await;
}

#[tokio::test]
async fn seed_scenario_through_real_caddy() {
    seed_scenario_through(KitBehaviour {
        kit: Kit::Caddy,
        passes_problem_body: true,
        underscore_rejected: None,
        dotted_refused: None,
        // forward_auth cannot reach hydra-authz: Caddy's own 502.
        down_status: 502,
    })
    .await;
}

#[tokio::test]
async fn seed_scenario_through_real_envoy_http_service() {
    seed_scenario_through(KitBehaviour {
        kit: Kit::EnvoyHttp,
        passes_problem_body: true,
        // headers_with_underscores_action: REJECT_REQUEST.
        underscore_rejected: Some(400),
        // allowed_headers passes every dotted name; hydra-authz answers 400.
        dotted_refused: Some(400),
        // failure_mode_allow: false, status_on_error: 503.
        down_status: 503,
    })
    .await;
}
