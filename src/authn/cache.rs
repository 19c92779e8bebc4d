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
//!   `negative_ttl_ms` (0 = not at all; never an unknown `kid` or a token not
//!   valid yet, which say more about our key set and clocks). Results with no lifetime (cache off,
//!   failures) are removed the moment the waiters have them, so the next
//!   check asks Hydra again. Failures (Hydra down, 5xx, garbage) are never
//!   kept.
//! - **JWT memo, on in jwt/auto mode**: a JWT verified locally is remembered
//!   for min(`[introspection.jwt] verified_ttl_ms`, `exp` − now) even with the
//!   cache off. It cannot be revoked before `exp` anyway; the memo only skips
//!   repeating the signature check (Envoy's jwt_authn keeps such a cache too).
//! - **Stale-if-error, off by default** (`[introspection.cache]
//!   stale_if_error_ms`): while the issuer cannot be reached (not when it
//!   says `active: false`), a token verified within the window is still
//!   allowed, never past its `exp`, never after a purge, and marked
//!   ([`Identity::served_stale`]).
//! - **The fleet** (`[cluster]`, [`super::fleet`]): purges arrive from other
//!   replicas; nothing is served from here while the purge subscription is
//!   down; an L1 miss asks the shared L2 cache before the issuer.
//!
//! Keys are SHA-256 digests of the token (HMAC-SHA-256 with the cluster
//! secret when one is set): the cache never holds a token.
//! quick_cache (rather than moka) because an entry costs about a third of the
//! memory and a hit takes one shard read lock; expiry is checked on read.

use super::fleet::purge::{CacheKey, PurgeTarget};
use super::fleet::shared_cache::SharedRead;
use super::fleet::Fleet;
use super::{Authenticator, AuthnError, ClaimFailure, FailureKind, Identity, ScrapedGauges};
use crate::authn::config::CacheConfig;
use crate::extract::credential::Token;
use crate::metrics::Metrics;
use quick_cache::sync::{Cache, DefaultLifecycle, EntryAction, EntryResult, PlaceholderGuard};
use quick_cache::{DefaultHashBuilder, Weighter};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing_opentelemetry::OpenTelemetrySpanExt;

type Key = CacheKey;
/// The right to load `Key`: checks arriving meanwhile wait for its result.
type LoadGuard<'a> = PlaceholderGuard<'a, Key, Entry, ByWeight, DefaultHashBuilder, DefaultLifecycle<Key, Entry>>;

/// Entries weigh 1, plus 1 per KiB of the identity they hold (its `ext`,
/// scopes, audience): `max_entries` then bounds memory as well as count.
/// Counted alike, 100,000 tokens whose `ext` a token hook filled with 64
/// KiB each would hold 6.5 GB.
#[derive(Debug, Clone, Copy)]
struct ByWeight;

impl Weighter<Key, Entry> for ByWeight {
    fn weight(&self, _: &Key, e: &Entry) -> u64 {
        u64::from(e.weight)
    }
}

impl Weighter<Key, Stale> for ByWeight {
    fn weight(&self, _: &Key, s: &Stale) -> u64 {
        u64::from(s.weight)
    }
}

/// 1 + the identity's size in KiB, computed once when it is stored (the
/// weigher runs during eviction, and a weight must never change).
fn weight_of(identity: &Identity) -> u32 {
    struct Counted(usize);
    impl std::io::Write for Counted {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let text = |s: &Option<Arc<str>>| s.as_deref().map_or(0, str::len);
    let list = |l: &[Arc<str>]| l.iter().map(|s| s.len() + 16).sum::<usize>();
    let mut ext = Counted(0);
    if let Some(v) = &identity.ext {
        let _ = serde_json::to_writer(&mut ext, &**v);
    }
    let bytes = text(&identity.client_id)
        + text(&identity.subject)
        + text(&identity.issuer)
        + text(&identity.username)
        + list(&identity.scopes)
        + list(&identity.audience)
        + ext.0;
    1 + u32::try_from(bytes / 1024).unwrap_or(u32::MAX - 1)
}

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
    /// The token's fingerprint (`token_fp`), for purges by fingerprint:
    /// with a cluster secret the key is not the plain digest.
    fp: [u8; 4],
    /// See [`ByWeight`].
    weight: u32,
}

