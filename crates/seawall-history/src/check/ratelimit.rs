//! Rate limiting across the fleet: per key, the most admissions that
//! certainly fell within one window's length, against the limit.
//!
//! A check is decided somewhere between its invoke and its `ok`, so the
//! checker counts, for every window of the limiter's length, only the
//! admitted checks whose whole interval lies inside it: a lower bound on
//! what the fleet admitted in that window, so a ratio above 1 is a real
//! excess over a sliding window (a fixed-window limiter may reach 2, at a
//! window's edge, without being wrong).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use super::options::Options;
use crate::history::{Call, Op, Outcome};
use crate::report::{LimiterKey, RateLimitReport};

/// One key's checks: how many, and the admitted ones' `[invoke, ok]`.
type Checks = (usize, Vec<(u64, u64)>);

pub(super) fn check(ops: &[&Op], options: &Options) -> RateLimitReport {
    let mut report = RateLimitReport::default();
    let mut keys: BTreeMap<(&str, u64, u64), Checks> = BTreeMap::new();
    for op in ops {
        report.checks.count(op.outcome);
        let Call::Check {
            key,
            limit,
            window_ms,
            admitted,
        } = &op.call
        else {
            continue;
        };
        let entry = keys.entry((key.as_str(), *limit, *window_ms)).or_default();
        entry.0 += 1;
        if let (Outcome::Ok(done), Some(true)) = (op.outcome, admitted) {
            entry.1.push((op.invoke, done));
        }
    }
    for ((key, limit, window_ms), (checks, mut admitted)) in keys {
        let most = most_in_window(&mut admitted, window_ms.saturating_mul(1000));
        #[allow(clippy::cast_precision_loss)] // counts far below 2^53
        let ratio = most as f64 / limit as f64;
        report.keys.push(LimiterKey {
            key: key.to_owned(),
            limit,
            window_ms,
            checks,
            admitted: admitted.len(),
            most_in_window: most,
            ratio,
        });
    }
    report
        .keys
        .sort_by(|a, b| b.ratio.total_cmp(&a.ratio).then_with(|| a.key.cmp(&b.key)));
    report.worst_ratio = report.keys.first().map_or(0.0, |key| key.ratio);
    for key in &report.keys {
        if key.ratio > options.rate_limit_multiple {
            report.over_limit.add(options.examples, || {
                format!(
                    "key {}: {} admitted within {} ms, limit {} (ratio {:.2}, allowed {:.2})",
                    key.key,
                    key.most_in_window,
                    key.window_ms,
                    key.limit,
                    key.ratio,
                    options.rate_limit_multiple
                )
            });
        }
    }
    report
}

/// The most intervals `[invoke, done]` that fit together inside one
/// half-open window `[s, s + window)`. The best `s` is some interval's
/// invoke, and only intervals invoked in `[s, s + window)` can fit; a sweep
/// over the invokes keeps those in a heap by their end, and counts the
/// ones whose end has passed under the window's end (which only grows).
fn most_in_window(intervals: &mut [(u64, u64)], window: u64) -> usize {
    intervals.sort_unstable();
    let mut pending: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    let mut counted = vec![false; intervals.len()];
    let mut left = vec![false; intervals.len()];
    let (mut inside, mut most, mut next) = (0_usize, 0_usize, 0_usize);
    for (first, &(start, _)) in intervals.iter().enumerate() {
        if let Some(previous) = first.checked_sub(1) {
            if counted[previous] {
                inside -= 1;
            } else {
                left[previous] = true;
            }
        }
        let end = start.saturating_add(window);
        while let Some(&(invoke, done)) = intervals.get(next)
            && invoke < end
        {
            pending.push(Reverse((done, next)));
            next += 1;
        }
        while let Some(&Reverse((done, index))) = pending.peek()
            && done < end
        {
            pending.pop();
            if !left[index] {
                counted[index] = true;
                inside += 1;
            }
        }
        most = most.max(inside);
    }
    most
}

#[cfg(test)]
mod tests {
    use super::most_in_window;

    #[test]
    fn counts_only_intervals_inside_one_window() {
        let mut intervals = vec![(0, 5), (3, 9), (9, 12), (10, 30)];
        assert_eq!(most_in_window(&mut intervals, 10), 2);
        assert_eq!(most_in_window(&mut intervals, 13), 3);
        assert_eq!(most_in_window(&mut intervals, 31), 4);
        assert_eq!(most_in_window(&mut [], 10), 0);
    }

    #[test]
    fn the_sweep_agrees_with_counting_every_window() {
        let mut state = 7_u64;
        let mut next = move |below: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 33) % below
        };
        for _ in 0..200 {
            let mut intervals: Vec<(u64, u64)> = (0..next(40))
                .map(|_| {
                    let invoke = next(100);
                    (invoke, invoke + next(30))
                })
                .collect();
            let window = 1 + next(50);
            let brute = intervals
                .iter()
                .map(|&(s, _)| {
                    intervals
                        .iter()
                        .filter(|&&(invoke, done)| invoke >= s && done < s + window)
                        .count()
                })
                .max()
                .unwrap_or(0);
            assert_eq!(most_in_window(&mut intervals, window), brute);
        }
    }
}
