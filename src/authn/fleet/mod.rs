//! The fleet: replicas that share one truth about revocation, through Redis
//! (`[cluster]`). Off unless `redis_url` is set.
//!
//! - **Purges reach every replica**: a purge is applied locally, then
//!   published on `<prefix>:purge`; every replica (this one included)
//!   drops the matching cache entries when it arrives ([`subscriber`]).
//! - **No purge can be missed silently**: while the subscription is down a
//!   replica does not serve from its cache at all (every check is verified
//!   afresh) until it has resubscribed and emptied its cache. Revocation
//!   safety beats hit rate.
//! - **Shared L2 cache** (opt-in, [`shared_cache`]): verified identities in
//!   Redis, keyed and authenticated with the cluster secret.
//! - **Redis trouble never allows**: a failed, slow or odd Redis answer is
//!   treated as a miss; checks go on to introspection.
//!
//! Everything on the request path is bounded by `timeout_ms`.

pub mod config;
pub mod purge;
pub(crate) mod shared_cache;
pub mod subscriber;

use crate::extract::credential::Token;
use crate::metrics::Metrics;
use anyhow::Context;
use aws_lc_rs::hmac;
use purge::{CacheKey, Message, PurgeTarget};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError};
use std::time::Duration;

pub use config::ClusterConfig;

/// A purge: the next epoch after both Redis's and ours (a Redis that
/// restarted empty must not send the fleet back to an epoch whose entries
/// may still be stored). Epochs stay below 2^52: Lua numbers are doubles.
const BUMP_EPOCH: &str = "local n = math.max(tonumber(redis.call('GET', KEYS[1])) or 0, tonumber(ARGV[1])) + 1 \
if n > 4503599627370496 then return redis.error_reply('epoch out of range') end \
redis.call('SET', KEYS[1], string.format('%d', n)) return n";

/// On (re)subscribe: max(Redis, ours), written back so Redis never lags.
const SYNC_EPOCH: &str = "local cur = tonumber(redis.call('GET', KEYS[1])) or 0 \
local n = math.max(cur, tonumber(ARGV[1])) \
if n > 4503599627370496 then return redis.error_reply('epoch out of range') end \
if n ~= cur then redis.call('SET', KEYS[1], string.format('%d', n)) end return n";

/// In `l2_barrier`: shared reads are suspended; the other bits hold the
/// epoch this replica held when they were (epochs stay below 2^52).
const SUSPENDED: u64 = 1 << 63;

/// The epoch a suspended `l2_barrier` holds; `None` when not suspended.
fn suspension(barrier: u64) -> Option<u64> {
    (barrier & SUSPENDED != 0).then_some(barrier & !SUSPENDED)
}

/// `l2_barrier` suspended at the later of `epoch` and the epoch a
/// suspension already in `barrier` holds.
fn suspended_at(barrier: u64, epoch: u64) -> u64 {
    SUSPENDED | suspension(barrier).unwrap_or(0).max(epoch & !SUSPENDED)
}

/// What the local cache does with a purge (set once by whoever owns the
/// cache; the subscriber calls it for every message and on resubscribe).
type PurgeHook = Box<dyn Fn(&PurgeTarget) + Send + Sync>;

/// Keys derived from the cluster secret, one per use, so a tag made for
/// one purpose can never pass for another.
pub(crate) struct Keys {
    /// Cache keys: HMAC(token).
    pub(crate) cache: hmac::Key,
    /// Purge messages.
    pub(crate) message: hmac::Key,
    /// Shared-cache values.
    pub(crate) value: hmac::Key,
}

impl Keys {
    fn derive(secret: &[u8]) -> Keys {
        let root = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let sub = |label: &str| hmac::Key::new(hmac::HMAC_SHA256, hmac::sign(&root, label.as_bytes()).as_ref());
        Keys {
            cache: sub("hydra-authz/v1/cache-key"),
            message: sub("hydra-authz/v1/purge-message"),
            value: sub("hydra-authz/v1/shared-value"),
        }
    }
}

pub struct Fleet {
    client: redis::Client,
    /// Reconnects by itself; every use is bounded by `timeout`.
    commands: redis::aio::ConnectionManager,
    prefix: String,
    timeout: Duration,
    health_interval: Duration,
    keys: Keys,
    shared_cache: bool,
    subscribed: AtomicBool,
    /// A step for a purge behind the epoch held is pending or running
    /// (see [`Fleet::step_past_a_purge_behind`]); when the last one began.
    stepping_past: AtomicBool,
    last_step_past: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// Purges behind the epoch held, heard so far: a step answers those
    /// heard before it began, not one that came while it ran.
    purges_behind: AtomicU64,
    /// The shared cache's current epoch (see [`shared_cache`]).
    epoch: AtomicU64,
    /// The last epoch this replica started itself ([`Fleet::step_epoch`]):
    /// a purge heard at the epoch already held is our own echo only if it
    /// is this one; from anyone else it was started a second time, after
    /// Redis lost its key, and is as behind as a lower one.
    started: AtomicU64,
    /// The shared cache is read only at epochs from this one on (0: any).
    /// A purge that could not start a new epoch (the step failed, or
    /// Redis's epoch was set out of range) suspends reads: [`SUSPENDED`]
    /// and the epoch held then. Only a purge that started a later epoch
    /// (or this replica's own step when it resubscribes) ends that, and
    /// reads resume from its epoch on.
    l2_barrier: AtomicU64,
    /// Unreadable purge messages acted on at most once per window; those
    /// held back are acted on once when their window ends.
    unreadable: std::sync::Mutex<Throttle>,
    on_purge: OnceLock<PurgeHook>,
    metrics: Arc<Metrics>,
}

