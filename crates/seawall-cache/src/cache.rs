//! `TieredCache`, the façade: its builder, reads, loads, writes and
//! invalidations. A load's steps are in [`load`](crate::load), the
//! invalidation feed in [`feed`](crate::feed), and what they all share in
//! [`inner`](crate::inner); none of them names the façade.

use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use fred::prelude::Client;
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::class::{Class, Policy, WriteStrategy};
use crate::codec::{Binary, Codec, Meta};
use crate::error::{BoxError, Error, Result};
use crate::hot::{HotKey, HotKeyOptions, Learner};
use crate::inner::{ClassDef, Inner, Invalidation, Pending, Since, encode, ms, now_ms, typed};
use crate::load;
use crate::lock::RedisLocks;
use crate::memory::{L1Capacity, MemoryTier};
use crate::options::Options;
use crate::redis::RedisTier;
use crate::stats::{self, BreakerState, CacheCounters, ClassCounters, Stats, bump};
use crate::trace::Tier;

/// The longest any duration given to the cache counts for: a century,
/// which stands for "forever". Longer ones are taken as this, so that no
/// deadline or expiry computed from them overflows.
pub(crate) const LONGEST: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The instant `after` from now, or a century from now if `after` is
/// longer.
pub(crate) fn deadline(after: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(after).unwrap_or_else(|| now + LONGEST)
}

/// The default prefix of every Redis key of a cache.
pub const DEFAULT_PREFIX: &str = "seawall:cache";

/// How stale L1 may answer by default while an instance cannot follow the
/// invalidation stream ([`TieredCacheBuilder::degraded_ttl`]).
pub const DEFAULT_DEGRADED_TTL: Duration = Duration::from_secs(1);

/// A two-tier cache: L1 in process, L2 on Redis, each optional. Cheap to
/// clone; clones share everything.
///
/// See the [crate docs](crate) for an example.
pub struct TieredCache<C: Codec = Binary> {
    pub(crate) inner: Arc<Inner>,
    codec: PhantomData<fn() -> C>,
}

impl<C: Codec> Clone for TieredCache<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            codec: PhantomData,
        }
    }
}

impl<C: Codec> std::fmt::Debug for TieredCache<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TieredCache")
            .field("name", &self.inner.name)
            .field("codec", &C::NAME)
            .field("l1", &self.inner.l1.is_some())
            .field("l2", &self.inner.l2.is_some())
            .finish_non_exhaustive()
    }
}

/// Builds a [`TieredCache`].
#[derive(Debug)]
pub struct TieredCacheBuilder<C: Codec = Binary> {
    name: String,
    l1: Option<L1Capacity>,
    redis: Option<Client>,
    prefix: String,
    redis_timeout: Duration,
    failures_to_open: u32,
    probe_interval: Duration,
    format: u32,
    classes: Vec<ClassDef>,
    stream_max_len: u64,
    lock_wait: Duration,
    feed: bool,
    cut_off_l1_ttl: Duration,
    degraded_ttl: Duration,
    hot_keys: Option<HotKeyOptions>,
    codec: PhantomData<fn() -> C>,
}

impl TieredCache<Binary> {
    /// A builder with the defaults: L1 of 100,000 entries, no Redis, the
    /// binary codec, the five built-in classes.
    pub fn builder() -> TieredCacheBuilder<Binary> {
        TieredCacheBuilder {
            name: "default".to_owned(),
            l1: Some(L1Capacity::Entries(100_000)),
            redis: None,
            prefix: DEFAULT_PREFIX.to_owned(),
            redis_timeout: Duration::from_millis(250),
            failures_to_open: 5,
            probe_interval: Duration::from_secs(1),
            format: 1,
            classes: Class::BUILT_IN
                .iter()
                .map(|(_, name, ttl)| ClassDef {
                    name: (*name).to_owned(),
                    policy: Policy::new(*ttl),
                })
                .collect(),
            stream_max_len: 10_000,
            lock_wait: Duration::from_secs(2),
            feed: true,
            cut_off_l1_ttl: Duration::from_secs(5),
            degraded_ttl: DEFAULT_DEGRADED_TTL,
            hot_keys: None,
            codec: PhantomData,
        }
    }
}

impl<C: Codec> TieredCacheBuilder<C> {
    /// The cache's name, a label of its metrics.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Bounds L1.
    #[must_use]
    pub fn l1(mut self, capacity: L1Capacity) -> Self {
        self.l1 = Some(capacity);
        self
    }

    /// No L1: every read goes to Redis.
    #[must_use]
    pub fn without_l1(mut self) -> Self {
        self.l1 = None;
        self
    }

    /// Adds the Redis tier on `client` (standalone, Sentinel or Cluster).
    /// Give the client a reconnect policy: the cache's circuit breaker
    /// waits for it to reconnect.
    #[must_use]
    pub fn redis(mut self, client: Client) -> Self {
        self.redis = Some(client);
        self
    }

