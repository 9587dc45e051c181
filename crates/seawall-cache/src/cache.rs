//! `TieredCache`: its builder, reads, writes and invalidations. Loads are
//! in [`load`](crate::load), the invalidation feed in [`feed`](crate::feed).

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use fred::prelude::Client;
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::class::{Class, Policy, WriteStrategy};
use crate::codec::{self, Binary, Codec, Meta, Stored};
use crate::error::{BoxError, Error, Result};
use crate::glob;
use crate::load::Flight;
use crate::lock::RedisLocks;
use crate::memory::{Entry, L1Capacity, MemoryTier};
use crate::options::Options;
use crate::redis::RedisTier;
use crate::stats::{self, BreakerState, CacheCounters, ClassCounters, Stats, bump};

/// The default prefix of every Redis key of a cache.
pub const DEFAULT_PREFIX: &str = "seawall:cache";

/// A class's name and policy.
#[derive(Debug)]
pub(crate) struct ClassDef {
    pub(crate) name: String,
    pub(crate) policy: Policy,
}

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
    /// How long a tombstone holds an invalidated key: longer than any load.
    pub(crate) tombstone_ttl: Duration,
    /// How long a miss waits for another instance's load under its lock.
    pub(crate) lock_wait: Duration,
    /// Invalidations that could not reach Redis, sent once it answers.
    pub(crate) pending: Mutex<Pending>,
    pub(crate) feed_connected: AtomicBool,
    /// Whether this instance follows other instances' invalidations.
    pub(crate) follows: bool,
    /// Invalidations applied here so far.
    pub(crate) epoch: AtomicU64,
}

/// What a value put in L1 must not have been overtaken by.
#[derive(Clone, Copy)]
pub(crate) enum Since<'a> {
    /// An invalidation of the load's key while the load ran.
    Flight(&'a Flight),
    /// Any invalidation since the epoch was read.
    Epoch(u64),
    /// Nothing: the value was just written by this call.
    Written,
}

