//! Rows of numbered units that operations claim, one unit per row: a
//! sale's orders and a campaign's coupons. [`check`] judges such a
//! workload: the rows of each group against its size and per-user limit,
//! and the acknowledged operations against the rows (each row matched with
//! the one operation of its user that may have written it).

use std::collections::{HashMap, HashSet};

use super::options::Options;
use crate::history::{Op, Outcome};
use crate::report::{Findings, Tally};

/// A group of numbered units (a sale, a campaign), as [`check`] reads it.
pub(super) trait Group {
    /// The workload's words for its findings.
    const WORDS: Words;
    /// The group's id.
    fn id(&self) -> i64;
    /// How many units it has (stock, quantity).
    fn size(&self) -> i64;
    /// How many rows one user may hold.
    fn per_user(&self) -> i64;
    /// Its rows.
    fn rows(&self) -> impl ExactSizeIterator<Item = Row<'_>> + Clone;
    /// What an operation of the workload asked for and was answered
    /// (`None` for any other operation).
    fn claim(op: &Op) -> Option<Claim<'_>>;
    /// What the group says beyond its rows, judged against them; what is
    /// wrong goes to `over`. Nothing by default.
    fn judge_more(&self, over: &mut Findings, keep: usize) {
        let _ = (over, keep);
    }
}

/// Judges a workload of numbered units: counts how its operations ended
/// and its rows, checks each group's rows against its size and per-user
/// limit ([`Group::judge_more`] first), then matches the operations with
/// the rows.
pub(super) fn check<'a, G: Group>(
    ops: &[&'a Op],
    groups: &'a [G],
    options: &Options,
    found: Found<'_>,
) {
    let Found {
        tally,
        rows,
        over,
        over_per_user,
        matched,
    } = found;
    let keep = options.examples;
    for op in ops {
        tally.count(op.outcome);
    }
    for group in groups {
        *rows += group.rows().len();
        group.judge_more(over, keep);
        issued_once(group, keep, over, over_per_user);
    }
    reconcile(ops, groups, options, matched);
}

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
#[derive(Clone, Copy)]
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
    /// What a row is called (`order`, `coupon`).
    pub row: &'static str,
    /// What a group is called (`sale`, `campaign`).
    pub group: &'static str,
    /// What a group's size is called (`stock`, `quantity`).
    pub size: &'static str,
    /// What a row's slot is called (`unit`, `number`).
    pub slot: &'static str,
    /// Said of a row whose every operation ended `fail`.
    pub all_failed: &'static str,
    /// Added to an acknowledged id that has no row when the state has no
    /// such group (empty for none).
    pub no_such_group: &'static str,
}

/// One group's rows against its size and per-user limit: no more rows
/// than the size, every slot within `1..=size` and held by one row, no
/// user holding more rows than the limit. Slots go to `over`, users to
/// `over_per_user`.
fn issued_once<G: Group>(
    group: &G,
    keep: usize,
    over: &mut Findings,
    over_per_user: &mut Findings,
) {
    let Words {
        row: noun,
        group: group_noun,
        size: size_noun,
        slot: slot_noun,
        ..
    } = G::WORDS;
    let (size, per_user) = (group.size(), group.per_user());
    let rows = group.rows();
    let group = group.id();
    let count = i64::try_from(rows.len()).unwrap_or(i64::MAX);
    if count > size {
        over.add(keep, || {
            format!("{group_noun} {group}: {count} {noun}s for a {size_noun} of {size}")
        });
    }
    let mut slots = HashSet::new();
    let mut held: HashMap<i64, i64> = HashMap::new();
    for row in rows {
        if !(1..=size).contains(&row.slot) {
            over.add(keep, || {
                format!(
                    "{group_noun} {group}: {noun} {} holds {slot_noun} {}, outside 1..={size}",
                    row.id, row.slot
                )
            });
        } else if !slots.insert(row.slot) {
            over.add(keep, || {
                format!(
                    "{group_noun} {group}: {slot_noun} {} is held twice (again by {noun} {})",
                    row.slot, row.id
                )
            });
        }
        *held.entry(row.user).or_default() += 1;
    }
    let mut above: Vec<(i64, i64)> = held.into_iter().filter(|&(_, n)| n > per_user).collect();
    above.sort_unstable();
    for (user, n) in above {
        over_per_user.add(keep, || {
            format!("{group_noun} {group}: user {user} holds {n} {noun}s, the limit is {per_user}")
        });
    }
}

