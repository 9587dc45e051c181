//! The limiter: a named quota of one or more rules on a store, with
//! penalties, shadow mode and a policy for when the store fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;

use crate::algorithm::{Limit, Step};
use crate::decision::Decision;
use crate::error::{Error, Result};
use crate::memory::MemoryStore;
use crate::name::intern;
use crate::policy::FailurePolicy;
use crate::redis::RedisStore;
use crate::store::{Op, Outcome, Rules, check_one};
use crate::telemetry::{BlockedKey, DecisionCounts, HeavyCaller, RejectedKey, Telemetry};

/// The longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 512;

/// The longest duration the crate keeps: a block, a penalty, a lease time
/// or a store's timeout asked for longer is this long (a century, "for
/// good" in practice), and no state is kept longer (a sliding window's
/// counts matter for two windows, which for a window of over fifty years
/// would be longer). It keeps every time on Redis an exact integer in
/// Lua and every expiry positive.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The most rules a quota holds.
pub const MAX_RULES: usize = 64;

/// What every limiter does: decide, look, forget. Object safe, so a service
/// can hold `Arc<dyn RateLimiter>` whatever the algorithm and store.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Decides on a request of `cost` units for `key`, consuming them when
    /// admitted. A rejected request consumes nothing.
    async fn check(&self, key: &str, cost: u64) -> Result<Decision>;

    /// Reports where `key` stands without consuming anything: `allowed` says
    /// whether a request of one unit would be admitted now.
    async fn peek(&self, key: &str) -> Result<Decision>;

    /// Forgets everything about `key`: its counters and any block.
    async fn reset(&self, key: &str) -> Result<()>;
}

/// The rules a limiter checks together: all consume or none does. One rule
/// is the common case; a tenant quota has several (per minute, hour, day).
///
/// ```
/// use std::time::Duration;
/// use seawall_ratelimit::{Limit, Quota};
///
/// let minute = Duration::from_secs(60);
/// let quota = Quota::builder()
///     .rule("minute", Limit::sliding_window(60, minute)?)?
///     .rule("hour", Limit::sliding_window(1_000, 60 * minute)?)?
///     .rule("day", Limit::fixed_window(10_000, 24 * 60 * minute)?)?
///     .build()?;
/// assert_eq!(quota.rules().count(), 3);
/// # Ok::<(), seawall_ratelimit::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota(Arc<Rules>);

impl Quota {
    /// One rule, named `default`.
    pub fn single(limit: Limit) -> Self {
        Self(Arc::from([(intern("default"), limit)]))
    }

    /// A builder for named rules.
    pub fn builder() -> QuotaBuilder {
        QuotaBuilder::default()
    }

    /// The rules, in order.
    pub fn rules(&self) -> impl Iterator<Item = (&str, &Limit)> {
        self.0.iter().map(|(name, limit)| (*name, limit))
    }

    /// The most any one request may cost: the smallest of the rules'
    /// [`Limit::max_cost`].
    pub fn max_cost(&self) -> u64 {
        self.0
            .iter()
            .map(|(_, limit)| limit.max_cost())
            .min()
            .unwrap_or(0)
    }

