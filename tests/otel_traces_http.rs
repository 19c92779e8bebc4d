//! The same trace round trip over OTLP/HTTP (protobuf), with the B3
//! propagator added: checks carrying only `b3` or only `x-b3-*` headers join
//! the caller's trace too. (The propagator is process-global, hence here and
//! not in a binary of its own.)

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_spans_join_the_callers_trace_over_otlp_http_with_b3() {
    let (addr, received) = support::otlp::start_http_receiver().await;
    support::otlp::trace_round_trip(
        hydra_authz::config::OtlpProtocol::HttpProtobuf,
        format!("http://{addr}"),
        received,
        true,
    )
    .await;
}
