//! The cache across the fleet: a write acknowledged by one instance is not
//! read old through another once its invalidation has travelled. Measured
//! with a reader on every instance polling as fast as it is answered while
//! a writer writes through one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use seawall_testkit::wait;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::support::{self, client};

/// What one reader saw of one write.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen {
    /// From the writer's 2xx to the end of the first fresh read that began
    /// after it.
    pub(crate) window: Duration,
    /// Reads that began after a fresh one and still showed the old data.
    pub(crate) stale_after_fresh: u32,
}

/// Due reviews of `user` as `base` answers them: the content ids.
async fn due(client: &reqwest::Client, base: &str, user: i64) -> Vec<i64> {
    let body: Value = client
        .get(format!("{base}/api/review/today?user_id={user}"))
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("JSON");
    body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|item| item["content_id"].as_i64())
        .collect()
}

/// Completes one due review of `user` through `writer` while a reader on
/// every instance of `readers` polls the user's due reviews; returns what
/// each reader saw, or `None` when the user has nothing due. Every reader
/// has the user's list cached before the write.
pub(crate) async fn one_write(writer: &str, readers: &[String], user: i64) -> Option<Vec<Seen>> {
    let client = client();
    let content = *due(&client, writer, user).await.first()?;
    for base in readers {
        assert!(due(&client, base, user).await.contains(&content));
    }
    let (acked, ack) = watch::channel(None::<Instant>);
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = readers
        .iter()
        .map(|base| {
            let (base, mut ack, stop) = (base.clone(), ack.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let client = support::client();
                let mut window = None;
                let mut stale_after_fresh = 0;
                let mut reads_after_fresh = 0;
                while !stop.load(Ordering::Relaxed) {
                    let began = Instant::now();
                    let fresh = !due(&client, &base, user).await.contains(&content);
                    let Some(acked) = *ack.borrow_and_update() else {
                        continue;
                    };
                    if began < acked {
                        continue;
                    }
                    match (fresh, window) {
                        (true, None) => window = Some(acked.elapsed()),
                        (false, Some(_)) => stale_after_fresh += 1,
                        _ => {}
                    }
                    if window.is_some() {
                        reads_after_fresh += 1;
                        if reads_after_fresh > 20 {
                            break;
                        }
                    }
                }
                window.map(|window| Seen {
                    window,
                    stale_after_fresh,
                })
            })
        })
        .collect();
    // The readers are polling the old list when the write lands.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let response = client
        .post(format!("{writer}/api/review/complete"))
        .json(&json!({"user_id": user, "content_id": content, "rating": 4, "duration_ms": 4000}))
        .send()
        .await
        .expect("answers");
    assert!(response.status().is_success(), "{}", response.status());
    acked.send_replace(Some(Instant::now()));
    // The window is a figure (printed), not a bound: a reader gives up only
    // after the patience, while without its invalidation a list would stay
    // in L1 for hours.
    let watchdog = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            tokio::time::sleep(wait::patience()).await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    let mut seen = Vec::new();
    for (task, base) in tasks.into_iter().zip(readers) {
        let reader = task.await.expect("joins");
        seen.push(reader.unwrap_or_else(|| {
            panic!(
                "{base} still read the old list {:?} after the write",
                wait::patience()
            )
        }));
    }
    watchdog.abort();
    drop(ack);
    Some(seen)
}

/// `count` writes through the first of `instances`, each watched by a reader
/// on every instance (users with a review due, in turn): every reader sees
/// every write, and no read that begins after a fresh one is old again.
/// Returns every reader's window.
async fn writes(instances: &[String], count: usize) -> Vec<Duration> {
    let mut windows = Vec::new();
    let mut writes = 0;
    for user in (1..=50).cycle().take(200) {
        let Some(seen) = one_write(&instances[0], instances, user).await else {
            continue;
        };
        for seen in seen {
            assert_eq!(seen.stale_after_fresh, 0, "user {user}: {seen:?}");
            windows.push(seen.window);
        }
        writes += 1;
        if writes == count {
            return windows;
        }
    }
    panic!("the demo dataset has only {writes} reviews due");
}

/// p50, p99 and max of `windows`.
pub(crate) fn percentiles(windows: &mut [Duration]) -> (Duration, Duration, Duration) {
    windows.sort_unstable();
    let at = |q: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let index = ((windows.len() as f64 - 1.0) * q).round() as usize;
        windows[index]
    };
    (at(0.5), at(0.99), at(1.0))
}

/// 40 writes through instance 1, each watched by a reader on every
/// instance: every reader sees every write, and no read that begins after
/// a fresh one is old again. The window's p50, p99 and max are printed
/// (docs/operations.md records them from a release build).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_through_one_instance_is_read_fresh_through_every_instance() {
    // The readers poll far above the per-address limit.
    let fleet = support::start(support::builder().env("SEAWALL_RATELIMIT", "false")).await;
    let instances = fleet.instance_urls();
    let mut windows = writes(&instances, 40).await;
    let (p50, p99, max) = percentiles(&mut windows);
    println!(
        "invalidation window over {} reads: p50 {p50:?}, p99 {p99:?}, max {max:?}",
        windows.len()
    );
    support::stop(fleet).await;
}

async fn cache_stats(fleet: &seawall_testkit::Fleet, base: &str) -> Value {
    support::admin_get(&client(), fleet, &format!("{base}/api/cache")).await
}

