//! A queue's limits: its rate limit across every worker, the rate limit
//! each group has on its own, the group concurrency cap and a handler's
//! hold, read in one view and set or cleared one at a time.

use std::time::Duration;

use axum::extract::State;
use seawall_queue::{Limits, Queues, RateLimit};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::named::{QueuePath, queue_named, queues};
use crate::config::QueueName;
use crate::extract::{Json, Path};
use crate::problem::Problem;
use crate::state::AppState;

/// The most starts a rate limit's window takes.
const MAX_STARTS: i64 = 1_000_000;
/// The longest window, a year in ms (the queue's longest delay).
const MAX_WINDOW_MS: i64 = 31_536_000_000;

/// A rate limit: at most `max` jobs start in any window of `per_ms`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RateLimitView {
    #[schema(example = 100)]
    max: u32,
    #[schema(example = 1000)]
    per_ms: u64,
}

/// What limits a queue's starts now.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LimitsView {
    queue: String,
    /// At most this many of the queue's jobs start in any window, across
    /// every worker of every process; `null`: no limit.
    rate_limit: Option<RateLimitView>,
    /// Jobs started within the rate limit's window that ends now, on the
    /// queue backend's clock (0 without a limit).
    started_in_window: u64,
    /// The rate limit each named group of the queue has on its own;
    /// `null`: none.
    group_rate_limit: Option<RateLimitView>,
    /// The most jobs of one named group that run at once; `null`: no cap.
    group_concurrency: Option<u32>,
    /// How much longer a handler's hold ("the downstream is limiting me")
    /// keeps the queue from starting jobs, in ms; `null`: no hold.
    held_for_ms: Option<u64>,
}

/// A rate limit to set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateLimitRequest {
    /// The most jobs that start in one window, 1 to 1,000,000.
    #[serde(deserialize_with = "seawall_app::json::integer")]
    #[schema(minimum = 1, maximum = 1_000_000, example = 100)]
    max: i64,
    /// The window's length in ms, 1 to a year.
    #[serde(deserialize_with = "seawall_app::json::integer")]
    #[schema(minimum = 1, maximum = 31_536_000_000_i64, example = 1000)]
    per_ms: i64,
}

impl RateLimitRequest {
    fn checked(&self) -> Result<(u32, Duration), Problem> {
        let max = u32::try_from(self.max)
            .ok()
            .filter(|_| (1..=MAX_STARTS).contains(&self.max))
            .ok_or_else(|| Problem::invalid_field("max", format!("must be 1 to {MAX_STARTS}")))?;
        let per_ms = u64::try_from(self.per_ms)
            .ok()
            .filter(|_| (1..=MAX_WINDOW_MS).contains(&self.per_ms))
            .ok_or_else(|| {
                Problem::invalid_field("per_ms", format!("must be 1 to {MAX_WINDOW_MS} (a year)"))
            })?;
        Ok((max, Duration::from_millis(per_ms)))
    }
}

fn rate_view(limit: RateLimit) -> RateLimitView {
    RateLimitView {
        max: limit.max,
        per_ms: u64::try_from(limit.per.as_millis()).unwrap_or(u64::MAX),
    }
}

pub(super) fn limits_view(queue: QueueName, limits: Limits) -> LimitsView {
    LimitsView {
        queue: queue.as_str().to_owned(),
        rate_limit: limits.rate.map(rate_view),
        started_in_window: limits.started_in_window,
        group_rate_limit: limits.group_rate.map(rate_view),
        group_concurrency: limits.group_concurrency,
        held_for_ms: limits
            .held_for
            .map(|left| u64::try_from(left.as_millis()).unwrap_or(u64::MAX)),
    }
}

/// Which rate limit a route changes.
#[derive(Debug, Clone, Copy)]
enum Which {
    /// The queue's, across every worker.
    Queue,
    /// Each named group's, on its own.
    Group,
}

/// Sets (`Some`) or removes (`None`) one of `queue`'s rate limits, and
/// answers its limits after.
async fn change(
    state: &AppState,
    queue: QueueName,
    which: Which,
    limit: Option<(u32, Duration)>,
) -> Result<Json<LimitsView>, Problem> {
    let queues = queues(state)?;
    let name = queue.as_str();
    match (which, limit) {
        (Which::Queue, Some((max, per))) => queues.set_rate_limit(name, max, per).await?,
        (Which::Group, Some((max, per))) => queues.set_group_rate_limit(name, max, per).await?,
        (Which::Queue, None) => queues.clear_rate_limit(name).await?,
        (Which::Group, None) => queues.clear_group_rate_limit(name).await?,
    }
    tracing::info!(%queue, ?which, ?limit, "rate limit changed");
    let limits = queues.limits(name).await?;
    Ok(Json(limits_view(queue, limits)))
}

