//! The queue's health check in seawall-perfmon: whether its backend keeps
//! every job.

use std::time::Duration;

use seawall_perfmon::{CheckResult, HealthCheck, HealthStatus};

use crate::error::Error;
use crate::queues::Queues;

/// A health check (`queue:durability`): degraded when the backend may lose
/// jobs (Redis's `maxmemory-policy` is not `noeviction`, or the memory
/// backend), failing when Redis does not answer.
#[derive(Debug, Clone)]
pub struct DurabilityCheck {
    queues: Queues,
}

impl DurabilityCheck {
    /// A check of `queues`' backend.
    pub fn new(queues: Queues) -> Self {
        Self { queues }
    }
}

#[async_trait::async_trait]
impl HealthCheck for DurabilityCheck {
    fn key(&self) -> String {
        "queue:durability".to_owned()
    }

    async fn check(&self) -> CheckResult {
        let answer =
            tokio::time::timeout(Duration::from_secs(2), self.queues.durability_warning()).await;
        let no_answer =
            || fred::error::Error::new(fred::error::ErrorKind::Timeout, "no answer within 2 s");
        match answer.unwrap_or_else(|_| Err(Error::Redis(no_answer()))) {
            Ok(None) => CheckResult::pass(),
            Ok(Some(warning)) => CheckResult::with_status(HealthStatus::Degraded).output(warning),
            Err(error) => CheckResult::fail(error.to_string()),
        }
    }
}
