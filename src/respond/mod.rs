//! Responding: an [`Outcome`] said to the caller. What every front door
//! says the same way lives here (which identity headers are set or removed,
//! the deny headers, the problem+json body); each front door's wire format
//! is one file ([`envoy`] for the gRPC `CheckResponse`).
//!
//! The deny table itself (status, challenge, label per reason) is
//! [`crate::decision::verdict`]; this module only renders it.

pub mod envoy;
pub mod envoy_wire;
pub(crate) mod explanation;
pub mod headers;
pub mod http;
pub mod resource_metadata;
pub(crate) mod upstream_jwt;

use crate::authn::Identity;
use crate::decision::verdict::DenyReason;
use crate::decision::Outcome;
use crate::respond::headers::HeadersConfig;
use std::borrow::Cow;

/// Headers for the upstream on allow, as name/value pairs and names to drop.
///
/// Names are borrowed from the responder's config or the outcome: every
/// allow names a dozen of them, and copying each was most of the
/// allocations an allow made. Values are borrowed from the identity when
/// they are its text as it is (a client id, a subject, a single scope),
/// owned when built for this answer (joined scopes, claims, a signed JWT).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamHeaders<'a> {
    pub set: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    pub remove: Vec<Cow<'a, str>>,
    /// The claim headers among `set` (also sent as dynamic metadata).
    pub claims: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// Identity and claim headers removed because the value cannot be sent
    /// safely (not plain header text, or a list item holding the separator).
    pub refused: Vec<Cow<'a, str>>,
    /// Query parameters to remove (a `query:<name>` credential, stripped).
    pub query_remove: Vec<Cow<'a, str>>,
}

/// Renders outcomes; built once from config, swapped with it on reload.
#[derive(Debug, Clone)]
pub struct Responder {
    headers: HeadersConfig,
    realm: String,
    /// Every other spelling of our identity headers (and of `authorization`
    /// when it is stripped) that a client could send: removed on allow.
    twins: Vec<String>,
    /// RFC 9728 metadata URL for 401 challenges, when published.
    resource_metadata: Option<String>,
    /// Signs the identity JWT for the upstream, when `[upstream_jwt]` is on.
    upstream_jwt: Option<std::sync::Arc<upstream_jwt::Signer>>,
}

/// The spellings of `name` that upstreams may read as `name`: each '-' as
/// '-' or '_' (CGI, WSGI, PHP, nginx `underscores_in_headers` map '_' to
/// '-'), lower-case (Envoy compares header names case-insensitively, so
/// removing the lower-case name removes every case variant). `name` itself
/// is not included. Past [`MAX_SPELLED_SEPARATORS`] separators (2^n
/// spellings) only the all-dash and all-underscore twins are listed; the
/// config refuses such names for headers we set or read a token from, so
/// that only bounds fixed names and defends in depth.
///
/// [`MAX_SPELLED_SEPARATORS`]: crate::extract::headers::MAX_SPELLED_SEPARATORS
pub fn header_twins(name: &str) -> Vec<String> {
    let name = name.to_ascii_lowercase();
    let seps: Vec<usize> = name.match_indices(['-', '_']).map(|(i, _)| i).collect();
    let n = seps.len();
    let mut out: Vec<String> = if n <= crate::extract::headers::MAX_SPELLED_SEPARATORS {
        (0u32..1 << n)
            .map(|mask| {
                let mut b = name.clone().into_bytes();
                for (bit, &i) in seps.iter().enumerate() {
                    b[i] = if mask & (1 << bit) != 0 { b'_' } else { b'-' };
                }
                String::from_utf8(b).unwrap_or_default()
            })
            .collect()
    } else {
        vec![name.replace('_', "-"), name.replace('-', "_")]
    };
    out.retain(|v| *v != name && !v.is_empty());
    out.sort();
    out.dedup();
    out
}

impl Responder {
    pub fn new(headers: HeadersConfig, realm: String) -> Responder {
        let mut owned: Vec<String> = headers.set_names().map(str::to_owned).collect();
        if headers.strip_authorization {
            owned.push("authorization".into());
        }
        let twins = owned.iter().flat_map(|n| header_twins(n)).collect();
        Responder {
            headers,
            realm,
            twins,
            resource_metadata: None,
            upstream_jwt: None,
        }
    }