/// Every queue's limits, read at once. A view: a queue whose read fails is
/// left out.
pub(super) async fn all_limits(queues: &Queues) -> Vec<LimitsView> {
    let read = futures_util::future::join_all(
        QueueName::ALL.map(|queue| async move { (queue, queues.limits(queue.as_str()).await) }),
    )
    .await;
    read.into_iter()
        .filter_map(|(queue, limits)| match limits {
            Ok(limits) => Some(limits_view(queue, limits)),
            Err(error) => {
                tracing::warn!(%queue, %error, "reading the queue's limits failed");
                None
            }
        })
        .collect()
}

/// The queue's limits and what they hold back now.
#[utoipa::path(get, path = "/api/queue/{queue}/limits", tag = "admin",
    security(("admin_token" = [])),
    params(QueuePath),
    responses(
        (status = 200, description = "The queue's limits", body = LimitsView),
        (status = 404, description = "No such queue",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The queues' Redis does not answer",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn limits(
    State(state): State<AppState>,
    Path(QueuePath { queue }): Path<QueuePath>,
) -> Result<Json<LimitsView>, Problem> {
    let queue = queue_named(&queue)?;
    let limits = queues(&state)?.limits(queue.as_str()).await?;
    Ok(Json(limits_view(queue, limits)))
}

/// Sets the queue's rate limit: at most `max` of its jobs start in any
/// window of `per_ms`, across every worker of every process, counted on
/// the queue backend's clock. Replaces any limit before it.
#[utoipa::path(put, path = "/api/queue/{queue}/rate-limit", tag = "admin",
    security(("admin_token" = [])),
    params(QueuePath),
    request_body(content = RateLimitRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The queue's limits", body = LimitsView),
        (status = 404, description = "No such queue",
            body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The body is not valid JSON or a field is wrong",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The queues' Redis does not answer",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn set_rate_limit(
    State(state): State<AppState>,
    Path(QueuePath { queue }): Path<QueuePath>,
    body: Result<Json<RateLimitRequest>, Problem>,
) -> Result<Json<LimitsView>, Problem> {
    // The queue before the body: no such queue is a 404 whatever the body.
    let queue = queue_named(&queue)?;
    let Json(request) = body?;
    change(&state, queue, Which::Queue, Some(request.checked()?)).await
}

/// Removes the queue's rate limit.
#[utoipa::path(delete, path = "/api/queue/{queue}/rate-limit", tag = "admin",
    security(("admin_token" = [])),
    params(QueuePath),
    responses(
        (status = 200, description = "The queue's limits", body = LimitsView),
        (status = 404, description = "No such queue",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The queues' Redis does not answer",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn clear_rate_limit(
    State(state): State<AppState>,
    Path(QueuePath { queue }): Path<QueuePath>,
) -> Result<Json<LimitsView>, Problem> {
    change(&state, queue_named(&queue)?, Which::Queue, None).await
}

/// Sets the rate limit each named group of the queue has on its own: at
/// most `max` jobs of one group start in any window of `per_ms`; a group
/// at its limit sits out while the others go on.
#[utoipa::path(put, path = "/api/queue/{queue}/group-rate-limit", tag = "admin",
    security(("admin_token" = [])),
    params(QueuePath),
    request_body(content = RateLimitRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The queue's limits", body = LimitsView),
        (status = 404, description = "No such queue",
            body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The body is not valid JSON or a field is wrong",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The queues' Redis does not answer",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn set_group_rate_limit(
    State(state): State<AppState>,
    Path(QueuePath { queue }): Path<QueuePath>,
    body: Result<Json<RateLimitRequest>, Problem>,
) -> Result<Json<LimitsView>, Problem> {
    let queue = queue_named(&queue)?;
    let Json(request) = body?;
    change(&state, queue, Which::Group, Some(request.checked()?)).await
}

/// Removes the queue's group rate limit.
#[utoipa::path(delete, path = "/api/queue/{queue}/group-rate-limit", tag = "admin",
    security(("admin_token" = [])),
    params(QueuePath),
    responses(
        (status = 200, description = "The queue's limits", body = LimitsView),
        (status = 404, description = "No such queue",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The queues' Redis does not answer",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn clear_group_rate_limit(
    State(state): State<AppState>,
    Path(QueuePath { queue }): Path<QueuePath>,
) -> Result<Json<LimitsView>, Problem> {
    change(&state, queue_named(&queue)?, Which::Group, None).await
}
