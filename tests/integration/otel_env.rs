//! The real binary with tracing configured only through the standard OTEL_*
//! variables (no [telemetry] section): spans reach an in-process OTLP
//! receiver with service.name and resource attributes from the env, the
//! sampler comes from the env, and OTEL_EXPORTER_OTLP_PROTOCOL picks the
//! transport. A subprocess per run, so no global tracer is shared with other
//! tests; SIGTERM shuts down the exporter, which flushes before exit, so what
//! the receiver holds after exit is everything that will ever arrive.

use crate::support;
use crate::support::free_port;

use opentelemetry_proto::tonic::trace::v1::Span;
use std::process::Stdio;
use std::time::Duration;
use support::hydra::FakeHydra;
use support::otlp::{attr, Received};
use support::{bearer, Answer, Checker};

const CHECK_SPAN: &str = "envoy.service.auth.v3.Authorization/Check";
const TRACE_ID: &str = "5bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "10f067aa0ba902b7";

/// Start the binary with `otel_env` (and no other OTEL_* or HYDRA_AUTHZ_*
/// variable from this process), send one allowed Check carrying a
/// traceparent with `trace_flags`, SIGTERM it, and return the decision.
async fn run_binary(otel_env: &[(&str, &str)], trace_flags: &str) -> i32 {
    let hydra = FakeHydra::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (grpc, http) = (free_port(), free_port());
    let config = format!(
        "[server]\ngrpc_addr = \"127.0.0.1:{grpc}\"\nhttp_addr = \"127.0.0.1:{http}\"\n\
         [introspection]\nurl = \"{}\"\ntimeout_ms = 5000\n\
         [[rules]]\nid = \"date\"\nmethods = [\"GET\"]\npath = \"/date\"\nscopes = [\"read_date\"]\n",
        hydra.introspection_url()
    );
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config).expect("write config");
    let stderr = std::fs::File::create(dir.path().join("stderr")).expect("stderr file");

    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_hydra-authz"));
    cmd.arg("--config").arg(&path);
    // Only what this test sets: a collector endpoint in the developer's or
    // CI's environment must not leak into the run.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("OTEL_") || k.starts_with("HYDRA_AUTHZ_") {
            cmd.env_remove(&*k);
        }
    }
    let mut child = cmd
        .envs(otel_env.iter().copied())
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("start");
    let log = || std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();

    support::wait_ready(&mut child, http, log).await;

    let check = Checker::connect(std::net::SocketAddr::from(([127, 0, 0, 1], grpc))).await;
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    let traceparent = format!("00-{TRACE_ID}-{PARENT_SPAN}-{trace_flags}");
    let auth = bearer(&token);
    let answer = Answer::of(
        &check
            .check(
                "GET",
                "/date",
                &[("authorization", &auth), ("traceparent", &traceparent)],
            )
            .await,
    );
    let status = support::sigterm_and_wait(&mut child, Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{}", log());
    answer.http_status
}

fn check_spans(received: &Received) -> Vec<Span> {
    received.spans().into_iter().filter(|s| s.name == CHECK_SPAN).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_env_alone_exports_check_spans_over_grpc() {
    let (addr, received) = support::otlp::start_grpc_receiver().await;
    let endpoint = format!("http://{addr}");
    let status = run_binary(
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SERVICE_NAME", "authz-from-env"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment.name=otel-env-test,service.name=loses-to-otel-service-name",
            ),
            // A ratio sampler ignores the parent's flags: the unsampled
            // traceparent below is exported only if this is read.
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "1.0"),
        ],
        "00",
    )
    .await;
    assert_eq!(status, 200);

    let spans = check_spans(&received);
    assert_eq!(spans.len(), 1, "one Check span: {:#?}", received.spans());
    assert_eq!(hex::encode(&spans[0].trace_id), TRACE_ID);
    assert_eq!(hex::encode(&spans[0].parent_span_id), PARENT_SPAN);
    assert_eq!(attr(&spans[0], "hydra_authz.decision").as_deref(), Some("allow"));
    assert_eq!(
        received.resource_attr("service.name").as_deref(),
        Some("authz-from-env")
    );
    assert_eq!(
        received.resource_attr("deployment.environment.name").as_deref(),
        Some("otel-env-test")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_exporter_otlp_protocol_selects_http_protobuf() {
    // This receiver speaks only HTTP/1.1 POST /v1/traces: a grpc exporter
    // would deliver nothing.
    let (addr, received) = support::otlp::start_http_receiver().await;
    let endpoint = format!("http://{addr}");
    let status = run_binary(
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            // No OTEL_SERVICE_NAME and no config value: the attribute decides.
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=authz-from-attributes"),
        ],
        "01",
    )
    .await;
    assert_eq!(status, 200);

    let spans = check_spans(&received);
    assert_eq!(spans.len(), 1, "one Check span: {:#?}", received.spans());
    assert_eq!(hex::encode(&spans[0].trace_id), TRACE_ID);
    assert_eq!(
        received.resource_attr("service.name").as_deref(),
        Some("authz-from-attributes")
    );
}

/// The same set-up as the exporting runs above, with a sampler that drops
/// everything: the check is answered, the exporter flushed on exit, and not
/// one span arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_traces_sampler_from_env_can_drop_every_span() {
    for sampler in [
        &[("OTEL_TRACES_SAMPLER", "always_off")][..],
        &[
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0"),
        ][..],
    ] {
        let (addr, received) = support::otlp::start_grpc_receiver().await;
        let endpoint = format!("http://{addr}");
        let mut env = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())];
        env.extend_from_slice(sampler);
        // A sampled parent: only the sampler can drop the span.
        assert_eq!(run_binary(&env, "01").await, 200, "{sampler:?}");
        assert!(
            check_spans(&received).is_empty(),
            "{sampler:?}: {:#?}",
            received.spans()
        );
        assert!(received.spans().is_empty(), "{sampler:?}: {:#?}", received.spans());
    }
}
