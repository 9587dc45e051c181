use std::time::Duration;

use seawall_history::Options;
use serde_json::{Value, json};

use crate::support::{Lines, count, report, report_with};

fn write(lines: &mut Lines, value: i64, from: u64, to: u64, kind: &str) {
    lines.op(
        "writer",
        "cache",
        "write",
        from,
        json!({"key": "k", "value": value}),
        kind,
        to,
        json!({}),
    );
}

fn read(lines: &mut Lines, process: &str, from: u64, to: u64, value: Value) {
    lines.op(
        process,
        "cache",
        "read",
        from,
        json!({"key": "k"}),
        "ok",
        to,
        Value::Object([("value".to_owned(), value)].into_iter().collect()),
    );
}

#[test]
fn reads_that_follow_the_writes_are_clean() {
    let mut lines = Lines::default();
    read(&mut lines, "r1", 0, 1, Value::Null);
    write(&mut lines, 1, 2, 4, "ok");
    read(&mut lines, "r1", 5, 6, json!(1));
    write(&mut lines, 2, 10, 20, "ok");
    // Concurrent with the write: either version.
    read(&mut lines, "r1", 11, 12, json!(1));
    read(&mut lines, "r2", 12, 13, json!(2));
    // Started before the write's ok, answered after: the old one still.
    read(&mut lines, "r3", 19, 25, json!(1));
    // Within the 10 ms window after the write's ok.
    read(&mut lines, "r1", 29, 31, json!(1));
    read(&mut lines, "r2", 40, 41, json!(2));
    let report = report(&lines, &json!({"cache": {"k": 2}}));
    assert_eq!(report.anomalies(), 0, "{report}");
    let cache = report.cache.as_ref().expect("a cache section");
    assert_eq!(cache.reads.ok, 7);
    assert_eq!(cache.writes.ok, 2);
    assert!(cache.longest_stale_ms.abs() < f64::EPSILON);
}

#[test]
fn a_read_older_than_an_acknowledged_write_past_the_window_is_stale() {
    let mut lines = Lines::default();
    write(&mut lines, 1, 0, 2, "ok");
    write(&mut lines, 2, 3, 5, "ok");
    write(&mut lines, 3, 6, 8, "ok");
    // 50 ms after version 2's ok (and 47 after version 3's).
    read(&mut lines, "r1", 55, 56, json!(1));
    // Never saw any write, 100 ms after the first ok.
    read(&mut lines, "r2", 102, 103, Value::Null);
    let report = report(&lines, &json!({"cache": {"k": 3}}));
    assert_eq!(count(&report, "cache.stale"), 2, "{report}");
    let cache = report.cache.as_ref().expect("a cache section");
    assert!((cache.longest_stale_ms - 100.0).abs() < 1e-9, "{report}");

    // A window of 200 ms tolerates both.
    let wide = report_with(
        &lines,
        &json!({"cache": {"k": 3}}),
        &Options::new().stale_window(Duration::from_millis(200)),
    );
    assert_eq!(wide.anomalies(), 0, "{wide}");
}

#[test]
fn a_read_of_a_version_nobody_wrote_is_impossible() {
    let mut lines = Lines::default();
    write(&mut lines, 1, 0, 2, "ok");
    write(&mut lines, 2, 3, 4, "fail");
    read(&mut lines, "r1", 5, 6, json!(7));
    read(&mut lines, "r1", 7, 8, json!(2));
    // Version 3's write starts after this read returned.
    read(&mut lines, "r2", 9, 10, json!(3));
    write(&mut lines, 3, 11, 12, "ok");
    let report = report(&lines, &json!({"cache": {"k": 3}}));
    assert_eq!(count(&report, "cache.impossible"), 3, "{report}");
}

#[test]
fn an_unknown_write_may_be_read_at_any_time_after_its_invoke() {
    let mut lines = Lines::default();
    write(&mut lines, 1, 0, 2, "ok");
    write(&mut lines, 2, 3, 4, "info");
    read(&mut lines, "r1", 500, 501, json!(2));
    read(&mut lines, "r2", 600, 601, json!(1));
    let report = report(&lines, &json!({"cache": {"k": 1}}));
    assert_eq!(report.anomalies(), 0, "{report}");
}

#[test]
fn a_final_version_older_than_an_acknowledged_write_is_lost() {
    let mut lines = Lines::default();
    write(&mut lines, 1, 0, 2, "ok");
    write(&mut lines, 2, 3, 4, "ok");
    let report = report(&lines, &json!({"cache": {"k": 1}}));
    assert_eq!(count(&report, "cache.lost_writes"), 1, "{report}");
}
