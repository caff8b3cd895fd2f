//! Test support (feature `testing`): a throwaway PostgreSQL cluster for
//! the tests and benches of both backends.
//!
//! [`TempPostgres::shared`] starts one cluster per test process, lazily:
//! `initdb` in a temporary folder, `postgres` on a free loopback port (and
//! a Unix socket in that folder), without fsync unless asked. Each test
//! takes a fresh database of its own ([`TempPostgres::new_database`]), so
//! tests in one process run in parallel without seeing each other. The
//! cluster stops when the test process ends, however it ends: a small
//! watchdog process stops it and deletes its folder once the test process
//! is gone (a test harness has no hook that runs after the last test). It
//! watches `/proc/<pid>` rather than signalling: it runs as the cluster's
//! user, who may not signal a root test process.
//!
//! PostgreSQL refuses to run as root: as root, the cluster runs as the
//! `postgres` user that Debian's package creates. The binaries are found
//! on `PATH` or under `/usr/lib/postgresql/<version>/bin` (where Debian
//! puts them); `scripts/test-deps` installs the package when missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// A running cluster.
#[derive(Debug)]
pub struct TempPostgres {
    pub port: u16,
    /// The folder that holds the data, the log and the socket.
    pub dir: PathBuf,
    bin: PathBuf,
    /// Who runs the server: `Some((uid, gid))` of `postgres` when we are root.
    user: Option<(u32, u32)>,
    /// The server's options, to start it again as it was.
    options: String,
}

/// The superuser of test clusters; the server trusts loopback connections.
pub const USER: &str = "sluice";

impl TempPostgres {
    /// The cluster of this test process, started on first use (without
    /// fsync: a test needs no durability).
    pub fn shared() -> &'static TempPostgres {
        static CLUSTER: OnceLock<TempPostgres> = OnceLock::new();
        CLUSTER.get_or_init(|| TempPostgres::start(false))
    }

    /// Starts a cluster; `durable` keeps PostgreSQL's default fsync and
    /// synchronous commit (for benches that compare with SQLite fairly).
    pub fn start(durable: bool) -> TempPostgres {
        let bin = find_bin();
        let user = postgres_user();
        let dir = tempfile::Builder::new()
            .prefix("sluice-pg-")
            .tempdir()
            .expect("a temporary folder")
            .keep();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the cluster folder");
        }
        let mut pg = TempPostgres {
            port: free_port(),
            dir,
            bin,
            user,
            options: String::new(),
        };
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data(),
                "-U",
                USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
        );
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            pg.port,
            pg.dir.display()
        );
        if !durable {
            options.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        pg.options = options;
        pg.start_again();
        pg.watch_over();
        pg
    }

    /// Starts the server (again, after [`TempPostgres::stop`]), on the
    /// same port, with the same data.
    pub fn start_again(&self) {
        let log = self.dir.join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &self.options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server at once, as a crash or a fail-over would: open
    /// connections are cut, and new ones refused until it starts again.
    /// Only for a cluster of its own ([`TempPostgres::start`]), never the
    /// shared one other tests use.
    pub fn stop(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// Runs one of PostgreSQL's programs as the cluster's user; panics
    /// with its output if it fails.
    fn run(&self, program: &str, args: &[&str]) {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.args(args).current_dir(&self.dir);
        if let Some((uid, gid)) = self.user {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            panic!(
                "{program} failed: {}\n{}\n{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Starts the process that stops the cluster and deletes its folder
    /// once this test process has ended.
    fn watch_over(&self) {
        let script = format!(
            "while [ -e /proc/{pid} ]; do sleep 0.2; done; \
             {ctl} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            ctl = self.bin.join("pg_ctl").display(),
            data = self.data(),
            dir = self.dir.display()
        );
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        use std::os::unix::process::CommandExt;
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        // A process group of its own, so a Ctrl-C to the tests' group does
        // not stop the watchdog before it has cleaned up.
        cmd.process_group(0);
        // Never waited for: it outlives this process by design, and init
        // reaps it.
        #[allow(clippy::zombie_processes)]
        cmd.spawn().expect("start the cluster's watchdog");
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{name}", self.port)
    }

    /// A new, empty database; its URL.
    pub async fn new_database(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .expect("connect to the test cluster");
        let task = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create a test database");
        drop(client);
        let _ = task.await;
        self.url(&name)
    }
}

/// PostgreSQL's programs: on PATH, else Debian's newest version.
fn find_bin() -> PathBuf {
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return dir;
            }
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    found.retain(|b| b.join("initdb").is_file());
    found.sort_by_key(|b| {
        b.parent()
            .and_then(Path::file_name)
            .and_then(|v| v.to_str()?.parse::<u32>().ok())
    });
    found.pop().expect(
        "PostgreSQL is not installed: run scripts/test-deps (it installs Debian's postgresql)",
    )
}

/// `(uid, gid)` of the `postgres` user when this process is root.
fn postgres_user() -> Option<(u32, u32)> {
    let me = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid_line = me.lines().find(|l| l.starts_with("Uid:"))?;
    if uid_line.split_whitespace().nth(1)? != "0" {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .expect("running as root needs the `postgres` user (Debian's postgresql package makes it)");
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields[2].parse().ok()?, fields[3].parse().ok()?))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A TCP relay on loopback to port `to` that stops passing bytes while
/// `frozen` is set, holding every connection open: a database that keeps
/// its connections and answers nothing (a network partition, a stopped
/// server), not one that refuses. Its port.
pub async fn freezable_relay(
    to: u16,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else {
                continue;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(pass(client_read, server_write, frozen.clone()));
            tokio::spawn(pass(server_read, client_write, frozen.clone()));
        }
    });
    port
}

/// Copies `from` to `to`, holding what it read while `frozen` is set.
async fn pass(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let Ok(n) = from.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
