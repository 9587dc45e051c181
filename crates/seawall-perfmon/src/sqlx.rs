//! Timing for sqlx queries (feature `sqlx`): latency goes into the
//! `db_query_duration_seconds` histogram and slow queries into the slow-query log.

use std::future::Future;
use std::time::Instant;

use crate::Monitor;

/// Times any sqlx query future.
///
/// ```
/// use seawall_perfmon::{Monitor, sqlx::TimedQuery};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), sqlx::Error> {
/// let monitor = Monitor::new();
/// let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
/// const SQL: &str = "SELECT 1 + ?";
/// let (two,): (i64,) = sqlx::query_as(SQL).bind(1_i64).fetch_one(&pool).timed(&monitor, SQL).await?;
/// assert_eq!(two, 2);
/// assert_eq!(monitor.query_window(std::time::Duration::from_secs(60)).stats.latency.count, 1);
/// # Ok(())
/// # }
/// ```
pub trait TimedQuery<T>: Future<Output = Result<T, ::sqlx::Error>> + Sized {
    /// Runs the query, recording its latency and outcome under `sql`'s
    /// operation (`SELECT`, `INSERT`, ...). `sql` is stored only if the query is
    /// slow, and then sanitised. `RowNotFound` counts as a successful query.
    fn timed(self, monitor: &Monitor, sql: &str) -> impl Future<Output = Result<T, ::sqlx::Error>> {
        async move {
            let start = Instant::now();
            let result = self.await;
            let succeeded = matches!(&result, Ok(_) | Err(::sqlx::Error::RowNotFound));
            monitor.record_query(sql, start.elapsed(), succeeded);
            result
        }
    }
}

impl<T, F> TimedQuery<T> for F where F: Future<Output = Result<T, ::sqlx::Error>> {}
