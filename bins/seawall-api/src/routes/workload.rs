//! The reference workload: what a learner reviews today, their statistics,
//! the content catalogue, and completing a review.

use axum::extract::State;
use seawall_perfmon::sqlx::TimedQuery;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::cache::{ApiCache, Family};
use crate::config::ReviewWrites;
use crate::db::Db;
use crate::extract::Json;
use crate::params::Params;
use crate::problem::Problem;
use crate::reviews::Review;
use crate::seed::CATEGORIES;
use crate::state::AppState;
use seawall_app::json::integer;
use seawall_app::time::{DAY_MS, now_ms, timestamp};
use sqlx::AnyConnection;

/// Largest page number accepted: beyond it a client is scanning, not paging.
const MAX_PAGE: i64 = 1_000_000;
const MAX_PAGE_SIZE: i64 = 100;
const MAX_DUE_LIMIT: i64 = 500;
/// A review longer than a day is a client bug, not a review.
const MAX_REVIEW_MS: i64 = DAY_MS;

/// The reference workload's routes.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(review_today))
        .routes(routes!(complete_review))
        .routes(routes!(stats))
        .routes(routes!(contents))
}

/// A loader's problem, carried through the cache as an error.
#[derive(Debug)]
pub(crate) struct LoadProblem(pub(crate) Problem);

impl std::fmt::Display for LoadProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.detail())
    }
}

impl std::error::Error for LoadProblem {}

/// The problem a cached read answers with when its load failed, built
/// anew so it carries this request's id (the load may have been another
/// request's).
pub(crate) fn problem(error: &seawall_cache::Error) -> Problem {
    if let Some(LoadProblem(problem)) = error
        .loader_error()
        .and_then(|source| source.downcast_ref::<LoadProblem>())
    {
        return Problem::new(problem.status(), problem.detail());
    }
    match error {
        seawall_cache::Error::Timeout { .. } => {
            Problem::unavailable("the data took too long to load; try again shortly")
        }
        _ => {
            tracing::error!(%error, "cached read failed");
            Problem::internal()
        }
    }
}

#[allow(clippy::needless_pass_by_value)] // used as `map_err(database_error)`
pub(crate) fn database_error(error: sqlx::Error) -> Problem {
    database_problem(&error)
}

/// The problem a failed statement answers with: 503 when the database is
/// out of reach or busy, 500 otherwise.
pub(crate) fn database_problem(error: &sqlx::Error) -> Problem {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            tracing::warn!(%error, "database unavailable");
            Problem::unavailable("the database is not available; try again shortly")
        }
        sqlx::Error::Database(db) if is_contention(db.code().as_deref()) => {
            tracing::warn!(%error, "database busy");
            Problem::unavailable("the database is busy; try again shortly")
        }
        _ => {
            tracing::error!(%error, "database query failed");
            Problem::internal()
        }
    }
}

/// Lock contention rather than a fault: PostgreSQL's serialization failure,
/// deadlock and lock-not-available (five-character SQLSTATEs), and SQLite's
/// `SQLITE_BUSY` (5) and `SQLITE_LOCKED` (6) with their extended codes
/// (shorter decimal numbers whose low byte is the primary code).
fn is_contention(code: Option<&str>) -> bool {
    match code {
        Some("40001" | "40P01" | "55P03") => true,
        Some(code) if code.len() < 5 => code
            .parse::<u32>()
            .is_ok_and(|code| matches!(code & 0xff, 5 | 6)),
        _ => false,
    }
}

async fn user_exists(
    connection: &mut AnyConnection,
    db: &Db,
    user_id: i64,
) -> Result<bool, Problem> {
    const SQL: &str = "SELECT id FROM users WHERE id = $1";
    let found: Option<(i64,)> = sqlx::query_as(SQL)
        .bind(user_id)
        .fetch_optional(connection)
        .timed(db.monitor(), SQL)
        .await
        .map_err(database_error)?;
    Ok(found.is_some())
}

fn no_such_user(user_id: i64) -> Problem {
    Problem::not_found(format!("no user with id {user_id}"))
}

