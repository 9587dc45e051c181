//! Coupons: never beyond a campaign's quantity, never more to a user than
//! the per-user limit, every acknowledged coupon in the table.

use std::collections::{HashMap, HashSet};

use super::Options;
use super::rows::{self, Claim, Found, Row, Words};
use crate::history::{Call, Op};
use crate::report::CouponReport;
use crate::state::CampaignState;

pub(super) fn check(
    ops: &[&Op],
    campaigns: Option<&[CampaignState]>,
    options: &Options,
) -> CouponReport {
    let keep = options.examples;
    let mut report = CouponReport::default();
    for op in ops {
        report.issues.count(op.outcome);
    }
    let Some(campaigns) = campaigns else {
        return report;
    };
    for campaign in campaigns {
        report.rows += campaign.coupons.len();
        over_issued(campaign, &mut report, keep);
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
        campaigns.iter().flat_map(|campaign| {
            campaign.coupons.iter().map(|row| Row {
                group: campaign.id,
                id: row.code.as_str(),
                slot: row.number,
                user: row.user_id,
            })
        }),
        &Words {
            acknowledged: "coupon",
            row: "coupon",
            group: "campaign",
            slot: "number",
            all_failed: "every issue to the user failed",
        },
        |_| "",
        options,
        Found {
            acknowledged_missing: &mut report.acknowledged_missing,
            unacknowledged: &mut report.unacknowledged_issued,
            failed: &mut report.failed_but_issued,
            unrecorded: &mut report.unrecorded,
        },
    );
    report
}

/// Quantity, numbers and the per-user limit of one campaign.
fn over_issued(campaign: &CampaignState, report: &mut CouponReport, keep: usize) {
    let rows = i64::try_from(campaign.coupons.len()).unwrap_or(i64::MAX);
    if rows > campaign.quantity {
        report.over_issued.add(keep, || {
            format!(
                "campaign {}: {rows} coupons for a quantity of {}",
                campaign.id, campaign.quantity
            )
        });
    }
    let mut numbers = HashSet::new();
    let mut per_user: HashMap<i64, i64> = HashMap::new();
    for row in &campaign.coupons {
        if !(1..=campaign.quantity).contains(&row.number) {
            report.over_issued.add(keep, || {
                format!(
                    "campaign {}: coupon {} has number {}, outside 1..={}",
                    campaign.id, row.code, row.number, campaign.quantity
                )
            });
        } else if !numbers.insert(row.number) {
            report.over_issued.add(keep, || {
                format!(
                    "campaign {}: number {} is issued twice (again as {})",
                    campaign.id, row.number, row.code
                )
            });
        }
        *per_user.entry(row.user_id).or_default() += 1;
    }
    let limit = campaign.per_user.unwrap_or(1);
    let mut over: Vec<(i64, i64)> = per_user.into_iter().filter(|&(_, n)| n > limit).collect();
    over.sort_unstable();
    for (user, held) in over {
        report.duplicates.add(keep, || {
            format!(
                "campaign {}: user {user} holds {held} coupons, the limit is {limit}",
                campaign.id
            )
        });
    }
}
