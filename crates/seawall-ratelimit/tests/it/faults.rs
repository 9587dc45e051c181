//! A Redis that stalls, and a script that refuses one call: what each costs
//! the requests around it.

use std::time::{Duration, Instant};

use fred::prelude::{Client, ListInterface};
use seawall_ratelimit::{DEFAULT_TIMEOUT, Error, FailurePolicy, Limit, Limiter, Quota, RedisStore};
use seawall_testkit::{RedisCluster, RedisServer};

use crate::support::{client, unique_name};

const HOUR: Duration = Duration::from_secs(3600);

/// One request of the stall test: when it started (since the run began),
/// how long its checks took, and whether any was decided without Redis.
struct Request {
    started: Duration,
    took: Duration,
    degraded: bool,
}

/// Redis frozen for 10 s under 50 requests a second, each request checked
/// by three limiters on clones of one store: the requests sent before the
/// store found the stall, and at most one probe a second, wait for the
/// store's timeout; every other request is decided by the failure policy
/// at once. Then the store goes back to Redis by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stdout)] // the figures, for whoever runs the suite
async fn a_stalled_redis_costs_one_timeout_per_request_sent_before_it_was_found() {
    const RATE: u32 = 50;
    const FREEZE: Duration = Duration::from_secs(10);
    const PROBE_INTERVAL: Duration = Duration::from_secs(1);
    let redis = RedisServer::start().expect("redis-server starts");
    // The client's own timeout is a second: the store's, 250 ms, decides.
    let store = RedisStore::new(client(&redis.url()).await);
    let timeout = store.timeout();
    assert_eq!(timeout, DEFAULT_TIMEOUT);
    let tenant = Quota::builder()
        .rule(
            "minute",
            Limit::sliding_window(1_000_000, 60 * Duration::from_secs(1)).expect("limit"),
        )
        .and_then(|q| {
            q.rule(
                "day",
                Limit::fixed_window(1_000_000, 24 * HOUR).expect("limit"),
            )
        })
        .and_then(|q| q.build())
        .expect("quota");
    let limiters: Vec<Limiter> = [
        Quota::from(Limit::gcra(1_000_000, HOUR, 1_000_000).expect("limit")),
        Quota::from(Limit::sliding_log(seawall_ratelimit::MAX_LOG_LIMIT, HOUR).expect("limit")),
        tenant,
    ]
    .into_iter()
    .map(|quota| {
        Limiter::builder(&unique_name())
            .quota(quota)
            .store(store.clone())
            .on_store_failure(FailurePolicy::Insurance { instances: 1 })
            .build()
            .expect("limiter")
    })
    .collect();

    let begun = Instant::now();
    let warm_up = Duration::from_secs(1);
    let after = Duration::from_millis(2_500);
    let total = warm_up + FREEZE + after;
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / RATE);
    let mut pause = None;
    let mut frozen_at = Duration::ZERO;
    let mut sent = 0_u32;
    while begun.elapsed() < total {
        ticks.tick().await;
        if pause.is_none() && begun.elapsed() >= warm_up {
            frozen_at = begun.elapsed();
            pause = Some(redis.pause_in_background(FREEZE).expect("SIGSTOP"));
        }
        let limiters = limiters.clone();
        let sender = sender.clone();
        sent += 1;
        let key = format!("client-{}", sent % 7);
        tokio::spawn(async move {
            let started = begun.elapsed();
            let mut degraded = false;
            for limiter in &limiters {
                let decision = limiter.check(&key, 1).await.expect("a decision");
                degraded |= decision.degraded;
            }
            let took = begun.elapsed() - started;
            let _ = sender.send(Request {
                started,
                took,
                degraded,
            });
        });
    }
    drop(sender);
    let mut requests = Vec::new();
    while let Some(request) = receiver.recv().await {
        requests.push(request);
    }
    if let Some(pause) = pause {
        pause.wait();
    }
    requests.sort_by_key(|request| request.started);

    let thawed_at = frozen_at + FREEZE;
    let during: Vec<&Request> = requests
        .iter()
        .filter(|r| r.started + r.took > frozen_at && r.started < thawed_at)
        .collect();
    let slow = during.iter().filter(|r| r.took >= timeout).count();
    // The store finds the stall when the first call sent into it times out:
    // every request sent until then waits for its own call.
    let found_at = during
        .iter()
        .filter(|r| r.took >= timeout)
        .map(|r| r.started + r.took)
        .min()
        .unwrap_or(frozen_at);
    let sent_before_found = during.iter().filter(|r| r.started < found_at).count();
    let most_probes =
        usize::try_from(FREEZE.as_secs() / PROBE_INTERVAL.as_secs()).expect("small") + 1;
    let mut fast: Vec<Duration> = during
        .iter()
        .filter(|r| r.took < timeout)
        .map(|r| r.took)
        .collect();
    fast.sort();
    let quantile = |q: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let index = ((fast.len() as f64 * q).ceil() as usize).clamp(1, fast.len().max(1)) - 1;
        fast.get(index).copied().unwrap_or_default()
    };
    let within_10ms = fast
        .iter()
        .filter(|&&took| took <= Duration::from_millis(10))
        .count();
    let recovered = requests
        .iter()
        .filter(|r| r.started >= thawed_at + PROBE_INTERVAL + timeout)
        .collect::<Vec<_>>();
    println!(
        "stall: {} requests during a {FREEZE:?} freeze at {RATE}/s through {} limiters on one store \
         (timeout {timeout:?}): {slow} took >= the timeout (sent before the stall was found \
         {:?} after it began: {sent_before_found}; probes allowed: {most_probes}); the other {} \
         decided by the failure policy in p50 {:?}, p99 {:?}, max {:?}, {within_10ms} within 10 ms; \
         after the thaw {} of {} requests went to Redis",
        during.len(),
        limiters.len(),
        found_at.saturating_sub(frozen_at),
        fast.len(),
        quantile(0.5),
        quantile(0.99),
        fast.last().copied().unwrap_or_default(),
        recovered.iter().filter(|r| !r.degraded).count(),
        recovered.len(),
    );
    assert!(
        during.len() >= 400,
        "the load ran: {} requests",
        during.len()
    );
    assert!(
        slow <= sent_before_found + most_probes,
        "{slow} requests waited for Redis; at most {sent_before_found} sent before the stall \
         was found plus {most_probes} probes may"
    );
    // Those decided without Redis took no time to speak of. A loaded
    // machine holds a thread back now and then, which moves the tail (p99
    // is printed, not judged) but not the median, and the bound is loose.
    assert!(
        quantile(0.5) <= Duration::from_millis(10),
        "p50 {:?}",
        quantile(0.5)
    );
    // Within a probe interval of the thaw the store goes back to Redis. A
    // later call that a loaded machine holds past the timeout may open the
    // breaker again for a moment, as it should, so not every request after
    // it need reach Redis; one that never went back would send none there.
    let to_redis = recovered.iter().filter(|r| !r.degraded).count();
    assert!(
        to_redis > 0,
        "the store goes back to Redis within a probe interval of the thaw: \
         {to_redis} of {} requests after it went to Redis",
        recovered.len()
    );
}