    /// This quota divided among `instances`: each rule's rate and capacity
    /// divided, at least one. An instance that decides alone while its store
    /// is down then admits about its share.
    pub fn share(&self, instances: u32) -> Result<Self> {
        let instances = u64::from(instances.max(1));
        let rules = self
            .0
            .iter()
            .map(|&(name, limit)| Ok((name, limit.divided(instances)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self(Arc::from(rules)))
    }

    /// This quota with every rule [scaled](Limit::scaled) by `factor`, from
    /// 0 (exclusive) to 1; rule names stay, so a limiter keeps each rule's
    /// state across the change.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLimit`] when `factor` is not in (0, 1].
    pub fn scaled(&self, factor: f64) -> Result<Self> {
        if factor == 1.0 {
            return Ok(self.clone());
        }
        let rules = self
            .0
            .iter()
            .map(|&(name, limit)| Ok((name, limit.scaled(factor)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self(Arc::from(rules)))
    }

    pub(crate) fn as_rules(&self) -> &Rules {
        &self.0
    }
}

impl From<Limit> for Quota {
    fn from(limit: Limit) -> Self {
        Self::single(limit)
    }
}

/// Builds a [`Quota`].
#[derive(Debug, Default)]
pub struct QuotaBuilder {
    rules: Vec<(&'static str, Limit)>,
}

impl QuotaBuilder {
    /// Adds a rule. Names are 1 to 64 of `A-Z a-z 0-9 _ . -` and unique; a
    /// quota holds at most [`MAX_RULES`].
    pub fn rule(mut self, name: &str, limit: Limit) -> Result<Self> {
        check_name("rule", name)?;
        if self.rules.len() >= MAX_RULES {
            return Err(Error::InvalidConfig(format!(
                "a quota holds at most {MAX_RULES} rules"
            )));
        }
        if self.rules.iter().any(|(n, _)| *n == name) {
            return Err(Error::InvalidConfig(format!(
                "two rules are named {name:?}"
            )));
        }
        self.rules.push((intern(name), limit));
        Ok(self)
    }

    /// The quota; at least one rule.
    pub fn build(self) -> Result<Quota> {
        if self.rules.is_empty() {
            return Err(Error::InvalidConfig(
                "a quota needs at least one rule".into(),
            ));
        }
        Ok(Quota(Arc::from(self.rules)))
    }
}

pub(crate) fn check_name(what: &str, name: &str) -> Result<()> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "a {what} name is 1 to 64 of A-Z a-z 0-9 _ . -, not {name:?}"
        )))
    }
}

/// Where a limiter keeps its state.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Store {
    /// In this process.
    Memory(MemoryStore),
    /// In Redis, shared by every instance.
    Redis(RedisStore),
}

impl From<MemoryStore> for Store {
    fn from(store: MemoryStore) -> Self {
        Self::Memory(store)
    }
}

impl From<RedisStore> for Store {
    fn from(store: RedisStore) -> Self {
        Self::Redis(store)
    }
}

/// A rate limiter: a quota checked on a store.
///
/// ```
/// use std::time::Duration;
/// use seawall_ratelimit::{Limit, Limiter, MemoryStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), seawall_ratelimit::Error> {
/// let limiter = Limiter::builder("login")
///     .limit(Limit::gcra(5, Duration::from_secs(60), 5)?)
///     .penalty(Duration::from_secs(15 * 60))
///     .store(MemoryStore::new())
///     .build()?;
/// for _ in 0..5 {
///     assert!(limiter.check("alice", 1).await?.allowed);
/// }
/// let sixth = limiter.check("alice", 1).await?;
/// assert!(!sixth.allowed);
/// assert!(sixth.retry_after.is_some_and(|retry| retry >= Duration::from_secs(15 * 60)));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: &'static str,
    /// The quota the limiter was built with, read while it is unchanged.
    built_quota: Quota,
    /// Whether [`Limiter::set_quota`] or [`Limiter::set_scale`] has
    /// replaced `built_quota`.
    quota_replaced: AtomicBool,
    /// The quota as set, before the scale, and the scale: changed together.
    set: Mutex<(Quota, f64)>,
    /// The scale's bits, read on every [`Limiter::check_quota`].
    scale: AtomicU64,
    /// The quota checked now; read through a guard, without a lock or a
    /// shared reference count.
    quota: ArcSwap<Quota>,
    store: Store,
    penalty_us: u64,
    shadow: AtomicBool,
    policy: FailurePolicy,
    insurance: Option<MemoryStore>,
    telemetry: Telemetry,
}

impl Limiter {
    /// A builder for a limiter named `name` (1 to 64 of `A-Z a-z 0-9 _ . -`;
    /// it names the limiter in keys and metrics). Limiter and rule names are
    /// kept once per process for its whole life, so decisions carry them
    /// without reference counting; a service uses a bounded set of names.
    pub fn builder(name: &str) -> LimiterBuilder {
        LimiterBuilder {
            name: name.to_owned(),
            quota: None,
            store: None,
            penalty: Duration::ZERO,
            shadow: false,
            policy: FailurePolicy::default(),
            monitor: None,
        }
    }

    /// The limiter's name.
    pub fn name(&self) -> &str {
        self.inner.name
    }

