//! Several instances on one Redis (standalone and Cluster): a value loaded
//! by one is a hit for the others, invalidations reach every L1, the
//! distributed lock loads once in total, and a load overtaken by an
//! invalidation never writes its old value back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use seawall_cache::{Class, Options, Policy, TieredCache, TieredCacheBuilder};
use seawall_testkit::{Proxy, wait};

use crate::support::{Backend, Ready, unique_prefix};

async fn pair(backend: &Backend) -> (TieredCache, TieredCache) {
    let prefix = unique_prefix();
    let a = backend.instance(&prefix).await.ready().await;
    let b = backend.instance(&prefix).await.ready().await;
    (a, b)
}

async fn a_value_loaded_by_one_instance_is_a_hit_for_the_other(backend: &Backend) {
    let (a, b) = pair(backend).await;
    let runs = Arc::new(AtomicU32::new(0));
    for cache in [&a, &b, &a] {
        let runs = Arc::clone(&runs);
        let value = cache
            .get_or_load("shared", Class::COMPUTATION, move || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(Some(vec![1_u8, 2, 3]))
            })
            .await
            .expect("loads");
        assert_eq!(value, Some(vec![1, 2, 3]));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let stats = b.stats();
    assert_eq!(
        stats.classes[usize::from(Class::COMPUTATION.index())]
            .l2
            .hits,
        1
    );
}

async fn invalidations_reach_every_instance(backend: &Backend) {
    let (a, b) = pair(backend).await;
    wait::until_async("b to follow invalidations", async || {
        b.follows_invalidations()
    })
    .await;
    let tagged = Options::new(Class::SCHEDULE).tag("user:7");
    for key in ["today:7", "stats:7"] {
        a.set(key, tagged.clone(), key.to_owned())
            .await
            .expect("set");
        assert_eq!(
            b.get::<String>(key, Class::SCHEDULE).await.as_deref(),
            Some(key),
            "in b's L1 now"
        );
    }
    a.invalidate_tag("user:7").await.expect("invalidates");
    wait::until_async("b to drop its copies", async || {
        b.get::<String>("today:7", Class::SCHEDULE).await.is_none()
            && b.get::<String>("stats:7", Class::SCHEDULE).await.is_none()
    })
    .await;
    b.set("content:1", Class::API, 1_u32).await.expect("set");
    assert_eq!(a.get::<u32>("content:1", Class::API).await, Some(1));
    b.set("content:1", Class::API, 2_u32).await.expect("set");
    wait::until_async(
        "b's set to announce itself, and a's stale copy to go",
        async || a.get::<u32>("content:1", Class::API).await == Some(2),
    )
    .await;
    b.invalidate_pattern("content:*")
        .await
        .expect("invalidates");
    wait::until_async("a to drop content:1", async || {
        a.get::<u32>("content:1", Class::API).await.is_none()
    })
    .await;
    assert!(b.stats().invalidations_sent >= 3);
    // The feed counts an invalidation just after applying it.
    wait::until_async("a to count the invalidations it received", async || {
        a.stats().invalidations_received >= 2
    })
    .await;
}

async fn with_the_distributed_lock_two_instances_load_once_in_total(backend: &Backend) {
    let prefix = unique_prefix();
    let locked = Policy::new(Duration::from_secs(60)).distributed_lock(true);
    // The instance that misses the lock waits for the other's value rather
    // than load itself, however long a loaded machine takes to store it.
    let a = backend
        .instance(&prefix)
        .await
        .class(Class::COMPUTATION, locked.clone())
        .lock_wait(wait::patience())
        .ready()
        .await;
    let b = backend
        .instance(&prefix)
        .await
        .class(Class::COMPUTATION, locked)
        .lock_wait(wait::patience())
        .ready()
        .await;
    let runs = Arc::new(AtomicU32::new(0));
    let calls = (0..1000).map(|i| {
        let cache = if i % 2 == 0 { a.clone() } else { b.clone() };
        let runs = Arc::clone(&runs);
        tokio::spawn(async move {
            cache
                .get_or_load("cold", Class::COMPUTATION, move || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    // Held long enough that the other instance's leader,
                    // however late, finds the lock taken.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Ok::<_, std::io::Error>(Some(99_u32))
                })
                .await
        })
    });
    for call in futures_util::future::join_all(calls).await {
        assert_eq!(call.expect("no panic").expect("loads"), Some(99));
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "one load across both instances"
    );
}

