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

/// Start hydra-authz with tracing exported to `received`, send checks that
/// carry a `traceparent`, and verify the spans. Used once per test binary
/// (the tracing subscriber is process-global).
pub async fn trace_round_trip(protocol: hydra_authz::config::OtlpProtocol, endpoint: String, received: Received) {
    use super::hydra::FakeHydra;
    use super::{bearer, config_for, start_authz, Checker};
    use std::time::Duration;

    let hydra = FakeHydra::start().await;
    let mut config = config_for(&hydra.introspection_url());
    config.telemetry.otlp_endpoint = endpoint;
    config.telemetry.otlp_protocol = Some(protocol);
    config.telemetry.service_name = Some("authz-under-test".into());
    config.log.level = "warn".into(); // spans must not depend on the log level
    let telemetry = hydra_authz::telemetry::init(&config.log, &config.telemetry).expect("telemetry");
    assert!(telemetry.tracing_enabled());
    let server = start_authz(&config).await;
    let check = Checker::connect(server.grpc_addr).await;
    let reader = hydra.issuer.mint("reader", &["read_date"]).expect("mint");

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{parent_span}-01");
    let auth = bearer(&reader);
    let allow = check
        .check(
            "GET",
            "/date",
            &[("authorization", &auth), ("traceparent", &traceparent)],
        )
        .await;
    assert_eq!(allow.status.map(|s| s.code), Some(0));
    let hydra_traceparent = hydra.last_traceparent().expect("traceparent propagated to Hydra");
    let deny_parent = "00-11111111111111111111111111111111-2222222222222222-01";
    check
        .check(
            "POST",
            "/echo",
            &[("authorization", &auth), ("traceparent", deny_parent)],
        )
        .await;

    telemetry.flush();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while received.spans().len() < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let spans = received.spans();
    let check_spans: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "envoy.service.auth.v3.Authorization/Check")
        .collect();
    assert_eq!(check_spans.len(), 2, "one span per Check: {spans:#?}");

    let allowed = check_spans
        .iter()
        .find(|s| hex::encode(&s.trace_id) == trace_id)
        .expect("the allow span continues the caller's trace");
    assert_eq!(
        hex::encode(&allowed.parent_span_id),
        parent_span,
        "child of the caller's span"
    );
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

    let denied = check_spans
        .iter()
        .find(|s| hex::encode(&s.trace_id) == "11111111111111111111111111111111")
        .expect("deny span");
    assert_eq!(
        attr(denied, "hydra_authz.reason").as_deref(),
        Some("insufficient_scope")
    );
    assert_eq!(attr(denied, "http.response.status_code").as_deref(), Some("403"));
    assert_eq!(
        attr(denied, "hydra_authz.scopes.result").as_deref(),
        Some("insufficient")
    );

    // The introspection call: a CLIENT child span, whose id Hydra received in traceparent.
    let client = spans
        .iter()
        .find(|s| s.name == "POST" && s.parent_span_id == allowed.span_id)
        .expect("introspection span under the check span");
    assert_eq!(client.kind, 3, "CLIENT");
    assert_eq!(client.trace_id, allowed.trace_id);
    assert_eq!(attr(client, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attr(client, "http.request.method").as_deref(), Some("POST"));
    assert_eq!(
        hydra_traceparent,
        format!("00-{trace_id}-{}-01", hex::encode(&client.span_id))
    );

    assert_eq!(
        received.resource_attr("service.name").as_deref(),
        Some("authz-under-test")
    );
    let raw = received.raw();
    assert!(
        !raw.windows(reader.len()).any(|w| w == reader.as_bytes()),
        "token bytes in exported spans"
    );
    assert!(
        !raw.windows(7).any(|w| w == b"Bearer "),
        "Authorization header in exported spans"
    );

    server.shutdown().await.expect("shutdown");
    telemetry.shutdown();
}
