//! The distributed lock on Redis standalone and Cluster: one owner at a
//! time, owner-only release and extend, fencing tokens that only grow.

use std::time::Duration;

use seawall_cache::{Error, RedisLocks};

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
