//! The purge subscription: one long-lived task per replica that listens on
//! `<prefix>:purge`, applies every message to the local cache, and keeps
//! the cache switched off whenever it cannot be sure it heard every purge.
//!
//! Each session: connect, SUBSCRIBE, agree on the shared-cache epoch with
//! Redis (never going back), empty the local cache (purges may have gone
//! by while we were not listening), and only then serve from the cache
//! again. A PING every `health_interval` that is not answered within
//! `timeout` (at least 500 ms) ends the session as surely as a closed
//! connection does; the cache is off from that moment until the next
//! session is up. Reconnects back off from 100 ms to 2 s, jittered.

use super::purge::PurgeTarget;
use super::Fleet;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::StreamExt;

/// Run the subscription until `stop` turns true.
pub fn spawn(fleet: Arc<Fleet>, mut stop: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            let Err((was_up, why)) = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                ended = session(&fleet) => ended,
            };
            let why = crate::telemetry::EscapedText(&why);
            if was_up {
                backoff = Duration::from_millis(100);
                tracing::warn!(error = %why, "purge subscription lost; cache bypassed until it is back");
            } else {
                tracing::debug!(error = %why, "purge subscription not up yet");
            }
            // Jittered, so a fleet that lost Redis together does not come
            // back in lockstep.
            let pause = backoff.mul_f64(rand::random_range(0.5..1.0));
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(pause) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    })
}

/// The cache is trusted while this lives: dropped when the session ends in
/// any way (returned, dropped at an await on shutdown, panicked).
struct Trusted<'a>(&'a Fleet);

impl<'a> Trusted<'a> {
    fn set(fleet: &'a Fleet) -> Trusted<'a> {
        fleet.subscribed.store(true, Ordering::Release);
        fleet.metrics.fleet.subscribed.set(1);
        Trusted(fleet)
    }
}

impl Drop for Trusted<'_> {
    fn drop(&mut self) {
        self.0.subscribed.store(false, Ordering::Release);
        self.0.metrics.fleet.subscribed.set(0);
    }
}

/// One subscription, from connect to loss. It only ends with why, and
/// whether it had come up.
async fn session(fleet: &Arc<Fleet>) -> Result<Infallible, (bool, String)> {
    let deadline = fleet.timeout.max(Duration::from_secs(1));
    let down = |why: String| (false, why);
    let late = |what: &str| (false, format!("{what}: no answer within {} ms", deadline.as_millis()));
    let pubsub = match tokio::time::timeout(deadline, fleet.client.get_async_pubsub()).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return Err(down(format!("connect: {e}"))),
        Err(_) => return Err(late("connect")),
    };
    let (mut sink, mut stream) = pubsub.split();
    match tokio::time::timeout(deadline, sink.subscribe(fleet.channel())).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(down(format!("subscribe: {e}"))),
        Err(_) => return Err(late("subscribe")),
    }
    // Subscribed: from here on no purge is missed. Now catch up on what
    // may have been missed before: the epoch, and everything cached.
    if let Err(e) = fleet.sync_epoch().await {
        return Err(down(format!("epoch: {e}")));
    }
    fleet.apply_locally(&PurgeTarget::All);
    fleet.resume_by_own_step().await;
    let _trusted = Trusted::set(fleet);
    fleet.metrics.fleet.resubscribes.inc();
    tracing::info!(channel = %fleet.channel(), "purge subscription up; cache flushed and in use");

    let lost = |why: String| (true, why);
    let mut health = tokio::time::interval(fleet.health_interval);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    health.tick().await;
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(m) => fleet.receive(m.get_payload_bytes()),
                None => return Err(lost("connection closed".into())),
            },
            _ = health.tick() => {
                let answer = tokio::time::timeout(fleet.timeout.max(Duration::from_millis(500)), sink.ping::<redis::Value>());
                match answer.await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(lost(format!("ping: {e}"))),
                    Err(_) => return Err(lost("ping: no answer in time".into())),
                }
            }
        }
    }
}
