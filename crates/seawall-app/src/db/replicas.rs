//! Reads on PostgreSQL streaming replicas, never from the past.
//!
//! A monitor task looks at the primary and every replica in rounds, every
//! [`POLL_INTERVAL`]: it reads the primary's WAL position
//! (`pg_current_wal_insert_lsn()`), then each replica's replayed position
//! (`pg_last_wal_replay_lsn()`). A replica whose replayed position has
//! reached the primary's position of a recent round (the last quarter of a
//! second) is *current as of* the latest such round's start: every
//! transaction committed before that round began is visible on it.
//! All requests share what the rounds found; a read makes no round trip of
//! its own to choose where it goes.
//!
//! A read says how fresh it must be ([`Freshness`]):
//! - [`Freshness::NOW`]: it sees everything committed before it began, as a
//!   read of the primary would. A replica serves it once a round that began
//!   after the read did found the replica current; the read waits up to
//!   `database.replica_wait` for one, then goes to the primary. Cache fills
//!   read this way, so that no value older than the last write of its key
//!   is ever cached, whatever a replica's lag.
//! - [`Freshness::after`] a WAL position (a caller's own last write): any
//!   replica that has replayed past it, without waiting;
//!   [`caller::freshness`](super::caller::freshness) is this for the
//!   current caller.
//! - [`Freshness::ANY`]: any replica in rotation.
//!
//! A replica is in rotation while it answered within [`DOWN_AFTER`], is
//! fewer than `database.replica_max_lag_bytes` of WAL behind the primary,
//! and was current as of at most `database.replica_max_lag` ago. A replica
//! that fails, stalls or is cut off therefore leaves it within a second,
//! and comes back by itself once rounds find it answering and current
//! again. With no replica in rotation every read goes to the primary.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use seawall_perfmon::CollectedFamily;
use sqlx::any::AnyPoolOptions;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool};

/// How often the monitor looks at the primary and the replicas.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// How long one look at a server may take before it counts as no answer.
const LOOK_TIMEOUT: Duration = Duration::from_millis(250);

/// A read on a replica that has not finished in this long is abandoned
/// and run on the primary, and the replica leaves rotation until a round
/// finds it answering: a replica cut off mid-read costs the read this
/// wait, not a failure.
pub const REPLICA_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// A replica that has not answered a look for this long takes no reads.
pub const DOWN_AFTER: Duration = Duration::from_millis(500);

/// How many rounds' primary positions are kept to find a replica current
/// (a quarter of a second at [`POLL_INTERVAL`]).
const RECENT_ROUNDS: usize = 50;

/// A position in PostgreSQL's write-ahead log (a `pg_lsn`), as a number of
/// bytes; printed and parsed as PostgreSQL does (`16/B374D848`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// A text that is not a WAL position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a WAL position (two hexadecimal numbers of at most 8 digits, as in 16/B374D848): {0:?}"
)]
pub struct LsnError(String);

impl FromStr for Lsn {
    type Err = LsnError;

    fn from_str(text: &str) -> Result<Self, LsnError> {
        let error = || LsnError(text.chars().take(40).collect());
        let (high, low) = text.split_once('/').ok_or_else(error)?;
        let half = |part: &str| {
            if part.is_empty() || part.len() > 8 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(error());
            }
            u64::from_str_radix(part, 16).map_err(|_| error())
        };
        Ok(Self((half(high)? << 32) | half(low)?))
    }
}

/// How fresh a read must be; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// The replica must have replayed up to here.
    after: Option<Lsn>,
    /// Everything committed before this moment must be visible.
    now: bool,
}

impl Freshness {
    /// Everything committed before the read began is visible.
    pub const NOW: Self = Self {
        after: None,
        now: true,
    };

    /// Any replica in rotation.
    pub const ANY: Self = Self {
        after: None,
        now: false,
    };

    /// Every transaction up to `position` is visible.
    pub fn after(position: Lsn) -> Self {
        Self {
            after: Some(position),
            now: false,
        }
    }
}

