use seawall_history::{Error, FinalState, Options, check};
use serde_json::{Value, json};

use crate::support::{Lines, count, report, report_with};

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

fn row(job: &str, key: &str, at_ms: u64) -> Value {
    json!({"job": job, "idempotency_key": key, "at_ms": crate::support::at(at_ms) / 1000})
}

/// A row of `notification:1` (key `k1`) that `worker` wrote at `at_ms`.
fn run_by(worker: &str, at_ms: u64) -> Value {
    let mut row = row("notification:1", "k1", at_ms);
    row["worker"] = json!(worker);
    row
}

/// The queue section: `rows`, `notification:1`'s stalls, and the
/// notification queue under a `lease_ms` lease on `masters`.
fn queue(rows: &[Value], stalls: u32, lease_ms: u64, masters: &[&str]) -> Value {
    json!({"queue": {
        "queues": {"notification": {"lease_ms": lease_ms, "masters": masters}},
        "rows": rows,
        "jobs": [{"job": "notification:1", "runs": rows.len(), "stalls": stalls}],
    }})
}

/// One enqueue of `k1`, acknowledged as `notification:1`.
fn one_job() -> Lines {
    let mut lines = Lines::default();
    enqueue(&mut lines, "k1", 0, 5, "ok", "notification:1");
    lines
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
    let mut lines = one_job();
    lines.fault(8, "kill", json!({"host": "worker-1"}));
    let report = report(
        &lines,
        &queue(
            &[run_by("worker-1", 10), run_by("worker-2", 900)],
            1,
            500,
            &["redis-1"],
        ),
    );
    assert_eq!(report.anomalies(), 0, "{report}");
    assert_eq!(count(&report, "queue.run_twice_explained"), 1);
    assert_eq!(report.faults.len(), 1);
    assert!((report.faults[0].at_s - 0.008).abs() < 1e-9);
}

#[test]
fn only_a_fault_on_the_lost_runs_path_explains_a_repeat() {
    let rows = [run_by("worker-1", 10), run_by("worker-2", 900)];
    let judged = |op: &str, value: Value| {
        let mut lines = one_job();
        lines.fault(8, op, value);
        report(&lines, &queue(&rows, 1, 500, &["redis-2"]))
    };
    // Drill 1's shape: the workers on the healthy side with the queue's
    // master; the cut explains nothing of theirs.
    let healthy = judged(
        "partition",
        json!({"sides": [["redis-1", "api-1"], ["api-2", "worker-1", "worker-2", "redis-2"]]}),
    );
    assert_eq!(
        count(&healthy, "queue.run_twice_unexplained"),
        1,
        "{healthy}"
    );
    // The worker of the rerun, not of the lost run.
    let other = judged("isolate", json!({"host": "worker-2"}));
    assert_eq!(count(&other, "queue.run_twice_unexplained"), 1, "{other}");
    // The lost run's worker cut off from the master, or the master from
    // it: explained.
    for (op, value) in [
        (
            "partition",
            json!({"sides": [["worker-1"], ["redis-1", "redis-2"]]}),
        ),
        ("one-way", json!({"from": "redis-2", "to": "worker-1"})),
        ("isolate", json!({"host": "worker-1"})),
        ("pause", json!({"host": "redis-2"})),
    ] {
        let cut = judged(op, value);
        assert_eq!(cut.anomalies(), 0, "{op}: {cut}");
        assert_eq!(count(&cut, "queue.run_twice_explained"), 1);
    }
}

#[test]
fn a_pause_of_a_worker_that_ran_nothing_explains_nothing() {
    let mut lines = one_job();
    lines.fault(8, "pause", json!({"host": "worker-9"}));
    // Rows that do not name their worker have only the masters on their
    // path.
    let unnamed = [
        row("notification:1", "k1", 10),
        row("notification:1", "k1", 900),
    ];
    let report = report(&lines, &queue(&unnamed, 1, 500, &["redis-1"]));
    assert_eq!(count(&report, "queue.run_twice_unexplained"), 1, "{report}");

    // A fleet that lists its hosts makes the fault a malformed history.
    let mut state = queue(&unnamed, 1, 500, &["redis-1"]);
    state["hosts"] = json!(["redis-1", "worker-1", "worker-2"]);
    let state = FinalState::parse("state.json", &state.to_string()).expect("a state");
    let error = check(&lines.history(), &state, &Options::default()).expect_err("worker-9");
    assert!(
        matches!(&error, Error::UnknownHost { host, .. } if host == "worker-9"),
        "{error}"
    );
}

#[test]
fn a_row_without_a_time_is_explained_by_no_fault() {
    let mut lines = one_job();
    lines.fault(100_000, "kill", json!({"host": "worker-1"}));
    let untimed = json!({"job": "notification:1", "idempotency_key": "k1", "worker": "worker-1"});
    let report = report(
        &lines,
        &queue(&[run_by("worker-1", 10), untimed], 1, 500, &["redis-1"]),
    );
    assert_eq!(count(&report, "queue.run_twice_unexplained"), 1, "{report}");
}

