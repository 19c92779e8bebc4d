//! RFC 7662 token introspection against Ory Hydra (or any compliant server).
//!
//! Anything but a well-formed `200 application/json` answer with a boolean
//! `active` is "cannot decide" ([`AuthnError::Unavailable`]), which the
//! engine turns into a 503: we fail closed.

use super::{intern, Authenticator, AuthnError, ClaimChecks, FailureKind, Identity};
use crate::authn::config::{AuthKind, IntrospectionConfig};
use crate::extract::credential::Token;
use serde::{Deserialize, Deserializer, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The fields of an introspection answer we use. `active` has no default:
/// a body without it, or with `"active": "true"`, does not parse. Also the
/// shape a verified identity is shared in through the fleet's L2 cache.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct Introspection {
    pub active: bool,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default)]
    pub exp: Option<i64>,
    #[serde(default)]
    pub nbf: Option<i64>,
    #[serde(default)]
    pub iat: Option<i64>,
    /// RFC 7662 allows a string or an array; Hydra sends an array.
    #[serde(default, deserialize_with = "string_or_list")]
    pub aud: Vec<String>,
    #[serde(default)]
    pub iss: Option<String>,
    #[serde(default)]
    pub token_type: Option<String>,
    /// Hydra extension: `access_token` or `refresh_token`.
    #[serde(default)]
    pub token_use: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    /// Hydra: the session's access-token extra claims (token hook, consent).
    #[serde(default)]
    pub ext: Option<serde_json::Value>,
}

impl Introspection {
    pub fn parse(body: &[u8]) -> Result<Introspection, serde_json::Error> {
        use serde::de::Error;
        // JSON is UTF-8. serde_json skips the strings of fields we ignore
        // without validating them, so check the whole body first (found by
        // the fuzzer: invalid UTF-8 in an unknown field was accepted).
        let text = std::str::from_utf8(body).map_err(|_| serde_json::Error::custom("the answer is not UTF-8"))?;
        // An RFC 7662 answer is a JSON object. serde's derived Deserialize
        // also takes an array of fields in declaration order, so without this
        // `[true]` would read as an active token (found by the fuzzer).
        if !text.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('{') {
            return Err(serde_json::Error::custom(
                "an introspection answer must be a JSON object",
            ));
        }
        serde_json::from_str(text)
    }

    pub fn scopes(&self) -> Vec<&str> {
        self.scope.as_deref().map(scope_items).unwrap_or_default()
    }

    pub fn identity(&self) -> Identity {
        Identity {
            client_id: intern::non_empty(self.client_id.as_deref()),
            subject: intern::non_empty(self.sub.as_deref()),
            scopes: intern::list(&self.scopes()),
            expires_at: self.exp,
            issuer: self.iss.as_deref().map(intern::string),
            audience: intern::list(&self.aud),
            token_use: self.token_use.as_deref().map(intern::string),
            token_type: self.token_type.as_deref().map(intern::string),
            username: intern::non_empty(self.username.as_deref()),
            ext: self.ext.clone().filter(|e| !e.is_null()).map(Arc::new),
            verified_locally: false,
            served_stale: false,
        }
    }

    /// The answer that [`Introspection::identity`] turns back into
    /// `identity` (for sharing a verified identity through the fleet).
    pub fn from_identity(identity: &Identity) -> Introspection {
        let text = |s: &Option<Arc<str>>| s.as_deref().map(str::to_owned);
        Introspection {
            active: true,
            scope: Some(identity.scopes.join(" ")).filter(|s| !s.is_empty()),
            client_id: text(&identity.client_id),
            sub: text(&identity.subject),
            exp: identity.expires_at,
            nbf: None,
            iat: None,
            aud: identity.audience.iter().map(|a| a.to_string()).collect(),
            iss: text(&identity.issuer),
            token_type: text(&identity.token_type),
            token_use: text(&identity.token_use),
            username: text(&identity.username),
            ext: identity.ext.as_deref().cloned(),
        }
    }
}

/// `url.full` for the introspection span: no userinfo, and every query value
/// replaced, since an API key passed as `?key=...` is as secret as a password.
fn shown_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    crate::authn::config::redact_url_secrets(&mut shown);
    shown.to_string()
}

pub(crate) fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    })
}

/// Pooled HTTP client for one introspection endpoint.
#[derive(Debug, Clone)]
pub struct HydraIntrospector {
    client: std::sync::Arc<super::http_client::HydraClient>,
    url: reqwest::Url,
    /// The URL without userinfo or query values, for traces.
    shown_url: String,
    /// Pre-rendered `Authorization` value for the introspection call, if any.
    auth_header: Option<reqwest::header::HeaderValue>,
    max_body: usize,
    checks: ClaimChecks,
}

