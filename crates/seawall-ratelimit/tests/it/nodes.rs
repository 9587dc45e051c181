//! One sick node of a Redis Cluster: only the checks of the slots it serves
//! are decided without Redis, and a block an instance saw holds meanwhile.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use seawall_ratelimit::{FailurePolicy, Limit, Limiter, RedisStore};
use seawall_testkit::RedisCluster;

use crate::support::{client, unique_name};

/// A limiter of 5 an hour with a 15-minute penalty on `store`, deciding in
/// memory (this instance's whole limit) while Redis cannot.
fn limiter(name: &str, store: &RedisStore) -> Limiter {
    Limiter::builder(name)
        .limit(Limit::sliding_window(5, Duration::from_secs(3600)).expect("limit"))
        .penalty(Duration::from_secs(15 * 60))
        .store(store.clone())
        .on_store_failure(FailurePolicy::Insurance { instances: 1 })
        .build()
        .expect("limiter")
}

/// With one master of three frozen (SIGSTOP: connections stay open, nothing
/// answers), two instances keep deciding on Redis every check of a key on
/// the other masters' slots: none of 512 is degraded, before or after the
/// checks of the frozen master's keys that open its breaker. A client
/// blocked on the frozen master stays blocked on both instances, which saw
/// its block, though their checks of it are decided without Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_master_degrades_only_the_checks_of_its_own_slots() {
    // A node timeout longer than the test: the healthy masters never mark
    // the frozen one failed (which, with no replica to promote, would stop
    // the whole cluster).
    let cluster = RedisCluster::builder()
        .node_timeout(Duration::from_secs(600))
        .start()
        .expect("a cluster starts");
    let name = unique_name();
    let stores = [
        RedisStore::new(client(&cluster.url()).await),
        RedisStore::new(client(&cluster.url()).await),
    ];
    let instances: Vec<Limiter> = stores.iter().map(|store| limiter(&name, store)).collect();
    // Keys by the master that holds them.
    let mut keys: HashMap<SocketAddr, Vec<String>> = HashMap::new();
    for n in 0.. {
        let key = format!("client-{n}");
        let subject = format!("{{{}:{name}:{key}}}", stores[0].prefix());
        keys.entry(cluster.master_of(&subject).expect("CLUSTER SLOTS"))
            .or_default()
            .push(key);
        if keys.len() == 3 && keys.values().all(|keys| keys.len() >= 9) {
            break;
        }
    }
    let frozen = cluster.masters()[0].addr();
    let mut sick = keys.remove(&frozen).expect("keys on the frozen master");
    let blocked = sick.pop().expect("a key");
    let healthy: Vec<String> = keys.into_values().flatten().collect();

    // The client uses up its limit, then is refused and blocked; each
    // instance sees the block.
    for attempt in 0..6 {
        let instance = &instances[attempt % 2];
        instance.check(&blocked, 1).await.expect("check");
    }
    for instance in &instances {
        let decision = instance.check(&blocked, 1).await.expect("check");
        assert!(
            !decision.allowed && decision.blocked_for.is_some() && !decision.degraded,
            "{decision:?}"
        );
    }

    let pause = cluster.masters()[0]
        .pause_in_background(Duration::from_secs(300))
        .expect("SIGSTOP");
    let mut degraded = 0;
    let mut checks = 0;
    let healthy_round = async |degraded: &mut usize, checks: &mut usize| {
        for (n, key) in healthy.iter().cycle().take(256).enumerate() {
            let decision = instances[n % 2].check(key, 1).await.expect("check");
            *checks += 1;
            if decision.degraded {
                *degraded += 1;
            }
        }
    };
    healthy_round(&mut degraded, &mut checks).await;
    // The frozen master's keys: their checks wait for the store's timeout,
    // open its breaker and are decided in memory.
    for instance in &instances {
        for key in &sick {
            let decision = instance.check(key, 1).await.expect("check");
            assert!(decision.degraded, "{key} was decided by a frozen master");
        }
        let decision = instance.check(&blocked, 1).await.expect("check");
        assert!(
            decision.degraded && !decision.allowed && decision.blocked_for.is_some(),
            "a blocked client got through while its master was frozen: {decision:?}"
        );
    }
    healthy_round(&mut degraded, &mut checks).await;
    pause.resume();
    assert_eq!(checks, 512);
    assert_eq!(
        degraded, 0,
        "{degraded} of {checks} checks on the healthy masters' slots were decided without Redis"
    );
}
