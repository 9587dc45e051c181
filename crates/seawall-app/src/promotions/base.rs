//! The workload's shared parts: [`Promotions`] itself, the rules of a
//! campaign or sale, loading a pool from the database, and the checks every
//! operation makes. The operations live beside it, one module per part.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use seawall_perfmon::{Counter, Monitor};

use super::error::PromoError;
use super::pool::{PoolId, PoolKind, PoolSpec, Pools, Take};
use super::writes::Writers;
use crate::ServiceError;
use crate::cache::ApiCache;
use crate::config::{Config, QueueConfig};
use crate::db::replicas::Freshness;
use crate::db::{Db, Timed as _};
use crate::redis::Redis;
use crate::setup::QueueHandle;
use crate::time::{DAY_MS, now_ms, timestamp};

/// How long a pool's store keys outlive its window: the reconciliation and
/// late idempotent retries read them.
const KEEP_AFTER_END_MS: i64 = 7 * DAY_MS;
/// How long reloading a sale's stock waits for the queued orders to be
/// written.
const DRAIN_WAIT: Duration = Duration::from_secs(10);
/// The latest start of a campaign or sale (2100-01-01), in Unix ms.
pub const MAX_START_MS: i64 = 4_102_444_800_000;
/// The longest a campaign or sale stays open: 3,650 days.
pub const MAX_DURATION_MS: i64 = 3_650 * DAY_MS;
/// The most units a campaign or sale holds.
pub const MAX_QUANTITY: i64 = 10_000_000;
/// The most units one user may hold of a pool.
pub const MAX_PER_USER: i64 = 100;
/// The longest name of a campaign or sale, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// The promotions workload. Cheap to clone.
#[derive(Clone)]
pub struct Promotions(pub(super) Arc<Parts>);

pub(super) struct Parts {
    pub(super) db: Db,
    pub(super) pools: Pools,
    pub(super) cache: Option<ApiCache>,
    pub(super) queues: QueueHandle,
    pub(super) queue_config: QueueConfig,
    /// Campaigns' and sales' rules (rows never change once written).
    pub(super) specs: Mutex<HashMap<(PoolKind, i64), Spec>>,
    /// One load of each pool at a time in this process; loads of different
    /// pools never wait for each other.
    pub(super) loading: Loading,
    pub(super) earn_retries: Counter,
    pub(super) use_retries: Counter,
    /// Coupon rows and point changes, grouped on a SQLite file.
    pub(super) writers: Writers,
}

impl std::fmt::Debug for Promotions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Promotions")
            .field("pools", &self.0.pools)
            .field("cache", &self.0.cache.is_some())
            .finish_non_exhaustive()
    }
}

/// A campaign's or sale's rules, as its row holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Spec {
    pub(super) salt: i64,
    pub(super) name: String,
    pub(super) quantity: i64,
    pub(super) per_user: i64,
    pub(super) starts_at: i64,
    pub(super) ends_at: i64,
    pub(super) created_at: i64,
}

/// Why a pool is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Load {
    /// Its campaign or sale was just created: nothing was handed out yet.
    New,
    /// The store does not hold it: it may have handed out units before.
    Again,
}

impl Promotions {
    /// The workload on `db`, its pools on `redis` when given (in this
    /// process's memory otherwise), balances and coupon lists read through
    /// `cache` when given, orders carried by `queues`. Registers
    /// `promotions_points_retries_total` on `monitor`.
    pub fn new(
        db: Db,
        redis: Option<&Redis>,
        cache: Option<ApiCache>,
        queues: QueueHandle,
        config: &Config,
        monitor: &Monitor,
    ) -> Result<Self, seawall_perfmon::Error> {
        let retries = monitor.counter(
            "promotions_points_retries",
            "Point writes retried because another write changed the account first (optimistic \
             locking), by operation.",
            &["operation"],
        )?;
        let pools = match redis {
            Some(redis) => Pools::redis(
                redis.client().clone(),
                config.queue.wait_replicas,
                config.queue.wait_timeout,
            ),
            None => Pools::memory(),
        };
        let writers = Writers::start(&db);
        Ok(Self(Arc::new(Parts {
            db,
            pools,
            cache,
            queues,
            queue_config: config.queue.clone(),
            specs: Mutex::new(HashMap::new()),
            loading: Loading::default(),
            earn_retries: retries.with_labels(&["earn"])?,
            use_retries: retries.with_labels(&["use"])?,
            writers,
        })))
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.0.db
    }