/// Why a purge could not be told to the fleet.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("Redis did not answer within {0} ms")]
    Timeout(u64),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

impl Fleet {
    /// The fleet `cfg` describes, or `None` when `[cluster]` is off. Reads
    /// the secrets and certificates now (a missing one stops start-up);
    /// connects lazily, so a Redis that is down at start only means the
    /// cache is bypassed until it is up.
    pub fn start(cfg: &ClusterConfig, metrics: Arc<Metrics>) -> anyhow::Result<Option<Arc<Fleet>>> {
        let Some(url) = &cfg.redis_url else {
            return Ok(None);
        };
        // redis-rs builds its rustls config from the process default.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut info = redis::IntoConnectionInfo::into_connection_info(url.as_str()).context("cluster.redis_url")?;
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &cfg.username {
            settings = settings.set_username(user);
        }
        if cfg.password_file.is_some() || cfg.password_env.is_some() {
            let pw = crate::secret::read(cfg.password_env.as_deref(), cfg.password_file.as_deref())
                .context("cluster.password")?;
            settings = settings.set_password(pw);
        }
        info = info.set_redis_settings(settings);
        let tls = reqwest::Url::parse(url).is_ok_and(|u| u.scheme() == "rediss");
        let client = if tls {
            let read = |p: &std::path::Path| std::fs::read(p).with_context(|| format!("cluster: {}", p.display()));
            let root_cert = cfg.tls_ca_file.as_deref().map(read).transpose()?;
            let client_tls = match (&cfg.tls_cert_file, &cfg.tls_key_file) {
                (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                    client_cert: read(cert)?,
                    client_key: read(key)?,
                }),
                _ => None,
            };
            redis::Client::build_with_tls(info, redis::TlsCertificates { client_tls, root_cert })
        } else {
            redis::Client::open(info)
        }
        .context("cluster.redis_url")?;
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let commands = client
            .get_connection_manager_lazy(
                redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout.max(Duration::from_secs(1))))
                    .set_response_timeout(Some(timeout))
                    // A failed command is not retried: the check goes on without Redis.
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(2)),
            )
            .context("cluster: Redis connection")?;
        let secret =
            crate::secret::read(cfg.secret_env.as_deref(), cfg.secret_file.as_deref()).context("cluster.secret")?;
        anyhow::ensure!(
            secret.len() >= config::MIN_SECRET_BYTES,
            "cluster.secret: at least {} bytes (e.g. `openssl rand -hex 32`)",
            config::MIN_SECRET_BYTES
        );
        Ok(Some(Arc::new(Fleet {
            client,
            commands,
            prefix: cfg.key_prefix.clone(),
            timeout,
            health_interval: Duration::from_millis(cfg.health_interval_ms),
            keys: Keys::derive(secret.as_bytes()),
            shared_cache: cfg.shared_cache,
            subscribed: AtomicBool::new(false),
            stepping_past: AtomicBool::new(false),
            purges_behind: AtomicU64::new(0),
            last_step_past: std::sync::Mutex::new(None),
            epoch: AtomicU64::new(0),
            started: AtomicU64::new(0),
            l2_barrier: AtomicU64::new(0),
            unreadable: std::sync::Mutex::new(Throttle::new(UNREADABLE_WINDOW)),
            on_purge: OnceLock::new(),
            metrics,
        })))
    }

    /// Whether the local cache may be served from: only while the purge
    /// subscription is up (and was followed by a flush), and only once
    /// someone applies purges to it.
    pub fn cache_trusted(&self) -> bool {
        self.subscribed.load(Ordering::Acquire) && self.on_purge.get().is_some()
    }

    /// The shared cache's epoch as this replica knows it.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn shares_cache(&self) -> bool {
        self.shared_cache
    }

    /// Whether the shared cache may be read at `epoch` (see `l2_barrier`).
    pub fn shared_readable(&self, epoch: u64) -> bool {
        let barrier = self.l2_barrier.load(Ordering::Acquire);
        suspension(barrier).is_none() && epoch >= barrier
    }

    /// A purge went by that started no new epoch: no shared read at all
    /// (this replica's epoch may lag the one the purge meant to end) until
    /// a purge that started a later epoch than the one held now is heard
    /// ([`Fleet::resume_shared_reads`]).
    fn suspend_shared_reads(&self) {
        // Without a shared cache there is nothing to suspend (and nothing
        // to show as suspended).
        if !self.shared_cache {
            return;
        }
        // Until the epoch read is the one held: a message adopting a later
        // epoch between the read and the update must not leave the
        // suspension holding an earlier one (a replay of that message
        // would then end it).
        loop {
            let held = self.epoch();
            let _ = self
                .l2_barrier
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| Some(suspended_at(b, held)));
            if self.epoch() == held {
                break;
            }
        }
        self.metrics.fleet.shared_reads_suspended.set(1);
    }

    /// Whether shared reads are suspended, and at which epoch.
    fn suspended_at_epoch(&self) -> Option<u64> {
        let b = self.l2_barrier.load(Ordering::Acquire);
        suspension(b)
    }

    /// A purge started `epoch`. It ends a suspension only if `epoch` is
    /// later than the epoch held when the suspension began: a message
    /// sealed before (replayed by anyone who may PUBLISH on the channel,
    /// or a late one) names an epoch this replica had already reached, and
    /// changes nothing. Reads then resume at `epoch` and above, never
    /// below (a load that began in an older epoch reads nothing). Without
    /// a suspension nothing changes either: an old message cannot lower
    /// the barrier.
    ///
    /// Not covered: a step that ran before the failed one but is announced
    /// after it names a later epoch than a replica that had not heard it
    /// yet holds, and resumes that replica.
    fn resume_shared_reads(&self, epoch: u64) {
        let resumed = self.l2_barrier.fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
            suspension(b).is_some_and(|held| epoch > held).then_some(epoch)
        });
        if resumed.is_ok() {
            self.metrics.fleet.shared_reads_suspended.set(0);
        }
    }

    /// After a resubscription (the local cache just emptied) while shared
    /// reads are suspended: start an epoch here, and resume reads from it.
    /// Safe for the reason a purge's own step is: nothing stored before a
    /// step is read in the epoch it starts, so whatever the failed purge
    /// meant to revoke is not there. Without this, a replica that held a
    /// suspension across a reconnect read no shared entry until someone's
    /// next purge. Other replicas still resume at the next purge.
    async fn resume_by_own_step(&self) {
        if !self.shared_cache || self.suspended_at_epoch().is_none() {
            return;
        }
        match self.step_epoch(self.epoch()).await {
            Ok(e) => {
                self.resume_shared_reads(e);
                tracing::info!(
                    epoch = e,
                    "shared reads were suspended: started epoch {e} here and resumed from it"
                );
            }
            Err(e) => tracing::warn!(error = %e, "shared reads stay suspended: no new epoch could be started"),
        }
    }

    /// A purge named an epoch behind the one read here. Redis may have
    /// lost its epoch key (evicted, flushed, deleted) and a replica started
    /// since purged from what was left: entries of the epoch held here may
    /// predate the purge, so reads stopped (the caller suspended them), and
    /// an epoch past the one held is started here, after which they resume.
    /// The message may as well be old (overtaken by a later purge, or
    /// replayed by someone who may PUBLISH): the wire cannot tell, so that
    /// costs the shared entries until the fleet's next purge too, never a
    /// revoked token. One step at a time and at most one a second (released
    /// by `Drop`), so a flood of replays is not a flood of scripts.
    fn step_past_a_purge_behind(self: &Arc<Self>) {
        /// The `stepping_past` flag, released when dropped (a task ended
        /// by the runtime's shutdown included).
        struct Stepping<'a>(&'a AtomicBool);
        impl Drop for Stepping<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        if self.stepping_past.swap(true, Ordering::AcqRel) {
            return;
        }
        let fleet = self.clone();
        tokio::spawn(async move {
            for _ in 0..3 {
                let stepping = Stepping(&fleet.stepping_past);
                let last = *fleet.last_step_past.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(last) = last {
                    tokio::time::sleep_until(last + Duration::from_secs(1)).await;
                }
                *fleet.last_step_past.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(tokio::time::Instant::now());
                let answered = fleet.purges_behind.load(Ordering::Acquire);
                fleet.resume_by_own_step().await;
                // One that came while this stepped found the flag set and
                // left the step to us; the step may have lifted its
                // suspension (an epoch begun before it): stop reads again
                // and step once more. If Redis could not step (down), reads
                // stay stopped and a resubscription steps later.
                let more = fleet.purges_behind.load(Ordering::Acquire) != answered;
                if more {
                    fleet.suspend_shared_reads();
                }
                drop(stepping);
                let done = !more && fleet.suspended_at_epoch().is_none();
                if done || fleet.stepping_past.swap(true, Ordering::AcqRel) {
                    return;
                }
            }
            fleet.stepping_past.store(false, Ordering::Release);
        });
    }

    /// After a resubscription found (and adopted) `synced`: a suspension
    /// stays, now holding `synced`. An epoch in Redis later than the one
    /// held when reads were suspended does not show that a purge stepped
    /// it after the one that could not: the step may have run before it
    /// and been announced late (or not at all), or someone with access to
    /// Redis may have set the key, and that epoch's entries may hold what
    /// the purge meant to revoke. So only a step after this sync (a
    /// purge's, or this replica's own in [`Fleet::resume_by_own_step`])
    /// resumes reads here.
    fn keep_suspension_past(&self, synced: u64) {
        let _ = self.l2_barrier.fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
            suspension(b).map(|_| suspended_at(b, synced))
        });
    }

    /// The cache key of `token`: HMAC-SHA-256 with a key derived from the
    /// cluster secret, so a key published or stored in Redis reveals
    /// nothing about the token even to someone holding candidate tokens.
    pub fn cache_key(&self, token: &Token) -> CacheKey {
        let tag = hmac::sign(&self.keys.cache, token.expose().as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(tag.as_ref());
        key
    }

    /// A name for verification `settings` (the serialized
    /// `[introspection]`), stored with every shared value: keyed with the
    /// cluster secret, because the settings may hold a secret (an API key
    /// in the URL's query) that a plain digest in Redis would let anyone
    /// who can read it test guesses of offline.
    pub fn policy_of(&self, settings: &[u8]) -> String {
        let mut input = b"hydra-authz/v1/policy:".to_vec();
        input.extend_from_slice(settings);
        hex::encode(&hmac::sign(&self.keys.value, &input).as_ref()[..8])
    }

    /// Set what the local cache does with a purge; the first call wins.
    pub fn on_purge(&self, hook: impl Fn(&PurgeTarget) + Send + Sync + 'static) {
        let _ = self.on_purge.set(Box::new(hook));
    }

    fn apply_locally(&self, target: &PurgeTarget) {
        if let Some(hook) = self.on_purge.get() {
            hook(target);
        }
    }

    fn channel(&self) -> String {
        format!("{}:purge", self.prefix)
    }

    fn epoch_key(&self) -> String {
        format!("{}:epoch", self.prefix)
    }

    /// Run one Redis command on the shared connection within `timeout`.
    async fn run<T: redis::FromRedisValue>(&self, what: &'static str, cmd: &redis::Cmd) -> Result<T, FleetError> {
        let mut conn = self.commands.clone();
        let result = match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(r) => r.map_err(FleetError::from),
            Err(_) => Err(FleetError::Timeout(
                u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
            )),
        };
        if result.is_err() {
            self.metrics.fleet.redis_error(what);
        }
        result
    }

    /// Tell every replica (this one included, through its subscription).
    /// Every purge first starts a new shared-cache epoch (one script, so a
    /// replica whose epoch lags cannot step back; see [`shared_cache`]):
    /// nothing stored before it, nor written late by a load that began
    /// before it, is read again, and no sealed value can be replayed into
    /// the new epoch.
    ///
    /// When the epoch cannot be started, the purge still goes out, with
    /// epoch 0: every replica that hears it (this one at once) drops its
    /// own entries and stops reading the shared cache until an epoch after
    /// its current one starts; a purge by token also deletes that token's
    /// shared entry. The step is then retried in the background for up to
    /// [`EPOCH_RETRY`] tries, and once it succeeds the same purge goes out
    /// again with the new epoch: that ends the suspension (on every replica
    /// that held an older epoch when it suspended; see
    /// [`Fleet::resume_shared_reads`]), and leaves nothing of the old epoch
    /// for a replica that starts or resubscribes later. The caller is told
    /// ([`Published::epoch_started`]).
    pub async fn publish(self: &Arc<Self>, target: &PurgeTarget) -> Result<Published, FleetError> {
        let local = self.epoch();
        let epoch = match self.step_epoch(local).await {
            Ok(e) => {
                self.resume_shared_reads(e);
                e
            }
            // Without a shared cache the epoch guards nothing.
            Err(_) if !self.shared_cache => local,
            Err(e) => {
                tracing::warn!(error = %e, "purge: no new shared-cache epoch; shared reads suspended, retrying the step in the background");
                self.suspend_shared_reads();
                if let PurgeTarget::Key(key) = target {
                    let _ = self.delete_shared(key, local).await;
                }
                // Also when the message below cannot be sent: once Redis is
                // back, the retry delivers this purge to the fleet after all.
                self.clone().finish_epoch_step(target.clone());
                0
            }
        };
        let receivers = self.send(target, epoch).await?;
        Ok(Published {
            receivers,
            epoch_started: !(self.shared_cache && epoch == 0),
        })
    }

    /// `BUMP_EPOCH`: the new epoch, adopted here.
    async fn step_epoch(&self, local: u64) -> Result<u64, FleetError> {
        let e: u64 = self
            .run(
                "eval",
                redis::cmd("EVAL")
                    .arg(BUMP_EPOCH)
                    .arg(1)
                    .arg(self.epoch_key())
                    .arg(local),
            )
            .await?;
        self.started.fetch_max(e, Ordering::AcqRel);
        self.epoch.fetch_max(e, Ordering::AcqRel);
        Ok(e)
    }

    /// Publish one sealed purge message; how many subscribers got it.
    async fn send(&self, target: &PurgeTarget, epoch: u64) -> Result<u64, FleetError> {
        let message = Message {
            target: target.clone(),
            epoch,
        }
        .seal(&self.keys.message);
        let receivers: u64 = self
            .run("publish", redis::cmd("PUBLISH").arg(self.channel()).arg(message))
            .await?;
        self.metrics.fleet.purges_published.inc();
        Ok(receivers)
    }

    /// Keep trying to start the epoch a purge could not; then send the
    /// purge again with it. Bounded: an epoch key set out of range by
    /// someone with Redis access keeps failing, and the shared cache then
    /// stays suspended (safe) until a purge succeeds.
    fn finish_epoch_step(self: Arc<Self>, target: PurgeTarget) {
        tokio::spawn(async move {
            for _ in 0..EPOCH_RETRY {
                tokio::time::sleep(EPOCH_RETRY_EVERY).await;
                let Ok(epoch) = self.step_epoch(self.epoch()).await else {
                    continue;
                };
                // Here at once, should our own subscription be down.
                self.resume_shared_reads(epoch);
                match self.send(&target, epoch).await {
                    Ok(_) => tracing::info!(epoch, "purge: the new shared-cache epoch started; shared reads resume"),
                    Err(e) => {
                        tracing::warn!(error = %e, epoch, "purge: epoch started but not announced; shared reads resume here, and on the other replicas at the next purge that starts an epoch")
                    }
                }
                return;
            }
            tracing::error!("purge: no new shared-cache epoch could be started; the shared cache stays unused until a purge succeeds");
        });
    }

    /// After (re)subscribing: the fleet's epoch, never behind ours (Redis
    /// may have restarted empty or lost the key; see [`SYNC_EPOCH`]). A
    /// suspension of shared reads stays ([`Fleet::adopt_synced_epoch`]).
    async fn sync_epoch(&self) -> Result<u64, FleetError> {
        let e: u64 = self
            .run(
                "eval",
                redis::cmd("EVAL")
                    .arg(SYNC_EPOCH)
                    .arg(1)
                    .arg(self.epoch_key())
                    .arg(self.epoch()),
            )
            .await?;
        self.adopt_synced_epoch(e);
        Ok(e)
    }

    /// The epoch a resubscription found in Redis, adopted; a suspension
    /// now holds it (see [`Fleet::keep_suspension_past`]).
    fn adopt_synced_epoch(&self, synced: u64) {
        self.epoch.fetch_max(synced, Ordering::AcqRel);
        self.keep_suspension_past(self.epoch());
    }

    /// A message from the purge channel.
    fn receive(self: &Arc<Self>, payload: &[u8]) {
        self.metrics.fleet.purges_received.inc();
        match Message::open(&self.keys.message, payload) {
            Ok(m) => {
                let held = self.epoch.fetch_max(m.epoch, Ordering::AcqRel);
                let ours = m.epoch == self.started.load(Ordering::Acquire);
                if m.epoch == 0 {
                    self.suspend_shared_reads();
                } else if (m.epoch < held || (m.epoch == held && !ours)) && self.shared_cache {
                    self.purges_behind.fetch_add(1, Ordering::AcqRel);
                    self.suspend_shared_reads();
                    self.step_past_a_purge_behind();
                } else {
                    self.resume_shared_reads(m.epoch);
                }
                tracing::debug!(target = %m.target.describe(), "purge from the fleet");
                self.apply_locally(&m.target);
            }
            Err(why) => {
                // A purge we cannot read, or one not sealed by the fleet:
                // drop everything rather than keep a token someone meant
                // to revoke, and adopt nothing from it. At most once per
                // UNREADABLE_WINDOW: a flood of junk on the channel (anyone
                // who may PUBLISH there) must not become a log flood and a
                // full cache scan per message on every replica.
                self.metrics.fleet.purges_unreadable.inc();
                let admitted = self.unreadable().admit(tokio::time::Instant::now());
                match admitted {
                    Admit::Now(suppressed) => {
                        tracing::warn!(
                            error = %crate::telemetry::EscapedText(&why),
                            more_since_last = suppressed,
                            "unreadable purge message; emptying the cache"
                        );
                        self.apply_locally(&PurgeTarget::All);
                    }
                    // Held back, not dropped: it may be a purge a newer
                    // version or a rotated secret sent.
                    Admit::At(due) => self.flush_held_back_at(due),
                    Admit::Held => {}
                }
            }
        }
    }

    fn unreadable(&self) -> std::sync::MutexGuard<'_, Throttle> {
        self.unreadable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Empty the cache at `due`, the end of the window in which unreadable
    /// messages were held back: one flush for all of them, still at most
    /// one per window. Not tied to the subscription (a session that ends
    /// meanwhile flushes on resubscribe anyway; once more does no harm).
    fn flush_held_back_at(self: &Arc<Self>, due: tokio::time::Instant) {
        let fleet = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            let held_back = fleet.unreadable().due(tokio::time::Instant::now());
            if let Some(n) = held_back {
                tracing::warn!(held_back = n, "unreadable purge messages held back; emptying the cache");
                fleet.apply_locally(&PurgeTarget::All);
            }
        });
    }

    /// One line for `/readyz`'s detail.
    pub fn status(&self) -> String {
        if self.cache_trusted() {
            let suspended = match self.suspended_at_epoch() {
                Some(e) => format!(
                    "; shared reads suspended since epoch {e} (a purge could not start an epoch; the next one that \
                     does resumes them)"
                ),
                None => String::new(),
            };
            format!(
                "cluster: purge subscription up (epoch {}){suspended}",
                self.epoch.load(Ordering::Acquire)
            )
        } else {
            "cluster: purge subscription down; cache bypassed, every check verified".into()
        }
    }
}