async fn a_load_overtaken_by_an_invalidation_is_not_cached(backend: &Backend) {
    let (a, b) = pair(backend).await;
    let release = Arc::new(tokio::sync::Notify::new());
    let started = Arc::new(tokio::sync::Notify::new());
    let load = {
        let (a, release, started) = (a.clone(), Arc::clone(&release), Arc::clone(&started));
        tokio::spawn(async move {
            a.get_or_load("race", Class::SCHEDULE, move || async move {
                started.notify_one();
                release.notified().await;
                Ok::<_, std::io::Error>(Some("read before the write".to_owned()))
            })
            .await
        })
    };
    started.notified().await;
    // Another instance writes the source and invalidates while a loads.
    b.invalidate("race").await.expect("invalidates");
    release.notify_one();
    let value = load.await.expect("no panic").expect("loads");
    assert_eq!(
        value.as_deref(),
        Some("read before the write"),
        "the caller gets what it loaded"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        b.get::<String>("race", Class::SCHEDULE).await,
        None,
        "not written back to Redis"
    );
    assert_eq!(
        a.get::<String>("race", Class::SCHEDULE).await,
        None,
        "nor to a's L1"
    );
    assert!(a.stats().refused_fills >= 1);
}

async fn another_format_version_is_a_miss(backend: &Backend) {
    let prefix = unique_prefix();
    let v1 = backend
        .instance(&prefix)
        .await
        .format_version(1)
        .ready()
        .await;
    let v2 = backend
        .instance(&prefix)
        .await
        .format_version(2)
        .ready()
        .await;
    v1.set("shape", Class::API, (1_u32, "one".to_owned()))
        .await
        .expect("set");
    assert_eq!(v2.get::<(u32, String)>("shape", Class::API).await, None);
    let json = backend
        .instance(&prefix)
        .await
        .codec::<seawall_cache::Json>()
        .ready()
        .await;
    assert_eq!(
        json.get::<(u32, String)>("shape", Class::API).await,
        None,
        "another codec"
    );
    assert_eq!(
        v1.get::<(u32, String)>("shape", Class::API).await,
        Some((1, "one".to_owned()))
    );
}

mod redis {
    use super::*;

