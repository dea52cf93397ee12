//! The `chime serve` under test, as a child process of the bench so that its CPU time and peak
//! memory are its own: started on a fresh data directory and a port it picks itself, read from
//! `/proc/<pid>`, stopped with SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use super::cpu_cap::CpuCap;
use super::load::HttpClient;

/// The admin token every bench server is given (through the environment, never a flag).
pub const ADMIN_TOKEN: &str = "chime-bench-admin-token-0123456789";

const START_DEADLINE: Duration = Duration::from_secs(30);
const STOP_DEADLINE: Duration = Duration::from_secs(60);

/// How to start each server.
#[derive(Clone, Debug)]
pub struct ServerOpts {
    pub exe: PathBuf,
    pub data_root: PathBuf,
    pub database_url: Option<String>,
    pub extra_args: Vec<String>,
    pub keep_data: bool,
    /// Caps every server process at this many CPUs (`--server-cpus`).
    pub cpus: Option<f64>,
}

/// CPU time and memory of a process, from `/proc`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// User plus system CPU seconds since the process started.
    pub cpu_s: f64,
    /// Peak resident set (VmHWM), bytes.
    pub peak_rss: u64,
    /// Current resident set (VmRSS), bytes.
    pub rss: u64,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Usage of `pid` ("self" for this process).
pub fn usage_of(pid: &str) -> std::io::Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces and parentheses).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ") state".
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let cpu_s = (tick(11) + tick(12)) as f64 / clock_ticks();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Ok(Usage {
        cpu_s,
        peak_rss: kb("VmHWM:"),
        rss: kb("VmRSS:"),
    })
}

/// CPU seconds used by every `postgres` process (live backends, plus what exited backends left
/// in their parent's children's time): the database's share when chime runs on PostgreSQL.
pub fn postgres_cpu_s() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let mut ticks = 0u64;
    for entry in dir.filter_map(|e| e.ok()) {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if !head.ends_with("(postgres") {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        // utime stime cutime cstime, fields 14–17 of the line (11–14 after the state).
        ticks += f.get(10..14).map_or(0, |v| v.iter().sum());
    }
    ticks as f64 / clock_ticks()
}

/// CPU seconds of the whole machine (all cores) since boot, from `/proc/stat`.
#[derive(Clone, Copy, Debug, Default)]
pub struct MachineCpu {
    /// Busy time of every process and the kernel (user, nice, system, irq, softirq).
    pub busy_s: f64,
    /// Time the hypervisor ran something else while this guest wanted the CPU.
    pub steal_s: f64,
}

pub fn machine_cpu() -> MachineCpu {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return MachineCpu::default();
    };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return MachineCpu::default();
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: u64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| v.get(i)).sum();
    MachineCpu {
        busy_s: busy as f64 / clock_ticks(),
        steal_s: v.get(7).copied().unwrap_or(0) as f64 / clock_ticks(),
    }
}

/// A running `chime serve`.
pub struct Server {
    child: tokio::process::Child,
    pid: i32,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    keep_data: bool,
    /// The fresh PostgreSQL database of this server: (admin URL, database name).
    pg_database: Option<(String, String)>,
    /// The CPU quota the process runs under, removed once it has stopped.
    cpu_cap: Option<CpuCap>,
}

static DIRS: AtomicU64 = AtomicU64::new(0);

