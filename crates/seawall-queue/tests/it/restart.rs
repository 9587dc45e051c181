//! Redis killed and restarted under load, with `appendfsync always`: no
//! enqueue that was acknowledged is lost, and the worker goes on by itself;
//! and a Redis Cluster master killed: its replica takes over, and producers
//! and workers go on without a restart.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use seawall_queue::{Job, JobError, JobOptions, Queues, Settings, Worker};
use seawall_testkit::{Persistence, RedisCluster, RedisServer, wait};

use crate::support::{builder, completions};

const JOBS: u64 = 1_500;

async fn connect(url: &str) -> Queues {
    let settings = Settings {
        keep_completed: 0,
        // Every event of the run, to count completions per job.
        events_max_len: 1_000_000,
        ..Settings::default()
    };
    Queues::redis(builder(url))
        .settings(settings)
        .connect()
        .await
        .expect("connects")
}

/// A producer enqueueing 0..JOBS one by one (each retried until Redis
/// acknowledges it) and a worker recording the payloads it runs, on their
/// own connections.
struct Load {
    seen: Arc<Mutex<HashSet<u64>>>,
    acknowledged: Arc<Mutex<Vec<u64>>>,
    worker: Worker,
    /// Ends with how many enqueue calls failed.
    producer: Option<tokio::task::JoinHandle<u32>>,
}

