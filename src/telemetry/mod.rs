//! Logs and traces.
//!
//! Logs go to stderr (pretty or JSON, `log.level`, `RUST_LOG` overrides).
//! Traces are exported over OTLP when an endpoint is configured
//! (`telemetry.otlp_endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT`). The protocol
//! and `service.name` are resolved here (config or `OTEL_*`, see
//! [`TelemetryConfig`]); the SDK reads the sampler and resource attributes
//! itself. Spans are filtered independently of the log level, so
//! `log.level = "warn"` does not silence traces.

pub mod config;
mod line;
mod timestamp;
mod writer;

pub use line::{FieldValue, LineFormat};
pub use writer::{LogWriter, LogWriterGuard, FLUSH_INTERVAL};

use anyhow::Context;
use config::{LogConfig, LogFormat, OtlpProtocol, Propagator, TelemetryConfig};
use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Writes a value that an outsider chose (or that came from the issuer)
/// with every control character, the Unicode line separators and bidi
/// overrides, and spaces escaped as `\\u{..}`: in either log format it cannot
/// end the line, start a forged one, add a forged `key=value` field to a
/// compact line, or repaint the terminal. Backslashes are escaped too, so an
/// escape in the output always means one was applied. At most
/// [`MAX_LOGGED_CHARS`] characters are written, so no single field can make
/// a line (or the log queue) large.
pub struct Escaped<'a>(pub &'a str);

/// [`Escaped`] for our own prose (deny details, error messages that may
/// quote something an outsider sent): spaces stay, all else is escaped.
pub struct EscapedText<'a>(pub &'a str);

/// An in-memory log output for the unit tests of this module's parts.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct TestSink(pub(crate) std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl std::io::Write for TestSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `line` without its timestamp (`2026-12-01T05:53:31.719414Z`, the first
/// "20" of either format, after any colour code), for comparing two lines
/// written at different moments.
#[cfg(test)]
pub(crate) fn timestamp_removed(line: &str) -> String {
    let Some(start) = line.find("20") else {
        return line.to_owned();
    };
    let end = line[start..].find('Z').map_or(start, |z| start + z + 1);
    format!("{}{}", &line[..start], &line[end..])
}

#[cfg(test)]
impl TestSink {
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf-8")
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        self.text().lines().map(str::to_owned).collect()
    }
}

/// The longest field value written to a log line, in characters.
pub const MAX_LOGGED_CHARS: usize = 512;

/// `value` cut at [`MAX_LOGGED_CHARS`] characters (marked), in place, for
/// a field logged as a string: both line formats quote and escape it, so
/// prose that may quote an outsider (an issuer's error) can neither leave
/// its field nor forge another one.
pub fn capped(mut value: String) -> String {
    if let Some(end) = cut_at(&value) {
        value.truncate(end);
        value.push_str(TRUNCATED);
    }
    value
}

/// What a cut value ends with.
const TRUNCATED: &str = "...(truncated)";

/// Where `value` is cut to [`MAX_LOGGED_CHARS`] characters, if it is longer.
fn cut_at(value: &str) -> Option<usize> {
    // No more bytes than the limit in characters: nothing to count.
    if value.len() <= MAX_LOGGED_CHARS {
        return None;
    }
    value.char_indices().nth(MAX_LOGGED_CHARS).map(|(end, _)| end)
}

fn write_escaped<W: std::fmt::Write + ?Sized>(f: &mut W, value: &str, keep_spaces: bool) -> std::fmt::Result {
    // Most values (a path, a host, a client id) are short printable ASCII
    // with nothing to escape: one table look-up per byte, written whole.
    let bare = if keep_spaces { BARE_TEXT } else { BARE };
    if is_bare_as(value, bare) {
        return f.write_str(value);
    }
    let risky = |c: char| c == '\\' || (c == ' ' && !keep_spaces) || line::is_line_breaking(c);
    let (shown, cut) = match cut_at(value) {
        Some(end) => (&value[..end], true),
        None => (value, false),
    };
    line::write_escaping(f, shown, risky, |f, c| {
        if c == '\\' {
            f.write_str("\\\\")
        } else {
            write!(f, "\\u{{{:x}}}", u32::from(c))
        }
    })?;
    if cut {
        f.write_str(TRUNCATED)?;
    }
    Ok(())
}

