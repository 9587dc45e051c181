//! What every clone of a cache shares ([`Inner`]), and the steps that
//! reads, loads, writes and the invalidation feed all take: filling L1 only
//! with what no invalidation overtook, applying an invalidation here, and
//! sending one to Redis. It names none of the modules above it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::class::{Class, Policy};
use crate::codec::{self, Codec, Meta, Stored};
use crate::error::{Error, Result};
use crate::flight::Flight;
use crate::glob;
use crate::lock::RedisLocks;
use crate::memory::{Entry, MemoryTier};
use crate::redis::RedisTier;
use crate::stats::{CacheCounters, ClassCounters, bump};
use crate::trace::Tier;

/// A class's name and policy.
#[derive(Debug)]
pub(crate) struct ClassDef {
    pub(crate) name: String,
    pub(crate) policy: Policy,
}

/// What every clone shares.
pub(crate) struct Inner {
    pub(crate) name: String,
    pub(crate) l1: Option<MemoryTier>,
    pub(crate) l2: Option<RedisTier>,
    pub(crate) locks: Option<RedisLocks>,
    pub(crate) classes: Box<[ClassDef]>,
    pub(crate) counters: Arc<[ClassCounters]>,
    pub(crate) cache_counters: Arc<CacheCounters>,
    pub(crate) codec: u8,
    pub(crate) format: u32,
    pub(crate) flights: Mutex<HashMap<String, Arc<Flight>>>,
    /// Identifies this instance's announcements, which its feed skips.
    pub(crate) origin: String,
    pub(crate) stream_max_len: u64,
    /// How long a tombstone holds an invalidated key, and a lease a key
    /// being loaded: longer than any load, its wait for the lock included,
    /// but no longer than the longest a value of any class is kept.
    pub(crate) tombstone_ttl: Duration,
    /// How long a miss waits for another instance's load under its lock.
    pub(crate) lock_wait: Duration,
    /// Invalidations that could not reach Redis, sent once it answers.
    pub(crate) pending: Mutex<Pending>,
    /// Wakes the task that sends `pending` when an invalidation is added.
    pub(crate) pending_added: Arc<tokio::sync::Notify>,
    pub(crate) feed_connected: AtomicBool,
    /// When the feed last had the stream's end (Unix ms): its last read
    /// that answered. While it is cut off, L1 answers within
    /// `degraded_ttl` of this or of a value's creation, whichever is later.
    pub(crate) followed_at_ms: AtomicU64,
    /// How long L1 answers while this instance cannot follow the
    /// invalidation stream (zero: not at all).
    pub(crate) degraded_ttl: Duration,
    /// The longest L1 keeps what it takes while this instance cannot
    /// follow the invalidation stream.
    pub(crate) unfollowed_l1_ttl: Duration,
    /// Whether this instance follows other instances' invalidations.
    pub(crate) follows: bool,
    /// Invalidations applied here so far.
    pub(crate) epoch: AtomicU64,
    /// What the readers ask for most, when the cache learns it.
    pub(crate) learner: Option<crate::hot::Learner>,
    /// How many times L1 was cleared here, for whoever warms it again.
    pub(crate) l1_cleared: tokio::sync::watch::Sender<u64>,
}

/// What a value put in L1 must not have been overtaken by.
#[derive(Clone, Copy)]
pub(crate) enum Since<'a> {
    /// An invalidation of the load's key while the load ran.
    Flight(&'a Flight),
    /// Any invalidation since the epoch was read (before the value was
    /// read from Redis or written there).
    Epoch(u64),
}

/// Invalidations waiting for Redis, bounded: past the bound, the whole
/// cache is cleared in Redis once it answers.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub(crate) invalidations: Vec<Invalidation>,
    pub(crate) overflowed: bool,
    /// Sweeps (a pattern, a clear) announced before a sweep that then
    /// failed: their retries are not announced again before sweeping, only
    /// once the sweep is done.
    pub(crate) announced: Vec<Invalidation>,
    /// Invalidations taken out by the resend and not yet acknowledged by
    /// Redis: still unsent, for readiness, while their commands are in
    /// flight.
    pub(crate) in_flight: usize,
}

