//! Rows z: a realistic load, open-loop. Requests leave on a fixed schedule
//! whether or not earlier ones have answered, and each latency is counted
//! from its *scheduled* send time, so a stall shows as the queue it
//! causes (no coordinated omission). Tokens are drawn from a Zipf
//! distribution (s = 1) over 10,000 tokens, plus a steady 1 % of requests
//! with a token never seen before; the Hydra-shaped issuer answers each
//! introspection in 2 ms. Cache off and on (the shipped `ttl_ms`), at
//! 1,000/s, 5,000/s and the saturation rate (the closed-loop throughput of
//! the same server with the same tokens, measured first).

use crate::*;
use rand::prelude::Distribution;
use std::sync::Arc;

const TOKENS: usize = 10_000;
/// One request in this many carries a never-seen token.
const NEW_EVERY: usize = 100;
/// Requests outstanding at once before the generator counts the rest as
/// dropped (it never blocks its schedule).
const MAX_IN_FLIGHT: usize = 20_000;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) async fn open_loop_rows(dir: &Path, noop: &Proc, c: usize, dur: Duration) -> anyhow::Result<Vec<Row>> {
    let (iss, addrs, _) = timed_issuer(TokenFormat::Opaque, Duration::from_millis(2)).await?;
    let url = addrs.introspection_url();
    let popular_tokens = mint(&iss, TOKENS);
    let popular: Vec<Encoded> = popular_tokens.iter().map(|t| Encoded::of(&check_request(t))).collect();
    let popular = Arc::new(popular);
    let mut rows = Vec::new();
    // The baseline in the same run: the no-op server under the same
    // generator, so what the generator itself adds is visible.
    for rate in [1_000u64, 5_000] {
        let mut row = open_loop(noop.addr, popular.clone(), Vec::new(), rate, dur).await?;
        row.name = format!(
            "z0. open loop {}k ({rate}/s), the no-op floor (same generator)",
            rate / 1_000
        );
        row.rss_mib = rss_mib(noop.pid());
        rows.push(row);
    }
    for (cache, extra) in [
        ("off", ""),
        // The shipped ttl_ms (30 s) with the cache turned on.
        ("on", "[introspection.cache]\nenabled = true"),
    ] {
        let srv = spawn_authz(dir, &format!("open-loop-cache-{cache}"), extra, &url).await?;
        for rate in [Rate::Fixed(1_000), Rate::Fixed(5_000), Rate::Saturation] {
            let (label, rate) = match rate {
                Rate::Fixed(r) => (format!("{}k", r / 1_000), r),
                // What the same server does closed-loop over the same
                // tokens (round robin), measured now, after the fixed rows
                // have warmed what they would have warmed.
                Rate::Saturation => {
                    let (closed, _) = load_on(&srv, &popular_tokens, c, dur, None).await?;
                    ("saturation".to_owned(), closed.rps.max(1.0) as u64)
                }
            };
            let fresh: Vec<Encoded> = mint(&iss, (rate * dur.as_secs()) as usize / NEW_EVERY + 1)
                .iter()
                .map(|t| Encoded::of(&check_request(t)))
                .collect();
            let before = iss.introspections();
            let mut row = open_loop(srv.addr, popular.clone(), fresh, rate, dur).await?;
            let introspections = (iss.introspections() - before) as f64 / dur.as_secs_f64();
            row.name = format!(
                "z. open loop {label} ({rate}/s), Zipf over {TOKENS} tokens + 1 % new, Hydra +2 ms, cache {cache}"
            );
            row.rss_mib = rss_mib(srv.pid());
            row.note = format!("{}; {introspections:.0} introspections/s", row.note);
            rows.push(row);
        }
    }
    Ok(rows)
}

enum Rate {
    Fixed(u64),
    Saturation,
}

/// Send `rate` checks/s for `dur` on schedule; latencies from the schedule.
async fn open_loop(
    addr: SocketAddr,
    popular: Arc<Vec<Encoded>>,
    fresh: Vec<Encoded>,
    rate: u64,
    dur: Duration,
) -> anyhow::Result<Row> {
    let total = (rate as f64 * dur.as_secs_f64()) as usize;
    // The draws are made before the clock starts: the schedule does not
    // wait for the random number generator.
    let zipf = rand_distr::Zipf::new(TOKENS as f64, 1.0)?;
    let mut rng = rand::rng();
    let picks: Vec<usize> = (0..total)
        .map(|_| (zipf.sample(&mut rng) as usize).clamp(1, TOKENS) - 1)
        .collect();
    let mut channels = Vec::new();
    for _ in 0..8 {
        channels.push(Channel::from_shared(format!("http://{addr}"))?.connect().await?);
    }
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<u32>>();
    let mut fresh = fresh.into_iter();
    let mut dropped = 0u64;
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    for (i, pick) in picks.into_iter().enumerate() {
        let at = start + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(at).await;
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            dropped += 1;
            continue;
        };
        let request = match (i % NEW_EVERY == 0).then(|| fresh.next()).flatten() {
            Some(new) => new,
            None => popular[pick].clone(),
        };
        let mut client = LeanClient::new(channels[i % channels.len()].clone());
        let tx = tx.clone();
        tokio::spawn(async move {
            let answer = tokio::time::timeout(REQUEST_TIMEOUT, client.check(&request)).await;
            let allowed = matches!(answer, Ok(Ok(ref v)) if v.allowed());
            let latency = u32::try_from(at.elapsed().as_micros()).unwrap_or(u32::MAX);
            let _ = tx.send(allowed.then_some(latency));
            drop(permit);
        });
    }
    drop(tx);
    let mut latencies = Vec::with_capacity(total);
    let mut failed = 0u64;
    while let Some(result) = rx.recv().await {
        match result {
            Some(l) => latencies.push(l),
            None => failed += 1,
        }
    }
    let elapsed = start.elapsed();
    let mut row = latency_row(latencies, elapsed);
    row.note = format!(
        "sent on schedule: {total}; {failed} not allowed or timed out ({}s); {dropped} dropped over {MAX_IN_FLIGHT} in flight",
        REQUEST_TIMEOUT.as_secs()
    );
    Ok(row)
}
