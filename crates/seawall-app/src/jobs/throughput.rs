//! Throughput of the queues as any API instance can see it: every 5 s the
//! sampler reads each queue's event stream from where it stopped and counts
//! the jobs enqueued, completed, failed (an attempt that failed, whether
//! retried or not) and dead. The stream is shared by every process, so the
//! figures cover the jobs of every worker, in process or `seawall-worker`.
//!
//! The stream keeps its newest 10,000 entries (`Settings::events_max_len`);
//! one entry stands for all the jobs one call moved, so that is far more
//! than 5 s of any workload this service runs, but a queue moving more
//! entries than that between two samples is undercounted.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use seawall_queue::Queues;
use serde::Serialize;
use tokio::task::JoinHandle;
use utoipa::ToSchema;

use crate::config::QueueName;
use crate::setup::QueueHandle;
use crate::time::now_ms;

/// How often the streams are read.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Samples kept: 15 minutes.
const SAMPLES: usize = 180;
/// Samples in the last minute.
const MINUTE: usize = 12;
/// Stream entries asked for per read.
const PAGE: usize = 1_000;
/// Reads per queue per sample; what is left is read at the next sample.
const MAX_PAGES: usize = 50;

/// Jobs per event kind over one sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub enqueued: u64,
    pub completed: u64,
    pub failed: u64,
    pub dead: u64,
}

impl Tally {
    fn add(&mut self, other: &Self) {
        self.enqueued += other.enqueued;
        self.completed += other.completed;
        self.failed += other.failed;
        self.dead += other.dead;
    }
}

/// One sample of every queue.
#[derive(Debug, Clone)]
struct Sample {
    at_ms: u64,
    seconds: f64,
    queues: [Tally; QueueName::ALL.len()],
}

/// Jobs per second over one sample, every queue together.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ThroughputPoint {
    /// When the sample was taken, in Unix milliseconds.
    pub at_ms: u64,
    // Jobs enqueued and completed per second since the previous sample.
    // Plain comments where the OpenAPI contract has no description: a doc
    // comment would become one.
    #[allow(missing_docs)]
    pub enqueued_per_second: f64,
    #[allow(missing_docs)]
    pub completed_per_second: f64,
    /// Attempts that failed, retried or not.
    pub failed_per_second: f64,
    /// Jobs that went to the dead set.
    pub dead_per_second: f64,
}

/// The sampler and what it has seen. Cheap to clone; the sampler stops when
/// the last clone is dropped.
#[derive(Clone)]
pub struct Throughput(Arc<Inner>);

struct Inner {
    samples: Arc<Mutex<VecDeque<Sample>>>,
    sampler: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.sampler.abort();
    }
}

impl Throughput {
    /// Starts sampling once the queues are connected; events from before
    /// the start are not counted.
    pub fn start(queues: QueueHandle) -> Self {
        let samples = Arc::new(Mutex::new(VecDeque::with_capacity(SAMPLES)));
        let sampler = tokio::spawn(sample(queues, Arc::clone(&samples)));
        Self(Arc::new(Inner { samples, sampler }))
    }

    /// Every sample kept, oldest first.
    pub fn history(&self) -> Vec<ThroughputPoint> {
        self.0
            .samples
            .lock()
            .iter()
            .map(|sample| {
                let mut all = Tally::default();
                for tally in &sample.queues {
                    all.add(tally);
                }
                #[allow(clippy::cast_precision_loss)] // counts far below 2^52
                let rate = |jobs: u64| jobs as f64 / sample.seconds;
                ThroughputPoint {
                    at_ms: sample.at_ms,
                    enqueued_per_second: rate(all.enqueued),
                    completed_per_second: rate(all.completed),
                    failed_per_second: rate(all.failed),
                    dead_per_second: rate(all.dead),
                }
            })
            .collect()
    }

    /// What `queue` did over the last minute's samples.
    pub fn last_minute(&self, queue: QueueName) -> Tally {
        let index = index_of(queue);
        let mut total = Tally::default();
        for sample in self.0.samples.lock().iter().rev().take(MINUTE) {
            total.add(&sample.queues[index]);
        }
        total
    }
}

fn index_of(queue: QueueName) -> usize {
    QueueName::ALL
        .iter()
        .position(|name| *name == queue)
        .unwrap_or_default()
}

