//! What a purge names, and how it travels between replicas: one JSON
//! message per purge on the `<prefix>:purge` channel. The message names
//! the cache key (a keyed hash), never the token.
//!
//! A message that cannot be read is taken as "purge everything": we cannot
//! tell which token it meant, and revocation safety beats hit rate.

use serde::{Deserialize, Serialize};

/// The cache key of a token: SHA-256, or HMAC-SHA-256 with the cluster
/// secret when one is configured.
pub type CacheKey = [u8; 32];

/// Longest subject or client id a purge may name.
pub const MAX_NAME_BYTES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeTarget {
    /// One token, by its cache key.
    Key(CacheKey),
    /// The tokens whose SHA-256 starts with these 4 bytes (`token_fp` in logs).
    Fingerprint([u8; 4]),
    /// Every token of this subject ("this user logged out").
    Subject(String),
    /// Every token of this client ("this client was deleted").
    Client(String),
    All,
}

impl PurgeTarget {
    /// From the 8 hex digits shown as `token_fp`.
    pub fn fingerprint(text: &str) -> Result<PurgeTarget, String> {
        let bytes = hex::decode(text)
            .ok()
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .ok_or_else(|| "a fingerprint is 8 hex digits".to_owned())?;
        Ok(PurgeTarget::Fingerprint(bytes))
    }

    pub fn subject(s: &str) -> Result<PurgeTarget, String> {
        Ok(PurgeTarget::Subject(checked_name("subject", s)?))
    }

    pub fn client(s: &str) -> Result<PurgeTarget, String> {
        Ok(PurgeTarget::Client(checked_name("client id", s)?))
    }

    /// For logs: what was purged, without anything secret (a key is shown
    /// as its first 4 bytes, which identify nothing without the token).
    pub fn describe(&self) -> String {
        match self {
            PurgeTarget::Key(k) => format!("key {}…", hex::encode(&k[..4])),
            PurgeTarget::Fingerprint(f) => format!("fingerprint {}", hex::encode(f)),
            PurgeTarget::Subject(s) => format!("subject {}", crate::telemetry::Escaped(s)),
            PurgeTarget::Client(c) => format!("client {}", crate::telemetry::Escaped(c)),
            PurgeTarget::All => "everything".into(),
        }
    }

    /// Whether this purge makes every shared-cache entry suspect (only a
    /// single-key purge can be applied to the shared cache in place).
    pub fn is_broad(&self) -> bool {
        !matches!(self, PurgeTarget::Key(_))
    }
}

fn checked_name(what: &str, s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > MAX_NAME_BYTES {
        return Err(format!("a {what} is 1 to {MAX_NAME_BYTES} bytes"));
    }
    Ok(s.to_owned())
}

/// The wire form.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Wire {
    Key { key: String, epoch: u64 },
    Fingerprint { fingerprint: String, epoch: u64 },
    Subject { subject: String, epoch: u64 },
    Client { client_id: String, epoch: u64 },
    All { epoch: u64 },
}

/// A purge as published: the target and the shared cache's epoch after it
/// (a broad purge starts a new epoch; see `shared_cache`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub target: PurgeTarget,
    pub epoch: u64,
}

impl Message {
    pub fn encode(&self) -> String {
        let epoch = self.epoch;
        let wire = match &self.target {
            PurgeTarget::Key(k) => Wire::Key {
                key: hex::encode(k),
                epoch,
            },
            PurgeTarget::Fingerprint(f) => Wire::Fingerprint {
                fingerprint: hex::encode(f),
                epoch,
            },
            PurgeTarget::Subject(s) => Wire::Subject {
                subject: s.clone(),
                epoch,
            },
            PurgeTarget::Client(c) => Wire::Client {
                client_id: c.clone(),
                epoch,
            },
            PurgeTarget::All => Wire::All { epoch },
        };
        serde_json::to_string(&wire).unwrap_or_else(|_| r#"{"op":"all","epoch":0}"#.into())
    }

    /// `Err` for anything that is not a message we sent; the caller purges
    /// everything then.
    pub fn decode(payload: &[u8]) -> Result<Message, String> {
        let wire: Wire = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
        let (target, epoch) = match wire {
            Wire::Key { key, epoch } => {
                let k = hex::decode(&key)
                    .ok()
                    .and_then(|b| CacheKey::try_from(b).ok())
                    .ok_or("key: not 64 hex digits")?;
                (PurgeTarget::Key(k), epoch)
            }
            Wire::Fingerprint { fingerprint, epoch } => (PurgeTarget::fingerprint(&fingerprint)?, epoch),
            Wire::Subject { subject, epoch } => (PurgeTarget::subject(&subject)?, epoch),
            Wire::Client { client_id, epoch } => (PurgeTarget::client(&client_id)?, epoch),
            Wire::All { epoch } => (PurgeTarget::All, epoch),
        };
        Ok(Message { target, epoch })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_round_trips() {
        for target in [
            PurgeTarget::Key([7; 32]),
            PurgeTarget::fingerprint("1a2b3c4d").expect("fp"),
            PurgeTarget::subject("user:42 \"quoted\"").expect("sub"),
            PurgeTarget::client("reader").expect("client"),
            PurgeTarget::All,
        ] {
            let m = Message { target, epoch: 9 };
            assert_eq!(Message::decode(m.encode().as_bytes()), Ok(m.clone()), "{}", m.encode());
        }
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            &b""[..],
            b"null",
            b"{\"op\":\"key\",\"key\":\"abcd\",\"epoch\":1}",
            b"{\"op\":\"subject\",\"subject\":\"\",\"epoch\":1}",
            b"{\"op\":\"all\"}",
            b"{\"op\":\"all\",\"epoch\":1,\"extra\":true}",
            b"{\"op\":\"drop_tables\",\"epoch\":1}",
            b"\xff\xfe",
        ] {
            assert!(Message::decode(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(PurgeTarget::subject(&"x".repeat(MAX_NAME_BYTES + 1)).is_err());
        assert!(PurgeTarget::fingerprint("1a2b3c4").is_err());
    }

    #[test]
    fn descriptions_show_no_secret() {
        let d = PurgeTarget::Key([0xab; 32]).describe();
        assert_eq!(d, "key abababab…");
    }
}
