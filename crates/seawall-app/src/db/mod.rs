//! The database: one sqlx `Any` pool that is SQLite or PostgreSQL depending on
//! the URL, the embedded migrations, and the readiness check.
//!
//! Every statement is written once in SQL that both engines accept (`$1`
//! placeholders, `BIGINT` columns, `CAST` where PostgreSQL would otherwise
//! answer `NUMERIC`); the only dialect difference is how a write transaction
//! takes its locks, see [`Db::begin_write`].

use std::time::{Duration, Instant};

use async_trait::async_trait;
use seawall_perfmon::{CheckResult, HealthCheck, Histogram, Monitor};

use futures_util::future::BoxFuture;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Transaction};
use std::sync::Arc;

use crate::config::DatabaseConfig;

pub mod caller;
mod pool;
pub mod replicas;

use pool::{PrimaryPool, connect_options, primary_pool_options};

use replicas::{Freshness, Lsn, Replicas, Target};

/// The migrations in `migrations/`, embedded in the binary.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Which engine the pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite (a file, or memory).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Backend {
    /// The backend a database URL names, if any.
    pub fn of_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }

    /// `sqlite` or `postgres`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// How much of a SQLite file each connection maps into memory
/// (`PRAGMA mmap_size`): reads of the file's pages then come from the
/// operating system's page cache, which every connection shares, without a
/// `read` system call or a copy into the connection's own page cache. 1 GiB
/// of address space per connection maps the whole file at every size the
/// demo dataset reaches; a larger file is read past the mapping as before.
const SQLITE_MMAP_BYTES: i64 = 1 << 30;

/// The page cache of a reader, in KiB (`PRAGMA cache_size = -N`). With the
/// file mapped, a reader's cache holds only what the mapping cannot serve:
/// pages newer in the write-ahead log than in the file, and scratch pages
/// of sorts. SQLite's default (2 MiB) is kept per reader, so the readers'
/// caches together stay small next to the shared mapping.
const SQLITE_READER_CACHE_KIB: i64 = 2 * 1024;

/// The writer's page cache, in KiB: the pages a transaction changes live
/// here until they reach the log, and the one writer reuses them from one
/// transaction to the next (the hot rows of coupons, points and stock).
const SQLITE_WRITER_CACHE_KIB: i64 = 16 * 1024;