const MAX_PENDING: usize = 10_000;

/// One invalidation, as announced on the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Invalidation {
    Key(String),
    Tag(String),
    Pattern(String),
    Clear,
}

impl Invalidation {
    /// Whether it scans Redis for its keys (a pattern, a clear) rather
    /// than naming them.
    pub(crate) fn sweeps(&self) -> bool {
        matches!(self, Self::Pattern(_) | Self::Clear)
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Key(_) => "k",
            Self::Tag(_) => "t",
            Self::Pattern(_) => "p",
            Self::Clear => "c",
        }
    }

    pub(crate) fn target(&self) -> &str {
        match self {
            Self::Key(target) | Self::Tag(target) | Self::Pattern(target) => target,
            Self::Clear => "",
        }
    }

    pub(crate) fn parse(kind: &str, target: String) -> Option<Self> {
        match kind {
            "k" => Some(Self::Key(target)),
            "t" => Some(Self::Tag(target)),
            "p" => Some(Self::Pattern(target)),
            "c" => Some(Self::Clear),
            _ => None,
        }
    }
}

/// Unix time in milliseconds: values carry wall-clock times so that every
/// instance reads the same expiry from Redis.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

pub(crate) fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The value of an L1 entry as `T`: `Some(None)` for a cached "not found",
/// `None` if it holds another type.
pub(crate) fn typed<T: Clone + 'static>(
    value: &Option<Arc<dyn std::any::Any + Send + Sync>>,
) -> Option<Option<T>> {
    match value {
        None => Some(None),
        Some(value) => value.downcast_ref::<T>().map(|value| Some(value.clone())),
    }
}

/// The envelope and payload of a value (`None`: a cached "not found").
pub(crate) fn encode<C: Codec, T: Serialize + ?Sized>(
    key: &str,
    value: Option<&T>,
    meta: &Meta,
    tags: &[String],
    inner: &Inner,
) -> Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(codec::HEADER + 64);
    codec::header(inner.codec, inner.format, meta, tags, &mut bytes);
    if let Some(value) = value {
        C::encode(value, &mut bytes).map_err(|error| Error::Encode {
            key: key.to_owned(),
            message: error.0,
        })?;
    }
    Ok(bytes)
}

impl Inner {
    pub(crate) fn policy_of(&self, class: Class) -> &Policy {
        self.classes.get(usize::from(class.0)).map_or(
            &self.classes[usize::from(Class::COMPUTATION.0)].policy,
            |def| &def.policy,
        )
    }

    pub(crate) fn counters_of(&self, class: Class) -> &ClassCounters {
        self.counters
            .get(usize::from(class.0))
            .unwrap_or(&self.counters[usize::from(Class::COMPUTATION.0)])
    }

    /// The name of `class` in this cache (the computation class's for a
    /// class it does not define, as [`policy_of`](Self::policy_of) does).
    pub(crate) fn class_name(&self, class: Class) -> &str {
        self.classes.get(usize::from(class.0)).map_or(
            &self.classes[usize::from(Class::COMPUTATION.0)].name,
            |def| &def.name,
        )
    }

    /// Counts a read of `class` that found no fresh value in `tier`, and
    /// tells a subscriber that listens at debug level.
    pub(crate) fn missed(&self, class: Class, tier: Tier) {
        let counters = self.counters_of(class);
        bump(match tier {
            Tier::L1 => &counters.l1_misses,
            Tier::L2 => &counters.l2_misses,
        });
        tracing::debug!(
            name: "cache.miss",
            {
                seawall.cache.name = self.name.as_str(),
                seawall.cache.class = self.class_name(class),
                seawall.cache.tier = tier.name(),
            },
            "cache miss"
        );
    }

