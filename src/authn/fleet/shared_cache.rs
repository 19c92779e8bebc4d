//! The shared (L2) cache (`[cluster] shared_cache`): identities verified by
//! any replica, kept in Redis behind each replica's own cache, so a fleet
//! introspects a new token about once rather than once per replica.
//!
//! - Key: `<prefix>:l2:<epoch>:<hex HMAC(token)>`: Redis never holds a
//!   token or a digest one could test guesses against.
//! - Value: `v1.<MAC>.<JSON>`, the MAC (HMAC-SHA-256, a key derived from the
//!   cluster secret) over the full key and the JSON: a value written by
//!   anyone without the secret, or copied from another key, prefix or
//!   epoch, is refused. The JSON carries its own `until_ms` (never past
//!   `exp`) and the verification policy it was checked under (a digest of
//!   `[introspection]`): replicas with another policy (a rolling deploy, a
//!   reload) do not take it.
//! - Only verified identities are shared; rejections stay per replica.
//! - Writes are `SET NX PX`, in the epoch the load began in. Every purge
//!   starts a new epoch (it could not find a subject's or client's entries
//!   anyway: the keys are keyed hashes): entries of the old epoch are never
//!   read again and expire; an introspection in flight during the purge
//!   writes into the old one; a sealed value copied back cannot be used
//!   (the MAC binds it to its epoch). The price: after each purge every
//!   token the fleet still uses is introspected once more. With frequent
//!   purges the shared cache tends to no shared cache, never below it.
//! - Anything odd (timeout, error, garbage, bad MAC, expired, another
//!   policy) is a miss: the check goes on to introspection. Redis can cost
//!   a lookup, never an allow.

use super::purge::CacheKey;
use super::Fleet;
use crate::authn::introspection::{now_unix, Introspection};
use crate::authn::{intern, Identity};
use aws_lc_rs::hmac;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const VERSION: &str = "v1";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    until_ms: u64,
    /// The verification policy it was checked under.
    policy: String,
    /// As a list: a scope may contain a space (a JWT's `scp`).
    scopes: Vec<String>,
    verified_locally: bool,
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
    Invalid(&'static str),
    Expired,
    /// Verified under another `[introspection]` (expected during a rollout).
    OtherPolicy,
}

impl Unusable {
    fn label(&self) -> &'static str {
        match self {
            Unusable::Invalid(_) => "invalid",
            Unusable::Expired => "expired",
            Unusable::OtherPolicy => "other_policy",
        }
    }
}

fn exp_ms(exp: Option<i64>) -> u64 {
    exp.map_or(u64::MAX, |e| u64::try_from(e).unwrap_or(0).saturating_mul(1000))
}

fn seal(mac: &hmac::Key, key: &str, policy: &str, identity: &Identity, until_ms: u64) -> Option<String> {
    let json = serde_json::to_string(&Stored {
        until_ms,
        policy: policy.to_owned(),
        scopes: identity.scopes.iter().map(|s| s.to_string()).collect(),
        verified_locally: identity.verified_locally,
        identity: Introspection::from_identity(identity),
    })
    .ok()?;
    let tag = hmac::sign(mac, &signed(key, &json));
    Some(format!("{VERSION}.{}.{json}", b64().encode(tag.as_ref())))
}

/// The identity in `value` and how long it stays usable.
fn open(mac: &hmac::Key, key: &str, policy: &str, value: &str, now_ms: u64) -> Result<(Identity, Duration), Unusable> {
    let mut parts = value.splitn(3, '.');
    let (Some(VERSION), Some(tag), Some(json)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Unusable::Invalid("not a value we wrote"));
    };
    let tag = b64().decode(tag).map_err(|_| Unusable::Invalid("bad MAC encoding"))?;
    hmac::verify(mac, &signed(key, json), &tag).map_err(|_| Unusable::Invalid("MAC mismatch"))?;
    let stored: Stored = serde_json::from_str(json).map_err(|_| Unusable::Invalid("bad JSON"))?;
    if stored.policy != policy {
        return Err(Unusable::OtherPolicy);
    }
    if !stored.identity.active {
        return Err(Unusable::Invalid("inactive"));
    }
    let until = stored.until_ms.min(exp_ms(stored.identity.exp));
    if until <= now_ms {
        return Err(Unusable::Expired);
    }
    let mut identity = stored.identity.identity();
    identity.scopes = intern::list(&stored.scopes);
    identity.verified_locally = stored.verified_locally;
    Ok((identity, Duration::from_millis(until - now_ms)))
}