    /// Add a signed identity JWT to every allow with an identity.
    pub fn with_upstream_jwt(mut self, signer: Option<std::sync::Arc<upstream_jwt::Signer>>) -> Responder {
        if let Some(s) = &signer {
            self.twins.extend(header_twins(s.header()));
        }
        self.upstream_jwt = signer;
        self
    }

    /// The identity JWT's header name, when signing is on.
    pub fn jwt_header(&self) -> Option<&str> {
        self.upstream_jwt.as_ref().map(|s| s.header())
    }

    /// The identity JWT's public keys (JWKS JSON), when signing is on.
    pub fn jwks(&self) -> Option<String> {
        self.upstream_jwt.as_ref().map(|s| s.jwks())
    }

    /// Name the RFC 9728 metadata URL in 401 challenges.
    pub fn with_resource_metadata(mut self, url: Option<String>) -> Responder {
        self.resource_metadata = url;
        self
    }

    /// What the upstream learns. Every identity header we own is either set
    /// (overwriting the client's) or removed, so a client cannot smuggle one.
    /// `identity` is `None` on public routes.
    pub fn upstream_headers<'a>(&'a self, identity: Option<&'a Identity>) -> UpstreamHeaders<'a> {
        let h = &self.headers;
        // A scope with a space in it (a JWT's `scp` item) would read as two
        // to an upstream that splits the header: such a list is refused, as
        // is one longer than any identity header may be (4 KiB).
        let scopes = identity.filter(|i| !i.scopes.is_empty()).map(|i| {
            let value = match &*i.scopes {
                [one] => Cow::Borrowed(&**one),
                many => Cow::Owned(many.join(" ")),
            };
            match i.scopes.iter().all(|s| crate::decision::scopes::is_scope_token(s)) && is_header_value_safe(&value) {
                true => Ok(value),
                false => Err(()),
            }
        });
        let values = [
            (&h.client_id, identity.and_then(|i| i.client_id.as_deref()).map(text)),
            (&h.scopes, scopes),
            (&h.subject, identity.and_then(|i| i.subject.as_deref()).map(text)),
        ];
        // Sized for every name we own: allocated once unless a stripped
        // credential header adds its own spellings (upstream_headers_for).
        let owned = values.len() + h.claims.len() + 2;
        let mut out = UpstreamHeaders {
            set: Vec::with_capacity(owned),
            remove: Vec::with_capacity(owned + self.twins.len()),
            ..UpstreamHeaders::default()
        };
        for (name, value) in values {
            let name = Cow::Borrowed(name.as_str());
            match value {
                Some(Ok(v)) => out.set.push((name, v)),
                Some(Err(())) => {
                    out.remove.push(name.clone());
                    out.refused.push(name);
                }
                None => out.remove.push(name),
            }
        }
        for (name, path) in &h.claims {
            let name = Cow::Borrowed(name.as_str());
            match identity
                .and_then(|i| i.claim(path))
                .and_then(|v| claim_header_value(&v, &h.claims_separator))
            {
                Some(Ok(v)) => {
                    let v = Cow::<str>::Owned(v);
                    out.set.push((name.clone(), v.clone()));
                    out.claims.push((name, v));
                }
                Some(Err(())) => {
                    out.remove.push(name.clone());
                    out.refused.push(name);
                }
                None => out.remove.push(name),
            }
        }
        if let Some(signer) = &self.upstream_jwt {
            let claims: Vec<(String, serde_json::Value)> = match identity {
                Some(i) => h
                    .claims
                    .values()
                    .filter_map(|path| i.claim(path).map(|v| (path.clone(), v)))
                    .collect(),
                None => Vec::new(),
            };
            match identity.and_then(|i| signer.sign(i, &claims)) {
                Some(jwt) => out.set.push((Cow::Borrowed(signer.header()), Cow::Owned(jwt))),
                None => out.remove.push(Cow::Borrowed(signer.header())),
            }
        }
        if h.strip_authorization {
            out.remove.push(Cow::Borrowed("authorization"));
        }
        out.remove.extend(self.twins.iter().map(|t| Cow::Borrowed(t.as_str())));
        out
    }

