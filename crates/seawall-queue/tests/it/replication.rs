//! Enqueues that answer only once a replica has the job.

use std::time::{Duration, Instant};

use seawall_queue::{Error, JobOptions, Queues};
use seawall_testkit::{RedisServer, RedisServerBuilder, Role, wait};

use crate::support::{builder, unique_prefix};

async fn connect(url: &str, replicas: u32, timeout: Duration) -> Queues {
    Queues::redis(builder(url))
        .prefix(unique_prefix())
        .replicated_enqueues(replicas, timeout)
        .connect()
        .await
        .expect("connects")
}

/// A primary and a replica of it whose link is up.
async fn primary_and_replica() -> (RedisServer, RedisServer) {
    primary_and_replica_with(|replica| replica).await
}

/// Same, the replica's settings given to `configure` too.
async fn primary_and_replica_with(
    configure: impl FnOnce(RedisServerBuilder) -> RedisServerBuilder,
) -> (RedisServer, RedisServer) {
    let primary = RedisServer::start().expect("a primary");
    let replica = configure(
        RedisServer::builder().config("replicaof", format!("127.0.0.1 {}", primary.port())),
    )
    .start()
    .expect("a replica");
    wait::until_async("the replica to sync with its primary", async || {
        replica.is_linked_replica()
    })
    .await;
    assert_eq!(replica.role().expect("role"), Role::Replica);
    (primary, replica)
}

/// How long an enqueue waits for a replica, and then for the take-back:
/// seconds more than a replica that is not frozen takes to answer on a
/// loaded machine.
const REPLICA_WAIT: Duration = Duration::from_secs(3);

/// Longer than any test here runs: a frozen replica is resumed by the test
/// once it has seen what the freeze led to.
const FROZEN: Duration = Duration::from_secs(600);

/// With a replica attached an enqueue answers once the replica has the
/// job; with the replica frozen past the wait it fails with
/// `NotReplicated` once its job is taken back and the replica, back within
/// the take-back's own wait, confirmed that (a refusal means not queued,
/// also after a failover, so a retry without a key makes no second job),
/// and a retry once the replica is back queues the job once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_waits_for_a_replica_or_says_it_has_none() {
    let (primary, replica) = primary_and_replica().await;
    let queues = connect(&primary.url(), 1, REPLICA_WAIT).await;
    let id = queues
        .enqueue("mail", &"one", &JobOptions::default())
        .await
        .expect("replicated");
    assert!(queues.job("mail", &id).await.expect("reads").is_some());

    let options = JobOptions::default()
        .idempotency_key("order-7", Duration::from_secs(60))
        .expect("a key");
    // Frozen past the enqueue's wait, and back once the job was taken
    // back, within the take-back's wait.
    let pause = replica.pause_in_background(FROZEN).expect("freezes");
    let began = Instant::now();
    let enqueue = tokio::spawn({
        let (queues, options) = (queues.clone(), options.clone());
        async move { queues.enqueue("mail", &"two", &options).await }
    });
    wait::until_async("the unreplicated job to be taken back", async || {
        queues
            .events("mail", None, 100)
            .await
            .expect("reads events")
            .iter()
            .any(|event| event.kind == "cancelled")
    })
    .await;
    pause.resume();
    let refused = enqueue.await.expect("the enqueue ends");
    assert!(
        matches!(
            refused,
            Err(Error::NotReplicated {
                acked: 0,
                wanted: 1
            })
        ),
        "{refused:?}"
    );
    assert!(
        began.elapsed() >= REPLICA_WAIT,
        "the enqueue's wait ran out: {:?}",
        began.elapsed()
    );
    assert_eq!(
        queues.counts("mail").await.expect("counts").waiting,
        1,
        "the refused job was taken back"
    );
    let retried = queues
        .enqueue("mail", &"two", &options)
        .await
        .expect("replicated");
    let again = queues
        .enqueue("mail", &"two", &options)
        .await
        .expect("replicated");
    assert_eq!(retried, again, "the key was freed, then holds the retry");
    assert_eq!(queues.counts("mail").await.expect("counts").waiting, 2);

    // Asking for more replicas than there are never succeeds, nor is the
    // take-back confirmed by as many: the one replica has the job and its
    // take-back, another one that missed both cannot be ruled out.
    let greedy = connect(&primary.url(), 2, REPLICA_WAIT).await;
    let refused = greedy
        .enqueue("mail", &"three", &JobOptions::default())
        .await;
    assert!(
        matches!(
            refused,
            Err(Error::EnqueueOutcomeUnknown {
                acked: 1,
                wanted: 2
            })
        ),
        "{refused:?}"
    );
    assert_eq!(greedy.counts("mail").await.expect("counts").waiting, 0);
}

