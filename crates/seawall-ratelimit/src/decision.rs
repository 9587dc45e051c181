//! What a check answers: admitted or not, and everything the HTTP layer
//! needs for its headers.

use std::sync::Arc;
use std::time::Duration;

use crate::algorithm::{Limit, Step};

/// One named limit's part of a decision (a quota of several windows has one
/// per window).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleDecision {
    /// The rule's name (`default` for a limiter with one limit).
    pub name: Arc<str>,
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
    /// The limiter that decided.
    pub limiter: Arc<str>,
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
    pub rules: Vec<RuleDecision>,
}

impl Decision {
    /// Combines the rules' steps: admitted when every rule admits and the key
    /// is not blocked; the numbers are those of the rule with the fewest
    /// units left.
    pub(crate) fn combine(
        limiter: &Arc<str>,
        rules: &[(Arc<str>, Limit)],
        steps: &[Step],
        blocked_for_us: u64,
    ) -> Self {
        let rule_decisions: Vec<RuleDecision> = rules
            .iter()
            .zip(steps)
            .map(|((name, limit), step)| RuleDecision {
                name: name.clone(),
                limit: *limit,
                allowed: step.allowed,
                remaining: step.remaining,
                reset_after: Duration::from_micros(step.reset_after),
                retry_after: (!step.allowed).then(|| Duration::from_micros(step.retry_after)),
            })
            .collect();
        let blocked = blocked_for_us > 0;
        let allowed = !blocked && steps.iter().all(|step| step.allowed);
        let tightest = rule_decisions
            .iter()
            .min_by_key(|rule| (rule.remaining, std::cmp::Reverse(rule.reset_after)));
        let retry_after = if allowed {
            None
        } else {
            let rules_retry = steps
                .iter()
                .filter(|step| !step.allowed)
                .map(|step| step.retry_after)
                .max()
                .unwrap_or(0);
            Some(Duration::from_micros(rules_retry.max(blocked_for_us)))
        };
        Self {
            limiter: limiter.clone(),
            allowed,
            limit: tightest.map_or(0, |rule| rule.limit.capacity()),
            remaining: if blocked {
                0
            } else {
                tightest.map_or(0, |rule| rule.remaining)
            },
            reset_after: tightest.map_or(Duration::ZERO, |rule| rule.reset_after),
            retry_after,
            wait: Duration::from_micros(steps.iter().map(|step| step.wait).max().unwrap_or(0)),
            blocked_for: blocked.then(|| Duration::from_micros(blocked_for_us)),
            would_reject: false,
            degraded: false,
            rules: rule_decisions,
        }
    }
}