/// Sets up a new SQLite connection, reader or writer.
///
/// In WAL mode, `synchronous = NORMAL` syncs the log at checkpoints rather
/// than at every commit: a crash of the process loses nothing committed; a
/// crash of the machine or a power cut may lose the last commits before it,
/// and corrupts nothing. `FULL`, sqlx's default, syncs every commit, which
/// held the single writer to about 200 commits a second on the benchmark
/// machine (`scripts/cache-workload`). The mapping and the page cache are
/// sized by [`SQLITE_MMAP_BYTES`] and the cache constants. Prepared
/// statements: sqlx keeps up to 100 per connection (its default, which the
/// `Any` driver does not expose), more than the statements this crate
/// issues, so each connection prepares each statement once.
async fn sqlite_connection_setup(
    connection: &mut sqlx::AnyConnection,
    cache_kib: i64,
) -> Result<(), sqlx::Error> {
    for pragma in [
        "PRAGMA synchronous = NORMAL".to_owned(),
        format!("PRAGMA mmap_size = {SQLITE_MMAP_BYTES}"),
        format!("PRAGMA cache_size = -{cache_kib}"),
    ] {
        // Built from the constants above, never from input.
        sqlx::query(sqlx::AssertSqlSafe(pragma))
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}

fn is_sqlite_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// The histogram of waits for a pooled connection.
const ACQUIRE_WAIT_METRIC: &str = "db_pool_acquire_wait_seconds";

/// A pool plus what it needs to time its queries and its waits.
#[derive(Debug, Clone)]
pub struct Db {
    pool: PrimaryPool,
    backend: Backend,
    monitor: Monitor,
    acquire_wait: Histogram,
    /// SQLite on a file only: the one connection write transactions take
    /// turns on, apart from the readers' pool.
    write_pool: Option<AnyPool>,
    /// PostgreSQL with `database.replicas`: where [`Db::read`] may go.
    replicas: Option<Arc<Replicas>>,
}

impl Db {
    /// Connects and runs the embedded migrations.
    pub async fn connect(config: &DatabaseConfig, monitor: Monitor) -> Result<Self, sqlx::Error> {
        let backend = Backend::of_url(&config.url).ok_or_else(|| {
            sqlx::Error::Configuration(
                "the database URL must start with sqlite: or postgres://".into(),
            )
        })?;
        install_default_drivers();
        let mut options = primary_pool_options(config.pool_size());
        if backend == Backend::Sqlite {
            options = options.after_connect(|connection, _| {
                Box::pin(sqlite_connection_setup(connection, SQLITE_READER_CACHE_KIB))
            });
        }
        if is_sqlite_memory(&config.url) {
            // Every connection to `sqlite::memory:` opens a database of its
            // own, so the pool keeps exactly one, forever.
            options = options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        // sqlx's own statement log goes to `tracing` (through the `log`
        // bridge): every statement at trace, slow ones as warnings.
        let slow = Duration::from_secs_f64(monitor.slow_query_log(0).threshold_ms / 1000.0);
        let connect = connect_options(&config.url, slow)?;
        let pool = options.connect_with(connect.clone()).await?;
        if backend == Backend::Sqlite {
            // Readers and the writer then don't block each other. The mode is
            // stored in the file; an in-memory database answers "memory".
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|error| sqlx::Error::Migrate(Box::new(error)))?;
        // SQLite admits one writer at a time. Writers queue for a connection
        // of their own, holding nothing meanwhile: on the shared pool, each
        // waiting writer would hold a connection while SQLite's busy handler
        // sleeps, and readers would queue behind them for the pool.
        let write_pool = match backend {
            Backend::Sqlite if !is_sqlite_memory(&config.url) => Some(
                AnyPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(10))
                    .after_connect(|connection, _| {
                        Box::pin(sqlite_connection_setup(connection, SQLITE_WRITER_CACHE_KIB))
                    })
                    .connect_with(connect)
                    .await?,
            ),
            _ => None,
        };
        let acquire_wait = monitor
            .histogram(
                ACQUIRE_WAIT_METRIC,
                "Time spent waiting for a database connection by requests that found none idle \
                 (its count is the number of waits).",
                &[],
            )
            .and_then(|family| family.with_labels(&[]))
            .map_err(|error| sqlx::Error::Configuration(Box::new(error)))?;
        let pool = PrimaryPool::new(pool);
        let replicas = match backend {
            Backend::Postgres if !config.replicas.is_empty() => Some(Replicas::start(
                pool.clone(),
                &config.url,
                &config.replicas,
                config.pool_size(),
                slow,
                replicas::Limits {
                    max_lag: config.replica_max_lag,
                    max_lag_bytes: config.replica_max_lag_bytes,
                    wait: config.replica_wait,
                },
            )?),
            _ => None,
        };
        Ok(Self {
            pool,
            backend,
            monitor,
            acquire_wait,
            write_pool,
            replicas,
        })
    }

    /// The replicas reads may go to, when there are any.
    pub fn replicas(&self) -> Option<&Arc<Replicas>> {
        self.replicas.as_ref()
    }

    /// Runs a read that may go to a replica: `run` gets a connection to a
    /// replica that serves `freshness` (see [`replicas`]), or else to the
    /// primary. A read the replica does not finish within
    /// [`replicas::REPLICA_READ_TIMEOUT`], or that fails for want of the
    /// server, runs again on the primary, so `run` may run twice: it must
    /// only read. Without replicas it runs once, on the pool.
    ///
    /// ```
    /// use seawall_app::db::Timed as _;
    /// use seawall_app::db::replicas::Freshness;
    ///
    /// # async fn count(db: &seawall_app::db::Db) -> Result<i64, sqlx::Error> {
    /// const SQL: &str = "SELECT COUNT(*) FROM users";
    /// let (users,): (i64,) = db
    ///     .read(Freshness::NOW, |connection| {
    ///         let db = db.clone();
    ///         Box::pin(async move {
    ///             sqlx::query_as(SQL).fetch_one(connection).timed(&db, SQL).await
    ///         })
    ///     })
    ///     .await?;
    /// # Ok(users)
    /// # }
    /// ```
    pub async fn read<T, F>(&self, freshness: Freshness, run: F) -> Result<T, sqlx::Error>
    where
        F: for<'c> Fn(&'c mut AnyConnection) -> BoxFuture<'c, Result<T, sqlx::Error>>,
    {
        if let Some(replicas) = &self.replicas {
            if let Target::Replica(at) = replicas.choose(freshness).await
                && let Some(mut connection) = replicas.acquire(at).await
            {
                match tokio::time::timeout(replicas::REPLICA_READ_TIMEOUT, run(&mut connection))
                    .await
                {
                    Ok(Ok(value)) => return Ok(value),
                    // A replica cancels a read that conflicts with its
                    // replay, and fails its reads as it shuts down: any
                    // failure there is worth one try on the primary, which
                    // answers a faulty statement with its own error.
                    Ok(Err(error)) if !lost_server(&error) => {
                        tracing::debug!(%error, "a read on a replica failed; the primary reads");
                    }
                    // The replica is gone or stuck: its connection is not
                    // given back to the pool, and it leaves rotation until
                    // a look finds it answering.
                    _ => {
                        replicas.found_down(at);
                        drop(connection.detach());
                    }
                }
            }
            replicas.count_primary_read();
        }
        let mut connection = self.acquire().await?;
        run(&mut connection).await
    }

    /// The pool of the primary, for start-up work (migrations, the demo
    /// seed). Requests take their connections with [`Db::acquire`] so that
    /// waits are counted. After a [failover](replicas) it is a pool to the
    /// new primary: take it again for each piece of work rather than
    /// keeping it.
    pub fn pool(&self) -> AnyPool {
        self.pool.get()
    }

    /// Takes a connection from the pool. When none is idle, the time until one
    /// is returned or opened goes into `db_pool_acquire_wait_seconds`, whose
    /// count is the number of such waits. Time the queries on it with
    /// [`Timed::timed`].
    pub async fn acquire(&self) -> Result<PoolConnection<Any>, sqlx::Error> {
        let pool = self.pool.get();
        let acquired = match pool.try_acquire() {
            Some(connection) => Ok(connection),
            None => self.waited_for(pool.acquire()).await,
        };
        match acquired {
            // A failover closed the pool this began on: once more, on the
            // pool to the new primary.
            Err(sqlx::Error::PoolClosed) => self.waited_for(self.pool.get().acquire()).await,
            acquired => acquired,
        }
    }

    async fn waited_for<T>(&self, acquire: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let acquired = acquire.await;
        self.acquire_wait.record(started.elapsed());
        acquired
    }

    /// The monitor queries are timed into.
    pub fn monitor(&self) -> &Monitor {
        &self.monitor
    }

    /// The most connections the pool opens.
    pub fn max_connections(&self) -> u32 {
        self.pool.get().options().get_max_connections()
    }

    /// Whether write transactions have a connection of their own (a SQLite
    /// file), so that they take turns without holding the readers' pool.
    pub fn has_write_connection(&self) -> bool {
        self.write_pool.is_some()
    }

    /// Which engine this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a transaction that will write, taking the write lock up front on
    /// SQLite (`BEGIN IMMEDIATE`), so that a read-then-write transaction can't
    /// fail halfway with `SQLITE_BUSY`; on PostgreSQL rows are locked by the
    /// statements themselves (`SELECT … FOR UPDATE`). On a SQLite file, the
    /// process's writers take turns on one connection of their own.
    /// Waits for a connection are counted as in [`Db::acquire`].
    pub async fn begin_write(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        let begin = match self.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        let pool = self.write_pool.clone().unwrap_or_else(|| self.pool.get());
        let begun = match pool.try_begin_with(begin).await {
            Ok(Some(transaction)) => Ok(transaction),
            Ok(None) => self.waited_for(pool.begin_with(begin)).await,
            Err(error) => Err(error),
        };
        match begun {
            // A failover closed the pool this began on: once more, on the
            // pool to the new primary.
            Err(sqlx::Error::PoolClosed) if self.write_pool.is_none() => {
                self.waited_for(self.pool.get().begin_with(begin)).await
            }
            begun => begun,
        }
    }

    /// A connection for one write statement outside a transaction: on a
    /// SQLite file the writers' own connection (so it takes its turn with
    /// the write transactions), else one of the pool's. Waits are counted
    /// as in [`Db::acquire`].
    pub async fn acquire_write(&self) -> Result<PoolConnection<Any>, sqlx::Error> {
        let Some(pool) = &self.write_pool else {
            return self.acquire().await;
        };
        match pool.try_acquire() {
            Some(connection) => Ok(connection),
            None => self.waited_for(pool.acquire()).await,
        }
    }

    /// Says that a write on the primary has committed, so that the current
    /// [caller](caller::Caller) reads it back ([`caller::freshness`]): with
    /// replicas and inside a caller's scope, reads the primary's WAL
    /// insert position (at or past the write's commit record, whatever
    /// `synchronous_commit` is) and raises the caller's position to it,
    /// and its identity's record if it has one ([`caller::Positions`]).
    /// Costs one statement on the primary then (and a Redis round trip for
    /// a caller with a record); nothing without replicas or outside a
    /// scope. The caller's position after it, if any.
    ///
    /// The write has committed either way: a position that cannot be read
    /// (the primary failed just after the commit) is logged and leaves the
    /// caller's position as it was, so that its next read may miss this
    /// one write if it goes to a replica that has not replayed it.
    pub async fn wrote(&self) -> Option<Lsn> {
        const SQL: &str = replicas::POSITION_SQL;
        let caller = caller::Caller::current()?;
        if self.replicas.is_none() {
            return caller.position();
        }
        let read: Result<(String,), sqlx::Error> = async {
            let mut connection = self.acquire().await?;
            sqlx::query_as(SQL)
                .fetch_one(&mut *connection)
                .timed(self, SQL)
                .await
        }
        .await;
        match read.map(|(text,)| text.parse::<Lsn>()) {
            // Boxed, as the Redis call it may make would otherwise be part
            // of every write's future.
            Ok(Ok(position)) => {
                let position = self
                    .replicas
                    .as_ref()
                    .map_or(position, |replicas| replicas.settled(position));
                Box::pin(caller.wrote(position)).await;
            }
            Ok(Err(error)) => tracing::warn!(%error, "the primary's WAL position did not parse"),
            Err(error) => {
                tracing::warn!(%error, "the primary's WAL position after a write could not be read");
            }
        }
        caller.position()
    }

    /// Closes the pools, waiting for connections to be returned.
    pub async fn close(&self) {
        if let Some(write_pool) = &self.write_pool {
            write_pool.close().await;
        }
        if let Some(replicas) = &self.replicas {
            replicas.close().await;
        }
        self.pool.get().close().await;
    }

    /// A health check that pings the database.
    pub fn health_check(&self) -> DatabaseCheck {
        DatabaseCheck {
            pool: self.pool.clone(),
            backend: self.backend,
        }
    }
}