    /// Whether coupons and stock are decided in this process's memory
    /// (no Redis).
    pub fn in_memory(&self) -> bool {
        self.0.pools.is_memory()
    }

    /// A campaign's or sale's pool and rules, from this process's copy or
    /// the database.
    pub(super) async fn pool(&self, kind: PoolKind, id: i64) -> Result<(PoolId, Spec), PromoError> {
        let spec = self.spec(kind, id).await?;
        let pool = PoolId {
            kind,
            id,
            salt: spec.salt,
        };
        Ok((pool, spec))
    }

    pub(super) async fn spec(&self, kind: PoolKind, id: i64) -> Result<Spec, PromoError> {
        if let Some(spec) = self.0.specs.lock().get(&(kind, id)) {
            return Ok(spec.clone());
        }
        const CAMPAIGN: &str = "SELECT salt, name, quantity, per_user, starts_at, ends_at, \
                                created_at FROM coupon_campaigns WHERE id = $1";
        const SALE: &str = "SELECT salt, name, stock, per_user, starts_at, ends_at, created_at \
                            FROM time_sales WHERE id = $1";
        let missing = || match kind {
            PoolKind::Coupons => PromoError::NoSuchCampaign(id),
            PoolKind::Stock => PromoError::NoSuchSale(id),
        };
        if id < 1 {
            return Err(missing());
        }
        let sql = match kind {
            PoolKind::Coupons => CAMPAIGN,
            PoolKind::Stock => SALE,
        };
        let db = self.db();
        // As of now: a campaign or sale created on another instance a
        // moment ago is found.
        let row: Option<(i64, String, i64, i64, i64, i64, i64)> = db
            .read(Freshness::NOW, |connection| {
                let db = db.clone();
                Box::pin(async move {
                    sqlx::query_as(sql)
                        .bind(id)
                        .fetch_optional(connection)
                        .timed(&db, sql)
                        .await
                })
            })
            .await
            .map_err(PromoError::database)?;
        let Some((salt, name, quantity, per_user, starts_at, ends_at, created_at)) = row else {
            return Err(missing());
        };
        let spec = Spec {
            salt,
            name,
            quantity,
            per_user,
            starts_at,
            ends_at,
            created_at,
        };
        self.0.specs.lock().insert((kind, id), spec.clone());
        Ok(spec)
    }

