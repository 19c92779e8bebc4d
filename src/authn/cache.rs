//! Single-flight and the opt-in verification cache, as one [`Authenticator`]
//! layer over the introspection client.
//!
//! - **Single-flight, always on**: concurrent checks carrying the same token
//!   share one in-flight introspection (moka coalesces concurrent loads of a
//!   key), so a burst cannot multiply into Hydra calls.
//! - **Cache, off by default** (`[introspection.cache] enabled`): a verified
//!   token is remembered for min(`ttl_ms`, `exp` − now), a rejected one for
//!   `negative_ttl_ms` (0 = not at all). With the cache off, results expire
//!   the moment they are produced and only coalesced waiters share them.
//!   Failures (Hydra down, 5xx, garbage) are never stored.
//! - **JWT memo, on in jwt/auto mode**: a JWT verified locally is remembered
//!   for min(`[introspection.jwt] verified_ttl_ms`, `exp` − now) even with the
//!   cache off. It cannot be revoked before `exp` anyway; the memo only skips
//!   repeating the signature check (Envoy's jwt_authn keeps such a cache too).
//!
//! Keys are SHA-256 digests of the token: the cache never holds a token.

use super::{Authenticator, AuthnError, ClaimFailure, Identity};
use crate::config::CacheConfig;
use crate::decision::token::Token;
use crate::metrics::Metrics;
use moka::future::Cache;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing_opentelemetry::OpenTelemetrySpanExt;

type Key = [u8; 32];

#[derive(Debug, Clone)]
enum Verdict {
    Valid(Arc<Identity>),
    Rejected(ClaimFailure),
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

impl moka::Expiry<Key, Verdict> for Lifetimes {
    fn expire_after_create(&self, _key: &Key, value: &Verdict, _created_at: Instant) -> Option<Duration> {
        Some(match value {
            Verdict::Valid(identity) => {
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
            Verdict::Rejected(_) => self.negative,
        })
    }
}

pub struct SharedVerifier<A> {
    inner: A,
    cache: Cache<Key, Verdict>,
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
        let cache = Cache::builder()
            .max_capacity(cfg.max_entries)
            .expire_after(Lifetimes {
                positive,
                negative,
                local_jwt: jwt_ttl,
            })
            .support_invalidation_closures()
            .build();
        SharedVerifier { inner, cache, metrics }
    }

    pub fn inner(&self) -> &A {
        &self.inner
    }

    /// Settle moka's pending bookkeeping and publish the entry count; called
    /// at scrape time rather than on every check.
    pub async fn refresh_metrics(&self) {
        self.cache.run_pending_tasks().await;
        self.metrics
            .cache_entries
            .set(i64::try_from(self.cache.entry_count()).unwrap_or(i64::MAX));
    }
}

fn key(token: &Token) -> Key {
    Sha256::digest(token.expose().as_bytes()).into()
}

impl<A: Authenticator> Authenticator for SharedVerifier<A> {
    async fn authenticate(&self, token: &Token) -> Result<Arc<Identity>, AuthnError> {
        let load = async {
            match self.inner.authenticate(token).await {
                Ok(identity) => Ok(Verdict::Valid(identity)),
                Err(AuthnError::Rejected(why)) => Ok(Verdict::Rejected(why)),
                // Not a verdict: not stored, and the next check asks Hydra again.
                Err(e) => Err(e),
            }
        };
        let entry = self.cache.entry(key(token)).or_try_insert_with(load).await;
        let entry = entry.map_err(|e| (*e).clone())?;
        let hit = !entry.is_fresh();
        tracing::Span::current().set_attribute("hydra_authz.cache.hit", hit);
        if hit {
            self.metrics.cache_hits.inc();
        } else {
            self.metrics.cache_misses.inc();
        }
        match entry.into_value() {
            Verdict::Valid(identity) => Ok(identity),
            Verdict::Rejected(why) => Err(AuthnError::Rejected(why)),
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
        self.cache.invalidate(&key(token)).await;
    }

    fn purge_fingerprint(&self, fingerprint: &str) -> Result<(), String> {
        let prefix = hex::decode(fingerprint)
            .ok()
            .filter(|p| p.len() == 4)
            .ok_or_else(|| "a fingerprint is 8 hex digits".to_owned())?;
        self.cache
            .invalidate_entries_if(move |k, _| k[..4] == prefix[..])
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn purge_all(&self) {
        self.cache.invalidate_all();
    }
}
