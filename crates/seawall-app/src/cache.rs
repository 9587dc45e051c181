//! The tiered cache in front of the reference workload: its keys and tags,
//! warm-up progress, and a short history of hit ratios per class for the
//! dashboard.
//!
//! L1 alone on embedded defaults; L1 + Redis when a Redis URL is set, so
//! every instance shares loaded values and invalidations.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use seawall_cache::{
    Class, HotKey, HotKeyOptions, KeyBuilder, L1Capacity, Options, Policy, Stats, TieredCache,
    WarmUpProgress,
};
use seawall_perfmon::{CounterVec, Monitor};
use serde::Serialize;
use tokio::task::JoinHandle;
use utoipa::ToSchema;

use crate::config::CacheConfig;
use crate::redis::Redis;

/// How often the hit ratios are sampled, and how many samples are kept
/// (fifteen minutes).
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const SAMPLES: usize = 180;

/// The Redis key prefix of the service's cache.
const PREFIX: &str = "seawall:api:cache";

/// The class of points balances: five minutes, like API answers. With
/// Redis, L1 never answers for it alone: every read asks Redis, where a
/// change's invalidation lands before the change is answered, so a balance
/// read on any instance right after a change sees it (L1 copies on other
/// instances are dropped by the invalidation stream, a few milliseconds
/// later).
const BALANCE: &str = "balance";
const BALANCE_TTL: Duration = Duration::from_secs(5 * 60);

/// The class of identities the service issued (API keys, tenants' tiers):
/// a minute, with no fail-safe, so that once an invalidation (a revocation,
/// a tier change) has dropped an entry, no old copy stands in for a failed
/// read; "not found" is not cached in it (the source's answer drops this
/// process's copy, and a made-up identity writes nothing to Redis). The TTL
/// is the longest a revoked key can still work anywhere: see
/// [`keys`](crate::keys) for the window in each case.
pub const IDENTITY_TTL: Duration = Duration::from_secs(60);
const IDENTITY: &str = "identity";
/// How long this process remembers that an identity does not exist (a key
/// never issued or revoked, a tenant id that names none), and how many such
/// answers it keeps: in L1 only, so a flood of made-up identities costs a
/// bounded amount of memory and writes nothing to Redis.
const UNKNOWN_TTL: Duration = Duration::from_secs(10);
const UNKNOWN_ENTRIES: u64 = 10_000;

/// What a key family is cached as: its TTL class and key namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `/api/review/today`: schedule class.
    Today,
    /// `/api/analytics/stats`: computation class.
    Stats,
    /// `/api/content`: API-response class.
    Content,
}

impl Family {
    /// The TTL class values of the family are cached in.
    pub fn class(self) -> Class {
        match self {
            Self::Today => Class::SCHEDULE,
            Self::Stats => Class::COMPUTATION,
            Self::Content => Class::API,
        }
    }

    /// The key namespace, which is also where `DELETE /api/cache` looks.
    pub fn namespace(self) -> &'static str {
        match self {
            Self::Today => "today",
            Self::Stats => "stats",
            Self::Content => "content",
        }
    }
}

/// The tag of everything cached about one user.
pub fn user_tag(user_id: i64) -> String {
    format!("user:{user_id}")
}

/// Where a warm-up stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WarmUpState {
    /// None has run since start.
    #[default]
    Idle,
    /// One is running.
    Running,
    /// The last one finished.
    Done,
}

/// A warm-up's progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct WarmUp {
    // Whether one runs, ran, or none has. Plain comments where the OpenAPI
    // contract has no description: a doc comment would become one.
    #[allow(missing_docs)]
    pub state: WarmUpState,
    /// Keys to load.
    pub total: usize,
    /// Keys done.
    pub done: usize,
    /// Keys whose load failed.
    pub failed: usize,
}

/// Why a learned warm-up ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WarmReason {
    /// The instance started.
    Start,
    /// L1 was cleared: by a clear of the cache (here or on another
    /// instance), or because invalidations may have been missed (a
    /// failover of the Redis server holding the stream, a long cut).
    L1Cleared,
    /// Whole key families were dropped here (`DELETE /api/cache` with the
    /// pattern `*`).
    Dropped,
}

impl WarmReason {
    /// Its name, as in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::L1Cleared => "l1_cleared",
            Self::Dropped => "dropped",
        }
    }
}

