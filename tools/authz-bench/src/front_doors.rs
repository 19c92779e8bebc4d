//! Front doors and the identity JWT (issues 16 and 17): the same engine
//! answering gRPC Check (f) and HTTP `/forward-auth` (f2) in one process,
//! the nginx kit (deploy/nginx/nginx.conf) with and without hydra-authz
//! driven by wrk (g, g2), and cache hits with `[upstream_jwt]` signing a
//! JWT on every allow (b4).

use crate::*;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;

/// The nginx kit, compiled in so the bench runs from any directory.
const NGINX_KIT: &str = include_str!("../../../deploy/nginx/nginx.conf");
/// The ports written in the kit: listener, upstream, hydra-authz's
/// `[forward_auth] addr`. Each appears exactly once.
const KIT_LISTEN: u16 = 8080;
const KIT_UPSTREAM: u16 = 8081;
const KIT_AUTHZ: u16 = 9194;

/// `[introspection.cache]` on plus `[forward_auth]` on `addr`.
pub(crate) fn forward_auth_extra(cache_on: &str, addr: SocketAddr) -> String {
    format!("{cache_on}\n[forward_auth]\naddr = \"{addr}\"")
}

/// f and f2: one hydra-authz with the cache and the forward-auth listener
/// on, measured through gRPC Check and then through HTTP `/forward-auth`
/// (same token, same concurrency), back to back.
pub(crate) async fn forward_auth_rows(
    srv: &Proc,
    forward_auth: SocketAddr,
    token: &str,
    concurrency: usize,
    dur: Duration,
) -> anyhow::Result<Vec<Row>> {
    let tokens = [token.to_owned()];
    let (mut f, denied) = load_on(srv, &tokens, concurrency, dur, None).await?;
    f.name = format!(
        "f. hydra-authz gRPC Check, cache hits ({}, forward-auth on, same process as f2)",
        LogSetting::SHIPPED.label()
    );
    f.note = format!("{denied} non-allow");
    let cpu0 = cpu_s(srv.pid());
    let (mut f2, denied) = forward_auth_load(forward_auth, token, concurrency, dur).await?;
    let checks = f2.rps * dur.as_secs_f64();
    f2.cpu_us = Some((cpu_s(srv.pid()) - cpu0) * 1e6 / checks.max(1.0));
    f2.rss_mib = rss_mib(srv.pid());
    f2.name = format!(
        "f2. hydra-authz HTTP /forward-auth, cache hits ({}, same process as f)",
        LogSetting::SHIPPED.label()
    );
    f2.note = format!(
        "{:.2}x f; HTTP/1.1 keep-alive, one connection per worker; {denied} non-200",
        f2.rps / f.rps
    );
    Ok(vec![f, f2])
}

/// Closed-loop HTTP load on `/forward-auth`: `concurrency` workers, each
/// on its own keep-alive HTTP/1.1 connection (hyper's client connection,
/// no pool in the way), for `duration`. A non-200 answer or a failed
/// request counts as non-allow.
pub(crate) async fn forward_auth_load(
    addr: SocketAddr,
    token: &str,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<(Row, u64)> {
    let auth = format!("Bearer {token}");
    let mut senders = Vec::new();
    for _ in 0..concurrency {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        senders.push(sender);
    }
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut workers = Vec::new();
    for mut sender in senders {
        let auth = auth.clone();
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            let mut denied = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let ok = forward_auth_once(&mut sender, &auth, addr).await;
                lat.push(t.elapsed().as_micros() as u32);
                if !ok {
                    denied += 1;
                    // A broken connection stays broken: stop this worker
                    // rather than spin on errors.
                    if sender.is_closed() {
                        break;
                    }
                }
            }
            (lat, denied)
        }));
    }
    let (mut lat, mut denied) = (Vec::new(), 0);
    for w in workers {
        let (l, d) = w.await?;
        lat.extend(l);
        denied += d;
    }
    Ok((latency_row(lat, started.elapsed()), denied))
}

/// One forward-auth call as nginx's `auth_request` makes it: the original
/// method, URI and host in `X-Forwarded-*`, the caller's Authorization.
async fn forward_auth_once(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    auth: &str,
    addr: SocketAddr,
) -> bool {
    if sender.ready().await.is_err() {
        return false;
    }
    let req = hyper::Request::get("/forward-auth")
        .header("host", addr.to_string())
        .header("authorization", auth)
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-uri", "/date")
        .header("x-forwarded-host", "api.example.com")
        .header("x-forwarded-proto", "http")
        .header("user-agent", "authz-bench")
        .header("x-request-id", "2b7b1f0e-9a7c-4a57-9d5e-0a8f9e3c1d22")
        .body(Empty::new());
    let Ok(req) = req else { return false };
    match sender.send_request(req).await {
        Ok(resp) => {
            let status = resp.status();
            resp.into_body().collect().await.is_ok() && status == hyper::StatusCode::OK
        }
        Err(_) => false,
    }
}

