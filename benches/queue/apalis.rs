//! The `apalis` system of `seawall-queue-bench`: apalis with its Redis
//! backend, apalis-redis, on the bench's server, through the same
//! current-thread Tokio runtime as seawall.
//!
//! The storage has apalis-redis's default [`Config`] (up to 10 jobs a fetch,
//! a lease taken on every job, results kept, events published), on a queue
//! named [`QUEUE`]. It keeps every job's data, metadata and id in the done set:
//! it has no retention setting like seawall's and BullMQ's last 1,000.
//!
//! - `enqueue_single`: `TaskSink::push`, each awaited before the next: one
//!   `EVALSHA` of its batch-push script per job.
//! - `e2e`: `--jobs` jobs pushed beforehand with `push_bulk` in chunks of
//!   [`FILL_BATCH`] (not timed), each chunk then moved to the waiting list
//!   as apalis's fetch would (see [`promote`]); then one worker, its
//!   concurrency set with apalis's own `WorkerBuilder::concurrency` (a tower
//!   concurrency limit), with a no-op handler that counts the jobs and stops
//!   the worker at the last one. Timed from building the worker to the end
//!   of `Worker::run`, which waits for the jobs in flight and writes the last
//!   completions before it returns, as seawall's timed part ends with its
//!   worker's shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use apalis::prelude::{TaskSink, WorkerBuilder, WorkerBuilderExt, WorkerContext, WorkerError};
use apalis_redis::{Config, RedisStorage};

use super::{Bench, Error, FILL_BATCH, Measurement, Report, Result, SINGLE_JOBS, Scenario, System};

/// The queue both measurements use.
const QUEUE: &str = "bench";

/// apalis's commands outside its scripts: `EVALSHA` (`SCRIPT LOAD` after a
/// NOSCRIPT) for every operation, `CLIENT SETINFO` when a connection is made,
/// all in [`super::TOP_LEVEL_ONLY`], and one `ZREM` when a worker stops, which
/// its fetch script also runs: nothing is added.
const APALIS_DIRECT: &[&str] = &[];

/// A storage on the bench server's [`QUEUE`], its connection made.
async fn storage(url: &str) -> Result<RedisStorage<usize>> {
    let conn = apalis_redis::connect(url).await?;
    Ok(RedisStorage::new(conn).with_config(Config::default().queue(QUEUE)))
}

/// Runs the apalis measurements: one job enqueued at a time, then end to end
/// at each concurrency.
pub(super) fn measure(bench: &mut Bench, report: &mut Report) -> Result<()> {
    report.note(
        "apalis: apalis-redis's default Config (10 jobs a fetch, leases, results \
         and events on, every job kept), concurrency through WorkerBuilder::concurrency"
            .to_owned(),
    );
    report.add(enqueue(bench)?)?;
    for concurrency in bench.concurrency.clone() {
        let (measurement, lrem_us_per_job) = end_to_end(bench, concurrency)?;
        report.note(format!(
            "apalis at concurrency {concurrency}: {lrem_us_per_job:.1} of its {:.1} server µs \
             per job are the LREM its lease script runs on the waiting list, which no longer \
             holds the job",
            measurement.server_us_per_job
        ));
        report.add(measurement)?;
    }
    Ok(())
}

/// Moves every job of the scheduled set to the end of the waiting list, with
/// the commands the first step of apalis-redis's fetch script runs (`RPUSH`
/// to the list, the set's members removed, the signal list reset).
///
/// apalis-redis schedules every pushed job for the current second, and its
/// fetch script moves all the due ones in one `RPUSH` of `unpack(ids)`,
/// which Lua refuses past about 8,000 ids ("too many results to unpack"):
/// a worker started on a backlog of more fails on its first fetch. Doing the
/// move here, a chunk at a time and outside the timed part, lets it drain
/// the same backlog as the other systems; its timed part then skips that move.
fn promote(bench: &mut Bench, config: &Config) -> Result<()> {
    let scheduled = config.scheduled_jobs_set();
    let active = config.active_jobs_list();
    let signal = config.signal_list();
    let ids = bench.cmd(&["ZRANGE", &scheduled, "0", "-1"])?;
    let ids = ids.as_array().ok_or("ZRANGE answered no array")?;
    if ids.is_empty() {
        return Ok(());
    }
    let mut push = vec!["RPUSH", active.as_str()];
    for id in ids {
        push.push(
            id.as_str()
                .ok_or("ZRANGE answered an id that is not text")?,
        );
    }
    bench.cmd(&push)?;
    bench.cmd(&["DEL", &scheduled, &signal])?;
    bench.cmd(&["LPUSH", &signal, "1"])?;
    Ok(())
}

