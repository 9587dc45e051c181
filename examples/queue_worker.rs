//! A worker: runs the `email` queue's jobs (see
//! [`queue_producer`](queue_producer.rs)) eight at a time, reports progress,
//! fails bad addresses for good and flaky sends for a retry, and shuts down
//! gracefully on Ctrl-C: no new jobs, running ones get ten seconds, the
//! rest go back to the queue. Kill it with SIGKILL instead and its jobs come
//! back to another worker when their 30 s leases run out.
//!
//! Run: `REDIS_URL=redis://127.0.0.1:6379 cargo run -p seawall-examples --example queue_worker`
//! (`REDIS_URL` defaults to that address).

use std::time::Duration;

use fred::prelude::{Builder, Config};
use seawall_perfmon::Monitor;
use seawall_queue::{Job, JobError, QueueMetrics, Queues};
use serde::Deserialize;

/// The payload the producer enqueues.
#[derive(Debug, Deserialize)]
struct Welcome {
    user: u64,
    address: String,
}

/// Sending, as a stand-in: a bad address is a permanent failure, and one
/// send in ten fails in a way worth retrying.
async fn send(job: Job<Welcome>) -> Result<(), JobError> {
    let Welcome { user, address } = &job.payload;
    if !address.contains('@') {
        return Err(JobError::permanent(format!(
            "{address:?} is not an address"
        )));
    }
    job.progress(50, "rendering").await;
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(20)) => {}
        // Cancelled by an operator, or the worker is shutting down.
        () = job.cancellation().cancelled() => return Err(JobError::new("stopped")),
    }
    if user % 10 == 7 && job.failures() == 0 {
        return Err(JobError::new("the mail server timed out"));
    }
    job.progress(100, "sent").await;
    tracing::info!(job = %job.id(), run = job.run(), user, "sent");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let queues = Queues::redis(Builder::from_config(Config::from_url(&url)?))
        .connect()
        .await?;
    let monitor = Monitor::new();
    let metrics = QueueMetrics::register(&monitor, "email")?;

    let worker = queues
        .worker("email")?
        .concurrency(8)?
        .metrics(metrics.clone())
        .start(send);
    tracing::info!("working the email queue; Ctrl-C stops");

    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = every.tick() => {
                let counts = queues.counts("email").await?;
                metrics.record_depth(&counts);
                tracing::info!(?counts, stats = ?worker.stats(), "progress");
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let stats = worker.shutdown(Duration::from_secs(10)).await;
    tracing::info!(?stats, "stopped");
    Ok(())
}
