//! What a purge names, and how it travels between replicas: one message
//! per purge on the `<prefix>:purge` channel, `<MAC>.<JSON>`, sealed with a
//! key derived from the cluster secret. It names the cache key (a keyed
//! hash), never the token.
//!
//! A message that cannot be read, or is not sealed by the fleet, is taken
//! as "purge everything" and nothing in it is believed (not its epoch): we
//! cannot tell which token it meant, and revocation safety beats hit rate.

use aws_lc_rs::hmac;
use base64::Engine as _;
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

/// A purge as published: the target and the shared cache's epoch it
/// started (see `shared_cache`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub target: PurgeTarget,
    pub epoch: u64,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// Longest message accepted (a subject or client id of `MAX_NAME_BYTES`
/// escaped, plus the rest); anything longer is not ours.
const MAX_MESSAGE_BYTES: usize = 8 * 1024;

impl Message {
    /// The wire form, sealed with `key`.
    pub fn seal(&self, key: &hmac::Key) -> String {
        let json = self.encode();
        let tag = hmac::sign(key, json.as_bytes());
        format!("{}.{json}", b64().encode(tag.as_ref()))
    }

    /// The message in `payload` if `key` sealed it.
    pub fn open(key: &hmac::Key, payload: &[u8]) -> Result<Message, String> {
        if payload.len() > MAX_MESSAGE_BYTES {
            return Err("too long".into());
        }
        let dot = payload.iter().position(|&b| b == b'.').ok_or("not sealed")?;
        let (tag, json) = (&payload[..dot], &payload[dot + 1..]);
        let tag = b64().decode(tag).map_err(|_| "bad seal encoding")?;
        hmac::verify(key, json, &tag).map_err(|_| "not sealed by this fleet")?;
        Self::decode(json)
    }

    fn encode(&self) -> String {
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
    fn decode(payload: &[u8]) -> Result<Message, String> {
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
    fn only_sealed_messages_open() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"fleet key");
        let other = hmac::Key::new(hmac::HMAC_SHA256, b"someone else");
        let m = Message {
            target: PurgeTarget::subject("alice").expect("sub"),
            epoch: 3,
        };
        let sealed = m.seal(&key);
        assert_eq!(Message::open(&key, sealed.as_bytes()), Ok(m.clone()));
        assert!(Message::open(&other, sealed.as_bytes()).is_err(), "another fleet's key");
        // A forged epoch (the JSON changed, the seal kept): refused.
        let forged = sealed.replace("\"epoch\":3", "\"epoch\":999999");
        assert_ne!(forged, sealed);
        assert!(Message::open(&key, forged.as_bytes()).is_err());
        assert!(Message::open(&key, m.encode().as_bytes()).is_err(), "unsealed JSON");
        assert!(Message::open(&key, "x".repeat(MAX_MESSAGE_BYTES + 1).as_bytes()).is_err());
    }

    #[test]
    fn descriptions_show_no_secret() {
        let d = PurgeTarget::Key([0xab; 32]).describe();
        assert_eq!(d, "key abababab…");
    }
}
