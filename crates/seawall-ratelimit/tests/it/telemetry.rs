//! Metrics, blocked keys and the rejection ranking.

use std::time::Duration;

use seawall_perfmon::Monitor;
use seawall_ratelimit::{Limit, Limiter};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_counted_by_outcome() {
    let monitor = Monitor::new();
    let limiter = Limiter::builder("api")
        .limit(Limit::fixed_window(5, Duration::from_secs(3600)).expect("limit"))
        .monitor(&monitor)
        .build()
        .expect("limiter");
    let shadow = Limiter::builder("trial")
        .limit(Limit::fixed_window(1, Duration::from_secs(3600)).expect("limit"))
        .shadow(true)
        .monitor(&monitor)
        .build()
        .expect("limiter");
    for _ in 0..7 {
        limiter.check("k", 1).await.expect("check");
    }
    for _ in 0..3 {
        shadow.check("k", 1).await.expect("check");
    }
    let text = monitor.prometheus();
    for line in [
        "ratelimit_decisions_total{limiter=\"api\",outcome=\"allowed\"} 5",
        "ratelimit_decisions_total{limiter=\"api\",outcome=\"rejected\"} 2",
        "ratelimit_decisions_total{limiter=\"trial\",outcome=\"allowed\"} 1",
        "ratelimit_decisions_total{limiter=\"trial\",outcome=\"shadow_rejected\"} 2",
        // 4 and 5 of 5 leave less than 20 %: remaining 0 only.
        "ratelimit_near_limit_total{limiter=\"api\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_keys_and_the_most_rejected_keys_are_listed() {
    let monitor = Monitor::new();
    let limiter = Limiter::builder("auth")
        .limit(Limit::gcra(1, Duration::from_secs(60), 1).expect("limit"))
        .penalty(Duration::from_secs(900))
        .monitor(&monitor)
        .build()
        .expect("limiter");
    for key in ["alice", "bob"] {
        limiter.check(key, 1).await.expect("check");
    }
    for _ in 0..3 {
        limiter.check("alice", 1).await.expect("check");
    }
    limiter.check("bob", 1).await.expect("check");
    limiter
        .block("mallory", Duration::from_secs(60))
        .await
        .expect("block");

    let blocked: Vec<String> = limiter.blocked_keys().into_iter().map(|b| b.key).collect();
    assert_eq!(blocked.len(), 3, "{blocked:?}");
    assert_eq!(
        blocked[2], "mallory",
        "the shortest block last: {blocked:?}"
    );
    assert!(
        monitor
            .prometheus()
            .contains("ratelimit_blocked_keys{limiter=\"auth\"} 3")
    );

    limiter.unblock("alice").await.expect("unblock");
    let blocked: Vec<String> = limiter.blocked_keys().into_iter().map(|b| b.key).collect();
    assert!(!blocked.contains(&"alice".to_owned()), "{blocked:?}");
    assert!(
        monitor
            .prometheus()
            .contains("ratelimit_blocked_keys{limiter=\"auth\"} 2")
    );

    let top = limiter.top_rejected();
    assert_eq!(top[0].key, "alice");
    assert_eq!(top[0].rejections, 3);
    assert_eq!(top[1].key, "bob");
}
