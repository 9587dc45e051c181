//! Completing a review: the SM-2 schedule and its write. On a SQLite file
//! concurrent reviews are written in groups ([`crate::group`]): one
//! transaction per review held the service to a few hundred reviews a
//! second under load (`scripts/cache-workload`), with every other request
//! queueing behind the writers.

use sqlx::AnyConnection;

use crate::db::{Backend, Db, Timed as _, caller};
use crate::group::{GroupJob, GroupWriter, WriteFuture, in_transaction};

pub(crate) use crate::time::DAY_MS;
/// An interval beyond a century is as good as "never again".
pub(crate) const MAX_INTERVAL_DAYS: i64 = 36_500;

/// A finished review, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Review {
    /// The learner.
    pub(crate) user_id: i64,
    /// The content reviewed.
    pub(crate) content_id: i64,
    /// SM-2 quality, 0 to 5.
    pub(crate) rating: i64,
    /// Time spent on it, in milliseconds.
    pub(crate) duration_ms: i64,
    /// When it was completed (Unix ms).
    pub(crate) at_ms: i64,
}

/// Where a learner stands with one content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SchedulePoint {
    /// Days until the next review.
    pub(crate) interval_days: i64,
    /// The SM-2 ease factor in thousandths (2500 is 2.5).
    pub(crate) ease_permille: i64,
    /// Passed reviews in a row.
    pub(crate) repetitions: i64,
}

/// SM-2: a failed review (quality below 3) starts over tomorrow; a passed one
/// waits 1, then 6, then `interval × ease` days. The ease factor moves by
/// `0.1 − (5 − q)(0.08 + (5 − q) · 0.02)` and never drops below 1.3.
pub(crate) fn next_schedule(current: SchedulePoint, quality: i64) -> SchedulePoint {
    let miss = 5 - quality;
    let ease_permille = (current.ease_permille + 100 - miss * (80 + miss * 20)).max(1300);
    if quality < 3 {
        return SchedulePoint {
            interval_days: 1,
            ease_permille,
            repetitions: 0,
        };
    }
    let interval_days = match current.repetitions {
        0 => 1,
        1 => 6,
        _ => (current.interval_days.max(1) * ease_permille + 500) / 1000,
    };
    SchedulePoint {
        interval_days: interval_days.clamp(1, MAX_INTERVAL_DAYS),
        ease_permille,
        repetitions: current.repetitions.saturating_add(1),
    }
}

/// Writes reviews: grouped on a SQLite file (see [`crate::group`]), each
/// on its own on PostgreSQL ([`GroupJob::write_alone`]).
pub(crate) type ReviewWriter = GroupWriter<Review>;

impl GroupJob for Review {
    type Output = Option<SchedulePoint>;

    fn write<'c>(
        &'c self,
        connection: &'c mut AnyConnection,
        db: &'c Db,
    ) -> WriteFuture<'c, Self::Output> {
        Box::pin(write_one(connection, db, self))
    }

    /// On PostgreSQL, two round trips and no transaction: a read of the
    /// schedule, then one statement that moves it only if it is still as
    /// read and writes the history row of that move. A schedule another
    /// review moved in between is read again; after a few such misses the
    /// review takes the row lock in a transaction of its own, which always
    /// lands.
    ///
    /// The first read may go to a replica (one that has the caller's own
    /// writes, [`caller::freshness`]): the move lands only on the schedule
    /// as read, so a replica behind the primary costs the review one more
    /// try, on the primary, never a wrong move. A replica that finds no
    /// schedule is asked again on the primary too, as one that has not
    /// replayed the schedule's creation would answer so.
    fn write_alone<'a>(&'a self, db: &'a Db) -> WriteFuture<'a, Self::Output> {
        if db.backend() != Backend::Postgres {
            return Box::pin(in_transaction(self, db));
        }
        Box::pin(async move {
            let mut read_on = match db.replicas() {
                Some(_) => ReadOn::AnyServer,
                None => ReadOn::Primary,
            };
            for _ in 0..OPTIMISTIC_TRIES {
                match write_optimistic(db, self, read_on).await? {
                    Some(landed) => return Ok(landed),
                    None => read_on = ReadOn::Primary,
                }
            }
            in_transaction(self, db).await
        })
    }
}