    /// The quota checked now: the one set, [scaled](Self::set_scale). To
    /// change the quota, build the new one from your configuration rather
    /// than from this, which a scale below 1 has already shrunk.
    pub fn quota(&self) -> Quota {
        Quota::clone(&self.inner.quota.load())
    }

    /// The most one request may cost under the quota checked now (its
    /// [`Quota::max_cost`]); a check of more is refused as an error.
    pub fn max_cost(&self) -> u64 {
        self.inner.quota.load().max_cost()
    }

    /// Replaces the quota; the next check uses it, scaled by the
    /// limiter's [scale](Self::set_scale). State is kept per rule
    /// name, so a rule that keeps its name and algorithm keeps its state:
    /// the windows their counts; GCRA, the leaky queue and the buckets the
    /// time their backlog is worked off, so a changed rate keeps that time
    /// rather than the units spent. A rule whose algorithm changed starts
    /// afresh.
    pub fn set_quota(&self, quota: impl Into<Quota>) {
        let mut set = self.inner.set.lock();
        set.0 = quota.into();
        self.apply(&set);
    }

    /// The share of its quota the limiter admits now, from 0 (exclusive)
    /// to 1; 1 unless [`set_scale`](Self::set_scale) changed it.
    pub fn scale(&self) -> f64 {
        f64::from_bits(self.inner.scale.load(Ordering::Acquire))
    }

    /// Admits `factor` of the quota, from 0 (exclusive) to 1: every rule's
    /// rate and capacity [scaled](Limit::scaled), its own quota's and the
    /// one each [`check_quota`](Self::check_quota) names; 1 admits the
    /// whole quota again. State is kept, as [`set_quota`](Self::set_quota)
    /// keeps it, so a key that already spent more than the scaled limit is
    /// refused until its use falls below it. A check that costs more than a
    /// scaled rule's capacity is [`Error::CostTooHigh`], as it is against
    /// a smaller quota. [`Tightening`](crate::Tightening) sets it from the
    /// service's health. Setting the scale it already has changes nothing.
    ///
    /// ```
    /// use std::time::Duration;
    /// use seawall_ratelimit::{Limit, Limiter};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), seawall_ratelimit::Error> {
    /// let api = Limiter::builder("api")
    ///     .limit(Limit::fixed_window(100, Duration::from_secs(60))?)
    ///     .build()?;
    /// api.set_scale(0.5)?;
    /// assert_eq!(api.check("203.0.113.7", 1).await?.limit, 50);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLimit`] when `factor` is not in (0, 1]; the scale
    /// is then unchanged.
    pub fn set_scale(&self, factor: f64) -> Result<()> {
        let mut set = self.inner.set.lock();
        if set.1 == factor {
            return Ok(());
        }
        set.0.scaled(factor)?;
        set.1 = factor;
        self.apply(&set);
        Ok(())
    }

    /// Stores the quota checked now from what `set` holds.
    fn apply(&self, set: &(Quota, f64)) {
        let (quota, factor) = set;
        // The factor was checked when it was set, and `Limit::scaled`
        // keeps a rule whole where its scaled form would not be exact.
        let scaled = quota.scaled(*factor).unwrap_or_else(|_| quota.clone());
        self.inner.scale.store(factor.to_bits(), Ordering::Release);
        self.inner.quota.store(Arc::new(scaled));
        self.inner.quota_replaced.store(true, Ordering::Release);
    }

    /// Whether decisions are only counted, never enforced.
    pub fn is_shadow(&self) -> bool {
        self.inner.shadow.load(Ordering::Relaxed)
    }

    /// Turns shadow mode on or off.
    pub fn set_shadow(&self, shadow: bool) {
        self.inner.shadow.store(shadow, Ordering::Relaxed);
    }

    /// Checks `key` against `quota` instead of the limiter's own: for
    /// per-tenant quotas, where each tenant's tier names its rules.
    pub async fn check_quota(&self, key: &str, cost: u64, quota: &Quota) -> Result<Decision> {
        let scale = self.scale();
        let scaled;
        let quota = if scale < 1.0 {
            scaled = quota.scaled(scale)?;
            &scaled
        } else {
            quota
        };
        self.check_quota_as_is(key, cost, quota).await
    }

