//! Prometheus metrics, served as OpenMetrics text at `GET /metrics` on the
//! HTTP listener. One registry per server (no globals), so tests and several
//! servers in one process do not share counters.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub decision: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// The labels of an allow (see `server::decision_event`).
pub const ALLOWED: DecisionLabels = DecisionLabels {
    decision: "allow",
    reason: "allowed",
};

pub struct Metrics {
    registry: Registry,
    pub decisions: Family<DecisionLabels, Counter>,
    /// `decisions{ALLOWED}`, looked up once: the most frequent series skips
    /// the family's lock and hash on every check.
    allowed: Counter,
    pub check_duration: Histogram,
    pub introspection_duration: Histogram,
    pub introspection_errors: Family<KindLabels, Counter>,
    pub checks_in_flight: Gauge,
    pub config_reloads: Family<ResultLabels, Counter>,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub cache_entries: Gauge,
    pub introspection_retries: Counter,
    pub circuit_open: Gauge,
    /// Decision and other log lines the non-blocking writer dropped because
    /// the output could not keep up (see `telemetry`); synced at scrape time.
    pub log_lines_dropped: Counter,
    log_lines_seen: std::sync::Mutex<u64>,
    /// Allows of identities verified earlier, during an issuer outage.
    pub stale_allows: Counter,
    /// Check and health streams refused with RESOURCE_EXHAUSTED before a
    /// decision, by why (`server::body_budget`): each is a check that
    /// failed closed without a decision line.
    pub request_bodies_refused: Family<KindLabels, Counter>,
    pub fleet: FleetMetrics,
}

/// The `[cluster]` metrics (all zero without it).
pub struct FleetMetrics {
    /// 1 while the purge subscription is up (the cache is served from).
    pub subscribed: Gauge,
    pub resubscribes: Counter,
    pub purges_received: Counter,
    /// Purge messages that could not be read: each empties the whole cache.
    pub purges_unreadable: Counter,
    pub purges_published: Counter,
    /// 1 while shared (L2) reads are suspended (a purge could not start an
    /// epoch; see `fleet::Fleet::publish`).
    pub shared_reads_suspended: Gauge,
    /// Failed or timed-out Redis commands, by command.
    pub redis_errors: Family<KindLabels, Counter>,
    /// Shared (L2) cache lookups and writes by result.
    pub shared_cache: Family<ResultLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("hydra_authz");
        let decisions = Family::<DecisionLabels, Counter>::default();
        let allowed = decisions.get_or_create(&ALLOWED).clone();
        registry.register("decisions", "Check decisions by outcome and reason", decisions.clone());
        // 50 µs .. ~1.6 s: cached decisions sit at the bottom, slow Hydra calls at the top.
        let check_duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "check_duration_seconds",
            "Time to answer one Check",
            check_duration.clone(),
        );
        let introspection_duration = Histogram::new(exponential_buckets(0.000_1, 2.0, 15));
        registry.register(
            "introspection_duration_seconds",
            "Time of one token verification at the introspection endpoint",
            introspection_duration.clone(),
        );
        let introspection_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "introspection_errors",
            "Introspection calls that could not decide, by kind (timeout, connect, status, parse, ...)",
            introspection_errors.clone(),
        );
        let checks_in_flight = Gauge::default();
        registry.register(
            "checks_in_flight",
            "Checks being decided right now",
            checks_in_flight.clone(),
        );
        let config_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads by result",
            config_reloads.clone(),
        );
        let cache_hits = Counter::default();
        registry.register(
            "cache_hits",
            "Verifications answered from the cache or by joining an in-flight introspection",
            cache_hits.clone(),
        );
        let cache_misses = Counter::default();
        registry.register(
            "cache_misses",
            "Verifications that called the introspection endpoint",
            cache_misses.clone(),
        );
        let cache_entries = Gauge::default();
        registry.register(
            "cache_entries",
            "Verification results held in the cache",
            cache_entries.clone(),
        );
        let introspection_retries = Counter::default();
        registry.register(
            "introspection_retries",
            "Introspection attempts repeated after a retryable failure",
            introspection_retries.clone(),
        );
        let circuit_open = Gauge::default();
        registry.register(
            "circuit_open",
            "1 while the introspection circuit breaker is open",
            circuit_open.clone(),
        );
        let log_lines_dropped = Counter::default();
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because the log output could not keep up",
            log_lines_dropped.clone(),
        );
        let stale_allows = Counter::default();
        registry.register(
            "stale_allows",
            "Checks allowed on an identity verified earlier while the issuer was unreachable (stale_if_error_ms)",
            stale_allows.clone(),
        );
        let request_bodies_refused = Family::<KindLabels, Counter>::default();
        registry.register(
            "request_bodies_refused",
            "Check and gRPC health streams refused (RESOURCE_EXHAUSTED) before any decision: kind=budget when \
             the listener's unfinished request bodies were over their budget, kind=too_large for a body longer \
             than one message",
            request_bodies_refused.clone(),
        );
        let fleet = FleetMetrics::register(registry.sub_registry_with_prefix("cluster"));
        registry.register(
            "build",
            "Build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Metrics {
            registry,
            allowed,
            decisions,
            check_duration,
            introspection_duration,
            introspection_errors,
            checks_in_flight,
            config_reloads,
            cache_hits,
            cache_misses,
            cache_entries,
            introspection_retries,
            circuit_open,
            log_lines_dropped,
            log_lines_seen: std::sync::Mutex::new(0),
            stale_allows,
            request_bodies_refused,
            fleet,
        }
    }

    /// Bring `log_lines_dropped` up to the writer's running `total`.
    pub fn sync_log_lines_dropped(&self, total: u64) {
        let mut seen = self
            .log_lines_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if total > *seen {
            self.log_lines_dropped.inc_by(total - *seen);
            *seen = total;
        }
    }

    /// OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }

    pub fn observe_decision(&self, decision: &'static str, reason: &'static str, took: Duration) {
        if decision == ALLOWED.decision && reason == ALLOWED.reason {
            self.allowed.inc();
        } else {
            self.decisions.get_or_create(&DecisionLabels { decision, reason }).inc();
        }
        self.check_duration.observe(took.as_secs_f64());
    }

    /// Counts a check as in flight until the guard is dropped (also on cancellation).
    pub fn in_flight(&self) -> InFlight<'_> {
        self.checks_in_flight.inc();
        InFlight(&self.checks_in_flight)
    }
}

