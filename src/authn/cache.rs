//! Single-flight and the opt-in verification cache, as one [`Authenticator`]
//! layer over the introspection client.
//!
//! - **Single-flight, always on**: concurrent checks carrying the same token
//!   share one in-flight introspection (quick_cache's placeholders hand the
//!   loader's result to every check that joined while it loaded), so a burst
//!   cannot multiply into Hydra calls. Failures are shared with the checks
//!   that waited too, so a Hydra outage is not retried once per waiter.
//! - **Cache, off by default** (`[introspection.cache] enabled`): a verified
//!   token is remembered for min(`ttl_ms`, `exp` − now), a rejected one for
//!   `negative_ttl_ms` (0 = not at all). Results with no lifetime (cache off,
//!   failures) are removed the moment the waiters have them, so the next
//!   check asks Hydra again. Failures (Hydra down, 5xx, garbage) are never
//!   kept.
//! - **JWT memo, on in jwt/auto mode**: a JWT verified locally is remembered
//!   for min(`[introspection.jwt] verified_ttl_ms`, `exp` − now) even with the
//!   cache off. It cannot be revoked before `exp` anyway; the memo only skips
//!   repeating the signature check (Envoy's jwt_authn keeps such a cache too).
//!
//! Keys are SHA-256 digests of the token: the cache never holds a token.
//! quick_cache (rather than moka) because an entry costs about a third of the
//! memory and a hit takes one shard read lock; expiry is checked on read.

use super::{Authenticator, AuthnError, ClaimFailure, FailureKind, Identity};
use crate::config::CacheConfig;
use crate::extract::credential::Token;
use crate::metrics::Metrics;
use quick_cache::sync::{Cache, DefaultLifecycle, EntryAction, EntryResult, PlaceholderGuard};
use quick_cache::{DefaultHashBuilder, UnitWeighter};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing_opentelemetry::OpenTelemetrySpanExt;

type Key = [u8; 32];
/// The right to load `Key`: checks arriving meanwhile wait for its result.
type LoadGuard<'a> = PlaceholderGuard<'a, Key, Entry, UnitWeighter, DefaultHashBuilder, DefaultLifecycle<Key, Entry>>;

#[derive(Debug, Clone)]
enum Cached {
    Valid(Arc<Identity>),
    Rejected(ClaimFailure),
    /// Hydra could not decide: handed to the checks that waited, never kept.
    Failed(AuthnError),
}

#[derive(Debug, Clone)]
struct Entry {
    verdict: Cached,
    /// Usable until then; `None`: only by the checks that joined its load
    /// (the entry is removed as soon as it is handed over).
    until: Option<Instant>,
}

impl Entry {
    fn usable(&self, now: Instant) -> bool {
        self.until.is_none_or(|t| now < t)
    }
}

/// How long a freshly produced verdict stays usable.
struct Lifetimes {
    positive: Duration,
    negative: Duration,
    /// For identities verified locally from a JWT: the JWT memo
    /// (`[introspection.jwt] verified_ttl_ms`), which holds even with the
    /// cache off, since such a token cannot be revoked before `exp` anyway.
    local_jwt: Duration,
}

impl Lifetimes {
    fn of(&self, verdict: &Cached) -> Duration {
        match verdict {
            Cached::Valid(identity) => {
                let ttl = if identity.verified_locally {
                    self.positive.max(self.local_jwt)
                } else {
                    self.positive
                };
                // Never past the token's own expiry.
                let left = identity
                    .expires_at
                    .map(|exp| exp.saturating_sub(super::introspection::now_unix()))
                    .map_or(ttl, |s| Duration::from_secs(u64::try_from(s).unwrap_or(0)));
                ttl.min(left)
            }
            Cached::Rejected(_) => self.negative,
            Cached::Failed(_) => Duration::ZERO,
        }
    }
}

pub struct SharedVerifier<A> {
    inner: A,
    cache: Cache<Key, Entry>,
    lifetimes: Lifetimes,
    metrics: Arc<Metrics>,
}

impl<A> SharedVerifier<A> {
    /// `jwt_ttl` is the JWT memo (`[introspection.jwt] verified_ttl_ms`; zero outside jwt/auto mode).
    pub fn new(inner: A, cfg: &CacheConfig, jwt_ttl: Duration, metrics: Arc<Metrics>) -> Self {
        let (positive, negative) = if cfg.enabled {
            (
                Duration::from_millis(cfg.ttl_ms),
                Duration::from_millis(cfg.negative_ttl_ms),
            )
        } else {
            (Duration::ZERO, Duration::ZERO)
        };
        let capacity = usize::try_from(cfg.max_entries).unwrap_or(usize::MAX).max(1);
        SharedVerifier {
            inner,
            cache: Cache::new(capacity),
            lifetimes: Lifetimes {
                positive,
                negative,
                local_jwt: jwt_ttl,
            },
            metrics,
        }
    }

    pub fn inner(&self) -> &A {
        &self.inner
    }

    /// Entries held, placeholders of loads in progress included.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// Publish the entry count; called at scrape time rather than on every check.
    pub async fn refresh_metrics(&self) {
        self.metrics
            .cache_entries
            .set(i64::try_from(self.cache.len()).unwrap_or(i64::MAX));
    }
}

