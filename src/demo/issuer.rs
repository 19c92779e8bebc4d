//! A tiny, in-memory, **development-only** OAuth2 server shaped like Ory
//! Hydra v2: client-credentials tokens on the public port (`/oauth2/token`,
//! `/oauth2/revoke`) and RFC 7662 introspection on the admin port
//! (`/admin/oauth2/introspect`), answering with Hydra's field names.
//!
//! It exists so `hydra-authz demo` and the tests need nothing else. It has
//! fixed secrets, keeps tokens in memory and binds loopback only: never use it
//! for anything real.

use axum::extract::{Form, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::net::TcpListener;

use crate::authn::introspection::now_unix;

#[derive(Debug, Clone)]
pub struct Client {
    pub id: String,
    pub secret: String,
    pub scopes: Vec<String>,
}

/// The seed scenario's clients.
pub fn seed_clients() -> Vec<Client> {
    let c = |id: &str, secret: &str, scopes: &[&str]| Client {
        id: id.into(),
        secret: secret.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    };
    vec![
        c("reader", "reader-secret", &["read_date"]),
        c("writer", "writer-secret", &["post_echo"]),
    ]
}

#[derive(Debug, Clone)]
struct Issued {
    client_id: String,
    scopes: Vec<String>,
    iat: i64,
    exp: i64,
    revoked: bool,
    /// Fields that replace or extend this token's introspection answer (tests).
    overrides: serde_json::Map<String, serde_json::Value>,
}

/// Which access tokens the issuer mints, like Hydra's `strategies.access_token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFormat {
    /// `ory_at_…` opaque strings (Hydra's default).
    Opaque,
    /// JWTs signed with Ed25519 (`EdDSA`).
    JwtEdDsa,
    /// JWTs signed with P-256 (`ES256`).
    JwtEs256,
    /// JWTs signed with RSA-2048 (`RS256`, Hydra's default JWT algorithm).
    JwtRs256,
}

struct SigningKey {
    kid: String,
    alg: jsonwebtoken::Algorithm,
    key: jsonwebtoken::EncodingKey,
    jwk: serde_json::Value,
}

impl SigningKey {
    fn generate(format: TokenFormat) -> Option<SigningKey> {
        use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        use base64::Engine;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let kid = hex::encode(rand::random::<[u8; 8]>());
        match format {
            TokenFormat::Opaque => None,
            TokenFormat::JwtEdDsa => {
                let der = Ed25519KeyPair::generate_pkcs8(&rng).ok()?;
                let public = Ed25519KeyPair::from_pkcs8(der.as_ref())
                    .ok()?
                    .public_key()
                    .as_ref()
                    .to_vec();
                Some(SigningKey {
                    jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&public), "kid": kid, "alg": "EdDSA", "use": "sig"}),
                    kid,
                    alg: jsonwebtoken::Algorithm::EdDSA,
                    key: jsonwebtoken::EncodingKey::from_ed_der(der.as_ref()),
                })
            }
            TokenFormat::JwtEs256 => {
                let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).ok()?;
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.as_ref()).ok()?;
                let point = pair.public_key().as_ref().to_vec(); // 0x04 || X || Y
                Some(SigningKey {
                    jwk: json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..65]),
                                "kid": kid, "alg": "ES256", "use": "sig"}),
                    kid,
                    alg: jsonwebtoken::Algorithm::ES256,
                    key: jsonwebtoken::EncodingKey::from_ec_der(der.as_ref()),
                })
            }
            TokenFormat::JwtRs256 => {
                use aws_lc_rs::encoding::AsDer;
                use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
                let pair = aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048).ok()?;
                let pkcs8 = pair.as_der().ok()?;
                // jsonwebtoken reads RSA signing keys as PKCS#1; its PEM
                // reader unwraps PKCS#8 for us.
                let pem = format!(
                    "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                    base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
                );
                let public = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
                Some(SigningKey {
                    jwk: json!({"kty": "RSA", "n": b64(&public.n), "e": b64(&public.e),
                                "kid": kid, "alg": "RS256", "use": "sig"}),
                    kid,
                    alg: jsonwebtoken::Algorithm::RS256,
                    key: jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).ok()?,
                })
            }
        }
    }
}

