//! The job queues' errors.

use axum::http::StatusCode;

use super::Problem;

/// 503 with `Retry-After: 2`: the job queues' Redis has not answered since
/// the service started.
pub(crate) fn connecting() -> Problem {
    Problem::unavailable("the job queues' Redis has not answered yet; try again shortly")
        .with_retry_after(2)
}

/// 404: `queue` has no scheduler `id` (or `id` could name none).
pub(crate) fn no_scheduler(queue: &str, id: &str) -> Problem {
    Problem::not_found(format!("the {queue} queue has no scheduler {id:?}"))
}

impl From<&seawall_queue::Error> for Problem {
    fn from(error: &seawall_queue::Error) -> Self {
        match error {
            seawall_queue::Error::Redis(_) | seawall_queue::Error::PoolTimeout(_) => {
                tracing::warn!(%error, "job queue unavailable");
                Self::unavailable("the job queues are not available; try again shortly")
                    .with_retry_after(2)
            }
            seawall_queue::Error::Unavailable { retry_in } => {
                // Logged once per outage by the queue itself, not per call.
                let seconds = u32::try_from(retry_in.as_millis().div_ceil(1000))
                    .unwrap_or(u32::MAX)
                    .max(1);
                Self::unavailable(format!(
                    "the job queues' Redis was found down moments ago, so nothing was queued or \
                     changed; this call was answered without waiting for it: retry in {seconds} s"
                ))
                .with_retry_after(seconds)
            }
            seawall_queue::Error::NotReplicated { .. } => {
                tracing::warn!(%error, "an enqueue was not replicated in time and was taken back");
                Self::unavailable(
                    "the job was not queued: no replica confirmed it in time, and it was taken \
                     back before it ran, which the replicas confirmed; a retry queues it once",
                )
                .with_retry_after(1)
            }
            seawall_queue::Error::EnqueueOutcomeUnknown { .. } => {
                tracing::warn!(%error, "an enqueue was not replicated in time and its take-back failed or was not confirmed");
                Self::unavailable(
                    "whether the job is queued is unknown: no replica confirmed it in time, and it \
                     could not be taken back or no replica confirmed the take-back, so it may run, \
                     or be lost in a failover; a retry with the same Idempotency-Key enqueues it \
                     at most once, one without a key may enqueue it again",
                )
                .with_retry_after(1)
            }
            // An upgrade under way: flows wait for the last old worker.
            seawall_queue::Error::OlderWorkers { .. } => Self::unavailable(
                "the flow was not queued: a worker of an older release, which cannot run flows, \
                 may still be running; flows are taken within seconds of the last such worker \
                 stopping (plain jobs are taken meanwhile)",
            )
            .with_retry_after(5),
            // What the caller asked for is out of the queue's bounds: a
            // key or a delay out of range, a flow too large or over queues
            // a Cluster keeps apart.
            seawall_queue::Error::InvalidOption(reason) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, reason.clone())
            }
            seawall_queue::Error::IdempotencyMismatch { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, error.to_string())
                    .with_param("idempotency-key", "was first used for a different job")
            }
            _ => {
                tracing::error!(%error, "job queue call failed");
                Self::internal()
            }
        }
    }
}

impl From<seawall_queue::Error> for Problem {
    fn from(error: seawall_queue::Error) -> Self {
        Self::from(&error)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;

    use super::Problem;

    /// A flow refused while an older worker may run is a 503 to retry
    /// later, not a 500: nothing was written, and the upgrade ends it.
    #[test]
    fn a_flow_refused_for_an_older_worker_is_retried_later() {
        let problem = Problem::from(seawall_queue::Error::OlderWorkers { reads: 1 });
        assert_eq!(problem.status(), StatusCode::SERVICE_UNAVAILABLE);
        let response = problem.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
    }
}
