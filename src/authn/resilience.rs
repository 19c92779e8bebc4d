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

use super::{Authenticator, AuthnError, FailureKind, Identity, ScrapedGauges};
use crate::authn::config::ResilienceConfig;
use crate::extract::credential::Token;
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

/// gRPC's `TimeoutValue` is at most 8 digits (PROTOCOL-HTTP2.md).
const GRPC_TIMEOUT_MAX_DIGITS: usize = 8;

/// Parse a gRPC `grpc-timeout` header value (`100m`, `1S`, `250000u`, ...).
/// Anything else, including more than 8 digits, is `None` (no deadline from
/// the caller: our own budget applies), never a panic or an overflow.
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    // ASCII only, so the unit is one byte and the split below is on a char
    // boundary (found by the fuzzer: "ڳԵ" panicked in split_at).
    if !v.is_ascii() {
        return None;
    }
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > GRPC_TIMEOUT_MAX_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
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

/// The instant by which a check with this `grpc-timeout` must be answered:
/// 90 % of it, so we answer before the caller gives up. `None` when the
/// value is absent or unreadable, or too far away to represent.
pub fn caller_deadline(grpc_timeout: Option<&str>) -> Option<Instant> {
    let t = parse_grpc_timeout(grpc_timeout?)?;
    Instant::now().checked_add(t - t / 10)
}

#[derive(Debug, Default)]
struct BreakerState {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    /// Since when a half-open probe is out, if one is.
    probing_since: Option<Instant>,
}

/// Consecutive-failure circuit breaker with a single half-open probe.
struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<BreakerState>,
}

enum Admission<'a> {
    Closed,
    /// This check is the half-open probe; the ticket gives the probe back
    /// if the check ends without a verdict about the issuer.
    Probe(ProbeTicket<'a>),
    Rejected,
}

/// The half-open probe, owned. Settled with the issuer's verdict, or dropped
/// (the check was cancelled at an await, shed, or ran out of the caller's
/// deadline): then the probe is free again for the next check. Without
/// this, a probe cancelled mid-flight left the breaker open for good.
struct ProbeTicket<'a> {
    breaker: &'a Breaker,
}

impl Drop for ProbeTicket<'_> {
    fn drop(&mut self) {
        self.breaker.lock().probing_since = None;
    }
}

/// What a breaker is doing, for readiness detail and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerView {
    Closed,
    Open,
    /// Open, and a probe is out since this long.
    Probing(Duration),
}

impl Breaker {
    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn admit(&self) -> Admission<'_> {
        let mut s = self.lock();
        match s.open_until {
            None => Admission::Closed,
            Some(until) if Instant::now() < until || s.probing_since.is_some() => Admission::Rejected,
            Some(_) => {
                s.probing_since = Some(Instant::now());
                Admission::Probe(ProbeTicket { breaker: self })
            }
        }
    }

    /// Open (or probing) right now, without taking the probe.
    fn is_open(&self) -> bool {
        self.lock().open_until.is_some()
    }

    fn view(&self) -> BreakerView {
        let s = self.lock();
        match (s.open_until, s.probing_since) {
            (None, _) => BreakerView::Closed,
            (Some(_), None) => BreakerView::Open,
            (Some(_), Some(since)) => BreakerView::Probing(since.elapsed()),
        }
    }

    /// The issuer's verdict on one call. Returns `Some(open)` when the state
    /// changed. A probe's ticket is consumed: the probe is over.
    fn record(&self, success: bool, probe: Option<ProbeTicket<'_>>) -> Option<bool> {
        let mut s = self.lock();
        let was_open = s.open_until.is_some();
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
        // Unlock before `probe` drops: its drop takes the lock to free the probe.
        drop(s);
        drop(probe);
        (open != was_open).then_some(open)
    }
}

/// A place in the queue for an introspection slot, released on drop (also
/// when the check is cancelled while queued).
struct QueuePlace<'a>(&'a AtomicUsize);

impl<'a> QueuePlace<'a> {
    /// `None` when `max` checks are already waiting.
    fn take(waiting: &'a AtomicUsize, max: usize) -> Option<QueuePlace<'a>> {
        waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| QueuePlace(waiting))
    }
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An introspection slot, and whether the check had to queue for it.
struct Slot<'a> {
    _permit: tokio::sync::SemaphorePermit<'a>,
    /// Time spent queued came out of the check's budget: running out of it
    /// afterwards is our load, not the issuer's slowness.
    queued: bool,
}

