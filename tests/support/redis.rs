//! A real Redis for the fleet tests ([cluster]: purge fan-out over pub/sub,
//! the shared L2 cache and its epoch): Debian's redis-server 7.0, put on PATH
//! by `scripts/install-proxies.sh redis` (scripts/test.sh does), started per
//! test on loopback, a free port and a random password, with nothing
//! persisted and its files in a temporary directory. Killed on drop. A real
//! server rather than a fake, because what the fleet relies on (pub/sub
//! delivery, expiry, reconnection after an outage) is Redis's behaviour.
//!
//! Readiness probes and [`RedisServer::command`] speak a few lines of RESP by
//! hand: test-only inspection, not worth a client crate.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How long a start may take before the test fails.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`RedisServer::restart`] retries a port still held by the old
/// server's connections.
const REBIND_TIMEOUT: Duration = Duration::from_secs(5);
/// A bound on [`RedisServer::command`]: a wedged server fails the test, not hangs it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// What redis-server logs when its port is taken.
const ADDR_IN_USE: &str = "Address already in use";

/// The redis-server binary: `REDIS_BIN`, else `redis-server` on PATH, else
/// where `scripts/install-proxies.sh redis` unpacks it
/// (`.venv-deploy/redis/bin`), as [`super::proxies::find_tool`] looks.
/// Missing is a failure, not a skip: CI installs it.
pub fn redis_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("REDIS_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("redis-server"))
            .find(|p| p.is_file())
    });
    if let Some(p) = on_path {
        return p;
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-deploy/redis/bin/redis-server");
    assert!(
        local.exists(),
        "no redis-server binary: run `PATH=\"$(scripts/install-proxies.sh redis):$PATH\"` \
         (scripts/test.sh does), or set REDIS_BIN"
    );
    local
}

/// Why a start did not come up.
enum StartError {
    /// The port was taken (bind: Address already in use).
    AddrInUse,
    /// Anything else: the process exited; this is its log.
    Exited(String),
}

/// A running redis-server; killed when dropped.
pub struct RedisServer {
    /// The plain port (the tests' own probes and commands use it).
    pub port: u16,
    pub password: String,
    binary: PathBuf,
    child: Option<Child>,
    dir: tempfile::TempDir,
    tls: Option<Tls>,
}

/// A TLS port beside the plain one, with this certificate; client
/// certificates from `ca` required.
struct Tls {
    port: u16,
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl RedisServer {
    /// Start one on a free loopback port; it answers `AUTH` + `PING` when
    /// this returns.
    pub async fn start() -> RedisServer {
        Self::start_with(None).await
    }

    /// [`RedisServer::start`], plus a TLS port serving `cert`/`key` that
    /// requires a client certificate signed by `ca`; [`RedisServer::url`]
    /// is then `rediss://localhost:<tls port>/0`.
    pub async fn start_tls(cert: &Path, key: &Path, ca: &Path) -> RedisServer {
        Self::start_with(Some(Tls {
            port: 0,
            cert: cert.to_owned(),
            key: key.to_owned(),
            ca: ca.to_owned(),
        }))
        .await
    }

    async fn start_with(tls: Option<Tls>) -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("hydra-authz-redis")
            .tempdir()
            .expect("tempdir for redis");
        let password = format!("{:032x}", rand::random::<u128>());
        std::fs::write(dir.path().join("password"), &password).expect("write redis password file");
        let mut server = RedisServer {
            port: 0,
            password,
            binary: redis_binary(),
            child: None,
            dir,
            tls,
        };
        // free_port() only knows the port was free a moment ago: another
        // test may take it first, then try another.
        for _ in 0..5 {
            server.port = super::free_port();
            if let Some(t) = &mut server.tls {
                t.port = super::free_port();
            }
            match server.launch().await {
                Ok(()) => return server,
                Err(StartError::AddrInUse) => continue,
                Err(StartError::Exited(log)) => panic!("redis-server exited during start-up:\n{log}"),
            }
        }
        panic!("redis-server found no free port in 5 tries:\n{}", server.log());
    }