impl Load {
    async fn start(url: &str) -> Self {
        let (producer, consumer) = (connect(url).await, connect(url).await);
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let record = Arc::clone(&seen);
        let worker = consumer
            .worker("orders")
            .and_then(|worker| worker.concurrency(8))
            .and_then(|worker| worker.lease(Duration::from_secs(2)))
            .expect("valid")
            .start(move |job: Job<u64>| {
                record.lock().insert(job.payload);
                std::future::ready(Ok(()))
            });
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let acked = Arc::clone(&acknowledged);
        let producer = tokio::spawn(async move {
            let mut refused = 0_u32;
            for n in 0..JOBS {
                // A retried enqueue whose first try ran adds nothing.
                let options = JobOptions::new()
                    .idempotency_key(format!("order-{n}"), Duration::from_secs(3600))
                    .expect("valid");
                while producer.enqueue("orders", &n, &options).await.is_err() {
                    refused += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                acked.lock().push(n);
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            refused
        });
        let load = Self {
            seen,
            acknowledged,
            worker,
            producer: Some(producer),
        };
        wait::until_async("the load to get going (300 enqueues)", async || {
            load.acknowledged() >= 300
        })
        .await;
        load
    }

    fn acknowledged(&self) -> usize {
        self.acknowledged.lock().len()
    }

    /// Acknowledged enqueues from the `from`-th on that no handler ran.
    fn unseen(&self, from: usize) -> Vec<u64> {
        let seen = self.seen.lock();
        self.acknowledged.lock()[from..]
            .iter()
            .copied()
            .filter(|n| !seen.contains(n))
            .collect()
    }

    /// Waits for the producer, then for the acknowledged enqueues from the
    /// `from`-th on to have run; returns how many enqueue calls failed.
    async fn finish(&mut self, from: usize) -> u32 {
        let producer = self.producer.take().expect("finished once");
        let refused = producer.await.expect("the producer ends");
        let began = Instant::now();
        loop {
            let unseen = self.unseen(from);
            if unseen.is_empty() {
                return refused;
            }
            assert!(
                began.elapsed() < wait::patience(),
                "waited {:?} for every acknowledged enqueue from the {from}th on to run; \
                 acknowledged but not run: {unseen:?}",
                wait::patience()
            );
            tokio::time::sleep(wait::POLL).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_redis_keeps_every_acknowledged_job_and_workers_resume() {
    let mut server = RedisServer::builder()
        .persistence(Persistence::AofAlways)
        .start()
        .expect("redis-server starts");
    let mut load = Load::start(&server.url()).await;
    server.kill().expect("SIGKILL");
    // Longer than the clients' 2 s command timeout, so calls fail.
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.restart().expect("restarts on its AOF");

    let refused = load.finish(0).await;
    assert!(refused > 0, "the producer saw the outage");
    // A job whose acknowledgement was lost in the outage, and whose lease
    // ran out meanwhile, is recovered and runs once more: wait until the
    // queue is empty rather than give such a job back at shutdown.
    let queues = connect(&server.url()).await;
    wait::until_async("the queue to drain", async || {
        queues
            .counts("orders")
            .await
            .is_ok_and(|counts| counts.waiting + counts.delayed + counts.active == 0)
    })
    .await;
    let stats = load.worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(stats.requeued, 0, "{stats:?}");
    // One job per order, each completed once, none dead-lettered; a
    // completion whose answer was lost is re-sent and answers the same.
    let counts = queues.counts("orders").await.expect("counts");
    assert_eq!(counts.dead, 0, "{counts:?}");
    let completed = completions(&queues, "orders").await;
    assert_eq!(completed.len() as u64, JOBS, "one job per order");
    let twice: Vec<_> = completed.iter().filter(|(_, times)| **times > 1).collect();
    assert!(twice.is_empty(), "completed more than once: {twice:?}");
    assert_eq!(stats.completed, JOBS, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicting_redis_is_reported_as_degraded() {
    let server = RedisServer::start().expect("redis-server starts");
    let queues = connect(&server.url()).await;
    assert_eq!(queues.durability_warning().await.expect("answers"), None);
    server
        .connect()
        .and_then(|mut conn| conn.cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]))
        .expect("configures");
    let warning = queues.durability_warning().await.expect("answers");
    assert!(
        warning
            .as_deref()
            .is_some_and(|w| w.contains("allkeys-lru")),
        "{warning:?}"
    );
    let monitor = seawall_perfmon::Monitor::new();
    monitor.register_check(seawall_queue::DurabilityCheck::new(queues));
    let report = monitor.health().await;
    assert_eq!(report.status, seawall_perfmon::HealthStatus::Degraded);
}

/// The index of the node, among `candidates`, that serves `key`: the
/// others answer MOVED (or, once killed, nothing).
fn owner_of(cluster: &RedisCluster, candidates: &[usize], key: &str) -> Option<usize> {
    candidates.iter().copied().find(|&index| {
        let reply = cluster.nodes()[index]
            .connect()
            .and_then(|mut conn| conn.cmd(&["TYPE", key]));
        reply.is_ok_and(|reply| reply.into_result().is_ok())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_cluster_failover_producers_and_workers_go_on_by_themselves() {
    let mut cluster = RedisCluster::builder()
        .replicas_per_master(1)
        .node_timeout(Duration::from_millis(1_000))
        .start()
        .expect("a Redis Cluster with replicas starts");
    let mut load = Load::start(&cluster.url()).await;
    let key = "seawall:{orders}:meta";
    let masters = cluster.master_indices().to_vec();
    let master = owner_of(&cluster, &masters, key).expect("a master serves the queue");
    cluster.nodes_mut()[master].kill().expect("SIGKILL");
    let killed_at = load.acknowledged();

    // Replication is asynchronous: what the master acknowledged in its last
    // moments may not have reached the replica. Everything acknowledged
    // after the failover must run: the worker goes on after it.
    load.finish(killed_at + 100).await;
    let lost = load.unseen(0).len();
    load.worker.shutdown(Duration::from_secs(5)).await;
    eprintln!("failover: {lost} of {JOBS} acknowledged enqueues lost with the master");
    // A failover may lose jobs written in its last moments; it must not
    // dead-letter one or complete one twice.
    let queues = connect(&cluster.url()).await;
    let counts = queues.counts("orders").await.expect("counts");
    assert_eq!(counts.dead, 0, "{counts:?}");
    let completed = completions(&queues, "orders").await;
    let twice: Vec<_> = completed.iter().filter(|(_, times)| **times > 1).collect();
    assert!(twice.is_empty(), "completed more than once: {twice:?}");
    let replicas: Vec<usize> = (0..cluster.nodes().len())
        .filter(|index| !masters.contains(index))
        .collect();
    assert!(
        owner_of(&cluster, &replicas, key).is_some(),
        "a former replica serves the queue now"
    );
}

/// A fetch call that fails while Redis is away is sent again, unchanged,
/// once it is back. If no earlier sending ran, the jobs the call takes are
/// leased when it does run, and they run under those leases however long
/// ago the call was first sent. (A worker that dated them from the first
/// sending cancelled each at once as lease-expired and gave it back.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_taken_by_a_fetch_re_sent_after_an_outage_run_under_fresh_leases() {
    const LEASE: Duration = Duration::from_secs(4);
    let mut server = RedisServer::builder()
        .persistence(Persistence::AofAlways)
        .start()
        .expect("redis-server starts");
    let queues = connect(&server.url()).await;
    // Job 1 runs through the kill, and ends once Redis is gone: the
    // worker's next fetch call (its acknowledgement, and a job) fails
    // until Redis is back.
    let runs = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&runs);
    let killed = Arc::new(tokio::sync::Notify::new());
    let job_1_ends = Arc::clone(&killed);
    let worker = queues
        .worker("orders")
        .and_then(|worker| worker.concurrency(1))
        .and_then(|worker| worker.lease(LEASE))
        .expect("valid")
        .start(move |job: Job<u64>| {
            record.lock().push((job.payload, job.run()));
            let cancelled = job.cancellation().clone();
            let first = job.payload == 1 && job.run() == 1;
            let ends = Arc::clone(&job_1_ends);
            async move {
                let work = async {
                    if first {
                        ends.notified().await;
                    } else {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                };
                tokio::select! {
                    () = cancelled.cancelled() => Err(JobError::new("cancelled")),
                    () = work => Ok(()),
                }
            }
        });
    for n in [1_u64, 2] {
        queues
            .enqueue("orders", &n, &JobOptions::new())
            .await
            .expect("enqueues");
    }
    wait::until_async("job 1 to start", async || !runs.lock().is_empty()).await;
    server.kill().expect("SIGKILL");
    killed.notify_one();
    // Longer than the lease, so a lease dated from the first sending of the
    // call made in the outage would be over when Redis is back.
    tokio::time::sleep(LEASE + Duration::from_secs(2)).await;
    server.restart().expect("restarts on its AOF");

    wait::until_async("job 2 to run to its end", async || {
        runs.lock().iter().any(|&(n, _)| n == 2) && worker.running() == 0
    })
    .await;
    let stats = worker.shutdown(Duration::from_secs(5)).await;
    // Job 1's lease ran out in the outage, so it may run again; job 2 was
    // taken after the outage and runs once, to the end.
    let twos: Vec<u32> = runs
        .lock()
        .iter()
        .filter(|run| run.0 == 2)
        .map(|run| run.1)
        .collect();
    assert_eq!(twos, vec![1], "runs {:?}, {stats:?}", runs.lock());
    assert_eq!((stats.requeued, stats.cancelled), (0, 0), "{stats:?}");
}
