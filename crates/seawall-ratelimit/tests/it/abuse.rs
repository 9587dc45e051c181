//! The abuse watch shares its evidence through Redis: what each instance
//! saw of a client counts on all of them.

use seawall_ratelimit::RedisStore;
use seawall_ratelimit::abuse::{AbuseWatch, Action, Mode, Signal};
use seawall_testkit::{RedisCluster, RedisServer, client as redis_client};

use crate::support::{STEADY_TIMEOUT, unique_name};

const TEN_S: i64 = 10_000;

async fn instances(url: &str) -> [AbuseWatch; 2] {
    let prefix = unique_name();
    let mut watches = Vec::new();
    for _ in 0..2 {
        let store = RedisStore::with_prefix(
            redis_client::connect(url, STEADY_TIMEOUT).await,
            prefix.clone(),
        )
        .with_timeout(STEADY_TIMEOUT)
        .expect("a timeout");
        watches.push(
            AbuseWatch::builder()
                .mode(Mode::Act)
                .interval(std::time::Duration::from_secs(10))
                .min_requests(200)
                .exchange(store)
                .build()
                .expect("a watch"),
        );
    }
    watches.try_into().expect("two")
}

/// A scraper's 300 requests, half through each of two instances: neither
/// sees enough to judge it (200 requests at least), both find it on the
/// merged counts, with the distinct paths of both halves.
async fn a_client_split_over_two_instances_is_found_by_both(url: &str) {
    let [a, b] = instances(url).await;
    // An interval's start (the test's own clock, aligned to the interval).
    let start = 1_800_000_000_000_i64 - 1_800_000_000_000_i64 % TEN_S;
    for page in 0..300 {
        let instance = if page < 150 { &a } else { &b };
        instance.record(
            "203.0.113.5",
            "/api/contents/{id}",
            &format!("/api/contents/{page}"),
            200,
        );
    }
    // The interval closes: each sends it and reads the one before (empty).
    for watch in [&a, &b] {
        assert!(watch.judge_at(start + TEN_S + 1000).await.is_empty());
    }
    // The next closes: each judges the first, merged.
    for watch in [&a, &b] {
        let findings = watch.judge_at(start + 2 * TEN_S + 1000).await;
        let finding = findings
            .iter()
            .find(|f| f.key == "203.0.113.5")
            .unwrap_or_else(|| panic!("not found on the merged counts: {findings:?}"));
        assert_eq!(finding.signal, Signal::Paths);
        assert_eq!(finding.requests, 300);
        assert!(
            finding.distinct_paths >= 240,
            "the halves' paths were not merged: {finding:?}"
        );
        assert_eq!(finding.interval_start_ms, start);
        assert_eq!(finding.action, Action::Tighten);
        assert_eq!(watch.cost("203.0.113.5"), 4);
    }
    // Without the exchange, neither half alone is judged.
    let alone = AbuseWatch::builder()
        .interval(std::time::Duration::from_secs(10))
        .min_requests(200)
        .build()
        .expect("a watch");
    for page in 0..150 {
        alone.record(
            "203.0.113.5",
            "/api/contents/{id}",
            &format!("/api/contents/{page}"),
            200,
        );
    }
    assert!(alone.judge_local_at(start + TEN_S).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_split_over_two_instances_is_found_by_both_on_redis() {
    a_client_split_over_two_instances_is_found_by_both(&RedisServer::shared().url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_split_over_two_instances_is_found_by_both_on_a_cluster() {
    a_client_split_over_two_instances_is_found_by_both(&RedisCluster::shared().url()).await;
}
