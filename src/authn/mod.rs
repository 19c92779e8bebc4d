//! "Who is this?": turn a bearer token into an [`Identity`], or say why not.
//!
//! [`Authenticator`] is the seam where strategies plug in: Hydra
//! introspection today; a cache or a local JWT verifier wrap or replace it
//! without the decision engine changing.

pub mod cache;
pub mod claims;
pub mod http_client;
pub mod instrumented;
pub mod intern;
pub mod introspection;
pub mod jwt;
pub mod resilience;
pub mod verifier;

use crate::decision::token::Token;
use std::future::Future;
use std::sync::Arc;

pub use claims::{ClaimChecks, ClaimFailure};
pub use introspection::{HydraIntrospector, Introspection};

/// The caller, as the upstream will learn it, plus the verified claims that
/// explanations show and a cache needs (`expires_at`). Strings are shared
/// ([`intern`]): a cache holds many identities with the same values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub client_id: Option<Arc<str>>,
    pub subject: Option<Arc<str>>,
    pub scopes: Arc<[Arc<str>]>,
    /// `exp`, unix seconds.
    pub expires_at: Option<i64>,
    pub issuer: Option<Arc<str>>,
    pub audience: Arc<[Arc<str>]>,
    pub token_use: Option<Arc<str>>,
    /// Verified here from a JWT's signature rather than by asking Hydra.
    pub verified_locally: bool,
}

impl AuthnError {
    /// A failure that is neither worth retrying nor carries a Retry-After.
    pub fn unavailable(kind: &'static str, detail: impl Into<String>) -> AuthnError {
        AuthnError::Unavailable {
            kind,
            detail: detail.into(),
            retryable: false,
            retry_after: None,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthnError {
    /// The token is not acceptable (inactive, expired, wrong issuer, …): 401.
    #[error("token rejected: {0}")]
    Rejected(ClaimFailure),
    /// We could not find out (Hydra down, slow, garbled): 503, fail closed.
    #[error("introspection failed ({kind}): {detail}")]
    Unavailable {
        kind: &'static str,
        detail: String,
        /// Worth another attempt (connection refused, 429, 502, 503, 504).
        retryable: bool,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<std::time::Duration>,
    },
}

pub trait Authenticator: Send + Sync + 'static {
    fn authenticate(&self, token: &Token) -> impl Future<Output = Result<Arc<Identity>, AuthnError>> + Send;

    /// The same verification for `Explain` and `hydra-authz check`, with no
    /// effect on what later checks see: nothing is cached, the circuit
    /// breaker records nothing, no metric moves. It reads that state (a
    /// cached verdict, an open circuit) to say what a check would get.
    /// Verifiers without shared state just verify.
    fn authenticate_dry(&self, token: &Token) -> impl Future<Output = Result<Arc<Identity>, AuthnError>> + Send {
        self.authenticate(token)
    }
}
