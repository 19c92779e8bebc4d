//! The deny table: every reason a request is refused, with its HTTP status,
//! `WWW-Authenticate` challenge, problem title/detail and log/metric label,
//! in one exhaustive place. How a front door puts it on the wire is
//! `respond/`'s job.

use crate::authn::{ClaimFailure, FailureKind};
use crate::extract::refusal::{CredentialProblem, PathProblem, RequestProblem, SizeProblem};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    /// Malformed Authorization header (RFC 6750 `invalid_request`).
    InvalidRequest(CredentialProblem),
    /// A path we refuse to match (see `extract::path`).
    InvalidPath(PathProblem),
    /// A method or host that is not one (see `extract::canonical`).
    BadRequest(RequestProblem),
    /// Headers beyond our limits (431).
    TooLarge(SizeProblem),
    MissingToken,
    InvalidToken(ClaimFailure),
    /// The route's required scopes (all of them, as RFC 6750 advises).
    InsufficientScope(Vec<String>),
    /// A rule's claim condition failed; the claim path (never its value).
    ClaimMismatch(String),
    NoRule,
    RouteMisconfigured(String),
    /// Introspection could not answer; the kind of failure.
    Unavailable(FailureKind),
}

impl DenyReason {
    pub fn http_status(&self) -> u16 {
        match self {
            DenyReason::InvalidRequest(_) | DenyReason::InvalidPath(_) | DenyReason::BadRequest(_) => 400,
            DenyReason::TooLarge(_) => 431,
            DenyReason::MissingToken | DenyReason::InvalidToken(_) => 401,
            DenyReason::InsufficientScope(_) | DenyReason::NoRule | DenyReason::ClaimMismatch(_) => 403,
            DenyReason::RouteMisconfigured(_) => 500,
            DenyReason::Unavailable(_) => 503,
        }
    }

    /// Stable label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            DenyReason::InvalidRequest(_) => "invalid_request",
            DenyReason::InvalidPath(_) => "invalid_path",
            DenyReason::BadRequest(_) => "bad_request",
            DenyReason::TooLarge(_) => "request_too_large",
            DenyReason::MissingToken => "missing_token",
            DenyReason::InvalidToken(_) => "invalid_token",
            DenyReason::InsufficientScope(_) => "insufficient_scope",
            DenyReason::ClaimMismatch(_) => "claim_mismatch",
            DenyReason::NoRule => "no_rule",
            DenyReason::RouteMisconfigured(_) => "route_misconfigured",
            DenyReason::Unavailable(_) => "introspection_unavailable",
        }
    }

    pub fn title(&self) -> &'static str {
        match self {
            DenyReason::InvalidRequest(_) => "Malformed credentials",
            DenyReason::InvalidPath(_) => "Invalid path",
            DenyReason::BadRequest(_) => "Bad request",
            DenyReason::TooLarge(_) => "Request headers too large",
            DenyReason::MissingToken => "Authentication required",
            DenyReason::InvalidToken(_) => "Invalid token",
            DenyReason::InsufficientScope(_) => "Insufficient scope",
            DenyReason::ClaimMismatch(_) => "Claim not accepted",
            DenyReason::NoRule => "Forbidden",
            DenyReason::RouteMisconfigured(_) => "Authorization policy error",
            DenyReason::Unavailable(_) => "Authorization unavailable",
        }
    }

    /// Safe to send to the client: never the token, never internal addresses.
    pub fn detail(&self) -> String {
        match self {
            DenyReason::InvalidRequest(why) => why.to_string(),
            DenyReason::InvalidPath(why) => why.to_string(),
            DenyReason::BadRequest(why) => why.to_string(),
            DenyReason::TooLarge(why) => why.to_string(),
            DenyReason::MissingToken => "a bearer token is required".into(),
            DenyReason::InvalidToken(f) => f.to_string(),
            DenyReason::InsufficientScope(s) => format!("the token lacks a required scope: {}", s.join(" ")),
            DenyReason::ClaimMismatch(claim) => format!("the token's {claim} claim is not accepted for this route"),
            DenyReason::NoRule => "no rule allows this request".into(),
            DenyReason::RouteMisconfigured(_) => "the route's authorization policy is invalid".into(),
            DenyReason::Unavailable(_) => "the token could not be verified right now".into(),
        }
    }

    /// RFC 6750 §3 challenge, when one applies.
    pub fn www_authenticate(&self, realm: &str) -> Option<String> {
        let (error, extra) = match self {
            DenyReason::MissingToken => return Some(format!("Bearer realm=\"{realm}\"")),
            DenyReason::InvalidRequest(_) => ("invalid_request", String::new()),
            DenyReason::InvalidToken(f) => ("invalid_token", format!(", error_description=\"{}\"", f.label())),
            DenyReason::InsufficientScope(s) => ("insufficient_scope", format!(", scope=\"{}\"", s.join(" "))),
            _ => return None,
        };
        Some(format!("Bearer realm=\"{realm}\", error=\"{error}\"{extra}"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(DenyReason),
}