struct Inner {
    issuer: String,
    ttl_s: i64,
    clients: HashMap<String, Client>,
    tokens: Mutex<HashMap<String, Issued>>,
    introspections: std::sync::atomic::AtomicU64,
    /// The `token_type_hint` of the last introspection request.
    last_hint: Mutex<Option<String>>,
    format: TokenFormat,
    /// Current signing key first; older ones stay published after a rotation.
    keys: Mutex<Vec<SigningKey>>,
    jwks_fetches: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer")
            .field("issuer", &self.issuer)
            .field("format", &self.format)
            .finish()
    }
}

/// Shared state of one dev issuer; cheap to clone.
#[derive(Debug, Clone)]
pub struct DevIssuer(Arc<Inner>);

/// Addresses of a running dev issuer.
#[derive(Debug, Clone, Copy)]
pub struct IssuerAddrs {
    pub public: SocketAddr,
    pub admin: SocketAddr,
}

impl IssuerAddrs {
    pub fn token_url(&self) -> String {
        format!("http://{}/oauth2/token", self.public)
    }
    pub fn revoke_url(&self) -> String {
        format!("http://{}/oauth2/revoke", self.public)
    }
    pub fn introspection_url(&self) -> String {
        format!("http://{}/admin/oauth2/introspect", self.admin)
    }
    pub fn jwks_url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.public)
    }
}

impl DevIssuer {
    /// The `iss` it puts in tokens and introspection answers.
    pub fn issuer(&self) -> &str {
        &self.0.issuer
    }

    pub fn new(issuer: impl Into<String>, clients: Vec<Client>, ttl_s: i64) -> DevIssuer {
        Self::with_format(issuer, clients, ttl_s, TokenFormat::Opaque)
    }

    pub fn with_format(issuer: impl Into<String>, clients: Vec<Client>, ttl_s: i64, format: TokenFormat) -> DevIssuer {
        DevIssuer(Arc::new(Inner {
            issuer: issuer.into(),
            ttl_s,
            clients: clients.into_iter().map(|c| (c.id.clone(), c)).collect(),
            tokens: Mutex::new(HashMap::new()),
            introspections: Default::default(),
            last_hint: Mutex::new(None),
            format,
            keys: Mutex::new(SigningKey::generate(format).into_iter().collect()),
            jwks_fetches: Default::default(),
        }))
    }

    /// Start signing with a new key (new `kid`); the old one stays published.
    pub fn rotate_key(&self) {
        if let Some(k) = SigningKey::generate(self.0.format) {
            self.keys().insert(0, k);
        }
    }

    /// Drop every signing key but the newest from the JWKS, as an issuer
    /// does once a rotated-out key must no longer be trusted.
    pub fn retire_previous_keys(&self) {
        self.keys().truncate(1);
    }

