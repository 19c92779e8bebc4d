//! Picks how a token is verified, per `introspection.mode`.

use super::jwt::{looks_like_jwt, JwtVerifier};
use super::{Authenticator, AuthnError, HydraIntrospector, Identity};
use crate::authn::config::{IntrospectionConfig, VerifyMode};
use crate::extract::credential::Token;
use std::sync::Arc;

// One instance per process: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Verifier {
    Introspect(HydraIntrospector),
    Jwt(JwtVerifier),
    /// JWT-shaped tokens locally, opaque ones (Hydra's `ory_at_…`) by introspection.
    Auto {
        jwt: JwtVerifier,
        introspect: HydraIntrospector,
    },
}

impl Verifier {
    /// Builds only what the mode uses, so e.g. jwt mode needs no introspection secret.
    pub fn new(cfg: &IntrospectionConfig) -> anyhow::Result<Verifier> {
        Ok(match cfg.mode {
            VerifyMode::Introspect => Verifier::Introspect(HydraIntrospector::new(cfg)?),
            VerifyMode::Jwt => Verifier::Jwt(JwtVerifier::new(cfg)?),
            VerifyMode::Auto => Verifier::Auto {
                jwt: JwtVerifier::new(cfg)?,
                introspect: HydraIntrospector::new(cfg)?,
            },
        })
    }
}

impl Verifier {
    /// Warm up before serving: the JWKS in jwt/auto mode; nothing to do for introspection.
    pub async fn prefetch(&self) {
        match self {
            Verifier::Introspect(_) => {}
            Verifier::Jwt(jwt) | Verifier::Auto { jwt, .. } => jwt.prefetch().await,
        }
    }

    /// Whether checks can be verified at all (readiness): in jwt mode only
    /// with a key set that is held and not past `max_stale_key_age_ms`.
    /// Auto mode still verifies opaque tokens by introspection without one.
    pub fn can_verify(&self) -> bool {
        match self {
            Verifier::Jwt(jwt) => jwt.has_usable_keys(),
            Verifier::Introspect(_) | Verifier::Auto { .. } => true,
        }
    }

    /// Whether the warm-up should fetch now: jwt mode without keys or
    /// with keys held for half of `max_stale_key_age_ms` (a replica with
    /// no checks to prompt a re-fetch must not drift past it and go
    /// unready), auto mode without any. `None`: never again
    /// (introspection, or auto mode once it holds keys: its checks fetch).
    pub fn wants_keys(&self) -> Option<bool> {
        match self {
            Verifier::Introspect(_) => None,
            Verifier::Jwt(jwt) => Some(jwt.keys_due()),
            Verifier::Auto { jwt, .. } => (!jwt.has_keys()).then_some(true),
        }
    }

    /// One more try at the key set (logged when it fails): for a replica
    /// that started without one.
    pub async fn fetch_keys(&self) {
        if let Verifier::Jwt(jwt) | Verifier::Auto { jwt, .. } = self {
            jwt.fetch_keys().await;
        }
    }

    /// How long to wait between such tries.
    pub fn retry_interval(&self) -> std::time::Duration {
        match self {
            Verifier::Introspect(_) => std::time::Duration::from_secs(1),
            Verifier::Jwt(jwt) | Verifier::Auto { jwt, .. } => jwt.retry_interval(),
        }
    }

    /// Whether [`Verifier::prefetch`] has finished (readiness waits for it).
    pub fn prefetched(&self) -> bool {
        match self {
            Verifier::Introspect(_) => true,
            Verifier::Jwt(jwt) | Verifier::Auto { jwt, .. } => jwt.prefetched(),
        }
    }

    /// Whether it can verify anything locally yet: a key set fetched in
    /// jwt and auto mode (introspection needs none).
    pub fn has_keys(&self) -> bool {
        match self {
            Verifier::Introspect(_) => true,
            Verifier::Jwt(jwt) | Verifier::Auto { jwt, .. } => jwt.has_keys(),
        }
    }
}

impl Authenticator for Verifier {
    fn asks_issuer(&self, token: &Token) -> bool {
        match self {
            Verifier::Introspect(_) => true,
            Verifier::Jwt(_) => false,
            Verifier::Auto { .. } => !looks_like_jwt(token.expose()),
        }
    }

    async fn authenticate(&self, token: &Token) -> Result<Arc<Identity>, AuthnError> {
        match self {
            Verifier::Introspect(i) => i.authenticate(token).await,
            Verifier::Jwt(j) => j.authenticate(token).await,
            Verifier::Auto { jwt, introspect } => {
                if looks_like_jwt(token.expose()) {
                    jwt.authenticate(token).await
                } else {
                    introspect.authenticate(token).await
                }
            }
        }
    }
    async fn authenticate_dry(&self, token: &Token) -> Result<Arc<Identity>, AuthnError> {
        match self {
            Verifier::Introspect(i) => i.authenticate_dry(token).await,
            Verifier::Jwt(j) => j.authenticate_dry(token).await,
            Verifier::Auto { jwt, introspect } => {
                if looks_like_jwt(token.expose()) {
                    jwt.authenticate_dry(token).await
                } else {
                    introspect.authenticate_dry(token).await
                }
            }
        }
    }
}
