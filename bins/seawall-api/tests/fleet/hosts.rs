//! A fleet on network hosts: every process on a host of its own, and one
//! instance cut off from every other host and let back.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use seawall_testkit::{Fleet, HostRole, wait};
use serde_json::{Value, json};

use crate::support::{self, client};

/// `count` reads through HAProxy; every one must succeed.
async fn reads_succeed(client: &reqwest::Client, fleet: &Fleet, count: usize) {
    for i in 0..count {
        let url = format!("{}/api/content?page={}", fleet.url(), 1 + i % 5);
        let response = client
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET {url}: {error}"));
        assert!(
            response.status().is_success(),
            "GET {url}: {}",
            response.status()
        );
    }
}

/// Requests HAProxy has sent to `name` so far.
fn requests_to(fleet: &Fleet, name: &str) -> u64 {
    let states = fleet.haproxy().stats().expect("HAProxy's stats");
    states
        .iter()
        .find(|state| state.name == name)
        .unwrap_or_else(|| panic!("{name} in {states:?}"))
        .requests
}

/// Waits until HAProxy sends `name` requests (`up`) or no longer does, and
/// says how long that took: a figure to print, not a bound (a loaded
/// machine takes longer), so the wait goes on for up to [`wait::patience`].
pub(crate) async fn wait_for_rotation(fleet: &Fleet, name: &str, up: bool) -> Duration {
    let since = Instant::now();
    loop {
        let states = fleet.haproxy().stats().expect("HAProxy's stats");
        if states
            .iter()
            .any(|state| state.name == name && state.is_up() == up)
        {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < wait::patience(),
            "waited {:?} for {name} to go {}: {states:?}",
            wait::patience(),
            if up { "up" } else { "down" }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_isolated_instance_leaves_the_rotation_and_comes_back_after_a_heal() {
    let started = Instant::now();
    let mut fleet = support::start(support::builder().hosts(true).instances(3).workers(1)).await;
    println!(
        "a fleet on network hosts started in {:?}",
        started.elapsed()
    );

    let hosts = fleet.hosts();
    let names: Vec<&str> = hosts.iter().map(|host| host.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "redis-1", "redis-2", "redis-3", "redis-4", "redis-5", "redis-6", "postgres", "api-1",
            "api-2", "api-3", "worker-1", "haproxy"
        ]
    );
    let addrs: HashSet<_> = hosts.iter().map(|host| host.addr).collect();
    assert_eq!(addrs.len(), hosts.len(), "one address per host: {hosts:?}");
    let haproxy = hosts.iter().find(|host| host.role == HostRole::Haproxy);
    assert_eq!(
        haproxy.map(|host| host.addr),
        Some(match fleet.addr().ip() {
            std::net::IpAddr::V4(ip) => ip,
            other => panic!("HAProxy on {other}"),
        })
    );
    for (host, instance) in hosts
        .iter()
        .filter(|host| host.role == HostRole::Api)
        .zip(fleet.instance_addrs())
    {
        assert_eq!(
            instance.ip(),
            host.addr,
            "{} listens on its host",
            host.name
        );
    }
    // The Cluster's slot map names the hosts' addresses.
    let master = fleet.master_host_of("{email}").expect("a master");
    let replica = fleet.replica_host_of("{email}").expect("a replica");
    assert!(master.starts_with("redis-") && replica.starts_with("redis-") && master != replica);

    let client = client();
    reads_succeed(&client, &fleet, 30).await;
    for name in ["api-1", "api-2", "api-3"] {
        assert!(requests_to(&fleet, name) > 0, "HAProxy sent {name} nothing");
    }

    fleet.isolate("api-2").expect("isolates");
    let left = wait_for_rotation(&fleet, "api-2", false).await;
    println!("api-2 left the rotation {left:?} after its isolation");
    // The test process still reaches api-2, which can reach neither Redis
    // nor PostgreSQL now.
    let readyz = format!("http://{}/readyz", fleet.instance_addrs()[1]);
    let answer = match client.get(&readyz).send().await {
        Ok(response) => response.status().to_string(),
        Err(error) => format!("no answer: {error}"),
    };
    println!("api-2's /readyz while isolated: {answer}");
    let before = requests_to(&fleet, "api-2");
    reads_succeed(&client, &fleet, 30).await;
    assert_eq!(
        requests_to(&fleet, "api-2"),
        before,
        "api-2 got requests while isolated"
    );

    fleet.heal().expect("heals");
    let back = wait_for_rotation(&fleet, "api-2", true).await;
    println!("api-2 was back in the rotation {back:?} after the heal");
    reads_succeed(&client, &fleet, 30).await;
    assert!(
        requests_to(&fleet, "api-2") > before,
        "api-2 got no requests after the heal"
    );

    let log = std::fs::read_to_string(fleet.faults_path()).expect("faults.jsonl");
    let faults: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    let ops: Vec<(&Value, &Value)> = faults.iter().map(|f| (&f["op"], &f["value"])).collect();
    assert_eq!(
        ops,
        [
            (&json!("isolate"), &json!({"host": "api-2"})),
            (&json!("heal"), &json!({})),
        ]
    );
    for fault in &faults {
        assert_eq!(
            (&fault["process"], &fault["type"]),
            (&json!("nemesis"), &json!("fault"))
        );
    }
    let times: Vec<u64> = faults.iter().filter_map(|f| f["t"].as_u64()).collect();
    assert!(times.len() == 2 && times[0] < times[1], "{times:?}");
    support::stop(fleet).await;
}
