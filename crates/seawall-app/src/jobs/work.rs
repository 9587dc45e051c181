//! The database processors: email, report, schedule, notification and
//! analytics; and [`start`], which gives each queue its processor.

use seawall_queue::{Job, JobError};

use super::payload::{
    AnalyticsJob, EmailJob, EmailTemplate, NotificationJob, OrderJob, ReportJob, ReviewWrite,
    ScheduleJob,
};
use super::processors::{Processors, database, freshness, job_key, read_rows, write_in_batches};
use crate::config::QueueName;
use crate::db::Timed as _;
use crate::reviews::{self, DAY_MS, Move};
use crate::time::now_ms;

/// A learner's name and address, read as fresh as the job asks; a learner
/// that does not exist is a permanent failure.
async fn learner<T>(
    processors: &Processors,
    job: &Job<T>,
    user_id: i64,
) -> Result<(String, String), JobError> {
    const SQL: &str = "SELECT name, email FROM users WHERE id = $1";
    let found = read_rows(&processors.db, freshness(job), SQL, user_id, None).await?;
    found
        .into_iter()
        .next()
        .ok_or_else(|| JobError::permanent(format!("no user {user_id}")))
}

pub(super) async fn email(processors: &Processors, job: Job<EmailJob>) -> Result<(), JobError> {
    const DUE: &str = "SELECT COUNT(*) FROM review_schedules WHERE user_id = $1 AND due_at <= $2";
    const WEEK: &str =
        "SELECT COUNT(*) FROM review_history WHERE user_id = $1 AND reviewed_at >= $2";
    const INSERT: &str = "INSERT INTO email_outbox \
         (job, user_id, address, template, subject, body, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)";
    let EmailJob { user_id, template } = job.payload;
    let db = &processors.db;
    let (name, address) = learner(processors, &job, user_id).await?;
    job.progress(30, "recipient found").await;
    let now = now_ms();
    let fresh = freshness(&job);
    let count = |sql: &'static str, since: i64| async move {
        let rows: Vec<(i64,)> = read_rows(db, fresh, sql, user_id, Some(since)).await?;
        Ok::<_, JobError>(rows.first().map_or(0, |row| row.0))
    };
    let (template_name, subject, body) = match template {
        EmailTemplate::Welcome => (
            "welcome",
            "Welcome to seawall".to_owned(),
            format!("Hello {name}, your first reviews are ready."),
        ),
        EmailTemplate::Reminder => {
            let due = count(DUE, now).await?;
            (
                "reminder",
                format!("{due} reviews are due"),
                format!("Hello {name}, {due} reviews are waiting for you."),
            )
        }
        EmailTemplate::Digest => {
            let week = count(WEEK, now - 7 * DAY_MS).await?;
            (
                "digest",
                "Your week in review".to_owned(),
                format!("Hello {name}, you completed {week} reviews in the last seven days."),
            )
        }
    };
    sqlx::query(INSERT)
        .bind(job_key(QueueName::Email, &job))
        .bind(user_id)
        .bind(&address)
        .bind(template_name)
        .bind(&subject)
        .bind(&body)
        .bind(now)
        .execute(&db.pool())
        .timed(db, INSERT)
        .await
        .map_err(|error| database(&error))?;
    job.progress(100, &format!("queued for {address}")).await;
    Ok(())
}

pub(super) async fn notification(
    processors: &Processors,
    job: Job<NotificationJob>,
) -> Result<(), JobError> {
    const INSERT: &str = "INSERT INTO notification_deliveries \
         (job, user_id, channel, message, delivered_at) VALUES ($1, $2, $3, $4, $5)";
    let db = &processors.db;
    learner(processors, &job, job.payload.user_id).await?;
    sqlx::query(INSERT)
        .bind(job_key(QueueName::Notification, &job))
        .bind(job.payload.user_id)
        .bind(job.payload.channel.as_str())
        .bind(&job.payload.message)
        .bind(now_ms())
        .execute(&db.pool())
        .timed(db, INSERT)
        .await
        .map_err(|error| database(&error))?;
    let message = format!("delivered by {}", job.payload.channel.as_str());
    job.progress(100, &message).await;
    Ok(())
}

