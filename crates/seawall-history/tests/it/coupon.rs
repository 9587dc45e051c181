use serde_json::{Value, json};

use crate::support::{Lines, count, report};

fn issue(lines: &mut Lines, user: i64, from: u64, kind: &str, code: &str) {
    let reply = if kind == "ok" {
        json!({"coupon": code})
    } else {
        json!({"status": 409})
    };
    lines.op(
        "coupon-1",
        "coupon",
        "issue",
        from,
        json!({"campaign": 3, "user": user}),
        kind,
        from + 2,
        reply,
    );
}

fn campaign(quantity: i64, coupons: &[(&str, i64, i64)]) -> Value {
    let coupons: Vec<Value> = coupons
        .iter()
        .map(|(code, number, user)| json!({"code": code, "number": number, "user_id": user}))
        .collect();
    json!({"coupon": [{"id": 3, "quantity": quantity, "per_user": 1, "coupons": coupons}]})
}

#[test]
fn a_campaign_issued_to_its_quantity_is_clean() {
    let mut lines = Lines::default();
    issue(&mut lines, 1, 0, "ok", "C1");
    issue(&mut lines, 2, 1, "ok", "C2");
    issue(&mut lines, 1, 2, "fail", "");
    issue(&mut lines, 3, 3, "info", "");
    let report = report(&lines, &campaign(2, &[("C1", 1, 1), ("C2", 2, 2)]));
    assert_eq!(report.anomalies(), 0, "{report}");
}

#[test]
fn two_coupons_to_one_user_are_duplicates() {
    let mut lines = Lines::default();
    issue(&mut lines, 1, 0, "ok", "C1");
    issue(&mut lines, 1, 1, "ok", "C2");
    let report = report(&lines, &campaign(5, &[("C1", 1, 1), ("C2", 2, 1)]));
    assert_eq!(count(&report, "coupon.duplicates"), 1, "{report}");
}

#[test]
fn more_coupons_than_the_quantity_are_over_issued() {
    let mut lines = Lines::default();
    issue(&mut lines, 1, 0, "ok", "C1");
    issue(&mut lines, 2, 1, "ok", "C2");
    let report = report(&lines, &campaign(1, &[("C1", 1, 1), ("C2", 1, 2)]));
    // Two for a quantity of one, and number 1 twice.
    assert_eq!(count(&report, "coupon.over_issued"), 2, "{report}");
}

#[test]
fn an_acknowledged_coupon_without_a_row_is_reported() {
    let mut lines = Lines::default();
    issue(&mut lines, 1, 0, "ok", "C1");
    let report = report(&lines, &campaign(5, &[]));
    assert_eq!(count(&report, "coupon.acknowledged_missing"), 1, "{report}");
}

#[test]
fn a_coupon_of_a_refused_issue_is_an_anomaly() {
    let mut lines = Lines::default();
    issue(&mut lines, 1, 0, "fail", "");
    let report = report(&lines, &campaign(5, &[("C9", 1, 1)]));
    assert_eq!(count(&report, "coupon.failed_but_issued"), 1, "{report}");
}

#[test]
fn an_acknowledged_coupon_written_twice_is_reported_under_any_per_user_limit() {
    let mut lines = Lines::default();
    issue(&mut lines, 1, 0, "ok", "C1");
    issue(&mut lines, 2, 1, "fail", "");
    let report = report(
        &lines,
        &json!({"coupon": [{"id": 3, "quantity": 5, "per_user": 2, "coupons": [
            {"code": "C1", "number": 1, "user_id": 1},
            {"code": "C2", "number": 2, "user_id": 1},
        ]}]}),
    );
    assert_eq!(count(&report, "coupon.written_twice"), 1, "{report}");
    assert_eq!(report.anomalies(), 1);
}
