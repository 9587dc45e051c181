//! Stats exported through seawall-perfmon.

use seawall_cache::{Class, TieredCache};
use seawall_perfmon::Monitor;

#[tokio::test]
async fn stats_are_exported_per_tier_and_class() {
    let monitor = Monitor::builder()
        .namespace("app")
        .build()
        .expect("monitor");
    let cache = TieredCache::builder().name("main").build().expect("cache");
    cache.register_metrics(&monitor).expect("registers");
    for _ in 0..3 {
        cache
            .get_or_load("k", Class::API, || async {
                Ok::<_, std::io::Error>(Some(1_u8))
            })
            .await
            .expect("loads");
    }
    cache.sync();
    let text = monitor.prometheus();
    for line in [
        r#"app_cache_requests_total{cache="main",tier="l1",class="api",result="hit"} 2"#,
        r#"app_cache_requests_total{cache="main",tier="l1",class="api",result="miss"} 1"#,
        r#"app_cache_loads_total{cache="main",class="api",outcome="ok"} 1"#,
        r#"app_cache_l1_entries{cache="main"} 1"#,
        r#"app_cache_breaker_open{cache="main"} 0"#,
        // Without a Redis tier there is nothing to follow: L1 answers.
        r#"app_cache_following_invalidations{cache="main"} 1"#,
        r#"app_cache_invalidations_pending{cache="main"} 0"#,
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    let ratio = cache.stats().classes[usize::from(Class::API.index())].hit_ratio;
    assert!((ratio - 2.0 / 3.0).abs() < 1e-9, "{ratio}");
}
