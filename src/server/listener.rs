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
//! - **Closed after `idle_timeout_ms` without a byte either way** (about
//!   a quarter more at most: silence is counted in ticks of a quarter,
//!   plus the runtime's timer rounding; ticks of at least 1 ms). gRPC
//!   keep-alive pings keep a live peer above that; HTTP/1 requests are
//!   additionally bounded by hyper's header-read timeout (slowloris).
//!
//! - **At most `http_max_connections_per_peer` from one address** on the
//!   probe and metrics listener, whose rightful peers (the kubelet,
//!   Prometheus, a proxy serving the RFC 9728 document) hold a few to a
//!   hundred: one pod holding them all would fail every probe and take
//!   the replica out of service. A connection past it is closed at once.
//!
//! Everything is released by ownership: the permit and the peer's slot
//! when the connection is dropped, however that happens.

use crate::config::ListenerLimits;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_stream::wrappers::ReceiverStream;

/// Silent ticks in a row that close a connection: it is closed after
/// between `idle` and about `idle` × 5/4 without a byte either way (each
/// tick is re-armed when the last one is handled, so a late runtime adds
/// its delay; never earlier).
const SILENT_TICKS: u32 = 4;

/// A connection that owns one of its listener's permits and closes itself
/// when the peer has been silent for too long.
///
/// Reads and writes only set a flag: a clock read per read or write cost
/// more than the rest of this wrapper, and idleness is counted in ticks of
/// `idle / 4` instead, each of which clears the flag or finds it clear.
pub struct Guarded<IO> {
    io: IO,
    _permit: OwnedSemaphorePermit,
    _peer: Option<PeerSlot>,
    tick: Duration,
    /// A byte was read or written since the last tick.
    active: bool,
    /// Ticks in a row that found `active` clear.
    silent_ticks: u32,
    timer: Pin<Box<Sleep>>,
}

impl<IO> Guarded<IO> {
    fn new(io: IO, permit: OwnedSemaphorePermit, peer: Option<PeerSlot>, idle: Duration) -> Guarded<IO> {
        let tick = (idle / SILENT_TICKS).max(Duration::from_millis(1));
        Guarded {
            io,
            _permit: permit,
            _peer: peer,
            tick,
            active: false,
            silent_ticks: 0,
            timer: Box::pin(tokio::time::sleep(tick)),
        }
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// Ready with an error once the connection has been silent for
    /// [`SILENT_TICKS`] ticks in a row.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            // Polled every time: a Pending from `Sleep::poll` does not mean
            // our waker is registered (tokio's task budget can refuse the
            // poll before it registers), so a skipped poll could leave a
            // silent connection with no timer to wake it.
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if std::mem::take(&mut self.active) {
                self.silent_ticks = 0;
            } else {
                self.silent_ticks += 1;
                if self.silent_ticks >= SILENT_TICKS {
                    return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "idle connection closed"));
                }
            }
            // From now, not from the deadline: a tick the runtime was late
            // for must not be followed at once by another.
            let next = Instant::now() + self.tick;
            self.timer.as_mut().reset(next);
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
                    this.active = true;
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
            this.active = true;
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
            this.active = true;
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

/// Open connections per peer address on one listener.
#[derive(Clone)]
pub struct PerPeer {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// Peers the cap does not apply to (the forward-auth door's trusted
    /// proxies, which carry every client's checks).
    exempt: Option<Arc<dyn Fn(IpAddr) -> bool + Send + Sync>>,
}

/// One peer's connection, counted until dropped (`open` is `None` for an
/// exempt peer: nothing counted, nothing to give back).
pub struct PeerSlot {
    ip: IpAddr,
    open: Option<Arc<Mutex<HashMap<IpAddr, usize>>>>,
}

impl PerPeer {
    /// At most `max` connections from one address (at least 1: with no
    /// limit there is no `PerPeer`).
    pub fn new(max: usize) -> PerPeer {
        PerPeer {
            max,
            open: Arc::default(),
            exempt: None,
        }
    }

    /// The same, but peers for which `exempt` holds are not counted.
    pub fn except(self, exempt: impl Fn(IpAddr) -> bool + Send + Sync + 'static) -> PerPeer {
        PerPeer {
            exempt: Some(Arc::new(exempt)),
            ..self
        }
    }