fn fresh_dir(root: &Path, label: &str) -> anyhow::Result<PathBuf> {
    let n = DIRS.fetch_add(1, Ordering::Relaxed);
    let dir = root.join(format!("chime-bench-{}-{n}-{label}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// `url` with its database name replaced by `name` (query parameters kept).
fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let query = tail.find('?').map_or("", |i| &tail[i..]);
    format!("{scheme}://{authority}/{name}{query}")
}

async fn pg_admin(url: &str, sql: &str) -> anyhow::Result<()> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connecting to PostgreSQL (--database-url)")?;
    let conn = tokio::spawn(conn);
    let result = client.batch_execute(sql).await;
    drop(client);
    let _ = conn.await;
    result.with_context(|| format!("PostgreSQL: {sql}"))
}

impl Server {
    /// Starts a server on a fresh data directory and waits until it answers `/healthz`.
    pub async fn start(
        opts: &ServerOpts,
        label: &str,
        client: &HttpClient,
    ) -> anyhow::Result<Self> {
        Self::start_on(opts, label, client, None).await
    }

    /// Another node on `first`'s PostgreSQL database (which `first` made and drops).
    pub async fn join(
        first: &Server,
        opts: &ServerOpts,
        label: &str,
        client: &HttpClient,
    ) -> anyhow::Result<Self> {
        let url = first
            .postgres_url()
            .context("only a server on PostgreSQL can be joined by another node")?;
        Self::start_on(opts, label, client, Some(url)).await
    }

    async fn start_on(
        opts: &ServerOpts,
        label: &str,
        client: &HttpClient,
        shared: Option<String>,
    ) -> anyhow::Result<Self> {
        let data_dir = fresh_dir(&opts.data_root, label)?;
        let log_path = data_dir.join("server.log");
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = tokio::process::Command::new(&opts.exe);
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0", "--allow-targets", "127.0.0.0/8"])
            .arg("--data-dir")
            .arg(&data_dir);
        // A fresh PostgreSQL database per server, as a fresh data directory for SQLite: made
        // through the given URL's server, named after this run, dropped at stop.
        let mut pg_database = None;
        if let Some(url) = &shared {
            cmd.arg("--database-url").arg(url);
        } else if let Some(url) = &opts.database_url {
            if is_postgres(url) {
                let name = format!(
                    "chime_bench_{}_{}",
                    std::process::id(),
                    DIRS.fetch_add(1, Ordering::Relaxed)
                );
                pg_admin(url, &format!("CREATE DATABASE {name}")).await?;
                cmd.arg("--database-url").arg(with_database(url, &name));
                pg_database = Some((url.clone(), name));
            } else {
                cmd.arg("--database-url").arg(url);
            }
        }
        cmd.args(&opts.extra_args);
        // Only what the bench decides: no CHIME_* setting of the caller's shell leaks in.
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("CHIME_") && k != "CHIME_LOG" {
                cmd.env_remove(&key);
            }
        }
        cmd.env("CHIME_ADMIN_TOKEN", ADMIN_TOKEN);
        if std::env::var_os("CHIME_LOG").is_none() {
            cmd.env("CHIME_LOG", "warn");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {} serve", opts.exe.display()))?;
        let pid = child.id().context("the server has no pid")? as i32;
        let cpu_cap = match opts.cpus {
            Some(cpus) => {
                let name = format!(
                    "chime-bench-{}-{}",
                    std::process::id(),
                    DIRS.fetch_add(1, Ordering::Relaxed)
                );
                let cap = CpuCap::new(&name, cpus)?;
                cap.add(pid)?;
                Some(cap)
            }
            None => None,
        };

        // The first line of stdout names the address (`chime X serving on http://ADDR`): the
        // server binds port 0 itself, so no other process can take the port in between.
        let stdout = child.stdout.take().context("no stdout")?;
        let (addr_tx, mut addr_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let log_path2 = log_path.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut log = std::fs::OpenOptions::new()
                .append(true)
                .open(&log_path2)
                .ok();
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = line.split("serving on http://").nth(1) {
                    let _ = addr_tx.send(addr.trim().to_owned());
                }
                if let Some(f) = log.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
            }
        });
        let deadline = Instant::now() + START_DEADLINE;
        let addr: SocketAddr = loop {
            if let Ok(a) = addr_rx.try_recv() {
                break a.parse().with_context(|| format!("server address {a:?}"))?;
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "chime serve exited at start ({status}); its log:\n{}",
                    log_tail(&log_path)
                );
            }
            if Instant::now() > deadline {
                bail!("chime serve did not start within {START_DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let server = Server {
            child,
            pid,
            addr,
            data_dir,
            keep_data: opts.keep_data,
            pg_database,
            cpu_cap,
        };
        server.wait_healthy(client, deadline).await?;
        Ok(server)
    }

    async fn wait_healthy(&self, client: &HttpClient, deadline: Instant) -> anyhow::Result<()> {
        let uri: http::Uri = format!("http://{}/healthz", self.addr).parse()?;
        loop {
            let req = http::Request::get(uri.clone()).body(Full::new(Bytes::new()))?;
            if let Ok(resp) = client.request(req).await {
                let ok = resp.status().is_success();
                let _ = resp.into_body().collect().await;
                if ok {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("chime serve did not answer /healthz within {START_DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The URL of this server's PostgreSQL database, if it runs on one.
    pub fn postgres_url(&self) -> Option<String> {
        self.pg_database
            .as_ref()
            .map(|(url, name)| with_database(url, name))
    }

    /// The SQLite file, when the server uses the embedded store.
    pub fn sqlite_database(&self) -> Option<PathBuf> {
        match &self.pg_database {
            Some(_) => None,
            None => Some(self.data_dir.join("chime.db")),
        }
    }

    pub fn usage(&self) -> Usage {
        usage_of(&self.pid.to_string()).unwrap_or_default()
    }

    /// SIGTERM, then waits for a graceful exit (SIGKILL after a deadline); removes the data
    /// directory unless asked to keep it. Returns the server log's tail when it exited badly.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        // SAFETY: kill(2) with a pid this process spawned and has not yet reaped.
        unsafe {
            libc::kill(self.pid, libc::SIGTERM);
        }
        let status = match tokio::time::timeout(STOP_DEADLINE, self.child.wait()).await {
            Ok(s) => s?,
            Err(_) => {
                let _ = self.child.kill().await;
                bail!("chime serve did not stop within {STOP_DEADLINE:?} of SIGTERM");
            }
        };
        drop(self.cpu_cap.take());
        let log = self.data_dir.join("server.log");
        if !status.success() {
            bail!(
                "chime serve exited with {status}; its log:\n{}",
                log_tail(&log)
            );
        }
        if !self.keep_data {
            let _ = std::fs::remove_dir_all(&self.data_dir);
            if let Some((url, name)) = &self.pg_database {
                pg_admin(url, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_replaced_in_postgres_urls() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "b1"),
            "postgres://postgres@127.0.0.1:5432/b1"
        );
        assert_eq!(
            with_database("postgresql://u:p@h/db?sslmode=disable", "b2"),
            "postgresql://u:p@h/b2?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "b3"), "postgres://u@h/b3");
        assert_eq!(
            with_database("postgres://u@h?x=1", "b4"),
            "postgres://u@h/b4?x=1"
        );
    }
}