    /// Whether L1 follows every invalidation: always, unless this instance
    /// follows other instances' invalidations and is cut off from them
    /// (its copies may be stale until it catches up).
    pub(crate) fn l1_trusted(&self) -> bool {
        !self.follows || self.feed_connected.load(Ordering::Relaxed)
    }

    /// Whether L1 may answer a read of `key`, a value whose header is
    /// `meta`, at `now`: always while L1 follows every invalidation; while
    /// cut off from them, only until its [`degraded_deadline`], within the
    /// degraded TTL (its class's, else the cache's) of the later of the
    /// value's creation and the feed's last read, so that no value another
    /// instance replaced is served longer than that after the write (or
    /// after the stream was lost, for a write just before). This instance's
    /// own writes and invalidations reach its L1 at once either way.
    pub(crate) fn l1_answers(&self, key: &str, meta: &Meta, now: u64) -> bool {
        self.l1_trusted() || {
            let ttl = self
                .policy_of(Class(meta.class))
                .degraded_ttl
                .unwrap_or(self.degraded_ttl);
            let followed = self.followed_at_ms.load(Ordering::Relaxed);
            now < degraded_deadline(key, meta.created_ms, followed, ms(ttl))
        }
    }

    /// The Redis tier unless it is absent or its breaker is open (a
    /// refusal a subscriber hears of).
    pub(crate) fn usable_l2(&self) -> Option<&RedisTier> {
        let l2 = self.l2.as_ref()?;
        if l2.is_open() {
            l2.refused();
            return None;
        }
        Some(l2)
    }

    /// A fresh value of type `T` in `bytes`, with its header and tags.
    pub(crate) fn decode_fresh<T: DeserializeOwned, C: Codec>(
        &self,
        bytes: &[u8],
        now: u64,
    ) -> Option<(Option<T>, Meta, Vec<String>)> {
        match self.decode::<T, C>(bytes)? {
            Decoded::Value(value, meta, tags) if now < meta.fresh_until_ms => {
                Some((value, meta, tags))
            }
            _ => None,
        }
    }

    pub(crate) fn decode<T: DeserializeOwned, C: Codec>(&self, bytes: &[u8]) -> Option<Decoded<T>> {
        match codec::parse(self.codec, self.format, bytes) {
            Stored::Tombstone(marker) | Stored::Lease(marker) => {
                Some(Decoded::Marker(marker.to_vec()))
            }
            Stored::Value(meta, tags, _) if meta.negative => Some(Decoded::Value(None, meta, tags)),
            Stored::Value(meta, tags, payload) => C::decode::<T>(payload)
                .ok()
                .map(|value| Decoded::Value(Some(value), meta, tags)),
            Stored::Foreign => None,
        }
    }

