//! Identity and policy through the real Envoy (deploy/envoy/envoy.yaml):
//! claims to headers from arbitrary introspection answers and from a real
//! Hydra's token hook (opaque and jwt), optional authentication, and RFC 9728
//! protected resource metadata with the kit's route to it.

use crate::support;

use hydra_authz::config::{Config, RuleConfig, VerifyMode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use support::ory::{Hydra, HydraOptions};
use support::stack::{envoy_for_ports, envoy_in_front_of, http, AuthzProcess};

/// One answer through Envoy: status, the response headers we look at, the
/// body (the echo upstream's JSON when the request got through).
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// What the upstream received: its header map. Panics unless the request
    /// reached the echo upstream.
    pub(crate) fn upstream(&self) -> serde_json::Map<String, Value> {
        let v = self.json();
        v["headers"]
            .as_object()
            .unwrap_or_else(|| panic!("not the echo upstream's answer: {} {}", self.status, self.body))
            .clone()
    }

    /// The upstream's value for `name` when it received exactly one.
    pub(crate) fn seen(&self, name: &str) -> Option<String> {
        self.upstream().get(name).map(|v| {
            v.as_str()
                .unwrap_or_else(|| panic!("{name} reached the upstream more than once: {v}"))
                .to_owned()
        })
    }

    pub(crate) fn reached_upstream(&self) -> bool {
        self.json()["headers"].is_object()
    }

    pub(crate) fn www(&self) -> Option<&str> {
        self.headers.get("www-authenticate").map(String::as_str)
    }
}

/// A raw HTTP/1.1 request to Envoy's listener: header names, case and
/// duplicates reach Envoy exactly as given.
pub(crate) async fn raw(listener: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(listener).await.expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: api.local\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut bytes = Vec::new();
    let _ = s.read_to_end(&mut bytes).await;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.get(9..12))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect::<BTreeMap<_, _>>();
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    Reply { status, headers, body }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

