//! The edges: listeners, services and the process lifecycle.
//!
//! One gRPC port carries Envoy's `Authorization`, `grpc.health.v1.Health` and
//! our `Admin` API; one HTTP port carries `/healthz` and `/readyz`.

pub mod admin;
pub mod authz;
pub mod http;
pub mod reload;
pub mod tls;

use crate::admin_proto::admin_server::AdminServer;
use crate::authn::cache::SharedVerifier;
use crate::authn::instrumented::Instrumented;
use crate::authn::resilience::Resilient;
use crate::authn::verifier::Verifier;
use crate::config::{Config, VerifyMode};
use crate::decision::Engine;
use crate::metrics::Metrics;
use anyhow::Context;
use envoy_types::ext_authz::v3::pb::AuthorizationServer;
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
    pub readiness: Readiness,
    /// The running configuration; reload through it.
    pub live: Arc<reload::LiveEngine>,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Graceful stop: not ready, stop accepting, let in-flight checks finish.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await.context("server task panicked")?
    }

    /// Reload `path` on SIGHUP and when it changes on disk, until shutdown.
    pub fn watch_config(&self, path: std::path::PathBuf) -> anyhow::Result<()> {
        reload::watch(self.live.clone(), path, self.stop.subscribe())
    }

    /// Wait until the server stops by itself (it only does on error).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await.context("server task panicked")?
    }
}

/// The authenticator stack the server runs, outermost first: single-flight
/// and optional cache, then deadline/retries/breaker/concurrency bounds, then
/// per-attempt latency/error metrics, then introspection or local JWT
/// validation (per `introspection.mode`).
pub type ServerAuthn = SharedVerifier<Resilient<Instrumented<Verifier>>>;

/// Build the engine from config (reads secrets, compiles rules).
pub fn build_engine(config: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Arc<Engine<ServerAuthn>>> {
    let introspector = Instrumented::new(Verifier::new(&config.introspection)?, metrics.clone());
    let resilient = Resilient::new(introspector, &config.introspection.resilience, metrics.clone());
    let jwt_ttl = match config.introspection.mode {
        VerifyMode::Introspect => Duration::ZERO,
        VerifyMode::Jwt | VerifyMode::Auto => Duration::from_millis(config.introspection.jwt.verified_ttl_ms),
    };
    let shared = SharedVerifier::new(resilient, &config.introspection.cache, jwt_ttl, metrics);
    Ok(Arc::new(Engine::new(config, shared)?))
}

/// Bind both listeners (port 0 allowed) and serve until shut down.
pub async fn start(config: &Config) -> anyhow::Result<RunningServer> {
    let metrics = Arc::new(Metrics::new());
    let live = Arc::new(reload::LiveEngine::new(
        build_engine(config, metrics.clone())?,
        config.clone(),
        metrics.clone(),
    ));
    let engine = live.handle();
    let grpc = TcpListener::bind(config.server.grpc_addr)
        .await
        .with_context(|| format!("cannot bind server.grpc_addr {}", config.server.grpc_addr))?;
    let http = TcpListener::bind(config.server.http_addr)
        .await
        .with_context(|| format!("cannot bind server.http_addr {}", config.server.http_addr))?;
    let grpc_addr = grpc.local_addr()?;
    let http_addr = http.local_addr()?;
    let drain = Duration::from_millis(config.server.drain_timeout_ms);

    let readiness = Readiness::default();
    // `stop`: shutdown asked for; `close`: the listeners stop accepting
    // (after `shutdown_delay_ms` of reporting not ready).
    let (stop, stopped) = watch::channel(false);
    let (close, closed) = watch::channel(false);
    let delay = Duration::from_millis(config.server.shutdown_delay_ms);
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<AuthorizationServer<authz::AuthzService<ServerAuthn>>>()
        .await;

    let tls = tls::ReloadingTls::load(&config.server.tls)?;
    let router = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(AuthorizationServer::from_arc(Arc::new(authz::AuthzService::new(
            engine.clone(),
            metrics.clone(),
        ))))
        .add_service(AdminServer::new(admin::AdminService::new(engine.clone())));
    let grpc_server: std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> = match tls {
        Some(tls) => {
            Box::pin(router.serve_with_incoming_shutdown(tls.incoming(grpc, closed.clone()), wait_for(closed.clone())))
        }
        None => Box::pin(router.serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true)),
            wait_for(closed.clone()),
        )),
    };
    let http_server = axum::serve(http, http::router(readiness.clone(), metrics.clone(), engine))
        .with_graceful_shutdown(wait_for(closed));

    let ready = readiness.clone();
    let task = tokio::spawn(async move {
        let grpc_task = tokio::spawn(grpc_server);
        let http_task = tokio::spawn(async move { http_server.await });
        ready.set(true);
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        tracing::info!(%grpc_addr, %http_addr, workers, "hydra-authz listening");

        let mut stopped = stopped;
        let _ = stopped.wait_for(|s| *s).await;
        // Readiness first: probes and Envoy's health checks see us going
        // while we still serve, so they stop sending before we stop accepting.
        ready.set(false);
        health
            .set_not_serving::<AuthorizationServer<authz::AuthzService<ServerAuthn>>>()
            .await;
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
            let h = http_task.await;
            (g, h)
        })
        .await;
        match drained {
            Ok((g, h)) => {
                g.context("gRPC server panicked")?.context("gRPC server failed")?;
                h.context("HTTP server panicked")?.context("HTTP server failed")?;
                tracing::info!("shutdown complete");
            }
            Err(_) => tracing::warn!("drain timeout reached; abandoning remaining connections"),
        }
        Ok(())
    });
    Ok(RunningServer {
        grpc_addr,
        http_addr,
        readiness,
        live,
        stop,
        task,
    })
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