    fn backend() -> Backend {
        Backend::redis()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_value_loaded_by_one_instance_is_a_hit_for_the_other() {
        super::a_value_loaded_by_one_instance_is_a_hit_for_the_other(&backend()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn invalidations_reach_every_instance() {
        super::invalidations_reach_every_instance(&backend()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_the_distributed_lock_two_instances_load_once_in_total() {
        super::with_the_distributed_lock_two_instances_load_once_in_total(&backend()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_load_overtaken_by_an_invalidation_is_not_cached() {
        super::a_load_overtaken_by_an_invalidation_is_not_cached(&backend()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn another_format_version_is_a_miss() {
        super::another_format_version_is_a_miss(&backend()).await;
    }
}

mod cluster {
    use super::*;

    fn backend() -> Backend {
        Backend::cluster()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_value_loaded_by_one_instance_is_a_hit_for_the_other() {
        super::a_value_loaded_by_one_instance_is_a_hit_for_the_other(&backend()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn invalidations_reach_every_instance() {
        super::invalidations_reach_every_instance(&backend()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_the_distributed_lock_two_instances_load_once_in_total() {
        super::with_the_distributed_lock_two_instances_load_once_in_total(&backend()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_load_overtaken_by_an_invalidation_is_not_cached() {
        super::a_load_overtaken_by_an_invalidation_is_not_cached(&backend()).await;
    }
}

/// An instance cut off from Redis while another invalidates replays what it
/// missed once it is back, and never serves the old value after that;
/// with no degraded TTL, not while it is cut off either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_instance_replays_missed_invalidations() {
    let proxy = Proxy::start(seawall_testkit::RedisServer::shared().addr()).expect("proxy starts");
    let prefix = unique_prefix();
    let a = TieredCache::builder()
        .prefix(&prefix)
        .degraded_ttl(Duration::ZERO)
        .redis(crate::support::client(&proxy.url()).await)
        .ready()
        .await;
    let b = Backend::redis().instance(&prefix).await.ready().await;
    wait::until_async("a to follow invalidations", async || {
        a.follows_invalidations()
    })
    .await;
    a.set("list", Class::SCHEDULE, "old".to_owned())
        .await
        .expect("set");
    proxy.cut();
    wait::until_async("a to notice it is cut off", async || {
        !a.follows_invalidations()
    })
    .await;
    b.set("list", Class::SCHEDULE, "new".to_owned())
        .await
        .expect("set");
    // Cut off, a no longer trusts its L1 copy, and Redis is out of reach:
    // a miss, never the old value.
    assert_eq!(a.get::<String>("list", Class::SCHEDULE).await, None);
    // What `cache_following_invalidations` exports.
    assert!(!a.stats().following, "cut off, a does not follow");
    assert!(b.stats().following);
    proxy.restore();
    wait::until_async("a to replay the invalidation it missed", async || {
        a.get::<String>("list", Class::SCHEDULE).await.as_deref() == Some("new")
    })
    .await;
    assert_eq!(a.stats().l1_clears, 0, "replayed, not cleared");
    // The read may come from Redis before the feed is back.
    wait::until_async("a to follow again", async || a.stats().following).await;
}

/// An instance on the shared server through a proxy that can cut it off,
/// with degraded TTL `ttl`, once it follows the invalidations.
async fn following_through_a_proxy(ttl: Duration) -> (Proxy, TieredCache) {
    following_through_a_proxy_with(|builder| builder.degraded_ttl(ttl)).await
}

/// An instance as [`following_through_a_proxy`] builds, with the settings
/// `configure` gives its builder.
async fn following_through_a_proxy_with(
    configure: impl FnOnce(TieredCacheBuilder) -> TieredCacheBuilder,
) -> (Proxy, TieredCache) {
    let proxy = Proxy::start(seawall_testkit::RedisServer::shared().addr()).expect("proxy starts");
    let cache = configure(TieredCache::builder().prefix(unique_prefix()))
        .redis(crate::support::client(&proxy.url()).await)
        .ready()
        .await;
    wait::until_async("the instance to follow invalidations", async || {
        cache.follows_invalidations()
    })
    .await;
    (proxy, cache)
}

/// Cuts `cache` off through its `proxy` and waits until it knows.
async fn cut_off(proxy: &Proxy, cache: &TieredCache) {
    proxy.cut();
    wait::until_async("the instance to notice it is cut off", async || {
        !cache.follows_invalidations()
    })
    .await;
}

/// Cut off from the stream (Redis out of reach), L1 goes on answering
/// within the degraded TTL: the reads that would all have gone to the
/// loader are served, and this instance's own invalidations still reach
/// its L1 at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_instance_serves_l1_within_the_degraded_ttl() {
    // Longer than any wait below, however loaded the machine: whether L1
    // answers is decided by the TTL, never by how fast the test runs.
    let (proxy, a) = following_through_a_proxy(Duration::from_secs(600)).await;
    for key in ["list", "mine"] {
        a.set(key, Class::SCHEDULE, format!("{key} before"))
            .await
            .expect("set");
    }
    cut_off(&proxy, &a).await;
    assert_eq!(
        a.get::<String>("list", Class::SCHEDULE).await.as_deref(),
        Some("list before"),
        "L1 answers while cut off"
    );
    let loads = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&loads);
    let read = a
        .get_or_load("list", Class::SCHEDULE, move || async move {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(Some("loaded".to_owned()))
        })
        .await
        .expect("reads");
    assert_eq!(read.as_deref(), Some("list before"));
    assert_eq!(
        loads.load(Ordering::SeqCst),
        0,
        "served from L1, not loaded"
    );
    // Its own invalidation reaches its L1 at once, Redis or not.
    let _ = a.invalidate("mine").await;
    assert_eq!(a.get_local::<String>("mine", Class::SCHEDULE), None);
    assert!(!a.stats().following);
    proxy.restore();
    wait::until_async("a to follow again", async || a.stats().following).await;
}

/// While cut off, what a load brings is kept as long as the degraded TTL
/// lets L1 answer with it, not just `cut_off_l1_ttl`: else every key read
/// while cut off would be loaded again each `cut_off_l1_ttl` (each 5 s
/// instead of each 10 s in the service, twice the loads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_loaded_while_cut_off_is_served_for_the_degraded_ttl() {
    let cut_off_ttl = Duration::from_millis(200);
    let (proxy, a) = following_through_a_proxy_with(|builder| {
        builder
            // Longer than any wait below, however loaded the machine.
            .degraded_ttl(Duration::from_secs(600))
            .cut_off_l1_ttl(cut_off_ttl)
    })
    .await;
    cut_off(&proxy, &a).await;
    let loads = Arc::new(AtomicU32::new(0));
    let load = || {
        let counted = Arc::clone(&loads);
        move || async move {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            Ok::<_, std::io::Error>(Some(format!("load {n}")))
        }
    };
    let first = a
        .get_or_load("report", Class::SCHEDULE, load())
        .await
        .expect("loads without Redis");
    assert_eq!(first.as_deref(), Some("load 1"));
    // Past the cut-off TTL (however long the sleep really took, the
    // degraded TTL is far longer still).
    tokio::time::sleep(cut_off_ttl * 2).await;
    let again = a
        .get_or_load("report", Class::SCHEDULE, load())
        .await
        .expect("reads");
    assert_eq!(again.as_deref(), Some("load 1"), "served from L1");
    assert_eq!(loads.load(Ordering::SeqCst), 1, "loaded once");
    assert!(!a.stats().following, "still cut off");
    proxy.restore();
    wait::until_async("a to follow again", async || a.stats().following).await;
}

/// While cut off, a value is served no longer than the degraded TTL after
/// the feed's last read (from half of it on, at a point its key picks):
/// past it, L1 answers no more (the read goes to Redis, out of reach here,
/// or the loader).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_instance_stops_serving_l1_past_the_degraded_ttl() {
    let ttl = Duration::from_millis(300);
    let (proxy, a) = following_through_a_proxy(ttl).await;
    a.set("list", Class::SCHEDULE, "old".to_owned())
        .await
        .expect("set");
    let set_at = std::time::Instant::now();
    cut_off(&proxy, &a).await;
    wait::until("L1 to stop answering with the old value", || {
        a.get_local::<String>("list", Class::SCHEDULE).is_none()
    });
    // Never sooner than half the TTL after the value was made (the feed's
    // last read may come later still, which only serves it longer).
    assert!(
        set_at.elapsed() >= ttl / 2,
        "stopped after {:?}",
        set_at.elapsed()
    );
    assert!(!a.stats().following, "still cut off");
    assert_eq!(a.get::<String>("list", Class::SCHEDULE).await, None);
    proxy.restore();
    wait::until_async("a to follow again", async || a.stats().following).await;
}

/// An instance that missed more invalidations than the stream keeps clears
/// its L1 instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_too_old_to_replay_clears_l1() {
    let proxy = Proxy::start(seawall_testkit::RedisServer::shared().addr()).expect("proxy starts");
    let prefix = unique_prefix();
    let a = TieredCache::builder()
        .prefix(&prefix)
        .invalidation_history(5)
        .redis(crate::support::client(&proxy.url()).await)
        .ready()
        .await;
    let b = Backend::redis()
        .instance(&prefix)
        .await
        .invalidation_history(5)
        .ready()
        .await;
    wait::until_async("a to follow invalidations", async || {
        a.follows_invalidations()
    })
    .await;
    a.set("kept-in-l1", Class::SCHEDULE, 1_u8)
        .await
        .expect("set");
    proxy.cut();
    wait::until_async("a to notice it is cut off", async || {
        !a.follows_invalidations()
    })
    .await;
    for i in 0..20 {
        b.invalidate(&format!("other:{i}"))
            .await
            .expect("invalidates");
    }
    proxy.restore();
    wait::until_async("a to clear its L1", async || a.stats().l1_clears == 1).await;
    // The feed clears L1, then marks itself following: the two are a moment
    // apart.
    wait::until_async("a to follow again", async || a.follows_invalidations()).await;
    assert_eq!(a.stats().l1_clears, 1, "cleared once");
}

/// When another server holds the stream after a disconnection (here the
/// same port restarted; in production a failover's promoted replica), the
/// entries written just before may be gone with the old one, so the
/// instance clears its L1 instead of replaying from its cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_server_behind_the_stream_clears_l1() {
    let mut redis = seawall_testkit::RedisServer::builder()
        .persistence(seawall_testkit::Persistence::AofAlways)
        .start()
        .expect("redis starts");
    let a = TieredCache::builder()
        .prefix(unique_prefix())
        .redis(crate::support::client(&redis.url()).await)
        .ready()
        .await;
    wait::until_async("a to follow invalidations", async || {
        a.follows_invalidations()
    })
    .await;
    a.set("kept-in-l1", Class::SCHEDULE, 1_u8)
        .await
        .expect("set");
    redis.kill().expect("kills redis");
    wait::until_async("a to notice redis is gone", async || {
        !a.follows_invalidations()
    })
    .await;
    redis.restart().expect("restarts redis");
    wait::until_async("a to clear its L1", async || a.stats().l1_clears == 1).await;
    wait::until_async("a to follow again", async || a.follows_invalidations()).await;
}

/// A clear (and a pattern) announces itself before it sweeps Redis, so
/// every L1 drops its copies at once instead of serving them through a pass
/// over every key, which takes seconds over a large keyspace. Here the
/// sweep never gets going: the clearing instance's Redis user may not
/// `SCAN`. Its clear fails (and waits to be sent again), yet the other
/// instance's L1 is already empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clear_empties_every_l1_before_it_sweeps_redis() {
    let redis = seawall_testkit::RedisServer::start().expect("redis starts");
    let mut conn = redis.connect().expect("connect");
    conn.cmd(&[
        "ACL",
        "SETUSER",
        "sweeper",
        "on",
        ">sweeper-secret",
        "~*",
        "&*",
        "+@all",
        "-scan",
    ])
    .expect("ACL SETUSER");
    let prefix = unique_prefix();
    let sweeper = format!("redis://sweeper:sweeper-secret@{}", redis.addr());
    let a = TieredCache::builder()
        .prefix(&prefix)
        .redis(crate::support::client(&sweeper).await)
        .ready()
        .await;
    let b = TieredCache::builder()
        .prefix(&prefix)
        .redis(crate::support::client(&redis.url()).await)
        .ready()
        .await;
    for key in ["today:1", "stats:1"] {
        b.set(key, Class::API, 1_u32).await.expect("set");
    }
    b.sync();
    assert_eq!(b.stats().l1_entries, 2, "b's L1 holds both");
    let cleared = a.clear().await;
    assert!(cleared.is_err(), "the sweep could not SCAN: {cleared:?}");
    wait::until_async("b's L1 to be emptied by the announcement", async || {
        b.sync();
        b.stats().l1_entries == 0
    })
    .await;
}
