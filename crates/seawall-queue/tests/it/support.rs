//! Backends every conformance scenario runs on: memory, a standalone
//! redis-server, a Redis Cluster (one server and one cluster per test
//! binary, shared; every test uses a key prefix of its own).

use std::time::Duration;

use seawall_queue::fred::prelude::Builder;
use seawall_queue::{Queues, Settings};
pub(crate) use seawall_testkit::unique_prefix;
use seawall_testkit::{RedisCluster, RedisServer, client};

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

    pub(crate) async fn queues(&self) -> Queues {
        self.queues_with(Settings::default()).await
    }

    /// Queues with a key prefix no other test uses.
    pub(crate) async fn queues_with(&self, settings: Settings) -> Queues {
        self.instance(
            &Queues::memory_with(settings.clone()),
            &unique_prefix(),
            settings,
        )
        .await
    }

    /// Another process's view of the same queues: on Redis, new connections
    /// under `prefix`; in memory (one process by nature), `memory` itself.
    pub(crate) async fn instance(
        &self,
        memory: &Queues,
        prefix: &str,
        settings: Settings,
    ) -> Queues {
        match self {
            Self::Memory => memory.clone(),
            Self::Redis(url) | Self::Cluster(url) => Queues::redis(builder(url))
                .prefix(prefix)
                .settings(settings)
                .connect()
                .await
                .expect("connects"),
        }
    }
}

/// Queues on the Redis at `url`, under key prefix `prefix`, with the
/// defaults.
pub(crate) async fn connect(url: &str, prefix: &str) -> Queues {
    Queues::redis(builder(url))
        .prefix(prefix)
        .connect()
        .await
        .expect("connects")
}

/// A client builder that gives up on a command after 2 s and reconnects
/// every 100 ms.
pub(crate) fn builder(url: &str) -> Builder {
    client::builder(url, Duration::from_secs(2))
}

/// How many `completed` events each job has in `queue`'s stream (the
/// settings must keep every event the test writes).
pub(crate) async fn completions(
    queues: &Queues,
    queue: &str,
) -> std::collections::HashMap<seawall_queue::JobId, usize> {
    let mut completed = std::collections::HashMap::new();
    for event in all_events(queues, queue).await {
        if event.kind == "completed" {
            *completed.entry(event.job).or_default() += 1;
        }
    }
    completed
}

/// Every event `queue`'s stream keeps, oldest first.
pub(crate) async fn all_events(queues: &Queues, queue: &str) -> Vec<seawall_queue::Event> {
    let mut all = Vec::new();
    loop {
        let after = all
            .last()
            .map(|event: &seawall_queue::Event| event.position.clone());
        let events = queues
            .events(queue, after.as_deref(), 1_000)
            .await
            .expect("reads events");
        if events.is_empty() {
            return all;
        }
        all.extend(events);
    }
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

/// This test binary run again as one process of a drill: only the test
/// `test`, with `role` in the environment variable `env` (which the test
/// reads to act as that process instead).
pub(crate) fn spawn_role(test: &str, env: &str, role: &str) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args([test, "--exact"])
        .env(env, role)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("a drill process starts")
}

/// A drill's processes, killed when dropped (the test may panic): each is
/// sent SIGCONT first, so that a frozen one dies too.
pub(crate) struct Processes(pub(crate) Vec<std::process::Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
