//! Drills: parts of the fleet stopped or killed under load, and what the
//! clients and the jobs saw.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

use seawall_testkit::{FleetRedis, wait};

use crate::support::{self, client};

/// What a steady load saw.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) ok: AtomicU64,
    pub(crate) failed: AtomicU64,
    /// When each failure happened, on which route, and what it was.
    pub(crate) failures: parking_lot::Mutex<Vec<(Instant, &'static str, String)>>,
}

impl Tally {
    /// Failures on `route`.
    pub(crate) fn failed_on(&self, route: &str) -> usize {
        self.failures
            .lock()
            .iter()
            .filter(|(_, r, _)| *r == route)
            .count()
    }
}

/// `clients` loops of requests through `url` until `stop`: reads of the
/// catalogue, of due reviews and of statistics, and review completions.
pub(crate) fn steady_load(
    url: &str,
    clients: usize,
    stop: &Arc<AtomicBool>,
) -> (Arc<Tally>, Vec<tokio::task::JoinHandle<()>>) {
    let tally = Arc::new(Tally::default());
    let tasks = (0..clients)
        .map(|n| {
            let (url, stop, tally) = (url.to_owned(), Arc::clone(stop), Arc::clone(&tally));
            tokio::spawn(async move {
                let client = client();
                let mut i: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let user = 1 + (n as u64 * 7 + i) % 50;
                    let (route, request) = match i % 4 {
                        0 => ("content", client.get(format!("{url}/api/content?page={}", 1 + i % 5))),
                        1 => ("today", client.get(format!("{url}/api/review/today?user_id={user}"))),
                        2 => ("stats", client.get(format!("{url}/api/analytics/stats?user_id={user}"))),
                        _ => ("complete", client.post(format!("{url}/api/review/complete")).json(&json!({
                            "user_id": user, "content_id": 1 + i % 200, "rating": 3, "duration_ms": 1000
                        }))),
                    };
                    let outcome = match request.send().await {
                        // A completion of a review that is not the user's is a
                        // 404 by design; anything 5xx or lost is a failure.
                        Ok(response) if !response.status().is_server_error() => Ok(()),
                        Ok(response) => Err(format!("status {}", response.status())),
                        Err(error) => Err(format!("{error}")),
                    };
                    match outcome {
                        Ok(()) => tally.ok.fetch_add(1, Ordering::Relaxed),
                        Err(failure) => {
                            tally.failures.lock().push((Instant::now(), route, failure));
                            tally.failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    (tally, tasks)
}

/// Each API instance restarted in turn (SIGTERM: readiness fails, HAProxy
/// takes it out, then the listener closes) under a steady load through
/// HAProxy: not one request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_under_load_fails_no_request() {
    let fleet = support::start(support::builder().env("SEAWALL_RATELIMIT", "false")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, tasks) = steady_load(&fleet.url(), 8, &stop);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let began = Instant::now();
    let fleet = tokio::task::spawn_blocking(move || {
        let mut fleet = fleet;
        for n in 1..=3 {
            fleet
                .restart_api(n)
                .unwrap_or_else(|error| panic!("api-{n} restarts: {error}"));
        }
        fleet
    })
    .await
    .expect("joins");
    let took = began.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("joins");
    }
    let (ok, failed) = (
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    println!("rolling restart of 3 instances in {took:?}: {ok} requests answered, {failed} failed");
    assert_eq!(failed, 0, "{:?}", tally.failures.lock());
    assert!(ok > 100, "the load ran: {ok}");
    support::stop(fleet).await;
}

/// A worker SIGKILLed while both work through 1,000 emails: every job is
/// done (0 lost), and the only ones done twice are jobs the killed worker
/// held when it died (a job's `stalls` says so), counted and printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_load_loses_no_job() {
    const JOBS: usize = 1000;
    let fleet = support::start(
        support::builder()
            // A dead worker's jobs are taken over once its leases run out:
            // seconds, but long enough that a renewal a loaded machine holds
            // up does not lose the live worker a job (a second loss sends a
            // job to the dead set).
            .env("SEAWALL_QUEUE_LEASE", "5s"),
    )
    .await;
    let client = client();
    // Sixteen producers at once, so a backlog builds and the workers are
    // busy when one dies, which happens while the producers still produce.
    let producers = {
        let (client, url, token) = (client.clone(), fleet.url(), fleet.token().to_owned());
        tokio::spawn(async move {
            futures_util::stream::iter(0..JOBS)
                .map(|n| {
                    let request = client
                        .post(format!("{url}/api/queue/email"))
                        .bearer_auth(&token)
                        .json(&json!({"user_id": 1 + n % 50, "template": "welcome"}));
                    async move {
                        let body: Value = request
                            .send()
                            .await
                            .expect("answers")
                            .json()
                            .await
                            .expect("JSON");
                        body["id"].as_str().expect("an id").to_owned()
                    }
                })
                .buffer_unordered(16)
                .collect::<Vec<String>>()
                .await
        })
    };
    // Kill worker 1 once the work is under way.
    wait::until_async("the workers to send a tenth of the emails", async || {
        let done = fleet
            .postgres()
            .psql("SELECT COUNT(*) FROM email_outbox")
            .expect("psql");
        done.parse::<usize>().expect("a count") >= JOBS / 10
    })
    .await;
    let fleet = tokio::task::spawn_blocking(move || {
        let mut fleet = fleet;
        let pid = fleet.kill_worker(1).expect("kills worker 1");
        println!("killed worker-1 (pid {pid})");
        fleet
    })
    .await
    .expect("joins");
    let ids = producers.await.expect("joins");
    // Worker 2 finishes, taking over what worker 1 held. However long a
    // loaded machine takes, the wait gives up only once no email has gone
    // out for the whole of the patience.
    let (mut done, mut since) = (String::new(), Instant::now());
    loop {
        let now_done = fleet
            .postgres()
            .psql("SELECT COUNT(DISTINCT job) FROM email_outbox")
            .expect("psql");
        if now_done == JOBS.to_string() {
            break;
        }
        if now_done != done {
            (done, since) = (now_done, Instant::now());
        }
        assert!(
            since.elapsed() < wait::patience(),
            "waited {:?} for the emails, and none went out meanwhile: {done} of {JOBS} jobs done",
            wait::patience()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let repeated: BTreeMap<String, u32> = fleet
        .postgres()
        .psql("SELECT job, COUNT(*) FROM email_outbox GROUP BY job HAVING COUNT(*) > 1")
        .expect("psql")
        .lines()
        .filter_map(|line| line.split_once('|'))
        .map(|(job, count)| (job.to_owned(), count.parse().expect("a count")))
        .collect();
    let mut held = 0;
    for id in &ids {
        let job: Value = support::admin_get(
            &client,
            &fleet,
            &format!("{}/api/queue/email/jobs/{id}", fleet.url()),
        )
        .await;
        let stalls = job["stalls"].as_u64().expect("stalls");
        assert_eq!(job["state"], "completed", "{job}");
        if stalls > 0 {
            held += 1;
        }
        if repeated.contains_key(&format!("email:{id}")) {
            assert!(
                stalls > 0,
                "job {id} ran twice but was never held by the killed worker: {job}"
            );
        }
    }
    println!(
        "worker crash: {JOBS} jobs, 0 lost; {held} held by the killed worker and taken over, {} of them done twice",
        repeated.len()
    );
    assert!(held > 0, "the kill caught jobs in flight");
    support::stop(fleet).await;
}

/// What one failover drill saw: printed whole, some fields asserted on.
#[derive(Debug)]
#[allow(dead_code)] // the fields nobody asserts on are read through Debug
pub(crate) struct Failover {
    pub(crate) requests: u64,
    pub(crate) failed: u64,
    /// From the kill to the last failed request.
    pub(crate) failing_for: Duration,
    pub(crate) failed_on_cached_routes: usize,
    pub(crate) promoted_after: Duration,
    /// When the killed node was running again (as a replica).
    pub(crate) restarted_after: Duration,
    pub(crate) healthy_after: Duration,
    pub(crate) degraded_decisions: f64,
    pub(crate) acknowledged: usize,
    pub(crate) lost: usize,
    pub(crate) refused_enqueues: u64,
}

/// Sums a counter family over every instance's `/metrics`.
async fn counter(instances: &[String], family: &str) -> f64 {
    let client = client();
    let mut total = 0.0;
    for base in instances {
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("answers")
            .text()
            .await
            .expect("text");
        total += text
            .lines()
            .filter(|line| line.starts_with(family))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    total
}

/// Kills the master holding the email queue while requests and enqueues
/// run through HAProxy, and measures what everyone saw. With
/// `wait_replicas`, every enqueue is answered only once the replica has it.
pub(crate) async fn master_failover(redis: FleetRedis, wait_replicas: u32) -> Failover {
    let fleet = support::start(
        support::builder()
            .redis(redis)
            .env("SEAWALL_RATELIMIT_DDOS", "1000000/1s")
            .env("SEAWALL_QUEUE_WAIT_REPLICAS", wait_replicas.to_string())
            .env("SEAWALL_QUEUE_WAIT_TIMEOUT", "500ms"),
    )
    .await;
    let instances = fleet.instance_urls();
    let degraded_before = counter(&instances, "ratelimit_degraded_decisions_total").await;
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, load) = steady_load(&fleet.url(), 6, &stop);
    // Producers: each enqueue carries an idempotency key and is retried
    // until it is acknowledged.
    let refused = Arc::new(AtomicU64::new(0));
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let (url, token, stop, refused) = (
                fleet.url(),
                fleet.token().to_owned(),
                Arc::clone(&stop),
                Arc::clone(&refused),
            );
            tokio::spawn(async move {
                let client = client();
                let mut acked = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let key = format!("drill-{p}-{n}");
                    let began = Instant::now();
                    loop {
                        let answer = client
                            .post(format!("{url}/api/queue/email"))
                            .bearer_auth(&token)
                            .header("idempotency-key", &key)
                            .json(&json!({"user_id": 1 + n % 50, "template": "welcome"}))
                            .send()
                            .await;
                        if let Ok(response) = answer
                            && response.status() == 202
                        {
                            let body: Value = response.json().await.expect("JSON");
                            acked.push(body["id"].as_str().expect("an id").to_owned());
                            break;
                        }
                        refused.fetch_add(1, Ordering::Relaxed);
                        assert!(
                            began.elapsed() < wait::patience(),
                            "waited {:?} for {key} to be acknowledged",
                            wait::patience()
                        );
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                acked
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let killed_at = Instant::now();
    let (fleet, killed) = tokio::task::spawn_blocking(move || {
        let mut fleet = fleet;
        let killed = match redis {
            FleetRedis::Cluster => fleet.kill_master_of("{email}"),
            _ => fleet.kill_master(),
        }
        .expect("kills the master");
        (fleet, killed)
    })
    .await
    .expect("joins");
    let promoted_after = loop {
        let promoted = match (fleet.cluster(), fleet.sentinel()) {
            (Some(cluster), _) => cluster
                .master_of("{email}")
                .is_ok_and(|master| master != killed),
            (_, Some(sentinel)) => sentinel
                .wait_for_new_primary(killed, Duration::ZERO)
                .is_ok(),
            _ => unreachable!("a failover drill runs on a Cluster or under Sentinel"),
        };
        if promoted {
            break killed_at.elapsed();
        }
        // How long the promotion takes is a figure (printed), not a bound.
        assert!(
            killed_at.elapsed() < wait::patience(),
            "waited {:?} for a replica to take over from {killed}",
            wait::patience()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // As an orchestrator would, start the dead node again: it rejoins as
    // the new master's replica (enqueues that wait for a replica need one).
    let fleet = tokio::task::spawn_blocking(move || {
        let mut fleet = fleet;
        fleet
            .restart_redis(killed)
            .expect("the killed node starts again");
        fleet
    })
    .await
    .expect("joins");
    let restarted_after = killed_at.elapsed();
    let healthy_after = loop {
        let mut ready = 0;
        for addr in fleet.instance_addrs() {
            if seawall_testkit::http::get(addr, "/readyz", &[]).is_ok_and(|r| r.status == 200) {
                ready += 1;
            }
        }
        let up = fleet
            .haproxy()
            .stats()
            .is_ok_and(|states| states.iter().all(seawall_testkit::ServerState::is_up));
        if ready == instances.len() && up {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < wait::patience(),
            "waited {:?} for the fleet to be healthy again ({ready} of {} instances ready, \
             every one in HAProxy's rotation: {up})",
            wait::patience(),
            instances.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("joins");
    }
    let mut acknowledged = Vec::new();
    for producer in producers {
        acknowledged.extend(producer.await.expect("joins"));
    }

    // Every acknowledged job runs, unless the failover lost it: once the
    // email queue has nothing left to run, a job not done was lost.
    let client = client();
    let began = Instant::now();
    let lost = loop {
        let idle = support::queues_idle(&client, &fleet, &["email"]).await;
        let done: std::collections::HashSet<String> = fleet
            .postgres()
            .psql("SELECT DISTINCT job FROM email_outbox")
            .expect("psql")
            .lines()
            .map(str::to_owned)
            .collect();
        let lost = acknowledged
            .iter()
            .filter(|id| !done.contains(&format!("email:{id}")))
            .count();
        if lost == 0 || idle {
            break lost;
        }
        assert!(
            began.elapsed() < wait::patience(),
            "waited {:?} for the email queue to run every acknowledged job: {lost} of {} \
             not done",
            wait::patience(),
            acknowledged.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let failures = tally.failures.lock().clone();
    let failover = Failover {
        requests: tally.ok.load(Ordering::Relaxed) + tally.failed.load(Ordering::Relaxed),
        failed: tally.failed.load(Ordering::Relaxed),
        failing_for: failures
            .iter()
            .map(|(at, _, _)| at.saturating_duration_since(killed_at))
            .max()
            .unwrap_or_default(),
        failed_on_cached_routes: ["content", "today", "stats"]
            .iter()
            .map(|route| tally.failed_on(route))
            .sum(),
        promoted_after,
        restarted_after,
        healthy_after,
        degraded_decisions: counter(&instances, "ratelimit_degraded_decisions_total").await
            - degraded_before,
        acknowledged: acknowledged.len(),
        lost,
        refused_enqueues: refused.load(Ordering::Relaxed),
    };
    println!("master failover ({redis:?}, wait_replicas {wait_replicas}): {failover:#?}");
    if failover.failed > 0 {
        println!("failures: {:?}", &failures[..failures.len().min(20)]);
    }
    support::stop(fleet).await;
    failover
}

/// A master killed under API traffic and enqueues, once with enqueues that
/// wait for the replica and once without (each `SEAWALL_DRILL_REPEATS`
/// times, default once): with the wait no acknowledged job is ever lost;
/// without it the lost ones are counted. Either way no request fails, the
/// cached routes answer throughout, and the fleet is healthy again after the
/// promotion.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_master_loses_no_replicated_job_and_no_request() {
    let repeats: usize = std::env::var("SEAWALL_DRILL_REPEATS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    for wait_replicas in [1, 0] {
        let (mut acknowledged, mut lost) = (0, 0);
        for _ in 0..repeats {
            let failover = master_failover(FleetRedis::Cluster, wait_replicas).await;
            assert_eq!(failover.failed, 0, "{failover:#?}");
            assert!(failover.acknowledged > 50, "{failover:#?}");
            if wait_replicas > 0 {
                assert_eq!(failover.lost, 0, "{failover:#?}");
            }
            acknowledged += failover.acknowledged;
            lost += failover.lost;
        }
        println!(
            "wait_replicas {wait_replicas}: {repeats} failovers, {acknowledged} enqueues acknowledged, {lost} lost"
        );
    }
}

/// The same drill under Sentinel (a primary, its replica, three Sentinels):
/// the API and the worker follow the promoted replica, no request fails,
/// and no acknowledged enqueue is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_sentinel_a_killed_primary_loses_no_replicated_job_and_no_request() {
    let failover = master_failover(FleetRedis::Sentinel, 1).await;
    assert_eq!(failover.failed, 0, "{failover:#?}");
    assert_eq!(failover.lost, 0, "{failover:#?}");
    assert!(failover.acknowledged > 50, "{failover:#?}");
}
