//! Accepting connections with bounds, for every listener (Check, admin,
//! probes): anyone who can reach a port must not be able to exhaust us by
//! opening connections and saying nothing, or by saying it slowly.
//!
//! - **At most `max_connections`** per listener. A connection holds a permit
//!   from accept to close; at the limit we stop accepting, and new
//!   connections wait in the kernel's backlog instead of costing us memory.
//! - **A first byte (or the TLS handshake, or on plain gRPC the whole HTTP/2
//!   preface) within `header_read_timeout_ms`**, so a silent connection is
//!   closed before any protocol state exists.
//! - **gRPC connections live at most `grpc_max_connection_age_ms`**, then
//!   are closed gracefully (GOAWAY; clients reconnect): HTTP/2 PINGs keep an
//!   idle connection "active", so the idle timeout alone cannot reclaim one.
//! - **Closed after `idle_timeout_ms` without a byte either way.** gRPC
//!   keep-alive pings keep a live peer above that; HTTP/1 requests are
//!   additionally bounded by hyper's header-read timeout (slowloris).
//!
//! Everything is released by ownership: the permit when the connection is
//! dropped, however that happens.

use crate::config::ListenerLimits;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_stream::wrappers::ReceiverStream;

/// A connection that owns one of its listener's permits and closes itself
/// when the peer has been silent for too long.
pub struct Guarded<IO> {
    io: IO,
    _permit: OwnedSemaphorePermit,
    idle: Duration,
    /// Last byte read or written; the timer is moved there lazily, when it fires.
    last_activity: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<IO> Guarded<IO> {
    fn new(io: IO, permit: OwnedSemaphorePermit, idle: Duration) -> Guarded<IO> {
        let now = Instant::now();
        Guarded {
            io,
            _permit: permit,
            idle,
            last_activity: now,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
        }
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// Ready with an error once the connection has been idle for `idle`.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let due = self.last_activity + self.idle;
            if due <= Instant::now() {
                return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "idle connection closed"));
            }
            self.timer.as_mut().reset(due);
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.last_activity = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.last_activity = Instant::now();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.last_activity = Instant::now();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<IO: tonic::transport::server::Connected> tonic::transport::server::Connected for Guarded<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// Plain TCP: the connection is handed on once the peer has sent something.
pub async fn first_bytes(tcp: TcpStream) -> io::Result<TcpStream> {
    tcp.readable().await?;
    Ok(tcp)
}

/// The HTTP/2 client preface (RFC 9113 §3.4) every gRPC connection opens with.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Plain-text gRPC: handed on once the whole HTTP/2 preface has arrived
/// (peeked, not consumed), so one byte and silence cannot hold a connection
/// for the idle timeout; anything else is refused at once.
pub async fn h2_preface(tcp: TcpStream) -> io::Result<TcpStream> {
    let mut buf = [0u8; 24];
    loop {
        tcp.readable().await?;
        let n = tcp.peek(&mut buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not an HTTP/2 connection preface",
            ));
        }
        if n == H2_PREFACE.len() {
            return Ok(tcp);
        }
        // Part of it: the unread bytes keep the socket readable, so wait a
        // little before peeking again (bounded by header_read_timeout_ms).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Connections from `listener`, each through `handshake` (TLS, or waiting
/// for the first bytes) within the header-read timeout, concurrently (a
/// slow client never holds up the next), until `stopped`; then the listener
/// is closed so new connections are refused while in-flight work drains.
pub fn incoming<IO, F, Fut>(
    name: &'static str,
    listener: TcpListener,
    limits: &ListenerLimits,
    stopped: watch::Receiver<bool>,
    handshake: F,
) -> ReceiverStream<io::Result<Guarded<IO>>>
where
    IO: Send + 'static,
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<IO>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let first_byte = Duration::from_millis(limits.header_read_timeout_ms);
    let idle = Duration::from_millis(limits.idle_timeout_ms);
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let stop = super::wait_for(stopped);
        tokio::pin!(stop);
        loop {
            // A permit before accepting: at the limit, the backlog waits.
            let permit = tokio::select! {
                _ = &mut stop => return,
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            if permits.available_permits() == 0 {
                tracing::warn!(
                    listener = name,
                    "connection limit reached: not accepting until one closes"
                );
            }
            let tcp = tokio::select! {
                _ = &mut stop => return,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        // E.g. out of file descriptors: back off instead of spinning.
                        tracing::warn!(listener = name, "accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let handshake = handshake(tcp);
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(first_byte, handshake).await {
                    Ok(Ok(io)) => {
                        let _ = tx.send(Ok(Guarded::new(io, permit, idle))).await;
                    }
                    Ok(Err(e)) => tracing::debug!(listener = name, "connection dropped before its first request: {e}"),
                    Err(_) => tracing::debug!(listener = name, "connection silent past header_read_timeout_ms: closed"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// The most an HTTP/1 connection may buffer while reading a request's head.
pub const MAX_HTTP1_BUFFER_BYTES: usize = 128 * 1024;

/// Serve HTTP/1 on guarded connections until the stream ends (the listener
/// closed), then let open connections finish their request and close.
/// hyper's header-read timeout closes a half-sent request (slowloris).
pub async fn serve_http1(
    mut connections: ReceiverStream<io::Result<Guarded<TcpStream>>>,
    router: axum::Router,
    header_read_timeout: Duration,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tokio_stream::StreamExt;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        // hyper's default (~400 KiB) of unfinished headers per connection,
        // times max_connections, is gigabytes; our own header limits are
        // 96 KiB in all, so a request beyond this is refused anyway.
        .max_buf_size(MAX_HTTP1_BUFFER_BYTES);
    while let Some(conn) = connections.next().await {
        let Ok(io) = conn else { continue };
        // The peer's address for handlers that ask (axum's ConnectInfo):
        // forward-auth trusts forwarded headers only from known proxies.
        let peer = io.get_ref().peer_addr().ok();
        let with_peer = tower::ServiceExt::map_request(router.clone(), move |mut req: axum::extract::Request<_>| {
            if let Some(peer) = peer {
                req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            }
            req
        });
        let service = hyper_util::service::TowerToHyperService::new(with_peer);
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(io), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("HTTP connection ended: {e}");
            }
        });
    }
    graceful.shutdown().await;
}
