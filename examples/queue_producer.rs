//! A producer: enqueues welcome emails on the `email` queue of a Redis
//! server, one by one and in bulk, with priorities, a delay and an
//! idempotency key, then shows the queue's counts. Run
//! [`queue_worker`](queue_worker.rs) beside it to work them off.
//!
//! Run: `REDIS_URL=redis://127.0.0.1:6379 cargo run -p seawall-examples --example queue_producer`
//! (`REDIS_URL` defaults to that address).

use std::time::Duration;

use fred::prelude::{Builder, Config};
use seawall_queue::{Backoff, JobOptions, Queues};
use serde::Serialize;

/// The job's payload; the worker decodes the same shape.
#[derive(Serialize)]
struct Welcome {
    user: u64,
    address: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let queues = Queues::redis(Builder::from_config(Config::from_url(&url)?))
        .connect()
        .await?;
    if let Some(warning) = queues.durability_warning().await? {
        tracing::warn!("{warning}");
    }

    // Five tries, waiting 1 s, 2 s, 4 s, … (at most a minute, jittered).
    let retries = Backoff::exponential(Duration::from_secs(1))
        .cap(Duration::from_secs(60))?
        .full_jitter();
    let options = JobOptions::new().attempts(5)?.backoff(retries)?;

    // One job, urgent, sent at most once per signup even if the request
    // that enqueues it is retried.
    let signup = options
        .clone()
        .priority(0)?
        .idempotency_key("signup-1", Duration::from_secs(3600))?;
    let welcome = Welcome {
        user: 1,
        address: "ada@example.com".to_owned(),
    };
    let first = queues.enqueue("email", &welcome, &signup).await?;
    let again = queues.enqueue("email", &welcome, &signup).await?;
    tracing::info!(%first, %again, "the same signup enqueued twice is one job");

    // A reminder for tomorrow.
    let later = options.clone().delay(Duration::from_secs(24 * 3600))?;
    let reminder = queues.enqueue("email", &welcome, &later).await?;
    tracing::info!(%reminder, "runs in a day");

    // A thousand newsletter jobs in one round trip.
    let bulk = (2..1_002).map(|user| {
        let payload = Welcome {
            user,
            address: format!("user{user}@example.com"),
        };
        (payload, options.clone())
    });
    let ids = queues.enqueue_many("email", bulk).await?;
    tracing::info!(jobs = ids.len(), "enqueued in bulk");

    let counts = queues.counts("email").await?;
    tracing::info!(
        waiting = counts.waiting,
        delayed = counts.delayed,
        active = counts.active,
        completed = counts.completed,
        dead = counts.dead,
        "the email queue"
    );
    Ok(())
}
