//! What a limiter asks of its store, and the one decision procedure both
//! stores follow (the Redis script mirrors [`decide`]).

use smallvec::SmallVec;

use crate::algorithm::{Limit, State, Step};
use crate::name::same;

/// The rules of one check: interned names and limits, in order.
pub(crate) type Rules = [(&'static str, Limit)];

/// One step per rule, inline for the common quotas of one or two rules.
pub(crate) type Steps = SmallVec<[Step; 2]>;

/// What to do with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Decide on `cost` and consume it when admitted; a rejection blocks the
    /// key for `penalty_us` when that is not zero.
    Check { cost: u64, penalty_us: u64 },
    /// Report without consuming.
    Peek,
    /// Forget the key's state and any block.
    Reset,
    /// Block the key for this many microseconds.
    Block(u64),
    /// Lift the key's block.
    Unblock,
}

/// A store's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// One step per rule.
    pub(crate) steps: Steps,
    /// Microseconds the key stays blocked (0: not blocked).
    pub(crate) blocked_for_us: u64,
}

/// A key's states, one per rule, and its block.
#[derive(Debug, Clone, Default)]
pub(crate) struct Entry {
    /// States by rule name, inline for one rule; a rule whose algorithm
    /// changed starts afresh.
    pub(crate) states: SmallVec<[(&'static str, State); 1]>,
    /// Blocked until this time (µs on the store's clock); 0 when not blocked.
    pub(crate) blocked_until: u64,
    /// After this time the entry equals a fresh one and can be dropped.
    pub(crate) expires_at: u64,
}

impl Entry {
    fn state_for(&mut self, name: &'static str, limit: &Limit) -> &mut State {
        let index = match self.states.iter().position(|(n, _)| same(n, name)) {
            Some(index) => index,
            None => {
                self.states.push((name, limit.fresh_state()));
                self.states.len() - 1
            }
        };
        &mut self.states[index].1
    }
}

/// Applies `op` to `entry` at `now`: the procedure both stores follow. A
/// multi-rule check consumes in every rule or in none.
pub(crate) fn decide(entry: &mut Entry, rules: &Rules, now: u64, op: Op) -> Outcome {
    if let (Op::Check { cost, penalty_us }, [(name, limit)]) = (op, rules) {
        let (step, blocked_for_us) = check_one(entry, name, limit, now, cost, penalty_us);
        return Outcome {
            steps: smallvec::smallvec![step],
            blocked_for_us,
        };
    }
    if entry.expires_at <= now {
        *entry = Entry::default();
    }
    let mut blocked_for_us = entry.blocked_until.saturating_sub(now);
    let steps = match op {
        Op::Reset => {
            *entry = Entry::default();
            blocked_for_us = 0;
            peek(entry, rules, now)
        }
        Op::Unblock => {
            entry.blocked_until = 0;
            blocked_for_us = 0;
            peek(entry, rules, now)
        }
        Op::Block(duration) => {
            entry.blocked_until = now.saturating_add(duration);
            blocked_for_us = duration;
            peek(entry, rules, now)
        }
        Op::Peek => peek(entry, rules, now),
        Op::Check { cost, penalty_us } => {
            let trial = run(entry, rules, now, cost, false);
            let steps = if blocked_for_us == 0 && trial.iter().all(|step| step.allowed) {
                run(entry, rules, now, cost, true)
            } else {
                trial
            };
            let admitted = blocked_for_us == 0 && steps.iter().all(|step| step.allowed);
            if !admitted && blocked_for_us == 0 && penalty_us > 0 {
                entry.blocked_until = now.saturating_add(penalty_us);
                blocked_for_us = penalty_us;
            }
            steps
        }
    };
    let ttl = steps
        .iter()
        .map(|step| step.ttl)
        .max()
        .unwrap_or(0)
        .max(blocked_for_us);
    entry.expires_at = now.saturating_add(ttl);
    Outcome {
        steps,
        blocked_for_us,
    }
}

/// [`decide`] on a check of one rule, the common case, without a trial run
/// (one rule consumes only when it admits): its step, and how long the key
/// stays blocked.
#[inline]
pub(crate) fn check_one(
    entry: &mut Entry,
    name: &'static str,
    limit: &Limit,
    now: u64,
    cost: u64,
    penalty_us: u64,
) -> (Step, u64) {
    if entry.expires_at <= now {
        *entry = Entry::default();
    }
    let mut blocked_for_us = entry.blocked_until.saturating_sub(now);
    let step = limit.step(entry.state_for(name, limit), now, cost, blocked_for_us == 0);
    if blocked_for_us == 0 && !step.allowed && penalty_us > 0 {
        entry.blocked_until = now.saturating_add(penalty_us);
        blocked_for_us = penalty_us;
    }
    entry.expires_at = now.saturating_add(step.ttl.max(blocked_for_us));
    (step, blocked_for_us)
}

fn run(entry: &mut Entry, rules: &Rules, now: u64, cost: u64, commit: bool) -> Steps {
    rules
        .iter()
        .map(|(name, limit)| limit.step(entry.state_for(name, limit), now, cost, commit))
        .collect()
}

/// Numbers as they stand (cost 0); admitted and retry-after as a request of
/// one unit would get them.
fn peek(entry: &mut Entry, rules: &Rules, now: u64) -> Steps {
    rules
        .iter()
        .map(|(name, limit)| {
            let state = entry.state_for(name, limit);
            let one = limit.step(state, now, 1, false);
            let mut standing = limit.step(state, now, 0, false);
            standing.allowed = one.allowed;
            standing.retry_after = one.retry_after;
            standing
        })
        .collect()
}
