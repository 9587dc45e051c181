//! Starting fleets for the tests, one at a time, and talking to them.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::sync::{Mutex, OwnedMutexGuard};

use seawall_testkit::{Fleet, FleetBuilder};

/// Held while a fleet runs: one fleet at a time.
static TURN: LazyLock<Arc<Mutex<()>>> = LazyLock::new(Arc::default);

/// A running fleet and the turn it holds; dropping it stops the fleet and
/// lets the next test start its own.
pub(crate) struct Running {
    pub(crate) fleet: Fleet,
    _turn: OwnedMutexGuard<()>,
}

impl std::ops::Deref for Running {
    type Target = Fleet;
    fn deref(&self) -> &Fleet {
        &self.fleet
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Fleet {
        &mut self.fleet
    }
}

/// A fleet builder with a small demo dataset and this package's API binary.
pub(crate) fn builder() -> FleetBuilder {
    Fleet::builder()
        .api_binary(env!("CARGO_BIN_EXE_seawall-api"))
        .env("SEAWALL_DEMO_USERS", "50")
        .env("SEAWALL_DEMO_CONTENTS", "200")
        .env("SEAWALL_DEMO_SCHEDULES_PER_USER", "20")
        .env("SEAWALL_DEMO_HISTORY_PER_USER", "20")
        .env("SEAWALL_LOG_FORMAT", "json")
        // The drills cut instances off and read on through one client near
        // its limit: an instance that was unhealthy a moment ago would
        // answer 429 while its limits loosen. These tests are of failover;
        // the tightening has its own (tests/it/ratelimit.rs).
        .env("SEAWALL_RATELIMIT_HEALTH_DEGRADED", "1")
        .env("SEAWALL_RATELIMIT_HEALTH_UNHEALTHY", "1")
}

/// Starts `builder`'s fleet once no other test's fleet runs.
pub(crate) async fn start(builder: FleetBuilder) -> Running {
    let turn = Arc::clone(&TURN).lock_owned().await;
    tokio::task::spawn_blocking(move || {
        let fleet = builder
            .start()
            .unwrap_or_else(|error| panic!("the fleet starts: {error}"));
        Running { fleet, _turn: turn }
    })
    .await
    .expect("joins")
}

/// Stops a fleet off the async runtime (its processes drain).
pub(crate) async fn stop(running: Running) {
    tokio::task::spawn_blocking(move || drop(running))
        .await
        .expect("joins");
}

/// An HTTP client that does not pool connections across instances' restarts.
/// Its timeout is past HAProxy's own (30 s): a request a loaded machine
/// answers slowly is not a failure, one HAProxy gives up on is.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("a client")
}

/// The queues' rows of `/api/queue` through HAProxy (`name`, `waiting`,
/// `delayed`, `active`, ...); `None` while it does not answer.
pub(crate) async fn queue_rows(
    client: &reqwest::Client,
    fleet: &Fleet,
) -> Option<Vec<serde_json::Value>> {
    let response = client
        .get(format!("{}/api/queue", fleet.url()))
        .bearer_auth(fleet.token())
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let overview: serde_json::Value = response.json().await.ok()?;
    overview["queues"].as_array().cloned()
}

/// Whether every queue of `names` has no job waiting, delayed or running,
/// as `/api/queue` through HAProxy says; false while it does not answer.
pub(crate) async fn queues_idle(client: &reqwest::Client, fleet: &Fleet, names: &[&str]) -> bool {
    let Some(rows) = queue_rows(client, fleet).await else {
        return false;
    };
    names.iter().all(|name| {
        rows.iter()
            .find(|row| row["name"] == *name)
            .is_some_and(|row| {
                ["waiting", "delayed", "active"]
                    .iter()
                    .all(|state| row[*state].as_u64() == Some(0))
            })
    })
}

/// `GET url` with the fleet's admin token, as JSON.
pub(crate) async fn admin_get(
    client: &reqwest::Client,
    fleet: &Fleet,
    url: &str,
) -> serde_json::Value {
    let response = client
        .get(url)
        .bearer_auth(fleet.token())
        .send()
        .await
        .unwrap_or_else(|error| panic!("GET {url}: {error}"));
    assert!(
        response.status().is_success(),
        "GET {url}: {}",
        response.status()
    );
    response.json().await.expect("JSON")
}

/// Now in µs since the Unix epoch, as the history's `t`.
pub(crate) fn now_micros() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_micros(),
    )
    .expect("fits")
}
