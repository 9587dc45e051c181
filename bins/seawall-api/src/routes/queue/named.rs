//! What every queue route starts from: the queue (and the job) its path
//! names, and the queues themselves once they are connected.

use seawall_queue::{JobId, Queues};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::config::QueueName;
use crate::problem::{self, Problem};
use crate::state::AppState;

/// The queue a path names.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct QueuePath {
    /// `email`, `report`, `schedule`, `notification`, `analytics`, `backup`,
    /// `export`, `import` or `order`.
    pub(super) queue: String,
}

/// The queue `name` names, or a 404 problem listing the queues.
pub(super) fn queue_named(name: &str) -> Result<QueueName, Problem> {
    QueueName::parse(name).ok_or_else(|| {
        let names: Vec<&str> = QueueName::ALL.iter().map(|queue| queue.as_str()).collect();
        Problem::not_found(format!(
            "there is no queue {name:?}; the queues are {}",
            names.join(", ")
        ))
    })
}

/// The queues, or a 503 problem while they are connecting.
pub(super) fn queues(state: &AppState) -> Result<&Queues, Problem> {
    state.queues().get().ok_or_else(problem::queue::connecting)
}

/// A job a path names.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct JobPath {
    /// The queue.
    pub(super) queue: String,
    /// The job's id: `<sequence>-<epoch>` (digits, `-`, hex digits), or
    /// digits alone for a job queued before ids carried an epoch.
    #[param(example = "31556926000000-9f86d081884c7d65")]
    pub(super) id: String,
}

/// The job id a path names, or a 404 problem.
pub(super) fn job_id(id: &str) -> Result<JobId, Problem> {
    JobId::parse(id).ok_or_else(|| Problem::not_found(format!("there is no job {id:?}")))
}
