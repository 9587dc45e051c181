//! What a write or an invalidation promises: once `set`, `remove` or an
//! invalidation (key, tag, pattern, clear) has returned, no later read on
//! any instance returns a value written or loaded before it (another
//! instance's L1 may, until the invalidation stream reaches it). Each test
//! sets up one way the promise could break: a load that began before a
//! write elsewhere and finishes after it, two instances writing one key at
//! once, an instance catching up with the stream, or lagging behind it.

use std::sync::Arc;
use std::time::Duration;

use fred::interfaces::{KeysInterface, LuaInterface};
use fred::prelude::ClientLike;
use seawall_cache::{Class, Options, TieredCache};
use seawall_testkit::{Proxy, wait};
use tokio::sync::Notify;

use crate::support::{Backend, Ready, client, unique_prefix};

/// How a writer on another instance overtakes a load in flight.
#[derive(Debug, Clone, Copy)]
enum Overtake {
    Set,
    Key,
    Tag,
    Pattern,
    Clear,
}

impl Overtake {
    async fn run(self, cache: &TieredCache) {
        match self {
            Self::Set => cache
                .set("race:1", Options::new(Class::SCHEDULE).tag("group"), 2_u32)
                .await
                .expect("sets"),
            Self::Key => cache.invalidate("race:1").await.expect("invalidates"),
            Self::Tag => cache.invalidate_tag("group").await.expect("invalidates"),
            Self::Pattern => cache
                .invalidate_pattern("race:*")
                .await
                .expect("invalidates"),
            Self::Clear => cache.clear().await.expect("clears"),
        }
    }
}

/// A load on `a` reads version 1 from the source and is held; `b` writes
/// version 2 (or invalidates) and returns; the load then finishes. The
/// loader's instance does not follow the stream, so nothing but Redis can
/// refuse its value: no instance may read version 1 afterwards.
async fn a_load_overtaken_on_another_instance_writes_nothing_back(
    backend: &Backend,
    overtake: Overtake,
) {
    let prefix = unique_prefix();
    let a = backend
        .instance(&prefix)
        .await
        .follow_invalidations(false)
        .build()
        .expect("cache");
    let b = backend.instance(&prefix).await.ready().await;
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let load = {
        let (a, started, release) = (a.clone(), Arc::clone(&started), Arc::clone(&release));
        tokio::spawn(async move {
            let options = Options::new(Class::SCHEDULE).tag("group");
            a.get_or_load("race:1", options, move || async move {
                started.notify_one();
                release.notified().await;
                Ok::<_, std::io::Error>(Some(1_u32))
            })
            .await
        })
    };
    started.notified().await;
    overtake.run(&b).await;
    release.notify_one();
    assert_eq!(load.await.expect("no panic").expect("loads"), Some(1));
    let reader = backend.instance(&prefix).await.ready().await;
    for cache in [&b, &reader] {
        let read = cache.get::<u32>("race:1", Class::SCHEDULE).await;
        match overtake {
            Overtake::Set => assert_eq!(read, Some(2), "{overtake:?}: the set stands"),
            _ => assert_eq!(read, None, "{overtake:?}: the invalidation stands"),
        }
    }
}

async fn a_load_overtaken_by_a_set_elsewhere_writes_nothing_back(backend: &Backend) {
    a_load_overtaken_on_another_instance_writes_nothing_back(backend, Overtake::Set).await;
}

async fn a_load_overtaken_by_a_key_invalidation_elsewhere_writes_nothing_back(backend: &Backend) {
    a_load_overtaken_on_another_instance_writes_nothing_back(backend, Overtake::Key).await;
}

async fn a_load_overtaken_by_a_tag_invalidation_elsewhere_writes_nothing_back(backend: &Backend) {
    a_load_overtaken_on_another_instance_writes_nothing_back(backend, Overtake::Tag).await;
}

async fn a_load_overtaken_by_a_pattern_invalidation_elsewhere_writes_nothing_back(
    backend: &Backend,
) {
    a_load_overtaken_on_another_instance_writes_nothing_back(backend, Overtake::Pattern).await;
}

async fn a_load_overtaken_by_a_clear_elsewhere_writes_nothing_back(backend: &Backend) {
    a_load_overtaken_on_another_instance_writes_nothing_back(backend, Overtake::Clear).await;
}

