//! The distributed lock on Redis standalone and Cluster: one owner at a
//! time, owner-only release and extend, fencing tokens that only grow.

use std::time::Duration;

use seawall_cache::{Error, RedisLocks};
use seawall_testkit::wait;

use crate::support::client;

async fn one_owner_and_growing_fences(url: &str) {
    let locks = RedisLocks::new(client(url).await);
    let name = crate::support::unique_prefix();
    let first = locks
        .try_acquire(&name, Duration::from_secs(10))
        .await
        .expect("redis answers")
        .expect("free");
    assert!(
        locks
            .try_acquire(&name, Duration::from_secs(10))
            .await
            .expect("redis answers")
            .is_none(),
        "held"
    );
    let fence = first.fence();
    first
        .extend(Duration::from_secs(10))
        .await
        .expect("still owned");
    first.release().await.expect("released");
    let second = locks
        .acquire(
            &name,
            Duration::from_millis(200),
            Duration::from_secs(1),
            Duration::from_millis(20),
        )
        .await
        .expect("free again");
    assert!(second.fence() > fence, "{} > {fence}", second.fence());

    // The second owner's lock expires and a third takes it: the second can
    // neither extend nor release the third's lock.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let third = locks
        .try_acquire(&name, Duration::from_secs(10))
        .await
        .expect("redis answers")
        .expect("expired, so free");
    assert!(third.fence() > second.fence());
    assert!(matches!(
        second.extend(Duration::from_secs(1)).await,
        Err(Error::LockLost { .. })
    ));
    assert!(matches!(
        second.release().await,
        Err(Error::LockLost { .. })
    ));
    assert!(
        locks
            .try_acquire(&name, Duration::from_secs(10))
            .await
            .expect("redis answers")
            .is_none(),
        "the third still holds it"
    );
    let waited = locks
        .acquire(
            &name,
            Duration::from_secs(1),
            Duration::from_millis(100),
            Duration::from_millis(20),
        )
        .await;
    assert!(matches!(waited, Err(Error::Locked { .. })));
    third.release().await.expect("released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_locks_have_one_owner_and_growing_fences() {
    one_owner_and_growing_fences(&seawall_testkit::RedisServer::shared().url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_locks_have_one_owner_and_growing_fences() {
    one_owner_and_growing_fences(&seawall_testkit::RedisCluster::shared().url()).await;
}

/// A holder that extends its lock past the fence retention keeps the
/// counter alive, and a counter that is gone all the same (evicted, lost in
/// a failover) restarts above every fence it gave: a later holder always
/// gets a greater fence.
async fn fences_never_go_backwards(url: &str) {
    let redis = client(url).await;
    let prefix = crate::support::unique_prefix();
    let locks = RedisLocks::with_options(
        redis.clone(),
        prefix.clone(),
        Duration::from_secs(1),
        Duration::from_millis(200),
    );
    let name = "report";
    let mut last = 0;
    for _ in 0..3 {
        let guard = locks
            .try_acquire(name, Duration::from_secs(10))
            .await
            .expect("redis answers")
            .expect("free");
        assert!(guard.fence() > last);
        last = guard.fence();
        guard.release().await.expect("released");
    }
    // Held for longer than its TTL and the retention together, extended
    // long before each expiry (a loaded machine only stretches the hold).
    let ttl = Duration::from_secs(3);
    let long_holder = locks
        .try_acquire(name, ttl)
        .await
        .expect("redis answers")
        .expect("free");
    assert!(long_holder.fence() > last);
    last = long_holder.fence();
    for _ in 0..14 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        long_holder.extend(ttl).await.expect("still owned");
    }
    // Dropped, the guard releases the lock in the background.
    drop(long_holder);
    let next = locks
        .acquire(
            name,
            Duration::from_secs(10),
            wait::patience(),
            Duration::from_millis(20),
        )
        .await
        .expect("free once released");
    assert!(next.fence() > last, "{} > {last}", next.fence());
    last = next.fence();
    next.release().await.expect("released");
    use fred::interfaces::KeysInterface as _;
    let _: i64 = redis
        .del(format!("{{{prefix}:{name}}}:fence"))
        .await
        .expect("redis answers");
    let after_loss = locks
        .try_acquire(name, Duration::from_secs(10))
        .await
        .expect("redis answers")
        .expect("free");
    assert!(after_loss.fence() > last, "{} > {last}", after_loss.fence());
    after_loss.release().await.expect("released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_fences_never_go_backwards() {
    fences_never_go_backwards(&seawall_testkit::RedisServer::shared().url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_fences_never_go_backwards() {
    fences_never_go_backwards(&seawall_testkit::RedisCluster::shared().url()).await;
}