pub(super) async fn report(processors: &Processors, job: Job<ReportJob>) -> Result<(), JobError> {
    const TOTALS: &str = "SELECT COUNT(*), \
             CAST(COALESCE(SUM(CASE WHEN rating >= 3 THEN 1 ELSE 0 END), 0) AS BIGINT), \
             CAST(AVG(rating) AS DOUBLE PRECISION), \
             CAST(COALESCE(SUM(duration_ms), 0) AS BIGINT) \
         FROM review_history WHERE user_id = $1 AND reviewed_at >= $2";
    const BY_CATEGORY: &str = "SELECT c.category, COUNT(*), \
             CAST(SUM(CASE WHEN h.rating >= 3 THEN 1 ELSE 0 END) AS BIGINT) \
         FROM review_history h JOIN contents c ON c.id = h.content_id \
         WHERE h.user_id = $1 AND h.reviewed_at >= $2 GROUP BY c.category ORDER BY c.category";
    const INSERT: &str = "INSERT INTO reports (job, user_id, period_days, generated_at, body) \
         VALUES ($1, $2, $3, $4, $5)";
    let ReportJob { user_id, days } = job.payload;
    let db = &processors.db;
    learner(processors, &job, user_id).await?;
    let now = now_ms();
    let since = now - days * DAY_MS;
    let fresh = freshness(&job);
    job.progress(20, "totals").await;
    let totals: Vec<(i64, i64, Option<f64>, i64)> =
        read_rows(db, fresh, TOTALS, user_id, Some(since)).await?;
    let (reviews, passed, average, study_ms) = totals
        .into_iter()
        .next()
        .ok_or_else(|| JobError::new("the totals query answered no row"))?;
    job.progress(60, "by category").await;
    let categories: Vec<(String, i64, i64)> =
        read_rows(db, fresh, BY_CATEGORY, user_id, Some(since)).await?;
    let body = serde_json::json!({
        "user_id": user_id,
        "period_days": days,
        "reviews": reviews,
        "passed": passed,
        "average_rating": average,
        "study_time_ms": study_ms,
        "by_category": categories
            .iter()
            .map(|(category, reviews, passed)| serde_json::json!({
                "category": category, "reviews": reviews, "passed": passed,
            }))
            .collect::<Vec<_>>(),
    });
    sqlx::query(INSERT)
        .bind(job_key(QueueName::Report, &job))
        .bind(user_id)
        .bind(days)
        .bind(now)
        .bind(body.to_string())
        .execute(&db.pool())
        .timed(db, INSERT)
        .await
        .map_err(|error| database(&error))?;
    job.progress(100, &format!("{reviews} reviews over {days} days"))
        .await;
    Ok(())
}

pub(super) async fn schedule(
    processors: &Processors,
    job: Job<ScheduleJob>,
) -> Result<(), JobError> {
    match &job.payload {
        ScheduleJob::Recompute { user_id } => recompute(processors, &job, *user_id).await,
        ScheduleJob::Review(review) => {
            let applied = apply_review(processors, review).await?;
            let message = if applied {
                "review written"
            } else {
                "review already written"
            };
            job.progress(100, message).await;
            Ok(())
        }
    }
}

/// Sets every due time of the learner's reviewed schedules to the last
/// review plus the interval, in batches.
async fn recompute(
    processors: &Processors,
    job: &Job<ScheduleJob>,
    user_id: i64,
) -> Result<(), JobError> {
    const SELECT: &str = "SELECT content_id, last_reviewed_at, interval_days, due_at \
         FROM review_schedules WHERE user_id = $1 AND last_reviewed_at IS NOT NULL \
         ORDER BY content_id";
    const UPDATE: &str = "UPDATE review_schedules SET due_at = $3 \
         WHERE user_id = $1 AND content_id = $2";
    let db = &processors.db;
    learner(processors, job, user_id).await?;
    // The repair writes what this read finds: the primary reads.
    let rows: Vec<(i64, i64, i64, i64)> = sqlx::query_as(SELECT)
        .bind(user_id)
        .fetch_all(&db.pool())
        .timed(db, SELECT)
        .await
        .map_err(|error| database(&error))?;
    let drifted: Vec<(i64, i64)> = rows
        .iter()
        .filter_map(|&(content, last, interval, due)| {
            let expected = reviews::due_at(last, interval);
            (expected != due).then_some((content, expected))
        })
        .collect();
    write_in_batches(
        processors,
        job,
        &drifted,
        "repaired",
        UPDATE,
        |&(content, due)| sqlx::query(UPDATE).bind(user_id).bind(content).bind(due),
    )
    .await?;
    if let Some(cache) = &processors.cache {
        cache.forget_user(user_id).await;
    }
    let message = format!(
        "{} schedules checked, {} repaired",
        rows.len(),
        drifted.len()
    );
    job.progress(100, &message).await;
    Ok(())
}

/// Writes a review completed behind the cache, once per review id: the
/// history row and the schedule ([`reviews::write_rows`]), in one
/// transaction. The schedule moves only forward: a review older than the
/// schedule's last one leaves it alone. Answers whether anything was
/// written.
pub(crate) async fn apply_review(
    processors: &Processors,
    review: &ReviewWrite,
) -> Result<bool, JobError> {
    const MARK: &str = "INSERT INTO applied_reviews (review_id, applied_at) VALUES ($1, $2) \
         ON CONFLICT (review_id) DO NOTHING";
    review
        .check()
        .map_err(|refused| JobError::permanent(refused.to_string()))?;
    let db = &processors.db;
    let mut transaction = db.begin_write().await.map_err(|error| database(&error))?;
    let marked = sqlx::query(MARK)
        .bind(&review.review_id)
        .bind(now_ms())
        .execute(&mut *transaction)
        .timed(db, MARK)
        .await
        .map_err(|error| database(&error))?;
    if marked.rows_affected() == 0 {
        return Ok(false);
    }
    let (completed, next) = review.split();
    reviews::write_rows(&mut transaction, db, &completed, next, Move::Forward)
        .await
        .map_err(|error| database(&error))?;
    transaction
        .commit()
        .await
        .map_err(|error| database(&error))?;
    if let Some(cache) = &processors.cache {
        cache.forget_user(review.user_id).await;
    }
    Ok(true)
}

