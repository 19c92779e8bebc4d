//! Local validation of JWT access tokens (Hydra's `jwt` access-token
//! strategy): signature against the issuer's JWKS, then `exp`/`nbf`/`iss`/
//! `aud`, scopes from `scp` (array) or `scope` (string), caller from
//! `client_id`. Verified locally, a revoked JWT stays valid until it expires:
//! use introspection where revocation must bite at once.
//!
//! Keys are fetched lazily and cached; a token with an unknown `kid` triggers
//! a refresh, at most once per `refresh_min_interval_ms`, so garbage tokens
//! cannot turn us into a JWKS flood. Keys older than `max_key_age_ms` are
//! re-fetched on their next use, so a key the issuer removed stops being
//! trusted; if that re-fetch fails the old keys stay in use (logged).

use super::{intern, Authenticator, AuthnError, ClaimChecks, ClaimFailure, Identity};
use crate::config::{IntrospectionConfig, JwtAlgorithm};
use crate::decision::token::Token;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

#[derive(Clone)]
struct Key {
    key: DecodingKey,
    alg: Option<Algorithm>,
}

pub struct JwtVerifier {
    client: std::sync::Arc<super::http_client::HydraClient>,
    jwks_url: reqwest::Url,
    algorithms: Vec<Algorithm>,
    refresh_every: Duration,
    max_key_age: Duration,
    keys: RwLock<Arc<KeySet>>,
    last_fetch: Mutex<Option<Instant>>,
    /// Serialises refreshes so concurrent unknown-kid tokens fetch once.
    refreshing: tokio::sync::Mutex<()>,
    checks: ClaimChecks,
    max_body: usize,
}

/// The JWKS as last fetched.
#[derive(Default)]
struct KeySet {
    keys: HashMap<String, Key>,
    /// When this set was fetched; `None` before the first fetch.
    fetched: Option<Instant>,
}

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    scp: Option<Vec<String>>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default, deserialize_with = "super::introspection::string_or_list")]
    aud: Vec<String>,
}

fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

/// Looks like a JWS compact serialization (header.payload.signature)?
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3 && jsonwebtoken::decode_header(token).is_ok()
}

impl JwtVerifier {
    pub fn new(cfg: &IntrospectionConfig) -> anyhow::Result<JwtVerifier> {
        let jwt = &cfg.jwt;
        Ok(JwtVerifier {
            client: super::http_client::HydraClient::new(cfg)?,
            jwks_url: reqwest::Url::parse(&jwt.jwks_url)?,
            algorithms: jwt.algorithms.iter().copied().map(algorithm).collect(),
            refresh_every: Duration::from_millis(jwt.refresh_min_interval_ms),
            max_key_age: Duration::from_millis(jwt.max_key_age_ms),
            keys: RwLock::new(Arc::new(KeySet::default())),
            last_fetch: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            checks: ClaimChecks::from_config(cfg),
            max_body: cfg.max_response_bytes,
        })
    }

    fn lookup(&self, kid: &str) -> Option<Key> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys
            .get(kid)
            .cloned()
    }

    fn keys_are_stale(&self) -> bool {
        let set = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        set.fetched.is_some_and(|t| t.elapsed() >= self.max_key_age)
    }

    /// Fetch the JWKS unless we did so less than `refresh_every` ago.
    async fn refresh(&self) -> Result<(), AuthnError> {
        let _one_at_a_time = self.refreshing.lock().await;
        {
            let mut last = self.last_fetch.lock().unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < self.refresh_every) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        let unavailable = |kind, detail: String| AuthnError::unavailable(kind, detail);
        let resp = self
            .client
            .get()
            .get(self.jwks_url.clone())
            .send()
            .await
            .map_err(|e| unavailable("jwks", format!("cannot fetch the JWKS: {}", e.without_url())))?;
        if !resp.status().is_success() {
            return Err(unavailable(
                "jwks",
                format!("JWKS answered HTTP {}", resp.status().as_u16()),
            ));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| unavailable("jwks", e.without_url().to_string()))?;
        if body.len() > self.max_body {
            return Err(unavailable("jwks", "JWKS too large".into()));
        }
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| unavailable("jwks", format!("bad JWKS: {e}")))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let (Some(kid), Ok(key)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk)) else {
                continue; // keys without kid, or of unsupported types, cannot be selected
            };
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            keys.insert(kid, Key { key, alg });
        }
        tracing::info!(keys = keys.len(), "JWKS refreshed");
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(KeySet {
            keys,
            fetched: Some(Instant::now()),
        });
        Ok(())
    }

    pub async fn verify(&self, token: &Token) -> Result<Arc<Identity>, AuthnError> {
        let reject = |f| Err(AuthnError::Rejected(f));
        let Ok(header) = jsonwebtoken::decode_header(token.expose()) else {
            return reject(ClaimFailure::MalformedJwt);
        };
        // The algorithm comes from our allow-list, never from the token alone (no `none`, no HS*).
        if !self.algorithms.contains(&header.alg) {
            return reject(ClaimFailure::AlgorithmNotAllowed);
        }
        let Some(kid) = header.kid else {
            return reject(ClaimFailure::UnknownKey);
        };
        if self.keys_are_stale() {
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "JWKS re-fetch failed; keeping the keys we have");
            }
        }
        let key = match self.lookup(&kid) {
            Some(k) => k,
            None => {
                self.refresh().await?;
                match self.lookup(&kid) {
                    Some(k) => k,
                    None => return reject(ClaimFailure::UnknownKey),
                }
            }
        };
        if key.alg.is_some_and(|a| a != header.alg) {
            return reject(ClaimFailure::AlgorithmNotAllowed);
        }
        let mut v = Validation::new(header.alg);
        v.leeway = u64::try_from(self.checks.leeway_s).unwrap_or(0);
        v.validate_nbf = true;
        v.required_spec_claims = ["exp".to_owned()].into();
        // iss/aud are checked below with the same rules as introspection answers.
        v.validate_aud = false;
        let data = match jsonwebtoken::decode::<Claims>(token.expose(), &key.key, &v) {
            Ok(d) => d,
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind;
                return reject(match e.kind() {
                    ErrorKind::ExpiredSignature => ClaimFailure::Expired,
                    ErrorKind::ImmatureSignature => ClaimFailure::NotYetValid,
                    ErrorKind::InvalidSignature => ClaimFailure::BadSignature,
                    _ => ClaimFailure::MalformedJwt,
                });
            }
        };
        let c = data.claims;
        let as_introspection = super::Introspection {
            active: true,
            exp: c.exp,
            iss: c.iss.clone(),
            aud: c.aud.clone(),
            ..Default::default()
        };
        self.checks
            .check(&as_introspection, super::introspection::now_unix())
            .map_err(AuthnError::Rejected)?;
        let scopes = match (&c.scp, &c.scope) {
            (Some(list), _) => intern::list(list),
            (None, Some(s)) => intern::list(&s.split_whitespace().collect::<Vec<_>>()),
            (None, None) => intern::list::<&str>(&[]),
        };
        Ok(Arc::new(Identity {
            client_id: intern::non_empty(c.client_id.as_deref()),
            subject: intern::non_empty(c.sub.as_deref()),
            scopes,
            expires_at: c.exp,
            issuer: c.iss.as_deref().map(intern::string),
            audience: intern::list(&c.aud),
            token_use: None,
            verified_locally: true,
        }))
    }
}

impl Authenticator for JwtVerifier {
    async fn authenticate(&self, token: &Token) -> Result<Arc<Identity>, AuthnError> {
        self.verify(token).await
    }
}
