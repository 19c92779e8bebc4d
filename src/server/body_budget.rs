//! One budget of buffered request-body bytes for all Check and health
//! streams of a listener. tonic holds a message's bytes until the whole message is in,
//! per stream, up to the per-message limit: without a budget, one peer
//! opening `grpc_max_concurrent_streams` streams on each of
//! `max_connections` connections, each holding most of a message, could
//! make the process hold gigabytes (and be killed for it, taking every
//! check with it). With one, streams past the budget fail at once (the
//! check is refused, fail closed) and memory stays bounded.
//!
//! A body holds the bytes it has taken until it is dropped: tonic drops it
//! once it has read the body to its end (before the service runs), so a
//! check in progress (waiting for Hydra) holds nothing; a peer that holds
//! back the end of its body keeps its bytes until the request timeout. One
//! body may hold one message at most, so one stream cannot take the whole
//! budget. What is bounded is bytes received: tonic also reserves a
//! message's declared length up front, which is address space until bytes
//! arrive to fill it. A peer that can connect can still spend the budget
//! and make checks fail (closed): keep `failure_mode_allow` false and let a
//! NetworkPolicy decide who may connect.

use crate::metrics::KindLabels;
use http_body::{Body as HttpBody, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tonic::codegen::{http, Bytes, Service, StdError};
use tonic::server::NamedService;

/// Bytes all request bodies of one Check listener may hold at once: far
/// above what real traffic holds (a check's message is a few KiB and is
/// held for microseconds), far below a container's memory limit.
pub const MAX_BUFFERED_CHECK_BYTES: usize = 32 * 1024 * 1024;

/// One listener's budget, shared by the services it wraps.
#[derive(Clone)]
pub struct Budget(Arc<Shared>);

/// The bytes and the `request_bodies_refused` series (looked up once),
/// behind one `Arc` a request clones.
struct Shared {
    bytes: Arc<Semaphore>,
    over_budget: Counter,
    too_large: Counter,
}

impl Budget {
    /// `bytes` for all bodies; each refusal counted in `refused` by kind.
    pub fn new(bytes: usize, refused: &Family<KindLabels, Counter>) -> Budget {
        // One statement each: `get_or_create`'s read guard lives to the end
        // of its statement, and creating the next series takes the write lock.
        let over_budget = refused.get_or_create(&KindLabels { kind: "budget" }).clone();
        let too_large = refused.get_or_create(&KindLabels { kind: "too_large" }).clone();
        Budget(Arc::new(Shared {
            bytes: Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS))),
            over_budget,
            too_large,
        }))
    }

    /// `inner` with each request body counted against this budget, and
    /// refused past `per_body` bytes (one message and its 5-byte prefix:
    /// a unary call's body is one message, and one stream must not take
    /// the whole budget by sending more).
    pub fn wrap<S>(&self, inner: S, per_body: usize) -> Budgeted<S> {
        Budgeted {
            inner,
            budget: self.0.clone(),
            per_body,
        }
    }
}

/// `S` with every request body counted against one [`Budget`].
#[derive(Clone)]
pub struct Budgeted<S> {
    inner: S,
    budget: Arc<Shared>,
    per_body: usize,
}

impl<S: NamedService> NamedService for Budgeted<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Budgeted<S>
where
    S: Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let (budget, cap) = (self.budget.clone(), self.per_body);
        self.inner.call(req.map(|body| {
            Body::new(BudgetBody {
                inner: body,
                budget,
                cap,
                seen: 0,
                held: None,
                ended: false,
            })
        }))
    }
}

/// A request body that takes a permit per byte as its frames arrive and
/// gives them all back when dropped.
struct BudgetBody {
    inner: Body,
    budget: Arc<Shared>,
    /// The most this body may hold.
    cap: usize,
    /// Bytes received so far.
    seen: usize,
    held: Option<OwnedSemaphorePermit>,
    /// Refused once: the body is over, so a caller that polls again gets
    /// its end, not a second refusal (which would be counted twice).
    ended: bool,
}

/// Refused: RESOURCE_EXHAUSTED (tonic keeps a `Status` a body fails with).
fn refused(why: &str) -> StdError {
    Box::new(tonic::Status::resource_exhausted(why))
}

impl HttpBody for BudgetBody {
    type Data = Bytes;
    type Error = StdError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, StdError>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            this.seen = this.seen.saturating_add(data.len());
            if this.seen > this.cap {
                this.ended = true;
                this.budget.too_large.inc();
                return Poll::Ready(Some(Err(refused("a request body larger than one message"))));
            }
            let n = u32::try_from(data.len()).unwrap_or(u32::MAX);
            match this.budget.bytes.clone().try_acquire_many_owned(n) {
                Ok(p) => match &mut this.held {
                    Some(held) => held.merge(p),
                    None => this.held = Some(p),
                },
                Err(_) => {
                    this.ended = true;
                    this.budget.over_budget.inc();
                    return Poll::Ready(Some(Err(refused(
                        "unfinished request bodies on this listener are over their budget; try again",
                    ))));
                }
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames are counted until the budget is spent, then refused; a body
    /// gives back what it took when dropped.
    #[tokio::test]
    async fn bodies_hold_bytes_until_dropped_and_none_past_the_budget() {
        use http_body_util::BodyExt;
        let family = Family::<KindLabels, Counter>::default();
        let shared = Budget::new(10, &family).0;
        let budget = shared.bytes.clone();
        let count = |kind: &'static str| family.get_or_create(&KindLabels { kind }).get();
        // Each body sends its bytes twice, in two frames.
        let body = |bytes: &'static [u8]| BudgetBody {
            inner: Body::new(http_body_util::StreamBody::new(futures_util::stream::iter(
                [bytes, bytes].map(|b| Ok::<_, tonic::Status>(Frame::data(Bytes::from_static(b)))),
            ))),
            budget: shared.clone(),
            cap: 20,
            seen: 0,
            held: None,
            ended: false,
        };
        let mut first = body(b"123456");
        assert!(first.frame().await.expect("a frame").is_ok());
        assert_eq!(budget.available_permits(), 4, "held while the body lives");
        let mut second = body(b"12345");
        let answer = second.frame().await.expect("a frame");
        assert!(answer.is_err(), "past the budget");
        assert_eq!(count("budget"), 1, "counted");
        // Polled again after its refusal: over, and not counted twice.
        assert!(second.frame().await.is_none(), "ended after the refusal");
        assert_eq!(count("budget"), 1, "counted once");
        assert_eq!(count("too_large"), 0);
        drop(second);
        drop(first);
        assert_eq!(budget.available_permits(), 10, "all given back");
        let mut third = body(b"12345");
        assert!(third.frame().await.expect("a frame").is_ok());
        assert!(
            third.frame().await.expect("a frame").is_ok(),
            "the whole budget, in two frames"
        );
        drop(third);
        // One body past its own cap is refused, whatever the budget has left.
        let mut big = BudgetBody {
            inner: Body::new(http_body_util::Full::new(Bytes::from_static(b"12345"))),
            budget: shared.clone(),
            cap: 4,
            seen: 0,
            held: None,
            ended: false,
        };
        let err = big.frame().await.expect("a frame").expect_err("over its cap");
        let status = err.downcast::<tonic::Status>().expect("a Status");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(budget.available_permits(), 10);
        assert_eq!(count("budget"), 1);
        assert_eq!(count("too_large"), 1);
    }
}
