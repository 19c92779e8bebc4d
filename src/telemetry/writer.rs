//! The log queue: a line costs the request path one `try_send` into a
//! bounded queue; one writer thread batches lines into a buffer and writes
//! them out.
//!
//! Why not `tracing-appender`'s non-blocking writer (used until
//! 2026-11-30): its worker blocks in `recv` and flushes whenever the queue
//! is empty, so at a few thousand checks per second every line woke the
//! worker (a futex call) and cost a `write(2)` of its own: the syscall per
//! line moved to another thread but stayed on the same two cores. This
//! writer wakes on a timer while lines keep coming ([`FLUSH_INTERVAL`]),
//! so a busy server pays one wake-up and one write per interval; it sleeps
//! untimed while nothing is logged (the first line wakes it) and is woken
//! early when the queue is half full.
//!
//! When the queue is full, or the output fails, lines are dropped and
//! counted (`hydra_authz_log_lines_dropped_total`): a slow or dead log sink
//! never slows or stops checks. Dropping the [`LogWriterGuard`] writes
//! every queued line and flushes, waiting at most [`SHUTDOWN_WAIT`] for a
//! blocked output.

use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::Thread;
use std::time::Duration;

/// How long a line may wait in the queue while the server is busy.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(10);

/// The longest shutdown waits for the output to take the queued lines.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// The writing side, cloned into the log layer; `&LogWriter` is what each
/// event writes to (no clone per line).
#[derive(Clone)]
pub struct LogWriter {
    tx: Sender<Vec<u8>>,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    dropped: AtomicU64,
    /// Set by the writer before it sleeps untimed; the next line wakes it.
    idle: AtomicBool,
    stop: AtomicBool,
    capacity: usize,
    thread: Thread,
}

/// Flushes every queued line when dropped (at shutdown).
#[derive(Debug)]
pub struct LogWriterGuard {
    shared: Arc<Shared>,
    done: std::sync::mpsc::Receiver<()>,
}

impl LogWriter {
    /// A queue of `capacity` lines in front of `out`, and its writer thread.
    pub fn new<W: Write + Send + 'static>(out: W, capacity: usize) -> std::io::Result<(LogWriter, LogWriterGuard)> {
        let capacity = capacity.max(1);
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let (done_tx, done) = std::sync::mpsc::channel();
        let (thread_tx, thread_rx) = std::sync::mpsc::channel::<Arc<Shared>>();
        let handle = std::thread::Builder::new()
            .name("hydra-authz-log".into())
            .spawn(move || {
                // The shared state names this thread, so it arrives after the spawn.
                if let Ok(shared) = thread_rx.recv() {
                    write_lines(rx, std::io::BufWriter::with_capacity(64 * 1024, out), &shared);
                }
                let _ = done_tx.send(());
            })?;
        let shared = Arc::new(Shared {
            dropped: AtomicU64::new(0),
            idle: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            capacity,
            thread: handle.thread().clone(),
        });
        thread_tx
            .send(shared.clone())
            .map_err(|_| std::io::Error::other("the log writer thread ended before it started"))?;
        Ok((
            LogWriter {
                tx,
                shared: shared.clone(),
            },
            LogWriterGuard { shared, done },
        ))
    }

    /// Lines dropped so far (queue full or output failing).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

