//! The purge subscription: one long-lived task per replica that listens on
//! `<prefix>:purge`, applies every message to the local cache, and keeps
//! the cache switched off whenever it cannot be sure it heard every purge.
//!
//! Each session: connect, SUBSCRIBE, read the shared-cache epoch, empty the
//! local cache (purges may have gone by while we were not listening), and
//! only then serve from the cache again. A PING every `health_interval`
//! that is not answered within `timeout` ends the session as surely as a
//! closed connection does; the cache is off from that moment until the
//! next session is up. Reconnects back off from 100 ms to 2 s.

use super::purge::PurgeTarget;
use super::Fleet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::StreamExt;

/// Run the subscription until `stop` turns true.
pub fn spawn(fleet: Arc<Fleet>, mut stop: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            let ended = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                ended = session(&fleet) => ended,
            };
            let was_up = fleet.subscribed.swap(false, Ordering::AcqRel);
            fleet.metrics.fleet.subscribed.set(0);
            if was_up {
                backoff = Duration::from_millis(100);
                tracing::warn!(error = %ended, "purge subscription lost; cache bypassed until it is back");
            } else {
                tracing::debug!(error = %ended, "purge subscription not up yet");
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    })
}

/// One subscription, from connect to loss; returns why it ended.
async fn session(fleet: &Fleet) -> String {
    let deadline = fleet.timeout.max(Duration::from_secs(1));
    let bounded = |what: &'static str| move |_| format!("{what}: no answer within {} ms", deadline.as_millis());
    let pubsub = match tokio::time::timeout(deadline, fleet.client.get_async_pubsub()).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return format!("connect: {e}"),
        Err(e) => return bounded("connect")(e),
    };
    let (mut sink, mut stream) = pubsub.split();
    match tokio::time::timeout(deadline, sink.subscribe(fleet.channel())).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return format!("subscribe: {e}"),
        Err(e) => return bounded("subscribe")(e),
    }
    // Subscribed: from here on no purge is missed. Now catch up on what
    // may have been missed before: the epoch, and everything cached.
    let epoch: Option<u64> = match fleet.run("get", redis::cmd("GET").arg(fleet.epoch_key())).await {
        Ok(e) => e,
        Err(e) => return format!("read epoch: {e}"),
    };
    fleet.epoch.fetch_max(epoch.unwrap_or(0), Ordering::AcqRel);
    fleet.apply_locally(&PurgeTarget::All);
    fleet.subscribed.store(true, Ordering::Release);
    fleet.metrics.fleet.subscribed.set(1);
    fleet.metrics.fleet.resubscribes.inc();
    tracing::info!(channel = %fleet.channel(), "purge subscription up; cache flushed and in use");

    let mut health = tokio::time::interval(fleet.health_interval);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    health.tick().await;
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(m) => fleet.receive(m.get_payload_bytes()),
                None => return "connection closed".into(),
            },
            _ = health.tick() => {
                match tokio::time::timeout(fleet.timeout.max(Duration::from_millis(500)), sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return format!("ping: {e}"),
                    Err(_) => return "ping: no answer in time".into(),
                }
            }
        }
    }
}
