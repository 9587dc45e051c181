use serde_json::json;

use crate::support::{Lines, count, report};

/// An enqueue of `key` by `process` from `from` to `to` ms, ending `kind`,
/// acknowledged as `job` when ok.
fn enqueue(lines: &mut Lines, key: &str, from: u64, to: u64, kind: &str, job: &str) {
    let reply = if kind == "ok" {
        json!({"job": job})
    } else {
        json!({"status": 503, "detail": "not queued"})
    };
    lines.op(
        "queue-1",
        "queue",
        "enqueue",
        from,
        json!({"queue": "notification", "key": key}),
        kind,
        to,
        reply,
    );
}

fn row(job: &str, key: &str, at_ms: u64) -> serde_json::Value {
    json!({"job": job, "idempotency_key": key, "at_ms": crate::support::at(at_ms) / 1000})
}

#[test]
fn clean_runs_report_nothing() {
    let mut lines = Lines::default();
    enqueue(&mut lines, "k1", 0, 5, "ok", "notification:1");
    enqueue(&mut lines, "k2", 1, 6, "ok", "notification:2");
    enqueue(&mut lines, "k3", 2, 7, "fail", "");
    let report = report(
        &lines,
        &json!({"queue": {"rows": [row("notification:1", "k1", 10), row("notification:2", "k2", 11)]}}),
    );
    assert_eq!(report.anomalies(), 0, "{report}");
    let queue = report.queue.as_ref().expect("a queue section");
    assert_eq!(queue.enqueues.ok, 2);
    assert_eq!(queue.enqueues.fail, 1);
    assert_eq!(queue.rows, 2);
}

#[test]
fn an_acknowledged_job_that_never_ran_is_lost() {
    let mut lines = Lines::default();
    enqueue(&mut lines, "k1", 0, 5, "ok", "notification:1");
    enqueue(&mut lines, "k2", 1, 6, "ok", "notification:2");
    let report = report(
        &lines,
        &json!({"queue": {"rows": [row("notification:1", "k1", 10)]}}),
    );
    assert_eq!(count(&report, "queue.lost"), 1, "{report}");
    assert_eq!(report.anomalies(), 1);
    let queue = report.queue.as_ref().expect("a queue section");
    assert!(queue.lost.examples[0].contains("notification:2"));
}

#[test]
fn a_job_run_twice_without_a_fault_is_unexplained() {
    let mut lines = Lines::default();
    enqueue(&mut lines, "k1", 0, 5, "ok", "notification:1");
    let report = report(
        &lines,
        &json!({"queue": {"rows": [row("notification:1", "k1", 10), row("notification:1", "k1", 40)]}}),
    );
    assert_eq!(count(&report, "queue.run_twice_unexplained"), 1, "{report}");
    assert_eq!(count(&report, "queue.run_twice_explained"), 0);
}

#[test]
fn a_job_run_twice_after_its_worker_was_killed_is_explained() {
    let mut lines = Lines::default();
    enqueue(&mut lines, "k1", 0, 5, "ok", "notification:1");
    lines.fault(8, "kill", json!({"host": "worker-1"}));
    let report = report(
        &lines,
        &json!({"queue": {"rows": [row("notification:1", "k1", 10), row("notification:1", "k1", 900)]}}),
    );
    assert_eq!(report.anomalies(), 0, "{report}");
    assert_eq!(count(&report, "queue.run_twice_explained"), 1);
    assert_eq!(report.faults.len(), 1);
    assert!((report.faults[0].at_s - 0.008).abs() < 1e-9);
}

#[test]
fn a_partition_explains_a_second_run_only_if_it_touches_a_worker() {
    let rows = json!({"queue": {"rows": [
        {"job": "notification:1", "idempotency_key": "k1", "worker": "worker-2"},
        {"job": "notification:1", "idempotency_key": "k1", "worker": "worker-1"},
    ]}});
    let mut apart = Lines::default();
    enqueue(&mut apart, "k1", 0, 5, "ok", "notification:1");
    apart.fault(
        8,
        "partition",
        json!({"sides": [["api-1", "redis-1"], ["api-2", "worker-3"]]}),
    );
    let report_apart = report(&apart, &rows);
    assert_eq!(
        count(&report_apart, "queue.run_twice_unexplained"),
        1,
        "{report_apart}"
    );

    let mut cut = Lines::default();
    enqueue(&mut cut, "k1", 0, 5, "ok", "notification:1");
    cut.fault(8, "isolate", json!({"host": "worker-2"}));
    let report_cut = report(&cut, &rows);
    assert_eq!(report_cut.anomalies(), 0, "{report_cut}");
}