/// A replica frozen through the enqueue's wait and the take-back's: the
/// job is taken back on the primary, but no replica confirmed that, and a
/// replica that got the job without the take-back brings it back if it is
/// promoted: the call says its outcome is unknown, not that nothing is
/// queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_back_no_replica_confirmed_says_the_outcome_is_unknown() {
    let (primary, replica) = primary_and_replica().await;
    let queues = connect(&primary.url(), 1, Duration::from_millis(300)).await;
    let pause = replica.pause_in_background(FROZEN).expect("freezes");
    let began = Instant::now();
    let unknown = queues
        .enqueue("mail", &"unconfirmed", &JobOptions::default())
        .await;
    assert!(
        matches!(
            unknown,
            Err(Error::EnqueueOutcomeUnknown {
                acked: 0,
                wanted: 1
            })
        ),
        "{unknown:?}"
    );
    assert!(
        began.elapsed() >= Duration::from_millis(550),
        "both waits ran: {:?}",
        began.elapsed()
    );
    assert!(
        pause.until() > Instant::now(),
        "the replica was frozen throughout"
    );
    assert_eq!(
        queues.counts("mail").await.expect("counts").waiting,
        0,
        "taken back on the primary"
    );
    pause.resume();
}

/// When a worker took the job before `WAIT` gave up, the job cannot be
/// taken back: the call says its outcome is unknown, and the job runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreplicated_enqueue_already_taken_says_its_outcome_is_unknown() {
    let (primary, replica) = primary_and_replica().await;
    // The worker, idle and waiting on the queue, takes the job within the
    // wait with seconds to spare.
    let queues = connect(&primary.url(), 1, REPLICA_WAIT).await;
    let (ran, mut runs) = tokio::sync::mpsc::unbounded_channel::<String>();
    let worker = queues.worker("mail").expect("a valid name").start(
        move |job: seawall_queue::Job<String>| {
            let ran = ran.clone();
            async move {
                let _ = ran.send(job.payload);
                Ok::<(), seawall_queue::JobError>(())
            }
        },
    );
    let pause = replica.pause_in_background(FROZEN).expect("freezes");
    let unknown = queues
        .enqueue("mail", &"taken".to_owned(), &JobOptions::default())
        .await;
    assert!(
        matches!(
            unknown,
            Err(Error::EnqueueOutcomeUnknown {
                acked: 0,
                wanted: 1
            })
        ),
        "{unknown:?}"
    );
    let payload = tokio::time::timeout(wait::patience(), runs.recv())
        .await
        .expect("waited for the job to run");
    assert_eq!(payload.as_deref(), Some("taken"));
    pause.resume();
    worker.shutdown(Duration::from_secs(5)).await;
}

/// A replica that takes writes (`replica-read-only no`) names its primary's
/// replication id, which job ids carry to stay unique: an enqueue there is
/// refused, and adds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_on_a_writable_replica_is_refused() {
    let (_primary, replica) =
        primary_and_replica_with(|replica| replica.config("replica-read-only", "no")).await;
    let queues = Queues::redis(builder(&replica.url()))
        .prefix(unique_prefix())
        .connect()
        .await
        .expect("connects");
    let refused = queues
        .enqueue("mail", &"one", &JobOptions::default())
        .await
        .expect_err("refused on a replica");
    assert!(refused.to_string().contains("replica"), "{refused}");
    let counts = queues.counts("mail").await.expect("counts");
    assert_eq!(counts.waiting + counts.delayed, 0, "{counts:?}");
}

/// `check_enqueue` answers what an enqueue would: it passes on the primary
/// with its replica attached, fails with `NotReplicated` while that
/// replica is frozen (an enqueue would be refused) and when more replicas
/// are asked for than there are, passes again once it is back, and fails
/// on a replica. It adds no job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_check_fails_exactly_where_an_enqueue_would() {
    let (primary, replica) = primary_and_replica().await;
    let wait = Duration::from_millis(300);
    let queues = connect(&primary.url(), 1, wait).await;
    queues.check_enqueue("mail").await.expect("passes");

    let pause = replica.pause_in_background(FROZEN).expect("freezes");
    let refused = queues.check_enqueue("mail").await;
    assert!(
        matches!(
            refused,
            Err(Error::NotReplicated {
                acked: 0,
                wanted: 1
            })
        ),
        "{refused:?}"
    );
    pause.resume();
    wait::until_async("the check to pass with the replica back", async || {
        queues.check_enqueue("mail").await.is_ok()
    })
    .await;

    let greedy = connect(&primary.url(), 2, wait).await;
    let refused = greedy.check_enqueue("mail").await;
    assert!(
        matches!(
            refused,
            Err(Error::NotReplicated {
                acked: 1,
                wanted: 2
            })
        ),
        "{refused:?}"
    );
    let unreplicated = connect(&primary.url(), 0, wait).await;
    unreplicated.check_enqueue("mail").await.expect("passes");
    let on_replica = connect(&replica.url(), 0, wait).await;
    let refused = on_replica
        .check_enqueue("mail")
        .await
        .expect_err("refused on a replica");
    assert!(refused.to_string().contains("replica"), "{refused}");

    let counts = queues.counts("mail").await.expect("counts");
    assert_eq!(counts.waiting + counts.delayed, 0, "{counts:?}");
}