    /// The prefix of every Redis key (default [`DEFAULT_PREFIX`]); caches
    /// with the same prefix share values and invalidations.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The longest any Redis call may take (default 250 ms).
    #[must_use]
    pub fn redis_timeout(mut self, timeout: Duration) -> Self {
        self.redis_timeout = timeout;
        self
    }

    /// The circuit breaker: open after `failures` failed Redis calls in a
    /// row (default 5), or as soon as the client reports a connection to
    /// Redis lost (closed, refused or timed out); probe every
    /// `probe_interval` (default 1 s), closing once every server answers.
    #[must_use]
    pub fn breaker(mut self, failures: u32, probe_interval: Duration) -> Self {
        self.failures_to_open = failures;
        self.probe_interval = probe_interval;
        self
    }

    /// The format version of cached values (default 1): bump it when a
    /// cached type changes, and values of the old shape become misses.
    #[must_use]
    pub fn format_version(mut self, version: u32) -> Self {
        self.format = version;
        self
    }

    /// Redefines a built-in class's policy.
    #[must_use]
    pub fn class(mut self, class: Class, policy: Policy) -> Self {
        if let Some(def) = self.classes.get_mut(usize::from(class.0)) {
            def.policy = policy;
        }
        self
    }

    /// Adds a class of its own (or redefines the one of that name); the
    /// cache's [`class`](TieredCache::class) finds its handle by name.
    #[must_use]
    pub fn define(mut self, name: impl Into<String>, policy: Policy) -> Self {
        let name = name.into();
        match self.classes.iter_mut().find(|def| def.name == name) {
            Some(def) => def.policy = policy,
            None => self.classes.push(ClassDef { name, policy }),
        }
        self
    }

    /// How many invalidations the stream keeps for instances that were cut
    /// off (default 10,000); an instance that missed more clears its L1.
    #[must_use]
    pub fn invalidation_history(mut self, entries: u64) -> Self {
        self.stream_max_len = entries.max(1);
        self
    }

    /// Whether this instance follows other instances' invalidations
    /// (default yes, with Redis). Without it, only L1 TTLs bound staleness.
    #[must_use]
    pub fn follow_invalidations(mut self, follow: bool) -> Self {
        self.feed = follow;
        self
    }

    /// The longest L1 keeps a value it took while this instance could not
    /// follow other instances' invalidations (default 5 s), or the value's
    /// [degraded TTL](Self::degraded_ttl) where that is longer. Once the
    /// feed has caught up L1 answers with it as with any other, and an
    /// invalidation that never reached the stream (its sender stopped while
    /// it could not reach Redis) cannot have dropped what L1 took in the
    /// meantime. This bounds how long such a copy is served.
    #[must_use]
    pub fn cut_off_l1_ttl(mut self, ttl: Duration) -> Self {
        self.cut_off_l1_ttl = ttl;
        self
    }

    /// How stale L1 may answer while this instance cannot follow other
    /// instances' invalidations, because Redis (or the stream's node) is
    /// out of reach (default [`DEFAULT_DEGRADED_TTL`], 1 s; zero: L1
    /// answers nothing meanwhile, every read goes to Redis or the loader).
    ///
    /// Meanwhile L1 answers with a value only within `ttl` of the later of
    /// its creation and the last moment the feed had the stream's end
    /// (its last read that answered, at most about a second before the
    /// loss); past that, a read loads again (and what it loads is kept
    /// that long). The values L1 held at the loss stop at points spread
    /// over the second half of `ttl`, by key, so that their loads do not
    /// all come at once. So a reader may see a value that another instance has
    /// replaced or invalidated for at most `ttl` after that write, or after
    /// the stream was lost when the write came just before; never longer.
    /// This instance's own writes and invalidations still reach its L1 at
    /// once. When the feed follows again, it replays what it missed, or
    /// clears L1 when the stream no longer holds it, as after any
    /// disconnection. Without it (FusionCache's fail-safe is the model),
    /// an instance whose Redis died handed its database every read.
    #[must_use]
    pub fn degraded_ttl(mut self, ttl: Duration) -> Self {
        self.degraded_ttl = ttl;
        self
    }

    /// How long a miss waits for another instance that holds the load's
    /// distributed lock (default 2 s) before loading itself.
    #[must_use]
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    /// Uses another codec.
    pub fn codec<D: Codec>(self) -> TieredCacheBuilder<D> {
        TieredCacheBuilder {
            name: self.name,
            l1: self.l1,
            redis: self.redis,
            prefix: self.prefix,
            redis_timeout: self.redis_timeout,
            failures_to_open: self.failures_to_open,
            probe_interval: self.probe_interval,
            format: self.format,
            classes: self.classes,
            stream_max_len: self.stream_max_len,
            lock_wait: self.lock_wait,
            feed: self.feed,
            cut_off_l1_ttl: self.cut_off_l1_ttl,
            degraded_ttl: self.degraded_ttl,
            hot_keys: self.hot_keys,
            codec: PhantomData,
        }
    }

