//! Extraction: what a front door received → [`AuthzRequest`], the plain
//! facts a decision needs (method, host, path, credential, route hints).
//!
//! ```text
//! Envoy CheckRequest ──► envoy_wire.rs ──► envoy.rs ──┐
//!                                                      ├──► AuthzRequest ──► decision::Engine
//! forward-auth, http_service ──► forwarded.rs ─────────┘
//! ```
//!
//! Each front door is one file that fills the same [`AuthzRequest`] through
//! the same canonical forms ([`canonical`], [`path`]), credential parser
//! ([`credential`]) and limits, so no door can be lax where another is
//! strict. Nothing here knows about rules, tokens' validity or answers.

pub mod canonical;
pub mod credential;
pub mod envoy;
pub mod envoy_wire;
pub(crate) mod forwarded;
pub mod headers;
pub mod path;
pub(crate) mod refusal;
pub(crate) mod sources;

pub use envoy::{envoy_check_request, METADATA_NAMESPACE};

use credential::Credential;
use std::collections::HashMap;

/// Header limits, as defence in depth behind the proxy's own (Envoy: 100
/// headers, 60 KiB by default): anyone who can reach our port can send more.
pub const MAX_HEADERS: usize = 200;
pub const MAX_HEADER_BYTES: usize = 96 * 1024;

#[derive(Default)]
pub struct AuthzRequest {
    /// Upper-case ([`canonical::method`]); on refusal, a printable copy for
    /// logs and `malformed` says why.
    pub method: String,
    /// Lower-case, no port, no trailing dot ([`canonical::host`]); on
    /// refusal, a printable copy.
    pub host: String,
    /// Set when the method or host is not one (400).
    pub malformed: Option<refusal::RequestProblem>,
    /// Normalized path ([`path::normalize`]); on refusal, the raw path (for
    /// logs) and `path_error` says why.
    pub path: String,
    pub path_error: Option<refusal::PathProblem>,
    /// Set when the request exceeds [`MAX_HEADERS`] / [`MAX_HEADER_BYTES`].
    pub too_large: Option<refusal::SizeProblem>,
    pub credential: Credential,
    /// Per-route policy the proxy attached (Envoy `context_extensions`).
    pub context_extensions: HashMap<String, String>,
    /// Route metadata in our namespace, as plain JSON (Envoy
    /// `route_metadata_context`, namespace `hydra_authz`).
    pub route_metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// The request's headers, lower-case names, repeats joined with ','
    /// (cookies with ',' or "; "), as Envoy sends them: for token sources a
    /// rule names (`token_from`) and the caller's trace context.
    pub headers: headers::Headers,
    /// The raw query string (no '?', no fragment), for `query:<name>` sources.
    pub query: String,
}

/// Every fact but the query's text, which may carry a token (`query:<name>`
/// sources); the credential and headers redact themselves.
impl std::fmt::Debug for AuthzRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthzRequest")
            .field("method", &self.method)
            .field("host", &self.host)
            .field("malformed", &self.malformed)
            .field("path", &self.path)
            .field("path_error", &self.path_error)
            .field("too_large", &self.too_large)
            .field("credential", &self.credential)
            .field("context_extensions", &self.context_extensions)
            .field("route_metadata", &self.route_metadata)
            .field("headers", &self.headers)
            .field("query", &format_args!("<{} bytes>", self.query.len()))
            .finish()
    }
}

impl AuthzRequest {
    /// Method, host and path in canonical form, or refused with why; the
    /// one place every front door turns raw request-line facts into ours.
    pub(crate) fn with_target(method: &str, host: &str, raw_path: &str) -> AuthzRequest {
        let mut malformed = None;
        let mut canonical = |raw: &str, f: fn(&str) -> Result<String, refusal::RequestProblem>| {
            f(raw).unwrap_or_else(|why| {
                malformed = malformed.or(Some(why));
                canonical::shown(raw)
            })
        };
        let method = canonical(method, canonical::method);
        let host = canonical(host, canonical::host);
        // A leading `//` reads as an authority to some upstream parsers
        // (`//x/admin`: host x, path /admin), so it is never matched as the
        // path with its slashes merged. No request target has one (RFC 9112
        // §3.2); a proxy that merges slashes (Envoy's `merge_slashes`, as
        // shipped) never sends one.
        let authority_like = raw_path.starts_with("//");
        if authority_like {
            malformed = malformed.or(Some(refusal::RequestProblem::AuthorityLikeTarget));
        }
        // A bounded, query-less, printable copy of a refused path for the
        // log line (no CR/LF: a refused path must not forge log lines); for
        // `//x/admin` the path as sent, not the `/x/admin` it would merge to.
        let shown_path = || canonical::shown(raw_path.split(['?', '#']).next().unwrap_or(""));
        let (path, path_error) = if authority_like {
            // Refused above: nothing to normalize.
            (shown_path(), None)
        } else {
            match path::normalize(raw_path) {
                Ok(p) => (p, None),
                Err(why) => (shown_path(), Some(why)),
            }
        };
        let query = raw_path
            .split_once('?')
            .map(|(_, q)| q.split('#').next().unwrap_or_default().to_owned())
            .unwrap_or_default();
        AuthzRequest {
            method,
            host,
            malformed,
            path,
            path_error,
            query,
            ..Default::default()
        }
    }
}

/// Why the headers are refused, if they exceed our limits.
pub(crate) fn header_limits<'a>(headers: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Option<refusal::SizeProblem> {
    let (count, bytes) = header_extent(headers);
    if count > MAX_HEADERS {
        Some(refusal::SizeProblem::TooManyHeaders)
    } else if bytes > MAX_HEADER_BYTES {
        Some(refusal::SizeProblem::HeadersTooLarge)
    } else {
        None
    }
}

/// How many headers, and their names' and values' bytes together.
pub(crate) fn header_extent<'a>(headers: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> (usize, usize) {
    headers.fold((0, 0), |(n, len), (k, v)| (n + 1, len + k.len() + v.len()))
}

/// Whether the query carries an `access_token` parameter (RFC 6750 §2.3).
pub(crate) fn query_has_access_token(raw_path: &str) -> bool {
    raw_path
        .split_once('?')
        .is_some_and(|(_, query)| query_names_access_token(query))
}

/// Whether a raw query (no '?') carries an `access_token` parameter.
pub(crate) fn query_names_access_token(query: &str) -> bool {
    let query = query.split('#').next().unwrap_or_default();
    // Also after a ';', which Rack 2 and older Python servers split at,
    // and in the spellings PHP reads as `access_token` (`access.token`).
    query
        .split(';')
        .any(|part| form_urlencoded::parse(part.as_bytes()).any(|(k, _)| sources::reads_as(&k, "access_token")))
}
