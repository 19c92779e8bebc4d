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
//! trusted once that fetch lands; if it fails the old keys stay in use
//! (logged). A token whose key we hold does not wait for that fetch (it
//! runs in the background, and a slow or dead JWKS cannot stall checks);
//! one with an unknown kid, or keys past `max_stale_key_age_ms`, does.
//! The JWKS is fetched once at start-up too (readiness waits for it), and
//! while it cannot be fetched an unknown key is 503, not 401.
//!
//! An ID token signed with the same keys (Hydra publishes both key sets in
//! one JWKS) is not an access token: see [`AccessTokenEvidence`].

use super::{intern, Authenticator, AuthnError, ClaimChecks, ClaimFailure, FailureKind, Identity};
use crate::authn::config::{IntrospectionConfig, JwtAlgorithm};
use crate::extract::credential::Token;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// JWKS fetches at start-up before giving up (and serving anyway).
const PREFETCH_TRIES: u32 = 4;

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
    /// Keys older than this (a re-fetch kept failing) are not trusted.
    max_stale_key_age: Duration,
    /// Shared with the fetch task, which outlives a cancelled check.
    jwks: Arc<Jwks>,
    /// Serialises refreshes so concurrent unknown-kid tokens fetch once;
    /// held by the fetch task itself, so a cancelled check cannot let a
    /// second fetch start while the first is still running.
    refreshing: Arc<tokio::sync::Mutex<()>>,
    prefetched: std::sync::atomic::AtomicBool,
    checks: ClaimChecks,
    evidence: AccessTokenEvidence,
    max_body: usize,
}

/// What tells an access token from an ID token signed with the same JWKS.
struct AccessTokenEvidence {
    /// Lower-cased accepted `typ` values (absent `typ` is accepted).
    types: Vec<String>,
    any_of_claims: Vec<String>,
    none_of_claims: Vec<String>,
}

impl AccessTokenEvidence {
    fn check(
        &self,
        typ: Option<&str>,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), ClaimFailure> {
        if let Some(t) = typ {
            if !self.types.iter().any(|ok| ok.eq_ignore_ascii_case(t)) {
                return Err(ClaimFailure::NotAnAccessToken);
            }
        }
        if !self.any_of_claims.is_empty() && !self.any_of_claims.iter().any(|c| claims.contains_key(c)) {
            return Err(ClaimFailure::NotAnAccessToken);
        }
        if self.none_of_claims.iter().any(|c| claims.contains_key(c)) {
            return Err(ClaimFailure::NotAnAccessToken);
        }
        Ok(())
    }
}

/// The JWKS as last fetched, and how the last fetch went.
#[derive(Default)]
struct Jwks {
    keys: RwLock<Arc<KeySet>>,
    /// When the last fetch finished, and its error if it failed. Within
    /// `refresh_min_interval_ms` of a failed fetch, an unknown `kid` is
    /// "cannot decide" (503), not "unknown key" (401).
    last: Mutex<Option<(Instant, Option<AuthnError>)>>,
}

/// The JWKS as last fetched.
#[derive(Default)]
struct KeySet {
    keys: HashMap<String, Key>,
    /// When this set was fetched; `None` before the first fetch.
    fetched: Option<Instant>,
}

/// The claims we read; the rest stay in the map for the evidence checks.
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
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    ext: Option<serde_json::Value>,
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