/// The layer's shared bookkeeping at one instant: what readiness shows and
/// what the cancellation tests check returns to rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResilienceState {
    pub breaker: BreakerView,
    /// Checks queued for an introspection slot.
    pub waiting: usize,
    /// Introspection slots in use.
    pub in_use: usize,
}

pub struct Resilient<A> {
    inner: A,
    budget: Duration,
    max_retries: usize,
    breaker: Breaker,
    slots: Semaphore,
    max_concurrent: usize,
    waiting: AtomicUsize,
    max_waiting: usize,
    metrics: Arc<Metrics>,
}

/// Which deadline governs a check.
#[derive(Clone, Copy)]
struct Deadline {
    at: Instant,
    /// The caller's deadline is the earlier one: running out of it is the
    /// caller's choice, not the issuer's failure.
    callers: bool,
}

impl Deadline {
    fn expired(&self) -> AuthnError {
        if self.callers {
            AuthnError::unavailable(FailureKind::CallerDeadline, "the caller's deadline passed")
        } else {
            AuthnError::unavailable(FailureKind::Deadline, "the check's deadline passed")
        }
    }
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
            max_concurrent: cfg.max_concurrent,
            waiting: AtomicUsize::new(0),
            max_waiting: cfg.max_waiting,
            metrics,
        }
    }

    pub fn inner(&self) -> &A {
        &self.inner
    }

    /// The shared bookkeeping right now.
    pub fn state(&self) -> ResilienceState {
        ResilienceState {
            breaker: self.breaker.view(),
            waiting: self.waiting.load(Ordering::SeqCst),
            in_use: self.max_concurrent.saturating_sub(self.slots.available_permits()),
        }
    }

    /// Simulates the defect readiness guards against (a probe that is never
    /// given back), which the ownership of [`ProbeTicket`] rules out.
    #[cfg(test)]
    pub(crate) fn leak_a_probe(&self) {
        let mut s = self.breaker.lock();
        s.open_until = Some(Instant::now());
        s.probing_since = Some(Instant::now());
    }

    /// The longest a half-open probe can legitimately be out: one budget.
    /// Longer means the bookkeeping is stuck, which readiness reports.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    fn deadline(&self) -> Deadline {
        let own = Instant::now() + self.budget;
        match ENVOY_DEADLINE.try_with(|d| *d) {
            Ok(callers) if callers < own => Deadline {
                at: callers,
                callers: true,
            },
            _ => Deadline {
                at: own,
                callers: false,
            },
        }
    }

    fn shed(&self, kind: FailureKind, detail: &str) -> AuthnError {
        self.metrics
            .introspection_errors
            .get_or_create(&crate::metrics::KindLabels { kind: kind.label() })
            .inc();
        AuthnError::unavailable(kind, detail)
    }

    /// A slot when the check asks the issuer; none for a local one.
    async fn issuer_slot(&self, asks_issuer: bool, deadline: Deadline) -> Result<Option<Slot<'_>>, AuthnError> {
        match asks_issuer {
            true => self.slot(deadline).await.map(Some),
            false => Ok(None),
        }
    }

    /// Wait for an introspection slot, bounded in queue length and by the
    /// deadline. Everything taken here is released by drop, so a check
    /// cancelled while queued leaves nothing behind.
    async fn slot(&self, deadline: Deadline) -> Result<Slot<'_>, AuthnError> {
        if let Ok(permit) = self.slots.try_acquire() {
            return Ok(Slot {
                _permit: permit,
                queued: false,
            });
        }
        let Some(_place) = QueuePlace::take(&self.waiting, self.max_waiting) else {
            return Err(self.shed(
                FailureKind::Overloaded,
                "too many checks waiting for the introspection endpoint",
            ));
        };
        match tokio::time::timeout_at(deadline.at, self.slots.acquire()).await {
            Ok(Ok(permit)) => Ok(Slot {
                _permit: permit,
                queued: true,
            }),
            Ok(Err(_closed)) => Err(self.shed(FailureKind::Overloaded, "the introspection slots are closed")),
            Err(_) if deadline.callers => Err(self.shed(
                FailureKind::CallerDeadline,
                "the caller's deadline passed while waiting for an introspection slot",
            )),
            Err(_) => Err(self.shed(FailureKind::Overloaded, "no introspection slot before the deadline")),
        }
    }
}

