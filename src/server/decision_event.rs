//! One decision event per check, whichever front door it came through: the
//! span (a child of the caller's trace), its attributes, the decision's log
//! line and the decision metrics, computed once and emitted from here.

use crate::decision::verdict::{Decision, DenyReason};
use crate::decision::Outcome;
use crate::extract::AuthzRequest;
use crate::metrics::Metrics;
use crate::telemetry::{capped, DirectLines, Escaped};
use std::time::{Duration, Instant};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Which front door asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// Envoy's gRPC `Check`.
    Grpc,
    /// An HTTP forward-auth call (nginx, Caddy, Traefik, Envoy http_service).
    Http,
}

impl Front {
    pub fn label(self) -> &'static str {
        match self {
            Front::Grpc => "grpc",
            Front::Http => "http",
        }
    }
}

/// The span of one check; none at all when nothing consumes spans (no
/// trace export), so the hot path pays nothing for it.
pub fn span(front: Front) -> tracing::Span {
    if !crate::telemetry::spans_enabled() {
        return tracing::Span::none();
    }
    match front {
        Front::Grpc => tracing::info_span!("envoy.service.auth.v3.Authorization/Check", otel.kind = "server"),
        Front::Http => tracing::info_span!("forward-auth", otel.kind = "server"),
    }
}

/// Span attributes, the log line and the metrics of one decision.
pub fn record(
    span: &tracing::Span,
    front: Front,
    req: &AuthzRequest,
    o: &Outcome,
    started: Instant,
    metrics: &Metrics,
) {
    let (decision, status, reason) = summary(o);
    if !span.is_disabled() {
        annotate(span, front, req, o, status, reason);
    }
    // One clock read for the line and the histogram: both are the
    // decision's latency, not including the writing of either.
    let latency = started.elapsed();
    span.in_scope(|| log_decision(crate::telemetry::direct_lines(), front, req, o, latency));
    metrics.observe_decision(decision, reason, latency);
}

/// Decided on an identity verified earlier, during an issuer outage.
fn served_stale(o: &Outcome) -> bool {
    o.identity.as_ref().is_some_and(|i| i.served_stale)
}

fn summary(o: &Outcome) -> (&'static str, u16, &'static str) {
    match &o.decision {
        Decision::Allow => (crate::metrics::ALLOWED.decision, 200, crate::metrics::ALLOWED.reason),
        Decision::Deny(r) => ("deny", r.http_status(), r.label()),
    }
}

/// Span attributes (OpenTelemetry only; the log line carries its own fields).
fn annotate(span: &tracing::Span, front: Front, req: &AuthzRequest, o: &Outcome, status: u16, reason: &'static str) {
    if front == Front::Grpc {
        span.set_attribute("rpc.system", "grpc");
        span.set_attribute("rpc.service", "envoy.service.auth.v3.Authorization");
        span.set_attribute("rpc.method", "Check");
    }
    span.set_attribute("hydra_authz.front", front.label());
    span.set_attribute("http.request.method", req.method.clone());
    span.set_attribute("url.path", req.path.clone());
    span.set_attribute("hydra_authz.decision", if o.is_allowed() { "allow" } else { "deny" });
    span.set_attribute("hydra_authz.reason", reason);
    span.set_attribute("http.response.status_code", i64::from(status));
    if let Some(rule) = &o.rule_id {
        span.set_attribute("hydra_authz.rule_id", rule.to_string());
    }
    if let Some(client) = o.identity.as_ref().and_then(|i| i.client_id.clone()) {
        span.set_attribute("hydra_authz.client_id", client);
    }
    if !o.required_scopes.is_empty() {
        span.set_attribute("hydra_authz.scopes.required", o.required_scopes.join(" "));
    }
    let scope_check = match (&o.decision, &o.identity) {
        (Decision::Deny(DenyReason::InsufficientScope(_)), _) => "insufficient",
        (Decision::Allow, Some(_)) => "granted",
        _ => "not_checked",
    };
    span.set_attribute("hydra_authz.scopes.result", scope_check);
    if served_stale(o) {
        span.set_attribute("hydra_authz.stale", true);
    }
    // hydra_authz.cache.hit is set by the cache layer when a token is verified.
}