    /// [`Responder::upstream_headers`] for an outcome, plus the credential
    /// itself when `headers.strip_authorization` asks and a rule found it
    /// elsewhere than `Authorization`: its header, its cookie (the other
    /// cookies kept) or its query parameter.
    pub fn upstream_headers_for<'a>(&'a self, o: &'a Outcome) -> UpstreamHeaders<'a> {
        use crate::extract::sources::TokenSource;
        let mut h = self.upstream_headers(self.identity_of(o));
        if !self.headers.strip_authorization {
            return h;
        }
        // Every place the token was: the same token may be in several.
        let mut cookie_done = false;
        for source in o.token_source.iter().chain(&o.token_also_in) {
            match source {
                // Removed by upstream_headers under strip_authorization.
                TokenSource::Authorization => {}
                // Every spelling was read as the token (`sources`): all go.
                TokenSource::Header(name) => {
                    h.remove.push(Cow::Borrowed(name.as_str()));
                    h.remove.extend(header_twins(name).into_iter().map(Cow::Owned));
                }
                // cookie_rest has every cookie holding the token removed.
                TokenSource::Cookie(_) if cookie_done => {}
                TokenSource::Cookie(_) => {
                    cookie_done = true;
                    match &o.cookie_rest {
                        Some(rest) => h.set.push((Cow::Borrowed("cookie"), Cow::Borrowed(rest.as_str()))),
                        None => h.remove.push(Cow::Borrowed("cookie")),
                    }
                }
                TokenSource::Query(name) => h.query_remove.push(Cow::Borrowed(name.as_str())),
            }
        }
        h
    }

    /// Say in the log which claim headers were left out and why (once per
    /// answer, by the front door that sends it; explanations stay quiet).
    pub(crate) fn log_refused(&self, h: &UpstreamHeaders, o: &Outcome) {
        for name in &h.refused {
            tracing::warn!(
                target: "hydra_authz::decision",
                header = %crate::telemetry::Escaped(name),
                claim = %crate::telemetry::Escaped(self.headers.claims.get(&**name).map_or("-", String::as_str)),
                token_fp = o.token_fp(),
                "identity header removed: its value is not a safe header value (control characters, non-ASCII, over 4 KiB, or a list item holding the separator)"
            );
        }
    }

    /// Client-facing headers of a deny.
    pub fn deny_headers(&self, reason: &DenyReason) -> Vec<(String, String)> {
        let mut out = vec![
            ("content-type".to_owned(), "application/problem+json".to_owned()),
            ("cache-control".to_owned(), "no-store".to_owned()),
        ];
        if let Some(mut challenge) = reason.www_authenticate(&self.realm) {
            // RFC 9728 §5.1: tell a client without a (valid) token where to learn how to get one.
            if let (Some(url), 401) = (&self.resource_metadata, reason.http_status()) {
                challenge.push_str(&format!(", resource_metadata=\"{url}\""));
            }
            out.push(("www-authenticate".to_owned(), challenge));
        }
        out
    }

    pub fn problem_body(reason: &DenyReason) -> String {
        serde_json::json!({
            "type": format!("urn:hydra-authz:problem:{}", reason.label()),
            "title": reason.title(),
            "status": reason.http_status(),
            "detail": reason.detail(),
        })
        .to_string()
    }
}

impl Responder {
    /// The identity the upstream may learn from this outcome: none on
    /// public routes, even when the caller sent a valid token.
    pub fn identity_of<'a>(&self, o: &'a Outcome) -> Option<&'a Identity> {
        if o.public {
            None
        } else {
            o.identity.as_deref()
        }
    }
}

/// A claim's value as header text: strings as they are, numbers and
/// booleans as text, lists joined with `sep` (their items rendered the same
/// way), objects as compact JSON. Null and empty lists are absent.
pub fn claim_text(v: &serde_json::Value, sep: &str) -> Option<String> {
    use serde_json::Value;
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(_) | Value::Number(_) | Value::Object(_) => Some(v.to_string()),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().filter_map(|i| claim_text(i, sep)).collect();
            (!parts.is_empty()).then(|| parts.join(sep))
        }
    }
}

/// A claim's header value: `None` when the claim is absent, `Err` when it
/// cannot be sent safely: not plain header text, or a list with an item
/// holding the separator (a group named `"viewers admins"` would reach the
/// upstream as two groups, one of them `admins`).
fn claim_header_value(v: &serde_json::Value, sep: &str) -> Option<Result<String, ()>> {
    let (joined, ambiguous) = match v {
        // Each item rendered once: checked, then joined.
        serde_json::Value::Array(items) => {
            let parts: Vec<String> = items.iter().filter_map(|i| claim_text(i, sep)).collect();
            if parts.is_empty() {
                return None;
            }
            // With a separator like ", ", an item holding "," alone reads
            // as two to an upstream that splits at ',' and trims.
            // An item with a space at either end is another item to an
            // upstream that trims each (" admin" reads as "admin").
            let ambiguous = parts.iter().any(|p| p.starts_with(' ') || p.ends_with(' '))
                || (!sep.is_empty()
                    && parts
                        .iter()
                        .any(|p| p.contains(sep) || sep.chars().any(|c| c != ' ' && p.contains(c))));
            (parts.join(sep), ambiguous)
        }
        _ => (claim_text(v, sep)?, false),
    };
    Some(if ambiguous || !is_header_value_safe(&joined) {
        Err(())
    } else {
        Ok(joined)
    })
}