/// The last warm-up of the keys the cache learned were hot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct LearnedWarmUp {
    // Why it ran. A plain comment: the OpenAPI contract shows the enum's
    // own schema.
    #[allow(missing_docs)]
    pub reason: WarmReason,
    /// When it finished, in Unix milliseconds.
    pub at_ms: u64,
    /// Keys it went through (loaded, or found cached).
    pub keys: usize,
    /// Of those, the keys it loaded (the rest were cached already).
    pub loaded: usize,
    /// Keys whose load failed.
    pub failed: usize,
    /// How long it took, in milliseconds.
    pub took_ms: u64,
}

/// Hit ratios per class over the last few seconds.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RatioPoint {
    /// When it was sampled, in Unix milliseconds.
    pub at_ms: u64,
    /// Per class (`schedule`, `computation`, `api`, ...): hits over reads
    /// since the previous sample; absent when the class had no reads.
    pub ratios: std::collections::BTreeMap<String, f64>,
}

/// The service's cache. Cheap to clone.
#[derive(Clone)]
pub struct ApiCache(Arc<Parts>);

struct Parts {
    cache: TieredCache,
    capacity: u64,
    today: KeyBuilder,
    stats: KeyBuilder,
    content: KeyBuilder,
    pending: KeyBuilder,
    /// A tenant's rate-limit tier.
    tier: KeyBuilder,
    /// An API key, by its digest.
    api_key: KeyBuilder,
    /// The class identities are cached in.
    identity: Class,
    /// Identities that do not exist, in this process only.
    unknown: TieredCache,
    /// A user's coupons.
    coupons: KeyBuilder,
    /// A user's points balance.
    points: KeyBuilder,
    /// The class balances are cached in.
    balance: Class,
    warm_up: Mutex<WarmUp>,
    /// How many hot keys of each family a learned warm-up loads.
    warm_hot: usize,
    learned: Mutex<Option<LearnedWarmUp>>,
    /// Learned warm-ups and the keys they went through, by reason.
    learned_warm_ups: CounterVec,
    learned_warm_keys: CounterVec,
    history: Arc<Mutex<VecDeque<RatioPoint>>>,
    sampler: JoinHandle<()>,
    /// Set while invalidations reach only this instance (Redis is out of
    /// reach): the first is warned of, the rest of the outage's at debug.
    local_only: AtomicBool,
}

impl Drop for Parts {
    fn drop(&mut self) {
        self.sampler.abort();
    }
}

impl ApiCache {
    /// The cache, unless it is off; with Redis as L2 when given.
    pub fn build(
        config: &CacheConfig,
        redis: Option<&Redis>,
        monitor: &Monitor,
    ) -> Result<Option<Self>, seawall_cache::Error> {
        if !config.enabled {
            return Ok(None);
        }
        let entries = u64::try_from(config.l1_entries).unwrap_or(u64::MAX);
        let mut builder = TieredCache::builder()
            .name("api")
            .prefix(PREFIX)
            .l1(L1Capacity::Entries(entries))
            .degraded_ttl(config.degraded_ttl);
        if config.warm_hot > 0 {
            // Room for more than a warm-up takes: a class holds keys of other
            // families (the learners' standing among the statistics, coupons
            // among the API answers) and of days gone by.
            let capacity = config.warm_hot.saturating_mul(2).min(100_000);
            builder = builder.learn_hot_keys(HotKeyOptions::default().capacity(capacity));
        }
        let balance = Policy::new(BALANCE_TTL);
        builder = builder.define(
            IDENTITY,
            // A revoked key stops working on an instance cut off from
            // Redis at once: its identity is never served from L1 there.
            Policy::new(IDENTITY_TTL)
                .fail_safe(Duration::ZERO)
                .negative_ttl(Duration::ZERO)
                .degraded_ttl(Duration::ZERO),
        );
        builder = match redis {
            Some(redis) => builder
                .redis(redis.client().clone())
                .define(BALANCE, balance.l1_ttl(Duration::ZERO)),
            None => builder.define(BALANCE, balance),
        };
        let cache = builder.build()?;
        let balance = cache.class(BALANCE).unwrap_or(Class::API);
        let identity = cache.class(IDENTITY).unwrap_or(Class::API);
        let unknown = TieredCache::builder()
            .name("api-unknown")
            .l1(L1Capacity::Entries(UNKNOWN_ENTRIES))
            .define(IDENTITY, Policy::new(UNKNOWN_TTL).fail_safe(Duration::ZERO))
            .build()?;
        cache.register_metrics(monitor)?;
        let learned_warm_ups = monitor.counter(
            "cache_learned_warm_ups",
            "Warm-ups of the hot keys the cache learned, by reason (start, l1_cleared, dropped).",
            &["reason"],
        )?;
        let learned_warm_keys = monitor.counter(
            "cache_learned_warm_keys",
            "Keys those warm-ups went through (loaded, or found cached), by reason.",
            &["reason"],
        )?;
        let history = Arc::new(Mutex::new(VecDeque::with_capacity(SAMPLES)));
        let sampler = tokio::spawn(sample(cache.clone(), Arc::clone(&history)));
        Ok(Some(Self(Arc::new(Parts {
            cache,
            capacity: entries,
            today: KeyBuilder::new(Family::Today.namespace())?,
            stats: KeyBuilder::new(Family::Stats.namespace())?,
            content: KeyBuilder::new(Family::Content.namespace())?,
            pending: KeyBuilder::new("pending")?,
            tier: KeyBuilder::new("tier")?,
            api_key: KeyBuilder::new("apikey")?,
            identity,
            unknown,
            coupons: KeyBuilder::new("coupons")?,
            points: KeyBuilder::new("points")?,
            balance,
            warm_up: Mutex::new(WarmUp::default()),
            warm_hot: config.warm_hot,
            learned: Mutex::new(None),
            learned_warm_ups,
            learned_warm_keys,
            history,
            sampler,
            local_only: AtomicBool::new(false),
        }))))
    }

