//! Time sales: no unit sold twice or beyond the stock, no user past the
//! per-user limit, every acknowledged order written once for its user, no
//! row for an order that was refused.

use super::options::Options;
use super::rows::{self, Claim, Found, Group, Matched, Row, Words};
use crate::history::{Call, Op};
use crate::report::{Findings, SaleReport};
use crate::state::SaleState;

pub(super) fn check(ops: &[&Op], sales: &[SaleState], options: &Options) -> SaleReport {
    let mut report = SaleReport::default();
    rows::check(
        ops,
        sales,
        options,
        Found {
            tally: &mut report.orders,
            rows: &mut report.rows,
            over: &mut report.oversold,
            over_per_user: &mut report.over_per_user,
            matched: Matched {
                acknowledged_missing: &mut report.acknowledged_missing,
                unacknowledged: &mut report.unacknowledged_written,
                failed: &mut report.failed_but_written,
                written_twice: &mut report.written_twice,
                unrecorded: &mut report.unrecorded,
            },
        },
    );
    report
}

impl Group for SaleState {
    const WORDS: Words = Words {
        row: "order",
        group: "sale",
        size: "stock",
        slot: "unit",
        all_failed: "every order of the user failed",
        no_such_group: " (the state has no such sale)",
    };

    fn id(&self) -> i64 {
        self.id
    }

    fn size(&self) -> i64 {
        self.stock
    }

    fn per_user(&self) -> i64 {
        self.per_user.unwrap_or(1)
    }

    fn rows(&self) -> impl ExactSizeIterator<Item = Row<'_>> + Clone {
        self.orders.iter().map(|row| Row {
            group: self.id,
            id: row.id.as_str(),
            slot: row.unit,
            user: row.user_id,
        })
    }

    fn claim(op: &Op) -> Option<Claim<'_>> {
        match &op.call {
            Call::Order {
                sale, user, order, ..
            } => Some(Claim {
                group: *sale,
                user: *user,
                id: order.as_deref(),
            }),
            _ => None,
        }
    }

    /// The store's remaining units against the stock and the rows: never
    /// below zero, and never more than the rows leave.
    fn judge_more(&self, oversold: &mut Findings, keep: usize) {
        let rows = i64::try_from(self.orders.len()).unwrap_or(i64::MAX);
        let remaining = self.remaining;
        if remaining < 0 {
            oversold.add(keep, || {
                format!("sale {}: {remaining} units remain", self.id)
            });
        } else if rows <= self.stock && rows.saturating_add(remaining) > self.stock {
            oversold.add(keep, || {
                format!(
                    "sale {}: {rows} rows and {remaining} units remaining exceed the stock of {}",
                    self.id, self.stock
                )
            });
        }
    }
}
