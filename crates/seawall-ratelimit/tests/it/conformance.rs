//! One suite for every algorithm on every store: memory, Redis standalone
//! and Redis Cluster give the same answers.

use std::time::Duration;

use seawall_ratelimit::{Algorithm, Error, Limit, Quota};

use crate::on_every_backend;
use crate::support::Backend;

/// A limit of `capacity` units of `algorithm`, recovering one unit per
/// `period / capacity`.
fn limit(algorithm: Algorithm, capacity: u64, period: Duration) -> Limit {
    match algorithm {
        Algorithm::FixedWindow => Limit::fixed_window(capacity, period),
        Algorithm::SlidingLog => Limit::sliding_log(capacity, period),
        Algorithm::SlidingWindow => Limit::sliding_window(capacity, period),
        Algorithm::TokenBucket => Limit::token_bucket(capacity, period, capacity),
        Algorithm::LeakyBucket => Limit::leaky_bucket(capacity, period, capacity),
        Algorithm::LeakyQueue => Limit::leaky_queue(capacity, period, capacity),
        Algorithm::Gcra => Limit::gcra(capacity, period, capacity),
        _ => unreachable!("every algorithm is listed"),
    }
    .expect("a valid limit")
}

const HOUR: Duration = Duration::from_secs(3600);

async fn admits_the_capacity_then_rejects_without_consuming(backend: &Backend) {
    for algorithm in Algorithm::ALL {
        let limiter = backend
            .limiter(limit(algorithm, 5, HOUR))
            .build()
            .expect("limiter");
        for n in 0..5 {
            let decision = limiter.check("subject", 1).await.expect("check");
            assert!(decision.allowed, "{algorithm}: request {n}: {decision:?}");
            assert_eq!(decision.remaining, 4 - n, "{algorithm}: {decision:?}");
            assert_eq!(decision.limit, 5, "{algorithm}");
            assert!(decision.retry_after.is_none());
        }
        let rejected = limiter.check("subject", 1).await.expect("check");
        assert!(!rejected.allowed, "{algorithm}: {rejected:?}");
        assert_eq!(rejected.remaining, 0, "{algorithm}");
        let retry = rejected.retry_after.expect("a retry-after");
        // The sliding window counter's estimate may need the next window too.
        let longest = if algorithm == Algorithm::SlidingWindow {
            2 * HOUR
        } else {
            HOUR
        };
        assert!(
            retry > Duration::ZERO && retry <= longest,
            "{algorithm}: {retry:?}"
        );
        // Rejections consume nothing: a peek sees what the fifth check left,
        // and another key is untouched.
        let peek = limiter.peek("subject").await.expect("peek");
        assert!(!peek.allowed, "{algorithm}: {peek:?}");
        assert_eq!(peek.remaining, 0, "{algorithm}");
        let other = limiter.peek("other").await.expect("peek");
        assert!(
            other.allowed && other.remaining == 5,
            "{algorithm}: {other:?}"
        );
    }
}

async fn recovers_once_retry_after_has_passed(backend: &Backend) {
    for algorithm in Algorithm::ALL {
        let limiter = backend
            .limiter(limit(algorithm, 2, Duration::from_millis(400)))
            .build()
            .expect("limiter");
        // The rejection that ends the run is the one to read: on a real
        // clock a later check may already be admitted again.
        let rejected = loop {
            let decision = limiter.check("subject", 1).await.expect("check");
            if !decision.allowed {
                break decision;
            }
        };
        let retry = rejected.retry_after.expect("rejected");
        assert!(
            retry <= Duration::from_millis(800),
            "{algorithm}: {retry:?}"
        );
        backend.pass(retry).await;
        let decision = limiter.check("subject", 1).await.expect("check");
        assert!(
            decision.allowed,
            "{algorithm}: after {retry:?}: {decision:?}"
        );
    }
}