fn write_lines<W: Write>(rx: Receiver<Vec<u8>>, mut out: std::io::BufWriter<W>, shared: &Shared) {
    loop {
        let stopping = shared.stop.load(Ordering::SeqCst);
        let mut wrote = false;
        while let Ok(line) = rx.try_recv() {
            wrote = true;
            if out.write_all(&line).is_err() {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        // A failed flush keeps the buffer for the next attempt; lines that
        // then find no room fail in `write_all` above and are counted.
        let _ = out.flush();
        if stopping {
            // From here a send fails (Disconnected) and is counted; what the
            // output never took is counted too.
            drop(rx);
            let stuck = out.buffer().iter().filter(|b| **b == b'\n').count();
            shared.dropped.fetch_add(stuck as u64, Ordering::Relaxed);
            // The output refused it: not tried again when `out` drops.
            let _ = out.into_parts();
            return;
        }
        // Busy, or the output refused the last flush: try again soon.
        if wrote || !out.buffer().is_empty() {
            std::thread::park_timeout(FLUSH_INTERVAL);
            continue;
        }
        // Nothing came for a whole interval: sleep until a line does. The
        // queue is looked at again after `idle` is set, so a line sent in
        // between is never left waiting (the sender then unparks us, and
        // an unpark before park makes park return at once).
        shared.idle.store(true, Ordering::SeqCst);
        if rx.is_empty() && !shared.stop.load(Ordering::SeqCst) {
            std::thread::park();
        }
        shared.idle.store(false, Ordering::SeqCst);
    }
}

impl Write for &LogWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let shared = &self.shared;
        match self.tx.try_send(line.to_vec()) {
            Ok(()) => {
                if (shared.idle.load(Ordering::SeqCst) && shared.idle.swap(false, Ordering::SeqCst))
                    || self.tx.len() * 2 >= shared.capacity
                {
                    shared.thread.unpark();
                }
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = &'a LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

impl Drop for LogWriterGuard {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.thread.unpark();
        if self.done.recv_timeout(SHUTDOWN_WAIT).is_err() {
            eprintln!(
                "hydra-authz: the log output did not take the last lines within {} s",
                SHUTDOWN_WAIT.as_secs()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LogWriter;
    use std::io::Write as _;

    use crate::telemetry::TestSink as Sink;

    /// Lines reach the output while the writer keeps running (the timer
    /// and the idle wake-up), not only at shutdown; bounded wait.
    #[test]
    fn lines_are_written_without_shutdown() {
        let sink = Sink::default();
        let (writer, _guard) = LogWriter::new(sink.clone(), 64).expect("writer");
        for round in 0..3 {
            // After an idle spell (the writer asleep untimed), one line must wake it.
            std::thread::sleep(super::FLUSH_INTERVAL * 3);
            (&writer)
                .write_all(format!("line {round}\n").as_bytes())
                .expect("queued");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let text = sink.text();
                if text.contains(&format!("line {round}\n")) {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "line {round} never written: {text:?}"
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        assert_eq!(writer.dropped(), 0);
    }

    /// Shutdown writes everything queued, in order.
    #[test]
    fn dropping_the_guard_writes_every_queued_line() {
        let sink = Sink::default();
        let (writer, guard) = LogWriter::new(sink.clone(), 10_000).expect("writer");
        for i in 0..5_000 {
            (&writer).write_all(format!("{i}\n").as_bytes()).expect("queued");
        }
        drop(guard);
        let text = sink.text();
        let lines: Vec<usize> = text.lines().map(|l| l.parse().expect("number")).collect();
        assert_eq!(lines, (0..5_000).collect::<Vec<_>>());
        assert_eq!(writer.dropped(), 0);
    }

    /// An output that fails: lines are counted as dropped, the caller never sees an error.
    #[test]
    fn a_failing_output_counts_drops_and_never_fails_the_caller() {
        struct Broken;
        impl std::io::Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            }
        }
        // A line larger than the buffer goes straight to the output and fails
        // there; small lines wait in the buffer, and what the output never
        // took is counted at shutdown.
        let (writer, guard) = LogWriter::new(Broken, 16).expect("writer");
        let mut big = vec![b'x'; 128 * 1024];
        big.push(b'\n');
        for _ in 0..3 {
            (&writer)
                .write_all(&big)
                .expect("the caller never sees the output's error");
        }
        for _ in 0..5 {
            (&writer).write_all(b"small\n").expect("queued");
        }
        drop(guard);
        assert_eq!(writer.dropped(), 8);
        // After shutdown a line is counted, not lost silently.
        (&writer).write_all(b"late\n").expect("never an error");
        assert_eq!(writer.dropped(), 9);
    }
}
