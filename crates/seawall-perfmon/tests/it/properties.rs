//! Invariants: quantiles within the histogram's error bound, shards that merge
//! into exactly one histogram, windows that forget.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use seawall_perfmon::{Histogram, Monitor, MonitorBuilder};

const HIGHEST_US: u64 = 3_600_000_000;

/// One unlabelled latency series of a monitor built from `builder`. The handle
/// keeps the series alive after the monitor itself is dropped.
fn series(builder: MonitorBuilder) -> Result<Histogram, TestCaseError> {
    let fail = |e: seawall_perfmon::Error| TestCaseError::fail(e.to_string());
    let monitor = builder.build().map_err(fail)?;
    monitor
        .histogram("latency_seconds", "", &[])
        .and_then(|h| h.with_labels(&[]))
        .map_err(fail)
}

/// The value at quantile `q` of sorted samples, ranked as hdrhistogram ranks.
fn exact_quantile(sorted: &[u64], q: f64) -> u64 {
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn quantiles_stay_within_the_error_bound(values in prop::collection::vec(0_u64..50_000_000, 1..2_000)) {
        let histogram = series(Monitor::builder())?;
        for value in &values {
            histogram.record(Duration::from_micros(*value));
        }
        let mut sorted = values.clone();
        sorted.sort_unstable();
        let stats = histogram.lifetime();
        prop_assert_eq!(stats.count, values.len() as u64);
        for (q, reported) in [(0.5, stats.p50_us), (0.9, stats.p90_us), (0.95, stats.p95_us), (0.99, stats.p99_us), (0.999, stats.p999_us)] {
            let exact = exact_quantile(&sorted, q);
            // 3 significant digits: a bucket is at most 1/1024 of its values wide.
            let bound = exact / 1000 + 1;
            prop_assert!(reported.abs_diff(exact) <= bound, "q{} reported {} exact {}", q, reported, exact);
        }
        prop_assert!(stats.min_us.abs_diff(sorted[0]) <= sorted[0] / 1000 + 1);
        prop_assert!(stats.max_us.abs_diff(sorted[sorted.len() - 1]) <= sorted[sorted.len() - 1] / 1000 + 1);
    }

    #[test]
    fn merged_shards_equal_one_histogram_fed_the_same_values(
        per_thread in prop::collection::vec(prop::collection::vec(0_u64..HIGHEST_US * 2, 0..500), 1..6)
    ) {
        let histogram = series(Monitor::builder())?;
        std::thread::scope(|scope| {
            for values in &per_thread {
                let histogram = histogram.clone();
                scope.spawn(move || values.iter().for_each(|v| histogram.record(Duration::from_micros(*v))));
            }
        });
        let mut reference = hdrhistogram::Histogram::<u64>::new_with_bounds(1, HIGHEST_US, 3)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        for value in per_thread.iter().flatten() {
            reference.saturating_record((*value).min(HIGHEST_US));
        }
        let merged = histogram.to_hdr();
        prop_assert_eq!(merged.len(), reference.len());
        let ours: Vec<(u64, u64)> = merged.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect();
        let theirs: Vec<(u64, u64)> = reference.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect();
        prop_assert_eq!(ours, theirs);
    }

    #[test]
    fn a_window_forgets_samples_older_than_its_span(
        mut offsets_ms in prop::collection::vec(0_u64..600_000, 1..300),
        extra_ms in 0_u64..120_000,
        window_index in 0_usize..2,
    ) {
        let interval = Duration::from_secs(5);
        let spans = [Duration::from_secs(60), Duration::from_secs(300)];
        let epoch = Instant::now();
        let histogram = series(Monitor::builder().epoch(epoch).interval(interval).windows(spans))?;
        offsets_ms.sort_unstable();
        for offset in &offsets_ms {
            histogram.record_at(Duration::from_micros(100), epoch + Duration::from_millis(*offset));
        }
        let now_ms = offsets_ms[offsets_ms.len() - 1] + extra_ms;
        let span = spans[window_index];
        let window = histogram.window_at(span, epoch + Duration::from_millis(now_ms));
        let span_ms = u64::try_from(span.as_millis()).unwrap_or(u64::MAX);
        let interval_ms = 5_000;
        // The window holds whole intervals: the current one and those before it, span in all.
        let first_interval = (now_ms / interval_ms + 1).saturating_sub(span_ms / interval_ms);
        let expected = offsets_ms.iter().filter(|t| *t / interval_ms >= first_interval).count() as u64;
        prop_assert_eq!(window.latency.count, expected);
        // Nothing older than the span is ever in the window.
        let older = offsets_ms.iter().filter(|t| **t + span_ms <= now_ms).count() as u64;
        prop_assert!(window.latency.count <= offsets_ms.len() as u64 - older);
        prop_assert_eq!(histogram.lifetime().count, offsets_ms.len() as u64);
    }

    #[test]
    fn any_span_holds_nothing_older_than_itself(
        mut offsets_ms in prop::collection::vec(0_u64..400_000, 1..300),
        extra_ms in 0_u64..60_000,
        span_ms in 5_000_u64..400_000,
    ) {
        let interval_ms = 5_000;
        let epoch = Instant::now();
        let histogram = series(Monitor::builder().epoch(epoch))?;
        offsets_ms.sort_unstable();
        for offset in &offsets_ms {
            histogram.record_at(Duration::from_micros(100), epoch + Duration::from_millis(*offset));
        }
        let now_ms = offsets_ms[offsets_ms.len() - 1] + extra_ms;
        let window = histogram.window_at(Duration::from_millis(span_ms), epoch + Duration::from_millis(now_ms));
        // The default windows keep 300 s, so longer spans see at most that.
        let kept_ms = span_ms.min(300_000);
        let not_older = offsets_ms.iter().filter(|t| **t + kept_ms > now_ms).count() as u64;
        prop_assert!(window.latency.count <= not_older, "{} samples, only {} within the span", window.latency.count, not_older);
        // Whole intervals, rounded down: everything newer than span - 2 intervals is in.
        let surely_in = offsets_ms.iter().filter(|t| **t + kept_ms.saturating_sub(2 * interval_ms) > now_ms).count() as u64;
        prop_assert!(window.latency.count >= surely_in, "{} samples, expected at least {}", window.latency.count, surely_in);
        prop_assert!(window.covered_secs <= span_ms as f64 / 1000.0 + 1e-9);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn concurrent_gauge_updates_are_never_lost(
        per_thread in prop::collection::vec(prop::collection::vec(-1_000_i32..1_000, 0..300), 1..5)
    ) {
        let monitor = Monitor::new();
        let gauge = monitor
            .gauge("level", "", &[])
            .and_then(|g| g.with_labels(&[]))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        std::thread::scope(|scope| {
            for deltas in &per_thread {
                let gauge = gauge.clone();
                scope.spawn(move || deltas.iter().for_each(|d| gauge.add(f64::from(*d))));
            }
        });
        // Small integers add exactly in an f64, in any order.
        let expected: i64 = per_thread.iter().flatten().map(|d| i64::from(*d)).sum();
        #[allow(clippy::cast_precision_loss)]
        let expected = expected as f64;
        prop_assert_eq!(gauge.get(), expected);
    }

    // Any label value reads back the same from both formats. (Not `\r`: the
    // parser takes it for a line end, though both formats allow it raw.)
    #[test]
    fn label_values_survive_both_formats(label in "[^\r]{0,24}") {
        let monitor = Monitor::new();
        let fail = |e: seawall_perfmon::Error| TestCaseError::fail(e.to_string());
        monitor
            .counter("events", "", &["what"])
            .and_then(|c| c.with_labels(&[&label]))
            .map_err(fail)?
            .inc_by(2);
        let openmetrics = crate::openmetrics::parse(&monitor.openmetrics());
        prop_assert_eq!(crate::openmetrics::value(&openmetrics, "events", &[("what", &label)]), 2.0);
        let text = monitor.prometheus();
        let prometheus = openmetrics_parser::prometheus::parse_prometheus(&text)
            .map_err(|e| TestCaseError::fail(format!("{e:?}\n{text}")))?;
        let found = prometheus
            .families
            .get("events_total")
            .and_then(|f| f.iter_samples().find(|s| s.get_labelset().is_ok_and(|l| l.get_label_value("what") == Some(label.as_str()))))
            .is_some();
        prop_assert!(found, "{}", text);
    }
}