impl Claims {
    /// Every claim name present, for the evidence checks.
    fn names(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut all = self.other.clone();
        for (name, present) in [
            ("client_id", self.client_id.is_some()),
            ("sub", self.sub.is_some()),
            ("scp", self.scp.is_some()),
            ("scope", self.scope.is_some()),
            ("exp", self.exp.is_some()),
            ("iss", self.iss.is_some()),
            ("username", self.username.is_some()),
            ("ext", self.ext.is_some()),
        ] {
            if present {
                all.insert(name.to_owned(), serde_json::Value::Null);
            }
        }
        all
    }
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

/// One JWKS download, parsed into keys by `kid`.
async fn fetch_keys(
    client: Arc<super::http_client::HydraClient>,
    url: reqwest::Url,
    max_body: usize,
) -> Result<HashMap<String, Key>, AuthnError> {
    let unavailable = |detail: String| AuthnError::unavailable(FailureKind::Jwks, detail);
    let mut resp = client
        .get()
        .get(url)
        .send()
        .await
        .map_err(|e| unavailable(format!("cannot fetch the JWKS: {}", e.without_url())))?;
    if resp.status() != reqwest::StatusCode::OK {
        return Err(unavailable(format!("JWKS answered HTTP {}", resp.status().as_u16())));
    }
    // Bounded while it is read, not after: a key set streamed without end
    // must not be buffered for as long as the timeout lets it run.
    let body = super::http_client::read_bounded(&mut resp, max_body)
        .await
        .map_err(|e| unavailable(e.without_url().to_string()))?
        .ok_or_else(|| unavailable(format!("JWKS larger than {max_body} bytes")))?;
    let set: JwkSet = serde_json::from_slice(&body).map_err(|e| unavailable(format!("bad JWKS: {e}")))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let KeyUse::Signing(alg) = key_use(&jwk.common) else {
            continue; // not ours to verify with, even when a token names it
        };
        let (Some(kid), Ok(key)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk)) else {
            continue; // keys without kid, or of unsupported types, cannot be selected
        };
        keys.insert(kid, Key { key, alg });
    }
    Ok(keys)
}

/// What a JWK says it is for.
#[derive(Debug, PartialEq)]
enum KeyUse {
    /// Verifying signatures (with this algorithm, when the key names one).
    Signing(Option<Algorithm>),
    /// Something else: `use` other than `sig`, or an `alg` that is not a
    /// JWS signature algorithm (`RSA-OAEP`, ...). Such a key is skipped: a
    /// token naming its kid is answered as one naming an unknown kid.
    Other,
}

fn key_use(common: &jsonwebtoken::jwk::CommonParameters) -> KeyUse {
    use jsonwebtoken::jwk::PublicKeyUse;
    if common
        .public_key_use
        .as_ref()
        .is_some_and(|u| !matches!(u, PublicKeyUse::Signature))
    {
        return KeyUse::Other;
    }
    match common.key_algorithm {
        None => KeyUse::Signing(None),
        // Named as in the JWS registry; the encryption ones do not parse.
        Some(a) => match a.to_string().parse::<Algorithm>() {
            Ok(alg) => KeyUse::Signing(Some(alg)),
            Err(_) => KeyUse::Other,
        },
    }
}

impl Jwks {
    /// Record a finished fetch: new keys on success, the error otherwise
    /// (the keys we had stay in use).
    fn store(&self, result: Result<HashMap<String, Key>, AuthnError>) -> Result<(), AuthnError> {
        let now = Instant::now();
        let error = match result {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), "JWKS refreshed");
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(KeySet {
                    keys,
                    fetched: Some(now),
                });
                None
            }
            Err(e) => Some(e),
        };
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some((now, error.clone()));
        error.map_or(Ok(()), Err)
    }
}

impl JwtVerifier {
    pub fn new(cfg: &IntrospectionConfig) -> anyhow::Result<JwtVerifier> {
        let jwt = &cfg.jwt;
        Ok(JwtVerifier {
            client: super::http_client::HydraClient::new(cfg)?,
            jwks_url: reqwest::Url::parse(&jwt.jwks_url)?,
            algorithms: jwt.algorithms.iter().copied().map(algorithm).collect(),
            // Validation refuses less; a config built in code is held to it too.
            refresh_every: Duration::from_millis(
                jwt.refresh_min_interval_ms
                    .max(crate::config::MIN_JWKS_REFRESH_INTERVAL_MS),
            ),
            max_key_age: Duration::from_millis(jwt.max_key_age_ms),
            max_stale_key_age: Duration::from_millis(jwt.max_stale_key_age_ms),
            jwks: Arc::new(Jwks::default()),
            refreshing: Arc::new(tokio::sync::Mutex::new(())),
            prefetched: std::sync::atomic::AtomicBool::new(false),
            checks: ClaimChecks::from_config(cfg),
            evidence: AccessTokenEvidence {
                types: jwt.access_token_types.iter().map(|t| t.to_ascii_lowercase()).collect(),
                any_of_claims: jwt.access_token_claims.clone(),
                none_of_claims: jwt.id_token_claims.clone(),
            },
            max_body: cfg.max_response_bytes,
        })
    }

    fn lookup(&self, kid: &str) -> Option<Key> {
        self.jwks
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys
            .get(kid)
            .cloned()
    }