/// A key whose state Redis refuses to read (a list where a string
/// belongs): that call fails as a refusal, and every other key is still
/// decided by Redis.
async fn a_refused_call_leaves_redis_in_use(client: Client) {
    let store = RedisStore::new(client.clone());
    let limiter = Limiter::builder(&unique_name())
        .limit(Limit::fixed_window(10, HOUR).expect("limit"))
        .store(store.clone())
        .on_store_failure(FailurePolicy::Error)
        .build()
        .expect("limiter");
    let state = format!("{{{}:{}:bad}}:1:default", store.prefix(), limiter.name());
    let _: i64 = client.lpush(&state, "not a count").await.expect("LPUSH");
    let refused = limiter.check("bad", 1).await;
    assert!(matches!(refused, Err(Error::Refused(_))), "{refused:?}");
    let decision = limiter.check("good", 1).await.expect("Redis decides");
    assert!(decision.allowed && !decision.degraded, "{decision:?}");
    assert!(!store.is_breaker_open());
    // Under a policy that decides, the refused key gets the policy's answer.
    let open = Limiter::builder(limiter.name())
        .limit(Limit::fixed_window(10, HOUR).expect("limit"))
        .store(store.clone())
        .build()
        .expect("limiter");
    let decision = open.check("bad", 1).await.expect("fails open");
    assert!(decision.allowed && decision.degraded, "{decision:?}");
    let decision = open.check("good", 1).await.expect("Redis decides");
    assert!(!decision.degraded, "{decision:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_call_leaves_redis_in_use_standalone() {
    a_refused_call_leaves_redis_in_use(client(&RedisServer::shared().url()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_call_leaves_redis_in_use_on_cluster() {
    a_refused_call_leaves_redis_in_use(client(&RedisCluster::shared().url()).await).await;
}

/// A sliding log too long to keep is refused when it is built.
#[test]
fn a_sliding_log_beyond_its_bound_is_refused_up_front() {
    let bound = seawall_ratelimit::MAX_LOG_LIMIT;
    assert!(Limit::sliding_log(bound, HOUR).is_ok());
    assert!(matches!(
        Limit::sliding_log(bound + 1, HOUR),
        Err(Error::InvalidLimit(_))
    ));
}

/// How long a command may hold the server before its slow log records it.
const SLOW: Duration = Duration::from_millis(10);

/// Commands the server's slow log recorded since it was last read, as
/// (µs, command), and the log emptied.
fn slow_commands(conn: &mut seawall_testkit::Conn) -> Vec<(i64, String)> {
    let reply = conn.cmd(&["SLOWLOG", "GET", "128"]).expect("SLOWLOG GET");
    conn.cmd(&["SLOWLOG", "RESET"]).expect("SLOWLOG RESET");
    reply
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|entry| {
            let fields = entry.as_array()?;
            let micros = fields.get(2)?.as_int()?;
            let command = fields.get(3)?.as_array()?.first()?.as_str()?.to_owned();
            Some((micros, command))
        })
        .collect()
}

/// No call a sliding log allows holds Redis for more than milliseconds:
/// the largest check it admits (one call's most members), filling the log
/// to its longest, a check after every entry has left the window (the most
/// members one call removes) and a reset of a full log (the most one call
/// frees), on one rule and in a quota of several. The server's slow log
/// records any command over [`SLOW`]; a run records none, in the best of
/// three (a busy machine can pause the server itself mid-command).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stdout)] // the slowest commands, for whoever runs the suite
async fn no_call_a_sliding_log_allows_holds_redis_for_more_than_milliseconds() {
    let micros = SLOW.as_micros().to_string();
    let redis = RedisServer::builder()
        .config("slowlog-log-slower-than", micros.as_str())
        .config("slowlog-max-len", "128")
        .start()
        .expect("redis-server starts");
    let mut conn = redis.connect().expect("connect");
    let store = crate::support::steady_store(&redis.url()).await;
    let window = Duration::from_secs(2);
    let longest = seawall_ratelimit::MAX_LOG_LIMIT;
    let quotas = [
        Quota::from(Limit::sliding_log(longest, window).expect("limit")),
        Quota::builder()
            .rule("log", Limit::sliding_log(longest, window).expect("limit"))
            .and_then(|q| {
                q.rule(
                    "hour",
                    Limit::fixed_window(10 * longest, HOUR).expect("limit"),
                )
            })
            .and_then(|q| q.build())
            .expect("quota"),
    ];
    let mut runs = Vec::new();
    for _ in 0..3 {
        slow_commands(&mut conn);
        for quota in &quotas {
            let limiter = Limiter::builder(&unique_name())
                .quota(quota.clone())
                .store(store.clone())
                .build()
                .expect("limiter");
            // The largest cost the limiter admits in one check.
            let mut cost = longest;
            let first = loop {
                match limiter.check("k", cost).await {
                    Err(Error::CostTooHigh { capacity, .. }) if capacity < cost => cost = capacity,
                    other => break other.expect("check"),
                }
            };
            assert!(first.allowed && !first.degraded, "{first:?}");
            // Filled to the limit (a bounded number of checks: on a busy
            // machine the first entries may leave the window meanwhile).
            for _ in 0..=longest / cost {
                limiter.check("k", cost).await.expect("check");
            }
            // Every entry leaves the window together; the next check
            // removes them all.
            tokio::time::sleep(window + Duration::from_millis(500)).await;
            let after = limiter.check("k", 1).await.expect("check");
            assert!(after.allowed && !after.degraded, "{after:?}");
            for _ in 0..=longest / cost {
                limiter.check("k", cost).await.expect("check");
            }
            limiter.reset("k").await.expect("reset");
        }
        let slow = slow_commands(&mut conn);
        println!("commands over {SLOW:?} in this run: {slow:?} (µs, command)");
        let clean = slow.is_empty();
        runs.push(slow);
        if clean {
            return;
        }
    }
    panic!("a sliding log's allowed calls held Redis over {SLOW:?} in every run: {runs:?}");
}
