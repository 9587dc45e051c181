//! The queue at its edges, each scenario from a defect that once broke its
//! promise (no job lost, none run twice by accident): a worker handed back
//! its own lost job, errors and payloads without a size limit, a bad id, a
//! group left behind, a progress report during an outage, a handler that
//! outlived its timeout, retention that waited for a completion, a warning
//! that meant nothing, an evicting Cluster node the check did not ask.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use seawall_queue::{Backoff, Job, JobError, JobId, JobOptions, JobState, Queues, Settings};
use seawall_testkit::{Conn, Proxy, RedisCluster, RedisServer, wait};

use crate::support::{builder, unique_prefix};

async fn queues(url: &str, prefix: &str, settings: Settings) -> Queues {
    Queues::redis(builder(url))
        .prefix(prefix)
        .settings(settings)
        .connect()
        .await
        .expect("connects")
}

/// The leases held in `queue` under `prefix`, as the server records them:
/// each run's member of the active set (its job id and lease token) and
/// the deadline (server milliseconds).
fn leases_held(conn: &mut Conn, prefix: &str, queue: &str) -> Vec<(String, f64)> {
    let key = format!("{prefix}:{{{queue}}}:active");
    let reply = conn
        .cmd(&["ZRANGE", &key, "0", "-1", "WITHSCORES"])
        .expect("ZRANGE");
    reply
        .as_array()
        .expect("an array")
        .chunks(2)
        .map(|pair| {
            let member = pair[0].as_str().expect("a member").to_owned();
            let deadline = pair[1]
                .as_str()
                .and_then(|score| score.parse().ok())
                .expect("a deadline");
            (member, deadline)
        })
        .collect()
}

/// A worker cut off from Redis while its lease ran out gets the job back
/// from its own fetch once it reconnects: the first run is cancelled (its
/// lease is provably gone), the second is still renewed once the first
/// run's result was refused, and completes, and the job is not
/// dead-lettered for a stall it did not have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_handed_back_its_own_lost_job_cancels_the_old_run() {
    let redis = RedisServer::shared();
    let proxy = Proxy::start(redis.addr()).expect("a proxy");
    let prefix = unique_prefix();
    let direct = queues(&redis.url(), &prefix, Settings::default()).await;
    let through = queues(&proxy.url(), &prefix, Settings::default()).await;
    let mut conn = redis.connect().expect("connects");
    // Far longer than a renewal held up on a loaded machine: the first
    // lease is ended on the server below rather than waited out, and the
    // second run waits for a renewal rather than outliving its lease.
    let lease = Duration::from_secs(15);
    let id = direct
        .enqueue("export", &1_u64, &JobOptions::new())
        .await
        .expect("enqueues");

    let first_cancelled = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(AtomicU32::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    let (cancelled, counted, second_ends) = (
        Arc::clone(&first_cancelled),
        Arc::clone(&runs),
        Arc::clone(&release),
    );
    let worker = through
        .worker("export")
        .and_then(|worker| worker.concurrency(2))
        .and_then(|worker| worker.lease(lease))
        .expect("valid")
        .start(move |job: Job<u64>| {
            let (cancelled, counted, second_ends) = (
                Arc::clone(&cancelled),
                Arc::clone(&counted),
                Arc::clone(&second_ends),
            );
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                if job.run() == 1 {
                    job.cancellation().cancelled().await;
                    cancelled.store(true, Ordering::SeqCst);
                } else {
                    second_ends.notified().await;
                }
                Ok::<_, JobError>(())
            }
        });
    wait::until_async("the first run to start", async || {
        runs.load(Ordering::SeqCst) == 1
    })
    .await;
    proxy.cut();
    // The lease runs out on the server while the worker cannot renew it
    // (its deadline set in the past, as if the cut had lasted longer than
    // the lease), and any caller's upkeep recovers the job.
    let active = format!("{prefix}:{{export}}:active");
    wait::until_async("the lapsed lease to be recovered", async || {
        for (member, _) in leases_held(&mut conn, &prefix, "export") {
            conn.cmd(&["ZADD", &active, "XX", "0", &member])
                .expect("ZADD");
        }
        let counts = direct.counts("export").await.expect("counts");
        (counts.waiting, counts.active) == (1, 0)
    })
    .await;
    proxy.restore();

    wait::until_async("the worker to take its job back", async || {
        runs.load(Ordering::SeqCst) == 2
    })
    .await;
    wait::until_async("the first run to hear of its lost lease", async || {
        first_cancelled.load(Ordering::SeqCst)
    })
    .await;
    wait::until_async("the first run's result to be refused", async || {
        worker.stats().discarded == 1
    })
    .await;
    // The first run's end leaves the second run's lease to be renewed.
    let held = leases_held(&mut conn, &prefix, "export");
    let [(second, deadline)] = held.as_slice() else {
        panic!("the second run's lease alone is held: {held:?}");
    };
    let began = Instant::now();
    loop {
        let held = leases_held(&mut conn, &prefix, "export");
        match held.as_slice() {
            [(member, renewed)] if member == second && renewed > deadline => break,
            [(member, _)] if member == second => {}
            _ => panic!("the second run's lease is no longer held: {held:?}"),
        }
        assert!(
            began.elapsed() < wait::patience(),
            "waited {:?} for a renewal of the second run's lease (deadline {deadline})",
            wait::patience()
        );
        tokio::time::sleep(wait::POLL).await;
    }
    release.notify_one();

    let job = wait::until_some_async("the job to complete or die", async || {
        direct
            .job("export", &id)
            .await
            .expect("reads")
            .filter(|job| matches!(job.state, JobState::Completed | JobState::Dead))
    })
    .await;
    let stats = worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(job.state, JobState::Completed, "{job:?} {stats:?}");
    assert_eq!((job.runs, job.stalls), (2, 1), "{job:?} {stats:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(
        (stats.completed, stats.discarded, stats.dead),
        (1, 1, 0),
        "{stats:?}"
    );
}

