//! Backends every conformance scenario runs on: process memory with a manual
//! clock, a standalone redis-server and a Redis Cluster (one per test
//! binary, shared), both started by the testkit.

use std::time::Duration;

use fred::prelude::Client;
use seawall_ratelimit::{
    Clock, Limiter, LimiterBuilder, ManualClock, MemoryStore, Quota, RedisStore,
};
pub(crate) use seawall_testkit::unique_prefix as unique_name;
use seawall_testkit::{RedisCluster, RedisServer, client as redis_client};

/// How long a call of a backend's Redis store may take. The servers here
/// never fail, but a loaded machine can hold a call up for longer than the
/// store's default 250 ms, which the store would take for a failure (and
/// decide by the failure policy where the test expects Redis's answer).
pub(crate) const STEADY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a scenario's limiters keep their state.
pub(crate) enum Backend {
    Memory(ManualClock, MemoryStore),
    Redis(RedisStore),
}

impl Backend {
    pub(crate) fn memory() -> Self {
        let clock = ManualClock::new();
        let store = MemoryStore::builder()
            .clock(Clock::Manual(clock.clone()))
            .build();
        Self::Memory(clock, store)
    }

    pub(crate) async fn redis() -> Self {
        Self::Redis(steady_store(&RedisServer::shared().url()).await)
    }

    pub(crate) async fn cluster() -> Self {
        Self::Redis(steady_store(&RedisCluster::shared().url()).await)
    }

    /// A limiter with a name no other test uses.
    pub(crate) fn limiter(&self, quota: impl Into<Quota>) -> LimiterBuilder {
        let builder = Limiter::builder(&unique_name()).quota(quota.into());
        match self {
            Self::Memory(_, store) => builder.store(store.clone()),
            Self::Redis(store) => builder.store(store.clone()),
        }
    }

    /// Lets `duration` pass: the manual clock moves, or the test sleeps.
    pub(crate) async fn pass(&self, duration: Duration) {
        match self {
            Self::Memory(clock, _) => clock.advance(duration),
            Self::Redis(_) => tokio::time::sleep(duration).await,
        }
    }

    /// Whether time here is real (and figures may have moved a little).
    pub(crate) fn real_time(&self) -> bool {
        matches!(self, Self::Redis(_))
    }
}

/// A store on a server that stays up, whose calls wait up to
/// [`STEADY_TIMEOUT`].
pub(crate) async fn steady_store(url: &str) -> RedisStore {
    RedisStore::new(redis_client::connect(url, STEADY_TIMEOUT).await)
        .with_timeout(STEADY_TIMEOUT)
        .expect("a timeout")
}

/// A client that fails a command after a second instead of waiting for a
/// lost server, and reconnects every 100 ms.
pub(crate) async fn client(url: &str) -> Client {
    redis_client::connect(url, Duration::from_secs(1)).await
}

/// Runs a scenario on every backend.
#[macro_export]
macro_rules! on_every_backend {
    ($($scenario:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(&$crate::support::Backend::memory()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(&$crate::support::Backend::redis().await).await;
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(&$crate::support::Backend::cluster().await).await;
                }
            )*
        }
    };
}
