//! The parts of Envoy's `CheckRequest` a decision reads, decoded straight
//! off the wire instead of the whole message.
//!
//! Field numbers are Envoy's (`envoy/service/auth/v3/external_auth.proto`
//! and `attribute_context.proto`), so Envoy's bytes decode as they are;
//! prost skips the fields not named here (peers, TLS, time, body) without
//! allocating them. Two changes of shape, both wire-compatible:
//!
//! - `map<string, string>` fields are read in their wire form, a repeated
//!   key/value message (protobuf language guide, "Maps": "Backwards
//!   compatibility"). No hash map is built per check; a later entry for
//!   the same key wins, as it does in a map ([`super::headers::Headers`]).
//! - The strings a check reads on every request (method, host, path,
//!   header names and values) are `bytes`: slices of the received frame,
//!   not copies; they are checked as UTF-8 where they are read
//!   ([`super::AuthzRequest::from_wire`]), which copies the headers it
//!   keeps out of the frame ([`super::headers::Headers`]).
//!
//! Policy fields (`context_extensions`, `route_metadata_context`) stay
//! typed as in Envoy's proto, so a malformed one still fails the decode.
//! With Envoy's `encode_raw_headers` the headers come in `header_map`
//! instead, one entry per header line; [`super::headers::Headers::joining`]
//! joins repeats as in `headers`.

use envoy_types::pb::envoy::config::core::v3::Metadata;
use prost::bytes::Bytes;

/// `envoy.service.auth.v3.CheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckRequest {
    #[prost(message, optional, tag = "1")]
    pub attributes: Option<AttributeContext>,
}

impl CheckRequest {
    /// An HTTP check with bytes of the caller's choosing, for tests: Envoy's
    /// own message types (Rust `String`s) cannot hold bytes that are not
    /// text.
    pub fn with_http(method: &[u8], host: &[u8], path: &[u8], headers: &[(&[u8], &[u8])]) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request {
                    http: Some(HttpRequest {
                        method: Bytes::copy_from_slice(method),
                        host: Bytes::copy_from_slice(host),
                        path: Bytes::copy_from_slice(path),
                        headers: headers
                            .iter()
                            .map(|(k, v)| BytesEntry {
                                key: Bytes::copy_from_slice(k),
                                value: Bytes::copy_from_slice(v),
                            })
                            .collect(),
                        header_map: None,
                    }),
                }),
                ..Default::default()
            }),
        }
    }
}

/// `envoy.service.auth.v3.AttributeContext`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeContext {
    #[prost(message, optional, tag = "4")]
    pub request: Option<Request>,
    /// `map<string, string> context_extensions = 10`.
    #[prost(message, repeated, tag = "10")]
    pub context_extensions: Vec<StringEntry>,
    #[prost(message, optional, tag = "13")]
    pub route_metadata_context: Option<Metadata>,
}

/// `AttributeContext.Request`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    #[prost(message, optional, tag = "2")]
    pub http: Option<HttpRequest>,
}

/// `AttributeContext.HttpRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpRequest {
    #[prost(bytes = "bytes", tag = "2")]
    pub method: Bytes,
    /// `map<string, string> headers = 3`: lower-case names, repeats joined
    /// by Envoy.
    #[prost(message, repeated, tag = "3")]
    pub headers: Vec<BytesEntry>,
    /// With the query (Envoy's `:path`).
    #[prost(bytes = "bytes", tag = "4")]
    pub path: Bytes,
    #[prost(bytes = "bytes", tag = "5")]
    pub host: Bytes,
    /// `config.core.v3.HeaderMap header_map = 13`: set instead of `headers`
    /// when Envoy's `encode_raw_headers` is on.
    #[prost(message, optional, tag = "13")]
    pub header_map: Option<HeaderMap>,
}

/// `envoy.config.core.v3.HeaderMap`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderMap {
    #[prost(message, repeated, tag = "1")]
    pub headers: Vec<HeaderValue>,
}

/// `envoy.config.core.v3.HeaderValue`: Envoy fills `key` and `raw_value`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderValue {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
    #[prost(bytes = "bytes", tag = "3")]
    pub raw_value: Bytes,
}

/// One entry of a `map<string, string>`, read without UTF-8 checks.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BytesEntry {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

/// One entry of a `map<string, string>`, checked as UTF-8 by prost.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StringEntry {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Envoy's full message, encoded, decodes into the view with every field
    /// the view names intact and map entries in wire order.
    #[test]
    fn envoys_bytes_decode_into_the_view() {
        let full = crate::extract::envoy_check_request(
            "GET",
            "api.example.com",
            "/date?x=1",
            [("authorization", "Bearer t"), ("x-a", "1")],
            [("required_scopes", "read_date")],
        );
        let view = CheckRequest::decode(full.encode_to_vec().as_slice()).expect("decodes");
        let attrs = view.attributes.expect("attributes");
        let http = attrs.request.and_then(|r| r.http).expect("http");
        assert_eq!(
            (&http.method[..], &http.host[..], &http.path[..]),
            (&b"GET"[..], &b"api.example.com"[..], &b"/date?x=1"[..])
        );
        let mut headers: Vec<_> = http.headers.iter().map(|e| (&e.key[..], &e.value[..])).collect();
        headers.sort();
        assert_eq!(headers, [(&b"authorization"[..], &b"Bearer t"[..]), (b"x-a", b"1")]);
        assert_eq!(
            attrs.context_extensions,
            [StringEntry {
                key: "required_scopes".into(),
                value: "read_date".into()
            }]
        );
    }

    /// Fields the view leaves out are skipped, whatever they hold.
    #[test]
    fn unread_fields_are_skipped() {
        use envoy_types::pb::envoy::service::auth::v3::attribute_context::Peer;
        let mut full = crate::extract::envoy_check_request("GET", "h", "/", [], []);
        if let Some(a) = full.attributes.as_mut() {
            a.source = Some(Peer {
                principal: "spiffe://x".into(),
                certificate: "-----BEGIN CERTIFICATE-----".into(),
                ..Default::default()
            });
            if let Some(http) = a.request.as_mut().and_then(|r| r.http.as_mut()) {
                http.body = "x".repeat(1000);
                http.id = "42".into();
            }
        }
        let view = CheckRequest::decode(full.encode_to_vec().as_slice()).expect("decodes");
        let http = view
            .attributes
            .and_then(|a| a.request)
            .and_then(|r| r.http)
            .expect("http");
        assert_eq!(&http.path[..], b"/");
    }
}
