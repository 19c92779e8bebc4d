//! The `[introspection]` section and its parts (`tls`, `auth`, `cache`,
//! `jwt`, `resilience`), beside the authenticators they configure
//! (re-exported by `config.rs`, which still lists and validates every key).
//! `authn` reads these plain values; it never imports the config module.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// TLS towards the introspection endpoint (and JWKS).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientTls {
    /// Extra PEM CA bundle to trust (a private CA in front of Hydra).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for mTLS to Hydra.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// How often those files are re-read; changed files are used for later
    /// requests (renewal without a restart).
    pub reload_interval_ms: u64,
}

impl Default for ClientTls {
    fn default() -> Self {
        ClientTls {
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            reload_interval_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntrospectionConfig {
    /// RFC 7662 endpoint. Hydra v2 admin port: `/admin/oauth2/introspect`.
    pub url: String,
    pub timeout_ms: u64,
    /// Clock skew tolerated when re-checking `exp`/`nbf` locally.
    pub leeway_s: u64,
    /// When non-empty, `iss` must be one of these.
    pub allowed_issuers: Vec<String>,
    /// When non-empty, `aud` must contain at least one of these.
    pub required_audience: Vec<String>,
    /// Introspection bodies larger than this are treated as a failure.
    pub max_response_bytes: usize,
    pub auth: IntrospectionAuth,
    pub cache: CacheConfig,
    /// `introspect` (default): ask Hydra for every token. `jwt`: verify JWT
    /// access tokens locally against the JWKS. `auto`: JWT-shaped tokens
    /// locally, opaque ones by introspection.
    pub mode: VerifyMode,
    pub jwt: JwtConfig,
    pub resilience: ResilienceConfig,
    pub tls: ClientTls,
}

/// Retries, circuit breaker and concurrency bounds for the introspection call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResilienceConfig {
    /// Retries after the first attempt (connect errors, 429, 502, 503, 504 only).
    pub max_retries: usize,
    /// Budget for one verification, all attempts included; Envoy's gRPC
    /// deadline shortens it further.
    pub retry_budget_ms: u64,
    /// Consecutive failures that open the circuit.
    pub breaker_failures: u32,
    pub breaker_cooldown_ms: u64,
    /// Introspection calls in flight at most.
    pub max_concurrent: usize,
    /// Checks waiting for a slot at most; more are shed with 503.
    pub max_waiting: usize,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        ResilienceConfig {
            max_retries: 2,
            retry_budget_ms: 900,
            breaker_failures: 20,
            breaker_cooldown_ms: 2_000,
            max_concurrent: 256,
            max_waiting: 1_024,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyMode {
    #[default]
    Introspect,
    Jwt,
    Auto,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// Hydra: `https://<public host>/.well-known/jwks.json`.
    pub jwks_url: String,
    pub algorithms: Vec<JwtAlgorithm>,
    /// A token with an unknown `kid` refreshes the JWKS at most this often.
    pub refresh_min_interval_ms: u64,
    /// Keys older than this are re-fetched on their next use, so a key the
    /// issuer removed stops being trusted once that fetch lands (a check
    /// whose key we hold does not wait for it). A failed re-fetch keeps the
    /// old keys (logged): a JWKS outage must not become an API outage.
    pub max_key_age_ms: u64,
    /// ... but not forever: keys last fetched longer ago than this are not
    /// trusted at all (503, cannot decide) until a fetch succeeds, so a
    /// signing key the issuer removed (rotated out after a leak) cannot be
    /// kept alive by making our re-fetches fail. At least `max_key_age_ms`.
    pub max_stale_key_age_ms: u64,
    /// A verified JWT is remembered (by SHA-256, never the token) for
    /// min(this, `exp` − now), even with `[introspection.cache]` off: a
    /// locally verified JWT cannot be revoked before `exp` anyway, so this
    /// only skips repeating the signature check. 0 = verify every time.
    pub verified_ttl_ms: u64,
    /// Access-token evidence, so an ID token signed by the same issuer
    /// (Hydra publishes both key sets in one JWKS) is not taken for an
    /// access token. The JOSE `typ`, when present, must be one of these
    /// (case-insensitive; RFC 9068 says `at+jwt`, Hydra writes `JWT`).
    pub access_token_types: Vec<String>,
    /// At least one of these claims must be present (Hydra: `client_id` and
    /// `scp`; ID tokens carry neither). Empty: no such requirement.
    pub access_token_claims: Vec<String>,
    /// None of these may be present: they only occur in ID tokens.
    pub id_token_claims: Vec<String>,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            jwks_url: String::new(),
            algorithms: vec![JwtAlgorithm::RS256, JwtAlgorithm::ES256, JwtAlgorithm::EdDSA],
            refresh_min_interval_ms: 30_000,
            max_key_age_ms: 300_000,
            max_stale_key_age_ms: 3_600_000,
            verified_ttl_ms: 60_000,
            access_token_types: vec!["at+jwt".into(), "application/at+jwt".into(), "JWT".into()],
            access_token_claims: vec!["client_id".into(), "scp".into(), "scope".into()],
            id_token_claims: vec!["nonce".into(), "at_hash".into(), "c_hash".into()],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::upper_case_acronyms)]
pub enum JwtAlgorithm {
    RS256,
    ES256,
    EdDSA,
}

/// Opt-in cache of verification results. A cached token stays accepted after
/// it is revoked at Hydra until its entry expires (at most `ttl_ms`) or is
/// purged through the admin API: that is the staleness window you opt into.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    pub enabled: bool,
    /// Upper bound for remembering an active token (never past its `exp`).
    pub ttl_ms: u64,
    /// How long an inactive/rejected token is remembered; 0 = never. Not
    /// an unknown `kid` or a not-yet-valid token: those depend on our key
    /// set and the clocks, and may pass on the next check.
    pub negative_ttl_ms: u64,
    pub max_entries: u64,
    /// Bounded stale-if-error, 0 = off: while the issuer cannot be reached
    /// (not when it answers `active: false`), a token verified within the
    /// last this many ms is still allowed, never past its `exp`, never
    /// after a purge; each such allow is marked (log `stale=true`, span,
    /// `hydra_authz_stale_allows_total`). Works with the cache off too.
    pub stale_if_error_ms: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: false,
            ttl_ms: 30_000,
            negative_ttl_ms: 0,
            max_entries: 100_000,
            stale_if_error_ms: 0,
        }
    }
}

