//! The `[headers]` section: which headers carry the caller's identity to
//! the upstream, beside the responder that sets them (re-exported by
//! `config.rs`). `respond` reads these plain values; it never imports the
//! config module.

use serde::{Deserialize, Serialize};

/// Header names, claims to headers, and stripping the credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeadersConfig {
    pub client_id: String,
    pub scopes: String,
    pub subject: String,
    /// Remove the caller's `authorization` header before it reaches the upstream.
    pub strip_authorization: bool,
    /// Claims to headers: header name → claim path (`"x-tenant" = "ext.tenant"`).
    /// Overwritten on allow, removed when the token lacks the claim, on
    /// public routes and when the value is not a safe header value.
    pub claims: std::collections::BTreeMap<String, String>,
    /// Joins the items of a list claim (`aud`, `ext.groups`).
    pub claims_separator: String,
}

impl HeadersConfig {
    /// The headers an allow sets from the identity: client id, scopes,
    /// subject, then the claim headers.
    pub fn set_names(&self) -> impl Iterator<Item = &str> {
        [self.client_id.as_str(), &self.scopes, &self.subject]
            .into_iter()
            .chain(self.claims.keys().map(String::as_str))
    }
}

impl Default for HeadersConfig {
    fn default() -> Self {
        HeadersConfig {
            client_id: "x-client-id".into(),
            scopes: "x-scopes".into(),
            subject: "x-subject".into(),
            strip_authorization: false,
            claims: Default::default(),
            claims_separator: " ".into(),
        }
    }
}
