//! Time sales: no unit sold twice or beyond the stock, every acknowledged
//! order written, no row for an order that was refused.

use std::collections::{HashMap, HashSet};

use super::Options;
use super::rows::{Origin, Origins};
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
    let by_id: HashMap<i64, &SaleState> = sales.iter().map(|sale| (sale.id, sale)).collect();
    let mut written: HashSet<(i64, &str)> = HashSet::new();
    for sale in sales {
        report.rows += sale.orders.len();
        oversold(sale, &mut report, keep);
        written.extend(sale.orders.iter().map(|row| (sale.id, row.id.as_str())));
    }

    let mut acknowledged: HashSet<(i64, &str)> = HashSet::new();
    for op in ops {
        let Call::Order {
            sale, user, order, ..
        } = &op.call
        else {
            continue;
        };
        let Some(order) = order.as_deref().filter(|_| op.outcome.is_ok()) else {
            continue;
        };
        if !acknowledged.insert((*sale, order)) {
            continue; // a retry answered with the same order
        }
        if !written.contains(&(*sale, order)) {
            report.acknowledged_missing.add(keep, || {
                let known = if by_id.contains_key(sale) {
                    ""
                } else {
                    " (the state has no such sale)"
                };
                format!(
                    "order {order} of sale {sale} for user {user}, acknowledged at {} by {}, has no row{known}",
                    options.since(op.outcome.at().unwrap_or(op.invoke)),
                    op.process
                )
            });
        }
    }

    let mut origins =
        Origins::new(
            ops.iter().copied().filter(|op| !op.outcome.is_ok()),
            |op| match &op.call {
                Call::Order { sale, user, .. } => (*sale, *user),
                _ => (0, 0),
            },
        );
    for sale in sales {
        for row in &sale.orders {
            if acknowledged.contains(&(sale.id, row.id.as_str())) {
                continue;
            }
            let describe = || {
                format!(
                    "row {} of sale {} (unit {}, user {})",
                    row.id, sale.id, row.unit, row.user_id
                )
            };
            match origins.of(sale.id, row.user_id) {
                Origin::Info => report.unacknowledged_written.add(keep, describe),
                Origin::Failed => report.failed_but_written.add(keep, || {
                    format!("{}: every order of the user failed", describe())
                }),
                Origin::Unrecorded => report.unrecorded.add(keep, describe),
            }
        }
    }
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