/// What a read of the shared cache found.
#[derive(Debug)]
pub enum SharedRead {
    /// A usable identity, and how long it stays usable.
    Hit(Arc<Identity>, Duration),
    /// Nothing usable there (absent, expired, refused).
    Miss,
    /// Not read: Redis failed, the shared cache is suspended, or this
    /// replica does not trust its cache right now. Whatever is stored
    /// stays unknown, so a later read may still find it.
    Unread,
}

impl Fleet {
    fn l2_key(&self, epoch: u64, key: &CacheKey) -> String {
        format!("{}:l2:{epoch}:{}", self.prefix, hex::encode(key))
    }

    /// The shared identity for `key` at `epoch` verified under `policy`.
    pub async fn shared_get(&self, key: &CacheKey, epoch: u64, policy: &str) -> SharedRead {
        if !self.shared_cache {
            return SharedRead::Miss;
        }
        if !self.shared_readable(epoch) {
            // A purge could not start a new epoch: what is stored in this
            // one may be what it meant to revoke.
            self.metrics.fleet.shared("suspended");
            return SharedRead::Unread;
        }
        let name = self.l2_key(epoch, key);
        let value: Option<String> = match self.run("get", redis::cmd("GET").arg(&name)).await {
            Ok(v) => v,
            Err(_) => {
                self.metrics.fleet.shared("error");
                return SharedRead::Unread;
            }
        };
        let Some(value) = value else {
            self.metrics.fleet.shared("miss");
            return SharedRead::Miss;
        };
        match open(&self.keys.value, &name, policy, &value, now_ms()) {
            Ok((identity, left)) => {
                self.metrics.fleet.shared("hit");
                SharedRead::Hit(Arc::new(identity), left)
            }
            Err(why) => {
                if let Unusable::Invalid(what) = why {
                    tracing::warn!(key = %hex::encode(&key[..4]), epoch, why = what, "shared cache: refused a value");
                }
                self.metrics.fleet.shared(why.label());
                SharedRead::Miss
            }
        }
    }

    /// Remove the shared identity for `key` at `epoch`: the issuer refused
    /// the token after a read that could not tell whether one is stored
    /// (so a later read cannot say yes where the issuer just said no). In
    /// the background, like a store.
    pub fn shared_forget(self: &Arc<Self>, key: CacheKey, epoch: u64) {
        if !self.shared_cache {
            return;
        }
        let fleet = self.clone();
        tokio::spawn(async move {
            if fleet.delete_shared(&key, epoch).await.is_ok() {
                fleet.metrics.fleet.shared("forgotten");
            }
        });
    }

    /// `DEL` the shared entry for `key` at `epoch`.
    pub(super) async fn delete_shared(&self, key: &CacheKey, epoch: u64) -> Result<u64, super::FleetError> {
        self.run("del", redis::cmd("DEL").arg(self.l2_key(epoch, key))).await
    }

