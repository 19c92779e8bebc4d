//! "Who is this?": turn a bearer token into an [`Identity`], or say why not.
//!
//! [`Authenticator`] is the seam where strategies plug in: Hydra
//! introspection today; a cache or a local JWT verifier wrap or replace it
//! without the decision engine changing.

pub mod cache;
#[cfg(test)]
mod cancellation_tests;
pub mod claims;
pub mod config;
pub mod fleet;
pub(crate) mod http_client;
pub(crate) mod instrumented;
pub(crate) mod intern;
pub mod introspection;
pub mod jwt;
pub mod resilience;
pub mod stack;
pub(crate) mod verifier;

use crate::extract::credential::Token;
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
    /// RFC 7662 `token_type` (Hydra: `Bearer`).
    pub token_type: Option<Arc<str>>,
    /// Hydra's `username` and `ext` (what its token hook or consent session
    /// added), for claims-to-headers and claim conditions.
    pub username: Option<Arc<str>>,
    pub ext: Option<Arc<serde_json::Value>>,
    /// Verified here from a JWT's signature rather than by asking Hydra.
    pub verified_locally: bool,
    /// Not verified now: the issuer could not be reached and this identity
    /// was verified within `stale_if_error_ms` (bounded stale-if-error).
    /// Marked in the decision's log line, span and metrics.
    pub served_stale: bool,
}

impl Identity {
    /// The value at a claim path (`ext.tenant`, `aud`, `username`), as JSON;
    /// `None` when the token does not carry it. Only the claims an identity
    /// keeps can be named (see [`CLAIM_ROOTS`]).
    pub fn claim(&self, path: &str) -> Option<serde_json::Value> {
        use serde_json::Value;
        let (root, rest) = match path.split_once('.') {
            Some((root, rest)) => (root, Some(rest)),
            None => (path, None),
        };
        // `ext` is walked by reference and only the leaf is copied: it can
        // be large, and this runs per claim header and condition per check.
        if root == "ext" {
            let mut at = self.ext.as_deref()?;
            for key in rest.into_iter().flat_map(|r| r.split('.')) {
                at = at.as_object()?.get(key)?;
            }
            return Some(at.clone());
        }
        let text = |s: &Option<Arc<str>>| s.as_deref().map(|v| Value::String(v.to_owned()));
        let list = |l: &[Arc<str>]| (!l.is_empty()).then(|| l.iter().map(|v| Value::String(v.to_string())).collect());
        let value = match root {
            "username" => text(&self.username),
            "sub" => text(&self.subject),
            "client_id" => text(&self.client_id),
            "iss" => text(&self.issuer),
            "token_type" => text(&self.token_type),
            "aud" => list(&self.audience),
            "scope" => list(&self.scopes),
            "exp" => self.expires_at.map(Value::from),
            _ => None,
        }?;
        // Only `ext` has structure below it.
        match rest {
            None => Some(value),
            Some(_) => None,
        }
    }
}

/// The claim names a claim path may start with: what an identity keeps.
pub const CLAIM_ROOTS: &[&str] = &[
    "ext",
    "username",
    "sub",
    "client_id",
    "iss",
    "token_type",
    "aud",
    "scope",
    "exp",
];

/// Why a token could not be verified (a 503): a type, not a string, so the
/// breaker, the log level and the metrics label each match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// Our own request budget or the HTTP client's timeout ran out.
    Timeout,
    /// No connection to the issuer.
    Connect,
    /// The connection broke mid-way.
    Transport,
    /// A status other than 200 and 429.
    Status,
    /// 429: the issuer's rate limit. Callers can cause it (a flood of
    /// made-up tokens, each one introspection), so it neither opens the
    /// circuit nor lets stale-if-error serve an older identity.
    RateLimited,
    /// Not `application/json`.
    ContentType,
    /// Answer larger than `max_response_bytes`.
    TooLarge,
    /// Not a valid RFC 7662 answer.
    Parse,
    /// The JWKS could not be fetched or read.
    Jwks,
    /// The last JWKS fetch failed moments ago (within
    /// `refresh_min_interval_ms`) and is not tried again yet: the same
    /// failure told once more, so it does not count again.
    JwksRecentlyFailed,
    /// Our own check budget (`retry_budget_ms`) ran out.
    Deadline,
    /// The caller's deadline (`grpc-timeout`) ran out first: the caller's
    /// choice, not the issuer's fault.
    CallerDeadline,
    /// The circuit breaker is open: we did not ask.
    CircuitOpen,
    /// Shed: too many checks waiting for an introspection slot.
    Overloaded,
    /// An internal cache state that should not occur.
    Cache,
}

