//! What a check answers: admitted or not, and everything the HTTP layer
//! needs for its headers.

use std::ops::Deref;
use std::time::Duration;

use smallvec::SmallVec;

use crate::algorithm::{Limit, Step};

/// One named limit's part of a decision (a quota of several windows has one
/// per window).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleDecision {
    /// The rule's name (`default` for a limiter with one limit), interned:
    /// one copy per process.
    pub name: &'static str,
    /// The limit.
    pub limit: Limit,
    /// Whether this rule alone would admit the request.
    pub allowed: bool,
    /// Units left after this decision.
    pub remaining: u64,
    /// Until the rule is back to its whole capacity.
    pub reset_after: Duration,
    /// Rejected by this rule: until the same cost would be admitted.
    pub retry_after: Option<Duration>,
}

/// A limiter's answer for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The limiter that decided (its name, interned: one copy per process).
    pub limiter: &'static str,
    /// Whether the request may go on. Always `true` in shadow mode; see
    /// [`Decision::would_reject`].
    pub allowed: bool,
    /// The capacity of the most constraining rule.
    pub limit: u64,
    /// Units left in the most constraining rule.
    pub remaining: u64,
    /// Until the most constraining rule is back to its whole capacity.
    pub reset_after: Duration,
    /// Rejected: until the same cost would be admitted by every rule (and the
    /// key's block has passed).
    pub retry_after: Option<Duration>,
    /// Admitted by a leaky queue: how long the caller should wait before it
    /// goes on ([`Limiter::acquire`](crate::Limiter::acquire) waits for it).
    pub wait: Duration,
    /// The key is blocked (a penalty or a manual block) for this long.
    pub blocked_for: Option<Duration>,
    /// A shadow-mode limiter would have rejected this request.
    pub would_reject: bool,
    /// The store was unreachable and the failure policy decided.
    pub degraded: bool,
    /// Each rule's part.
    pub rules: RuleDecisions,
}

/// Each rule's part of a [`Decision`], in the quota's order: a slice of
/// [`RuleDecision`]s, held inline (no allocation) for a limiter of one rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleDecisions(SmallVec<[RuleDecision; 1]>);

impl Deref for RuleDecisions {
    type Target = [RuleDecision];

    fn deref(&self) -> &[RuleDecision] {
        &self.0
    }
}

impl<'a> IntoIterator for &'a RuleDecisions {
    type Item = &'a RuleDecision;
    type IntoIter = std::slice::Iter<'a, RuleDecision>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl FromIterator<RuleDecision> for RuleDecisions {
    fn from_iter<I: IntoIterator<Item = RuleDecision>>(rules: I) -> Self {
        Self(rules.into_iter().collect())
    }
}

impl Decision {
    /// The decision of one rule's step.
    #[inline]
    pub(crate) fn single(
        limiter: &'static str,
        name: &'static str,
        limit: &Limit,
        step: &Step,
        blocked_for_us: u64,
    ) -> Self {
        let blocked = blocked_for_us > 0;
        let allowed = !blocked && step.allowed;
        let reset_after = Duration::from_micros(step.reset_after);
        let rule = RuleDecision {
            name,
            limit: *limit,
            allowed: step.allowed,
            remaining: step.remaining,
            reset_after,
            retry_after: (!step.allowed).then(|| Duration::from_micros(step.retry_after)),
        };
        Self {
            limiter,
            allowed,
            limit: limit.capacity(),
            remaining: if blocked { 0 } else { step.remaining },
            reset_after,
            retry_after: (!allowed).then(|| {
                let rule_retry = if step.allowed { 0 } else { step.retry_after };
                Duration::from_micros(rule_retry.max(blocked_for_us))
            }),
            wait: Duration::from_micros(step.wait),
            blocked_for: blocked.then(|| Duration::from_micros(blocked_for_us)),
            would_reject: false,
            degraded: false,
            rules: RuleDecisions(SmallVec::from_buf([rule])),
        }
    }

    /// Combines the rules' steps: admitted when every rule admits and the key
    /// is not blocked; the numbers are those of the rule with the fewest
    /// units left.
    #[inline]
    pub(crate) fn combine(
        limiter: &'static str,
        rules: &[(&'static str, Limit)],
        steps: &[Step],
        blocked_for_us: u64,
    ) -> Self {
        if let ([(name, limit)], [step]) = (rules, steps) {
            return Self::single(limiter, name, limit, step, blocked_for_us);
        }
        let blocked = blocked_for_us > 0;
        let mut allowed = !blocked;
        let mut retry_after_us = blocked_for_us;
        let mut wait_us = 0;
        // The most constraining rule: fewest units left, then longest reset.
        let mut tightest: Option<(&Limit, &Step)> = None;
        let mut rule_decisions = SmallVec::new();
        for (&(name, ref limit), step) in rules.iter().zip(steps) {
            rule_decisions.push(RuleDecision {
                name,
                limit: *limit,
                allowed: step.allowed,
                remaining: step.remaining,
                reset_after: Duration::from_micros(step.reset_after),
                retry_after: (!step.allowed).then(|| Duration::from_micros(step.retry_after)),
            });
            allowed &= step.allowed;
            if !step.allowed {
                retry_after_us = retry_after_us.max(step.retry_after);
            }
            wait_us = wait_us.max(step.wait);
            if tightest.is_none_or(|(_, tight)| {
                (step.remaining, std::cmp::Reverse(step.reset_after))
                    < (tight.remaining, std::cmp::Reverse(tight.reset_after))
            }) {
                tightest = Some((limit, step));
            }
        }
        Self {
            limiter,
            allowed,
            limit: tightest.map_or(0, |(limit, _)| limit.capacity()),
            remaining: match tightest {
                Some((_, step)) if !blocked => step.remaining,
                _ => 0,
            },
            reset_after: tightest.map_or(Duration::ZERO, |(_, step)| {
                Duration::from_micros(step.reset_after)
            }),
            retry_after: (!allowed).then(|| Duration::from_micros(retry_after_us)),
            wait: Duration::from_micros(wait_us),
            blocked_for: blocked.then(|| Duration::from_micros(blocked_for_us)),
            would_reject: false,
            degraded: false,
            rules: RuleDecisions(rule_decisions),
        }
    }
}
