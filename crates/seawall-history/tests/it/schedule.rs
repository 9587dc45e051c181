use seawall_history::{Error, FinalState, Options, check};
use serde_json::{Value, json};

use crate::support::{Lines, START, count, report};

/// The start in ms since the epoch: a whole second, so the ticks of an
/// every-second scheduler fall on `tick(n)`.
const START_MS: i64 = (START / 1000) as i64;

/// Tick `n` of an every-second scheduler: `n` s after the start.
fn tick(n: i64) -> i64 {
    START_MS + n * 1000
}

/// Scheduler `beat`'s `op` (`resume`, with `every_ms`, or `pause`),
/// invoked at `from` ms and ending `kind` at `to` ms.
fn steer(lines: &mut Lines, op: &str, every_ms: u64, from: u64, kind: &str, to: u64) {
    let mut value = json!({"queue": "analytics", "scheduler": "beat"});
    if op == "resume" {
        value["every_ms"] = json!(every_ms);
    }
    lines.op(
        "schedule-1",
        "schedule",
        op,
        from,
        value,
        kind,
        to,
        json!({}),
    );
}

/// The scheduler resumed from `from` to `to` ms, and paused from `pause`
/// to `paused` ms.
fn resumed_and_paused(from: u64, to: u64, pause: u64, paused: u64) -> Lines {
    let mut lines = Lines::default();
    steer(&mut lines, "resume", 1000, from, "ok", to);
    steer(&mut lines, "pause", 0, pause, "ok", paused);
    lines
}

/// A schedule section with one job per tick of `ticks` (ids from 1), the
/// queue on `redis-1` then `redis-2`, run by `worker-1` and `worker-2`.
fn state(ticks: &[i64]) -> Value {
    let jobs: Vec<Value> = ticks
        .iter()
        .enumerate()
        .map(|(n, &tick_ms)| {
            json!({"job": format!("analytics:{}", n + 1), "scheduler": "beat", "tick_ms": tick_ms})
        })
        .collect();
    json!({"schedule": {
        "masters": {"analytics": ["redis-1", "redis-2"]},
        "runners": ["worker-1", "worker-2"],
        "jobs": jobs,
    }})
}

#[test]
fn one_job_per_tick_while_it_runs_is_clean() {
    // Runs from 100 ms to 5,500 ms: ticks 1 to 5 are judged; tick 0 came
    // before the resume and tick 6 after the pause began (the pause may
    // have come too late for it): neither is required, either may exist.
    let lines = resumed_and_paused(50, 100, 5_500, 5_600);
    let report = report(
        &lines,
        &state(&[tick(0), tick(1), tick(2), tick(3), tick(4), tick(5)]),
    );
    assert_eq!(report.anomalies(), 0, "{report}");
    let schedule = report.schedule.as_ref().expect("a schedule section");
    assert_eq!(schedule.ticks, 5);
    assert_eq!(schedule.jobs, 6);
    assert_eq!(schedule.changes.ok, 2);
}

#[test]
fn a_tick_with_two_jobs_is_duplicated() {
    let lines = resumed_and_paused(50, 100, 3_500, 3_600);
    let mut state = state(&[tick(1), tick(2), tick(3)]);
    state["schedule"]["jobs"]
        .as_array_mut()
        .expect("jobs")
        .push(json!({"job": "analytics:9", "scheduler": "beat", "tick_ms": tick(2)}));
    let report = report(&lines, &state);
    assert_eq!(count(&report, "schedule.duplicated"), 1, "{report}");
    assert_eq!(report.anomalies(), 1, "{report}");
}

#[test]
fn a_tick_with_no_job_and_no_outage_is_missing() {
    // worker-1 cut off from everyone explains nothing: worker-2 still
    // reaches the master.
    let mut lines = resumed_and_paused(50, 100, 4_500, 4_600);
    lines.fault(1_500, "isolate", json!({"host": "worker-1"}));
    let report = report(&lines, &state(&[tick(1), tick(3), tick(4)]));
    assert_eq!(count(&report, "schedule.missing"), 1, "{report}");
    assert_eq!(count(&report, "schedule.missed_in_outage"), 0, "{report}");
}

