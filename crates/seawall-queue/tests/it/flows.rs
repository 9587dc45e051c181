//! Flows on every backend: a parent runs after its children, reads their
//! results, fails, ignores or drops a failed child by its policy, and
//! cancels its pending children when cancelled; on a Cluster, a flow over
//! several queues needs their keys in one slot.

use std::time::Duration;

use seawall_queue::{
    Cancelled, ChildFailure, ChildOutcome, Error, Flow, Job, JobError, JobOptions, JobState,
    Queues, Worker,
};
use seawall_testkit::{unique_prefix, wait};

use crate::on_every_backend;
use crate::support::{Backend, builder};

/// Queues whose keys share one slot on Redis, so flows may span queues.
async fn flow_queues(backend: &Backend) -> Queues {
    match backend {
        Backend::Memory => Queues::memory(),
        Backend::Redis(url) | Backend::Cluster(url) => Queues::redis(builder(url))
            .prefix(unique_prefix())
            .one_slot()
            .connect()
            .await
            .expect("connects"),
    }
}

fn options() -> JobOptions {
    JobOptions::new().attempts(1).expect("valid")
}

/// A worker on `queue` whose jobs return their payload's sum plus their
/// children's results.
pub(crate) fn summing(queues: &Queues, queue: &str) -> Worker {
    queues
        .worker(queue)
        .expect("a valid name")
        .concurrency(4)
        .expect("valid")
        .start(|job: Job<Vec<u64>>| async move {
            let mut total: u64 = job.payload.iter().sum();
            for child in job.children().await? {
                total += child.result_as::<u64>()?.unwrap_or(0);
            }
            Ok::<_, JobError>(total)
        })
}

async fn state(queues: &Queues, queue: &str, id: &seawall_queue::JobId) -> Option<JobState> {
    // A count reads the queue's inbox first (releases, failures and
    // cancellations other queues left for it).
    queues.counts(queue).await.expect("counts");
    queues
        .job(queue, id)
        .await
        .expect("reads")
        .map(|job| job.state)
}