impl Entry {
    fn usable(&self, now: Instant) -> bool {
        self.until.is_none_or(|t| now < t)
    }

    fn matches(&self, target: &PurgeTarget) -> bool {
        let identity = match &self.verdict {
            Cached::Valid(identity) => Some(&**identity),
            _ => None,
        };
        purged_by(target, self.fp, identity)
    }
}

/// Whether a purge of `target` covers a stored verdict with fingerprint
/// `fp` (and, when it was a verified one, `identity`).
fn purged_by(target: &PurgeTarget, fp: [u8; 4], identity: Option<&Identity>) -> bool {
    match target {
        PurgeTarget::Key(_) | PurgeTarget::All => true,
        PurgeTarget::Fingerprint(f) => fp == *f,
        PurgeTarget::Subject(s) => identity.is_some_and(|i| i.subject.as_deref() == Some(s)),
        PurgeTarget::Client(c) => identity.is_some_and(|i| i.client_id.as_deref() == Some(c)),
    }
}

fn fingerprint(token: &Token) -> [u8; 4] {
    let d = token.digest();
    [d[0], d[1], d[2], d[3]]
}

/// Identities verified recently, for stale-if-error: kept apart from the
/// cache (and with the cache off) for `window` after each verification.
struct StaleStore {
    entries: Cache<Key, Stale, ByWeight>,
    window: Duration,
}

#[derive(Clone)]
struct Stale {
    identity: Arc<Identity>,
    fp: [u8; 4],
    until: Instant,
    /// The issuer has since answered `active: false`: never served again,
    /// kept only so later refusals within the window know (see `verify`).
    refused: bool,
    /// See [`ByWeight`].
    weight: u32,
}

/// Failures during which a recently verified identity may be served: the
/// issuer is unreachable or broken, or the breaker says so. Not our own
/// shedding, the caller's deadline, or a rejection.
/// Not an answer too large or unreadable either: that can be the token's
/// own (its `ext`), and its holder must not be able to choose to be served
/// an older identity (see `FailureKind::opens_circuit`).
fn issuer_unreachable(e: &AuthnError) -> bool {
    matches!(e, AuthnError::Unavailable { kind, .. } if kind.opens_circuit() || *kind == FailureKind::CircuitOpen)
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
            // Served by stale-if-error: not a verification, never kept.
            Cached::Valid(identity) if identity.served_stale => Duration::ZERO,
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
            // Facts about our key set (lagging a rotation) or a clock (ours
            // or the issuer's), not about the token: the next check may well
            // pass, so it must not find this answer kept.
            Cached::Rejected(ClaimFailure::UnknownKey | ClaimFailure::NotYetValid) => Duration::ZERO,
            Cached::Rejected(_) => self.negative,
            Cached::Failed(_) => Duration::ZERO,
        }
    }
}