/// Whether [`Escaped`] writes `value` as it is.
fn is_bare(value: &str) -> bool {
    is_bare_as(value, BARE)
}

fn is_bare_as(value: &str, bare: u8) -> bool {
    value.len() <= MAX_LOGGED_CHARS && value.bytes().all(|b| BARE_BYTES[usize::from(b)] & bare != 0)
}

/// [`BARE_BYTES`] bits: written unescaped by [`Escaped`], by [`EscapedText`].
const BARE: u8 = 1;
const BARE_TEXT: u8 = 2;

/// Printable ASCII but `\\` (and, for [`Escaped`], the space): the bytes
/// [`write_escaped`] writes as they are.
static BARE_BYTES: [u8; 256] = {
    let mut table = [0; 256];
    let mut b = b' ';
    while b <= b'~' {
        if b != b'\\' {
            table[b as usize] = if b == b' ' { BARE_TEXT } else { BARE | BARE_TEXT };
        }
        b += 1;
    }
    table
};

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_escaped(f, self.0, false)
    }
}

impl std::fmt::Display for EscapedText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_escaped(f, self.0, true)
    }
}

/// The log queue, once [`init`] installed it: its drop count is a metric.
static LOG_WRITER: std::sync::OnceLock<LogWriter> = std::sync::OnceLock::new();

/// Whether per-check spans are worth creating: true unless [`init`] found
/// neither trace export nor a log format that prints span context. Tests
/// that install their own OpenTelemetry layer keep the default (on).
static SPANS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Where [`init`] lets lines skip the tracing event: see [`direct_lines`].
static DIRECT: std::sync::OnceLock<DirectLines> = std::sync::OnceLock::new();

/// The log queue and line format of the installed log layer, for a caller
/// that writes its own line ([`line::render`]) instead of emitting an event.
#[derive(Clone)]
pub struct DirectLines {
    format: LineFormat,
    ansi: bool,
    out: LogWriter,
}

impl DirectLines {
    /// Lines as the layer of [`log_layer`]`(format, out, ansi)` writes them.
    pub fn new(format: LogFormat, ansi: bool, out: LogWriter) -> DirectLines {
        DirectLines {
            format: line_format(format),
            ansi,
            out,
        }
    }

    /// Queues the line the log layer would write for this event. The caller
    /// has asked `tracing::enabled!` for its target and level first, so
    /// `log.level` and `RUST_LOG` filter it as they filter the event.
    pub fn write(&self, level: tracing::Level, target: &str, message: &str, fields: &[(&'static str, FieldValue<'_>)]) {
        line::with_line_buffer(|w| {
            line::render(self.format, self.ansi, level, target, message, fields, w)?;
            // One write, one queued line, as the layer's own writes.
            let _ = std::io::Write::write(&mut &self.out, w.as_bytes());
            Ok(())
        })
        .unwrap_or_default();
    }
}

/// Set when the log layer is the only consumer of events (no trace export,
/// which would attach the event to the check's span): a line written
/// through it is then the same line, minus the event. `None` in tests that
/// install their own subscriber, and with tracing on; emit the event then.
pub fn direct_lines() -> Option<&'static DirectLines> {
    DIRECT.get()
}

/// Log lines dropped so far because the output could not keep up.
pub fn dropped_log_lines() -> u64 {
    LOG_WRITER.get().map_or(0, LogWriter::dropped)
}

/// Create the per-check (and per-introspection) spans? When nothing
/// consumes them, `tracing::Span::none()` costs nothing.
pub fn spans_enabled() -> bool {
    SPANS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Keeps the trace pipeline and the log writer alive; call
/// [`Telemetry::shutdown`] before exit so buffered spans are exported and
/// queued log lines written.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    log_writer: Option<LogWriterGuard>,
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

    /// Exports the buffered spans and hands back the log writer's guard:
    /// drop it last (the server drops it after its runtime), since
    /// dropping it writes every queued line and closes the queue.
    pub fn shutdown(self) -> Option<LogWriterGuard> {
        if let Some(p) = self.provider {
            if let Err(e) = p.shutdown() {
                tracing::warn!(error = %e, "trace exporter shutdown failed");
            }
        }
        self.log_writer
    }
}

