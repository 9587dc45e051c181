//! Throwaway PostgreSQL servers.

use std::ffi::OsString;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::unistd::{User, geteuid};
use tempfile::TempDir;

use crate::error::{Error, Result, io_err};
use crate::hosts::Host;
use crate::process::{self, Spawn, StopSignal, Supervised};

const INSTALL_POSTGRES: &str = "apt-get install -y postgresql";

/// How often a free-port race is retried.
const PORT_ATTEMPTS: u32 = 5;

/// How long PostgreSQL gets to finish an immediate shutdown before it is SIGKILLed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Configures and starts a [`Postgres`]. Create one with [`Postgres::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct PostgresBuilder {
    settings: Vec<(String, String)>,
    startup_timeout: Duration,
    bin_dir: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    host: Option<Host>,
    upstream: Option<Upstream>,
}

/// The primary a replica streams from.
#[derive(Debug, Clone)]
struct Upstream {
    addr: SocketAddr,
    bin_dir: PathBuf,
}

impl Default for PostgresBuilder {
    fn default() -> Self {
        Self {
            settings: Vec::new(),
            startup_timeout: crate::wait::patience(),
            bin_dir: None,
            data_dir: None,
            host: None,
            upstream: None,
        }
    }
}

impl PostgresBuilder {
    /// Adds a server setting, passed as `-c name=value`, e.g. `.setting("max_connections", "20")`.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// How long to wait for the server to accept connections (default
    /// [`wait::patience`](crate::wait::patience)).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Uses the `initdb`, `postgres`, `pg_isready` and `psql` in this dir instead of
    /// asking `pg_config --bindir` or searching `/usr/lib/postgresql/*/bin`.
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// Keeps the data in `dir` instead of the temp dir, so it outlives the server:
    /// `initdb` runs only when `dir` holds no cluster yet, and a later server started
    /// on the same `dir` finds what this one wrote. The dir is created if missing and
    /// never deleted.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Runs the server in a [`Host`] of a [`crate::Network`], on port 5432 of
    /// the host's address, trusting connections from any address (they
    /// come from other hosts).
    pub fn host(mut self, host: &Host) -> Self {
        self.host = Some(host.clone());
        self
    }

    /// Makes the server a hot-standby streaming replica of `primary`: its
    /// data dir starts as a base backup of the primary (`pg_basebackup`,
    /// WAL streamed alongside), which it then follows through a physical
    /// replication slot of its own (so the primary keeps the WAL it has not
    /// replayed, however long it is paused or down), with the primary's
    /// binaries. Reads work on it at once; writes are refused until it is
    /// [promoted](Postgres::promote). Its faults: [`Postgres::pause_replay`],
    /// [`Postgres::apply_delay`], [`Postgres::kill`] (and
    /// [`Postgres::restart`]), and a [`Host`] cut off from the network.
    pub fn replica_of(mut self, primary: &Postgres) -> Self {
        self.upstream = Some(Upstream {
            addr: primary.addr(),
            bin_dir: primary.bin_dir().to_owned(),
        });
        self.bin_dir = Some(primary.bin_dir().to_owned());
        self
    }