/// What a purge's publication achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Subscribers Redis delivered it to.
    pub receivers: u64,
    /// False when the shared cache is on and no new epoch could be started
    /// for it (see [`Fleet::publish`]).
    pub epoch_started: bool,
}

/// Tries, [`EPOCH_RETRY_EVERY`] apart, to start an epoch a purge could not.
const EPOCH_RETRY: u32 = 60;
const EPOCH_RETRY_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// How often a replica acts on unreadable purge messages (flush, log).
const UNREADABLE_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// Lets an event through at most once per `window`; the rest are held
/// back and acted on once, together, when their window ends.
#[derive(Debug)]
struct Throttle {
    window: std::time::Duration,
    last: Option<tokio::time::Instant>,
    suppressed: u64,
    /// An act is owed for the events held back ([`Admit::At`] was told).
    owed: bool,
}

/// What to do with one event.
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    /// Act now; this many events were held back since the last act.
    Now(u64),
    /// Held back, the first in its window: act at this instant (the end
    /// of the window) for it and every event held back until then, by
    /// asking [`Throttle::due`].
    At(tokio::time::Instant),
    /// Held back; an act is already owed for it.
    Held,
}

impl Throttle {
    fn new(window: std::time::Duration) -> Throttle {
        Throttle {
            window,
            last: None,
            suppressed: 0,
            owed: false,
        }
    }

