//! `[log]` and `[telemetry]`: what the log lines look like and where
//! traces go. Beside the code that reads them; re-exported by
//! [`crate::config`], which lists every key.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info` or `hydra_authz=debug,info`.
    pub level: String,
    /// Lines queued for the log writer thread. Decision lines leave the
    /// request path through this queue; when the output cannot keep up and
    /// the queue is full, further lines are dropped and counted
    /// (`hydra_authz_log_lines_dropped_total`) rather than slowing checks.
    pub buffered_lines: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Pretty,
            level: "info".into(),
            buffered_lines: 16_384,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// OpenTelemetry tracing. Off unless an endpoint is set here or in
/// `OTEL_EXPORTER_OTLP_ENDPOINT`; the other standard `OTEL_*` variables
/// (protocol, service name, sampler, resource attributes) are honoured as usual.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// e.g. `http://otel-collector:4317` (grpc) or `http://otel-collector:4318` (http/protobuf).
    pub otlp_endpoint: String,
    /// Unset: `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, then `OTEL_EXPORTER_OTLP_PROTOCOL`, then grpc.
    pub otlp_protocol: Option<OtlpProtocol>,
    /// `service.name`: `OTEL_SERVICE_NAME` wins over this, this over
    /// `service.name` in `OTEL_RESOURCE_ATTRIBUTES`, which wins over `hydra-authz`.
    pub service_name: Option<String>,
    /// Trace context formats read from the request Envoy forwards (and sent to Hydra).
    pub propagators: Vec<Propagator>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        // Protocol and service name stay unset so the OTEL_* environment can decide them.
        TelemetryConfig {
            otlp_endpoint: String::new(),
            otlp_protocol: None,
            service_name: None,
            propagators: vec![Propagator::Tracecontext, Propagator::Baggage],
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OtlpProtocol {
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Propagator {
    /// W3C `traceparent` / `tracestate`.
    Tracecontext,
    /// W3C `baggage`.
    Baggage,
    /// Zipkin B3, single (`b3`) and multi-header (`x-b3-*`).
    B3,
}

impl LogConfig {
    /// Checks serde cannot express, as (key in `[log]`, why).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        // The filter the server will install (RUST_LOG, when set, replaces it at start).
        tracing_subscriber::EnvFilter::try_new(&self.level).map_err(|e| ("level", e.to_string()))?;
        if self.buffered_lines == 0 {
            return Err(("buffered_lines", "must be greater than 0".into()));
        }
        Ok(())
    }
}

impl TelemetryConfig {
    /// Checks serde cannot express, as (key in `[telemetry]`, why).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let endpoint = &self.otlp_endpoint;
        if !endpoint.is_empty() && reqwest::Url::parse(endpoint).is_err() {
            return Err(("otlp_endpoint", "must be a URL such as http://collector:4317".into()));
        }
        Ok(())
    }
}
