//! Micro-benchmarks of the per-check work that does not touch the network:
//! extracting a CheckRequest, matching routes over 1,000 rules, building the
//! response, and a whole decision with an in-memory authenticator.
//!
//! Run: `cargo bench --bench decision`. Numbers are machine-specific; compare
//! runs on the same machine only.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use hydra_authz::authn::{Authenticator, AuthnError, Identity};
use hydra_authz::authorizer::Authorizer;
use hydra_authz::config::{Config, HeadersConfig, RuleConfig};
use hydra_authz::decision::rules::RuleSet;
use hydra_authz::decision::verdict::{Decision, DenyReason};
use hydra_authz::extract::credential::Token;
use hydra_authz::extract::{envoy_check_request, AuthzRequest};
use hydra_authz::respond::{envoy::render, Responder};
use std::hint::black_box;
use std::sync::Arc;

/// The shipped binary's allocator (src/main.rs): allocation is a large part
/// of a decision, so measure it with the one users run.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A CheckRequest shaped like Envoy's: a dozen headers, route facts.
fn check_request() -> CheckRequest {
    let headers = [
        (
            "authorization",
            "Bearer ory_at_qX1WkK9Ph2vDOhNK5wEr0cQx5M3aR3Rw.lcM5zTIMKdAMU3FeRimY56Ms",
        ),
        (":authority", "api.example.com"),
        (":method", "GET"),
        (":path", "/date?tz=utc"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "*/*"),
        ("x-request-id", "2b7b1f0e-9a7c-4a57-9d5e-0a8f9e3c1d22"),
        ("x-forwarded-proto", "https"),
        ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ("x-envoy-expected-rq-timeout-ms", "15000"),
        ("x-client-id", "spoofed"),
        ("content-length", "0"),
    ];
    envoy_check_request("GET", "api.example.com", "/date?tz=utc", headers, [])
}

fn thousand_rules() -> Vec<RuleConfig> {
    (0..1000)
        .map(|i| RuleConfig {
            id: format!("svc{i}"),
            methods: vec!["GET".into(), "POST".into()],
            path: format!("/svc{i}/items/{{id}}/**"),
            scopes: vec![format!("svc{i}.read")],
            ..Default::default()
        })
        .collect()
}

struct InMemory;

impl Authenticator for InMemory {
    async fn authenticate(&self, _token: &Token) -> Result<Arc<Identity>, AuthnError> {
        Ok(Arc::new(Identity {
            client_id: Some("reader".into()),
            subject: Some("reader".into()),
            scopes: vec!["read_date".into()].into(),
            ..Default::default()
        }))
    }
}

fn benches(c: &mut Criterion) {
    // The bytes as tonic hands them to the codec; decoded as the server does.
    let frame = prost::bytes::Bytes::from(prost::Message::encode_to_vec(&check_request()));
    let decode =
        |f: &prost::bytes::Bytes| AuthzRequest::from_wire(prost::Message::decode(f.clone()).expect("a CheckRequest"));
    c.bench_function("decode + extract CheckRequest -> AuthzRequest", |b| {
        b.iter(|| black_box(decode(&frame)))
    });

    let rules = RuleSet::compile(&thousand_rules()).expect("rules");
    c.bench_function("match over 1,000 rules (last rule)", |b| {
        b.iter(|| black_box(rules.find("GET", "api.example.com", black_box("/svc999/items/42/sub/x"))))
    });
    c.bench_function("match over 1,000 rules (no match)", |b| {
        b.iter(|| black_box(rules.find("GET", "api.example.com", black_box("/nothing/here"))))
    });

    let responder = Responder::new(HeadersConfig::default(), "hydra-authz".into());
    let identity = Identity {
        client_id: Some("reader".into()),
        subject: Some("reader".into()),
        scopes: vec!["read_date".into()].into(),
        ..Default::default()
    };
    c.bench_function("build allow response", |b| {
        b.iter(|| black_box(render(&responder, &Decision::Allow, Some(&identity), Some("read-date"))))
    });
    let deny = Decision::Deny(DenyReason::InsufficientScope(vec!["post_echo".into()]));
    c.bench_function("build deny response", |b| {
        b.iter(|| black_box(render(&responder, &deny, None, None)))
    });

    let mut config = Config::from_toml_str(hydra_authz::demo::DEFAULT_CONFIG).expect("config");
    config.rules.extend(thousand_rules());
    let authorizer = Authorizer::new(&config, InMemory).expect("authorizer");
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    c.bench_function("whole decision (in-memory authn, 1,002 rules)", |b| {
        b.iter_batched(
            || frame.clone(),
            |f| {
                let authz = decode(&f);
                let outcome = rt.block_on(authorizer.engine().decide(&authz));
                black_box(hydra_authz::respond::envoy::check_response(
                    authorizer.responder(),
                    &outcome,
                ))
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(decision, benches);
criterion_main!(decision);
