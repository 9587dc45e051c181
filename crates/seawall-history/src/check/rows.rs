//! Matching acknowledged operations with the rows of the final state, and
//! rows that no `ok` answer names with the operations that may have
//! written them: sales and coupons share it.

use std::collections::{HashMap, HashSet};

use super::Options;
use crate::history::{Op, Outcome};
use crate::report::Findings;

/// What one operation of a row workload asked for and was answered.
pub(super) struct Claim<'a> {
    /// The sale or campaign.
    pub group: i64,
    /// The user.
    pub user: i64,
    /// The row's id the answer named (order id, coupon code), if any.
    pub id: Option<&'a str>,
}

/// One row of the final state.
pub(super) struct Row<'a> {
    /// The sale or campaign.
    pub group: i64,
    /// The row's id (order id, coupon code).
    pub id: &'a str,
    /// Its place in the group's stock (unit, number).
    pub slot: i64,
    /// The user.
    pub user: i64,
}

/// A workload's words for its findings.
pub(super) struct Words {
    /// What an acknowledged id is called (`order`, `coupon`).
    pub acknowledged: &'static str,
    /// What a row is called (`row`, `coupon`).
    pub row: &'static str,
    /// What a group is called (`sale`, `campaign`).
    pub group: &'static str,
    /// What a row's slot is called (`unit`, `number`).
    pub slot: &'static str,
    /// Said of a row whose every operation ended `fail`.
    pub all_failed: &'static str,
}

/// Where a workload's row findings go.
pub(super) struct Found<'r> {
    /// An `ok` answer's id with no row.
    pub acknowledged_missing: &'r mut Findings,
    /// A row an `info` operation may have written.
    pub unacknowledged: &'r mut Findings,
    /// A row whose every operation ended `fail`.
    pub failed: &'r mut Findings,
    /// A row no recorded operation is left to have written.
    pub unrecorded: &'r mut Findings,
}

/// Matches the ids of `ok` answers with the rows, and the rows no `ok`
/// answer names with the non-`ok` operations of their (group, user).
/// `claim` reads an op of the workload (`None` for any other); `note` adds
/// to a missing id's description, given its group.
pub(super) fn reconcile<'a>(
    ops: &[&'a Op],
    claim: impl Fn(&'a Op) -> Option<Claim<'a>>,
    rows: impl Iterator<Item = Row<'a>> + Clone,
    words: &Words,
    note: impl Fn(i64) -> &'static str,
    options: &Options,
    found: Found<'_>,
) {
    let Found {
        acknowledged_missing,
        unacknowledged,
        failed,
        unrecorded,
    } = found;
    let keep = options.examples;
    let written: HashSet<(i64, &str)> = rows.clone().map(|row| (row.group, row.id)).collect();

    let mut acknowledged: HashSet<(i64, &str)> = HashSet::new();
    for &op in ops {
        let Some(Claim { group, user, id }) = claim(op) else {
            continue;
        };
        let Some(id) = id.filter(|_| op.outcome.is_ok()) else {
            continue;
        };
        if !acknowledged.insert((group, id)) {
            continue; // a retry answered with the same id
        }
        if !written.contains(&(group, id)) {
            acknowledged_missing.add(keep, || {
                format!(
                    "{} {id} of {} {group} for user {user}, acknowledged at {} by {}, has no row{}",
                    words.acknowledged,
                    words.group,
                    options.since(op.outcome.at().unwrap_or(op.invoke)),
                    op.process,
                    note(group)
                )
            });
        }
    }

    let mut origins = Origins::new(ops.iter().copied().filter(|op| !op.outcome.is_ok()), |op| {
        claim(op).map_or((0, 0), |claim| (claim.group, claim.user))
    });
    for row in rows {
        if acknowledged.contains(&(row.group, row.id)) {
            continue;
        }
        let describe = || {
            format!(
                "{} {} of {} {} ({} {}, user {})",
                words.row, row.id, words.group, row.group, words.slot, row.slot, row.user
            )
        };
        match origins.of(row.group, row.user) {
            Origin::Info => unacknowledged.add(keep, describe),
            Origin::Failed => failed.add(keep, || format!("{}: {}", describe(), words.all_failed)),
            Origin::Unrecorded => unrecorded.add(keep, describe),
        }
    }
}

/// What the operations of one (sale or campaign, user) left unaccounted:
/// how many `info` ones may still have written a row, and whether any
/// ended `fail`.
#[derive(Default)]
struct Unacknowledged {
    info: usize,
    failed: bool,
}

/// Where a row no `ok` names came from.
enum Origin {
    /// An `info` operation of its (group, user) may have written it.
    Info,
    /// Every operation of its (group, user) that could have ended `fail`.
    Failed,
    /// No recorded operation of its (group, user) is left to have written it.
    Unrecorded,
}

/// The non-`ok` operations per (group, user), consumed one `info` per row.
struct Origins(HashMap<(i64, i64), Unacknowledged>);

impl Origins {
    /// `key` picks an op's (group, user).
    fn new<'a>(ops: impl Iterator<Item = &'a Op>, key: impl Fn(&'a Op) -> (i64, i64)) -> Self {
        let mut origins: HashMap<(i64, i64), Unacknowledged> = HashMap::new();
        for op in ops {
            let entry = origins.entry(key(op)).or_default();
            match op.outcome {
                Outcome::Ok(_) => {}
                Outcome::Fail(_) => entry.failed = true,
                Outcome::Info(_) => entry.info += 1,
            }
        }
        Self(origins)
    }

    /// Where an unacknowledged row of (group, user) came from.
    fn of(&mut self, group: i64, user: i64) -> Origin {
        match self.0.get_mut(&(group, user)) {
            Some(entry) if entry.info > 0 => {
                entry.info -= 1;
                Origin::Info
            }
            Some(entry) if entry.failed => Origin::Failed,
            _ => Origin::Unrecorded,
        }
    }
}