    /// Learns which keys of each class are read most (through
    /// [`get_or_load`](TieredCache::get_or_load)), for a warm-up to load
    /// after a start, a failover or a clear: see
    /// [`TieredCache::hot_keys`]. With Redis, every instance adds to one
    /// ranking per class there, which outlives them; without, the ranking
    /// is this process's ([`TieredCache::learned_hot_keys`] and
    /// [`TieredCache::add_hot_keys`] carry it over a restart). Off by
    /// default.
    #[must_use]
    pub fn learn_hot_keys(mut self, options: HotKeyOptions) -> Self {
        self.hot_keys = Some(options);
        self
    }

    /// The cache. With Redis, it must be called within a Tokio runtime (the
    /// invalidation feed runs on it).
    ///
    /// Every duration counts for at most a century (longer ones, up to
    /// `Duration::MAX`, mean "forever" and are taken as a century); a zero
    /// TTL, hard timeout, Redis timeout or probe interval is refused with
    /// [`Error::Config`].
    pub fn build(mut self) -> Result<TieredCache<C>> {
        self.redis_timeout = self.redis_timeout.min(LONGEST);
        self.probe_interval = self.probe_interval.min(LONGEST);
        self.lock_wait = self.lock_wait.min(LONGEST);
        self.cut_off_l1_ttl = self.cut_off_l1_ttl.min(LONGEST);
        for def in &mut self.classes {
            def.policy = def.policy.clone().clamped(LONGEST);
        }
        if self.l1.is_none() && self.redis.is_none() {
            return Err(Error::Config("a cache needs L1, Redis or both".into()));
        }
        if matches!(self.l1, Some(L1Capacity::Entries(0) | L1Capacity::Bytes(0))) {
            return Err(Error::Config("an L1 capacity of zero".into()));
        }
        if self.redis_timeout.is_zero() || self.probe_interval.is_zero() {
            return Err(Error::Config(
                "a Redis timeout or probe interval of zero".into(),
            ));
        }
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            return Err(Error::Config(format!(
                "a key prefix is non-empty and has no braces, not {:?}",
                self.prefix
            )));
        }
        if self.classes.len() > usize::from(u16::MAX) {
            return Err(Error::Config("more than 65,535 classes".into()));
        }
        for def in &self.classes {
            def.policy.validate(&def.name)?;
        }
        if let Some(options) = &self.hot_keys {
            options.validate()?;
        }
        let runtime = match &self.redis {
            Some(_) => Some(tokio::runtime::Handle::try_current().map_err(|_| {
                Error::Config("a cache with Redis is built within a Tokio runtime".into())
            })?),
            None => None,
        };
        let counters: Arc<[ClassCounters]> = self
            .classes
            .iter()
            .map(|_| ClassCounters::default())
            .collect();
        let cache_counters = Arc::new(CacheCounters::default());
        let longest_load = self
            .classes
            .iter()
            .map(|def| def.policy.hard_timeout)
            .max()
            .unwrap_or(Duration::from_secs(30));
        let l2 = self.redis.clone().map(|client| {
            let tier = RedisTier::new(
                client,
                self.prefix.clone(),
                self.redis_timeout,
                self.probe_interval,
                self.failures_to_open,
                Arc::clone(&cache_counters),
            );
            tier.watch_connections();
            tier
        });
        let locks = self.redis.clone().map(|client| {
            RedisLocks::with_options(
                client,
                format!("{}:lock", self.prefix),
                self.redis_timeout,
                Duration::from_secs(3600),
            )
        });
        // The longest a class's value may stand in for a failed load (a
        // cached "not found" stays for less).
        let keep = self
            .classes
            .iter()
            .map(|def| def.policy.ttl.saturating_add(def.policy.fail_safe))
            .max()
            .unwrap_or(Duration::ZERO);
        let learner = self
            .hot_keys
            .map(|options| Learner::new(options, self.classes.len()));
        let inner = Arc::new(Inner {
            name: self.name,
            l1: self
                .l1
                .map(|capacity| MemoryTier::new(capacity, Arc::clone(&counters), keep)),
            l2,
            locks,
            classes: self.classes.into(),
            counters,
            cache_counters,
            codec: C::ID,
            format: self.format,
            flights: Mutex::new(HashMap::new()),
            origin: format!("{:016x}", crate::lock::random_u64()),
            stream_max_len: self.stream_max_len,
            // Longer than any load (its wait for the lock included), so a
            // load that began before an invalidation finds the tombstone
            // when it would write; but never longer than a value of any
            // class could have lived, which is all a tombstone stands for
            // (a load that outlives it finds the key absent, or another
            // load's lease, and is refused all the same).
            tombstone_ttl: longest_load
                .saturating_add(self.lock_wait)
                .saturating_add(Duration::from_secs(5))
                .min(keep.max(Duration::from_secs(1))),
            lock_wait: self.lock_wait,
            pending: Mutex::new(Pending::default()),
            pending_added: Arc::default(),
            feed_connected: AtomicBool::new(false),
            unfollowed_l1_ttl: self.cut_off_l1_ttl,
            degraded_ttl: self.degraded_ttl,
            followed_at_ms: AtomicU64::new(0),
            follows: self.redis.is_some() && self.feed && self.l1.is_some(),
            epoch: AtomicU64::new(0),
            learner,
            l1_cleared: tokio::sync::watch::Sender::new(0),
        });
        if let Some(runtime) = &runtime
            && inner.l2.is_some()
        {
            runtime.spawn(crate::feed::resend(
                Arc::downgrade(&inner),
                Arc::clone(&inner.pending_added),
            ));
        }
        // Without Redis a cache may be built outside a runtime: it merges
        // its sample then only when the ranking is read.
        let here = runtime
            .clone()
            .or_else(|| tokio::runtime::Handle::try_current().ok());
        if let (Some(here), Some(learner)) = (here, &inner.learner) {
            here.spawn(merge_hot_keys(
                Arc::downgrade(&inner),
                learner.options.merge_every,
            ));
        }
        if let (Some(runtime), Some(client), true) = (runtime, self.redis, inner.follows) {
            runtime.spawn(crate::feed::follow(Arc::downgrade(&inner), client));
        }
        Ok(TieredCache {
            inner,
            codec: PhantomData,
        })
    }
}

