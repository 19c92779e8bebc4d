//! The shared (L2) cache (`[cluster] shared_cache`): identities verified by
//! any replica, kept in Redis behind each replica's own cache, so a fleet
//! introspects a new token about once rather than once per replica.
//!
//! - Key: `<prefix>:l2:<epoch>:<hex HMAC(secret, token)>`: Redis never
//!   holds a token or a digest one could test guesses against.
//! - Value: `v1.<MAC>.<JSON>`, the MAC (HMAC-SHA-256 with the cluster
//!   secret) over the full key and the JSON: a value written by anyone
//!   without the secret, or copied from another key, prefix or epoch, is
//!   refused. The JSON carries its own `until_ms`, never past `exp`.
//! - Only verified identities are shared; rejections stay per replica.
//! - Writes are `SET NX PX`: a single-key purge leaves a tombstone
//!   (`purged`) that an introspection in flight during the purge cannot
//!   overwrite. A broad purge (subject, client, fingerprint, everything)
//!   cannot find its entries (the keys are keyed hashes), so it starts a
//!   new epoch: entries of the old one are never read again and expire.
//! - Anything odd (timeout, error, garbage, bad MAC, expired) is a miss:
//!   the check goes on to introspection. Redis can cost a lookup, never
//!   an allow.

use super::purge::CacheKey;
use super::{Fleet, FleetError};
use crate::authn::introspection::{now_unix, Introspection};
use crate::authn::Identity;
use aws_lc_rs::hmac;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TOMBSTONE: &str = "purged";
const VERSION: &str = "v1";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    until_ms: u64,
    identity: Introspection,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// MAC input: the key and the JSON, separated so neither can be shifted
/// into the other.
fn signed(key: &str, json: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(key.len() + json.len() + 1);
    m.extend_from_slice(key.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(json.as_bytes());
    m
}

/// Why a stored value was not used.
#[derive(Debug, PartialEq, Eq)]
enum Unusable {
    Purged,
    Invalid(&'static str),
    Expired,
}

impl Unusable {
    fn label(&self) -> &'static str {
        match self {
            Unusable::Purged => "purged",
            Unusable::Invalid(_) => "invalid",
            Unusable::Expired => "expired",
        }
    }
}

fn seal(secret: &hmac::Key, key: &str, identity: &Identity, until_ms: u64) -> Option<String> {
    let json = serde_json::to_string(&Stored {
        until_ms,
        identity: Introspection::from_identity(identity),
    })
    .ok()?;
    let tag = hmac::sign(secret, &signed(key, &json));
    Some(format!("{VERSION}.{}.{json}", b64().encode(tag.as_ref())))
}

/// The identity in `value` and how long it stays usable.
fn open(secret: &hmac::Key, key: &str, value: &str, now_ms: u64) -> Result<(Identity, Duration), Unusable> {
    if value == TOMBSTONE {
        return Err(Unusable::Purged);
    }
    let mut parts = value.splitn(3, '.');
    let (Some(VERSION), Some(tag), Some(json)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Unusable::Invalid("not a value we wrote"));
    };
    let tag = b64().decode(tag).map_err(|_| Unusable::Invalid("bad MAC encoding"))?;
    hmac::verify(secret, &signed(key, json), &tag).map_err(|_| Unusable::Invalid("MAC mismatch"))?;
    let stored: Stored = serde_json::from_str(json).map_err(|_| Unusable::Invalid("bad JSON"))?;
    if !stored.identity.active {
        return Err(Unusable::Invalid("inactive"));
    }
    let exp_ms = stored
        .identity
        .exp
        .map_or(u64::MAX, |e| u64::try_from(e).unwrap_or(0).saturating_mul(1000));
    let until = stored.until_ms.min(exp_ms);
    if until <= now_ms {
        return Err(Unusable::Expired);
    }
    Ok((stored.identity.identity(), Duration::from_millis(until - now_ms)))
}

impl Fleet {
    fn l2_key(&self, epoch: u64, key: &CacheKey) -> String {
        format!("{}:l2:{epoch}:{}", self.prefix, hex::encode(key))
    }

    /// A usable shared identity for `key`, and how long it stays usable.
    pub async fn shared_get(&self, key: &CacheKey) -> Option<(Arc<Identity>, Duration)> {
        let secret = self.secret.as_ref().filter(|_| self.shared_cache)?;
        let name = self.l2_key(self.epoch.load(Ordering::Acquire), key);
        let value: Option<String> = match self.run("get", redis::cmd("GET").arg(&name)).await {
            Ok(v) => v,
            Err(_) => {
                self.metrics.fleet.shared("error");
                return None;
            }
        };
        let Some(value) = value else {
            self.metrics.fleet.shared("miss");
            return None;
        };
        match open(secret, &name, &value, now_ms()) {
            Ok((identity, left)) => {
                self.metrics.fleet.shared("hit");
                Some((Arc::new(identity), left))
            }
            Err(why) => {
                if let Unusable::Invalid(what) = why {
                    tracing::warn!(key = %name, why = what, "shared cache: refused a value");
                }
                self.metrics.fleet.shared(why.label());
                None
            }
        }
    }

