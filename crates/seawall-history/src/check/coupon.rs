//! Coupons: never beyond a campaign's quantity, never more to a user than
//! the per-user limit, every acknowledged coupon in the table once, for
//! its user.

use super::Options;
use super::rows::{self, Claim, Found, Row, Words};
use crate::history::{Call, Op};
use crate::report::CouponReport;
use crate::state::CampaignState;

const WORDS: Words = Words {
    row: "coupon",
    group: "campaign",
    size: "quantity",
    slot: "number",
    all_failed: "every issue to the user failed",
};

pub(super) fn check(ops: &[&Op], campaigns: &[CampaignState], options: &Options) -> CouponReport {
    let keep = options.examples;
    let mut report = CouponReport::default();
    for op in ops {
        report.issues.count(op.outcome);
    }
    for campaign in campaigns {
        report.rows += campaign.coupons.len();
        rows::issued_once(
            campaign.id,
            campaign.quantity,
            campaign.per_user.unwrap_or(1),
            rows_of(campaign),
            &WORDS,
            keep,
            &mut report.over_issued,
            &mut report.duplicates,
        );
    }
    rows::reconcile(
        ops,
        |op| match &op.call {
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
        },
        campaigns.iter().flat_map(rows_of),
        &WORDS,
        |_| "",
        options,
        Found {
            acknowledged_missing: &mut report.acknowledged_missing,
            unacknowledged: &mut report.unacknowledged_issued,
            failed: &mut report.failed_but_issued,
            written_twice: &mut report.written_twice,
            unrecorded: &mut report.unrecorded,
        },
    );
    report
}

fn rows_of(campaign: &CampaignState) -> impl ExactSizeIterator<Item = Row<'_>> + Clone {
    campaign.coupons.iter().map(|row| Row {
        group: campaign.id,
        id: row.code.as_str(),
        slot: row.number,
        user: row.user_id,
    })
}