#[test]
fn a_fault_before_the_enqueue_explains_nothing() {
    let mut lines = Lines::default();
    lines.fault(0, "kill", json!({"host": "worker-1"}));
    enqueue(&mut lines, "k1", 10, 15, "ok", "notification:1");
    let report = report(
        &lines,
        &json!({"queue": {"rows": [row("notification:1", "k1", 20), row("notification:1", "k1", 30)]}}),
    );
    assert_eq!(count(&report, "queue.run_twice_unexplained"), 1, "{report}");
}

#[test]
fn a_stall_the_queue_counted_explains_a_second_run() {
    let mut lines = Lines::default();
    enqueue(&mut lines, "k1", 0, 5, "ok", "notification:1");
    let report = report(
        &lines,
        &json!({"queue": {
            "rows": [row("notification:1", "k1", 10), row("notification:1", "k1", 40)],
            "jobs": [{"job": "notification:1", "runs": 2, "stalls": 1}],
        }}),
    );
    assert_eq!(report.anomalies(), 0, "{report}");
    assert_eq!(count(&report, "queue.run_twice_explained"), 1);
}

#[test]
fn a_key_that_ran_as_two_jobs_is_unexplained() {
    let mut lines = Lines::default();
    enqueue(&mut lines, "k1", 0, 5, "info", "");
    enqueue(&mut lines, "k1", 6, 9, "ok", "notification:2");
    lines.fault(7, "kill", json!({"host": "worker-1"}));
    let report = report(
        &lines,
        &json!({"queue": {"rows": [row("notification:1", "k1", 10), row("notification:2", "k1", 12)]}}),
    );
    assert_eq!(count(&report, "queue.run_twice_unexplained"), 1, "{report}");
}

#[test]
fn a_run_of_a_failed_enqueue_was_never_acknowledged() {
    let mut lines = Lines::default();
    enqueue(&mut lines, "k1", 0, 5, "fail", "");
    let report = report(
        &lines,
        &json!({"queue": {"rows": [row("notification:7", "k1", 10)]}}),
    );
    assert_eq!(count(&report, "queue.never_acknowledged"), 1, "{report}");
}

#[test]
fn an_info_enqueue_may_run_or_not() {
    let mut lines = Lines::default();
    enqueue(&mut lines, "ran", 0, 5, "info", "");
    enqueue(&mut lines, "did-not", 1, 6, "info", "");
    // Never completed at all: unknown as well.
    enqueue(&mut lines, "pending", 2, 0, "none", "");
    let report = report(
        &lines,
        &json!({"queue": {"rows": [row("notification:1", "ran", 10), row("notification:3", "pending", 11)]}}),
    );
    assert_eq!(report.anomalies(), 0, "{report}");
    assert_eq!(count(&report, "queue.unacknowledged_ran"), 2);
    assert_eq!(report.queue.as_ref().expect("queue").enqueues.info, 3);
}

#[test]
fn a_retry_after_an_unknown_enqueue_acknowledges_the_same_job() {
    let mut lines = Lines::default();
    enqueue(&mut lines, "k1", 0, 5, "info", "");
    enqueue(&mut lines, "k1", 6, 9, "ok", "notification:1");
    let report = report(
        &lines,
        &json!({"queue": {"rows": [row("notification:1", "k1", 10)]}}),
    );
    assert_eq!(report.anomalies(), 0, "{report}");
}

#[test]
fn one_job_acknowledged_to_two_keys_is_an_anomaly() {
    let mut lines = Lines::default();
    enqueue(&mut lines, "k1", 0, 5, "ok", "notification:1");
    enqueue(&mut lines, "k2", 6, 9, "ok", "notification:1");
    // A retry of one key answered with its job again is not.
    enqueue(&mut lines, "k3", 10, 12, "ok", "notification:3");
    enqueue(&mut lines, "k3", 13, 15, "ok", "notification:3");
    let report = report(
        &lines,
        &json!({"queue": {"rows": [row("notification:1", "k1", 20), row("notification:3", "k3", 21)]}}),
    );
    assert_eq!(count(&report, "queue.shared_job"), 1, "{report}");
    assert_eq!(report.anomalies(), 1);
}
