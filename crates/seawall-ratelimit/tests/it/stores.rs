//! What only one store has to show: Redis under concurrency, its keys'
//! expiry, its failures; the memory store's bound under a key flood.

use std::time::Duration;

use fred::prelude::{ClientLike, KeysInterface, SortedSetsInterface};
use seawall_ratelimit::{
    Algorithm, Clock, Error, FailurePolicy, Limit, Limiter, ManualClock, MemoryStore, Quota,
    RedisStore,
};
use seawall_testkit::{RedisServer, wait};

use crate::support::{client, steady_store, unique_name};

const HOUR: Duration = Duration::from_secs(3600);

fn hourly(algorithm: Algorithm, capacity: u64) -> Limit {
    match algorithm {
        Algorithm::FixedWindow => Limit::fixed_window(capacity, 24 * HOUR),
        Algorithm::SlidingLog => Limit::sliding_log(capacity, HOUR),
        Algorithm::SlidingWindow => Limit::sliding_window(capacity, HOUR),
        Algorithm::TokenBucket => Limit::token_bucket(capacity, HOUR, capacity),
        Algorithm::LeakyBucket => Limit::leaky_bucket(capacity, HOUR, capacity),
        Algorithm::LeakyQueue => Limit::leaky_queue(capacity, HOUR, capacity),
        Algorithm::Gcra => Limit::gcra(capacity, HOUR, capacity),
        _ => unreachable!("every algorithm is listed"),
    }
    .expect("a valid limit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_tasks_on_four_connections_admit_exactly_the_limit() {
    let url = seawall_testkit::RedisServer::shared().url();
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(steady_store(&url).await);
    }
    for algorithm in Algorithm::ALL {
        let name = unique_name();
        let limiters: Vec<Limiter> = stores
            .iter()
            .map(|store| {
                Limiter::builder(&name)
                    .limit(hourly(algorithm, 100))
                    .store(store.clone())
                    .build()
                    .expect("limiter")
            })
            .collect();
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..200 {
            let limiter = limiters[task % limiters.len()].clone();
            tasks.spawn(async move { limiter.check("hot-key", 1).await.expect("check").allowed });
        }
        let mut admitted = 0;
        while let Some(allowed) = tasks.join_next().await {
            admitted += usize::from(allowed.expect("task"));
        }
        assert_eq!(admitted, 100, "{algorithm}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_expires_and_the_log_is_capped() {
    let client = client(&seawall_testkit::RedisServer::shared().url()).await;
    let store = steady_store(&seawall_testkit::RedisServer::shared().url()).await;
    let name = unique_name();
    let window = Duration::from_secs(30);
    let limiter = Limiter::builder(&name)
        .limit(Limit::sliding_log(3, window).expect("limit"))
        .store(store.clone())
        .build()
        .expect("limiter");
    for _ in 0..10 {
        let _ = limiter.check("k", 1).await.expect("check");
    }
    let subject = format!("{{{}:{name}:k}}", store.prefix());
    let log = format!("{subject}:log:default");
    let members: i64 = client.zcard(&log).await.expect("ZCARD");
    assert_eq!(members, 3, "the log holds at most the limit");
    let keys = subject_keys(&client, &subject).await;
    assert_eq!(keys, std::slice::from_ref(&log), "the log alone");
    for key in &keys {
        let ttl: i64 = client.pttl(key).await.expect("PTTL");
        assert!(ttl > 0 && ttl <= 30_000, "{key}: {ttl} ms");
    }
    // A reset leaves nothing behind.
    limiter.reset("k").await.expect("reset");
    assert_eq!(subject_keys(&client, &subject).await, Vec::<String>::new());

    // Every algorithm's state expires, and within what its state needs,
    // whichever script wrote it: a check of one rule, a quota of two, a
    // penalty's block.
    for algorithm in Algorithm::ALL {
        let name = unique_name();
        let single = Limiter::builder(&name)
            .limit(hourly(algorithm, 10))
            .store(store.clone())
            .build()
            .expect("limiter");
        let decision = single.check("k", 3).await.expect("check");
        // The state stays as long as the decision says it takes to reset.
        let subject = format!("{{{}:{name}:k}}", store.prefix());
        let state = subject_keys(&client, &subject)
            .await
            .into_iter()
            .find(|key| !key.ends_with(":b"))
            .expect("the rule's state");
        let ttl: i64 = client.pttl(&state).await.expect("PTTL");
        let reset_ms = i64::try_from(decision.reset_after.as_millis()).expect("ms");
        assert!(
            ttl <= reset_ms + 1 && ttl >= reset_ms - 1_000,
            "{algorithm}: {state} expires in {ttl} ms, resets in {reset_ms} ms"
        );
        let name = unique_name();
        let rules = Quota::builder()
            .rule("a", hourly(algorithm, 10))
            .and_then(|q| q.rule("b", hourly(algorithm, 20)))
            .and_then(|q| q.build())
            .expect("quota");
        let quota = Limiter::builder(&name)
            .quota(rules)
            .penalty(Duration::from_secs(60))
            .store(store.clone())
            .build()
            .expect("limiter");
        quota.check("k", 3).await.expect("check");
        let rejected = quota.check("k", 8).await.expect("check");
        assert!(!rejected.allowed, "{algorithm}: 3 + 8 units exceed 10");
        let subject = format!("{{{}:{name}:k}}", store.prefix());
        let keys = subject_keys(&client, &subject).await;
        assert!(
            keys.len() >= 3,
            "two rules' states and the block: {algorithm}: {keys:?}"
        );
        for key in keys {
            let ttl: i64 = client.pttl(&key).await.expect("PTTL");
            assert!(
                ttl > 0 && ttl <= 2 * 24 * 3_600_000,
                "{algorithm} {key}: {ttl}"
            );
        }
    }
}

/// A bucket's state as earlier builds kept it ("level:since" under the
/// algorithm's bare code) is never read as the one-time layout: builds of
/// both layouts running at once keep a bucket each, and the old key is left
/// to expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_in_the_earlier_layout_is_left_alone() {
    let client = client(&seawall_testkit::RedisServer::shared().url()).await;
    let store = steady_store(&seawall_testkit::RedisServer::shared().url()).await;
    for (algorithm, code) in [(Algorithm::TokenBucket, 4), (Algorithm::LeakyBucket, 5)] {
        let name = unique_name();
        let subject = format!("{{{}:{name}:k}}", store.prefix());
        let earlier = format!("{subject}:{code}:default");
        let spent = format!("9:{}", server_time_us(&client).await);
        set_for_a_minute(&client, &earlier, &spent).await;
        let limiter = Limiter::builder(&name)
            .limit(hourly(algorithm, 10))
            .store(store.clone())
            .build()
            .expect("limiter");
        let decision = limiter.check("k", 10).await.expect("check");
        assert!(decision.allowed, "{algorithm}: a full bucket: {decision:?}");
        let kept: String = client.get(&earlier).await.expect("GET");
        assert_eq!(kept, spent, "{algorithm}");
        let keys = subject_keys(&client, &subject).await;
        assert_eq!(
            keys,
            [earlier.clone(), format!("{subject}:{code}t:default")],
            "{algorithm}"
        );
        assert!(!limiter.check("k", 1).await.expect("check").allowed);
    }
}

/// A sliding log that earlier builds wrote (members numbered by a counter
/// in a state key) is counted whole, and the members added now cannot take
/// an earlier one's name, whichever script adds them: builds of both kinds
/// share one log. The earlier counter's value does not trouble a peek, a
/// reset or a quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sliding_log_of_the_earlier_naming_is_counted_whole() {
    let client = client(&seawall_testkit::RedisServer::shared().url()).await;
    let store = steady_store(&seawall_testkit::RedisServer::shared().url()).await;
    #[allow(clippy::cast_precision_loss)]
    let now = server_time_us(&client).await as f64;
    let one_rule = Quota::from(hourly(Algorithm::SlidingLog, 4));
    let two_rules = Quota::builder()
        .rule("default", hourly(Algorithm::SlidingLog, 4))
        .and_then(|q| q.rule("daily", hourly(Algorithm::FixedWindow, 100)))
        .and_then(|q| q.build())
        .expect("quota");
    for quota in [one_rule, two_rules] {
        let name = unique_name();
        let subject = format!("{{{}:{name}:k}}", store.prefix());
        let log = format!("{subject}:log:default");
        // Two units in the window, named as a counter that had passed two
        // units already gone names them: a new unit named by the count
        // alone would take the name "3".
        let _: i64 = client
            .zadd(&log, None, None, false, false, vec![(now, "3"), (now, "4")])
            .await
            .expect("ZADD");
        set_for_a_minute(&client, &format!("{subject}:2:default"), "4").await;
        let limiter = Limiter::builder(&name)
            .quota(quota)
            .store(store.clone())
            .build()
            .expect("limiter");
        let peeked = limiter.peek("k").await.expect("peek");
        assert_eq!(peeked.remaining, 2, "{peeked:?}");
        let admitted = limiter.check("k", 2).await.expect("check");
        assert!(admitted.allowed, "{admitted:?}");
        assert_eq!(admitted.remaining, 0, "{admitted:?}");
        let members: i64 = client.zcard(&log).await.expect("ZCARD");
        assert_eq!(members, 4);
        assert!(!limiter.check("k", 1).await.expect("check").allowed);
        limiter.reset("k").await.expect("reset");
        assert!(limiter.check("k", 4).await.expect("check").allowed);
    }
}