    /// A slot for a connection from `ip`, or `None` when it has `max` open.
    /// (An IPv4 peer seen through an IPv6 socket is the same peer.)
    fn admit(&self, ip: IpAddr) -> Option<PeerSlot> {
        let ip = ip.to_canonical();
        if self.exempt.as_ref().is_some_and(|exempt| exempt(ip)) {
            return Some(PeerSlot { ip, open: None });
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            ip,
            open: Some(self.open.clone()),
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let Some(open) = &self.open else { return };
        let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
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
    per_peer: Option<PerPeer>,
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
            let (tcp, peer) = tokio::select! {
                _ = &mut stop => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // E.g. out of file descriptors: back off instead of spinning.
                        tracing::warn!(listener = name, "accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let slot = match &per_peer {
                None => None,
                Some(per_peer) => match per_peer.admit(peer.ip()) {
                    Some(slot) => Some(slot),
                    None => {
                        // Closed at once (with its permit); debug only, as a
                        // flood of these must not become a flood of lines.
                        tracing::debug!(listener = name, "connection limit per peer reached: closed");
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
                        let _ = tx.send(Ok(Guarded::new(io, permit, slot, idle))).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    const IDLE: Duration = Duration::from_secs(60);

    fn guarded() -> (Guarded<DuplexStream>, DuplexStream) {
        let (ours, peer) = tokio::io::duplex(1024);
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().expect("a permit");
        (Guarded::new(ours, permit, None, IDLE), peer)
    }

    /// A peer's slots are counted per address (an IPv4 peer seen through
    /// an IPv6 socket is the same one) and come back when dropped.
    #[test]
    fn per_peer_slots_are_bounded_and_released_by_drop() {
        let per_peer = PerPeer::new(2);
        let v4: IpAddr = "10.0.0.1".parse().expect("ip");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        let a = per_peer.admit(v4).expect("first");
        let b = per_peer.admit(mapped).expect("second");
        assert!(per_peer.admit(v4).is_none(), "a third from the same address");
        assert!(
            per_peer.admit("10.0.0.2".parse().expect("ip")).is_some(),
            "another address"
        );
        drop(a);
        let c = per_peer.admit(v4).expect("a slot came back");
        // An exempt peer (a trusted proxy) is never counted nor refused.
        let trusted: IpAddr = "10.0.0.9".parse().expect("ip");
        let with_exempt = PerPeer::new(1).except(move |ip| ip == trusted);
        let many: Vec<_> = (0..5).map(|_| with_exempt.admit(trusted).expect("exempt")).collect();
        assert!(with_exempt.open.lock().expect("lock").is_empty());
        let one = with_exempt.admit(v4).expect("first");
        assert!(with_exempt.admit(v4).is_none(), "others are still capped");
        drop((many, one));
        drop((b, c));
        assert!(per_peer.open.lock().expect("lock").is_empty(), "nothing left behind");
    }

    /// Reads until the connection fails; the error and when.
    /// Bounded (in paused time): a timer that never fires fails, not hangs.
    async fn read_until_closed(conn: &mut Guarded<DuplexStream>) -> (io::Error, Instant) {
        let mut buf = [0u8; 64];
        let read = async {
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) => panic!("the peer closed first"),
                    Ok(_) => continue,
                    Err(e) => return (e, Instant::now()),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(3600), read)
            .await
            .expect("closed within the hour")
    }

    /// Closed by the idle guard, after between `IDLE` and `IDLE` × 5/4 of
    /// silence (paused time: no scheduling delay to allow for).
    fn assert_closed_for_silence(e: &io::Error, silent: Duration) {
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(
            silent >= IDLE && silent <= IDLE + IDLE / 4,
            "closed after {silent:?} of silence"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_after_the_idle_timeout() {
        let (mut conn, _peer) = guarded();
        let opened = Instant::now();
        let (e, at) = read_until_closed(&mut conn).await;
        assert_closed_for_silence(&e, at - opened);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_from_the_peer_keep_it_open_and_silence_after_them_closes_it() {
        let (mut conn, mut peer) = guarded();
        let talker = tokio::spawn(async move {
            // A byte every 20 s for 5 minutes: never silent for a whole minute.
            for _ in 0..15 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                peer.write_all(b"x").await.expect("write");
            }
            (Instant::now(), peer)
        });
        let opened = Instant::now();
        let (e, at) = read_until_closed(&mut conn).await;
        let (last_byte, _peer) = talker.await.expect("talker");
        assert!(
            at - opened >= Duration::from_secs(300),
            "closed while the peer talked: {:?}",
            at - opened
        );
        assert_closed_for_silence(&e, at - last_byte);
    }

    /// A read that comes back Pending because the task's budget ran out
    /// (a peer that sent a lot at once) must still leave the idle timer
    /// armed: tokio refuses the timer's poll then too, before it registers.
    #[tokio::test(start_paused = true)]
    async fn a_read_refused_for_budget_still_leaves_the_timer_armed() {
        let (mut conn, _peer) = guarded();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..1000 {
            tx.send(i).expect("queued");
        }
        let opened = Instant::now();
        std::future::poll_fn(|cx| {
            // Spend this poll's budget, as a burst of reads would.
            while let Poll::Ready(Some(_)) = rx.poll_recv(cx) {}
            assert!(!rx.is_empty(), "the budget ran out before the queue did");
            let mut buf = [0u8; 8];
            let mut buf = ReadBuf::new(&mut buf);
            assert!(Pin::new(&mut conn).poll_read(cx, &mut buf).is_pending());
            Poll::Ready(())
        })
        .await;
        let (e, at) = read_until_closed(&mut conn).await;
        assert_closed_for_silence(&e, at - opened);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_we_write_count_as_activity() {
        let (mut conn, mut peer) = guarded();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        // The peer reads what we write and says nothing.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while peer.read(&mut buf).await.is_ok_and(|n| n > 0) {}
            let _ = done_rx.await;
        });
        let opened = Instant::now();
        let mut last_write = opened;
        let mut buf = [0u8; 8];
        let mut writes = 0;
        let talk = async {
            loop {
                tokio::select! {
                    r = conn.read(&mut buf) => break r.expect_err("the peer sent nothing"),
                    _ = tokio::time::sleep(Duration::from_secs(20)), if writes < 15 => {
                        conn.write_all(b"y").await.expect("write");
                        last_write = Instant::now();
                        writes += 1;
                    }
                }
            }
        };
        let e = tokio::time::timeout(Duration::from_secs(3600), talk)
            .await
            .expect("closed within the hour");
        let at = Instant::now();
        let _ = done_tx.send(());
        drop(conn);
        reader.await.expect("reader");
        assert_eq!(writes, 15, "closed while we were writing");
        assert_closed_for_silence(&e, at - last_write);
    }
}