/// A huge error over many attempts keeps a bounded record: each message is
/// cut to 4 KiB in the history, the record and the events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_cut_to_a_few_kibibytes() {
    let redis = RedisServer::shared();
    let prefix = unique_prefix();
    let queues = queues(&redis.url(), &prefix, Settings::default()).await;
    let options = JobOptions::new()
        .attempts(12)
        .and_then(|options| options.backoff(Backoff::fixed(Duration::ZERO)))
        .expect("valid");
    let id = queues
        .enqueue("report", &1_u64, &options)
        .await
        .expect("enqueues");
    let worker = queues
        .worker("report")
        .expect("valid")
        .start(|_: Job<u64>| async { Err::<(), _>(JobError::new("é".repeat(500_000))) });
    wait::until_async("the job to die after its attempts", async || {
        queues.counts("report").await.expect("counts").dead == 1
    })
    .await;
    worker.shutdown(Duration::from_secs(5)).await;
    let job = queues
        .job("report", &id)
        .await
        .expect("reads")
        .expect("kept");
    assert_eq!(job.errors.len(), 10);
    assert!(job.errors.iter().all(|error| error.error.len() <= 4096));
    assert!(job.errors[0].error.ends_with('…'));
    let key = format!("{prefix}:{{report}}:j:{id}");
    let mut conn = redis.connect().expect("connects");
    let bytes = conn
        .cmd(&["MEMORY", "USAGE", &key, "SAMPLES", "0"])
        .expect("MEMORY");
    assert!(
        bytes.as_int().is_some_and(|bytes| bytes < 128 * 1024),
        "the job record takes {bytes:?} bytes"
    );
    let events = queues.events("report", None, 1_000).await.expect("reads");
    assert!(
        events
            .iter()
            .all(|event| event.fields.iter().all(|(_, value)| value.len() <= 4096))
    );
}

/// A bulk of large payloads goes in several round trips of at most 16 MiB,
/// each whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_of_large_payloads_is_split_by_size() {
    let redis = RedisServer::shared();
    let queues = queues(&redis.url(), &unique_prefix(), Settings::default()).await;
    let big = "x".repeat(7 << 20);
    let ids = queues
        .enqueue_many("import", (0..5).map(|_| (big.clone(), JobOptions::new())))
        .await
        .expect("enqueues");
    assert_eq!(ids.len(), 5);
    // Two 7 MiB payloads fit in 16 MiB, a third does not. The jobs of one
    // enqueue call share one event entry (the round trips also count the
    // enqueue's reads of the process list).
    let calls: std::collections::BTreeSet<String> = queues
        .events("import", None, 100)
        .await
        .expect("reads events")
        .into_iter()
        .filter(|event| event.kind == "enqueued")
        .map(|event| event.position)
        .collect();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(queues.counts("import").await.expect("counts").waiting, 5);
}