    fn admit(&mut self, now: tokio::time::Instant) -> Admit {
        let within = self.last.filter(|t| now.saturating_duration_since(*t) < self.window);
        if let Some(last) = within {
            self.suppressed = self.suppressed.saturating_add(1);
            if std::mem::replace(&mut self.owed, true) {
                return Admit::Held;
            }
            return Admit::At(last.checked_add(self.window).unwrap_or(now));
        }
        self.last = Some(now);
        // This act covers whatever was held back.
        self.owed = false;
        Admit::Now(std::mem::take(&mut self.suppressed))
    }

    /// The act an [`Admit::At`] asked for: `Some(n)` to act now for the `n`
    /// events held back (a new window starts), `None` when an act since
    /// then already covered them.
    fn due(&mut self, now: tokio::time::Instant) -> Option<u64> {
        if !std::mem::take(&mut self.owed) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
impl Fleet {
    /// A fleet whose Redis cannot be reached (nothing listens on port 1):
    /// every command fails, nothing is connected until first use. The
    /// cluster secret is written to `secret`.
    pub(crate) fn unreachable_for_tests(secret: &tempfile::NamedTempFile, shared_cache: bool) -> Arc<Fleet> {
        std::fs::write(secret.path(), "k".repeat(32)).expect("write");
        let cfg = ClusterConfig {
            redis_url: Some("redis://127.0.0.1:1/0".into()),
            secret_file: Some(secret.path().to_owned()),
            shared_cache,
            ..ClusterConfig::default()
        };
        Fleet::start(&cfg, Arc::new(Metrics::new()))
            .expect("start")
            .expect("on")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Junk on the purge channel is acted on (cache emptied, one WARN) at
    /// most once a second; the rest is counted and acted on once, when the
    /// window ends, or by the next event that acts, whichever comes first.
    #[test]
    fn unreadable_purges_are_throttled() {
        let t0 = tokio::time::Instant::now();
        let ms = std::time::Duration::from_millis;
        let mut t = Throttle::new(ms(1_000));
        assert_eq!(t.admit(t0), Admit::Now(0), "the first acts at once");
        assert_eq!(
            t.admit(t0 + ms(1)),
            Admit::At(t0 + ms(1_000)),
            "the next is owed an act"
        );
        let acted = (2..10_000u64)
            .filter(|i| t.admit(t0 + ms(i / 20)) != Admit::Held)
            .count();
        assert_eq!(acted, 0, "9,998 more within the window: none acts, none owed again");
        assert_eq!(
            t.admit(t0 + ms(1_000)),
            Admit::Now(9_999),
            "the next window reports them"
        );
        assert_eq!(t.due(t0 + ms(1_000)), None, "that act covered what was owed");
        assert_eq!(t.admit(t0 + ms(1_001)), Admit::At(t0 + ms(2_000)));
        assert_eq!(t.due(t0 + ms(2_000)), Some(1), "acted on at the window's end");
        assert_eq!(t.due(t0 + ms(2_000)), None, "once");
        assert_eq!(
            t.admit(t0 + ms(2_500)),
            Admit::At(t0 + ms(3_000)),
            "a new window began there"
        );
        assert_eq!(t.admit(t0 + ms(5_000)), Admit::Now(1));
        // A clock that goes back never panics and never acts early.
        assert!(matches!(t.admit(t0), Admit::At(_)));
    }

    /// A fleet whose Redis is never reached (it connects lazily).
    fn lazy_fleet(secret: &tempfile::NamedTempFile) -> Arc<Fleet> {
        lazy_fleet_sharing(secret, true)
    }

    fn lazy_fleet_sharing(secret: &tempfile::NamedTempFile, shared_cache: bool) -> Arc<Fleet> {
        Fleet::unreachable_for_tests(secret, shared_cache)
    }

    /// Unreadable messages held back by the throttle are not dropped: one
    /// flush follows when their window ends (a rolling upgrade or a secret
    /// rotation sends two real purges 300 ms apart: the second must bite
    /// too). Before, only the first message of a window flushed.
    #[tokio::test(start_paused = true)]
    async fn suppressed_unreadable_purge_flushes_at_window_end() {
        let secret = tempfile::NamedTempFile::new().expect("tmp");
        let fleet = lazy_fleet(&secret);
        let flushes = Arc::new(AtomicU64::new(0));
        let counted = flushes.clone();
        fleet.on_purge(move |target| {
            if *target == PurgeTarget::All {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        });
        let ms = Duration::from_millis;
        fleet.receive(b"a purge we cannot read");
        assert_eq!(flushes.load(Ordering::SeqCst), 1, "the first acts at once");
        tokio::time::sleep(ms(300)).await;
        fleet.receive(b"another");
        tokio::time::sleep(ms(10)).await;
        fleet.receive(b"and another");
        assert_eq!(flushes.load(Ordering::SeqCst), 1, "held back within the window");
        tokio::time::sleep(ms(700)).await;
        assert_eq!(
            flushes.load(Ordering::SeqCst),
            2,
            "one flush at the window's end, for both"
        );
        tokio::time::sleep(ms(5_000)).await;
        assert_eq!(flushes.load(Ordering::SeqCst), 2, "and only one");
    }

    fn sealed(fleet: &Fleet, target: PurgeTarget, epoch: u64) -> String {
        Message { target, epoch }.seal(&fleet.keys.message)
    }

    /// A purge that could not start an epoch suspends shared reads (here
    /// at epoch 7, where the purged identity may be stored). A sealed
    /// message from before, captured on the channel and published again
    /// (or one arriving late), must not lift that: only a purge that
    /// started a later epoch does, and reads resume from its epoch on.
    /// Before, any message with an epoch lowered the barrier to it, and
    /// the purged identity came back from the shared cache.
    #[tokio::test]
    async fn a_replayed_sealed_purge_does_not_lift_a_suspension() {
        let secret = tempfile::NamedTempFile::new().expect("tmp");
        let fleet = lazy_fleet(&secret);
        fleet.epoch.store(7, Ordering::Release);
        assert!(fleet.shared_readable(7));
        fleet.receive(sealed(&fleet, PurgeTarget::All, 0).as_bytes());
        assert!(!fleet.shared_readable(7), "suspended");
        for replayed in [
            sealed(&fleet, PurgeTarget::Subject("x".into()), 5),
            sealed(&fleet, PurgeTarget::Key([1; 32]), 7),
        ] {
            fleet.receive(replayed.as_bytes());
            assert!(!fleet.shared_readable(7), "a replayed message lifted the suspension");
            assert!(!fleet.shared_readable(8));
        }
        fleet.receive(sealed(&fleet, PurgeTarget::All, 8).as_bytes());
        assert!(fleet.shared_readable(8), "a purge that stepped the epoch resumes reads");
        assert!(
            !fleet.shared_readable(7),
            "not in the epoch the failed purge meant to end"
        );
        // Nor does an old message lower the barrier once reads resumed: it
        // names an epoch behind the one held, which is what a purge from a
        // replica that lost the fleet's epoch looks like, so reads stop
        // until a later epoch is started (Redis is unreachable here).
        fleet.receive(sealed(&fleet, PurgeTarget::Subject("x".into()), 5).as_bytes());
        assert!(!fleet.shared_readable(7));
        tokio::task::yield_now().await;
        assert!(!fleet.shared_readable(8) && !fleet.shared_readable(9));
        fleet.receive(sealed(&fleet, PurgeTarget::All, 9).as_bytes());
        assert!(fleet.shared_readable(9));
    }

    /// A fleet (Redis unreachable) that applies purges, reading at epoch 10.
    fn purging_at_epoch_10(secret: &tempfile::NamedTempFile) -> Arc<Fleet> {
        let fleet = lazy_fleet(secret);
        fleet.on_purge(|_| {});
        fleet.epoch.store(10, Ordering::Release);
        fleet
    }

    /// Redis lost its epoch key (evicted, flushed, deleted) while replicas
    /// read at epoch 10; a replica that started since purges at epoch 1.
    /// Entries stored at epoch 10 may hold the purged token: a replica
    /// that hears the purge stops reading them at once (and steps an
    /// epoch of its own when Redis answers). Before, it kept its epoch and
    /// read the purged identity back from the shared cache.
    #[tokio::test]
    async fn a_purge_behind_the_epoch_held_stops_shared_reads() {
        let secret = tempfile::NamedTempFile::new().expect("tmp");
        let fleet = purging_at_epoch_10(&secret);
        assert!(fleet.shared_readable(10));
        fleet.receive(sealed(&fleet, PurgeTarget::Key([1; 32]), 1).as_bytes());
        assert!(!fleet.shared_readable(fleet.epoch()), "read pre-purge entries");
        assert_eq!(fleet.metrics.fleet.shared_reads_suspended.get(), 1);
        // The replica's own purge, heard back at the epoch it stepped to,
        // is the usual case and suspends nothing.
        let fleet = purging_at_epoch_10(&secret);
        fleet.started.store(10, Ordering::Release);
        fleet.receive(sealed(&fleet, PurgeTarget::Key([1; 32]), 10).as_bytes());
        assert!(fleet.shared_readable(10));
        fleet.receive(sealed(&fleet, PurgeTarget::Key([1; 32]), 11).as_bytes());
        assert!(fleet.shared_readable(11) && fleet.epoch() == 11);
    }

    /// The same loss, one epoch closer: this replica started epoch 10 with
    /// a purge another replica missed (it held 9); Redis then lost its
    /// key, and that replica's purge started "10" a second time. Entries
    /// stored here at 10 may hold what it purged: hearing a purge at the
    /// epoch held, started elsewhere, stops reads like one behind it.
    /// Before, only a lower epoch did, and the purged identity was read
    /// back from the shared cache.
    #[tokio::test]
    async fn a_purge_at_the_epoch_held_but_started_elsewhere_stops_shared_reads() {
        let secret = tempfile::NamedTempFile::new().expect("tmp");
        let fleet = purging_at_epoch_10(&secret);
        fleet.started.store(10, Ordering::Release);
        // Our own purge's echo first: reads go on.
        fleet.receive(sealed(&fleet, PurgeTarget::Key([1; 32]), 10).as_bytes());
        assert!(fleet.shared_readable(10));
        // A replica that reached 10 by hearing it, then hears it again.
        let fleet = purging_at_epoch_10(&secret);
        fleet.started.store(9, Ordering::Release);
        fleet.receive(sealed(&fleet, PurgeTarget::Subject("s".into()), 10).as_bytes());
        assert!(!fleet.shared_readable(10), "read entries stored before the purge");
        assert_eq!(fleet.purges_behind.load(Ordering::Acquire), 1);
        assert_eq!(fleet.metrics.fleet.shared_reads_suspended.get(), 1);
        // A later purge (a step past it) resumes reads from its epoch on.
        fleet.receive(sealed(&fleet, PurgeTarget::All, 11).as_bytes());
        assert!(fleet.shared_readable(11) && !fleet.shared_readable(10));
    }

    /// A flood of purges behind the epoch held (replays of one old sealed
    /// message, by anyone who may PUBLISH) costs one step at a time and at
    /// most one a second, not a script per message; Redis being down here,
    /// three tries, then reads stay stopped (a resubscription steps later).
    #[tokio::test]
    async fn purges_behind_step_one_at_a_time() {
        let secret = tempfile::NamedTempFile::new().expect("tmp");
        let fleet = purging_at_epoch_10(&secret);
        let old = sealed(&fleet, PurgeTarget::Key([1; 32]), 3);
        let steps = |f: &Fleet| {
            f.metrics
                .fleet
                .redis_errors
                .get_or_create(&crate::metrics::KindLabels { kind: "eval" })
                .get()
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
        while tokio::time::Instant::now() < deadline {
            for _ in 0..50 {
                fleet.receive(old.as_bytes());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let tried = steps(&fleet);
        assert!((1..=5).contains(&tried), "{tried} steps for 4,000 replays in 4 s");
        assert!(
            !fleet.shared_readable(fleet.epoch()),
            "no step succeeded: reads stay stopped"
        );
    }

    /// A suspension shows (gauge, status line) until a purge that stepped
    /// the epoch ends it; a replica's own step that cannot reach Redis
    /// leaves it suspended.
    #[tokio::test]
    async fn a_suspension_shows_and_a_failed_own_step_keeps_it() {
        let secret = tempfile::NamedTempFile::new().expect("tmp");
        let fleet = lazy_fleet(&secret);
        fleet.subscribed.store(true, Ordering::Release);
        fleet.on_purge(|_| {});
        fleet.epoch.store(3, Ordering::Release);
        assert!(!fleet.status().contains("suspended"));
        fleet.receive(sealed(&fleet, PurgeTarget::All, 0).as_bytes());
        assert_eq!(fleet.metrics.fleet.shared_reads_suspended.get(), 1);
        assert!(
            fleet.status().contains("shared reads suspended since epoch 3"),
            "{}",
            fleet.status()
        );
        fleet.resume_by_own_step().await; // Redis unreachable: no epoch.
        assert!(!fleet.shared_readable(3) && !fleet.shared_readable(4));
        assert_eq!(fleet.metrics.fleet.shared_reads_suspended.get(), 1);
        fleet.receive(sealed(&fleet, PurgeTarget::All, 4).as_bytes());
        assert_eq!(fleet.metrics.fleet.shared_reads_suspended.get(), 0);
        assert!(fleet.shared_readable(4) && !fleet.status().contains("suspended"));

        // Without a shared cache there is nothing to suspend or show.
        let secret = tempfile::NamedTempFile::new().expect("tmp");
        let fleet = lazy_fleet_sharing(&secret, false);
        fleet.subscribed.store(true, Ordering::Release);
        fleet.on_purge(|_| {});
        fleet.receive(sealed(&fleet, PurgeTarget::All, 0).as_bytes());
        assert_eq!(fleet.metrics.fleet.shared_reads_suspended.get(), 0);
        assert!(!fleet.status().contains("suspended"), "{}", fleet.status());
    }

    /// A suspended replica that resubscribes and finds a later epoch in
    /// Redis stays suspended (that epoch may have been stepped before the
    /// failed purge, or set by hand), now holding the synced epoch: only a
    /// purge stepped after the sync resumes it. Without a suspension, a
    /// resubscription changes nothing.
    #[tokio::test]
    async fn a_resubscription_does_not_lift_a_suspension() {
        let secret = tempfile::NamedTempFile::new().expect("tmp");
        let fleet = lazy_fleet(&secret);
        fleet.epoch.store(7, Ordering::Release);
        fleet.receive(sealed(&fleet, PurgeTarget::All, 0).as_bytes());
        fleet.adopt_synced_epoch(9);
        assert_eq!(fleet.epoch(), 9);
        assert!(!fleet.shared_readable(9), "a resubscription lifted the suspension");
        fleet.receive(sealed(&fleet, PurgeTarget::Client("c".into()), 9).as_bytes());
        assert!(!fleet.shared_readable(9), "stepped before the sync");
        fleet.receive(sealed(&fleet, PurgeTarget::All, 10).as_bytes());
        assert!(fleet.shared_readable(10));
        assert!(!fleet.shared_readable(9));
        fleet.adopt_synced_epoch(12);
        assert!(fleet.shared_readable(12), "no suspension: reads go on");
    }

    #[tokio::test]
    async fn keys_are_keyed_and_the_fleet_starts_untrusted() {
        let secret = tempfile::NamedTempFile::new().expect("tmp");
        std::fs::write(secret.path(), "k".repeat(32)).expect("write");
        let cfg = ClusterConfig {
            redis_url: Some("redis://127.0.0.1:1/0".into()),
            secret_file: Some(secret.path().to_owned()),
            ..ClusterConfig::default()
        };
        let fleet = Fleet::start(&cfg, Arc::new(Metrics::new()))
            .expect("start")
            .expect("on");
        assert!(!fleet.cache_trusted(), "no subscription yet: the cache is not served");
        let t = Token::new("some-token");
        let k = fleet.cache_key(&t);
        assert_eq!(k, fleet.cache_key(&Token::new("some-token")));
        assert_ne!(k, fleet.cache_key(&Token::new("other-token")));
        let plain = crate::sha256::of(b"some-token");
        assert_ne!(k, plain, "not the plain digest");
        assert!(fleet.status().contains("down"));
        // Purposes do not share keys: the cache key is not the message seal.
        let seal = hmac::sign(&fleet.keys.message, b"some-token");
        assert_ne!(&k[..], seal.as_ref());
        // The policy name in shared values is keyed too: settings with a
        // secret in them cannot be checked against it without the secret.
        let settings = br#"{"url":"https://hydra/introspect?api_key=guess"}"#;
        let p = fleet.policy_of(settings);
        assert_eq!(p, fleet.policy_of(settings));
        assert_ne!(
            p,
            fleet.policy_of(br#"{"url":"https://hydra/introspect?api_key=other"}"#)
        );
        assert_ne!(
            p,
            hex::encode(&crate::sha256::of(settings)[..8]),
            "not the plain digest"
        );
        // Subscribed but nobody applies purges yet: still not trusted.
        fleet.subscribed.store(true, Ordering::Release);
        assert!(!fleet.cache_trusted());
        fleet.on_purge(|_| {});
        assert!(fleet.cache_trusted());

        std::fs::write(secret.path(), "short").expect("write");
        let e = Fleet::start(&cfg, Arc::new(Metrics::new()))
            .err()
            .expect("short secret refused");
        assert!(format!("{e:#}").contains("at least 32 bytes"), "{e:#}");
        assert!(Fleet::start(&ClusterConfig::default(), Arc::new(Metrics::new()))
            .expect("off")
            .is_none());
    }
}
