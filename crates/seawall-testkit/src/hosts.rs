//! Network hosts: Linux network namespaces on one bridge, each with an
//! address of its own, and faults between them (partitions, isolation, a
//! one-way link) as nftables rules.
//!
//! A [`Network`] owns a `/24` under `10.200.0.0/16`, a bridge in the root
//! namespace holding its `.1` address, and one namespace per [`Host`] joined
//! to the bridge by a veth pair (`.2`, `.3`, ... in the order they were
//! added). The namespaces have no default route and nothing forwards or
//! translates for them, so their traffic never leaves the machine; the root
//! namespace (the test process and its clients) reaches every host, and no
//! fault ever cuts it off.
//!
//! # Names, claims and cleanup
//!
//! Every namespace is called `seawall-<pid>-<net>-<host>` and every link
//! `sw<pid>-<net>...` (at most 15 bytes, as the kernel requires), where
//! `<pid>` is the owning process and `<net>` the network's `/24` in two hex
//! digits. The `/24` is claimed with an exclusive `flock` on
//! `/run/seawall-testkit/net-<net>.lock`, held for the network's life, and
//! only when no interface already has an address in it, so networks of
//! parallel tests, in one test binary or several, never collide.
//!
//! Dropping a network removes everything it created. So that nothing
//! outlives an owner that dies without dropping it (a panic that aborts, a
//! SIGKILL, Ctrl-C), each network starts a small `sh` janitor whose stdin is
//! a pipe from the owner, as the servers' supervisors do: when the pipe
//! closes without a word from the owner, the janitor deletes the network's
//! namespaces and links. As a last resort, every new network first removes
//! the leftovers of owners that no longer run.
//!
//! # Faults
//!
//! Each fault adds dropped directions (`from` → `to`) to those already in
//! place, and [`heal`](Network::heal) removes them all. A dropped direction
//! is a `drop` rule for `from`'s address in `to`'s input hook, in one table
//! (`inet seawall_faults`) per namespace, rewritten as a whole in one `nft`
//! transaction. The packets leave the sender and vanish on arrival, as they
//! would on a broken link: the sender learns nothing (a drop in its own
//! output hook would fail its `send` at once), a connection attempt times
//! out and an established connection stalls.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread;

use crate::error::{Error, Result, io_err};
use crate::process;

const INSTALL_IPROUTE: &str = "apt-get install -y iproute2";
const INSTALL_NFT: &str = "apt-get install -y nftables";

/// The first two octets of every network's `/24`.
const SUPERNET: [u8; 2] = [10, 200];

/// Where the `/24` claims live: shared by every process on the machine.
const CLAIM_DIR: &str = "/run/seawall-testkit";

/// The prefix of every namespace a network creates.
const NETNS_PREFIX: &str = "seawall-";

/// The prefix of every link (bridge, veth) a network creates.
const LINK_PREFIX: &str = "sw";

/// The nftables table holding a namespace's faults.
const FAULT_TABLE: &str = "inet seawall_faults";

/// The most hosts one network holds (`.2` to `.254`).
const MAX_HOSTS: usize = 253;

/// Deletes the network's namespaces and links when its owner goes away
/// without saying `done` first. It ignores the signals a terminal or a
/// process group sends, so a Ctrl-C that ends the owner does not end it.
const JANITOR: &str = r#"
trap '' INT TERM HUP
ip=$1; tag=$2
clean=1
while read -r line; do
    if [ "$line" = done ]; then clean=; fi
done
[ -n "$clean" ] || exit 0
"$ip" -o link show 2>/dev/null | while read -r _ name _; do
    name=${name%:}; name=${name%@*}
    case $name in sw$tag*) "$ip" link del "$name" 2>/dev/null ;; esac
done
"$ip" netns list 2>/dev/null | while read -r name _; do
    case $name in seawall-$tag-*) "$ip" netns del "$name" 2>/dev/null ;; esac
done
exit 0
"#;

/// One host of a [`Network`]: a network namespace with one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    name: String,
    addr: Ipv4Addr,
    netns: String,
}