/// Times the app's queries into [`Db::monitor`], as
/// `seawall_perfmon::sqlx::TimedQuery` does: latency into
/// `db_query_duration_seconds`, slow queries into the slow-query log.
///
/// With the `faults` feature, a query also takes as many times longer as
/// [`faults::set_db_slowdown`](crate::faults::set_db_slowdown) says: after it
/// finishes, the caller waits out the difference before it sees the answer,
/// still holding the connection it ran the query on (a query run on the
/// pool itself has given its connection back), and the recorded latency
/// includes the wait.
/// Without the feature this is plain timing.
///
/// ```
/// use seawall_app::db::Timed as _;
///
/// # async fn count(db: &seawall_app::db::Db) -> Result<i64, sqlx::Error> {
/// const SQL: &str = "SELECT COUNT(*) FROM users";
/// let (users,): (i64,) = sqlx::query_as(SQL).fetch_one(&db.pool()).timed(db, SQL).await?;
/// # Ok(users)
/// # }
/// ```
pub trait Timed<T>: Future<Output = Result<T, sqlx::Error>> + Sized {
    /// Runs the query, recording its latency and outcome under `sql`'s
    /// operation (`SELECT`, `INSERT`, ...) in `db`'s monitor. `sql` is
    /// stored only if the query is slow, and then sanitised. `RowNotFound`
    /// counts as a successful query.
    fn timed(self, db: &Db, sql: &str) -> impl Future<Output = Result<T, sqlx::Error>> {
        let monitor = db.monitor();
        async move {
            // tokio's clock, so that a test with the clock paused measures
            // the slowdown exactly.
            let start = tokio::time::Instant::now();
            let result = self.await;
            #[cfg(feature = "faults")]
            crate::faults::slow_down_query(start.elapsed()).await;
            let succeeded = matches!(&result, Ok(_) | Err(sqlx::Error::RowNotFound));
            monitor.record_query(sql, start.elapsed(), succeeded);
            result
        }
    }
}