    /// Loads a pool into the store from its rows: the next unit after the
    /// highest written, and how many each user holds. A sale's stock loaded
    /// again (not just created) first waits for the queued orders to be
    /// written.
    pub(super) async fn load_pool(&self, pool: PoolId, load: Load) -> Result<(), PromoError> {
        const COUPONS_NEXT: &str =
            "SELECT COALESCE(MAX(number), 0) + 1 FROM coupons WHERE campaign_id = $1";
        const COUPON_HOLDERS: &str =
            "SELECT user_id, COUNT(*) FROM coupons WHERE campaign_id = $1 GROUP BY user_id";
        const ORDERS_NEXT: &str =
            "SELECT COALESCE(MAX(unit), 0) + 1 FROM sale_orders WHERE sale_id = $1";
        const ORDER_HOLDERS: &str =
            "SELECT user_id, COUNT(*) FROM sale_orders WHERE sale_id = $1 GROUP BY user_id";
        let spec = self.spec(pool.kind, pool.id).await?;
        // This pool's lock alone: a lost sale waiting for its queued orders,
        // or a slow read of its rows, holds up the requests of that sale
        // (which wait for the one load rather than each polling the queue),
        // never another campaign's or sale's.
        let _one_at_a_time = self.0.loading.lock(pool).await;
        if self.is_loaded(pool).await? {
            return Ok(());
        }
        if load == Load::Again && pool.kind == PoolKind::Stock && !self.0.pools.is_memory() {
            self.orders_drained(pool.id).await?;
        }
        let (next_sql, holders_sql) = match pool.kind {
            PoolKind::Coupons => (COUPONS_NEXT, COUPON_HOLDERS),
            PoolKind::Stock => (ORDERS_NEXT, ORDER_HOLDERS),
        };
        let db = self.db();
        let mut connection = db.acquire().await.map_err(PromoError::database)?;
        let next: i64 = sqlx::query_scalar(next_sql)
            .bind(pool.id)
            .fetch_one(&mut *connection)
            .timed(db, next_sql)
            .await
            .map_err(PromoError::database)?;
        let holders: Vec<(i64, i64)> = sqlx::query_as(holders_sql)
            .bind(pool.id)
            .fetch_all(&mut *connection)
            .timed(db, holders_sql)
            .await
            .map_err(PromoError::database)?;
        drop(connection);
        let loaded = self
            .0
            .pools
            .load(pool, pool_spec(&spec, next), &holders)
            .await
            .map_err(PromoError::Store)?;
        if loaded && next > 1 {
            tracing::info!(?pool, next, "a pool was loaded again from the database");
        }
        Ok(())
    }

    /// Whether the store holds `pool`.
    async fn is_loaded(&self, pool: PoolId) -> Result<bool, PromoError> {
        let status = self.0.pools.status(pool).await;
        Ok(status.map_err(PromoError::Store)?.is_some())
    }