impl HydraIntrospector {
    /// Reads the configured secret (env var or file) now, so a missing secret
    /// stops start-up instead of failing every check.
    pub fn new(cfg: &IntrospectionConfig) -> anyhow::Result<HydraIntrospector> {
        let url = reqwest::Url::parse(&cfg.url)?;
        let client = super::http_client::HydraClient::new(cfg)?;
        Ok(HydraIntrospector {
            client,
            shown_url: shown_url(&url),
            url,
            auth_header: auth_header(cfg)?,
            max_body: cfg.max_response_bytes,
            checks: ClaimChecks::from_config(cfg),
        })
    }

    /// One introspection round trip; the raw answer, before claim checks.
    /// Traced as an HTTP client span whose context is propagated to Hydra.
    pub async fn introspect(&self, token: &Token) -> Result<Introspection, AuthnError> {
        let span = if crate::telemetry::spans_enabled() {
            tracing::info_span!("POST", otel.kind = "client")
        } else {
            tracing::Span::none()
        };
        span.set_attribute("http.request.method", "POST");
        span.set_attribute("url.full", self.shown_url.clone());
        if let Some(host) = self.url.host_str() {
            span.set_attribute("server.address", host.to_owned());
        }
        if let Some(port) = self.url.port_or_known_default() {
            span.set_attribute("server.port", i64::from(port));
        }
        let result = self.round_trip(token, &span).instrument(span.clone()).await;
        if let Err(AuthnError::Unavailable { kind, .. }) = &result {
            span.set_attribute("error.type", kind.label());
        }
        result
    }

    async fn round_trip(&self, token: &Token, span: &tracing::Span) -> Result<Introspection, AuthnError> {
        let client = self.client.get();
        let mut builder = client
            .post(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            // The hint keeps a server that tries kinds in order from
            // looking the token up as a refresh token first (RFC 7662 §2.1).
            .form(&[("token", token.expose()), ("token_type_hint", "access_token")]);
        if let Some(h) = &self.auth_header {
            builder = builder.header(reqwest::header::AUTHORIZATION, h.clone());
        }
        let mut request = builder.build().map_err(transport_error)?;
        // The trace context goes on to Hydra, but not the caller's baggage:
        // that is text of the caller's choosing, and Hydra is another
        // trust domain (the `baggage` propagator reads it for our spans).
        let cx = opentelemetry::baggage::BaggageExt::with_cleared_baggage(&span.context());
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut opentelemetry_http::HeaderInjector(request.headers_mut()))
        });
        let mut resp = client.execute(request).await.map_err(transport_error)?;
        let status = resp.status();
        span.set_attribute("http.response.status_code", i64::from(status.as_u16()));
        if status != reqwest::StatusCode::OK {
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                // Beyond any check's budget anyway; bounded so no clock math overflows.
                .map(|s| Duration::from_secs(s.min(3600)));
            // A 429 is retried only when the issuer says when (and that fits
            // the budget): retrying a rate limit blindly spends the quota
            // that every other check needs.
            let retryable = match status.as_u16() {
                429 => retry_after.is_some(),
                502..=504 => true,
                _ => false,
            };
            return Err(AuthnError::Unavailable {
                kind: match status.as_u16() {
                    429 => FailureKind::RateLimited,
                    _ => FailureKind::Status,
                },
                detail: format!("introspection answered HTTP {}", status.as_u16()),
                retryable,
                retry_after,
            });
        }
        let is_json = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(unavailable(
                FailureKind::ContentType,
                "introspection answer is not application/json".into(),
            ));
        }
        let Some(body) = super::http_client::read_bounded(&mut resp, self.max_body)
            .await
            .map_err(transport_error)?
        else {
            return Err(unavailable(
                FailureKind::TooLarge,
                format!("introspection answer exceeds {} bytes", self.max_body),
            ));
        };
        Introspection::parse(&body)
            .map_err(|e| unavailable(FailureKind::Parse, format!("introspection answer is not valid: {e}")))
    }

    /// Introspect, then run the local claim checks.
    pub async fn verify(&self, token: &Token) -> Result<Introspection, AuthnError> {
        let answer = self.introspect(token).await?;
        self.checks.check(&answer, now_unix()).map_err(AuthnError::Rejected)?;
        Ok(answer)
    }
}

impl Authenticator for HydraIntrospector {
    async fn authenticate(&self, token: &Token) -> Result<Arc<Identity>, AuthnError> {
        self.verify(token).await.map(|i| Arc::new(i.identity()))
    }
}

/// The items of an RFC 6749 `scope` string: separated by U+0020 alone
/// (§3.3; fosite and Hydra join with it). Splitting on any other
/// whitespace (no-break space, tab) would grant `admin` to a token Hydra
/// issued the single scope `files.x\u{a0}admin`.
pub fn scope_items(scope: &str) -> Vec<&str> {
    scope.split(' ').filter(|s| !s.is_empty()).collect()
}

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn unavailable(kind: FailureKind, detail: String) -> AuthnError {
    AuthnError::unavailable(kind, detail)
}

