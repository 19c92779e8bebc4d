//! A short-lived, signed identity JWT for the upstream ("opaque outside,
//! JWT inside"): on allow, `x-identity-jwt` carries who called, signed with
//! our ES256 or EdDSA key, so a service can verify the caller itself against
//! our JWKS (`GET /.well-known/jwks.json` on `server.http_addr`) instead of
//! trusting a plain header.
//!
//! The key file is re-read on a timer ([`FileBacked`]); a new key signs from
//! then on, the retired public key stays published for `key_overlap_s` (so
//! JWTs already in flight still verify) and then disappears, after which
//! JWTs signed with it no longer verify. Signing uses jsonwebtoken (already
//! our JWT verifier) on aws-lc-rs; nothing is hand-rolled.

use crate::authn::Identity;
use crate::file_backed::FileBacked;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// `[upstream_jwt]`: off unless `enabled`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamJwtConfig {
    pub enabled: bool,
    /// The header the upstream reads.
    pub header: String,
    /// `iss` of the JWT (us, as the upstream knows us).
    pub issuer: String,
    /// `aud` of the JWT (the upstream service).
    pub audience: String,
    /// Lifetime; never past the caller's token's own `exp`.
    pub ttl_s: u64,
    /// `ES256` (a P-256 key) or `EdDSA` (an Ed25519 key).
    pub algorithm: String,
    /// PKCS#8 PEM private key. Replace the file to rotate.
    pub key_file: Option<PathBuf>,
    /// How long a retired key's public half stays in the JWKS.
    pub key_overlap_s: u64,
    /// How often the key file is checked for a new key.
    pub reload_interval_ms: u64,
}

impl Default for UpstreamJwtConfig {
    fn default() -> Self {
        UpstreamJwtConfig {
            enabled: false,
            header: "x-identity-jwt".into(),
            issuer: "hydra-authz".into(),
            audience: "upstream".into(),
            ttl_s: 60,
            algorithm: "ES256".into(),
            key_file: None,
            key_overlap_s: 300,
            reload_interval_ms: 5_000,
        }
    }
}

impl UpstreamJwtConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        algorithm(&self.algorithm)?;
        if self.key_file.is_none() {
            return Err("key_file: a PKCS#8 PEM private key is required when enabled".into());
        }
        if self.ttl_s == 0 || self.reload_interval_ms == 0 {
            return Err("ttl_s and reload_interval_ms must be greater than 0".into());
        }
        if self.issuer.is_empty() || self.audience.is_empty() {
            return Err("issuer and audience must not be empty".into());
        }
        Ok(())
    }
}

fn algorithm(name: &str) -> Result<Algorithm, String> {
    match name {
        "ES256" => Ok(Algorithm::ES256),
        "EdDSA" => Ok(Algorithm::EdDSA),
        other => Err(format!("algorithm {other:?}: use ES256 or EdDSA")),
    }
}

/// One signing key: the private half and its public JWK (with its kid).
struct SigningKey {
    key: EncodingKey,
    jwk: Jwk,
    kid: String,
}

fn signing_key(pem: &[u8], alg: Algorithm) -> anyhow::Result<SigningKey> {
    let key = match alg {
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
        _ => EncodingKey::from_ec_pem(pem),
    }
    .map_err(|e| anyhow::anyhow!("not a PKCS#8 PEM {alg:?} private key: {e}"))?;
    let mut jwk = Jwk::from_encoding_key(&key, alg).map_err(|e| anyhow::anyhow!("public key: {e}"))?;
    // RFC 7638 thumbprint: a kid that changes exactly when the key does.
    let kid = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|e| anyhow::anyhow!("thumbprint: {e}"))?;
    jwk.common.key_id = Some(kid.clone());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Ok(SigningKey { key, jwk, kid })
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("Signer")
            .field("header", &self.config.header)
            .field("algorithm", &self.config.algorithm)
            .finish_non_exhaustive()
    }
}