    /// [`check_quota`](Self::check_quota) of a quota already scaled.
    async fn check_quota_as_is(&self, key: &str, cost: u64, quota: &Quota) -> Result<Decision> {
        let op = self.check_op(cost, quota)?;
        let mut decision = self.run(key, quota, op).await?;
        if self.checked(key, cost, &mut decision) && !decision.degraded {
            // A penalty began: other instances list it from now on.
            self.register_block(key, decision.blocked_for, false).await;
        }
        Ok(decision)
    }

    /// The operation of a check of `cost` against `quota`, or why there is none.
    #[inline]
    fn check_op(&self, cost: u64, quota: &Quota) -> Result<Op> {
        let max_cost = quota.max_cost();
        if cost > max_cost {
            return Err(Error::CostTooHigh {
                limiter: self.inner.name.to_owned(),
                cost,
                capacity: max_cost,
            });
        }
        Ok(Op::Check {
            cost,
            penalty_us: self.inner.penalty_us,
        })
    }

    /// A check's decision as the caller gets it: shadow mode applied,
    /// counted; true when it shows a block this instance had not seen.
    #[inline]
    fn checked(&self, key: &str, cost: u64, decision: &mut Decision) -> bool {
        if self.is_shadow() {
            if !decision.allowed {
                decision.would_reject = true;
                decision.allowed = true;
                decision.retry_after = None;
            }
            decision.wait = Duration::ZERO;
        }
        self.inner.telemetry.record(key, cost, decision)
    }

    /// Decisions this instance made, by outcome.
    pub fn counts(&self) -> DecisionCounts {
        self.inner.telemetry.counts()
    }

    /// How long a key stays blocked after a rejection (zero: no penalty).
    pub fn penalty(&self) -> Duration {
        Duration::from_micros(self.inner.penalty_us)
    }