/// Two instances write the same 200 keys at once, several times: once the
/// stream has reached both, each instance reads what Redis holds.
async fn concurrent_sets_on_two_instances_leave_no_stale_l1_copy(backend: &Backend) {
    let prefix = unique_prefix();
    let a = backend.instance(&prefix).await.ready().await;
    let b = backend.instance(&prefix).await.ready().await;
    let redis_only = backend
        .instance(&prefix)
        .await
        .without_l1()
        .build()
        .expect("cache");
    let keys: Vec<String> = (0..200).map(|i| format!("review:{i}")).collect();
    for round in 0..3_u32 {
        let writes = [(&a, 2 * round), (&b, 2 * round + 1)].map(|(cache, value)| {
            let entries = keys.iter().map(|key| (key.clone(), value)).collect();
            cache.set_many(entries, Class::SCHEDULE)
        });
        for written in futures_util::future::join_all(writes).await {
            written.expect("sets");
        }
    }
    let agree = async |cache: &TieredCache| {
        for key in &keys {
            let truth = redis_only.get::<u32>(key, Class::SCHEDULE).await;
            if cache.get::<u32>(key, Class::SCHEDULE).await != truth {
                return false;
            }
        }
        true
    };
    wait::until_async(
        "every L1 copy to agree with Redis (once the stream has reached it)",
        async || agree(&a).await && agree(&b).await,
    )
    .await;
}

crate::on_redis_backends!(
    a_load_overtaken_by_a_set_elsewhere_writes_nothing_back,
    a_load_overtaken_by_a_key_invalidation_elsewhere_writes_nothing_back,
    a_load_overtaken_by_a_tag_invalidation_elsewhere_writes_nothing_back,
    a_load_overtaken_by_a_pattern_invalidation_elsewhere_writes_nothing_back,
    a_load_overtaken_by_a_clear_elsewhere_writes_nothing_back,
    concurrent_sets_on_two_instances_leave_no_stale_l1_copy,
);

