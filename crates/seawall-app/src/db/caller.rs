//! Read-your-writes for one caller, by WAL position rather than by a timer.
//!
//! A [`Caller`] is whoever a piece of work is done for: the API makes each
//! workload request one, starting from the position the client carried
//! back in its `Seawall-Read-After` header, or, for a client that carries
//! none, from the position its identity (an API key, a user, a client
//! address) last wrote at on any instance, kept in Redis ([`Positions`]).
//! Work runs inside the caller's [scope](Caller::scope); within it:
//! - every write on the primary made through [`Db::wrote`](super::Db::wrote)
//!   raises the caller's position to the primary's WAL insert position
//!   after the commit, which is at or past the write's commit record (and
//!   the identity's record with it);
//! - a read of [`freshness()`] goes only to a replica that has replayed up
//!   to that position (a caller that has written nothing reads any replica
//!   in rotation), or else to the primary: never a replica that has not
//!   replayed the caller's own writes. No fixed delay: a replica serves the
//!   caller's next read as soon as the monitor finds it replayed that far.
//!
//! With no replicas nothing is recorded, and no read changes where it goes.
//! The scope is a task-local: work spawned onto another task leaves it
//! (a cache fill, which reads as of [`Freshness::NOW`] anyway).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fred::prelude::{Client, KeysInterface as _, LuaInterface as _};

use super::replicas::{Freshness, Lsn};

tokio::task_local! {
    static CALLER: Caller;
}

/// One caller's position: the furthest point of the WAL its own writes
/// reached, as far as this process knows. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The position, 0 for none.
    position: Arc<AtomicU64>,
    /// Where the position of a caller that carried none is kept between
    /// requests, if anywhere.
    record: Option<Arc<Record>>,
}

/// A caller's record in [`Positions`], looked up at most once.
#[derive(Debug)]
struct Record {
    positions: Positions,
    identity: String,
    looked: tokio::sync::OnceCell<()>,
    /// The lookup failed: the caller's writes may be anywhere, so its
    /// reads go to the primary.
    unknown: std::sync::atomic::AtomicBool,
}

/// The positions of callers that carry none back, kept in Redis per
/// identity (`seawall:api:read-after:<identity>`) for `ttl`: as long as a
/// replica in rotation may lag behind a write (twice
/// `database.replica_max_lag`), after which every replica that takes reads
/// has replayed it anyway. A write raises its identity's record, never
/// lowers it; a read of a caller that carried no position looks it up once
/// (a round trip, only for reads that may go to a replica: not for cache
/// hits, nor for fills, which read as of now). Each call to Redis gets
/// [`RECORD_TIMEOUT`], and none is made while the client is disconnected:
/// a caller whose record cannot be read then reads the primary, and a
/// write whose record cannot be kept loses only that (logged once a
/// minute at most), never the request.
#[derive(Clone)]
pub struct Positions {
    client: Client,
    ttl: Duration,
    /// When a failure was last logged, ms since the Unix epoch.
    logged: Arc<AtomicU64>,
}

/// How long a lookup or an update of a record may take.
pub const RECORD_TIMEOUT: Duration = Duration::from_millis(100);

impl std::fmt::Debug for Positions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Positions")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// The Redis key of an identity's position.
const KEY_PREFIX: &str = "seawall:api:read-after:";

/// Sets the record to ARGV[1] (16 hexadecimal digits, so that text order
/// is number order) unless it holds a later one, and keeps it ARGV[2] ms.
const RAISE: &str = "local old = redis.call('GET', KEYS[1]) \
    if not old or old < ARGV[1] then \
        redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) \
    else \
        redis.call('PEXPIRE', KEYS[1], ARGV[2]) \
    end \
    return 1";

impl Positions {
    /// Positions on `client`, each kept `ttl`.
    pub fn new(client: Client, ttl: Duration) -> Self {
        Self {
            client,
            ttl,
            logged: Arc::default(),
        }
    }

