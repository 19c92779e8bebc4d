//! Cancellation safety of the authenticator stack the server runs
//! (single-flight/cache over the resilience layer): any check future may be
//! dropped at any await (Envoy cancels, gRPC callers give up, tonic enforces
//! `grpc-timeout`), and afterwards every counter, permit, flag and
//! placeholder must be back at rest, so the next check is served normally.

use super::cache::SharedVerifier;
use super::resilience::{BreakerView, Resilient, ENVOY_DEADLINE};
use super::{Authenticator, AuthnError, FailureKind, Identity};
use crate::authn::config::{CacheConfig, ResilienceConfig};
use crate::extract::credential::Token;
use crate::metrics::Metrics;
use proptest::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// An issuer whose answer and latency depend on the token: `ok-<ms>`,
/// `fail-<ms>` (a 500, not retried), `busy-<ms>` (a 503, retried); and
/// JWTs checked locally: `local-<ms>` (accepted), `forged-<ms>` (refused),
/// `jwks-<ms>` (the key set could not be fetched).
#[derive(Default)]
struct Scripted {
    calls: AtomicU64,
}

impl Authenticator for Scripted {
    async fn authenticate(&self, token: &Token) -> Result<Arc<Identity>, AuthnError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let (what, ms) = token.expose().split_once('-').unwrap_or(("ok", "0"));
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        match what {
            "ok" => Ok(Arc::new(Identity::default())),
            // A JWT accepted or refused locally: Hydra was never asked.
            "local" => Ok(Arc::new(Identity {
                verified_locally: true,
                ..Default::default()
            })),
            "forged" => Err(AuthnError::Rejected(super::ClaimFailure::BadSignature)),
            "jwks" => Err(AuthnError::Unavailable {
                kind: FailureKind::Jwks,
                detail: what.to_owned(),
                retryable: false,
                retry_after: None,
            }),
            _ => Err(AuthnError::Unavailable {
                kind: FailureKind::Status,
                detail: what.to_owned(),
                retryable: what == "busy",
                retry_after: None,
            }),
        }
    }

    fn asks_issuer(&self, token: &Token) -> bool {
        !["local", "forged", "jwks"]
            .iter()
            .any(|p| token.expose().starts_with(p))
    }
}

type Stack = SharedVerifier<Resilient<Scripted>>;

fn stack(cache: bool) -> Arc<Stack> {
    let metrics = Arc::new(Metrics::new());
    let resilience = ResilienceConfig {
        max_retries: 1,
        retry_budget_ms: 100,
        breaker_failures: 2,
        breaker_cooldown_ms: 10,
        max_concurrent: 2,
        max_waiting: 3,
    };
    let cache = CacheConfig {
        enabled: cache,
        ttl_ms: 5,
        ..Default::default()
    };
    Arc::new(SharedVerifier::new(
        Resilient::new(Scripted::default(), &resilience, metrics.clone()),
        &cache,
        Duration::ZERO,
        metrics,
    ))
}

/// One check as the gRPC service runs it: maybe under a caller deadline,
/// dropped by `timeout` after `drop_after` (at whatever await it is in).
async fn check(s: Arc<Stack>, token: &'static str, caller_ms: Option<u64>, drop_after: Duration) {
    let verify = async move { s.authenticate(&Token::new(token)).await };
    let run = async move {
        match caller_ms {
            Some(ms) => {
                ENVOY_DEADLINE
                    .scope(Instant::now() + Duration::from_millis(ms), verify)
                    .await
            }
            None => verify.await,
        }
    };
    let _ = tokio::time::timeout(drop_after, run).await;
}