impl<A: Authenticator> Authenticator for Resilient<A> {
    async fn authenticate(&self, token: &Token) -> Result<Arc<Identity>, AuthnError> {
        let deadline = self.deadline();
        // A JWT checked here needs neither the breaker nor a slot; it keeps
        // the deadline and the retries (a key set fetch may be slow or fail).
        let asks_issuer = self.inner.asks_issuer(token);
        let probe = match asks_issuer.then(|| self.breaker.admit()) {
            Some(Admission::Rejected) => {
                return Err(self.shed(FailureKind::CircuitOpen, "introspection circuit is open"))
            }
            Some(Admission::Probe(ticket)) => Some(ticket),
            Some(Admission::Closed) | None => None,
        };
        // Shed or out of the caller's time: no verdict on the issuer; a probe
        // ticket is given back by drop.
        let slot = self.issuer_slot(asks_issuer, deadline).await?;

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
                // `max_retries` is a hard limit: `Retry-After` may lengthen a
                // wait the backoff allows (never shorten it to a busy loop),
                // not add one.
                let wait = match e {
                    AuthnError::Unavailable {
                        retry_after: Some(ra), ..
                    } => (*ra).max(backoff?),
                    _ => backoff?,
                };
                // Never sleep past the deadline: give up and answer now instead.
                let until = Instant::now().checked_add(wait)?;
                (until < deadline.at).then_some(wait)
            })
            .notify(|_, _| {
                self.metrics.introspection_retries.inc();
            });
        let result = match tokio::time::timeout_at(deadline.at, retried).await {
            Ok(r) => r,
            Err(_) => {
                let e = if slot.as_ref().is_some_and(|s| s.queued) && !deadline.callers {
                    AuthnError::unavailable(
                        FailureKind::Overloaded,
                        "the check's budget ran out after queueing for an introspection slot",
                    )
                } else {
                    deadline.expired()
                };
                if let AuthnError::Unavailable { kind, .. } = &e {
                    self.metrics
                        .introspection_errors
                        .get_or_create(&crate::metrics::KindLabels { kind: kind.label() })
                        .inc();
                }
                Err(e)
            }
        };

        // Only what the issuer itself answered is a verdict on it: an active
        // or inactive introspection answer, or its failure. A JWT accepted or
        // refused locally never reached it, so it can neither close the
        // circuit (as a probe) nor reset the failure count.
        let verdict = match &result {
            _ if !asks_issuer => None,
            Err(AuthnError::Unavailable { kind, .. }) if !kind.opens_circuit() => None,
            Err(AuthnError::Unavailable { .. }) => Some(false),
            Ok(identity) if identity.verified_locally => None,
            Ok(_) => Some(true),
            Err(AuthnError::Rejected(crate::authn::ClaimFailure::Inactive)) => Some(true),
            Err(AuthnError::Rejected(_)) => None,
        };
        if let Some(healthy) = verdict {
            // The `circuit_open` gauge is published at scrape time (see
            // `ScrapedGauges`), not here: this breaker may no longer be the
            // running one.
            if let Some(open) = self.breaker.record(healthy, probe) {
                if open {
                    tracing::warn!("introspection circuit opened: denying with 503 until a probe succeeds");
                } else {
                    tracing::info!("introspection circuit closed");
                }
            }
        }
        result
    }

    /// One attempt within the budget, through the same concurrency limits
    /// as a check (an explanation must not be a way around them); an open
    /// circuit answers as it would for a check. No retries, nothing
    /// recorded in the breaker.
    async fn authenticate_dry(&self, token: &Token) -> Result<Arc<Identity>, AuthnError> {
        let asks_issuer = self.inner.asks_issuer(token);
        if asks_issuer && self.breaker.is_open() {
            return Err(AuthnError::unavailable(
                FailureKind::CircuitOpen,
                "introspection circuit is open",
            ));
        }
        let deadline = self.deadline();
        let _slot = self.issuer_slot(asks_issuer, deadline).await?;
        match tokio::time::timeout_at(deadline.at, self.inner.authenticate_dry(token)).await {
            Ok(r) => r,
            Err(_) => Err(deadline.expired()),
        }
    }
}

