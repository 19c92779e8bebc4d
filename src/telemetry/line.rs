//! The two log line formats of `log.format`, written for one line per check.
//!
//! tracing-subscriber's compact and JSON formatters cost about 21,000
//! instructions per decision line (callgrind, 2026-11-30), a third of a
//! cached allow: each field name and `=` goes through `nu_ansi_term` and
//! `fmt::write` even with colours off. These write the same lines (tests
//! compare them with the crate's output, colours off) with plain
//! `write_str`, `itoa` for integers and serde_json's string escaping where
//! a string needs any, into one reused buffer per thread that goes to the
//! crate's writer in a single write; the timestamp is the crate's format
//! with its calendar part computed once per second ([`super::timestamp`]). Span
//! context is left out of both: the JSON layer never printed it and in the
//! compact line it only repeated the check span's name. Unlike the crate's
//! compact format, every Display/Debug value, message and target is passed
//! through [`Sanitized`], so no event (not only the decision line, whose
//! caller-chosen fields are [`super::Escaped`] already) can split a line
//! or repaint a terminal.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// One of the formats of `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFormat {
    /// `2026-11-30T00:10:57.700432Z  INFO target: message k=v ...`, as
    /// tracing-subscriber's compact format.
    Compact,
    /// One JSON object per line: timestamp, level, the fields flattened,
    /// target; as tracing-subscriber's JSON format with `flatten_event`.
    Json,
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        // Records forwarded from the `log` crate carry their real target in fields.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let ansi = w.has_ansi_escapes();
        with_line_buffer(|line| {
            match self {
                LineFormat::Compact => compact(line, ansi, meta, event),
                LineFormat::Json => json(line, meta, event),
            }?;
            w.write_str(line)
        })
    }
}