/// The log line formatter for `log.format`, writing to `writer`: the one
/// the server installs, and what the log-integrity tests capture.
/// `ansi`: colours in the pretty format, only for a terminal (a container
/// runtime or log collector would store the escape codes).
pub fn log_layer<S, W>(format: LogFormat, writer: W, ansi: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi)
        .event_format(line_format(format))
        .boxed()
}

fn line_format(format: LogFormat) -> LineFormat {
    match format {
        LogFormat::Json => LineFormat::Json,
        LogFormat::Pretty => LineFormat::Compact,
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
    let (writer, log_writer) = LogWriter::new(std::io::stderr(), log.buffered_lines).context("log writer thread")?;
    let _ = LOG_WRITER.set(writer.clone());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());

    opentelemetry::global::set_text_map_propagator(propagator(&telemetry.propagators));
    let provider = tracer_provider(telemetry, &process_env)?;
    let installed = match &provider {
        // The log layer alone: its filter is the subscriber's, so a check
        // asking `tracing::enabled!` (the direct decision line) gets the
        // filter's answer. A per-layer filter keeps its verdict in a
        // thread-local for the event it expects next (tokio-rs/tracing#2704,
        // #3572), and with `enabled!` no event follows.
        None => tracing_subscriber::registry()
            .with(filter)
            .with(log_layer(log.format, writer.clone(), ansi))
            .try_init(),
        // Spans are filtered independently of the log level, so
        // `log.level = "warn"` does not silence traces.
        Some(p) => tracing_subscriber::registry()
            .with(log_layer(log.format, writer.clone(), ansi).with_filter(filter))
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(p.tracer("hydra-authz"))
                    .with_filter(Targets::new().with_target("hydra_authz", tracing::Level::INFO)),
            )
            .try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))?;
    // Spans feed the trace exporter. The logs need none: JSON leaves span
    // context out, and in the compact format it would only repeat the
    // span's name before each decision line.
    SPANS.store(provider.is_some(), std::sync::atomic::Ordering::Relaxed);
    if provider.is_none() {
        let _ = DIRECT.set(DirectLines::new(log.format, ansi, writer));
    }
    Ok(Telemetry {
        provider,
        log_writer: Some(log_writer),
    })
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

/// Reads one environment variable, empty meaning unset (as the OTel spec
/// says). Passed in, so the decisions below are tested without mutating the
/// process environment.
type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Tracing export is on only when an endpoint is set somewhere.
fn endpoint_configured(cfg: &TelemetryConfig, env: Env) -> bool {
    !cfg.otlp_endpoint.is_empty()
        || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
}

/// The config wins when it names a protocol; then the signal-specific and
/// the general `OTEL_*` variable; then grpc. An unsupported value stops
/// start-up: silently falling back would send grpc to an HTTP collector.
fn protocol(cfg: &TelemetryConfig, env: Env) -> anyhow::Result<OtlpProtocol> {
    if let Some(p) = cfg.otlp_protocol {
        return Ok(p);
    }
    for var in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
        if let Some(v) = env(var) {
            return match v.trim() {
                "grpc" => Ok(OtlpProtocol::Grpc),
                "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
                other => anyhow::bail!("{var}={other:?} is not supported (use grpc or http/protobuf)"),
            };
        }
    }
    Ok(OtlpProtocol::Grpc)
}

/// `service.name` by the OTel spec's precedence: `OTEL_SERVICE_NAME`, then
/// the explicit config, then `service.name` in `OTEL_RESOURCE_ATTRIBUTES`,
/// then our default.
fn service_name(cfg: &TelemetryConfig, env: Env) -> String {
    let from_attributes = || {
        // Parsed as the SDK's env resource detector does: `k=v` pairs split on ','.
        env("OTEL_RESOURCE_ATTRIBUTES")?
            .split_terminator(',')
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| k.trim() == "service.name")
            .map(|(_, v)| v.trim().to_owned())
            .next_back()
            .filter(|v| !v.is_empty())
    };
    env("OTEL_SERVICE_NAME")
        .or_else(|| cfg.service_name.clone().filter(|s| !s.is_empty()))
        .or_else(from_attributes)
        .unwrap_or_else(|| "hydra-authz".to_owned())
}