/// Merges each class's sampled reads every `every` (into Redis too, when
/// the cache has it), until the cache is dropped.
async fn merge_hot_keys(inner: std::sync::Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let Some(learner) = &inner.learner else {
            return;
        };
        for index in 0..learner.classes() {
            // A failure loses this interval's sample; the breaker counts it.
            merge_hot(&inner, learner, index).await;
        }
    }
}

/// Merges the reads of the class at `index` sampled since the last merge
/// into the ranking here and, with Redis, into the shared one; true when
/// Redis holds every read sampled so far (nothing to send, or sent).
async fn merge_hot(inner: &Inner, learner: &Learner, index: usize) -> bool {
    let counts = learner.merge(index);
    match (&inner.l2, inner.classes.get(index)) {
        (Some(l2), Some(def)) if !counts.is_empty() => {
            let options = &learner.options;
            l2.learn_hot(&def.name, &counts, options.half_life, options.capacity)
                .await
                .is_ok()
        }
        _ => true,
    }
}

impl<C: Codec> TieredCache<C> {
    /// The handle of the class named `name`.
    pub fn class(&self, name: &str) -> Option<Class> {
        let index = self.inner.classes.iter().position(|def| def.name == name)?;
        u16::try_from(index).ok().map(Class)
    }

    /// The name of `class` in this cache.
    pub fn class_name(&self, class: Class) -> Option<&str> {
        self.inner
            .classes
            .get(usize::from(class.0))
            .map(|def| def.name.as_str())
    }

    /// The policy of `class` in this cache.
    pub fn policy(&self, class: Class) -> Option<&Policy> {
        self.inner
            .classes
            .get(usize::from(class.0))
            .map(|def| &def.policy)
    }

    /// Whether the cache has a Redis tier.
    pub fn has_redis(&self) -> bool {
        self.inner.l2.is_some()
    }

    /// The cached value of `key`, from L1 or Redis; `None` on a miss, a
    /// cached "not found", a value of another type or format, or when Redis
    /// fails (counted, never returned).
    pub async fn get<T>(&self, key: &str, class: Class) -> Option<T>
    where
        T: DeserializeOwned + Clone + Send + Sync + 'static,
    {
        let inner = &*self.inner;
        let counters = inner.counters_of(class);
        let now = now_ms();
        if inner.l1.is_some() {
            if let Some(value) = self.l1_hit(key, class, now) {
                return value;
            }
            inner.missed(class, Tier::L1);
        }
        let l2 = inner.usable_l2()?;
        let since = inner.epoch();
        let Some(bytes) = l2.get(key).await.ok().flatten() else {
            inner.missed(class, Tier::L2);
            return None;
        };
        let found = inner.decode_fresh::<T, C>(&bytes, now);
        match found {
            Some((value, meta, tags)) => {
                bump(&counters.l2_hits);
                let shared = value.clone().map(|v| Arc::new(v) as _);
                inner.fill_l1(
                    key,
                    class,
                    shared,
                    meta,
                    tags,
                    bytes.len(),
                    Since::Epoch(since),
                );
                value
            }
            None => {
                inner.missed(class, Tier::L2);
                None
            }
        }
    }

    /// The value of `key` in this process's memory (L1) alone, never asking
    /// Redis: `None` on a miss, an expired entry, a cached "not found", a
    /// value of another type, or one L1 may not answer with (this instance
    /// is cut off from other instances' invalidations, and the value is
    /// older than [`TieredCacheBuilder::degraded_ttl`] allows). For a caller that
    /// decides, from what it finds, whether a read of Redis or the source is
    /// worth paying for; a hit counts as an L1 hit, a miss counts nothing.
    ///
    /// ```
    /// use seawall_cache::{Class, TieredCache};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), seawall_cache::Error> {
    /// let cache = TieredCache::builder().build()?;
    /// assert_eq!(cache.get_local::<u64>("answer", Class::API), None);
    /// cache.set("answer", Class::API, 42_u64).await?;
    /// assert_eq!(cache.get_local::<u64>("answer", Class::API), Some(42));
    /// # Ok(())
    /// # }
    /// ```
    pub fn get_local<T>(&self, key: &str, class: Class) -> Option<T>
    where
        T: DeserializeOwned + Clone + Send + Sync + 'static,
    {
        self.l1_hit(key, class, now_ms()).flatten()
    }

