//! Drills: parts of the fleet stopped or killed under load, and what the
//! clients and the jobs saw.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::support::{self, client};

/// What a steady load saw.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) ok: AtomicU64,
    pub(crate) failed: AtomicU64,
    /// When each failure happened (since the load began) and what it was.
    pub(crate) failures: parking_lot::Mutex<Vec<(Duration, String)>>,
}

/// `clients` loops of requests through `url` until `stop`: reads of the
/// catalogue, of due reviews and of statistics, and review completions.
pub(crate) fn steady_load(
    url: &str,
    clients: usize,
    stop: &Arc<AtomicBool>,
) -> (Arc<Tally>, Vec<tokio::task::JoinHandle<()>>) {
    let tally = Arc::new(Tally::default());
    let began = Instant::now();
    let tasks = (0..clients)
        .map(|n| {
            let (url, stop, tally) = (url.to_owned(), Arc::clone(stop), Arc::clone(&tally));
            tokio::spawn(async move {
                let client = client();
                let mut i: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let user = 1 + (n as u64 * 7 + i) % 50;
                    let request = match i % 4 {
                        0 => client.get(format!("{url}/api/content?page={}", 1 + i % 5)),
                        1 => client.get(format!("{url}/api/review/today?user_id={user}")),
                        2 => client.get(format!("{url}/api/analytics/stats?user_id={user}")),
                        _ => client.post(format!("{url}/api/review/complete")).json(&json!({
                            "user_id": user, "content_id": 1 + i % 200, "rating": 3, "duration_ms": 1000
                        })),
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
                            tally.failures.lock().push((began.elapsed(), failure));
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
            // A dead worker's jobs are taken over once its leases run out.
            .env("SEAWALL_QUEUE_LEASE", "2s"),
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
    let started = Instant::now();
    loop {
        let done = fleet
            .postgres()
            .psql("SELECT COUNT(*) FROM email_outbox")
            .expect("psql");
        if done.parse::<usize>().expect("a count") >= JOBS / 10 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the workers do not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fleet = tokio::task::spawn_blocking(move || {
        let mut fleet = fleet;
        let pid = fleet.kill_worker(1).expect("kills worker 1");
        println!("killed worker-1 (pid {pid})");
        fleet
    })
    .await
    .expect("joins");
    let ids = producers.await.expect("joins");
    // Worker 2 finishes, taking over what worker 1 held.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = fleet
            .postgres()
            .psql("SELECT COUNT(DISTINCT job) FROM email_outbox")
            .expect("psql");
        if done == JOBS.to_string() {
            break;
        }
        assert!(Instant::now() < deadline, "{done} of {JOBS} jobs done");
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
        let job: Value = client
            .get(format!("{}/api/queue/email/jobs/{id}", fleet.url()))
            .bearer_auth(fleet.token())
            .send()
            .await
            .expect("answers")
            .json()
            .await
            .expect("JSON");
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
