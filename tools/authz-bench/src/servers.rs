//! The processes a row measures: the no-op floor, hydra-authz at a given
//! log setting, the Hydra-shaped issuer; their CPU time, RSS and metrics.

use crate::*;

pub(crate) fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

pub(crate) fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

pub(crate) fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe.parent().map(|d| d.join(name)).filter(|p| p.is_file());
    p.ok_or_else(|| {
        anyhow::anyhow!("{name} not found next to authz-bench: cargo build --release -p hydra-authz -p authz-bench")
    })
}

/// A server process we measure; killed on drop.
pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    /// hydra-authz's HTTP listener (metrics), when it has one.
    pub(crate) metrics_addr: SocketAddr,
}

impl Proc {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
}

pub(crate) async fn wait_port(addr: SocketAddr) -> anyhow::Result<()> {
    wait_port_for(addr, Duration::from_secs(5)).await
}

/// [`wait_port`] with a longer budget (a server starting under valgrind).
pub(crate) async fn wait_port_for(addr: SocketAddr, budget: Duration) -> anyhow::Result<()> {
    let tries = (budget.as_millis() / 25).max(1);
    for _ in 0..tries {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::bail!("nothing listening on {addr}")
}

/// [`wait_port_for`] for a process we started: a child that exits before
/// it listens (a bad config, a missing valgrind) is reported at once, with
/// its exit status, instead of after the whole budget.
async fn wait_child_port(child: &mut tokio::process::Child, addr: SocketAddr, budget: Duration) -> anyhow::Result<()> {
    let tries = (budget.as_millis() / 25).max(1);
    for _ in 0..tries {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the server exited ({status}) before listening on {addr}");
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::bail!("nothing listening on {addr} after {budget:?}")
}

/// The no-op floor's process; with `answer`, it answers every check with
/// that CheckResponse (protobuf bytes in a file) instead of an empty OK.
pub(crate) async fn spawn_noop(answer: Option<&std::path::Path>) -> anyhow::Result<Proc> {
    spawn_noop_under(&Wrapper::NONE, answer).await
}

/// A program the measured server runs under (valgrind for
/// `server-instructions`), or nothing.
pub(crate) struct Wrapper {
    pub(crate) argv: Vec<std::ffi::OsString>,
    /// How long the server may take to listen under it.
    pub(crate) start_budget: Duration,
}

impl Wrapper {
    pub(crate) const NONE: Wrapper = Wrapper {
        argv: Vec::new(),
        start_budget: Duration::from_secs(5),
    };

    fn command(&self, program: &Path) -> Command {
        match self.argv.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(program);
                c
            }
            None => Command::new(program),
        }
    }
}

/// [`spawn_noop`] under `wrap`.
pub(crate) async fn spawn_noop_under(wrap: &Wrapper, answer: Option<&std::path::Path>) -> anyhow::Result<Proc> {
    let addr = free_addr();
    let mut command = wrap.command(&std::env::current_exe()?);
    command.args(["noop-server", &addr.to_string()]);
    if let Some(path) = answer {
        command.arg("--answer").arg(path);
    }
    let mut child = command.stdout(Stdio::null()).kill_on_drop(true).spawn()?;
    wait_child_port(&mut child, addr, wrap.start_budget).await?;
    Ok(Proc {
        child,
        addr,
        metrics_addr: addr,
    })
}

/// The cache every cache-hit row runs with (`config_extra` of
/// [`spawn_authz`]): on, entries kept ten minutes, longer than any run.
pub(crate) const CACHE_ON: &str = "[introspection.cache]\nenabled = true\nttl_ms = 600000";

/// A `[log]` setting for a row: what operators ship unless said otherwise.
#[derive(Clone, Copy)]
pub(crate) struct LogSetting {
    pub(crate) level: &'static str,
    pub(crate) format: &'static str,
}

impl LogSetting {
    /// `config/hydra-authz.toml`: info, one decision line per check, pretty.
    pub(crate) const SHIPPED: LogSetting = LogSetting {
        level: "info",
        format: "pretty",
    };
    /// The Helm chart: info, JSON.
    pub(crate) const HELM: LogSetting = LogSetting {
        level: "info",
        format: "json",
    };
    /// Quieter than shipped: no decision lines (a separate row, for contrast).
    pub(crate) const WARN: LogSetting = LogSetting {
        level: "warn",
        format: "pretty",
    };

    pub(crate) fn label(&self) -> String {
        format!("log {} {}", self.level, self.format)
    }
}

pub(crate) async fn spawn_authz(
    dir: &Path,
    name: &str,
    config_extra: &str,
    introspection: &str,
) -> anyhow::Result<Proc> {
    spawn_authz_logging(dir, name, config_extra, introspection, LogSetting::SHIPPED).await
}

/// hydra-authz with `log`; its stderr goes to a pipe that a task drains,
/// as a container runtime reads a pod's output.
pub(crate) async fn spawn_authz_logging(
    dir: &Path,
    name: &str,
    config_extra: &str,
    introspection: &str,
    log: LogSetting,
) -> anyhow::Result<Proc> {
    spawn_authz_under(&Wrapper::NONE, dir, name, config_extra, introspection, log).await
}

