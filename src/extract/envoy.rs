//! Envoy's `CheckRequest` → [`AuthzRequest`]: the plain facts a decision
//! needs, taken out of Envoy's message once (as decoded by
//! [`super::envoy_wire`]), so the rest of the engine never sees protobuf
//! types.

use super::credential::{parse_authorization, Credential, CredentialProblem};
use super::envoy_wire;
use super::headers::Headers;
use super::refusal::RequestProblem;
use super::AuthzRequest;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use prost::Message;
use std::collections::HashMap;

/// Route metadata namespace we read (`route_metadata_context`).
pub const METADATA_NAMESPACE: &str = "hydra_authz";

impl AuthzRequest {
    /// Build from the request Envoy sent. A request without its HTTP
    /// attributes (Envoy always sends them; a direct caller may not) is
    /// refused as an empty request line (400), whatever route policy it
    /// carries: without it, `public: "true"` in its context_extensions would
    /// otherwise decide an allow for no request at all.
    pub fn from_wire(check: envoy_wire::CheckRequest) -> AuthzRequest {
        let Some(attrs) = check.attributes else {
            return AuthzRequest::with_target("", "", "");
        };
        // A later entry wins, as in the map Envoy encoded.
        let context_extensions = attrs.context_extensions.into_iter().map(|e| (e.key, e.value)).collect();
        let route_metadata = attrs
            .route_metadata_context
            .and_then(|mut m| m.filter_metadata.remove(METADATA_NAMESPACE))
            .map(|s| struct_to_json(&s));
        let Some(http) = attrs.request.and_then(|r| r.http) else {
            return AuthzRequest {
                context_extensions,
                route_metadata,
                ..AuthzRequest::with_target("", "", "")
            };
        };
        // Envoy sets one of the two; `header_map` when it is there, so a
        // direct caller sending both cannot have one credential read from
        // each. Its lines are not joined by Envoy: joined here as in `headers`.
        let headers = match &http.header_map {
            Some(m) => Headers::joining(m.headers.iter().map(|h| {
                // Envoy fills raw_value; `value` when it is all there is.
                let value = if h.raw_value.is_empty() { &h.value } else { &h.raw_value };
                (&h.key[..], &value[..])
            })),
            None => Headers::from_entries(http.headers.iter().map(|e| (&e.key[..], &e.value[..]))),
        };
        let too_large = super::header_limits(headers.entries());
        // Before the size check answers: a malformed credential is 400 even
        // in an oversized request (the deny table's order).
        let mut credential = match headers.raw("authorization").map(std::str::from_utf8) {
            None => Credential::Missing,
            Some(Ok(value)) => parse_authorization(Some(value)),
            Some(Err(_)) => Credential::Malformed(CredentialProblem::NotText),
        };
        // An oversized request is refused; its headers are not kept.
        let headers = if too_large.is_some() {
            Headers::default()
        } else {
            headers
        };
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let (method, host, path) = (
            std::str::from_utf8(&http.method),
            std::str::from_utf8(&http.host),
            std::str::from_utf8(&http.path),
        );
        let target = match (method, host, path) {
            (Ok(method), Ok(host), Ok(path)) => {
                // RFC 6750 §3.1: a token by more than one method is invalid_request.
                // We only take the header; a query token next to it is refused, not ignored.
                if credential != Credential::Missing && super::query_has_access_token(path) {
                    credential = Credential::Malformed(CredentialProblem::HeaderAndQuery);
                }
                AuthzRequest::with_target(method, host, path)
            }
            // Refused; the printable copies are for the log line only.
            _ => AuthzRequest {
                malformed: Some(RequestProblem::NotText),
                ..AuthzRequest::with_target(&text(&http.method), &text(&http.host), &text(&http.path))
            },
        };
        AuthzRequest {
            too_large,
            credential,
            context_extensions,
            route_metadata,
            headers,
            ..target
        }
    }

