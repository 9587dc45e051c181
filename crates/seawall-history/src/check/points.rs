//! Points: each ledger sums to its balance, no idempotency key applied
//! twice, no version written twice (a lost update), every acknowledged
//! change in the ledger, no refused one there.

use std::collections::{BTreeMap, HashMap};

use super::options::Options;
use crate::history::{Call, Op, Outcome};
use crate::report::PointsReport;
use crate::state::AccountState;

/// How the changes of one (user, key) ended, taken together.
#[derive(Default)]
struct Ended {
    ok: Option<u64>,
    info: bool,
    fail: bool,
}

pub(super) fn check(ops: &[&Op], accounts: &[AccountState], options: &Options) -> PointsReport {
    let keep = options.examples;
    let mut report = PointsReport::default();
    let mut by_key: BTreeMap<(i64, &str), Ended> = BTreeMap::new();
    for op in ops {
        report.changes.count(op.outcome);
        let Call::Change {
            user, key, amount, ..
        } = &op.call
        else {
            continue;
        };
        let Some(key) = key.as_deref() else {
            report.unkeyed.add(keep, || {
                format!(
                    "{} changed user {user} by {amount} without a key",
                    op.process
                )
            });
            continue;
        };
        let ended = by_key.entry((*user, key)).or_default();
        match op.outcome {
            Outcome::Ok(t) => ended.ok = Some(ended.ok.map_or(t, |first| first.min(t))),
            Outcome::Fail(_) => ended.fail = true,
            Outcome::Info(_) => ended.info = true,
        }
    }

    let mut ledgers: HashMap<(i64, &str), usize> = HashMap::new();
    for account in accounts {
        report.rows += account.ledger.len();
        let sum = account
            .ledger
            .iter()
            .fold(0_i64, |sum, row| sum.saturating_add(row.delta));
        if sum != account.balance {
            report.sum_mismatch.add(keep, || {
                format!(
                    "user {}: the ledger's {} rows sum to {sum}, the balance is {}",
                    account.user_id,
                    account.ledger.len(),
                    account.balance
                )
            });
        }
        let mut versions: BTreeMap<i64, usize> = BTreeMap::new();
        for row in &account.ledger {
            *versions.entry(row.version).or_default() += 1;
            if let Some(key) = row.idempotency_key.as_deref() {
                *ledgers.entry((account.user_id, key)).or_default() += 1;
            }
        }
        for (version, rows) in versions.into_iter().filter(|&(_, rows)| rows > 1) {
            report.lost_update.add(keep, || {
                format!(
                    "user {}: {rows} ledger rows took the account to version {version}",
                    account.user_id
                )
            });
        }
    }
    let mut ledger_keys: Vec<_> = ledgers.iter().collect();
    ledger_keys.sort_unstable();
    for (&(user, key), &times) in ledger_keys {
        if times > 1 {
            report.applied_twice.add(keep, || {
                format!("user {user}: key {key} is in the ledger {times} times")
            });
        }
        match by_key.get(&(user, key)) {
            Some(Ended { ok: Some(_), .. }) => {}
            Some(Ended { info: true, .. }) => report.unacknowledged_applied.add(keep, || {
                format!("user {user}: key {key}, whose change ended info")
            }),
            Some(Ended { fail: true, .. }) => report.failed_but_applied.add(keep, || {
                format!("user {user}: key {key} is in the ledger, but its every change failed")
            }),
            _ => report.unrecorded.add(keep, || {
                format!("user {user}: key {key}, changed by no recorded op")
            }),
        }
    }
    for (&(user, key), ended) in &by_key {
        if let Some(at) = ended.ok
            && !ledgers.contains_key(&(user, key))
        {
            report.acknowledged_missing.add(keep, || {
                format!(
                    "user {user}: key {key}, acknowledged at {}, is not in the ledger",
                    options.since(at)
                )
            });
        }
    }
    report
}
