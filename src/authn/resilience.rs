//! Keeping Hydra trouble from becoming our outage, as one authenticator layer:
//!
//! - **deadline**: each check has a budget, `retry_budget_ms` capped by the
//!   gRPC deadline Envoy sent (`grpc-timeout`, minus a 10 % margin so we
//!   answer before Envoy gives up). Nothing waits past it.
//! - **retries** (backon: exponential backoff with jitter) only for failures
//!   that are safe to repeat: connection refused, 429, 502, 503, 504; a
//!   `Retry-After` is honoured when it fits in the budget, else we stop.
//! - **circuit breaker**: after `breaker_failures` consecutive failures,
//!   checks are denied at once (503) for `breaker_cooldown_ms`; then one
//!   probe decides whether to close it again.
//! - **bounded concurrency**: at most `max_concurrent` calls to Hydra, at
//!   most `max_waiting` checks queued for a slot; beyond that, or when the
//!   budget runs out while queued, the check is shed with 503.
//!
//! Every failure here is a 503: fail closed, never allow.

use super::{Authenticator, AuthnError, Identity};
use crate::config::ResilienceConfig;
use crate::decision::token::Token;
use crate::metrics::Metrics;
use backon::{ExponentialBuilder, Retryable};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

tokio::task_local! {
    /// The current check's deadline, set by the gRPC service from `grpc-timeout`.
    pub static ENVOY_DEADLINE: Instant;
}

/// Parse a gRPC `grpc-timeout` header value (`100m`, `1S`, `250000u`, ...).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[derive(Debug, Default)]
struct BreakerState {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

/// Consecutive-failure circuit breaker with a single half-open probe.
struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<BreakerState>,
}

enum Admission {
    Closed,
    Probe,
    Rejected,
}

impl Breaker {
    fn admit(&self) -> Admission {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match s.open_until {
            None => Admission::Closed,
            Some(until) if Instant::now() < until || s.probing => Admission::Rejected,
            Some(_) => {
                s.probing = true;
                Admission::Probe
            }
        }
    }

    /// Open (or probing) right now, without taking the probe.
    fn is_open(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .open_until
            .is_some()
    }

    /// Returns `Some(open)` when the state changed.
    fn record(&self, success: bool) -> Option<bool> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let was_open = s.open_until.is_some();
        s.probing = false;
        if success {
            s.consecutive_failures = 0;
            s.open_until = None;
        } else {
            s.consecutive_failures = s.consecutive_failures.saturating_add(1);
            if was_open || s.consecutive_failures >= self.threshold {
                s.open_until = Some(Instant::now() + self.cooldown);
            }
        }
        let open = s.open_until.is_some();
        (open != was_open).then_some(open)
    }
}

pub struct Resilient<A> {
    inner: A,
    budget: Duration,
    max_retries: usize,
    breaker: Breaker,
    slots: Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
    metrics: Arc<Metrics>,
}

impl<A> Resilient<A> {
    pub fn new(inner: A, cfg: &ResilienceConfig, metrics: Arc<Metrics>) -> Self {
        Resilient {
            inner,
            budget: Duration::from_millis(cfg.retry_budget_ms),
            max_retries: cfg.max_retries,
            breaker: Breaker {
                threshold: cfg.breaker_failures,
                cooldown: Duration::from_millis(cfg.breaker_cooldown_ms),
                state: Mutex::new(BreakerState::default()),
            },
            slots: Semaphore::new(cfg.max_concurrent),
            waiting: AtomicUsize::new(0),
            max_waiting: cfg.max_waiting,
            metrics,
        }
    }

    fn deadline(&self) -> Instant {
        let own = Instant::now() + self.budget;
        ENVOY_DEADLINE.try_with(|d| (*d).min(own)).unwrap_or(own)
    }

    fn shed(&self, kind: &'static str, detail: &str) -> AuthnError {
        self.metrics
            .introspection_errors
            .get_or_create(&crate::metrics::KindLabels { kind })
            .inc();
        AuthnError::unavailable(kind, detail)
    }
}