    /// Where the limiter keeps its state: `memory` or `redis`.
    pub fn store_kind(&self) -> &'static str {
        match self.inner.store {
            Store::Memory(_) => "memory",
            Store::Redis(_) => "redis",
        }
    }

    /// Keys this instance has seen blocked whose block has not ended, the
    /// longest block first (at most 10,000 are remembered).
    pub fn blocked_keys(&self) -> Vec<BlockedKey> {
        self.inner.telemetry.blocked()
    }

    /// Keys blocked on every instance that shares this limiter's store, the
    /// longest block first, at most `limit`: with a Redis store, the
    /// registry every instance writes to when it sets a block (by penalty or
    /// by [`block`](Self::block)) and reads on the server's clock (one round
    /// trip); in memory, [`blocked_keys`](Self::blocked_keys).
    ///
    /// The registry keeps the 10,000 blocks that end last.
    pub async fn blocked_keys_everywhere(&self, limit: usize) -> Result<Vec<BlockedKey>> {
        match &self.inner.store {
            Store::Memory(_) => {
                let mut keys = self.blocked_keys();
                keys.truncate(limit);
                Ok(keys)
            }
            Store::Redis(store) => store.blocked(self.inner.name, limit).await,
        }
    }

    /// Records `key`'s block (or its end, with `None`) in the Redis store's
    /// registry of blocked keys; `replace` sets the block's end even when it
    /// is earlier than the listed one (a manual block), where a penalty only
    /// extends it. Best effort: the block itself is already in force; only
    /// the fleet-wide list would miss it.
    async fn register_block(&self, key: &str, blocked_for: Option<Duration>, replace: bool) {
        let Store::Redis(store) = &self.inner.store else {
            return;
        };
        // An error here is Redis failing, which the next check reports.
        let _ = store
            .note_block(self.inner.name, key, blocked_for, replace)
            .await;
    }

    /// The keys this instance rejected most, most first: 32 counters of the
    /// space-saving algorithm, so a key rejected more than 1/32 of the time
    /// is always among them; a count may include up to `overcount`
    /// rejections of keys it displaced.
    pub fn top_rejected(&self) -> Vec<RejectedKey> {
        self.inner.telemetry.top_rejected()
    }

    /// The keys this instance checked most, most first, admitted or not:
    /// the heaviest callers. One check in 32, drawn at random, is counted
    /// 32 times in the 32 counters of the space-saving algorithm, so the
    /// memory is fixed and an admitted check pays one thread-local random
    /// draw; a key with more than about 1/32 of the checks is among them
    /// once a few thousand checks have been made, and each count is an
    /// estimate (`overcount` of it may belong to keys it displaced).
    pub fn top_callers(&self) -> Vec<HeavyCaller> {
        self.inner.telemetry.top_callers()
    }

    /// Like [`check`](RateLimiter::check), then waits as long as a leaky
    /// queue asks before returning; a rejected request returns at once.
    pub async fn acquire(&self, key: &str, cost: u64) -> Result<Decision> {
        let decision = self.check(key, cost).await?;
        if decision.allowed && !decision.wait.is_zero() {
            tokio::time::sleep(decision.wait).await;
        }
        Ok(decision)
    }

    /// Blocks `key` for `duration`: every check is rejected until then. A
    /// block longer than [`MAX_DURATION`] lasts that long.
    pub async fn block(&self, key: &str, duration: Duration) -> Result<Decision> {
        let quota = self.quota();
        let decision = self
            .run(key, &quota, Op::Block(micros(duration).max(1)))
            .await?;
        self.inner.telemetry.saw_block(key, decision.blocked_for);
        if !decision.degraded {
            // A manual block replaces any other, shorter or longer.
            self.register_block(key, decision.blocked_for, true).await;
        }
        Ok(decision)
    }

    /// Lifts a block on `key` (its counters stay).
    pub async fn unblock(&self, key: &str) -> Result<Decision> {
        let quota = self.quota();
        let decision = self.run(key, &quota, Op::Unblock).await?;
        self.inner.telemetry.saw_block(key, None);
        self.register_block(key, None, true).await;
        Ok(decision)
    }

    async fn run(&self, key: &str, quota: &Quota, op: Op) -> Result<Decision> {
        let store = match &self.inner.store {
            Store::Memory(store) => return self.run_in_memory(store, key, quota, op),
            Store::Redis(store) => store,
        };
        check_key(key)?;
        // Boxed: the Redis call's future is kilobytes, and inline it would
        // make the future of every caller as large.
        match Box::pin(store.apply(self.inner.name, key, quota.as_rules(), op)).await {
            Ok(outcome) => Ok(self.decision(quota.as_rules(), &outcome)),
            Err(error) => self.degraded(key, quota, op, error),
        }
    }

    /// [`check_now`](Self::check_now) of a quota of one rule.
    #[inline]
    fn check_one_now(
        &self,
        store: &MemoryStore,
        key: &str,
        cost: u64,
        name: &'static str,
        limit: &Limit,
    ) -> Result<Decision> {
        if cost > limit.max_cost() {
            return Err(Error::CostTooHigh {
                limiter: self.inner.name.to_owned(),
                cost,
                capacity: limit.max_cost(),
            });
        }
        check_key(key)?;
        let penalty_us = self.inner.penalty_us;
        let Some((step, blocked_for_us)) = store.with_entry(self.inner.name, key, |entry, now| {
            check_one(entry, name, limit, now, cost, penalty_us)
        }) else {
            return self.full(key, name, limit, cost);
        };
        let mut decision = Decision::single(self.inner.name, name, limit, &step, blocked_for_us);
        self.checked(key, cost, &mut decision);
        Ok(decision)
    }

    #[inline]
    fn run_in_memory(
        &self,
        store: &MemoryStore,
        key: &str,
        quota: &Quota,
        op: Op,
    ) -> Result<Decision> {
        check_key(key)?;
        let rules = quota.as_rules();
        match store.apply(self.inner.name, key, rules, op) {
            Some(outcome) => Ok(self.decision(rules, &outcome)),
            None => {
                let error = Error::StoreFull {
                    limiter: self.inner.name.to_owned(),
                };
                self.degraded(key, quota, op, error)
            }
        }
    }

    /// A check of one rule that a full memory store cannot keep: decided by
    /// the failure policy, out of line so the common path stays small.
    #[cold]
    #[inline(never)]
    fn full(&self, key: &str, name: &'static str, limit: &Limit, cost: u64) -> Result<Decision> {
        let quota = Quota(Arc::from([(name, *limit)]));
        let op = Op::Check {
            cost,
            penalty_us: self.inner.penalty_us,
        };
        let error = Error::StoreFull {
            limiter: self.inner.name.to_owned(),
        };
        let mut decision = self.degraded(key, &quota, op, error)?;
        self.checked(key, cost, &mut decision);
        Ok(decision)
    }

    #[inline]
    fn decision(&self, rules: &Rules, outcome: &Outcome) -> Decision {
        Decision::combine(
            self.inner.name,
            rules,
            &outcome.steps,
            outcome.blocked_for_us,
        )
    }

    fn degraded(&self, key: &str, quota: &Quota, op: Op, error: Error) -> Result<Decision> {
        let inner = &*self.inner;
        crate::trace::degraded(inner.name, inner.policy, &error);
        let rules = quota.as_rules();
        // A block this instance saw holds while the store cannot be asked,
        // whatever the policy would decide: a penalty does not lapse
        // because the node that keeps it stopped answering.
        if matches!(op, Op::Check { .. } | Op::Peek)
            && inner.policy != FailurePolicy::Error
            && let Some(left) = inner.telemetry.blocked_for(key)
        {
            let steps: Vec<Step> = rules.iter().map(|_| Step::closed()).collect();
            let left_us = u64::try_from(left.as_micros()).unwrap_or(u64::MAX).max(1);
            let mut decision = Decision::combine(inner.name, rules, &steps, left_us);
            decision.degraded = true;
            return Ok(decision);
        }
        let mut decision = match (inner.policy, &inner.insurance) {
            (FailurePolicy::Error, _) => return Err(error),
            (FailurePolicy::Insurance { instances }, Some(store)) => {
                let share = quota.share(instances)?;
                match store.apply(inner.name, key, share.as_rules(), op) {
                    Some(outcome) => self.decision(share.as_rules(), &outcome),
                    // The insurance store is full too: admit, as failing
                    // open does.
                    None => {
                        let steps: Vec<Step> =
                            rules.iter().map(|(_, limit)| Step::open(limit)).collect();
                        Decision::combine(inner.name, rules, &steps, 0)
                    }
                }
            }
            (FailurePolicy::Closed, _) => {
                let steps: Vec<Step> = rules.iter().map(|_| Step::closed()).collect();
                Decision::combine(inner.name, rules, &steps, 0)
            }
            _ => {
                let steps: Vec<Step> = rules.iter().map(|(_, limit)| Step::open(limit)).collect();
                Decision::combine(inner.name, rules, &steps, 0)
            }
        };
        decision.degraded = true;
        Ok(decision)
    }
}