/// `circuit_open` is this breaker's: the stack scraped is the running one.
impl<A> ScrapedGauges for Resilient<A> {
    fn publish_gauges(&self) {
        self.metrics.circuit_open.set(i64::from(self.breaker.is_open()));
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
        assert_eq!(
            parse_grpc_timeout("99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        for bad in [
            "",
            "m",
            "10x",
            "-1m",
            "+1m",
            "1.5S",
            " 1S",
            "123456789m",
            "18446744073709551615S",
            "١m",
            "ڳԵ",
            "5µ",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    /// Absurd values are no deadline at all, never a panic in `Instant` arithmetic.
    #[test]
    fn caller_deadline_never_overflows() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            assert!(caller_deadline(Some("18446744073709551615S")).is_none());
            assert!(caller_deadline(Some("99999999H")).is_some_and(|d| d > Instant::now()));
            assert!(caller_deadline(Some("0m")).is_some());
            assert!(caller_deadline(None).is_none());
            let d = caller_deadline(Some("1000m")).expect("deadline");
            let left = d - Instant::now();
            assert!(
                left <= Duration::from_millis(900) && left > Duration::from_millis(800),
                "{left:?}"
            );
        });
    }

    fn breaker() -> Breaker {
        Breaker {
            threshold: 3,
            cooldown: Duration::from_secs(5),
            state: Mutex::new(BreakerState::default()),
        }
    }

    fn probe(a: Admission<'_>) -> ProbeTicket<'_> {
        match a {
            Admission::Probe(t) => t,
            Admission::Closed => panic!("expected a probe, got Closed"),
            Admission::Rejected => panic!("expected a probe, got Rejected"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_opens_probes_and_closes() {
        let b = breaker();
        assert!(matches!(b.admit(), Admission::Closed));
        assert_eq!(b.record(false, None), None);
        assert_eq!(b.record(false, None), None);
        assert_eq!(b.record(false, None), Some(true), "third failure opens");
        assert!(matches!(b.admit(), Admission::Rejected));
        tokio::time::advance(Duration::from_secs(6)).await;
        let t = probe(b.admit());
        assert!(matches!(b.view(), BreakerView::Probing(_)));
        assert!(matches!(b.admit(), Admission::Rejected), "only one probe at a time");
        assert_eq!(b.record(false, Some(t)), None, "failed probe: stays open");
        assert_eq!(b.view(), BreakerView::Open);
        assert!(matches!(b.admit(), Admission::Rejected));
        tokio::time::advance(Duration::from_secs(6)).await;
        let t = probe(b.admit());
        assert_eq!(b.record(true, Some(t)), Some(false), "successful probe closes");
        assert!(matches!(b.admit(), Admission::Closed));
    }

    /// A probe dropped without a verdict (its check was cancelled) frees the
    /// probe: the next check probes, instead of the breaker staying open.
    #[tokio::test(start_paused = true)]
    async fn dropped_probe_is_given_back() {
        let b = breaker();
        for _ in 0..3 {
            b.record(false, None);
        }
        tokio::time::advance(Duration::from_secs(6)).await;
        drop(probe(b.admit()));
        assert_eq!(b.view(), BreakerView::Open);
        let t = probe(b.admit());
        assert_eq!(b.record(true, Some(t)), Some(false));
    }

    #[test]
    fn queue_places_are_bounded_and_released_on_drop() {
        let waiting = AtomicUsize::new(0);
        let a = QueuePlace::take(&waiting, 2).expect("first");
        let b = QueuePlace::take(&waiting, 2).expect("second");
        assert!(QueuePlace::take(&waiting, 2).is_none(), "the queue is full");
        assert_eq!(waiting.load(Ordering::SeqCst), 2, "a refused place is not counted");
        drop((a, b));
        assert_eq!(waiting.load(Ordering::SeqCst), 0);
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
                    kind: FailureKind::Status,
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