/// An id that cannot name a job names none: retrying it retries nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_an_empty_id_retries_nothing() {
    let redis = RedisServer::shared();
    let queues = queues(&redis.url(), &unique_prefix(), Settings::default()).await;
    let options = JobOptions::new().attempts(1).expect("valid");
    queues
        .enqueue("email", &1_u64, &options)
        .await
        .expect("enqueues");
    let worker = queues
        .worker("email")
        .expect("valid")
        .start(|_: Job<u64>| async { Err::<(), _>(JobError::permanent("no")) });
    wait::until_async("the refused job to die", async || {
        queues.counts("email").await.expect("counts").dead == 1
    })
    .await;
    worker.shutdown(Duration::from_secs(5)).await;
    for id in ["", "1 OR 1", "-1"] {
        assert!(
            !queues
                .retry_dead("email", &JobId::from(id))
                .await
                .expect("answers")
        );
        assert!(
            queues
                .job("email", &JobId::from(id))
                .await
                .expect("answers")
                .is_none()
        );
    }
    assert_eq!(queues.counts("email").await.expect("counts").dead, 1);
}

/// A group whose waiting jobs were all cancelled while it was at its cap
/// leaves the set of groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_capped_groups_last_waiting_job_forgets_the_group() {
    let redis = RedisServer::shared();
    let prefix = unique_prefix();
    let queues = queues(&redis.url(), &prefix, Settings::default()).await;
    queues
        .set_group_limit("email", Some(1))
        .await
        .expect("caps");
    let options = JobOptions::new().group("tenant-7").expect("valid");
    queues
        .enqueue("email", &1_u64, &options)
        .await
        .expect("enqueues");
    let second = queues
        .enqueue("email", &2_u64, &options)
        .await
        .expect("enqueues");
    let release = Arc::new(tokio::sync::Notify::new());
    let wait = Arc::clone(&release);
    let worker = queues
        .worker("email")
        .expect("valid")
        .start(move |_: Job<u64>| {
            let wait = Arc::clone(&wait);
            async move {
                wait.notified().await;
                Ok::<_, JobError>(())
            }
        });
    wait::until_async("the group's first job to run", async || {
        queues.counts("email").await.expect("counts").active == 1
    })
    .await;
    queues.cancel("email", &second).await.expect("cancels");
    let mut conn = redis.connect().expect("connects");
    let groups = conn
        .cmd(&["SMEMBERS", &format!("{prefix}:{{email}}:groups")])
        .expect("SMEMBERS");
    assert_eq!(groups.as_array().map(<[_]>::len), Some(0), "{groups:?}");
    release.notify_one();
    worker.shutdown(Duration::from_secs(5)).await;
}

/// A progress report that cannot reach Redis is dropped; the run goes on
/// and completes with no failed attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_progress_report_lost_in_an_outage_does_not_fail_the_run() {
    let redis = RedisServer::shared();
    let proxy = Arc::new(Proxy::start(redis.addr()).expect("a proxy"));
    let prefix = unique_prefix();
    let direct = queues(&redis.url(), &prefix, Settings::default()).await;
    let through = queues(&proxy.url(), &prefix, Settings::default()).await;
    let id = direct
        .enqueue("notification", &1_u64, &JobOptions::new())
        .await
        .expect("enqueues");
    let recorded = Arc::new(Mutex::new(None));
    let (cut, seen) = (Arc::clone(&proxy), Arc::clone(&recorded));
    let worker = through
        .worker("notification")
        .and_then(|worker| worker.lease(Duration::from_secs(10)))
        .expect("valid")
        .start(move |job: Job<u64>| {
            let (cut, seen) = (Arc::clone(&cut), Arc::clone(&seen));
            async move {
                cut.cut();
                *seen.lock() = Some(job.progress(100, "written").await);
                cut.restore();
                Ok::<_, JobError>(())
            }
        });
    let job = wait::until_some_async("the job to complete or die", async || {
        direct
            .job("notification", &id)
            .await
            .expect("reads")
            .filter(|job| matches!(job.state, JobState::Completed | JobState::Dead))
    })
    .await;
    worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(job.state, JobState::Completed, "{job:?}");
    assert_eq!(*recorded.lock(), Some(false), "not recorded, and said so");
    assert_eq!((job.failures, job.runs), (0, 1), "{job:?}");
}

