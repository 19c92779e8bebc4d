//! The edges: listeners, services and the process lifecycle.
//!
//! The Check port carries Envoy's `Authorization` and `grpc.health.v1.Health`;
//! the admin port (only with credentials) our `Admin` API; the HTTP port
//! `/healthz`, `/readyz` and `/metrics`. Every listener accepts through
//! [`listener`], which bounds connections and closes silent ones.

pub mod admin;
pub mod authz;
mod body_budget;
pub(crate) mod decision_event;
pub mod forward_auth;
pub mod http;
pub mod listener;
pub mod reload;
pub mod tls;

use crate::admin_proto::admin_server::AdminServer;
use crate::config::Config;
use crate::metrics::Metrics;
use anyhow::Context;
use authz::AuthorizationServer;
use http::Readiness;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A started server. Dropping it does not stop it; call [`RunningServer::shutdown`].
pub struct RunningServer {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// `None` when the admin API is off (no credentials configured).
    pub admin_addr: Option<SocketAddr>,
    /// `None` unless `[forward_auth] addr` is set.
    pub forward_auth_addr: Option<SocketAddr>,
    pub readiness: Readiness,
    /// The running configuration; reload through it.
    pub live: Arc<reload::LiveEngine>,
    stop: watch::Sender<bool>,
    /// `None` once [`RunningServer::wait`] has seen it end.
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl RunningServer {
    /// Graceful stop: not ready, stop accepting, let in-flight checks
    /// finish. After [`RunningServer::wait`] returned, nothing is left to
    /// stop (and its result was that one).
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        match self.task {
            Some(task) => task.await.context("server task panicked")?,
            None => Ok(()),
        }
    }

    /// Reload `path` on SIGHUP (caught since `hangups` was made) and when
    /// it changes on disk, until shutdown.
    pub fn watch_config(&self, path: std::path::PathBuf, hangups: reload::Hangups) -> anyhow::Result<()> {
        reload::watch(self.live.clone(), path, hangups, self.stop.subscribe())
    }

    /// Wait until the server stops by itself (it only does on error).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        let Some(task) = self.task.as_mut() else {
            return Ok(());
        };
        let ended = task.await;
        self.task = None;
        ended.context("server task panicked")?
    }
}

pub use crate::authorizer::ServerAuthn;

/// Connections one peer outside `forward_auth.trusted_proxies` may hold
/// open on the forward-auth listener (each is answered 400).
pub const UNTRUSTED_FORWARD_AUTH_CONNECTIONS: usize = 8;