impl Host {
    /// The name it was added with, e.g. `redis-1`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its address, reachable from every host and from the root namespace.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The network namespace's name, as `ip netns exec` takes it.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Runs `f` on a thread of its own inside the host's network namespace
    /// and returns what it returns. Sockets `f` creates belong to the host
    /// and keep working on any thread afterwards, e.g. a `TcpListener`
    /// bound to [`addr`](Self::addr), or a client whose packets the host's
    /// faults apply to.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let path = Path::new("/run/netns").join(&self.netns);
        let netns = File::open(&path).map_err(io_err(format!("opening {}", path.display())))?;
        thread::scope(|scope| {
            scope
                .spawn(move || {
                    nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(
                        |errno| Error::Io {
                            context: format!("entering the network namespace {}", self.netns),
                            source: std::io::Error::from(errno),
                        },
                    )?;
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

/// Hosts in network namespaces on one bridge, and the faults between them.
/// Everything it created is removed when it is dropped (see the module docs
/// for an owner that dies first).
///
/// ```no_run
/// use std::net::{TcpListener, TcpStream};
/// use std::time::Duration;
/// use seawall_testkit::Network;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut network = Network::new()?;
/// let server = network.add_host("server")?;
/// let client = network.add_host("client")?;
/// let listener = server.run(|| TcpListener::bind((server.addr(), 7000)))??;
/// let connect = || TcpStream::connect_timeout(&listener.local_addr()?, Duration::from_secs(1));
/// assert!(client.run(connect)?.is_ok());
/// network.isolate("server")?;
/// assert!(client.run(connect)?.is_err()); // dropped: the connect times out
/// assert!(connect().is_ok()); // the root namespace is never cut off
/// network.heal()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Network {
    tag: String,
    octet: u8,
    bridge: String,
    hosts: Vec<Host>,
    /// Dropped directions, as indices into `hosts`.
    cuts: BTreeSet<(usize, usize)>,
    /// The rules each host's namespace holds now (empty: no table).
    applied: Vec<String>,
    ip: PathBuf,
    nft: PathBuf,
    janitor: Option<(Child, ChildStdin)>,
    // Declared last: the claim is let go once everything else is gone.
    _claim: File,
}

impl Network {
    /// Removes the leftovers of networks whose owners no longer run, claims
    /// a free `/24` and creates its bridge.
    pub fn new() -> Result<Self> {
        let ip = process::find_binary("ip", &sbin_dirs(), INSTALL_IPROUTE)?;
        let nft = process::find_binary("nft", &sbin_dirs(), INSTALL_NFT)?;
        remove_stale_with(&ip);
        let (octet, claim) = claim_subnet(&ip)?;
        let tag = format!("{}-{octet:02x}", std::process::id());
        let bridge = format!("{LINK_PREFIX}{tag}br");
        let janitor = spawn_janitor(&ip, &tag)?;
        let network = Self {
            tag,
            octet,
            bridge,
            hosts: Vec::new(),
            cuts: BTreeSet::new(),
            applied: Vec::new(),
            ip,
            nft,
            janitor: Some(janitor),
            _claim: claim,
        };
        let gateway = network.gateway();
        network.ip_batch(
            None,
            &format!(
                "link add {bridge} type bridge\n\
                 addr add {gateway}/24 dev {bridge}\n\
                 link set {bridge} up\n",
                bridge = network.bridge
            ),
        )?;
        Ok(network)
    }

    /// Removes the namespaces and links of every network whose owner no
    /// longer runs. [`new`](Self::new) does this first; call it to clean up
    /// without starting a network.
    pub fn remove_stale() -> Result<()> {
        let ip = process::find_binary("ip", &sbin_dirs(), INSTALL_IPROUTE)?;
        remove_stale_with(&ip);
        Ok(())
    }

    /// Adds a host called `name` (1 to 32 of `a-z A-Z 0-9 _ -`, unique in
    /// this network) with the next free address, and returns it.
    pub fn add_host(&mut self, name: &str) -> Result<Host> {
        let valid = (1..=32).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
        if !valid || self.index(name).is_ok() {
            return Err(invalid(format!(
                "a host may not be called {name:?}: names are 1 to 32 of a-z A-Z 0-9 _ -, \
                 unique in their network"
            )));
        }
        if self.hosts.len() >= MAX_HOSTS {
            return Err(invalid(format!(
                "a network holds {MAX_HOSTS} hosts at most"
            )));
        }
        let last = u8::try_from(self.hosts.len() + 2)
            .map_err(|_| invalid(String::from("too many hosts")))?;
        let [a, b] = SUPERNET;
        let host = Host {
            name: name.to_owned(),
            addr: Ipv4Addr::new(a, b, self.octet, last),
            netns: format!("{NETNS_PREFIX}{}-{name}", self.tag),
        };
        let veth = format!("{LINK_PREFIX}{}{last:02x}", self.tag);
        // The namespace end is created inside the namespace, as eth0.
        self.ip_batch(
            None,
            &format!(
                "netns add {netns}\n\
                 link add {veth} type veth peer name eth0 netns {netns}\n\
                 link set {veth} master {bridge} up\n",
                netns = host.netns,
                bridge = self.bridge,
            ),
        )?;
        self.ip_batch(
            Some(&host.netns),
            &format!(
                "addr add {}/24 dev eth0\nlink set eth0 up\nlink set lo up\n",
                host.addr
            ),
        )?;
        self.hosts.push(host.clone());
        self.applied.push(String::new());
        Ok(host)
    }

    /// Every host, in the order they were added.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The host called `name`.
    pub fn host(&self, name: &str) -> Result<&Host> {
        self.index(name).map(|i| &self.hosts[i])
    }

    /// The bridge's address (`.1`), which the root namespace's packets to
    /// the hosts come from.
    pub fn gateway(&self) -> Ipv4Addr {
        let [a, b] = SUPERNET;
        Ipv4Addr::new(a, b, self.octet, 1)
    }

    /// The network's `/24`, e.g. `10.200.7.0/24`.
    pub fn subnet(&self) -> String {
        let [a, b] = SUPERNET;
        format!("{a}.{b}.{}.0/24", self.octet)
    }

    /// Cuts the hosts on each side off from the hosts on every other side,
    /// both ways. Hosts on no side keep reaching everyone. A host may be on
    /// one side only.
    pub fn partition(&mut self, sides: &[&[&str]]) -> Result<()> {
        let mut seen = BTreeSet::new();
        let mut indices = Vec::with_capacity(sides.len());
        for side in sides {
            let mut side_indices = Vec::with_capacity(side.len());
            for name in *side {
                let index = self.index(name)?;
                if !seen.insert(index) {
                    return Err(invalid(format!("{name} is on more than one side")));
                }
                side_indices.push(index);
            }
            indices.push(side_indices);
        }
        for (i, side) in indices.iter().enumerate() {
            for (j, other) in indices.iter().enumerate() {
                if i != j {
                    for &from in side {
                        for &to in other {
                            self.cuts.insert((from, to));
                        }
                    }
                }
            }
        }
        self.apply()
    }

    /// Cuts `name` off from every other host, both ways.
    pub fn isolate(&mut self, name: &str) -> Result<()> {
        self.index(name)?;
        let others: Vec<String> = self
            .hosts
            .iter()
            .filter(|host| host.name != name)
            .map(|host| host.name.clone())
            .collect();
        let others: Vec<&str> = others.iter().map(String::as_str).collect();
        self.partition(&[&[name], &others])
    }

    /// Drops what `from` sends to `to`, and only that: a half-dead link.
    /// (A TCP connection needs both ways, so none is made either way; a
    /// datagram from `to` still reaches `from`.)
    pub fn one_way(&mut self, from: &str, to: &str) -> Result<()> {
        let (from, to) = (self.index(from)?, self.index(to)?);
        if from == to {
            return Err(invalid(String::from(
                "a host cannot be cut off from itself",
            )));
        }
        self.cuts.insert((from, to));
        self.apply()
    }

    /// Removes every fault: all hosts reach each other again.
    pub fn heal(&mut self) -> Result<()> {
        self.cuts.clear();
        self.apply()
    }

    /// Whether `from`'s packets to `to` are dropped now.
    pub fn is_cut(&self, from: &str, to: &str) -> Result<bool> {
        Ok(self.cuts.contains(&(self.index(from)?, self.index(to)?)))
    }

    fn index(&self, name: &str) -> Result<usize> {
        self.hosts
            .iter()
            .position(|host| host.name == name)
            .ok_or_else(|| Error::UnknownHost {
                name: name.to_owned(),
                known: self
                    .hosts
                    .iter()
                    .map(|host| host.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Rewrites the rules of every host whose rules changed, all at once.
    fn apply(&mut self) -> Result<()> {
        let wanted: Vec<String> = (0..self.hosts.len()).map(|i| self.rules(i)).collect();
        let changed: Vec<usize> = (0..self.hosts.len())
            .filter(|&i| wanted[i] != self.applied[i])
            .collect();
        let results: Vec<Result<()>> = thread::scope(|scope| {
            let handles: Vec<_> = changed
                .iter()
                .map(|&i| {
                    let (host, rules) = (&self.hosts[i], &wanted[i]);
                    let (ip, nft) = (&self.ip, &self.nft);
                    scope.spawn(move || load_rules(ip, nft, host, rules))
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| {
                    handle
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        });
        for (&i, result) in changed.iter().zip(results) {
            // What failed to load stays as it was, so the next call retries it.
            if result.is_ok() {
                self.applied[i].clone_from(&wanted[i]);
            }
            result?;
        }
        Ok(())
    }

    /// The `nft` table that host `i` needs, or "" for none.
    fn rules(&self, i: usize) -> String {
        let from: Vec<String> = self
            .cuts
            .iter()
            .filter(|(_, to)| *to == i)
            .map(|&(from, _)| self.hosts[from].addr.to_string())
            .collect();
        if from.is_empty() {
            return String::new();
        }
        format!(
            "table {FAULT_TABLE} {{\n    chain input {{\n        \
             type filter hook input priority 0; policy accept;\n        \
             ip saddr {{ {} }} drop\n    }}\n}}\n",
            from.join(", ")
        )
    }

    /// Runs `ip -batch -` (in `netns`, if given) on `commands`.
    fn ip_batch(&self, netns: Option<&str>, commands: &str) -> Result<()> {
        let mut cmd = Command::new(&self.ip);
        if let Some(netns) = netns {
            cmd.args(["-n", netns]);
        }
        cmd.args(["-batch", "-"]);
        run(cmd, commands)
    }

    fn remove_all(&mut self) {
        // Deleting one end of a veth pair deletes both; deleting a namespace
        // only unmounts it, so its eth0 would live on while anything runs in it.
        let mut commands = String::new();
        for (i, host) in self.hosts.iter().enumerate() {
            let _ = writeln!(commands, "link del {LINK_PREFIX}{}{:02x}", self.tag, i + 2);
            let _ = writeln!(commands, "netns del {}", host.netns);
        }
        let _ = writeln!(commands, "link del {}", self.bridge);
        let mut cmd = Command::new(&self.ip);
        cmd.args(["-force", "-batch", "-"]);
        let _ = run(cmd, &commands);
        self.hosts.clear();
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.remove_all();
        if let Some((mut child, mut stdin)) = self.janitor.take() {
            let _ = stdin.write_all(b"done\n");
            drop(stdin);
            let _ = child.wait();
        }
    }
}

fn sbin_dirs() -> Vec<PathBuf> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(PathBuf::from)
        .collect()
}

fn invalid(message: String) -> Error {
    Error::Io {
        context: String::from("configuring a network of hosts"),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, message),
    }
}

/// Runs `cmd` with `input` on its stdin; an error carries its output.
fn run(mut cmd: Command, input: &str) -> Result<()> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let command = format!("{cmd:?}");
    let mut child = cmd.spawn().map_err(io_err(format!("running {command}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(io_err(format!("writing to {command}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(io_err(format!("running {command}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::CommandFailed {
        command: format!("{command} <<<{input:?}"),
        status: out.status.to_string(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}

/// Replaces `host`'s fault table with `rules` ("" removes it), in one transaction.
fn load_rules(ip: &Path, nft: &Path, host: &Host, rules: &str) -> Result<()> {
    let mut cmd = Command::new(ip);
    cmd.args(["netns", "exec", &host.netns])
        .arg(nft)
        .args(["-f", "-"]);
    // Adding first makes the delete succeed whether or not the table exists.
    let script = format!("add table {FAULT_TABLE}\ndelete table {FAULT_TABLE}\n{rules}");
    run(cmd, &script)
}

fn spawn_janitor(ip: &Path, tag: &str) -> Result<(Child, ChildStdin)> {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(JANITOR)
        .arg("seawall-testkit-janitor")
        .arg(ip)
        .arg(tag)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(io_err("spawning the network's janitor"))?;
    let stdin = child.stdin.take().ok_or_else(|| Error::Io {
        context: String::from("spawning the network's janitor"),
        source: std::io::Error::other("no stdin pipe"),
    })?;
    Ok((child, stdin))
}

/// Claims a `/24` that no live network holds (its lock) and that no
/// interface has an address in.
fn claim_subnet(ip: &Path) -> Result<(u8, File)> {
    std::fs::create_dir_all(CLAIM_DIR).map_err(io_err(format!("creating {CLAIM_DIR}")))?;
    let in_use = command_output(ip, &["-o", "-4", "addr", "show"]).unwrap_or_default();
    let [a, b] = SUPERNET;
    // Start where this process's pid points, so parallel processes rarely
    // contend for the same lock.
    let start = std::process::id() % 256;
    for step in 0..256 {
        let Ok(octet) = u8::try_from((start + step) % 256) else {
            continue;
        };
        if in_use.contains(&format!(" {a}.{b}.{octet}.")) {
            continue;
        }
        let path = Path::new(CLAIM_DIR).join(format!("net-{octet:02x}.lock"));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(format!("opening {}", path.display())))?;
        if file.try_lock().is_ok() {
            // Checked again under the lock: a network may have been made
            // between the listing and the lock.
            let now = command_output(ip, &["-o", "-4", "addr", "show"]).unwrap_or_default();
            if !now.contains(&format!(" {a}.{b}.{octet}.")) {
                return Ok((octet, file));
            }
        }
    }
    Err(invalid(format!(
        "no free /24 under {a}.{b}.0.0/16: every one is claimed or has an address on it"
    )))
}

fn command_output(program: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(io_err(format!("running {}", program.display())))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The pid in a namespace or link name this module made, if it is one.
fn owner_of(name: &str) -> Option<u32> {
    let (rest, netns) = match name.strip_prefix(NETNS_PREFIX) {
        Some(rest) => (rest, true),
        None => (name.strip_prefix(LINK_PREFIX)?, false),
    };
    let (pid, rest) = rest.split_once('-')?;
    let hex = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let ours = if netns {
        rest.split_once('-')
            .is_some_and(|(net, host)| hex(net) && !host.is_empty())
    } else {
        rest.len() == 4 && hex(&rest[..2]) && (hex(&rest[2..]) || &rest[2..] == "br")
    };
    (ours && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        .then(|| pid.parse().ok())
        .flatten()
}

fn remove_stale_with(ip: &Path) {
    let dead = |name: &str| owner_of(name).is_some_and(|pid| !process::pid_is_alive(pid));
    let mut commands = String::new();
    for line in command_output(ip, &["-o", "link", "show"])
        .unwrap_or_default()
        .lines()
    {
        let name = line.split_whitespace().nth(1).unwrap_or_default();
        let name = name.trim_end_matches(':');
        let name = name.split_once('@').map_or(name, |(name, _)| name);
        if dead(name) {
            let _ = writeln!(commands, "link del {name}");
        }
    }
    for line in command_output(ip, &["netns", "list"])
        .unwrap_or_default()
        .lines()
    {
        let name = line.split_whitespace().next().unwrap_or_default();
        if dead(name) {
            let _ = writeln!(commands, "netns del {name}");
        }
    }
    if !commands.is_empty() {
        let mut cmd = Command::new(ip);
        cmd.args(["-force", "-batch", "-"]);
        let _ = run(cmd, &commands);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_name_their_owner() {
        assert_eq!(owner_of("seawall-123-0a-redis-1"), Some(123));
        assert_eq!(owner_of("sw4194304-ffbr"), Some(4_194_304));
        assert_eq!(owner_of("sw77-0a02"), Some(77));
        assert_eq!(owner_of("sw77-0a0"), None);
        assert_eq!(owner_of("swx-0a02"), None);
        assert_eq!(owner_of("eth0"), None);
        assert_eq!(owner_of("seawall-12-zz-a"), None);
        assert!("sw4194304-ff02".len() <= 15);
    }
}
