//! A value built from files that may change while we run (cert-manager
//! renews certificates; Kubernetes swaps a mounted Secret's files): the
//! files are re-read on a timer and the value rebuilt when their bytes
//! changed. A change that does not build is logged and the working value
//! stays: a renewal mistake must not take a listener or a client down.

use anyhow::Context;
use arc_swap::ArcSwap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

type Build<T> = Box<dyn Fn(&[Vec<u8>]) -> anyhow::Result<T> + Send + Sync>;

pub struct FileBacked<T> {
    /// Config section, for log lines (e.g. `server.tls`).
    what: &'static str,
    /// Each file with the config key that names it, for errors.
    files: Vec<(PathBuf, String)>,
    build: Build<T>,
    current: ArcSwap<T>,
    /// SHA-256 over the files' bytes when `current` was built.
    loaded: Mutex<[u8; 32]>,
}

impl<T: Send + Sync + 'static> FileBacked<T> {
    /// Read `files` and build the first value (errors name the config key).
    pub fn new(
        what: &'static str,
        files: Vec<(PathBuf, String)>,
        build: impl Fn(&[Vec<u8>]) -> anyhow::Result<T> + Send + Sync + 'static,
    ) -> anyhow::Result<Arc<FileBacked<T>>> {
        let bytes = read(&files)?;
        let value = build(&bytes)?;
        Ok(Arc::new(FileBacked {
            what,
            files,
            build: Box::new(build),
            current: ArcSwap::from_pointee(value),
            loaded: Mutex::new(digest(&bytes)),
        }))
    }

    /// The value to use now.
    pub fn get(&self) -> Arc<T> {
        self.current.load_full()
    }

    /// Re-read the files; `Ok(true)` when a new value is now in use.
    pub fn reload_if_changed(&self) -> anyhow::Result<bool> {
        let bytes = read(&self.files)?;
        let digest = digest(&bytes);
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if *loaded == digest {
            return Ok(false);
        }
        self.current.store(Arc::new((self.build)(&bytes)?));
        *loaded = digest;
        Ok(true)
    }

    /// Re-read every `every` from a background task (when a runtime is
    /// running), until the last owner drops this value.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak: Weak<Self> = Arc::downgrade(self);
        rt.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // immediate: the files were just read
            loop {
                tick.tick().await;
                let Some(me) = weak.upgrade() else { return };
                match me.reload_if_changed() {
                    Ok(true) => tracing::info!("{}: changed files loaded", me.what),
                    Ok(false) => {}
                    Err(e) => tracing::warn!("{}: keeping the current files: {e:#}", me.what),
                }
            }
        });
    }
}

fn read(files: &[(PathBuf, String)]) -> anyhow::Result<Vec<Vec<u8>>> {
    files
        .iter()
        .map(|(path, key)| std::fs::read(path).with_context(|| format!("{key} {}", path.display())))
        .collect()
}

fn digest(parts: &[Vec<u8>]) -> [u8; 32] {
    let mut h = crate::sha256::Hasher::default();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each part is framed by its length, so ["a", "bc"] and ["ab", "c"]
    /// differ; the value is SHA-256 (Python's hashlib) of the framed bytes.
    #[test]
    fn the_digest_frames_each_part() {
        let d = digest(&[b"a".to_vec(), b"bc".to_vec()]);
        assert_eq!(
            hex::encode(d),
            "3fafa1cf2f19a7c1129beb20cf0983f73a489a221fc0dd2f16d1be292d089205"
        );
        assert_ne!(d, digest(&[b"ab".to_vec(), b"c".to_vec()]));
    }

    #[test]
    fn rebuilds_only_on_change_and_keeps_the_last_good_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("n");
        std::fs::write(&path, "1").expect("write");
        let parse = |b: &[Vec<u8>]| -> anyhow::Result<u32> { Ok(std::str::from_utf8(&b[0])?.trim().parse()?) };
        let v = FileBacked::new("test", vec![(path.clone(), "test.file".into())], parse).expect("builds");
        assert_eq!(*v.get(), 1);
        assert!(!v.reload_if_changed().expect("same bytes"));
        std::fs::write(&path, "2").expect("write");
        assert!(v.reload_if_changed().expect("changed"));
        assert_eq!(*v.get(), 2);
        std::fs::write(&path, "two").expect("write");
        assert!(v.reload_if_changed().is_err(), "does not build");
        assert_eq!(*v.get(), 2, "the working value stays");
        std::fs::remove_file(&path).expect("rm");
        let e = v.reload_if_changed().expect_err("missing file").to_string();
        assert!(e.contains("test.file"), "{e}");
    }
}