/// Bind the listeners (port 0 allowed) and serve until shut down.
pub async fn start(config: &Config) -> anyhow::Result<RunningServer> {
    let metrics = Arc::new(Metrics::new());
    let fleet = crate::authn::fleet::Fleet::start(&config.cluster, metrics.clone())?;
    let live = Arc::new(reload::LiveEngine::start(
        config.clone(),
        metrics.clone(),
        fleet.clone(),
    )?);
    let engine = live.handle();
    if let Some(fleet) = &fleet {
        // Purges from the fleet go to whichever engine is current (a reload
        // may have swapped the cache); weak, so the fleet does not keep
        // the engine alive after shutdown.
        let current = Arc::downgrade(&engine);
        fleet.on_purge(move |target| {
            if let Some(engine) = current.upgrade() {
                crate::authn::cache::Purge::purge(engine.load().engine().authenticator(), target);
            }
        });
    }
    warn_about_cleartext_issuers(config);
    let server = &config.server;
    let limits = &server.limits;
    let bind = |addr: SocketAddr, key: &'static str| async move {
        TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot bind {key} {addr}"))
    };
    let grpc = bind(server.grpc_addr, "server.grpc_addr").await?;
    let http = bind(server.http_addr, "server.http_addr").await?;
    let admin = match server.admin_enabled() {
        true => Some(bind(server.admin_addr, "server.admin_addr").await?),
        false => None,
    };
    let forward = match server_forward_addr(config) {
        Some(addr) => Some(bind(addr, "forward_auth.addr").await?),
        None => None,
    };
    let forward_auth_addr = forward.as_ref().map(TcpListener::local_addr).transpose()?;
    let grpc_addr = grpc.local_addr()?;
    let http_addr = http.local_addr()?;
    let admin_addr = admin.as_ref().map(TcpListener::local_addr).transpose()?;
    let drain = Duration::from_millis(server.drain_timeout_ms);

    let readiness = Readiness::default();
    // `stop`: shutdown asked for; `close`: the listeners stop accepting
    // (after `shutdown_delay_ms` of reporting not ready).
    let (stop, stopped) = watch::channel(false);
    let (close, closed) = watch::channel(false);
    let delay = Duration::from_millis(server.shutdown_delay_ms);
    let (health, health_service) = tonic_health::server::health_reporter();
    // Not SERVING before the verifier is warm (the first key set in jwt and
    // auto mode); the watchdog below keeps it in step from then on.
    let warm = http::warmed_up(&engine.load_full());
    http::set_health(&health, warm).await;

    let tls = tls::ReloadingTls::load(&server.tls)?;
    // The Check port: Envoy's Authorization and gRPC health, nothing else.
    let request_timeout = grpc_request_timeout(config);
    // The health service's requests are a service name: tonic's default
    // 4 MiB per message would let one connection hold gigabytes.
    let health_service = health_service.max_decoding_message_size(MAX_HEALTH_MESSAGE_BYTES);
    // And all streams of the listener together: bounded memory whatever
    // the peers do (5 bytes: the gRPC message prefix).
    let budget = body_budget::Budget::new(body_budget::MAX_BUFFERED_CHECK_BYTES, &metrics.request_bodies_refused);
    let router = grpc_builder(limits, request_timeout)
        .add_service(budget.wrap(health_service, MAX_HEALTH_MESSAGE_BYTES + 5))
        .add_service(
            budget.wrap(
                AuthorizationServer::from_arc(Arc::new(authz::AuthzService::new(engine.clone(), metrics.clone())))
                    // Envoy's own header limit is 60 KiB; tonic's default would take 4 MiB per message.
                    .max_decoding_message_size(MAX_CHECK_MESSAGE_BYTES),
                MAX_CHECK_MESSAGE_BYTES + 5,
            ),
        );
    let grpc_server = serve_grpc(router, grpc, tls, limits, closed.clone(), "grpc");

    let admin_server = match admin {
        Some(listener) => {
            let auth = admin::AdminAuth::from_config(server)?;
            auth.watch(server, Duration::from_millis(server.tls.reload_interval_ms.max(100)));
            if server.tls.cert_file.is_none() && !server.admin_addr.ip().is_loopback() {
                tracing::warn!(admin_addr = %server.admin_addr, "admin API without TLS on a non-loopback address: the bearer token crosses the network in clear unless the mesh encrypts it; set [server.tls]");
            }
            // TLS whenever [server.tls] has a certificate, so a bearer token
            // never crosses the network in clear; client certificates only
            // from the admin CA (Envoy's client CA grants no admin rights).
            if let (Some(admin_ca), Some(envoy_ca)) = (&server.admin_client_ca_file, &server.tls.client_ca_file) {
                // The same CA under two names, or inside a bundle: validation
                // sees only the paths.
                if tls::shares_a_certificate(admin_ca, envoy_ca) {
                    anyhow::bail!(
                        "server.admin_client_ca_file holds the same CA as server.tls.client_ca_file: every client \
                         Envoy's CA signs would be an administrator; give the admin API its own CA"
                    );
                }
            }
            let admin_tls = tls::ReloadingTls::load(&crate::config::ServerTls {
                client_ca_file: server.admin_client_ca_file.clone(),
                ..server.tls.clone()
            })?;
            let router = grpc_builder(limits, request_timeout).add_service(AdminServer::with_interceptor(
                admin::AdminService::new(engine.clone(), fleet.clone()),
                auth,
            ));
            Some(serve_grpc(router, listener, admin_tls, limits, closed.clone(), "admin"))
        }
        None => {
            tracing::info!(
                "admin API off: set server.admin_token_file, admin_token_env or admin_client_ca_file to serve it"
            );
            None
        }
    };

    let http_incoming = listener::incoming(
        "http",
        http,
        limits,
        (limits.http_max_connections_per_peer > 0)
            .then(|| listener::PerPeer::new(limits.http_max_connections_per_peer)),
        closed.clone(),
        listener::first_bytes,
    );
    let http_server = listener::serve_http1(
        http_incoming,
        http::router(readiness.clone(), metrics.clone(), engine.clone()),
        Duration::from_millis(limits.header_read_timeout_ms),
    );

    for warning in forward_auth_warnings(config) {
        tracing::warn!("{warning}");
    }
    let forward_server = forward.map(|listener| {
        // A peer outside trusted_proxies only ever gets 400: a few
        // connections each, so no one holds the listener's memory (each
        // unfinished request head may buffer up to 128 KiB). The proxies
        // themselves carry every client's checks: not capped.
        let trusted = config.forward_auth.clone();
        let per_peer = listener::PerPeer::new(UNTRUSTED_FORWARD_AUTH_CONNECTIONS).except(move |ip| trusted.trusts(ip));
        let incoming = listener::incoming(
            "forward_auth",
            listener,
            limits,
            Some(per_peer),
            closed.clone(),
            listener::first_bytes,
        );
        listener::serve_http1(
            incoming,
            forward_auth::router(engine.clone(), metrics.clone(), config.forward_auth.clone()),
            Duration::from_millis(limits.header_read_timeout_ms),
        )
    });

    if let Some(fleet) = fleet {
        // Ends with the listeners (it watches `close`).
        crate::authn::fleet::subscriber::spawn(fleet, closed.clone());
    }
    let ready = readiness.clone();
    let task = tokio::spawn(async move {
        // Each listener's task says when it ends, however it ends (a panic
        // too: the notice is dropped with the task).
        let (ended_tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
        let notice = |name| EndNotice(name, ended_tx.clone());
        let grpc_task = tokio::spawn(until_end(notice("grpc"), grpc_server));
        let forward_task = forward_server.map(|f| tokio::spawn(until_end(notice("forward_auth"), f)));
        let admin_task = admin_server.map(|a| tokio::spawn(until_end(notice("admin"), a)));
        let http_task = tokio::spawn(until_end(notice("http"), http_server));
        drop(ended_tx);
        ready.set(true);
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        tracing::info!(%grpc_addr, %http_addr, admin_addr = ?admin_addr, forward_auth_addr = ?forward_auth_addr, workers, "hydra-authz listening");
        // gRPC health follows the same verdict as /readyz.
        let watchdog = tokio::spawn(http::watch_health(ready.clone(), engine, health.clone(), warm));

        let died = serving_until(stopped, &mut ended).await;
        if let Some(listener) = died {
            // A door that closed by itself would leave the process looking
            // alive to every probe while Envoy's checks fail: stop all of
            // it, and exit with an error so the orchestrator restarts us.
            tracing::error!(listener, "a listener stopped while serving: shutting down");
        }
        watchdog.abort();
        // Readiness first: probes and Envoy's health checks see us going
        // while we still serve, so they stop sending before we stop accepting.
        ready.set(false);
        http::set_health(&health, false).await;
        if !delay.is_zero() {
            tracing::info!(
                shutdown_delay_ms = delay.as_millis() as u64,
                "shutting down: not ready, still serving"
            );
            tokio::time::sleep(delay).await;
        }
        let _ = close.send(true);
        tracing::info!(
            drain_timeout_ms = drain.as_millis() as u64,
            "shutting down: listeners closed, draining in-flight checks"
        );
        let drained = tokio::time::timeout(drain, async {
            let g = grpc_task.await;
            let a = match admin_task {
                Some(t) => Some(t.await),
                None => None,
            };
            let h = http_task.await;
            let f = match forward_task {
                Some(t) => Some(t.await),
                None => None,
            };
            (g, a, h, f)
        })
        .await;
        match drained {
            Ok((g, a, h, f)) => {
                if let Some(f) = f {
                    f.context("forward-auth server panicked")?;
                }
                g.context("gRPC server panicked")?.context("gRPC server failed")?;
                if let Some(a) = a {
                    a.context("admin server panicked")?.context("admin server failed")?;
                }
                h.context("HTTP server panicked")?;
                tracing::info!("shutdown complete");
            }
            Err(_) => tracing::warn!("drain timeout reached; abandoning remaining connections"),
        }
        match died {
            Some(listener) => Err(anyhow::anyhow!("the {listener} listener stopped while serving")),
            None => Ok(()),
        }
    });
    Ok(RunningServer {
        grpc_addr,
        http_addr,
        admin_addr,
        forward_auth_addr,
        readiness,
        live,
        stop,
        task: Some(task),
    })
}

