use seawall_history::{Error, FinalState, Options, check};
use serde_json::{Value, json};

use crate::support::Lines;

/// What checking `lines` against `state` says: the error, if any.
fn judged(lines: &Lines, state: &Value) -> Result<(), Error> {
    let state = FinalState::parse("state.json", &state.to_string())?;
    check(&lines.history(), &state, &Options::default()).map(drop)
}

/// A history of every workload that needs a section of the state.
fn every_workload() -> Lines {
    let mut lines = Lines::default();
    lines.op(
        "queue-1",
        "queue",
        "enqueue",
        0,
        json!({"key": "k1"}),
        "ok",
        1,
        json!({"job": "notification:1"}),
    );
    lines.op(
        "sale-1",
        "sale",
        "order",
        2,
        json!({"sale": 1, "user": 1}),
        "ok",
        3,
        json!({"order": "A", "unit": 1}),
    );
    lines.op(
        "coupon-1",
        "coupon",
        "issue",
        4,
        json!({"campaign": 1, "user": 1}),
        "ok",
        5,
        json!({"coupon": "C1"}),
    );
    lines.op(
        "points-1",
        "points",
        "change",
        6,
        json!({"user": 7, "key": "a", "amount": 1}),
        "ok",
        7,
        json!({}),
    );
    lines.op(
        "writer",
        "cache",
        "write",
        8,
        json!({"key": "7", "value": 1}),
        "ok",
        9,
        json!({}),
    );
    lines.op(
        "limits",
        "ratelimit",
        "check",
        10,
        json!({"key": "report", "limit": 1, "window_ms": 1000}),
        "ok",
        11,
        json!({"admitted": true}),
    );
    lines
}

fn whole_state() -> Value {
    json!({
        "queue": {"rows": [{"job": "notification:1", "idempotency_key": "k1"}]},
        "sale": [{"id": 1, "stock": 1, "remaining": 0,
                  "orders": [{"id": "A", "unit": 1, "user_id": 1}]}],
        "coupon": [{"id": 1, "quantity": 1,
                    "coupons": [{"code": "C1", "number": 1, "user_id": 1}]}],
        "points": [{"user_id": 7, "balance": 1,
                    "ledger": [{"version": 1, "delta": 1, "idempotency_key": "a"}]}],
        "cache": {"7": 1},
    })
}

#[test]
fn a_workload_the_history_ran_needs_its_section_of_the_state() {
    let lines = every_workload();
    judged(&lines, &whole_state()).expect("every section is there");
    for section in ["queue", "sale", "coupon", "points", "cache"] {
        let mut state = whole_state();
        state.as_object_mut().expect("an object").remove(section);
        let error = judged(&lines, &state).expect_err(section);
        assert!(
            matches!(&error, Error::Incomplete { what } if *what == format!("{section} section")),
            "{section}: {error}"
        );
    }
}

#[test]
fn a_cache_key_the_history_wrote_needs_its_final_version() {
    let lines = every_workload();
    let mut state = whole_state();
    state["cache"] = json!({"8": 3});
    let error = judged(&lines, &state).expect_err("no final version of key 7");
    assert_eq!(
        error.to_string(),
        "the final state has no final version of cache key 7, which the history needs judged"
    );
    // `null` says the key ends absent: a lost write, not a gap.
    state["cache"] = json!({"7": null});
    judged(&lines, &state).expect("a final version");
}

#[test]
fn a_sale_needs_the_stock_the_store_says_remains() {
    let mut state = whole_state();
    state["sale"][0]
        .as_object_mut()
        .expect("an object")
        .remove("remaining");
    let error = FinalState::parse("state.json", &state.to_string()).expect_err("no remaining");
    assert!(error.to_string().contains("remaining"), "{error}");
}