    /// The tiered cache itself.
    pub fn cache(&self) -> &TieredCache {
        &self.0.cache
    }

    /// The most entries L1 holds.
    pub fn capacity(&self) -> u64 {
        self.0.capacity
    }

    /// The key of a user's due reviews for one UTC day, category and limit.
    pub fn today_key(&self, user_id: i64, day: i64, category: Option<&str>, limit: i64) -> String {
        self.0
            .today
            .start()
            .part(user_id)
            .part(day)
            .part(category.unwrap_or("*"))
            .part(limit)
            .finish()
    }

    /// The key of a review written behind the cache and not yet, perhaps,
    /// in the database.
    pub fn pending_key(&self, user_id: i64, content_id: i64) -> String {
        self.0.pending.key([user_id, content_id])
    }

    /// The key of a tenant's rate-limit tier, cached so a change made
    /// through one instance reaches every instance as an invalidation.
    pub fn tier_key(&self, tenant: &str) -> String {
        self.0.tier.key([tenant])
    }

    /// The key of an API key, by the key's digest (the key itself is never
    /// written anywhere).
    pub fn api_key_key(&self, digest: &str) -> String {
        self.0.api_key.key([digest])
    }

    /// An identity the service issued (an API key, a tenant's tier), read
    /// through the cache: `load` answers from the database, `None` for one
    /// that does not exist. A value is cached in both tiers; a `None` only
    /// in this process, for a few seconds and among a bounded number, so
    /// that made-up identities write nothing to Redis. Invalidating `key`
    /// (see [`TieredCache::invalidate`]) drops the value on every instance.
    pub async fn identity<T, F, Fut>(
        &self,
        key: &str,
        load: F,
    ) -> Result<Option<T>, seawall_cache::Error>
    where
        T: Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, sqlx::Error>> + Send + 'static,
    {
        let unknown = &self.0.unknown;
        let class = unknown.class(IDENTITY).unwrap_or(Class::API);
        if unknown.get::<bool>(key, class).await.is_some() {
            return Ok(None);
        }
        // "Not found" is an answer, never an error: an error lets a copy
        // this process holds stand in (when it is cut off from
        // invalidations), and a revoked key would be served from it.
        let found = self.0.cache.get_or_load(key, self.0.identity, load).await?;
        if found.is_none() {
            unknown.set(key, class, true).await?;
        }
        Ok(found)
    }

    /// An identity this process holds in memory (L1, while it follows the
    /// other instances' invalidations), found without a database or Redis
    /// read; `None` when finding it would need one.
    pub fn known_identity<T>(&self, key: &str) -> Option<T>
    where
        T: serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
    {
        self.0.cache.get_local(key, self.0.identity)
    }

