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

    /// An allow as hydra-authz sends it: OK, with headers to remove.
    fn allow() -> CheckResponse {
        CheckResponse {
            status: Some(Status::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers_to_remove: vec!["x-user".into(); 5],
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn deny() -> CheckResponse {
        CheckResponse {
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
        }
    }

    /// The verdict reads the status Envoy's type reads; a missing status
    /// and a cut message are not allows.
    #[test]
    fn reads_the_status_envoys_type_reads() {
        let read = |r: &CheckResponse| Verdict::decode(r.encode_to_vec().as_slice()).expect("decodes");
        assert!(read(&allow()).allowed());
        assert!(!read(&deny()).allowed());
        assert!(!read(&CheckResponse::default()).allowed());
        assert!(
            Verdict::decode(&b"\x0a\x05\x08"[..]).is_err(),
            "a cut message is an error"
        );
    }

    /// Over a real connection to the floor's own server: the codec, the
    /// method path and the framing all have to be right for an allow to
    /// come back; a deny is not one, and a server that is not there is an
    /// error (so a floor of fast failures cannot pass for a fast floor).
    #[tokio::test]
    async fn a_real_check_tells_allow_from_deny_and_failure() {
        async fn serve(answer: Option<CheckResponse>) -> SocketAddr {
            let incoming = tonic::transport::server::TcpIncoming::bind(([127, 0, 0, 1], 0).into()).expect("bind");
            let addr = incoming.local_addr().expect("local addr");
            let service = envoy_types::ext_authz::v3::pb::AuthorizationServer::new(crate::Noop(answer));
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming(incoming),
            );
            addr
        }
        let client = |addr: SocketAddr| {
            LeanClient::new(
                Channel::from_shared(format!("http://{addr}"))
                    .expect("uri")
                    .connect_lazy(),
            )
        };
        let request = Encoded::of(&check_request("t0ken"));
        fn within<F: std::future::Future>(f: F) -> tokio::time::Timeout<F> {
            tokio::time::timeout(Duration::from_secs(10), f)
        }
        for (answer, allowed) in [(None, true), (Some(allow()), true), (Some(deny()), false)] {
            let mut c = client(serve(answer).await);
            let verdict = within(c.check(&request))
                .await
                .expect("answered in time")
                .expect("a gRPC answer");
            assert_eq!(verdict.allowed(), allowed);
        }
        let gone = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let mut c = client(gone);
        let failed = within(c.check(&request)).await.expect("failed in time");
        assert!(failed.is_err(), "{failed:?}");
    }
}