/// At its timeout a run's cancellation token fires, so work the handler
/// handed off stops too, before the job is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_fires_the_runs_cancellation() {
    let queues = Queues::memory();
    let options = JobOptions::new()
        .timeout(Duration::from_millis(100))
        .and_then(|options| options.attempts(1))
        .expect("valid");
    queues
        .enqueue("backup", &1_u64, &options)
        .await
        .expect("enqueues");
    let heard = Arc::new(AtomicBool::new(false));
    let told = Arc::clone(&heard);
    let worker = queues
        .worker("backup")
        .expect("valid")
        .start(move |job: Job<u64>| {
            let told = Arc::clone(&told);
            let cancel = job.cancellation().clone();
            // Work handed to a task of its own, which the abort does not reach.
            tokio::spawn(async move {
                cancel.cancelled().await;
                told.store(true, Ordering::SeqCst);
            });
            async move {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok::<_, JobError>(())
            }
        });
    wait::until_async("the handed-off work to hear of the timeout", async || {
        heard.load(Ordering::SeqCst)
    })
    .await;
    worker.shutdown(Duration::from_secs(5)).await;
}

/// Completed jobs past their age go also when no job completes after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_jobs_past_their_age_go_without_a_later_completion() {
    let redis = RedisServer::shared();
    // Seconds more than a look at the counts takes on a loaded machine: the
    // completed job is seen before it goes.
    let settings = Settings {
        keep_completed_for: Duration::from_secs(3),
        ..Settings::default()
    };
    for queues in [
        Queues::memory_with(settings.clone()),
        queues(&redis.url(), &unique_prefix(), settings.clone()).await,
    ] {
        queues
            .enqueue("analytics", &1_u64, &JobOptions::new())
            .await
            .expect("enqueues");
        let worker = queues
            .worker("analytics")
            .expect("valid")
            .start(|_: Job<u64>| async { Ok::<_, JobError>(()) });
        wait::until_async("the job to complete", async || {
            queues.counts("analytics").await.expect("counts").completed == 1
        })
        .await;
        worker.shutdown(Duration::from_secs(5)).await;
        // Nothing completes after it: the reads' own upkeep removes it.
        wait::until_async("the completed job to go past its age", async || {
            queues.counts("analytics").await.expect("counts").completed == 0
        })
        .await;
    }
}

/// Log lines at WARN or above, written while the test's subscriber is the
/// default.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<u8>>>);

impl Write for Warnings {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An idle, healthy worker warns of nothing: its blocking waits end empty,
/// which is no error.
#[tokio::test]
async fn an_idle_worker_warns_of_nothing() {
    let warnings = Warnings::default();
    let sink = warnings.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || sink.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let redis = RedisServer::shared();
    let queues = queues(&redis.url(), &unique_prefix(), Settings::default()).await;
    queues
        .enqueue("email", &1_u64, &JobOptions::new())
        .await
        .expect("enqueues");
    let worker = queues
        .worker("email")
        .expect("valid")
        .start(|_: Job<u64>| async { Ok::<_, JobError>(()) });
    wait::until_async("the job to complete", async || {
        worker.stats().completed == 1
    })
    .await;
    // Idle for longer than one blocking wait (5 s).
    tokio::time::sleep(Duration::from_millis(6_500)).await;
    let stats = worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(stats.completed, 1);
    let logged = String::from_utf8_lossy(&warnings.0.lock()).into_owned();
    assert!(logged.is_empty(), "{logged}");
}

/// On a Cluster every primary holds some queue, so every primary's
/// eviction policy is asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicting_primary_anywhere_in_a_cluster_is_reported() {
    let cluster = RedisCluster::start().expect("a Redis Cluster starts");
    let queues = queues(&cluster.url(), &unique_prefix(), Settings::default()).await;
    assert_eq!(queues.durability_warning().await.expect("answers"), None);
    for master in cluster.masters().into_iter().rev().take(1) {
        master
            .connect()
            .and_then(|mut conn| conn.cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]))
            .expect("configures");
    }
    // Whichever node a single question would have gone to.
    for _ in 0..6 {
        let warning = queues.durability_warning().await.expect("answers");
        assert!(
            warning
                .as_deref()
                .is_some_and(|w| w.contains("allkeys-lru")),
            "{warning:?}"
        );
    }
}