    /// The identity's position: `Ok(None)` for none kept, `Err` when Redis
    /// did not say.
    async fn recall(&self, identity: &str) -> Result<Option<Lsn>, ()> {
        let key = format!("{KEY_PREFIX}{identity}");
        let found = self
            .bounded(self.client.get::<Option<String>, _>(key))
            .await
            .map_err(|error| self.failed("read", &error))?;
        Ok(found.and_then(|text| u64::from_str_radix(&text, 16).ok().map(Lsn)))
    }

    async fn remember(&self, identity: &str, position: Lsn) {
        let key = format!("{KEY_PREFIX}{identity}");
        let ttl_ms = u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let args = vec![format!("{:016X}", position.0), ttl_ms.to_string()];
        if let Err(error) = self
            .bounded(self.client.eval::<i64, _, _, _>(RAISE, key, args))
            .await
        {
            self.failed("kept", &error);
        }
    }

    /// `call`, unless the client is disconnected, within [`RECORD_TIMEOUT`].
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, fred::error::Error>>,
    ) -> Result<T, String> {
        use fred::prelude::ClientLike as _;
        if !self.client.is_connected() {
            return Err("Redis is not connected".to_owned());
        }
        match tokio::time::timeout(RECORD_TIMEOUT, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {RECORD_TIMEOUT:?}")),
        }
    }

    /// Logs a failure, once a minute at most.
    fn failed(&self, what: &str, error: &str) {
        let now = u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
        )
        .unwrap_or(u64::MAX);
        let last = self.logged.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 60_000
            && self
                .logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                error,
                what,
                "a caller's write position in Redis could not be {what}: those callers read the primary, or may not read their last write back (logged once a minute)"
            );
        }
    }
}

impl Caller {
    /// A caller whose writes so far reached `carried` (what a client sent
    /// back), if anything.
    ///
    /// ```
    /// use seawall_app::db::caller::Caller;
    /// use seawall_app::db::replicas::Lsn;
    ///
    /// let caller = Caller::new(Some(Lsn(0x16_b374_d848)));
    /// assert_eq!(caller.position(), Some(Lsn(0x16_b374_d848)));
    /// caller.raise(Lsn(5));
    /// assert_eq!(caller.position().map(|p| p.to_string()).as_deref(), Some("16/B374D848"));
    /// ```
    pub fn new(carried: Option<Lsn>) -> Self {
        Self {
            position: Arc::new(AtomicU64::new(carried.map_or(0, |lsn| lsn.0))),
            record: None,
        }
    }

    /// A caller known by `identity` that carried no position: its reads
    /// start from what `positions` keeps for the identity, and its writes
    /// raise that.
    pub fn remembered(positions: Positions, identity: String) -> Self {
        Self {
            position: Arc::default(),
            record: Some(Arc::new(Record {
                positions,
                identity,
                looked: tokio::sync::OnceCell::new(),
                unknown: std::sync::atomic::AtomicBool::new(false),
            })),
        }
    }

    /// Looks up the identity's record, the first time only.
    async fn recalled(&self) {
        if let Some(record) = &self.record {
            record
                .looked
                .get_or_init(
                    async || match record.positions.recall(&record.identity).await {
                        Ok(Some(position)) => self.raise(position),
                        Ok(None) => {}
                        Err(()) => record.unknown.store(true, Ordering::Relaxed),
                    },
                )
                .await;
        }
    }

    /// Raises the position after a write that reached `position`, and the
    /// identity's record with it.
    pub(super) async fn wrote(&self, position: Lsn) {
        self.raise(position);
        if let Some(record) = &self.record {
            record.positions.remember(&record.identity, position).await;
        }
    }

    /// The furthest position the caller's writes are known to reach.
    pub fn position(&self) -> Option<Lsn> {
        match self.position.load(Ordering::Relaxed) {
            0 => None,
            position => Some(Lsn(position)),
        }
    }

    /// Raises the position to `position`; a lower one changes nothing.
    pub fn raise(&self, position: Lsn) {
        self.position.fetch_max(position.0, Ordering::Relaxed);
    }