/// Sent (the listener's name) when dropped: with its task's future, so
/// whether that ends, fails or panics.
struct EndNotice(&'static str, tokio::sync::mpsc::UnboundedSender<&'static str>);

impl Drop for EndNotice {
    fn drop(&mut self) {
        let _ = self.1.send(self.0);
    }
}

async fn until_end<T>(notice: EndNotice, serve: impl Future<Output = T>) -> T {
    let _notice = notice;
    serve.await
}

/// Until shutdown is asked for (`None`), or until a listener ends first
/// (its name): before shutdown none of them may.
async fn serving_until(
    mut stopped: watch::Receiver<bool>,
    ended: &mut tokio::sync::mpsc::UnboundedReceiver<&'static str>,
) -> Option<&'static str> {
    tokio::select! {
        biased;
        _ = stopped.wait_for(|s| *s) => None,
        // `None` only once every notice is gone, which is an end too.
        name = ended.recv() => Some(name.unwrap_or("every")),
    }
}

/// At start and on every reload that applies a config.
pub(crate) fn warn_about_cleartext_issuers(config: &Config) {
    for key in config.cleartext_issuer_urls() {
        tracing::warn!(
            key,
            "issuer URL is plain http to a non-loopback host: tokens (introspection) or the keys that verify them \
             (JWKS) cross the network in clear unless the mesh encrypts it; use https"
        );
    }
}