/// A scheduler that catches up every missed tick after a runner outage
/// longer than its most ticks plans that many missed ticks and the one to
/// come, and its look enqueues them all; the schedulers looked at in the
/// same call go on. The outage is made by moving the scheduler's planned
/// tick 200 s (2,000 ticks) into the past.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_past_the_most_ticks_enqueues_and_blocks_no_other_scheduler() {
    let redis = RedisServer::shared();
    let prefix = unique_prefix();
    let queues = queues(&redis.url(), &prefix, Settings::default()).await;
    let every = seawall_queue::Schedule::every(Duration::from_millis(100)).expect("valid");
    let catch_up = every
        .clone()
        .missed(seawall_queue::Missed::Each {
            most: seawall_queue::MAX_CATCH_UP,
        })
        .expect("valid");
    for (id, schedule) in [("behind", &catch_up), ("on-time", &every)] {
        queues
            .upsert_scheduler("q", id, schedule, &id, &JobOptions::new())
            .await
            .expect("upserts");
    }
    queues.tick_schedulers("q").await.expect("plans");
    let last_run = async || {
        let info = queues.scheduler("q", "on-time").await.expect("reads");
        info.and_then(|info| info.last_run).map(|(at, _)| at)
    };
    let ticked = last_run().await;
    // The other scheduler's tick enqueued ahead has come: the next look
    // plans it along with the one behind.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let mut conn = redis.connect().expect("connects");
    let key = format!("{prefix}:{{q}}:s:behind");
    let next = conn.cmd(&["HGET", &key, "next"]).expect("HGET");
    let next: u64 = next
        .as_str()
        .and_then(|text| text.parse().ok())
        .expect("a planned tick");
    let past = (next - 200_000).to_string();
    conn.cmd(&["HSET", &key, "next", &past]).expect("HSET");
    // Its last job was before the outage.
    conn.cmd(&["HDEL", &key, "lt", "lj", "pt", "pj"])
        .expect("HDEL");
    conn.cmd(&["ZADD", &format!("{prefix}:{{q}}:sdue"), &past, "behind"])
        .expect("ZADD");
    let before = queues.counts("q").await.expect("counts");
    let report = queues.tick_schedulers("q").await.expect("looks");
    let after = queues.counts("q").await.expect("counts");
    let made = (after.waiting + after.delayed) - (before.waiting + before.delayed);
    assert!(
        made > u64::from(seawall_queue::MAX_CATCH_UP),
        "the catch-up's {} ticks and the tick to come were enqueued: {report:?}, {made} jobs",
        seawall_queue::MAX_CATCH_UP
    );
    assert!(
        last_run().await > ticked,
        "the other scheduler of the look ticked"
    );
}

/// How many times the server ran `command`, from `INFO commandstats`.
fn calls_of(conn: &mut Conn, command: &str) -> u64 {
    let info = conn.cmd(&["INFO", "commandstats"]).expect("INFO");
    let info = info.as_str().unwrap_or_default().to_owned();
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0)
}

/// A rate limit's log of a queue that was quiet for longer than its window
/// goes in one command, however many fetches it holds: a call never pops
/// a window's worth of entries one at a time (up to the limit's million),
/// which would hold Redis for seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_log_older_than_its_window_goes_in_one_command() {
    let redis = RedisServer::start().expect("redis-server starts");
    let prefix = unique_prefix();
    let queues = queues(&redis.url(), &prefix, Settings::default()).await;
    queues
        .set_rate_limit("q", 1_000_000, Duration::from_secs(1))
        .await
        .expect("limits");
    // 100,000 fetches that each started one job, an hour ago.
    let mut conn = redis.connect().expect("connects");
    let log = format!("{prefix}:{{q}}:rlog");
    let old = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_millis()
        - 3_600_000)
        .to_string();
    let entry = format!("{old} 1");
    for _ in 0..100 {
        let mut push = vec!["RPUSH".to_owned(), log.clone()];
        push.extend(std::iter::repeat_n(entry.clone(), 1_000));
        conn.cmd(&push).expect("RPUSH");
    }
    conn.cmd(&["HSET", &format!("{prefix}:{{q}}:meta"), "rlc", "100000"])
        .expect("HSET");
    let pops = calls_of(&mut conn, "lpop");
    let limits = queues.limits("q").await.expect("reads");
    assert_eq!(limits.started_in_window, 0);
    assert!(
        calls_of(&mut conn, "lpop") - pops <= 1_000,
        "{} entries popped one at a time",
        calls_of(&mut conn, "lpop") - pops
    );
    let left = conn.cmd(&["EXISTS", &log]).expect("EXISTS");
    assert_eq!(left.as_int(), Some(0), "the log is gone");

    // 5,000 old fetches before one within the window: each call pops at
    // most 1,000, counting the rest until a later call pops them.
    let mut push = vec!["RPUSH".to_owned(), log.clone()];
    push.extend(std::iter::repeat_n(entry, 5_000));
    let now = (old.parse::<u128>().expect("ms") + 3_600_000).to_string();
    push.push(format!("{now} 1"));
    conn.cmd(&push).expect("RPUSH");
    conn.cmd(&["HSET", &format!("{prefix}:{{q}}:meta"), "rlc", "5001"])
        .expect("HSET");
    let mut counted = Vec::new();
    for _ in 0..6 {
        let pops = calls_of(&mut conn, "lpop");
        counted.push(queues.limits("q").await.expect("reads").started_in_window);
        assert!(calls_of(&mut conn, "lpop") - pops <= 1_000);
    }
    assert_eq!(counted, [4001, 3001, 2001, 1001, 1, 1]);
}