/// `None` when no endpoint is configured anywhere: tracing export is off.
fn tracer_provider(cfg: &TelemetryConfig, env: Env) -> anyhow::Result<Option<SdkTracerProvider>> {
    if !endpoint_configured(cfg, env) {
        return Ok(None);
    }
    let exporter = match protocol(cfg, env)? {
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
    // The builder's detectors read OTEL_RESOURCE_ATTRIBUTES (other attributes
    // come from there); service.name is then set by our precedence, since the
    // SDK alone cannot know about the config value.
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name(cfg, env))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    Ok(Some(provider))
}

#[cfg(test)]
mod tests {

    /// A sink slower than the checks: the queue fills, further lines are
    /// dropped and counted (never blocking the caller), and every line is
    /// either written or counted once the guard is dropped.
    #[test]
    fn a_slow_log_sink_drops_and_counts_instead_of_blocking() {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::layer::SubscriberExt;
        #[derive(Clone, Default)]
        struct Slow(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Slow {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                std::thread::sleep(std::time::Duration::from_millis(2));
                self.0.lock().expect("lock").extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Slow::default();
        let (writer, guard) = super::LogWriter::new(sink.clone(), 8).expect("writer");
        let subscriber = tracing_subscriber::registry().with(super::log_layer(
            crate::config::LogFormat::Json,
            writer.clone(),
            false,
        ));
        const LINES: usize = 2_000;
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..LINES {
                tracing::info!(target: "hydra_authz::decision", i, "decision");
            }
        });
        drop(guard);
        let written = sink.0.lock().expect("lock").iter().filter(|b| **b == b'\n').count();
        assert!(writer.dropped() > 0, "the queue of 8 overflowed");
        assert_eq!(
            written as u64 + writer.dropped(),
            LINES as u64,
            "every line written or counted"
        );
    }

    #[test]
    fn dropped_lines_reach_the_metric_once() {
        let m = crate::metrics::Metrics::new();
        m.sync_log_lines_dropped(5);
        m.sync_log_lines_dropped(5);
        m.sync_log_lines_dropped(7);
        assert_eq!(m.log_lines_dropped.get(), 7);
        assert!(m.encode().contains("hydra_authz_log_lines_dropped_total 7"));
    }

    #[test]
    fn escaped_values_cannot_split_or_forge_lines() {
        use super::{capped, Escaped, EscapedText, MAX_LOGGED_CHARS};
        let shown = |v: &str| Escaped(v).to_string();
        assert_eq!(shown("/date"), "/date");
        assert_eq!(
            shown("a\r\nlevel=ERROR forged"),
            "a\\u{d}\\u{a}level=ERROR\\u{20}forged"
        );
        assert_eq!(shown("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(shown("x\u{2028}y\u{202e}z"), "x\\u{2028}y\\u{202e}z");
        assert_eq!(
            shown("a\u{200e}b\u{200f}c\u{61c}d"),
            "a\\u{200e}b\\u{200f}c\\u{61c}d",
            "the bidi marks reorder a line's display too"
        );
        assert_eq!(
            shown("back\\u{a}slash"),
            "back\\\\u{a}slash",
            "a literal backslash is escaped too"
        );
        assert_eq!(
            shown("tenant ü"),
            "tenant\\u{20}ü",
            "a space could start a forged field"
        );
        assert_eq!(EscapedText("the token\nexpired").to_string(), "the token\\u{a}expired");
        let long = shown(&"x".repeat(5_000));
        assert_eq!(long.len(), MAX_LOGGED_CHARS + "...(truncated)".len());
        // The limit is in characters; the shortcut for short values in bytes.
        assert_eq!(shown(&"x".repeat(MAX_LOGGED_CHARS)), "x".repeat(MAX_LOGGED_CHARS));
        assert!(shown(&"x".repeat(MAX_LOGGED_CHARS + 1)).ends_with("x...(truncated)"));
        assert_eq!(shown(&"ü".repeat(MAX_LOGGED_CHARS)), "ü".repeat(MAX_LOGGED_CHARS));
        assert_eq!(
            shown(&"ü".repeat(MAX_LOGGED_CHARS + 1)),
            format!("{}...(truncated)", "ü".repeat(MAX_LOGGED_CHARS))
        );
        assert_eq!(capped("ü".repeat(MAX_LOGGED_CHARS)), "ü".repeat(MAX_LOGGED_CHARS));
        assert_eq!(
            capped("ü".repeat(MAX_LOGGED_CHARS + 1)),
            format!("{}...(truncated)", "ü".repeat(MAX_LOGGED_CHARS))
        );
        // Plain ASCII takes the one-piece path: its risky space still escaped.
        assert_eq!(shown("a b"), "a\\u{20}b");
        assert_eq!(EscapedText("a b\\c").to_string(), "a b\\\\c");
        for v in ["\n", "\r", "\u{85}", "\u{0}", "\u{7f}"] {
            assert!(!shown(v).chars().any(char::is_control), "{v:?}");
        }
    }
    use super::*;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).filter(|v| !v.is_empty()).cloned()
    }