    /// Waits until no order is queued, so that the rows hold every order
    /// acknowledged before a sale's stock left the store: an order still on
    /// the queue holds a unit the rows do not show yet, and a pool loaded
    /// from the rows would hand that unit out again. Orders of every sale
    /// count (the queue cannot tell them apart cheaply); the wait is bounded
    /// by [`DRAIN_WAIT`], then the order is refused with
    /// [`PromoError::StockReloading`] and nothing is loaded.
    async fn orders_drained(&self, sale_id: i64) -> Result<(), PromoError> {
        let deadline = tokio::time::Instant::now() + DRAIN_WAIT;
        loop {
            let queued = self.orders_queued().await?;
            if queued == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    sale_id,
                    queued,
                    "a sale's stock waits for queued orders before it is loaded again"
                );
                return Err(PromoError::StockReloading { sale_id, queued });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks `pool` for a unit for `user_id` as grant `id`, loading the pool
    /// from the database first if the store does not hold it.
    pub(super) async fn take(
        &self,
        pool: PoolId,
        user_id: i64,
        id: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Take, PromoError> {
        for _ in 0..2 {
            let take = self
                .0
                .pools
                .take(pool, now_ms(), user_id, id, idempotency_key)
                .await
                .map_err(PromoError::Store)?;
            if take != Take::Unloaded {
                return Ok(take);
            }
            self.load_pool(pool, Load::Again).await?;
        }
        Err(ServiceError::Internal(format!(
            "{pool:?} is not in the store right after it was loaded"
        ))
        .into())
    }

    /// The "not started" or "ended" refusal of a pool.
    pub(super) async fn window_error(&self, pool: PoolId, take: &Take) -> PromoError {
        let what = match pool.kind {
            PoolKind::Coupons => format!("coupon campaign {}", pool.id),
            PoolKind::Stock => format!("time sale {}", pool.id),
        };
        let spec = match self.spec(pool.kind, pool.id).await {
            Ok(spec) => spec,
            Err(error) => return error,
        };
        match take {
            Take::Early => PromoError::NotStarted {
                what,
                starts_at: timestamp(spec.starts_at),
            },
            _ => PromoError::Ended {
                what,
                ends_at: timestamp(spec.ends_at),
            },
        }
    }

    /// Writes a new campaign's or sale's row with a new id (one past the
    /// highest, in the write transaction; a concurrent creator that took it
    /// makes the insert fail, and this tries again), keeps its rules, and
    /// loads its pool into the store (if that fails, the first request
    /// loads it).
    pub(super) async fn create_pool(&self, kind: PoolKind, spec: &Spec) -> Result<i64, PromoError> {
        const CAMPAIGN_ID: &str = "SELECT COALESCE(MAX(id), 0) + 1 FROM coupon_campaigns";
        const CAMPAIGN: &str = "INSERT INTO coupon_campaigns \
             (id, salt, name, quantity, per_user, starts_at, ends_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
        const SALE_ID: &str = "SELECT COALESCE(MAX(id), 0) + 1 FROM time_sales";
        const SALE: &str = "INSERT INTO time_sales \
             (id, salt, name, stock, per_user, starts_at, ends_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
        let (next_sql, insert_sql) = match kind {
            PoolKind::Coupons => (CAMPAIGN_ID, CAMPAIGN),
            PoolKind::Stock => (SALE_ID, SALE),
        };
        let db = self.db();
        let mut created = None;
        let mut last = None;
        for _ in 0..5 {
            let mut transaction = db.begin_write().await.map_err(PromoError::database)?;
            let id: i64 = sqlx::query_scalar(next_sql)
                .fetch_one(&mut *transaction)
                .timed(db, next_sql)
                .await
                .map_err(PromoError::database)?;
            let inserted = sqlx::query(insert_sql)
                .bind(id)
                .bind(spec.salt)
                .bind(spec.name.clone())
                .bind(spec.quantity)
                .bind(spec.per_user)
                .bind(spec.starts_at)
                .bind(spec.ends_at)
                .bind(spec.created_at)
                .execute(&mut *transaction)
                .timed(db, insert_sql)
                .await;
            match inserted {
                Ok(_) => {
                    transaction.commit().await.map_err(PromoError::database)?;
                    created = Some(id);
                    break;
                }
                Err(error) if crate::db::is_unique_violation(&error) => last = Some(error),
                Err(error) => return Err(PromoError::database(error)),
            }
        }
        let Some(id) = created else {
            return Err(last.map_or_else(
                || {
                    ServiceError::Internal("no free id for a new campaign or sale".to_owned())
                        .into()
                },
                PromoError::database,
            ));
        };
        db.wrote().await;
        self.0.specs.lock().insert((kind, id), spec.clone());
        let pool = PoolId {
            kind,
            id,
            salt: spec.salt,
        };
        if let Err(error) = self.load_pool(pool, Load::New).await {
            tracing::warn!(%error, ?pool, "a new pool was not loaded; the first request loads it");
        }
        Ok(id)
    }
}

/// A lock per pool, for loads: kept while someone holds or awaits it, then
/// dropped, so the map holds only the pools being loaded now.
#[derive(Default)]
pub(super) struct Loading(Mutex<HashMap<(PoolKind, i64), PoolLock>>);

/// One pool's load lock, shared by those who hold or await it.
type PoolLock = Arc<tokio::sync::Mutex<()>>;

impl Loading {
    /// Waits for `pool`'s lock; loads of other pools go on meanwhile.
    async fn lock(&self, pool: PoolId) -> LoadingGuard<'_> {
        let key = (pool.kind, pool.id);
        let lock = Arc::clone(self.0.lock().entry(key).or_default());
        let held = Arc::clone(&lock).lock_owned().await;
        LoadingGuard {
            loading: self,
            key,
            lock,
            held: Some(held),
        }
    }
}

/// Holds one pool's load lock; dropping it (the load's end, or its caller
/// gone) frees the lock and forgets it once no one else awaits it.
struct LoadingGuard<'a> {
    loading: &'a Loading,
    key: (PoolKind, i64),
    lock: Arc<tokio::sync::Mutex<()>>,
    held: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for LoadingGuard<'_> {
    fn drop(&mut self) {
        drop(self.held.take());
        let mut locks = self.loading.0.lock();
        // Clones are made under this map's lock: two references (the map's
        // and this guard's) mean no one else holds or awaits it.
        if Arc::strong_count(&self.lock) == 2 {
            locks.remove(&self.key);
        }
    }
}

