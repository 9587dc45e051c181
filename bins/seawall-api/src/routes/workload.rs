//! The reference workload's routes: each reads its input, calls the
//! application's [`Workload`], and maps a [`WorkloadError`] onto a problem.

use axum::extract::State;
use seawall_app::db::Fault;
use seawall_app::seed::CATEGORIES;
use seawall_app::workload::{
    CompleteReview, Completed, ContentPage, DueReviews, Stats, WorkloadError,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::Json;
use crate::params::Params;
use crate::problem::Problem;
use crate::routes::queue::queue_problem;
use crate::state::AppState;

/// Largest page number accepted: beyond it a client is scanning, not paging.
const MAX_PAGE: i64 = 1_000_000;
const MAX_PAGE_SIZE: i64 = 100;
const MAX_DUE_LIMIT: i64 = 500;

/// The reference workload's routes.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(review_today))
        .routes(routes!(complete_review))
        .routes(routes!(stats))
        .routes(routes!(contents))
}

/// The problem a failed statement answers with: 503 when the database is
/// out of reach or busy, 500 otherwise.
pub(crate) fn database_problem(error: &sqlx::Error) -> Problem {
    match seawall_app::db::fault(error) {
        Fault::Unavailable => {
            tracing::warn!(%error, "database unavailable");
            Problem::unavailable("the database is not available; try again shortly")
        }
        Fault::Busy => {
            tracing::warn!(%error, "database busy");
            Problem::unavailable("the database is busy; try again shortly")
        }
        Fault::Failed => {
            tracing::error!(%error, "database query failed");
            Problem::internal()
        }
    }
}

/// The problem a failed read through the cache answers with: its loader's
/// error (an `E`) mapped by `loader`, built anew so that it carries this
/// request's id (the load may have been another request's); 503 for a load
/// that took too long; 500 otherwise.
pub(crate) fn cached_read_problem<E: std::error::Error + 'static>(
    error: &seawall_cache::Error,
    loader: impl Fn(&E) -> Problem,
) -> Problem {
    if let Some(source) = error
        .loader_error()
        .and_then(|source| source.downcast_ref::<E>())
    {
        return loader(source);
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

/// The problem a workload operation's error answers with. A cached read's
/// problem is built anew from its loader's error, so that it carries this
/// request's id (the load may have been another request's).
pub(crate) fn workload_problem(error: &WorkloadError) -> Problem {
    match error {
        WorkloadError::NoSuchUser(_) | WorkloadError::NotScheduled { .. } => {
            Problem::not_found(error.to_string())
        }
        WorkloadError::Invalid { field, reason } => Problem::invalid_field(field, reason.clone()),
        WorkloadError::Database(error) => database_problem(error),
        WorkloadError::QueuesConnecting => {
            Problem::unavailable("the job queues' Redis has not answered yet; try again shortly")
                .with_retry_after(2)
        }
        WorkloadError::Queue(error) => queue_problem(error),
        WorkloadError::Cache(cache_error) => cached_read_problem(cache_error, workload_problem),
        _ => {
            tracing::error!(%error, "a workload operation failed");
            Problem::internal()
        }
    }
}

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
    state
        .workload()
        .due_reviews(user_id, category, limit)
        .await
        .map(Json)
        .map_err(|error| workload_problem(&error))
}

/// Records a finished review and moves the learner's schedule (SM-2).
///
/// The history row and the schedule update are written together or not at
/// all: a rejected or failed request writes nothing.
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
    state
        .workload()
        .complete(review)
        .await
        .map(Json)
        .map_err(|error| workload_problem(&error))
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
    state
        .workload()
        .stats(user_id)
        .await
        .map(Json)
        .map_err(|error| workload_problem(&error))
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
    state
        .workload()
        .contents(page, page_size, category)
        .await
        .map(Json)
        .map_err(|error| workload_problem(&error))
}