fn key(token: &Token) -> Key {
    Sha256::digest(token.expose().as_bytes()).into()
}

impl<A: Authenticator> SharedVerifier<A> {
    /// Ask the inner authenticator, publish the verdict to the checks that
    /// joined this load, and keep it only if it has a lifetime.
    async fn load(&self, key: &Key, token: &Token, guard: LoadGuard<'_>) -> Entry {
        let verdict = match self.inner.authenticate(token).await {
            Ok(identity) => Cached::Valid(identity),
            Err(AuthnError::Rejected(why)) => Cached::Rejected(why),
            Err(e) => Cached::Failed(e),
        };
        let ttl = self.lifetimes.of(&verdict);
        let entry = Entry {
            verdict,
            until: (!ttl.is_zero()).then(|| Instant::now() + ttl),
        };
        if let Cached::Failed(AuthnError::Unavailable {
            kind: FailureKind::CallerDeadline,
            ..
        }) = &entry.verdict
        {
            // This caller's own deadline, not an answer for the others:
            // dropping the guard uninserted hands the load to the next
            // waiter (as a cancelled leader does), which runs on its own clock.
            drop(guard);
            return entry;
        }
        let _ = guard.insert(entry.clone());
        if entry.until.is_none() {
            // The waiters already hold it; nobody else may reuse it.
            self.cache.remove_if(key, |e| e.until.is_none());
        }
        entry
    }

    /// The usable entry for `key`, loading it unless one is stored or
    /// being loaded; `true` when it was not loaded by this call.
    async fn lookup(&self, key: &Key, token: &Token) -> (Entry, bool) {
        match self.cache.get_value_or_guard_async(key).await {
            Ok(entry) if entry.usable(Instant::now()) => (entry, true),
            Err(guard) => (self.load(key, token, guard).await, false),
            // Expired: swap it for a placeholder atomically, so concurrent
            // checks of an expired token still share one reload.
            Ok(_) => {
                let now = Instant::now();
                let found = self
                    .cache
                    .entry_async(key, |_, e| {
                        if e.usable(now) {
                            EntryAction::Retain(e.clone())
                        } else {
                            EntryAction::ReplaceWithGuard
                        }
                    })
                    .await;
                match found {
                    EntryResult::Retained(entry) => (entry, true),
                    EntryResult::Replaced(guard, _) | EntryResult::Vacant(guard) => {
                        (self.load(key, token, guard).await, false)
                    }
                    // Neither is produced by the callback above or by entry_async.
                    EntryResult::Removed(..) | EntryResult::Timeout => {
                        let e = AuthnError::unavailable(FailureKind::Cache, "unexpected cache state");
                        (
                            Entry {
                                verdict: Cached::Failed(e),
                                until: None,
                            },
                            false,
                        )
                    }
                }
            }
        }
    }
}

impl<A: Authenticator> Authenticator for SharedVerifier<A> {
    async fn authenticate(&self, token: &Token) -> Result<Arc<Identity>, AuthnError> {
        let key = key(token);
        let (entry, hit) = self.lookup(&key, token).await;
        let result = match entry.verdict {
            // Not a verdict: neither a hit nor a miss.
            Cached::Failed(e) => return Err(e),
            Cached::Valid(identity) => Ok(identity),
            Cached::Rejected(why) => Err(AuthnError::Rejected(why)),
        };
        tracing::Span::current().set_attribute("hydra_authz.cache.hit", hit);
        if hit {
            self.metrics.cache_hits.inc();
        } else {
            self.metrics.cache_misses.inc();
        }
        result
    }

    /// A usable stored verdict answers; otherwise verify without storing
    /// (and without joining or starting a shared load).
    async fn authenticate_dry(&self, token: &Token) -> Result<Arc<Identity>, AuthnError> {
        match self.cache.peek(&key(token)).filter(|e| e.usable(Instant::now())) {
            Some(Entry {
                verdict: Cached::Valid(identity),
                ..
            }) => Ok(identity),
            Some(Entry {
                verdict: Cached::Rejected(why),
                ..
            }) => Err(AuthnError::Rejected(why)),
            _ => self.inner.authenticate_dry(token).await,
        }
    }
}

/// Dropping remembered verdicts, for revocation hooks and operators.
pub trait Purge: Send + Sync + 'static {
    fn purge_token(&self, token: &Token) -> impl std::future::Future<Output = ()> + Send;
    /// By the 8-hex-digit fingerprint shown in logs.
    fn purge_fingerprint(&self, fingerprint: &str) -> Result<(), String>;
    fn purge_all(&self);
}

impl<A: Send + Sync + 'static> Purge for SharedVerifier<A> {
    async fn purge_token(&self, token: &Token) {
        self.cache.remove(&key(token));
    }

    fn purge_fingerprint(&self, fingerprint: &str) -> Result<(), String> {
        let prefix = hex::decode(fingerprint)
            .ok()
            .filter(|p| p.len() == 4)
            .ok_or_else(|| "a fingerprint is 8 hex digits".to_owned())?;
        self.cache.retain(|k, _| k[..4] != prefix[..]);
        Ok(())
    }

    fn purge_all(&self) {
        self.cache.clear();
    }
}
