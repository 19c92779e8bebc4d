//! An in-process OTLP trace receiver (gRPC, from opentelemetry-proto's
//! collector service) and the shared trace round-trip check.

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tonic::{Request, Response, Status};

#[derive(Clone, Default)]
pub struct Received(pub Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

impl Received {
    pub fn spans(&self) -> Vec<Span> {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .flat_map(|r| r.resource_spans.iter())
            .flat_map(|rs| rs.scope_spans.iter())
            .flat_map(|ss| ss.spans.iter().cloned())
            .collect()
    }

    /// Every exported byte, protobuf-encoded, to search for secrets.
    pub fn raw(&self) -> Vec<u8> {
        use prost::Message;
        self.0
            .lock()
            .expect("lock")
            .iter()
            .flat_map(|r| r.encode_to_vec())
            .collect()
    }

    pub fn resource_attr(&self, key: &str) -> Option<String> {
        let all = self.0.lock().expect("lock");
        all.iter()
            .flat_map(|r| r.resource_spans.iter())
            .filter_map(|rs| rs.resource.as_ref())
            .flat_map(|res| res.attributes.iter())
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
            .map(|v| match v {
                Value::StringValue(s) => s.clone(),
                other => format!("{other:?}"),
            })
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.0.lock().expect("lock").push(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

pub async fn start_grpc_receiver() -> (SocketAddr, Received) {
    let listener = tokio::net::TcpListener::bind(super::lo0()).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let received = Received::default();
    let svc = TraceServiceServer::new(received.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
    });
    (addr, received)
}

/// OTLP/HTTP protobuf receiver: POST /v1/traces.
pub async fn start_http_receiver() -> (SocketAddr, Received) {
    use axum::body::Bytes;
    use axum::extract::State;
    use prost::Message;
    let listener = tokio::net::TcpListener::bind(super::lo0()).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let received = Received::default();
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            axum::routing::post(|State(r): State<Received>, body: Bytes| async move {
                match ExportTraceServiceRequest::decode(body) {
                    Ok(req) => {
                        r.0.lock().expect("lock").push(req);
                        (
                            axum::http::StatusCode::OK,
                            ExportTraceServiceResponse::default().encode_to_vec(),
                        )
                    }
                    Err(_) => (axum::http::StatusCode::BAD_REQUEST, Vec::new()),
                }
            }),
        )
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, received)
}

pub fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(i) => i.to_string(),
            Value::BoolValue(b) => b.to_string(),
            other => format!("{other:?}"),
        })
}

fn span_with_trace<'a>(spans: &[&'a Span], trace_id: &str) -> &'a Span {
    spans
        .iter()
        .copied()
        .find(|s| hex::encode(&s.trace_id) == trace_id)
        .unwrap_or_else(|| panic!("no Check span in trace {trace_id}: {spans:#?}"))
}

/// The introspection CLIENT span under `parent`, if any.
fn client_span<'a>(spans: &'a [Span], parent: &Span) -> Option<&'a Span> {
    spans
        .iter()
        .find(|s| s.name == "POST" && s.parent_span_id == parent.span_id)
}