/// An instance back from a disconnection answers from L1 only once it has
/// replayed everything it missed: here 2,000 invalidations, the one that
/// matters last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_answers_only_once_the_missed_invalidations_are_replayed() {
    let (proxy, a, b) = behind_a_proxy(TieredCache::builder(), &unique_prefix()).await;
    a.set("list", Class::SCHEDULE, "old".to_owned())
        .await
        .expect("set");
    proxy.cut();
    wait::until_async("a to notice it is cut off", async || {
        !a.follows_invalidations()
    })
    .await;
    for chunk in (0..2000).collect::<Vec<u32>>().chunks(200) {
        let invalidations = chunk
            .iter()
            .map(|i| b.invalidate_owned(format!("other:{i}")));
        for done in futures_util::future::join_all(invalidations).await {
            done.expect("invalidates");
        }
    }
    b.set("list", Class::SCHEDULE, "new".to_owned())
        .await
        .expect("set");
    proxy.restore();
    // Polled tightly, so the read below comes as soon after as it can.
    let began = std::time::Instant::now();
    while !a.follows_invalidations() {
        assert!(
            began.elapsed() < wait::patience(),
            "waited {:?} for a to follow invalidations again",
            wait::patience()
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    assert_ne!(
        a.get::<String>("list", Class::SCHEDULE).await.as_deref(),
        Some("old"),
        "the first read after a follows again must not be the old copy"
    );
}

/// A reader that stays connected but falls more entries behind than the
/// stream keeps (a burst of 150 while it keeps 20) clears its L1 rather
/// than skip what was trimmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_reader_that_falls_behind_the_stream_clears_l1() {
    let url = seawall_testkit::RedisServer::shared().url();
    let prefix = unique_prefix();
    let a = TieredCache::builder()
        .prefix(&prefix)
        .invalidation_history(20)
        .redis(client(&url).await)
        .ready()
        .await;
    a.set("list", Class::SCHEDULE, "old".to_owned())
        .await
        .expect("set");
    assert_eq!(
        a.get::<String>("list", Class::SCHEDULE).await.as_deref(),
        Some("old")
    );
    // Another writer's burst, as the stream's layout has it: the value is
    // replaced in Redis, and its invalidation is the fourth of 150 entries.
    // One script writes it all, so the reader wakes to a stream trimmed
    // past its cursor (a pipeline let it read the first entries as they
    // came, the invalidation of `list` among them, and keep up).
    let writer = client(&url).await;
    let burst = "redis.call('SET', KEYS[1], 'not ours')
        for i = 0, 149 do
          local target = 'other:' .. i
          if i == 3 then target = 'list' end
          redis.call('XADD', KEYS[2], 'MAXLEN', '=', 20, '*', 'o', 'another-instance', 'k', target)
        end";
    let _: () = writer
        .eval(
            burst,
            vec![format!("{prefix}:k:list"), format!("{prefix}:inv")],
            Vec::<String>::new(),
        )
        .await
        .expect("the burst is written");
    // Waited for as `wait::until_async` does, but a failure says what the
    // reader and the stream hold.
    let began = std::time::Instant::now();
    while a.get::<String>("list", Class::SCHEDULE).await.is_some() {
        if began.elapsed() > wait::patience() {
            let stream: fred::types::Value = writer
                .custom(
                    fred::cmd!("XINFO"),
                    vec!["STREAM".to_owned(), format!("{prefix}:inv")],
                )
                .await
                .expect("XINFO STREAM");
            let stored: Option<String> = writer.get(format!("{prefix}:k:list")).await.expect("GET");
            panic!(
                "waited {:?} for the old copy to go, with the rest of L1: the cache follows \
                 invalidations: {}; its stats: {:?}; Redis holds {stored:?} for the key; the \
                 stream: {stream:?}",
                wait::patience(),
                a.follows_invalidations(),
                a.stats(),
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(a.stats().l1_clears >= 1);
    writer.quit().await.expect("quits");
}

/// What L1 takes while its instance is cut off from the stream lives at
/// most the configured time once the instance follows again: an
/// invalidation that never reached the stream cannot keep it longer. (No
/// degraded TTL here, which would keep it as long as that where longer.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_l1_takes_while_cut_off_is_kept_briefly() {
    let proxy = Proxy::start(seawall_testkit::RedisServer::shared().addr()).expect("proxy starts");
    let a = TieredCache::builder()
        .prefix(unique_prefix())
        .degraded_ttl(Duration::ZERO)
        .cut_off_l1_ttl(Duration::from_millis(300))
        .breaker(1, Duration::from_millis(100))
        .redis(client(&proxy.url()).await)
        .ready()
        .await;
    proxy.cut();
    wait::until_async("a to notice it is cut off", async || {
        !a.follows_invalidations()
    })
    .await;
    let loaded = a
        .get_or_load("report", Class::SCHEDULE, || async {
            Ok::<_, std::io::Error>(Some(7_u32))
        })
        .await
        .expect("loads without Redis");
    assert_eq!(loaded, Some(7));
    proxy.restore();
    wait::until_async("a to follow again", async || a.follows_invalidations()).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        a.get::<u32>("report", Class::SCHEDULE).await,
        None,
        "gone from L1 after 300 ms, and never in Redis"
    );
}

/// A `set` while Redis is out of reach fails, and the key is invalidated
/// everywhere once Redis answers, so the old value in Redis does not
/// outlive it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_that_could_not_reach_redis_invalidates_once_it_can() {
    let builder = TieredCache::builder().breaker(1, Duration::from_millis(100));
    let (proxy, a, b) = behind_a_proxy(builder, &unique_prefix()).await;
    a.set("profile", Class::SESSION, 1_u32).await.expect("set");
    proxy.cut();
    assert!(a.set("profile", Class::SESSION, 2_u32).await.is_err());
    assert_eq!(b.get::<u32>("profile", Class::SESSION).await, Some(1));
    proxy.restore();
    wait::until_async(
        "the old value to go once a reaches Redis again",
        async || b.get::<u32>("profile", Class::SESSION).await.is_none(),
    )
    .await;
}

/// Two instances on the shared server, under `prefix`: the first, built from
/// `builder`, reaches it through a proxy that can cut it off.
async fn behind_a_proxy(
    builder: seawall_cache::TieredCacheBuilder,
    prefix: &str,
) -> (Proxy, TieredCache, TieredCache) {
    let proxy = Proxy::start(seawall_testkit::RedisServer::shared().addr()).expect("proxy starts");
    let a = builder
        .prefix(prefix)
        .redis(client(&proxy.url()).await)
        .ready()
        .await;
    let b = Backend::redis().instance(prefix).await.ready().await;
    (proxy, a, b)
}

trait InvalidateOwned {
    fn invalidate_owned(&self, key: String) -> impl Future<Output = seawall_cache::Result<()>>;
}

