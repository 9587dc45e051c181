//! What every processor shares: the database, the cache they invalidate,
//! the files directory, and the helpers of long, batched jobs.

use std::path::PathBuf;

use seawall_queue::{Job, JobError};
use sqlx::query::Query;
use sqlx::{Any, Database};

use crate::cache::ApiCache;
use crate::config::QueueName;
use crate::db::replicas::{Freshness, Lsn};
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

/// What a job's [context](seawall_queue::JobOptions::context) starts with
/// when it names the WAL position the job's reads must see: the position
/// of the caller that enqueued it (see [`enqueue_with`](super::enqueue_with)).
pub(super) const READ_AFTER: &str = "read-after=";

/// How fresh the replica reads of `job` must be. A job enqueued for a
/// caller carries the caller's position in its context (`read-after=16/B3`,
/// `0/0` for a caller that had written nothing), and reads a replica that
/// has replayed that far, without waiting, else the primary: it sees the
/// writes of the request that enqueued it however far behind the replicas
/// are. A job without one (enqueued outside a caller, by a scheduler, or
/// by a release that sent none) reads as of when its read begins
/// ([`Freshness::NOW`]): every write committed before it, whoever made it,
/// since the job was enqueued after its writer's writes and runs after its
/// enqueue.
pub(super) fn freshness<T>(job: &Job<T>) -> Freshness {
    match job
        .context()
        .and_then(|context| context.strip_prefix(READ_AFTER))
        .map(str::parse::<Lsn>)
    {
        Some(Ok(Lsn(0))) => Freshness::ANY,
        Some(Ok(position)) => Freshness::after(position),
        None | Some(Err(_)) => Freshness::NOW,
    }
}

/// The rows of `sql`, a read of one learner's rows with `user_id` (and
/// `since`, when given) bound, read where [`freshness`] says.
pub(super) async fn read_rows<R>(
    db: &Db,
    freshness: Freshness,
    sql: &'static str,
    user_id: i64,
    since: Option<i64>,
) -> Result<Vec<R>, JobError>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin + 'static,
{
    db.read(freshness, |connection| {
        let db = db.clone();
        Box::pin(async move {
            let query = sqlx::query_as::<_, R>(sql).bind(user_id);
            let query = match since {
                Some(since) => query.bind(since),
                None => query,
            };
            query.fetch_all(connection).timed(&db, sql).await
        })
    })
    .await
    .map_err(|error| database(&error))
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