/// The server's time in µs.
async fn server_time_us(client: &fred::prelude::Client) -> u64 {
    let (seconds, micros): (u64, u64) = client
        .custom(fred::cmd!("TIME"), Vec::<String>::new())
        .await
        .expect("TIME");
    seconds * 1_000_000 + micros
}

/// Sets `key` to `value` for a minute, as an earlier build would have.
async fn set_for_a_minute(client: &fred::prelude::Client, key: &str, value: &str) {
    let _: () = client
        .set(
            key,
            value,
            Some(fred::types::Expiration::PX(60_000)),
            None,
            false,
        )
        .await
        .expect("SET");
}

/// Every key under a subject's hash tag.
async fn subject_keys(client: &fred::prelude::Client, subject: &str) -> Vec<String> {
    let pattern = format!("{}*", subject.replace('{', "\\{").replace('}', "\\}"));
    let mut keys: Vec<String> = client
        .custom(fred::cmd!("KEYS"), vec![pattern])
        .await
        .expect("KEYS");
    keys.sort();
    keys
}

/// A limiter per failure policy on a Redis server that dies and comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_each_policy_holds_and_recovery_is_automatic() {
    let mut redis = RedisServer::start().expect("redis-server starts");
    let store = RedisStore::new(client(&redis.url()).await);
    let policies = [
        FailurePolicy::Open,
        FailurePolicy::Closed,
        FailurePolicy::Insurance { instances: 2 },
        FailurePolicy::Error,
    ];
    let limiters: Vec<Limiter> = policies
        .iter()
        .map(|&policy| {
            Limiter::builder(&unique_name())
                .limit(Limit::gcra(10, HOUR, 10).expect("limit"))
                .store(store.clone())
                .on_store_failure(policy)
                .build()
                .expect("limiter")
        })
        .collect();
    for limiter in &limiters {
        let decision = limiter.check("k", 1).await.expect("Redis is up");
        assert!(decision.allowed && !decision.degraded);
    }

    redis.kill().expect("kill");
    let [open, closed, insurance, error] = &limiters[..] else {
        unreachable!()
    };
    let decision = open.check("k", 1).await.expect("fails open");
    assert!(decision.allowed && decision.degraded, "{decision:?}");
    let decision = closed.check("k", 1).await.expect("fails closed");
    assert!(!decision.allowed && decision.degraded, "{decision:?}");
    assert_eq!(decision.retry_after, Some(Duration::from_secs(1)));
    // Half of the burst of 10 for this instance.
    let mut admitted = 0;
    for _ in 0..8 {
        let decision = insurance.check("k", 1).await.expect("insurance");
        assert!(decision.degraded);
        admitted += u32::from(decision.allowed);
    }
    assert_eq!(admitted, 5);
    assert!(error.check("k", 1).await.is_err());

    redis.restart().expect("restart");
    // Each limiter goes back to Redis by itself once it answers.
    for limiter in &limiters {
        wait::until_async(
            format!("{} to go back to Redis", limiter.name()),
            async || {
                limiter
                    .check("k", 1)
                    .await
                    .is_ok_and(|decision| !decision.degraded)
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_store_stays_bounded_under_a_key_flood() {
    let clock = ManualClock::new();
    let store = MemoryStore::builder()
        .clock(Clock::Manual(clock.clone()))
        .max_keys(10_000)
        .shards(16)
        .build();
    let limiter = Limiter::builder("ddos")
        .limit(Limit::fixed_window(1000, HOUR).expect("limit"))
        .store(store.clone())
        .build()
        .expect("limiter");
    // A million random IPv6 addresses, each seen once: each keeps its count
    // for the hour, so once the store is full the new ones are decided by
    // the failure policy (open).
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut degraded = 0;
    for _ in 0..1_000_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let key = format!(
            "2001:db8:{:x}:{:x}:{:x}:{:x}::1",
            state & 0xffff,
            (state >> 16) & 0xffff,
            (state >> 32) & 0xffff,
            state >> 48
        );
        let decision = limiter.check(&key, 1).await.expect("check");
        assert!(decision.allowed);
        degraded += u32::from(decision.degraded);
    }
    assert!(store.len() <= 10_000, "{} keys kept", store.len());
    assert!(degraded >= 980_000, "{degraded} decided by the policy");
    // Once the flood's counts are over, a key that keeps coming is limited.
    clock.advance(HOUR);
    for _ in 0..1000 {
        assert!(
            limiter
                .check("2001:db8::hot", 1)
                .await
                .expect("check")
                .allowed
        );
    }
    assert!(
        !limiter
            .check("2001:db8::hot", 1)
            .await
            .expect("check")
            .allowed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_script_cache_is_refilled_on_the_next_check() {
    use fred::prelude::LuaInterface;
    let client = client(&seawall_testkit::RedisServer::shared().url()).await;
    let limiter = Limiter::builder(&unique_name())
        .limit(Limit::fixed_window(2, HOUR).expect("limit"))
        .store(steady_store(&seawall_testkit::RedisServer::shared().url()).await)
        .on_store_failure(FailurePolicy::Error)
        .build()
        .expect("limiter");
    assert!(limiter.check("k", 1).await.expect("check").allowed);
    client.script_flush(false).await.expect("SCRIPT FLUSH");
    // NOSCRIPT: the script is loaded again, and the count was kept.
    let decision = limiter.check("k", 1).await.expect("check after the flush");
    assert!(decision.allowed && !decision.degraded, "{decision:?}");
    assert_eq!(decision.remaining, 0);
}

/// A full memory store forgets only keys whose state equals a fresh one: a
/// key blocked by a penalty stays blocked under a flood of new keys, and a
/// new key that finds no room is decided by the failure policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_memory_store_keeps_blocked_keys_and_leaves_new_ones_to_the_policy() {
    let clock = ManualClock::new();
    let store = MemoryStore::builder()
        .clock(Clock::Manual(clock.clone()))
        .max_keys(16)
        .shards(1)
        .build();
    let minute = Duration::from_secs(60);
    let build = |policy| {
        Limiter::builder("flood")
            .limit(Limit::fixed_window(1, HOUR).expect("limit"))
            .penalty(10 * minute)
            .store(store.clone())
            .on_store_failure(policy)
            .build()
            .expect("limiter")
    };
    let limiter = build(FailurePolicy::Open);
    assert!(limiter.check("attacker", 1).await.expect("check").allowed);
    let blocked = limiter.check("attacker", 1).await.expect("check");
    assert!(blocked.blocked_for.is_some(), "{blocked:?}");
    // Keys that each used their limit for the hour, longer than the block.
    for n in 0..100 {
        let decision = limiter.check(&format!("k{n}"), 1).await.expect("check");
        assert!(decision.allowed, "{decision:?}");
        assert_eq!(decision.degraded, n >= 15, "key {n}: {decision:?}");
    }
    assert!(store.len() <= 16);
    let still = limiter.check("attacker", 1).await.expect("check");
    assert!(!still.allowed && still.blocked_for.is_some(), "{still:?}");
    // A key held is decided as always; a new one by the policy.
    assert!(!limiter.check("k0", 1).await.expect("check").allowed);
    let closed = build(FailurePolicy::Closed);
    let decision = closed.check("newcomer", 1).await.expect("fails closed");
    assert!(!decision.allowed && decision.degraded, "{decision:?}");
    let error = build(FailurePolicy::Error);
    assert!(matches!(
        error.check("newcomer", 1).await,
        Err(Error::StoreFull { .. })
    ));
    assert!(matches!(
        error.check_now("newcomer", 1),
        Some(Err(Error::StoreFull { .. }))
    ));
    // Once their states are fresh again, new keys take their places.
    clock.advance(HOUR);
    let decision = error.check("newcomer", 1).await.expect("room again");
    assert!(decision.allowed && !decision.degraded, "{decision:?}");
}
