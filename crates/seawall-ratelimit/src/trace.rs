//! Events for refused and degraded decisions and the Redis store's
//! breaker, and a span per Redis script call, with OpenTelemetry's
//! semantic-convention field names on plain `tracing` spans (as
//! seawall-queue's are). Without a subscriber, or with one that leaves the
//! level out, each is a disabled callsite: one check, no field evaluated,
//! nothing formatted.
//!
//! Keys are left out: a rate limit's key is most often a client's address
//! or a user's id, and events travel to log and trace backends kept longer
//! and read more widely than the limiter's own counters.
//! [`Limiter::top_rejected`](crate::Limiter::top_rejected) names the keys
//! refused most, in process.

use std::time::Duration;

use tracing::Span;

use crate::decision::Decision;
use crate::error::Error;
use crate::policy::FailurePolicy;

/// Milliseconds, as a field's integer.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A check of `cost` that `decision` refused (or, in shadow mode, would
/// have refused).
#[cold]
#[inline(never)]
pub(crate) fn refused(decision: &Decision, cost: u64) {
    tracing::debug!(
        name: "ratelimit.refused",
        {
            seawall.ratelimit.name = decision.limiter,
            seawall.ratelimit.cost = cost,
            seawall.ratelimit.retry_after_ms = decision.retry_after.map(millis),
            seawall.ratelimit.blocked_for_ms = decision.blocked_for.map(millis),
            seawall.ratelimit.shadow = decision.would_reject,
            seawall.ratelimit.degraded = decision.degraded,
        },
        "rate limit refused a check"
    );
}

/// A decision of limiter `name` that its store could not make, left to
/// `policy` because of `error`.
pub(crate) fn degraded(name: &str, policy: FailurePolicy, error: &Error) {
    let policy = match policy {
        FailurePolicy::Open => "open",
        FailurePolicy::Closed => "closed",
        FailurePolicy::Insurance { .. } => "insurance",
        FailurePolicy::Error => "error",
    };
    tracing::debug!(
        name: "ratelimit.degraded",
        {
            seawall.ratelimit.name = name,
            seawall.ratelimit.failure_policy = policy,
            error.message = %error,
        },
        "the store could not decide: the failure policy did"
    );
}

/// The Redis store's breaker opened: its limiters decide by their failure
/// policies until a probe finds Redis up.
pub(crate) fn breaker_opened() {
    tracing::warn!(
        name: "ratelimit.breaker_opened",
        { db.system.name = "redis" },
        "redis is down: limiters on it decide by their failure policy until it answers"
    );
}

/// The Redis store's breaker closed: a probe found Redis up.
pub(crate) fn breaker_closed() {
    tracing::info!(
        name: "ratelimit.breaker_closed",
        { db.system.name = "redis" },
        "redis answers again: limiters on it use it"
    );
}

/// The `ratelimit.redis` span of one script call for limiter `limiter`;
/// `script` is the script's purpose (`check_tat`, `check_fixed_window`,
/// `check_sliding_window`, `check_sliding_log`, `apply`, `blocked`, and
/// the concurrency limiter's `concurrency`).
/// [`redis_failed`] records a failure.
pub(crate) fn redis_span(limiter: &str, script: &'static str) -> Span {
    tracing::debug_span!(
        "ratelimit.redis",
        otel.name = %format_args!("EVALSHA {script}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        otel.status_message = tracing::field::Empty,
        db.system.name = "redis",
        db.operation.name = "EVALSHA",
        db.query.summary = %format_args!("EVALSHA {script}"),
        error.type = tracing::field::Empty,
        seawall.ratelimit.name = limiter,
    )
}

/// Records on a [`redis_span`] that the call failed: `timeout` when Redis
/// did not answer in time, else the client's kind of error.
pub(crate) fn redis_failed(span: &Span, error_type: &str, message: &dyn std::fmt::Display) {
    span.record("error.type", error_type);
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_message", tracing::field::display(message));
}

/// The health-scaled limits changed from the level `from` to `to`, where
/// they admit `scale` of their quota; `health` is the reading that changed
/// them.
pub(crate) fn health_change(
    from: seawall_perfmon::HealthStatus,
    to: seawall_perfmon::HealthStatus,
    scale: f64,
    health: seawall_perfmon::HealthStatus,
) {
    fn word(level: seawall_perfmon::HealthStatus) -> &'static str {
        match level {
            seawall_perfmon::HealthStatus::Healthy => "healthy",
            seawall_perfmon::HealthStatus::Degraded => "degraded",
            seawall_perfmon::HealthStatus::Unhealthy => "unhealthy",
        }
    }
    if to > from {
        tracing::warn!(
            name: "ratelimit.tightened",
            {
                seawall.ratelimit.health = word(health),
                seawall.ratelimit.from = word(from),
                seawall.ratelimit.to = word(to),
                seawall.ratelimit.scale = scale,
            },
            "the service's health fell: rate limits tightened"
        );
    } else {
        tracing::info!(
            name: "ratelimit.loosened",
            {
                seawall.ratelimit.health = word(health),
                seawall.ratelimit.from = word(from),
                seawall.ratelimit.to = word(to),
                seawall.ratelimit.scale = scale,
            },
            "the service's health held better: rate limits loosened"
        );
    }
}