/// The replica-lag limits and the wait of [`Freshness::NOW`] reads.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A replica not current as of this long ago takes no reads.
    pub max_lag: Duration,
    /// A replica this many bytes behind takes no reads.
    pub max_lag_bytes: u64,
    /// How long a [`Freshness::NOW`] read waits for a current replica.
    pub wait: Duration,
}

/// One replica and what the rounds found of it. Times are µs since the
/// set's epoch, 0 for never.
#[derive(Debug)]
struct Replica {
    /// How metrics and logs name it: its host and port.
    name: String,
    pool: AnyPool,
    replayed: AtomicU64,
    answered_at: AtomicU64,
    current_as_of: AtomicU64,
    behind_bytes: AtomicU64,
    reads: AtomicU64,
    /// Whether it was in rotation at the last round, for the log.
    in_rotation: AtomicBool,
}

/// Where a read went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The primary.
    Primary,
    /// The replica of this index in `database.replicas`.
    Replica(usize),
}

/// The replicas of one primary, and the monitor that looks at them.
#[derive(Debug)]
pub struct Replicas {
    replicas: Vec<Replica>,
    limits: Limits,
    epoch: Instant,
    /// The primary's position at the last round that read it.
    primary_at: AtomicU64,
    /// The last rounds' starts and the primary's positions then, oldest
    /// first: a replica is current as of the latest round whose position
    /// it has replayed. Under steady writes the primary's position has
    /// always moved on by the time a replica is looked at, so comparing
    /// with the same round's position alone would almost never find one
    /// current.
    recent: parking_lot::Mutex<std::collections::VecDeque<(u64, u64)>>,
    /// Counts rounds; a [`Freshness::NOW`] read waits on it.
    rounds: tokio::sync::watch::Sender<u64>,
    next: AtomicUsize,
    primary_reads: AtomicU64,
}

/// A connection a read runs on, and where it goes.
#[derive(Debug)]
pub struct ReadConnection {
    /// The pooled connection.
    pub connection: PoolConnection<Any>,
    /// The server it is to.
    pub target: Target,
}

