//! Process plumbing shared by every server type: supervised spawning, signals,
//! binary lookup, port picking and log tails.

use std::collections::HashSet;
use std::ffi::OsString;
use std::hash::{BuildHasher, RandomState};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use crate::error::{Error, Result, io_err};

/// Runs `"$@"` in the background and stops it as soon as our stdin reaches EOF.
///
/// The test process holds the only write end of that stdin pipe (std creates pipes
/// close-on-exec, so no other child inherits it). The kernel closes it when the test
/// process exits for any reason, SIGKILL included, so the server can never outlive
/// the test run. Redis gets SIGKILL straight away; PostgreSQL gets SIGQUIT (immediate
/// shutdown, which also stops its backends and frees its shared memory) and a service
/// under test SIGTERM, each followed by SIGKILL if that takes more than `ticks` polls of
/// 20 ms. `kill -0` cannot mistake a recycled pid for the server: dash only reaps
/// children while waiting, i.e. inside `sleep`.
///
/// An orderly stop from Rust writes `keep-dir` first; without it the test process died,
/// nobody will delete the server's temp dir, so the supervisor does (unless `dir` is
/// empty: the process's files belong to someone else).
const SUPERVISOR: &str = r#"
log=$1; dir=$2; ticks=$3; sig=$4; shift 4
"$@" </dev/null >>"$log" 2>&1 &
pid=$!
echo "$pid"
keep=
while read -r line; do
    if [ "$line" = keep-dir ]; then keep=1; fi
done
if [ "$ticks" -gt 0 ]; then
    kill -s "$sig" "$pid" 2>/dev/null
    kill -s CONT "$pid" 2>/dev/null
    n=0
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$n" -ge "$ticks" ]; then kill -s KILL "$pid" 2>/dev/null; break; fi
        sleep 0.02
        n=$((n + 1))
    done
else
    kill -s KILL "$pid" 2>/dev/null
fi
wait "$pid"
if [ -z "$keep" ] && [ -n "$dir" ]; then rm -rf -- "$dir"; fi
exit 0
"#;

/// How long to wait for the supervisor to reap its server after stdin closes,
/// beyond the server's own grace period: the supervisor's ticks and a loaded
/// machine's slow exits, before the supervisor is taken for wedged.
const STOP_MARGIN: Duration = Duration::from_secs(15);

/// How the supervisor ends the server when the test lets go of it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StopSignal {
    /// SIGKILL immediately.
    Kill,
    /// SIGQUIT, then SIGKILL after the given grace period.
    QuitThenKill(Duration),
    /// SIGTERM, then SIGKILL after the given grace period.
    TermThenKill(Duration),
}

/// What [`Supervised::spawn`] runs, and how.
#[derive(Debug)]
pub(crate) struct Spawn<'a> {
    pub(crate) program: &'a Path,
    pub(crate) args: &'a [OsString],
    /// Environment variables added to the inherited ones.
    pub(crate) envs: &'a [(OsString, OsString)],
    /// The working dir, which must be accessible to `uid_gid`.
    pub(crate) dir: &'a Path,
    /// Whether the supervisor deletes `dir` when its owner dies without stopping it.
    pub(crate) owns_dir: bool,
    /// Where the process's output is appended.
    pub(crate) log: &'a Path,
    pub(crate) stop: StopSignal,
    /// Runs the supervisor (and thus the process) as another user.
    pub(crate) uid_gid: Option<(u32, u32)>,
    /// Runs the process in this network namespace (a [`crate::Host`]'s), through
    /// `ip netns exec`, which execs it: the pid is the process's own.
    pub(crate) netns: Option<&'a str>,
}

impl<'a> Spawn<'a> {
    /// A server in its own temp dir `dir`, killed with `stop`.
    pub(crate) fn server(
        program: &'a Path,
        args: &'a [OsString],
        dir: &'a Path,
        log: &'a Path,
        stop: StopSignal,
    ) -> Self {
        Self {
            program,
            args,
            envs: &[],
            dir,
            owns_dir: true,
            log,
            stop,
            uid_gid: None,
            netns: None,
        }
    }
}

/// A server process running under a `sh` supervisor.
#[derive(Debug)]
pub(crate) struct Supervised {
    supervisor: Child,
    stdin: Option<ChildStdin>,
    pid: u32,
    /// How long the supervisor lets the server stop before SIGKILL.
    grace: Duration,
}

