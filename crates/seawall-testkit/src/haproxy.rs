//! An HAProxy load balancer in front of HTTP servers on loopback.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use crate::error::{Error, Result, io_err};
use crate::hosts::Host;
use crate::process::{self, Spawn, StopSignal, Supervised};

const INSTALL_HAPROXY: &str = "apt-get install -y haproxy";

/// Configures and starts an [`Haproxy`]. Create one with [`Haproxy::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct HaproxyBuilder {
    servers: Vec<(String, SocketAddr)>,
    check_path: String,
    live_path: String,
    check_interval: Duration,
    dir: Option<PathBuf>,
    binary: Option<PathBuf>,
    startup_timeout: Duration,
    host: Option<Host>,
}

impl Default for HaproxyBuilder {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            check_path: String::from("/readyz"),
            live_path: String::from("/livez"),
            check_interval: Duration::from_millis(200),
            dir: None,
            binary: None,
            startup_timeout: crate::wait::patience(),
            host: None,
        }
    }
}

impl HaproxyBuilder {
    /// Adds a backend server called `name` (1 to 32 of `A-Z a-z 0-9 _ -`).
    pub fn server(mut self, name: impl Into<String>, addr: SocketAddr) -> Self {
        self.servers.push((name.into(), addr));
        self
    }

    /// The path of the health check, `GET` every interval; a server is taken out
    /// of the rotation on its first failed check and put back after two passes
    /// (default `/readyz`).
    pub fn check_path(mut self, path: impl Into<String>) -> Self {
        self.check_path = path.into();
        self
    }

    /// The path of the liveness check (default `/livez`): when no server
    /// passes the health check, requests go to every server that passes
    /// this one instead of failing.
    pub fn live_path(mut self, path: impl Into<String>) -> Self {
        self.live_path = path.into();
        self
    }

    /// How often each server is checked (default 200 ms).
    pub fn check_interval(mut self, interval: Duration) -> Self {
        self.check_interval = interval;
        self
    }

    /// Keeps the configuration, log and stats socket in `dir` (which must exist)
    /// instead of a temp dir; nothing in it is deleted.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Runs this `haproxy` executable instead of searching for one.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Runs HAProxy in a [`Host`] of a [`crate::Network`], listening on port
    /// 8080 of the host's address.
    pub fn host(mut self, host: &Host) -> Self {
        self.host = Some(host.clone());
        self
    }