/// [`spawn_authz_logging`] under `wrap`.
pub(crate) async fn spawn_authz_under(
    wrap: &Wrapper,
    dir: &Path,
    name: &str,
    config_extra: &str,
    introspection: &str,
    log: LogSetting,
) -> anyhow::Result<Proc> {
    let (grpc, http) = (free_addr(), free_addr());
    let config = format!(
        "[server]\ngrpc_addr = \"{grpc}\"\nhttp_addr = \"{http}\"\n[introspection]\nurl = \"{introspection}\"\ntimeout_ms = 2000\n{config_extra}\n[log]\nlevel = \"{}\"\nformat = \"{}\"\n[[rules]]\nid = \"bench\"\npath = \"/**\"\nscopes = [\"read_date\"]\n",
        log.level, log.format
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config)?;
    let mut cmd = wrap.command(&sibling("hydra-authz")?);
    // Experiments with the server's runtime size (tokio reads this variable).
    if let Ok(n) = std::env::var("AUTHZ_BENCH_SERVER_WORKERS") {
        cmd.env("TOKIO_WORKER_THREADS", n);
    }
    let mut child = cmd
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    if let Some(mut err) = child.stderr.take() {
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 64 * 1024];
            while matches!(err.read(&mut buf).await, Ok(n) if n > 0) {}
        });
    }
    wait_child_port(&mut child, grpc, wrap.start_budget).await?;
    Ok(Proc {
        child,
        addr: grpc,
        metrics_addr: http,
    })
}

/// CPU seconds (user + system) a process has used so far.
pub(crate) fn cpu_s(pid: u32) -> f64 {
    cpu_s_of(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
}

/// utime + stime of a `/proc/PID/stat` line: its 14th and 15th fields, in
/// USER_HZ (100 on Linux). Counted from the 3rd field (the state), which
/// follows the parenthesised command name (that may hold spaces).
fn cpu_s_of(stat: &str) -> f64 {
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let mut fields = rest.split_whitespace().skip(14 - 3);
    let mut next = || fields.next().and_then(|x| x.parse::<f64>().ok());
    match (next(), next()) {
        (Some(user), Some(system)) => (user + system) / 100.0,
        _ => 0.0,
    }
}

/// Context switches (voluntary + involuntary) of all the process's
/// threads so far: each is a wake-up or a preemption, which on two shared
/// cores costs the load generator and the server alike.
pub(crate) fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.starts_with("voluntary_ctxt_switches") || l.starts_with("nonvoluntary_ctxt_switches"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Read and write system calls (`syscr` + `syscw` of `/proc/PID/io`, all
/// the process's threads) so far: each costs a kernel entry that callgrind
/// does not count, so two servers with equal instructions can still differ
/// by how they batch their socket reads and writes.
pub(crate) fn io_syscalls(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("syscr:") || l.starts_with("syscw:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// hydra-authz's `/metrics` text.
pub(crate) async fn scrape(http: SocketAddr) -> Option<String> {
    reqwest::get(format!("http://{http}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// A counter or gauge from hydra-authz's `/metrics`.
pub(crate) async fn metric(http: SocketAddr, name: &str) -> Option<f64> {
    let text = scrape(http).await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Upper bound of the histogram bucket holding the 99th percentile of the
/// server's own check_duration since start (coarse: buckets double).
pub(crate) async fn server_p99_bucket_us(http: SocketAddr) -> Option<f64> {
    let text = scrape(http).await?;
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("hydra_authz_check_duration_seconds_bucket"))
    {
        let le = line.split("le=\"").nth(1)?.split('"').next()?;
        let count: f64 = line.rsplit(' ').next()?.parse().ok()?;
        let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
        buckets.push((le, count));
    }
    let total = buckets.last()?.1;
    buckets.iter().find(|(_, c)| *c >= total * 0.99).map(|(le, _)| le * 1e6)
}

/// Hydra-shaped issuer with an injected delay on introspection.
pub(crate) async fn issuer(format: TokenFormat, delay: Duration) -> anyhow::Result<(DevIssuer, IssuerAddrs)> {
    let (iss, addrs, _) = timed_issuer(format, delay).await?;
    Ok((iss, addrs))
}

pub(crate) async fn timed_issuer(
    format: TokenFormat,
    delay: Duration,
) -> anyhow::Result<(DevIssuer, IssuerAddrs, ServiceTimes)> {
    let times = ServiceTimes::default();
    let recorder = times.clone();
    let public = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let (pa, aa) = (public.local_addr()?, admin.local_addr()?);
    let iss = DevIssuer::with_format(format!("http://{pa}"), seed_clients(), 3600, format);
    let admin_router = iss.admin_router().layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let recorder = recorder.clone();
            async move {
                let t = Instant::now();
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let resp = next.run(req).await;
                recorder.record(t.elapsed());
                resp
            }
        },
    ));
    let pr = iss.public_router();
    tokio::spawn(async move { axum::serve(public, pr).await });
    tokio::spawn(async move { axum::serve(admin, admin_router).await });
    Ok((iss, IssuerAddrs { public: pa, admin: aa }, times))
}

pub(crate) fn mint(iss: &DevIssuer, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| iss.mint("reader", &["read_date"]).unwrap_or_default())
        .collect()
}

pub(crate) fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[cfg(test)]
mod tests {
    /// A real line (`cat /proc/self/stat`, utime 155, stime 4, cutime 3):
    /// user and system time, not the children's.
    #[test]
    fn cpu_is_user_plus_system() {
        let stat = "4242 (a (b) c) R 1 4242 4242 0 -1 4194304 1400 0 0 0 155 4 3 4 20 0 1 0 1724851 10000 1000";
        assert!((super::cpu_s_of(stat) - 1.59).abs() < 1e-9, "{}", super::cpu_s_of(stat));
        assert_eq!(super::cpu_s_of(""), 0.0);
    }
}