thread_local! {
    /// The line being written: pushes into a `String` we own are inlined,
    /// where each write through the crate's `Writer` is a dynamic call.
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Runs `f` with this thread's line buffer, emptied; a fresh buffer when it
/// is taken (an event logged while a value of another is being formatted).
pub(super) fn with_line_buffer(f: impl FnOnce(&mut String) -> fmt::Result) -> fmt::Result {
    let mut f = Some(f);
    // Gone (an event from a thread-local destructor) or taken: a fresh one.
    let done = LINE.try_with(|cell| {
        let mut line = cell.try_borrow_mut().ok()?;
        let f = f.take()?;
        line.clear();
        let result = f(&mut line);
        // A rare giant line must not stay resident in every thread.
        if line.capacity() > 16 * 1024 {
            *line = String::new();
        }
        Some(result)
    });
    match (done, f) {
        (Ok(Some(result)), _) => result,
        (_, Some(f)) => f(&mut String::new()),
        (_, None) => Err(fmt::Error),
    }
}

const RESET: &str = "\x1b[0m";
const DIMMED: &str = "\x1b[2m";

fn compact(w: &mut String, ansi: bool, meta: &tracing::Metadata<'_>, event: &Event<'_>) -> fmt::Result {
    compact_head(w, ansi, *meta.level(), meta.target())?;
    let mut fields = CompactFields {
        w: &mut *w,
        first: true,
        result: Ok(()),
    };
    event.record(&mut fields);
    fields.result?;
    w.write_char('\n')
}

/// Timestamp, level and target, up to the first field.
fn compact_head(w: &mut String, ansi: bool, level: Level, target: &str) -> fmt::Result {
    let (level, colour) = match level {
        Level::TRACE => ("TRACE", "\x1b[35m"),
        Level::DEBUG => ("DEBUG", "\x1b[34m"),
        Level::INFO => (" INFO", "\x1b[32m"),
        Level::WARN => (" WARN", "\x1b[33m"),
        Level::ERROR => ("ERROR", "\x1b[31m"),
    };
    // Colour codes only on a terminal; the text between them is the same.
    let paint = |w: &mut String, code: &str| if ansi { w.write_str(code) } else { Ok(()) };
    paint(w, DIMMED)?;
    super::timestamp::write_now(w)?;
    paint(w, RESET)?;
    w.write_char(' ')?;
    paint(w, colour)?;
    w.write_str(level)?;
    paint(w, RESET)?;
    w.write_char(' ')?;
    paint(w, DIMMED)?;
    // A `log` crate record's target is a runtime string.
    Sanitized(&mut *w).write_str(target)?;
    w.write_char(':')?;
    paint(w, RESET)?;
    w.write_char(' ')
}

fn json(w: &mut String, meta: &tracing::Metadata<'_>, event: &Event<'_>) -> fmt::Result {
    json_head(w, *meta.level())?;
    let mut fields = JsonFields {
        w: &mut *w,
        scratch: String::new(),
        result: Ok(()),
    };
    event.record(&mut fields);
    fields.result?;
    json_tail(w, meta.target())
}

/// `{"timestamp":..,"level":..`, up to the first field.
fn json_head(w: &mut String, level: Level) -> fmt::Result {
    w.push_str("{\"timestamp\":\"");
    super::timestamp::write_now(w)?;
    w.push_str("\",\"level\":\"");
    w.push_str(level.as_str());
    w.push('"');
    Ok(())
}

/// The target and the end of the object.
fn json_tail(w: &mut String, target: &str) -> fmt::Result {
    w.push_str(",\"target\":");
    json_string(w, target)?;
    w.push_str("}\n");
    Ok(())
}

/// A field of a line written without a tracing event ([`render`]), typed
/// as the event's field would be, so the line is the same.
#[derive(Debug, Clone, Copy)]
pub enum FieldValue<'a> {
    /// A `&str` field: quoted in the compact format.
    Str(&'a str),
    /// A `%Escaped(..)` field: written bare, escaped.
    Escaped(&'a str),
    U64(u64),
    Bool(bool),
}

/// The line the log layer writes for an event at `level` and `target` with
/// `message` and `fields`, without the event: what [`super::DirectLines`]
/// queues for the one line per check, where building the event and visiting
/// its fields through `dyn Visit` and `fmt` cost more than the line itself.
/// The tests hold it to the layer's own output.
pub(super) fn render(
    format: LineFormat,
    ansi: bool,
    level: Level,
    target: &str,
    message: &str,
    fields: &[(&'static str, FieldValue<'_>)],
    w: &mut String,
) -> fmt::Result {
    match format {
        LineFormat::Compact => {
            compact_head(w, ansi, level, target)?;
            Sanitized(&mut *w).write_str(message)?;
            for (name, value) in fields {
                debug_assert!(is_field_name(name), "{name:?}");
                w.push(' ');
                w.push_str(name);
                w.push('=');
                match *value {
                    FieldValue::Str(v) => compact_str(w, v)?,
                    FieldValue::Escaped(v) => super::write_escaped(w, v, false)?,
                    FieldValue::U64(v) => w.push_str(itoa::Buffer::new().format(v)),
                    FieldValue::Bool(v) => w.push_str(if v { "true" } else { "false" }),
                }
            }
            w.write_char('\n')
        }
        LineFormat::Json => {
            json_head(w, level)?;
            w.push_str(",\"message\":");
            json_string(w, message)?;
            for (name, value) in fields {
                debug_assert!(is_field_name(name), "{name:?}");
                // Our own field names: identifiers, nothing to escape.
                w.push_str(",\"");
                w.push_str(name);
                w.push_str("\":");
                match *value {
                    FieldValue::Str(v) => json_string(w, v)?,
                    // What `Escaped` writes for it is the value itself.
                    FieldValue::Escaped(v) if super::is_bare(v) => json_string(w, v)?,
                    FieldValue::Escaped(v) => {
                        let mut escaped = String::new();
                        super::write_escaped(&mut escaped, v, false)?;
                        json_string(w, &escaped)?;
                    }
                    FieldValue::U64(v) => w.push_str(itoa::Buffer::new().format(v)),
                    FieldValue::Bool(v) => w.push_str(if v { "true" } else { "false" }),
                }
            }
            json_tail(w, target)
        }
    }
}

/// A Rust identifier without `r#`: a field name [`render`] may write as it is.
fn is_field_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b == b'_' || b.is_ascii_alphanumeric())
}

/// A string field in the compact format: `{:?}`, without the formatting
/// machinery when it needs no escaping.
fn compact_str(w: &mut String, value: &str) -> fmt::Result {
    if needs_no_escaping(value) {
        w.push('"');
        w.push_str(value);
        w.push('"');
        Ok(())
    } else {
        write!(Sanitized(&mut *w), "{value:?}")
    }
}

/// Printable ASCII other than `"` and `\\`: what both `{:?}` and a JSON
/// string write unchanged between quotes (most values), so neither needs
/// the formatting machinery or an escaper.
fn needs_no_escaping(value: &str) -> bool {
    value.bytes().all(|b| PLAIN[usize::from(b)])
}

/// [`needs_no_escaping`]'s bytes, one look-up each: a log line checks
/// every key and value, some 300 bytes.
static PLAIN: [bool; 256] = {
    let mut plain = [false; 256];
    let mut b = b' ';
    while b <= b'~' {
        plain[b as usize] = b != b'"' && b != b'\\';
        b += 1;
    }
    plain
};

