//! The concurrency limiter on memory and on Redis.

use std::mem::ManuallyDrop;
use std::time::Duration;

use seawall_ratelimit::ConcurrencyLimiter;
use seawall_testkit::wait;

use crate::support::{steady_store, unique_name};

async fn limiters(max: u64, lease_time: Duration) -> Vec<ConcurrencyLimiter> {
    let memory = ConcurrencyLimiter::builder(&unique_name(), max)
        .lease_time(lease_time)
        .build()
        .expect("limiter");
    let redis = ConcurrencyLimiter::builder(&unique_name(), max)
        .lease_time(lease_time)
        .redis_store(steady_store(&seawall_testkit::RedisServer::shared().url()).await)
        .build()
        .expect("limiter");
    let cluster = ConcurrencyLimiter::builder(&unique_name(), max)
        .lease_time(lease_time)
        .redis_store(steady_store(&seawall_testkit::RedisCluster::shared().url()).await)
        .build()
        .expect("limiter");
    vec![memory, redis, cluster]
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
        // Dropped, a lease on Redis is released in the background.
        drop(first);
        let freed = wait::until_some_async(format!("a free slot of {limiter:?}"), async || {
            limiter.try_acquire("k").await.expect("acquire")
        })
        .await;
        drop(freed);
        second.release().await.expect("release");
        assert!(limiter.try_acquire("").await.is_err());
    }
}

/// Leases of seconds, renewed a second apart: a late renewal on a loaded
/// machine still comes long before its lease would expire.
const LEASE: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holders_lease_expires_and_a_renewed_one_does_not() {
    // The three limiters side by side: each waits out a lease.
    let [memory, redis, cluster]: [ConcurrencyLimiter; 3] =
        limiters(1, LEASE).await.try_into().expect("three limiters");
    tokio::join!(
        dead_and_renewed(memory),
        dead_and_renewed(redis),
        dead_and_renewed(cluster)
    );
}

async fn dead_and_renewed(limiter: ConcurrencyLimiter) {
    // A holder that never releases: its process died, say.
    let dead = ManuallyDrop::new(
        limiter
            .try_acquire("k")
            .await
            .expect("acquire")
            .expect("free"),
    );
    assert!(limiter.try_acquire("k").await.expect("acquire").is_none());
    let alive = wait::until_some_async(
        format!("the dead holder's lease to expire ({limiter:?})"),
        async || limiter.try_acquire("k").await.expect("acquire"),
    )
    .await;
    assert!(
        !dead.renew().await.expect("renew"),
        "an expired lease cannot be renewed"
    );
    // Renewed past its lease time.
    for _ in 0..4 {
        tokio::time::sleep(LEASE / 3).await;
        assert!(alive.renew().await.expect("renew"), "{limiter:?}");
    }
    assert!(
        limiter.try_acquire("k").await.expect("acquire").is_none(),
        "{limiter:?}"
    );
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
    // longer than the timeout (and an acquire that timed out may still have
    // taken a slot, for the lease time).
    let held = wait::until_some_async("a first lease", async || {
        limiter.try_acquire("k").await.ok().flatten()
    })
    .await;

    // Stopped until the checks below are done (at most a minute): a stop of
    // fixed length could end before a loaded machine got to them.
    let pause = redis
        .pause_in_background(Duration::from_secs(60))
        .expect("SIGSTOP");
    // Without the store's timeout a call would wait until Redis resumes.
    let answer = Duration::from_secs(30);
    let stalled = tokio::time::timeout(answer, limiter.try_acquire("k"))
        .await
        .expect("an answer while Redis is still stopped");
    assert!(matches!(stalled, Err(Error::Redis(_))), "{stalled:?}");
    assert!(store.is_breaker_open());
    // An acquire while the breaker is open is not sent; one that comes a
    // probe interval after the last failure is the probe, sent and timed
    // out, and the next one is held back again.
    wait::until_some_async("an acquire held back by the open breaker", async || {
        match tokio::time::timeout(answer, limiter.try_acquire("k"))
            .await
            .expect("an answer while Redis is still stopped")
        {
            Err(Error::Unavailable) => Some(()),
            Err(Error::Redis(_)) => None,
            other => panic!("{other:?}"),
        }
    })
    .await;
    let released = tokio::time::timeout(answer, held.release())
        .await
        .expect("an answer while Redis is still stopped");
    assert!(
        matches!(released, Err(Error::Redis(_))),
        "sent: {released:?}"
    );
    pause.resume();

    wait::until_async("a lease once Redis answers again", async || {
        matches!(limiter.try_acquire("k").await, Ok(Some(_)))
    })
    .await;
    assert!(!store.is_breaker_open());
}
