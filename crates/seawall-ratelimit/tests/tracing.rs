//! What a subscriber hears of a limiter: a `ratelimit.refused` event per
//! refused check, a `ratelimit.degraded` event per decision the store could
//! not make, and a `ratelimit.redis` client span per Redis script call;
//! an admitted check on the memory store tells nothing.
//!
//! A test binary of its own, with one subscriber installed for the whole
//! process: `tracing` caches whether a callsite is wanted when it first
//! meets it, and a callsite first met where no subscriber listened would
//! stay unwanted. Tests run side by side, so each picks its records out by
//! its limiter's name.

use std::time::Duration;

use fred::prelude::Client;
use seawall_ratelimit::{ConcurrencyLimiter, FailurePolicy, Limit, Limiter, RedisStore};
use seawall_testkit::tracing_capture::{install, named};
use seawall_testkit::{RedisServer, unique_prefix};

/// How long a call may take where the server is up: a loaded machine can
/// hold one up for longer than the store's default 250 ms, which would make
/// it a failed call and the decision a degraded one.
const STEADY_TIMEOUT: Duration = Duration::from_secs(10);

/// A client whose own timeout leaves the store's to decide.
async fn client(url: &str) -> Client {
    seawall_testkit::client::connect(url, STEADY_TIMEOUT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_check_tells_its_limiter_cost_and_retry_after() {
    install();
    let name = unique_prefix();
    // An hour's window: the four checks below fall in one window however
    // slowly a loaded machine runs them.
    let limiter = Limiter::builder(&name)
        .limit(Limit::fixed_window(3, Duration::from_secs(3600)).expect("a limit"))
        .build()
        .expect("a limiter");
    for _ in 0..3 {
        assert!(
            limiter
                .check("203.0.113.7", 1)
                .await
                .expect("decides")
                .allowed
        );
    }
    assert!(
        named("ratelimit.refused", "seawall.ratelimit.name", &name).is_empty(),
        "an admitted check tells nothing"
    );
    let decision = limiter.check("203.0.113.7", 2).await.expect("decides");
    assert!(!decision.allowed);
    let refusals = named("ratelimit.refused", "seawall.ratelimit.name", &name);
    let [refusal] = refusals.as_slice() else {
        panic!("one refusal: {refusals:#?}");
    };
    assert!(!refusal.span);
    assert_eq!(refusal.field("seawall.ratelimit.cost"), Some("2"));
    let retry_after = refusal
        .field("seawall.ratelimit.retry_after_ms")
        .and_then(|ms| ms.parse::<u64>().ok())
        .expect("a retry-after in ms");
    assert!((1..=3_600_000).contains(&retry_after), "{retry_after}");
    assert_eq!(refusal.field("seawall.ratelimit.shadow"), Some("false"));
    assert_eq!(refusal.field("seawall.ratelimit.degraded"), Some("false"));
    assert!(
        refusal
            .fields
            .values()
            .all(|value| !value.contains("203.0.113.7")),
        "no key in the fields: {refusal:#?}"
    );
    // A synchronous check tells the same.
    let decision = limiter
        .check_now("203.0.113.7", 1)
        .expect("a memory store")
        .expect("decides");
    assert!(!decision.allowed);
    assert_eq!(
        named("ratelimit.refused", "seawall.ratelimit.name", &name).len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_check_runs_in_a_client_span() {
    install();
    let name = unique_prefix();
    let store = RedisStore::new(client(&RedisServer::shared().url()).await)
        .with_timeout(STEADY_TIMEOUT)
        .expect("a timeout");
    let limiter = Limiter::builder(&name)
        .limit(Limit::gcra(10, Duration::from_secs(1), 10).expect("a limit"))
        .store(store)
        .build()
        .expect("a limiter");
    let request = tracing::info_span!("request");
    let decision = tracing::Instrument::instrument(limiter.check("203.0.113.7", 1), request)
        .await
        .expect("decides");
    assert!(decision.allowed && !decision.degraded);
    let calls = named("ratelimit.redis", "seawall.ratelimit.name", &name);
    let [call] = calls.as_slice() else {
        panic!("one script call: {calls:#?}");
    };
    assert!(call.span);
    assert_eq!(call.field("db.system.name"), Some("redis"));
    assert_eq!(call.field("otel.kind"), Some("client"));
    assert_eq!(call.field("db.operation.name"), Some("EVALSHA"));
    assert_eq!(call.field("otel.name"), Some("EVALSHA check_tat"));
    assert_eq!(call.field("otel.status_code"), None);
    assert_eq!(call.parent.as_deref(), Some("request"));
}

/// The concurrency limiter's lease calls are client spans too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_on_redis_is_taken_and_released_in_client_spans() {
    install();
    let name = unique_prefix();
    let store = RedisStore::new(client(&RedisServer::shared().url()).await)
        .with_timeout(STEADY_TIMEOUT)
        .expect("a timeout");
    let limiter = ConcurrencyLimiter::builder(&name, 2)
        .redis_store(store)
        .build()
        .expect("a limiter");
    let request = tracing::info_span!("request");
    let lease = tracing::Instrument::instrument(limiter.try_acquire("203.0.113.7"), request)
        .await
        .expect("decides")
        .expect("a lease");
    lease.release().await.expect("released");
    let calls = named("ratelimit.redis", "seawall.ratelimit.name", &name);
    let [acquire, release] = calls.as_slice() else {
        panic!("two script calls: {calls:#?}");
    };
    for call in [acquire, release] {
        assert!(call.span);
        assert_eq!(call.field("db.system.name"), Some("redis"));
        assert_eq!(call.field("otel.kind"), Some("client"));
        assert_eq!(call.field("otel.name"), Some("EVALSHA concurrency"));
        assert_eq!(call.field("otel.status_code"), None);
    }
    assert_eq!(acquire.parent.as_deref(), Some("request"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_fails_leaves_an_error_span_and_a_degraded_decision() {
    install();
    let name = unique_prefix();
    let mut redis = RedisServer::start().expect("redis-server starts");
    let store = RedisStore::new(client(&redis.url()).await)
        .with_timeout(Duration::from_millis(100))
        .expect("a timeout");
    let limiter = Limiter::builder(&name)
        .limit(Limit::gcra(10, Duration::from_secs(1), 10).expect("a limit"))
        .store(store)
        .on_store_failure(FailurePolicy::Closed)
        .build()
        .expect("a limiter");
    redis.kill().expect("kills redis");
    let decision = limiter.check("203.0.113.7", 1).await.expect("decides");
    assert!(decision.degraded && !decision.allowed);
    let calls = named("ratelimit.redis", "seawall.ratelimit.name", &name);
    let [call] = calls.as_slice() else {
        panic!("one script call: {calls:#?}");
    };
    assert_eq!(call.field("otel.status_code"), Some("ERROR"));
    assert!(call.field("error.type").is_some(), "{call:#?}");
    let degraded = named("ratelimit.degraded", "seawall.ratelimit.name", &name);
    let [degraded] = degraded.as_slice() else {
        panic!("one degraded decision: {degraded:#?}");
    };
    assert_eq!(
        degraded.field("seawall.ratelimit.failure_policy"),
        Some("closed")
    );
    // Failing closed refuses: the refusal says it was degraded.
    let refusals = named("ratelimit.refused", "seawall.ratelimit.name", &name);
    let [refusal] = refusals.as_slice() else {
        panic!("one refusal: {refusals:#?}");
    };
    assert_eq!(refusal.field("seawall.ratelimit.degraded"), Some("true"));
}