impl Supervised {
    /// Spawns `program args...` under the supervisor, as `spawn` says.
    pub(crate) fn spawn(spawn: &Spawn<'_>) -> Result<Self> {
        let Spawn {
            program,
            args,
            envs,
            dir,
            owns_dir,
            log,
            stop,
            uid_gid,
            netns,
        } = *spawn;
        let (ticks, sig, grace) = match stop {
            StopSignal::Kill => (0, "KILL", Duration::ZERO),
            StopSignal::QuitThenKill(grace) => ((grace.as_millis() / 20).max(1), "QUIT", grace),
            StopSignal::TermThenKill(grace) => ((grace.as_millis() / 20).max(1), "TERM", grace),
        };
        // Entering a namespace takes root, so the supervisor stays root there
        // and `setpriv` (which execs too) changes the user after `ip` did.
        let mut prefix: Vec<OsString> = Vec::new();
        let mut supervisor_user = uid_gid;
        if let Some(netns) = netns {
            let sbin = [PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")];
            prefix.push(find_binary("ip", &sbin, "apt-get install -y iproute2")?.into());
            prefix.extend(["netns".into(), "exec".into(), netns.into()]);
            if let Some((uid, gid)) = uid_gid {
                let bin = [PathBuf::from("/usr/bin"), PathBuf::from("/bin")];
                prefix.push(find_binary("setpriv", &bin, "apt-get install -y util-linux")?.into());
                prefix.push(format!("--reuid={uid}").into());
                prefix.push(format!("--regid={gid}").into());
                prefix.push("--clear-groups".into());
            }
            supervisor_user = None;
        }
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(SUPERVISOR)
            .arg("seawall-testkit-supervisor")
            .arg(log)
            .arg(if owns_dir {
                dir.as_os_str()
            } else {
                "".as_ref()
            })
            .arg(ticks.to_string())
            .arg(sig)
            .args(&prefix)
            .arg(program)
            .args(args)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = supervisor_user {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        let what = format!("{} (under /bin/sh supervisor)", program.display());
        let mut supervisor = cmd.spawn().map_err(io_err(format!("spawning {what}")))?;
        let stdin = supervisor.stdin.take();
        let stdout = supervisor.stdout.take();
        let mut line = String::new();
        if let Some(stdout) = stdout {
            BufReader::new(stdout)
                .read_line(&mut line)
                .map_err(io_err(format!("reading the pid of {what}")))?;
        }
        let Ok(pid) = line.trim().parse::<u32>() else {
            let _ = supervisor.kill();
            let _ = supervisor.wait();
            return Err(Error::Io {
                context: format!("starting {what}"),
                source: std::io::Error::other(format!(
                    "supervisor printed {line:?} instead of a pid"
                )),
            });
        };
        Ok(Self {
            supervisor,
            stdin,
            pid,
            grace,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the server process still exists and is not a zombie.
    pub(crate) fn is_alive(&self) -> bool {
        pid_is_alive(self.pid)
    }

    /// Sends `sig` to the server process itself (not the supervisor).
    pub(crate) fn signal(&self, sig: Signal) -> Result<()> {
        send_signal(self.pid, sig)
    }

    /// Ends the server the supervisor's way and waits until it has been reaped.
    pub(crate) fn stop(mut self) -> Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<()> {
        let Some(mut stdin) = self.stdin.take() else {
            return Ok(());
        };
        // Fails only if the supervisor is already gone, which the wait below handles.
        let _ = stdin.write_all(b"keep-dir\n");
        drop(stdin);
        // A service drains within its grace; it is not cut short here.
        let deadline = Instant::now() + self.grace + STOP_MARGIN;
        loop {
            match self.supervisor.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                Ok(None) => break,
                Err(source) => {
                    return Err(Error::Io {
                        context: format!("waiting for the supervisor of pid {}", self.pid),
                        source,
                    });
                }
            }
        }
        // The supervisor is wedged; do its job for it so nothing is left behind.
        let _ = send_signal(self.pid, Signal::SIGKILL);
        let _ = self.supervisor.kill();
        self.supervisor.wait().map_err(io_err(format!(
            "reaping the supervisor of pid {}",
            self.pid
        )))?;
        Ok(())
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

pub(crate) fn send_signal(pid: u32, sig: Signal) -> Result<()> {
    let raw = i32::try_from(pid).map_err(|_| Error::Signal {
        pid,
        signal: sig.as_str(),
        source: nix::errno::Errno::ESRCH,
    })?;
    signal::kill(Pid::from_raw(raw), sig).map_err(|source| Error::Signal {
        pid,
        signal: sig.as_str(),
        source,
    })
}

/// Whether `pid` exists and has not exited. A zombie counts as dead: the server is a
/// grandchild, so it stays a zombie until its supervisor reaps it.
pub(crate) fn pid_is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised command name, which may itself hold ')'.
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].trim_start().chars().next());
            !matches!(state, Some('Z' | 'X' | 'x'))
        }
        Err(_) if Path::new("/proc/self/stat").exists() => false,
        Err(_) => i32::try_from(pid)
            .map(|raw| signal::kill(Pid::from_raw(raw), None).is_ok())
            .unwrap_or(false),
    }
}

/// Returns the last `lines` lines of a log file, or a note saying why it could not be read.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    const MAX_BYTES: u64 = 16 * 1024;
    let read = || -> std::io::Result<String> {
        let mut file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            if tail.is_empty() {
                String::from("(log is empty)")
            } else {
                tail.join("\n")
            }
        }
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

/// The executable a builder was told to use, or else the one `find_binary` finds.
pub(crate) fn resolve_binary(
    explicit: Option<PathBuf>,
    name: &str,
    extra_dirs: &[PathBuf],
    install: &'static str,
) -> Result<PathBuf> {
    match explicit {
        Some(path) if is_executable(&path) => Ok(path),
        Some(path) => Err(Error::MissingBinary {
            binary: path.display().to_string(),
            searched: String::from("not an executable file"),
            install,
        }),
        None => find_binary(name, extra_dirs, install),
    }
}

/// Finds an executable in `$PATH`, then in `extra_dirs` (for a `$PATH` missing them).
pub(crate) fn find_binary(
    name: &str,
    extra_dirs: &[PathBuf],
    install: &'static str,
) -> Result<PathBuf> {
    let path_dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let dirs: Vec<&PathBuf> = path_dirs.iter().chain(extra_dirs).collect();
    for dir in &dirs {
        let candidate = dir.join(name);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    let searched = dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    Err(Error::MissingBinary {
        binary: name.to_owned(),
        searched: format!("searched {searched}"),
        install,
    })
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Ports are drawn from below the kernel's ephemeral range (32768+) so that outgoing
/// connections do not grab them, and low enough that `port + 10000` (the Redis Cluster
/// bus) stays below that range too and never collides with another node's data port.
const PORT_RANGE: std::ops::Range<u16> = 12000..22000;

/// Ports handed out by this process, so parallel tests here never pick the same one
/// between checking it and binding it.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Picks a loopback port that is currently free (and, with `with_bus`, whose
/// cluster-bus port `port + 10000` is free too). Callers must still retry on
/// "address in use": another process may grab the port before the server binds it.
pub(crate) fn pick_port(with_bus: bool) -> Result<u16> {
    const ATTEMPTS: u32 = 500;
    let random = RandomState::new();
    let span = u64::from(PORT_RANGE.end - PORT_RANGE.start);
    for attempt in 0..ATTEMPTS {
        let offset = random.hash_one((attempt, std::process::id(), Instant::now())) % span;
        let Ok(offset) = u16::try_from(offset) else {
            continue;
        };
        let port = PORT_RANGE.start + offset;
        if port == 6379 || port == 16379 {
            continue;
        }
        {
            let mut guard = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
            let set = guard.get_or_insert_with(HashSet::new);
            // Forget old hand-outs long before the range could run dry.
            if set.len() > usize::from(PORT_RANGE.end - PORT_RANGE.start) / 2 {
                set.clear();
            }
            if !set.insert(port) {
                continue;
            }
        }
        if port_is_free(port) && (!with_bus || port_is_free(port + 10000)) {
            return Ok(port);
        }
    }
    Err(Error::NoFreePort {
        attempts: ATTEMPTS,
        range: format!("127.0.0.1:{}..{}", PORT_RANGE.start, PORT_RANGE.end),
    })
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// Polls `probe` until it succeeds and hands the process back. If the process
/// dies or `timeout` passes first, the process is stopped and the error carries
/// the end of its log (read after the stop, so it is complete).
pub(crate) fn await_ready(
    proc: Supervised,
    timeout: Duration,
    what: String,
    log: &Path,
    mut probe: impl FnMut() -> Result<(), String>,
) -> Result<Supervised> {
    let deadline = Instant::now() + timeout;
    loop {
        if !proc.is_alive() {
            drop(proc);
            return Err(Error::Exited {
                what,
                log: log.to_path_buf(),
                log_tail: log_tail(log, 20),
            });
        }
        let last_problem = match probe() {
            Ok(()) => return Ok(proc),
            Err(problem) => problem,
        };
        if Instant::now() >= deadline {
            drop(proc);
            return Err(Error::StartTimeout {
                what,
                waited: timeout,
                last_problem,
                log: log.to_path_buf(),
                log_tail: log_tail(log, 20),
            });
        }
        thread::sleep(Duration::from_millis(20));
    }
}
