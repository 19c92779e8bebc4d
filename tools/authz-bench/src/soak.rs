//! The soak: a paced load for minutes, watching RSS, file descriptors and
//! open connections for growth.

use crate::*;

/// Soak: hydra-authz (cache off) at a fixed rate against a Hydra-shaped
/// issuer that, every minute, answers 503 for 7 s, hangs for 7 s and sends
/// garbage for 6 s. A "false allow" is a 200 for a token that must never
/// pass (revoked, unknown, wrong scope, none). Stops by itself.
pub(crate) async fn soak(duration: Duration, rate: u64) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
    use std::sync::Arc;
    let fault = Arc::new(AtomicU8::new(0));
    let public = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let (pa, aa) = (public.local_addr()?, admin.local_addr()?);
    let iss = DevIssuer::with_format(format!("http://{pa}"), seed_clients(), 36_000, TokenFormat::Opaque);
    let f = fault.clone();
    let admin_router = iss.admin_router().layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let f = f.clone();
            async move {
                use axum::response::IntoResponse;
                match f.load(Ordering::Relaxed) {
                    1 => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "busy").into_response(),
                    2 => {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        next.run(req).await
                    }
                    3 => ([(axum::http::header::CONTENT_TYPE, "application/json")], "{garbage").into_response(),
                    _ => next.run(req).await,
                }
            }
        },
    ));
    tokio::spawn(async move { axum::serve(admin, admin_router).await });
    let public_router = iss.public_router();
    tokio::spawn(async move { axum::serve(public, public_router).await });

    let valid = mint(&iss, 100);
    let revoked = mint(&iss, 50);
    for t in &revoked {
        iss.revoke_token(t);
    }
    let writer: Vec<String> = (0..50)
        .map(|_| iss.mint("writer", &["post_echo"]).unwrap_or_default())
        .collect();
    let dir = tempfile::tempdir()?;
    let srv = spawn_authz(
        dir.path(),
        "soak",
        "",
        &IssuerAddrs { public: pa, admin: aa }.introspection_url(),
    )
    .await?;
    let pid = srv.pid();
    let ch = Channel::from_shared(format!("http://{}", srv.addr))?.connect().await?;
    // Warm up, then take the starting figures.
    for t in valid.iter().take(20) {
        let _ = AuthorizationClient::new(ch.clone()).check(check_request(t)).await;
    }
    let (rss0, fds0) = (rss_mib(pid), open_fds(pid));

    // (kind, must never be allowed, token)
    let mut cases: Vec<(&'static str, bool, String)> = Vec::new();
    for i in 0..100 {
        cases.push(("valid", false, valid[i % valid.len()].clone()));
    }
    for t in &revoked {
        cases.push(("revoked", true, t.clone()));
    }
    for t in &writer {
        cases.push(("wrong_scope", true, t.clone()));
    }
    for i in 0..25 {
        cases.push(("unknown", true, format!("ory_at_unknown{i}")));
    }
    let cases = Arc::new(cases);
    let counts: Arc<std::sync::Mutex<std::collections::BTreeMap<(String, i32), u64>>> = Default::default();
    let (sent, false_allows, errors) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );

    let started = Instant::now();
    let fault_driver = {
        let fault = fault.clone();
        tokio::spawn(async move {
            loop {
                let t = started.elapsed().as_secs() % 60;
                fault.store(
                    match t {
                        40..=46 => 1,
                        47..=53 => 2,
                        54..=59 => 3,
                        _ => 0,
                    },
                    Ordering::Relaxed,
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let workers = 16u64;
    let interval = Duration::from_secs_f64(workers as f64 / rate as f64);
    let mut handles = Vec::new();
    for w in 0..workers {
        let (ch, cases, counts) = (ch.clone(), cases.clone(), counts.clone());
        let (sent, false_allows, errors) = (sent.clone(), false_allows.clone(), errors.clone());
        handles.push(tokio::spawn(async move {
            let mut client = AuthorizationClient::new(ch);
            let mut next = Instant::now();
            let mut i = w as usize;
            while started.elapsed() < duration {
                tokio::time::sleep_until(next.into()).await;
                next += interval;
                let (kind, forbidden, token) = &cases[i % cases.len()];
                i += workers as usize;
                sent.fetch_add(1, Ordering::Relaxed);
                let mut req = tonic::Request::new(check_request(token));
                req.set_timeout(Duration::from_secs(1)); // as Envoy's ext_authz timeout
                match client.check(req).await {
                    Ok(r) => {
                        let status = match &r.get_ref().http_response {
                            Some(envoy_types::ext_authz::v3::pb::HttpResponse::DeniedResponse(d)) => {
                                d.status.as_ref().map_or(0, |s| s.code)
                            }
                            _ if r.get_ref().status.as_ref().is_some_and(|s| s.code == 0) => 200,
                            _ => 0,
                        };
                        if status == 200 && *forbidden {
                            false_allows.fetch_add(1, Ordering::Relaxed);
                        }
                        *counts
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .entry((kind.to_string(), status))
                            .or_default() += 1;
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for h in handles {
        h.await?;
    }
    fault_driver.abort();
    let (rss1, fds1) = (rss_mib(pid), open_fds(pid));
    println!(
        "\n## Soak: {:.0} s at {rate} checks/s, Hydra faults 20 s of every 60 s\n",
        started.elapsed().as_secs_f64()
    );
    println!("| kind | status | count |\n|---|---:|---:|");
    for ((kind, status), n) in counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter() {
        println!("| {kind} | {status} | {n} |");
    }
    let sent = sent.load(Ordering::Relaxed);
    let errors = errors.load(Ordering::Relaxed);
    println!(
        "\nsent {sent}, answered {}, gRPC errors {errors}, false allows {}\nhydra-authz RSS {rss0:.1} -> {rss1:.1} MiB, open files {fds0} -> {fds1}",
        sent - errors,
        false_allows.load(Ordering::Relaxed)
    );
    anyhow::ensure!(false_allows.load(Ordering::Relaxed) == 0, "FALSE ALLOWS");
    Ok(())
}