impl FleetMetrics {
    fn register(registry: &mut Registry) -> FleetMetrics {
        let m = FleetMetrics {
            subscribed: Gauge::default(),
            resubscribes: Counter::default(),
            purges_received: Counter::default(),
            purges_unreadable: Counter::default(),
            purges_published: Counter::default(),
            shared_reads_suspended: Gauge::default(),
            redis_errors: Family::default(),
            shared_cache: Family::default(),
        };
        registry.register(
            "subscribed",
            "1 while the purge subscription is up; 0: the cache is bypassed",
            m.subscribed.clone(),
        );
        registry.register(
            "resubscribes",
            "Purge subscriptions (re)established, each followed by a cache flush",
            m.resubscribes.clone(),
        );
        registry.register(
            "purges_received",
            "Purge messages received from the fleet",
            m.purges_received.clone(),
        );
        registry.register(
            "purges_unreadable",
            "Purge messages that could not be read (each empties the cache)",
            m.purges_unreadable.clone(),
        );
        registry.register(
            "purges_published",
            "Purges sent to the fleet",
            m.purges_published.clone(),
        );
        registry.register(
            "shared_reads_suspended",
            "1 while shared (L2) cache reads are suspended after a purge that could not start an epoch",
            m.shared_reads_suspended.clone(),
        );
        registry.register(
            "redis_errors",
            "Redis commands that failed or timed out, by command",
            m.redis_errors.clone(),
        );
        registry.register(
            "shared_cache",
            "Shared (L2) cache lookups and writes by result",
            m.shared_cache.clone(),
        );
        m
    }

    pub fn redis_error(&self, command: &'static str) {
        self.redis_errors.get_or_create(&KindLabels { kind: command }).inc();
    }

    pub fn shared(&self, result: &'static str) {
        self.shared_cache.get_or_create(&ResultLabels { result }).inc();
    }
}

pub struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decisions_line(m: &Metrics, reason: &str) -> Option<String> {
        m.encode()
            .lines()
            .find(|l| l.starts_with("hydra_authz_decisions_total{") && l.contains(&format!("reason=\"{reason}\"")))
            .map(str::to_owned)
    }

    /// The allow series, counted through its own handle, is the family's
    /// series: one line, shown from the start, counting every allow.
    #[test]
    fn allows_and_denies_count_in_one_family() {
        let m = Metrics::new();
        assert_eq!(
            decisions_line(&m, "allowed").as_deref(),
            Some("hydra_authz_decisions_total{decision=\"allow\",reason=\"allowed\"} 0")
        );
        for _ in 0..3 {
            m.observe_decision("allow", "allowed", Duration::from_micros(10));
        }
        m.observe_decision("deny", "missing_token", Duration::from_micros(10));
        assert_eq!(
            decisions_line(&m, "allowed").as_deref(),
            Some("hydra_authz_decisions_total{decision=\"allow\",reason=\"allowed\"} 3")
        );
        assert_eq!(
            decisions_line(&m, "missing_token").as_deref(),
            Some("hydra_authz_decisions_total{decision=\"deny\",reason=\"missing_token\"} 1")
        );
        let allow_lines = m.encode().matches("decision=\"allow\"").count();
        assert_eq!(allow_lines, 1, "one allow series, not two");
    }
}
