//! A distributed lock on Redis: owned by a random token, released and
//! extended only by its owner (compare-and-delete in one script), with a
//! fencing token that increases with every acquisition.

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::Client;
use fred::types::scripts::Script;
use tracing::Instrument as _;

use crate::error::{Error, Result, no_answer};
use crate::trace::{self, Command};

/// The fencing counter (KEYS[2]) is kept for the retention (ARGV[3] ms)
/// past the lock's expiry, which only ever moves later. A counter that is
/// gone all the same (expired, evicted, lost in a failover) starts again
/// at the server's time in microseconds, above any count a counter begun
/// earlier can have reached (that would take an acquisition per
/// microsecond), so a later holder always gets a greater fence.
const ACQUIRE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local fence = redis.call('INCR', KEYS[2])
  if fence == 1 then
    local now = redis.call('TIME')
    fence = now[1] * 1000000 + now[2]
    redis.call('SET', KEYS[2], string.format('%d', fence))
  end
  local keep = ARGV[2] + ARGV[3]
  if redis.call('PTTL', KEYS[2]) < keep then
    redis.call('PEXPIRE', KEYS[2], string.format('%d', keep))
  end
  return fence
end
return 0
";

/// Deletes KEYS[1] if it holds ARGV[1]: a lock's release, and a load's
/// lease removed by its own load.
pub(crate) const COMPARE_AND_DELETE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Extends the lock and, as acquiring does, keeps its fencing counter
/// (KEYS[2]) for the retention (ARGV[3] ms) past the lock's new expiry.
const EXTEND: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  local keep = ARGV[2] + ARGV[3]
  local left = redis.call('PTTL', KEYS[2])
  if left < keep then
    redis.call('PEXPIRE', KEYS[2], string.format('%d', keep))
  end
  return 1
end
return 0
";

/// A random 64-bit value from the operating system (a seeded fallback if
/// it is unavailable).
pub(crate) fn random_u64() -> u64 {
    getrandom::u64().unwrap_or_else(|_| fastrand::u64(..))
}

/// Locks on one Redis deployment. Cheap to clone.
///
/// ```no_run
/// use std::time::Duration;
/// use seawall_cache::RedisLocks;
///
/// # async fn run(client: fred::prelude::Client) -> Result<(), seawall_cache::Error> {
/// let locks = RedisLocks::new(client);
/// if let Some(guard) = locks.try_acquire("nightly-report", Duration::from_secs(30)).await? {
///     // Pass the fencing token to the storage the lock protects, so a
///     // write from an owner that lost the lock can be refused there.
///     let _fence = guard.fence();
///     guard.extend(Duration::from_secs(30)).await?;
///     guard.release().await?;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisLocks {
    inner: Arc<Locks>,
}

struct Locks {
    client: Client,
    prefix: String,
    timeout: Duration,
    fence_retention: Duration,
    acquire: Script,
    release: Script,
    extend: Script,
}

