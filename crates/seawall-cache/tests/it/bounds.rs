//! Every public duration over its whole range, `Duration::MAX` included:
//! the cache builds or refuses with a typed error, never panics, and no
//! key it writes to Redis is left without an expiry.

use std::time::Duration;

use fred::interfaces::KeysInterface;
use proptest::prelude::*;
use seawall_cache::{EarlyRefresh, Error, Options, Policy, RedisLocks, TieredCache};

use crate::support::{client, unique_prefix};

fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::MAX),
        (any::<u64>(), 0..1_000_000_000_u32).prop_map(|(secs, nanos)| Duration::new(secs, nanos)),
        (0..100_000_u64).prop_map(Duration::from_millis),
    ]
}

#[derive(Debug, Clone)]
struct Durations {
    ttl: Duration,
    l1_ttl: Duration,
    negative_ttl: Duration,
    fail_safe: Duration,
    revalidate: Duration,
    soft: Duration,
    hard: Duration,
    floor: Duration,
    redis_timeout: Duration,
    probe: Duration,
    lock_wait: Duration,
    cut_off: Duration,
    lock_ttl: Duration,
    retention: Duration,
}

fn durations() -> impl Strategy<Value = Durations> {
    (
        (
            any_duration(),
            any_duration(),
            any_duration(),
            any_duration(),
            any_duration(),
        ),
        (
            any_duration(),
            any_duration(),
            any_duration(),
            any_duration(),
            any_duration(),
        ),
        (
            any_duration(),
            any_duration(),
            any_duration(),
            any_duration(),
        ),
    )
        .prop_map(|(a, b, c)| Durations {
            ttl: a.0,
            l1_ttl: a.1,
            negative_ttl: a.2,
            fail_safe: a.3,
            revalidate: a.4,
            soft: b.0,
            hard: b.1,
            floor: b.2,
            redis_timeout: b.3,
            probe: b.4,
            lock_wait: c.0,
            cut_off: c.1,
            lock_ttl: c.2,
            retention: c.3,
        })
}

async fn exercise(durations: Durations, redis: Option<&str>) -> Result<(), TestCaseError> {
    let policy = Policy::new(durations.ttl)
        .l1_ttl(durations.l1_ttl)
        .negative_ttl(durations.negative_ttl)
        .fail_safe(durations.fail_safe)
        .stale_while_revalidate(durations.revalidate)
        .soft_timeout(durations.soft)
        .hard_timeout(durations.hard)
        .early_refresh(EarlyRefresh::XFetch {
            beta: 1.0,
            floor: durations.floor,
        });
    let prefix = unique_prefix();
    let mut builder = TieredCache::builder()
        .prefix(&prefix)
        .redis_timeout(durations.redis_timeout)
        .breaker(3, durations.probe)
        .lock_wait(durations.lock_wait)
        .cut_off_l1_ttl(durations.cut_off)
        .define("any", policy);
    if let Some(url) = redis {
        builder = builder.redis(client(url).await);
    }
    let cache = match builder.build() {
        Ok(cache) => cache,
        Err(Error::Config(_)) => {
            prop_assert!(
                durations.ttl.is_zero()
                    || durations.hard.is_zero()
                    || durations.redis_timeout.is_zero()
                    || durations.probe.is_zero()
                    || durations.soft > durations.hard
            );
            return Ok(());
        }
        Err(other) => return Err(TestCaseError::fail(format!("{other}"))),
    };
    let class = cache.class("any").expect("defined");
    let options = Options::new(class).tag("t");
    cache.set("set", options.clone(), 1_u8).await.ok();
    let _ = cache.get::<u8>("set", class).await;
    let _ = cache
        .get_or_load("found", options.clone(), || async {
            Ok::<_, std::io::Error>(Some(2_u8))
        })
        .await;
    let _ = cache
        .get_or_load("missing", options, || async {
            Ok::<_, std::io::Error>(None::<u8>)
        })
        .await;
    cache.invalidate("set").await.ok();
    if let Some(url) = redis {
        let redis = client(url).await;
        for key in ["k:set", "k:found", "k:missing", "t:t"] {
            let ttl: i64 = redis
                .pttl(format!("{prefix}:{key}"))
                .await
                .expect("redis answers");
            prop_assert!(ttl != -1, "{key} never expires");
        }
        let locks = RedisLocks::with_options(
            redis.clone(),
            format!("{prefix}:lock"),
            durations.redis_timeout.max(Duration::from_millis(1)),
            durations.retention,
        );
        if let Ok(Some(guard)) = locks.try_acquire("l", durations.lock_ttl).await {
            guard.extend(durations.lock_ttl).await.ok();
            for key in ["l}", "l}:fence"] {
                let ttl: i64 = redis
                    .pttl(format!("{{{prefix}:lock:{key}"))
                    .await
                    .expect("redis answers");
                prop_assert!(ttl != -1, "lock {key} never expires");
            }
            guard.release().await.ok();
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_duration_in_memory_builds_or_is_refused(durations in durations()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(exercise(durations, None))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn every_duration_on_redis_builds_or_is_refused_and_keys_expire(durations in durations()) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let url = seawall_testkit::RedisServer::shared().url();
        runtime.block_on(exercise(durations, Some(&url)))?;
    }
}
