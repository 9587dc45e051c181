//! Backends every conformance scenario runs on: L1 only, L1 + a standalone
//! redis-server, L1 + a Redis Cluster (one of each per test binary,
//! shared; every test uses a prefix of its own).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use fred::prelude::{Builder, Client, ClientLike, Config, ReconnectPolicy};
use seawall_cache::{Codec, TieredCache, TieredCacheBuilder};
use seawall_testkit::{RedisCluster, RedisServer, wait};

/// How long a Redis call of a backend's cache may take. The servers here
/// never fail, but a loaded machine can hold a call up for longer than the
/// cache's default 250 ms, which the cache would take for a failure (and
/// load, or open its breaker, where the test expects a hit).
const STEADY_REDIS_TIMEOUT: Duration = Duration::from_secs(10);

/// Which tiers a scenario's caches have.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    Memory,
    Redis(String),
    Cluster(String),
}

impl Backend {
    pub(crate) fn memory() -> Self {
        Self::Memory
    }

    pub(crate) fn redis() -> Self {
        Self::Redis(RedisServer::shared().url())
    }

    pub(crate) fn cluster() -> Self {
        Self::Cluster(RedisCluster::shared().url())
    }

    /// A builder of a cache with a prefix no other test uses.
    pub(crate) async fn builder(&self) -> TieredCacheBuilder {
        self.instance(&unique_prefix()).await
    }

    /// A second builder sharing `prefix`: another instance of the service.
    pub(crate) async fn instance(&self, prefix: &str) -> TieredCacheBuilder {
        let builder = TieredCache::builder().prefix(prefix);
        match self {
            Self::Memory => builder,
            Self::Redis(url) | Self::Cluster(url) => builder
                .redis_timeout(STEADY_REDIS_TIMEOUT)
                .redis(client_giving_up_after(url, STEADY_REDIS_TIMEOUT).await),
        }
    }
}

/// Builds a cache and waits until it follows invalidations, as a service
/// does at start.
pub(crate) trait Ready<C: Codec> {
    async fn ready(self) -> TieredCache<C>;
}

impl<C: Codec> Ready<C> for TieredCacheBuilder<C> {
    async fn ready(self) -> TieredCache<C> {
        let cache = self.build().expect("cache");
        assert!(
            cache.wait_following(wait::patience()).await,
            "waited {:?} for the cache to follow invalidations",
            wait::patience()
        );
        cache
    }
}

pub(crate) fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A client that gives up on a command after a second and reconnects
/// every 100 ms.
pub(crate) async fn client(url: &str) -> Client {
    client_giving_up_after(url, Duration::from_secs(1)).await
}

/// A client that gives up on a command after `timeout` and reconnects
/// every 100 ms.
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
        $crate::on_redis_backends!($($scenario),*);
    };
}

/// Runs a scenario on the backends with Redis: standalone and Cluster.
#[macro_export]
macro_rules! on_redis_backends {
    ($($scenario:ident),* $(,)?) => {
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(&$crate::support::Backend::redis()).await;
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(&$crate::support::Backend::cluster()).await;
                }
            )*
        }
    };
}
