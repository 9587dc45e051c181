//! Redis failing under traffic: reads never fail, the breaker opens and
//! closes, and invalidations made meanwhile reach Redis once it is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use seawall_cache::{BreakerState, Class, TieredCache};
use seawall_testkit::{Persistence, RedisServer, wait};

use crate::support::{Backend, Ready};
use crate::support::{client, unique_prefix};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_traffic_fails_no_read_and_the_breaker_recovers() {
    let mut redis = RedisServer::start().expect("redis-server starts");
    let prefix = unique_prefix();
    // Short enough that the breaker opens soon after the kill, long enough
    // that a loaded machine's slow answer is not taken for a dead server.
    let cache = TieredCache::builder()
        .prefix(&prefix)
        .redis_timeout(Duration::from_secs(1))
        .breaker(3, Duration::from_millis(100))
        .redis(client(&redis.url()).await)
        .ready()
        .await;
    let errors = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let traffic: Vec<_> = (0..8)
        .map(|worker| {
            let (cache, errors, reads, stop) = (
                cache.clone(),
                Arc::clone(&errors),
                Arc::clone(&reads),
                Arc::clone(&stop),
            );
            tokio::spawn(async move {
                let mut i = 0_u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("k:{}", (worker * 1000 + i) % 200);
                    let read = cache.get_or_load(&key, Class::API, move || async move {
                        Ok::<_, std::io::Error>(Some(i))
                    });
                    if read.await.is_err() {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                    if i.is_multiple_of(50) {
                        let _ = cache.invalidate(&key).await;
                    }
                    i += 1;
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill().expect("kills redis");
    wait::until_async("the breaker to open", async || {
        cache.stats().breaker == BreakerState::Open
    })
    .await;
    let during = reads.load(Ordering::Relaxed);
    wait::until_async("reads to go on without Redis", async || {
        reads.load(Ordering::Relaxed) > during
    })
    .await;
    redis.restart().expect("restarts redis");
    wait::until_async("the breaker to close once Redis answers", async || {
        cache.stats().breaker == BreakerState::Closed
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in traffic {
        let _ = task.await;
    }
    assert_eq!(errors.load(Ordering::Relaxed), 0, "no read failed");
    assert!(cache.stats().breaker_opened >= 1);

    // L2 hits resume: another instance reads what this one stores now.
    let runs = Arc::new(AtomicU32::new(0));
    cache.set("after", Class::API, 5_u32).await.expect("set");
    let other = Backend::Redis(redis.url())
        .instance(&prefix)
        .await
        .ready()
        .await;
    let counted = Arc::clone(&runs);
    let value = other
        .get_or_load("after", Class::API, move || async move {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(Some(0_u32))
        })
        .await
        .expect("reads");
    assert_eq!(value, Some(5));
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_made_while_redis_is_down_reaches_it_later() {
    // Persisted, so the value survives the restart.
    let mut redis = RedisServer::builder()
        .persistence(Persistence::AofAlways)
        .start()
        .expect("redis-server starts");
    let prefix = unique_prefix();
    // Every write waits for an fsync, which a busy disk (the whole suite
    // runs at once) can stretch past a 100 ms timeout.
    let cache = TieredCache::builder()
        .prefix(&prefix)
        .redis_timeout(Duration::from_secs(1))
        .breaker(1, Duration::from_millis(100))
        .redis(client(&redis.url()).await)
        .ready()
        .await;
    cache.set("survivor", Class::API, 1_u32).await.expect("set");
    redis.kill().expect("kills redis");
    assert!(cache.invalidate("survivor").await.is_err(), "Redis is down");
    assert!(
        cache.stats().invalidations_pending,
        "the invalidation waits"
    );
    redis.restart().expect("restarts redis");
    let reader = Backend::Redis(redis.url())
        .instance(&prefix)
        .await
        .without_l1()
        .ready()
        .await;
    wait::until_async("the deferred invalidation to reach Redis", async || {
        reader.get::<u32>("survivor", Class::API).await.is_none()
    })
    .await;
    wait::until_async("nothing to wait once it is sent", async || {
        !cache.stats().invalidations_pending
    })
    .await;
}

/// On a Cluster, the breaker closes only once every master answers: with
/// one master frozen (SIGSTOP) and the others answering, it stays open and
/// the readiness check fails, since writes answered meanwhile could not
/// invalidate the frozen master's keys. Once the master answers again,
/// both recover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_stays_open_and_the_instance_unready_while_one_master_does_not_answer() {
    use seawall_perfmon::{HealthCheck as _, HealthStatus};
    let cluster = seawall_testkit::RedisCluster::builder()
        .masters(3)
        .replicas_per_master(0)
        // Longer than the freeze: the other masters keep the Cluster up.
        .node_timeout(Duration::from_secs(120))
        .start()
        .expect("a Cluster");
    let prefix = unique_prefix();
    let cache = TieredCache::builder()
        .prefix(&prefix)
        .redis(client(&cluster.url()).await)
        .redis_timeout(Duration::from_millis(200))
        .breaker(1, Duration::from_millis(100))
        .ready()
        .await;
    let ready = cache.readiness_check();
    let key = "on-the-frozen-master";
    let frozen = cluster
        .master_of(&format!("{prefix}:k:{key}"))
        .expect("the key's master");
    let frozen = cluster
        .nodes()
        .iter()
        .find(|node| node.addr() == frozen)
        .expect("a node");
    // Frozen until the checks below are done (at most a minute): a freeze
    // of fixed length could end before a loaded machine got to them.
    let pause = frozen
        .pause_in_background(Duration::from_secs(60))
        .expect("freezes");
    // A read of the frozen master's key times out and opens the breaker;
    // nothing waits to be sent.
    assert_eq!(cache.get::<u32>(key, Class::SESSION).await, None);
    assert_eq!(cache.stats().breaker, BreakerState::Open);
    // Ten probes' worth of time, each answered by two masters of three.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(
        cache.stats().breaker,
        BreakerState::Open,
        "a probe answered by some masters closed the breaker"
    );
    assert_eq!(ready.check().await.status, HealthStatus::Unhealthy);
    tokio::task::spawn_blocking(move || pause.resume())
        .await
        .expect("resumed");
    wait::until_async(
        "the breaker to close and the instance to be ready",
        async || {
            cache.stats().breaker == BreakerState::Closed
                && ready.check().await.status == HealthStatus::Healthy
        },
    )
    .await;
}

/// A connection to Redis that the client finds lost opens the breaker at
/// once, before any call has failed: else the first loads after Redis died
/// each waited out the timeout (250 ms by default), and every reader of
/// their keys with them. Here no number of failures would open it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_opens_the_breaker_before_any_call_fails() {
    let proxy = seawall_testkit::Proxy::start(RedisServer::shared().addr()).expect("proxy starts");
    let cache = TieredCache::builder()
        .prefix(unique_prefix())
        .breaker(u32::MAX, Duration::from_millis(100))
        .redis(client(&proxy.url()).await)
        .ready()
        .await;
    cache.set("kept", Class::API, 1_u8).await.expect("set");
    assert_eq!(cache.stats().breaker, BreakerState::Closed);
    proxy.cut();
    wait::until_async("the breaker to open on the lost connection", async || {
        cache.stats().breaker == BreakerState::Open
    })
    .await;
    assert!(cache.stats().redis_errors >= 1, "the loss is counted");
    proxy.restore();
    wait::until_async("the probe to close it once Redis answers", async || {
        cache.stats().breaker == BreakerState::Closed
    })
    .await;
    assert_eq!(cache.get::<u8>("kept", Class::API).await, Some(1));
}