/// nginx: `NGINX_BIN`, `PATH`, or where scripts/install-proxies.sh unpacks
/// it (`<repo>/.venv-deploy/nginx/bin/nginx`).
fn find_nginx() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NGINX_BIN") {
        return Some(PathBuf::from(p));
    }
    which("nginx").or_else(|| {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        Some(repo.join(".venv-deploy/nginx/bin/nginx")).filter(|p| p.is_file())
    })
}

fn replace_once(text: &str, from: &str, to: &str) -> anyhow::Result<String> {
    anyhow::ensure!(
        text.matches(from).count() == 1,
        "deploy/nginx/nginx.conf: expected {from:?} exactly once"
    );
    Ok(text.replacen(from, to, 1))
}

/// The kit with its ports rewritten; without the `auth_request` directive
/// when `with_authz` is false (everything else, the identity header
/// hygiene included, stays, so g and g2 differ by the auth subrequest only).
fn nginx_conf(listen: u16, upstream: u16, authz: u16, with_authz: bool) -> anyhow::Result<String> {
    let mut conf = NGINX_KIT.to_owned();
    for (from, to) in [(KIT_LISTEN, listen), (KIT_UPSTREAM, upstream), (KIT_AUTHZ, authz)] {
        conf = replace_once(&conf, &format!("127.0.0.1:{from};"), &format!("127.0.0.1:{to};"))?;
    }
    if !with_authz {
        let before = conf.lines().count();
        conf = conf
            .lines()
            .filter(|l| !l.trim_start().starts_with("auth_request "))
            .collect::<Vec<_>>()
            .join("\n");
        anyhow::ensure!(
            conf.lines().count() + 1 == before,
            "deploy/nginx/nginx.conf: expected one auth_request directive"
        );
    }
    Ok(conf)
}

/// g and g2: the nginx kit in front of an echo upstream, alone (the kit
/// minus `auth_request`) and with hydra-authz's forward-auth, driven by wrk
/// with a valid token. Skipped (Err) without nginx or wrk.
pub(crate) async fn nginx_rows(
    dir: &Path,
    forward_auth: SocketAddr,
    token: &str,
    concurrency: usize,
    dur: Duration,
) -> anyhow::Result<Vec<Row>> {
    let nginx = find_nginx().ok_or_else(|| {
        anyhow::anyhow!("no nginx (NGINX_BIN, PATH, or: d=$(scripts/install-proxies.sh nginx); PATH=$d:$PATH)")
    })?;
    which("wrk").ok_or_else(|| anyhow::anyhow!("wrk not installed (apt-get install wrk)"))?;
    let upstream = hydra_authz::demo::upstream::serve("127.0.0.1:0".parse()?).await?;
    let mut rows = Vec::new();
    let mut plain_rps = 0.0;
    for (name, with_authz) in [
        ("g. nginx → echo upstream (the kit without auth_request)", false),
        ("g2. nginx + hydra-authz /forward-auth (the kit, cached)", true),
    ] {
        let listen = free_addr();
        let conf = nginx_conf(listen.port(), upstream.port(), forward_auth.port(), with_authz)?;
        let tag = if with_authz { "g2" } else { "g" };
        let conf_path = dir.join(format!("nginx-{tag}.conf"));
        std::fs::write(&conf_path, conf)?;
        let prefix = dir.join(format!("nginx-{tag}"));
        std::fs::create_dir_all(&prefix)?;
        // stderr to a file: nginx's workers must not hold our pipes open.
        let stderr = std::fs::File::create(prefix.join("stderr.log"))?;
        let nginx = Nginx(
            Command::new(&nginx)
                .arg("-p")
                .arg(&prefix)
                .arg("-c")
                .arg(&conf_path)
                .args(["-e", "stderr"])
                .stdout(Stdio::null())
                .stderr(stderr)
                .kill_on_drop(true)
                .spawn()?,
        );
        if let Err(e) = wait_port(listen).await {
            let log = std::fs::read_to_string(prefix.join("stderr.log")).unwrap_or_default();
            anyhow::bail!("nginx did not start: {e}; its stderr: {log}");
        }
        // nginx's master forks one worker (worker_processes 1): RSS counts both.
        let master = nginx.0.id().unwrap_or(0);
        let (mut row, non_2xx) = run_wrk(listen, token, concurrency, dur).await?;
        let rss = rss_mib(master) + nginx_workers(master).into_iter().map(rss_mib).sum::<f64>();
        drop(nginx);
        row.name = name.into();
        row.rss_mib = rss;
        if non_2xx || row.rps == 0.0 {
            row.note = "NON-2XX ANSWERS: check the setup; ".into();
        }
        if with_authz {
            row.note.push_str(&format!(
                "{:.2}x g; nginx RSS (master + worker); hydra-authz: the f/f2 process",
                row.rps / plain_rps
            ));
        } else {
            plain_rps = row.rps;
            row.note.push_str("nginx RSS (master + worker)");
        }
        rows.push(row);
    }
    Ok(rows)
}