impl Limiter {
    /// [`RateLimiter::check`], without the boxed future of the trait object.
    pub async fn check(&self, key: &str, cost: u64) -> Result<Decision> {
        if let Some(decision) = self.check_now(key, cost) {
            return decision;
        }
        let quota = self.inner.quota.load_full();
        self.check_quota_as_is(key, cost, &quota).await
    }

    /// [`check`](Self::check) decided at once, without a future, when the
    /// limiter keeps its state in process memory; `None` when it keeps it in
    /// Redis, which only [`check`](Self::check) can reach.
    ///
    /// ```
    /// use std::time::Duration;
    /// use seawall_ratelimit::{Limit, Limiter};
    ///
    /// let limiter = Limiter::builder("ddos")
    ///     .limit(Limit::gcra(100, Duration::from_secs(1), 100)?)
    ///     .build()?;
    /// let decision = limiter.check_now("203.0.113.7", 1).expect("a memory store")?;
    /// assert!(decision.allowed);
    /// # Ok::<(), seawall_ratelimit::Error>(())
    /// ```
    #[inline]
    pub fn check_now(&self, key: &str, cost: u64) -> Option<Result<Decision>> {
        let Store::Memory(store) = &self.inner.store else {
            return None;
        };
        let replaced;
        let quota = if self.inner.quota_replaced.load(Ordering::Acquire) {
            // A guard, not a clone: no reference count shared between threads.
            replaced = self.inner.quota.load();
            &**replaced
        } else {
            &self.inner.built_quota
        };
        if let [(name, limit)] = quota.as_rules() {
            return Some(self.check_one_now(store, key, cost, name, limit));
        }
        Some(
            self.check_op(cost, quota)
                .and_then(|op| self.run_in_memory(store, key, quota, op))
                .map(|mut decision| {
                    self.checked(key, cost, &mut decision);
                    decision
                }),
        )
    }