    /// How long ago the keys we hold were fetched (none yet: `None`).
    fn key_age(&self) -> Option<Duration> {
        let set = self.jwks.keys.read().unwrap_or_else(PoisonError::into_inner);
        set.fetched.map(|t| t.elapsed())
    }

    fn keys_are_stale(&self) -> bool {
        self.key_age().is_some_and(|age| age >= self.max_key_age)
    }

    /// For a fetch without a check to prompt it: none held, or held for
    /// half of `max_stale_key_age` (checks re-fetch past `max_key_age`
    /// themselves; an idle replica must not drift past the stale bound).
    pub fn keys_due(&self) -> bool {
        self.key_age()
            .is_none_or(|age| age >= self.max_key_age.max(self.max_stale_key_age / 2))
    }

    /// Held, and not past `max_stale_key_age`.
    pub fn has_usable_keys(&self) -> bool {
        self.has_keys() && !self.keys_are_too_old()
    }

    /// Fetched longer ago than `max_stale_key_age`: not to be trusted
    /// until a fetch succeeds.
    fn keys_are_too_old(&self) -> bool {
        self.key_age().is_some_and(|age| age >= self.max_stale_key_age)
    }

    /// The outcome of a fetch that finished less than `refresh_every` ago,
    /// if one did: it stands (an error stays an error: 503).
    fn recent_outcome(&self) -> Option<Result<(), AuthnError>> {
        let (at, error) = self.jwks.last.lock().unwrap_or_else(PoisonError::into_inner).clone()?;
        (at.elapsed() < self.refresh_every).then(|| {
            // The failure already counted once; told again, it must not
            // count again (20 unknown kids would open the breaker).
            error.map_or(Ok(()), |e| {
                Err(AuthnError::unavailable(FailureKind::JwksRecentlyFailed, e.to_string()))
            })
        })
    }