async fn sample(handle: QueueHandle, samples: Arc<Mutex<VecDeque<Sample>>>) {
    let queues = handle.connected().await;
    // Stream positions are `<unix ms>-<sequence>` on both backends; reads
    // start after the first entry of the previous millisecond.
    let start = format!("{}-0", now_ms().saturating_sub(1));
    let mut positions: Vec<String> = QueueName::ALL.iter().map(|_| start.clone()).collect();
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut previous = Instant::now();
    loop {
        ticks.tick().await;
        let mut tallies = [Tally::default(); QueueName::ALL.len()];
        for ((queue, position), tally) in QueueName::ALL
            .iter()
            .zip(positions.iter_mut())
            .zip(tallies.iter_mut())
        {
            *tally = read_on(&queues, *queue, position).await;
        }
        let now = Instant::now();
        let sample = Sample {
            at_ms: u64::try_from(now_ms()).unwrap_or_default(),
            seconds: now.duration_since(previous).as_secs_f64().max(0.001),
            queues: tallies,
        };
        previous = now;
        let mut kept = samples.lock();
        if kept.len() == SAMPLES {
            kept.pop_front();
        }
        kept.push_back(sample);
    }
}

/// Reads `queue`'s events after `position`, moving it on, and counts them.
/// A read that fails ends this sample's reading of the queue; the next
/// sample goes on from the same position.
async fn read_on(queues: &Queues, queue: QueueName, position: &mut String) -> Tally {
    let mut tally = Tally::default();
    for _ in 0..MAX_PAGES {
        let events = match queues.events(queue.as_str(), Some(position), PAGE).await {
            Ok(events) => events,
            Err(error) => {
                tracing::debug!(%error, queue = queue.as_str(), "cannot read the queue's events");
                break;
            }
        };
        let mut entries = 0;
        for event in &events {
            if event.position != *position {
                entries += 1;
                position.clone_from(&event.position);
            }
            match event.kind.as_str() {
                "enqueued" => tally.enqueued += 1,
                "completed" => tally.completed += 1,
                "failed" => tally.failed += 1,
                "dead" => tally.dead += 1,
                _ => {}
            }
        }
        if entries < PAGE {
            break;
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use seawall_queue::{Job, JobError, JobOptions};
    use seawall_testkit::wait;

    use super::*;

    /// The memory backend's stream, counted as the dashboard shows it: a
    /// job that fails once then completes counts one failure and one
    /// completion; one that fails for good counts a failure and a death.
    #[tokio::test]
    async fn counts_what_the_stream_says_per_queue() {
        let queues = Queues::memory();
        let options = JobOptions::new().attempts(2).expect("attempts");
        // From before the sampler's start: not counted.
        queues
            .enqueue("email", &0_u32, &options)
            .await
            .expect("enqueues");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut position = format!("{}-0", now_ms());
        tokio::time::sleep(Duration::from_millis(5)).await;
        for value in 1..=3_u32 {
            queues
                .enqueue("email", &value, &options)
                .await
                .expect("enqueues");
        }
        queues
            .enqueue("report", &9_u32, &options)
            .await
            .expect("enqueues");
        let worker = queues
            .worker("email")
            .expect("a worker")
            .backoff(seawall_queue::Backoff::fixed(Duration::ZERO))
            .start(|job: Job<u32>| async move {
                match job.payload {
                    2 if job.failures() == 0 => Err(JobError::new("once")),
                    3 => Err(JobError::permanent("never")),
                    _ => Ok(()),
                }
            });
        let began = Instant::now();
        loop {
            let counts = queues.counts("email").await.expect("counts");
            if counts.completed == 3 && counts.dead == 1 {
                // Jobs 0, 1 and 2 completed; 3 died.
                break;
            }
            assert!(
                began.elapsed() < wait::patience(),
                "waited {:?} for three email jobs to complete and one to die: {counts:?}",
                wait::patience()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        worker.shutdown(Duration::from_secs(5)).await;

        let email = read_on(&queues, QueueName::Email, &mut position).await;
        assert_eq!(
            email,
            Tally {
                enqueued: 3,
                // Job 0 was enqueued before, but completed after, the start.
                completed: 3,
                failed: 2,
                dead: 1,
            }
        );
        // Read to the end: nothing more until something happens.
        assert_eq!(
            read_on(&queues, QueueName::Email, &mut position).await,
            Tally::default()
        );
        let mut from_start = format!("{}-0", now_ms() - 60_000);
        assert_eq!(
            read_on(&queues, QueueName::Report, &mut from_start)
                .await
                .enqueued,
            1
        );
    }
}
