//! Coupons: never beyond a campaign's quantity, never more to a user than
//! the per-user limit, every acknowledged coupon in the table once, for
//! its user.

use super::options::Options;
use super::rows::{self, Claim, Found, Group, Matched, Row, Words};
use crate::history::{Call, Op};
use crate::report::CouponReport;
use crate::state::CampaignState;

pub(super) fn check(ops: &[&Op], campaigns: &[CampaignState], options: &Options) -> CouponReport {
    let mut report = CouponReport::default();
    rows::check(
        ops,
        campaigns,
        options,
        Found {
            tally: &mut report.issues,
            rows: &mut report.rows,
            over: &mut report.over_issued,
            over_per_user: &mut report.duplicates,
            matched: Matched {
                acknowledged_missing: &mut report.acknowledged_missing,
                unacknowledged: &mut report.unacknowledged_issued,
                failed: &mut report.failed_but_issued,
                written_twice: &mut report.written_twice,
                unrecorded: &mut report.unrecorded,
            },
        },
    );
    report
}

impl Group for CampaignState {
    const WORDS: Words = Words {
        row: "coupon",
        group: "campaign",
        size: "quantity",
        slot: "number",
        all_failed: "every issue to the user failed",
        no_such_group: "",
    };

    fn id(&self) -> i64 {
        self.id
    }

    fn size(&self) -> i64 {
        self.quantity
    }

    fn per_user(&self) -> i64 {
        self.per_user.unwrap_or(1)
    }

    fn rows(&self) -> impl ExactSizeIterator<Item = Row<'_>> + Clone {
        self.coupons.iter().map(|row| Row {
            group: self.id,
            id: row.code.as_str(),
            slot: row.number,
            user: row.user_id,
        })
    }

    fn claim(op: &Op) -> Option<Claim<'_>> {
        match &op.call {
            Call::Issue {
                campaign,
                user,
                coupon,
                ..
            } => Some(Claim {
                group: *campaign,
                user: *user,
                id: coupon.as_deref(),
            }),
            _ => None,
        }
    }
}