/// Fields forwarded from the `log` crate that the normalized metadata
/// already shows.
fn is_log_metadata(field: &Field) -> bool {
    field.name().starts_with("log.")
}

/// `name=value` pairs separated by spaces, the message bare.
struct CompactFields<'w> {
    w: &'w mut String,
    first: bool,
    result: fmt::Result,
}

impl CompactFields<'_> {
    /// The separator and `name=` (nothing for the message); false when the
    /// field is not written at all.
    fn start(&mut self, field: &Field) -> bool {
        if self.result.is_err() || is_log_metadata(field) {
            return false;
        }
        self.result = self.separator_and_name(field.name());
        self.result.is_ok()
    }

    fn separator_and_name(&mut self, name: &str) -> fmt::Result {
        if !std::mem::take(&mut self.first) {
            self.w.write_char(' ')?;
        }
        if name != "message" {
            self.w.write_str(name.strip_prefix("r#").unwrap_or(name))?;
            self.w.write_char('=')?;
        }
        Ok(())
    }
}

impl Visit for CompactFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.start(field) {
            return;
        }
        self.result = if field.name() == "message" {
            Sanitized(&mut *self.w).write_str(value)
        } else {
            compact_str(self.w, value)
        };
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.start(field) {
            self.result = self.w.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.start(field) {
            self.result = self.w.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.start(field) {
            self.result = self.w.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.start(field) {
            self.result = write!(Sanitized(&mut *self.w), "{value:?}");
        }
    }
}

/// `,"name":value` for each field.
struct JsonFields<'w> {
    w: &'w mut String,
    /// Debug values are formatted here first (one buffer per line).
    scratch: String,
    result: fmt::Result,
}

impl JsonFields<'_> {
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut String) -> fmt::Result) {
        if self.result.is_err() || is_log_metadata(field) {
            return;
        }
        self.result = Self::entry(self.w, field.name(), value);
    }

    fn entry(w: &mut String, name: &str, value: impl FnOnce(&mut String) -> fmt::Result) -> fmt::Result {
        w.push(',');
        json_string(w, name.strip_prefix("r#").unwrap_or(name))?;
        w.push(':');
        value(w)
    }
}

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |w| json_string(w, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.field(field, |w| match serde_json::to_string(&value) {
            Ok(number) => w.write_str(&number),
            Err(_) => Err(fmt::Error),
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        if write!(scratch, "{value:?}").is_err() {
            self.result = Err(fmt::Error);
            return;
        }
        self.field(field, |w| json_string(w, &scratch));
        self.scratch = scratch;
    }
}

/// `value` as a JSON string. Printable ASCII other than `"` and `\\` needs
/// no escaping (RFC 8259 §7) and is written as it is, which is most values;
/// anything else goes through serde_json, and what serde_json leaves raw
/// inside a string (DEL, the C1 controls, the line separators and bidi
/// overrides: legal JSON, but read by terminals and some log viewers) is
/// then written as a `\\uXXXX` escape, so the value still parses back
/// unchanged.
fn json_string(w: &mut String, value: &str) -> fmt::Result {
    if needs_no_escaping(value) {
        w.push('"');
        w.push_str(value);
        w.push('"');
        return Ok(());
    }
    let quoted = serde_json::to_string(value).map_err(|_| fmt::Error)?;
    // All of them are in the Basic Multilingual Plane: one \\u escape.
    write_escaping(w, &quoted, is_line_breaking, |w, c| {
        write!(w, "\\u{:04x}", u32::from(c))
    })
}

/// Writes through, with every control character, the Unicode line
/// separators and the bidi controls and marks as `\u{..}`: whatever a value's
/// Display or Debug prints stays on its line and cannot repaint a terminal.
/// Idempotent on [`super::Escaped`] output, which has none of them left.
pub(crate) struct Sanitized<'a, W: fmt::Write>(pub &'a mut W);

pub(crate) fn is_line_breaking(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}'
            // Bidi embeddings, overrides and isolates, and the three bidi
            // marks (LRM, RLM, ALM): each can reorder how a viewer shows
            // the rest of the line.
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{061c}'
        )
}

impl<W: fmt::Write> fmt::Write for Sanitized<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_escaping(self.0, s, is_line_breaking, |w, c| {
            write!(w, "\\u{{{:x}}}", u32::from(c))
        })
    }
}

