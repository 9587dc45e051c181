use std::time::{Duration, Instant};

use seawall_perfmon::{Monitor, OVERFLOW_LABEL, Result};

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn http_windows_count_requests_errors_and_rates() -> Result<()> {
    let monitor = Monitor::new();
    for i in 0..100_u64 {
        let status = if i % 10 == 0 { 503 } else { 200 };
        monitor.record_request("GET", "/api/items", status, Duration::from_millis(i + 1));
    }
    monitor.record_request("POST", "/api/items", 422, Duration::from_millis(5));
    let window = monitor.http_window(Duration::from_secs(60));
    assert_eq!(window.stats.latency.count, 101);
    assert_eq!(window.errors, 10);
    assert_eq!(window.by_status_class.get("2xx"), Some(&90));
    assert_eq!(window.by_status_class.get("4xx"), Some(&1));
    assert!((window.error_rate - 10.0 / 101.0).abs() < 1e-9);
    assert!(window.stats.rate_per_sec > 0.0);
    // p50 of 1..=100 ms plus one 5 ms sample is 50 ms, within 0.1 %.
    assert!(
        (49_950..=50_050).contains(&window.stats.latency.p50_us),
        "{:?}",
        window.stats.latency
    );
    assert_eq!(window.stats.latency.max_us / 1000, 100);
    Ok(())
}

#[test]
fn a_window_shows_now_while_lifetime_keeps_everything() -> Result<()> {
    let epoch = Instant::now();
    let monitor = Monitor::builder()
        .epoch(epoch)
        .interval(SECOND)
        .windows([10 * SECOND, 60 * SECOND])
        .build()?;
    let latency = monitor
        .histogram("task_seconds", "Task latency.", &[])?
        .with_labels(&[])?;
    for second in 0..60_u32 {
        // A burst of slow samples in the first 10 seconds, fast ones after.
        let value = if second < 10 {
            Duration::from_secs(2)
        } else {
            Duration::from_millis(3)
        };
        latency.record_at(value, epoch + second * SECOND);
    }
    let now = epoch + 59 * SECOND;
    let recent = latency.window_at(10 * SECOND, now);
    assert_eq!(recent.latency.count, 10);
    assert_eq!(
        recent.latency.max_us / 1000,
        3,
        "old slow samples leaked into the 10 s window"
    );
    let minute = latency.window_at(60 * SECOND, now);
    assert_eq!(minute.latency.count, 60);
    assert_eq!(minute.latency.p99_us / 1000, 2000);
    // Long after, the windows are empty but the lifetime totals remain.
    let later = epoch + 600 * SECOND;
    assert_eq!(latency.window_at(60 * SECOND, later).latency.count, 0);
    assert_eq!(latency.lifetime().count, 60);
    Ok(())
}

#[test]
fn covered_time_and_rate_use_elapsed_time_just_after_start() -> Result<()> {
    let epoch = Instant::now();
    let monitor = Monitor::builder().epoch(epoch).interval(SECOND).build()?;
    let latency = monitor
        .histogram("op_seconds", "Op latency.", &[])?
        .with_labels(&[])?;
    for i in 0..40_u32 {
        latency.record_at(
            Duration::from_millis(1),
            epoch + i * Duration::from_millis(100),
        );
    }
    let window = latency.window_at(Duration::from_secs(60), epoch + 4 * SECOND);
    assert!((window.covered_secs - 4.0).abs() < 1e-9, "{window:?}");
    assert!((window.rate_per_sec - 10.0).abs() < 1e-9, "{window:?}");
    Ok(())
}

#[test]
fn label_cardinality_is_capped_and_folds_are_counted() -> Result<()> {
    let monitor = Monitor::builder().max_series_per_metric(3).build()?;
    for user in 0..10 {
        // A caller that wrongly labels by raw path cannot grow memory without bound.
        monitor.record_request(
            "GET",
            &format!("/users/{user}"),
            200,
            Duration::from_millis(1),
        );
    }
    let snapshot = monitor.snapshot();
    let http = snapshot
        .histograms
        .iter()
        .find(|h| h.name == seawall_perfmon::HTTP_METRIC);
    let http = http.ok_or_else(|| seawall_perfmon::Error::InvalidConfig {
        field: "test",
        reason: "no http".into(),
    })?;
    assert_eq!(http.series.len(), 4);
    assert_eq!(http.folded, 7);
    let other = http
        .series
        .iter()
        .find(|s| s.labels.get("route").map(String::as_str) == Some(OVERFLOW_LABEL));
    assert_eq!(other.map(|s| s.lifetime.count), Some(7));
    assert!(monitor.prometheus().contains(
        "perfmon_folded_series_total{metric=\"http_server_request_duration_seconds\"} 7"
    ));
    Ok(())
}

