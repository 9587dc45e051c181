//! Flows: a tree of jobs over the queues, enqueued all or nothing, in
//! which a job runs only once its children finished; and the children of
//! a job, with how each finished and its result.

use axum::extract::State;
use axum::http::StatusCode;
use seawall_queue::{ChildFailure, ChildInfo, ChildOutcome, FlowIds};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::named::{JobPath, job_id, queue_named, queues};
use crate::config::QueueName;
use crate::extract::{Json, Path};
use crate::jobs::{self, FlowJob, Refusal};
use crate::problem::Problem;
use crate::state::AppState;

/// One job of a flow to enqueue, with the jobs that must finish before it
/// runs.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FlowRequest {
    /// Its queue: `email`, `report`, `schedule`, `notification`,
    /// `analytics`, `backup`, `export`, `import` or `order`.
    #[schema(example = "report")]
    queue: String,
    /// Its payload, as the queue's enqueue route takes it.
    #[schema(value_type = Object, example = json!({"user_id": 7, "days": 7}))]
    payload: serde_json::Value,
    /// What this job's final failure does to its parent: `fail` it (the
    /// default, and on up the tree), `ignore` it (the parent runs and sees
    /// the failure) or `drop` the dependency. Not taken at the root.
    #[serde(default)]
    on_failure: Option<OnFailure>,
    /// The jobs that must finish before this one runs, in any queues.
    // On this field alone: on the struct it would also keep `OnFailure`
    // out of the document, leaving `on_failure`'s `$ref` dangling.
    #[serde(default)]
    #[schema(no_recursion)]
    children: Vec<FlowRequest>,
}

/// What a child's final failure does to its parent.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum OnFailure {
    Fail,
    Ignore,
    Drop,
}

/// The ids a flow's jobs were given, in the shape of the flow.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct FlowEnqueued {
    queue: String,
    id: String,
    /// Its children's, in the order they were given.
    #[schema(no_recursion)]
    children: Vec<FlowEnqueued>,
}

impl From<FlowIds> for FlowEnqueued {
    fn from(ids: FlowIds) -> Self {
        Self {
            queue: ids.queue,
            id: ids.id.to_string(),
            children: ids.children.into_iter().map(Self::from).collect(),
        }
    }
}

/// The children of one job.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChildList {
    queue: String,
    id: String,
    children: Vec<ChildView>,
}

/// A child of a flow's job, and how it finished.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChildView {
    queue: String,
    id: String,
    /// `pending`, `completed` or `failed` (dead-lettered or cancelled).
    outcome: String,
    /// What its handler returned, once it completed, if anything: any
    /// JSON value, `null` when there is none.
    result: Option<serde_json::Value>,
    /// Why it failed, if it did.
    error: Option<String>,
}

impl From<ChildInfo> for ChildView {
    fn from(child: ChildInfo) -> Self {
        let (outcome, result, error) = match child.outcome {
            ChildOutcome::Completed(result) => (
                "completed",
                result.and_then(|json| serde_json::from_slice(&json).ok()),
                None,
            ),
            ChildOutcome::Failed(error) => ("failed", None, Some(error)),
            // Pending, and any outcome a later release adds.
            _ => ("pending", None, None),
        };
        Self {
            queue: child.queue,
            id: child.id.to_string(),
            outcome: outcome.to_owned(),
            result,
            error,
        }
    }
}

/// The tree `request` asks for, its queues named and its payloads as
/// given; `at` names its place for a refusal.
fn flow_job(request: FlowRequest, at: &str) -> Result<FlowJob, Problem> {
    let queue = QueueName::parse(&request.queue).ok_or_else(|| {
        let names: Vec<&str> = QueueName::ALL.iter().map(|queue| queue.as_str()).collect();
        Problem::invalid_field(
            &format!("{at}queue"),
            format!("is not a queue; the queues are {}", names.join(", ")),
        )
    })?;
    let on_failure = match request.on_failure {
        Some(_) if at.is_empty() => {
            return Err(Problem::invalid_field(
                "on_failure",
                "is a child's: the root of a flow has no parent",
            ));
        }
        None | Some(OnFailure::Fail) => ChildFailure::FailParent,
        Some(OnFailure::Ignore) => ChildFailure::Ignore,
        Some(OnFailure::Drop) => ChildFailure::Drop,
    };
    let children = request
        .children
        .into_iter()
        .enumerate()
        .map(|(n, child)| flow_job(child, &format!("{at}children[{n}].")))
        .collect::<Result<_, _>>()?;
    Ok(FlowJob {
        queue,
        payload: request.payload,
        on_failure,
        children,
    })
}

/// Enqueues a flow: a job and the jobs that must finish before it runs,
/// over any queues, every job of the tree or none. Each payload is checked
/// against its queue's rules and each job gets its queue's attempts,
/// backoff and timeout. A job waits (`waiting-children`) until each of
/// its children completed, or failed in a way its `on_failure` lets pass;
/// cancelling it cancels those not finished. At most 1,000 jobs. On a
/// Redis Cluster the queues keep their keys in slots of their own, so a
/// flow must stay within one queue there.
#[utoipa::path(post, path = "/api/queue/flows", tag = "admin",
    security(("admin_token" = [])),
    request_body(content = FlowRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Every job of the flow was enqueued", body = FlowEnqueued),
        (status = 400, description = "The body is not JSON, or two `Authorization` headers",
            body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A queue, a payload or an `on_failure` is refused, the \
            flow is too large, or it spans queues on a Redis Cluster; nothing was enqueued",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The queues' Redis does not answer, or a worker of an \
            older release, which cannot run flows, may still be running (an upgrade under way); \
            nothing was enqueued",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn enqueue_flow(
    State(state): State<AppState>,
    body: Result<Json<FlowRequest>, Problem>,
) -> Result<(StatusCode, Json<FlowEnqueued>), Problem> {
    let Json(request) = body?;
    let flow = flow_job(request, "")?;
    let queues = queues(&state)?;
    match jobs::enqueue_flow(queues, state.queue_config(), flow).await {
        Ok(ids) => Ok((StatusCode::ACCEPTED, Json(FlowEnqueued::from(ids)))),
        Err(Refusal::Invalid(refused)) => {
            Err(Problem::invalid_field(&refused.field, refused.reason))
        }
        Err(Refusal::Queue(error)) => Err(Problem::from(error)),
    }
}

/// The children of a flow's job, in the order they were enqueued, with how
/// each finished and its result; empty for a job that has none.
#[utoipa::path(get, path = "/api/queue/{queue}/jobs/{id}/children", tag = "admin",
    security(("admin_token" = [])),
    params(JobPath),
    responses(
        (status = 200, description = "The children", body = ChildList),
        (status = 404, description = "No such queue or job (or it was removed by retention)",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The queues' Redis does not answer",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn children(
    State(state): State<AppState>,
    Path(JobPath { queue, id }): Path<JobPath>,
) -> Result<Json<ChildList>, Problem> {
    let queue = queue_named(&queue)?;
    let id = job_id(&id)?;
    let queues = queues(&state)?;
    if queues.job(queue.as_str(), &id).await?.is_none() {
        return Err(Problem::not_found(format!(
            "there is no job {id} in {queue}"
        )));
    }
    let children = queues.children(queue.as_str(), &id).await?;
    Ok(Json(ChildList {
        queue: queue.as_str().to_owned(),
        id: id.to_string(),
        children: children.into_iter().map(ChildView::from).collect(),
    }))
}