/// A scheduler whose stored schedule this release cannot read leaves the
/// others listed; read alone, it answers its error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_scheduler_leaves_the_others_listed() {
    let redis = RedisServer::shared();
    let prefix = unique_prefix();
    let queues = queues(&redis.url(), &prefix, Settings::default()).await;
    let hourly = seawall_queue::Schedule::every(Duration::from_secs(3600)).expect("valid");
    for id in ["a", "b"] {
        queues
            .upsert_scheduler("q", id, &hourly, &id, &JobOptions::new())
            .await
            .expect("upserts");
    }
    let mut conn = redis.connect().expect("connects");
    conn.cmd(&[
        "HSET",
        &format!("{prefix}:{{q}}:s:a"),
        "sch",
        "yearly on the moon",
    ])
    .expect("HSET");
    let listed = queues.schedulers("q").await.expect("lists");
    let ids: Vec<&str> = listed.iter().map(|info| info.id.as_str()).collect();
    assert_eq!(ids, ["b"]);
    assert!(queues.scheduler("q", "a").await.is_err());
}

/// A plain queue pays only for what its jobs use: a job put behind others
/// in the default line neither puts the line in the fetch rotation again
/// nor wakes a worker (one is on its way to the jobs before it), and a
/// worker's fetches look for completed jobs past their age once per the
/// age, not in every call (each look is a `LINDEX` of the oldest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_queue_s_calls_skip_what_its_state_makes_needless() {
    let redis = RedisServer::start().expect("redis-server starts");
    let prefix = unique_prefix();
    let queues = queues(&redis.url(), &prefix, Settings::default()).await;
    let mut conn = redis.connect().expect("connects");
    queues
        .enqueue("q", &0_u32, &JobOptions::new())
        .await
        .expect("enqueues");
    let (rung, woken) = (calls_of(&mut conn, "sadd"), calls_of(&mut conn, "zadd"));
    for n in 1..40_u32 {
        queues
            .enqueue("q", &n, &JobOptions::new())
            .await
            .expect("enqueues");
    }
    assert_eq!(
        (
            calls_of(&mut conn, "sadd") - rung,
            calls_of(&mut conn, "zadd") - woken
        ),
        (0, 0),
        "enqueues behind others touched the rotation or the wake-up marker"
    );

    let looks = calls_of(&mut conn, "lindex");
    let calls = calls_of(&mut conn, "evalsha");
    let worker = queues
        .worker("q")
        .expect("a valid name")
        .concurrency(2)
        .expect("valid")
        .start(|_job: Job<u32>| std::future::ready(Ok::<(), JobError>(())));
    wait::until_async("40 completed jobs", async || {
        queues.counts("q").await.expect("counts").completed == 40
    })
    .await;
    let stats = worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(stats.completed, 40, "{stats:?}");
    let fetches = calls_of(&mut conn, "evalsha") - calls;
    assert!(fetches >= 20, "{fetches} calls for 40 jobs two at a time");
    // The first call of the queue writes down when its oldest job
    // finished (or that none had); the others only read that.
    let looked = calls_of(&mut conn, "lindex") - looks;
    assert!(
        looked <= 1,
        "{looked} looks for completed jobs past their age in {fetches} calls"
    );
}
