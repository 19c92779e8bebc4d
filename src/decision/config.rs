//! The `[authorization]` and `[[rules]]` sections, beside the engine they
//! configure (re-exported as `config::AuthorizationConfig` and
//! `config::RuleConfig`, so `config.rs` still lists every key). The engine
//! reads these plain values; it never imports the config module.

use super::scopes::ScopeStrategy;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthorizationConfig {
    pub scope_strategy: ScopeStrategy,
    /// `realm` in `WWW-Authenticate`.
    pub realm: String,
}

impl Default for AuthorizationConfig {
    fn default() -> Self {
        AuthorizationConfig {
            scope_strategy: ScopeStrategy::Exact,
            realm: "hydra-authz".into(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleConfig {
    pub id: String,
    /// Optional host pattern (`api.example.com`, `*.example.com`), case-insensitive, port ignored.
    pub host: Option<String>,
    /// Optional HTTP methods; empty matches any.
    pub methods: Vec<String>,
    /// Path pattern: `*` one segment, `**` any number of segments, `{name}` one segment.
    pub path: String,
    /// All of these scopes are required.
    pub scopes: Vec<String>,
    /// Alternatives (OpenAPI security requirement objects): at least one of
    /// these sets must be granted in full, in addition to `scopes`.
    pub any_of: Vec<Vec<String>>,
    /// Anonymous route: no token needed, identity headers removed.
    pub public: bool,
    /// Optional authentication: no token → allowed anonymously with every
    /// identity header removed; a valid token → allowed with its identity
    /// (and the rule's scopes apply); an invalid or revoked token → 401,
    /// never silently anonymous.
    pub optional: bool,
    /// Claim conditions (403 `claim_mismatch` when one fails): the token's
    /// `aud` must contain one of `audiences`, its `iss` be one of `issuers`,
    /// its `client_id` one of `clients`.
    pub audiences: Vec<String>,
    pub issuers: Vec<String>,
    pub clients: Vec<String>,
    /// Claim path → accepted values (`"ext.tenant" = ["acme"]`); a list
    /// claim passes when one of its items is accepted.
    pub claims: std::collections::BTreeMap<String, Vec<String>>,
    /// Where the token may be, tried in order: `header` (the default,
    /// `Authorization: Bearer`), `header:<name>`, `cookie:<name>`,
    /// `query:<name>`.
    pub token_from: Vec<String>,
}
