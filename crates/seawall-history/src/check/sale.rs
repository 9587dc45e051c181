//! Time sales: no unit sold twice or beyond the stock, every acknowledged
//! order written, no row for an order that was refused.

use std::collections::{HashMap, HashSet};

use super::Options;
use super::rows::{self, Claim, Found, Row, Words};
use crate::history::{Call, Op};
use crate::report::SaleReport;
use crate::state::SaleState;

pub(super) fn check(ops: &[&Op], sales: Option<&[SaleState]>, options: &Options) -> SaleReport {
    let keep = options.examples;
    let mut report = SaleReport::default();
    for op in ops {
        report.orders.count(op.outcome);
    }
    let Some(sales) = sales else {
        return report;
    };
    let known: HashSet<i64> = sales.iter().map(|sale| sale.id).collect();
    for sale in sales {
        report.rows += sale.orders.len();
        oversold(sale, &mut report, keep);
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
        sales.iter().flat_map(|sale| {
            sale.orders.iter().map(|row| Row {
                group: sale.id,
                id: row.id.as_str(),
                slot: row.unit,
                user: row.user_id,
            })
        }),
        &Words {
            acknowledged: "order",
            row: "row",
            group: "sale",
            slot: "unit",
            all_failed: "every order of the user failed",
        },
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
            unrecorded: &mut report.unrecorded,
        },
    );
    report
}

/// Stock against rows and the store's remaining count, units, and the
/// per-user limit of one sale.
fn oversold(sale: &SaleState, report: &mut SaleReport, keep: usize) {
    let rows = i64::try_from(sale.orders.len()).unwrap_or(i64::MAX);
    if rows > sale.stock {
        report.oversold.add(keep, || {
            format!(
                "sale {}: {rows} rows for a stock of {}",
                sale.id, sale.stock
            )
        });
    }
    if let Some(remaining) = sale.remaining {
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
    let mut units = HashSet::new();
    let mut per_user: HashMap<i64, i64> = HashMap::new();
    for row in &sale.orders {
        if !(1..=sale.stock).contains(&row.unit) {
            report.oversold.add(keep, || {
                format!(
                    "sale {}: order {} holds unit {}, outside 1..={}",
                    sale.id, row.id, row.unit, sale.stock
                )
            });
        } else if !units.insert(row.unit) {
            report.oversold.add(keep, || {
                format!(
                    "sale {}: unit {} is held twice (again by order {})",
                    sale.id, row.unit, row.id
                )
            });
        }
        *per_user.entry(row.user_id).or_default() += 1;
    }
    let limit = sale.per_user.unwrap_or(1);
    let mut over: Vec<(i64, i64)> = per_user.into_iter().filter(|&(_, n)| n > limit).collect();
    over.sort_unstable();
    for (user, held) in over {
        report.over_per_user.add(keep, || {
            format!(
                "sale {}: user {user} has {held} orders, the limit is {limit}",
                sale.id
            )
        });
    }
}