impl InvalidateOwned for TieredCache {
    fn invalidate_owned(&self, key: String) -> impl Future<Output = seawall_cache::Result<()>> {
        let cache = self.clone();
        async move { cache.invalidate(&key).await }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_written_by_the_cache_always_expire() {
    let url = seawall_testkit::RedisServer::shared().url();
    let prefix = unique_prefix();
    let forever = seawall_cache::Policy::new(Duration::MAX)
        .fail_safe(Duration::MAX)
        .hard_timeout(Duration::MAX)
        .negative_ttl(Duration::MAX)
        .stale_while_revalidate(Duration::MAX)
        .l1_ttl(Duration::MAX);
    let cache = TieredCache::builder()
        .prefix(&prefix)
        .redis_timeout(Duration::MAX)
        .lock_wait(Duration::MAX)
        .breaker(u32::MAX, Duration::MAX)
        .cut_off_l1_ttl(Duration::MAX)
        .define("forever", forever)
        .redis(client(&url).await)
        .ready()
        .await;
    let class = cache.class("forever").expect("defined");
    cache.set("a", class, 1_u8).await.expect("sets");
    assert_eq!(cache.get::<u8>("a", class).await, Some(1));
    let loaded = cache
        .get_or_load("b", Options::new(class).tag("t"), || async {
            Ok::<_, std::io::Error>(None::<u8>)
        })
        .await
        .expect("loads");
    assert_eq!(loaded, None);
    cache.invalidate("a").await.expect("invalidates");
    let redis = client(&url).await;
    for key in ["k:a", "k:b", "t:t"] {
        let ttl: i64 = redis
            .pttl(format!("{prefix}:{key}"))
            .await
            .expect("redis answers");
        assert!(ttl > 0, "{key} expires (PTTL {ttl})");
    }
    assert!(cache.wait_following(Duration::MAX).await);
}

/// A tombstone lives no longer than the value it stands for could have,
/// however long a load may take: a value of a class kept five minutes (and
/// its fail-safe five more), under a hard timeout of a century, leaves a
/// tombstone of at most ten minutes; a key that held nothing, none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_lives_no_longer_than_the_value_it_stands_for() {
    let url = seawall_testkit::RedisServer::shared().url();
    let prefix = unique_prefix();
    let five_minutes = Duration::from_secs(300);
    let cache = TieredCache::builder()
        .prefix(&prefix)
        .define(
            "answers",
            seawall_cache::Policy::new(five_minutes)
                .fail_safe(five_minutes)
                .hard_timeout(Duration::MAX),
        )
        .redis(client(&url).await)
        .ready()
        .await;
    let class = cache.class("answers").expect("defined");
    cache.set("a", class, 1_u8).await.expect("sets");
    cache.invalidate("a").await.expect("invalidates");
    cache.invalidate("never-set").await.expect("invalidates");
    let redis = client(&url).await;
    let ttl: i64 = redis
        .pttl(format!("{prefix}:k:a"))
        .await
        .expect("redis answers");
    assert!(
        ttl > 0 && ttl <= 600_000,
        "the tombstone of a value kept ten minutes lives {ttl} ms"
    );
    let ttl: i64 = redis
        .pttl(format!("{prefix}:k:never-set"))
        .await
        .expect("redis answers");
    assert_eq!(ttl, -2, "a key that held nothing got a tombstone");
}

/// A load that ends with nothing to store (its loader failed, or found
/// nothing in a class that caches no "not found") leaves no lease behind:
/// a flood of made-up keys writes nothing to Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_stores_nothing_leaves_nothing_in_redis() {
    let url = seawall_testkit::RedisServer::shared().url();
    let prefix = unique_prefix();
    let cache = TieredCache::builder()
        .prefix(&prefix)
        .define(
            "lookups",
            seawall_cache::Policy::new(Duration::from_secs(60)).negative_ttl(Duration::ZERO),
        )
        .redis(client(&url).await)
        .ready()
        .await;
    let class = cache.class("lookups").expect("defined");
    let missing = cache
        .get_or_load("made-up:1", class, || async {
            Ok::<_, std::io::Error>(None::<u32>)
        })
        .await
        .expect("loads");
    assert_eq!(missing, None);
    let failed = cache
        .get_or_load("made-up:2", class, || async {
            Err::<Option<u32>, _>(std::io::Error::other("no such thing"))
        })
        .await;
    assert!(failed.is_err());
    let redis = client(&url).await;
    for key in ["made-up:1", "made-up:2"] {
        let exists: i64 = redis
            .exists(format!("{prefix}:k:{key}"))
            .await
            .expect("redis answers");
        assert_eq!(exists, 0, "{key} left a key in Redis");
    }
}

