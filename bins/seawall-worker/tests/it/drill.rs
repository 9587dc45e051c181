//! A drill of what production meets: a producer enqueues notifications over
//! HTTP one by one, each with an `Idempotency-Key` of its own, and retries
//! on 503, connection errors and timeouts until it gets a 202; meanwhile a
//! random worker process is killed with SIGKILL every 2 to 4 s and replaced,
//! and once, midway, the queues' Redis (AOF, `appendfsync always`) is killed
//! and restarted on its AOF.
//!
//! Afterwards no job may be lost (every key has one job, and it completed),
//! none enqueued twice (no second job for a key, no row written by a job
//! outside the set), and a job may have run more than once only if a killed
//! worker held it or Redis went away while it ran.
//!
//! Before each kill the database is locked for writing for a moment, so the
//! jobs the victim takes meanwhile wait mid-write and are lost with it. A
//! job lost twice goes to the dead set by design (`max_stalls`, a guard
//! against jobs that crash their worker), so a kill is put off while a job
//! that was lost once is running. The random choices come from a seed
//! printed at the start; `SEAWALL_DRILL_SEED` replays one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use seawall_app::config::QueuePolicy;
use seawall_testkit::{Persistence, RedisServer, wait};
use serde_json::{Value, json};
use sqlx::{AnyConnection, Connection as _, Executor as _};

use crate::support::{ServedApi, TOKEN, Worker, shared_config, until, worker};

/// Logical jobs, each enqueued under its own key.
const JOBS: usize = 300;
/// The pause between two enqueues, which spreads them over the drill.
const PACE: Duration = Duration::from_millis(100);
/// Learners in `shared_config`'s demo dataset.
const USERS: usize = 5;
/// Renewed every third of it: a renewal held up on a loaded machine for a
/// second or two must not lose a live worker its job (that would be a run
/// no kill explains), and a killed worker's jobs still come back within
/// seconds.
const LEASE: Duration = Duration::from_secs(5);
/// How long one enqueue request may take before the producer gives up on
/// it and sends it again. Shorter than an outage: the API holds an enqueue
/// while its Redis client reconnects, and the request given up on may
/// still enqueue the job once Redis is back.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
const RETRY_AFTER: Duration = Duration::from_millis(200);
/// How long the database stays locked before a worker is killed.
const LOCKED: Duration = Duration::from_millis(800);

/// xorshift64*: enough randomness to pick victims and delays, replayable
/// from its seed.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = std::env::var("SEAWALL_DRILL_SEED")
            .ok()
            .and_then(|seed| seed.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(1, |since| since.subsec_nanos().into())
            });
        eprintln!("drill seed: {seed} (SEAWALL_DRILL_SEED={seed} replays it)");
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next() % bound as u64).expect("below a usize")
    }

    fn between(&mut self, low: Duration, high: Duration) -> Duration {
        let span = u64::try_from((high - low).as_millis()).expect("a short span");
        low + Duration::from_millis(self.next() % (span + 1))
    }
}

/// What the producer got for one key.
#[derive(Debug)]
struct Enqueued {
    id: String,
    /// Requests sent for it, the one answered 202 included.
    requests: u32,
    /// From the first request to the 202.
    took: Duration,
}

fn key(n: usize) -> String {
    format!("drill-{n}")
}

fn body(n: usize) -> Value {
    json!({"user_id": 1 + n % USERS, "channel": "in_app", "message": format!("drill {n}")})
}

