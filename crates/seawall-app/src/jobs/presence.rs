//! Each process that runs the processors announces itself every second on
//! the queue backend (see [`seawall_queue::Queues::announce`]): what each
//! queue's worker runs, its counts, and the process's jobs per second over
//! its last minute. `/api/queue` lists every process of a fleet from it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use seawall_queue::{ProcessReport, QueueActivity, Queues, WorkerWatch};

use crate::config::{QueueConfig, QueueName};

/// How often a process announces itself.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
/// How long after its last announcement a process counts as gone.
const TTL: Duration = Duration::from_secs(5);
/// The window its throughput is measured over.
const WINDOW: Duration = Duration::from_secs(60);

/// This process's id on the list: host, pid and start time.
pub fn process_id(host: &str, started_ms: u64) -> String {
    format!("{host}:{}:{started_ms}", std::process::id())
}

/// The host name, as the kernel has it.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Announces this process until aborted.
pub(crate) async fn announce(
    queues: Queues,
    id: String,
    started_ms: u64,
    config: QueueConfig,
    workers: Vec<(QueueName, WorkerWatch)>,
) {
    let host = host_name();
    let mut samples: VecDeque<(Instant, u64)> = VecDeque::new();
    let mut every = tokio::time::interval(ANNOUNCE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let queues_now: Vec<QueueActivity> = workers
            .iter()
            .map(|(queue, worker)| {
                let stats = worker.stats();
                QueueActivity {
                    queue: queue.as_str().to_owned(),
                    concurrency: config.policy(*queue).concurrency,
                    running: worker.running(),
                    completed: stats.completed,
                    failed: stats.failed,
                }
            })
            .collect();
        let completed: u64 = queues_now.iter().map(|queue| queue.completed).sum();
        let now = Instant::now();
        samples.push_back((now, completed));
        while samples
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > WINDOW)
        {
            samples.pop_front();
        }
        let report = ProcessReport {
            id: id.clone(),
            host: host.clone(),
            pid: std::process::id(),
            started_ms,
            ttl_ms: u64::try_from(TTL.as_millis()).unwrap_or(u64::MAX),
            completed_per_second: rate(&samples),
            queues: queues_now,
            // Enqueues anywhere write no newer form while this process is
            // alive.
            wire_version: seawall_queue::WIRE_VERSION,
        };
        if let Err(error) = queues.announce(&report).await {
            tracing::debug!(%error, "announcing this worker process failed");
        }
    }
}

/// Jobs per second between the oldest and newest sample.
#[allow(clippy::cast_precision_loss)] // counts far below 2^52
fn rate(samples: &VecDeque<(Instant, u64)>) -> f64 {
    match (samples.front(), samples.back()) {
        (Some((first_at, first)), Some((last_at, last))) if last_at > first_at => {
            last.saturating_sub(*first) as f64 / last_at.duration_since(*first_at).as_secs_f64()
        }
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_spans_the_samples() {
        let start = Instant::now();
        let samples: VecDeque<_> = [(start, 10), (start + Duration::from_secs(4), 30)].into();
        assert!((rate(&samples) - 5.0).abs() < 1e-9);
        assert!(rate(&VecDeque::from([(start, 3)])).abs() < f64::EPSILON);
    }
}