/// An invalidation that could not reach Redis keeps its instance unready
/// until it is sent: once the readiness check passes again, Redis no longer
/// holds the old value, and the stream carries the invalidation to other
/// instances' L1. Here the breaker holds the writer's commands off Redis for
/// 3 s after the network is back, while its feed reconnects within a few
/// hundred milliseconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_is_not_ready_while_an_invalidation_it_answered_waits_to_be_sent() {
    use seawall_perfmon::{HealthCheck as _, HealthStatus};
    let builder = TieredCache::builder().breaker(1, Duration::from_secs(3));
    let prefix = unique_prefix();
    let (proxy, a, b) = behind_a_proxy(builder, &prefix).await;
    // Reads what Redis holds, with no L1 that could lag behind the stream.
    let redis_only = Backend::redis()
        .instance(&prefix)
        .await
        .without_l1()
        .build()
        .expect("cache");
    let ready = a.readiness_check();
    a.set("profile", Class::SESSION, 1_u32).await.expect("set");
    assert_eq!(b.get::<u32>("profile", Class::SESSION).await, Some(1));
    proxy.cut();
    assert!(
        a.invalidate("profile").await.is_err(),
        "the error says Redis did not take it (it is sent once Redis answers)"
    );
    assert_eq!(ready.check().await.status, HealthStatus::Unhealthy);
    proxy.restore();
    wait::until_async("a to be ready again", async || {
        ready.check().await.status == HealthStatus::Healthy
    })
    .await;
    // Ready means sent: had a been ready before, Redis would still hold the
    // old value until the breaker's 3 s have passed.
    assert_eq!(
        redis_only.get::<u32>("profile", Class::SESSION).await,
        None,
        "ready before the invalidation reached Redis"
    );
    wait::until_async("another instance to read the invalidation", async || {
        b.get::<u32>("profile", Class::SESSION).await.is_none()
    })
    .await;
}

/// A pattern invalidation whose sweep keeps failing (here its instance's
/// Redis user may not `SCAN`, while it may announce) is announced once
/// before its sweep and once after the sweep succeeds, not again at every
/// retry: each retry's announcement cleared every instance's L1 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_that_keeps_failing_is_announced_once_until_it_succeeds() {
    let server = seawall_testkit::RedisServer::start().expect("redis starts");
    let admin = client(&server.url()).await;
    let acl = async |rules: &[&str]| {
        let mut args = vec!["SETUSER", "sweeper"];
        args.extend_from_slice(rules);
        let _: fred::types::Value = admin
            .custom(fred::cmd!("ACL"), args)
            .await
            .expect("ACL SETUSER");
    };
    acl(&["on", ">sweeper-password", "~*", "&*", "+@all", "-scan"]).await;
    let prefix = unique_prefix();
    let restricted = format!("redis://sweeper:sweeper-password@{}", server.addr());
    let a = TieredCache::builder()
        .prefix(&prefix)
        .redis(client(&restricted).await)
        .ready()
        .await;
    let b = TieredCache::builder()
        .prefix(&prefix)
        .redis(client(&server.url()).await)
        .ready()
        .await;
    for cache in [&a, &b] {
        wait::until_async("both to follow invalidations", async || {
            cache.follows_invalidations()
        })
        .await;
    }
    b.set("page:1", Class::API, 1_u32).await.expect("set");
    let received = b.stats().invalidations_received;
    let errors = a.stats().redis_errors;
    assert!(
        a.invalidate_pattern("page:*").await.is_err(),
        "the sweep is refused"
    );
    wait::until_async("the announcement before the sweep to reach b", async || {
        b.stats().invalidations_received > received
    })
    .await;
    wait::until_async("three retries of the sweep to fail", async || {
        a.stats().redis_errors >= errors + 4
    })
    .await;
    assert!(a.stats().invalidations_pending);
    assert_eq!(
        b.stats().invalidations_received,
        received + 1,
        "announced once before the sweep, not at each retry"
    );
    acl(&["+scan"]).await;
    wait::until_async("the sweep to go through", async || {
        !a.stats().invalidations_pending
    })
    .await;
    wait::until_async("the announcement after the sweep to reach b", async || {
        b.stats().invalidations_received == received + 2
    })
    .await;
    assert_eq!(b.get::<u32>("page:1", Class::API).await, None);
}
