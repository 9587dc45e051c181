//! The concurrency limiter: at most N operations in flight per key, held as
//! leases that expire if their holder dies and are released when dropped.
//! On Redis its calls go through a [`RedisStore`], bounded by the store's
//! timeout and held back by its circuit breaker.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fred::prelude::Client;
use fred::types::Value;
use fred::types::scripts::Script;
use parking_lot::Mutex;

use crate::RedisStore;
use crate::error::{Error, Result};
use crate::limiter::{MAX_KEY_BYTES, check_name};

/// The lease script, embedded.
const SCRIPT: &str = include_str!("concurrency.lua");

/// The lease script's operation that releases a lease.
const RELEASE: &str = "r";

/// At most `max` leases per key. A lease is released when dropped (or by
/// [`Lease::release`]); a holder that dies without releasing loses its lease
/// after the lease time, which a long operation extends with
/// [`Lease::renew`].
///
/// In memory by default; on Redis, shared by every instance, through
/// [`redis`](ConcurrencyLimiterBuilder::redis) or
/// [`redis_store`](ConcurrencyLimiterBuilder::redis_store). A call on Redis
/// waits at most the store's timeout (250 ms by default) and fails with
/// [`Error::Redis`] ([`Error::Refused`] when Redis answers with an error);
/// while the store's circuit breaker is open after such a failure,
/// acquires and renewals fail at once with [`Error::Unavailable`], so a
/// stalled Redis costs each caller one timeout at most, not a hung request.
/// What a failure means (go ahead, or refuse) is the caller's decision.
///
/// A release goes past the breaker, but one that cannot reach Redis in
/// time, and an acquire that timed out yet ran, leave a slot taken until the
/// lease time runs out: keep the lease time near the operation's length,
/// and [`renew`](Lease::renew) a long one.
///
/// ```
/// use std::time::Duration;
/// use seawall_ratelimit::ConcurrencyLimiter;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), seawall_ratelimit::Error> {
/// let exports = ConcurrencyLimiter::builder("exports", 2)
///     .lease_time(Duration::from_secs(30))
///     .build()?;
/// let first = exports.try_acquire("tenant-7").await?.expect("a free slot");
/// let _second = exports.try_acquire("tenant-7").await?.expect("a free slot");
/// assert!(exports.try_acquire("tenant-7").await?.is_none());
/// drop(first);
/// assert!(exports.try_acquire("tenant-7").await?.is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ConcurrencyLimiter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    max: u64,
    lease_time: Duration,
    backend: Backend,
    /// Random per limiter, so lease ids of two processes never collide.
    nonce: u64,
    next_id: AtomicU64,
}

enum Backend {
    Memory(Mutex<HashMap<String, Vec<(String, Instant)>>>),
    Redis { store: RedisStore, script: Script },
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory(_) => f.write_str("Memory"),
            Self::Redis { store, .. } => f.debug_struct("Redis").field("store", store).finish(),
        }
    }
}

/// A held slot. Released on drop.
#[derive(Debug)]
pub struct Lease {
    limiter: ConcurrencyLimiter,
    key: String,
    id: String,
    /// Leases held for the key when this one was granted, itself included.
    in_flight: u64,
    released: bool,
}

impl ConcurrencyLimiter {
    /// A builder for a limiter named `name` with at most `max` leases per key.
    pub fn builder(name: &str, max: u64) -> ConcurrencyLimiterBuilder {
        ConcurrencyLimiterBuilder {
            name: name.to_owned(),
            max,
            lease_time: Duration::from_secs(60),
            redis: None,
        }
    }

    /// The limiter's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Takes a slot for `key` if one is free.
    pub async fn try_acquire(&self, key: &str) -> Result<Option<Lease>> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(Error::InvalidKey(format!(
                "a key is 1 to {MAX_KEY_BYTES} bytes, not {}",
                key.len()
            )));
        }
        let inner = &*self.inner;
        let id = format!(
            "{:016x}-{}",
            inner.nonce,
            inner.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let granted = match &inner.backend {
            Backend::Memory(map) => {
                let now = Instant::now();
                let mut map = map.lock();
                let leases = map.entry(key.to_owned()).or_default();
                leases.retain(|(_, expires)| *expires > now);
                let free = (leases.len() as u64) < inner.max;
                if free {
                    leases.push((id.clone(), now + inner.lease_time));
                }
                free.then_some(leases.len() as u64)
            }
            Backend::Redis { .. } => {
                let reply = self.redis("a", key, &id).await?;
                (reply.first() == Some(&1))
                    .then(|| reply.get(1).copied().unwrap_or(0).unsigned_abs())
            }
        };
        Ok(granted.map(|in_flight| Lease {
            limiter: self.clone(),
            key: key.to_owned(),
            id,
            in_flight,
            released: false,
        }))
    }

    /// Runs the lease script's `op` through the store (its timeout, in a
    /// `ratelimit.redis` span): past its breaker for a release, which frees
    /// a slot, through it otherwise.
    async fn redis(&self, op: &str, key: &str, id: &str) -> Result<Vec<i64>> {
        let Backend::Redis { store, script } = &self.inner.backend else {
            return Ok(Vec::new());
        };
        let name = &self.inner.name;
        let redis_key = format!("{}:leases", store.subject_key(name, key));
        let args: Vec<Value> = vec![
            Value::from(op),
            Value::from(id),
            Value::Integer(i64::try_from(self.inner.max).unwrap_or(i64::MAX)),
            Value::Integer(i64::try_from(self.inner.lease_time.as_micros()).unwrap_or(i64::MAX)),
        ];
        let script = ("concurrency", script);
        if op == RELEASE {
            store
                .call_past_breaker(name, script, vec![redis_key], args)
                .await
        } else {
            store.call(name, script, vec![redis_key], args).await
        }
    }

    fn release_now(&self, key: &str, id: &str) {
        if let Backend::Memory(map) = &self.inner.backend {
            let mut map = map.lock();
            if let Some(leases) = map.get_mut(key) {
                leases.retain(|(lease, _)| lease != id);
                if leases.is_empty() {
                    map.remove(key);
                }
            }
        }
    }
}