    /// Build from Envoy's full message (tests, benchmarks, [`AuthzRequest::from_parts`]):
    /// encoded and read back through [`AuthzRequest::from_wire`], the one
    /// way a check is read.
    pub fn from_check(check: CheckRequest) -> AuthzRequest {
        // Our own encoding of a well-typed message always decodes.
        let wire = envoy_wire::CheckRequest::decode(check.encode_to_vec().as_slice()).unwrap_or_default();
        AuthzRequest::from_wire(wire)
    }

    /// Build from loose parts (admin `Explain`, CLI): they are first put in
    /// the shape Envoy sends (header names lower-cased, as Envoy does), then
    /// read by [`AuthzRequest::from_check`], so the same limits and parsing
    /// apply as for a real check.
    pub fn from_parts(
        method: &str,
        host: &str,
        path: &str,
        headers: &HashMap<String, String>,
        context_extensions: HashMap<String, String>,
    ) -> AuthzRequest {
        // Names differing only in case are one header, which Envoy would pass
        // joined with ',' (so two Authorization headers stay two credentials).
        let mut lower: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
        for (k, v) in headers {
            lower
                .entry(k.to_ascii_lowercase())
                .and_modify(|joined| {
                    joined.push(',');
                    joined.push_str(v);
                })
                .or_insert_with(|| v.clone());
        }
        let mut check = envoy_check_request(
            method,
            host,
            path,
            lower.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            std::iter::empty(),
        );
        if let Some(attrs) = check.attributes.as_mut() {
            attrs.context_extensions = context_extensions;
        }
        AuthzRequest::from_check(check)
    }
}

/// Route metadata as plain JSON, so the decision reads no protobuf. prost
/// bounds the nesting depth when it decodes, so the recursion is bounded.
fn struct_to_json(s: &Struct) -> serde_json::Map<String, serde_json::Value> {
    s.fields.iter().map(|(k, v)| (k.clone(), value_to_json(v))).collect()
}

fn value_to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => J::Null,
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n).map_or(J::Null, J::Number),
        Some(Kind::StringValue(s)) => J::String(s.clone()),
        Some(Kind::BoolValue(b)) => J::Bool(*b),
        Some(Kind::StructValue(s)) => J::Object(struct_to_json(s)),
        Some(Kind::ListValue(l)) => J::Array(l.values.iter().map(value_to_json).collect()),
    }
}

