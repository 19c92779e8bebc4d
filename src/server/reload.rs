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
    /// Held from prepare to commit, so two reloads cannot interleave (one
    /// deciding against a config the other is replacing).
    reloading: tokio::sync::Mutex<()>,
    /// The gRPC listener's per-request timeout, fixed at start from the
    /// retry budget then: a reload may not give checks longer than that.
    request_timeout: Duration,
}

impl LiveEngine {
    /// Build the first engine from `config` (in `fleet`, if any).
    pub fn start(config: Config, metrics: Arc<Metrics>, fleet: Option<Arc<Fleet>>) -> anyhow::Result<LiveEngine> {
        let engine = crate::authorizer::build(&config, metrics.clone(), fleet.clone())?;
        let request_timeout = super::grpc_request_timeout(&config);
        Ok(LiveEngine {
            current: Arc::new(ArcSwap::new(engine)),
            config: Mutex::new(config),
            metrics,
            fleet,
            reloading: tokio::sync::Mutex::new(()),
            request_timeout,
        })
    }

    /// The configuration in effect: the last applied file's, with the
    /// restart-only sections as they were at start.
    pub fn running_config(&self) -> Config {
        self.config.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The handle services read from (one atomic load per check).
    pub fn handle(&self) -> Arc<ArcSwap<Authorizer<ServerAuthn>>> {
        self.current.clone()
    }

    /// Swap in an already validated config. Keeps the authenticator (its
    /// connection pool and cache) when `[introspection]` did not change.
    /// Refused while another reload is between its prepare and commit.
    pub fn apply(&self, new: Config) -> anyhow::Result<()> {
        let _one = self
            .reloading
            .try_lock()
            .map_err(|_| anyhow::anyhow!("another reload is in progress"))?;
        let next = self.prepare(new)?;
        self.commit(next);
        Ok(())
    }

    /// [`LiveEngine::apply`], but a new authenticator is swapped in only
    /// once it is as warm as one at start (its first key set fetch done,
    /// within [`WARM_WAIT`]): a reload that changes `[introspection]` must
    /// not make every replica unready at once, nor make its first checks
    /// pay for the fetch. One that cannot fetch its key set (a wrong
    /// `jwks_url`, the issuer down) is refused and the running engine
    /// stays: a reload never swaps a working verifier for one that can
    /// verify nothing.
    pub async fn apply_warm(&self, new: Config) -> anyhow::Result<()> {
        let _one = self.reloading.lock().await;
        let next = self.prepare(new)?;
        if next.fresh_stack {
            let verifier = crate::authorizer::verifier_of(&next.engine);
            let warm = async {
                while !verifier.prefetched() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            let timed_out = tokio::time::timeout(WARM_WAIT, warm).await.is_err();
            if timed_out || !verifier.has_keys() {
                anyhow::bail!(
                    "the new [introspection] could not fetch its key set{}: keeping the running configuration \
                     (the next change or SIGHUP tries again)",
                    if timed_out { " in time" } else { "" }
                );
            }
        }
        self.commit(next);
        Ok(())
    }

    /// The engine and config `new` would run as; nothing swapped yet.
    fn prepare(&self, new: Config) -> anyhow::Result<Next> {
        let config = self.config.lock().unwrap_or_else(PoisonError::into_inner);
        super::warn_about_cleartext_issuers(&new);
        // What runs from now on: the new file, except the sections that
        // cannot change without a restart, which stay as they run (so the
        // next reload still sees the difference, and nothing is recorded as
        // applied that is not).
        let (new, pending) = keep_restart_only(&config, new);
        // The file passed alone; what will run is checked as a whole, as at
        // start: a rule across sections (a claim header that the running
        // [forward_auth] reads as the original request) may fail only with
        // the running sections put back.
        new.validate().map_err(|e| {
            anyhow::anyhow!(
                "{e} (with the sections that need a restart as they run: {}); keeping the running configuration",
                if pending.is_empty() {
                    "none differ".to_string()
                } else {
                    pending.join(", ")
                }
            )
        })?;
        if !pending.is_empty() {
            // [forward_auth] and [cluster] included: their listener and
            // Redis connection are set up at start, so say so rather than
            // seem to apply them; said on every reload until a restart.
            tracing::warn!(
                sections = %pending.join(", "),
                "config reload: these sections differ from the running ones and take effect only after a restart"
            );
        }
        // tonic cancels a gRPC request past the timeout the listener was
        // built with; a larger retry budget would let checks run into it
        // and end as CANCELLED instead of as a decision.
        let needs = super::grpc_request_timeout(&new);
        if needs > self.request_timeout {
            anyhow::bail!(
                "introspection.resilience.retry_budget_ms = {} needs a restart: the gRPC listener's request \
                 timeout ({} ms) was set at start from a smaller budget (a reload may lower the budget, not raise \
                 it past that); keeping the running configuration",
                new.introspection.resilience.retry_budget_ms,
                self.request_timeout.as_millis()
            );
        }
        let fresh_stack = new.introspection != config.introspection;
        let engine = if fresh_stack {
            crate::authorizer::build(&new, self.metrics.clone(), self.fleet.clone())?
        } else {
            Arc::new(Authorizer::with_shared(
                &new,
                self.current.load().engine().shared_authenticator(),
            )?)
        };
        Ok(Next {
            config: new,
            engine,
            fresh_stack,
        })
    }

    /// Swap `next` in: checks from now on use it; those in flight keep theirs.
    fn commit(&self, next: Next) {
        let mut config = self.config.lock().unwrap_or_else(PoisonError::into_inner);
        self.current.store(next.engine);
        *config = next.config;
    }

    /// Load, validate and apply `path`; on any error the running config stays.
    pub fn reload_file(&self, path: &Path) -> anyhow::Result<()> {
        match std::fs::read(path) {
            Ok(bytes) => self.reload_bytes(path, &bytes),
            Err(e) => self.count_and_log(path, Err(anyhow::anyhow!("cannot read {}: {e}", path.display()))),
        }
    }

    /// Validate and apply what was read from `path`.
    pub fn reload_bytes(&self, path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
        let result = parse(path, bytes).and_then(|c| self.apply(c));
        self.count_and_log(path, result)
    }

    /// [`LiveEngine::reload_bytes`] with a new authenticator warmed first
    /// ([`LiveEngine::apply_warm`]): what the file watcher and SIGHUP do.
    pub async fn reload_bytes_warm(&self, path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
        let result = match parse(path, bytes) {
            Ok(c) => self.apply_warm(c).await,
            Err(e) => Err(e),
        };
        self.count_and_log(path, result)
    }

    pub(crate) fn count_and_log(&self, path: &Path, result: anyhow::Result<()>) -> anyhow::Result<()> {
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

/// A validated config and the engine built for it, not yet running.
struct Next {
    config: Config,
    engine: Arc<Authorizer<ServerAuthn>>,
    /// A new authenticator (`[introspection]` changed), not the running one's.
    fresh_stack: bool,
}

/// The longest a reload waits for a new authenticator to warm up.
pub const WARM_WAIT: Duration = Duration::from_secs(10);

/// The config in `bytes`, read from `path`. An empty file is refused: it
/// parses (every key has a default) as no rules at all, and is what a
/// reader sees while a file is being rewritten in place.
fn parse(path: &Path, bytes: &[u8]) -> anyhow::Result<Config> {
    match std::str::from_utf8(bytes) {
        Err(e) => Err(anyhow::anyhow!("{} is not UTF-8: {e}", path.display())),
        Ok(text) if text.trim().is_empty() => Err(anyhow::anyhow!(
            "{} is empty; a reload never falls back to the defaults",
            path.display()
        )),
        Ok(text) => Ok(Config::from_toml_str(text)?),
    }
}

/// The sections of `new` that differ from the running config's and are
/// read only at start.
pub fn restart_only_changes(running: &Config, new: &Config) -> Vec<&'static str> {
    keep_restart_only(running, new.clone()).1
}

/// `new` with every section read only at start put back as it runs, and
/// the names of those that differed: the one list of such sections.
fn keep_restart_only(running: &Config, mut new: Config) -> (Config, Vec<&'static str>) {
    let mut differ = Vec::new();
    macro_rules! keep {
        ($($section:ident),*) => {$(
            if new.$section != running.$section {
                differ.push(concat!("[", stringify!($section), "]"));
                new.$section = running.$section.clone();
            }
        )*};
    }
    keep!(server, log, telemetry, forward_auth, cluster);
    (new, differ)
}

/// SIGHUP, caught from the moment this is made. Made before the listeners
/// open: a SIGHUP sent as soon as the process looks ready then reloads it,
/// where the signal's default action would have ended it.
pub struct Hangups {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Hangups {
    pub fn catch() -> std::io::Result<Hangups> {
        Ok(Hangups {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?,
        })
    }
}

/// Reload `path` on SIGHUP and whenever its directory changes, until `stop`.
pub fn watch(
    live: Arc<LiveEngine>,
    path: PathBuf,
    hangups: Hangups,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
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
        let mut hup = hangups.signal;
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
            // Editors and ConfigMap updates come as bursts of events: settle first.
            tokio::time::sleep(SETTLE).await;
            while let Ok(f) = rx.try_recv() {
                forced |= f;
            }
            let now = match settled(&path, SETTLE, SETTLE_ROUNDS).await {
                Settled::Stable(bytes) => bytes,
                Settled::Unreadable => {
                    // Not read again now (it could be half-written by then):
                    // counted as a failed reload; the next change retries.
                    let why = anyhow::anyhow!("{} could not be read while it settled", path.display());
                    let _ = live.count_and_log(&path, Err(why));
                    continue;
                }
                Settled::StillChanging => {
                    tracing::warn!(path = %path.display(), "configuration file still changing; not reloaded (the next change or SIGHUP tries again)");
                    continue;
                }
            };
            if !forced && last.as_ref() == Some(&now) {
                continue; // an unrelated file in the directory changed
            }
            // A reload waiting for its key set gives way to shutdown;
            // nothing of it is applied until it commits.
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = live.reload_bytes_warm(&path, &now) => {}
            }
            last = Some(now);
        }
    });
    Ok(())
}