/// Invalidations waiting for Redis, bounded: past the bound, the whole
/// cache is cleared in Redis once it answers.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub(crate) invalidations: Vec<Invalidation>,
    pub(crate) overflowed: bool,
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
    /// row (default 5), probe every `probe_interval` (default 1 s).
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
            codec: PhantomData,
        }
    }

    /// The cache. With Redis, it must be called within a Tokio runtime (the
    /// invalidation feed runs on it).
    pub fn build(self) -> Result<TieredCache<C>> {
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
            RedisTier::new(
                client,
                self.prefix.clone(),
                self.redis_timeout,
                self.probe_interval,
                self.failures_to_open,
                Arc::clone(&cache_counters),
            )
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
            tombstone_ttl: longest_load + Duration::from_secs(5),
            lock_wait: self.lock_wait,
            pending: Mutex::new(Pending::default()),
            feed_connected: AtomicBool::new(false),
            follows: self.redis.is_some() && self.feed && self.l1.is_some(),
            epoch: AtomicU64::new(0),
        });
        if let (Some(runtime), Some(client), true) = (runtime, self.redis, inner.follows) {
            runtime.spawn(crate::feed::follow(Arc::downgrade(&inner), client));
        }
        Ok(TieredCache {
            inner,
            codec: PhantomData,
        })
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
        if let Some(l1) = inner.l1.as_ref().filter(|_| inner.l1_trusted()) {
            if let Some(entry) = l1.get(key)
                && now < entry.l1_fresh_until_ms
                && let Some(value) = typed::<T>(&entry.value)
            {
                bump(&counters.l1_hits);
                return value;
            }
            bump(&counters.l1_misses);
        }
        let l2 = inner.usable_l2()?;
        let since = inner.epoch();
        let Some(bytes) = l2.get(key).await.ok().flatten() else {
            bump(&counters.l2_misses);
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
                bump(&counters.l2_misses);
                None
            }
        }
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
        if let Some(l1) = inner.l1.as_ref().filter(|_| inner.l1_trusted()) {
            for (slot, key) in found.iter_mut().zip(keys) {
                match l1.get(key.as_ref()) {
                    Some(entry) if now < entry.l1_fresh_until_ms => {
                        *slot = typed::<T>(&entry.value);
                    }
                    _ => {}
                }
                bump(if slot.is_some() {
                    &counters.l1_hits
                } else {
                    &counters.l1_misses
                });
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
                    None => bump(&counters.l2_misses),
                }
            }
        }
        found.into_iter().map(Option::flatten).collect()
    }

    /// Stores `value` under `key` in both tiers, for its class's TTL, and
    /// has every other instance drop its L1 copy.
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
            let meta = Meta {
                created_ms: now,
                fresh_until_ms: now + ms(ttl),
                stale_until_ms: now + ms(ttl + policy.fail_safe),
                delta_ms: 0,
                class: options.class.0,
                negative: false,
            };
            let bytes = encode::<C, T>(&key, Some(&value), &meta, &options.tags, inner)?;
            writes.push((key.clone(), bytes.clone(), ttl + policy.fail_safe));
            l1_entries.push((
                key,
                Arc::new(value) as Arc<dyn std::any::Any + Send + Sync>,
                meta,
                bytes.len(),
            ));
        }
        let result = match inner.usable_l2() {
            Some(l2) => {
                let keys: Vec<String> = writes.iter().map(|(key, _, _)| key.clone()).collect();
                let stale_ttl = policy.ttl + policy.fail_safe;
                let written = l2.set_many(writes).await;
                if written.is_ok() && !options.tags.is_empty() {
                    let tags = keys.iter().map(|key| l2.tag(key, &options.tags, stale_ttl));
                    futures_util::future::join_all(tags).await;
                }
                let announcements = keys
                    .iter()
                    .map(|key| inner.announce(Invalidation::Key(key.clone())));
                futures_util::future::join_all(announcements).await;
                written
            }
            None => Ok(()),
        };
        for (key, value, meta, len) in l1_entries {
            inner.mark_flight(&key);
            inner.fill_l1(
                &key,
                options.class,
                Some(value),
                meta,
                options.tags.clone(),
                len,
                Since::Written,
            );
        }
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
    /// Always passes for a cache that follows no invalidations.
    pub fn readiness_check(&self) -> FollowingCheck {
        FollowingCheck {
            cache: Arc::downgrade(&self.inner),
        }
    }

    /// Waits up to `within` for this instance to follow other instances'
    /// invalidations (at once without Redis); true if it does. Until it
    /// does, L1 answers no read. A service calls it once at start.
    pub async fn wait_following(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
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

    /// Whether L1 may answer reads: always, unless this instance follows
    /// other instances' invalidations and is cut off from them (its copies
    /// may be stale until it catches up).
    pub(crate) fn l1_trusted(&self) -> bool {
        !self.follows || self.feed_connected.load(Ordering::Relaxed)
    }

    /// The Redis tier unless it is absent or its breaker is open.
    pub(crate) fn usable_l2(&self) -> Option<&RedisTier> {
        self.l2.as_ref().filter(|l2| !l2.is_open())
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
            Stored::Tombstone(tomb) => Some(Decoded::Tombstone(tomb.to_vec())),
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
        let policy = self.policy_of(class);
        let l1_ttl = policy.l1_ttl.unwrap_or(policy.ttl);
        let entry = Entry::new(value, meta, now_ms() + ms(l1_ttl), tags, encoded_len);
        let _flights = self.flights.lock();
        let overtaken = match since {
            Since::Flight(flight) => flight.overtaken(entry.tags(), self.epoch()),
            Since::Epoch(epoch) => self.epoch() != epoch,
            Since::Written => false,
        };
        if !overtaken {
            l1.insert(key, entry);
        }
    }

    /// Counts invalidations applied here, so a read can tell whether one
    /// came while it fetched from Redis.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Marks a running load of `key` (or every running load) as overtaken
    /// by an invalidation, so its result is not cached.
    pub(crate) fn mark_flight(&self, key: &str) {
        if let Some(flight) = self.flights.lock().get(key) {
            flight.invalidate();
        }
    }

    /// Applies an invalidation to L1 here.
    pub(crate) fn invalidate_local(&self, invalidation: &Invalidation) {
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
                Invalidation::Clear => l1.clear(),
            }
        }
    }

    /// Invalidates in Redis, announces, and drops from L1 here; a Redis
    /// failure queues the Redis part for when it answers.
    pub(crate) async fn invalidate(&self, invalidation: Invalidation) -> Result<()> {
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

    /// The Redis part of an invalidation: remove, then announce.
    pub(crate) async fn invalidate_remote(&self, invalidation: &Invalidation) -> Result<()> {
        let l2 = self
            .usable_l2()
            .ok_or(Error::Unavailable("the circuit breaker is open"))?;
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
                l2.unlink_matching(pattern).await?;
            }
            Invalidation::Clear => {
                l2.unlink_matching("*").await?;
            }
        }
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

    fn defer(&self, invalidation: Invalidation) {
        let mut pending = self.pending.lock();
        if pending.overflowed {
            return;
        }
        if pending.invalidations.len() >= MAX_PENDING {
            pending.invalidations.clear();
            pending.overflowed = true;
        } else if !pending.invalidations.contains(&invalidation) {
            pending.invalidations.push(invalidation);
        }
    }
}

/// What an L2 value holds once decoded.
pub(crate) enum Decoded<T> {
    Tombstone(Vec<u8>),
    Value(Option<T>, Meta, Vec<String>),
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
            _ => CheckResult::pass(),
        }
        .component_type("component")
    }
}