/// Reads of a moved schedule before a review takes the row lock instead.
const OPTIMISTIC_TRIES: usize = 3;

/// Where an optimistic try reads the schedule it moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadOn {
    /// A replica that has the caller's writes, or else the primary (with
    /// replicas only).
    AnyServer,
    /// The primary, on the connection that then moves the schedule.
    Primary,
}

/// One optimistic try on PostgreSQL: `None` when the schedule read is not
/// the one on the primary at the write (another review moved it in
/// between, or a replica had not replayed its last move or its creation;
/// nothing was written), else what [`write_one`] answers.
async fn write_optimistic(
    db: &Db,
    review: &Review,
    read_on: ReadOn,
) -> Result<Option<Option<SchedulePoint>>, sqlx::Error> {
    const SELECT: &str = "SELECT interval_days, ease_permille, repetitions, last_reviewed_at \
                          FROM review_schedules WHERE user_id = $1 AND content_id = $2";
    const MOVE: &str = "WITH moved AS (\
           UPDATE review_schedules \
           SET due_at = $3, interval_days = $4, ease_permille = $5, repetitions = $6, \
               last_reviewed_at = $7 \
           WHERE user_id = $1 AND content_id = $2 AND interval_days = $8 \
             AND ease_permille = $9 AND repetitions = $10 \
             AND last_reviewed_at IS NOT DISTINCT FROM $11 \
           RETURNING user_id) \
         INSERT INTO review_history (user_id, content_id, reviewed_at, rating, duration_ms) \
         SELECT $1, $2, $7, $12, $13 FROM moved";
    type Row = (i64, i64, i64, Option<i64>);
    let (user_id, content_id) = (review.user_id, review.content_id);
    let (current, mut connection): (Option<Row>, _) = match read_on {
        ReadOn::AnyServer => {
            let read = db
                .read(caller::freshness().await, |connection| {
                    let db = db.clone();
                    Box::pin(async move {
                        sqlx::query_as(SELECT)
                            .bind(user_id)
                            .bind(content_id)
                            .fetch_optional(connection)
                            .timed(&db, SELECT)
                            .await
                    })
                })
                .await?;
            (read, db.acquire_write().await?)
        }
        ReadOn::Primary => {
            let mut connection = db.acquire_write().await?;
            let read = sqlx::query_as(SELECT)
                .bind(user_id)
                .bind(content_id)
                .fetch_optional(&mut *connection)
                .timed(db, SELECT)
                .await?;
            (read, connection)
        }
    };
    let Some((interval_days, ease_permille, repetitions, last_reviewed_at)) = current else {
        return Ok(match read_on {
            // No schedule on a replica: asked again on the primary.
            ReadOn::AnyServer => None,
            ReadOn::Primary => Some(None),
        });
    };
    let next = next_schedule(
        SchedulePoint {
            interval_days,
            ease_permille,
            repetitions,
        },
        review.rating,
    );
    let moved = sqlx::query(MOVE)
        .bind(review.user_id)
        .bind(review.content_id)
        .bind(due_at(review.at_ms, next.interval_days))
        .bind(next.interval_days)
        .bind(next.ease_permille)
        .bind(next.repetitions)
        .bind(review.at_ms)
        .bind(interval_days)
        .bind(ease_permille)
        .bind(repetitions)
        .bind(last_reviewed_at)
        .bind(review.rating)
        .bind(review.duration_ms)
        .execute(&mut *connection)
        .timed(db, MOVE)
        .await?;
    Ok((moved.rows_affected() > 0).then_some(Some(next)))
}

/// When the review after one at `reviewed_at_ms` is due, `interval_days`
/// later.
pub(crate) fn due_at(reviewed_at_ms: i64, interval_days: i64) -> i64 {
    reviewed_at_ms.saturating_add(interval_days.saturating_mul(DAY_MS))
}