    /// Share a freshly verified identity for at most `ttl` (and never past
    /// its `exp`). In the background: the check that verified it does not
    /// wait for Redis.
    pub fn shared_put(self: &Arc<Self>, key: CacheKey, identity: &Identity, ttl: Duration) {
        let Some(secret) = self.secret.as_ref().filter(|_| self.shared_cache) else {
            return;
        };
        let now = now_ms();
        let exp_ms = identity
            .expires_at
            .map_or(u64::MAX, |e| u64::try_from(e).unwrap_or(0).saturating_mul(1000));
        let until = now
            .saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
            .min(exp_ms);
        if until <= now || identity.expires_at.is_some_and(|e| e <= now_unix()) {
            return;
        }
        let name = self.l2_key(self.epoch.load(Ordering::Acquire), &key);
        let Some(value) = seal(secret, &name, identity, until) else {
            return;
        };
        let fleet = self.clone();
        tokio::spawn(async move {
            let set = redis::cmd("SET")
                .arg(&name)
                .arg(value)
                .arg("NX")
                .arg("PX")
                .arg(until - now)
                .clone();
            // NX: a tombstone or another replica's entry stays as it is.
            if fleet.run::<Option<String>>("set", &set).await.is_ok() {
                fleet.metrics.fleet.shared("stored");
            }
        });
    }

    /// Keep the shared cache from holding `key` for `ttl`.
    pub(super) async fn tombstone(&self, key: &CacheKey, epoch: u64, ttl: Duration) -> Result<(), FleetError> {
        let px = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.run::<()>(
            "set",
            redis::cmd("SET")
                .arg(self.l2_key(epoch, key))
                .arg(TOMBSTONE)
                .arg("PX")
                .arg(px),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::intern;

    fn secret(s: &str) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, s.as_bytes())
    }

    fn someone(exp: i64) -> Identity {
        Identity {
            client_id: Some(intern::string("reader")),
            subject: Some(intern::string("user-1")),
            scopes: intern::list(&["read_date"]),
            expires_at: Some(exp),
            issuer: Some(intern::string("http://hydra.example/")),
            audience: intern::list(&["api"]),
            ext: Some(Arc::new(serde_json::json!({"tenant": "t1"}))),
            ..Identity::default()
        }
    }

    #[test]
    fn a_sealed_value_opens_only_where_it_was_sealed() {
        let k = secret(&"s".repeat(32));
        let now = now_ms();
        let exp = now_unix() + 3600;
        let v = seal(&k, "p:l2:0:ab", &someone(exp), now + 10_000).expect("seal");
        let (id, left) = open(&k, "p:l2:0:ab", &v, now).expect("open");
        assert_eq!(id, someone(exp));
        assert_eq!(left, Duration::from_millis(10_000));
        // Another key, prefix or epoch: the MAC does not match.
        for other in ["p:l2:1:ab", "q:l2:0:ab", "p:l2:0:ac"] {
            assert_eq!(
                open(&k, other, &v, now),
                Err(Unusable::Invalid("MAC mismatch")),
                "{other}"
            );
        }
        // Another secret.
        assert_eq!(
            open(&secret(&"t".repeat(32)), "p:l2:0:ab", &v, now),
            Err(Unusable::Invalid("MAC mismatch"))
        );
        // Tampered JSON (a scope added) with the old MAC.
        let forged = v.replace("read_date", "read_date post_echo");
        assert_eq!(
            open(&k, "p:l2:0:ab", &forged, now),
            Err(Unusable::Invalid("MAC mismatch"))
        );
        // Later than until_ms, or than exp.
        assert_eq!(open(&k, "p:l2:0:ab", &v, now + 10_000), Err(Unusable::Expired));
        let short = seal(&k, "p:l2:0:ab", &someone(now_unix() - 1), now + 10_000).expect("seal");
        assert_eq!(open(&k, "p:l2:0:ab", &short, now), Err(Unusable::Expired));
    }

    #[test]
    fn anything_else_is_a_miss() {
        let k = secret(&"s".repeat(32));
        for junk in [
            "",
            "purged",
            "v1",
            "v1..",
            "v1.!!.{}",
            "v2.AAAA.{}",
            "{\"active\":true}",
            "v1.AAAA.{\"until_ms\":1}",
        ] {
            assert!(open(&k, "p:l2:0:ab", junk, 0).is_err(), "{junk:?}");
        }
        assert_eq!(open(&k, "p:l2:0:ab", "purged", 0), Err(Unusable::Purged));
        // Correctly sealed but inactive (not something we write): refused.
        let json = r#"{"until_ms":99999999999999,"identity":{"active":false,"scope":null,"client_id":null,"sub":null,"exp":null,"nbf":null,"iat":null,"aud":[],"iss":null,"token_type":null,"token_use":null,"username":null,"ext":null}}"#;
        let tag = hmac::sign(&k, &signed("p:l2:0:ab", json));
        let v = format!("v1.{}.{json}", b64().encode(tag.as_ref()));
        assert_eq!(open(&k, "p:l2:0:ab", &v, 0), Err(Unusable::Invalid("inactive")));
    }
}