    /// Writes the configuration, starts HAProxy and waits until its stats socket
    /// answers. The servers need not be up yet: each is checked until it passes.
    pub fn start(self) -> Result<Haproxy> {
        let binary = process::resolve_binary(
            self.binary.clone(),
            "haproxy",
            &[PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")],
            INSTALL_HAPROXY,
        )?;
        for (name, _) in &self.servers {
            let valid = (1..=32).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
            if !valid {
                return Err(Error::Io {
                    context: String::from("configuring HAProxy"),
                    source: std::io::Error::other(format!("invalid server name {name:?}")),
                });
            }
        }
        let dir = match &self.dir {
            Some(dir) => Dir::Kept(dir.clone()),
            None => Dir::Temp(
                tempfile::Builder::new()
                    .prefix("seawall-haproxy-")
                    .tempdir()
                    .map_err(io_err("creating a temp dir for HAProxy"))?,
            ),
        };
        let port = match &self.host {
            Some(_) => DEFAULT_HOST_PORT,
            None => process::pick_port(false)?,
        };
        let ip = self.host.as_ref().map_or(Ipv4Addr::LOCALHOST, Host::addr);
        let haproxy = Haproxy {
            ip,
            port,
            servers: self.servers.clone(),
            proc: None,
            dir,
        };
        std::fs::write(
            haproxy.config_path(),
            self.render(haproxy.addr(), haproxy.dir()),
        )
        .map_err(io_err(format!(
            "writing {}",
            haproxy.config_path().display()
        )))?;
        let args = [
            OsString::from("-f"),
            haproxy.config_path().into(),
            // Foreground, no daemon: the supervisor owns the process.
            OsString::from("-db"),
        ];
        let log = haproxy.log_path();
        let proc = Supervised::spawn(&Spawn {
            owns_dir: self.dir.is_none(),
            netns: self.host.as_ref().map(Host::netns),
            ..Spawn::server(
                &binary,
                &args,
                haproxy.dir(),
                &log,
                StopSignal::TermThenKill(Duration::from_secs(2)),
            )
        })?;
        let what = format!("haproxy on {}", haproxy.addr());
        let proc = process::await_ready(proc, self.startup_timeout, what, &log, || {
            haproxy.stats().map(drop).map_err(|e| e.to_string())
        })?;
        Ok(Haproxy {
            proc: Some(proc),
            ..haproxy
        })
    }

    /// The configuration: the shipped file's `defaults` and `frontend api`
    /// as they are (the frontend bound to `listen`), so every HAProxy here
    /// runs the edge an operator deploys, its header rules included; the
    /// global section with the stats socket, and the two backends over this
    /// builder's servers in place of the shipped file's DNS discovery.
    fn render(&self, listen: SocketAddr, dir: &Path) -> String {
        let inter = self.check_interval.as_millis().max(10);
        // Both backends hold every server: checked for readiness in one,
        // for liveness in the other.
        let servers: String = self
            .servers
            .iter()
            .map(|(name, addr)| format!("    server {name} {addr}\n"))
            .collect();
        let frontend = shipped_section("frontend api")
            .lines()
            .map(|line| {
                if line.trim_start().starts_with("bind ") {
                    format!("    bind {listen}\n")
                } else {
                    format!("{line}\n")
                }
            })
            .collect::<String>();
        format!(
            "global
    maxconn 4096
    stats socket {socket} mode 600 level admin
    log stdout format raw local0 info

defaults
{defaults}
frontend api
{frontend}
backend services
    balance roundrobin
    option httpchk GET {check}
    http-check expect status 200
    default-server check inter {inter}ms fastinter {inter}ms downinter {inter}ms rise 2 fall 1
{servers}
backend live
    balance roundrobin
    option httpchk GET {live}
    http-check expect status 200
    default-server check inter {inter}ms fastinter {inter}ms downinter {inter}ms rise 2 fall 1
{servers}",
            socket = self.socket_path(dir).display(),
            defaults = shipped_section("defaults"),
            check = self.check_path,
            live = self.live_path,
        )
    }

    fn socket_path(&self, dir: &Path) -> PathBuf {
        dir.join("haproxy.sock")
    }
}

/// The HAProxy configuration the project ships (`deploy/haproxy.cfg`).
const SHIPPED_CONFIG: &str = include_str!("../../../deploy/haproxy.cfg");

/// The body of the shipped configuration's section `header` (`defaults`,
/// `frontend api`): its indented lines, up to the next section.
///
/// # Panics
///
/// When the shipped file has no such section: the file and this crate are
/// out of step.
fn shipped_section(header: &str) -> String {
    let mut lines = SHIPPED_CONFIG.lines();
    assert!(
        lines.by_ref().any(|line| line.trim_end() == header),
        "deploy/haproxy.cfg has no `{header}` section"
    );
    lines
        .take_while(|line| line.is_empty() || line.starts_with(char::is_whitespace))
        .filter(|line| !line.trim().is_empty())
        .map(|line| format!("{line}\n"))
        .collect()
}

/// A dir that is either deleted on drop or someone else's to keep.
#[derive(Debug)]
pub(crate) enum Dir {
    Temp(TempDir),
    Kept(PathBuf),
}

impl Dir {
    pub(crate) fn path(&self) -> &Path {
        match self {
            Dir::Temp(dir) => dir.path(),
            Dir::Kept(dir) => dir,
        }
    }
}

/// The port of HAProxy on a [`Host`].
const DEFAULT_HOST_PORT: u16 = 8080;

/// An HAProxy process balancing HTTP round robin over its servers, each
/// health-checked (readiness); when none is ready, over every live one
/// (fail open). Stopped on drop.
#[derive(Debug)]
pub struct Haproxy {
    ip: Ipv4Addr,
    port: u16,
    servers: Vec<(String, SocketAddr)>,
    proc: Option<Supervised>,
    // Declared last so the process is gone before a temp dir is deleted.
    dir: Dir,
}

/// One backend server as HAProxy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    /// The server's name.
    pub name: String,
    /// HAProxy's status: `UP`, `DOWN`, `UP 1/2` (going up), `MAINT`, ...
    pub status: String,
    /// Requests sent to it so far.
    pub requests: u64,
}

impl ServerState {
    /// Whether HAProxy sends it requests: `UP`, or `UP 1/2` (up, one check
    /// failed on its way down).
    pub fn is_up(&self) -> bool {
        self.status == "UP" || self.status.starts_with("UP ")
    }
}

impl Haproxy {
    /// A builder.
    pub fn builder() -> HaproxyBuilder {
        HaproxyBuilder::default()
    }

