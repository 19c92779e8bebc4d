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
use std::sync::{Arc, OnceLock};
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
    /// The shared cache's current epoch (see [`shared_cache`]).
    epoch: AtomicU64,
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
            epoch: AtomicU64::new(0),
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

    /// The cache key of `token`: HMAC-SHA-256 with a key derived from the
    /// cluster secret, so a key published or stored in Redis reveals
    /// nothing about the token even to someone holding candidate tokens.
    pub fn cache_key(&self, token: &Token) -> CacheKey {
        let tag = hmac::sign(&self.keys.cache, token.expose().as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(tag.as_ref());
        key
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
    /// the new epoch. `Ok(n)`: how many subscribers Redis delivered it to.
    /// Published even when the epoch step failed (the replicas still drop
    /// their own entries), but then reported as an error.
    pub async fn publish(&self, target: &PurgeTarget) -> Result<u64, FleetError> {
        let local = self.epoch();
        let stepped: Result<u64, FleetError> = self
            .run(
                "eval",
                redis::cmd("EVAL")
                    .arg(BUMP_EPOCH)
                    .arg(1)
                    .arg(self.epoch_key())
                    .arg(local),
            )
            .await;
        let epoch = match &stepped {
            Ok(e) => {
                self.epoch.fetch_max(*e, Ordering::AcqRel);
                *e
            }
            Err(_) => local,
        };
        let message = Message {
            target: target.clone(),
            epoch,
        }
        .seal(&self.keys.message);
        let receivers: u64 = self
            .run("publish", redis::cmd("PUBLISH").arg(self.channel()).arg(message))
            .await?;
        self.metrics.fleet.purges_published.inc();
        stepped.map(|_| receivers)
    }

    /// After (re)subscribing: the fleet's epoch, never behind ours (Redis
    /// may have restarted empty or lost the key; see [`SYNC_EPOCH`]).
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
        self.epoch.fetch_max(e, Ordering::AcqRel);
        Ok(e)
    }

    /// A message from the purge channel.
    fn receive(&self, payload: &[u8]) {
        self.metrics.fleet.purges_received.inc();
        match Message::open(&self.keys.message, payload) {
            Ok(m) => {
                self.epoch.fetch_max(m.epoch, Ordering::AcqRel);
                tracing::debug!(target = %m.target.describe(), "purge from the fleet");
                self.apply_locally(&m.target);
            }
            Err(why) => {
                // A purge we cannot read, or one not sealed by the fleet:
                // drop everything rather than keep a token someone meant
                // to revoke, and adopt nothing from it.
                self.metrics.fleet.purges_unreadable.inc();
                tracing::warn!(error = %crate::telemetry::EscapedText(&why), "unreadable purge message; emptying the cache");
                self.apply_locally(&PurgeTarget::All);
            }
        }
    }

    /// One line for `/readyz`'s detail.
    pub fn status(&self) -> String {
        if self.cache_trusted() {
            format!(
                "cluster: purge subscription up (epoch {})",
                self.epoch.load(Ordering::Acquire)
            )
        } else {
            "cluster: purge subscription down; cache bypassed, every check verified".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