/// What an operator must do around the forward-auth door that hydra-authz
/// cannot do itself (said at start).
fn forward_auth_warnings(config: &Config) -> Vec<String> {
    let Some(addr) = config.forward_auth.addr else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if !addr.ip().is_loopback() {
        // Every caller's bearer token crosses this hop.
        out.push(format!(
            "forward-auth listens on {addr}, off loopback, without TLS: every request's bearer token and cookies \
             cross the network in clear unless the mesh encrypts it (keep it on loopback beside the proxy, or \
             behind mTLS)"
        ));
    }
    if config.headers.strip_authorization {
        // Only Envoy and Istio apply x-envoy-auth-headers-to-remove.
        out.push(
            "forward-auth: headers.strip_authorization reaches the upstream only through Envoy or Istio; behind \
             nginx, Caddy or Traefik clear Authorization in the proxy after the check (README, forward-auth)"
                .to_owned(),
        );
    }
    let mut extra: Vec<&str> = config.headers.claims.keys().map(String::as_str).collect();
    if config.upstream_jwt.enabled {
        extra.push(&config.upstream_jwt.header);
    }
    if !extra.is_empty() {
        // A forward-auth answer cannot make a proxy drop a header it sets
        // itself; client copies of these are the proxy's to clear.
        out.push(format!(
            "forward-auth: make your proxy clear client-sent copies of these headers and copy them from the answer \
             (the shipped kits list only x-client-id, x-scopes, x-subject): {}",
            extra.join(",")
        ));
    }
    out
}

fn server_forward_addr(config: &Config) -> Option<SocketAddr> {
    config.forward_auth.addr
}

/// A CheckRequest larger than this is refused before it is decoded; our own
/// header limits (`extract`) are 96 KiB.
const MAX_CHECK_MESSAGE_BYTES: usize = 256 * 1024;

/// A `grpc.health.v1` request larger than this is refused (it holds a
/// service name).
const MAX_HEALTH_MESSAGE_BYTES: usize = 4 * 1024;

/// The longest one gRPC request may take, from its headers to our answer:
/// as long as a request's headers may take to arrive, plus twice the budget
/// a check has to decide in (a check that joins another's introspection
/// may wait for it first), plus three Redis round trips (a shared-cache
/// lookup; an admin purge's epoch step, delete and publish); as configured
/// at start (a reload may lower the budget, not raise it past this). Past
/// it tonic answers CANCELLED and resets the stream: a peer that sends part
/// of a message and holds it (with the buffer it fills) cannot keep it past
/// this. A connection past `grpc_max_connection_age_ms`
/// is closed this long after its GOAWAY even with streams open (a health
/// Watch never ends on its own).
pub(super) fn grpc_request_timeout(config: &Config) -> Duration {
    let ms = config
        .server
        .limits
        .header_read_timeout_ms
        .saturating_add(config.introspection.resilience.retry_budget_ms.saturating_mul(2))
        .saturating_add(config.cluster.timeout_ms.saturating_mul(3));
    Duration::from_millis(ms)
}