/// Rebuilds the daily statistics of the last `days` days in one
/// transaction, then drops the cached statistics everywhere.
pub(super) async fn analytics(
    processors: &Processors,
    job: Job<AnalyticsJob>,
) -> Result<(), JobError> {
    const DELETE: &str = "DELETE FROM analytics_daily WHERE day >= $1";
    const REFRESH: &str = "INSERT INTO analytics_daily \
         (day, reviews, passed, learners, study_time_ms, refreshed_at) \
         SELECT reviewed_at / 86400000, COUNT(*), \
             CAST(SUM(CASE WHEN rating >= 3 THEN 1 ELSE 0 END) AS BIGINT), \
             COUNT(DISTINCT user_id), CAST(SUM(duration_ms) AS BIGINT), CAST($1 AS BIGINT) \
         FROM review_history WHERE reviewed_at >= $2 \
         GROUP BY reviewed_at / 86400000";
    let db = &processors.db;
    let now = now_ms();
    let first_day = now.div_euclid(DAY_MS) - job.payload.days + 1;
    job.progress(10, "aggregating").await;
    let mut transaction = db.begin_write().await.map_err(|error| database(&error))?;
    sqlx::query(DELETE)
        .bind(first_day)
        .execute(&mut *transaction)
        .timed(db, DELETE)
        .await
        .map_err(|error| database(&error))?;
    let refreshed = sqlx::query(REFRESH)
        .bind(now)
        .bind(first_day * DAY_MS)
        .execute(&mut *transaction)
        .timed(db, REFRESH)
        .await
        .map_err(|error| database(&error))?;
    transaction
        .commit()
        .await
        .map_err(|error| database(&error))?;
    job.progress(80, "invalidating cached statistics").await;
    if let Some(cache) = &processors.cache {
        cache.forget_stats().await;
    }
    let message = format!("{} days refreshed", refreshed.rows_affected());
    job.progress(100, &message).await;
    Ok(())
}

/// Writes an acknowledged time-sale order's row, once per order id. The
/// insert checks the unit against the sale's stock and the user's count
/// against its limit; the row's unique unit and (user, nth) refuse a unit
/// or a place sold twice. Either refusal is permanent: the order goes to
/// the dead set, where the reconciliation and an operator find it.
pub(super) async fn order(processors: &Processors, job: Job<OrderJob>) -> Result<(), JobError> {
    const INSERT: &str = "INSERT INTO sale_orders \
         (id, sale_id, unit, user_id, nth, ordered_at, written_at) \
         SELECT $1, id, $3, $4, $5, $6, $7 FROM time_sales \
         WHERE id = $2 AND $3 <= stock AND $5 <= per_user \
         ON CONFLICT (id) DO NOTHING";
    const FOUND: &str = "SELECT COUNT(*) FROM sale_orders WHERE id = $1";
    let order = &job.payload;
    let db = &processors.db;
    // One statement, committed by itself: no transaction to open.
    let mut connection = db.acquire_write().await.map_err(|error| database(&error))?;
    let inserted = sqlx::query(INSERT)
        .bind(&order.order_id)
        .bind(order.sale_id)
        .bind(order.unit)
        .bind(order.user_id)
        .bind(order.nth)
        .bind(order.ordered_at_ms)
        .bind(now_ms())
        .execute(&mut *connection)
        .timed(db, INSERT)
        .await;
    drop(connection);
    let inserted = match inserted {
        Ok(done) => done.rows_affected(),
        Err(error) if crate::db::is_unique_violation(&error) => {
            return Err(JobError::permanent(format!(
                "order {} of sale {}: unit {} or the buyer's order {} is another order's ({error})",
                order.order_id, order.sale_id, order.unit, order.nth
            )));
        }
        Err(error) => return Err(database(&error)),
    };
    if inserted == 0 {
        let found: i64 = sqlx::query_scalar(FOUND)
            .bind(&order.order_id)
            .fetch_one(&db.pool())
            .timed(db, FOUND)
            .await
            .map_err(|error| database(&error))?;
        if found == 0 {
            return Err(JobError::permanent(format!(
                "order {} of sale {}: no such sale, or unit {} or the buyer's order {} is past its limits",
                order.order_id, order.sale_id, order.unit, order.nth
            )));
        }
    }
    let message = if inserted == 1 {
        "order written"
    } else {
        "order already written"
    };
    job.progress(100, message).await;
    Ok(())
}