pub struct Signer {
    config: UpstreamJwtConfig,
    alg: Algorithm,
    keys: Arc<FileBacked<SigningKey>>,
    /// Retired public keys and when they were retired; the kid last seen.
    rotation: Mutex<Rotation>,
    /// Signed JWTs by identity and key, reused while more than half their
    /// lifetime is left.
    cache: quick_cache::sync::Cache<[u8; 32], Arc<(String, i64)>>,
}

struct Rotation {
    /// The key we last signed with (the file may already hold a newer one).
    current: Arc<SigningKey>,
    retired: Vec<(Jwk, Instant)>,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: Option<&'a str>,
    client_id: Option<&'a str>,
    /// Left out when a scope holds a space (a JWT `scp` item): joined, it
    /// would read as more scopes than the token has.
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    iat: i64,
    exp: i64,
    /// The `[headers.claims]` values, keyed by claim path.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    claims: serde_json::Map<String, serde_json::Value>,
}

impl Signer {
    /// Load the key (errors name `upstream_jwt.key_file`) and start watching
    /// it; or, when a signer for this very `[upstream_jwt]` is still alive
    /// (a config reload that left the section alone), that one, so a reload
    /// does not forget a rotation's retired key mid-overlap.
    pub fn start(config: &UpstreamJwtConfig) -> anyhow::Result<Option<Arc<Signer>>> {
        static LIVE: Mutex<Option<(UpstreamJwtConfig, std::sync::Weak<Signer>)>> = Mutex::new(None);
        if !config.enabled {
            return Ok(None);
        }
        let mut live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(signer) = live
            .as_ref()
            .filter(|(c, _)| c == config)
            .and_then(|(_, weak)| weak.upgrade())
        {
            return Ok(Some(signer));
        }
        let signer = Self::load(config)?;
        *live = Some((config.clone(), Arc::downgrade(&signer)));
        Ok(Some(signer))
    }

    fn load(config: &UpstreamJwtConfig) -> anyhow::Result<Arc<Signer>> {
        let alg = algorithm(&config.algorithm).map_err(anyhow::Error::msg)?;
        let file = config
            .key_file
            .clone()
            .ok_or_else(|| anyhow::anyhow!("upstream_jwt.key_file is required"))?;
        let keys = FileBacked::new(
            "upstream_jwt",
            vec![(file, "upstream_jwt.key_file".into())],
            move |files| signing_key(&files[0], alg),
        )?;
        keys.watch(Duration::from_millis(config.reload_interval_ms));
        let current = keys.get();
        Ok(Arc::new(Signer {
            config: config.clone(),
            alg,
            keys,
            rotation: Mutex::new(Rotation {
                current,
                retired: Vec::new(),
            }),
            cache: quick_cache::sync::Cache::new(10_000),
        }))
    }

    pub fn header(&self) -> &str {
        &self.config.header
    }

    /// The current key, noting a rotation (the old public key retires now).
    fn current(&self) -> Arc<SigningKey> {
        let key = self.keys.get();
        let mut rotation = self.rotation.lock().unwrap_or_else(PoisonError::into_inner);
        if rotation.current.kid != key.kid {
            tracing::info!(kid = %key.kid, retired_kid = %rotation.current.kid, "upstream_jwt: signing with a new key; the previous one stays published for key_overlap_s");
            let old = std::mem::replace(&mut rotation.current, key.clone());
            rotation.retired.push((old.jwk.clone(), Instant::now()));
        }
        let overlap = Duration::from_secs(self.config.key_overlap_s);
        rotation.retired.retain(|(_, since)| since.elapsed() < overlap);
        key
    }

    /// The public keys: the current one and those retired within the overlap.
    pub fn jwks(&self) -> String {
        let current = self.current();
        let rotation = self.rotation.lock().unwrap_or_else(PoisonError::into_inner);
        let mut keys = vec![current.jwk.clone()];
        keys.extend(rotation.retired.iter().map(|(jwk, _)| jwk.clone()));
        serde_json::to_string(&JwkSet { keys }).unwrap_or_default()
    }