impl<T, F> Timed<T> for F where F: Future<Output = Result<T, sqlx::Error>> {}

/// Reports the database's round-trip time as `database:responseTime`; fails
/// when the database does not answer within a second.
#[derive(Debug, Clone)]
pub struct DatabaseCheck {
    pool: PrimaryPool,
    backend: Backend,
}

#[async_trait]
impl HealthCheck for DatabaseCheck {
    fn key(&self) -> String {
        "database:responseTime".to_owned()
    }

    async fn check(&self) -> CheckResult {
        crate::checks::timed_ping(
            self.backend.name(),
            sqlx::query("SELECT 1").execute(&self.pool.get()),
        )
        .await
    }
}

/// What a failed statement says about the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Out of reach: no connection in time, the pool closed, or I/O failed.
    Unavailable,
    /// Lock contention: worth retrying shortly.
    Busy,
    /// Anything else: a fault of the statement or the schema.
    Failed,
}

/// Tells an unavailable or busy database from a failed statement.
pub fn fault(error: &sqlx::Error) -> Fault {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            Fault::Unavailable
        }
        sqlx::Error::Database(db) if is_contention(db.code().as_deref()) => Fault::Busy,
        _ => Fault::Failed,
    }
}

/// Whether a statement failed because its server is gone or going: no
/// connection, I/O, or PostgreSQL's connection exceptions (SQLSTATE class
/// 08) and operator intervention (57: a shutdown, a crash, a cancel).
fn lost_server(error: &sqlx::Error) -> bool {
    fault(error) == Fault::Unavailable
        || matches!(error, sqlx::Error::Database(db) if db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57")))
}

/// Whether a statement broke a unique or primary-key constraint
/// (PostgreSQL's 23505; SQLite's 2067 and 1555).
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db)
        if matches!(db.code().as_deref(), Some("23505" | "2067" | "1555")))
}