/// Writes `value` with each character `risky` picks replaced by what
/// `escape` writes; safe runs are written whole. The one loop behind every
/// escaping writer of the log lines ([`Sanitized`], JSON strings,
/// [`super::Escaped`]).
pub(crate) fn write_escaping<W: fmt::Write + ?Sized>(
    w: &mut W,
    value: &str,
    risky: impl Fn(char) -> bool,
    escape: impl Fn(&mut W, char) -> fmt::Result,
) -> fmt::Result {
    // Most values are printable ASCII that nothing calls risky: written
    // whole, without decoding them character by character.
    if value
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && !risky(char::from(b)))
    {
        return w.write_str(value);
    }
    let mut rest = value;
    while let Some(i) = rest.find(&risky) {
        w.write_str(&rest[..i])?;
        let c = rest[i..].chars().next().unwrap_or_default();
        escape(w, c)?;
        rest = &rest[i + c.len_utf8()..];
    }
    w.write_str(rest)
}

#[cfg(test)]
mod tests {
    use super::LineFormat;
    use crate::telemetry::Escaped;
    use std::sync::Mutex;
    use tracing_subscriber::layer::SubscriberExt;

    use crate::telemetry::TestSink as Buf;

    /// Events of every shape the service logs: a decision line (str, u64,
    /// bool and Display fields, a Debug field), a formatted message, a raw
    /// identifier, a line without fields, a WARN and an ERROR.
    fn emit() {
        let err = std::io::Error::other("connection refused");
        tracing::info!(
            target: "hydra_authz::decision",
            decision = "allow",
            front = "grpc",
            status = 200u16,
            reason = "allowed",
            detail = %"",
            rule_id = %Escaped("read-date"),
            path = %Escaped("/date"),
            latency_us = 12u64,
            delta = -3i64,
            token_fp = "084628e0",
            stale = false,
            "decision"
        );
        tracing::info!(target: "hydra_authz::server", addr = ?std::net::SocketAddr::from(([127, 0, 0, 1], 8080)), workers = 2usize, "hydra-authz listening");
        tracing::warn!(target: "hydra_authz::resilience", error = %err, r#type = "x", "introspection failed: {} of {}", 1, 3);
        tracing::error!(target: "hydra_authz", "stopped");
        tracing::info!(target: "hydra_authz", quoted = "say \"hi\"\\", unicode = "tenant ü", "");
    }

    fn capture(
        layer: impl FnOnce(Buf) -> Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>,
    ) -> Vec<String> {
        let buf = Buf::default();
        let subscriber = tracing_subscriber::registry().with(layer(buf.clone()));
        tracing::subscriber::with_default(subscriber, emit);
        buf.lines()
    }

    fn without_timestamp(line: &str) -> &str {
        // 2026-11-30T00:10:57.700432Z
        line.split_once("Z ").map_or(line, |(_, rest)| rest)
    }

    #[test]
    fn compact_lines_are_the_crates_lines() {
        let ours = capture(|b| super::super::log_layer(crate::config::LogFormat::Pretty, Mutex::new(b), false));
        let theirs = capture(|b| {
            Box::new(
                tracing_subscriber::fmt::layer()
                    .with_writer(Mutex::new(b))
                    .with_ansi(false)
                    .compact(),
            )
        });
        assert_eq!(ours.len(), 5, "{ours:#?}");
        assert_eq!(ours.len(), theirs.len());
        for (o, t) in ours.iter().zip(&theirs) {
            assert_eq!(without_timestamp(o), without_timestamp(t));
            assert!(o.starts_with("20") && o.as_bytes()[27] == b' ', "timestamp first: {o}");
        }
        assert_eq!(
            without_timestamp(&ours[0]),
            " INFO hydra_authz::decision: decision decision=\"allow\" front=\"grpc\" status=200 reason=\"allowed\" detail= rule_id=read-date path=/date latency_us=12 delta=-3 token_fp=\"084628e0\" stale=false"
        );
    }

    #[test]
    fn json_lines_hold_the_crates_values() {
        let ours = capture(|b| super::super::log_layer(crate::config::LogFormat::Json, Mutex::new(b), false));
        let theirs = capture(|b| {
            Box::new(
                tracing_subscriber::fmt::layer()
                    .with_writer(Mutex::new(b))
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false),
            )
        });
        assert_eq!(ours.len(), 5, "{ours:#?}");
        for (o, t) in ours.iter().zip(&theirs) {
            let mut o: serde_json::Value = serde_json::from_str(o).expect("one JSON object per line");
            let mut t: serde_json::Value = serde_json::from_str(t).expect("JSON");
            for v in [&mut o, &mut t] {
                assert!(v["timestamp"].as_str().is_some_and(|s| s.ends_with('Z')), "{v}");
                v["timestamp"] = serde_json::Value::Null;
            }
            assert_eq!(o, t);
        }
        let first: serde_json::Value = serde_json::from_str(&ours[0]).expect("JSON");
        assert_eq!(first["status"], 200);
        assert_eq!(first["stale"], false);
        assert_eq!(first["target"], "hydra_authz::decision");
    }