    /// How many times `/.well-known/jwks.json` was fetched.
    pub fn jwks_fetches(&self) -> u64 {
        self.0.jwks_fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, Vec<SigningKey>> {
        self.0.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bind the public and admin ports (loopback only) and serve in the background.
    pub async fn serve(public: SocketAddr, admin: SocketAddr, ttl_s: i64) -> anyhow::Result<(DevIssuer, IssuerAddrs)> {
        Self::serve_with(public, admin, ttl_s, TokenFormat::Opaque).await
    }

    /// As [`DevIssuer::serve`], minting tokens in `format`.
    pub async fn serve_with(
        public: SocketAddr,
        admin: SocketAddr,
        ttl_s: i64,
        format: TokenFormat,
    ) -> anyhow::Result<(DevIssuer, IssuerAddrs)> {
        anyhow::ensure!(
            public.ip().is_loopback() && admin.ip().is_loopback(),
            "the dev issuer binds loopback addresses only"
        );
        let public_l = TcpListener::bind(public).await?;
        let admin_l = TcpListener::bind(admin).await?;
        let addrs = IssuerAddrs {
            public: public_l.local_addr()?,
            admin: admin_l.local_addr()?,
        };
        let issuer = DevIssuer::with_format(format!("http://{}", addrs.public), seed_clients(), ttl_s, format);
        let (p, a) = (issuer.public_router(), issuer.admin_router());
        tokio::spawn(async move { axum::serve(public_l, p).await });
        tokio::spawn(async move { axum::serve(admin_l, a).await });
        Ok((issuer, addrs))
    }

    pub fn public_router(&self) -> Router {
        Router::new()
            .route("/oauth2/token", post(token))
            .route("/oauth2/revoke", post(revoke))
            .route("/.well-known/jwks.json", axum::routing::get(jwks))
            .with_state(self.clone())
    }

    pub fn admin_router(&self) -> Router {
        Router::new()
            .route("/admin/oauth2/introspect", post(introspect))
            .with_state(self.clone())
    }

    /// Mint a token directly (demo start-up, tests).
    pub fn mint(&self, client_id: &str, scopes: &[&str]) -> Option<String> {
        let client = self.0.clients.get(client_id)?;
        if !scopes.iter().all(|s| client.scopes.iter().any(|c| c == s)) {
            return None;
        }
        Some(self.issue(client_id, scopes.iter().map(|s| s.to_string()).collect(), self.0.ttl_s))
    }

    /// Mint a token with its own lifetime (negative: already expired).
    pub fn mint_with_ttl(&self, client_id: &str, scopes: &[&str], ttl_s: i64) -> String {
        self.issue(client_id, scopes.iter().map(|s| s.to_string()).collect(), ttl_s)
    }

    /// Mint an opaque token whose (active) introspection answer has these
    /// fields replaced or added, e.g. another `iss`, an `aud`, `token_use`:
    /// what a misconfigured or foreign Hydra would say, for contract tests.
    pub fn mint_with_claims(&self, client_id: &str, scopes: &[&str], claims: serde_json::Value) -> String {
        let token = self.mint_with_ttl(client_id, scopes, self.0.ttl_s);
        if let (Some(t), serde_json::Value::Object(claims)) = (self.tokens().get_mut(&token), claims) {
            t.overrides = claims;
        }
        token
    }

    pub fn revoke_token(&self, token: &str) {
        if let Some(t) = self.tokens().get_mut(token) {
            t.revoked = true;
        }
    }

    /// The `token_type_hint` the last introspection request carried.
    pub fn last_token_type_hint(&self) -> Option<String> {
        self.0.last_hint.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// How many introspection requests were served.
    pub fn introspections(&self) -> u64 {
        self.0.introspections.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// An OpenID Connect ID token as Hydra signs it, with the same keys as
    /// JWT access tokens (both key sets are in one `/.well-known/jwks.json`):
    /// `aud` is the client, and there is `at_hash`/`nonce`, but no
    /// `client_id` and no `scp`. `None` for opaque issuers. For the
    /// token-type confusion tests: this must never pass as an access token.
    pub fn mint_id_token(&self, client_id: &str, nonce: Option<&str>) -> Option<String> {
        let now = now_unix();
        let keys = self.keys();
        let k = keys.first()?;
        let mut claims = json!({
            "iss": self.0.issuer, "sub": client_id, "aud": [client_id],
            "exp": now + self.0.ttl_s, "iat": now, "auth_time": now, "rat": now,
            "jti": hex::encode(rand::random::<[u8; 16]>()),
            "at_hash": "Yk4r7hG8dA2BJtTCsC6S8w", "sid": hex::encode(rand::random::<[u8; 8]>()),
        });
        if let (Some(n), Some(map)) = (nonce, claims.as_object_mut()) {
            map.insert("nonce".into(), json!(n));
        }
        let mut header = jsonwebtoken::Header::new(k.alg);
        header.kid = Some(k.kid.clone());
        jsonwebtoken::encode(&header, &claims, &k.key).ok()
    }

    fn issue(&self, client_id: &str, scopes: Vec<String>, ttl_s: i64) -> String {
        let now = now_unix();
        let token = match self.keys().first() {
            None => format!("ory_at_{}", hex::encode(rand::random::<[u8; 32]>())),
            Some(k) => {
                // Hydra's JWT access token claims.
                let claims = json!({
                    "iss": self.0.issuer, "sub": client_id, "aud": [], "client_id": client_id,
                    "exp": now + ttl_s, "iat": now, "nbf": now, "jti": hex::encode(rand::random::<[u8; 16]>()),
                    "scp": scopes, "ext": {},
                });
                let mut header = jsonwebtoken::Header::new(k.alg);
                header.kid = Some(k.kid.clone());
                jsonwebtoken::encode(&header, &claims, &k.key).unwrap_or_default()
            }
        };
        self.tokens().insert(
            token.clone(),
            Issued {
                client_id: client_id.into(),
                scopes,
                iat: now,
                exp: now + ttl_s,
                revoked: false,
                overrides: serde_json::Map::new(),
            },
        );
        token
    }

    fn tokens(&self) -> std::sync::MutexGuard<'_, HashMap<String, Issued>> {
        self.0.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn authenticate(&self, headers: &HeaderMap, form: &HashMap<String, String>) -> Option<&Client> {
        let (id, secret) = basic_credentials(headers)
            .or_else(|| Some((form.get("client_id")?.clone(), form.get("client_secret")?.clone())))?;
        self.0.clients.get(&id).filter(|c| c.secret == secret)
    }
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let pair = String::from_utf8(decoded).ok()?;
    let (id, secret) = pair.split_once(':')?;
    let dec = |s: &str| {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((dec(id)?, dec(secret)?))
}

/// Hydra's answer to bad client credentials.
fn invalid_client() -> Response {
    oauth_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "Client authentication failed.",
    )
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    // Hydra v2.3.0's OAuth2 error shape: these two fields only.
    let body = json!({"error": error, "error_description": description});
    (status, Json(body)).into_response()
}

async fn token(
    State(issuer): State<DevIssuer>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let Some(client) = issuer.authenticate(&headers, &form).cloned() else {
        return invalid_client();
    };
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Only client_credentials is supported.",
        );
    }
    // Like Hydra: each requested scope must be allowed to the client; with no
    // `scope` parameter the client's registered scopes are granted.
    let requested: Vec<String> = match form.get("scope") {
        Some(s) => s.split_whitespace().map(str::to_owned).collect(),
        None => client.scopes.clone(),
    };
    if let Some(bad) = requested.iter().find(|s| !client.scopes.contains(s)) {
        let msg = format!("The OAuth 2.0 Client is not allowed to request scope '{bad}'.");
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", &msg);
    }
    let scope = requested.join(" ");
    let ttl = issuer.0.ttl_s;
    let access_token = issuer.issue(&client.id, requested, ttl);
    let body = json!({"access_token": access_token, "expires_in": ttl, "scope": scope, "token_type": "bearer"});
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

async fn revoke(
    State(issuer): State<DevIssuer>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let Some(client) = issuer.authenticate(&headers, &form).cloned() else {
        return invalid_client();
    };
    if let Some(t) = form.get("token") {
        if let Some(rec) = issuer.tokens().get_mut(t) {
            // RFC 7009: a client may only revoke its own tokens; others are ignored silently.
            if rec.client_id == client.id {
                rec.revoked = true;
            }
        }
    }
    StatusCode::OK.into_response()
}

async fn jwks(State(issuer): State<DevIssuer>) -> Response {
    issuer.0.jwks_fetches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let keys: Vec<serde_json::Value> = issuer.keys().iter().map(|k| k.jwk.clone()).collect();
    Json(json!({ "keys": keys })).into_response()
}

/// RFC 7662 as Hydra v2.3.0 answers it (checked against the real Hydra by
/// `tests/integration/real_hydra.rs`): only a form body is read (an empty
/// body, JSON or any other content type is 400 `invalid_request`); a form
/// without `token`, or with an unknown one, is 200 `{"active":false}`;
/// `scope` is left out when none was granted; `aud` is always a list.
async fn introspect(State(issuer): State<DevIssuer>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    issuer
        .0
        .introspections
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !is_form || body.is_empty() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The request is missing a required parameter, includes an invalid parameter value, includes a parameter more than once, or is otherwise malformed. The POST body can not be empty.",
        );
    }
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    *issuer.0.last_hint.lock().unwrap_or_else(PoisonError::into_inner) = form.get("token_type_hint").cloned();
    let now = now_unix();
    let rec = form.get("token").and_then(|t| issuer.tokens().get(t).cloned());
    match rec {
        Some(r) if !r.revoked && r.exp > now => {
            let mut answer = serde_json::Map::new();
            answer.insert("active".into(), json!(true));
            if !r.scopes.is_empty() {
                answer.insert("scope".into(), json!(r.scopes.join(" ")));
            }
            for (k, v) in [
                ("client_id", json!(r.client_id)),
                ("sub", json!(r.client_id)),
                ("exp", json!(r.exp)),
                ("iat", json!(r.iat)),
                ("nbf", json!(r.iat)),
                ("aud", json!([])),
                ("iss", json!(issuer.0.issuer)),
                ("token_type", json!("Bearer")),
                ("token_use", json!("access_token")),
            ] {
                answer.insert(k.into(), v);
            }
            answer.extend(r.overrides);
            Json(serde_json::Value::Object(answer)).into_response()
        }
        _ => Json(json!({"active": false})).into_response(),
    }
}