/// Reads through the cache when it is on: `load` runs on a miss (once for
/// concurrent misses) and its result, `None` included, is cached by
/// `family`'s class, tagged with the user.
async fn cached<T, F, Fut>(
    state: &AppState,
    family: Family,
    key: impl FnOnce(&ApiCache) -> String,
    user_id: Option<i64>,
    load: F,
) -> Result<Option<T>, Problem>
where
    T: Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Option<T>, Problem>> + Send + 'static,
{
    let Some(cache) = state.cache() else {
        return load().await;
    };
    let key = key(cache);
    // The load runs in a task of its own: it keeps the request's span, so
    // its statements are logged under the request.
    let load = tracing::Instrument::in_current_span(load());
    cache
        .cache()
        .get_or_load(
            &key,
            ApiCache::options(family, user_id),
            move || async move { load.await.map_err(LoadProblem) },
        )
        .await
        .map_err(|error| problem(&error))
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct DueReviews {
    user_id: i64,
    category: Option<String>,
    /// Reviews due before this moment (the end of the current UTC day).
    due_before: String,
    count: usize,
    items: Vec<DueReview>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
struct DueReview {
    content_id: i64,
    title: String,
    category: String,
    difficulty: i64,
    due_at: String,
    interval_days: i64,
    repetitions: i64,
    ease: f64,
}

type DueRow = (i64, String, String, i64, i64, i64, i64, i64, Option<i64>);

/// Rows `/api/review/today` reads beyond its limit under write-behind, so
/// that reviews still pending (which leave the list) do not shorten it.
const PENDING_SLACK: i64 = 32;

/// The learner's reviews due by the end of today (UTC), most overdue first.
///
/// A join of schedules and contents, filtered by due date and optionally by
/// category.
#[utoipa::path(get, path = "/api/review/today", tag = "workload",
    params(
        ("user_id" = i64, Query, description = "The learner", minimum = 1, example = 7),
        ("category" = Option<String>, Query, description = "Only contents of this category",
            pattern = "^(language|math|science|history|programming|music|geography|art)$", example = "math"),
        ("limit" = Option<i64>, Query, description = "Most reviews to list (default 100)",
            minimum = 1, maximum = 500, example = 5),
    ),
    responses(
        (status = 200, description = "The due reviews", body = DueReviews),
        (status = 404, description = "No such learner", body = Problem,
            content_type = "application/problem+json"),
    ),
)]
async fn review_today(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<DueReviews>, Problem> {
    let user_id = params.int("user_id", 1..=i64::MAX, None)?;
    let category = params.choice("category", &CATEGORIES)?;
    let limit = params.int("limit", 1..=MAX_DUE_LIMIT, Some(100))?;
    let now = now_ms();
    let due_before = now - now.rem_euclid(DAY_MS) + DAY_MS;
    let found = cached(
        &state,
        Family::Today,
        |cache| cache.today_key(user_id, due_before, category, limit),
        Some(user_id),
        {
            let (state, category) = (state.clone(), category.map(str::to_owned));
            move || load_today(state, user_id, category, limit, due_before)
        },
    )
    .await?;
    found.map(Json).ok_or_else(|| no_such_user(user_id))
}

/// The due reviews from the database; `None` when the user does not exist.
pub(crate) async fn load_today(
    state: AppState,
    user_id: i64,
    category: Option<String>,
    limit: i64,
    due_before: i64,
) -> Result<Option<DueReviews>, Problem> {
    let db = state.db();
    // One connection for the whole load: under load, every extra pool
    // checkout is another wait.
    let mut connection = db.acquire().await.map_err(database_error)?;

    const ALL: &str = "SELECT s.content_id, c.title, c.category, c.difficulty, s.due_at, \
                              s.interval_days, s.repetitions, s.ease_permille, s.last_reviewed_at \
                       FROM review_schedules s JOIN contents c ON c.id = s.content_id \
                       WHERE s.user_id = $1 AND s.due_at < $2 \
                       ORDER BY s.due_at, s.content_id LIMIT $3";
    const IN_CATEGORY: &str = "SELECT s.content_id, c.title, c.category, c.difficulty, s.due_at, \
                                      s.interval_days, s.repetitions, s.ease_permille, \
                                      s.last_reviewed_at \
                               FROM review_schedules s JOIN contents c ON c.id = s.content_id \
                               WHERE s.user_id = $1 AND s.due_at < $2 AND c.category = $4 \
                               ORDER BY s.due_at, s.content_id LIMIT $3";
    let sql = if category.is_some() { IN_CATEGORY } else { ALL };
    let behind = match (state.review_writes(), state.cache()) {
        (ReviewWrites::WriteBehind, Some(cache)) => Some(cache),
        _ => None,
    };
    let read = if behind.is_some() {
        limit + PENDING_SLACK
    } else {
        limit
    };
    let mut query = sqlx::query_as::<_, DueRow>(sql)
        .bind(user_id)
        .bind(due_before)
        .bind(read);
    if let Some(category) = &category {
        query = query.bind(category);
    }
    let mut rows = query
        .fetch_all(&mut *connection)
        .timed(db.monitor(), sql)
        .await
        .map_err(database_error)?;
    // Only an empty list can mean an unknown user.
    if rows.is_empty() && !user_exists(&mut connection, db, user_id).await? {
        return Ok(None);
    }
    drop(connection);
    if let Some(cache) = behind {
        rows = with_pending(cache, user_id, rows, due_before).await;
    }
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let items: Vec<DueReview> = rows
        .into_iter()
        .map(
            |(
                content_id,
                title,
                category,
                difficulty,
                due_at,
                interval_days,
                repetitions,
                ease,
                _,
            )| {
                DueReview {
                    content_id,
                    title,
                    category,
                    difficulty,
                    due_at: timestamp(due_at),
                    interval_days,
                    repetitions,
                    ease: permille(ease),
                }
            },
        )
        .collect();
    Ok(Some(DueReviews {
        user_id,
        category,
        due_before: timestamp(due_before),
        count: items.len(),
        items,
    }))
}

/// Lays the user's reviews still pending behind the cache over the rows
/// read from the database: a pending review newer than the row's last one
/// moves the row to its new schedule, out of the list when that is due
/// after `due_before`.
async fn with_pending(
    cache: &ApiCache,
    user_id: i64,
    rows: Vec<DueRow>,
    due_before: i64,
) -> Vec<DueRow> {
    let contents: Vec<i64> = rows.iter().map(|row| row.0).collect();
    let pending = crate::behind::pending(cache, user_id, &contents).await;
    let mut rows: Vec<DueRow> = rows
        .into_iter()
        .zip(pending)
        .filter_map(|(mut row, pending)| {
            if let Some(pending) = pending.filter(|p| row.8.is_none_or(|last| p.at_ms > last)) {
                row.4 = pending.due_at;
                row.5 = pending.interval_days;
                row.6 = pending.repetitions;
                row.7 = pending.ease_permille;
                row.8 = Some(pending.at_ms);
            }
            (row.4 < due_before).then_some(row)
        })
        .collect();
    rows.sort_by_key(|row| (row.4, row.0));
    rows
}

#[allow(clippy::cast_precision_loss)] // ease factors are a few thousand
fn permille(value: i64) -> f64 {
    value as f64 / 1000.0
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"user_id": 7, "content_id": 335, "rating": 4, "duration_ms": 5200}))]
struct CompleteReview {
    /// The learner.
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 1)]
    user_id: i64,
    /// The content reviewed; the learner must have it scheduled.
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 1)]
    content_id: i64,
    /// SM-2 quality, 0 to 5: below 3 is a failed review.
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 0, maximum = 5)]
    rating: i64,
    /// Time spent on the review in milliseconds (default 0).
    #[serde(default, deserialize_with = "integer")]
    #[schema(minimum = 0, maximum = 86_400_000)]
    duration_ms: i64,
}