pub(crate) fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A tiny RFC 7662 endpoint answering a fixed body per token (inactive for
/// any other); its URL.
pub(crate) async fn introspection_endpoint(answers: BTreeMap<&'static str, Value>) -> String {
    let answers = std::sync::Arc::new(answers);
    let app = axum::Router::new().route(
        "/introspect",
        axum::routing::post(move |body: axum::body::Bytes| {
            let answers = answers.clone();
            async move {
                let token = form_urlencoded::parse(&body)
                    .find(|(k, _)| k == "token")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                axum::Json(
                    answers
                        .get(token.as_str())
                        .cloned()
                        .unwrap_or_else(|| json!({"active": false})),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(support::lo0()).await.expect("bind");
    let url = format!("http://{}/introspect", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

pub(crate) fn far_future() -> i64 {
    hydra_authz::authn::introspection::now_unix() + 3600
}

fn claims_config(c: &mut Config) {
    c.headers.claims = [
        ("x-tenant", "ext.tenant"),
        ("x-groups", "ext.groups"),
        ("x-level", "ext.level"),
        ("x-flag", "ext.flag"),
        ("x-profile", "ext.profile"),
        ("x-user", "username"),
        ("x-audience", "aud"),
        ("x-evil", "ext.evil"),
        ("x-missing", "ext.nope"),
    ]
    .into_iter()
    .map(|(h, p)| (h.to_owned(), p.to_owned()))
    .collect();
}

/// Every claim header of [`claims_config`] and the identity headers.
const OURS: &[&str] = &[
    "x-tenant",
    "x-groups",
    "x-level",
    "x-flag",
    "x-profile",
    "x-user",
    "x-audience",
    "x-evil",
    "x-missing",
    "x-client-id",
    "x-scopes",
    "x-subject",
];

/// The upstream's view of our headers, absent ones left out.
fn ours(r: &Reply) -> BTreeMap<String, Value> {
    let up = r.upstream();
    OURS.iter()
        .filter_map(|h| up.get(*h).map(|v| ((*h).to_owned(), v.clone())))
        .collect()
}

fn expected(pairs: &[(&str, &str)]) -> BTreeMap<String, Value> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), Value::from(*v))).collect()
}

/// `[headers.claims]` with an introspection answer of every JSON type,
/// through the real Envoy and the hydra-authz binary: exact values on the
/// upstream, an unsafe value and a missing claim removed, and no client
/// spelling of a claim header ever reaching the upstream.
#[tokio::test]
async fn claims_become_headers_and_cannot_be_spoofed() {
    let full = json!({
        "active": true, "scope": "read_date", "client_id": "reader", "exp": far_future(),
        "token_type": "Bearer", "token_use": "access_token",
        "username": "alice", "aud": ["api", "web"],
        "ext": {
            "tenant": "acme", "groups": ["a", "b"], "level": 3, "flag": true,
            "profile": {"k": "v"}, "evil": "x\r\nx-admin: 1"
        }
    });
    let no_ext = json!({
        "active": true, "scope": "read_date", "client_id": "reader", "exp": far_future(),
        "username": "bob"
    });
    let url = introspection_endpoint([("tok-full", full), ("tok-noext", no_ext)].into()).await;
    let mut c = support::config_for(&url);
    claims_config(&mut c);
    c.rules.push(RuleConfig {
        id: "public".into(),
        methods: vec!["GET".into()],
        path: "/public".into(),
        public: true,
        ..Default::default()
    });
    let authz = AuthzProcess::start(c).await;
    // The kit, plus the ext_authz dynamic metadata (`claims`) echoed to the
    // upstream by the catch-all route, to see what Envoy's access log would.
    let anchor = "                            prefix: /\n                          route:\n                            cluster: upstream\n";
    let envoy = envoy_for_ports(authz.grpc_port, authz.http_port, None, |y| {
        assert_eq!(y.matches(anchor).count(), 1, "the kit's catch-all route");
        let meta = |h: &str| {
            format!(
                "                            - header:\n                                key: x-meta-{h}\n                                value: \"%DYNAMIC_METADATA(envoy.filters.http.ext_authz:claims:x-{h})%\"\n                              append_action: OVERWRITE_IF_EXISTS_OR_ADD\n"
            )
        };
        y.replacen(
            anchor,
            &format!(
                "{anchor}                          request_headers_to_add:\n{}{}{}",
                meta("tenant"),
                meta("groups"),
                meta("evil")
            ),
            1,
        )
    })
    .await;
    let l = envoy.listener;
    let full_auth = bearer("tok-full");

    let r = raw(l, "GET", "/date", &[("authorization", &full_auth)]).await;
    assert_eq!(r.status, 200, "{r:?}\n{}", authz.log());
    let want = expected(&[
        ("x-tenant", "acme"),
        ("x-groups", "a b"),
        ("x-level", "3"),
        ("x-flag", "true"),
        ("x-profile", "{\"k\":\"v\"}"),
        ("x-user", "alice"),
        ("x-audience", "api web"),
        ("x-client-id", "reader"),
        ("x-scopes", "read_date"),
    ]);
    assert_eq!(ours(&r), want, "{}", r.body);
    let up = r.upstream();
    assert!(
        up.get("x-admin").is_none(),
        "a header smuggled in a claim value: {}",
        r.body
    );
    // The same values in Envoy's dynamic metadata; the refused one is not there.
    assert_eq!(up.get("x-meta-tenant"), Some(&Value::from("acme")), "{}", r.body);
    assert_eq!(up.get("x-meta-groups"), Some(&Value::from("a b")), "{}", r.body);
    assert_eq!(up.get("x-meta-evil"), None, "{}", r.body);

    // Spoofing, in every spelling Envoy lets through: never the client's value.
    let r = raw(
        l,
        "GET",
        "/date",
        &[
            ("authorization", &full_auth),
            ("X-Tenant", "evil"),
            ("x-tenant", "evil2"),
            ("x-tenant", "evil3"),
            ("X-Missing", "spoof"),
            ("X-Evil", "spoof"),
            ("X-GROUPS", "root"),
            ("x-user", "root"),
            ("X-Meta-Tenant", "evil"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(ours(&r), want, "{}", r.body);
    assert_eq!(r.upstream().get("x-meta-tenant"), Some(&Value::from("acme")));
    // Underscore twins: the kit has Envoy refuse them (400) before ext_authz.
    for name in ["x_tenant", "X_Tenant", "x_missing"] {
        let r = raw(l, "GET", "/date", &[("authorization", &full_auth), (name, "evil")]).await;
        assert_eq!(r.status, 400, "{name}: {r:?}");
        assert!(!r.reached_upstream(), "{name}: {r:?}");
    }

    // A token whose answer has no ext: no ext header, whatever the client sent.
    let r = raw(
        l,
        "GET",
        "/date",
        &[
            ("authorization", &bearer("tok-noext")),
            ("X-Tenant", "evil"),
            ("x-groups", "evil"),
            ("X-Audience", "evil"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        ours(&r),
        expected(&[("x-user", "bob"), ("x-client-id", "reader"), ("x-scopes", "read_date")]),
        "{}",
        r.body
    );
    assert_eq!(r.upstream().get("x-meta-tenant"), None, "{}", r.body);

    // A public route: no claim header, with or without a valid token.
    let spoofs = [
        ("X-Tenant", "evil"),
        ("x-groups", "evil"),
        ("X-User", "root"),
        ("x-missing", "spoof"),
        ("x-client-id", "admin"),
    ];
    for token in [None, Some(full_auth.as_str())] {
        let mut headers = spoofs.to_vec();
        if let Some(t) = token {
            headers.push(("authorization", t));
        }
        let r = raw(l, "GET", "/public", &headers).await;
        assert_eq!(r.status, 200, "{token:?}: {r:?}");
        assert_eq!(ours(&r), BTreeMap::new(), "{token:?}: {}", r.body);
    }

    // An inactive token: 401 from hydra-authz, the upstream never called.
    let r = raw(
        l,
        "GET",
        "/date",
        &[("authorization", "Bearer tok-unknown"), ("X-Tenant", "evil")],
    )
    .await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(!r.reached_upstream(), "{r:?}");

    // The refusal is told in the log: which header, which claim; never the value.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let log = authz.log();
        if log.contains("identity header removed") {
            let line = log
                .lines()
                .find(|l| l.contains("identity header removed"))
                .expect("the line");
            assert!(line.contains("x-evil") && line.contains("ext.evil"), "{line}");
            assert!(line.contains("WARN"), "{line}");
            assert!(!log.contains("x-admin"), "{log}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no WARN for x-evil:\n{log}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The headline acceptance test: `ext` from Hydra's token hook
/// reaches the upstream as a header, for the opaque (introspection) and the
/// jwt (local verification) access-token strategies.
#[tokio::test]
async fn token_hook_ext_reaches_the_upstream_as_a_header_real_hydra() {
    let hook = support::ory::token_hook_adding_tenant().await;
    for jwt in [false, true] {
        let hydra = Hydra::start(HydraOptions {
            jwt,
            token_hook: Some(hook.clone()),
        })
        .await;
        let reader = hydra.create_client("read_date", None, &[]).await;
        let tok = hydra.token(&reader, Some("read_date")).await.expect("token");
        assert_eq!(tok.starts_with("ory_at_"), !jwt, "strategy");
        let mut c = support::config_for(&hydra.introspection_url());
        c.introspection.allowed_issuers = vec![hydra.issuer()];
        c.introspection.timeout_ms = 2_000;
        c.introspection.jwt.jwks_url = hydra.jwks_url();
        if jwt {
            c.introspection.mode = VerifyMode::Jwt;
        }
        c.headers.claims = [("x-tenant".to_owned(), "ext.tenant".to_owned())].into();
        let authz = AuthzProcess::start(c).await;
        let envoy = envoy_for_ports(authz.grpc_port, authz.http_port, None, |y| y).await;
        let r = raw(
            envoy.listener,
            "GET",
            "/date",
            &[("authorization", &bearer(&tok)), ("X-Tenant", "evil")],
        )
        .await;
        assert_eq!(r.status, 200, "jwt={jwt}: {r:?}\n{}", authz.log());
        assert_eq!(r.seen("x-tenant").as_deref(), Some("acme"), "jwt={jwt}: {}", r.body);
        assert_eq!(r.seen("x-client-id"), Some(reader.id.clone()), "jwt={jwt}");
        drop((envoy, authz, hydra));
    }
}

/// `optional = true`: no token is anonymous (identity headers removed), a
/// valid token is an identity and the rule's scopes apply, a bad token is
/// a 401 and never silently anonymous.
#[tokio::test]
async fn optional_authentication_through_real_envoy() {
    let hydra = support::hydra::FakeHydra::start().await;
    let mut c = support::config_for(&hydra.introspection_url());
    c.introspection.timeout_ms = 2_000;
    c.rules.push(RuleConfig {
        id: "feed".into(),
        methods: vec!["GET".into()],
        path: "/feed".into(),
        scopes: vec!["read_date".into()],
        optional: true,
        ..Default::default()
    });
    let authz = support::start_authz(&c).await;
    let envoy = envoy_in_front_of(&authz, None).await;
    let l = envoy.listener;
    let spoof = [
        ("X-Client-Id", "admin"),
        ("x-scopes", "read_date admin"),
        ("X-Subject", "root"),
    ];
    let identity = |r: &Reply| -> Vec<Option<String>> {
        ["x-client-id", "x-scopes", "x-subject"]
            .iter()
            .map(|h| r.seen(h))
            .collect()
    };

    // No token: allowed anonymously, the client's identity headers removed.
    let r = raw(l, "GET", "/feed", &spoof).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["path"], "/feed");
    assert_eq!(identity(&r), vec![None, None, None], "{}", r.body);

    // A valid reader token: its identity, not the client's.
    let reader = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    let auth = bearer(&reader);
    let mut headers = spoof.to_vec();
    headers.push(("authorization", &auth));
    let r = raw(l, "GET", "/feed", &headers).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        identity(&r),
        vec![Some("reader".into()), Some("read_date".into()), Some("reader".into())],
        "{}",
        r.body
    );

    // Revoked and unknown tokens: 401 invalid_token, the upstream not called.
    let revoked = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    hydra.issuer.revoke_token(&revoked);
    for (what, token) in [("revoked", revoked.as_str()), ("unknown", "ory_at_unknown.x")] {
        let r = raw(l, "GET", "/feed", &[("authorization", &bearer(token))]).await;
        assert_eq!(r.status, 401, "{what}: {r:?}");
        assert_eq!(
            r.www(),
            Some("Bearer realm=\"hydra-authz\", error=\"invalid_token\", error_description=\"inactive\""),
            "{what}"
        );
        assert_eq!(
            r.json()["type"],
            "urn:hydra-authz:problem:invalid_token",
            "{what}: {r:?}"
        );
        assert!(!r.reached_upstream(), "{what}: {r:?}");
    }

    // A valid token without the rule's scope: 403, not anonymous.
    let writer = hydra.issuer.mint("writer", &["post_echo"]).expect("mint");
    let r = raw(l, "GET", "/feed", &[("authorization", &bearer(&writer))]).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(
        r.www(),
        Some("Bearer realm=\"hydra-authz\", error=\"insufficient_scope\", scope=\"read_date\"")
    );
    assert!(!r.reached_upstream(), "{r:?}");

    // A malformed credential is never anonymous either.
    let r = raw(l, "GET", "/feed", &[("authorization", "Basic cmVhZGVyOnM=")]).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(!r.reached_upstream(), "{r:?}");

    // The rule is optional only where it says: /date still needs a token.
    let r = raw(l, "GET", "/date", &[]).await;
    assert_eq!(r.status, 401, "{r:?}");
}

const METADATA_URL: &str = "https://api.example.com/.well-known/oauth-protected-resource";

fn metadata_config(c: &mut Config) {
    c.resource_metadata.resource = Some("https://api.example.com".into());
    c.resource_metadata.authorization_servers = vec!["https://hydra.example.com/".into()];
    c.resource_metadata.scopes_supported = vec!["read_date".into(), "post_echo".into()];
    c.resource_metadata.resource_name = Some("Date API".into());
}

async fn get(url: &str) -> (u16, Option<String>, String) {
    let r = http().get(url).send().await.expect("GET");
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (r.status().as_u16(), ct, r.text().await.expect("body"))
}

/// RFC 9728: the document on hydra-authz's HTTP listener and through the
/// kit's route (no token needed), 404 when not configured, and the URL in
/// every 401 challenge through Envoy.
#[tokio::test]
async fn protected_resource_metadata_through_real_envoy() {
    let hydra = support::hydra::FakeHydra::start().await;
    let mut c = support::config_for(&hydra.introspection_url());
    c.introspection.timeout_ms = 2_000;
    metadata_config(&mut c);
    let authz = support::start_authz(&c).await;
    let want = json!({
        "resource": "https://api.example.com",
        "authorization_servers": ["https://hydra.example.com/"],
        "scopes_supported": ["read_date", "post_echo"],
        "bearer_methods_supported": ["header"],
        "resource_name": "Date API",
    });

    // Directly on server.http_addr.
    let direct = format!("http://{}/.well-known/oauth-protected-resource", authz.http_addr);
    let (status, ct, body) = get(&direct).await;
    assert_eq!((status, ct.as_deref()), (200, Some("application/json")), "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).expect("JSON"), want);

    // Through the kit's route: no token, ext_authz off for it.
    let envoy = envoy_in_front_of(&authz, None).await;
    let l = envoy.listener;
    let r = raw(l, "GET", "/.well-known/oauth-protected-resource", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    assert_eq!(r.json(), want, "{r:?}");
    // A resource path under it (RFC 9728 section 3.1) goes there too.
    let r = raw(l, "GET", "/.well-known/oauth-protected-resource/v1", &[]).await;
    assert_eq!((r.status, r.json()), (200, want.clone()), "{r:?}");
    // Only that path: a look-alike and a climb to /metrics meet ext_authz
    // (no rule for them: 403), never hydra-authz's HTTP listener.
    for path in [
        "/.well-known/oauth-protected-resourcex",
        "/.well-known/oauth-protected-resource/../../metrics",
        "/.well-known/oauth-protected-resource/%2e%2e/%2e%2e/metrics",
        "/metrics",
    ] {
        let r = raw(l, "GET", path, &[]).await;
        assert_eq!(r.status, 403, "{path}: {r:?}");
        assert_eq!(r.json()["type"], "urn:hydra-authz:problem:no_rule", "{path}: {r:?}");
    }

    // Every 401 through Envoy names the document; a 403 does not.
    let r = raw(l, "GET", "/date", &[]).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        r.www(),
        Some(format!("Bearer realm=\"hydra-authz\", resource_metadata=\"{METADATA_URL}\"").as_str())
    );
    let r = raw(l, "GET", "/date", &[("authorization", "Bearer ory_at_unknown.x")]).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        r.www(),
        Some(
            format!(
                "Bearer realm=\"hydra-authz\", error=\"invalid_token\", error_description=\"inactive\", resource_metadata=\"{METADATA_URL}\""
            )
            .as_str()
        )
    );
    let writer = hydra.issuer.mint("writer", &["post_echo"]).expect("mint");
    let r = raw(l, "GET", "/date", &[("authorization", &bearer(&writer))]).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(
        r.www(),
        Some("Bearer realm=\"hydra-authz\", error=\"insufficient_scope\", scope=\"read_date\"")
    );

    // Not configured: 404 on the listener and through the kit, and no
    // resource_metadata in challenges.
    let plain = support::start_authz(&support::config_for(&hydra.introspection_url())).await;
    let (status, _, _) = get(&format!(
        "http://{}/.well-known/oauth-protected-resource",
        plain.http_addr
    ))
    .await;
    assert_eq!(status, 404);
    let envoy = envoy_in_front_of(&plain, None).await;
    let r = raw(envoy.listener, "GET", "/.well-known/oauth-protected-resource", &[]).await;
    assert_eq!(r.status, 404, "{r:?}");
    let r = raw(envoy.listener, "GET", "/date", &[]).await;
    assert_eq!((r.status, r.www()), (401, Some("Bearer realm=\"hydra-authz\"")));
}
