//! Hot reload: a new config is loaded and validated completely, then the
//! engine is swapped atomically. Checks in flight keep the engine they
//! started with; a bad file changes nothing but a log line and a counter.
//!
//! Triggers: SIGHUP, and changes in the config file's directory (which also
//! catches Kubernetes ConfigMap updates, done by swapping a symlink).

use crate::authn::fleet::Fleet;
use crate::authorizer::{Authorizer, ServerAuthn};
use crate::config::Config;
use crate::metrics::{Metrics, ResultLabels};
use arc_swap::ArcSwap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

pub struct LiveEngine {
    current: Arc<ArcSwap<Authorizer<ServerAuthn>>>,
    config: Mutex<Config>,
    metrics: Arc<Metrics>,
    /// Started once (`[cluster]` is read at start); every rebuilt stack joins it.
    fleet: Option<Arc<Fleet>>,
}

impl LiveEngine {
    /// Build the first engine from `config` (in `fleet`, if any).
    pub fn start(config: Config, metrics: Arc<Metrics>, fleet: Option<Arc<Fleet>>) -> anyhow::Result<LiveEngine> {
        let engine = crate::authorizer::build(&config, metrics.clone(), fleet.clone())?;
        Ok(LiveEngine {
            current: Arc::new(ArcSwap::new(engine)),
            config: Mutex::new(config),
            metrics,
            fleet,
        })
    }

    /// The handle services read from (one atomic load per check).
    pub fn handle(&self) -> Arc<ArcSwap<Authorizer<ServerAuthn>>> {
        self.current.clone()
    }

    /// Swap in an already validated config. Keeps the authenticator (its
    /// connection pool and cache) when `[introspection]` did not change.
    pub fn apply(&self, new: Config) -> anyhow::Result<()> {
        let mut config = self.config.lock().unwrap_or_else(PoisonError::into_inner);
        if new.server != config.server
            || new.log != config.log
            || new.telemetry != config.telemetry
            || new.forward_auth != config.forward_auth
            || new.cluster != config.cluster
        {
            // [forward_auth] and [cluster] included: their listener and
            // Redis connection are set up at start, so say so rather than
            // seem to apply them.
            tracing::warn!(
                "config reload: [server], [log], [telemetry], [forward_auth] and [cluster] changes take effect after a restart"
            );
        }
        let engine = if new.introspection == config.introspection {
            Arc::new(Authorizer::with_shared(
                &new,
                self.current.load().engine().shared_authenticator(),
            )?)
        } else {
            crate::authorizer::build(&new, self.metrics.clone(), self.fleet.clone())?
        };
        self.current.store(engine);
        *config = new;
        Ok(())
    }

    /// Load, validate and apply `path`; on any error the running config stays.
    pub fn reload_file(&self, path: &Path) -> anyhow::Result<()> {
        let result = Config::load(path)
            .map_err(anyhow::Error::from)
            .and_then(|c| self.apply(c));
        let label = if result.is_ok() { "success" } else { "error" };
        self.metrics
            .config_reloads
            .get_or_create(&ResultLabels { result: label })
            .inc();
        match &result {
            Ok(()) => tracing::info!(path = %path.display(), "configuration reloaded"),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %format!("{e:#}"), "configuration reload failed; keeping the running configuration")
            }
        }
        result
    }
}

/// Reload `path` on SIGHUP and whenever its directory changes, until `stop`.
pub fn watch(live: Arc<LiveEngine>, path: PathBuf, mut stop: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<()> {
    use notify::Watcher;
    // `true`: an explicit SIGHUP, which reloads even an unchanged file.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let file_tx = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = file_tx.send(false);
        }
    })?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
    #[cfg(unix)]
    {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let _ = tx.send(true);
            }
        });
    }
    tokio::spawn(async move {
        let _watcher = watcher; // dropped (and unwatched) when this task ends
        let mut last = std::fs::read(&path).ok();
        loop {
            let mut forced = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                got = rx.recv() => match got { Some(f) => f, None => return },
            };
            // Editors and ConfigMap updates come as bursts of events: settle, then read once.
            tokio::time::sleep(Duration::from_millis(200)).await;
            while let Ok(f) = rx.try_recv() {
                forced |= f;
            }
            let now = std::fs::read(&path).ok();
            if !forced && now.is_some() && now == last {
                continue; // an unrelated file in the directory changed
            }
            last = now;
            let _ = live.reload_file(&path);
        }
    });
    Ok(())
}
