//! Backends every conformance scenario runs on: L1 only, L1 + a standalone
//! redis-server, L1 + a Redis Cluster (one of each per test binary,
//! shared; every test uses a prefix of its own).

use std::time::Duration;

use fred::prelude::Client;
use seawall_cache::{Codec, TieredCache, TieredCacheBuilder};
pub(crate) use seawall_testkit::unique_prefix;
use seawall_testkit::{RedisCluster, RedisServer, client as redis_client, wait};

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
                .redis(redis_client::connect(url, STEADY_REDIS_TIMEOUT).await),
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

/// A client that gives up on a command after a second and reconnects
/// every 100 ms.
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