#[test]
fn ticks_missed_while_the_master_was_out_are_explained_up_to_the_next_job() {
    // The master killed at 2,300 ms: ticks 2 (one interval before), 3 and
    // 4 made no job; the catch-up made tick 5's, and 6 and 7 followed.
    let mut lines = resumed_and_paused(50, 100, 7_500, 7_600);
    lines.fault(2_300, "kill", json!({"host": "redis-1"}));
    let report = report(&lines, &state(&[tick(1), tick(5), tick(6), tick(7)]));
    assert_eq!(report.anomalies(), 0, "{report}");
    assert_eq!(count(&report, "schedule.missed_in_outage"), 3, "{report}");

    // A tick missed after the scheduler got through again is not.
    let report = crate::support::report(&lines, &state(&[tick(1), tick(5), tick(7)]));
    assert_eq!(count(&report, "schedule.missing"), 1, "{report}");

    // A job made ahead before the kill may come through it (the replica
    // had it): the outage explains the ticks up to the first job made
    // after it, a lead (1 s) or more after the kill.
    let report = crate::support::report(&lines, &state(&[tick(1), tick(3), tick(6), tick(7)]));
    assert_eq!(report.anomalies(), 0, "{report}");
    assert_eq!(count(&report, "schedule.missed_in_outage"), 3, "{report}");
    let strict = crate::support::report_with(
        &lines,
        &state(&[tick(1), tick(3), tick(6), tick(7)]),
        &Options::new().schedule_lead(std::time::Duration::ZERO),
    );
    assert_eq!(count(&strict, "schedule.missing"), 2, "{strict}");

    // Nor is one missed before the outage, beyond one interval.
    let report = crate::support::report(&lines, &state(&[tick(5), tick(6), tick(7)]));
    assert_eq!(count(&report, "schedule.missing"), 1, "{report}");
    assert_eq!(count(&report, "schedule.missed_in_outage"), 3, "{report}");
}

#[test]
fn a_master_cut_off_from_every_runner_is_an_outage_and_from_one_is_not() {
    let mut lines = resumed_and_paused(50, 100, 4_500, 4_600);
    lines.fault(
        1_800,
        "partition",
        json!({"sides": [["redis-1", "worker-1"], ["worker-2", "redis-3"]]}),
    );
    let jobs = state(&[tick(1), tick(3), tick(4)]);
    let report = report(&lines, &jobs);
    assert_eq!(count(&report, "schedule.missing"), 1, "{report}");

    let mut lines = resumed_and_paused(50, 100, 4_500, 4_600);
    lines.fault(
        1_800,
        "partition",
        json!({"sides": [["redis-1"], ["worker-1", "worker-2", "redis-3"]]}),
    );
    let report = crate::support::report(&lines, &jobs);
    assert_eq!(report.anomalies(), 0, "{report}");
    assert_eq!(count(&report, "schedule.missed_in_outage"), 1, "{report}");
}

#[test]
fn a_job_off_the_schedule_or_while_paused_is_an_anomaly() {
    // Paused from 3,600 ms on (its ok), never resumed.
    let lines = resumed_and_paused(50, 100, 3_500, 3_600);
    let report = report(
        &lines,
        &state(&[tick(1), tick(2) + 250, tick(2), tick(3), tick(5)]),
    );
    assert_eq!(count(&report, "schedule.off_schedule"), 1, "{report}");
    assert_eq!(count(&report, "schedule.while_paused"), 1, "{report}");
    assert_eq!(report.anomalies(), 2, "{report}");
}

#[test]
fn an_uncertain_pause_ends_what_is_judged() {
    // A pause that timed out may have taken effect at any time after its
    // invoke: ticks after it are neither required nor refused.
    let mut lines = Lines::default();
    steer(&mut lines, "resume", 1000, 50, "ok", 100);
    steer(&mut lines, "pause", 0, 2_500, "info", 4_500);
    lines.fault(6_000, "heal", json!({}));
    let report = report(&lines, &state(&[tick(1), tick(2), tick(5)]));
    assert_eq!(report.anomalies(), 0, "{report}");
    assert_eq!(report.schedule.as_ref().expect("a section").ticks, 2);
}

#[test]
fn jobs_of_a_scheduler_no_resume_names_are_not_judged() {
    let lines = resumed_and_paused(50, 100, 2_500, 2_600);
    let mut state = state(&[tick(1), tick(2)]);
    state["schedule"]["jobs"]
        .as_array_mut()
        .expect("jobs")
        .push(json!({"job": "report:1", "scheduler": "daily", "tick_ms": tick(1) + 7}));
    let report = report(&lines, &state);
    assert_eq!(count(&report, "schedule.unrecorded"), 1, "{report}");
    assert_eq!(report.anomalies(), 0, "{report}");
}

#[test]
fn a_history_of_schedulers_needs_the_schedule_section_and_known_hosts() {
    let lines = resumed_and_paused(50, 100, 2_500, 2_600);
    let empty = FinalState::parse("state.json", "{}").expect("a state");
    assert!(matches!(
        check(&lines.history(), &empty, &Options::default()),
        Err(Error::Incomplete { .. })
    ));
    let mut with_hosts = state(&[tick(1), tick(2)]);
    with_hosts["hosts"] = json!(["redis-1", "redis-2", "worker-1"]);
    let with_hosts = FinalState::parse("state.json", &with_hosts.to_string()).expect("a state");
    assert!(matches!(
        check(&lines.history(), &with_hosts, &Options::default()),
        Err(Error::UnknownHost { host, .. }) if host == "worker-2"
    ));
}

#[test]
fn a_resume_without_an_interval_is_malformed() {
    let mut lines = Lines::default();
    steer(&mut lines, "resume", 0, 50, "ok", 100);
    assert!(seawall_history::History::parse("test.jsonl", &lines.text()).is_err());
}