    /// `key`'s value in L1 when L1 may answer and holds it fresh at `now`
    /// as a `T` (`Some(None)`: a cached "not found"), counted as an L1 hit;
    /// `None` otherwise, counted as nothing.
    fn l1_hit<T>(&self, key: &str, class: Class, now: u64) -> Option<Option<T>>
    where
        T: Clone + 'static,
    {
        let inner = &*self.inner;
        let l1 = inner.l1.as_ref()?;
        let entry = l1.get(key).filter(|entry| {
            now < entry.l1_fresh_until_ms && inner.l1_answers(key, &entry.meta, now)
        })?;
        let value = typed::<T>(&entry.value)?;
        bump(&inner.counters_of(class).l1_hits);
        Some(value)
    }

    /// The cached values of `keys`, in order: L1 first, then the rest from
    /// Redis with one `MGET` per hash slot, sent together.
    pub async fn get_many<T, K>(&self, keys: &[K], class: Class) -> Vec<Option<T>>
    where
        T: DeserializeOwned + Clone + Send + Sync + 'static,
        K: AsRef<str>,
    {
        let inner = &*self.inner;
        let counters = inner.counters_of(class);
        let now = now_ms();
        let mut found: Vec<Option<Option<T>>> = vec![None; keys.len()];
        if let Some(l1) = inner.l1.as_ref() {
            for (slot, key) in found.iter_mut().zip(keys) {
                match l1.get(key.as_ref()) {
                    Some(entry)
                        if now < entry.l1_fresh_until_ms
                            && inner.l1_answers(key.as_ref(), &entry.meta, now) =>
                    {
                        *slot = typed::<T>(&entry.value);
                    }
                    _ => {}
                }
                if slot.is_some() {
                    bump(&counters.l1_hits);
                } else {
                    inner.missed(class, Tier::L1);
                }
            }
        }
        let missing: Vec<usize> = (0..keys.len()).filter(|i| found[*i].is_none()).collect();
        if let (Some(l2), false) = (inner.usable_l2(), missing.is_empty()) {
            let names: Vec<&str> = missing.iter().map(|i| keys[*i].as_ref()).collect();
            let since = inner.epoch();
            let values = l2
                .mget(&names)
                .await
                .unwrap_or_else(|_| vec![None; names.len()]);
            for (index, bytes) in missing.into_iter().zip(values) {
                let len = bytes.as_ref().map_or(0, Vec::len);
                let decoded = bytes.and_then(|bytes| inner.decode_fresh::<T, C>(&bytes, now));
                match decoded {
                    Some((value, meta, tags)) => {
                        bump(&counters.l2_hits);
                        let shared = value.clone().map(|v| Arc::new(v) as _);
                        let key = keys[index].as_ref();
                        inner.fill_l1(key, class, shared, meta, tags, len, Since::Epoch(since));
                        found[index] = Some(value);
                    }
                    None => inner.missed(class, Tier::L2),
                }
            }
        }
        found.into_iter().map(Option::flatten).collect()
    }

    /// The value of `key`: from L1, else from Redis, else from `loader`,
    /// whose result (a value, or `None` for "not found") is cached in both
    /// tiers by `options`' class.
    ///
    /// - Concurrent misses of one key in this process run `loader` once;
    ///   with the class's distributed lock, once across instances (the
    ///   others wait up to the lock wait, or serve the previous value).
    /// - The load runs in its own task: a caller cancelled mid-load, a
    ///   panicking loader or one past the hard timeout never wedge the key.
    /// - A fresh value may be refreshed early in the background (XFetch or
    ///   refresh-ahead); an expired one is served at once while it refreshes
    ///   if the class has a stale-while-revalidate window.
    /// - Fail-safe: when the load fails, panics, times out, or passes the
    ///   soft timeout, a previous value within the class's fail-safe window
    ///   is returned instead (counted as a stale serve).
    ///
    /// Redis failures never reach the caller: the cache falls back to L1
    /// and the loader.
    pub async fn get_or_load<T, F, Fut, E>(
        &self,
        key: &str,
        options: impl Into<Options>,
        loader: F,
    ) -> Result<Option<T>>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<Option<T>, E>> + Send + 'static,
        E: Into<BoxError> + Send + 'static,
    {
        let options = options.into();
        if let Some(learner) = &self.inner.learner {
            learner.record(options.class, key);
        }
        load::get_or_load::<T, C, F, Fut, E>(&self.inner, key, options, loader).await
    }

    /// Stores `value` under `key` in both tiers, for its class's TTL, and
    /// has every other instance drop its L1 copy. If Redis cannot be
    /// written, the error says so, L1 here drops the key, and the key is
    /// invalidated everywhere once Redis answers.
    pub async fn set<T>(&self, key: &str, options: impl Into<Options>, value: T) -> Result<()>
    where
        T: Serialize + Send + Sync + 'static,
    {
        self.set_many(vec![(key.to_owned(), value)], options).await
    }

