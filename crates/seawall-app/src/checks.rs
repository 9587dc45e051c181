//! Readiness checks shared by the database and Redis: a ping with a deadline,
//! reported in the shape `application/health+json` uses.

use std::time::{Duration, Instant};

use seawall_perfmon::CheckResult;

/// How long a readiness ping may take before the dependency counts as down.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Times `ping` against `component` (`database`, `redis`): passes with the
/// round trip in milliseconds, fails with the error or after a second.
pub(crate) async fn timed_ping<T, E: std::fmt::Display>(
    component: &str,
    ping: impl Future<Output = Result<T, E>>,
) -> CheckResult {
    let start = Instant::now();
    let outcome = tokio::time::timeout(PING_TIMEOUT, ping).await;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let result = match outcome {
        Ok(Ok(_)) => CheckResult::pass().observed(ms, "ms"),
        Ok(Err(error)) => CheckResult::fail(format!("{component}: {error}")),
        Err(_) => CheckResult::fail(format!("{component} did not answer within 1 s")),
    };
    result.component_type("datastore")
}
