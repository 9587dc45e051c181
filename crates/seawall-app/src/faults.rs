//! Fault knobs for benchmarks and tests (feature `faults`): process-wide
//! switches that make a dependency misbehave on purpose, so a benchmark can
//! show what the service does when, say, its database slows down.
//!
//! This module exists only in builds with the `faults` feature, which is off
//! by default: a production build has no fault knobs, and no code path that
//! reads them.
//!
//! ```
//! seawall_app::faults::set_db_slowdown(10);
//! assert_eq!(seawall_app::faults::db_slowdown(), 10);
//! seawall_app::faults::set_db_slowdown(1);
//! ```

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// How many times slower every timed query answers; 1 is off.
static DB_SLOWDOWN: AtomicU32 = AtomicU32::new(1);

/// Makes every query timed with [`Timed`](crate::db::Timed) take `factor`
/// times as long as the database took: after the query finishes, the caller
/// waits (`factor` − 1) times its duration more, still holding the
/// connection it ran the query on (a query run on the pool itself has
/// given its connection back by then), as it would on a database that
/// slow. 1 (or 0) turns the
/// slowdown off. Process-wide; takes effect for the queries that finish
/// after it.
pub fn set_db_slowdown(factor: u32) {
    DB_SLOWDOWN.store(factor.max(1), Ordering::Relaxed);
}

/// The factor set by [`set_db_slowdown`]; 1 when off.
pub fn db_slowdown() -> u32 {
    DB_SLOWDOWN.load(Ordering::Relaxed)
}

/// Waits out the slowdown of a query that took `elapsed`: nothing when the
/// knob is off.
pub(crate) async fn slow_down_query(elapsed: Duration) {
    let factor = db_slowdown();
    if factor > 1 {
        tokio::time::sleep(elapsed.saturating_mul(factor - 1)).await;
    }
}