    /// Share a freshly verified identity at `epoch` (the one its load
    /// started in) for at most `ttl`, never past its `exp`. In the
    /// background: the check that verified it does not wait for Redis.
    pub fn shared_put(self: &Arc<Self>, key: CacheKey, epoch: u64, policy: &str, identity: &Identity, ttl: Duration) {
        if !self.shared_cache {
            return;
        }
        let now = now_ms();
        let until = now
            .saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
            .min(exp_ms(identity.expires_at));
        if until <= now || identity.expires_at.is_some_and(|e| e <= now_unix()) {
            return;
        }
        let name = self.l2_key(epoch, &key);
        let Some(value) = seal(&self.keys.value, &name, policy, identity, until) else {
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
            // NX: another replica's entry stays as it is.
            if fleet.run::<Option<String>>("set", &set).await.is_ok() {
                fleet.metrics.fleet.shared("stored");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(s: &str) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, s.as_bytes())
    }

    fn someone(exp: i64) -> Identity {
        Identity {
            client_id: Some(intern::string("reader")),
            subject: Some(intern::string("user-1")),
            scopes: intern::list(&["read_date", "odd scope"]),
            expires_at: Some(exp),
            issuer: Some(intern::string("http://hydra.example/")),
            audience: intern::list(&["api"]),
            ext: Some(Arc::new(serde_json::json!({"tenant": "t1"}))),
            verified_locally: true,
            ..Identity::default()
        }
    }

    #[test]
    fn a_sealed_value_opens_only_where_and_as_it_was_sealed() {
        let k = mac(&"s".repeat(32));
        let now = now_ms();
        let exp = now_unix() + 3600;
        let v = seal(&k, "p:l2:0:ab", "pol", &someone(exp), now + 10_000).expect("seal");
        let (id, left) = open(&k, "p:l2:0:ab", "pol", &v, now).expect("open");
        assert_eq!(
            id,
            someone(exp),
            "every field, a scope with a space and verified_locally included"
        );
        assert_eq!(left, Duration::from_millis(10_000));
        // Another key, prefix or epoch: the MAC does not match.
        for other in ["p:l2:1:ab", "q:l2:0:ab", "p:l2:0:ac"] {
            assert_eq!(
                open(&k, other, "pol", &v, now),
                Err(Unusable::Invalid("MAC mismatch")),
                "{other}"
            );
        }
        // Another secret, another policy.
        assert_eq!(
            open(&mac(&"t".repeat(32)), "p:l2:0:ab", "pol", &v, now),
            Err(Unusable::Invalid("MAC mismatch"))
        );
        assert_eq!(open(&k, "p:l2:0:ab", "other", &v, now), Err(Unusable::OtherPolicy));
        // Tampered JSON (a scope added) with the old MAC.
        let forged = v.replace("read_date", "post_echo");
        assert_eq!(
            open(&k, "p:l2:0:ab", "pol", &forged, now),
            Err(Unusable::Invalid("MAC mismatch"))
        );
        // Later than until_ms, or than exp.
        assert_eq!(open(&k, "p:l2:0:ab", "pol", &v, now + 10_000), Err(Unusable::Expired));
        let short = seal(&k, "p:l2:0:ab", "pol", &someone(now_unix() - 1), now + 10_000).expect("seal");
        assert_eq!(open(&k, "p:l2:0:ab", "pol", &short, now), Err(Unusable::Expired));
    }

    #[test]
    fn anything_else_is_a_miss() {
        let k = mac(&"s".repeat(32));
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
            assert!(open(&k, "p:l2:0:ab", "pol", junk, 0).is_err(), "{junk:?}");
        }
        // Correctly sealed but inactive (not something we write): refused.
        let json = r#"{"until_ms":99999999999999,"policy":"pol","scopes":[],"verified_locally":false,"identity":{"active":false,"scope":null,"client_id":null,"sub":null,"exp":null,"nbf":null,"iat":null,"aud":[],"iss":null,"token_type":null,"token_use":null,"username":null,"ext":null}}"#;
        let tag = hmac::sign(&k, &signed("p:l2:0:ab", json));
        let v = format!("v1.{}.{json}", b64().encode(tag.as_ref()));
        assert_eq!(open(&k, "p:l2:0:ab", "pol", &v, 0), Err(Unusable::Invalid("inactive")));
    }
}