/// The pids of nginx's workers, children of `master`.
fn nginx_workers(master: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// An nginx master we started. Killing the master alone (SIGKILL, as
/// `kill_on_drop` does) leaves its workers running, so on drop the master
/// and each of its workers get SIGTERM by pid, then the master SIGKILL.
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let Some(master) = self.0.id() else { return };
        let mut pids = nginx_workers(master);
        pids.push(master);
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .args(pids.iter().map(u32::to_string))
            .stderr(Stdio::null())
            .status();
    }
}

/// A fresh P-256 PKCS#8 PEM private key, as `[upstream_jwt] key_file` wants.
fn p256_pem() -> anyhow::Result<String> {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use base64::Engine as _;
    let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .map_err(|_| anyhow::anyhow!("P-256 key generation failed"))?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    Ok(format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    ))
}

/// Whether one Check's allow carries the `x-identity-jwt` header (so b4
/// measures what it says).
async fn allow_has_identity_jwt(addr: SocketAddr, token: &str) -> anyhow::Result<bool> {
    use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
    let mut client = AuthorizationClient::connect(format!("http://{addr}")).await?;
    let resp = client.check(check_request(token)).await?.into_inner();
    Ok(match resp.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok
            .headers
            .iter()
            .any(|h| h.header.as_ref().is_some_and(|h| h.key == "x-identity-jwt")),
        _ => false,
    })
}

/// b4: cache hits with `[upstream_jwt]` on (ES256, a fresh key), at the
/// shipped log setting, compared with the floor (a) and plain cache hits (b).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn identity_jwt_row(
    dir: &Path,
    cache_on: &str,
    intro: &str,
    token: &str,
    concurrency: usize,
    dur: Duration,
    a_rps: f64,
    b_rps: f64,
) -> anyhow::Result<Row> {
    let key = dir.join("identity-jwt.pem");
    std::fs::write(&key, p256_pem()?)?;
    let extra = format!(
        "{cache_on}\n[upstream_jwt]\nenabled = true\nkey_file = \"{}\"",
        key.display()
    );
    let srv = spawn_authz(dir, "b4", &extra, intro).await?;
    let signed = allow_has_identity_jwt(srv.addr, token).await?;
    let (mut r, denied) = load_on(&srv, &[token.to_owned()], concurrency, dur, None).await?;
    r.name = format!(
        "b4. hydra-authz, cache hits + identity JWT ({})",
        LogSetting::SHIPPED.label()
    );
    r.note = format!(
        "{}{:.2}x a; {:.2}x b; ES256; one caller, so the JWT comes from the signer's cache (re-signed past half its ttl_s); {denied} non-allow",
        if signed { "" } else { "NO x-identity-jwt ON THE ALLOW: check the setup; " },
        r.rps / a_rps,
        r.rps / b_rps
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kit_rewrites_and_drops_only_auth_request() {
        let with = nginx_conf(18080, 18081, 19194, true).expect("kit");
        assert!(with.contains("listen 127.0.0.1:18080;"));
        assert!(with.contains("server 127.0.0.1:18081;"));
        assert!(with.contains("server 127.0.0.1:19194;"));
        assert!(with.contains("auth_request /_authz;"));
        let without = nginx_conf(18080, 18081, 19194, false).expect("kit");
        assert!(!without.contains("auth_request /_authz;"));
        // The variables the rest of the kit reads stay declared.
        assert!(without.contains("auth_request_set $authz_client_id"));
    }
}