impl std::fmt::Debug for RedisLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLocks")
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisLocks {
    /// Locks under the prefix `seawall:lock`, with a 1 s timeout per Redis
    /// call and fencing counters kept a day after their lock's expiry.
    pub fn new(client: Client) -> Self {
        Self::with_options(
            client,
            "seawall:lock",
            Duration::from_secs(1),
            Duration::from_secs(86_400),
        )
    }

    /// Locks under `prefix`, each Redis call bounded by `timeout`; a lock's
    /// fencing counter is kept for `fence_retention` after the lock's
    /// expiry (each acquisition and extension moves it later). A counter
    /// that is gone starts again at the Redis server's clock in
    /// microseconds, so fences keep growing as long as that clock does not
    /// step back.
    pub fn with_options(
        client: Client,
        prefix: impl Into<String>,
        timeout: Duration,
        fence_retention: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Locks {
                client,
                prefix: prefix.into(),
                timeout,
                fence_retention,
                acquire: Script::from_lua(ACQUIRE),
                release: Script::from_lua(COMPARE_AND_DELETE),
                extend: Script::from_lua(EXTEND),
            }),
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{{{}:{name}}}", self.inner.prefix)
    }

    /// Takes the lock `name` for `ttl` if nobody holds it; `None` if
    /// someone does.
    pub async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<Option<LockGuard>> {
        let key = self.key(name);
        let token = format!("{:016x}{:016x}", random_u64(), random_u64());
        let fence: i64 = self
            .call(
                "lock_acquire",
                self.inner.acquire.evalsha_with_reload(
                    &self.inner.client,
                    vec![key.clone(), format!("{key}:fence")],
                    vec![
                        token.clone(),
                        millis(ttl).to_string(),
                        millis(self.inner.fence_retention).to_string(),
                    ],
                ),
            )
            .await?;
        Ok((fence > 0).then(|| LockGuard {
            locks: self.clone(),
            name: name.to_owned(),
            key,
            token,
            fence: fence.unsigned_abs(),
            released: false,
        }))
    }

    /// Takes the lock, retrying every `poll` until `wait` has passed;
    /// [`Error::Locked`] if it is still held then.
    pub async fn acquire(
        &self,
        name: &str,
        ttl: Duration,
        wait: Duration,
        poll: Duration,
    ) -> Result<LockGuard> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(guard) = self.try_acquire(name, ttl).await? {
                return Ok(guard);
            }
            if tokio::time::Instant::now() + poll > deadline {
                return Err(Error::Locked {
                    name: name.to_owned(),
                });
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// One script call bounded by the timeout, in a `cache.redis` span
    /// named after `script`.
    async fn call<T>(
        &self,
        script: &'static str,
        call: impl Future<Output = std::result::Result<T, fred::error::Error>>,
    ) -> Result<T> {
        let span = trace::redis_span(&self.inner.prefix, Command::Script(script));
        let (error_type, error) = match tokio::time::timeout(self.inner.timeout, call)
            .instrument(span.clone())
            .await
        {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => (error.kind().to_str(), error),
            Err(_) => ("timeout", no_answer(self.inner.timeout)),
        };
        trace::redis_failed(&span, error_type, &error.to_string());
        Err(Error::Redis(error))
    }
}

/// An acquired lock. Release it with [`release`](Self::release); a guard
/// dropped unreleased releases in the background (on a Tokio runtime), and
/// the lock's TTL frees it in any case.
#[derive(Debug)]
pub struct LockGuard {
    locks: RedisLocks,
    name: String,
    key: String,
    token: String,
    fence: u64,
    released: bool,
}

impl LockGuard {
    /// The fencing token: greater than that of every earlier acquisition of
    /// this lock (see [`RedisLocks::with_options`] for what that rests on).
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets the lock's remaining time to `ttl`; [`Error::LockLost`] if this
    /// guard no longer owns it.
    pub async fn extend(&self, ttl: Duration) -> Result<()> {
        let inner = &self.locks.inner;
        let extended: i64 = self
            .locks
            .call(
                "lock_extend",
                inner.extend.evalsha_with_reload(
                    &inner.client,
                    vec![self.key.clone(), format!("{}:fence", self.key)],
                    vec![
                        self.token.clone(),
                        millis(ttl).to_string(),
                        millis(inner.fence_retention).to_string(),
                    ],
                ),
            )
            .await?;
        if extended == 1 {
            Ok(())
        } else {
            Err(Error::LockLost {
                name: self.name.clone(),
            })
        }
    }

    /// Releases the lock if this guard still owns it; [`Error::LockLost`]
    /// if it had expired (and perhaps been taken by another owner, whose
    /// lock stays).
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        release(&self.locks, &self.key, &self.token, &self.name).await
    }
}

async fn release(locks: &RedisLocks, key: &str, token: &str, name: &str) -> Result<()> {
    let inner = &locks.inner;
    let deleted: i64 = locks
        .call(
            "lock_release",
            inner.release.evalsha_with_reload(
                &inner.client,
                vec![key.to_owned()],
                vec![token.to_owned()],
            ),
        )
        .await?;
    if deleted == 1 {
        Ok(())
    } else {
        Err(Error::LockLost {
            name: name.to_owned(),
        })
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (locks, key, token, name) = (
                self.locks.clone(),
                std::mem::take(&mut self.key),
                std::mem::take(&mut self.token),
                std::mem::take(&mut self.name),
            );
            runtime.spawn(async move {
                let _ = release(&locks, &key, &token, &name).await;
            });
        }
    }
}

/// The longest expiry the cache gives any Redis key, in ms: a century,
/// which stands for "forever" (Redis refuses an expiry past its clock's
/// range, and a `Duration` can be far longer).
pub(crate) const LONGEST_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// A duration as a Redis expiry: whole ms, at least 1, at most
/// [`LONGEST_MS`].
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, LONGEST_MS)
}