/// How long a configuration file must stay the same before it is applied.
const SETTLE: Duration = Duration::from_millis(200);

/// Reads of a changing file before a reload is given up (about 5 s).
const SETTLE_ROUNDS: usize = 25;

/// What [`settled`] found.
#[derive(Debug, PartialEq, Eq)]
enum Settled {
    /// The same bytes twice, `settle` apart.
    Stable(Vec<u8>),
    /// Gone or unreadable (a rename in progress, or for good).
    Unreadable,
    /// Different on every read.
    StillChanging,
}

/// The file's bytes once two reads `settle` apart agree: a file rewritten
/// in place (truncated, then written in steps) is applied once it stops
/// changing, not cut before a rule's `scopes` or the `required_audience`
/// that came after. A writer that pauses longer than `settle` mid-file can
/// still be read cut: replacing the file by a rename (as Kubernetes does)
/// is the safe way, and the README says so.
async fn settled(path: &Path, settle: Duration, rounds: usize) -> Settled {
    let Ok(mut seen) = std::fs::read(path) else {
        return Settled::Unreadable;
    };
    for _ in 0..rounds {
        tokio::time::sleep(settle).await;
        let Ok(again) = std::fs::read(path) else {
            return Settled::Unreadable;
        };
        if again == seen {
            return Settled::Stable(seen);
        }
        seen = again;
    }
    Settled::StillChanging
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paused() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime")
    }

    /// A writer that keeps writing in steps closer together than `settle`
    /// is waited for; what is applied is the finished file, never a step.
    #[test]
    fn a_file_is_read_once_it_stops_changing() {
        paused().block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("c.toml");
            std::fs::write(&path, "").expect("write");
            let steps = [
                "[[rules]]\n",
                "[[rules]]\nid = \"a\"\n",
                "[[rules]]\nid = \"a\"\nscopes = [\"x\"]\n",
            ];
            let writer = {
                let path = path.clone();
                tokio::spawn(async move {
                    for step in steps {
                        tokio::time::sleep(Duration::from_millis(150)).await;
                        std::fs::write(&path, step).expect("write");
                    }
                })
            };
            let got = settled(&path, Duration::from_millis(200), 10).await;
            writer.await.expect("writer");
            assert_eq!(got, Settled::Stable(steps[2].as_bytes().to_vec()));
        });
    }

    #[test]
    fn a_file_that_never_settles_or_is_gone_is_not_read() {
        paused().block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("c.toml");
            assert_eq!(settled(&path, SETTLE, 3).await, Settled::Unreadable);
            std::fs::write(&path, "0").expect("write");
            let writer = {
                let path = path.clone();
                tokio::spawn(async move {
                    for i in 1..=10 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        std::fs::write(&path, i.to_string()).expect("write");
                    }
                })
            };
            assert_eq!(settled(&path, SETTLE, 3).await, Settled::StillChanging);
            writer.abort();
        });
    }
}