/// The one line per decision. Fields only; the token appears as its
/// fingerprint; `stale=true` marks an allow by stale-if-error; `detail`
/// (our prose, which may quote the issuer) is a quoted string. A check we
/// could not decide (5xx) is logged at WARN, with why, so Hydra trouble
/// stands out without a second line; except while the circuit is open or
/// checks are shed: the breaker and the shedder log their own state
/// changes, and a WARN per check would flood a log kept at `warn` during an
/// outage.
///
/// The line goes straight to the log queue when the log layer is the only
/// consumer of events ([`crate::telemetry::direct_lines`]): the same line,
/// about 4,000 fewer instructions per check than building the event and
/// visiting its fields. With trace export on it stays an event, which the
/// OpenTelemetry layer attaches to the check's span.
fn log_decision(direct: Option<&DirectLines>, front: Front, req: &AuthzRequest, o: &Outcome, latency: Duration) {
    use crate::telemetry::FieldValue::{Bool, Escaped as Shown, Str, U64};
    use tracing::Level;
    let (decision, status, reason) = summary(o);
    let announced = matches!(
        &o.decision,
        Decision::Deny(DenyReason::Unavailable(kind)) if kind.is_announced()
    );
    let warn = status >= 500 && !announced;
    if let Some(direct) = direct {
        // Asked as the event itself would be (an event with these field
        // names), so a directive naming fields (`[{header}]`, which another
        // line of this target has) matches the line exactly when it would
        // match the event.
        macro_rules! enabled {
            ($level:expr) => {
                tracing::enabled!(
                    kind: tracing::metadata::Kind::EVENT,
                    target: DECISION_TARGET,
                    $level,
                    {
                        message, decision, front, status, reason, detail, rule_id, client_id,
                        method, host, path, latency_us, token_fp, stale
                    }
                )
            };
        }
        // Asked first: at `warn` most lines are filtered out, and building
        // one that nobody writes is most of its cost.
        let level = match warn {
            true if enabled!(Level::WARN) => Level::WARN,
            false if enabled!(Level::INFO) => Level::INFO,
            _ => return,
        };
        let built = LineFields::of(o, latency);
        // The same fields, in the same order and of the same kinds, as the event below.
        let fields = [
            ("decision", Str(decision)),
            ("front", Str(front.label())),
            ("status", U64(status.into())),
            ("reason", Str(reason)),
            ("detail", Str(&built.detail)),
            ("rule_id", Shown(built.rule_id)),
            ("client_id", Shown(built.client_id)),
            ("method", Shown(&req.method)),
            ("host", Shown(&req.host)),
            ("path", Shown(&req.path)),
            ("latency_us", U64(built.latency_us)),
            ("token_fp", Str(built.token_fp)),
            ("stale", Bool(built.stale)),
        ];
        direct.write(level, DECISION_TARGET, "decision", &fields);
        return;
    }
    let LineFields {
        detail,
        rule_id,
        client_id,
        latency_us,
        token_fp,
        stale,
    } = LineFields::of(o, latency);
    macro_rules! line {
        ($level:expr) => {
            tracing::event!(
                target: DECISION_TARGET,
                $level,
                decision,
                front = front.label(),
                status,
                reason,
                detail = &*detail,
                rule_id = %Escaped(rule_id),
                client_id = %Escaped(client_id),
                method = %Escaped(&req.method),
                host = %Escaped(&req.host),
                path = %Escaped(&req.path),
                latency_us,
                token_fp,
                stale,
                "decision"
            )
        };
    }
    if warn {
        line!(Level::WARN);
    } else {
        line!(Level::INFO);
    }
}

/// The fields of a decision line that take work to build.
struct LineFields<'a> {
    detail: String,
    rule_id: &'a str,
    client_id: &'a str,
    latency_us: u64,
    token_fp: &'a str,
    stale: bool,
}

impl<'a> LineFields<'a> {
    fn of(o: &'a Outcome, latency: Duration) -> LineFields<'a> {
        let detail = match &o.decision {
            Decision::Allow => String::new(),
            Decision::Deny(r) => match &o.failure {
                Some(why) => format!("{}: {why}", r.detail()),
                None => r.detail(),
            },
        };
        LineFields {
            detail: capped(detail),
            rule_id: o.rule_id.as_deref().unwrap_or("-"),
            client_id: o.identity.as_ref().and_then(|i| i.client_id.as_deref()).unwrap_or("-"),
            latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            token_fp: o.token_fp(),
            stale: served_stale(o),
        }
    }
}

/// The decision line's target: `RUST_LOG=hydra_authz::decision=warn` keeps
/// the other INFO lines and drops the decision lines.
const DECISION_TARGET: &str = "hydra_authz::decision";

#[cfg(test)]
mod tests {
    use super::{log_decision, Front};
    use crate::authn::{FailureKind, Identity};
    use crate::config::LogFormat;
    use crate::decision::verdict::{Decision, DenyReason};
    use crate::decision::Outcome;
    use crate::extract::AuthzRequest;
    use crate::telemetry::{DirectLines, LogWriter, TestSink};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tracing_subscriber::layer::SubscriberExt;