/// Everything back at rest, and the stack still serves: a healthy token is
/// allowed within a few cool-downs (the breaker may have opened for real).
async fn assert_at_rest_and_serving(s: &Stack) {
    // Let every surviving future finish and every cool-down pass.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let state = s.inner().state();
    assert_eq!(state.waiting, 0, "queue places leaked: {state:?}");
    assert_eq!(state.in_use, 0, "introspection slots leaked: {state:?}");
    assert!(
        !matches!(state.breaker, BreakerView::Probing(_)),
        "probe leaked: {state:?}"
    );
    let mut last = None;
    for _ in 0..3 {
        match s.authenticate(&Token::new("ok-1")).await {
            Ok(_) => return,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("a healthy token is still refused: {last:?} ({:?})", s.inner().state());
}

/// Each token verified in its own task, started now.
fn spawn_all(
    s: &Arc<Stack>,
    tokens: &[&'static str],
) -> Vec<tokio::task::JoinHandle<Result<Arc<Identity>, AuthnError>>> {
    tokens
        .iter()
        .map(|&t| {
            let s = s.clone();
            tokio::spawn(async move { s.authenticate(&Token::new(t)).await })
        })
        .collect()
}

/// Two issuer failures open the circuit; then its cool-down passes, so the
/// next check is the half-open probe.
async fn open_the_circuit(s: &Stack) {
    for _ in 0..2 {
        assert!(s.authenticate(&Token::new("fail-1")).await.is_err());
    }
    assert_eq!(s.inner().state().breaker, BreakerView::Open);
    tokio::time::sleep(Duration::from_millis(20)).await;
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}

const TOKENS: [&str; 6] = ["ok-20", "ok-50", "fail-5", "fail-40", "busy-15", "ok-0"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random checks, random caller deadlines, dropped at random instants:
    /// nothing leaks, and the service recovers.
    #[test]
    fn dropping_checks_at_random_points_leaks_nothing(
        checks in proptest::collection::vec(
            (0..TOKENS.len(), proptest::option::of(0u64..80), 0u64..120, 0u64..30),
            1..16,
        ),
        cache in any::<bool>(),
    ) {
        paused_runtime().block_on(async move {
            let s = stack(cache);
            let mut tasks = Vec::new();
            for (token, caller_ms, drop_ms, start_ms) in checks {
                let s = s.clone();
                tasks.push(tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(start_ms)).await;
                    check(s, TOKENS[token], caller_ms, Duration::from_millis(drop_ms)).await;
                }));
            }
            for t in tasks {
                t.await.expect("check task");
            }
            assert_at_rest_and_serving(&s).await;
        });
    }
}

/// The half-open probe cancelled mid-introspection: before, the breaker
/// stayed open for good (every check 503 until a restart).
#[test]
fn cancelled_probe_does_not_wedge_the_breaker() {
    paused_runtime().block_on(async {
        let s = stack(false);
        open_the_circuit(&s).await;
        // The probe: a slow token, dropped while Hydra is still answering.
        check(s.clone(), "ok-50", None, Duration::from_millis(5)).await;
        assert_at_rest_and_serving(&s).await;
        assert_eq!(s.inner().state().breaker, BreakerView::Closed);
    });
}

/// Checks cancelled while queued for a slot: before, each leaked a place
/// and after `max_waiting` of them every uncached check was shed.
#[test]
fn cancelled_while_queued_releases_the_place() {
    paused_runtime().block_on(async {
        let s = stack(false);
        // Two slow checks hold both slots; then queue and cancel, many times over.
        let holders: Vec<_> = ["ok-200", "ok-201"]
            .into_iter()
            .map(|t| tokio::spawn(check(s.clone(), t, None, Duration::from_secs(1))))
            .collect();
        tokio::time::sleep(Duration::from_millis(1)).await;
        for _ in 0..10 {
            check(s.clone(), "ok-1", None, Duration::from_millis(2)).await;
        }
        assert_eq!(s.inner().state().waiting, 0);
        for h in holders {
            h.await.expect("holder");
        }
        assert_at_rest_and_serving(&s).await;
    });
}

/// A single-flight leader cancelled mid-load: the checks that joined it get
/// an answer from the next leader, not an error and not a hang.
#[test]
fn cancelled_leader_hands_the_load_to_a_waiter() {
    paused_runtime().block_on(async {
        let s = stack(false);
        let leader = tokio::spawn(check(s.clone(), "ok-50", None, Duration::from_millis(10)));
        tokio::time::sleep(Duration::from_millis(1)).await;
        let waiters = spawn_all(&s, &["ok-50"; 4]);
        leader.await.expect("leader");
        for w in waiters {
            assert!(w.await.expect("waiter").is_ok());
        }
        assert_eq!(
            s.inner().inner().calls.load(Ordering::SeqCst),
            2,
            "the cancelled load and one more"
        );
        assert_at_rest_and_serving(&s).await;
    });
}

