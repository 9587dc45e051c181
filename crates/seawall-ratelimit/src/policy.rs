//! What a limiter does when its store cannot decide: the policy the
//! limiter, the stores' breakers and the degraded-decision trace all name,
//! at the bottom of the crate so that none of them imports another for it.

/// What a limiter does when its store cannot decide: Redis failed (no
/// connection, no answer within the store's timeout), its circuit breaker
/// is open, or it refused the call; a memory store is full of keys it
/// cannot forget, for a key it does not hold. While a Redis node is down
/// the store's breaker of that node lets one call through as a probe at
/// most once a second, and every limiter on it goes back to Redis as soon
/// as that is answered. Whatever the policy (but [`Error`](Self::Error)),
/// a key this instance saw blocked stays refused until its block ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Admit every request (the default: the limiter protects, it must not
    /// take the service down with Redis).
    #[default]
    Open,
    /// Reject every request, with a retry after one second.
    Closed,
    /// Decide in process memory with this instance's share of the quota:
    /// `instances` is how many instances share the limit.
    Insurance {
        /// How many instances share the limit.
        instances: u32,
    },
    /// Return the error to the caller.
    Error,
}