    /// The key of a user's coupon list.
    pub fn coupons_key(&self, user_id: i64) -> String {
        self.0.coupons.key([user_id])
    }

    /// The key of a user's points balance.
    pub fn points_key(&self, user_id: i64) -> String {
        self.0.points.key([user_id])
    }

    /// The class a points balance is cached in: with Redis, read from
    /// Redis every time (L1 does not answer alone), so that a change made
    /// through any instance is seen by the next read on every instance.
    pub fn balance_class(&self) -> Class {
        self.0.balance
    }

    /// The key of a learner's statistics.
    pub fn stats_key(&self, user_id: i64) -> String {
        self.0.stats.key([user_id])
    }

    /// The key of the learners' review counts every user's standing is
    /// measured against, in the statistics' namespace.
    pub fn standing_key(&self) -> String {
        self.0.stats.key(["standing"])
    }

    /// The key of one catalogue page.
    pub fn content_key(&self, page: i64, page_size: i64, category: Option<&str>) -> String {
        self.0
            .content
            .start()
            .part(page)
            .part(page_size)
            .part(category.unwrap_or("*"))
            .finish()
    }

    /// The options of a family's entries, tagged with the user when there
    /// is one.
    pub fn options(family: Family, user_id: Option<i64>) -> Options {
        let options = Options::new(family.class());
        match user_id {
            Some(user_id) => options.tag(user_tag(user_id)),
            None => options,
        }
    }

    /// Drops everything cached about a user, on every instance. A Redis
    /// failure is logged, once per outage: the local copies are gone, and
    /// the Redis part is retried once Redis answers.
    pub async fn forget_user(&self, user_id: i64) {
        let done = self.0.cache.invalidate_tag(&user_tag(user_id)).await;
        self.reached(done.err(), "a user's cache entries");
    }

    /// Drops every cached statistics entry, on every instance (after the
    /// statistics were refreshed). A Redis failure is logged, as for
    /// [`ApiCache::forget_user`].
    pub async fn forget_stats(&self) {
        let pattern = format!("{}:*", Family::Stats.namespace());
        let done = self.0.cache.invalidate_pattern(&pattern).await;
        self.reached(done.err(), "the cached statistics");
    }

    /// Says how an invalidation of `what` went: the first that reached
    /// only this instance (`failed`) is warned of, the rest until one
    /// reaches Redis again at debug, and that one at info. A Redis that
    /// died otherwise logged a warning per write.
    fn reached(&self, failed: Option<seawall_cache::Error>, what: &str) {
        match failed {
            Some(error) if !self.0.local_only.swap(true, Ordering::Relaxed) => {
                tracing::warn!(%error, "invalidating {what} reached only this instance; the other instances get it once Redis answers (later ones until then are logged at debug)");
            }
            Some(error) => {
                tracing::debug!(%error, "invalidating {what} reached only this instance");
            }
            None => {
                if self.0.local_only.swap(false, Ordering::Relaxed) {
                    tracing::info!("invalidations reach every instance again");
                }
            }
        }
    }

    /// The counters, with L1's size exact (its pending writes applied).
    pub fn stats(&self) -> Stats {
        self.0.cache.sync();
        self.0.cache.stats()
    }

    /// The sampled hit ratios, oldest first (fifteen minutes at most).
    pub fn history(&self) -> Vec<RatioPoint> {
        self.0.history.lock().iter().cloned().collect()
    }

    /// Where the current or last warm-up stands.
    pub fn warm_up_progress(&self) -> WarmUp {
        *self.0.warm_up.lock()
    }

    /// Marks a warm-up of `total` keys as running; false if one already is.
    pub fn begin_warm_up(&self, total: usize) -> bool {
        let mut warm_up = self.0.warm_up.lock();
        if warm_up.state == WarmUpState::Running {
            return false;
        }
        *warm_up = WarmUp {
            state: WarmUpState::Running,
            total,
            done: 0,
            failed: 0,
        };
        true
    }

    /// Records a warm-up's progress; `finished` marks it done.
    pub fn report_warm_up(&self, progress: WarmUpProgress, finished: bool) {
        *self.0.warm_up.lock() = WarmUp {
            state: if finished {
                WarmUpState::Done
            } else {
                WarmUpState::Running
            },
            total: progress.total,
            done: progress.done,
            failed: progress.failed,
        };
    }

