//! The pools' setup shared by the primary's pool and the replicas'
//! monitor, which replaces it at a failover.

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::ConnectOptions as _;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};

/// The pool of the primary, shared by every clone of a [`Db`](super::Db): a failover
/// to a promoted replica ([`replicas`](super::replicas)) puts a pool to the new primary in
/// its place, and every statement after that goes there.
#[derive(Debug, Clone)]
pub(crate) struct PrimaryPool(Arc<parking_lot::RwLock<AnyPool>>);

impl PrimaryPool {
    pub(crate) fn new(pool: AnyPool) -> Self {
        Self(Arc::new(parking_lot::RwLock::new(pool)))
    }

    /// The pool now.
    pub(crate) fn get(&self) -> AnyPool {
        self.0.read().clone()
    }

    /// Puts `pool` in place of the pool now, which it returns.
    pub(crate) fn replace(&self, pool: AnyPool) -> AnyPool {
        std::mem::replace(&mut *self.0.write(), pool)
    }
}

/// How the service's pool to a PostgreSQL primary of `size` connections
/// is set up: at start, and again by a failover.
pub(crate) fn primary_pool_options(size: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(10))
}

/// The connection options of `url`, with sqlx's statement log going to
/// `tracing`: every statement at trace, those slower than `slow` as
/// warnings.
pub(crate) fn connect_options(url: &str, slow: Duration) -> Result<AnyConnectOptions, sqlx::Error> {
    Ok(AnyConnectOptions::from_str(url)?
        .log_statements(log::LevelFilter::Trace)
        .log_slow_statements(log::LevelFilter::Warn, slow))
}