#[derive(Debug, Serialize, ToSchema)]
struct Completed {
    user_id: i64,
    content_id: i64,
    rating: i64,
    reviewed_at: String,
    next: Schedule,
}

#[derive(Debug, Serialize, ToSchema)]
struct Schedule {
    due_at: String,
    interval_days: i64,
    repetitions: i64,
    ease: f64,
}

/// Records a finished review and moves the learner's schedule (SM-2).
///
/// The history row and the schedule update are written in one transaction:
/// a rejected or failed request writes nothing.
#[utoipa::path(post, path = "/api/review/complete", tag = "workload",
    request_body(content = CompleteReview, content_type = "application/json"),
    responses(
        (status = 200, description = "The review and the next schedule", body = Completed),
        (status = 404, description = "No such learner, or the content is not scheduled for them",
            body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The body is not valid JSON or a field is wrong, missing or unknown",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn complete_review(
    State(state): State<AppState>,
    body: Result<Json<CompleteReview>, Problem>,
) -> Result<Json<Completed>, Problem> {
    let Json(review) = body?;
    if review.user_id < 1 {
        return Err(Problem::invalid_field(
            "user_id",
            "must be a positive integer",
        ));
    }
    if review.content_id < 1 {
        return Err(Problem::invalid_field(
            "content_id",
            "must be a positive integer",
        ));
    }
    if !(0..=5).contains(&review.rating) {
        return Err(Problem::invalid_field(
            "rating",
            format!("must be between 0 and 5, got {}", review.rating),
        ));
    }
    if !(0..=MAX_REVIEW_MS).contains(&review.duration_ms) {
        return Err(Problem::invalid_field(
            "duration_ms",
            format!(
                "must be between 0 and {MAX_REVIEW_MS}, got {}",
                review.duration_ms
            ),
        ));
    }
    let now = now_ms();
    let completed = Review {
        user_id: review.user_id,
        content_id: review.content_id,
        rating: review.rating,
        duration_ms: review.duration_ms,
        at_ms: now,
    };
    let next = match state.review_writes() {
        ReviewWrites::Direct => state
            .reviews()
            .write(completed)
            .await
            .map_err(|error| database_problem(&error))?,
        ReviewWrites::WriteBehind => crate::behind::complete(&state, completed).await?,
    };
    // Nothing was written (or enqueued).
    let Some(next) = next else {
        return Err(Problem::not_found(format!(
            "user {} has no review schedule for content {}",
            review.user_id, review.content_id
        )));
    };
    if let Some(cache) = state.cache() {
        cache.forget_user(review.user_id).await;
    }
    let due_at = now.saturating_add(next.interval_days.saturating_mul(DAY_MS));
    Ok(Json(Completed {
        user_id: review.user_id,
        content_id: review.content_id,
        rating: review.rating,
        reviewed_at: timestamp(now),
        next: Schedule {
            due_at: timestamp(due_at),
            interval_days: next.interval_days,
            repetitions: next.repetitions,
            ease: permille(next.ease_permille),
        },
    }))
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct Stats {
    user_id: i64,
    generated_at: String,
    totals: Totals,
    last_7_days: Period,
    last_30_days: Period,
    by_category: Vec<CategoryStats>,
    /// Reviews per UTC day over the last 30 days, oldest first, days without
    /// reviews included.
    daily: Vec<Day>,
    schedules: ScheduleStats,
    /// Where the user stands among learners active in the last 30 days.
    standing: Standing,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
struct Totals {
    reviews: i64,
    passed: i64,
    accuracy: f64,
    average_rating: Option<f64>,
    study_time_ms: i64,
    first_review_at: Option<String>,
    last_review_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
struct Period {
    reviews: i64,
    passed: i64,
    accuracy: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
struct CategoryStats {
    category: String,
    reviews: i64,
    accuracy: f64,
    average_rating: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
struct Day {
    date: String,
    reviews: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
struct ScheduleStats {
    total: i64,
    due_now: i64,
    /// Schedules with an interval of three weeks or more.
    mastered: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
struct Standing {
    active_learners: i64,
    /// The share of active learners with fewer reviews in the period.
    percentile: f64,
}

#[allow(clippy::cast_precision_loss)] // counts far below 2^52
fn ratio(part: i64, whole: i64) -> f64 {
    if whole > 0 {
        part as f64 / whole as f64
    } else {
        0.0
    }
}

/// Aggregates over the learner's review history and their standing among
/// recent learners.
#[utoipa::path(get, path = "/api/analytics/stats", tag = "workload",
    params(("user_id" = i64, Query, description = "The learner", minimum = 1, example = 7)),
    responses(
        (status = 200, description = "The learner's statistics", body = Stats),
        (status = 404, description = "No such learner", body = Problem,
            content_type = "application/problem+json"),
    ),
)]
async fn stats(State(state): State<AppState>, params: Params) -> Result<Json<Stats>, Problem> {
    let user_id = params.int("user_id", 1..=i64::MAX, None)?;
    let found = cached(
        &state,
        Family::Stats,
        |cache| cache.stats_key(user_id),
        Some(user_id),
        {
            let state = state.clone();
            move || load_stats(state, user_id)
        },
    )
    .await?;
    found.map(Json).ok_or_else(|| no_such_user(user_id))
}

/// The statistics from the database; `None` when the user does not exist.
pub(crate) async fn load_stats(state: AppState, user_id: i64) -> Result<Option<Stats>, Problem> {
    let db = state.db();
    // One connection, the statements in turn: under load, four checkouts
    // at once cost more waiting than running them side by side saves.
    let mut connection = db.acquire().await.map_err(database_error)?;
    let now = now_ms();
    let week_ago = now - 7 * DAY_MS;
    let month_ago = now - 30 * DAY_MS;
    let first_day = now - now.rem_euclid(DAY_MS) - 29 * DAY_MS;

    const TOTALS: &str = "SELECT COUNT(*), \
             CAST(COALESCE(SUM(CASE WHEN rating >= 3 THEN 1 ELSE 0 END), 0) AS BIGINT), \
             CAST(AVG(rating) AS DOUBLE PRECISION), \
             CAST(COALESCE(SUM(duration_ms), 0) AS BIGINT), \
             MIN(reviewed_at), MAX(reviewed_at), \
             CAST(COALESCE(SUM(CASE WHEN reviewed_at >= $2 THEN 1 ELSE 0 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN reviewed_at >= $2 AND rating >= 3 THEN 1 ELSE 0 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN reviewed_at >= $3 THEN 1 ELSE 0 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN reviewed_at >= $3 AND rating >= 3 THEN 1 ELSE 0 END), 0) AS BIGINT) \
         FROM review_history WHERE user_id = $1";
    const BY_CATEGORY: &str = "SELECT c.category, COUNT(*), \
             CAST(SUM(CASE WHEN h.rating >= 3 THEN 1 ELSE 0 END) AS BIGINT), \
             CAST(AVG(h.rating) AS DOUBLE PRECISION) \
         FROM review_history h JOIN contents c ON c.id = h.content_id \
         WHERE h.user_id = $1 GROUP BY c.category ORDER BY c.category";
    const DAILY: &str = "SELECT (reviewed_at - $2) / 86400000 AS day, COUNT(*) \
         FROM review_history WHERE user_id = $1 AND reviewed_at >= $2 \
         GROUP BY (reviewed_at - $2) / 86400000 ORDER BY day";
    const SCHEDULES: &str = "SELECT COUNT(*), \
             CAST(COALESCE(SUM(CASE WHEN due_at <= $2 THEN 1 ELSE 0 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN interval_days >= 21 THEN 1 ELSE 0 END), 0) AS BIGINT) \
         FROM review_schedules WHERE user_id = $1";

    type TotalsRow = (
        i64,
        i64,
        Option<f64>,
        i64,
        Option<i64>,
        Option<i64>,
        i64,
        i64,
        i64,
        i64,
    );
    let monitor = db.monitor();
    let totals = sqlx::query_as::<_, TotalsRow>(TOTALS)
        .bind(user_id)
        .bind(week_ago)
        .bind(month_ago)
        .fetch_one(&mut *connection)
        .timed(monitor, TOTALS)
        .await
        .map_err(database_error)?;
    // Only a learner without reviews can be an unknown user.
    if totals.0 == 0 && !user_exists(&mut connection, db, user_id).await? {
        return Ok(None);
    }
    let by_category = sqlx::query_as::<_, (String, i64, i64, f64)>(BY_CATEGORY)
        .bind(user_id)
        .fetch_all(&mut *connection)
        .timed(monitor, BY_CATEGORY)
        .await
        .map_err(database_error)?;
    let daily = sqlx::query_as::<_, (i64, i64)>(DAILY)
        .bind(user_id)
        .bind(first_day)
        .fetch_all(&mut *connection)
        .timed(monitor, DAILY)
        .await
        .map_err(database_error)?;
    let schedules = sqlx::query_as::<_, (i64, i64, i64)>(SCHEDULES)
        .bind(user_id)
        .bind(now)
        .fetch_one(&mut *connection)
        .timed(monitor, SCHEDULES)
        .await
        .map_err(database_error)?;
    // Returned before the shared learner counts, which may need one.
    drop(connection);
    let (
        reviews,
        passed,
        average_rating,
        study_time_ms,
        first,
        last,
        week,
        week_passed,
        month,
        month_passed,
    ) = totals;
    let learners = learners_by_reviews(&state).await?;
    let active_learners = learners.iter().map(|&(_, learners)| learners).sum();
    let behind = learners
        .iter()
        .filter(|&&(reviews, _)| reviews < month)
        .map(|&(_, learners)| learners)
        .sum();

    let mut days: Vec<Day> = (0..30)
        .map(|i| Day {
            date: timestamp(first_day + i * DAY_MS)[..10].to_owned(),
            reviews: 0,
        })
        .collect();
    for (day, count) in daily {
        if let Some(slot) = usize::try_from(day).ok().and_then(|day| days.get_mut(day)) {
            slot.reviews = count;
        }
    }
    let (total, due_now, mastered) = schedules;
    Ok(Some(Stats {
        user_id,
        generated_at: timestamp(now),
        totals: Totals {
            reviews,
            passed,
            accuracy: ratio(passed, reviews),
            average_rating,
            study_time_ms,
            first_review_at: first.map(timestamp),
            last_review_at: last.map(timestamp),
        },
        last_7_days: Period {
            reviews: week,
            passed: week_passed,
            accuracy: ratio(week_passed, week),
        },
        last_30_days: Period {
            reviews: month,
            passed: month_passed,
            accuracy: ratio(month_passed, month),
        },
        by_category: by_category
            .into_iter()
            .map(
                |(category, reviews, passed, average_rating)| CategoryStats {
                    category,
                    reviews,
                    accuracy: ratio(passed, reviews),
                    average_rating,
                },
            )
            .collect(),
        daily: days,
        schedules: ScheduleStats {
            total,
            due_now,
            mastered,
        },
        standing: Standing {
            active_learners,
            percentile: ratio(behind, active_learners),
        },
    }))
}

/// How many learners made how many reviews in the last 30 days, as
/// `(reviews, learners)`: what every user's standing is measured against.
/// It is the same for every user and the costliest part of the statistics
/// (it groups the whole month of history), so it is cached on its own, in the
/// computation class, and every user's statistics load shares it; a user's
/// percentile may then lag the other learners' activity by up to the class's
/// TTL, as their cached statistics would anyway.
async fn learners_by_reviews(state: &AppState) -> Result<Vec<(i64, i64)>, Problem> {
    let found = cached(state, Family::Stats, ApiCache::standing_key, None, {
        let state = state.clone();
        move || load_learners_by_reviews(state)
    })
    .await?;
    Ok(found.unwrap_or_default())
}

async fn load_learners_by_reviews(state: AppState) -> Result<Option<Vec<(i64, i64)>>, Problem> {
    const SQL: &str = "SELECT reviews, COUNT(*) \
         FROM (SELECT user_id, COUNT(*) AS reviews FROM review_history \
               WHERE reviewed_at >= $1 GROUP BY user_id) AS active \
         GROUP BY reviews ORDER BY reviews";
    let db = state.db();
    let month_ago = now_ms() - 30 * DAY_MS;
    let rows: Vec<(i64, i64)> = sqlx::query_as(SQL)
        .bind(month_ago)
        .fetch_all(&mut *db.acquire().await.map_err(database_error)?)
        .timed(db.monitor(), SQL)
        .await
        .map_err(database_error)?;
    Ok(Some(rows))
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct ContentPage {
    page: i64,
    page_size: i64,
    total: i64,
    total_pages: i64,
    category: Option<String>,
    items: Vec<Content>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
struct Content {
    id: i64,
    title: String,
    category: String,
    difficulty: i64,
    created_at: String,
}

/// The content catalogue by id, one page at a time.
///
/// A page past the end is empty, not an error.
#[utoipa::path(get, path = "/api/content", tag = "workload",
    params(
        ("page" = Option<i64>, Query, description = "Page number (default 1)",
            minimum = 1, maximum = 1_000_000, example = 2),
        ("page_size" = Option<i64>, Query, description = "Items per page (default 20)",
            minimum = 1, maximum = 100, example = 20),
        ("category" = Option<String>, Query, description = "Only contents of this category",
            pattern = "^(language|math|science|history|programming|music|geography|art)$", example = "science"),
    ),
    responses((status = 200, description = "One page of the catalogue", body = ContentPage)),
)]
async fn contents(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<ContentPage>, Problem> {
    let page = params.int("page", 1..=MAX_PAGE, Some(1))?;
    let page_size = params.int("page_size", 1..=MAX_PAGE_SIZE, Some(20))?;
    let category = params.choice("category", &CATEGORIES)?;
    let found = cached(
        &state,
        Family::Content,
        |cache| cache.content_key(page, page_size, category),
        None,
        {
            let (state, category) = (state.clone(), category.map(str::to_owned));
            move || async move {
                load_contents(state, page, page_size, category)
                    .await
                    .map(Some)
            }
        },
    )
    .await?;
    found.map(Json).ok_or_else(Problem::internal)
}

/// One page of the catalogue from the database.
pub(crate) async fn load_contents(
    state: AppState,
    page: i64,
    page_size: i64,
    category: Option<String>,
) -> Result<ContentPage, Problem> {
    let db = state.db();
    let offset = (page - 1) * page_size;

    const COUNT_ALL: &str = "SELECT COUNT(*) FROM contents";
    const COUNT_IN: &str = "SELECT COUNT(*) FROM contents WHERE category = $1";
    const PAGE_ALL: &str = "SELECT id, title, category, difficulty, created_at FROM contents \
                            ORDER BY id LIMIT $1 OFFSET $2";
    const PAGE_IN: &str = "SELECT id, title, category, difficulty, created_at FROM contents \
                           WHERE category = $3 ORDER BY id LIMIT $1 OFFSET $2";
    let (count_sql, page_sql) = if category.is_some() {
        (COUNT_IN, PAGE_IN)
    } else {
        (COUNT_ALL, PAGE_ALL)
    };
    let mut count = sqlx::query_as::<_, (i64,)>(count_sql);
    let mut rows = sqlx::query_as::<_, (i64, String, String, i64, i64)>(page_sql)
        .bind(page_size)
        .bind(offset);
    if let Some(category) = &category {
        count = count.bind(category.clone());
        rows = rows.bind(category.clone());
    }
    let ((total,), rows) = tokio::try_join!(
        async {
            count
                .fetch_one(&mut *db.acquire().await?)
                .timed(db.monitor(), count_sql)
                .await
        },
        async {
            rows.fetch_all(&mut *db.acquire().await?)
                .timed(db.monitor(), page_sql)
                .await
        },
    )
    .map_err(database_error)?;
    Ok(ContentPage {
        page,
        page_size,
        total,
        total_pages: (total + page_size - 1) / page_size,
        category,
        items: rows
            .into_iter()
            .map(|(id, title, category, difficulty, created_at)| Content {
                id,
                title,
                category,
                difficulty,
                created_at: timestamp(created_at),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contention_is_told_apart_from_faults() {
        for busy in [
            "5", "261", "517", "773", "6", "262", "40001", "40P01", "55P03",
        ] {
            assert!(is_contention(Some(busy)), "{busy}");
        }
        for fault in ["1", "19", "2067", "23505", "42P01", "22005", "XX000"] {
            assert!(!is_contention(Some(fault)), "{fault}");
        }
        assert!(!is_contention(None));
    }

    #[test]
    fn timestamps_before_the_epoch_do_not_panic() {
        assert_eq!(timestamp(-5), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(86_400_000), "1970-01-02T00:00:00.000Z");
    }
}