/// A gRPC server with the per-connection limits of `[server.limits]`.
fn grpc_builder(limits: &crate::config::ListenerLimits, request_timeout: Duration) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .timeout(request_timeout)
        .max_concurrent_streams(Some(limits.grpc_max_concurrent_streams))
        .max_connection_age(Duration::from_millis(limits.grpc_max_connection_age_ms))
        .max_connection_age_grace(request_timeout)
        .http2_keepalive_interval(Some(Duration::from_millis(limits.grpc_keepalive_interval_ms)))
        .http2_keepalive_timeout(Some(Duration::from_millis(limits.grpc_keepalive_timeout_ms)))
}

type ServeFuture = std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;

/// Serve `router` on `listener` through the guarded acceptor, with TLS when given.
fn serve_grpc(
    router: tonic::transport::server::Router,
    listener: TcpListener,
    tls: Option<Arc<tls::ReloadingTls>>,
    limits: &crate::config::ListenerLimits,
    closed: watch::Receiver<bool>,
    name: &'static str,
) -> ServeFuture {
    let shutdown = wait_for(closed.clone());
    match tls {
        Some(tls) => Box::pin(router.serve_with_incoming_shutdown(
            listener::incoming(name, listener, limits, None, closed, tls.handshake()),
            shutdown,
        )),
        None => Box::pin(router.serve_with_incoming_shutdown(
            listener::incoming(name, listener, limits, None, closed, listener::h2_preface),
            shutdown,
        )),
    }
}

async fn wait_for(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

/// Installs the SIGTERM and SIGINT handlers now and returns a future that
/// resolves on either. Call it before serving: a signal that arrives before
/// the future is awaited is then kept, not the default "terminate at once".
pub fn termination_signal() -> std::io::Result<impl Future<Output = ()> + Send> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{forward_auth_warnings, serving_until, until_end, EndNotice};
    use tokio::sync::{mpsc, watch};

    /// What the proxy must do that hydra-authz cannot is said at start:
    /// cleartext tokens off loopback, and a strip only Envoy applies.
    #[test]
    fn the_forward_auth_door_says_what_the_proxy_must_do() {
        let mut c = crate::config::Config::default();
        assert!(forward_auth_warnings(&c).is_empty(), "door off: nothing to say");
        c.forward_auth.addr = Some(([127, 0, 0, 1], 9194).into());
        assert!(forward_auth_warnings(&c).is_empty(), "loopback, nothing to strip");
        c.forward_auth.addr = Some(([0, 0, 0, 0], 9194).into());
        c.headers.strip_authorization = true;
        let w = forward_auth_warnings(&c);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("off loopback") && w[0].contains("in clear"), "{w:?}");
        assert!(w[1].contains("strip_authorization") && w[1].contains("nginx"), "{w:?}");
        c.headers.claims.insert("x-tenant".into(), "ext.tenant".into());
        assert!(forward_auth_warnings(&c)[2].ends_with("x-tenant"));
    }

    #[tokio::test]
    async fn a_listener_that_ends_or_panics_before_shutdown_is_noticed() {
        let (_keep, stopped) = watch::channel(false);
        let (tx, mut ended) = mpsc::unbounded_channel();
        tokio::spawn(until_end(EndNotice("grpc", tx.clone()), async {}));
        assert_eq!(serving_until(stopped.clone(), &mut ended).await, Some("grpc"));
        tokio::spawn(until_end(EndNotice("http", tx.clone()), async {
            panic!("a listener panics")
        }));
        assert_eq!(serving_until(stopped.clone(), &mut ended).await, Some("http"));

        // Still serving when shutdown is asked for: no listener died.
        let (stop, stopped) = watch::channel(false);
        let serving = tokio::spawn(until_end(EndNotice("admin", tx), std::future::pending::<()>()));
        let _ = stop.send(true);
        assert_eq!(serving_until(stopped, &mut ended).await, None);
        // Ending it (as shutdown does) is seen too, were anyone to ask.
        serving.abort();
        assert_eq!(ended.recv().await, Some("admin"));
    }
}