/// A leader that runs out of its caller's tiny deadline does not hand that
/// failure to the checks that joined it, and it opens no breaker.
#[test]
fn callers_deadline_is_neither_shared_nor_the_issuers_fault() {
    paused_runtime().block_on(async {
        let s = stack(false);
        let leader = {
            let s = s.clone();
            tokio::spawn(async move {
                ENVOY_DEADLINE
                    .scope(
                        Instant::now() + Duration::from_millis(1),
                        s.authenticate(&Token::new("ok-30")),
                    )
                    .await
            })
        };
        tokio::time::sleep(Duration::from_micros(100)).await;
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move { s.authenticate(&Token::new("ok-30")).await })
        };
        assert!(matches!(
            leader.await.expect("leader"),
            Err(AuthnError::Unavailable {
                kind: FailureKind::CallerDeadline,
                ..
            })
        ));
        assert!(
            waiter.await.expect("waiter").is_ok(),
            "the waiter runs on its own clock"
        );
        // A burst of tiny deadlines, far more than breaker_failures: still closed.
        for _ in 0..20 {
            let r = ENVOY_DEADLINE
                .scope(
                    Instant::now() + Duration::from_micros(500),
                    s.authenticate(&Token::new("ok-30")),
                )
                .await;
            assert!(r.is_err());
        }
        assert_eq!(s.inner().state().breaker, BreakerView::Closed);
        assert_at_rest_and_serving(&s).await;
    });
}

/// Time spent queued for a slot is our load: a check whose budget runs out
/// after queueing is `overloaded`, and a run of them opens no breaker.
#[test]
fn budget_spent_queueing_is_not_the_issuers_fault() {
    paused_runtime().block_on(async {
        let s = stack(false);
        // Two slow checks hold both slots for 90 of the 100 ms budget.
        let holders = spawn_all(&s, &["ok-90", "ok-91"]);
        tokio::time::sleep(Duration::from_millis(1)).await;
        let queued = spawn_all(&s, &["ok-50", "ok-51", "ok-52"]);
        for h in holders {
            assert!(h.await.expect("holder").is_ok());
        }
        for q in queued {
            let r = q.await.expect("queued");
            assert!(
                matches!(
                    r,
                    Err(AuthnError::Unavailable {
                        kind: FailureKind::Overloaded,
                        ..
                    })
                ),
                "{r:?}"
            );
        }
        assert_eq!(s.inner().state().breaker, BreakerView::Closed, "breaker_failures is 2");
        assert_at_rest_and_serving(&s).await;
    });
}

/// Verdicts reached without the issuer (a JWT verified or refused locally)
/// are no verdict on it: a forged JWT as the half-open probe does not close
/// the circuit while Hydra is down.
#[test]
fn local_verdicts_do_not_close_the_circuit() {
    paused_runtime().block_on(async {
        let s = stack(false);
        open_the_circuit(&s).await;
        for probe in ["forged-0", "local-0"] {
            let _ = s.authenticate(&Token::new(probe)).await;
            assert_eq!(
                s.inner().state().breaker,
                BreakerView::Open,
                "{probe} is no verdict on Hydra"
            );
        }
        assert!(
            s.authenticate(&Token::new("ok-1")).await.is_ok(),
            "a real answer closes it"
        );
        assert_eq!(s.inner().state().breaker, BreakerView::Closed);
    });
}

/// A JWT checked here neither feeds nor waits on the breaker: key set
/// failures spread over a process's life never add up to a circuit that
/// nothing local could close again, and a circuit opened by introspection
/// failures does not turn away a JWT that needs no issuer.
#[test]
fn local_checks_neither_feed_nor_wait_on_the_breaker() {
    paused_runtime().block_on(async {
        let s = stack(false);
        for _ in 0..10 {
            let got = s.authenticate(&Token::new("jwks-0")).await;
            assert!(
                matches!(
                    got,
                    Err(AuthnError::Unavailable {
                        kind: FailureKind::Jwks,
                        ..
                    })
                ),
                "{got:?}"
            );
        }
        assert_eq!(s.inner().state().breaker, BreakerView::Closed, "breaker_failures is 2");
        for _ in 0..2 {
            assert!(s.authenticate(&Token::new("fail-0")).await.is_err());
        }
        assert_eq!(
            s.inner().state().breaker,
            BreakerView::Open,
            "introspection failures open it"
        );
        assert!(
            s.authenticate(&Token::new("local-0")).await.is_ok(),
            "a JWT is checked while introspection's circuit is open"
        );
        let opaque = s.authenticate(&Token::new("ok-0")).await;
        assert!(
            matches!(
                opaque,
                Err(AuthnError::Unavailable {
                    kind: FailureKind::CircuitOpen,
                    ..
                })
            ),
            "an opaque token still meets the open circuit: {opaque:?}"
        );
        assert_at_rest_and_serving(&s).await;
    });
}
