//! The reference workload's errors.

use seawall_app::workload::WorkloadError;

use super::{Problem, service};

impl From<&WorkloadError> for Problem {
    fn from(error: &WorkloadError) -> Self {
        match error {
            WorkloadError::NoSuchUser(_) | WorkloadError::NotScheduled { .. } => {
                Self::not_found(error.to_string())
            }
            WorkloadError::Invalid { field, reason } => Self::invalid_field(field, reason.clone()),
            WorkloadError::Service(error) => service::problem::<WorkloadError>(error),
            _ => {
                tracing::error!(%error, "a workload operation failed");
                Self::internal()
            }
        }
    }
}

impl From<WorkloadError> for Problem {
    fn from(error: WorkloadError) -> Self {
        Self::from(&error)
    }
}
