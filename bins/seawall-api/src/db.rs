//! The database: one sqlx `Any` pool that is SQLite or PostgreSQL depending on
//! the URL, the embedded migrations, and the readiness check.
//!
//! Every statement is written once in SQL that both engines accept (`$1`
//! placeholders, `BIGINT` columns, `CAST` where PostgreSQL would otherwise
//! answer `NUMERIC`); the only dialect difference is how a write transaction
//! takes its locks, see [`Db::begin_write`].

use std::time::{Duration, Instant};

use async_trait::async_trait;
use seawall_perfmon::{CheckResult, HealthCheck, Monitor};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{Any, AnyPool, Transaction};

use crate::config::DatabaseConfig;

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

/// A pool plus what it needs to time its queries.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    monitor: Monitor,
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
        let pool = AnyPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&config.url)
            .await?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|error| sqlx::Error::Migrate(Box::new(error)))?;
        Ok(Self {
            pool,
            backend,
            monitor,
        })
    }

    /// The pool, for queries; time them with `seawall_perfmon::sqlx::TimedQuery`
    /// and [`Db::monitor`].
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The monitor queries are timed into.
    pub fn monitor(&self) -> &Monitor {
        &self.monitor
    }

    /// Which engine this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a transaction that will write, taking the write lock up front on
    /// SQLite (`BEGIN IMMEDIATE`), so that a read-then-write transaction can't
    /// fail halfway with `SQLITE_BUSY`; on PostgreSQL rows are locked by the
    /// statements themselves (`SELECT … FOR UPDATE`, see [`Db::for_update`]).
    pub async fn begin_write(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// The row-locking suffix for a `SELECT` inside [`Db::begin_write`]: empty
    /// on SQLite, where the transaction already holds the write lock.
    pub fn for_update(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A health check that pings the database.
    pub fn health_check(&self) -> DatabaseCheck {
        DatabaseCheck {
            pool: self.pool.clone(),
            backend: self.backend,
        }
    }
}

/// Reports the database's round-trip time as `database:responseTime`; fails
/// when the database does not answer within a second.
#[derive(Debug, Clone)]
pub struct DatabaseCheck {
    pool: AnyPool,
    backend: Backend,
}

#[async_trait]
impl HealthCheck for DatabaseCheck {
    fn key(&self) -> String {
        "database:responseTime".to_owned()
    }

    async fn check(&self) -> CheckResult {
        let start = Instant::now();
        let ping = tokio::time::timeout(
            Duration::from_secs(1),
            sqlx::query("SELECT 1").execute(&self.pool),
        )
        .await;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        let result = match ping {
            Ok(Ok(_)) => CheckResult::pass().observed(ms, "ms"),
            Ok(Err(error)) => CheckResult::fail(format!("{}: {error}", self.backend.name())),
            Err(_) => {
                CheckResult::fail(format!("{} did not answer within 1 s", self.backend.name()))
            }
        };
        result.component_type("datastore")
    }
}