    /// Puts a value in L1, unless `flight` was invalidated meanwhile (checked
    /// under the flights lock, which invalidations also take).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn fill_l1(
        &self,
        key: &str,
        class: Class,
        value: Option<Arc<dyn std::any::Any + Send + Sync>>,
        meta: Meta,
        tags: Vec<String>,
        encoded_len: usize,
        since: Since<'_>,
    ) {
        let Some(l1) = &self.l1 else { return };
        let until = now_ms().saturating_add(ms(self.l1_ttl_now(class)));
        let entry = Entry::new(value, meta, until, tags, encoded_len);
        let _flights = self.flights.lock();
        let overtaken = match since {
            Since::Flight(flight) => flight.overtaken(entry.tags(), self.epoch()),
            Since::Epoch(epoch) => self.epoch() != epoch,
        };
        if !overtaken {
            l1.insert(key, entry);
        }
    }

    /// How long L1 keeps a value of `class` it takes now: the class's L1
    /// TTL; while this instance may miss invalidations, at most
    /// `cut_off_l1_ttl`, or the class's degraded TTL where that is longer
    /// (a reader is told it may see a value that old while cut off, and
    /// a copy taken then is never older than that past a write it missed;
    /// capped at a shorter `cut_off_l1_ttl`, every key read while cut off
    /// would be loaded more often than its bound asks).
    fn l1_ttl_now(&self, class: Class) -> Duration {
        let policy = self.policy_of(class);
        let ttl = policy.l1_ttl.unwrap_or(policy.ttl);
        if !self.may_miss_invalidations() {
            return ttl;
        }
        let degraded = policy.degraded_ttl.unwrap_or(self.degraded_ttl);
        ttl.min(self.unfollowed_l1_ttl.max(degraded))
    }

    /// Whether this instance may miss invalidations now: it follows the
    /// stream but is cut off from it. What L1 takes meanwhile is trusted
    /// once the feed has caught up, and an invalidation that never reached
    /// the stream (its sender stopped while cut off from Redis) would not
    /// catch up with it; so it is kept only briefly.
    fn may_miss_invalidations(&self) -> bool {
        self.follows && !self.feed_connected.load(Ordering::Relaxed)
    }

    /// After this instance wrote `entries` (key, value, header, encoded
    /// length) to Redis, or failed to: reads and loads of those keys that
    /// began before are overtaken here, as by an invalidation (they may
    /// hold what the write replaced, and this instance's own announcement
    /// never comes back to it), and L1 takes the new values, unless the
    /// write failed or an invalidation applied here since `since` may be
    /// another instance's write of a key that landed after this one.
    #[allow(clippy::type_complexity)]
    pub(crate) fn written_here(
        &self,
        entries: Vec<(
            String,
            Option<Arc<dyn std::any::Any + Send + Sync>>,
            Meta,
            usize,
        )>,
        class: Class,
        tags: &[String],
        since: u64,
        failed: bool,
    ) {
        let until = now_ms().saturating_add(ms(self.l1_ttl_now(class)));
        let flights = self.flights.lock();
        let keep = !failed && self.epoch() == since;
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for (key, value, meta, len) in entries {
            if let Some(flight) = flights.get(&key) {
                flight.invalidate();
            }
            if let Some(l1) = &self.l1 {
                if keep {
                    l1.insert(&key, Entry::new(value, meta, until, tags.to_vec(), len));
                } else {
                    l1.remove(&key);
                }
            }
        }
    }

    /// Counts invalidations applied here, so a read can tell whether one
    /// came while it fetched from Redis.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Applies an invalidation to L1 here; a clear of L1 is announced on
    /// `l1_cleared`.
    pub(crate) fn invalidate_local(&self, invalidation: &Invalidation) {
        if self.apply_local(invalidation) {
            self.l1_cleared.send_modify(|clears| *clears += 1);
        }
    }

    /// Applies an invalidation to L1 here; true when it cleared L1.
    fn apply_local(&self, invalidation: &Invalidation) -> bool {
        let flights = self.flights.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        // Only the loads whose value the invalidation would have removed
        // are overtaken by it; under write traffic, marking every running
        // load would keep L1 from ever filling.
        match invalidation {
            Invalidation::Key(key) => {
                if let Some(flight) = flights.get(key) {
                    flight.invalidate();
                }
            }
            Invalidation::Tag(tag) => flights
                .values()
                .filter(|flight| flight.tagged(tag))
                .for_each(|flight| flight.invalidate()),
            Invalidation::Pattern(pattern) => flights
                .iter()
                .filter(|(key, _)| glob::matches(pattern.as_bytes(), key.as_bytes()))
                .for_each(|(_, flight)| flight.invalidate()),
            Invalidation::Clear => flights.values().for_each(|flight| flight.invalidate()),
        }
        if let Some(l1) = &self.l1 {
            match invalidation {
                Invalidation::Key(key) => l1.remove(key),
                Invalidation::Tag(tag) => l1.remove_tagged(tag),
                Invalidation::Pattern(pattern) => l1.remove_matching(pattern),
                Invalidation::Clear => {
                    l1.clear();
                    return true;
                }
            }
        }
        false
    }

    /// Invalidates in Redis, announces, and drops from L1 here; a Redis
    /// failure queues the Redis part for when it answers. A sweep (a
    /// pattern, a clear) drops this instance's L1 copies first too, as its
    /// announcement does every other's; a clear is announced on
    /// `l1_cleared` once, after the sweep (a warm-up during it would be
    /// swept too).
    pub(crate) async fn invalidate(&self, invalidation: Invalidation) -> Result<()> {
        if invalidation.sweeps() {
            self.apply_local(&invalidation);
        }
        let result = match &self.l2 {
            Some(_) => {
                let result = self.invalidate_remote(&invalidation).await;
                if result.is_err() {
                    self.defer(invalidation.clone());
                }
                result
            }
            None => Ok(()),
        };
        self.invalidate_local(&invalidation);
        result
    }

    /// The Redis part of an invalidation: remove, then announce. A sweep
    /// (a pattern, a clear) scans every key, which takes seconds over a
    /// large keyspace: it is announced first as well, so that every L1
    /// drops its copies at once rather than serving them for the whole
    /// pass, and again once Redis is swept, dropping what an instance read
    /// back from Redis in the meantime.
    pub(crate) async fn invalidate_remote(&self, invalidation: &Invalidation) -> Result<()> {
        let l2 = self
            .usable_l2()
            .ok_or(Error::Unavailable("the circuit breaker is open"))?;
        // A sweep is announced before it runs, so that no L1 keeps what it
        // is about to remove while it scans (seconds over a large keyspace),
        // and after. A retry of one whose sweep failed is not announced
        // again first: the keys it did not reach still hold their old
        // values in Redis, which every instance reads there anyway, and a
        // fresh announcement at each retry (every 200 ms while a master is
        // out of reach) cleared every instance's L1 over and over.
        let retried = invalidation.sweeps() && self.pending.lock().announced.contains(invalidation);
        if invalidation.sweeps() && !retried {
            self.announce_on(l2, invalidation).await?;
            self.pending.lock().announced.push(invalidation.clone());
        }
        match invalidation {
            Invalidation::Key(key) => {
                l2.tombstone(vec![l2.value_key(key)], self.tombstone_ttl)
                    .await?;
            }
            Invalidation::Tag(tag) => {
                let members = l2.take_tag(tag).await?;
                l2.tombstone(members, self.tombstone_ttl).await?;
            }
            Invalidation::Pattern(pattern) => {
                l2.tombstone_matching(pattern, self.tombstone_ttl).await?;
            }
            Invalidation::Clear => {
                l2.tombstone_matching("*", self.tombstone_ttl).await?;
            }
        }
        self.announce_on(l2, invalidation).await?;
        if invalidation.sweeps() {
            self.pending
                .lock()
                .announced
                .retain(|announced| announced != invalidation);
        }
        Ok(())
    }

    /// Adds `invalidation` to the stream, and counts it as sent.
    async fn announce_on(&self, l2: &RedisTier, invalidation: &Invalidation) -> Result<()> {
        l2.announce(
            &self.origin,
            invalidation.kind(),
            invalidation.target(),
            self.stream_max_len,
        )
        .await?;
        bump(&self.cache_counters.invalidations_sent);
        Ok(())
    }

    /// Announces without removing (after a `set`, whose new value is already
    /// in Redis); a failure is queued like an invalidation's.
    pub(crate) async fn announce(&self, invalidation: Invalidation) {
        let Some(l2) = self.usable_l2() else {
            self.defer(invalidation);
            return;
        };
        match l2
            .announce(
                &self.origin,
                invalidation.kind(),
                invalidation.target(),
                self.stream_max_len,
            )
            .await
        {
            Ok(_) => bump(&self.cache_counters.invalidations_sent),
            Err(_) => self.defer(invalidation),
        }
    }

    pub(crate) fn defer(&self, invalidation: Invalidation) {
        {
            let mut pending = self.pending.lock();
            if pending.overflowed {
                return;
            }
            if pending.invalidations.len() >= MAX_PENDING {
                pending.invalidations.clear();
                pending.announced.clear();
                pending.overflowed = true;
            } else if !pending.invalidations.contains(&invalidation) {
                pending.invalidations.push(invalidation);
            }
        }
        self.pending_added.notify_one();
    }

    /// Whether invalidations of this instance's writes still wait to reach
    /// Redis: until they do, other instances may read what they replaced.
    pub(crate) fn has_pending(&self) -> bool {
        let pending = self.pending.lock();
        pending.overflowed || !pending.invalidations.is_empty() || pending.in_flight > 0
    }
}