/// Where a workload's findings go.
pub(super) struct Found<'r> {
    /// How its operations ended.
    pub tally: &'r mut Tally,
    /// Its rows.
    pub rows: &'r mut usize,
    /// More rows than a group's size, or a slot held twice or out of
    /// range (and what [`Group::judge_more`] finds).
    pub over: &'r mut Findings,
    /// A user holding more rows than the per-user limit.
    pub over_per_user: &'r mut Findings,
    /// The operations against the rows.
    pub matched: Matched<'r>,
}

/// Where the findings of matching operations with rows go.
pub(super) struct Matched<'r> {
    /// An `ok` answer's id with no row of its user.
    pub acknowledged_missing: &'r mut Findings,
    /// A row an `info` operation may have written.
    pub unacknowledged: &'r mut Findings,
    /// A row whose every operation ended `fail`.
    pub failed: &'r mut Findings,
    /// A row beyond those its user's operations account for, of a user
    /// with an acknowledged one, or a row id held twice.
    pub written_twice: &'r mut Findings,
    /// A row of a user no recorded operation names.
    pub unrecorded: &'r mut Findings,
}

/// Matches the ids of `ok` answers with the rows of their (group, user),
/// and the rows no `ok` answer names with the non-`ok` operations of their
/// (group, user), one `info` operation per row.
fn reconcile<'a, G: Group>(ops: &[&'a Op], groups: &'a [G], options: &Options, found: Matched<'_>) {
    let Matched {
        acknowledged_missing,
        unacknowledged,
        failed,
        written_twice,
        unrecorded,
    } = found;
    let words = &G::WORDS;
    let claim = G::claim;
    let rows = groups.iter().flat_map(G::rows);
    let known: HashSet<i64> = groups.iter().map(G::id).collect();
    let note = |group| {
        if known.contains(&group) {
            ""
        } else {
            words.no_such_group
        }
    };
    let keep = options.examples;
    // (group, id) → the users of the rows with that id (one, unless the
    // id is held twice).
    let mut written: HashMap<(i64, &str), Vec<i64>> = HashMap::new();
    for row in rows.clone() {
        written
            .entry((row.group, row.id))
            .or_default()
            .push(row.user);
    }

    let mut acknowledged: HashSet<(i64, &str, i64)> = HashSet::new();
    let mut answered: HashSet<(i64, i64)> = HashSet::new();
    for &op in ops {
        let Some(Claim { group, user, id }) = claim(op) else {
            continue;
        };
        let Some(id) = id.filter(|_| op.outcome.is_ok()) else {
            continue;
        };
        answered.insert((group, user));
        if !acknowledged.insert((group, id, user)) {
            continue; // a retry answered with the same id
        }
        let holders = written.get(&(group, id));
        if holders.is_some_and(|users| users.contains(&user)) {
            continue;
        }
        acknowledged_missing.add(keep, || {
            let whose = holders.map_or_else(
                || note(group).to_owned(),
                |users| format!(" (its row holds user {})", users[0]),
            );
            format!(
                "{} {id} of {} {group} for user {user}, acknowledged at {} by {}, has no row{whose}",
                words.row,
                words.group,
                options.since(op.outcome.at().unwrap_or(op.invoke)),
                op.process,
            )
        });
    }

    let mut origins = Origins::new(ops.iter().copied().filter(|op| !op.outcome.is_ok()), |op| {
        claim(op).map_or((0, 0), |claim| (claim.group, claim.user))
    });
    let mut seen: HashSet<(i64, &str)> = HashSet::new();
    for row in rows {
        let describe = || {
            format!(
                "{} {} of {} {} ({} {}, user {})",
                words.row, row.id, words.group, row.group, words.slot, row.slot, row.user
            )
        };
        if !seen.insert((row.group, row.id)) {
            written_twice.add(keep, || format!("{}: its id is held twice", describe()));
            continue;
        }
        if acknowledged.contains(&(row.group, row.id, row.user)) {
            continue;
        }
        match origins.of(row.group, row.user) {
            Origin::Info => unacknowledged.add(keep, describe),
            // Every operation of the user is accounted for and one was
            // acknowledged with another row: this one repeats it.
            _ if answered.contains(&(row.group, row.user)) => written_twice.add(keep, || {
                format!(
                    "{}: beyond the {}s acknowledged to the user",
                    describe(),
                    words.row
                )
            }),
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
