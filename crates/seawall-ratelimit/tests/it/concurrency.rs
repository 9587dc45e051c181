//! The concurrency limiter on memory and on Redis.

use std::mem::ManuallyDrop;
use std::time::Duration;

use seawall_ratelimit::ConcurrencyLimiter;

use crate::support::{client, unique_name};

async fn limiters(max: u64, lease_time: Duration) -> Vec<ConcurrencyLimiter> {
    let memory = ConcurrencyLimiter::builder(&unique_name(), max)
        .lease_time(lease_time)
        .build()
        .expect("limiter");
    let redis = ConcurrencyLimiter::builder(&unique_name(), max)
        .lease_time(lease_time)
        .redis(client(&seawall_testkit::RedisServer::shared().url()).await)
        .build()
        .expect("limiter");
    let cluster = ConcurrencyLimiter::builder(&unique_name(), max)
        .lease_time(lease_time)
        .redis(client(&seawall_testkit::RedisCluster::shared().url()).await)
        .build()
        .expect("limiter");
    vec![memory, redis, cluster]
}

async fn eventually_free(limiter: &ConcurrencyLimiter, key: &str) -> bool {
    for _ in 0..50 {
        if let Some(lease) = limiter.try_acquire(key).await.expect("acquire") {
            drop(lease);
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_max_leases_and_a_dropped_one_frees_its_slot() {
    for limiter in limiters(2, Duration::from_secs(60)).await {
        let first = limiter
            .try_acquire("k")
            .await
            .expect("acquire")
            .expect("free");
        let second = limiter
            .try_acquire("k")
            .await
            .expect("acquire")
            .expect("free");
        assert_eq!((first.in_flight(), second.in_flight()), (1, 2));
        assert!(limiter.try_acquire("k").await.expect("acquire").is_none());
        assert!(
            limiter
                .try_acquire("other")
                .await
                .expect("acquire")
                .is_some()
        );
        drop(first);
        assert!(eventually_free(&limiter, "k").await, "{limiter:?}");
        second.release().await.expect("release");
        assert!(limiter.try_acquire("").await.is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holders_lease_expires_and_a_renewed_one_does_not() {
    for limiter in limiters(1, Duration::from_millis(300)).await {
        // A holder that never releases: its process died, say.
        let dead = ManuallyDrop::new(
            limiter
                .try_acquire("k")
                .await
                .expect("acquire")
                .expect("free"),
        );
        assert!(limiter.try_acquire("k").await.expect("acquire").is_none());
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(
            !dead.renew().await.expect("renew"),
            "an expired lease cannot be renewed"
        );
        let alive = limiter
            .try_acquire("k")
            .await
            .expect("acquire")
            .expect("expired");
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            assert!(alive.renew().await.expect("renew"));
        }
        assert!(
            limiter.try_acquire("k").await.expect("acquire").is_none(),
            "{limiter:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_never_hold_more_than_max() {
    for limiter in limiters(3, Duration::from_secs(60)).await {
        let held = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let most = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..40 {
            let (limiter, held, most) = (limiter.clone(), held.clone(), most.clone());
            tasks.spawn(async move {
                use std::sync::atomic::Ordering;
                for _ in 0..5 {
                    if let Some(lease) = limiter.try_acquire("shared").await.expect("acquire") {
                        let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        held.fetch_sub(1, Ordering::SeqCst);
                        lease.release().await.expect("release");
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let most = most.load(std::sync::atomic::Ordering::SeqCst);
        assert!((1..=3).contains(&most), "{most} held at once: {limiter:?}");
    }
}

/// On a stalled Redis a lease call fails within the store's timeout, though
/// the client would wait for ever; the store's breaker then fails the next
/// acquires without sending them, but not a release, which is sent (and
/// times out); once Redis answers, leases are granted again. (The acquire
/// that timed out still runs when Redis resumes: the slot it takes is free
/// again after the lease time.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_fails_lease_calls_by_the_store_timeout_and_breaker() {
    use fred::prelude::{Builder, ClientLike as _, Config};
    use seawall_ratelimit::{Error, RedisStore};

    let redis = seawall_testkit::RedisServer::start().expect("redis-server starts");
    // No timeout of the client's own.
    let client = Builder::from_config(Config::from_url(&redis.url()).expect("a valid URL"))
        .with_performance_config(|performance| {
            performance.default_command_timeout = Duration::ZERO;
        })
        .build()
        .expect("a client");
    client.init().await.expect("connects");
    let store = RedisStore::new(client)
        .with_timeout(Duration::from_millis(200))
        .expect("a timeout");
    let limiter = ConcurrencyLimiter::builder(&unique_name(), 2)
        .lease_time(Duration::from_secs(1))
        .redis_store(store.clone())
        .build()
        .expect("limiter");
    // The first call loads the script: on a loaded machine that may take
    // longer than the timeout.
    let mut held = None;
    for _ in 0..50 {
        if let Ok(lease) = limiter.try_acquire("k").await {
            held = lease;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let held = held.expect("a slot");

    let pause = redis
        .pause_in_background(Duration::from_secs(3))
        .expect("SIGSTOP");
    let stalled = tokio::time::timeout(Duration::from_millis(2_500), limiter.try_acquire("k"))
        .await
        .expect("an answer while Redis is still stopped");
    assert!(matches!(stalled, Err(Error::Redis(_))), "{stalled:?}");
    assert!(store.is_breaker_open());
    let held_back = tokio::time::timeout(Duration::from_millis(2_500), limiter.try_acquire("k"))
        .await
        .expect("an answer while Redis is still stopped");
    assert!(
        matches!(held_back, Err(Error::Unavailable)),
        "{held_back:?}"
    );
    let released = tokio::time::timeout(Duration::from_millis(2_500), held.release())
        .await
        .expect("an answer while Redis is still stopped");
    assert!(
        matches!(released, Err(Error::Redis(_))),
        "sent: {released:?}"
    );
    pause.wait();

    let mut granted = false;
    for _ in 0..50 {
        if let Ok(Some(_)) = limiter.try_acquire("k").await {
            granted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(granted, "a lease once Redis answers again");
    assert!(!store.is_breaker_open());
}