    /// A JWT for this identity, from the cache while it has more than half
    /// its life left. `None` when signing fails (logged; the header is then
    /// removed, never forged).
    pub fn sign(&self, identity: &Identity, claims: &[(String, serde_json::Value)]) -> Option<String> {
        let key = self.current();
        let now = crate::authn::introspection::now_unix();
        let cache_key = self.cache_key(identity, claims, &key.kid);
        if let Some(hit) = self.cache.get(&cache_key) {
            let (jwt, exp) = (&hit.0, hit.1);
            let ttl = i64::try_from(self.config.ttl_s).unwrap_or(i64::MAX);
            if exp - now > ttl / 2 {
                return Some(jwt.clone());
            }
        }
        let ttl = i64::try_from(self.config.ttl_s).unwrap_or(i64::MAX);
        let exp = match identity.expires_at {
            Some(token_exp) => token_exp.min(now.saturating_add(ttl)),
            None => now.saturating_add(ttl),
        };
        if exp <= now {
            return None;
        }
        let body = Claims {
            iss: &self.config.issuer,
            aud: &self.config.audience,
            sub: identity.subject.as_deref(),
            client_id: identity.client_id.as_deref(),
            scope: super::scopes_join_unambiguously(&identity.scopes).then(|| identity.scopes.join(" ")),
            iat: now,
            exp,
            claims: claims.iter().cloned().collect(),
        };
        let mut header = Header::new(self.alg);
        header.kid = Some(key.kid.clone());
        header.typ = Some("JWT".into());
        match jsonwebtoken::encode(&header, &body, &key.key) {
            Ok(jwt) => {
                self.cache.insert(cache_key, Arc::new((jwt.clone(), exp)));
                Some(jwt)
            }
            Err(e) => {
                tracing::error!("upstream_jwt: signing failed: {e}");
                None
            }
        }
    }

