//! RSS with many cached tokens.

use crate::*;

/// RSS of a cache-on hydra-authz idle, then after one check with each of `n`
/// distinct tokens (all cached). Bounded: stops after 120 s whatever happens.
pub(crate) async fn memory(dir: &Path, n: usize) -> anyhow::Result<String> {
    let (iss, addrs) = issuer(TokenFormat::Opaque, Duration::ZERO).await?;
    let url = addrs.introspection_url();
    let srv = spawn_authz(dir, "mem", &format!("{CACHE_ON}\nmax_entries = {}", n * 2), &url).await?;
    let idle = rss_mib(srv.pid());
    let tokens = mint(&iss, n);
    let per = tokens.len() / 64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for chunk in tokens.chunks(per.max(1)) {
        let chunk = chunk.to_vec();
        let ch = Channel::from_shared(format!("http://{}", srv.addr))?.connect().await?;
        tasks.push(tokio::spawn(async move {
            let mut client = AuthorizationClient::new(ch);
            for t in chunk {
                if started.elapsed() > Duration::from_secs(120) {
                    break;
                }
                let _ = client.check(check_request(&t)).await;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let full = rss_mib(srv.pid());
    Ok(format!(
        "RSS idle (hydra-authz, cache on): {idle:.1} MiB; with {n} cached tokens: {full:.1} MiB \
         ({} introspections; {:.0} bytes per cached token)",
        iss.introspections(),
        (full - idle) * 1024.0 * 1024.0 / n.max(1) as f64
    ))
}