impl Replicas {
    /// Opens a pool of `pool_size` to each replica (its connections open
    /// lazily, so a replica down at start does not stop the service) and
    /// starts the monitor, which looks at the primary at `primary_url`
    /// through a connection of its own (never waiting behind the requests
    /// for one of theirs) and ends once the set is dropped.
    pub fn start(
        primary_url: &str,
        urls: &[String],
        pool_size: u32,
        limits: Limits,
    ) -> Result<Arc<Self>, sqlx::Error> {
        let primary = AnyPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(LOOK_TIMEOUT)
            .connect_lazy(primary_url)?;
        let replicas = urls
            .iter()
            .map(|url| {
                let pool = AnyPoolOptions::new()
                    .max_connections(pool_size)
                    .acquire_timeout(LOOK_TIMEOUT)
                    .connect_lazy(url)?;
                Ok(Replica {
                    name: host_of(url),
                    pool,
                    replayed: AtomicU64::new(0),
                    answered_at: AtomicU64::new(0),
                    current_as_of: AtomicU64::new(0),
                    behind_bytes: AtomicU64::new(u64::MAX),
                    reads: AtomicU64::new(0),
                    in_rotation: AtomicBool::new(false),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let (rounds, _) = tokio::sync::watch::channel(0);
        let set = Arc::new(Self {
            replicas,
            limits,
            epoch: Instant::now(),
            primary_at: AtomicU64::new(0),
            recent: parking_lot::Mutex::new(std::collections::VecDeque::with_capacity(
                RECENT_ROUNDS,
            )),
            rounds,
            next: AtomicUsize::new(0),
            primary_reads: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&set);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(POLL_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(set) = weak.upgrade() else {
                    return;
                };
                set.round(&primary).await;
            }
        });
        Ok(set)
    }

    /// Closes the replicas' pools and the monitor's connection.
    pub async fn close(&self) {
        for replica in &self.replicas {
            replica.pool.close().await;
        }
    }

    /// How many replicas there are.
    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty()
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// One look at the primary, then at every replica at once.
    async fn round(&self, primary: &AnyPool) {
        let began = self.now_us();
        let primary_at = look(primary, "SELECT CAST(pg_current_wal_insert_lsn() AS TEXT)").await;
        // Stored, not raised to the highest seen: after a failover to a
        // replica that had not replayed the old primary's last writes, the
        // new primary's position is lower, and replicas are compared with
        // it. Rounds never overlap, so a store is never an older look's.
        if let Some(position) = primary_at {
            self.primary_at.store(position.0, Ordering::Relaxed);
            let mut recent = self.recent.lock();
            if recent.len() == RECENT_ROUNDS {
                recent.pop_front();
            }
            recent.push_back((began, position.0));
        }
        let looks = self.replicas.iter().map(|replica| async move {
            let replayed = look(
                &replica.pool,
                "SELECT CAST(pg_last_wal_replay_lsn() AS TEXT) WHERE pg_is_in_recovery()",
            )
            .await;
            (replica, replayed)
        });
        for (replica, replayed) in futures_util::future::join_all(looks).await {
            if let Some(replayed) = replayed {
                replica.replayed.store(replayed.0, Ordering::Relaxed);
                replica.answered_at.store(self.now_us(), Ordering::Relaxed);
                if let Some(primary_at) = primary_at {
                    replica
                        .behind_bytes
                        .store(primary_at.0.saturating_sub(replayed.0), Ordering::Relaxed);
                    // Everything committed before a round began is at or
                    // before the primary's position then: replayed past
                    // it, the replica shows all of it.
                    let current_as_of = self
                        .recent
                        .lock()
                        .iter()
                        .rev()
                        .find(|(_, position)| *position <= replayed.0)
                        .map(|(began, _)| *began);
                    if let Some(current_as_of) = current_as_of {
                        replica
                            .current_as_of
                            .fetch_max(current_as_of, Ordering::Relaxed);
                    }
                }
            }
            let in_rotation = self.in_rotation(replica, self.now_us());
            if replica.in_rotation.swap(in_rotation, Ordering::Relaxed) != in_rotation {
                if in_rotation {
                    tracing::info!(replica = %replica.name, "the database replica takes reads again");
                } else {
                    tracing::warn!(
                        replica = %replica.name,
                        behind_bytes = replica.behind_bytes.load(Ordering::Relaxed),
                        "the database replica takes no reads: it did not answer, or it is behind the lag limits"
                    );
                }
            }
        }
        self.rounds.send_modify(|rounds| *rounds += 1);
    }

    fn in_rotation(&self, replica: &Replica, now: u64) -> bool {
        let answered = replica.answered_at.load(Ordering::Relaxed);
        let current = replica.current_as_of.load(Ordering::Relaxed);
        let within = |since: u64, limit: Duration| {
            since != 0
                && now.saturating_sub(since) <= u64::try_from(limit.as_micros()).unwrap_or(u64::MAX)
        };
        within(answered, DOWN_AFTER)
            && within(current, self.limits.max_lag)
            && replica.behind_bytes.load(Ordering::Relaxed) < self.limits.max_lag_bytes
    }

    /// A replica that serves a read of `freshness` begun at `began` (µs),
    /// taken in turn among those that do.
    fn pick(&self, freshness: Freshness, began: u64) -> Option<usize> {
        let now = self.now_us();
        let count = self.replicas.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..count)
            .map(|offset| (start + offset) % count)
            .find(|&at| {
                let replica = &self.replicas[at];
                self.in_rotation(replica, now)
                    && freshness
                        .after
                        .is_none_or(|after| replica.replayed.load(Ordering::Relaxed) >= after.0)
                    && (!freshness.now || replica.current_as_of.load(Ordering::Relaxed) > began)
            })
    }

    /// Where a read of `freshness` beginning now goes: a replica that
    /// serves it (for [`Freshness::NOW`], waiting up to the set's wait for
    /// a round to find one current), else the primary.
    pub async fn choose(&self, freshness: Freshness) -> Target {
        let began = self.now_us();
        // Subscribed before the first pick, so that a round ending between
        // the two is not missed by the wait below.
        let mut rounds = freshness.now.then(|| self.rounds.subscribe());
        if let Some(at) = self.pick(freshness, began) {
            return Target::Replica(at);
        }
        let now = self.now_us();
        let worth_waiting = freshness.now
            && !self.limits.wait.is_zero()
            && self
                .replicas
                .iter()
                .any(|replica| self.in_rotation(replica, now));
        if let (true, Some(rounds)) = (worth_waiting, rounds.as_mut()) {
            let deadline = tokio::time::Instant::now() + self.limits.wait;
            while tokio::time::timeout_at(deadline, rounds.changed())
                .await
                .is_ok_and(|changed| changed.is_ok())
            {
                if let Some(at) = self.pick(freshness, began) {
                    return Target::Replica(at);
                }
            }
        }
        Target::Primary
    }

    /// A connection to the replica at `at`, counting the read; `None` when
    /// none can be had (the replica is then out of rotation until a round
    /// finds it answering).
    pub async fn acquire(&self, at: usize) -> Option<PoolConnection<Any>> {
        let replica = &self.replicas[at];
        let connection = match replica.pool.try_acquire() {
            Some(connection) => Some(connection),
            None => replica.pool.acquire().await.ok(),
        };
        match connection {
            Some(connection) => {
                replica.reads.fetch_add(1, Ordering::Relaxed);
                Some(connection)
            }
            None => {
                replica.answered_at.store(0, Ordering::Relaxed);
                None
            }
        }
    }

    /// Counts a read sent to the primary.
    pub fn count_primary_read(&self) {
        self.primary_reads.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the replica at `at` out of rotation until a round finds it
    /// answering again: a statement on it failed for want of the server.
    pub fn found_down(&self, at: usize) {
        if let Some(replica) = self.replicas.get(at) {
            replica.answered_at.store(0, Ordering::Relaxed);
        }
    }

    /// Each replica's state, in the order of `database.replicas`.
    pub fn states(&self) -> Vec<ReplicaState> {
        let now = self.now_us();
        let ago =
            |since: u64| (since != 0).then(|| Duration::from_micros(now.saturating_sub(since)));
        self.replicas
            .iter()
            .map(|replica| ReplicaState {
                name: replica.name.clone(),
                in_rotation: self.in_rotation(replica, now),
                replayed: Lsn(replica.replayed.load(Ordering::Relaxed)),
                behind_bytes: match replica.behind_bytes.load(Ordering::Relaxed) {
                    u64::MAX => None,
                    bytes => Some(bytes),
                },
                current_as_of_ago: ago(replica.current_as_of.load(Ordering::Relaxed)),
                answered_ago: ago(replica.answered_at.load(Ordering::Relaxed)),
                reads: replica.reads.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Reads sent to the primary.
    pub fn primary_reads(&self) -> u64 {
        self.primary_reads.load(Ordering::Relaxed)
    }

    /// The primary's WAL position at the monitor's last look.
    pub fn primary_position(&self) -> Lsn {
        Lsn(self.primary_at.load(Ordering::Relaxed))
    }

    /// The replicas' metrics, for a scrape-time collector.
    #[allow(clippy::cast_precision_loss)] // counts and bytes, shown as floats
    pub fn collect(&self) -> Vec<CollectedFamily> {
        let states = self.states();
        let mut reads = CollectedFamily::counter(
            "db_reads",
            "Reads of the database that may go to a replica, by the server they went to.",
            &["target"],
        )
        .sample(&["primary"], self.primary_reads() as f64);
        let mut up = CollectedFamily::gauge(
            "db_replica_in_rotation",
            "1 while the replica takes reads: it answers, and is within both lag limits.",
            &["replica"],
        );
        let mut bytes = CollectedFamily::gauge(
            "db_replica_lag_bytes",
            "How far the replica's replay is behind the primary's WAL position, in bytes.",
            &["replica"],
        );
        let mut seconds = CollectedFamily::gauge(
            "db_replica_lag_seconds",
            "How long ago the replica was last found current (everything committed before then visible on it).",
            &["replica"],
        );
        for state in &states {
            let name = [state.name.as_str()];
            reads = reads.sample(&name, state.reads as f64);
            up = up.sample(&name, if state.in_rotation { 1.0 } else { 0.0 });
            if let Some(behind) = state.behind_bytes {
                bytes = bytes.sample(&name, behind as f64);
            }
            if let Some(ago) = state.current_as_of_ago {
                seconds = seconds.sample(&name, ago.as_secs_f64());
            }
        }
        vec![reads, up, bytes, seconds]
    }
}

/// What the monitor knows of one replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaState {
    /// Its host and port.
    pub name: String,
    /// Whether it takes reads.
    pub in_rotation: bool,
    /// How far it has replayed.
    pub replayed: Lsn,
    /// How far behind the primary it was at the last round that reached
    /// both.
    pub behind_bytes: Option<u64>,
    /// How long ago it was last found current.
    pub current_as_of_ago: Option<Duration>,
    /// How long ago it last answered.
    pub answered_ago: Option<Duration>,
    /// Reads it took.
    pub reads: u64,
}

/// Runs `sql` (one text column, a WAL position) on `pool` within
/// [`LOOK_TIMEOUT`]; `None` for no answer, an error, or no row (a replica
/// that is no longer in recovery: it was promoted).
async fn look(pool: &AnyPool, sql: &'static str) -> Option<Lsn> {
    let row: Option<(String,)> =
        tokio::time::timeout(LOOK_TIMEOUT, sqlx::query_as(sql).fetch_optional(pool))
            .await
            .ok()?
            .ok()?;
    row?.0.parse().ok()
}

/// `host:port` of a PostgreSQL URL, without its user or password.
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
        .to_owned()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::DatabaseConfig;
    use crate::db::Db;
    use seawall_perfmon::Monitor;
    use seawall_testkit::{Postgres, wait};

    /// The count of `marks`, read through `db` as `freshness` (on the
    /// primary or a replica).
    pub(crate) async fn marks(db: &Db, freshness: Freshness) -> i64 {
        db.read(freshness, |connection| {
            Box::pin(async move {
                sqlx::query_as::<_, (i64,)>("SELECT COUNT(*) FROM marks")
                    .fetch_one(connection)
                    .await
                    .map(|(count,)| count)
            })
        })
        .await
        .expect("reads")
    }

    pub(crate) async fn mark(db: &Db) -> Lsn {
        let mut connection = db.acquire().await.expect("a connection");
        sqlx::query("INSERT INTO marks VALUES (1)")
            .execute(&mut *connection)
            .await
            .expect("inserts");
        let (position,): (String,) =
            sqlx::query_as("SELECT CAST(pg_current_wal_insert_lsn() AS TEXT)")
                .fetch_one(&mut *connection)
                .await
                .expect("a position");
        position.parse().expect("a position")
    }

    pub(crate) fn state(db: &Db) -> ReplicaState {
        db.replicas().expect("replicas").states().remove(0)
    }

    pub(crate) async fn until_in_rotation(db: &Db, wanted: bool) {
        wait::until_async(format!("the replica in rotation: {wanted}"), async || {
            state(db).in_rotation == wanted
        })
        .await;
    }

    /// A primary and a streaming replica of it, and a pool on both with
    /// `max_lag` and `wait` (`database.replica_max_lag`, `replica_wait`),
    /// once the replica is in rotation, with a table `marks` to write to.
    pub(crate) async fn primary_and_replica(
        max_lag: Duration,
        wait: Duration,
    ) -> (Postgres, Postgres, Db) {
        let primary = Postgres::start().expect("the primary starts");
        let replica = Postgres::builder()
            .replica_of(&primary)
            .start()
            .expect("the replica starts");
        let config = DatabaseConfig {
            url: primary.url(),
            max_connections: Some(4),
            replicas: vec![replica.url()],
            replica_max_lag: max_lag,
            replica_wait: wait,
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
        (primary, replica, db)
    }

    /// A replica takes the reads it is current enough for, and no read
    /// ever sees the past: one that must see every write before it waits
    /// for a round to find the replica current, or goes to the primary
    /// while its replay is paused; one after a position goes where that
    /// position is replayed. Paused behind writes, killed, the replica
    /// leaves rotation, and comes back by itself once resumed, restarted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_go_to_a_replica_current_enough_and_never_see_the_past() {
        // A loaded machine's rounds may take a while; the wait is what lets
        // a read that must be current use the replica at all.
        let (_primary, mut replica, db) =
            primary_and_replica(Duration::from_millis(200), Duration::from_secs(1)).await;

        // Current: the write before the read is seen, on the replica.
        let position = mark(&db).await;
        wait::until_async("the replica to replay the write", async || {
            state(&db).replayed >= position
        })
        .await;
        assert_eq!(marks(&db, Freshness::NOW).await, 1);
        assert_eq!(state(&db).reads, 1, "{:?}", state(&db));
        let primary_reads = db.replicas().expect("replicas").primary_reads();

        // Paused: a read that must see the write goes to the primary.
        replica.pause_replay().expect("pauses");
        let position = mark(&db).await;
        assert_eq!(marks(&db, Freshness::NOW).await, 2);
        assert_eq!(marks(&db, Freshness::after(position)).await, 2);
        let replicas = db.replicas().expect("replicas");
        assert_eq!(replicas.primary_reads(), primary_reads + 2);
        // Behind the primary for longer than the lag limit: out.
        until_in_rotation(&db, false).await;
        assert!(state(&db).behind_bytes.is_some_and(|bytes| bytes > 0));
        assert_eq!(marks(&db, Freshness::ANY).await, 2, "the primary answers");
        replica.resume_replay().expect("resumes");
        until_in_rotation(&db, true).await;
        let reads = state(&db).reads;
        assert_eq!(marks(&db, Freshness::after(position)).await, 2);
        assert_eq!(
            state(&db).reads,
            reads + 1,
            "past the position, the replica reads"
        );

        // Killed: the reads sent its way go to the primary at once, then
        // it is out; restarted: back.
        replica.kill().expect("kills");
        for _ in 0..4 {
            assert_eq!(marks(&db, Freshness::ANY).await, 2);
        }
        until_in_rotation(&db, false).await;
        assert_eq!(marks(&db, Freshness::ANY).await, 2);
        replica.restart().expect("restarts");
        until_in_rotation(&db, true).await;
        db.close().await;
    }

    #[test]
    fn positions_read_and_print_as_postgres_does() {
        for (text, value) in [
            ("0/0", 0),
            ("0/3000148", 0x300_0148),
            ("16/B374D848", (0x16 << 32) | 0xB374_D848),
            ("FFFFFFFF/FFFFFFFF", u64::MAX),
        ] {
            let lsn: Lsn = text.parse().expect("a position");
            assert_eq!(lsn, Lsn(value));
            assert_eq!(lsn.to_string(), text);
        }
        for bad in [
            "",
            "0",
            "/",
            "0/",
            "/0",
            "1/2/3",
            "g/0",
            "100000000/0",
            "-1/0",
            " 0/0",
        ] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?}");
        }
        assert!(Lsn(1) < "0/2".parse().expect("a position"));
    }

    #[test]
    fn a_replica_is_named_by_its_host_and_port_alone() {
        assert_eq!(
            host_of("postgres://app:s3cret@db-2:5433/app?sslmode=require"),
            "db-2:5433"
        );
        assert_eq!(host_of("postgresql://db-3/app"), "db-3");
    }
}