impl FailureKind {
    /// Stable label for logs, metrics and span attributes.
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Connect => "connect",
            FailureKind::Transport => "transport",
            FailureKind::Status => "status",
            FailureKind::RateLimited => "rate_limited",
            FailureKind::ContentType => "content_type",
            FailureKind::TooLarge => "too_large",
            FailureKind::Parse => "parse",
            FailureKind::Jwks => "jwks",
            FailureKind::JwksRecentlyFailed => "jwks_recently_failed",
            FailureKind::Deadline => "deadline",
            FailureKind::CallerDeadline => "caller_deadline",
            FailureKind::CircuitOpen => "circuit_open",
            FailureKind::Overloaded => "overloaded",
            FailureKind::Cache => "cache",
        }
    }

    /// Whether the issuer (Hydra, its JWKS) failed, as opposed to a limit of
    /// ours or the caller's own deadline: a caller must not be able to open
    /// the circuit for everyone. [`Self::opens_circuit`] narrows it further.
    pub fn is_issuer_fault(self) -> bool {
        match self {
            FailureKind::Timeout
            | FailureKind::Connect
            | FailureKind::Transport
            | FailureKind::Status
            | FailureKind::RateLimited
            | FailureKind::ContentType
            | FailureKind::TooLarge
            | FailureKind::Parse
            | FailureKind::Jwks
            | FailureKind::Deadline => true,
            FailureKind::CallerDeadline
            | FailureKind::CircuitOpen
            | FailureKind::Overloaded
            | FailureKind::Cache
            | FailureKind::JwksRecentlyFailed => false,
        }
    }

    /// Whether this failure counts towards opening the circuit breaker: an
    /// issuer fault, but not an answer too large or unreadable. Those can be
    /// one token's own (its `ext`, filled by a consent app or token hook from
    /// user-editable data, over `max_response_bytes` or nested past the JSON
    /// parser's limit): its holder gets 503, but must not be able to open
    /// the circuit for everyone by repeating it. Hydra, having answered, is
    /// not struggling. Nor do they let stale-if-error serve an older
    /// identity: the holder could choose that.
    /// A 429 neither: callers who flood us with made-up tokens spend the
    /// issuer's quota, and must not thereby open the circuit or be served
    /// the older identity of a token revoked since.
    pub fn opens_circuit(self) -> bool {
        self.is_issuer_fault()
            && !matches!(
                self,
                FailureKind::TooLarge | FailureKind::Parse | FailureKind::RateLimited
            )
    }

    /// Failures the breaker and the shedder announce themselves (one line per
    /// state change), so the per-check log line need not shout about them.
    pub fn is_announced(self) -> bool {
        matches!(self, FailureKind::CircuitOpen | FailureKind::Overloaded)
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

impl AuthnError {
    /// A failure that is neither worth retrying nor carries a Retry-After.
    pub fn unavailable(kind: FailureKind, detail: impl Into<String>) -> AuthnError {
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
        kind: FailureKind,
        detail: String,
        /// Worth another attempt (connection refused, 429, 502, 503, 504).
        retryable: bool,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<std::time::Duration>,
    },
}

/// Gauges a layer publishes from its own state when metrics are scraped,
/// rather than as that state changes: a reload that replaces the layer then
/// replaces what is shown, and a check still finishing on the old layer
/// cannot write over it.
pub trait ScrapedGauges {
    fn publish_gauges(&self);
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

    /// Whether verifying `token` asks the issuer (introspection), rather
    /// than checking it here (a JWT against keys already fetched). Only
    /// such calls take an introspection slot and pass the circuit breaker:
    /// a breaker that local checks fed could never be closed by them, and
    /// one that refused them would turn away what needs no issuer.
    fn asks_issuer(&self, _token: &Token) -> bool {
        true
    }
}