    /// One fetch that records its result itself and holds `one_at_a_time`
    /// until it has, to be spawned as its own task: a check cancelled
    /// while it waits neither loses the fetch nor leaves a "fetched just
    /// now" mark without keys, nor lets a second fetch start meanwhile.
    fn fetch_task(
        &self,
        one_at_a_time: tokio::sync::OwnedMutexGuard<()>,
    ) -> impl std::future::Future<Output = Result<(), AuthnError>> + Send + 'static {
        let jwks = self.jwks.clone();
        let fetch = fetch_keys(self.client.clone(), self.jwks_url.clone(), self.max_body);
        async move {
            let _held = one_at_a_time;
            jwks.store(fetch.await)
        }
    }

    /// Fetch the JWKS unless a fetch finished less than `refresh_every` ago
    /// ([`JwtVerifier::recent_outcome`]), and wait for it. Callers queue on
    /// a tokio mutex, which is cancel-safe.
    async fn refresh(&self) -> Result<(), AuthnError> {
        let one_at_a_time = self.refreshing.clone().lock_owned().await;
        if let Some(outcome) = self.recent_outcome() {
            return outcome;
        }
        tokio::spawn(self.fetch_task(one_at_a_time)).await.unwrap_or_else(|e| {
            Err(AuthnError::unavailable(
                FailureKind::Jwks,
                format!("JWKS fetch task: {e}"),
            ))
        })
    }

    /// Start a fetch and return at once: the keys held go on verifying
    /// while it runs. Nothing when a fetch is running (its result will do)
    /// or one finished less than `refresh_every` ago, as for [`JwtVerifier::refresh`].
    fn refresh_in_background(&self) {
        let Ok(one_at_a_time) = self.refreshing.clone().try_lock_owned() else {
            return;
        };
        if self.recent_outcome().is_some() {
            return;
        }
        let fetch = self.fetch_task(one_at_a_time);
        tokio::spawn(async move {
            if let Err(e) = fetch.await {
                tracing::warn!(error = %e, "JWKS re-fetch failed; keeping the keys we have");
            }
        });
    }

    /// Fetch the JWKS before the first check needs it: some issuers, Hydra
    /// among them, create a key set on its first request (an RSA key), which
    /// can take longer than a check may wait. A few tries with backoff;
    /// readiness waits until this is done, whatever the outcome.
    pub async fn prefetch(&self) {
        let _one_at_a_time = self.refreshing.lock().await;
        for attempt in 1..=PREFETCH_TRIES {
            let fetched = fetch_keys(self.client.clone(), self.jwks_url.clone(), self.max_body).await;
            match self.jwks.store(fetched) {
                Ok(()) => break,
                Err(e) if attempt < PREFETCH_TRIES => {
                    tracing::warn!(error = %e, attempt, "JWKS prefetch failed; trying again");
                    tokio::time::sleep(Duration::from_millis(250) * attempt).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "JWKS prefetch failed; unknown keys answer 503 until a refresh succeeds")
                }
            }
        }
        self.prefetched.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// One fetch now (unless one ran within `refresh_min_interval_ms`).
    pub async fn fetch_keys(&self) {
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "JWKS fetch failed; not ready until a key set is fetched");
        }
    }

    /// `refresh_min_interval_ms`: the pause between fetches.
    pub fn retry_interval(&self) -> Duration {
        self.refresh_every
    }

    /// Whether [`JwtVerifier::prefetch`] has finished.
    pub fn prefetched(&self) -> bool {
        self.prefetched.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether a key set has ever been fetched.
    pub fn has_keys(&self) -> bool {
        self.key_age().is_some()
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
            if self.lookup(&kid).is_some() && !self.keys_are_too_old() {
                // Our key for it is due a re-fetch, not distrusted yet: a
                // JWKS that is slow or down must not stall this check (a
                // blocking fetch outlasts Envoy's deadline), so the fetch
                // runs in the background and the keys held answer.
                self.refresh_in_background();
            } else if let Err(e) = self.refresh().await {
                // A JWKS outage must not become an API outage at once...
                if self.keys_are_too_old() {
                    // ... nor keep a key the issuer may have removed alive
                    // for as long as someone can make our fetches fail.
                    return Err(AuthnError::unavailable(
                        FailureKind::Jwks,
                        format!(
                            "the key set could not be re-fetched for longer than max_stale_key_age_ms; not trusted: {e}"
                        ),
                    ));
                }
                tracing::warn!(error = %e, "JWKS re-fetch failed; keeping the keys we have");
            }
        }
        let key = match self.lookup(&kid) {
            Some(k) => k,
            None => {
                // While the JWKS cannot be fetched, an unknown kid may be a
                // key we have not seen yet: cannot decide (503), not 401.
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
        self.evidence
            .check(header.typ.as_deref(), &c.names())
            .map_err(AuthnError::Rejected)?;
        let claim = |name: &str| c.other.get(name).and_then(serde_json::Value::as_str).map(str::to_owned);
        let as_introspection = super::Introspection {
            active: true,
            exp: c.exp,
            iss: c.iss.clone(),
            aud: c.aud.clone(),
            // An issuer that marks its tokens' kind: a refresh or ID token is refused.
            token_use: claim("token_use"),
            token_type: claim("token_type"),
            ..Default::default()
        };
        self.checks
            .check(&as_introspection, super::introspection::now_unix())
            .map_err(AuthnError::Rejected)?;
        let scopes = match (&c.scp, &c.scope) {
            (Some(list), _) => intern::list(list),
            (None, Some(s)) => intern::list(&super::introspection::scope_items(s)),
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
            token_type: None,
            username: intern::non_empty(c.username.as_deref()),
            ext: c.ext.clone().filter(|e| !e.is_null()).map(Arc::new),
            verified_locally: true,
            served_stale: false,
        }))
    }
}

impl Authenticator for JwtVerifier {
    async fn authenticate(&self, token: &Token) -> Result<Arc<Identity>, AuthnError> {
        self.verify(token).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::config::JwtConfig;
    use base64::Engine as _;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// An Ed25519 signing key and its public half, for JWKS served here.
    struct TestKey {
        signing: jsonwebtoken::EncodingKey,
        /// The public key, base64url (the JWK's `x`).
        x: String,
    }

    impl TestKey {
        fn generate() -> TestKey {
            use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let der = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
            let public = Ed25519KeyPair::from_pkcs8(der.as_ref())
                .expect("pkcs8")
                .public_key()
                .as_ref()
                .to_vec();
            TestKey {
                signing: jsonwebtoken::EncodingKey::from_ed_der(der.as_ref()),
                x: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public),
            }
        }

        /// The public JWK with these members added (`kid`, `use`, `alg`).
        fn jwk(&self, members: serde_json::Value) -> serde_json::Value {
            let mut jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": self.x});
            if let (Some(all), serde_json::Value::Object(more)) = (jwk.as_object_mut(), members) {
                all.extend(more);
            }
            jwk
        }

        /// An access token as Hydra's jwt strategy signs one, naming `kid`.
        fn sign(&self, kid: &str) -> Token {
            let now = crate::authn::introspection::now_unix();
            let claims = serde_json::json!({
                "client_id": "reader", "sub": "reader", "scp": ["read"], "iat": now, "exp": now + 300
            });
            self.sign_with(Some(kid), None, claims)
        }

        /// A token with exactly these claims and header `kid` / `typ`.
        fn sign_with(&self, kid: Option<&str>, typ: Option<&str>, claims: serde_json::Value) -> Token {
            let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
            header.kid = kid.map(str::to_owned);
            header.typ = typ.map(str::to_owned);
            Token::new(jsonwebtoken::encode(&header, &claims, &self.signing).expect("sign"))
        }
    }

