//! Network hosts: reachability, the faults between hosts, and cleanup.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use seawall_testkit::{Host, Network, wait};

use crate::util::TestResult;

const PORT: u16 = 7000;

/// Whether a TCP connection from `from` (a host, or the root namespace for
/// `None`) to `to`'s listener is made within a short timeout.
fn connects(from: Option<&Host>, to: &Host) -> bool {
    let addr = SocketAddr::from((to.addr(), PORT));
    let connect = move || TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok();
    match from {
        Some(host) => host.run(connect).expect("enters the host"),
        None => connect(),
    }
}

/// Waits until `from` reaches `to`: a busy machine may take longer than
/// one attempt's timeout, a cut link never connects.
#[track_caller]
fn reach(from: Option<&Host>, to: &Host) {
    let from_name = from.map_or("the root namespace", Host::name);
    wait::until(format!("{from_name} to reach {}", to.name()), || {
        connects(from, to)
    });
}

fn listen(host: &Host) -> TcpListener {
    host.run(|| TcpListener::bind((host.addr(), PORT)))
        .expect("enters the host")
        .expect("binds")
}

fn udp(host: &Host, port: u16) -> UdpSocket {
    let socket = host
        .run(|| UdpSocket::bind((host.addr(), port)))
        .expect("enters the host")
        .expect("binds");
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("a timeout");
    socket
}

/// Whether a datagram `from` sends reaches `to`.
fn datagram_arrives(from: &UdpSocket, to: &UdpSocket) -> bool {
    let addr = to.local_addr().expect("bound");
    let mut buf = [0; 16];
    // Whatever arrived late from an earlier attempt is not this one's.
    to.set_nonblocking(true).expect("non-blocking");
    while to.recv_from(&mut buf).is_ok() {}
    to.set_nonblocking(false).expect("blocking");
    // A drop is silent: the sender learns nothing.
    from.send_to(b"hello", addr).expect("sends");
    to.recv_from(&mut buf).is_ok()
}

/// Waits until datagrams from `from` reach `to`.
#[track_caller]
fn datagrams_flow(from: &UdpSocket, to: &UdpSocket) {
    let (sender, receiver) = (
        from.local_addr().expect("bound"),
        to.local_addr().expect("bound"),
    );
    wait::until(
        format!("a datagram from {sender} to reach {receiver}"),
        || datagram_arrives(from, to),
    );
}

fn netns_names() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output();
    String::from_utf8_lossy(&out.map(|out| out.stdout).unwrap_or_default()).into_owned()
}

fn link_names() -> String {
    let out = Command::new("ip").args(["-o", "link", "show"]).output();
    String::from_utf8_lossy(&out.map(|out| out.stdout).unwrap_or_default()).into_owned()
}

fn addresses() -> String {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output();
    String::from_utf8_lossy(&out.map(|out| out.stdout).unwrap_or_default()).into_owned()
}

/// `sw<pid>-<net>`: the start of every link name of `host`'s network.
fn link_prefix(host: &Host) -> String {
    let rest = host.netns().strip_prefix("seawall-").expect("the prefix");
    let mut parts = rest.splitn(3, '-');
    let (pid, net) = (parts.next().expect("pid"), parts.next().expect("net"));
    format!("sw{pid}-{net}")
}

#[test]
fn hosts_reach_each_other_until_a_partition_and_again_after_a_heal() -> TestResult {
    let mut network = Network::new()?;
    let a = network.add_host("a")?;
    let b = network.add_host("b")?;
    let c = network.add_host("c")?;
    assert_ne!(a.addr(), b.addr());
    assert_eq!(network.gateway(), Ipv4Addr::from(u32::from(a.addr()) - 1));
    let _listener = listen(&a);
    reach(Some(&b), &a);
    reach(Some(&c), &a);
    reach(None, &a);

    network.partition(&[&["a"], &["b"]])?;
    assert!(network.is_cut("a", "b")? && network.is_cut("b", "a")?);
    assert!(!connects(Some(&b), &a), "b reaches a across the partition");
    // c is on no side and reaches everyone; the root namespace is never
    // cut off.
    reach(Some(&c), &a);
    reach(None, &a);

    network.heal()?;
    reach(Some(&b), &a);

    network.isolate("a")?;
    assert!(!connects(Some(&b), &a) && !connects(Some(&c), &a));
    reach(None, &a);
    network.heal()?;
    reach(Some(&b), &a);
    reach(Some(&c), &a);
    Ok(())
}

