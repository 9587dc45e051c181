//! Completing a review: the SM-2 schedule and its write. On a SQLite file
//! concurrent reviews are written in groups ([`crate::group`]): one
//! transaction per review held the service to a few hundred reviews a
//! second under load (`scripts/cache-workload`), with every other request
//! queueing behind the writers.

use seawall_perfmon::Monitor;
use seawall_perfmon::sqlx::TimedQuery;
use sqlx::AnyConnection;

use crate::db::{Backend, Db};
use crate::group::{GroupJob, GroupWriter, WriteFuture};

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

/// Writes reviews: grouped on a SQLite file (see [`crate::group`]), one
/// transaction each otherwise.
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
}

/// One review's rows, in the caller's transaction: the history row and the
/// schedule update, or nothing when there is no schedule to move.
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
    const INSERT: &str = "INSERT INTO review_history \
                          (user_id, content_id, reviewed_at, rating, duration_ms) \
                          VALUES ($1, $2, $3, $4, $5)";
    const UPDATE: &str = "UPDATE review_schedules \
                          SET due_at = $3, interval_days = $4, ease_permille = $5, \
                              repetitions = $6, last_reviewed_at = $7 \
                          WHERE user_id = $1 AND content_id = $2";
    let monitor: &Monitor = db.monitor();
    let select = match db.backend() {
        Backend::Sqlite => SELECT_SQLITE,
        Backend::Postgres => SELECT_POSTGRES,
    };
    let current: Option<(i64, i64, i64)> = sqlx::query_as(select)
        .bind(review.user_id)
        .bind(review.content_id)
        .fetch_optional(&mut *connection)
        .timed(monitor, select)
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
    sqlx::query(INSERT)
        .bind(review.user_id)
        .bind(review.content_id)
        .bind(review.at_ms)
        .bind(review.rating)
        .bind(review.duration_ms)
        .execute(&mut *connection)
        .timed(monitor, INSERT)
        .await?;
    sqlx::query(UPDATE)
        .bind(review.user_id)
        .bind(review.content_id)
        .bind(
            review
                .at_ms
                .saturating_add(next.interval_days.saturating_mul(DAY_MS)),
        )
        .bind(next.interval_days)
        .bind(next.ease_permille)
        .bind(next.repetitions)
        .bind(review.at_ms)
        .execute(&mut *connection)
        .timed(monitor, UPDATE)
        .await?;
    Ok(Some(next))
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
