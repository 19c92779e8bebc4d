//! The load generator's Check client: each request encoded once, each answer
//! read only as far as its gRPC status.
//!
//! Why not the generated `AuthorizationClient` (used until 2026-12-02): it
//! clones a `CheckRequest` (a header map, about a dozen allocations) and
//! encodes it again for every call, and decodes the whole answer into
//! Envoy's types, every identity header and the metadata `Struct` included,
//! though the generator reads only the status. On this 2-core machine the
//! generator's CPU comes out of the server's share, and the empty OK of the
//! floor costs nothing to decode: rows answering with identity headers paid
//! ~2.5 µs more generator CPU per check than the floor (README, tenth pass),
//! and the ratio charged it to the server. Here the request's bytes are
//! shared (`Bytes`), copied once into the frame, and the answer is walked
//! by prost, which skips every field but `status` without allocating. The
//! same client drives the floor and every row.

use crate::*;
use prost::bytes::{BufMut, Bytes};
use prost::Message as _;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

/// A `CheckRequest`, already encoded.
#[derive(Clone)]
pub(crate) struct Encoded(Bytes);

impl Encoded {
    pub(crate) fn of(request: &CheckRequest) -> Encoded {
        Encoded(request.encode_to_vec().into())
    }
}

/// The part of a `CheckResponse` the generator reads: `status` (field 1).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Verdict {
    #[prost(message, optional, tag = "1")]
    status: Option<RpcStatus>,
}

/// `google.rpc.Status`, its `code` only.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
}

impl Verdict {
    /// An allow: a status of OK (Envoy reads a missing status as OK too,
    /// but every server here writes one, so its absence counts against).
    pub(crate) fn allowed(&self) -> bool {
        self.status.as_ref().is_some_and(|s| s.code == 0)
    }
}

#[derive(Clone, Copy, Default)]
struct LeanCodec;

impl Codec for LeanCodec {
    type Encode = Encoded;
    type Decode = Verdict;
    type Encoder = LeanCodec;
    type Decoder = LeanCodec;

    fn encoder(&mut self) -> LeanCodec {
        LeanCodec
    }

    fn decoder(&mut self) -> LeanCodec {
        LeanCodec
    }
}

impl Encoder for LeanCodec {
    type Item = Encoded;
    type Error = tonic::Status;

    fn encode(&mut self, item: Encoded, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item.0);
        Ok(())
    }
}

impl Decoder for LeanCodec {
    type Item = Verdict;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Verdict>, tonic::Status> {
        Verdict::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("answer is not a CheckResponse: {e}")))
    }
}

/// `envoy.service.auth.v3.Authorization/Check` over one channel.
#[derive(Clone)]
pub(crate) struct LeanClient {
    grpc: tonic::client::Grpc<Channel>,
}

impl LeanClient {
    pub(crate) fn new(channel: Channel) -> LeanClient {
        LeanClient {
            grpc: tonic::client::Grpc::new(channel),
        }
    }

    pub(crate) async fn check(&mut self, request: &Encoded) -> Result<Verdict, tonic::Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("channel not ready: {e}")))?;
        let path = PathAndQuery::from_static("/envoy.service.auth.v3.Authorization/Check");
        let answer = self
            .grpc
            .unary(tonic::Request::new(request.clone()), path, LeanCodec)
            .await?;
        Ok(answer.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::ext_authz::v3::pb::{CheckResponse, DeniedHttpResponse, HttpResponse, OkHttpResponse};
    use envoy_types::pb::google::rpc::Status;

    /// The codec's request bytes are the generated client's, and its answer
    /// reads the status the generated type reads, for an allow with headers
    /// and a deny.
    #[test]
    fn reads_what_the_generated_client_reads() {
        let request = check_request("t0ken");
        assert_eq!(Encoded::of(&request).0, request.encode_to_vec());
        let allow = CheckResponse {
            status: Some(Status::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers_to_remove: vec!["x-user".into(); 5],
                ..Default::default()
            })),
            ..Default::default()
        };
        let deny = CheckResponse {
            status: Some(Status {
                code: 16,
                message: "invalid_token".into(),
                ..Default::default()
            }),
            http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                body: "{}".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let read = |r: &CheckResponse| Verdict::decode(r.encode_to_vec().as_slice()).expect("decodes");
        assert!(read(&allow).allowed());
        assert!(!read(&deny).allowed());
        assert!(!read(&CheckResponse::default()).allowed());
        assert!(
            Verdict::decode(&b"\x0a\x05\x08"[..]).is_err(),
            "a cut message is an error"
        );
    }
}
