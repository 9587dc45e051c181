//! Time sales: no unit sold twice or beyond the stock, no user past the
//! per-user limit, every acknowledged order written once for its user, no
//! row for an order that was refused.

use std::collections::HashSet;

use super::Options;
use super::rows::{self, Claim, Found, Row, Words};
use crate::history::{Call, Op};
use crate::report::SaleReport;
use crate::state::SaleState;

const WORDS: Words = Words {
    row: "order",
    group: "sale",
    size: "stock",
    slot: "unit",
    all_failed: "every order of the user failed",
};

pub(super) fn check(ops: &[&Op], sales: &[SaleState], options: &Options) -> SaleReport {
    let keep = options.examples;
    let mut report = SaleReport::default();
    for op in ops {
        report.orders.count(op.outcome);
    }
    let known: HashSet<i64> = sales.iter().map(|sale| sale.id).collect();
    for sale in sales {
        report.rows += sale.orders.len();
        remaining(sale, &mut report, keep);
        rows::issued_once(
            sale.id,
            sale.stock,
            sale.per_user.unwrap_or(1),
            rows_of(sale),
            &WORDS,
            keep,
            &mut report.oversold,
            &mut report.over_per_user,
        );
    }
    rows::reconcile(
        ops,
        |op| match &op.call {
            Call::Order {
                sale, user, order, ..
            } => Some(Claim {
                group: *sale,
                user: *user,
                id: order.as_deref(),
            }),
            _ => None,
        },
        sales.iter().flat_map(rows_of),
        &WORDS,
        |sale| {
            if known.contains(&sale) {
                ""
            } else {
                " (the state has no such sale)"
            }
        },
        options,
        Found {
            acknowledged_missing: &mut report.acknowledged_missing,
            unacknowledged: &mut report.unacknowledged_written,
            failed: &mut report.failed_but_written,
            written_twice: &mut report.written_twice,
            unrecorded: &mut report.unrecorded,
        },
    );
    report
}

fn rows_of(sale: &SaleState) -> impl ExactSizeIterator<Item = Row<'_>> + Clone {
    sale.orders.iter().map(|row| Row {
        group: sale.id,
        id: row.id.as_str(),
        slot: row.unit,
        user: row.user_id,
    })
}

/// The store's remaining units against the stock and the rows: never
/// below zero, and never more than the rows leave.
fn remaining(sale: &SaleState, report: &mut SaleReport, keep: usize) {
    let rows = i64::try_from(sale.orders.len()).unwrap_or(i64::MAX);
    let remaining = sale.remaining;
    if remaining < 0 {
        report.oversold.add(keep, || {
            format!("sale {}: {remaining} units remain", sale.id)
        });
    } else if rows <= sale.stock && rows.saturating_add(remaining) > sale.stock {
        report.oversold.add(keep, || {
            format!(
                "sale {}: {rows} rows and {remaining} units remaining exceed the stock of {}",
                sale.id, sale.stock
            )
        });
    }
}
