//! What every processor shares: the database, the cache they invalidate,
//! the files directory, and the helpers of long, batched jobs.

use std::path::PathBuf;

use seawall_queue::{Job, JobError};
use sqlx::query::Query;
use sqlx::{Any, Database};

use crate::cache::ApiCache;
use crate::config::QueueName;
use crate::db::{Db, Timed as _};
/// What the processors work with.
#[derive(Clone)]
pub struct Processors {
    pub(super) db: Db,
    pub(super) cache: Option<ApiCache>,
    pub(super) files: PathBuf,
}

impl Processors {
    /// The processors' shared parts: the database, the cache they invalidate
    /// (when on), and the directory of backups, exports and imports.
    pub fn new(db: Db, cache: Option<ApiCache>, files: PathBuf) -> Self {
        Self { db, cache, files }
    }
}

/// `queue:id`, how rows written by a job name it.
pub(super) fn job_key<T>(queue: QueueName, job: &seawall_queue::Job<T>) -> String {
    format!("{queue}:{}", job.id())
}

/// A database error, retried.
pub(super) fn database(error: &sqlx::Error) -> JobError {
    JobError::new(format!("database error: {error}"))
}

/// Rows one step of a long job handles before it reports progress.
pub(super) const BATCH: usize = 500;

/// One statement with its values bound.
pub(super) type Statement = Query<'static, Any, <Any as Database>::Arguments>;

/// Writes `rows` in batches of [`BATCH`], one write transaction per batch,
/// running the statement `bind` makes of each row (`sql`, timed under that
/// text), and reports "`done` of `total` `what`" after each commit. A
/// failure rolls its batch back; the batches before it stay written, so the
/// statement must be safe to repeat when the job runs again.
pub(super) async fn write_in_batches<T, P>(
    processors: &Processors,
    job: &Job<P>,
    rows: &[T],
    what: &str,
    sql: &'static str,
    bind: impl Fn(&T) -> Statement,
) -> Result<(), JobError> {
    let db = &processors.db;
    let total = rows.len();
    for (done, batch) in rows.chunks(BATCH).enumerate() {
        let mut transaction = db.begin_write().await.map_err(|error| database(&error))?;
        for row in batch {
            bind(row)
                .execute(&mut *transaction)
                .timed(db, sql)
                .await
                .map_err(|error| database(&error))?;
        }
        transaction
            .commit()
            .await
            .map_err(|error| database(&error))?;
        let finished = ((done + 1) * BATCH).min(total);
        job.progress(
            percent(finished, total),
            &format!("{finished} of {total} {what}"),
        )
        .await;
    }
    Ok(())
}

/// `done` of `total` as a percentage below 100 (100 is reported when the
/// job has finished).
pub(super) fn percent(done: usize, total: usize) -> u8 {
    let share = done.saturating_mul(99) / total.max(1);
    u8::try_from(share.min(99)).unwrap_or(99)
}
