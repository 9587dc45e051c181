//! Flows: a tree of jobs, possibly over several queues, added all or
//! nothing, in which a parent runs only after its children finished and
//! reads their results.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::job::{ChildFailure, ChildInfo, JobId};
use crate::options::JobOptions;
use crate::queues::{Queues, is_job_id, new_job};
use crate::store::{FlowNode, MAX_FLOW_JOBS, NewJob, check_name, random_id};

/// A job with the jobs that must finish before it runs (see
/// [`Queues::enqueue_flow`]).
///
/// ```
/// use std::time::Duration;
/// use seawall_queue::{ChildFailure, Flow, Job, JobError, JobOptions, Queues};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> seawall_queue::Result<()> {
/// let queues = Queues::memory();
/// let options = JobOptions::new();
/// let flow = Flow::new("report", &"monthly", &options)?
///     .child(Flow::new("sums", &[1, 2], &options)?)
///     .child(Flow::new("sums", &[3, 4], &options)?)
///     .child_with(Flow::new("sums", &[5], &options)?, ChildFailure::Ignore);
/// let ids = queues.enqueue_flow(flow).await?;
///
/// let sums = queues.worker("sums")?.start(|job: Job<Vec<u64>>| async move {
///     Ok::<_, JobError>(job.payload.iter().sum::<u64>())
/// });
/// let report = queues.worker("report")?.start(|job: Job<String>| async move {
///     let mut total = 0;
///     for child in job.children().await? {
///         total += child.result_as::<u64>()?.unwrap_or(0);
///     }
///     Ok::<_, JobError>(total)
/// });
/// while queues.result::<u64>("report", &ids.id).await?.is_none() {
///     tokio::time::sleep(Duration::from_millis(5)).await;
/// }
/// assert_eq!(queues.result::<u64>("report", &ids.id).await?, Some(15));
/// sums.shutdown(Duration::from_secs(1)).await;
/// report.shutdown(Duration::from_secs(1)).await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Flow {
    queue: String,
    job: NewJob,
    children: Vec<(Flow, ChildFailure)>,
}

impl Flow {
    /// A job of `queue` with `payload` and `options`, with no children yet.
    /// Its delay counts from when its children finished. A flow's jobs
    /// take no idempotency, unique or debounce key, and no context.
    pub fn new<T: Serialize + ?Sized>(
        queue: &str,
        payload: &T,
        options: &JobOptions,
    ) -> Result<Self> {
        check_name("queue name", queue)?;
        if options.deduplication().is_some() {
            return Err(Error::InvalidOption(
                "a flow's jobs take no idempotency, unique or debounce key".to_owned(),
            ));
        }
        if options.context_text().is_some() {
            return Err(Error::InvalidOption(
                "a flow's jobs carry no context".to_owned(),
            ));
        }
        Ok(Self {
            queue: queue.to_owned(),
            job: new_job(payload, options, String::new())?,
            children: Vec::new(),
        })
    }

    /// Adds a child whose final failure fails this job too
    /// ([`ChildFailure::FailParent`]).
    #[must_use]
    pub fn child(self, child: Flow) -> Self {
        self.child_with(child, ChildFailure::FailParent)
    }

    /// Adds a child with what its final failure does to this job.
    #[must_use]
    pub fn child_with(mut self, child: Flow, on_failure: ChildFailure) -> Self {
        self.children.push((child, on_failure));
        self
    }

    /// The jobs of the tree, parents before their children (depth first).
    fn nodes(self) -> Vec<FlowNode> {
        fn visit(
            flow: Flow,
            parent: Option<usize>,
            on_failure: ChildFailure,
            nodes: &mut Vec<FlowNode>,
        ) {
            let index = nodes.len();
            nodes.push(FlowNode {
                queue: flow.queue,
                parent,
                on_failure,
                job: flow.job,
            });
            for (child, on_failure) in flow.children {
                visit(child, Some(index), on_failure, nodes);
            }
        }
        let mut nodes = Vec::new();
        visit(self, None, ChildFailure::FailParent, &mut nodes);
        nodes
    }
}

/// The ids a flow's jobs were given, in the shape of the flow.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlowIds {
    /// The job's queue.
    pub queue: String,
    /// The job's id.
    pub id: JobId,
    /// Its children's, in the order they were added.
    pub children: Vec<FlowIds>,
}

impl Queues {
    /// Adds a flow: every job of the tree, or none. A job runs only once
    /// each of its children finished: completed, or failed in a way its
    /// [`ChildFailure`] lets pass; its handler reads their outcomes and
    /// results with [`Job::children`](crate::Job::children). A child's
    /// failure that fails its parent goes on up the tree. Cancelling a
    /// parent that waits for its children cancels those not finished.
    ///
    /// The jobs may be in several queues. On a Redis Cluster those queues'
    /// keys must share a slot ([`RedisQueues::one_slot`]), which is how
    /// the flow is added, and each child tells its parent, atomically;
    /// otherwise a flow that spans queues is [`Error::InvalidOption`]
    /// before anything is written. At most [`MAX_FLOW_JOBS`] jobs.
    ///
    /// [`RedisQueues::one_slot`]: crate::RedisQueues::one_slot
    pub async fn enqueue_flow(&self, flow: Flow) -> Result<FlowIds> {
        let shape = Shape::of(&flow);
        let nodes = flow.nodes();
        if nodes.len() > MAX_FLOW_JOBS {
            return Err(Error::InvalidOption(format!(
                "a flow holds at most {MAX_FLOW_JOBS} jobs, this one {}",
                nodes.len()
            )));
        }
        let queues: Vec<String> = nodes.iter().map(|node| node.queue.clone()).collect();
        // A worker of the release before flows would strand the parent.
        let wire = self.wire_version().await;
        if wire < crate::WIRE_VERSION {
            return Err(Error::OlderWorkers { reads: wire });
        }
        let ids = self
            .store()
            .enqueue_flow(&random_id(), &nodes, wire)
            .await?;
        if ids.len() != nodes.len() {
            return Err(Error::Protocol(format!(
                "a flow of {} jobs was answered {} ids",
                nodes.len(),
                ids.len()
            )));
        }
        let mut ids = queues.into_iter().zip(ids);
        Ok(shape.fill(&mut ids))
    }

    /// The children of flow job `id` of `queue`, with how each finished
    /// (and its result); empty for a job that has none.
    pub async fn children(&self, queue: &str, id: &JobId) -> Result<Vec<ChildInfo>> {
        check_name("queue name", queue)?;
        if !is_job_id(id) {
            return Ok(Vec::new());
        }
        self.store().children(queue, id).await
    }
}

/// A flow's shape without its jobs, to give the ids back in it.
struct Shape(Vec<Shape>);

impl Shape {
    fn of(flow: &Flow) -> Self {
        Self(
            flow.children
                .iter()
                .map(|(child, _)| Self::of(child))
                .collect(),
        )
    }

    /// Takes the ids in the order [`Flow::nodes`] gave the jobs.
    fn fill(&self, ids: &mut impl Iterator<Item = (String, JobId)>) -> FlowIds {
        let (queue, id) = ids
            .next()
            .unwrap_or_else(|| (String::new(), JobId::from("")));
        FlowIds {
            queue,
            id,
            children: self.0.iter().map(|child| child.fill(ids)).collect(),
        }
    }
}
