//! The outcome of a decision and how it is said on the wire. Every deny
//! reason maps to its HTTP status, gRPC code, `WWW-Authenticate` challenge and
//! log/metric label here, in one place.

use crate::authn::{ClaimFailure, FailureKind, Identity};
use crate::config::HeadersConfig;
use envoy_types::ext_authz::v3::pb::{
    CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue, HeaderValueOption, HttpResponse, HttpStatus,
    OkHttpResponse,
};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use envoy_types::pb::google::rpc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    /// Malformed Authorization header (RFC 6750 `invalid_request`).
    InvalidRequest(&'static str),
    /// A path we refuse to match (see `decision::path`).
    InvalidPath(&'static str),
    /// A method or host that is not one (see `decision::canonical`).
    BadRequest(&'static str),
    /// Headers beyond our limits (431).
    TooLarge(&'static str),
    MissingToken,
    InvalidToken(ClaimFailure),
    /// The route's required scopes (all of them, as RFC 6750 advises).
    InsufficientScope(Vec<String>),
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
            DenyReason::InsufficientScope(_) | DenyReason::NoRule => 403,
            DenyReason::RouteMisconfigured(_) => 500,
            DenyReason::Unavailable(_) => 503,
        }
    }

    /// Any non-OK code makes Envoy deny; the HTTP status comes from `denied_response`.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            DenyReason::InvalidRequest(_)
            | DenyReason::InvalidPath(_)
            | DenyReason::BadRequest(_)
            | DenyReason::TooLarge(_) => tonic::Code::InvalidArgument,
            DenyReason::MissingToken | DenyReason::InvalidToken(_) => tonic::Code::Unauthenticated,
            DenyReason::InsufficientScope(_) | DenyReason::NoRule => tonic::Code::PermissionDenied,
            DenyReason::RouteMisconfigured(_) => tonic::Code::Internal,
            DenyReason::Unavailable(_) => tonic::Code::Unavailable,
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
            DenyReason::NoRule => "no_rule",
            DenyReason::RouteMisconfigured(_) => "route_misconfigured",
            DenyReason::Unavailable(_) => "introspection_unavailable",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            DenyReason::InvalidRequest(_) => "Malformed credentials",
            DenyReason::InvalidPath(_) => "Invalid path",
            DenyReason::BadRequest(_) => "Bad request",
            DenyReason::TooLarge(_) => "Request headers too large",
            DenyReason::MissingToken => "Authentication required",
            DenyReason::InvalidToken(_) => "Invalid token",
            DenyReason::InsufficientScope(_) => "Insufficient scope",
            DenyReason::NoRule => "Forbidden",
            DenyReason::RouteMisconfigured(_) => "Authorization policy error",
            DenyReason::Unavailable(_) => "Authorization unavailable",
        }
    }

    /// Safe to send to the client: never the token, never internal addresses.
    pub fn detail(&self) -> String {
        match self {
            DenyReason::InvalidRequest(why)
            | DenyReason::InvalidPath(why)
            | DenyReason::BadRequest(why)
            | DenyReason::TooLarge(why) => (*why).to_owned(),
            DenyReason::MissingToken => "a bearer token is required".into(),
            DenyReason::InvalidToken(f) => f.to_string(),
            DenyReason::InsufficientScope(s) => format!("the token lacks a required scope: {}", s.join(" ")),
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

/// Headers for the upstream on allow, as name/value pairs and names to drop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamHeaders {
    pub set: Vec<(String, String)>,
    pub remove: Vec<String>,
}

/// Renders decisions into Envoy responses; built once from config.
#[derive(Debug, Clone)]
pub struct Responder {
    headers: HeadersConfig,
    realm: String,
    /// Every other spelling of our identity headers (and of `authorization`
    /// when it is stripped) that a client could send: removed on allow.
    twins: Vec<String>,
}

/// Separators beyond this many are not expanded (2^n spellings); such a
/// header keeps its all-dash and all-underscore twins.
const MAX_EXPANDED_SEPARATORS: u32 = 6;

/// The spellings of `name` that upstreams may read as `name`: each '-' as
/// '-' or '_' (CGI, WSGI, PHP, nginx `underscores_in_headers` map '_' to
/// '-'), lower-case (Envoy compares header names case-insensitively, so
/// removing the lower-case name removes every case variant). `name` itself
/// is not included.
pub fn header_twins(name: &str) -> Vec<String> {
    let name = name.to_ascii_lowercase();
    let seps: Vec<usize> = name.match_indices(['-', '_']).map(|(i, _)| i).collect();
    let n = u32::try_from(seps.len()).unwrap_or(u32::MAX);
    let mut out: Vec<String> = if n <= MAX_EXPANDED_SEPARATORS {
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
        let mut owned = vec![
            headers.client_id.clone(),
            headers.scopes.clone(),
            headers.subject.clone(),
        ];
        if headers.strip_authorization {
            owned.push("authorization".into());
        }
        let twins = owned.iter().flat_map(|n| header_twins(n)).collect();
        Responder { headers, realm, twins }
    }

    /// What the upstream learns. Every identity header we own is either set
    /// (overwriting the client's) or removed, so a client cannot smuggle one.
    /// `identity` is `None` on public routes.
    pub fn upstream_headers(&self, identity: Option<&Identity>) -> UpstreamHeaders {
        let h = &self.headers;
        let scopes = identity.map(|i| i.scopes.join(" ")).filter(|s| !s.is_empty());
        let values = [
            (
                &h.client_id,
                identity.and_then(|i| i.client_id.as_deref().map(str::to_owned)),
            ),
            (&h.scopes, scopes),
            (
                &h.subject,
                identity.and_then(|i| i.subject.as_deref().map(str::to_owned)),
            ),
        ];
        let mut out = UpstreamHeaders::default();
        for (name, value) in values {
            match value {
                Some(v) if is_header_value_safe(&v) => out.set.push((name.clone(), v)),
                _ => out.remove.push(name.clone()),
            }
        }
        if h.strip_authorization {
            out.remove.push("authorization".into());
        }
        out.remove.extend(self.twins.iter().cloned());
        out
    }

    /// Client-facing headers of a deny.
    pub fn deny_headers(&self, reason: &DenyReason) -> Vec<(String, String)> {
        let mut out = vec![
            ("content-type".to_owned(), "application/problem+json".to_owned()),
            ("cache-control".to_owned(), "no-store".to_owned()),
        ];
        if let Some(challenge) = reason.www_authenticate(&self.realm) {
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

    pub fn check_response(
        &self,
        decision: &Decision,
        identity: Option<&Identity>,
        rule_id: Option<&str>,
    ) -> CheckResponse {
        match decision {
            Decision::Allow => {
                let h = self.upstream_headers(identity);
                CheckResponse {
                    status: Some(rpc::Status {
                        code: tonic::Code::Ok as i32,
                        ..Default::default()
                    }),
                    http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                        headers: h
                            .set
                            .into_iter()
                            .map(|(k, v)| header(k, v, HeaderAppendAction::OverwriteIfExistsOrAdd))
                            .collect(),
                        headers_to_remove: h.remove,
                        ..Default::default()
                    })),
                    dynamic_metadata: Some(dynamic_metadata(identity, rule_id)),
                }
            }
            Decision::Deny(reason) => CheckResponse {
                status: Some(rpc::Status {
                    code: reason.grpc_code() as i32,
                    message: reason.label().to_owned(),
                    ..Default::default()
                }),
                http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus {
                        code: i32::from(reason.http_status()),
                    }),
                    headers: self
                        .deny_headers(reason)
                        .into_iter()
                        .map(|(k, v)| header(k, v, HeaderAppendAction::OverwriteIfExistsOrAdd))
                        .collect(),
                    body: Self::problem_body(reason),
                })),
                dynamic_metadata: None,
            },
        }
    }
}

