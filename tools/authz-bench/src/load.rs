//! Load generators: closed-loop or paced gRPC Checks, paced introspection
//! round trips, and wrk's output for the Envoy rows.

use crate::*;

/// `grpc_load` against one of our server processes, adding its CPU time
/// per check and RSS to the row.
pub(crate) async fn load_on(
    p: &Proc,
    tokens: &[String],
    concurrency: usize,
    duration: Duration,
    rate: Option<u64>,
) -> anyhow::Result<(Row, u64)> {
    let (cpu0, own0) = (cpu_s(p.pid()), cpu_s(std::process::id()));
    let (mut row, denied) = grpc_load(p.addr, tokens, concurrency, duration, rate).await?;
    let checks = row.rps * duration.as_secs_f64();
    row.cpu_us = Some((cpu_s(p.pid()) - cpu0) * 1e6 / checks.max(1.0));
    row.load_cpu_us = Some((cpu_s(std::process::id()) - own0) * 1e6 / checks.max(1.0));
    row.rss_mib = rss_mib(p.pid());
    Ok((row, denied))
}

pub(crate) fn check_request(token: &str) -> CheckRequest {
    let auth = format!("Bearer {token}");
    let headers = [
        ("authorization", auth.as_str()),
        (":authority", "api.example.com"),
        ("user-agent", "authz-bench"),
        ("x-request-id", "2b7b1f0e-9a7c-4a57-9d5e-0a8f9e3c1d22"),
    ];
    hydra_authz::extract::envoy_check_request("GET", "api.example.com", "/date", headers, [])
}

/// Closed-loop gRPC load: `concurrency` workers over 4 HTTP/2 connections for
/// `duration` (or paced to `rate` checks/s when given). Tokens round-robin.
pub(crate) async fn grpc_load(
    addr: SocketAddr,
    tokens: &[String],
    concurrency: usize,
    duration: Duration,
    rate: Option<u64>,
) -> anyhow::Result<(Row, u64)> {
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(Channel::from_shared(format!("http://{addr}"))?.connect().await?);
    }
    let requests: Vec<Encoded> = tokens.iter().map(|t| Encoded::of(&check_request(t))).collect();
    let requests = std::sync::Arc::new(requests);
    let deadline = Instant::now() + duration;
    let per_worker_interval = rate.map(|r| Duration::from_secs_f64(concurrency as f64 / r as f64));
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let mut client = LeanClient::new(channels[w % channels.len()].clone());
        let requests = requests.clone();
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            let mut denied = 0u64;
            let mut i = w;
            let mut next = Instant::now();
            while Instant::now() < deadline {
                if let Some(iv) = per_worker_interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += iv;
                }
                let req = &requests[i % requests.len()];
                i += concurrency;
                let t = Instant::now();
                let r = client.check(req).await;
                lat.push(t.elapsed().as_micros() as u32);
                if !r.is_ok_and(|v| v.allowed()) {
                    denied += 1;
                }
            }
            (lat, denied)
        }));
    }
    let mut lat = Vec::new();
    let mut denied = 0;
    for w in workers {
        let (l, d) = w.await?;
        lat.extend(l);
        denied += d;
    }
    Ok((latency_row(lat, started.elapsed()), denied))
}

/// Throughput and latency percentiles from per-request latencies (µs).
pub(crate) fn latency_row(mut lat: Vec<u32>, elapsed: Duration) -> Row {
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
    };
    Row {
        rps: lat.len() as f64 / elapsed.as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        p999_us: pct(0.999),
        ..Default::default()
    }
}

/// How long the Hydra-shaped issuer took to answer each introspection (the
/// injected delay plus its own work, as its handler saw it), so the d' rows
/// can subtract Hydra's real answer time rather than the nominal delay
/// (tokio's timer rounds sleeps up to whole milliseconds).
#[derive(Clone, Default)]
pub(crate) struct ServiceTimes(std::sync::Arc<std::sync::Mutex<Vec<u32>>>);

impl ServiceTimes {
    pub(crate) fn record(&self, took: Duration) {
        if let Ok(mut v) = self.0.lock() {
            v.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        }
    }

    /// Median since the last call, in µs; clears the record.
    pub(crate) fn take_p50_us(&self) -> f64 {
        let mut v = self.0.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0) as f64
    }
}

/// Paced RFC 7662 introspection POSTs straight from the bench (keep-alive
/// pool, `workers` in parallel, `rate` per second in all): the round trip
/// hydra-authz cannot avoid, measured the same way as the gRPC rows.
pub(crate) async fn introspection_rtt(
    url: &str,
    tokens: &[String],
    workers: usize,
    duration: Duration,
    rate: u64,
) -> anyhow::Result<(Row, u64)> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let interval = Duration::from_secs_f64(workers as f64 / rate as f64);
    let deadline = Instant::now() + duration;
    let tokens = std::sync::Arc::new(tokens.to_vec());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (client, url, tokens) = (client.clone(), url.to_owned(), tokens.clone());
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut failed, mut i, mut next) = (Vec::new(), 0u64, w, Instant::now());
            while Instant::now() < deadline {
                tokio::time::sleep_until(next.into()).await;
                next += interval;
                let token = tokens[i % tokens.len()].clone();
                i += workers;
                let t = Instant::now();
                let ok = match client.post(&url).form(&[("token", token)]).send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                lat.push(t.elapsed().as_micros() as u32);
                failed += u64::from(!ok);
            }
            (lat, failed)
        }));
    }
    let (mut lat, mut failed) = (Vec::new(), 0);
    for t in tasks {
        let (l, f) = t.await?;
        lat.extend(l);
        failed += f;
    }
    Ok((latency_row(lat, started.elapsed()), failed))
}

pub(crate) fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(cmd)).find(|p| p.is_file()))
}

/// `wrk --latency` with a bearer token on `GET http://{listen}/date`, one
/// thread and `connections` connections, for `dur`; its output, parsed,
/// and whether wrk saw non-2xx answers (a broken setup, not a result).
pub(crate) async fn run_wrk(
    listen: SocketAddr,
    token: &str,
    connections: usize,
    dur: Duration,
) -> anyhow::Result<(Row, bool)> {
    let out = Command::new("wrk")
        .args([
            "-t",
            "1",
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{}s", dur.as_secs()),
            "--latency",
            "-H",
            &format!("Authorization: Bearer {token}"),
        ])
        .arg(format!("http://{listen}/date"))
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok((parse_wrk(&text), text.contains("Non-2xx")))
}

/// `Requests/sec:` and the `--latency` distribution (50%, 99%) of wrk's output.
pub(crate) fn parse_wrk(text: &str) -> Row {
    let to_us = |v: &str| -> f64 {
        let v = v.trim();
        let (num, mul) = if let Some(n) = v.strip_suffix("us") {
            (n, 1.0)
        } else if let Some(n) = v.strip_suffix("ms") {
            (n, 1000.0)
        } else if let Some(n) = v.strip_suffix('s') {
            (n, 1_000_000.0)
        } else {
            (v, 1.0)
        };
        num.parse::<f64>().unwrap_or(0.0) * mul
    };
    let mut row = Row::default();
    for line in text.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            row.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = l.strip_prefix("50%") {
            row.p50_us = to_us(v);
        } else if let Some(v) = l.strip_prefix("99%") {
            row.p99_us = to_us(v);
        }
    }
    row
}
