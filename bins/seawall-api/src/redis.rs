//! The Redis connection, when `REDIS_URL` is set: one reconnecting client
//! shared by every Redis backend, and its readiness check.

use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::{Builder, ClientLike, Config, ReconnectPolicy};
use seawall_perfmon::{CheckResult, HealthCheck};

/// How long one Redis command may take before it fails; fred waits forever
/// by default, which would hang requests while Redis is unreachable.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long start-up waits for the first connection before going on without
/// it (readiness reports Redis as failing until it connects).
const FIRST_CONNECT: Duration = Duration::from_secs(5);

/// A connected (or reconnecting) Redis client.
#[derive(Clone)]
pub(crate) struct Redis {
    client: fred::prelude::Client,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("connected", &self.client.is_connected())
            .finish()
    }
}

impl Redis {
    /// Parses the URL, starts the connection task and waits a little for the
    /// first connection. Fails only on a URL fred cannot use.
    pub(crate) async fn connect(url: &str) -> Result<Self, fred::error::Error> {
        let config = Config::from_url(url)?;
        let client = Builder::from_config(config)
            .with_performance_config(|performance| {
                performance.default_command_timeout = COMMAND_TIMEOUT;
            })
            .with_connection_config(|connection| {
                connection.connection_timeout = COMMAND_TIMEOUT;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .build()?;
        client.connect();
        match tokio::time::timeout(FIRST_CONNECT, client.wait_for_connect()).await {
            Ok(Ok(())) => tracing::info!("connected to Redis"),
            Ok(Err(error)) => {
                tracing::warn!(%error, "Redis is not reachable yet; retrying in the background")
            }
            Err(_) => tracing::warn!("Redis did not answer within 5 s; retrying in the background"),
        }
        Ok(Self { client })
    }

    /// Closes the connection.
    pub(crate) async fn close(&self) {
        if let Err(error) = self.client.quit().await {
            tracing::debug!(%error, "closing the Redis connection");
        }
    }

    /// A check that PINGs Redis.
    pub(crate) fn health_check(&self) -> RedisCheck {
        RedisCheck {
            client: self.client.clone(),
        }
    }
}

/// Reports Redis's PING round trip as `redis:responseTime`.
#[derive(Clone)]
pub(crate) struct RedisCheck {
    client: fred::prelude::Client,
}

#[async_trait]
impl HealthCheck for RedisCheck {
    fn key(&self) -> String {
        "redis:responseTime".to_owned()
    }

    async fn check(&self) -> CheckResult {
        crate::ops::timed_ping("redis", self.client.ping::<String>(None)).await
    }
}