#[test]
fn many_threads_and_tasks_record_without_losing_samples() -> Result<()> {
    let monitor = Monitor::new();
    let latency = monitor
        .histogram("work_seconds", "Work latency.", &["kind"])?
        .with_labels(&["a"])?;
    std::thread::scope(|scope| {
        for thread in 0..8_u64 {
            let latency = latency.clone();
            scope.spawn(move || {
                for i in 0..5_000_u64 {
                    latency.record(Duration::from_micros(thread * 1000 + i % 100));
                }
            });
        }
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build();
    let runtime = runtime.map_err(|e| seawall_perfmon::Error::InvalidConfig {
        field: "runtime",
        reason: e.to_string(),
    })?;
    runtime.block_on(async {
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let latency = latency.clone();
                tokio::spawn(async move {
                    for _ in 0..100 {
                        latency.record(Duration::from_micros(50));
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    });
    assert_eq!(latency.lifetime().count, 8 * 5_000 + 20 * 100);
    assert_eq!(
        latency.window(Duration::from_secs(60)).latency.count,
        8 * 5_000 + 20 * 100
    );
    Ok(())
}

#[test]
fn snapshot_serialises_to_json_for_dashboards()
-> std::result::Result<(), Box<dyn std::error::Error>> {
    let monitor = Monitor::builder()
        .slow_api_threshold(Duration::from_millis(100))
        .build()?;
    monitor.record_request("GET", "/api/report", 200, Duration::from_millis(250));
    monitor.record_request(
        "GET",
        "/api/report?token=abc",
        200,
        Duration::from_millis(150),
    );
    let json: serde_json::Value = serde_json::from_str(&monitor.snapshot_json())?;
    assert_eq!(json["http"][0]["window_secs"], 60);
    assert_eq!(json["http"][0]["latency"]["count"], 2);
    assert_eq!(json["http"][1]["window_secs"], 300);
    assert_eq!(json["slow_apis"]["total"], 2);
    assert_eq!(
        json["slow_apis"]["entries"][0]["text"],
        "GET /api/report -> 200"
    );
    let masked = json["slow_apis"]["entries"][1]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(!masked.contains("abc"), "secret survived: {masked}");
    let series = &json["histograms"][0]["series"][0];
    assert_eq!(series["labels"]["route"], "/api/report");
    assert_eq!(series["windows"][0]["latency"]["count"], 1);
    Ok(())
}

#[test]
fn no_sample_is_lost_or_doubled_while_threads_roll_intervals_and_readers_read() -> Result<()> {
    // 10 ms intervals: every writer crosses many interval boundaries, moving its
    // shard into the ring while a reader merges ring and shards.
    let monitor = Monitor::builder()
        .interval(Duration::from_millis(10))
        .windows([Duration::from_secs(30)])
        .build()?;
    let latency = monitor
        .histogram("roll_seconds", "Roll.", &[])?
        .with_labels(&[])?;
    let done = std::sync::atomic::AtomicBool::new(false);
    let reads = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut last = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let seen = latency.lifetime().count;
                assert!(
                    seen >= last,
                    "the lifetime count went backwards: {last} -> {seen}"
                );
                last = seen;
                reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        let writers: Vec<_> = (0..4_u64)
            .map(|thread| {
                let (latency, reads) = (latency.clone(), &reads);
                scope.spawn(move || {
                    let start = Instant::now();
                    let mut i = 0_u64;
                    // Until the reader has read too: on a loaded machine its
                    // thread may start late.
                    while start.elapsed() < Duration::from_millis(150)
                        || i < 2_000
                        || reads.load(std::sync::atomic::Ordering::Relaxed) == 0
                    {
                        latency.record(Duration::from_micros(thread * 100 + i % 50));
                        i += 1;
                    }
                    i
                })
            })
            .collect();
        let written: u64 = writers.into_iter().map(|w| w.join().unwrap_or(0)).sum();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        reader.join().expect("the reader saw no count go backwards");
        assert!(reads.load(std::sync::atomic::Ordering::Relaxed) > 0);
        assert_eq!(latency.lifetime().count, written);
        assert_eq!(
            latency.window(Duration::from_secs(30)).latency.count,
            written
        );
    });
    Ok(())
}

#[test]
fn more_threads_than_private_shards_share_the_overflow_shard_without_loss() -> Result<()> {
    const THREADS: usize = 100;
    let monitor = Monitor::new();
    let latency = monitor
        .histogram("crowd_seconds", "Crowd.", &[])?
        .with_labels(&[])?;
    // Every thread stays alive until all have recorded, so more than 64 hold a
    // slot at once and the rest go through the shared shard.
    let barrier = std::sync::Barrier::new(THREADS);
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            let (latency, barrier) = (latency.clone(), &barrier);
            scope.spawn(move || {
                for i in 0..500_u64 {
                    latency.record(Duration::from_micros(i));
                }
                barrier.wait();
            });
        }
    });
    assert_eq!(latency.lifetime().count, THREADS as u64 * 500);
    Ok(())
}

#[test]
fn folded_requests_keep_method_and_status_class_so_errors_still_count() -> Result<()> {
    let monitor = Monitor::builder().max_series_per_metric(2).build()?;
    monitor.record_request("GET", "/a", 200, Duration::from_millis(1));
    monitor.record_request("GET", "/b", 200, Duration::from_millis(1));
    for i in 0..30 {
        // New routes past the cap, all failing: an outage on an unseen route.
        monitor.record_request(
            "POST",
            &format!("/checkout/{i}"),
            503,
            Duration::from_millis(1),
        );
    }
    let window = monitor.http_window(Duration::from_secs(60));
    assert_eq!(window.errors, 30);
    assert_eq!(window.by_status_class.get("5xx"), Some(&30));
    let text = monitor.prometheus();
    assert!(
        text.contains("http_server_request_duration_seconds_count{method=\"POST\",route=\"other\",status_class=\"5xx\"} 30"),
        "{text}"
    );
    Ok(())
}