    /// [`RateLimiter::peek`], without the boxed future of the trait object.
    pub async fn peek(&self, key: &str) -> Result<Decision> {
        let quota = self.quota();
        self.run(key, &quota, Op::Peek).await
    }

    /// [`RateLimiter::reset`], without the boxed future of the trait object.
    pub async fn reset(&self, key: &str) -> Result<()> {
        let quota = self.quota();
        self.run(key, &quota, Op::Reset).await?;
        self.inner.telemetry.saw_block(key, None);
        self.register_block(key, None, true).await;
        Ok(())
    }
}

#[async_trait]
impl RateLimiter for Limiter {
    async fn check(&self, key: &str, cost: u64) -> Result<Decision> {
        Limiter::check(self, key, cost).await
    }

    async fn peek(&self, key: &str) -> Result<Decision> {
        Limiter::peek(self, key).await
    }

    async fn reset(&self, key: &str) -> Result<()> {
        Limiter::reset(self, key).await
    }
}

fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(Error::InvalidKey(format!(
            "a key is 1 to {MAX_KEY_BYTES} bytes, not {}",
            key.len()
        )));
    }
    Ok(())
}

/// `duration` in µs, at most [`MAX_DURATION`].
fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.min(MAX_DURATION).as_micros()).unwrap_or(u64::MAX)
}

/// Builds a [`Limiter`].
#[derive(Debug)]
pub struct LimiterBuilder {
    name: String,
    quota: Option<Quota>,
    store: Option<Store>,
    penalty: Duration,
    shadow: bool,
    policy: FailurePolicy,
    monitor: Option<seawall_perfmon::Monitor>,
}

impl LimiterBuilder {
    /// Reports decisions to `monitor`: `ratelimit_decisions_total{limiter,
    /// outcome}` (allowed, rejected, shadow_rejected),
    /// `ratelimit_near_limit_total`, `ratelimit_degraded_decisions_total` and
    /// the gauge `ratelimit_blocked_keys`.
    pub fn monitor(mut self, monitor: &seawall_perfmon::Monitor) -> Self {
        self.monitor = Some(monitor.clone());
        self
    }

    /// One limit (rule `default`).
    pub fn limit(mut self, limit: Limit) -> Self {
        self.quota = Some(Quota::single(limit));
        self
    }

    /// Several rules checked together.
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quota = Some(quota);
        self
    }

    /// Where the state lives (default: a new [`MemoryStore`]).
    pub fn store(mut self, store: impl Into<Store>) -> Self {
        self.store = Some(store.into());
        self
    }

    /// Blocks a key for `penalty` once it is rejected (default: none); a
    /// penalty longer than [`MAX_DURATION`] lasts that long.
    pub fn penalty(mut self, penalty: Duration) -> Self {
        self.penalty = penalty;
        self
    }

    /// Counts decisions without enforcing them (default: off).
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }

    /// What to do when the store cannot decide (default:
    /// [`FailurePolicy::Open`]).
    pub fn on_store_failure(mut self, policy: FailurePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The limiter.
    pub fn build(self) -> Result<Limiter> {
        check_name("limiter", &self.name)?;
        let quota = self
            .quota
            .ok_or_else(|| Error::InvalidConfig(format!("limiter {} has no limit", self.name)))?;
        let insurance =
            matches!(self.policy, FailurePolicy::Insurance { .. }).then(MemoryStore::new);
        let telemetry = Telemetry::new(&self.name, self.monitor.as_ref())?;
        Ok(Limiter {
            inner: Arc::new(Inner {
                name: intern(&self.name),
                built_quota: quota.clone(),
                quota_replaced: AtomicBool::new(false),
                set: Mutex::new((quota.clone(), 1.0)),
                scale: AtomicU64::new(1.0_f64.to_bits()),
                quota: ArcSwap::from_pointee(quota),
                store: self
                    .store
                    .unwrap_or_else(|| Store::Memory(MemoryStore::new())),
                penalty_us: micros(self.penalty),
                shadow: AtomicBool::new(self.shadow),
                policy: self.policy,
                insurance,
                telemetry,
            }),
        })
    }
}