    fn cache_key(&self, identity: &Identity, claims: &[(String, serde_json::Value)], kid: &str) -> [u8; 32] {
        let mut h = crate::sha256::Hasher::default();
        // A tag byte per optional part, so "absent" and any string differ.
        for part in [identity.subject.as_deref(), identity.client_id.as_deref(), Some(kid)] {
            match part {
                Some(p) => {
                    h.update([1]);
                    h.update(p.as_bytes());
                }
                None => h.update([0]),
            }
            h.update([0xff]);
        }
        for s in identity.scopes.iter() {
            h.update(s.as_bytes());
            h.update([0xfe]);
        }
        h.update(identity.expires_at.unwrap_or(0).to_be_bytes());
        for (k, v) in claims {
            h.update(k.as_bytes());
            h.update([0xfd]);
            h.update(v.to_string().as_bytes());
            h.update([0xfc]);
        }
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use jsonwebtoken::{DecodingKey, Validation};

    /// A fresh PKCS#8 PEM key: P-256 for ES256, Ed25519 (PKCS#8 v1) for EdDSA.
    pub(crate) fn pem(alg: &str) -> String {
        use aws_lc_rs::rand::SystemRandom;
        use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = SystemRandom::new();
        let der = match alg {
            "EdDSA" => Ed25519KeyPair::generate_pkcs8v1(&rng)
                .expect("ed25519")
                .as_ref()
                .to_vec(),
            _ => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .expect("p256")
                .as_ref()
                .to_vec(),
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).expect("ascii"))
            .collect();
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        )
    }

    fn signer(dir: &std::path::Path, alg: &str, overlap_s: u64) -> Arc<Signer> {
        let file = dir.join("key.pem");
        std::fs::write(&file, pem(alg)).expect("write key");
        Signer::start(&UpstreamJwtConfig {
            enabled: true,
            algorithm: alg.into(),
            key_file: Some(file),
            key_overlap_s: overlap_s,
            audience: "date-service".into(),
            ..Default::default()
        })
        .expect("signer")
        .expect("enabled")
    }

    fn reader(exp: Option<i64>) -> Identity {
        Identity {
            client_id: Some("reader".into()),
            subject: Some("alice".into()),
            scopes: vec!["read_date".into()].into(),
            expires_at: exp,
            ..Default::default()
        }
    }

    /// Verify against the published JWKS, as an upstream would.
    fn verify(jwks: &str, jwt: &str) -> Result<serde_json::Value, String> {
        let set: JwkSet = serde_json::from_str(jwks).map_err(|e| e.to_string())?;
        let header = jsonwebtoken::decode_header(jwt).map_err(|e| e.to_string())?;
        let jwk = set
            .find(header.kid.as_deref().unwrap_or_default())
            .ok_or("kid not in the JWKS")?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
        let mut v = Validation::new(header.alg);
        v.set_audience(&["date-service"]);
        v.set_issuer(&["hydra-authz"]);
        jsonwebtoken::decode::<serde_json::Value>(jwt, &key, &v)
            .map(|d| d.claims)
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn signs_what_the_upstream_can_verify_with_both_algorithms() {
        for alg in ["ES256", "EdDSA"] {
            let dir = tempfile::tempdir().expect("tempdir");
            let s = signer(dir.path(), alg, 300);
            let now = crate::authn::introspection::now_unix();
            let claims = [("ext.tenant".to_string(), serde_json::json!("acme"))];
            let jwt = s.sign(&reader(Some(now + 3600)), &claims).expect("signed");
            let c = verify(&s.jwks(), &jwt).expect(alg);
            assert_eq!(
                (c["sub"].as_str(), c["client_id"].as_str()),
                (Some("alice"), Some("reader"))
            );
            assert_eq!(c["scope"], "read_date");
            assert_eq!(c["claims"]["ext.tenant"], "acme");
            // A scope with a space would read as two: no `scope` at all.
            let mut odd = reader(Some(now + 3600));
            odd.scopes = vec!["read_date admin".into()].into();
            let c = verify(&s.jwks(), &s.sign(&odd, &claims).expect("signed")).expect("odd");
            assert!(c.get("scope").is_none(), "{c}");
            assert!(c["exp"].as_i64().is_some_and(|e| e <= now + 60 + 1), "ttl bounds exp");
            assert_eq!(
                s.sign(&reader(Some(now + 3600)), &claims).as_deref(),
                Some(jwt.as_str()),
                "cached"
            );
            // Never past the caller's own token.
            let short = s.sign(&reader(Some(now + 10)), &[]).expect("signed");
            let c = verify(&s.jwks(), &short).expect("short");
            assert_eq!(c["exp"].as_i64(), Some(now + 10));
            assert_eq!(
                s.sign(&reader(Some(now - 1)), &[]),
                None,
                "an expired token gets no JWT"
            );
        }
    }

    #[tokio::test]
    async fn rotation_keeps_the_old_key_for_the_overlap_then_drops_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = signer(dir.path(), "ES256", 1);
        let now = crate::authn::introspection::now_unix();
        let old = s.sign(&reader(Some(now + 3600)), &[]).expect("signed");
        std::fs::write(dir.path().join("key.pem"), pem("ES256")).expect("rotate");
        assert!(s.keys.reload_if_changed().expect("reload"));
        let new = s.sign(&reader(Some(now + 3600)), &[]).expect("signed");
        assert_ne!(
            jsonwebtoken::decode_header(&old).expect("h").kid,
            jsonwebtoken::decode_header(&new).expect("h").kid,
            "a new key signs from now on"
        );
        let jwks = s.jwks();
        assert!(
            verify(&jwks, &old).is_ok() && verify(&jwks, &new).is_ok(),
            "both during the overlap"
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let jwks = s.jwks();
        assert!(
            verify(&jwks, &old).is_err(),
            "the retired key is gone after the overlap"
        );
        assert!(verify(&jwks, &new).is_ok());
    }

    #[test]
    fn validation() {
        assert!(UpstreamJwtConfig::default().validate().is_ok(), "off");
        let on = UpstreamJwtConfig {
            enabled: true,
            ..Default::default()
        };
        assert!(on.validate().is_err(), "no key file");
        let bad_alg = UpstreamJwtConfig {
            algorithm: "HS256".into(),
            key_file: Some("k".into()),
            ..on
        };
        assert!(bad_alg.validate().is_err());
    }
}