/// The store's view of a pool's rules.
pub(super) fn pool_spec(spec: &Spec, next: i64) -> PoolSpec {
    PoolSpec {
        quantity: spec.quantity,
        per_user: spec.per_user,
        starts_at: spec.starts_at,
        ends_at: spec.ends_at,
        next,
        expires_at: spec.ends_at.saturating_add(KEEP_AFTER_END_MS),
    }
}

/// `len` random characters of Crockford's base 32 (no I, L, O or U): 5 bits
/// each.
pub(super) fn random_code(len: usize) -> Result<String, PromoError> {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut bytes = vec![0_u8; len];
    getrandom::fill(&mut bytes)
        .map_err(|error| ServiceError::Internal(format!("the random source failed: {error}")))?;
    Ok(bytes
        .iter()
        .map(|byte| char::from(ALPHABET[usize::from(byte & 31)]))
        .collect())
}

/// The rules every campaign and sale follows: a name, a quantity, a per-user
/// limit and a window (one already closed is allowed: it refuses every
/// request as ended). Defaults: per user 1, starting now, open for a day.
pub(super) fn check_new(
    name: &str,
    quantity: i64,
    per_user: Option<i64>,
    starts_at_ms: Option<i64>,
    duration_ms: Option<i64>,
    now: i64,
) -> Result<Spec, PromoError> {
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(PromoError::invalid(
            "name",
            format!("must be 1 to {MAX_NAME_CHARS} characters, none a control character"),
        ));
    }
    if !(1..=MAX_QUANTITY).contains(&quantity) {
        return Err(PromoError::invalid(
            "quantity",
            format!("must be 1 to {MAX_QUANTITY}, got {quantity}"),
        ));
    }
    let per_user = per_user.unwrap_or(1);
    if !(1..=MAX_PER_USER).contains(&per_user) {
        return Err(PromoError::invalid(
            "per_user",
            format!("must be 1 to {MAX_PER_USER}, got {per_user}"),
        ));
    }
    let starts_at = starts_at_ms.unwrap_or(now);
    if !(0..=MAX_START_MS).contains(&starts_at) {
        return Err(PromoError::invalid(
            "starts_at_ms",
            format!("must be a Unix time in milliseconds from 0 to {MAX_START_MS}"),
        ));
    }
    let duration = duration_ms.unwrap_or(DAY_MS);
    if !(1..=MAX_DURATION_MS).contains(&duration) {
        return Err(PromoError::invalid(
            "duration_ms",
            format!("must be 1 to {MAX_DURATION_MS} milliseconds"),
        ));
    }
    let ends_at = starts_at + duration;
    let mut salt = [0_u8; 6];
    getrandom::fill(&mut salt)
        .map_err(|error| ServiceError::Internal(format!("the random source failed: {error}")))?;
    let salt = salt
        .iter()
        .fold(0_i64, |salt, byte| (salt << 8) | i64::from(*byte));
    Ok(Spec {
        salt,
        name: name.to_owned(),
        quantity,
        per_user,
        starts_at,
        ends_at,
        created_at: now,
    })
}

/// A user id as every operation takes it.
pub(super) fn check_user(user_id: i64) -> Result<(), PromoError> {
    if user_id < 1 {
        return Err(PromoError::invalid("user_id", "must be a positive integer"));
    }
    Ok(())
}