    /// `redis://127.0.0.1:<port>/0`, without the password (that goes in
    /// [`RedisServer::password_file`], as an operator would mount it).
    pub fn url(&self) -> String {
        match &self.tls {
            Some(t) => format!("rediss://localhost:{}/0", t.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// A file holding the password, and nothing else.
    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("password")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// What redis-server wrote to stdout and stderr, every start included.
    pub fn log(&self) -> String {
        self.log_from(0)
    }

    fn log_from(&self, offset: usize) -> String {
        // No file yet (never spawned) reads as an empty log.
        let bytes = std::fs::read(self.log_path()).unwrap_or_default();
        String::from_utf8_lossy(bytes.get(offset..).unwrap_or_default()).into_owned()
    }

    /// An outage: SIGKILL (no shutdown, nothing saved), and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill redis-server");
            c.wait().expect("wait for redis-server");
        }
    }

    /// A Redis that hangs: SIGSTOP, so connections stay open and nothing
    /// answers (a slow or wedged Redis, not a dead one). Undo with [`RedisServer::resume`].
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("redis-server running").id();
        let status = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} {pid}");
    }

    /// Start again (after [`RedisServer::kill`], or killing it first) on the
    /// same port with the same password; ready when this returns. Empty:
    /// nothing was persisted. Redis sets SO_REUSEADDR, so the old server's
    /// connections in TIME_WAIT do not usually hold the port; should the
    /// bind fail all the same, it is retried for up to 5 s.
    pub async fn restart(&mut self) {
        self.kill();
        let deadline = tokio::time::Instant::now() + REBIND_TIMEOUT;
        loop {
            match self.launch().await {
                Ok(()) => return,
                Err(StartError::AddrInUse) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(StartError::AddrInUse) => {
                    panic!(
                        "redis-server: port {} still in use after 5 s:\n{}",
                        self.port,
                        self.log()
                    )
                }
                Err(StartError::Exited(log)) => panic!("redis-server exited during restart:\n{log}"),
            }
        }
    }

    /// Spawn redis-server on `self.port` and wait until it answers.
    async fn launch(&mut self) -> Result<(), StartError> {
        let log_offset =
            usize::try_from(std::fs::metadata(self.log_path()).map_or(0, |m| m.len())).expect("log size fits usize");
        self.spawn();
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("spawned");
            if let Some(status) = child.try_wait().expect("try_wait redis-server") {
                self.child = None;
                let log = self.log_from(log_offset);
                return Err(if log.contains(ADDR_IN_USE) {
                    StartError::AddrInUse
                } else {
                    StartError::Exited(format!("({status})\n{log}"))
                });
            }
            if self.probe().await {
                return Ok(());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server not ready on 127.0.0.1:{} within 10 s:\n{}",
                self.port,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn spawn(&mut self) {
        // Appended to: a restart keeps the earlier runs' lines for failure messages.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open redis log file");
        let mut cmd = Command::new(&self.binary);
        // Redis picks its mode from argv[0] (Debian's redis-server is a
        // symlink to redis-check-rdb), so say which one whatever the path.
        cmd.arg0("redis-server")
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--protected-mode", "yes"])
            // Nothing persisted: a restart comes back empty, as after losing
            // a cache-only Redis, and nothing is written but the log.
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--requirepass", self.password.as_str(), "--loglevel", "warning"]);
        if let Some(t) = &self.tls {
            cmd.arg("--tls-port")
                .arg(t.port.to_string())
                .arg("--tls-cert-file")
                .arg(&t.cert)
                .arg("--tls-key-file")
                .arg(&t.key)
                .arg("--tls-ca-cert-file")
                .arg(&t.ca)
                .args(["--tls-auth-clients", "yes"]);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone redis log file"))
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);
    }

    /// Does it answer `AUTH` and `PING`? (Not yet while loading, or before
    /// it listens.)
    async fn probe(&self) -> bool {
        let exchange = self.exchange(&["PING"]);
        matches!(
            tokio::time::timeout(Duration::from_secs(1), exchange).await,
            Ok(Ok((auth, pong))) if auth == "+OK\r\n" && pong == "+PONG\r\n"
        )
    }

    /// A connection subscribed to `channel` (after `AUTH`).
    pub async fn subscribe(&self, channel: &str) -> Subscription {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await.expect("connect");
        let mut request = resp_command(&["AUTH", self.password.as_str()]);
        request.extend(resp_command(&["SUBSCRIBE", channel]));
        stream.write_all(&request).await.expect("write");
        let mut reader = BufReader::new(stream);
        let auth = read_reply(&mut reader).await.expect("auth");
        assert_eq!(auth, "+OK\r\n", "redis AUTH failed");
        read_reply(&mut reader).await.expect("subscribed");
        Subscription { reader }
    }

    /// Run one command (after `AUTH`) and return its reply as raw RESP text,
    /// e.g. `+OK\r\n`, `$1\r\nv\r\n`, `$-1\r\n` (nil), `:3\r\n`,
    /// `*2\r\n$1\r\na\r\n$1\r\nb\r\n` (`KEYS *`), `-ERR ...\r\n`.
    pub async fn command(&self, args: &[&str]) -> String {
        let (auth, reply) = tokio::time::timeout(COMMAND_TIMEOUT, self.exchange(args))
            .await
            .unwrap_or_else(|_| panic!("redis {args:?}: no reply within 5 s"))
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"));
        assert_eq!(auth, "+OK\r\n", "redis AUTH failed");
        reply
    }

    /// `AUTH <password>` then `args`, pipelined on a fresh connection: both
    /// replies, raw.
    async fn exchange(&self, args: &[&str]) -> std::io::Result<(String, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await?;
        let mut request = resp_command(&["AUTH", self.password.as_str()]);
        request.extend(resp_command(args));
        stream.write_all(&request).await?;
        let mut reader = BufReader::new(stream);
        let auth = read_reply(&mut reader).await?;
        let reply = read_reply(&mut reader).await?;
        Ok((auth, reply))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A command as RESP: an array of bulk strings.
/// What is published on one channel, as it arrives.
pub struct Subscription {
    reader: BufReader<TcpStream>,
}

impl Subscription {
    /// The next message's payload (text; 5 s at most).
    pub async fn next(&mut self) -> String {
        let raw = tokio::time::timeout(COMMAND_TIMEOUT, read_reply(&mut self.reader))
            .await
            .expect("a message within 5 s")
            .expect("a message");
        // *3 $7 message $n <channel> $m <payload>: the payload is last.
        raw.trim_end_matches("\r\n")
            .rsplit("\r\n")
            .next()
            .unwrap_or_default()
            .to_owned()
    }
}

fn resp_command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend(format!("${}\r\n", a.len()).into_bytes());
        out.extend(a.as_bytes());
        out.extend(b"\r\n");
    }
    out
}

/// One complete RESP2 reply, as the raw text it came as. Arrays nest, so
/// this counts the elements still to read rather than recursing.
async fn read_reply(reader: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut raw = Vec::new();
    let mut pending = 1usize;
    while pending > 0 {
        pending -= 1;
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        raw.extend_from_slice(&line);
        let header = String::from_utf8_lossy(&line);
        let header = header.trim_end();
        let length = || {
            header[1..].parse::<i64>().map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad RESP header {header:?}"))
            })
        };
        match header.as_bytes().first() {
            Some(b'+' | b'-' | b':') => {}
            // A bulk string: its bytes and CRLF follow; -1 is nil.
            Some(b'$') => {
                if let Ok(n) = usize::try_from(length()?) {
                    let mut body = vec![0; n + 2];
                    reader.read_exact(&mut body).await?;
                    raw.extend_from_slice(&body);
                }
            }
            // An array: that many more replies; -1 is nil.
            Some(b'*') => pending += usize::try_from(length()?).unwrap_or(0),
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("bad RESP header {header:?}"),
                ))
            }
        }
    }
    Ok(String::from_utf8_lossy(&raw).into_owned())
}