/// `v` as a header value, or `Err` when it is not plain header text.
fn text(v: &str) -> Result<Cow<'_, str>, ()> {
    if is_header_value_safe(v) {
        Ok(Cow::Borrowed(v))
    } else {
        Err(())
    }
}

/// Text Envoy's access log can print as it is (dynamic metadata): no
/// control characters (CR/LF would start a forged line) and no Unicode line
/// or paragraph separator. Non-ASCII and length are fine in a protobuf
/// string, and dropping such a subject would let a metadata-keyed rate
/// limit or RBAC rule skip the caller.
pub(crate) fn is_metadata_text(v: &str) -> bool {
    // Printable ASCII (nearly every value) without decoding characters.
    v.bytes().all(|b| (b' '..=b'~').contains(&b))
        || !v
            .chars()
            .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
}

/// Scopes whose space-joined form reads back as the same list: each
/// non-empty, without anything a consumer may split at (Unicode
/// whitespace, and the BOM and zero-width spaces JavaScript's `\s` or
/// other splitters count), and metadata text.
pub(crate) fn scopes_join_unambiguously(scopes: &[std::sync::Arc<str>]) -> bool {
    let splits = |c: char| c.is_whitespace() || matches!(c, '\u{feff}' | '\u{200b}' | '\u{180e}');
    scopes.iter().all(|s| {
        !s.is_empty() && (s.bytes().all(|b| b.is_ascii_graphic()) || (!s.chars().any(splits) && is_metadata_text(s)))
    })
}

