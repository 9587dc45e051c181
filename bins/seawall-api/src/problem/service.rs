//! What failed beneath an operation rather than in the request
//! ([`ServiceError`]): the database, the job queues, a read through the
//! cache, the service itself.

use seawall_app::ServiceError;
use seawall_app::db::Fault;

use super::{Problem, queue};

/// The problem a [`ServiceError`] answers with. `E` is the error of the
/// operation's loaders: a cached read answers with its loader's error,
/// mapped as every `E` is.
pub(super) fn problem<E>(error: &ServiceError) -> Problem
where
    E: std::error::Error + 'static,
    for<'e> Problem: From<&'e E>,
{
    match error {
        ServiceError::Database(error) => database(error),
        ServiceError::QueuesConnecting => queue::connecting(),
        ServiceError::Queue(error) => <Problem as From<&seawall_queue::Error>>::from(error),
        ServiceError::Cache(error) => cached_read::<E>(error),
        _ => {
            tracing::error!(%error, "an operation failed");
            Problem::internal()
        }
    }
}

/// The problem a failed statement answers with: 503 when the database is
/// out of reach or busy, 500 otherwise.
fn database(error: &sqlx::Error) -> Problem {
    match seawall_app::db::fault(error) {
        Fault::Unavailable => {
            tracing::warn!(%error, "database unavailable");
            Problem::unavailable("the database is not available; try again shortly")
        }
        Fault::Busy => {
            tracing::warn!(%error, "database busy");
            Problem::unavailable("the database is busy; try again shortly").shed()
        }
        Fault::Failed => {
            tracing::error!(%error, "database query failed");
            Problem::internal()
        }
    }
}

/// The problem a failed read through the cache answers with: its loader's
/// error (an `E`) mapped as every `E` is, built anew so that it carries
/// this request's id (the load may have been another request's); 503 for a
/// load that took too long; 500 otherwise.
fn cached_read<E>(error: &seawall_cache::Error) -> Problem
where
    E: std::error::Error + 'static,
    for<'e> Problem: From<&'e E>,
{
    if let Some(source) = error
        .loader_error()
        .and_then(|source| source.downcast_ref::<E>())
    {
        return Problem::from(source);
    }
    match error {
        seawall_cache::Error::Timeout { .. } => {
            Problem::unavailable("the data took too long to load; try again shortly").shed()
        }
        _ => {
            tracing::error!(%error, "cached read failed");
            Problem::internal()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::StatusCode;
    use seawall_app::ServiceError;
    use seawall_app::promotions::PromoError;
    use seawall_app::workload::WorkloadError;

    use super::Problem;

    fn loaded(source: impl std::error::Error + Send + Sync + 'static) -> seawall_cache::Error {
        seawall_cache::Error::Load {
            key: "k".to_owned(),
            source: Box::new(source),
        }
    }

    #[test]
    fn a_cached_read_answers_with_its_loaders_error() {
        let workload =
            WorkloadError::from(ServiceError::Cache(loaded(WorkloadError::NoSuchUser(7))));
        let problem = Problem::from(&workload);
        assert_eq!(problem.status(), StatusCode::NOT_FOUND);
        assert_eq!(problem.detail(), "no user with id 7");
        let promo = PromoError::from(ServiceError::Cache(loaded(PromoError::SoldOut(3))));
        let problem = Problem::from(&promo);
        assert_eq!(problem.status(), StatusCode::CONFLICT);
        assert_eq!(problem.detail(), "time sale 3 is sold out");
    }

    #[test]
    fn a_load_too_slow_or_not_the_operations_own_is_no_loader_problem() {
        let slow = seawall_cache::Error::Timeout {
            key: "k".to_owned(),
            timeout: Duration::from_secs(1),
        };
        let problem = Problem::from(WorkloadError::from(ServiceError::Cache(slow)));
        assert_eq!(problem.status(), StatusCode::SERVICE_UNAVAILABLE);
        let foreign = ServiceError::Cache(loaded(PromoError::SoldOut(3)));
        let problem = Problem::from(WorkloadError::from(foreign));
        assert_eq!(problem.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn both_workloads_answer_a_service_error_alike() {
        for problem in [
            Problem::from(WorkloadError::from(ServiceError::QueuesConnecting)),
            Problem::from(PromoError::from(ServiceError::QueuesConnecting)),
        ] {
            assert_eq!(problem.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(problem.retry_after, Some(2));
        }
        for problem in [
            Problem::from(WorkloadError::from(ServiceError::Internal("x".to_owned()))),
            Problem::from(PromoError::from(ServiceError::Internal("x".to_owned()))),
        ] {
            assert_eq!(problem.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(problem.retry_after, None);
        }
    }
}