impl Default for IntrospectionConfig {
    fn default() -> Self {
        IntrospectionConfig {
            url: "http://127.0.0.1:4445/admin/oauth2/introspect".into(),
            timeout_ms: 800,
            leeway_s: 5,
            allowed_issuers: Vec::new(),
            required_audience: Vec::new(),
            max_response_bytes: 64 * 1024,
            auth: IntrospectionAuth::default(),
            cache: CacheConfig::default(),
            mode: VerifyMode::Introspect,
            jwt: JwtConfig::default(),
            resilience: ResilienceConfig::default(),
            tls: ClientTls::default(),
        }
    }
}

/// How we authenticate to the introspection endpoint. Secrets are referenced
/// by env var name or file path, never written into the config itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntrospectionAuth {
    pub kind: AuthKind,
    /// `bearer`: env var holding the API key (Ory Network).
    pub token_env: Option<String>,
    /// `bearer`: file holding the API key (e.g. a mounted Secret).
    pub token_file: Option<PathBuf>,
    /// `client_secret_basic`: our client id at the OAuth2 server.
    pub client_id: Option<String>,
    /// `client_secret_basic`: env var holding the client secret.
    pub client_secret_env: Option<String>,
    /// `client_secret_basic`: file holding the client secret.
    pub client_secret_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    /// Self-hosted Hydra admin port (reachable only inside the cluster).
    #[default]
    None,
    Bearer,
    ClientSecretBasic,
}

/// Replace every query value (an API key passed as `?key=...` is as secret as
/// a password) and drop the fragment; keys stay, so the shape is visible.
pub fn redact_url_secrets(url: &mut reqwest::Url) {
    url.set_fragment(None);
    if url.query().is_some() {
        let keys: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
        url.query_pairs_mut()
            .clear()
            .extend_pairs(keys.iter().map(|k| (k.as_str(), "REDACTED")));
    }
}