    /// How many of each family's hottest keys a learned warm-up loads (0:
    /// the cache learns none).
    pub fn warm_hot(&self) -> usize {
        self.0.warm_hot
    }

    /// Up to `n` of the family's keys read most, the hottest first, as the
    /// cache learned them (with Redis, over every instance).
    pub async fn hot_keys(&self, family: Family, n: usize) -> Vec<HotKey> {
        // The class may hold other keys (the learners' standing, among
        // the statistics): ask for more, keep the family's.
        let mut hot = self
            .0
            .cache
            .hot_keys(family.class(), n.saturating_mul(2))
            .await;
        hot.retain(|hot| self.parts_of(family, &hot.key).is_some());
        hot.truncate(n);
        hot
    }

    /// The parts of one of `family`'s keys, unescaped; `None` for a key of
    /// another namespace.
    pub fn parts_of(&self, family: Family, key: &str) -> Option<Vec<String>> {
        let keys = match family {
            Family::Today => &self.0.today,
            Family::Stats => &self.0.stats,
            Family::Content => &self.0.content,
        };
        keys.parts(key)
    }

    /// Records a learned warm-up: the last one, and the counters.
    pub fn report_learned_warm_up(&self, warmed: LearnedWarmUp) {
        *self.0.learned.lock() = Some(warmed);
        let reason = warmed.reason.as_str();
        if let Ok(counter) = self.0.learned_warm_ups.with_labels(&[reason]) {
            counter.inc();
        }
        if let Ok(counter) = self.0.learned_warm_keys.with_labels(&[reason]) {
            counter.inc_by(u64::try_from(warmed.keys).unwrap_or(u64::MAX));
        }
    }

    /// The last learned warm-up, if one ran.
    pub fn last_learned_warm_up(&self) -> Option<LearnedWarmUp> {
        *self.0.learned.lock()
    }

    /// Adds the hot keys an earlier process kept in `file` (see
    /// [`save_hot_keys`](Self::save_hot_keys)) to what this one learns. A
    /// missing file is no error: nothing was kept yet.
    pub fn load_hot_keys(&self, file: &Path) -> std::io::Result<usize> {
        let text = match std::fs::read(file) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(error) => return Err(error),
        };
        let learned: BTreeMap<String, Vec<HotKey>> = serde_json::from_slice(&text)
            .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidData, error))?;
        self.0.cache.add_hot_keys(&learned);
        Ok(learned.values().map(Vec::len).sum())
    }

    /// Writes the hot keys this process learned into `file`, whole or not
    /// at all (a temporary file beside it, then renamed over it).
    pub fn save_hot_keys(&self, file: &Path) -> std::io::Result<usize> {
        let learned = self.0.cache.learned_hot_keys();
        let text = serde_json::to_vec(&learned).map_err(std::io::Error::other)?;
        // A temporary file of this write's own: two writes at once (the
        // periodic one and the one at stop) never share one.
        let mut temporary = file.as_os_str().to_owned();
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let write = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        temporary.push(format!(".{}-{write}.tmp", std::process::id()));
        std::fs::write(&temporary, text)?;
        std::fs::rename(&temporary, file)?;
        Ok(learned.values().map(Vec::len).sum())
    }
}

/// Samples the hit ratio of every class that had reads since the last
/// sample.
async fn sample(cache: TieredCache, history: Arc<Mutex<VecDeque<RatioPoint>>>) {
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous = cache.stats();
    loop {
        ticks.tick().await;
        let now = cache.stats();
        let ratios = now
            .classes
            .iter()
            .zip(&previous.classes)
            .filter_map(|(now, before)| {
                let reads =
                    (now.l1.hits + now.l1.misses).saturating_sub(before.l1.hits + before.l1.misses);
                let hits =
                    (now.l1.hits + now.l2.hits).saturating_sub(before.l1.hits + before.l2.hits);
                #[allow(clippy::cast_precision_loss)] // counts far below 2^52
                (reads > 0).then(|| (now.class.clone(), hits as f64 / reads as f64))
            })
            .collect();
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            });
        let mut points = history.lock();
        if points.len() == SAMPLES {
            points.pop_front();
        }
        points.push_back(RatioPoint { at_ms, ratios });
        drop(points);
        previous = now;
    }
}