#[test]
fn a_one_way_link_drops_one_direction_only() -> TestResult {
    let mut network = Network::new()?;
    let a = network.add_host("a")?;
    let b = network.add_host("b")?;
    let (on_a, on_b) = (udp(&a, 7001), udp(&b, 7001));
    datagrams_flow(&on_a, &on_b);
    datagrams_flow(&on_b, &on_a);

    network.one_way("a", "b")?;
    assert!(network.is_cut("a", "b")? && !network.is_cut("b", "a")?);
    assert!(!datagram_arrives(&on_a, &on_b), "a's datagram reached b");
    datagrams_flow(&on_b, &on_a);
    // TCP needs both ways: no connection either way.
    let _listener = listen(&b);
    assert!(!connects(Some(&a), &b));

    network.heal()?;
    datagrams_flow(&on_a, &on_b);
    reach(Some(&a), &b);
    Ok(())
}

#[test]
fn faults_name_known_hosts_each_on_one_side() -> TestResult {
    let mut network = Network::new()?;
    network.add_host("a")?;
    network.add_host("b")?;
    assert!(network.add_host("a").is_err(), "a second host called a");
    assert!(network.add_host("no spaces").is_err());
    let unknown = network.isolate("z").expect_err("no host z");
    assert!(unknown.to_string().contains("a, b"), "{unknown}");
    assert!(network.partition(&[&["a", "b"], &["a"]]).is_err());
    Ok(())
}

#[test]
fn drop_removes_every_namespace_link_and_address() -> TestResult {
    let mut network = Network::new()?;
    let a = network.add_host("a")?;
    network.add_host("b")?;
    let (prefix, gateway) = (link_prefix(&a), network.gateway().to_string());
    assert!(netns_names().contains(a.netns()));
    assert!(link_names().contains(&prefix));
    assert!(addresses().contains(&gateway));
    drop(network);
    assert!(!netns_names().contains(a.netns()));
    assert!(!link_names().contains(&prefix), "{}", link_names());
    assert!(!addresses().contains(&format!(" {gateway}/")));
    Ok(())
}

#[test]
fn a_dead_owners_leftovers_are_removed_by_the_next_network() -> TestResult {
    let mut dead = Command::new("true").spawn()?;
    let pid = dead.id();
    dead.wait()?;
    let (netns, bridge) = (format!("seawall-{pid}-fe-x"), format!("sw{pid}-febr"));
    let ip = |args: &[&str]| Command::new("ip").args(args).status();
    assert!(ip(&["netns", "add", &netns])?.success());
    assert!(ip(&["link", "add", &bridge, "type", "bridge"])?.success());
    let _network = Network::new()?;
    assert!(!netns_names().contains(&netns));
    assert!(!link_names().contains(&bridge));
    Ok(())
}

/// Started by the test below as a process of its own: holds a network
/// until it is killed.
#[test]
#[ignore = "a helper the SIGKILL test runs in a child process"]
#[allow(clippy::print_stdout)] // how the parent learns the namespace
fn child_holds_a_network() -> TestResult {
    if std::env::var_os("SEAWALL_TESTKIT_NETWORK_CHILD").is_none() {
        return Ok(());
    }
    let mut network = Network::new()?;
    let host = network.add_host("x")?;
    println!("netns={}", host.netns());
    std::thread::sleep(Duration::from_secs(60));
    Ok(())
}

#[test]
fn a_killed_owners_network_is_removed_by_its_janitor() -> TestResult {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["hosts::child_holds_a_network", "--exact", "--ignored"])
        .args(["--nocapture", "--test-threads", "1"])
        .env("SEAWALL_TESTKIT_NETWORK_CHILD", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let netns = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        // After libtest's "test ... " on the same line.
        .find_map(|line| line.split_once("netns=").map(|(_, netns)| netns.to_owned()))
        .ok_or("the child printed no namespace")?;
    assert!(netns_names().contains(&netns));
    child.kill()?; // SIGKILL: no destructor runs
    child.wait()?;
    wait::until(
        format!("the janitor to remove {netns} after its owner died"),
        || !netns_names().contains(&netns),
    );
    Ok(())
}