async fn a_quota_consumes_in_every_rule_or_in_none(backend: &Backend) {
    let quota = Quota::builder()
        .rule(
            "minute",
            Limit::sliding_log(2, Duration::from_secs(60)).expect("limit"),
        )
        .and_then(|q| q.rule("hour", Limit::gcra(10, HOUR, 10).expect("limit")))
        .and_then(|q| q.rule("day", Limit::fixed_window(100, 24 * HOUR).expect("limit")))
        .and_then(|q| q.build())
        .expect("quota");
    let limiter = backend.limiter(quota).build().expect("limiter");
    for _ in 0..2 {
        assert!(limiter.check("tenant", 1).await.expect("check").allowed);
    }
    let rejected = limiter.check("tenant", 1).await.expect("check");
    assert!(!rejected.allowed);
    let by_rule: Vec<(&str, bool, u64)> = rejected
        .rules
        .iter()
        .map(|rule| (rule.name, rule.allowed, rule.remaining))
        .collect();
    assert_eq!(
        by_rule,
        [("minute", false, 0), ("hour", true, 7), ("day", true, 97)],
        "the hour and day rules count what they would admit"
    );
    let peek = limiter.peek("tenant").await.expect("peek");
    let remaining: Vec<u64> = peek.rules.iter().map(|rule| rule.remaining).collect();
    assert_eq!(remaining, [0, 8, 98], "the rejection consumed nothing");
    // The most constraining rule speaks for the decision.
    assert_eq!((peek.limit, peek.remaining), (2, 0));
}

async fn penalties_and_manual_blocks(backend: &Backend) {
    let limiter = backend
        .limiter(limit(Algorithm::Gcra, 2, HOUR))
        .penalty(Duration::from_secs(120))
        .build()
        .expect("limiter");
    assert!(limiter.check("ip", 2).await.expect("check").allowed);
    let rejected = limiter.check("ip", 1).await.expect("check");
    assert!(!rejected.allowed);
    let blocked_for = rejected.blocked_for.expect("blocked by the penalty");
    assert!(blocked_for <= Duration::from_secs(120) && blocked_for > Duration::from_secs(110));
    assert!(rejected.retry_after.expect("retry") >= blocked_for);

    limiter.reset("ip").await.expect("reset");
    let fresh = limiter.check("ip", 1).await.expect("check");
    assert!(fresh.allowed && fresh.blocked_for.is_none(), "{fresh:?}");

    limiter
        .block("ip", Duration::from_secs(30))
        .await
        .expect("block");
    let blocked = limiter.check("ip", 1).await.expect("check");
    assert!(!blocked.allowed, "{blocked:?}");
    assert!(blocked.blocked_for.expect("blocked") <= Duration::from_secs(30));
    assert_eq!(blocked.remaining, 0);
    limiter.unblock("ip").await.expect("unblock");
    let unblocked = limiter.check("ip", 1).await.expect("check");
    assert!(unblocked.allowed, "{unblocked:?}");
    assert_eq!(
        unblocked.remaining, 0,
        "the block consumed nothing; the first check did"
    );
}

async fn bad_input_is_a_typed_error(backend: &Backend) {
    let limiter = backend
        .limiter(limit(Algorithm::TokenBucket, 3, HOUR))
        .build()
        .expect("limiter");
    assert!(matches!(
        limiter.check("k", 4).await,
        Err(Error::CostTooHigh {
            cost: 4,
            capacity: 3,
            ..
        })
    ));
    assert!(matches!(
        limiter.check("", 1).await,
        Err(Error::InvalidKey(_))
    ));
    let long = "k".repeat(seawall_ratelimit::MAX_KEY_BYTES + 1);
    assert!(matches!(
        limiter.check(&long, 1).await,
        Err(Error::InvalidKey(_))
    ));
    // Odd but valid keys work, braces included (they must not split the
    // hash tag on Cluster).
    for key in ["{tag}", "a}b{c", "ü:/ \u{0}", "2001:db8::1"] {
        assert!(
            limiter.check(key, 1).await.expect("check").allowed,
            "{key:?}"
        );
    }
}