/// Values come from the introspection answer; refuse anything that is not a
/// plain visible-ASCII header value rather than let Envoy reject the response.
/// Nor a space at either end: HTTP parsers trim it (RFC 9110 §5.5), so the
/// upstream would read `admin` where the identity says `" admin"`.
pub(crate) fn is_header_value_safe(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 4096
        && !v.starts_with(' ')
        && !v.ends_with(' ')
        && v.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn responder() -> Responder {
        Responder::new(HeadersConfig::default(), "api".into())
    }

    pub(super) fn reader() -> Identity {
        Identity {
            client_id: Some("reader".into()),
            subject: Some("reader".into()),
            scopes: vec!["read_date".into(), "x".into()].into(),
            ..Default::default()
        }
    }

    #[test]
    fn absent_values_and_public_routes_remove_headers() {
        let anon = Identity {
            client_id: Some("c".into()),
            ..Default::default()
        };
        let owner = responder();
        let h = owner.upstream_headers(Some(&anon));
        assert_eq!(h.set, vec![("x-client-id".into(), "c".into())]);
        assert_eq!(h.remove[..2], ["x-scopes".to_string(), "x-subject".to_string()]);
        let owner = responder();
        let public = owner.upstream_headers(None);
        assert!(public.set.is_empty());
        assert_eq!(public.remove[..3], ["x-client-id", "x-scopes", "x-subject"]);
        for twin in ["x_client_id", "x-client_id", "x_client-id", "x_scopes", "x_subject"] {
            assert!(h.remove.iter().any(|r| r == twin), "allow removes {twin}");
            assert!(public.remove.iter().any(|r| r == twin), "public removes {twin}");
        }
    }

    #[test]
    fn unsafe_identity_values_are_removed_not_forwarded() {
        let evil = Identity {
            client_id: Some("a\r\nx-admin: 1".into()),
            ..Default::default()
        };
        assert!(responder()
            .upstream_headers(Some(&evil))
            .remove
            .iter()
            .any(|n| n == "x-client-id"));
    }

    #[test]
    fn twins_cover_every_separator_spelling() {
        assert_eq!(
            header_twins("X-Client-Id"),
            ["x-client_id", "x_client-id", "x_client_id"]
        );
        assert_eq!(header_twins("x-tenant"), ["x_tenant"]);
        assert!(header_twins("authorization").is_empty());
        assert_eq!(header_twins("x_user"), ["x-user"]);
        let long = header_twins("a-b-c-d-e-f-g-h");
        assert_eq!(
            long,
            ["a-b-c-d-e-f-g-h".replace('-', "_")],
            "beyond 6 separators: the all-underscore twin"
        );
        assert_eq!(header_twins("a-b-c-d-e-f-g").len(), 63);
    }

    #[test]
    fn strip_authorization_when_configured() {
        let cfg = HeadersConfig {
            strip_authorization: true,
            ..Default::default()
        };
        let owner = Responder::new(cfg, "r".into());
        let identity = reader();
        let h = owner.upstream_headers(Some(&identity));
        assert!(h.remove.iter().any(|n| n == "authorization"));
    }

    /// A cached allow copies nothing the identity already holds as text;
    /// only what is built for the answer (several scopes joined) is owned.
    #[test]
    fn identity_values_are_borrowed_unless_built() {
        let owner = responder();
        let one = Identity {
            scopes: vec!["read_date".into()].into(),
            ..reader()
        };
        let h = owner.upstream_headers(Some(&one));
        assert_eq!(h.set.len(), 3, "{h:?}");
        assert!(h.set.iter().all(|(_, v)| matches!(v, Cow::Borrowed(_))), "{h:?}");
        let two = reader();
        let h = owner.upstream_headers(Some(&two));
        let scopes = h.set.iter().find(|(k, _)| k == "x-scopes").map(|(_, v)| v);
        assert!(matches!(scopes, Some(Cow::Owned(s)) if s == "read_date x"), "{h:?}");
    }

    #[test]
    fn challenges_401_name_the_resource_metadata() {
        let r = responder().with_resource_metadata(Some("https://api/.well-known/oauth-protected-resource".into()));
        let www = |reason: &DenyReason| {
            r.deny_headers(reason)
                .into_iter()
                .find(|(k, _)| k == "www-authenticate")
                .map(|(_, v)| v)
        };
        assert_eq!(
            www(&DenyReason::MissingToken).as_deref(),
            Some("Bearer realm=\"api\", resource_metadata=\"https://api/.well-known/oauth-protected-resource\"")
        );
        assert!(www(&DenyReason::InvalidToken(crate::authn::ClaimFailure::Inactive))
            .is_some_and(|v| v.ends_with("resource_metadata=\"https://api/.well-known/oauth-protected-resource\"")));
        assert!(
            www(&DenyReason::InsufficientScope(vec!["a".into()])).is_some_and(|v| !v.contains("resource_metadata")),
            "403 keeps its challenge as is"
        );
    }

    fn with_claims() -> Responder {
        let mut cfg = HeadersConfig::default();
        for (h, path) in [
            ("x-tenant", "ext.tenant"),
            ("x-groups", "ext.groups"),
            ("x-level", "ext.level"),
            ("x-admin", "ext.admin"),
            ("x-profile", "ext.profile"),
            ("x-audience", "aud"),
            ("x-user", "username"),
            ("x-evil", "ext.evil"),
            ("x-missing", "ext.nothing.here"),
        ] {
            cfg.claims.insert(h.into(), path.into());
        }
        Responder::new(cfg, "api".into())
    }

    fn tenant_identity() -> Identity {
        Identity {
            client_id: Some("reader".into()),
            audience: vec!["api".into(), "web".into()].into(),
            ext: Some(std::sync::Arc::new(serde_json::json!({
                "tenant": "acme",
                "groups": ["admins", "ops", 7],
                "level": 3,
                "admin": false,
                "profile": {"a": 1, "b": "x"},
                "evil": "a\r\nx-admin: 1",
            }))),
            ..Default::default()
        }
    }

    #[test]
    fn claims_become_headers_with_their_value_types() {
        let owner = with_claims();
        let identity = tenant_identity();
        let h = owner.upstream_headers(Some(&identity));
        let get = |name: &str| h.set.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_ref());
        assert_eq!(get("x-tenant"), Some("acme"));
        assert_eq!(get("x-groups"), Some("admins ops 7"), "lists space-joined");
        assert_eq!(get("x-level"), Some("3"));
        assert_eq!(get("x-admin"), Some("false"));
        assert_eq!(get("x-profile"), Some(r#"{"a":1,"b":"x"}"#), "objects as compact JSON");
        assert_eq!(get("x-audience"), Some("api web"));
        assert_eq!(get("x-user"), None, "no username");
        assert!(h.remove.iter().any(|n| n == "x-user"));
        assert!(h.remove.iter().any(|n| n == "x-missing"));
        assert_eq!(get("x-evil"), None, "CR/LF never reaches a header");
        assert_eq!(h.refused, vec!["x-evil".to_string()]);
        assert!(h.remove.iter().any(|n| n == "x-evil"));
        for twin in ["x_tenant", "x_groups", "x_evil"] {
            assert!(h.remove.iter().any(|r| r == twin), "{twin}");
        }
        assert_eq!(h.claims.len(), 6, "{:?}", h.claims);
    }

    #[test]
    fn public_routes_remove_every_claim_header() {
        let owner = with_claims();
        let h = owner.upstream_headers(None);
        assert!(h.set.is_empty());
        for name in ["x-tenant", "x_tenant", "x-groups", "x-user"] {
            assert!(h.remove.iter().any(|r| r == name), "{name}");
        }
    }

    #[test]
    fn separator_is_configurable() {
        let mut cfg = HeadersConfig::default();
        cfg.claims.insert("x-groups".into(), "ext.groups".into());
        cfg.claims_separator = ",".into();
        let owner = Responder::new(cfg, "api".into());
        let identity = tenant_identity();
        let h = owner.upstream_headers(Some(&identity));
        assert!(h.set.contains(&("x-groups".into(), "admins,ops,7".into())));
    }

    /// Anything a consumer may split a scope list at makes it ambiguous.
    #[test]
    fn scopes_with_a_splitting_character_do_not_join() {
        for odd in [
            "read admin",
            "read\u{feff}admin",
            "read\u{200b}admin",
            "read\u{a0}admin",
            "",
            "a\nb",
        ] {
            assert!(!scopes_join_unambiguously(&[odd.into()]), "{odd:?}");
        }
        for fine in ["read_date", "lecture_\u{e9}t\u{e9}", "https://api.example/read"] {
            assert!(scopes_join_unambiguously(&[fine.into()]), "{fine:?}");
        }
    }

    /// A list item holding the separator, or a scope with a space, would
    /// read as more items to an upstream that splits the header: the
    /// header is removed (and said in the log), never sent ambiguous.
    #[test]
    fn values_with_a_space_at_either_end_are_refused() {
        for v in [" admin", "admin ", " ", "a  b "] {
            assert!(!is_header_value_safe(v), "{v:?}");
        }
        assert!(is_header_value_safe("a  b"));
        let mut i = reader();
        i.subject = Some(" admin".into());
        let r = responder();
        let h = r.upstream_headers(Some(&i));
        assert!(h.set.iter().all(|(k, _)| k != "x-subject"), "{h:?}");
        assert!(h.refused.iter().any(|n| n == "x-subject") && h.remove.iter().any(|n| n == "x-subject"));
    }

    #[test]
    fn list_items_holding_the_separator_are_refused() {
        let mut cfg = HeadersConfig::default();
        cfg.claims.insert("x-groups".into(), "ext.groups".into());
        let r = Responder::new(cfg.clone(), "api".into());
        let mut i = reader();
        i.ext = Some(std::sync::Arc::new(serde_json::json!({"groups": ["viewers admins"]})));
        let h = r.upstream_headers(Some(&i));
        assert!(h.set.iter().all(|(k, _)| k != "x-groups"), "{h:?}");
        assert!(h.refused.iter().any(|n| n == "x-groups") && h.remove.iter().any(|n| n == "x-groups"));
        // Another separator makes the same list unambiguous.
        cfg.claims_separator = ",".into();
        let owner = Responder::new(cfg.clone(), "api".into());
        let h = owner.upstream_headers(Some(&i));
        assert!(h.set.contains(&("x-groups".into(), "viewers admins".into())), "{h:?}");
        // A separator of several characters: an item holding any of its
        // visible characters splits for an upstream that splits at ',' and trims.
        cfg.claims_separator = ", ".into();
        let owner = Responder::new(cfg, "api".into());
        i.ext = Some(std::sync::Arc::new(serde_json::json!({"groups": ["viewers,admins"]})));
        let h = owner.upstream_headers(Some(&i));
        assert!(h.refused.iter().any(|n| n == "x-groups"), "{h:?}");
        i.ext = Some(std::sync::Arc::new(
            serde_json::json!({"groups": ["viewers", "admins"]}),
        ));
        let h = owner.upstream_headers(Some(&i));
        assert!(h.set.contains(&("x-groups".into(), "viewers, admins".into())), "{h:?}");
        // An item an upstream would trim into another value.
        i.ext = Some(std::sync::Arc::new(
            serde_json::json!({"groups": ["viewers", " admin"]}),
        ));
        let h = owner.upstream_headers(Some(&i));
        assert!(h.refused.iter().any(|n| n == "x-groups"), "{h:?}");

        let mut i = reader();
        i.scopes = vec!["read_date post_echo".into()].into();
        let owner = responder();
        let h = owner.upstream_headers(Some(&i));
        assert!(h.set.iter().all(|(k, _)| k != "x-scopes"), "{h:?}");
        assert!(h.refused.iter().any(|n| n == "x-scopes"));
        assert!(h.set.iter().any(|(k, _)| k == "x-client-id"), "the rest is still sent");

        // Scopes that join to more than 4 KiB: refused like any other value.
        let mut i = reader();
        i.scopes = (0..400)
            .map(|n| format!("scope_{n:04}").into())
            .collect::<Vec<_>>()
            .into();
        let h = owner.upstream_headers(Some(&i));
        assert!(h.set.iter().all(|(k, _)| k != "x-scopes"), "{h:?}");
        assert!(h.refused.iter().any(|n| n == "x-scopes"));
        i.scopes = i.scopes[..300].into();
        let h = owner.upstream_headers(Some(&i));
        assert!(
            h.set.iter().any(|(k, v)| k == "x-scopes" && v.len() == 300 * 11 - 1),
            "{h:?}"
        );

        let mut i = reader();
        i.subject = Some("a\r\nx-admin: 1".into());
        let owner = responder();
        let h = owner.upstream_headers(Some(&i));
        assert!(h.set.iter().all(|(k, _)| k != "x-subject"), "{h:?}");
        assert!(h.refused.iter().any(|n| n == "x-subject"));
    }

    #[test]
    fn claim_text_of_every_json_kind() {
        use serde_json::json;
        assert_eq!(claim_text(&json!(null), " "), None);
        assert_eq!(claim_text(&json!([]), " "), None);
        assert_eq!(claim_text(&json!([null]), " "), None);
        assert_eq!(claim_text(&json!(1.5), " ").as_deref(), Some("1.5"));
        assert_eq!(
            claim_text(&json!([["a"], {"b": 1}]), "|").as_deref(),
            Some(r#"a|{"b":1}"#)
        );
    }

    #[test]
    fn stripping_removes_the_credential_wherever_it_was() {
        use crate::extract::sources::TokenSource;
        let strip = Responder::new(
            HeadersConfig {
                strip_authorization: true,
                ..Default::default()
            },
            "api".into(),
        );
        let o = |source: TokenSource, rest: Option<&str>| Outcome {
            identity: Some(std::sync::Arc::new(reader())),
            token_source: Some(source),
            cookie_rest: rest.map(str::to_owned),
            ..Outcome::new()
        };
        let outcome = o(TokenSource::Cookie("session".into()), Some("theme=dark"));
        let h = strip.upstream_headers_for(&outcome);
        assert!(
            h.set.contains(&("cookie".into(), "theme=dark".into())),
            "other cookies kept"
        );
        let outcome = o(TokenSource::Cookie("session".into()), None);
        let h = strip.upstream_headers_for(&outcome);
        assert!(h.remove.iter().any(|n| n == "cookie"));
        let outcome = o(TokenSource::Query("access_token".into()), None);
        let h = strip.upstream_headers_for(&outcome);
        assert_eq!(h.query_remove, vec!["access_token".to_string()]);
        let outcome = o(TokenSource::Header("x-api-token".into()), None);
        let h = strip.upstream_headers_for(&outcome);
        assert!(h.remove.iter().any(|n| n == "x-api-token"));
        // And every other spelling, each read as the token by `sources`.
        for twin in ["x_api_token", "x_api-token", "x-api_token"] {
            assert!(h.remove.iter().any(|n| n == twin), "{twin}: {:?}", h.remove);
        }
        let owner = responder();
        let outcome = o(TokenSource::Query("access_token".into()), None);
        let keep = owner.upstream_headers_for(&outcome);
        assert!(keep.query_remove.is_empty(), "kept unless strip_authorization");
    }
}
