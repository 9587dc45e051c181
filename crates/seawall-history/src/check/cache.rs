//! The cache as one register per key whose versions only grow: a read may
//! return an older version than the newest acknowledged write only within
//! the propagation window after that write's `ok`.

use std::collections::BTreeMap;

use super::options::{Options, micros_as_ms};
use crate::error::{Error, Result};
use crate::history::{Call, Op, Outcome};
use crate::report::CacheReport;

/// One key's writes.
#[derive(Default)]
struct Key {
    /// Acknowledged writes as (version, ok time), by version.
    acked: Vec<(i64, u64)>,
    /// `suffix_first_ok[i]`: the earliest ok among `acked[i..]`.
    suffix_first_ok: Vec<u64>,
    /// Every version written, with the earliest invoke of a write of it
    /// that did not fail (`None`: only failed writes wrote it).
    written: BTreeMap<i64, Option<u64>>,
}

pub(super) fn check(
    ops: &[&Op],
    finals: &BTreeMap<String, Option<i64>>,
    options: &Options,
) -> Result<CacheReport> {
    let keep = options.examples;
    let window = u64::try_from(options.stale_window.as_micros()).unwrap_or(u64::MAX);
    let mut report = CacheReport::default();
    let mut keys: BTreeMap<&str, Key> = BTreeMap::new();
    for op in ops {
        let Call::Write { key, value } = &op.call else {
            continue;
        };
        report.writes.count(op.outcome);
        let entry = keys.entry(key.as_str()).or_default();
        let invoked = entry.written.entry(*value).or_insert(None);
        if !op.outcome.is_fail() {
            *invoked = Some(invoked.map_or(op.invoke, |t| t.min(op.invoke)));
        }
        if let Outcome::Ok(done) = op.outcome {
            entry.acked.push((*value, done));
        }
    }
    for entry in keys.values_mut() {
        entry.acked.sort_unstable();
        let mut first = u64::MAX;
        entry.suffix_first_ok = entry
            .acked
            .iter()
            .rev()
            .map(|&(_, done)| {
                first = first.min(done);
                first
            })
            .collect();
        entry.suffix_first_ok.reverse();
    }

    let mut longest = 0_u64;
    for op in ops {
        let Call::Read { key, value } = &op.call else {
            continue;
        };
        report.reads.count(op.outcome);
        let Outcome::Ok(done) = op.outcome else {
            continue;
        };
        let Some(entry) = keys.get(key.as_str()) else {
            if let Some(version) = value {
                report.impossible.add(keep, || {
                    format!("{} read {key} = {version}, never written", op.process)
                });
            }
            continue;
        };
        if let Some(version) = value {
            let problem = match entry.written.get(version) {
                None => Some("never written"),
                Some(None) => Some("written only by failed writes"),
                Some(Some(invoked)) if *invoked > done => Some("written only after the read"),
                Some(Some(_)) => None,
            };
            if let Some(problem) = problem {
                report.impossible.add(keep, || {
                    format!(
                        "{} read {key} = {version} at {}, {problem}",
                        op.process,
                        options.since(op.invoke)
                    )
                });
            }
        }
        // The first acknowledged write of a newer version than the read's.
        let newer = entry
            .acked
            .partition_point(|&(written, _)| value.is_some_and(|read| written <= read));
        let Some(&superseded) = entry.suffix_first_ok.get(newer) else {
            continue;
        };
        let age = op.invoke.saturating_sub(superseded);
        if superseded < op.invoke && age > window {
            longest = longest.max(age);
            report.stale.add(keep, || {
                let read = value.map_or_else(|| "nothing".to_owned(), |v| v.to_string());
                format!(
                    "{} read {key} = {read} at {}, {:.3} ms after a newer version's ok",
                    op.process,
                    options.since(op.invoke),
                    micros_as_ms(age)
                )
            });
        }
    }
    report.longest_stale_ms = micros_as_ms(longest);

    for (key, entry) in &keys {
        let Some(&last) = finals.get(*key) else {
            return Err(Error::Incomplete {
                what: format!("final version of cache key {key}"),
            });
        };
        let Some(&(newest, _)) = entry.acked.last() else {
            continue;
        };
        if last.is_none_or(|last| last < newest) {
            report.lost_writes.add(keep, || {
                let last = last.map_or_else(|| "nothing".to_owned(), |v| v.to_string());
                format!("{key} ends at {last}, but {newest} was acknowledged")
            });
        }
    }
    Ok(report)
}
