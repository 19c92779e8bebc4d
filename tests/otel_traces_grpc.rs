//! Traces over OTLP/gRPC: the Check span is a child of the caller's trace
//! (W3C traceparent and tracestate), carries the decision and cache
//! attributes, has an introspection child span whose context reaches Hydra
//! and whose URL hides credentials, and contains no token.

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_spans_join_the_callers_trace_over_otlp_grpc() {
    let (addr, received) = support::otlp::start_grpc_receiver().await;
    support::otlp::trace_round_trip(
        hydra_authz::config::OtlpProtocol::Grpc,
        format!("http://{addr}"),
        received,
        false,
    )
    .await;
}