    /// Serve `jwks` on a loopback port; its URL.
    async fn serve_jwks(jwks: serde_json::Value) -> String {
        serve_jwks_until(jwks, Arc::default()).await
    }

    /// Serve `jwks` until `hang` is set; from then on every request is
    /// read and never answered (a black-holed JWKS host). Its URL.
    async fn serve_jwks_until(jwks: serde_json::Value, hang: Arc<AtomicBool>) -> String {
        let body = jwks.to_string();
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let (body, hang) = (body.clone(), hang.clone());
                async move {
                    if hang.load(Ordering::SeqCst) {
                        std::future::pending::<()>().await;
                    }
                    body
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    fn verifier(jwks_url: &str, adjust: impl FnOnce(&mut IntrospectionConfig)) -> JwtVerifier {
        let mut cfg = IntrospectionConfig {
            jwt: JwtConfig {
                jwks_url: jwks_url.to_owned(),
                ..JwtConfig::default()
            },
            ..IntrospectionConfig::default()
        };
        adjust(&mut cfg);
        JwtVerifier::new(&cfg).expect("verifier")
    }

    /// A key the JWKS marks for encryption (`use: enc`), or for an
    /// algorithm that is not a JWS one, never verifies a signature: a
    /// token naming it is answered as one naming an unknown kid. The same
    /// key marked for signing verifies (so the refusal is about the marks).
    #[tokio::test]
    async fn encryption_keys_are_not_used_for_signatures() {
        let key = TestKey::generate();
        for members in [
            serde_json::json!({"kid": "k", "use": "enc"}),
            serde_json::json!({"kid": "k", "alg": "RSA-OAEP"}),
        ] {
            let jwks = serve_jwks(serde_json::json!({ "keys": [key.jwk(members.clone())] })).await;
            let got = verifier(&jwks, |_| {}).verify(&key.sign("k")).await;
            assert!(
                matches!(got, Err(AuthnError::Rejected(ClaimFailure::UnknownKey))),
                "{members}: {got:?}"
            );
        }
        let signing = key.jwk(serde_json::json!({"kid": "k", "use": "sig", "alg": "EdDSA"}));
        let jwks = serve_jwks(serde_json::json!({ "keys": [signing] })).await;
        let got = verifier(&jwks, |_| {}).verify(&key.sign("k")).await;
        assert!(got.is_ok(), "{got:?}");
    }

    /// Each refusal the verifier promises, one token apiece, against the
    /// same key that verifies the well-formed token: a missing kid, a
    /// missing exp, an nbf ahead, a `typ` that is not an access token's.
    /// A `scope` string (no `scp`) splits on U+0020 alone: a tab or a
    /// no-break space inside one scope never yields another scope.
    #[tokio::test]
    async fn each_refusal_and_the_scope_string() {
        let key = TestKey::generate();
        let signing = key.jwk(serde_json::json!({"kid": "k", "use": "sig", "alg": "EdDSA"}));
        let jwks = serve_jwks(serde_json::json!({ "keys": [signing] })).await;
        let v = verifier(&jwks, |_| {});
        let now = crate::authn::introspection::now_unix();
        let good = serde_json::json!({"client_id": "reader", "sub": "reader", "iat": now, "exp": now + 300});
        let with = |more: serde_json::Value| {
            let mut claims = good.clone();
            if let (Some(all), serde_json::Value::Object(more)) = (claims.as_object_mut(), more) {
                all.extend(more);
            }
            claims
        };
        let ok = v.verify(&key.sign_with(Some("k"), Some("at+jwt"), good.clone())).await;
        assert!(ok.is_ok(), "{ok:?}");
        let mut no_exp = good.clone();
        no_exp.as_object_mut().map(|c| c.remove("exp"));
        for (what, token, expected) in [
            (
                "no kid",
                key.sign_with(None, None, good.clone()),
                ClaimFailure::UnknownKey,
            ),
            (
                "no exp",
                key.sign_with(Some("k"), None, no_exp),
                ClaimFailure::MalformedJwt,
            ),
            (
                "nbf ahead",
                key.sign_with(Some("k"), None, with(serde_json::json!({"nbf": now + 3_600}))),
                ClaimFailure::NotYetValid,
            ),
            (
                "an ID token's typ",
                key.sign_with(Some("k"), Some("JWT+id"), good.clone()),
                ClaimFailure::NotAnAccessToken,
            ),
        ] {
            let got = v.verify(&token).await;
            assert!(
                matches!(&got, Err(AuthnError::Rejected(f)) if *f == expected),
                "{what}: {got:?}"
            );
        }
        let scoped = v
            .verify(&key.sign_with(
                Some("k"),
                None,
                with(serde_json::json!({"scope": "read  files.x\u{a0}admin\tdelete"})),
            ))
            .await
            .expect("verifies");
        let scopes: Vec<&str> = scoped.scopes.iter().map(|s| &**s).collect();
        assert_eq!(scopes, ["read", "files.x\u{a0}admin\tdelete"]);
    }

    #[test]
    fn only_signing_keys_are_used() {
        let common = |members: serde_json::Value| {
            serde_json::from_value::<jsonwebtoken::jwk::CommonParameters>(members).expect("jwk members")
        };
        assert_eq!(key_use(&common(serde_json::json!({}))), KeyUse::Signing(None));
        assert_eq!(
            key_use(&common(serde_json::json!({"use": "sig", "alg": "RS256"}))),
            KeyUse::Signing(Some(Algorithm::RS256))
        );
        for other in [
            serde_json::json!({"use": "enc"}),
            serde_json::json!({"use": "something"}),
            serde_json::json!({"alg": "RSA-OAEP-256"}),
            serde_json::json!({"use": "sig", "alg": "RSA1_5"}),
            serde_json::json!({"alg": "A128KW"}),
        ] {
            assert_eq!(key_use(&common(other.clone())), KeyUse::Other, "{other}");
        }
    }

    /// Keys due a re-fetch (older than max_key_age) while the JWKS host
    /// accepts and never answers: a token whose key we hold is verified at
    /// once with the keys held; the first such check starts the fetch in
    /// the background, the next does not wait for it. Before, each waited
    /// for the fetch (up to timeout_ms, far past Envoy's deadline). A token
    /// with a kid we do not hold still waits for a fetch.
    #[tokio::test]
    async fn stale_key_refresh_does_not_block_known_kid_checks() {
        let key = TestKey::generate();
        let hang = Arc::new(AtomicBool::new(false));
        let signing = key.jwk(serde_json::json!({"kid": "k", "use": "sig", "alg": "EdDSA"}));
        let jwks = serve_jwks_until(serde_json::json!({ "keys": [signing] }), hang.clone()).await;
        let v = verifier(&jwks, |c| {
            c.timeout_ms = 5_000;
            c.jwt.max_key_age_ms = 0;
            c.jwt.refresh_min_interval_ms = 100;
        });
        v.prefetch().await;
        assert!(v.has_keys());
        hang.store(true, Ordering::SeqCst);
        // Past refresh_min_interval_ms: the next check may fetch again.
        tokio::time::sleep(Duration::from_millis(150)).await;
        for n in 1..=2 {
            let started = tokio::time::Instant::now();
            let got = tokio::time::timeout(Duration::from_secs(1), v.verify(&key.sign("k"))).await;
            assert!(matches!(got, Ok(Ok(_))), "check {n}: {got:?}");
            assert!(started.elapsed() < Duration::from_millis(500), "check {n} waited");
        }
        assert!(v.refreshing.try_lock().is_err(), "the fetch is still pending");
        let unknown = tokio::time::timeout(Duration::from_millis(300), v.verify(&key.sign("other"))).await;
        assert!(unknown.is_err(), "an unknown kid waits for the fetch: {unknown:?}");
    }
}
