use std::process::Command;

use serde_json::json;

use crate::support::Lines;

/// Runs `seawall-check` on a lost job's history; answers its exit code and
/// output.
fn run(extra: &[&str]) -> (Option<i32>, String) {
    run_with_state(&json!({"queue": {"rows": []}}), extra)
}

/// [`run`] with `state` as the final state.
fn run_with_state(state: &serde_json::Value, extra: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut lines = Lines::default();
    lines.op(
        "queue-1",
        "queue",
        "enqueue",
        0,
        json!({"queue": "notification", "key": "k1"}),
        "ok",
        5,
        json!({"job": "notification:1"}),
    );
    let mut faults = Lines::default();
    faults.fault(3, "kill", json!({"host": "worker-1"}));
    let history = dir.path().join("clients.jsonl");
    let nemesis = dir.path().join("faults.jsonl");
    let state_file = dir.path().join("state.json");
    std::fs::write(&history, lines.text()).expect("history written");
    std::fs::write(&nemesis, faults.text()).expect("faults written");
    std::fs::write(&state_file, state.to_string()).expect("state written");
    let output = Command::new(env!("CARGO_BIN_EXE_seawall-check"))
        .arg("--history")
        .arg(&history)
        .arg("--history")
        .arg(&nemesis)
        .arg("--state")
        .arg(&state_file)
        .args(extra)
        .output()
        .expect("seawall-check runs");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.code(), text)
}

/// An anomaly fails the run unless the caller asks only for the report.
#[test]
fn the_binary_prints_a_table_and_fails_on_an_anomaly() {
    let (code, text) = run(&[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("1 anomalies"), "{text}");
    assert!(text.contains("lost"), "{text}");
    assert!(text.contains("ANOMALY"), "{text}");
    assert!(text.contains("kill"), "{text}");
}

#[test]
fn the_binary_prints_json() {
    let (code, text) = run(&["--json", "--fail-on", "none"]);
    assert_eq!(code, Some(0), "{text}");
    let report: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(report["queue"]["lost"]["count"], 1);
    assert_eq!(report["faults"][0]["op"], "kill");
}

#[test]
fn fail_on_names_the_kinds_that_fail_the_run() {
    assert_eq!(run(&["--fail-on", "queue.lost"]).0, Some(1));
    assert_eq!(run(&["--fail-on", "any"]).0, Some(1));
    assert_eq!(
        run(&["--fail-on", "cache.stale,queue.run_twice_unexplained"]).0,
        Some(0)
    );
    assert_eq!(run(&["--fail-on", "none"]).0, Some(0));
    assert_eq!(run(&["--fail-on", "queue.nonsense"]).0, Some(2));
}

#[test]
fn a_state_without_the_section_of_a_workload_the_history_ran_is_unreadable() {
    let (code, text) = run_with_state(&json!({"cache": {}}), &["--fail-on", "none"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("the final state has no queue section"),
        "{text}"
    );
}