/// Sends the enqueue of logical job `n` until it is answered 202, with the
/// same key every time, for up to [`wait::patience`].
async fn enqueue(client: &reqwest::Client, base: &str, n: usize) -> Enqueued {
    let first = Instant::now();
    let mut requests = 0;
    loop {
        requests += 1;
        let sent = client
            .post(format!("{base}/api/queue/notification"))
            .bearer_auth(TOKEN)
            .header("idempotency-key", key(n))
            .json(&body(n))
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await;
        let last = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                match (status, response.json::<Value>().await) {
                    (202, Ok(reply)) => {
                        let id = reply["id"].as_str().expect("an id").to_owned();
                        let took = first.elapsed();
                        return Enqueued { id, requests, took };
                    }
                    (503, Ok(reply)) => format!("503 {reply}"),
                    (_, Err(error)) => format!("{status}, body lost: {error}"),
                    (_, Ok(reply)) => panic!("enqueue {}: {status} {reply}", key(n)),
                }
            }
            Err(error) => error.to_string(),
        };
        assert!(
            first.elapsed() < wait::patience(),
            "waited {:?} for {} to be enqueued: {requests} requests, the last: {last}",
            wait::patience(),
            key(n)
        );
        tokio::time::sleep(RETRY_AFTER).await;
    }
}

/// The JSON an admin GET of `url` answers.
async fn admin_json(client: &reqwest::Client, url: &str) -> Value {
    client
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("the API answers")
        .json()
        .await
        .expect("JSON")
}

/// The notification jobs running now: each one's id and stalls.
async fn active(client: &reqwest::Client, base: &str) -> Vec<(String, u64)> {
    let url = format!("{base}/api/queue/notification/jobs?state=active&limit=200");
    let reply = admin_json(client, &url).await;
    reply["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("a job list: {reply}"))
        .iter()
        .map(|job| {
            let id = job["id"].as_str().expect("an id").to_owned();
            (id, job["stalls"].as_u64().expect("stalls"))
        })
        .collect()
}

/// Whether one of `running` was lost before: losing it again would send it
/// to the dead set, which is what `max_stalls` is for, not what this drill
/// is about.
fn lost_before(running: &[(String, u64)]) -> bool {
    running.iter().any(|(_, stalls)| *stalls > 0)
}

/// The body of `url`, for assertion messages.
async fn text(client: &reqwest::Client, url: &str) -> String {
    match client.get(url).bearer_auth(TOKEN).send().await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(error) => error.to_string(),
    }
}