pub struct SharedVerifier<A> {
    inner: A,
    cache: Cache<Key, Entry, ByWeight>,
    lifetimes: Lifetimes,
    metrics: Arc<Metrics>,
    /// Counts purges: a load that saw one go by while it ran hands its
    /// verdict to its waiters but does not keep (or share) it.
    purges: AtomicU64,
    stale: Option<StaleStore>,
    fleet: Option<Arc<Fleet>>,
    /// The verification policy shared entries must have been checked under.
    policy: String,
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
            cache: Cache::with_weighter(capacity, cfg.max_entries.max(1), ByWeight),
            lifetimes: Lifetimes {
                positive,
                negative,
                local_jwt: jwt_ttl,
            },
            metrics,
            purges: AtomicU64::new(0),
            stale: (cfg.stale_if_error_ms > 0).then(|| StaleStore {
                entries: Cache::with_weighter(capacity, cfg.max_entries.max(1), ByWeight),
                window: Duration::from_millis(cfg.stale_if_error_ms),
            }),
            fleet: None,
            policy: String::new(),
        }
    }

    /// Part of a fleet: purges from other replicas, the subscription gate,
    /// the shared L2 cache (see [`super::fleet`]).
    /// `policy` names the verification settings (a digest of
    /// `[introspection]`): shared entries verified under others are not taken.
    pub fn with_fleet(mut self, fleet: Option<Arc<Fleet>>, policy: String) -> Self {
        self.fleet = fleet;
        self.policy = policy;
        self
    }

    pub fn fleet(&self) -> Option<&Arc<Fleet>> {
        self.fleet.as_ref()
    }

    /// Whether stored verdicts may be served: always on a single replica;
    /// in a fleet only while the purge subscription is up.
    fn trusted(&self) -> bool {
        self.fleet.as_ref().is_none_or(|f| f.cache_trusted())
    }

    /// The cache key of `token` (keyed with the cluster secret when set).
    pub fn key_of(&self, token: &Token) -> Key {
        match &self.fleet {
            Some(f) => f.cache_key(token),
            None => *token.digest(),
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
}

impl<A: ScrapedGauges> SharedVerifier<A> {
    /// Publish the entry count and the gauges of the layers below; called
    /// at scrape time, on the running stack, rather than on every check.
    pub async fn refresh_metrics(&self) {
        self.metrics
            .cache_entries
            .set(i64::try_from(self.cache.len()).unwrap_or(i64::MAX));
        self.inner.publish_gauges();
    }
}

impl<A: Authenticator> SharedVerifier<A> {
    /// Ask the inner authenticator, publish the verdict to the checks that
    /// joined this load, and keep it only if it has a lifetime.
    async fn load(&self, key: &Key, token: &Token, guard: LoadGuard<'_>) -> Entry {
        let purges = self.purges.load(Ordering::Acquire);
        let trusted = self.trusted();
        // The shared cache is read and written in the epoch the load began
        // in: an entry verified before a broad purge never lands after it.
        let epoch = self.fleet.as_ref().map_or(0, |f| f.epoch());
        let fp = fingerprint(token);
        // `unkept`: a refusal that must not be remembered (see `verify`).
        let (verdict, shared_for, unkept) = match self.shared_get(key, epoch, trusted).await {
            SharedRead::Hit(identity, left) => (Cached::Valid(identity), Some(left), false),
            read => {
                let (verdict, unkept) = self.verify(key, token, fp, purges).await;
                // Refused as no longer valid (revoked, expired), where a
                // shared entry may be stored unseen: remove it, so a later
                // read cannot say yes where the issuer said no. Only these:
                // a token that never verified (a forged JWT, garbage) has
                // no entry, and must not buy a Redis write per request.
                let gone = matches!(
                    verdict,
                    Cached::Rejected(ClaimFailure::Inactive | ClaimFailure::Expired)
                );
                if let (true, SharedRead::Unread, Some(fleet)) = (gone, &read, &self.fleet) {
                    fleet.shared_forget(*key, epoch);
                }
                (verdict, None, unkept)
            }
        };
        let mut ttl = if unkept {
            Duration::ZERO
        } else {
            self.lifetimes.of(&verdict)
        };
        if let Some(left) = shared_for {
            ttl = ttl.min(left);
        }
        // Kept only if no purge went by while it loaded, and only while
        // every purge is heard.
        let keep = trusted && self.purges.load(Ordering::Acquire) == purges;
        if let (true, None, Cached::Valid(identity)) = (keep, shared_for, &verdict) {
            if let Some(fleet) = &self.fleet {
                // Not into an epoch whose reads are suspended: no one would
                // read it but a replica that has not heard why.
                if !identity.served_stale && !ttl.is_zero() && fleet.shared_readable(epoch) {
                    fleet.shared_put(*key, epoch, &self.policy, identity, ttl);
                }
            }
        }
        let until = (keep && !ttl.is_zero()).then(|| Instant::now() + ttl);
        // Only a kept entry is weighed: one handed to the waiting checks and
        // removed (every check with the cache off) costs no serialization.
        let weight = match (&verdict, until) {
            (Cached::Valid(identity), Some(_)) => weight_of(identity),
            _ => 1,
        };
        let entry = Entry {
            verdict,
            until,
            fp,
            weight,
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
        } else if self.purges.load(Ordering::Acquire) != purges {
            // A purge between the check above and the insert: a broad one
            // skips placeholders, so take it out now.
            self.cache.remove(key);
        }
        entry
    }

    /// An identity from the fleet's shared cache (only while purges are heard).
    async fn shared_get(&self, key: &Key, epoch: u64, trusted: bool) -> SharedRead {
        match &self.fleet {
            Some(f) if f.shares_cache() && self.lifetimes.positive > Duration::ZERO => {
                if trusted {
                    f.shared_get(key, epoch, &self.policy).await
                } else {
                    SharedRead::Unread
                }
            }
            _ => SharedRead::Miss,
        }
    }

    /// Ask the layer below; remember verified identities for
    /// stale-if-error, and fall back on one while the issuer is unreachable.
    /// `true` with a refusal that must not be remembered (see below).
    async fn verify(&self, key: &Key, token: &Token, fp: [u8; 4], purges: u64) -> (Cached, bool) {
        let result = self.inner.authenticate(token).await;
        let Some(stale) = &self.stale else {
            let verdict = match result {
                Ok(identity) => Cached::Valid(identity),
                Err(AuthnError::Rejected(why)) => Cached::Rejected(why),
                Err(e) => Cached::Failed(e),
            };
            return (verdict, false);
        };
        let verdict = match result {
            Ok(identity) => {
                let s = Stale {
                    weight: weight_of(&identity),
                    identity: identity.clone(),
                    fp,
                    until: Instant::now() + stale.window,
                    refused: false,
                };
                // Not if a purge went by while we asked (it may have meant
                // this token); checked again after, as the purge may land
                // in between.
                if self.purges.load(Ordering::Acquire) == purges {
                    stale.entries.insert(*key, s);
                    if self.purges.load(Ordering::Acquire) != purges {
                        stale.entries.remove(key);
                    }
                }
                Cached::Valid(identity)
            }
            Err(AuthnError::Rejected(why)) => {
                // Hydra answers `active: false` for its own storage errors
                // too (fosite wraps every introspection error as an
                // inactive token): for a token it called active within the
                // stale window, that may be an outage, not a revocation.
                // Refused now either way, but not remembered
                // (negative_ttl_ms), so it cannot outlive the outage.
                let now = Instant::now();
                let seen_active = stale
                    .entries
                    .get(key)
                    .filter(|s| now < s.until && matches!(why, ClaimFailure::Inactive));
                match seen_active {
                    // The issuer says no: nothing stale may say yes. The
                    // record stays, marked, for the next refusal to know.
                    Some(mut s) if self.purges.load(Ordering::Acquire) == purges => {
                        s.refused = true;
                        stale.entries.insert(*key, s);
                        if self.purges.load(Ordering::Acquire) != purges {
                            stale.entries.remove(key);
                        }
                        return (Cached::Rejected(why), true);
                    }
                    _ => {
                        stale.entries.remove(key);
                    }
                }
                Cached::Rejected(why)
            }
            // Trust read now: the subscription may have gone while we asked.
            Err(e) if self.trusted() && issuer_unreachable(&e) => {
                let now = Instant::now();
                let fresh = stale.entries.get(key).filter(|s| {
                    !s.refused
                        && now < s.until
                        && s.identity
                            .expires_at
                            .is_none_or(|exp| exp > super::introspection::now_unix())
                });
                match fresh {
                    Some(s) => {
                        let mut identity = (*s.identity).clone();
                        identity.served_stale = true;
                        self.metrics.stale_allows.inc();
                        Cached::Valid(Arc::new(identity))
                    }
                    None => Cached::Failed(e),
                }
            }
            Err(e) => Cached::Failed(e),
        };
        (verdict, false)
    }

    /// The usable entry for `key`, loading it unless one is stored or
    /// being loaded; `true` when it was not loaded by this call.
    async fn lookup(&self, key: &Key, token: &Token) -> (Entry, bool) {
        if !self.trusted() {
            return self.lookup_untrusted(key, token).await;
        }
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
                    EntryResult::Removed(..) | EntryResult::Timeout => (unexpected(), false),
                }
            }
        }
    }

    /// While purges may be missed (the fleet's subscription is down):
    /// nothing stored is served; concurrent checks still share one load.
    async fn lookup_untrusted(&self, key: &Key, token: &Token) -> (Entry, bool) {
        let found = self
            .cache
            .entry_async(key, |_, e| match e.until {
                // A load in progress: join it.
                None => EntryAction::Retain(e.clone()),
                Some(_) => EntryAction::ReplaceWithGuard,
            })
            .await;
        match found {
            EntryResult::Retained(entry) => (entry, true),
            EntryResult::Replaced(guard, _) | EntryResult::Vacant(guard) => (self.load(key, token, guard).await, false),
            EntryResult::Removed(..) | EntryResult::Timeout => (unexpected(), false),
        }
    }
}