/// Three levels over three queues: each parent runs after its children,
/// with their results.
async fn a_parent_runs_after_its_children_with_their_results(backend: &Backend) {
    let queues = flow_queues(backend).await;
    let flow = Flow::new("report", &vec![1_u64], &options())
        .expect("valid")
        .child(
            Flow::new("sums", &vec![10_u64, 20], &options())
                .expect("valid")
                .child(Flow::new("fetch", &vec![100_u64], &options()).expect("valid")),
        )
        .child(Flow::new("sums", &vec![1000_u64], &options()).expect("valid"));
    let ids = queues.enqueue_flow(flow).await.expect("enqueues");
    assert_eq!(ids.queue, "report");
    assert_eq!(ids.children.len(), 2);
    assert_eq!(ids.children[0].children[0].queue, "fetch");
    assert_eq!(
        state(&queues, "report", &ids.id).await,
        Some(JobState::WaitingChildren)
    );
    assert_eq!(
        queues
            .counts("report")
            .await
            .expect("counts")
            .waiting_children,
        1
    );
    // The leaf waits to run; its parent waits for it.
    assert_eq!(
        state(&queues, "fetch", &ids.children[0].children[0].id).await,
        Some(JobState::Waiting)
    );
    assert_eq!(
        state(&queues, "sums", &ids.children[0].id).await,
        Some(JobState::WaitingChildren)
    );
    assert_eq!(
        state(&queues, "sums", &ids.children[1].id).await,
        Some(JobState::Waiting)
    );

    let workers = [
        summing(&queues, "report"),
        summing(&queues, "sums"),
        summing(&queues, "fetch"),
    ];
    wait::until_async("the root's result", async || {
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
        Some(1 + 10 + 20 + 100 + 1000)
    );
    let children = queues.children("report", &ids.id).await.expect("reads");
    assert_eq!(children.len(), 2);
    assert!(children.iter().all(|child| child.queue == "sums"));
    let results: Vec<Option<u64>> = children
        .iter()
        .map(|child| child.result_as().expect("decodes"))
        .collect();
    assert_eq!(results, [Some(130), Some(1000)]);
    // Each parent started after its children finished, by the backend's
    // clock.
    let root = queues
        .job("report", &ids.id)
        .await
        .expect("reads")
        .expect("kept");
    for child in &ids.children {
        let finished = queues
            .job("sums", &child.id)
            .await
            .expect("reads")
            .and_then(|job| job.finished_at)
            .expect("finished");
        assert!(root.started_at.expect("started") >= finished);
    }
}

/// A child's final failure fails its parent, and on up the tree, or is
/// passed over, or dropped, by the child's policy.
async fn a_child_s_failure_follows_its_policy(backend: &Backend) {
    let queues = flow_queues(backend).await;
    let failing = || Flow::new("work", &vec![0_u64], &options()).expect("valid");
    let fine = || Flow::new("work", &vec![5_u64], &options()).expect("valid");
    let parent = || Flow::new("top", &vec![1_u64], &options()).expect("valid");
    // Fails its parent, which fails its own.
    let grand = queues
        .enqueue_flow(
            Flow::new("top", &vec![1_u64], &options())
                .expect("valid")
                .child(parent().child(failing()).child(fine())),
        )
        .await
        .expect("enqueues");
    let ignored = queues
        .enqueue_flow(
            parent()
                .child_with(failing(), ChildFailure::Ignore)
                .child(fine()),
        )
        .await
        .expect("enqueues");
    let dropped = queues
        .enqueue_flow(
            parent()
                .child_with(failing(), ChildFailure::Drop)
                .child(fine()),
        )
        .await
        .expect("enqueues");
    let work = queues
        .worker("work")
        .expect("a valid name")
        .concurrency(4)
        .expect("valid")
        .start(|job: Job<Vec<u64>>| async move {
            if job.payload == [0] {
                return Err(JobError::permanent("zero"));
            }
            Ok(job.payload[0])
        });
    let top = summing(&queues, "top");
    wait::until_async("the three flows to end", async || {
        let grand_dead = state(&queues, "top", &grand.id).await == Some(JobState::Dead);
        let mut done = true;
        for id in [&ignored.id, &dropped.id] {
            done &= queues
                .result::<u64>("top", id)
                .await
                .expect("reads")
                .is_some();
        }
        grand_dead && done
    })
    .await;
    work.shutdown(Duration::from_secs(5)).await;
    top.shutdown(Duration::from_secs(5)).await;

    let middle = queues
        .job("top", &grand.children[0].id)
        .await
        .expect("reads")
        .expect("kept");
    assert_eq!(middle.state, JobState::Dead);
    assert!(
        middle.errors.is_empty() && middle.runs == 0,
        "a parent failed by its child never ran"
    );
    let reason = middle.dead_reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("zero"),
        "a parent failed by its child says why: {reason:?}"
    );
    let root = queues
        .job("top", &grand.id)
        .await
        .expect("reads")
        .expect("kept");
    assert_eq!(root.state, JobState::Dead);

    let seen = queues.children("top", &ignored.id).await.expect("reads");
    assert_eq!(seen.len(), 2);
    assert!(matches!(&seen[0].outcome, ChildOutcome::Failed(error) if error.contains("zero")));
    assert_eq!(
        seen[1].outcome,
        ChildOutcome::Completed(Some(b"5".to_vec()))
    );
    assert_eq!(
        queues
            .result::<u64>("top", &ignored.id)
            .await
            .expect("reads"),
        Some(1 + 5)
    );
    let seen = queues.children("top", &dropped.id).await.expect("reads");
    assert_eq!(seen.len(), 1, "a dropped child is no longer one: {seen:?}");
    assert_eq!(
        queues
            .result::<u64>("top", &dropped.id)
            .await
            .expect("reads"),
        Some(1 + 5)
    );
}

/// Cancelling a parent that waits for its children cancels those not
/// finished, in their own queues.
async fn cancelling_a_parent_cancels_its_pending_children(backend: &Backend) {
    let queues = flow_queues(backend).await;
    let ids = queues
        .enqueue_flow(
            Flow::new("top", &vec![1_u64], &options())
                .expect("valid")
                .child(
                    Flow::new("mid", &vec![2_u64], &options())
                        .expect("valid")
                        .child(Flow::new("leaf", &vec![3_u64], &options()).expect("valid")),
                )
                .child(Flow::new("leaf", &vec![4_u64], &options()).expect("valid")),
        )
        .await
        .expect("enqueues");
    assert_eq!(
        queues.cancel("top", &ids.id).await.expect("cancels"),
        Cancelled::Removed
    );
    wait::until_async("every job of the flow to be gone", async || {
        state(&queues, "top", &ids.id).await.is_none()
            && state(&queues, "mid", &ids.children[0].id).await.is_none()
            && state(&queues, "leaf", &ids.children[0].children[0].id)
                .await
                .is_none()
            && state(&queues, "leaf", &ids.children[1].id).await.is_none()
    })
    .await;
    for queue in ["top", "mid", "leaf"] {
        let counts = queues.counts(queue).await.expect("counts");
        assert_eq!(
            (counts.waiting, counts.waiting_children),
            (0, 0),
            "{queue}: {counts:?}"
        );
    }
}