impl Lease {
    /// Leases held for the key when this one was granted, itself included.
    pub fn in_flight(&self) -> u64 {
        self.in_flight
    }

    /// Extends the lease by the lease time from now. `false` when it had
    /// already expired and been taken away: the operation no longer holds a
    /// slot.
    pub async fn renew(&self) -> Result<bool> {
        let limiter = &self.limiter;
        match &limiter.inner.backend {
            Backend::Memory(map) => {
                let now = Instant::now();
                let mut map = map.lock();
                let lease = map
                    .get_mut(&self.key)
                    .and_then(|leases| leases.iter_mut().find(|(id, _)| *id == self.id))
                    .filter(|(_, expires)| *expires > now);
                Ok(lease
                    .map(|(_, expires)| *expires = now + limiter.inner.lease_time)
                    .is_some())
            }
            Backend::Redis { .. } => {
                let reply = limiter.redis("n", &self.key, &self.id).await?;
                Ok(reply.first() == Some(&1))
            }
        }
    }

    /// Releases the lease and waits until the store has it.
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        match &self.limiter.inner.backend {
            Backend::Memory(_) => {
                self.limiter.release_now(&self.key, &self.id);
                Ok(())
            }
            Backend::Redis { .. } => self
                .limiter
                .redis(RELEASE, &self.key, &self.id)
                .await
                .map(|_| ()),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        match &self.limiter.inner.backend {
            Backend::Memory(_) => self.limiter.release_now(&self.key, &self.id),
            Backend::Redis { .. } => {
                // Released in the background; without a runtime the lease
                // simply expires.
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    let limiter = self.limiter.clone();
                    let (key, id) = (std::mem::take(&mut self.key), std::mem::take(&mut self.id));
                    runtime.spawn(async move {
                        let _ = limiter.redis(RELEASE, &key, &id).await;
                    });
                }
            }
        }
    }
}

/// Builds a [`ConcurrencyLimiter`].
#[derive(Debug)]
pub struct ConcurrencyLimiterBuilder {
    name: String,
    max: u64,
    lease_time: Duration,
    redis: Option<RedisStore>,
}

impl ConcurrencyLimiterBuilder {
    /// How long a lease lasts unless renewed (default 60 s; at least 1 ms).
    /// A lease time longer than [`MAX_DURATION`](crate::MAX_DURATION), held
    /// until released in practice, is that long.
    pub fn lease_time(mut self, lease_time: Duration) -> Self {
        self.lease_time = lease_time.min(crate::MAX_DURATION);
        self
    }

    /// Keeps leases in Redis under [`DEFAULT_PREFIX`](crate::DEFAULT_PREFIX),
    /// shared by every instance (default: in process memory), through a
    /// [`RedisStore`] of its own: calls wait at most
    /// [`DEFAULT_TIMEOUT`](crate::DEFAULT_TIMEOUT), behind a breaker of
    /// their own.
    pub fn redis(self, client: Client) -> Self {
        self.redis_store(RedisStore::new(client))
    }

    /// Keeps leases in Redis through `store`: under its prefix, with its
    /// timeout, behind the circuit breaker it shares with every limiter on
    /// a clone of it, so they find a stalled Redis out together.
    pub fn redis_store(mut self, store: RedisStore) -> Self {
        self.redis = Some(store);
        self
    }

    /// The limiter.
    pub fn build(self) -> Result<ConcurrencyLimiter> {
        check_name("limiter", &self.name)?;
        if self.max == 0 {
            return Err(Error::InvalidConfig(format!(
                "concurrency limiter {} needs at least one slot",
                self.name
            )));
        }
        if self.lease_time < Duration::from_millis(1) {
            return Err(Error::InvalidConfig(format!(
                "concurrency limiter {}: a lease lasts at least 1 ms",
                self.name
            )));
        }
        let backend = match self.redis {
            Some(store) => Backend::Redis {
                store,
                script: Script::from_lua(SCRIPT),
            },
            None => Backend::Memory(Mutex::new(HashMap::new())),
        };
        Ok(ConcurrencyLimiter {
            inner: Arc::new(Inner {
                name: self.name,
                max: self.max,
                lease_time: self.lease_time,
                backend,
                nonce: RandomState::new().hash_one(Instant::now()),
                next_id: AtomicU64::new(0),
            }),
        })
    }
}