/// One review's rows, in the caller's transaction: the schedule read (and
/// on PostgreSQL locked), then [`write_rows`]; nothing when there is no
/// schedule to move.
async fn write_one(
    connection: &mut AnyConnection,
    db: &Db,
    review: &Review,
) -> Result<Option<SchedulePoint>, sqlx::Error> {
    const SELECT_SQLITE: &str = "SELECT interval_days, ease_permille, repetitions \
                                 FROM review_schedules WHERE user_id = $1 AND content_id = $2";
    const SELECT_POSTGRES: &str = "SELECT interval_days, ease_permille, repetitions \
                                   FROM review_schedules WHERE user_id = $1 AND content_id = $2 \
                                   FOR UPDATE";
    let select = match db.backend() {
        Backend::Sqlite => SELECT_SQLITE,
        Backend::Postgres => SELECT_POSTGRES,
    };
    let current: Option<(i64, i64, i64)> = sqlx::query_as(select)
        .bind(review.user_id)
        .bind(review.content_id)
        .fetch_optional(&mut *connection)
        .timed(db, select)
        .await?;
    let Some((interval_days, ease_permille, repetitions)) = current else {
        return Ok(None);
    };
    let next = next_schedule(
        SchedulePoint {
            interval_days,
            ease_permille,
            repetitions,
        },
        review.rating,
    );
    write_rows(connection, db, review, next, Move::Held).await?;
    Ok(Some(next))
}

/// Which schedule [`write_rows`] moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Move {
    /// The schedule the caller read in its transaction and holds: moved
    /// whatever its last review.
    Held,
    /// Only a schedule last reviewed before this review (or never): a
    /// review written behind the cache may arrive after a later one, and
    /// the schedule moves only forward.
    Forward,
}

/// A review's rows, in the caller's transaction: its history row, and its
/// schedule moved to `next`, due [`due_at`] that many days after the
/// review. The history row is written whether or not the schedule moves.
pub(crate) async fn write_rows(
    connection: &mut AnyConnection,
    db: &Db,
    review: &Review,
    next: SchedulePoint,
    schedule: Move,
) -> Result<(), sqlx::Error> {
    const INSERT: &str = "INSERT INTO review_history \
                          (user_id, content_id, reviewed_at, rating, duration_ms) \
                          VALUES ($1, $2, $3, $4, $5)";
    const UPDATE_HELD: &str = "UPDATE review_schedules \
                               SET due_at = $3, interval_days = $4, ease_permille = $5, \
                                   repetitions = $6, last_reviewed_at = $7 \
                               WHERE user_id = $1 AND content_id = $2";
    const UPDATE_FORWARD: &str = "UPDATE review_schedules \
                                  SET due_at = $3, interval_days = $4, ease_permille = $5, \
                                      repetitions = $6, last_reviewed_at = $7 \
                                  WHERE user_id = $1 AND content_id = $2 \
                                    AND (last_reviewed_at IS NULL OR last_reviewed_at < $7)";
    let update = match schedule {
        Move::Held => UPDATE_HELD,
        Move::Forward => UPDATE_FORWARD,
    };
    sqlx::query(INSERT)
        .bind(review.user_id)
        .bind(review.content_id)
        .bind(review.at_ms)
        .bind(review.rating)
        .bind(review.duration_ms)
        .execute(&mut *connection)
        .timed(db, INSERT)
        .await?;
    sqlx::query(update)
        .bind(review.user_id)
        .bind(review.content_id)
        .bind(due_at(review.at_ms, next.interval_days))
        .bind(next.interval_days)
        .bind(next.ease_permille)
        .bind(next.repetitions)
        .bind(review.at_ms)
        .execute(&mut *connection)
        .timed(db, update)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(interval_days: i64, ease_permille: i64, repetitions: i64) -> SchedulePoint {
        SchedulePoint {
            interval_days,
            ease_permille,
            repetitions,
        }
    }

    #[test]
    fn sm2_follows_the_published_intervals() {
        let first = next_schedule(point(0, 2500, 0), 5);
        assert_eq!(first, point(1, 2600, 1));
        let second = next_schedule(first, 4);
        assert_eq!(second, point(6, 2600, 2));
        let third = next_schedule(second, 4);
        assert_eq!(third, point(16, 2600, 3)); // 6 × 2.6 = 15.6
    }

    #[test]
    fn sm2_failure_restarts_and_ease_has_a_floor() {
        let failed = next_schedule(point(40, 1400, 7), 0);
        assert_eq!(failed, point(1, 1300, 0));
        let capped = next_schedule(point(MAX_INTERVAL_DAYS, 2500, 9), 5);
        assert_eq!(capped.interval_days, MAX_INTERVAL_DAYS);
    }
}