/// Start hydra-authz with tracing exported to `received`, send checks that
/// carry trace context (W3C, and B3 when `b3`), and verify the spans. Used
/// once per test binary (the tracing subscriber and the propagator are
/// process-global).
pub async fn trace_round_trip(
    protocol: hydra_authz::config::OtlpProtocol,
    endpoint: String,
    received: Received,
    b3: bool,
) {
    use super::hydra::{FakeHydra, Fault};
    use super::{bearer, config_for, start_authz, Answer, Checker};
    use hydra_authz::config::Propagator;
    use std::time::Duration;

    let hydra = FakeHydra::start().await;
    // Credentials and a query secret in the URL: neither may reach url.full.
    let url = format!(
        "http://introspector:s3cret-pw@{}/admin/oauth2/introspect?api_key=q-secret",
        hydra.addr
    );
    let mut config = config_for(&url);
    config.telemetry.otlp_endpoint = endpoint;
    config.telemetry.otlp_protocol = Some(protocol);
    config.telemetry.service_name = Some("authz-under-test".into());
    if b3 {
        config.telemetry.propagators.push(Propagator::B3);
    }
    config.introspection.cache.enabled = true;
    config.introspection.cache.ttl_ms = 60_000;
    config.log.level = "warn".into(); // spans must not depend on the log level
                                      // The HTTP front door too: its span joins the caller's trace the same way.
    config.forward_auth.addr = Some(super::lo0());
    let telemetry = hydra_authz::telemetry::init(&config.log, &config.telemetry).expect("telemetry");
    assert!(telemetry.tracing_enabled());
    let server = start_authz(&config).await;
    let check = Checker::connect(server.grpc_addr).await;
    let reader = hydra.issuer.mint("reader", &["read_date"]).expect("mint");

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{parent_span}-01");
    let tracestate = "vendor1=opaque1,rojo=00f067aa0ba902b7";
    let auth = bearer(&reader);
    let allow = check
        .check(
            "GET",
            "/date",
            &[
                ("authorization", &auth),
                ("traceparent", &traceparent),
                ("tracestate", tracestate),
                ("baggage", "tenant=evil,user.id=admin"),
            ],
        )
        .await;
    assert_eq!(allow.status.map(|s| s.code), Some(0));
    let hydra_traceparent = hydra.last_traceparent().expect("traceparent propagated to Hydra");
    // The caller's baggage is its own text: read (for our spans), never
    // carried on to the issuer.
    assert_eq!(hydra.last_baggage(), None, "the caller's baggage reached Hydra");
    let deny_parent = "00-11111111111111111111111111111111-2222222222222222-01";
    check
        .check(
            "POST",
            "/echo",
            &[("authorization", &auth), ("traceparent", deny_parent)],
        )
        .await;
    // The same token again: answered from the cache.
    let cached_parent = "00-33333333333333333333333333333333-4444444444444444-01";
    let cached = check
        .check(
            "GET",
            "/date",
            &[("authorization", &auth), ("traceparent", cached_parent)],
        )
        .await;
    assert_eq!(Answer::of(&cached).http_status, 200);
    assert_eq!(hydra.requests(), 1, "the repeats were cache hits");
    // A fresh token while Hydra fails: the client span records the error.
    let fresh_token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    let fresh = bearer(&fresh_token);
    hydra.set_fault(Fault::Status(500, None));
    let failed_parent = "00-55555555555555555555555555555555-6666666666666666-01";
    let failed = check
        .check(
            "GET",
            "/date",
            &[("authorization", &fresh), ("traceparent", failed_parent)],
        )
        .await;
    assert_eq!(Answer::of(&failed).http_status, 503);
    hydra.set_fault(Fault::None);
    // B3 single header (trace-span-sampled) and multi header, no traceparent.
    let (b3_single_trace, b3_single_parent) = ("77777777777777777777777777777777", "8888888888888888");
    let (b3_multi_trace, b3_multi_parent) = ("99999999999999999999999999999999", "aaaaaaaaaaaaaaaa");
    if b3 {
        let single = format!("{b3_single_trace}-{b3_single_parent}-1");
        check
            .check("GET", "/date", &[("authorization", &auth), ("b3", &single)])
            .await;
        check
            .check(
                "GET",
                "/date",
                &[
                    ("authorization", &auth),
                    ("x-b3-traceid", b3_multi_trace),
                    ("x-b3-spanid", b3_multi_parent),
                    ("x-b3-sampled", "1"),
                ],
            )
            .await;
    }

    // One forward-auth call (a cache hit), with its own traceparent.
    let (fa_trace, fa_parent) = ("cccccccccccccccccccccccccccccccc", "dddddddddddddddd");
    let forward_addr = server.forward_auth_addr.expect("forward-auth listener");
    let fa = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(format!("http://{forward_addr}/forward-auth"))
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-uri", "/date")
        .header("x-forwarded-host", "api.local")
        .header("authorization", &auth)
        .header("traceparent", format!("00-{fa_trace}-{fa_parent}-01"))
        .send()
        .await
        .expect("forward-auth call");
    assert_eq!(fa.status(), 200);

    // Four checks (six with B3), two introspection calls, one forward-auth.
    let expected_checks = if b3 { 6 } else { 4 };
    telemetry.flush();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while received.spans().len() < expected_checks + 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let spans = received.spans();
    let check_spans: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "envoy.service.auth.v3.Authorization/Check")
        .collect();
    assert_eq!(check_spans.len(), expected_checks, "one span per Check: {spans:#?}");

    let forward: Vec<&Span> = spans.iter().filter(|s| s.name == "forward-auth").collect();
    assert_eq!(forward.len(), 1, "one span per forward-auth decision: {spans:#?}");
    let forward = span_with_trace(&forward, fa_trace);
    assert_eq!(
        hex::encode(&forward.parent_span_id),
        fa_parent,
        "child of the proxy's span"
    );
    assert_eq!(forward.kind, 2, "SERVER");
    for (k, v) in [
        ("hydra_authz.front", "http"),
        ("hydra_authz.decision", "allow"),
        ("http.response.status_code", "200"),
        ("url.path", "/date"),
    ] {
        assert_eq!(attr(forward, k).as_deref(), Some(v), "forward-auth span {k}");
    }
    assert_eq!(attr(forward, "rpc.system"), None, "not a gRPC call");

    let allowed = span_with_trace(&check_spans, trace_id);
    assert_eq!(
        hex::encode(&allowed.parent_span_id),
        parent_span,
        "child of the caller's span"
    );
    assert_eq!(allowed.trace_state, tracestate, "the caller's tracestate is kept");
    assert_eq!(allowed.kind, 2, "SERVER");
    for (k, v) in [
        ("hydra_authz.decision", "allow"),
        ("hydra_authz.reason", "allowed"),
        ("http.response.status_code", "200"),
        ("hydra_authz.rule_id", "read-date"),
        ("hydra_authz.client_id", "reader"),
        ("http.request.method", "GET"),
        ("url.path", "/date"),
        ("hydra_authz.scopes.result", "granted"),
        ("hydra_authz.cache.hit", "false"),
        ("rpc.system", "grpc"),
    ] {
        assert_eq!(attr(allowed, k).as_deref(), Some(v), "{k}");
    }

    let denied = span_with_trace(&check_spans, "11111111111111111111111111111111");
    assert_eq!(
        attr(denied, "hydra_authz.reason").as_deref(),
        Some("insufficient_scope")
    );
    assert_eq!(attr(denied, "http.response.status_code").as_deref(), Some("403"));
    assert_eq!(
        attr(denied, "hydra_authz.scopes.result").as_deref(),
        Some("insufficient")
    );

    let hit = span_with_trace(&check_spans, "33333333333333333333333333333333");
    assert_eq!(attr(hit, "hydra_authz.cache.hit").as_deref(), Some("true"));
    assert_eq!(attr(hit, "hydra_authz.decision").as_deref(), Some("allow"));
    assert!(client_span(&spans, hit).is_none(), "a cache hit calls nobody");

    // The introspection call: a CLIENT child span, whose id Hydra received in traceparent.
    let client = client_span(&spans, allowed).expect("introspection span under the check span");
    assert_eq!(client.kind, 3, "CLIENT");
    assert_eq!(client.trace_id, allowed.trace_id);
    assert_eq!(attr(client, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attr(client, "http.request.method").as_deref(), Some("POST"));
    let port = hydra.addr.port().to_string();
    assert_eq!(
        attr(client, "url.full"),
        Some(format!(
            "http://{}/admin/oauth2/introspect?api_key=REDACTED",
            hydra.addr
        )),
        "no credentials, no query value"
    );
    assert_eq!(attr(client, "server.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(attr(client, "server.port").as_deref(), Some(port.as_str()));
    assert_eq!(attr(client, "error.type"), None);
    assert_eq!(
        hydra_traceparent,
        format!("00-{trace_id}-{}-01", hex::encode(&client.span_id))
    );

    let failure = span_with_trace(&check_spans, "55555555555555555555555555555555");
    assert_eq!(
        attr(failure, "hydra_authz.reason").as_deref(),
        Some("introspection_unavailable")
    );
    let failed_call = client_span(&spans, failure).expect("introspection span under the failed check");
    assert_eq!(attr(failed_call, "error.type").as_deref(), Some("status"));
    assert_eq!(attr(failed_call, "http.response.status_code").as_deref(), Some("500"));

    if b3 {
        for (trace, parent) in [(b3_single_trace, b3_single_parent), (b3_multi_trace, b3_multi_parent)] {
            let s = span_with_trace(&check_spans, trace);
            assert_eq!(hex::encode(&s.parent_span_id), parent, "B3 parent of trace {trace}");
            assert_eq!(attr(s, "hydra_authz.decision").as_deref(), Some("allow"));
        }
    }

    assert_eq!(
        received.resource_attr("service.name").as_deref(),
        Some("authz-under-test")
    );
    let raw = received.raw();
    for secret in [
        reader.as_str(),
        fresh_token.as_str(),
        "s3cret-pw",
        "q-secret",
        "introspector",
        "Bearer ",
    ] {
        assert!(
            !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret:?} in exported spans"
        );
    }

    server.shutdown().await.expect("shutdown");
    telemetry.shutdown();
}