fn unexpected() -> Entry {
    Entry {
        verdict: Cached::Failed(AuthnError::unavailable(FailureKind::Cache, "unexpected cache state")),
        until: None,
        fp: [0; 4],
        weight: 1,
    }
}

impl<A: Authenticator> Authenticator for SharedVerifier<A> {
    async fn authenticate(&self, token: &Token) -> Result<Arc<Identity>, AuthnError> {
        let key = self.key_of(token);
        let (entry, hit) = self.lookup(&key, token).await;
        let result = match entry.verdict {
            // Not a verdict: neither a hit nor a miss.
            Cached::Failed(e) => return Err(e),
            Cached::Valid(identity) => Ok(identity),
            Cached::Rejected(why) => Err(AuthnError::Rejected(why)),
        };
        // Without trace export there is no span to annotate; looking up
        // the current one still costs a dispatcher round trip per check.
        if crate::telemetry::spans_enabled() {
            tracing::Span::current().set_attribute("hydra_authz.cache.hit", hit);
        }
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
        let stored = self.cache.peek(&self.key_of(token));
        match stored.filter(|e| self.trusted() && e.usable(Instant::now())) {
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
    /// The cache key a token purge names.
    fn purge_key(&self, token: &Token) -> CacheKey;
    fn purge(&self, target: &PurgeTarget);
}

impl<A: Send + Sync + 'static> Purge for SharedVerifier<A> {
    fn purge_key(&self, token: &Token) -> CacheKey {
        self.key_of(token)
    }

    fn purge(&self, target: &PurgeTarget) {
        // Before removing: a load finishing meanwhile must see the change.
        self.purges.fetch_add(1, Ordering::AcqRel);
        match target {
            PurgeTarget::Key(key) => {
                self.cache.remove(key);
            }
            PurgeTarget::All => self.cache.clear(),
            // Loads in progress (until = None) stay: their waiters hold them
            // and the purge counter keeps them from being stored.
            other => self.cache.retain(|_, e| e.until.is_none() || !e.matches(other)),
        }
        if let Some(stale) = &self.stale {
            match target {
                PurgeTarget::Key(key) => {
                    stale.entries.remove(key);
                }
                PurgeTarget::All => stale.entries.clear(),
                other => stale.entries.retain(|_, s| !purged_by(other, s.fp, Some(&s.identity))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Answers with each verdict in turn, then allows.
    struct Answers(Mutex<Vec<Result<Arc<Identity>, AuthnError>>>);

    impl Answers {
        fn new(first: Vec<Result<Arc<Identity>, AuthnError>>) -> Answers {
            Answers(Mutex::new(first.into_iter().rev().collect()))
        }
    }

    impl Authenticator for Answers {
        async fn authenticate(&self, _token: &Token) -> Result<Arc<Identity>, AuthnError> {
            let next = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
            next.unwrap_or_else(|| Ok(Arc::new(Identity::default())))
        }
    }

    /// Identities with an 8 KiB `ext` (what a token hook may add) count
    /// nine times against `max_entries`, small ones once: a flood of fat
    /// identities cannot hold more than about `max_entries` KiB.
    #[tokio::test]
    async fn large_identities_weigh_what_they_hold() {
        struct Fat(bool);
        impl Authenticator for Fat {
            async fn authenticate(&self, _token: &Token) -> Result<Arc<Identity>, AuthnError> {
                let ext = self
                    .0
                    .then(|| Arc::new(serde_json::json!({"blob": "x".repeat(8 * 1024)})));
                Ok(Arc::new(Identity {
                    scopes: vec!["read_date".into()].into(),
                    ext,
                    ..Identity::default()
                }))
            }
        }
        let cfg = CacheConfig {
            enabled: true,
            max_entries: 1_000,
            stale_if_error_ms: 60_000,
            ..Default::default()
        };
        let fat = SharedVerifier::new(Fat(true), &cfg, Duration::ZERO, Arc::new(Metrics::new()));
        let thin = SharedVerifier::new(Fat(false), &cfg, Duration::ZERO, Arc::new(Metrics::new()));
        for n in 0..500 {
            let token = Token::new(format!("token-{n}"));
            assert!(fat.authenticate(&token).await.is_ok());
            assert!(thin.authenticate(&token).await.is_ok());
        }
        let stale = |c: &SharedVerifier<Fat>| c.stale.as_ref().map(|s| (s.entries.len(), s.entries.weight()));
        for (len, weight) in [(fat.cache.len(), fat.cache.weight()), stale(&fat).expect("stale store")] {
            assert!(weight <= 1_000 && len <= 1_000 / 9 + 1, "{len} entries weigh {weight}");
        }
        assert_eq!(thin.cache.len(), 500, "small identities count once each");
        assert_eq!(stale(&thin), Some((500, 500)));
    }

    fn with_negative_cache(first: Vec<Result<Arc<Identity>, AuthnError>>) -> SharedVerifier<Answers> {
        let cfg = CacheConfig {
            enabled: true,
            negative_ttl_ms: 60_000,
            ..Default::default()
        };
        SharedVerifier::new(Answers::new(first), &cfg, Duration::ZERO, Arc::new(Metrics::new()))
    }

    /// A key our JWKS copy does not hold yet, or a token the issuer's
    /// clock dates ahead of ours, may verify on the next check: the
    /// negative cache must not keep saying no (it did, for negative_ttl_ms).
    /// A rejection about the token itself is still remembered.
    #[tokio::test]
    async fn unknown_key_rejection_is_not_remembered() {
        for why in [ClaimFailure::UnknownKey, ClaimFailure::NotYetValid] {
            let cache = with_negative_cache(vec![Err(AuthnError::Rejected(why.clone()))]);
            let token = Token::new("t");
            let first = cache.authenticate(&token).await;
            assert!(matches!(&first, Err(AuthnError::Rejected(w)) if *w == why), "{first:?}");
            let again = cache.authenticate(&token).await;
            assert!(again.is_ok(), "{why:?} was remembered: {again:?}");
        }
        let cache = with_negative_cache(vec![Err(AuthnError::Rejected(ClaimFailure::Inactive))]);
        let token = Token::new("t");
        for _ in 0..2 {
            let got = cache.authenticate(&token).await;
            assert!(
                matches!(got, Err(AuthnError::Rejected(ClaimFailure::Inactive))),
                "an inactive token is remembered: {got:?}"
            );
        }
    }

    /// A stale-if-error cache whose inner authenticator first allows the
    /// token (kept for 1 ms, recorded for 60 s), then answers `then` in turn.
    async fn after_an_allow(then: Vec<Result<Arc<Identity>, AuthnError>>) -> (SharedVerifier<Answers>, Token) {
        let cfg = CacheConfig {
            enabled: true,
            ttl_ms: 1,
            negative_ttl_ms: 60_000,
            stale_if_error_ms: 60_000,
            ..Default::default()
        };
        let mut answers = vec![Ok(Arc::new(Identity::default()))];
        answers.extend(then);
        let cache = SharedVerifier::new(Answers::new(answers), &cfg, Duration::ZERO, Arc::new(Metrics::new()));
        let token = Token::new("t");
        assert!(cache.authenticate(&token).await.is_ok());
        tokio::time::sleep(Duration::from_millis(20)).await;
        (cache, token)
    }

    fn failed_with(got: &Result<Arc<Identity>, AuthnError>, want: FailureKind) -> bool {
        matches!(got, Err(AuthnError::Unavailable { kind, .. }) if *kind == want)
    }

    /// Hydra answers `active: false` for its own storage errors too. For a
    /// token it called active within the stale window the refusal stands
    /// (it may be a revocation) but is not remembered, so an outage cannot
    /// outlive itself by negative_ttl_ms; a token never seen active is
    /// remembered as before.
    #[tokio::test]
    async fn inactive_after_recently_active_is_refused_but_not_remembered() {
        let inactive = || Err(AuthnError::Rejected(ClaimFailure::Inactive));
        let (cache, token) = after_an_allow(vec![inactive(), inactive(), inactive()]).await;
        // An outage that sees the token three times: each refusal asks again.
        for _ in 0..3 {
            let got = cache.authenticate(&token).await;
            assert!(
                matches!(got, Err(AuthnError::Rejected(ClaimFailure::Inactive))),
                "{got:?}"
            );
        }
        let got = cache.authenticate(&token).await;
        assert!(got.is_ok(), "the refusal was remembered past the outage: {got:?}");

        // The record kept after a refusal is a marker, never served: Hydra
        // unreachable next is a 503, not the identity it refused.
        let connect = Err(AuthnError::unavailable(FailureKind::Connect, "x"));
        let (cache, token) = after_an_allow(vec![inactive(), connect]).await;
        assert!(cache.authenticate(&token).await.is_err());
        let got = cache.authenticate(&token).await;
        assert!(
            failed_with(&got, FailureKind::Connect),
            "a refused identity was served stale: {got:?}"
        );
        // Nor may an answer the holder can shape (too large, unreadable)
        // fall back on an older identity.
        // Nor a 429: a flood of made-up tokens from the holder can spend
        // the issuer's quota.
        for kind in [FailureKind::TooLarge, FailureKind::RateLimited] {
            let (cache, token) = after_an_allow(vec![Err(AuthnError::unavailable(kind, "x"))]).await;
            let got = cache.authenticate(&token).await;
            assert!(
                failed_with(&got, kind),
                "{kind}: bridged with the stale identity: {got:?}"
            );
        }

        let cfg = CacheConfig {
            enabled: true,
            negative_ttl_ms: 60_000,
            stale_if_error_ms: 60_000,
            ..Default::default()
        };
        let answers = Answers::new(vec![inactive(), Ok(Arc::new(Identity::default()))]);
        let cache = SharedVerifier::new(answers, &cfg, Duration::ZERO, Arc::new(Metrics::new()));
        for _ in 0..2 {
            let got = cache.authenticate(&Token::new("never-active")).await;
            assert!(
                matches!(got, Err(AuthnError::Rejected(ClaimFailure::Inactive))),
                "never seen active: remembered: {got:?}"
            );
        }
    }
}
