//! Backends every conformance scenario runs on: process memory with a manual
//! clock, a standalone redis-server and a Redis Cluster (one per test
//! binary, shared), both started by the testkit.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use fred::prelude::{Builder, Client, ClientLike, Config, ReconnectPolicy};
use seawall_ratelimit::{
    Clock, Limiter, LimiterBuilder, ManualClock, MemoryStore, Quota, RedisStore,
};
use seawall_testkit::{RedisCluster, RedisServer};

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

pub(crate) fn unique_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A store on a server that stays up, whose calls wait up to
/// [`STEADY_TIMEOUT`].
pub(crate) async fn steady_store(url: &str) -> RedisStore {
    RedisStore::new(client_giving_up_after(url, STEADY_TIMEOUT).await)
        .with_timeout(STEADY_TIMEOUT)
        .expect("a timeout")
}

/// A client that fails a command after a second instead of waiting for a
/// lost server, and reconnects every 100 ms.
pub(crate) async fn client(url: &str) -> Client {
    client_giving_up_after(url, Duration::from_secs(1)).await
}

/// A client that fails a command after `timeout`, and reconnects every
/// 100 ms.
async fn client_giving_up_after(url: &str, timeout: Duration) -> Client {
    let client = Builder::from_config(Config::from_url(url).expect("a valid URL"))
        .with_performance_config(|performance| {
            performance.default_command_timeout = timeout;
        })
        .with_connection_config(|connection| {
            connection.connection_timeout = timeout;
            connection.internal_command_timeout = timeout;
        })
        .set_policy(ReconnectPolicy::new_constant(0, 100))
        .build()
        .expect("a client");
    client.init().await.expect("connects");
    client
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
