//! Logs and traces.
//!
//! Logs go to stderr (pretty or JSON, `log.level`, `RUST_LOG` overrides).
//! Traces are exported over OTLP when an endpoint is configured
//! (`telemetry.otlp_endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT`); the SDK reads
//! the other standard `OTEL_*` variables itself (sampler, resource attributes,
//! service name). Spans are filtered independently of the log level, so
//! `log.level = "warn"` does not silence traces.

use crate::config::{LogConfig, LogFormat, OtlpProtocol, Propagator, TelemetryConfig};
use anyhow::Context;
use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// Keeps the trace pipeline alive; call [`Telemetry::shutdown`] before exit
/// so buffered spans are exported.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn tracing_enabled(&self) -> bool {
        self.provider.is_some()
    }

    /// Export everything buffered so far.
    pub fn flush(&self) {
        if let Some(p) = &self.provider {
            if let Err(e) = p.force_flush() {
                tracing::warn!(error = %e, "trace flush failed");
            }
        }
    }

    pub fn shutdown(self) {
        if let Some(p) = self.provider {
            if let Err(e) = p.shutdown() {
                eprintln!("hydra-authz: trace exporter shutdown: {e}");
            }
        }
    }
}

/// Install the global subscriber (logs, and traces when configured) and the
/// global trace-context propagator. Must run inside a tokio runtime when
/// tracing is enabled (the exporter runs on it).
pub fn init(log: &LogConfig, telemetry: &TelemetryConfig) -> anyhow::Result<Telemetry> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(v).context("RUST_LOG")?,
        _ => EnvFilter::try_new(&log.level).map_err(|e| anyhow::anyhow!("log.level: {e}"))?,
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match log.format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .boxed(),
        LogFormat::Pretty => fmt.compact().boxed(),
    };

    opentelemetry::global::set_text_map_propagator(propagator(&telemetry.propagators));
    let provider = tracer_provider(telemetry)?;
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("hydra-authz"))
            .with_filter(Targets::new().with_target("hydra_authz", tracing::Level::INFO))
    });

    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))?;
    Ok(Telemetry { provider })
}

// opentelemetry-zipkin's B3 propagator is marked deprecated together with its
// exporter; it is still the maintained B3 implementation for this SDK line and
// we use only the propagator.
#[allow(deprecated)]
fn propagator(kinds: &[Propagator]) -> TextMapCompositePropagator {
    let list: Vec<Box<dyn TextMapPropagator + Send + Sync>> = kinds
        .iter()
        .map(|k| -> Box<dyn TextMapPropagator + Send + Sync> {
            match k {
                Propagator::Tracecontext => Box::new(opentelemetry_sdk::propagation::TraceContextPropagator::new()),
                Propagator::Baggage => Box::new(opentelemetry_sdk::propagation::BaggagePropagator::new()),
                Propagator::B3 => Box::new(opentelemetry_zipkin::Propagator::with_encoding(
                    opentelemetry_zipkin::B3Encoding::SingleAndMultiHeader,
                )),
            }
        })
        .collect();
    TextMapCompositePropagator::new(list)
}

/// `None` when no endpoint is configured anywhere: tracing export is off.
fn tracer_provider(cfg: &TelemetryConfig) -> anyhow::Result<Option<SdkTracerProvider>> {
    let env_endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| {
            std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                .ok()
                .filter(|v| !v.is_empty())
        });
    if cfg.otlp_endpoint.is_empty() && env_endpoint.is_none() {
        return Ok(None);
    }
    let exporter = match cfg.otlp_protocol {
        OtlpProtocol::Grpc => {
            let b = opentelemetry_otlp::SpanExporter::builder().with_tonic();
            // An explicit config value wins; otherwise the exporter reads the OTEL_* env itself.
            let b = if cfg.otlp_endpoint.is_empty() {
                b
            } else {
                b.with_endpoint(&cfg.otlp_endpoint)
            };
            b.build()
        }
        OtlpProtocol::HttpProtobuf => {
            let b = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                // The SDK's batch processor exports from its own thread, so the
                // HTTP exporter uses its default blocking client.
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
            let b = if cfg.otlp_endpoint.is_empty() {
                b
            } else {
                b.with_endpoint(format!("{}/v1/traces", cfg.otlp_endpoint.trim_end_matches('/')))
            };
            b.build()
        }
    }
    .context("telemetry: cannot build the OTLP exporter")?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(cfg.service_name.clone());
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    Ok(Some(provider))
}