fn transport_error(e: reqwest::Error) -> AuthnError {
    let kind = if e.is_timeout() {
        FailureKind::Timeout
    } else if e.is_connect() {
        FailureKind::Connect
    } else {
        FailureKind::Transport
    };
    // The whole cause chain ("error sending request: connection refused"),
    // without the URL; reqwest errors never carry the body, so no token.
    let e = e.without_url();
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    AuthnError::Unavailable {
        kind,
        detail,
        // Nothing reached Hydra: safe and useful to try again.
        retryable: kind == FailureKind::Connect,
        retry_after: None,
    }
}

fn auth_header(cfg: &IntrospectionConfig) -> anyhow::Result<Option<reqwest::header::HeaderValue>> {
    use anyhow::Context;
    let a = &cfg.auth;
    let value = match a.kind {
        AuthKind::None => return Ok(None),
        AuthKind::Bearer => {
            let key = crate::secret::read(a.token_env.as_deref(), a.token_file.as_deref())
                .context("introspection.auth: cannot read the bearer API key")?;
            format!("Bearer {key}")
        }
        AuthKind::ClientSecretBasic => {
            let secret = crate::secret::read(a.client_secret_env.as_deref(), a.client_secret_file.as_deref())
                .context("introspection.auth: cannot read the client secret")?;
            let id = a.client_id.as_deref().unwrap_or_default();
            // RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
            let pair = format!("{}:{}", form_encode(id), form_encode(&secret));
            format!("Basic {}", base64_encode(pair.as_bytes()))
        }
    };
    let mut value = reqwest::header::HeaderValue::from_str(&value)
        .context("introspection.auth: secret is not a valid header value")?;
    value.set_sensitive(true);
    Ok(Some(value))
}

fn form_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_url_drops_userinfo_and_query_values() {
        let url = reqwest::Url::parse("https://id:s3cret@hydra:4445/admin/oauth2/introspect?api_key=k3y&x#frag")
            .expect("url");
        assert_eq!(
            super::shown_url(&url),
            "https://hydra:4445/admin/oauth2/introspect?api_key=REDACTED&x=REDACTED"
        );
        let plain = reqwest::Url::parse("http://hydra:4445/admin/oauth2/introspect").expect("url");
        assert_eq!(super::shown_url(&plain), "http://hydra:4445/admin/oauth2/introspect");
    }

    #[test]
    fn parses_hydra_active_answer() {
        let body = br#"{"active":true,"scope":"read_date other","client_id":"reader","sub":"reader",
            "exp":2000000000,"iat":1,"nbf":1,"aud":[],"iss":"http://127.0.0.1:4444/",
            "token_type":"Bearer","token_use":"access_token","ext":{"k":"v"}}"#;
        let i = Introspection::parse(body).expect("parses");
        assert!(i.active);
        assert_eq!(i.scopes(), vec!["read_date", "other"]);
        assert_eq!(i.identity().client_id.as_deref(), Some("reader"));
    }

    /// RFC 6749 §3.3: scopes are separated by U+0020 only. A no-break
    /// space, a tab or a line feed inside one scope Hydra granted never
    /// makes another scope (`admin`) out of it.
    #[test]
    fn scope_string_splits_on_the_space_alone() {
        let i = Introspection::parse(br#"{"active":true,"scope":" read  files.x\u00a0admin other\tadmin x\nadmin "}"#)
            .expect("parses");
        assert_eq!(
            i.scopes(),
            vec!["read", "files.x\u{a0}admin", "other\tadmin", "x\nadmin"]
        );
        assert!(!i.identity().scopes.iter().any(|s| &**s == "admin"));
    }

    #[test]
    fn aud_as_string_or_array() {
        let a = Introspection::parse(br#"{"active":true,"aud":"api"}"#).expect("string aud");
        assert_eq!(a.aud, vec!["api"]);
        let b = Introspection::parse(br#"{"active":true,"aud":["a","b"]}"#).expect("array aud");
        assert_eq!(b.aud, vec!["a", "b"]);
    }

    #[test]
    fn strict_active_typing() {
        for bad in [
            &br#"{"active":"true"}"#[..],
            br#"{"active":1}"#,
            br#"{}"#,
            br#"[]"#,
            br#"[true]"#,
            br#" [true, "read_date", "reader"]"#,
            b"{\"x\":\"\xff\",\"active\":true}",
            b"active=true",
            b"",
        ] {
            assert!(Introspection::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(!Introspection::parse(br#"{"active":false}"#).expect("inactive").active);
    }

    #[test]
    fn basic_auth_parts_are_form_encoded() {
        assert_eq!(form_encode("a b:c/d"), "a+b%3Ac%2Fd");
        assert_eq!(base64_encode(b"hydra-authz:s"), "aHlkcmEtYXV0aHo6cw==");
    }
}
