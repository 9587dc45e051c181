//! Why a workload operation did not answer.

use std::sync::Arc;

/// Why a workload operation did not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadError {
    /// There is no such user.
    #[error("no user with id {0}")]
    NoSuchUser(i64),
    /// The user has no schedule for the content; nothing was written.
    #[error("user {user_id} has no review schedule for content {content_id}")]
    NotScheduled {
        /// The learner.
        user_id: i64,
        /// The content.
        content_id: i64,
    },
    /// An input breaks a rule; nothing was written.
    #[error("field `{field}` {reason}")]
    Invalid {
        /// The field at fault.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A statement failed; [`crate::db::fault`] tells an unavailable or busy
    /// database from a fault.
    #[error("the database failed")]
    Database(#[source] Arc<sqlx::Error>),
    /// The job queues' Redis has not answered since start.
    #[error("the job queues' Redis has not answered yet")]
    QueuesConnecting,
    /// The job queues failed.
    #[error("the job queues failed")]
    Queue(#[source] seawall_queue::Error),
    /// A read through the cache failed: its load failed (the loader's
    /// [`WorkloadError`] is the cache error's
    /// [`loader_error`](seawall_cache::Error::loader_error)) or took too long.
    #[error("a cached read failed")]
    Cache(#[source] seawall_cache::Error),
    /// A fault of the service itself, described for the log.
    #[error("{0}")]
    Internal(String),
}

impl WorkloadError {
    /// A failed statement.
    #[allow(clippy::needless_pass_by_value)] // used as `map_err(WorkloadError::database)`
    pub fn database(error: sqlx::Error) -> Self {
        Self::Database(Arc::new(error))
    }
}
