//! The queue through Sentinel: a client that finds its primary by asking
//! the Sentinels runs every script the conformance scenarios run on a
//! standalone server. One deployment (a primary, its replica and three
//! Sentinels) serves one test, which walks the features that keep state
//! beside the queue's jobs: a scheduler's tick enqueued ahead and
//! cancelled by a change, a flow whose parent reads its children's
//! results, a rate limit across the queue, a debounce and a job's result.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use seawall_queue::{Flow, Job, JobError, JobOptions, JobState, Queues, RateLimit, Schedule};
use seawall_testkit::{RedisSentinel, unique_prefix, wait};

use crate::flows::summing;
use crate::support::builder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedulers_flows_rate_limits_and_debounce_work_through_sentinel() {
    let sentinel = RedisSentinel::start().expect("a Sentinel deployment starts");
    let queues = Queues::redis(builder(&sentinel.url()))
        .prefix(unique_prefix())
        .one_slot()
        .connect()
        .await
        .expect("connects through Sentinel");
    let options = JobOptions::new().attempts(1).expect("valid");

    // A scheduler's coming tick is in the queue ahead, delayed until it; a
    // new template cancels that job and makes it again.
    let hourly = Schedule::every(Duration::from_secs(3600)).expect("valid");
    let lead = Duration::from_secs(2 * 3600);
    queues
        .upsert_scheduler("beat", "hourly", &hourly, &"a", &options)
        .await
        .expect("upserts");
    let report = queues
        .tick_schedulers_within("beat", lead)
        .await
        .expect("looks");
    assert_eq!(report.enqueued, 1);
    let info = queues
        .scheduler("beat", "hourly")
        .await
        .expect("reads")
        .expect("kept");
    let tick = info.next_run.expect("the next tick");
    assert_eq!(
        tick.duration_since(UNIX_EPOCH).expect("after").as_secs() % 3600,
        0
    );
    assert!(tick > SystemTime::now());
    let ahead = info.next_job.expect("its job, enqueued ahead");
    let job = queues
        .job("beat", &ahead)
        .await
        .expect("reads")
        .expect("kept");
    assert_eq!((job.state, job.ready_at), (JobState::Delayed, tick));
    queues
        .upsert_scheduler("beat", "hourly", &hourly, &"b", &options)
        .await
        .expect("upserts");
    assert!(queues.job("beat", &ahead).await.expect("reads").is_none());
    queues
        .tick_schedulers_within("beat", lead)
        .await
        .expect("looks");
    let remade = queues
        .scheduler("beat", "hourly")
        .await
        .expect("reads")
        .expect("kept");
    assert_eq!(remade.next_run, Some(tick));
    let job = queues
        .job("beat", &remade.next_job.expect("made again"))
        .await
        .expect("reads")
        .expect("kept");
    assert_eq!(job.payload, b"\"b\"");

    // A flow: the parent runs after its two children, with their results.
    let flow = Flow::new("report", &vec![1_u64], &options)
        .expect("valid")
        .child(Flow::new("parts", &vec![10_u64], &options).expect("valid"))
        .child(Flow::new("parts", &vec![100_u64], &options).expect("valid"));
    let ids = queues.enqueue_flow(flow).await.expect("enqueues the flow");
    let workers = [summing(&queues, "report"), summing(&queues, "parts")];
    wait::until_async("the flow's parent to complete", async || {
        queues
            .result::<u64>("report", &ids.id)
            .await
            .expect("reads")
            .is_some()
    })
    .await;
    for worker in workers {
        worker.shutdown(Duration::from_secs(5)).await;
    }
    assert_eq!(
        queues
            .result::<u64>("report", &ids.id)
            .await
            .expect("reads"),
        Some(111)
    );

    // A rate limit of 2 starts an hour: of 5 jobs, 2 run.
    let per = Duration::from_secs(3600);
    queues
        .set_rate_limit("limited", 2, per)
        .await
        .expect("limits");
    for n in 0..5_u64 {
        queues
            .enqueue("limited", &n, &options)
            .await
            .expect("enqueues");
    }
    let worker = queues
        .worker("limited")
        .expect("a valid name")
        .concurrency(4)
        .expect("valid")
        .start(|_job: Job<u64>| std::future::ready(Ok::<_, JobError>(())));
    wait::until_async("two limited jobs to complete", async || {
        queues.counts("limited").await.expect("counts").completed == 2
    })
    .await;
    let limits = queues.limits("limited").await.expect("reads");
    assert_eq!(limits.rate, Some(RateLimit { max: 2, per }));
    assert_eq!(limits.started_in_window, 2);
    let counts = queues.counts("limited").await.expect("counts");
    assert_eq!((counts.waiting, counts.active), (3, 0));
    worker.shutdown(Duration::from_secs(5)).await;

    // A debounce: the later enqueue answers the waiting job, which takes
    // its payload.
    let debounced = JobOptions::new()
        .debounce("refresh", Duration::from_secs(3600))
        .expect("valid");
    let first = queues
        .enqueue("index", &"first", &debounced)
        .await
        .expect("enqueues");
    let second = queues
        .enqueue("index", &"second", &debounced)
        .await
        .expect("enqueues");
    assert_eq!(first, second);
    let job = queues
        .job("index", &first)
        .await
        .expect("reads")
        .expect("kept");
    assert_eq!(
        (job.state, job.payload.as_slice()),
        (JobState::Delayed, b"\"second\"".as_slice())
    );
}
