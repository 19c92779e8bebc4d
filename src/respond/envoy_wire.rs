//! Envoy's `CheckResponse`, only the fields we send, in a shape that is
//! cheap to build for every check; Envoy reads these bytes as the same
//! answer as its own message's (not byte for byte: the metadata entries
//! come in a fixed order, not a hash map's).
//!
//! Field numbers are Envoy's (`envoy/service/auth/v3/external_auth.proto`,
//! `envoy/config/core/v3/base.proto`, `google/rpc/status.proto`,
//! `google/protobuf/struct.proto`). Two changes of shape, both
//! wire-compatible (as in [`crate::extract::envoy_wire`]):
//!
//! - The dynamic metadata `Struct`'s `map<string, Value>` is written in its
//!   wire form, a repeated key/value message (protobuf language guide,
//!   "Maps": "Backwards compatibility"): no hash map is built, hashed and
//!   iterated per check.
//! - Fields we never set are left out: `CheckResponse.error_response`,
//!   `OkHttpResponse`'s deprecated `dynamic_metadata`,
//!   `response_headers_to_add` and `query_parameters_to_set`,
//!   `Status.details`, `HeaderValue.raw_value`, `HeaderValueOption`'s
//!   deprecated `append` and `keep_empty_value`, and the `Value` kinds
//!   other than string and struct.
//!
//! Strings stay `String`: prost writes them with one copy, where a shared
//! `bytes::Bytes` is cloned (and, made from a `Vec`, promoted to a
//! reference-counted allocation) to be written, which measured dearer.
//!
//! The unit tests decode every kind of answer with Envoy's own message
//! type (`respond::envoy`); the end-to-end tests read them through a real
//! Envoy (`tests/integration/e2e_envoy.rs`, `identity.rs`).

/// `envoy.service.auth.v3.CheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckResponse {
    #[prost(message, optional, tag = "1")]
    pub status: Option<Status>,
    #[prost(oneof = "HttpResponse", tags = "2, 3")]
    pub http_response: Option<HttpResponse>,
    #[prost(message, optional, tag = "4")]
    pub dynamic_metadata: Option<Struct>,
}

#[cfg(test)]
impl CheckResponse {
    /// The same answer as Envoy's message type, as Envoy reads it.
    pub fn to_envoy(&self) -> envoy_types::ext_authz::v3::pb::CheckResponse {
        use prost::Message;
        envoy_types::ext_authz::v3::pb::CheckResponse::decode(self.encode_to_vec().as_slice())
            .expect("Envoy's message type decodes our answer")
    }
}

/// `google.rpc.Status`, without `details`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// `CheckResponse.http_response`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum HttpResponse {
    #[prost(message, tag = "2")]
    DeniedResponse(DeniedHttpResponse),
    #[prost(message, tag = "3")]
    OkResponse(OkHttpResponse),
}

/// `envoy.service.auth.v3.OkHttpResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OkHttpResponse {
    #[prost(message, repeated, tag = "2")]
    pub headers: Vec<HeaderValueOption>,
    #[prost(string, repeated, tag = "5")]
    pub headers_to_remove: Vec<String>,
    #[prost(string, repeated, tag = "8")]
    pub query_parameters_to_remove: Vec<String>,
}

/// `envoy.service.auth.v3.DeniedHttpResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeniedHttpResponse {
    #[prost(message, optional, tag = "1")]
    pub status: Option<HttpStatus>,
    #[prost(message, repeated, tag = "2")]
    pub headers: Vec<HeaderValueOption>,
    #[prost(string, tag = "3")]
    pub body: String,
}

/// `envoy.type.v3.HttpStatus`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
}

/// `envoy.config.core.v3.HeaderValueOption`, without the deprecated
/// `append` and with `keep_empty_value` false.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderValueOption {
    #[prost(message, optional, tag = "1")]
    pub header: Option<HeaderValue>,
    /// `HeaderValueOption.HeaderAppendAction`.
    #[prost(int32, tag = "3")]
    pub append_action: i32,
}

/// `envoy.config.core.v3.HeaderValue`, without `raw_value`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `google.protobuf.Struct`, its map as repeated entries.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Struct {
    #[prost(message, repeated, tag = "1")]
    pub fields: Vec<Field>,
}

/// One entry of `Struct.fields`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Field {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Value>,
}

/// `google.protobuf.Value`: the string and struct kinds.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Value {
    #[prost(oneof = "Kind", tags = "3, 5")]
    pub kind: Option<Kind>,
}

/// `Value.kind`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    #[prost(string, tag = "3")]
    StringValue(String),
    #[prost(message, tag = "5")]
    StructValue(Struct),
}

impl Value {
    pub fn string(v: impl Into<String>) -> Value {
        Value {
            kind: Some(Kind::StringValue(v.into())),
        }
    }
}

impl HeaderValueOption {
    /// A header the answer sets, replacing any the request had.
    pub fn overwrite(key: impl Into<String>, value: impl Into<String>) -> HeaderValueOption {
        HeaderValueOption {
            header: Some(HeaderValue {
                key: key.into(),
                value: value.into(),
            }),
            append_action: envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd
                as i32,
        }
    }
}
