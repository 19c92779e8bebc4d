//! Envoy's `CheckResponse`, written field by field straight from the
//! answer's parts into one buffer per check.
//!
//! Why not prost-generated structs (used until 2026-11-30): building one
//! copied every header name, value and metadata key into its own `String`
//! (~25 allocations per allow, as many frees), only for prost to copy them
//! once more into tonic's buffer and to walk every nested message again for
//! its length. Here the names and values are borrowed where they live (the
//! config, the cached identity) and copied once; a nested message's length
//! is written when its body is done. The wire form is prost's: fields in
//! tag order, lengths as minimal varints, singular empty strings and zero
//! numbers left out (proto3), repeated and `oneof` values always written.
//!
//! Field numbers are Envoy's (`envoy/service/auth/v3/external_auth.proto`,
//! `envoy/config/core/v3/base.proto`, `google/rpc/status.proto`,
//! `google/protobuf/struct.proto`). The metadata `Struct`'s
//! `map<string, Value>` is written in its wire form, a repeated key/value
//! message (protobuf language guide, "Maps": "Backwards compatibility"),
//! its entries in a fixed order. Fields we never set are not written.
//!
//! The tests decode every kind of answer with Envoy's own message type and
//! compare it, and its length, with the answer built from Envoy's types
//! (`respond::envoy`); the end-to-end tests read them through a real Envoy
//! (`tests/integration/e2e_envoy.rs`, `identity.rs`).

use prost::bytes::{Buf, BufMut};
use prost::encoding::{encode_key, encode_varint, skip_field, DecodeContext, WireType};

/// An encoded `envoy.service.auth.v3.CheckResponse`; tonic's codec copies
/// its bytes into the gRPC frame. Write-only: decoding one keeps nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckResponse {
    bytes: Vec<u8>,
}

impl CheckResponse {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The same answer as Envoy's message type, as Envoy reads it.
    #[cfg(test)]
    pub fn to_envoy(&self) -> envoy_types::ext_authz::v3::pb::CheckResponse {
        use prost::Message;
        envoy_types::ext_authz::v3::pb::CheckResponse::decode(self.as_bytes())
            .expect("Envoy's message type decodes our answer")
    }
}

impl prost::Message for CheckResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.bytes);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    fn clear(&mut self) {
        self.bytes.clear();
    }
}

/// Field numbers, by message.
pub mod tag {
    /// `CheckResponse`.
    pub const STATUS: u32 = 1;
    pub const DENIED_RESPONSE: u32 = 2;
    pub const OK_RESPONSE: u32 = 3;
    pub const DYNAMIC_METADATA: u32 = 4;
    /// `google.rpc.Status`.
    pub const STATUS_CODE: u32 = 1;
    pub const STATUS_MESSAGE: u32 = 2;
    /// `OkHttpResponse`.
    pub const OK_HEADERS: u32 = 2;
    pub const OK_HEADERS_TO_REMOVE: u32 = 5;
    pub const OK_QUERY_PARAMETERS_TO_REMOVE: u32 = 8;
    /// `DeniedHttpResponse`.
    pub const DENIED_STATUS: u32 = 1;
    pub const DENIED_HEADERS: u32 = 2;
    pub const DENIED_BODY: u32 = 3;
    /// `envoy.type.v3.HttpStatus`.
    pub const HTTP_STATUS_CODE: u32 = 1;
    /// `HeaderValueOption`.
    pub const OPTION_HEADER: u32 = 1;
    pub const OPTION_APPEND_ACTION: u32 = 3;
    /// `HeaderValue`.
    pub const HEADER_KEY: u32 = 1;
    pub const HEADER_VALUE: u32 = 2;
    /// `google.protobuf.Struct` and its map entry.
    pub const STRUCT_FIELDS: u32 = 1;
    pub const ENTRY_KEY: u32 = 1;
    pub const ENTRY_VALUE: u32 = 2;
    /// `google.protobuf.Value`'s `kind`.
    pub const VALUE_STRING: u32 = 3;
    pub const VALUE_STRUCT: u32 = 5;
}

/// `HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD`.
const OVERWRITE_IF_EXISTS_OR_ADD: u64 = 2;