    /// An allow, a deny for scope with an outsider's bytes in every field
    /// they reach, and a WARN (a 503 with why).
    fn decisions() -> Vec<(AuthzRequest, Outcome)> {
        let req = |method: &str, host: &str, path: &str| AuthzRequest {
            method: method.into(),
            host: host.into(),
            path: path.into(),
            ..Default::default()
        };
        let who = |client: &str| {
            Some(Arc::new(Identity {
                client_id: Some(client.into()),
                ..Default::default()
            }))
        };
        let allow = Outcome {
            decision: Decision::Allow,
            rule_id: Some("read-date".into()),
            identity: who("reader"),
            token_fingerprint: Some(crate::extract::credential::fingerprint("reader's token")),
            ..Outcome::new()
        };
        let scope = Outcome {
            decision: Decision::Deny(DenyReason::InsufficientScope(vec!["post_echo".into()])),
            rule_id: Some("rule \"x\"\n\u{1b}[2K".into()),
            identity: who("evil client_id=admin\u{2028}ü"),
            token_fingerprint: Some(crate::extract::credential::fingerprint("evil's token")),
            ..Outcome::new()
        };
        let unavailable = Outcome {
            decision: Decision::Deny(DenyReason::Unavailable(FailureKind::Status)),
            failure: Some("issuer said \"no\"\r\nforged=1".into()),
            ..Outcome::new()
        };
        vec![
            (req("GET", "api.example", "/date"), allow),
            (req("POST", "h\\ost", "/echo/%0a x"), scope),
            (req("GET", "api.example", "/date"), unavailable),
        ]
    }

    /// The line queued directly is the line the log layer writes for the
    /// event, byte for byte but the time, in both formats, with and without
    /// colours, at INFO and at WARN.
    #[test]
    fn a_direct_decision_line_is_the_events_line() {
        let latency = Duration::from_micros(1234);
        for format in [LogFormat::Pretty, LogFormat::Json] {
            for ansi in [false, true] {
                let through_event = TestSink::default();
                let direct_out = TestSink::default();
                let (writer, guard) = LogWriter::new(direct_out.clone(), 64).expect("writer");
                let direct = DirectLines::new(format, ansi, writer);
                let subscriber = tracing_subscriber::registry().with(crate::telemetry::log_layer(
                    format,
                    Mutex::new(through_event.clone()),
                    ansi,
                ));
                tracing::subscriber::with_default(subscriber, || {
                    for (req, o) in &decisions() {
                        log_decision(None, Front::Grpc, req, o, latency);
                        log_decision(Some(&direct), Front::Grpc, req, o, latency);
                    }
                });
                drop(guard);
                let theirs = through_event.lines();
                let ours = direct_out.lines();
                assert_eq!(theirs.len(), 3, "{theirs:#?}");
                assert_eq!(ours.len(), theirs.len(), "{ours:#?}");
                for (o, t) in ours.iter().zip(&theirs) {
                    assert!(
                        o.contains("latency_us=1234") || o.contains("\"latency_us\":1234"),
                        "the latency is written: {o}"
                    );
                    assert_eq!(
                        crate::telemetry::timestamp_removed(o),
                        crate::telemetry::timestamp_removed(t),
                        "{format:?} ansi={ansi}"
                    );
                }
                assert!(ours[2].contains("WARN"), "{}", ours[2]);
                assert!(
                    ours.iter().all(|l| !l.contains('\r') && !l.contains('\u{2028}')),
                    "{ours:#?}"
                );
            }
        }
    }

    /// `RUST_LOG=hydra_authz::decision=off` (or `log.level = "warn"`)
    /// drops direct lines as it drops the events; a directive naming a
    /// field the decision event does not have (`[{header}]`: the "identity
    /// header removed" WARN of the same target) leaves them alone, and one
    /// naming a field it has applies to them.
    #[test]
    fn direct_decision_lines_obey_the_filter() {
        for (directive, lines) in [
            ("info,hydra_authz::decision=off", 0),
            ("warn", 1),
            ("info", 3),
            ("info,hydra_authz::decision[{header}]=off", 3),
            ("info,[{error}]=warn", 3),
            ("info,hydra_authz::decision[{token_fp}]=warn", 1),
        ] {
            let out = TestSink::default();
            let (writer, guard) = LogWriter::new(out.clone(), 64).expect("writer");
            let direct = DirectLines::new(LogFormat::Pretty, false, writer);
            let filter = tracing_subscriber::EnvFilter::try_new(directive).expect("filter");
            // As `telemetry::init` installs it without trace export.
            let subscriber = tracing_subscriber::registry()
                .with(filter)
                .with(crate::telemetry::log_layer(
                    LogFormat::Pretty,
                    Mutex::new(TestSink::default()),
                    false,
                ));
            tracing::subscriber::with_default(subscriber, || {
                for (req, o) in &decisions() {
                    log_decision(Some(&direct), Front::Http, req, o, Duration::ZERO);
                }
            });
            // Every queued line written.
            drop(guard);
            assert_eq!(out.lines().len(), lines, "{directive}: {:#?}", out.lines());
        }
    }
}