    /// Runs `initdb` (unless a kept [data dir](Self::data_dir) already holds a cluster,
    /// or the server is a [replica](Self::replica_of), whose data is a base backup),
    /// starts the server and waits until it accepts connections.
    pub fn start(self) -> Result<Postgres> {
        let bin_dir = match &self.bin_dir {
            Some(dir) => check_bin_dir(dir)?,
            None => find_bin_dir()?,
        };
        let owner = server_user()?;
        let dir = tempfile::Builder::new()
            .prefix("seawall-postgres-")
            .tempdir()
            .map_err(io_err("creating a temp dir for PostgreSQL"))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).map_err(io_err(format!(
                "handing {} to the postgres user",
                dir.path().display()
            )))?;
        }
        let data = match &self.data_dir {
            Some(data) => {
                std::fs::create_dir_all(data)
                    .map_err(io_err(format!("creating {}", data.display())))?;
                if let Some((uid, gid)) = owner {
                    std::os::unix::fs::chown(data, Some(uid), Some(gid)).map_err(io_err(
                        format!("handing {} to the postgres user", data.display()),
                    ))?;
                }
                // PostgreSQL refuses a data dir others can read.
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700))
                    .map_err(io_err(format!("restricting {}", data.display())))?;
                Some(data.clone())
            }
            None => None,
        };
        let mut pg = Postgres {
            port: 0,
            ip: self.host.as_ref().map_or(Ipv4Addr::LOCALHOST, Host::addr),
            netns: self.host.as_ref().map(|host| host.netns().to_owned()),
            bin_dir,
            owner,
            data,
            settings: self.settings.clone(),
            startup_timeout: self.startup_timeout,
            proc: None,
            dir,
        };
        if let Some(upstream) = &self.upstream {
            if pg.data_dir().join("PG_VERSION").is_file() {
                return Err(Error::CommandFailed {
                    command: "pg_basebackup".to_owned(),
                    status: "not run".to_owned(),
                    output: format!(
                        "{} already holds a cluster: a replica starts from a base backup",
                        pg.data_dir().display()
                    ),
                });
            }
            pg.base_backup(upstream)?;
        } else if !pg.data_dir().join("PG_VERSION").is_file() {
            pg.initdb()?;
        }
        if pg.netns.is_some() {
            // A host's ports are its own, and its clients come from other hosts.
            pg.port = DEFAULT_HOST_PORT;
            std::fs::write(pg.hba_path(), HOST_HBA)
                .map_err(io_err(format!("writing {}", pg.hba_path().display())))?;
            pg.spawn_and_wait()?;
            return Ok(pg);
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            pg.port = process::pick_port(false)?;
            let _ = std::fs::remove_file(pg.log_path());
            match pg.spawn_and_wait() {
                Ok(()) => return Ok(pg),
                // Another process bound the port between our check and the server's bind.
                Err(Error::Exited { log_tail, .. })
                    if attempt < PORT_ATTEMPTS && log_tail.contains("Address already in use") => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// The uid and gid to run PostgreSQL as: `None` to stay as the current user, or the
/// `postgres` user when running as root, which PostgreSQL refuses.
fn server_user() -> Result<Option<(u32, u32)>> {
    if !geteuid().is_root() {
        return Ok(None);
    }
    match User::from_name("postgres") {
        Ok(Some(user)) => Ok(Some((user.uid.as_raw(), user.gid.as_raw()))),
        Ok(None) => Err(Error::PostgresUser {
            reason: String::from(
                "running as root, which PostgreSQL refuses, and there is no `postgres` user to \
                 run it as; `apt-get install -y postgresql` creates one",
            ),
        }),
        Err(e) => Err(Error::PostgresUser {
            reason: format!("looking up the `postgres` user failed: {e}"),
        }),
    }
}

const SERVER_BINARIES: [&str; 4] = ["initdb", "postgres", "pg_isready", "psql"];

fn check_bin_dir(dir: &Path) -> Result<PathBuf> {
    for name in SERVER_BINARIES {
        if !process::is_executable(&dir.join(name)) {
            return Err(Error::MissingBinary {
                binary: name.to_owned(),
                searched: format!("looked in {}", dir.display()),
                install: INSTALL_POSTGRES,
            });
        }
    }
    Ok(dir.to_owned())
}

fn find_bin_dir() -> Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(out) = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
        && out.status.success()
    {
        candidates.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    // Debian keeps the server binaries out of $PATH, one dir per major version; newest first.
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versioned.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    candidates.extend(versioned.into_iter().map(|(_, dir)| dir));
    if let Some(dir) = candidates.iter().find(|dir| check_bin_dir(dir).is_ok()) {
        return Ok(dir.clone());
    }
    let searched = if candidates.is_empty() {
        String::from("pg_config not found and /usr/lib/postgresql/*/bin empty")
    } else {
        let dirs: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
        format!("looked in {}", dirs.join(", "))
    };
    Err(Error::MissingBinary {
        binary: SERVER_BINARIES.join("/"),
        searched,
        install: INSTALL_POSTGRES,
    })
}

/// The port of a server on a [`Host`].
const DEFAULT_HOST_PORT: u16 = 5432;

/// `pg_hba.conf` of a server on a [`Host`]: everyone is trusted, as on
/// loopback, replicas' connections included.
const HOST_HBA: &str = "local all all trust\nhost all all 0.0.0.0/0 trust\n\
                        local replication all trust\nhost replication all 0.0.0.0/0 trust\n";

/// Polls `holds` every [`POLL`](crate::wait::POLL) until it returns `true`
/// (then `true`) or [`patience`](crate::wait::patience) has passed (then
/// `false`).
fn poll(mut holds: impl FnMut() -> bool) -> bool {
    let began = std::time::Instant::now();
    loop {
        if holds() {
            return true;
        }
        if began.elapsed() > crate::wait::patience() {
            return false;
        }
        std::thread::sleep(crate::wait::POLL);
    }
}

/// Replication slots the testkit has made, for unique names.
static SLOTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A PostgreSQL server on a free `127.0.0.1` port (or on a [`Host`]'s address) with its data dir and unix socket in
/// a temp dir, trust authentication and durability switched off for speed.
///
/// It is shut down and the dir deleted on drop, and, like [`crate::RedisServer`], it cannot
/// outlive the test process. Running as root, it runs as the `postgres` user.
#[derive(Debug)]
pub struct Postgres {
    port: u16,
    ip: Ipv4Addr,
    /// The namespace of the [`Host`] it runs in.
    netns: Option<String>,
    bin_dir: PathBuf,
    owner: Option<(u32, u32)>,
    /// A data dir kept outside the temp dir.
    data: Option<PathBuf>,
    settings: Vec<(String, String)>,
    startup_timeout: Duration,
    proc: Option<Supervised>,
    // Declared last so the server is gone before its dir is deleted.
    dir: TempDir,
}

impl Postgres {
    /// Starts a server with default settings.
    pub fn start() -> Result<Self> {
        Self::builder().start()
    }

    /// A builder for a server with extra settings.
    pub fn builder() -> PostgresBuilder {
        PostgresBuilder::default()
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`, or the [host](PostgresBuilder::host)'s address and port.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.port))
    }

    /// `postgres://postgres@127.0.0.1:port/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@{}/postgres", self.addr())
    }

    /// The temp dir, which is also the unix socket dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The data dir (`PGDATA`).
    pub fn data_dir(&self) -> PathBuf {
        match &self.data {
            Some(data) => data.clone(),
            None => self.dir.path().join("data"),
        }
    }

    /// The dir holding the `initdb`, `postgres` and `psql` that are used.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The server log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        process::log_tail(&self.log_path(), lines)
    }

    /// The postmaster's process id.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Supervised::pid)
    }

    /// Runs `sql` with `psql` and returns its unaligned, tuples-only output, trimmed,
    /// e.g. `"1"` for `SELECT 1`.
    pub fn psql(&self, sql: &str) -> Result<String> {
        let mut cmd = Command::new(self.bin_dir.join("psql"));
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url())
            .arg("-c")
            .arg(sql)
            .stdin(Stdio::null());
        let command = format!("{cmd:?}");
        let out = cmd.output().map_err(io_err(format!("running {command}")))?;
        if !out.status.success() {
            return Err(Error::CommandFailed {
                command,
                status: out.status.to_string(),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The WAL position the server has inserted up to (a primary:
    /// `pg_current_wal_insert_lsn()`, which, with `synchronous_commit` off
    /// as here, is past a commit that has not reached the disk yet; at a
    /// WAL page no record is on yet, that page's start, where a replica
    /// that has replayed everything stands) or replayed up to (a replica:
    /// `pg_last_wal_replay_lsn()`), as PostgreSQL prints it (`0/3000148`).
    pub fn wal_position(&self) -> Result<String> {
        self.psql(
            "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
             ELSE (SELECT x.p - CASE WHEN o.file_offset = 40 THEN 40 \
                   WHEN o.file_offset % current_setting('wal_block_size')::int = 24 THEN 24 \
                   ELSE 0 END \
                   FROM (SELECT pg_current_wal_insert_lsn() AS p) AS x, \
                   pg_walfile_name_offset(x.p) AS o) END",
        )
    }

    /// Whether the server is a replica still (in recovery).
    pub fn is_replica(&self) -> Result<bool> {
        Ok(self.psql("SELECT pg_is_in_recovery()")? == "t")
    }

    /// Waits until this replica has replayed everything `primary` had
    /// written when called.
    pub fn caught_up_with(&self, primary: &Postgres) -> Result<()> {
        let target = primary.wal_position()?;
        let sql = format!("SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn");
        let mut last = String::new();
        let caught_up = poll(|| {
            last = self.psql(&sql).unwrap_or_else(|error| error.to_string());
            last == "t"
        });
        if caught_up {
            Ok(())
        } else {
            Err(Error::CommandFailed {
                command: sql,
                status: "not caught up".to_owned(),
                output: format!(
                    "the replica on {} has not replayed up to {target} (last answer: {last}); \
                     its log:\n{}",
                    self.addr(),
                    self.log_tail(20)
                ),
            })
        }
    }

    /// Pauses this replica's replay (`pg_wal_replay_pause()`) and returns
    /// once it has stopped: it goes on receiving WAL, and reads see the
    /// data as of the pause until [`resume_replay`](Self::resume_replay).
    pub fn pause_replay(&self) -> Result<()> {
        self.psql("SELECT pg_wal_replay_pause()")?;
        let mut state = String::new();
        let paused = poll(|| {
            state = self
                .psql("SELECT pg_get_wal_replay_pause_state()")
                .unwrap_or_else(|error| error.to_string());
            state == "paused"
        });
        if paused {
            Ok(())
        } else {
            Err(Error::CommandFailed {
                command: "SELECT pg_get_wal_replay_pause_state()".to_owned(),
                status: "not paused".to_owned(),
                output: state,
            })
        }
    }

    /// Resumes a paused replay.
    pub fn resume_replay(&self) -> Result<()> {
        self.psql("SELECT pg_wal_replay_resume()").map(drop)
    }

    /// Makes this replica apply each transaction `delay` after its commit
    /// on the primary (`recovery_min_apply_delay`; zero: at once), from
    /// now on, without a restart.
    pub fn apply_delay(&self, delay: Duration) -> Result<()> {
        self.psql(&format!(
            "ALTER SYSTEM SET recovery_min_apply_delay = '{}ms'",
            delay.as_millis()
        ))?;
        self.psql("SELECT pg_reload_conf()").map(drop)
    }

    /// Promotes this replica to a primary (`pg_promote()`), returning once
    /// it takes writes.
    pub fn promote(&self) -> Result<()> {
        let promoted = self.psql("SELECT pg_promote(true, 60)")?;
        if promoted == "t" {
            Ok(())
        } else {
            Err(Error::CommandFailed {
                command: "SELECT pg_promote(true, 60)".to_owned(),
                status: promoted,
                output: self.log_tail(20),
            })
        }
    }

    /// Stops the server at once, as a crash would (an immediate shutdown,
    /// SIGQUIT, then SIGKILL after a grace): no checkpoint, its port
    /// closed. Its data dir stays for [`restart`](Self::restart).
    pub fn kill(&mut self) -> Result<()> {
        match self.proc.take() {
            Some(proc) => proc.stop(),
            None => Ok(()),
        }
    }

    /// Starts the server again on the same port and data dir (killing it
    /// first if it runs) and waits until it accepts connections: a replica
    /// resumes streaming from where it stopped.
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.spawn_and_wait()
    }

    /// The base backup a replica starts from, taken from `upstream` into
    /// the data dir, with a replication slot of its own and the settings
    /// that make it follow the primary (`-R`: `standby.signal` and
    /// `primary_conninfo`).
    fn base_backup(&self, upstream: &Upstream) -> Result<()> {
        let slot = format!(
            "seawall_replica_{}_{}",
            std::process::id(),
            SLOTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        // From this process's own network, which reaches every host: the
        // copy needs only the primary, and `ip netns exec` would not run
        // as the server's user. The replica itself streams from its host.
        let mut cmd = Command::new(upstream.bin_dir.join("pg_basebackup"));
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-h", &upstream.addr.ip().to_string()])
            .args(["-p", &upstream.addr.port().to_string()])
            .args(["-U", "postgres", "-X", "stream", "-R", "-C", "-S", &slot])
            // A fast checkpoint, and no fsync of a throwaway copy.
            .args(["-c", "fast", "--no-sync"]);
        self.run_as_owner(cmd, "basebackup.log")
    }

    fn initdb(&self) -> Result<()> {
        let mut cmd = Command::new(self.bin_dir.join("initdb"));
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            // Durability of a throwaway cluster does not matter; initdb's fsyncs are slow.
            .arg("--no-sync")
            .env("LC_ALL", "C");
        self.run_as_owner(cmd, "initdb.log")
    }

    /// Runs `cmd` in the temp dir as the server's user, its output into
    /// `log` there; an error with the log's tail unless it succeeds.
    fn run_as_owner(&self, mut cmd: Command, log: &str) -> Result<()> {
        let log_path = self.dir.path().join(log);
        let log =
            File::create(&log_path).map_err(io_err(format!("creating {}", log_path.display())))?;
        let log_err = log
            .try_clone()
            .map_err(io_err(format!("duplicating {}", log_path.display())))?;
        cmd.current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if let Some((uid, gid)) = self.owner {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        let command = format!("{cmd:?}");
        let status = cmd.status().map_err(io_err(format!("running {command}")))?;
        if status.success() {
            return Ok(());
        }
        Err(Error::CommandFailed {
            command,
            status: status.to_string(),
            output: process::log_tail(&log_path, 30),
        })
    }

    fn what(&self) -> String {
        format!("postgres on {}", self.addr())
    }

    fn hba_path(&self) -> PathBuf {
        self.dir.path().join("pg_hba.conf")
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        let mut args: Vec<OsString> = vec![
            "-D".into(),
            self.data_dir().into(),
            "-p".into(),
            self.port.to_string().into(),
            "-k".into(),
            self.dir.path().into(),
        ];
        let listen = self.ip.to_string();
        let hba = format!("hba_file={}", self.hba_path().display());
        if self.netns.is_some() {
            args.extend(["-c".into(), hba.into()]);
        }
        let defaults = [
            ("listen_addresses", listen.as_str()),
            ("fsync", "off"),
            ("synchronous_commit", "off"),
            ("full_page_writes", "off"),
            // /dev/shm is tiny in many containers; files in the data dir always work.
            ("dynamic_shared_memory_type", "mmap"),
        ];
        let settings = defaults
            .iter()
            .map(|(k, v)| (*k, *v))
            .chain(self.settings.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        for (name, value) in settings {
            args.push("-c".into());
            args.push(format!("{name}={value}").into());
        }
        let program = self.bin_dir.join("postgres");
        let log = self.log_path();
        let proc = Supervised::spawn(&Spawn {
            uid_gid: self.owner,
            netns: self.netns.as_deref(),
            ..Spawn::server(
                &program,
                &args,
                self.dir.path(),
                &log,
                StopSignal::QuitThenKill(SHUTDOWN_GRACE),
            )
        })?;
        let proc = process::await_ready(
            proc,
            self.startup_timeout,
            self.what(),
            &self.log_path(),
            || self.probe(),
        )?;
        self.proc = Some(proc);
        Ok(())
    }

    /// One readiness check with `pg_isready`, which, unlike a bare TCP connect, fails
    /// while the server is still starting up.
    fn probe(&self) -> Result<(), String> {
        let status = Command::new(self.bin_dir.join("pg_isready"))
            .args([
                "-q",
                "-h",
                &self.ip.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-t",
                "2",
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("running pg_isready: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("pg_isready: {status}"))
        }
    }
}
