//! Every public duration and cost over the whole range of its type, on
//! every store: no panic, no wrap. A block asked for longer than the crate
//! keeps is a block of [`MAX_DURATION`]; every key on Redis has a positive
//! expiry afterwards.

use std::sync::OnceLock;
use std::time::Duration;

use fred::prelude::{Client, ClientLike, KeysInterface};
use proptest::prelude::*;
use seawall_ratelimit::{ConcurrencyLimiter, Error, Limit, MAX_DURATION, ManualClock, RedisStore};
use seawall_testkit::{RedisCluster, RedisServer};

use crate::support::{Backend, client, unique_name};

const HOUR: Duration = Duration::from_secs(3600);

/// A Redis store and a client to inspect it with, standalone and Cluster.
struct Servers {
    runtime: tokio::runtime::Runtime,
    redis: Vec<(RedisStore, Client)>,
}

fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    SERVERS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let redis = runtime.block_on(async {
            let mut redis = Vec::new();
            for url in [RedisServer::shared().url(), RedisCluster::shared().url()] {
                let client = client(&url).await;
                redis.push((RedisStore::new(client.clone()), client));
            }
            redis
        });
        Servers { runtime, redis }
    })
}

/// Memory, Redis and Redis Cluster; with a client to inspect Redis with.
fn backends() -> Vec<(Backend, Option<Client>)> {
    let mut backends = vec![(Backend::memory(), None)];
    for (store, client) in &servers().redis {
        backends.push((Backend::Redis(store.clone()), Some(client.clone())));
    }
    backends
}

/// Durations over the whole range, the edges weighted up.
fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        3 => (any::<u64>(), 0..1_000_000_000_u32).prop_map(|(s, n)| Duration::new(s, n)),
        1 => any::<u64>().prop_map(Duration::from_millis),
        1 => any::<u64>().prop_map(Duration::from_micros),
        1 => any::<u64>().prop_map(Duration::from_nanos),
        1 => (0..10_000_000_u64).prop_map(Duration::from_millis),
        1 => Just(Duration::MAX),
        1 => Just(Duration::ZERO),
    ]
}

/// Counts over the whole range, the small ones weighted up.
fn count() -> impl Strategy<Value = u64> {
    prop_oneof![
        2 => any::<u64>(),
        2 => 0..10_u64,
        1 => 0..100_000_u64,
        1 => Just(u64::MAX),
    ]
}

/// The key of a subject's block, as the Redis store names it.
fn block_key(store: &RedisStore, limiter: &str, key: &str) -> String {
    format!("{{{}:{limiter}:{key}}}:b", store.prefix())
}

