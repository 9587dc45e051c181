//! The service's own metrics beside the HTTP and query histograms: build
//! information, the process (memory, CPU, file descriptors, threads), the
//! database pool and the Redis connection, read at every scrape.

use seawall_perfmon::{CollectedFamily, Monitor, ProcessCollector};

use crate::db::Db;
use crate::redis::Redis;

/// The revision `build.rs` found, or `unknown`.
const REVISION: &str = env!("SEAWALL_GIT_REVISION");

/// Registers build info and the scrape-time collectors on `monitor`.
pub fn register(
    monitor: &Monitor,
    db: &Db,
    redis: Option<&Redis>,
) -> Result<(), seawall_perfmon::Error> {
    monitor.build_info(&[
        ("version", env!("CARGO_PKG_VERSION")),
        ("revision", REVISION),
    ])?;
    monitor.register_collector(ProcessCollector::new())?;
    let db_now = db.clone();
    let max = db.max_connections();
    monitor.register_collector(move || {
        // The pool now: a failover puts another in its place.
        let pool = db_now.pool();
        let size = f64::from(pool.size());
        #[allow(clippy::cast_precision_loss)] // a pool holds at most 1,000
        let idle = pool.num_idle() as f64;
        vec![
            CollectedFamily::gauge(
                "db_pool_connections",
                "Connections the database pool holds, by state.",
                &["state"],
            )
            .sample(&["idle"], idle)
            .sample(&["in_use"], (size - idle).max(0.0)),
            CollectedFamily::gauge(
                "db_pool_max_connections",
                "The most connections the database pool opens.",
                &[],
            )
            .sample(&[], f64::from(max)),
        ]
    })?;
    if let Some(replicas) = db.replicas() {
        let replicas = std::sync::Arc::clone(replicas);
        monitor.register_collector(move || replicas.collect())?;
    }
    if let Some(redis) = redis {
        let redis = redis.clone();
        monitor.register_collector(move || {
            vec![
                CollectedFamily::gauge(
                    "redis_connected",
                    "1 while the Redis client is connected, 0 while it reconnects.",
                    &[],
                )
                .sample(&[], if redis.is_connected() { 1.0 } else { 0.0 }),
            ]
        })?;
    }
    Ok(())
}