/// Lock contention rather than a fault: PostgreSQL's serialization failure,
/// deadlock and lock-not-available (five-character SQLSTATEs), and SQLite's
/// `SQLITE_BUSY` (5) and `SQLITE_LOCKED` (6) with their extended codes
/// (shorter decimal numbers whose low byte is the primary code).
fn is_contention(code: Option<&str>) -> bool {
    match code {
        Some("40001" | "40P01" | "55P03") => true,
        Some(code) if code.len() < 5 => code
            .parse::<u32>()
            .is_ok_and(|code| matches!(code & 0xff, 5 | 6)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contention_is_told_apart_from_faults() {
        for busy in [
            "5", "261", "517", "773", "6", "262", "40001", "40P01", "55P03",
        ] {
            assert!(is_contention(Some(busy)), "{busy}");
        }
        for fault in ["1", "19", "2067", "23505", "42P01", "22005", "XX000"] {
            assert!(!is_contention(Some(fault)), "{fault}");
        }
        assert!(!is_contention(None));
    }

    /// The `faults` feature's slowdown, through [`Timed`].
    #[cfg(feature = "faults")]
    mod slowdown {
        use super::*;

        /// Turns the process-wide slowdown off when dropped, even when the
        /// test fails halfway.
        struct SlowdownOff;

        impl Drop for SlowdownOff {
            fn drop(&mut self) {
                crate::faults::set_db_slowdown(1);
            }
        }

        /// A `Db` that never connects (nothing here runs a statement), so
        /// that a test can start with tokio's clock paused.
        fn unconnected_db() -> Db {
            install_default_drivers();
            let pool = AnyPoolOptions::new()
                .connect_lazy("sqlite::memory:")
                .expect("a valid URL");
            let monitor = Monitor::new();
            let acquire_wait = monitor
                .histogram(ACQUIRE_WAIT_METRIC, "waits", &[])
                .and_then(|family| family.with_labels(&[]))
                .expect("histogram");
            Db {
                pool: PrimaryPool::new(pool),
                backend: Backend::Sqlite,
                monitor,
                acquire_wait,
                write_pool: None,
                replicas: None,
            }
        }

        #[tokio::test(start_paused = true)]
        async fn a_slowed_down_query_takes_that_many_times_as_long_and_is_recorded_so() {
            let db = unconnected_db();
            let _off = SlowdownOff;
            let query = || async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok::<_, sqlx::Error>(())
            };
            let recorded = || {
                db.monitor()
                    .query_window(Duration::from_secs(60))
                    .stats
                    .latency
            };

            crate::faults::set_db_slowdown(10);
            let start = tokio::time::Instant::now();
            query().timed(&db, "SELECT 1").await.expect("answers");
            assert_eq!(start.elapsed(), Duration::from_millis(100));
            let slow = recorded();
            assert_eq!(slow.count, 1);
            // The recorded latency includes the slowdown (within the
            // histogram's precision).
            assert!((99_000..=101_000).contains(&slow.max_us), "{slow:?}");

            crate::faults::set_db_slowdown(1);
            let start = tokio::time::Instant::now();
            query().timed(&db, "SELECT 1").await.expect("answers");
            assert_eq!(start.elapsed(), Duration::from_millis(10));
            let both = recorded();
            assert_eq!(both.count, 2);
            assert!((9_900..=10_100).contains(&both.min_us), "{both:?}");
        }
    }

    #[tokio::test]
    async fn an_in_memory_database_is_one_database_for_the_whole_pool() {
        let config = DatabaseConfig {
            url: "sqlite::memory:".to_owned(),
            max_connections: Some(4),
            ..DatabaseConfig::default()
        };
        let db = Db::connect(&config, Monitor::new()).await.expect("connect");
        let pool = db.pool();
        let count = || sqlx::query_as::<_, (i64,)>("SELECT COUNT(*) FROM users").fetch_one(&pool);
        // Concurrent queries would each open a fresh, empty database (without
        // the migrated tables) if the pool made more than one connection.
        let (a, b, c) = tokio::join!(count(), count(), count());
        for result in [a, b, c] {
            assert_eq!(result.expect("the migrated table is there").0, 0);
        }
    }

    #[tokio::test]
    async fn a_sqlite_file_gets_one_reader_per_core_a_mapping_and_sized_caches() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = DatabaseConfig {
            url: format!("sqlite://{}/shaped.db?mode=rwc", dir.path().display()),
            max_connections: None,
            ..DatabaseConfig::default()
        };
        let db = Db::connect(&config, Monitor::new()).await.expect("connect");
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        assert_eq!(usize::try_from(db.max_connections()).ok(), Some(cores));
        assert!(db.has_write_connection());
        let pragma = |name: &'static str, pool: AnyPool| async move {
            let mut connection = pool.acquire().await.expect("a connection");
            sqlx::query_as::<_, (i64,)>(sqlx::AssertSqlSafe(format!("PRAGMA {name}")))
                .fetch_one(&mut *connection)
                .await
                .expect(name)
                .0
        };
        let writer = db.write_pool.clone().expect("a writer");
        // A build of SQLite without memory mapping would answer 0.
        assert_eq!(pragma("mmap_size", db.pool()).await, SQLITE_MMAP_BYTES);
        assert_eq!(pragma("mmap_size", writer.clone()).await, SQLITE_MMAP_BYTES);
        assert_eq!(
            pragma("cache_size", db.pool()).await,
            -SQLITE_READER_CACHE_KIB
        );
        assert_eq!(
            pragma("cache_size", writer.clone()).await,
            -SQLITE_WRITER_CACHE_KIB
        );
        assert_eq!(pragma("synchronous", writer).await, 1, "NORMAL");

        let config = DatabaseConfig {
            max_connections: Some(3),
            ..config
        };
        db.close().await;
        let db = Db::connect(&config, Monitor::new()).await.expect("connect");
        assert_eq!(db.max_connections(), 3, "a configured size is kept");
    }

    #[test]
    fn postgres_keeps_its_default_pool() {
        let config = DatabaseConfig {
            url: "postgres://h/db".to_owned(),
            max_connections: None,
            ..DatabaseConfig::default()
        };
        assert_eq!(
            config.pool_size(),
            crate::config::schema::POSTGRES_DEFAULT_POOL
        );
    }

    #[test]
    fn backends_are_told_by_scheme() {
        assert_eq!(Backend::of_url("sqlite://x.db"), Some(Backend::Sqlite));
        assert_eq!(
            Backend::of_url("postgresql://h/db"),
            Some(Backend::Postgres)
        );
        assert_eq!(Backend::of_url("mysql://h/db"), None);
    }
}