#[test]
fn a_fault_more_than_a_lease_from_the_lost_run_explains_nothing() {
    // No recorded enqueue names job 9: its runs are judged by their own
    // times, not from the start of the history.
    let mut lines = one_job();
    lines.fault(0, "kill", json!({"host": "worker-1"}));
    let mut rows = vec![run_by("worker-1", 20)];
    for at in [20_000, 20_040] {
        let mut row = row("notification:9", "k9", at);
        row["worker"] = json!("worker-1");
        rows.push(row);
    }
    let state = json!({"queue": {
        "queues": {"notification": {"lease_ms": 1000, "masters": ["redis-1"]}},
        "rows": rows,
        "jobs": [{"job": "notification:9", "runs": 2, "stalls": 1}],
    }});
    let report = report(&lines, &state);
    assert_eq!(count(&report, "queue.run_twice_unexplained"), 1, "{report}");

    // Within the lease and the margin, the same kill explains it.
    let near = report_with(
        &lines,
        &state,
        &Options::new().lease_margin(std::time::Duration::from_secs(20)),
    );
    assert_eq!(near.anomalies(), 0, "{near}");
}

#[test]
fn one_stall_explains_one_repeat() {
    let mut lines = one_job();
    lines.fault(8, "kill", json!({"host": "worker-1"}));
    let rows: Vec<Value> = (1..=5).map(|n| run_by("worker-1", 10 * n)).collect();
    let report = report(&lines, &queue(&rows, 1, 500, &["redis-1"]));
    assert_eq!(count(&report, "queue.run_twice_unexplained"), 1, "{report}");
    let queue = report.queue.as_ref().expect("a queue section");
    assert!(
        queue.run_twice_unexplained.examples[0].contains("1 of 4 repeat(s) explained"),
        "{report}"
    );
}

#[test]
fn a_master_fault_explains_one_lost_acknowledgement_each() {
    // The run wrote its row and acknowledged it to a master that was then
    // killed; its replica took over without the acknowledgement and the
    // job ran again, with no stall counted.
    let rows = [
        run_by("worker-1", 10),
        run_by("worker-2", 400),
        run_by("worker-1", 800),
    ];
    let mut once = one_job();
    once.fault(12, "kill", json!({"host": "redis-1"}));
    let report = report(&once, &queue(&rows, 0, 500, &["redis-1", "redis-4"]));
    assert_eq!(count(&report, "queue.run_twice_unexplained"), 1, "{report}");

    let mut twice = once;
    twice.fault(
        410,
        "partition",
        json!({"sides": [["redis-4"], ["redis-1"]]}),
    );
    let report = crate::support::report(&twice, &queue(&rows, 0, 500, &["redis-1", "redis-4"]));
    assert_eq!(report.anomalies(), 0, "{report}");
}

#[test]
fn a_worker_cut_off_from_redis_mid_job_explains_its_takeover() {
    // Drill 4's shape: worker-1's run reached its write 2 s before the
    // cut and waited on a lock; worker-2 took the job over once the 3 s
    // lease ran out.
    let mut lines = one_job();
    lines.fault(
        2_010,
        "partition",
        json!({"sides": [["worker-1"], ["redis-1", "redis-2", "redis-3"]]}),
    );
    let report = report(
        &lines,
        &queue(
            &[run_by("worker-1", 10), run_by("worker-2", 5_500)],
            1,
            3_000,
            &["redis-2"],
        ),
    );
    assert_eq!(report.anomalies(), 0, "{report}");
    assert_eq!(count(&report, "queue.run_twice_explained"), 1);
}

#[test]
fn a_paused_worker_may_write_its_lost_run_last() {
    // Frozen, worker-1 could not abort its run; worker-2 took it over and
    // wrote first, then worker-1 went on once resumed.
    let mut lines = one_job();
    lines.fault(8, "pause", json!({"host": "worker-1"}));
    lines.fault(10_000, "resume", json!({"host": "worker-1"}));
    let rows = [run_by("worker-2", 700), run_by("worker-1", 10_005)];
    let report = report(&lines, &queue(&rows, 1, 500, &["redis-1"]));
    assert_eq!(report.anomalies(), 0, "{report}");
}

#[test]
fn a_fault_before_the_enqueue_explains_nothing() {
    let mut lines = Lines::default();
    lines.fault(0, "kill", json!({"host": "worker-1"}));
    enqueue(&mut lines, "k1", 10, 15, "ok", "notification:1");
    let report = report(
        &lines,
        &queue(
            &[run_by("worker-1", 20), run_by("worker-1", 30)],
            1,
            500,
            &["redis-1"],
        ),
    );
    assert_eq!(count(&report, "queue.run_twice_unexplained"), 1, "{report}");
}

#[test]
fn a_stall_explains_a_repeat_only_with_a_fault_on_its_path() {
    let rows = [run_by("worker-1", 10), run_by("worker-2", 700)];
    let report = report(&one_job(), &queue(&rows, 1, 500, &["redis-1"]));
    assert_eq!(count(&report, "queue.run_twice_unexplained"), 1, "{report}");

    let mut killed = one_job();
    killed.fault(9, "kill", json!({"host": "worker-1"}));
    let report = crate::support::report(&killed, &queue(&rows, 1, 500, &["redis-1"]));
    assert_eq!(report.anomalies(), 0, "{report}");
    assert_eq!(count(&report, "queue.run_twice_explained"), 1);
}

#[test]
fn a_job_of_a_queue_without_its_lease_and_masters_has_no_repeat_explained() {
    let mut lines = one_job();
    lines.fault(8, "kill", json!({"host": "worker-1"}));
    let report = report(
        &lines,
        &json!({"queue": {
            "rows": [run_by("worker-1", 10), run_by("worker-2", 400)],
            "jobs": [{"job": "notification:1", "runs": 2, "stalls": 1}],
        }}),
    );
    assert_eq!(count(&report, "queue.run_twice_unexplained"), 1, "{report}");
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