/// Every key under `subject`'s hash tag has an expiry, no longer than the
/// crate's longest duration (0: it ends within the millisecond, as a state
/// of a few µs does; -2: it ended since it was listed; never -1, no
/// expiry).
async fn all_expire(client: &Client, subject: &str) {
    let pattern = format!("{}*", subject.replace('{', "\\{").replace('}', "\\}"));
    let keys: Vec<String> = client
        .custom(fred::cmd!("KEYS"), vec![pattern])
        .await
        .expect("KEYS");
    let longest = i64::try_from(MAX_DURATION.as_millis()).expect("ms") + 1;
    for key in keys {
        let ttl: i64 = client.pttl(&key).await.expect("PTTL");
        assert!(
            ttl == -2 || (0..=longest).contains(&ttl),
            "{key}: PTTL {ttl}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A penalty and a manual block of any length block, for as long as
    /// asked or [`MAX_DURATION`], and never wrap into no block at all.
    #[test]
    fn blocks_and_penalties_of_any_length_hold(penalty in duration(), block in duration()) {
        servers().runtime.block_on(async {
            for (backend, inspect) in backends() {
                let limiter = backend
                    .limiter(Limit::gcra(1, HOUR, 1).expect("limit"))
                    .penalty(penalty)
                    .build()
                    .expect("limiter");
                let name = limiter.name().to_owned();
                assert!(limiter.check("p", 1).await.expect("check").allowed);
                let rejected = limiter.check("p", 1).await.expect("check");
                assert!(!rejected.allowed && !rejected.degraded, "{rejected:?}");
                let asked = penalty.min(MAX_DURATION);
                if asked >= Duration::from_secs(1) {
                    let blocked = rejected.blocked_for.expect("blocked by the penalty");
                    assert!(blocked + Duration::from_secs(1) >= asked && blocked <= asked, "{blocked:?} of {penalty:?}");
                    let again = limiter.check("p", 1).await.expect("check");
                    assert!(again.blocked_for.is_some(), "still blocked: {again:?}");
                }

                let decision = limiter.block("b", block).await.expect("block");
                assert!(!decision.degraded, "{decision:?}");
                let asked = block.min(MAX_DURATION);
                if asked >= Duration::from_secs(1) {
                    backend.pass(Duration::from_millis(1)).await;
                    let checked = limiter.check("b", 1).await.expect("check");
                    let blocked = checked.blocked_for.expect("blocked by hand");
                    assert!(!checked.allowed, "{checked:?}");
                    assert!(blocked + Duration::from_secs(1) >= asked && blocked <= asked, "{blocked:?} of {block:?}");
                }
                if asked >= 2 * HOUR {
                    // An hour on: the block holds, nothing wrapped.
                    if let Backend::Memory(clock, _) = &backend {
                        clock.advance(HOUR);
                        let later = limiter.check("b", 1).await.expect("check");
                        assert!(later.blocked_for.is_some(), "{later:?}");
                    }
                }
                if let (Backend::Redis(store), Some(client)) = (&backend, &inspect) {
                    for (key, asked) in [("p", penalty), ("b", block)] {
                        let ttl: i64 = client.pttl(block_key(store, &name, key)).await.expect("PTTL");
                        // A block of a second or more is there and ends; a
                        // shorter one may be over (-2) or ending (0); none is
                        // ever kept for good (-1).
                        if asked >= Duration::from_secs(1) {
                            assert!(ttl > 0, "{key}: PTTL {ttl}");
                        } else {
                            assert!(ttl >= 0 || ttl == -2, "{key}: PTTL {ttl}");
                        }
                        all_expire(client, &format!("{{{}:{name}:{key}}}", store.prefix())).await;
                    }
                }
            }
        });
    }

    /// A limit built from any rate, period and capacity is built or refused
    /// with a typed error; a check of any cost is decided or refused with
    /// one, and leaves every key expiring.
    #[test]
    fn limits_and_costs_of_any_size_are_decided_or_refused(
        algorithm in 0..7_usize, rate in count(), capacity in count(), period in duration(), cost in count(),
    ) {
        let limit = match algorithm {
            0 => Limit::fixed_window(capacity, period),
            1 => Limit::sliding_log(capacity, period),
            2 => Limit::sliding_window(capacity, period),
            3 => Limit::token_bucket(rate, period, capacity),
            4 => Limit::leaky_bucket(rate, period, capacity),
            5 => Limit::leaky_queue(rate, period, capacity),
            _ => Limit::gcra(rate, period, capacity),
        };
        let limit = match limit {
            Ok(limit) => limit,
            Err(Error::InvalidLimit(_)) => return Ok(()),
            Err(other) => panic!("{other:?}"),
        };
        // A sliding log's costs past its bound are refused like any other.
        let cost = if algorithm == 1 { cost % 2_000 } else { cost };
        servers().runtime.block_on(async {
            for (backend, inspect) in backends() {
                let limiter = backend.limiter(limit).build().expect("limiter");
                match limiter.check("c", cost).await {
                    Err(Error::CostTooHigh { .. }) => assert!(cost > limit.max_cost()),
                    Ok(decision) => {
                        assert!(cost <= limit.max_cost());
                        assert!(decision.allowed && !decision.degraded, "{decision:?}");
                    }
                    Err(other) => panic!("{other:?}"),
                }
                if let (Backend::Redis(store), Some(client)) = (&backend, &inspect) {
                    let subject = format!("{{{}:{}:c}}", store.prefix(), limiter.name());
                    all_expire(client, &subject).await;
                }
            }
        });
    }

    /// A lease time of any length is refused under a millisecond, else a
    /// lease of at most that long that still holds its slot.
    #[test]
    fn lease_times_of_any_length_keep_the_limit(lease_time in duration()) {
        servers().runtime.block_on(async {
            let mut limiters = vec![(ConcurrencyLimiter::builder(&unique_name(), 1), None)];
            for (_, client) in &servers().redis {
                let builder = ConcurrencyLimiter::builder(&unique_name(), 1).redis(client.clone());
                limiters.push((builder, Some(client.clone())));
            }
            for (builder, inspect) in limiters {
                let limiter = match builder.lease_time(lease_time).build() {
                    Ok(limiter) => limiter,
                    Err(Error::InvalidConfig(_)) => {
                        assert!(lease_time < Duration::from_millis(1));
                        continue;
                    }
                    Err(other) => panic!("{other:?}"),
                };
                let lease = limiter.try_acquire("k").await.expect("acquire").expect("a free slot");
                if lease_time >= Duration::from_secs(1) {
                    assert!(limiter.try_acquire("k").await.expect("acquire").is_none(), "{lease_time:?}");
                    assert!(lease.renew().await.expect("renew"));
                    if let Some(client) = &inspect {
                        let key = format!("{{{}:{}:k}}:leases", seawall_ratelimit::DEFAULT_PREFIX, limiter.name());
                        let ttl: i64 = client.pttl(&key).await.expect("PTTL");
                        assert!(ttl > 0, "PTTL {ttl}");
                    }
                }
                lease.release().await.expect("release");
            }
        });
    }

    /// A manual clock moved by any duration stops at its latest time, and a
    /// store's timeout of any length but zero is taken.
    #[test]
    fn a_manual_clock_and_a_store_timeout_take_any_duration(by in duration(), then in duration()) {
        let clock = ManualClock::new();
        let start = clock.now_us();
        clock.advance(by);
        let moved = clock.now_us();
        clock.advance(then);
        prop_assert!(start <= moved && moved <= clock.now_us());
        prop_assert!(clock.now_us() <= ManualClock::MAX_US);
        let store = servers().redis[0].0.clone();
        match store.with_timeout(by) {
            Ok(store) => prop_assert_eq!(store.timeout(), by.min(MAX_DURATION)),
            Err(Error::InvalidConfig(_)) => prop_assert!(by.is_zero()),
            Err(other) => panic!("{other:?}"),
        }
    }
}

/// A memory store's clock far on: checks, penalties and blocks still add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_store_far_in_the_future_still_blocks() {
    let backend = Backend::memory();
    let Backend::Memory(clock, _) = &backend else {
        unreachable!()
    };
    clock.advance(Duration::MAX);
    let limiter = backend
        .limiter(Limit::gcra(1, HOUR, 1).expect("limit"))
        .penalty(Duration::MAX)
        .build()
        .expect("limiter");
    assert!(limiter.check("k", 1).await.expect("check").allowed);
    let rejected = limiter.check("k", 1).await.expect("check");
    assert_eq!(rejected.blocked_for, Some(MAX_DURATION));
    let blocked = limiter.block("m", Duration::MAX).await.expect("block");
    assert_eq!(blocked.blocked_for, Some(MAX_DURATION));
    assert!(!limiter.check("m", 1).await.expect("check").allowed);
}