/// Values come from the introspection answer; refuse anything that is not a
/// plain visible-ASCII header value rather than let Envoy reject the response.
fn is_header_value_safe(v: &str) -> bool {
    !v.is_empty() && v.len() <= 4096 && v.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
}

fn header(key: String, value: String, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key,
            value,
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    }
}

fn dynamic_metadata(identity: Option<&Identity>, rule_id: Option<&str>) -> Struct {
    let s = |v: &str| Value {
        kind: Some(Kind::StringValue(v.to_owned())),
    };
    let mut fields = std::collections::BTreeMap::new();
    if let Some(id) = rule_id {
        fields.insert("rule_id".to_owned(), s(id));
    }
    if let Some(i) = identity {
        if let Some(c) = &i.client_id {
            fields.insert("client_id".to_owned(), s(c));
        }
        if let Some(sub) = &i.subject {
            fields.insert("subject".to_owned(), s(sub));
        }
        fields.insert("scopes".to_owned(), s(&i.scopes.join(" ")));
    }
    Struct {
        fields: fields.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn responder() -> Responder {
        Responder::new(HeadersConfig::default(), "api".into())
    }

    fn reader() -> Identity {
        Identity {
            client_id: Some("reader".into()),
            subject: Some("reader".into()),
            scopes: vec!["read_date".into(), "x".into()].into(),
            ..Default::default()
        }
    }

    #[test]
    fn allow_overwrites_every_identity_header() {
        let r = responder().check_response(&Decision::Allow, Some(&reader()), Some("date"));
        assert_eq!(r.status.as_ref().map(|s| s.code), Some(0));
        let Some(HttpResponse::OkResponse(ok)) = r.http_response else {
            panic!("ok response")
        };
        let set: Vec<_> = ok
            .headers
            .iter()
            .map(|h| {
                assert_eq!(h.append_action, HeaderAppendAction::OverwriteIfExistsOrAdd as i32);
                let hv = h.header.as_ref().expect("header");
                (hv.key.as_str(), hv.value.as_str())
            })
            .collect();
        assert_eq!(
            set,
            vec![
                ("x-client-id", "reader"),
                ("x-scopes", "read_date x"),
                ("x-subject", "reader")
            ]
        );
        assert_eq!(
            ok.headers_to_remove,
            ["x-client-id", "x-scopes", "x-subject"]
                .iter()
                .flat_map(|n| header_twins(n))
                .collect::<Vec<_>>(),
            "only the underscore twins are removed when every header is set"
        );
        let meta = r.dynamic_metadata.expect("metadata");
        assert!(matches!(meta.fields["client_id"].kind, Some(Kind::StringValue(ref v)) if v == "reader"));
        assert!(matches!(meta.fields["rule_id"].kind, Some(Kind::StringValue(ref v)) if v == "date"));
    }

    #[test]
    fn absent_values_and_public_routes_remove_headers() {
        let anon = Identity {
            client_id: Some("c".into()),
            ..Default::default()
        };
        let h = responder().upstream_headers(Some(&anon));
        assert_eq!(h.set, vec![("x-client-id".into(), "c".into())]);
        assert_eq!(h.remove[..2], ["x-scopes".to_string(), "x-subject".to_string()]);
        let public = responder().upstream_headers(None);
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
            .contains(&"x-client-id".to_string()));
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
        let h = Responder::new(cfg, "r".into()).upstream_headers(Some(&reader()));
        assert!(h.remove.contains(&"authorization".to_string()));
    }

    fn denied(reason: DenyReason) -> (i32, i32, Vec<(String, String)>, serde_json::Value) {
        let r = responder().check_response(&Decision::Deny(reason), None, None);
        let Some(HttpResponse::DeniedResponse(d)) = r.http_response else {
            panic!("denied response")
        };
        let headers = d
            .headers
            .iter()
            .filter_map(|h| h.header.as_ref().map(|h| (h.key.clone(), h.value.clone())))
            .collect();
        let body = serde_json::from_str(&d.body).expect("problem json");
        (
            r.status.map_or(0, |s| s.code),
            d.status.map_or(0, |s| s.code),
            headers,
            body,
        )
    }

    fn www(headers: &[(String, String)]) -> Option<&str> {
        headers
            .iter()
            .find(|(k, _)| k == "www-authenticate")
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn deny_statuses_and_challenges() {
        let (grpc, http, h, body) = denied(DenyReason::MissingToken);
        assert_eq!((grpc, http), (16, 401));
        assert_eq!(www(&h), Some("Bearer realm=\"api\""));
        assert_eq!(body["status"], 401);
        assert_eq!(body["type"], "urn:hydra-authz:problem:missing_token");

        let (grpc, http, h, _) = denied(DenyReason::InvalidToken(ClaimFailure::Inactive));
        assert_eq!((grpc, http), (16, 401));
        assert_eq!(
            www(&h),
            Some("Bearer realm=\"api\", error=\"invalid_token\", error_description=\"inactive\"")
        );

        let (grpc, http, h, _) = denied(DenyReason::InsufficientScope(vec!["read_date".into()]));
        assert_eq!((grpc, http), (7, 403));
        assert_eq!(
            www(&h),
            Some("Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"read_date\"")
        );

        let (grpc, http, h, _) = denied(DenyReason::InvalidRequest("x"));
        assert_eq!((grpc, http), (3, 400));
        assert_eq!(www(&h), Some("Bearer realm=\"api\", error=\"invalid_request\""));

        let (grpc, http, h, _) = denied(DenyReason::NoRule);
        assert_eq!((grpc, http, www(&h)), (7, 403, None));
        let (grpc, http, h, body) = denied(DenyReason::Unavailable(FailureKind::Timeout));
        assert_eq!((grpc, http, www(&h)), (14, 503, None));
        assert_eq!(body["title"], "Authorization unavailable");
        assert!(h.contains(&("content-type".into(), "application/problem+json".into())));
    }
}
