use serde_json::{Value, json};

use crate::support::{Lines, count, report};

fn change(lines: &mut Lines, key: &str, amount: i64, from: u64, kind: &str) {
    lines.op(
        "points-1",
        "points",
        "change",
        from,
        json!({"user": 7, "key": key, "amount": amount}),
        kind,
        from + 3,
        json!({}),
    );
}

fn account(balance: i64, ledger: &[(&str, i64)]) -> Value {
    let ledger: Vec<Value> = ledger
        .iter()
        .enumerate()
        .map(
            |(at, (key, delta))| json!({"version": at + 1, "delta": delta, "idempotency_key": key}),
        )
        .collect();
    json!({"points": [{"user_id": 7, "balance": balance, "ledger": ledger}]})
}

#[test]
fn a_ledger_of_acknowledged_changes_is_clean() {
    let mut lines = Lines::default();
    change(&mut lines, "a", 100, 0, "ok");
    change(&mut lines, "b", -30, 1, "ok");
    change(&mut lines, "c", -500, 2, "fail");
    // Unknown, then retried with the same key: applied once.
    change(&mut lines, "d", 5, 3, "info");
    change(&mut lines, "d", 5, 9, "ok");
    // Unknown and applied, never retried.
    change(&mut lines, "e", 1, 10, "info");
    let report = report(
        &lines,
        &account(76, &[("a", 100), ("b", -30), ("d", 5), ("e", 1)]),
    );
    assert_eq!(report.anomalies(), 0, "{report}");
    assert_eq!(count(&report, "points.unacknowledged_applied"), 1);
}

#[test]
fn a_ledger_that_does_not_sum_to_the_balance_is_reported() {
    let mut lines = Lines::default();
    change(&mut lines, "a", 100, 0, "ok");
    let report = report(&lines, &account(90, &[("a", 100)]));
    assert_eq!(count(&report, "points.sum_mismatch"), 1, "{report}");
}

#[test]
fn a_key_in_the_ledger_twice_was_applied_twice() {
    let mut lines = Lines::default();
    change(&mut lines, "a", 100, 0, "info");
    change(&mut lines, "a", 100, 5, "ok");
    let report = report(&lines, &account(200, &[("a", 100), ("a", 100)]));
    assert_eq!(count(&report, "points.applied_twice"), 1, "{report}");
    assert_eq!(report.anomalies(), 1);
}

#[test]
fn an_acknowledged_change_missing_from_the_ledger_is_reported() {
    let mut lines = Lines::default();
    change(&mut lines, "a", 100, 0, "ok");
    change(&mut lines, "b", 20, 1, "ok");
    let report = report(&lines, &account(100, &[("a", 100)]));
    assert_eq!(count(&report, "points.acknowledged_missing"), 1, "{report}");
}

#[test]
fn a_refused_change_in_the_ledger_is_reported() {
    let mut lines = Lines::default();
    change(&mut lines, "a", 100, 0, "fail");
    let report = report(&lines, &account(100, &[("a", 100)]));
    assert_eq!(count(&report, "points.failed_but_applied"), 1, "{report}");
}

#[test]
fn two_ledger_rows_of_one_version_are_a_lost_update() {
    let mut lines = Lines::default();
    change(&mut lines, "a", 100, 0, "ok");
    change(&mut lines, "b", 50, 1, "ok");
    // Two changes that each took the account to version 1: each writer
    // wrote over the version the other had read.
    let report = report(
        &lines,
        &json!({"points": [{"user_id": 7, "balance": 150, "ledger": [
            {"version": 1, "delta": 100, "idempotency_key": "a"},
            {"version": 1, "delta": 50, "idempotency_key": "b"},
        ]}]}),
    );
    assert_eq!(count(&report, "points.lost_update"), 1, "{report}");
    assert_eq!(report.anomalies(), 1);
}
