//! Read-your-writes for one caller, by WAL position rather than by a timer.
//!
//! A [`Caller`] is whoever a piece of work is done for: an HTTP request
//! (the API scopes each request to one, started from the position the
//! client carried back in its `Seawall-Read-After` header), or a job
//! (scoped to the position of the request that enqueued it). Work runs
//! inside the caller's [scope](Caller::scope); within it:
//! - every write on the primary made through [`Db::wrote`](super::Db::wrote)
//!   raises the caller's position to the primary's flushed WAL position
//!   after the commit, which is at or past the write's commit record;
//! - a read of [`freshness()`] goes only to a replica that has replayed up to that position (a
//!   caller that has written nothing reads any replica in rotation), or
//!   else to the primary: never a replica that has not replayed the
//!   caller's own writes. No fixed delay: a replica serves the caller's
//!   next read as soon as the monitor finds it replayed that far.
//!
//! With no replicas nothing is recorded, and no read changes where it goes.
//! The scope is a task-local: work spawned onto another task leaves it
//! (a cache fill, which reads as of [`Freshness::NOW`] anyway).
//!
//! [`Freshness::NOW`]: super::replicas::Freshness::NOW

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
}

impl Caller {
    /// A caller whose writes so far reached `carried` (what a client sent
    /// back, or what a job was enqueued with), if anything.
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
/// [`Freshness::after`] its position, or [`Freshness::ANY`] for a caller
/// that has written nothing (or outside a caller's scope).
pub fn freshness() -> Freshness {
    Caller::current()
        .and_then(|caller| caller.position())
        .map_or(Freshness::ANY, Freshness::after)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use seawall_perfmon::Monitor;
    use seawall_testkit::{Postgres, wait};

    use super::*;
    use crate::config::DatabaseConfig;
    use crate::db::Db;
    use crate::db::replicas::tests::{mark, marks, state, until_in_rotation};

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

    /// A caller reads its own writes, wherever it reads, and so does the
    /// next request or job that carries its position: while the replica
    /// has not replayed the caller's write, the caller's reads go to the
    /// primary; once it has, to the replica. A caller that wrote nothing
    /// takes any replica in rotation, and may see the past within the lag
    /// limits (here a paused replica, kept in rotation by a long limit).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_reads_its_own_writes_and_carries_them_on() {
        let primary = Postgres::start().expect("the primary starts");
        let replica = Postgres::builder()
            .replica_of(&primary)
            .start()
            .expect("the replica starts");
        let config = DatabaseConfig {
            url: primary.url(),
            max_connections: Some(4),
            replicas: vec![replica.url()],
            replica_max_lag: Duration::from_secs(600),
            ..DatabaseConfig::default()
        };
        let db = Db::connect(&config, Monitor::new())
            .await
            .expect("connects");
        sqlx::query("CREATE TABLE marks (n BIGINT)")
            .execute(db.pool())
            .await
            .expect("creates");
        until_in_rotation(&db, true).await;
        let replicas = Arc::clone(db.replicas().expect("replicas"));
        replica.pause_replay().expect("pauses");

        // Outside a caller's scope a write records nothing.
        assert_eq!(db.wrote().await, None);
        let caller = Caller::new(None);
        let position = caller
            .clone()
            .scope(async {
                assert_eq!(freshness(), Freshness::ANY);
                mark(&db).await;
                let position = db.wrote().await.expect("a position");
                assert_eq!(freshness(), Freshness::after(position));
                let primary_reads = replicas.primary_reads();
                assert_eq!(marks(&db, freshness()).await, 1);
                assert_eq!(replicas.primary_reads(), primary_reads + 1);
                position
            })
            .await;
        assert_eq!(caller.position(), Some(position));

        // Someone who wrote nothing reads the replica, paused before the
        // write.
        let reads = state(&db).reads;
        assert_eq!(marks(&db, freshness()).await, 0);
        assert_eq!(state(&db).reads, reads + 1);

        // The position carried on (a header, a job's payload): the write
        // is seen, from the primary while the replica is paused...
        let carried = Caller::new(Some(position));
        let primary_reads = replicas.primary_reads();
        let seen = carried
            .clone()
            .scope(async { marks(&db, freshness()).await })
            .await;
        assert_eq!((seen, replicas.primary_reads()), (1, primary_reads + 1));
        // ... and from the replica once it has replayed it, at once.
        replica.resume_replay().expect("resumes");
        wait::until_async("the replica to replay the write", async || {
            state(&db).replayed >= position
        })
        .await;
        let reads = state(&db).reads;
        let seen = carried.scope(async { marks(&db, freshness()).await }).await;
        assert_eq!((seen, state(&db).reads), (1, reads + 1));
        db.close().await;
    }
}