    fn with_endpoint(endpoint: &str) -> TelemetryConfig {
        TelemetryConfig {
            otlp_endpoint: endpoint.into(),
            ..TelemetryConfig::default()
        }
    }

    #[test]
    fn tracing_is_off_unless_an_endpoint_is_set() {
        let off = TelemetryConfig::default();
        let other_otel_vars = env_of(&[
            ("OTEL_SERVICE_NAME", "svc"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_TRACES_SAMPLER", "always_on"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
        ]);
        assert!(!endpoint_configured(&off, &other_otel_vars));
        assert!(tracer_provider(&off, &other_otel_vars).expect("no error").is_none());

        assert!(endpoint_configured(
            &with_endpoint("http://127.0.0.1:4317"),
            &env_of(&[])
        ));
        for var in ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] {
            assert!(
                endpoint_configured(&off, &env_of(&[(var, "http://127.0.0.1:4317")])),
                "{var}"
            );
        }
    }

    #[tokio::test]
    async fn an_endpoint_turns_tracing_on() {
        let provider = tracer_provider(&with_endpoint("http://127.0.0.1:4317"), &env_of(&[]))
            .expect("builds")
            .expect("tracing on");
        let _ = provider.shutdown();
    }

    #[test]
    fn protocol_config_then_env_then_grpc() {
        let unset = TelemetryConfig::default();
        let p = |cfg: &TelemetryConfig, vars: &[(&str, &str)]| protocol(cfg, &env_of(vars)).expect("supported");
        assert_eq!(p(&unset, &[]), OtlpProtocol::Grpc);
        assert_eq!(
            p(&unset, &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]),
            OtlpProtocol::HttpProtobuf
        );
        assert_eq!(
            p(
                &unset,
                &[
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
                ]
            ),
            OtlpProtocol::Grpc,
            "the signal-specific variable wins"
        );
        let explicit = TelemetryConfig {
            otlp_protocol: Some(OtlpProtocol::Grpc),
            ..TelemetryConfig::default()
        };
        assert_eq!(
            p(&explicit, &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]),
            OtlpProtocol::Grpc,
            "an explicit config value wins"
        );
        let err = protocol(&unset, &env_of(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]))
            .expect_err("http/json is not built in")
            .to_string();
        assert!(err.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{err}");
    }

    #[test]
    fn service_name_follows_the_otel_precedence() {
        let unset = TelemetryConfig::default();
        let named = TelemetryConfig {
            service_name: Some("from-config".into()),
            ..TelemetryConfig::default()
        };
        let attrs = ("OTEL_RESOURCE_ATTRIBUTES", "team=id, service.name = from-attrs ,x=y");
        let env = ("OTEL_SERVICE_NAME", "from-env");
        assert_eq!(service_name(&unset, &env_of(&[])), "hydra-authz");
        assert_eq!(service_name(&unset, &env_of(&[attrs])), "from-attrs");
        assert_eq!(service_name(&named, &env_of(&[attrs])), "from-config");
        assert_eq!(service_name(&named, &env_of(&[attrs, env])), "from-env");
        assert_eq!(service_name(&unset, &env_of(&[env])), "from-env");
        let empty = TelemetryConfig {
            service_name: Some(String::new()),
            ..TelemetryConfig::default()
        };
        assert_eq!(service_name(&empty, &env_of(&[attrs])), "from-attrs", "empty is unset");
    }
}
