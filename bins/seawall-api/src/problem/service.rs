//! What failed beneath an operation rather than in the request: the
//! database, the job queues, a read through the cache.

use seawall_app::db::Fault;

use super::Problem;

/// The problem a failed statement answers with: 503 when the database is
/// out of reach or busy, 500 otherwise.
pub(super) fn database(error: &sqlx::Error) -> Problem {
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
/// error (an `E`) mapped as every `E` is, built anew so that it carries
/// this request's id (the load may have been another request's); 503 for a
/// load that took too long; 500 otherwise.
pub(super) fn cached_read<E>(error: &seawall_cache::Error) -> Problem
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
            Problem::unavailable("the data took too long to load; try again shortly")
        }
        _ => {
            tracing::error!(%error, "cached read failed");
            Problem::internal()
        }
    }
}
