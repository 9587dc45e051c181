//! Why a workload operation did not answer.

use crate::ServiceError;

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
    /// The service failed beneath the operation: its database, job
    /// queues or cache, or itself.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl WorkloadError {
    /// A failed statement.
    #[allow(clippy::needless_pass_by_value)] // used as `map_err(WorkloadError::database)`
    pub fn database(error: sqlx::Error) -> Self {
        Self::Service(ServiceError::database(error))
    }
}