/// Waits until `done` holds, for up to [`wait::patience`] (then fails
/// saying `what` it waited for), and says how long that took: a figure to
/// print, not a bound.
async fn until(what: &str, done: impl AsyncFnMut() -> bool) -> Duration {
    let began = Instant::now();
    wait::until_async(what, done).await;
    began.elapsed()
}

/// One instance cut off from Redis (its proxy drops every connection): it
/// reports not ready and HAProxy stops sending to it; read directly, with
/// no degraded TTL (`cache.degraded_ttl = 0s`: its L1 answers nothing while
/// it cannot follow the invalidations), it answers from the database,
/// never its stale L1. Back on Redis, it replays the invalidations it
/// missed (none cleared) before it reports ready, and then reads the write
/// it missed fresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_off_instance_leaves_the_rotation_and_replays_what_it_missed() {
    let fleet = support::start(
        support::builder()
            .redis(seawall_testkit::FleetRedis::Standalone)
            .env("SEAWALL_RATELIMIT", "false")
            .env("SEAWALL_CACHE_DEGRADED_TTL", "0s"),
    )
    .await;
    let client = client();
    let instances = fleet.instance_urls();
    let cut = &instances[1];
    let user = (1..=50)
        .find(|user| fleet_has_due(&fleet, *user))
        .expect("a user with a review due");
    let content = *due(&client, &instances[0], user)
        .await
        .first()
        .expect("due");
    for base in &instances {
        assert!(due(&client, base, user).await.contains(&content));
    }
    let before = cache_stats(&fleet, cut).await;

    fleet.cut_api(2).expect("cuts api-2 off");
    let out = until("HAProxy to take api-2 out of the rotation", async || {
        fleet
            .haproxy()
            .stats()
            .is_ok_and(|states| states.iter().any(|s| s.name == "api-2" && !s.is_up()))
    })
    .await;
    let ready =
        seawall_testkit::http::get(fleet.instance_addrs()[1], "/readyz", &[]).expect("answers");
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(ready.body.contains("cache:invalidations"), "{}", ready.body);

    let response = client
        .post(format!("{}/api/review/complete", instances[0]))
        .json(&json!({"user_id": user, "content_id": content, "rating": 4, "duration_ms": 3000}))
        .send()
        .await
        .expect("answers");
    assert!(response.status().is_success());
    assert!(
        !due(&client, cut, user).await.contains(&content),
        "cut off, api-2 reads the database, not its L1"
    );

    fleet.restore_api(2).expect("restores api-2");
    let back = until("HAProxy to take api-2 back into the rotation", async || {
        fleet
            .haproxy()
            .stats()
            .is_ok_and(|states| states.iter().all(seawall_testkit::ServerState::is_up))
    })
    .await;
    assert!(!due(&client, cut, user).await.contains(&content));
    let after = cache_stats(&fleet, cut).await;
    assert_eq!(
        after["l1_clears"], before["l1_clears"],
        "replayed, not cleared"
    );
    assert!(
        after["invalidations_received"].as_u64() > before["invalidations_received"].as_u64(),
        "{before} {after}"
    );
    println!(
        "cut off: out of HAProxy's rotation after {out:?}; back in {back:?} after the cut ended"
    );
    support::stop(fleet).await;
}

/// Whether `user` has a review due, as instance 1 says.
fn fleet_has_due(fleet: &seawall_testkit::Fleet, user: i64) -> bool {
    let response = seawall_testkit::http::get(
        fleet.instance_addrs()[0],
        &format!("/api/review/today?user_id={user}"),
        &[],
    )
    .expect("answers");
    serde_json::from_str::<Value>(&response.body)
        .ok()
        .and_then(|body| body["count"].as_u64())
        .is_some_and(|count| count > 0)
}

/// The master that holds the invalidation stream killed while a reader on
/// every instance has a user's list cached: a write after the failover is
/// read fresh everywhere, and every instance cleared its L1 (another server
/// holds the stream now) rather than trust a replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_failover_of_the_streams_master_every_instance_reads_fresh() {
    let fleet = support::start(support::builder().env("SEAWALL_RATELIMIT", "false")).await;
    let instances = fleet.instance_urls();
    let before: Vec<Value> =
        futures_util::future::join_all(instances.iter().map(|base| cache_stats(&fleet, base)))
            .await;
    let (fleet, killed) = tokio::task::spawn_blocking(move || {
        let mut fleet = fleet;
        let killed = fleet
            .kill_master_of("seawall:api:cache:inv")
            .expect("kills the stream's master");
        (fleet, killed)
    })
    .await
    .expect("joins");
    until(
        "the fleet to recover: every instance in the rotation, a new master for the stream",
        async || {
            fleet
                .haproxy()
                .stats()
                .is_ok_and(|states| states.iter().all(seawall_testkit::ServerState::is_up))
                && fleet
                    .cluster()
                    .and_then(|cluster| cluster.master_of("seawall:api:cache:inv").ok())
                    .is_some_and(|master| master != killed)
        },
    )
    .await;
    let mut windows = writes(&instances, 10).await;
    let (p50, p99, max) = percentiles(&mut windows);
    for (base, before) in instances.iter().zip(&before) {
        let after = cache_stats(&fleet, base).await;
        assert!(
            after["l1_clears"].as_u64() > before["l1_clears"].as_u64(),
            "{base} cleared its L1: {after}"
        );
    }
    println!(
        "after the failover: every instance cleared its L1; window p50 {p50:?}, p99 {p99:?}, max {max:?}"
    );
    support::stop(fleet).await;
}