async fn limits_change_at_run_time(backend: &Backend) {
    let limiter = backend
        .limiter(Limit::fixed_window(1, HOUR).expect("limit"))
        .build()
        .expect("limiter");
    assert!(limiter.check("tenant", 1).await.expect("check").allowed);
    assert!(!limiter.check("tenant", 1).await.expect("check").allowed);
    // An upgrade: the count so far is kept, the new limit applies at once.
    limiter.set_quota(Limit::fixed_window(3, HOUR).expect("limit"));
    let upgraded = limiter.check("tenant", 1).await.expect("check");
    assert!(upgraded.allowed && upgraded.remaining == 1, "{upgraded:?}");
    // A burst lowered below what is already spent: nothing remains, in a
    // check and in a peek (on Redis, the one-rule script and the general one).
    let rated = backend
        .limiter(Limit::gcra(10, HOUR, 10).expect("limit"))
        .build()
        .expect("limiter");
    assert!(rated.check("tenant", 8).await.expect("check").allowed);
    rated.set_quota(Limit::gcra(10, HOUR, 2).expect("limit"));
    let peeked = rated.peek("tenant").await.expect("peek");
    assert!(!peeked.allowed && peeked.remaining == 0, "{peeked:?}");
    let checked = rated.check("tenant", 1).await.expect("check");
    assert!(!checked.allowed && checked.remaining == 0, "{checked:?}");
}

async fn a_scale_tightens_the_quota_and_keeps_the_count(backend: &Backend) {
    let limiter = backend
        .limiter(Limit::fixed_window(10, HOUR).expect("limit"))
        .build()
        .expect("limiter");
    assert!(limiter.check("caller", 4).await.expect("check").allowed);
    // Half of 10: the 4 spent count, so one more unit fits.
    limiter.set_scale(0.5).expect("a share");
    let scaled = limiter.check("caller", 1).await.expect("check");
    assert!(
        scaled.allowed && scaled.limit == 5 && scaled.remaining == 0,
        "{scaled:?}"
    );
    assert!(!limiter.check("caller", 1).await.expect("check").allowed);
    // A per-tenant quota is scaled the same, rule by rule.
    let tier = Quota::builder()
        .rule("minute", Limit::fixed_window(4, HOUR).expect("limit"))
        .expect("rule")
        .rule("day", Limit::fixed_window(100, HOUR).expect("limit"))
        .expect("rule")
        .build()
        .expect("quota");
    for _ in 0..2 {
        assert!(
            limiter
                .check_quota("tenant", 1, &tier)
                .await
                .expect("check")
                .allowed
        );
    }
    let refused = limiter
        .check_quota("tenant", 1, &tier)
        .await
        .expect("check");
    assert!(!refused.allowed && refused.limit == 2, "{refused:?}");
    // A share outside (0, 1] changes nothing; 1 restores the whole quota.
    assert!(matches!(
        limiter.set_scale(0.0),
        Err(Error::InvalidLimit(_))
    ));
    assert!(matches!(
        limiter.set_scale(f64::NAN),
        Err(Error::InvalidLimit(_))
    ));
    assert_eq!(limiter.scale(), 0.5);
    limiter.set_scale(1.0).expect("whole");
    let whole = limiter.check("caller", 1).await.expect("check");
    assert!(
        whole.allowed && whole.limit == 10 && whole.remaining == 4,
        "{whole:?}"
    );
    assert!(
        limiter
            .check_quota("tenant", 1, &tier)
            .await
            .expect("check")
            .allowed
    );
}

