use seawall_history::Options;
use serde_json::json;

use crate::support::{Lines, count, report, report_with};

fn check(lines: &mut Lines, process: &str, from: u64, to: u64, admitted: bool) {
    lines.op(
        process,
        "ratelimit",
        "check",
        from,
        json!({"key": "user:7", "limit": 2, "window_ms": 1000}),
        "ok",
        to,
        json!({"admitted": admitted}),
    );
}

#[test]
fn admissions_within_the_limit_per_window_are_clean() {
    let mut lines = Lines::default();
    check(&mut lines, "rl-1", 0, 10, true);
    check(&mut lines, "rl-2", 5, 20, true);
    check(&mut lines, "rl-1", 30, 40, false);
    check(&mut lines, "rl-2", 1010, 1020, true);
    check(&mut lines, "rl-1", 1015, 1030, true);
    let report = report(&lines, &json!({}));
    assert_eq!(report.anomalies(), 0, "{report}");
    let limiter = report.ratelimit.as_ref().expect("a ratelimit section");
    assert!((limiter.worst_ratio - 1.0).abs() < 1e-9);
    assert_eq!(limiter.keys[0].admitted, 4);
    assert_eq!(limiter.keys[0].checks, 5);
}

#[test]
fn admissions_that_may_have_been_decided_in_two_windows_are_not_counted_together() {
    let mut lines = Lines::default();
    check(&mut lines, "rl-1", 0, 10, true);
    check(&mut lines, "rl-2", 5, 20, true);
    // Invoked in the first window, answered in the next: it may have been
    // decided after the first window's admissions left the limiter's view.
    check(&mut lines, "rl-3", 900, 1500, true);
    let report = report(&lines, &json!({}));
    assert_eq!(report.anomalies(), 0, "{report}");
}

#[test]
fn more_admissions_than_the_limit_in_one_window_are_over_it() {
    let mut lines = Lines::default();
    check(&mut lines, "rl-1", 0, 10, true);
    check(&mut lines, "rl-2", 5, 20, true);
    check(&mut lines, "rl-3", 100, 120, true);
    let report = report(&lines, &json!({}));
    assert_eq!(count(&report, "ratelimit.over_limit"), 1, "{report}");
    let limiter = report.ratelimit.as_ref().expect("a ratelimit section");
    assert!((limiter.worst_ratio - 1.5).abs() < 1e-9);
    assert_eq!(limiter.keys[0].most_in_window, 3);

    // A drill that documents a multiple of 2 accepts it.
    let relaxed = report_with(&lines, &json!({}), &Options::new().rate_limit_multiple(2.0));
    assert_eq!(relaxed.anomalies(), 0, "{relaxed}");
}
