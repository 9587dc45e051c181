use serde_json::{Value, json};

use crate::support::{Lines, count, report};

/// An order of sale 1 by `user`, ending `kind`; `ok` ones acknowledge `order`.
fn order(lines: &mut Lines, user: i64, from: u64, kind: &str, order: &str) {
    let reply = if kind == "ok" {
        json!({"order": order, "unit": 1})
    } else {
        json!({"status": 409, "detail": "sold out"})
    };
    lines.op(
        "sale-1",
        "sale",
        "order",
        from,
        json!({"sale": 1, "user": user, "key": format!("order-{user}")}),
        kind,
        from + 5,
        reply,
    );
}

fn sale(stock: i64, remaining: i64, orders: &[(&str, i64, i64)]) -> Value {
    let orders: Vec<Value> = orders
        .iter()
        .map(|(id, unit, user)| json!({"id": id, "unit": unit, "user_id": user, "nth": 1}))
        .collect();
    json!({"sale": [{"id": 1, "stock": stock, "per_user": 1, "remaining": remaining, "orders": orders}]})
}

#[test]
fn a_sale_sold_to_its_stock_is_clean() {
    let mut lines = Lines::default();
    order(&mut lines, 1, 0, "ok", "A");
    order(&mut lines, 2, 1, "ok", "B");
    order(&mut lines, 3, 2, "fail", "");
    let report = report(&lines, &sale(2, 0, &[("A", 1, 1), ("B", 2, 2)]));
    assert_eq!(report.anomalies(), 0, "{report}");
    assert_eq!(report.sale.as_ref().expect("sale").rows, 2);
}

#[test]
fn more_rows_than_stock_is_oversold() {
    let mut lines = Lines::default();
    order(&mut lines, 1, 0, "ok", "A");
    order(&mut lines, 2, 1, "ok", "B");
    order(&mut lines, 3, 2, "ok", "C");
    let report = report(
        &lines,
        &sale(2, 0, &[("A", 1, 1), ("B", 2, 2), ("C", 3, 3)]),
    );
    // Three rows for two units, and unit 3 outside the stock.
    assert_eq!(count(&report, "sale.oversold"), 2, "{report}");
}

#[test]
fn negative_remaining_stock_and_a_unit_held_twice_are_oversold() {
    let mut lines = Lines::default();
    order(&mut lines, 1, 0, "ok", "A");
    order(&mut lines, 2, 1, "ok", "B");
    let report = report(&lines, &sale(5, -1, &[("A", 1, 1), ("B", 1, 2)]));
    assert_eq!(count(&report, "sale.oversold"), 2, "{report}");
}

#[test]
fn remaining_stock_that_a_row_holds_is_oversold() {
    let mut lines = Lines::default();
    order(&mut lines, 1, 0, "ok", "A");
    let report = report(&lines, &sale(2, 2, &[("A", 1, 1)]));
    assert_eq!(count(&report, "sale.oversold"), 1, "{report}");
}

#[test]
fn an_acknowledged_order_without_a_row_is_reported() {
    let mut lines = Lines::default();
    order(&mut lines, 1, 0, "ok", "A");
    order(&mut lines, 2, 1, "ok", "B");
    let report = report(&lines, &sale(2, 0, &[("A", 1, 1)]));
    assert_eq!(count(&report, "sale.acknowledged_missing"), 1, "{report}");
}

#[test]
fn a_row_of_a_failed_order_is_an_anomaly_and_of_an_unknown_one_is_not() {
    let mut lines = Lines::default();
    order(&mut lines, 1, 0, "fail", "");
    order(&mut lines, 2, 1, "info", "");
    let report = report(&lines, &sale(2, 0, &[("X", 1, 1), ("Y", 2, 2)]));
    assert_eq!(count(&report, "sale.failed_but_written"), 1, "{report}");
    assert_eq!(count(&report, "sale.unacknowledged_written"), 1);
    assert_eq!(report.anomalies(), 1);
}

#[test]
fn a_user_past_the_per_user_limit_is_reported() {
    let mut lines = Lines::default();
    order(&mut lines, 1, 0, "ok", "A");
    order(&mut lines, 1, 1, "ok", "B");
    let report = report(&lines, &sale(5, 3, &[("A", 1, 1), ("B", 2, 1)]));
    assert_eq!(count(&report, "sale.over_per_user"), 1, "{report}");
}

#[test]
fn an_acknowledged_order_written_twice_is_reported_under_any_per_user_limit() {
    let mut lines = Lines::default();
    order(&mut lines, 1, 0, "ok", "A");
    // A limit of 2 leaves room for the second row: the user placed one
    // order, and no unknown one could have written it.
    let report = report(
        &lines,
        &json!({"sale": [{"id": 1, "stock": 5, "per_user": 2, "remaining": 3, "orders": [
            {"id": "A", "unit": 1, "user_id": 1, "nth": 1},
            {"id": "B", "unit": 2, "user_id": 1, "nth": 2},
        ]}]}),
    );
    assert_eq!(count(&report, "sale.written_twice"), 1, "{report}");
    assert_eq!(count(&report, "sale.unrecorded"), 0);
    assert_eq!(report.anomalies(), 1);

    // An unknown order of the same user may have written it.
    let mut unknown = Lines::default();
    order(&mut unknown, 1, 0, "ok", "A");
    order(&mut unknown, 1, 10, "info", "");
    let tolerated = crate::support::report(
        &unknown,
        &json!({"sale": [{"id": 1, "stock": 5, "per_user": 2, "remaining": 3, "orders": [
            {"id": "A", "unit": 1, "user_id": 1, "nth": 1},
            {"id": "B", "unit": 2, "user_id": 1, "nth": 2},
        ]}]}),
    );
    assert_eq!(tolerated.anomalies(), 0, "{tolerated}");
}

#[test]
fn an_acknowledged_order_is_matched_with_a_row_of_its_own_user() {
    let mut lines = Lines::default();
    order(&mut lines, 1, 0, "ok", "A");
    let report = report(&lines, &sale(5, 4, &[("A", 1, 2)]));
    assert_eq!(count(&report, "sale.acknowledged_missing"), 1, "{report}");
    let sale = report.sale.as_ref().expect("sale");
    assert!(
        sale.acknowledged_missing.examples[0].contains("its row holds user 2"),
        "{report}"
    );
}