impl<A: Authenticator> Authenticator for Resilient<A> {
    async fn authenticate(&self, token: &Token) -> Result<Arc<Identity>, AuthnError> {
        let deadline = self.deadline();
        let probe = match self.breaker.admit() {
            Admission::Rejected => return Err(self.shed("circuit_open", "introspection circuit is open")),
            Admission::Probe => true,
            Admission::Closed => false,
        };

        // Queue for a slot, bounded in length and by the deadline.
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            if probe {
                self.breaker.record(false);
            }
            return Err(self.shed("overloaded", "too many checks waiting for the introspection endpoint"));
        }
        let permit = tokio::time::timeout_at(deadline, self.slots.acquire()).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let Ok(Ok(_permit)) = permit else {
            if probe {
                self.breaker.record(false);
            }
            return Err(self.shed("overloaded", "no introspection slot before the deadline"));
        };

        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(10))
            .with_max_delay(Duration::from_millis(200))
            .with_max_times(self.max_retries)
            .with_jitter();
        let attempt = || self.inner.authenticate(token);
        let retried = attempt
            .retry(backoff)
            .when(|e| matches!(e, AuthnError::Unavailable { retryable: true, .. }))
            .adjust(|e, backoff| {
                let wait = match e {
                    AuthnError::Unavailable {
                        retry_after: Some(ra), ..
                    } => Some(*ra),
                    _ => backoff,
                }?;
                // Never sleep past the deadline: give up and answer now instead.
                (Instant::now() + wait < deadline).then_some(wait)
            })
            .notify(|_, _| {
                self.metrics.introspection_retries.inc();
            });
        let result = match tokio::time::timeout_at(deadline, retried).await {
            Ok(r) => r,
            Err(_) => Err(self.shed("deadline", "the check's deadline passed")),
        };

        let healthy = !matches!(result, Err(AuthnError::Unavailable { .. }));
        if let Some(open) = self.breaker.record(healthy) {
            self.metrics.circuit_open.set(i64::from(open));
            if open {
                tracing::warn!("introspection circuit opened: denying with 503 until a probe succeeds");
            } else {
                tracing::info!("introspection circuit closed");
            }
        }
        result
    }

    /// One attempt within the budget; an open circuit answers as it would
    /// for a check. No retries, no slot, nothing recorded.
    async fn authenticate_dry(&self, token: &Token) -> Result<Arc<Identity>, AuthnError> {
        if self.breaker.is_open() {
            return Err(AuthnError::unavailable("circuit_open", "introspection circuit is open"));
        }
        match tokio::time::timeout_at(self.deadline(), self.inner.authenticate_dry(token)).await {
            Ok(r) => r,
            Err(_) => Err(AuthnError::unavailable("deadline", "the check's deadline passed")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("250000u"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "m", "10x", "-1m", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_opens_probes_and_closes() {
        let b = Breaker {
            threshold: 3,
            cooldown: Duration::from_secs(5),
            state: Mutex::new(BreakerState::default()),
        };
        assert!(matches!(b.admit(), Admission::Closed));
        assert_eq!(b.record(false), None);
        assert_eq!(b.record(false), None);
        assert_eq!(b.record(false), Some(true), "third failure opens");
        assert!(matches!(b.admit(), Admission::Rejected));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(matches!(b.admit(), Admission::Probe), "one probe after the cool-down");
        assert!(matches!(b.admit(), Admission::Rejected), "only one probe at a time");
        assert_eq!(b.record(false), None, "failed probe: stays open");
        assert!(matches!(b.admit(), Admission::Rejected));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(matches!(b.admit(), Admission::Probe));
        assert_eq!(b.record(true), Some(false), "successful probe closes");
        assert!(matches!(b.admit(), Admission::Closed));
    }
}

#[cfg(test)]
mod retry_tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    struct FailTwice(AtomicU32);

    impl Authenticator for FailTwice {
        async fn authenticate(&self, _t: &Token) -> Result<Arc<Identity>, AuthnError> {
            if self.0.fetch_add(1, Ordering::SeqCst) < 2 {
                return Err(AuthnError::Unavailable {
                    kind: "status",
                    detail: "502".into(),
                    retryable: true,
                    retry_after: None,
                });
            }
            Ok(Arc::new(Identity::default()))
        }
    }

    #[tokio::test]
    async fn retries_retryable_failures() {
        let r = Resilient::new(
            FailTwice(AtomicU32::new(0)),
            &ResilienceConfig::default(),
            Arc::new(Metrics::new()),
        );
        let out = r.authenticate(&Token::new("t")).await;
        assert!(out.is_ok(), "{out:?}");
        assert_eq!(r.inner.0.load(Ordering::SeqCst), 3);
    }
}
