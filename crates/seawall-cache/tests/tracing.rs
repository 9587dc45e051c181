//! What a subscriber hears of a cache: one `cache.load` span per load with
//! its outcome, a `cache.redis` client span per Redis round trip, a
//! `cache.miss` event per miss, a `cache.breaker_refused` event per call
//! the open breaker keeps from Redis, and nothing at all from an L1 hit.
//!
//! A test binary of its own, with one subscriber installed for the whole
//! process: `tracing` caches whether a callsite is wanted when it first
//! meets it, and a callsite first met where no subscriber listened would
//! stay unwanted. Tests run side by side, so each picks its records out by
//! its cache's name or key prefix.

use std::time::Duration;

use seawall_cache::{Class, RedisLocks, TieredCache};
use seawall_testkit::tracing_capture::{Recorded, install, named, recorded};
use seawall_testkit::{RedisServer, client, unique_prefix, wait};
use tracing::Instrument as _;

/// How long a Redis call may take where the server is up: a loaded machine
/// can hold one up for longer than the cache's default 250 ms, which would
/// make it a failed call.
const STEADY_REDIS_TIMEOUT: Duration = Duration::from_secs(10);

/// Polls `records` until it answers `count` records of `what` (spans are
/// recorded when they close, which a spawned load does just after it
/// answers).
async fn wait_for(
    count: usize,
    what: &str,
    mut records: impl FnMut() -> Vec<Recorded>,
) -> Vec<Recorded> {
    wait::until_some_async(format!("{count} {what} records"), async || {
        let found = records();
        (found.len() >= count).then_some(found)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_runs_one_load_span_with_its_outcome_and_a_hit_tells_nothing() {
    install();
    let name = unique_prefix();
    let cache = TieredCache::builder().name(&name).build().expect("a cache");
    let request = tracing::info_span!("request");
    let callers = (0..8).map(|_| {
        let cache = cache.clone();
        tokio::spawn(
            async move {
                cache
                    .get_or_load("user:7:card", Class::API, || async {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, std::io::Error>(Some(7_u32))
                    })
                    .await
            }
            .instrument(request.clone()),
        )
    });
    for caller in futures_util::future::join_all(callers).await {
        assert_eq!(caller.expect("joins").expect("loads"), Some(7));
    }
    let loads = wait_for(1, "cache.load", || {
        named("cache.load", "seawall.cache.name", &name)
    })
    .await;
    let [load] = loads.as_slice() else {
        panic!("one load span for eight callers: {loads:#?}");
    };
    assert!(load.span);
    assert_eq!(load.field("seawall.cache.class"), Some("api"));
    assert_eq!(load.field("seawall.cache.outcome"), Some("loaded"));
    assert_eq!(load.field("otel.status_code"), None);
    assert_eq!(load.parent.as_deref(), Some("request"), "{load:#?}");
    assert_eq!(load.field("seawall.cache.key"), None);
    let misses = named("cache.miss", "seawall.cache.name", &name);
    assert!(!misses.is_empty());
    assert!(
        misses
            .iter()
            .all(|miss| !miss.span && miss.field("seawall.cache.tier") == Some("l1")),
        "{misses:#?}"
    );

    // "Not found" and a failure are outcomes too; the failure is an error.
    let missing = cache
        .get_or_load("user:8:card", Class::API, || async {
            Ok::<Option<u32>, std::io::Error>(None)
        })
        .await;
    assert_eq!(missing.expect("loads"), None);
    let failed = cache
        .get_or_load("user:9:card", Class::API, || async {
            Err::<Option<u32>, _>(std::io::Error::other("the database is away"))
        })
        .await;
    assert!(failed.is_err());
    let loads = wait_for(3, "cache.load", || {
        named("cache.load", "seawall.cache.name", &name)
    })
    .await;
    let outcomes: Vec<_> = loads
        .iter()
        .map(|load| load.field("seawall.cache.outcome"))
        .collect();
    assert_eq!(
        outcomes,
        [Some("loaded"), Some("not_found"), Some("failed")],
        "{loads:#?}"
    );
    assert_eq!(loads[2].field("otel.status_code"), Some("ERROR"));
    assert_eq!(loads[2].field("error.type"), Some("failed"));

    // A hit: no span, no event.
    let before = recorded().len();
    let hits = (0..100).map(|_| cache.get::<u32>("user:7:card", Class::API));
    for hit in futures_util::future::join_all(hits).await {
        assert_eq!(hit, Some(7));
    }
    let after: Vec<_> = recorded()
        .into_iter()
        .skip(before)
        .filter(|record| record.field("seawall.cache.name") == Some(name.as_str()))
        .collect();
    assert!(after.is_empty(), "a hit told a subscriber: {after:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_round_trips_run_in_client_spans() {
    install();
    let prefix = unique_prefix();
    let url = RedisServer::shared().url();
    let cache = TieredCache::builder()
        .name(&prefix)
        .prefix(&prefix)
        .redis_timeout(STEADY_REDIS_TIMEOUT)
        .redis(client::connect(&url, STEADY_REDIS_TIMEOUT).await)
        .build()
        .expect("a cache");
    // A load that runs while the invalidation feed takes its starting
    // position stores nothing, in either tier: the load waits for it, as a
    // service's readiness does.
    assert!(
        cache.wait_following(Duration::from_secs(120)).await,
        "the cache never followed the invalidation stream"
    );
    let request = tracing::info_span!("request");
    let value = cache
        .get_or_load("user:7:card", Class::API, || async {
            Ok::<_, std::io::Error>(Some(7_u32))
        })
        .instrument(request)
        .await;
    assert_eq!(value.expect("loads"), Some(7));
    // Another instance without L1 reads it from Redis.
    let other = TieredCache::builder()
        .name(&prefix)
        .prefix(&prefix)
        .without_l1()
        .redis_timeout(STEADY_REDIS_TIMEOUT)
        .redis(client::connect(&url, STEADY_REDIS_TIMEOUT).await)
        .build()
        .expect("a cache");
    assert_eq!(other.get::<u32>("user:7:card", Class::API).await, Some(7));

    let calls = wait_for(3, "cache.redis", || {
        named("cache.redis", "seawall.cache.prefix", &prefix)
    })
    .await;
    for call in &calls {
        assert!(call.span);
        assert_eq!(call.field("db.system.name"), Some("redis"), "{call:#?}");
        assert_eq!(call.field("otel.kind"), Some("client"));
        assert_eq!(call.field("otel.status_code"), None, "{call:#?}");
    }
    let summary = |call: &Recorded| {
        (
            call.field("otel.name").map(str::to_owned),
            call.field("db.operation.name").map(str::to_owned),
            call.parent.clone(),
        )
    };
    let text = |s: &str| Some(s.to_owned());
    let calls: Vec<_> = calls.iter().map(summary).collect();
    // The load's lease is taken in the caller's trace; its fill inside
    // the load's span; the plain read on its own.
    assert!(
        calls.contains(&(text("EVALSHA lease"), text("EVALSHA"), text("request"))),
        "{calls:#?}"
    );
    assert!(
        calls.contains(&(text("EVALSHA fill"), text("EVALSHA"), text("cache.load"))),
        "{calls:#?}"
    );
    assert!(
        calls.contains(&(text("GET"), text("GET"), None)),
        "{calls:#?}"
    );
    let misses = named("cache.miss", "seawall.cache.name", &prefix);
    let tiers: Vec<_> = misses
        .iter()
        .map(|miss| miss.field("seawall.cache.tier"))
        .collect();
    assert_eq!(tiers, [Some("l1"), Some("l2")], "{misses:#?}");
}

/// The distributed locks' script calls are client spans too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_is_taken_and_released_in_client_spans() {
    install();
    let prefix = unique_prefix();
    let locks = RedisLocks::with_options(
        client::connect(&RedisServer::shared().url(), STEADY_REDIS_TIMEOUT).await,
        prefix.clone(),
        STEADY_REDIS_TIMEOUT,
        Duration::from_secs(60),
    );
    let guard = locks
        .try_acquire("nightly", Duration::from_secs(5))
        .instrument(tracing::info_span!("request"))
        .await
        .expect("answers")
        .expect("free");
    guard.release().await.expect("released");
    let calls = named("cache.redis", "seawall.cache.prefix", &prefix);
    let names: Vec<_> = calls
        .iter()
        .map(|call| (call.field("otel.name"), call.parent.as_deref()))
        .collect();
    assert_eq!(
        names,
        [
            (Some("EVALSHA lock_acquire"), Some("request")),
            (Some("EVALSHA lock_release"), None),
        ],
        "{calls:#?}"
    );
    for call in &calls {
        assert!(call.span);
        assert_eq!(call.field("db.system.name"), Some("redis"));
        assert_eq!(call.field("otel.kind"), Some("client"));
        assert_eq!(call.field("otel.status_code"), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_call_is_an_error_and_the_open_breaker_tells_of_each_refusal() {
    install();
    let redis = RedisServer::start().expect("redis-server starts");
    let prefix = unique_prefix();
    let cache = TieredCache::builder()
        .name(&prefix)
        .prefix(&prefix)
        .without_l1()
        .redis_timeout(Duration::from_millis(100))
        .breaker(1, Duration::from_secs(3600))
        .redis(client::connect(&redis.url(), Duration::from_millis(500)).await)
        .build()
        .expect("a cache");
    // Frozen, not killed: a call times out, on a connection the client
    // does not find lost (a lost one opens the breaker before any call).
    let _frozen = redis
        .pause_in_background(Duration::from_secs(10))
        .expect("freezes redis");
    // The first read fails and opens the breaker; the second is refused.
    assert_eq!(cache.get::<u32>("user:7:card", Class::API).await, None);
    assert_eq!(cache.get::<u32>("user:7:card", Class::API).await, None);
    let calls = named("cache.redis", "seawall.cache.prefix", &prefix);
    let [call] = calls.as_slice() else {
        panic!("one call sent: {calls:#?}");
    };
    assert_eq!(call.field("otel.name"), Some("GET"));
    assert_eq!(call.field("otel.status_code"), Some("ERROR"));
    assert!(call.field("error.type").is_some(), "{call:#?}");
    let refusals = named("cache.breaker_refused", "seawall.cache.prefix", &prefix);
    assert_eq!(refusals.len(), 1, "{refusals:#?}");
    assert_eq!(refusals[0].field("db.system.name"), Some("redis"));
}