    /// Stores every value, with the same options: Redis writes go out
    /// together (one round trip on a standalone server).
    pub async fn set_many<T>(
        &self,
        entries: Vec<(String, T)>,
        options: impl Into<Options>,
    ) -> Result<()>
    where
        T: Serialize + Send + Sync + 'static,
    {
        let options = options.into();
        options.validate()?;
        let inner = &*self.inner;
        let policy = inner.policy_of(options.class);
        let now = now_ms();
        let mut writes = Vec::with_capacity(entries.len());
        let mut l1_entries = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let ttl = policy.jittered(policy.ttl);
            let keep = ttl.saturating_add(policy.fail_safe);
            let meta = Meta {
                created_ms: now,
                fresh_until_ms: now.saturating_add(ms(ttl)),
                stale_until_ms: now.saturating_add(ms(keep)),
                delta_ms: 0,
                class: options.class.0,
                negative: false,
            };
            let bytes = encode::<C, T>(&key, Some(&value), &meta, &options.tags, inner)?;
            writes.push((key.clone(), bytes.clone(), keep));
            l1_entries.push((
                key,
                Arc::new(value) as Arc<dyn std::any::Any + Send + Sync>,
                meta,
                bytes.len(),
            ));
        }
        // An invalidation applied here from now on may be another
        // instance's write that lands in Redis after this one: the value
        // then goes in Redis but not in L1.
        let since = inner.epoch();
        let result = match (&inner.l2, inner.usable_l2()) {
            (None, _) => Ok(()),
            (Some(_), None) => Err(Error::Unavailable("the circuit breaker is open")),
            (Some(_), Some(l2)) => {
                let keys: Vec<String> = writes.iter().map(|(key, _, _)| key.clone()).collect();
                // Each key joins its tags' sets before its value is written,
                // so a tag invalidation never misses a value that carries
                // the tag.
                let keep = policy.ttl.saturating_add(policy.fail_safe);
                let tagged = if options.tags.is_empty() {
                    Ok(())
                } else {
                    let tags = keys.iter().map(|key| l2.tag(key, &options.tags, keep));
                    futures_util::future::join_all(tags)
                        .await
                        .into_iter()
                        .collect::<Result<Vec<()>>>()
                        .map(drop)
                };
                let written = match tagged {
                    Ok(()) => l2.set_many(writes).await,
                    Err(error) => Err(error),
                };
                if written.is_ok() {
                    let announcements = keys
                        .iter()
                        .map(|key| inner.announce(Invalidation::Key(key.clone())));
                    futures_util::future::join_all(announcements).await;
                }
                written
            }
        };
        if result.is_err() {
            // Redis may still hold the old values: they are invalidated
            // (tombstoned and announced) once it answers.
            for (key, ..) in &l1_entries {
                inner.defer(Invalidation::Key(key.clone()));
            }
        }
        let entries = l1_entries
            .into_iter()
            .map(|(key, value, meta, len)| (key, Some(value), meta, len))
            .collect();
        inner.written_here(
            entries,
            options.class,
            &options.tags,
            since,
            result.is_err(),
        );
        result
    }

    /// Writes `value` to the source of truth with `writer`, then updates the
    /// cache by the class's (or the call's) [`WriteStrategy`]: invalidate
    /// the key, or write the value through. The cache is left alone if the
    /// writer fails.
    pub async fn write<T, W, Fut, E>(
        &self,
        key: &str,
        options: impl Into<Options>,
        value: T,
        writer: W,
    ) -> Result<()>
    where
        T: Serialize + Clone + Send + Sync + 'static,
        W: FnOnce(T) -> Fut,
        Fut: Future<Output = std::result::Result<(), E>>,
        E: Into<BoxError>,
    {
        let options = options.into();
        options.validate()?;
        let strategy = options
            .write
            .unwrap_or(self.inner.policy_of(options.class).write);
        writer(value.clone()).await.map_err(|error| Error::Load {
            key: key.to_owned(),
            source: error.into(),
        })?;
        match strategy {
            WriteStrategy::Through => self.set(key, options, value).await,
            WriteStrategy::Invalidate => self.invalidate(key).await,
        }
    }

    /// Drops `key` everywhere: a tombstone replaces it in Redis (so a load
    /// that started before cannot write the old value back), then every
    /// instance is told to drop its L1 copy. L1 here is dropped even if
    /// Redis fails; the Redis part is then retried once Redis answers, and
    /// the error says so.
    pub async fn invalidate(&self, key: &str) -> Result<()> {
        self.inner
            .invalidate(Invalidation::Key(key.to_owned()))
            .await
    }

    /// Drops every value written with `tag`, everywhere.
    pub async fn invalidate_tag(&self, tag: &str) -> Result<()> {
        if tag.is_empty() || tag.len() > crate::options::MAX_TAG_LEN {
            return Err(Error::Invalid(format!("a tag of {} bytes", tag.len())));
        }
        self.inner
            .invalidate(Invalidation::Tag(tag.to_owned()))
            .await
    }

    /// Drops every key matching the glob `pattern` (Redis's `SCAN MATCH`
    /// syntax), everywhere: `SCAN` and `UNLINK` in batches on every master,
    /// never `KEYS`. A pattern is 1 to [`MAX_PATTERN_LEN`] bytes
    /// ([`Error::Invalid`] otherwise, and nothing is dropped).
    ///
    /// [`MAX_PATTERN_LEN`]: crate::MAX_PATTERN_LEN
    pub async fn invalidate_pattern(&self, pattern: &str) -> Result<()> {
        if pattern.is_empty() || pattern.len() > crate::MAX_PATTERN_LEN {
            return Err(Error::Invalid(format!(
                "a pattern is 1 to {} bytes, not {}",
                crate::MAX_PATTERN_LEN,
                pattern.len()
            )));
        }
        self.inner
            .invalidate(Invalidation::Pattern(pattern.to_owned()))
            .await
    }

    /// The `n` keys of `class` read most, the hottest first, as learned
    /// (see [`TieredCacheBuilder::learn_hot_keys`]): with Redis, by every
    /// instance together; without, or while Redis does not answer, by this
    /// one. Empty when the cache does not learn them. Reads sampled here
    /// since the last merge are merged first.
    ///
    /// A warm-up loads them with [`warm_up`](Self::warm_up), given a loader
    /// that knows what a key is of (see [`KeyBuilder::parts`](crate::KeyBuilder::parts)).
    ///
    /// ```
    /// use seawall_cache::{Class, HotKeyOptions, Options, TieredCache};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), seawall_cache::Error> {
    /// let cache = TieredCache::builder()
    ///     .learn_hot_keys(HotKeyOptions::default().sample(1))
    ///     .build()?;
    /// for key in ["page:1", "page:1", "page:2"] {
    ///     let _: Option<u32> = cache
    ///         .get_or_load(key, Class::API, || async { Ok::<_, std::io::Error>(Some(1)) })
    ///         .await?;
    /// }
    /// let hot = cache.hot_keys(Class::API, 10).await;
    /// assert_eq!(hot[0].key, "page:1");
    ///
    /// // After a clear, load the hottest keys again before traffic asks.
    /// cache.clear().await?;
    /// let keys = hot.into_iter().map(|hot| (hot.key, Options::new(Class::API)));
    /// let done = cache
    ///     .warm_up(keys, 8, |_key| async { Ok::<_, std::io::Error>(Some(1_u32)) }, |_| {})
    ///     .await;
    /// assert_eq!(done.done, 2);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn hot_keys(&self, class: Class, n: usize) -> Vec<HotKey> {
        let inner = &*self.inner;
        let (Some(learner), Some(def)) = (&inner.learner, inner.classes.get(usize::from(class.0)))
        else {
            return Vec::new();
        };
        let index = usize::from(class.0);
        let n = n.min(learner.options.capacity);
        let sent = merge_hot(inner, learner, index).await;
        if sent
            && let Some(l2) = &inner.l2
            && let Ok(ranked) = l2.hot_keys(&def.name, n).await
        {
            return ranked
                .into_iter()
                .map(|(key, reads)| HotKey { key, reads })
                .collect();
        }
        learner.top(index, n)
    }

    /// What this process learned, per class name, the hottest first, as of
    /// its last merge: for a service without Redis to keep over a restart
    /// and hand back through [`add_hot_keys`](Self::add_hot_keys). Empty
    /// when the cache does not learn.
    pub fn learned_hot_keys(&self) -> BTreeMap<String, Vec<HotKey>> {
        let inner = &*self.inner;
        let Some(learner) = &inner.learner else {
            return BTreeMap::new();
        };
        inner
            .classes
            .iter()
            .enumerate()
            .map(|(index, def)| {
                (
                    def.name.clone(),
                    learner.top(index, learner.options.capacity),
                )
            })
            .filter(|(_, hot)| !hot.is_empty())
            .collect()
    }

    /// Adds what an earlier process learned ([`learned_hot_keys`](Self::learned_hot_keys),
    /// per class name) to this one's ranking; classes this cache does not
    /// define are left out, and so are reads that are not finite and
    /// positive. Does nothing when the cache does not learn.
    pub fn add_hot_keys(&self, learned: &BTreeMap<String, Vec<HotKey>>) {
        let inner = &*self.inner;
        let Some(learner) = &inner.learner else {
            return;
        };
        for (index, def) in inner.classes.iter().enumerate() {
            if let Some(keys) = learned.get(&def.name) {
                learner.add(index, keys);
            }
        }
    }

    /// Changes each time L1 is cleared here: by [`clear`](Self::clear)
    /// on any instance, or because invalidations may have been missed (a
    /// failover or restart of the Redis server holding the stream, a cut
    /// longer than the stream keeps). A task that warms the cache again
    /// waits on it.
    pub fn l1_clears(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.l1_cleared.subscribe()
    }

    /// Drops everything this cache (and every cache with its prefix) holds.
    pub async fn clear(&self) -> Result<()> {
        self.inner.invalidate(Invalidation::Clear).await
    }

    /// Keys in the Redis databases the cache uses (all of their keys, not
    /// only the cache's), summed over every master; an error without Redis.
    pub async fn redis_keys(&self) -> Result<u64> {
        match &self.inner.l2 {
            Some(l2) => l2.keys().await,
            None => Err(Error::Unavailable("the cache has no Redis tier")),
        }
    }

    /// The counters and sizes.
    pub fn stats(&self) -> Stats {
        let inner = &*self.inner;
        let (l1_entries, l1_weighted_size) = inner.l1.as_ref().map_or((0, 0), MemoryTier::sizes);
        let mut stats = Stats {
            classes: inner
                .classes
                .iter()
                .zip(inner.counters.iter())
                .map(|(def, counters)| counters.snapshot(&def.name))
                .collect(),
            l1_entries,
            l1_weighted_size,
            breaker: match &inner.l2 {
                None => BreakerState::Absent,
                Some(l2) if l2.is_open() => BreakerState::Open,
                Some(_) => BreakerState::Closed,
            },
            following: inner.l1_trusted(),
            invalidations_pending: inner.has_pending(),
            redis_errors: 0,
            breaker_opened: 0,
            invalidations_sent: 0,
            invalidations_received: 0,
            l1_clears: 0,
            refused_fills: 0,
        };
        inner.cache_counters.fill(&mut stats);
        stats
    }

    /// Applies L1's pending writes and evictions now, so its sizes are exact
    /// (moka applies them in batches).
    pub fn sync(&self) {
        if let Some(l1) = &self.inner.l1 {
            l1.sync();
        }
    }

    /// Whether this instance currently follows other instances'
    /// invalidations (false without Redis, or while cut off from it).
    pub fn follows_invalidations(&self) -> bool {
        self.inner.feed_connected.load(Ordering::Relaxed)
    }

    /// A readiness check (`cache:invalidations`) that fails while L1 may
    /// hold copies other instances have invalidated: after a disconnection,
    /// until this instance has replayed what it missed (or cleared L1). A
    /// load balancer then sends it no requests until its L1 has caught up.
    /// It also fails while invalidations of writes this instance answered
    /// wait to reach Redis (it could not reach the key's server): until
    /// they are sent, which is tried every 200 ms, other instances may read
    /// the values those writes replaced. And it fails while the circuit
    /// breaker is open: the invalidations of writes answered then would
    /// wait in the same way. The breaker closes only once every server the
    /// cache writes to (each master of a Cluster) answers its probe.
    pub fn readiness_check(&self) -> FollowingCheck {
        FollowingCheck {
            cache: Arc::downgrade(&self.inner),
        }
    }

    /// Waits up to `within` for this instance to follow other instances'
    /// invalidations (at once without Redis); true if it does. Until it
    /// does, L1 answers no read, and a load still running when the feed
    /// takes its starting position stores its value in neither tier (it is
    /// answered all the same), since an invalidation may have passed
    /// unseen. A service calls it once at start.
    pub async fn wait_following(&self, within: Duration) -> bool {
        let deadline = deadline(within);
        while !self.inner.l1_trusted() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Exposes the stats through `monitor` (families `cache_*`, labelled
    /// with the cache's name), read at every scrape.
    pub fn register_metrics(&self, monitor: &seawall_perfmon::Monitor) -> Result<()> {
        let cache = Arc::downgrade(&self.inner);
        let name = self.inner.name.clone();
        monitor.register_collector(move || match cache.upgrade() {
            Some(inner) => stats::families(&name, &TieredCache::<C>::from_inner(inner).stats()),
            None => Vec::new(),
        })?;
        Ok(())
    }

    pub(crate) fn from_inner(inner: Arc<Inner>) -> Self {
        Self {
            inner,
            codec: PhantomData,
        }
    }
}

/// See [`TieredCache::readiness_check`].
#[derive(Debug, Clone)]
pub struct FollowingCheck {
    cache: std::sync::Weak<Inner>,
}

#[async_trait::async_trait]
impl seawall_perfmon::HealthCheck for FollowingCheck {
    fn key(&self) -> String {
        String::from("cache:invalidations")
    }

    async fn check(&self) -> seawall_perfmon::CheckResult {
        use seawall_perfmon::CheckResult;
        match self.cache.upgrade() {
            Some(inner) if !inner.l1_trusted() => CheckResult::fail(
                "not following other instances' invalidations yet; L1 is bypassed until it catches up",
            ),
            Some(inner) if inner.l2.as_ref().is_some_and(RedisTier::is_open) => CheckResult::fail(
                "Redis does not answer this instance (the circuit breaker is open): \
                 invalidations of its writes would not reach other instances",
            ),
            Some(inner) if inner.has_pending() => CheckResult::fail(
                "invalidations of writes this instance answered have not reached Redis yet; \
                 other instances may read the values they replaced until they do",
            ),
            _ => CheckResult::pass(),
        }
        .component_type("component")
    }
}