async fn shadow_mode_decides_but_never_enforces(backend: &Backend) {
    let limiter = backend
        .limiter(limit(Algorithm::SlidingWindow, 1, HOUR))
        .shadow(true)
        .build()
        .expect("limiter");
    let first = limiter.check("k", 1).await.expect("check");
    assert!(first.allowed && !first.would_reject);
    let second = limiter.check("k", 1).await.expect("check");
    assert!(second.allowed && second.would_reject, "{second:?}");
    assert!(second.retry_after.is_none());
    limiter.set_shadow(false);
    assert!(!limiter.check("k", 1).await.expect("check").allowed);
}

async fn the_leaky_queue_spaces_requests_out(backend: &Backend) {
    // One request every 10 s: on a real clock the checks below take a
    // fraction of that, however loaded the machine.
    let spacing = Duration::from_secs(10);
    let limiter = backend
        .limiter(Limit::leaky_queue(1, spacing, 4).expect("limit"))
        .build()
        .expect("limiter");
    let mut waits = Vec::new();
    for _ in 0..4 {
        let decision = limiter.check("q", 1).await.expect("check");
        assert!(decision.allowed);
        waits.push(decision.wait);
    }
    assert!(
        !limiter.check("q", 1).await.expect("check").allowed,
        "the queue is full"
    );
    // Each admitted request waits the spacing longer than the one before,
    // less, on a real clock, the time between the two checks.
    for pair in waits.windows(2) {
        let gap = pair[1].saturating_sub(pair[0]);
        let slack = if backend.real_time() {
            spacing / 2
        } else {
            Duration::ZERO
        };
        assert!(gap + slack >= spacing && gap <= spacing, "{waits:?}");
    }
}

/// A sliding log admits a cost of up to `MAX_LOG_COST` units at once (on
/// Redis, a thousand members in one call) and counts every one; a larger
/// cost is refused before Redis is asked, and so is a check of a quota
/// holding such a log.
async fn a_sliding_log_admits_a_cost_of_a_thousand(backend: &Backend) {
    let (most, longest) = (
        seawall_ratelimit::MAX_LOG_COST,
        seawall_ratelimit::MAX_LOG_LIMIT,
    );
    let limiter = backend
        .limiter(Limit::sliding_log(longest, HOUR).expect("limit"))
        .build()
        .expect("limiter");
    for filled in 1..=longest / most {
        let decision = limiter.check("bulk", most).await.expect("check");
        assert!(decision.allowed && !decision.degraded, "{decision:?}");
        assert_eq!(decision.remaining, longest - filled * most);
    }
    let rejected = limiter.check("bulk", 1).await.expect("check");
    assert!(!rejected.allowed && !rejected.degraded, "{rejected:?}");
    assert!(matches!(
        limiter.check("other", most + 1).await,
        Err(Error::CostTooHigh { capacity, .. }) if capacity == most
    ));
    // A quota of several rules runs the other script, bounded the same way.
    let quota = Quota::builder()
        .rule("log", Limit::sliding_log(longest, HOUR).expect("limit"))
        .and_then(|q| {
            q.rule(
                "day",
                Limit::fixed_window(20_000, 24 * HOUR).expect("limit"),
            )
        })
        .and_then(|q| q.build())
        .expect("quota");
    assert_eq!(quota.max_cost(), most);
    let limiter = backend.limiter(quota).build().expect("limiter");
    let decision = limiter.check("bulk", most).await.expect("check");
    assert!(decision.allowed && !decision.degraded, "{decision:?}");
    assert_eq!(decision.remaining, longest - most);
    assert!(matches!(
        limiter.check("bulk", most + 1).await,
        Err(Error::CostTooHigh { .. })
    ));
}

on_every_backend!(
    admits_the_capacity_then_rejects_without_consuming,
    recovers_once_retry_after_has_passed,
    a_quota_consumes_in_every_rule_or_in_none,
    penalties_and_manual_blocks,
    bad_input_is_a_typed_error,
    limits_change_at_run_time,
    a_scale_tightens_the_quota_and_keeps_the_count,
    shadow_mode_decides_but_never_enforces,
    the_leaky_queue_spaces_requests_out,
    a_sliding_log_admits_a_cost_of_a_thousand,
);