    /// `127.0.0.1:port` of the frontend, or the [host](HaproxyBuilder::host)'s
    /// address and port.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.port))
    }

    /// `http://` and [`addr`](Self::addr).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// HAProxy's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc
            .as_ref()
            .filter(|proc| proc.is_alive())
            .map(Supervised::pid)
    }

    /// The servers it balances over, as configured.
    pub fn servers(&self) -> &[(String, SocketAddr)] {
        &self.servers
    }

    /// The dir holding `haproxy.cfg`, `haproxy.log` and the stats socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir().join("haproxy.cfg")
    }

    /// HAProxy's output: start-up messages and one line per request.
    pub fn log_path(&self) -> PathBuf {
        self.dir().join("haproxy.log")
    }

    /// The state of every backend server, from the stats socket.
    pub fn stats(&self) -> Result<Vec<ServerState>> {
        let csv = self.command("show stat")?;
        let mut lines = csv.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let column = |name: &str| header.iter().position(|h| *h == name);
        let (Some(px), Some(sv), Some(status), Some(total)) = (
            column("pxname"),
            column("svname"),
            column("status"),
            column("stot"),
        ) else {
            return Err(Error::UnexpectedReply {
                command: String::from("show stat"),
                reply: csv,
            });
        };
        Ok(lines
            .map(|line| line.split(',').collect::<Vec<_>>())
            .filter(|fields| {
                fields.get(px) == Some(&"services")
                    && !matches!(fields.get(sv), Some(&("BACKEND" | "FRONTEND")) | None)
            })
            .map(|fields| ServerState {
                name: fields[sv].to_owned(),
                status: fields.get(status).copied().unwrap_or_default().to_owned(),
                requests: fields
                    .get(total)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_default(),
            })
            .collect())
    }

    /// Sends one command to the stats socket (`show stat`, `disable server
    /// services/api-1`, ...) and returns the answer.
    pub fn command(&self, command: &str) -> Result<String> {
        let path = self.dir().join("haproxy.sock");
        let what = format!("HAProxy's stats socket {}", path.display());
        let mut socket = UnixStream::connect(&path).map_err(io_err(what.clone()))?;
        // HAProxy answers at once; the bound only keeps a frozen one from
        // hanging the caller, and leaves a loaded machine room.
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(io_err(what.clone()))?;
        socket
            .write_all(format!("{command}\n").as_bytes())
            .map_err(io_err(what.clone()))?;
        let mut answer = String::new();
        socket
            .read_to_string(&mut answer)
            .map_err(io_err(what.clone()))?;
        Ok(answer)
    }

    /// Waits until HAProxy sends requests to every server.
    pub fn wait_all_up(&self, timeout: Duration) -> Result<()> {
        self.wait_until(timeout, "every server up", |states| {
            states.iter().all(ServerState::is_up)
        })
    }

    /// Waits until `done` holds of the servers' states.
    pub fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        mut done: impl FnMut(&[ServerState]) -> bool,
    ) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let states = self.stats()?;
            if done(&states) {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(Error::Io {
                    context: format!("waiting for HAProxy: {what}"),
                    source: std::io::Error::other(format!("after {timeout:?}: {states:?}")),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_server_is_in_both_backends() {
        let config = Haproxy::builder()
            .server("api-1", SocketAddr::from(([127, 0, 0, 1], 1001)))
            .server("api-2", SocketAddr::from(([127, 0, 0, 1], 1002)))
            .render(SocketAddr::from(([127, 0, 0, 1], 9000)), Path::new("/run"));
        let (services, live) = config.split_once("\nbackend live").expect("two backends");
        let services = services
            .split_once("\nbackend services")
            .expect("services")
            .1;
        for backend in [services, live] {
            assert!(
                backend.contains("server api-1 127.0.0.1:1001\n"),
                "{config}"
            );
            assert!(
                backend.contains("server api-2 127.0.0.1:1002\n"),
                "{config}"
            );
        }
        assert!(
            services.contains("GET /readyz") && live.contains("GET /livez"),
            "{config}"
        );
        assert!(
            config.contains("stats socket /run/haproxy.sock"),
            "{config}"
        );
    }

    #[test]
    fn the_frontend_is_the_shipped_one_on_its_own_address() {
        let config = Haproxy::builder()
            .server("api-1", SocketAddr::from(([127, 0, 0, 1], 1001)))
            .render(SocketAddr::from(([127, 0, 0, 1], 9000)), Path::new("/run"));
        let frontend = config
            .split_once("\nfrontend api\n")
            .and_then(|(_, rest)| rest.split_once("\nbackend "))
            .expect("a frontend")
            .0;
        assert!(frontend.contains("    bind 127.0.0.1:9000\n"), "{config}");
        assert!(!frontend.contains(":8080"), "{config}");
        for line in shipped_section("frontend api").lines() {
            if !line.trim_start().starts_with("bind ") {
                assert!(frontend.contains(line), "{line:?} missing from {config}");
            }
        }
        assert!(frontend.contains("del-header X-User-Id"), "{config}");
        assert!(config.contains(&shipped_section("defaults")), "{config}");
    }
}
