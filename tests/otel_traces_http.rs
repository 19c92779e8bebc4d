//! The same trace round trip over OTLP/HTTP (protobuf).

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_spans_join_the_callers_trace_over_otlp_http() {
    let (addr, received) = support::otlp::start_http_receiver().await;
    support::otlp::trace_round_trip(
        hydra_authz::config::OtlpProtocol::HttpProtobuf,
        format!("http://{addr}"),
        received,
    )
    .await;
}