    /// Values that hit every branch of both writers: plain ASCII, quotes
    /// and backslashes, spaces, controls, DEL, C1, bidi controls, line
    /// separators, non-ASCII, and lengths around the 512-character cap.
    fn any_value() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            "[a-z0-9/._-]{0,12}",
            Just("\"".to_owned()),
            Just("\\".to_owned()),
            Just(" ".to_owned()),
            Just("=".to_owned()),
            Just("\u{7f}".to_owned()),
            Just("\u{85}".to_owned()),
            Just("\u{202e}".to_owned()),
            Just("\u{2028}".to_owned()),
            Just("ü".to_owned()),
            "[\\x00-\\x1f]",
            Just("x".repeat(510)),
        ];
        proptest::collection::vec(piece, 0..6).prop_map(|p| p.concat())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

        /// A line [`super::render`] writes is the line the layer writes for
        /// the event with the same fields, in both formats, for any values.
        #[test]
        fn a_rendered_line_is_the_layers_line(
            text in any_value(),
            shown in any_value(),
            number in proptest::prelude::any::<u64>(),
            flag in proptest::prelude::any::<bool>(),
            warn in proptest::prelude::any::<bool>(),
            ansi in proptest::prelude::any::<bool>(),
        ) {
            use super::FieldValue;
            for (format, shape) in [
                (crate::config::LogFormat::Pretty, LineFormat::Compact),
                (crate::config::LogFormat::Json, LineFormat::Json),
            ] {
                let buf = Buf::default();
                let subscriber = tracing_subscriber::registry().with(super::super::log_layer(format, Mutex::new(buf.clone()), ansi));
                tracing::subscriber::with_default(subscriber, || {
                    if warn {
                        tracing::warn!(target: "hydra_authz::decision", text = &*text, shown = %Escaped(&shown), number, flag, "decision");
                    } else {
                        tracing::info!(target: "hydra_authz::decision", text = &*text, shown = %Escaped(&shown), number, flag, "decision");
                    }
                });
                let theirs = buf.text();
                let mut ours = String::new();
                let level = if warn { tracing::Level::WARN } else { tracing::Level::INFO };
                super::render(
                    shape,
                    ansi,
                    level,
                    "hydra_authz::decision",
                    "decision",
                    &[
                        ("text", FieldValue::Str(&text)),
                        ("shown", FieldValue::Escaped(&shown)),
                        ("number", FieldValue::U64(number)),
                        ("flag", FieldValue::Bool(flag)),
                    ],
                    &mut ours,
                )
                .expect("render");
                let cut = crate::telemetry::timestamp_removed;
                proptest::prop_assert_eq!(cut(&ours), cut(&theirs), "{:?}", format);
                proptest::prop_assert_eq!(ours.matches('\n').count(), 1);
            }
        }
    }

    /// What the crate's compact format lets through (a Display value or a
    /// message with a newline or an escape sequence), ours escapes.
    #[test]
    fn no_value_or_message_can_break_a_compact_line() {
        for format in [LineFormat::Compact, LineFormat::Json] {
            let buf = Buf::default();
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(Mutex::new(buf.clone()))
                .with_ansi(false)
                .event_format(format);
            let subscriber = tracing_subscriber::registry().with(layer);
            tracing::subscriber::with_default(subscriber, || {
                let evil = "x\nforged \u{1b}[2K\u{2028}\r\u{85}\u{200f}";
                tracing::warn!(error = %evil, debug = ?evil, plain = evil, "{evil}");
                // A quoted field keeps a forged `key=value` inside its quotes.
                tracing::info!(detail = "rejected: \" client_id=evil", client_id = "real");
            });
            let lines = buf.lines();
            assert_eq!(lines.len(), 2, "{format:?}: {lines:#?}");
            if format == LineFormat::Compact {
                assert!(
                    lines[1].ends_with(r#"detail="rejected: \" client_id=evil" client_id="real""#),
                    "{}",
                    lines[1]
                );
            }
            assert!(
                !lines[0].chars().any(super::is_line_breaking),
                "{format:?}: {:?}",
                lines[0]
            );
            if format == LineFormat::Json {
                let v: serde_json::Value = serde_json::from_str(&lines[0]).expect("JSON");
                assert_eq!(
                    v["plain"], "x\nforged \u{1b}[2K\u{2028}\r\u{85}\u{200f}",
                    "JSON keeps the value, escaped"
                );
            }
        }
    }
}