    /// Runs `work` as this caller: its writes and reads (on this task) see
    /// this caller.
    pub async fn scope<F: Future>(self, work: F) -> F::Output {
        CALLER.scope(self, work).await
    }

    /// The caller the current task works for, if it is in a scope.
    pub fn current() -> Option<Self> {
        CALLER.try_with(Self::clone).ok()
    }
}

/// How fresh a read must be for the current caller to see its own writes:
/// [`Freshness::after`] its position (for a caller known by an identity,
/// looked up first, once; one whose record could not be read reads the
/// primary), or [`Freshness::ANY`] for a caller that has written nothing
/// (or outside a caller's scope).
pub async fn freshness() -> Freshness {
    match handed_on().await {
        None | Some(Lsn(0)) => Freshness::ANY,
        Some(position) => Freshness::after(position),
    }
}

/// The position that work done for the current caller elsewhere (a job a
/// worker runs) must read after for the caller to see its own writes
/// there: its position (for a caller known by an identity, looked up
/// first, once); [`Lsn(0)`](Lsn) for a caller that has written nothing;
/// [`Lsn(u64::MAX)`](Lsn), which no replica reaches, for one whose record
/// could not be read; `None` outside a caller's scope.
pub async fn handed_on() -> Option<Lsn> {
    let caller = Caller::current()?;
    // Boxed: the lookup's future (a Redis call) would otherwise be part
    // of every read's future, which debug builds keep on the stack.
    Box::pin(caller.recalled()).await;
    if caller
        .record
        .as_ref()
        .is_some_and(|record| record.unknown.load(Ordering::Relaxed))
    {
        // No replica replays this far: the primary reads.
        return Some(Lsn(u64::MAX));
    }
    Some(caller.position().unwrap_or(Lsn(0)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use seawall_testkit::wait;

    use super::*;
    use crate::config::DatabaseConfig;
    use crate::db::replicas::tests::{mark, marks, primary_and_replica, state};

    #[tokio::test]
    async fn a_scope_is_seen_by_its_own_task_and_not_outside() {
        assert!(Caller::current().is_none());
        let caller = Caller::new(None);
        let inside = caller.clone();
        caller
            .scope(async move {
                Caller::current().expect("in scope").raise(Lsn(42));
                assert_eq!(inside.position(), Some(Lsn(42)));
                // A lower position does not lower it.
                Caller::current().expect("in scope").raise(Lsn(7));
                assert_eq!(inside.position(), Some(Lsn(42)));
                // Another task is not in the scope.
                let spawned = tokio::spawn(async { Caller::current().is_none() });
                assert!(spawned.await.expect("runs"));
            })
            .await;
        assert!(Caller::current().is_none());
    }

    /// A primary and a replica with its replay paused, kept in rotation by
    /// a long lag limit, and the pool on both.
    async fn paused() -> (
        seawall_testkit::Postgres,
        seawall_testkit::Postgres,
        crate::db::Db,
        Arc<crate::db::replicas::Replicas>,
    ) {
        let (primary, replica, db) = primary_and_replica(
            Duration::from_secs(600),
            DatabaseConfig::default().replica_wait,
        )
        .await;
        let replicas = Arc::clone(db.replicas().expect("replicas"));
        replica.pause_replay().expect("pauses");
        (primary, replica, db, replicas)
    }

    /// A caller reads its own writes, wherever it reads, and so does the
    /// next request or job that carries its position: while the replica
    /// has not replayed the caller's write, the caller's reads go to the
    /// primary; once it has, to the replica. A caller that wrote nothing
    /// takes any replica in rotation, and may see the past within the lag
    /// limits (here a paused replica, kept in rotation by a long limit).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_reads_its_own_writes_and_carries_them_on() {
        let (_primary, replica, db, replicas) = paused().await;

        // Outside a caller's scope a write records nothing.
        assert_eq!(db.wrote().await, None);
        let caller = Caller::new(None);
        let position = caller
            .clone()
            .scope(async {
                assert_eq!(freshness().await, Freshness::ANY);
                mark(&db).await;
                let position = db.wrote().await.expect("a position");
                assert_eq!(freshness().await, Freshness::after(position));
                let primary_reads = replicas.primary_reads();
                assert_eq!(marks(&db, freshness().await).await, 1);
                assert_eq!(replicas.primary_reads(), primary_reads + 1);
                position
            })
            .await;
        assert_eq!(caller.position(), Some(position));

        // Someone who wrote nothing reads the replica, paused before the
        // write.
        let reads = state(&db).reads;
        assert_eq!(marks(&db, freshness().await).await, 0);
        assert_eq!(state(&db).reads, reads + 1);

        // The position carried on (a header, a job's payload): the write
        // is seen, from the primary while the replica is paused...
        let carried = Caller::new(Some(position));
        let primary_reads = replicas.primary_reads();
        let seen = carried
            .clone()
            .scope(async { marks(&db, freshness().await).await })
            .await;
        assert_eq!((seen, replicas.primary_reads()), (1, primary_reads + 1));
        // ... and from the replica once it has replayed it, at once.
        replica.resume_replay().expect("resumes");
        wait::until_async("the replica to replay the write", async || {
            state(&db).replayed >= position
        })
        .await;
        let reads = state(&db).reads;
        let seen = carried
            .scope(async { marks(&db, freshness().await).await })
            .await;
        assert_eq!((seen, state(&db).reads), (1, reads + 1));
        db.close().await;
    }

    /// A caller that carries no position reads what its identity wrote,
    /// on any instance: one request writes, the next of the same identity
    /// (a new caller, as on another instance) reads it back from the
    /// primary while the replica is paused behind it, and another identity
    /// reads the replica. A record is never lowered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_that_carries_nothing_reads_what_its_identity_wrote() {
        let server = seawall_testkit::RedisServer::shared();
        let redis =
            crate::redis::Redis::connect(&crate::config::RedisConfig::default(), &server.url())
                .await
                .expect("connects");
        let client = redis.client().clone();
        let positions = Positions::new(client.clone(), Duration::from_secs(60));
        let identity = format!("key:{}", std::process::id());
        let other = format!("user:{}", std::process::id());
        let _: i64 = client
            .del(vec![
                format!("{KEY_PREFIX}{identity}"),
                format!("{KEY_PREFIX}{other}"),
            ])
            .await
            .expect("deletes");

        let (_primary, replica, db, replicas) = paused().await;

        let position = Caller::remembered(positions.clone(), identity.clone())
            .scope(async {
                mark(&db).await;
                db.wrote().await.expect("a position")
            })
            .await;
        let primary_reads = replicas.primary_reads();
        let seen = Caller::remembered(positions.clone(), identity.clone())
            .scope(async { marks(&db, freshness().await).await })
            .await;
        assert_eq!((seen, replicas.primary_reads()), (1, primary_reads + 1));
        let reads = state(&db).reads;
        let seen = Caller::remembered(positions.clone(), other)
            .scope(async { marks(&db, freshness().await).await })
            .await;
        assert_eq!((seen, state(&db).reads), (0, reads + 1));

        positions.remember(&identity, Lsn(1)).await;
        assert_eq!(positions.recall(&identity).await, Ok(Some(position)));

        // Redis gone: a caller whose record cannot be read reads the
        // primary, fast.
        let mut lost = seawall_testkit::RedisServer::start().expect("redis-server starts");
        let gone =
            crate::redis::Redis::connect(&crate::config::RedisConfig::default(), &lost.url())
                .await
                .expect("connects");
        lost.kill().expect("kills");
        let positions = Positions::new(gone.client().clone(), Duration::from_secs(60));
        let primary_reads = replicas.primary_reads();
        let seen = Caller::remembered(positions, identity.clone())
            .scope(async { marks(&db, freshness().await).await })
            .await;
        assert_eq!((seen, replicas.primary_reads()), (1, primary_reads + 1));
        replica.resume_replay().expect("resumes");
        db.close().await;
    }
}