/// The CheckRequest Envoy would send for this request: for `Explain`, the
/// CLI, tests and benchmarks, so they all build it one way.
pub fn envoy_check_request<'a>(
    method: &str,
    host: &str,
    path: &str,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    context_extensions: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> CheckRequest {
    use envoy_types::pb::envoy::service::auth::v3::{attribute_context, AttributeContext};
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    method: method.into(),
                    host: host.into(),
                    path: path.into(),
                    headers: headers.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: context_extensions
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::{MAX_HEADERS, MAX_HEADER_BYTES};
    use envoy_types::pb::envoy::config::core::v3::Metadata;
    use envoy_types::pb::envoy::service::auth::v3::{attribute_context, AttributeContext};

    fn check(path: &str, headers: &[(&str, &str)]) -> CheckRequest {
        let http = attribute_context::HttpRequest {
            method: "GET".into(),
            host: "api.local:8080".into(),
            path: path.into(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        };
        let mut meta = Metadata::default();
        meta.filter_metadata
            .insert(METADATA_NAMESPACE.into(), Struct::default());
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(attribute_context::Request {
                    http: Some(http),
                    ..Default::default()
                }),
                context_extensions: [("required_scopes".to_string(), "a b".to_string())].into(),
                route_metadata_context: Some(meta),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn extracts_all_route_facts() {
        let r = AuthzRequest::from_check(check("/date?x=1#f", &[("authorization", "Bearer t0k")]));
        assert_eq!(r.method, "GET");
        assert_eq!(r.host, "api.local", "canonical: no port");
        assert_eq!(r.path, "/date");
        assert!(matches!(r.credential, Credential::Bearer(ref t) if t.expose() == "t0k"));
        assert_eq!(r.context_extensions["required_scopes"], "a b");
        assert!(r.route_metadata.is_some());
    }

    #[test]
    fn method_and_host_in_canonical_form_or_refused() {
        fn http(c: &mut CheckRequest) -> (&mut String, &mut String) {
            c.attributes
                .as_mut()
                .and_then(|a| a.request.as_mut())
                .and_then(|r| r.http.as_mut())
                .map(|h| (&mut h.method, &mut h.host))
                .expect("http")
        }
        let mut c = check("/date", &[]);
        {
            let (m, h) = http(&mut c);
            *m = "DELETE".into();
            *h = "Admin.Example.COM.:8443".into();
        }
        let r = AuthzRequest::from_check(c.clone());
        assert_eq!(
            (r.method.as_str(), r.host.as_str(), r.malformed),
            ("DELETE", "admin.example.com", None)
        );
        *http(&mut c).0 = "delete".into();
        let r = AuthzRequest::from_check(c.clone());
        assert!(r.malformed.is_some(), "lower-case methods are refused");
        {
            let (m, h) = http(&mut c);
            *m = "GET\r\nX-Forged: 1".into();
            *h = "ok".into();
        }
        let r = AuthzRequest::from_check(c.clone());
        assert!(r.malformed.is_some());
        assert_eq!(r.method, "GET??X-Forged:?1", "kept printable for the log line");
        {
            let (m, h) = http(&mut c);
            *m = "GET".into();
            *h = "evil\n.example.com".into();
        }
        let r = AuthzRequest::from_check(c);
        assert!(r.malformed.is_some());
        assert_eq!(r.host, "evil?.example.com");
    }

    #[test]
    fn header_limits() {
        let many: Vec<(String, String)> = (0..=MAX_HEADERS).map(|i| (format!("h{i}"), "v".into())).collect();
        let refs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert!(AuthzRequest::from_check(check("/", &refs)).too_large.is_some());
        let big = "x".repeat(MAX_HEADER_BYTES);
        assert!(AuthzRequest::from_check(check("/", &[("x-big", &big)]))
            .too_large
            .is_some());
        assert!(AuthzRequest::from_check(check("/", &[("x-ok", "v")]))
            .too_large
            .is_none());
    }

    /// The view as the server decodes it, with bytes no `CheckRequest`
    /// (whose fields are Rust `String`s) can hold.
    fn wire(method: &[u8], path: &[u8], headers: &[(&[u8], &[u8])]) -> envoy_wire::CheckRequest {
        envoy_wire::CheckRequest::with_http(method, b"api.local", path, headers)
    }

    /// No HTTP attributes: refused (400), even when the route policy it
    /// carries says public.
    #[test]
    fn a_check_without_its_http_request_is_refused() {
        let mut no_http = check("/date", &[]);
        if let Some(a) = no_http.attributes.as_mut() {
            a.request = None;
            a.context_extensions = [("public".to_string(), "true".to_string())].into();
        }
        let r = AuthzRequest::from_check(no_http);
        assert_eq!(r.malformed, Some(RequestProblem::MethodNotToken));
        assert_eq!(r.context_extensions["public"], "true");
    }

    #[test]
    fn a_method_host_or_path_that_is_not_text_is_refused() {
        let ok: &[(&[u8], &[u8])] = &[(b"authorization", b"Bearer t0k")];
        for (method, path) in [(&b"GET"[..], &b"/date\xff\n"[..]), (b"G\xc3T\n", b"/date")] {
            let r = AuthzRequest::from_wire(wire(method, path, ok));
            assert_eq!(r.malformed, Some(RequestProblem::NotText));
            assert!(
                !r.path.contains('\n') && !r.method.contains('\n'),
                "printable copies only"
            );
        }
        let mut bad_host = wire(b"GET", b"/date", ok);
        if let Some(http) = bad_host
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
        {
            http.host = prost::bytes::Bytes::from_static(b"api\xff.local");
        }
        assert_eq!(
            AuthzRequest::from_wire(bad_host).malformed,
            Some(RequestProblem::NotText)
        );
        let r = AuthzRequest::from_wire(wire(b"GET", b"/date", ok));
        assert_eq!((r.malformed, r.path.as_str()), (None, "/date"));
        assert!(matches!(r.credential, Credential::Bearer(_)));
    }

    #[test]
    fn headers_that_are_not_text() {
        // The credential: refused as such (400), never read as missing.
        let r = AuthzRequest::from_wire(wire(b"GET", b"/", &[(b"authorization", b"Bearer \xff")]));
        assert_eq!(r.credential, Credential::Malformed(CredentialProblem::NotText));
        // Any other header: absent to lookups, counted by the limits.
        let big = vec![0xffu8; crate::extract::MAX_HEADER_BYTES];
        let r = AuthzRequest::from_wire(wire(b"GET", b"/", &[(b"x-token", &big)]));
        assert_eq!(r.too_large, Some(crate::extract::refusal::SizeProblem::HeadersTooLarge));
        assert!(r.headers.is_empty(), "an oversized request keeps none of its headers");
        let r = AuthzRequest::from_wire(wire(b"GET", b"/", &[(b"x-token", b"\xff")]));
        assert_eq!(
            (r.headers.get("x-token"), r.headers.raw("x-token")),
            (None, Some(&b"\xff"[..]))
        );
    }

    /// Envoy's `encode_raw_headers`: one `header_map` line per header, not
    /// joined; read as the joined `headers` map would be.
    #[test]
    fn raw_header_lines_are_joined_as_envoy_joins_them() {
        use prost::bytes::Bytes;
        let line = |k: &'static [u8], v: &'static [u8]| envoy_wire::HeaderValue {
            key: Bytes::from_static(k),
            value: Bytes::new(),
            raw_value: Bytes::from_static(v),
        };
        let with_lines = |lines: Vec<envoy_wire::HeaderValue>| {
            let mut w = wire(b"GET", b"/date", &[]);
            if let Some(http) = w
                .attributes
                .as_mut()
                .and_then(|a| a.request.as_mut())
                .and_then(|r| r.http.as_mut())
            {
                http.header_map = Some(envoy_wire::HeaderMap { headers: lines });
            }
            AuthzRequest::from_wire(w)
        };
        let r = with_lines(vec![
            line(b"authorization", b"Bearer t0k"),
            line(b"cookie", b"a=1"),
            line(b"x-b", b"1"),
            line(b"cookie", b"b=2"),
            line(b"x-b", b"2"),
        ]);
        assert!(matches!(r.credential, Credential::Bearer(ref t) if t.expose() == "t0k"));
        assert_eq!(
            (r.headers.get("cookie"), r.headers.get("x-b")),
            (Some("a=1; b=2"), Some("1,2"))
        );
        // Two Authorization lines are two credentials, never the last one.
        let r = with_lines(vec![
            line(b"authorization", b"Bearer a"),
            line(b"authorization", b"Bearer b"),
        ]);
        assert!(matches!(r.credential, Credential::Malformed(_)), "{:?}", r.credential);
        // Envoy fills raw_value; `value` is read when it is all there is.
        let r = with_lines(vec![envoy_wire::HeaderValue {
            key: Bytes::from_static(b"authorization"),
            value: Bytes::from_static(b"Bearer v"),
            raw_value: Bytes::new(),
        }]);
        assert!(matches!(r.credential, Credential::Bearer(ref t) if t.expose() == "v"));
        // Past the header limit: refused, and nothing joined.
        let many = (0..=crate::extract::MAX_HEADERS).map(|_| line(b"x", b"1")).collect();
        assert!(with_lines(many).too_large.is_some());
    }

    /// A protobuf map keeps the last of two entries with one key; so do we.
    #[test]
    fn a_repeated_map_key_reads_as_the_map_would() {
        let r = AuthzRequest::from_wire(wire(
            b"GET",
            b"/",
            &[(b"authorization", b"Bearer first"), (b"authorization", b"Bearer last")],
        ));
        assert!(matches!(r.credential, Credential::Bearer(ref t) if t.expose() == "last"));
        let full: envoy_types::pb::envoy::service::auth::v3::CheckRequest = prost::Message::decode(
            prost::Message::encode_to_vec(&wire(b"GET", b"/", &[(b"x", b"1"), (b"x", b"2")])).as_slice(),
        )
        .expect("decodes");
        let http = full
            .attributes
            .and_then(|a| a.request)
            .and_then(|r| r.http)
            .expect("http");
        assert_eq!(http.headers["x"], "2", "prost's own map agrees");
    }

    #[test]
    fn repeated_authorization_joined_by_envoy_is_malformed() {
        let r = AuthzRequest::from_check(check("/", &[("authorization", "Bearer a,Bearer b")]));
        assert!(matches!(r.credential, Credential::Malformed(_)));
    }

    #[test]
    fn empty_check_request_is_an_empty_request_line() {
        let r = AuthzRequest::from_check(CheckRequest::default());
        assert_eq!((r.method.as_str(), r.host.as_str(), r.path.as_str()), ("", "", ""));
        assert_eq!(r.malformed, Some(RequestProblem::MethodNotToken), "refused, 400");
        assert!(r.path_error.is_some());
        assert_eq!(r.credential, Credential::Missing);
    }

    #[test]
    fn from_parts_finds_authorization_in_any_case() {
        let h = [("Authorization".to_string(), "Bearer x".to_string())].into();
        let r = AuthzRequest::from_parts("GET", "h", "/p?q", &h, HashMap::new());
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/p");
        assert!(matches!(r.credential, Credential::Bearer(_)));
    }

    /// Explain and the CLI refuse what Check refuses: same limits.
    #[test]
    fn from_parts_applies_the_header_limits() {
        let h: HashMap<String, String> = (0..=MAX_HEADERS).map(|i| (format!("h{i}"), "v".into())).collect();
        let r = AuthzRequest::from_parts("GET", "h", "/p", &h, HashMap::new());
        assert_eq!(r.too_large, Some(crate::extract::refusal::SizeProblem::TooManyHeaders));
    }

    #[test]
    fn token_in_header_and_query_is_malformed() {
        for path in [
            "/date?access_token=x",
            "/date?a=1&access%5Ftoken=x",
            "/date?access_token",
        ] {
            let r = AuthzRequest::from_check(check(path, &[("authorization", "Bearer t0k")]));
            assert!(matches!(r.credential, Credential::Malformed(_)), "{path}");
        }
        // Only in the query: not accepted, so no credential at all (401).
        let r = AuthzRequest::from_check(check("/date?access_token=x", &[]));
        assert_eq!(r.credential, Credential::Missing);
        let r = AuthzRequest::from_check(check("/date?my_access_token=x", &[("authorization", "Bearer t0k")]));
        assert!(matches!(r.credential, Credential::Bearer(_)));
    }

    #[test]
    fn from_parts_joins_headers_that_differ_only_in_case() {
        let h = [
            ("Authorization".to_string(), "Bearer a".to_string()),
            ("authorization".to_string(), "Bearer b".to_string()),
        ]
        .into();
        let r = AuthzRequest::from_parts("GET", "h", "/p", &h, HashMap::new());
        assert!(matches!(r.credential, Credential::Malformed(_)), "{:?}", r.credential);
    }
}