/// The length of one of the queue's lists or sets, on the admin connection.
fn count(bench: &mut Bench, command: &str, key: &str) -> Result<i64> {
    Ok(bench
        .cmd(&[command, key])?
        .as_int()
        .ok_or_else(|| format!("{command} answered no integer"))?)
}

/// `min(--jobs, 20,000)` jobs pushed one at a time, each awaited.
pub(super) fn enqueue(bench: &mut Bench) -> Result<Measurement> {
    bench.flush()?;
    let jobs = bench.jobs.min(SINGLE_JOBS);
    let mut storage = bench.runtime.block_on(storage(&bench.server.url()))?;
    bench.reset_stats()?;
    let started = Instant::now();
    bench.runtime.block_on(async {
        for n in 0..jobs {
            storage.push(n).await?;
        }
        Ok::<_, Error>(())
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let stats = bench.command_stats()?;
    // A push without a time is scheduled for now: the fetch moves it to the
    // waiting list once its second has come.
    let config = storage.get_config();
    let waiting = count(bench, "ZCARD", &config.scheduled_jobs_set())?
        + count(bench, "LLEN", &config.active_jobs_list())?;
    if waiting != jobs as i64 {
        return Err(format!("apalis enqueued {waiting} of {jobs} jobs").into());
    }
    Ok(Measurement::new(
        System::Apalis,
        Scenario::EnqueueSingle,
        1,
        jobs,
        seconds,
        &stats,
        APALIS_DIRECT,
    ))
}

/// Pre-filled jobs (not timed) drained by one worker with a no-op handler;
/// also the server's time per job in `LREM`, which only the lease script runs.
fn end_to_end(bench: &mut Bench, concurrency: usize) -> Result<(Measurement, f64)> {
    bench.flush()?;
    let jobs = bench.jobs;
    let mut storage = bench.runtime.block_on(storage(&bench.server.url()))?;
    let config = storage.get_config().clone();
    for first in (0..jobs).step_by(FILL_BATCH) {
        let last = (first + FILL_BATCH).min(jobs);
        bench
            .runtime
            .block_on(storage.push_bulk((first..last).collect()))?;
        promote(bench, &config)?;
    }
    let handled = Arc::new(AtomicUsize::new(0));
    bench.reset_stats()?;
    let started = Instant::now();
    bench.runtime.block_on(async {
        let counter = Arc::clone(&handled);
        let worker = WorkerBuilder::new("bench")
            .backend(storage)
            .concurrency(concurrency)
            .build(move |_job: usize, worker: WorkerContext| {
                let last = counter.fetch_add(1, Ordering::Relaxed) + 1 == jobs;
                std::future::ready(if last {
                    worker.stop()
                } else {
                    Ok::<_, WorkerError>(())
                })
            });
        worker.run().await?;
        Ok::<_, Error>(())
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let stats = bench.command_stats()?;
    let handled = handled.load(Ordering::Relaxed);
    let done = count(bench, "SCARD", &config.done_jobs_set())?;
    let waiting = count(bench, "LLEN", &config.active_jobs_list())?;
    if handled != jobs || done != jobs as i64 || waiting != 0 {
        return Err(format!(
            "apalis handled {handled} of {jobs} jobs, {done} done, {waiting} left waiting"
        )
        .into());
    }
    let lrem_us_per_job = stats.usec.get("lrem").copied().unwrap_or(0) as f64 / jobs as f64;
    Ok((
        Measurement::new(
            System::Apalis,
            Scenario::EndToEnd,
            concurrency,
            jobs,
            seconds,
            &stats,
            APALIS_DIRECT,
        ),
        lrem_us_per_job,
    ))
}