/// Bad flows are refused before anything is written.
async fn bad_flows_are_refused(backend: &Backend) {
    let queues = flow_queues(backend).await;
    let keyed = JobOptions::new()
        .idempotency_key("k", Duration::from_secs(1))
        .expect("valid");
    let refused = Flow::new("q", &1, &keyed);
    assert!(
        matches!(refused, Err(Error::InvalidOption(_))),
        "{refused:?}"
    );
    let refused = Flow::new("a b", &1, &options());
    assert!(matches!(refused, Err(Error::InvalidName(_))), "{refused:?}");
    let mut wide = Flow::new("q", &1, &options()).expect("valid");
    for n in 0..seawall_queue::MAX_FLOW_JOBS {
        wide = wide.child(Flow::new("q", &n, &options()).expect("valid"));
    }
    let refused = queues.enqueue_flow(wide).await;
    assert!(
        matches!(refused, Err(Error::InvalidOption(_))),
        "{refused:?}"
    );
    let counts = queues.counts("q").await.expect("counts");
    assert_eq!((counts.waiting, counts.waiting_children), (0, 0));
}

/// A parent failed by one child and then removed (cleaned from the dead
/// set) stays gone when its other child finishes later: nothing is made
/// again in its name, and reading it answers that there is no such job.
async fn a_removed_parent_stays_gone_when_a_child_finishes_late(backend: &Backend) {
    let queues = flow_queues(backend).await;
    let flow = queues
        .enqueue_flow(
            Flow::new("top", &vec![1_u64], &options())
                .expect("valid")
                .child(Flow::new("work", &vec![0_u64], &options()).expect("valid"))
                .child(Flow::new("work", &vec![7_u64], &options()).expect("valid")),
        )
        .await
        .expect("enqueues");
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let held = std::sync::Arc::clone(&release);
    let work = queues
        .worker("work")
        .expect("a valid name")
        .concurrency(2)
        .expect("valid")
        .start(move |job: Job<Vec<u64>>| {
            let held = std::sync::Arc::clone(&held);
            async move {
                if job.payload == [0] {
                    return Err(JobError::permanent("zero"));
                }
                held.notified().await;
                Ok(job.payload[0])
            }
        });
    wait::until_async("the failed child to fail its parent", async || {
        state(&queues, "top", &flow.id).await == Some(JobState::Dead)
    })
    .await;
    // Every backend names the child alike: its queue and id.
    let events = crate::support::all_events(&queues, "top").await;
    let dead = events
        .iter()
        .find(|event| event.kind == "dead" && event.job == flow.id)
        .expect("the parent's death is an event");
    assert_eq!(
        dead.fields,
        [(
            "error".to_owned(),
            format!("a child failed (work {}): zero", flow.children[0].id)
        )]
    );
    let removed = queues
        .clean("top", seawall_queue::Finished::Dead, Duration::ZERO, 0)
        .await
        .expect("cleans");
    assert_eq!(removed, 1);
    release.notify_one();
    wait::until_async("the late child to complete", async || {
        queues.counts("work").await.expect("counts").completed == 1
    })
    .await;
    work.shutdown(Duration::from_secs(5)).await;
    queues.counts("top").await.expect("counts");
    let parent = queues.job("top", &flow.id).await;
    assert!(
        matches!(parent, Ok(None)),
        "the removed parent reads as {parent:?}"
    );
}

on_every_backend!(
    a_removed_parent_stays_gone_when_a_child_finishes_late,
    a_parent_runs_after_its_children_with_their_results,
    a_child_s_failure_follows_its_policy,
    cancelling_a_parent_cancels_its_pending_children,
    bad_flows_are_refused,
);

/// On a Cluster, queues in slots of their own take a flow within one
/// queue, and refuse one over several before anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_flow_over_several_queues_needs_one_slot() {
    let Backend::Cluster(url) = Backend::cluster() else {
        unreachable!("a cluster backend");
    };
    let queues = Queues::redis(builder(&url))
        .prefix(unique_prefix())
        .connect()
        .await
        .expect("connects");
    let within = Flow::new("alone", &1, &options())
        .expect("valid")
        .child(Flow::new("alone", &2, &options()).expect("valid"));
    queues
        .enqueue_flow(within)
        .await
        .expect("one queue is one slot");
    let across = Flow::new("alone", &1, &options())
        .expect("valid")
        .child(Flow::new("elsewhere", &2, &options()).expect("valid"));
    let refused = queues.enqueue_flow(across).await;
    assert!(
        matches!(&refused, Err(Error::InvalidOption(message)) if message.contains("one_slot")),
        "{refused:?}"
    );
    let counts = queues.counts("alone").await.expect("counts");
    assert_eq!(
        counts.waiting_children, 1,
        "only the first flow: {counts:?}"
    );
    assert_eq!(queues.counts("elsewhere").await.expect("counts").waiting, 0);
}
