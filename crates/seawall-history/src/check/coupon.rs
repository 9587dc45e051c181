//! Coupons: never beyond a campaign's quantity, never more to a user than
//! the per-user limit, every acknowledged coupon in the table.

use std::collections::{HashMap, HashSet};

use super::Options;
use super::rows::{Origin, Origins};
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
    let mut issued: HashSet<(i64, &str)> = HashSet::new();
    for campaign in campaigns {
        report.rows += campaign.coupons.len();
        over_issued(campaign, &mut report, keep);
        issued.extend(
            campaign
                .coupons
                .iter()
                .map(|row| (campaign.id, row.code.as_str())),
        );
    }

    let mut acknowledged: HashSet<(i64, &str)> = HashSet::new();
    for op in ops {
        let Call::Issue {
            campaign,
            user,
            coupon,
            ..
        } = &op.call
        else {
            continue;
        };
        let Some(coupon) = coupon.as_deref().filter(|_| op.outcome.is_ok()) else {
            continue;
        };
        if acknowledged.insert((*campaign, coupon)) && !issued.contains(&(*campaign, coupon)) {
            report.acknowledged_missing.add(keep, || {
                format!(
                    "coupon {coupon} of campaign {campaign} for user {user}, acknowledged at {} by {}, has no row",
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
                Call::Issue { campaign, user, .. } => (*campaign, *user),
                _ => (0, 0),
            },
        );
    for campaign in campaigns {
        for row in &campaign.coupons {
            if acknowledged.contains(&(campaign.id, row.code.as_str())) {
                continue;
            }
            let describe = || {
                format!(
                    "coupon {} of campaign {} (number {}, user {})",
                    row.code, campaign.id, row.number, row.user_id
                )
            };
            match origins.of(campaign.id, row.user_id) {
                Origin::Info => report.unacknowledged_issued.add(keep, describe),
                Origin::Failed => report.failed_but_issued.add(keep, || {
                    format!("{}: every issue to the user failed", describe())
                }),
                Origin::Unrecorded => report.unrecorded.add(keep, describe),
            }
        }
    }
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
