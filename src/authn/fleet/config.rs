//! `[cluster]`: how replicas reach the Redis they share. Off unless
//! `redis_url` is set; everything works as on a single replica then.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://host:port/db` or `rediss://…` (TLS). Never with a password
    /// in it: use `password_file` / `password_env`.
    pub redis_url: Option<String>,
    /// Redis ACL user (optional; `default` otherwise).
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
    /// The cluster secret, the same on every replica: keys the cache (Redis
    /// never sees a token or its plain digest) and authenticates purge
    /// messages and shared-cache values (anything written by someone
    /// without it is refused). Required; at least 32 bytes.
    pub secret_file: Option<PathBuf>,
    pub secret_env: Option<String>,
    /// With `rediss://`: the CA that signed Redis's certificate (PEM);
    /// the system roots otherwise.
    pub tls_ca_file: Option<PathBuf>,
    /// With `rediss://` and mutual TLS: our client certificate and key (PEM).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Every key and the purge channel start with `<key_prefix>:`, so
    /// several deployments can share one Redis without seeing each other.
    pub key_prefix: String,
    /// Share verified identities through Redis (L2 behind each replica's cache),
    /// so a fleet introspects a new token about once instead of once per
    /// replica. Needs `[introspection.cache] enabled`.
    pub shared_cache: bool,
    /// Bound on every Redis command a check waits for; past it the check
    /// goes on without Redis (L1 and introspection).
    pub timeout_ms: u64,
    /// How often the purge subscription is pinged; a subscription that does
    /// not answer within `timeout_ms` is taken as down.
    pub health_interval_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis_url: None,
            username: None,
            password_file: None,
            password_env: None,
            secret_file: None,
            secret_env: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            key_prefix: "hydra-authz".into(),
            shared_cache: false,
            timeout_ms: 100,
            health_interval_ms: 1_000,
        }
    }
}

/// Shortest cluster secret accepted: an HMAC key should carry as much
/// entropy as the hash is long.
pub const MIN_SECRET_BYTES: usize = 32;

impl ClusterConfig {
    pub fn has_secret(&self) -> bool {
        self.secret_file.is_some() || self.secret_env.is_some()
    }

    /// Checks serde cannot express; secrets are read at start, not here.
    pub fn validate(&self) -> Result<(), String> {
        let Some(url) = &self.redis_url else {
            if self.shared_cache {
                return Err("shared_cache needs redis_url".into());
            }
            return Ok(());
        };
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("redis_url: {e}"))?;
        let tls = match parsed.scheme() {
            "redis" => false,
            "rediss" => true,
            other => return Err(format!("redis_url must be redis:// or rediss://, not {other}://")),
        };
        if parsed.password().is_some() {
            return Err("redis_url must not carry a password (it would show in config dumps): use password_file or password_env".into());
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err("redis_url needs a host".into());
        }
        if !tls && (self.tls_ca_file.is_some() || self.tls_cert_file.is_some()) {
            return Err("tls_* files are for rediss:// URLs".into());
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err("tls_cert_file and tls_key_file go together".into());
        }
        if self.password_file.is_some() && self.password_env.is_some() {
            return Err("give one of password_file or password_env".into());
        }
        if self.secret_file.is_some() && self.secret_env.is_some() {
            return Err("give one of secret_file or secret_env".into());
        }
        if !self.has_secret() {
            return Err("needs the cluster secret (secret_file or secret_env), the same on every replica".into());
        }
        let prefix_ok = !self.key_prefix.is_empty()
            && self.key_prefix.len() <= 64
            && self
                .key_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
        if !prefix_ok {
            return Err("key_prefix: 1 to 64 of [A-Za-z0-9-_./]".into());
        }
        if self.timeout_ms == 0 || self.health_interval_ms == 0 {
            return Err("timeout_ms and health_interval_ms must be greater than 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(url: &str) -> ClusterConfig {
        ClusterConfig {
            redis_url: Some(url.into()),
            secret_env: Some("CLUSTER_SECRET".into()),
            ..ClusterConfig::default()
        }
    }

    #[test]
    fn off_by_default_and_urls_are_checked() {
        assert!(ClusterConfig::default().redis_url.is_none(), "off by default");
        assert_eq!(ClusterConfig::default().validate(), Ok(()));
        assert_eq!(on("redis://127.0.0.1:6379/0").validate(), Ok(()));
        assert_eq!(on("rediss://redis.example:6380").validate(), Ok(()));
        for (bad, says) in [
            ("http://redis:6379", "redis:// or rediss://"),
            ("redis://:hunter2@redis:6379", "must not carry a password"),
            ("not a url", "redis_url"),
        ] {
            let e = on(bad).validate().expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_fleet_needs_its_secret_and_shared_cache_a_url() {
        let mut c = on("redis://127.0.0.1:6379");
        c.shared_cache = true;
        assert_eq!(c.validate(), Ok(()));
        c.secret_env = None;
        assert!(c.validate().expect_err("no secret").contains("cluster secret"));
        c.secret_env = Some("CLUSTER_SECRET".into());
        c.redis_url = None;
        assert!(c.validate().expect_err("no url").contains("needs redis_url"));
    }

    #[test]
    fn prefixes_cannot_reach_other_keyspaces() {
        let mut c = on("redis://127.0.0.1:6379");
        for bad in ["", "a b", "x*", "a:b", &"p".repeat(65)] {
            c.key_prefix = bad.into();
            assert!(c.validate().is_err(), "{bad:?}");
        }
        c.key_prefix = "team-a/prod_1.v2".into();
        assert_eq!(c.validate(), Ok(()));
    }
}
