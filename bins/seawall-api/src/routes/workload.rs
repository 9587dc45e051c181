//! The reference workload's routes: each reads its input and calls the
//! application's [`Workload`](seawall_app::workload::Workload); its
//! [`WorkloadError`](seawall_app::workload::WorkloadError) becomes a problem
//! by `?`.

use axum::extract::State;
use seawall_app::seed::CATEGORIES;
use seawall_app::workload::{
    CompleteReview, Completed, ContentPage, DueReviews, MAX_DUE_LIMIT, MAX_PAGE, MAX_PAGE_SIZE,
    Stats,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::Json;
use crate::params::Params;
use crate::problem::Problem;
use crate::state::AppState;

/// The reference workload's routes.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(review_today))
        .routes(routes!(complete_review))
        .routes(routes!(stats))
        .routes(routes!(contents))
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
        .map_err(Problem::from)
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
        .map_err(Problem::from)
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
        .map_err(Problem::from)
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
        .map_err(Problem::from)
}
