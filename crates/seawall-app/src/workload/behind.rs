//! Reviews written behind the cache (`cache.review_writes = "write-behind"`).
//!
//! Completing a review computes the next schedule, enqueues the
//! database write as a job on the `schedule` queue, and records the review
//! as *pending* in the cache before it answers; a worker applies the job
//! (once per review id, however often it runs) and then drops the user's
//! cached reads. Until then, reads see the review through the pending
//! records:
//!
//! - the next review of the same content starts from the pending schedule,
//!   not the database's;
//! - `/api/review/today` lays the user's pending records over the rows it
//!   loads, so a reviewed content leaves the list at once.
//!
//! The statistics catch up once the worker has written the review. A
//! pending record lives in the session class (24 h): a write that waits
//! longer than that for a worker is still applied, but reads stop seeing
//! it until it is.

use seawall_cache::{Class, Options};
use serde::{Deserialize, Serialize};

use super::error::WorkloadError;
use crate::ServiceError;
use crate::cache::ApiCache;
use crate::config::QueueConfig;
use crate::config::QueueName;
use crate::db::{Db, Timed as _};
use crate::jobs::{self, Refusal, ReviewWrite, ScheduleJob};
use crate::reviews::{Review, SchedulePoint, due_at, next_schedule};
use crate::setup::QueueHandle;

/// A review the database may not have yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pending {
    /// When it was completed (Unix ms).
    pub(crate) at_ms: i64,
    pub(crate) due_at: i64,
    pub(crate) interval_days: i64,
    pub(crate) ease_permille: i64,
    pub(crate) repetitions: i64,
}

impl Pending {
    pub(crate) fn point(&self) -> SchedulePoint {
        SchedulePoint {
            interval_days: self.interval_days,
            ease_permille: self.ease_permille,
            repetitions: self.repetitions,
        }
    }
}

fn options() -> Options {
    Options::new(Class::SESSION)
}

/// The pending records of `contents` of `user_id`, in order.
pub(crate) async fn pending(
    cache: &ApiCache,
    user_id: i64,
    contents: &[i64],
) -> Vec<Option<Pending>> {
    let keys: Vec<String> = contents
        .iter()
        .map(|content| cache.pending_key(user_id, *content))
        .collect();
    cache.cache().get_many(&keys, Class::SESSION).await
}

/// Where the learner stands with the content: the pending record if it is
/// newer than the database's row. `None` when there is no schedule.
async fn current(
    db: &Db,
    cache: &ApiCache,
    review: &Review,
) -> Result<Option<SchedulePoint>, WorkloadError> {
    const SELECT: &str = "SELECT interval_days, ease_permille, repetitions, last_reviewed_at \
                          FROM review_schedules WHERE user_id = $1 AND content_id = $2";
    let row: Option<(i64, i64, i64, Option<i64>)> = sqlx::query_as(SELECT)
        .bind(review.user_id)
        .bind(review.content_id)
        .fetch_optional(&mut *db.acquire().await.map_err(WorkloadError::database)?)
        .timed(db, SELECT)
        .await
        .map_err(WorkloadError::database)?;
    let Some((interval_days, ease_permille, repetitions, last)) = row else {
        return Ok(None);
    };
    let pending = pending(cache, review.user_id, &[review.content_id])
        .await
        .into_iter()
        .flatten()
        .next();
    Ok(Some(match pending {
        Some(pending) if last.is_none_or(|last| pending.at_ms > last) => pending.point(),
        _ => SchedulePoint {
            interval_days,
            ease_permille,
            repetitions,
        },
    }))
}

/// A review id nobody else will draw: 128 random bits in hex.
fn review_id() -> Result<String, WorkloadError> {
    let mut bytes = [0_u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|error| ServiceError::Internal(format!("the random source failed: {error}")))?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

pub(crate) async fn complete(
    db: &Db,
    cache: &ApiCache,
    queues: &QueueHandle,
    queue_config: &QueueConfig,
    review: Review,
) -> Result<Option<SchedulePoint>, WorkloadError> {
    let Some(current) = current(db, cache, &review).await? else {
        return Ok(None);
    };
    let next = next_schedule(current, review.rating);
    let write = ReviewWrite {
        review_id: review_id()?,
        user_id: review.user_id,
        content_id: review.content_id,
        rating: review.rating,
        duration_ms: review.duration_ms,
        at_ms: review.at_ms,
        interval_days: next.interval_days,
        ease_permille: next.ease_permille,
        repetitions: next.repetitions,
    };
    let queues = queues.get().ok_or(ServiceError::QueuesConnecting)?;
    let payload = serde_json::to_value(ScheduleJob::Review(write))
        .map_err(|error| ServiceError::Internal(format!("a review did not serialise: {error}")))?;
    match jobs::enqueue(queues, queue_config, QueueName::Schedule, payload, None).await {
        Ok(_) => {}
        Err(Refusal::Invalid(refused)) => {
            return Err(ServiceError::Internal(format!(
                "a computed review broke the schedule queue's rules: {refused}"
            ))
            .into());
        }
        Err(Refusal::Queue(error)) => return Err(ServiceError::Queue(error).into()),
    }
    let pending = Pending {
        at_ms: review.at_ms,
        due_at: due_at(review.at_ms, next.interval_days),
        interval_days: next.interval_days,
        ease_permille: next.ease_permille,
        repetitions: next.repetitions,
    };
    let key = cache.pending_key(review.user_id, review.content_id);
    if let Err(error) = cache.cache().set(&key, options(), pending).await {
        // The write is queued; reads catch up once a worker applies it.
        tracing::warn!(%error, "a pending review could not be cached; reads catch up once it is applied");
    }
    Ok(Some(next))
}