/// The notification queue's row of the overview.
async fn notification_row(client: &reqwest::Client, base: &str) -> Value {
    let overview = admin_json(client, &format!("{base}/api/queue")).await;
    overview["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .find(|row| row["name"] == "notification")
        .expect("the notification row")
        .clone()
}

fn count(row: &Value, state: &str) -> u64 {
    row[state].as_u64().unwrap_or(0)
}

/// Sleeps `duration` in steps, returning early once `done` holds.
async fn sleep_unless(duration: Duration, done: impl Fn() -> bool) {
    let until = Instant::now() + duration;
    while Instant::now() < until && !done() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn start_worker(config: &seawall_app::Config) -> Worker {
    tokio::task::block_in_place(|| Worker::start(worker(config)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_job_is_lost_or_doubled_through_killed_workers_and_a_killed_redis() {
    let started = Instant::now();
    let mut rng = Rng::new();
    let mut redis = RedisServer::builder()
        .persistence(Persistence::AofAlways)
        .start()
        .expect("redis-server starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = shared_config(dir.path(), &redis.url());
    config.queue.lease = LEASE;
    config.queue.notification =
        QueuePolicy::parse_over(config.queue.notification, "attempts=5 backoff=fixed:200ms")
            .expect("a valid policy");

    // The API first: it writes the demo dataset the jobs read.
    let served = ServedApi::start(&config).await;
    let base = served.base.clone();
    let client = reqwest::Client::new();
    until(&client, &format!("{base}/api/queue"), |status, _| {
        status == 200
    })
    .await;
    sqlx::any::install_default_drivers();
    let mut db = AnyConnection::connect(&config.database.url)
        .await
        .expect("connects to the database");
    let mut workers = vec![start_worker(&config), start_worker(&config)];

    let sent = Arc::new(AtomicUsize::new(0));
    let producer = tokio::spawn({
        let (client, base, sent) = (client.clone(), base.clone(), Arc::clone(&sent));
        async move {
            let mut enqueued = Vec::with_capacity(JOBS);
            for n in 0..JOBS {
                enqueued.push(enqueue(&client, &base, n).await);
                sent.store(n + 1, Ordering::Relaxed);
                tokio::time::sleep(PACE).await;
            }
            enqueued
        }
    });

    // Jobs that may have been lost with a worker or an outage: whatever was
    // running when a worker froze for its kill, or when Redis was killed.
    let mut suspects: BTreeSet<String> = BTreeSet::new();
    // The jobs running when Redis was killed: a run whose lease no renewal
    // reached in time is stopped and its job given back once Redis answers,
    // with no stall and no failure counted.
    let mut at_outage: BTreeSet<String> = BTreeSet::new();
    let mut kills = 0;
    let mut put_off = 0;
    let mut outage: Option<Duration> = None;
    while !producer.is_finished() {
        let pause = rng.between(Duration::from_secs(2), Duration::from_secs(4));
        sleep_unless(pause.saturating_sub(LOCKED), || producer.is_finished()).await;
        if producer.is_finished() {
            break;
        }
        if outage.is_none() && sent.load(Ordering::Relaxed) >= JOBS / 2 {
            // Frozen, the workers take nothing between the listing and the kill.
            for worker in &workers {
                worker.freeze();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            let running = active(&client, &base).await;
            if lost_before(&running) {
                for worker in &workers {
                    worker.thaw();
                }
                put_off += 1;
                continue;
            }
            at_outage.extend(running.iter().map(|(id, _)| id.clone()));
            suspects.extend(running.into_iter().map(|(id, _)| id));
            redis.kill().expect("kills Redis");
            for worker in &workers {
                worker.thaw();
            }
            let down = rng.between(Duration::from_secs(1), Duration::from_secs(3));
            tokio::time::sleep(down).await;
            tokio::task::block_in_place(|| redis.restart())
                .unwrap_or_else(|error| panic!("Redis restarts on its AOF: {error}"));
            outage = Some(down);
            continue;
        }
        db.execute("BEGIN IMMEDIATE")
            .await
            .expect("locks the database");
        tokio::time::sleep(LOCKED).await;
        let victim = rng.below(workers.len());
        workers[victim].freeze();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let running = active(&client, &base).await;
        if lost_before(&running) {
            workers[victim].thaw();
            db.execute("ROLLBACK").await.expect("unlocks the database");
            put_off += 1;
            continue;
        }
        suspects.extend(running.into_iter().map(|(id, _)| id));
        let victim = workers.swap_remove(victim);
        tokio::task::block_in_place(|| victim.crash());
        db.execute("ROLLBACK").await.expect("unlocks the database");
        kills += 1;
        workers.push(start_worker(&config));
    }
    let enqueued = producer.await.expect("the producer finishes");
    let outage = outage.expect("Redis was killed midway");
    assert!(
        kills >= 5,
        "only {kills} workers were killed ({put_off} kills put off)"
    );

    // The jobs lost with the killed workers come back as their leases run
    // out. However long a loaded machine takes over them, the wait gives up
    // only once no job has finished for the whole of the patience.
    let (mut finished, mut since) = (0, Instant::now());
    let row = loop {
        let row = notification_row(&client, &base).await;
        let unfinished = count(&row, "waiting") + count(&row, "delayed") + count(&row, "active");
        let now_finished = count(&row, "completed") + count(&row, "dead");
        if unfinished == 0 && now_finished >= JOBS as u64 {
            break row;
        }
        if now_finished != finished {
            (finished, since) = (now_finished, Instant::now());
        }
        assert!(
            since.elapsed() < wait::patience(),
            "waited {:?} for the jobs to finish, and none did meanwhile: {row}",
            wait::patience()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if count(&row, "dead") > 0 {
        let dead = text(
            &client,
            &format!("{base}/api/queue/notification/jobs?state=dead"),
        )
        .await;
        panic!("no job may die: {row}\n{dead}\nsuspects: {suspects:?}");
    }
    assert_eq!(
        count(&row, "completed"),
        JOBS as u64,
        "one job per key, no more: {row}"
    );

    // One job per key: distinct ids, and a key sent once more answers its job.
    let ids: BTreeSet<&str> = enqueued.iter().map(|job| job.id.as_str()).collect();
    assert_eq!(ids.len(), JOBS, "two keys answered the same job");
    for (n, job) in enqueued.iter().enumerate() {
        let again = enqueue(&client, &base, n).await;
        assert_eq!(again.id, job.id, "{} answered another job", key(n));
    }
    let row = notification_row(&client, &base).await;
    assert_eq!(
        (count(&row, "waiting"), count(&row, "completed")),
        (0, JOBS as u64),
        "the keys sent again enqueued nothing: {row}"
    );

    // Every job completed; one that ran more than once was lost on the way.
    let mut runs: BTreeMap<&str, u64> = BTreeMap::new();
    let mut stalled = 0;
    for job in &enqueued {
        let url = format!("{base}/api/queue/notification/jobs/{}", job.id);
        let view = admin_json(&client, &url).await;
        assert_eq!(view["state"], "completed", "{view}");
        let ran = view["runs"].as_u64().expect("runs");
        let stalls = view["stalls"].as_u64().expect("stalls");
        if stalls > 0 {
            stalled += 1;
        }
        if ran > 1 {
            let redis_failure = view["errors"].as_array().is_some_and(|errors| {
                errors.iter().any(|error| {
                    error["error"]
                        .as_str()
                        .is_some_and(|text| text.to_ascii_lowercase().contains("redis"))
                })
            });
            assert!(
                stalls >= 1 || redis_failure || at_outage.contains(&job.id),
                "a job ran {ran} times without being lost: {view}"
            );
            assert!(
                suspects.contains(&job.id),
                "a job that was running at no kill ran {ran} times: {view}"
            );
        }
        runs.insert(&job.id, ran);
    }
    assert!(stalled > 0, "no kill caught a running job");

    // The rows the jobs wrote: each names its job, which is the one of its key.
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT job, message, COUNT(*) FROM notification_deliveries GROUP BY job, message",
    )
    .fetch_all(&mut db)
    .await
    .expect("reads the deliveries");
    let mut written = vec![0_i64; JOBS];
    for (job, message, times) in &rows {
        let n: usize = message
            .strip_prefix("drill ")
            .and_then(|n| n.parse().ok())
            .filter(|n| *n < JOBS)
            .unwrap_or_else(|| panic!("a row of no drill job: {job} {message:?}"));
        let id = &enqueued[n].id;
        assert_eq!(
            job,
            &format!("notification:{id}"),
            "{} has a second job",
            key(n)
        );
        written[n] += times;
        if *times > 1 {
            assert!(
                suspects.contains(id) && runs.get(id.as_str()) > Some(&1),
                "{job} wrote {times} rows without having been lost"
            );
        }
    }
    let missing: Vec<String> = (0..JOBS).filter(|n| written[*n] == 0).map(key).collect();
    assert!(missing.is_empty(), "completed without a row: {missing:?}");

    let retried: u32 = enqueued.iter().map(|job| job.requests - 1).sum();
    let slowest = enqueued
        .iter()
        .map(|job| job.took)
        .max()
        .unwrap_or_default();
    eprintln!(
        "{JOBS} jobs in {:?}: {kills} workers killed ({put_off} kills put off), Redis down {outage:?}, {retried} enqueue \
         requests retried, the slowest enqueue {slowest:?}, {stalled} jobs lost by a worker, \
         {} ran again, {} wrote twice",
        started.elapsed(),
        runs.values().filter(|ran| **ran > 1).count(),
        written.iter().filter(|times| **times > 1).count(),
    );
    assert!(
        retried > 0,
        "no enqueue was retried: the outage missed them"
    );

    for worker in workers {
        let (status, log) = tokio::task::block_in_place(|| worker.terminate());
        assert_eq!(status, 0, "{}", log.join("\n"));
    }
    served.stop().await;
}