/// Writes one message's fields, in the order they are called.
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn with_capacity(n: usize) -> Writer {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }

    pub fn finish(self) -> CheckResponse {
        CheckResponse { bytes: self.buf }
    }

    /// A repeated or `oneof` string: written even when empty.
    pub fn string(&mut self, tag: u32, s: &str) {
        encode_key(tag, WireType::LengthDelimited, &mut self.buf);
        encode_varint(s.len() as u64, &mut self.buf);
        self.buf.extend_from_slice(s.as_bytes());
    }

    /// A singular string: left out when empty (proto3's default).
    pub fn singular(&mut self, tag: u32, s: &str) {
        if !s.is_empty() {
            self.string(tag, s);
        }
    }

    /// A `oneof` string made of `parts` joined by `sep`, without joining them first.
    pub fn joined<S: AsRef<str>>(&mut self, tag: u32, parts: &[S], sep: &str) {
        let len = parts.iter().map(|p| p.as_ref().len()).sum::<usize>() + sep.len() * parts.len().saturating_sub(1);
        encode_key(tag, WireType::LengthDelimited, &mut self.buf);
        encode_varint(len as u64, &mut self.buf);
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                self.buf.extend_from_slice(sep.as_bytes());
            }
            self.buf.extend_from_slice(p.as_ref().as_bytes());
        }
    }

    /// A singular `int32` or enum: left out when zero. Negative values are
    /// sign-extended to ten bytes, as protobuf writes them.
    pub fn int32(&mut self, tag: u32, v: i32) {
        if v != 0 {
            encode_key(tag, WireType::Varint, &mut self.buf);
            encode_varint(i64::from(v) as u64, &mut self.buf);
        }
    }

    /// A nested message (written even when empty: it is present). Its
    /// length comes first on the wire but is known only once `body` has
    /// written the fields: a one-byte slot is kept for it (any length under
    /// 128), and a longer length moves the body up by the bytes it needs.
    pub fn message(&mut self, tag: u32, body: impl FnOnce(&mut Writer)) {
        encode_key(tag, WireType::LengthDelimited, &mut self.buf);
        let slot = self.buf.len();
        self.buf.push(0);
        body(self);
        let end = self.buf.len();
        let len = end - slot - 1;
        let mut prefix = [0u8; 10];
        let mut free = &mut prefix[..];
        encode_varint(len as u64, &mut free);
        let n = 10 - free.len();
        if n > 1 {
            self.buf.resize(end + n - 1, 0);
            self.buf.copy_within(slot + 1..end, slot + n);
        }
        self.buf[slot..slot + n].copy_from_slice(&prefix[..n]);
    }

    /// An `OkHttpResponse`/`DeniedHttpResponse` header that replaces any the request had.
    pub fn overwrite_header(&mut self, tag: u32, name: &str, value: &str) {
        self.message(tag, |w| {
            w.message(tag::OPTION_HEADER, |w| {
                w.singular(tag::HEADER_KEY, name);
                w.singular(tag::HEADER_VALUE, value);
            });
            encode_key(tag::OPTION_APPEND_ACTION, WireType::Varint, &mut w.buf);
            encode_varint(OVERWRITE_IF_EXISTS_OR_ADD, &mut w.buf);
        });
    }

    /// One `Struct` entry: `key` → a `Value` written by `value`.
    pub fn entry(&mut self, key: &str, value: impl FnOnce(&mut Writer)) {
        self.message(tag::STRUCT_FIELDS, |w| {
            w.singular(tag::ENTRY_KEY, key);
            w.message(tag::ENTRY_VALUE, value);
        });
    }

    /// One `Struct` entry whose value is a string.
    pub fn string_entry(&mut self, key: &str, value: &str) {
        self.entry(key, |w| w.string(tag::VALUE_STRING, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    /// Lengths of 127 and 128 bytes take one and two varint bytes: the
    /// inserted length is minimal and the body follows it intact.
    #[test]
    fn nested_lengths_are_minimal_varints() {
        for n in [0, 1, 127, 128, 300, 16_384] {
            let text = "x".repeat(n);
            let mut w = Writer::with_capacity(0);
            w.message(tag::DENIED_RESPONSE, |w| w.singular(tag::DENIED_BODY, &text));
            let ours = w.finish();
            let theirs = envoy_types::ext_authz::v3::pb::CheckResponse {
                http_response: Some(envoy_types::ext_authz::v3::pb::HttpResponse::DeniedResponse(
                    envoy_types::ext_authz::v3::pb::DeniedHttpResponse {
                        body: text.clone(),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            };
            assert_eq!(ours.as_bytes(), theirs.encode_to_vec(), "body of {n} bytes");
        }
    }

    #[test]
    fn a_negative_code_is_sign_extended_as_protobuf_writes_it() {
        let mut w = Writer::with_capacity(0);
        w.message(tag::STATUS, |w| w.int32(tag::STATUS_CODE, -1));
        let theirs = envoy_types::ext_authz::v3::pb::CheckResponse {
            status: Some(envoy_types::pb::google::rpc::Status {
                code: -1,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(w.finish().as_bytes(), theirs.encode_to_vec());
    }

    /// tonic writes the answer through `Message::encode`: the same bytes.
    #[test]
    fn encoding_the_answer_writes_its_bytes() {
        let mut w = Writer::with_capacity(0);
        w.string_entry("k", "v");
        let answer = w.finish();
        assert_eq!(answer.encode_to_vec(), answer.as_bytes());
        assert_eq!(answer.encoded_len(), answer.as_bytes().len());
    }
}