/// What an L2 value holds once decoded.
pub(crate) enum Decoded<T> {
    /// A tombstone or a lease.
    Marker(Vec<u8>),
    Value(Option<T>, Meta, Vec<String>),
}

/// Until when L1 may answer with `key`'s value, made at `created_ms`,
/// while cut off from the invalidations since the feed's last read at
/// `followed_ms`, under a degraded TTL of `ttl_ms`: `ttl_ms` after its
/// creation when it was made since; else, for the values L1 held when the
/// stream was lost, at a point in the TTL's second half picked by the key.
/// Those would otherwise all stop at once, and their loads come together
/// (a thousand statistics queued behind the database's readers held every
/// read ~150 ms); spread, each is loaded at its own moment, and from then
/// on stays apart. Never later than the TTL after the later of the two.
pub(crate) fn degraded_deadline(key: &str, created_ms: u64, followed_ms: u64, ttl_ms: u64) -> u64 {
    if created_ms >= followed_ms {
        return created_ms.saturating_add(ttl_ms);
    }
    let half = ttl_ms / 2;
    let spread = if half == 0 { 0 } else { spread_of(key) % half };
    followed_ms.saturating_add(ttl_ms - spread)
}

/// A hash of `key` (FNV-1a), to spread keys' deadlines: cheap, and the
/// same on every instance and run.
fn spread_of(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::degraded_deadline;

    proptest! {
        /// A value made since the stream was lost is answered for exactly
        /// the TTL; one held when it was lost, until a point in the TTL's
        /// second half from the loss: never past the TTL either way.
        #[test]
        fn a_deadline_is_never_past_the_ttl(
            key in ".{0,40}",
            created in 0_u64..1 << 50,
            followed in 0_u64..1 << 50,
            ttl in 0_u64..1 << 40,
        ) {
            let deadline = degraded_deadline(&key, created, followed, ttl);
            if created >= followed {
                prop_assert_eq!(deadline, created + ttl);
            } else {
                prop_assert!(deadline <= followed + ttl);
                prop_assert!(deadline >= followed + ttl - ttl / 2);
            }
        }
    }

    /// The values L1 held when the stream was lost stop answering over the
    /// TTL's second half, not at one moment: a thousand keys fall in every
    /// tenth of it, none holding more than twice its share.
    #[test]
    fn deadlines_of_values_held_at_the_loss_are_spread() {
        let (followed, ttl) = (1_000_000, 10_000);
        let mut tenths = [0_u32; 10];
        for user in 1..=1000 {
            let key = format!("stats:user:{user}");
            let deadline = degraded_deadline(&key, followed - 1, followed, ttl);
            let into_half = deadline - (followed + ttl / 2);
            tenths[usize::try_from(into_half * 10 / (ttl / 2))
                .expect("small")
                .min(9)] += 1;
        }
        assert!(tenths.iter().all(|&n| (1..=200).contains(&n)), "{tenths:?}");
    }
}
