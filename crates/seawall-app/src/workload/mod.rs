//! The reference workload: what a learner reviews today, completing a
//! review, their statistics and the content catalogue, read through the
//! cache when it is on. [`Workload`] holds what the operations share; each
//! operation validates its input and answers a typed [`WorkloadError`],
//! which the HTTP service maps onto its problems.
//!
//! ```
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use seawall_app::workload::{CompleteReview, Workload, WorkloadError};
//!
//! let dir = tempfile::tempdir()?;
//! let mut config = seawall_app::Config::default();
//! config.database.url = format!("sqlite://{}?mode=rwc", dir.path().join("demo.db").display());
//! config.demo.users = 3;
//! config.demo.contents = 10;
//! config.demo.schedules_per_user = 5;
//! config.demo.history_per_user = 10;
//! let monitor = seawall_app::setup::monitor(&config)?;
//! let db = seawall_app::setup::database(&config, &monitor).await?;
//! seawall_app::seed::ensure(&db, &config.demo, seawall_app::time::now_ms()).await?;
//! let queues = seawall_app::setup::QueueHandle::connect(&config)?;
//! let workload = Workload::new(db, None, queues, &config);
//! let page = workload.contents(1, 5, None).await?;
//! assert_eq!(serde_json::to_value(&page)?["items"].as_array().map(Vec::len), Some(5));
//! let refused = workload.due_reviews(999, None, 10).await;
//! assert!(matches!(refused, Err(WorkloadError::NoSuchUser(999))));
//! let review: CompleteReview =
//!     serde_json::from_value(serde_json::json!({"user_id": 1, "content_id": 1, "rating": 9}))?;
//! assert!(matches!(
//!     workload.complete(review).await,
//!     Err(WorkloadError::Invalid { field: "rating", .. })
//! ));
//! # Ok(())
//! # }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! #     tokio::runtime::Runtime::new()?.block_on(demo())
//! # }
//! ```

mod behind;
mod error;
#[cfg(test)]
mod replica_tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use seawall_cache::WarmUpProgress;
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use crate::ServiceError;
use crate::cache::{ApiCache, Family, LearnedWarmUp, WarmReason};
use crate::config::{Config, QueueConfig, ReviewWrites};
use crate::db::caller;
use crate::db::replicas::Freshness;
use crate::db::{Db, Timed as _};
use crate::json::integer;
use crate::reviews::{Review, ReviewWriter, due_at};
use crate::setup::QueueHandle;
use crate::time::{DAY_MS, now_ms, timestamp};

pub use error::WorkloadError;

/// A review longer than a day is a client bug, not a review.
const MAX_REVIEW_MS: i64 = DAY_MS;
/// Users a warm-up loads at once.
const WARM_CONCURRENCY: usize = 8;
/// Catalogue pages a warm-up loads (the default page size).
pub const WARM_PAGES: i64 = 5;
/// How often [`Workload::keep_warm`] writes the hot keys into its file.
pub const SAVE_HOT_KEYS_EVERY: std::time::Duration = std::time::Duration::from_secs(30);
/// The most due reviews one read lists.
pub const MAX_DUE_LIMIT: i64 = 500;
/// The most catalogue items one page holds.
pub const MAX_PAGE_SIZE: i64 = 100;
/// The highest catalogue page one read asks for: beyond it a client is
/// scanning, not paging.
pub const MAX_PAGE: i64 = 1_000_000;

/// What the workload's operations share. Cheap to clone.
#[derive(Clone)]
pub struct Workload(Arc<Parts>);

struct Parts {
    db: Db,
    cache: Option<ApiCache>,
    queues: QueueHandle,
    queue_config: QueueConfig,
    review_writes: ReviewWrites,
    reviews: ReviewWriter,
}

impl std::fmt::Debug for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workload")
            .field("review_writes", &self.0.review_writes)
            .field("cache", &self.0.cache.is_some())
            .finish_non_exhaustive()
    }
}

impl Workload {
    /// The workload on `db`, read through `cache` when given, with review
    /// writes as `config.cache.review_writes` says (written behind the cache
    /// through `queues` only when there is a cache). Starts the review
    /// writer, so it needs a tokio runtime.
    pub fn new(db: Db, cache: Option<ApiCache>, queues: QueueHandle, config: &Config) -> Self {
        let reviews = ReviewWriter::start(db.clone());
        Self(Arc::new(Parts {
            db,
            cache,
            queues,
            queue_config: config.queue.clone(),
            review_writes: config.cache.review_writes,
            reviews,
        }))
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.0.db
    }

    /// The cache, when it is on.
    pub fn cache(&self) -> Option<&ApiCache> {
        self.0.cache.as_ref()
    }

    /// The job queues.
    pub fn queues(&self) -> &QueueHandle {
        &self.0.queues
    }

    /// The queues' policies.
    pub fn queue_config(&self) -> &QueueConfig {
        &self.0.queue_config
    }

    /// How fresh a load of the database must be: with the cache, a fill,
    /// as of now ([`Freshness::NOW`]: no value older than the last write
    /// of its key is ever cached, whatever a replica's lag); without it,
    /// the current caller's own writes visible ([`caller::freshness`]),
    /// others' at most `database.replica_max_lag` old.
    async fn load_freshness(&self) -> Freshness {
        if self.cache().is_some() {
            Freshness::NOW
        } else {
            caller::freshness().await
        }
    }

    /// How completed reviews are written.
    pub fn review_writes(&self) -> ReviewWrites {
        self.0.review_writes
    }

    /// The learner's reviews due by the end of today (UTC), most overdue
    /// first, at most `limit`, optionally of one category.
    pub async fn due_reviews(
        &self,
        user_id: i64,
        category: Option<&str>,
        limit: i64,
    ) -> Result<DueReviews, WorkloadError> {
        let due_before = end_of_today();
        let found = cached(
            self,
            Family::Today,
            |cache| cache.today_key(user_id, due_before, category, limit),
            Some(user_id),
            {
                let (workload, category) = (self.clone(), category.map(str::to_owned));
                move || load_today(workload, user_id, category, limit, due_before)
            },
        )
        .await?;
        found.ok_or(WorkloadError::NoSuchUser(user_id))
    }

    /// Records a finished review and moves the learner's schedule (SM-2):
    /// the history row and the schedule update together (one transaction
    /// on SQLite, one statement on PostgreSQL), or,
    /// written behind the cache, a job and a pending record. A refused or
    /// failed review writes nothing.
    pub async fn complete(&self, review: CompleteReview) -> Result<Completed, WorkloadError> {
        review.check()?;
        let now = now_ms();
        let completed = Review {
            user_id: review.user_id,
            content_id: review.content_id,
            rating: review.rating,
            duration_ms: review.duration_ms,
            at_ms: now,
        };
        let behind = match (self.review_writes(), self.cache()) {
            (ReviewWrites::WriteBehind, Some(cache)) => Some(cache),
            _ => None,
        };
        let next = match behind {
            None => {
                let next = self
                    .0
                    .reviews
                    .write(completed)
                    .await
                    .map_err(ServiceError::Database)?;
                if next.is_some() {
                    self.db().wrote().await;
                }
                next
            }
            Some(cache) => {
                behind::complete(
                    self.db(),
                    cache,
                    self.queues(),
                    self.queue_config(),
                    completed,
                )
                .await?
            }
        };
        // Nothing was written (or enqueued).
        let Some(next) = next else {
            return Err(WorkloadError::NotScheduled {
                user_id: review.user_id,
                content_id: review.content_id,
            });
        };
        if let Some(cache) = self.cache() {
            cache.forget_user(review.user_id).await;
        }
        let due = due_at(now, next.interval_days);
        Ok(Completed {
            user_id: review.user_id,
            content_id: review.content_id,
            rating: review.rating,
            reviewed_at: timestamp(now),
            next: Schedule {
                due_at: timestamp(due),
                interval_days: next.interval_days,
                repetitions: next.repetitions,
                ease: permille(next.ease_permille),
            },
        })
    }

    /// Aggregates over the learner's review history and their standing
    /// among recent learners.
    pub async fn stats(&self, user_id: i64) -> Result<Stats, WorkloadError> {
        let found = cached(
            self,
            Family::Stats,
            |cache| cache.stats_key(user_id),
            Some(user_id),
            {
                let workload = self.clone();
                move || load_stats(workload, user_id)
            },
        )
        .await?;
        found.ok_or(WorkloadError::NoSuchUser(user_id))
    }

    /// One page of the content catalogue by id; a page past the end is
    /// empty.
    pub async fn contents(
        &self,
        page: i64,
        page_size: i64,
        category: Option<&str>,
    ) -> Result<ContentPage, WorkloadError> {
        let found = cached(
            self,
            Family::Content,
            |cache| cache.content_key(page, page_size, category),
            None,
            {
                let (workload, category) = (self.clone(), category.map(str::to_owned));
                move || async move {
                    load_contents(workload, page, page_size, category)
                        .await
                        .map(Some)
                }
            },
        )
        .await?;
        found.ok_or_else(|| {
            ServiceError::Internal("a catalogue page loaded as nothing".into()).into()
        })
    }

    /// The ids of the first `limit` users, in order: whom a warm-up loads.
    pub async fn first_users(&self, limit: i64) -> Result<Vec<i64>, WorkloadError> {
        const SQL: &str = "SELECT id FROM users ORDER BY id LIMIT $1";
        let db = self.db();
        let rows: Vec<(i64,)> = sqlx::query_as(SQL)
            .bind(limit)
            .fetch_all(&mut *db.acquire().await.map_err(WorkloadError::database)?)
            .timed(db, SQL)
            .await
            .map_err(WorkloadError::database)?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Loads `users`' due reviews and statistics and the first catalogue
    /// pages into the cache, one family after the other, reporting progress
    /// over all of them on the cache (see [`ApiCache::warm_up_progress`]).
    /// Does nothing without a cache.
    pub async fn warm_up(self, users: Vec<i64>) {
        let Some(cache) = self.cache().cloned() else {
            return;
        };
        let total = cache.warm_up_progress().total;
        let due_before = end_of_today();
        let today: BTreeMap<String, Recipe> = users
            .iter()
            .map(|&id| {
                let recipe = Recipe::Today {
                    user: id,
                    day: due_before,
                    category: None,
                    limit: 100,
                };
                (cache.today_key(id, due_before, None, 100), recipe)
            })
            .collect();
        let stats: BTreeMap<String, Recipe> = users
            .iter()
            .map(|&id| (cache.stats_key(id), Recipe::Stats { user: id }))
            .collect();
        let pages: BTreeMap<String, Recipe> = (1..=WARM_PAGES)
            .map(|page| {
                let recipe = Recipe::Content {
                    page,
                    size: 20,
                    category: None,
                };
                (cache.content_key(page, 20, None), recipe)
            })
            .collect();
        let mut base = WarmUpProgress {
            total,
            ..WarmUpProgress::default()
        };
        for keyed in [&today, &stats, &pages] {
            base = self
                .warm_recipes(&cache, keyed, base, None, |step| {
                    cache.report_warm_up(step, false);
                })
                .await;
        }
        cache.report_warm_up(base, true);
        tracing::info!(total, failed = base.failed, "cache warm-up finished");
    }

    /// Loads the hottest keys the cache learned of each family (up to
    /// `cache.warm_hot` each: due reviews of today, statistics, catalogue
    /// pages) that it does not hold, and records the warm-up on the cache
    /// ([`ApiCache::last_learned_warm_up`]) with `reason`. Keys of another
    /// day, or that do not read as a family's key, are passed over.
    /// `None` without a cache, or when it learns nothing.
    pub async fn warm_learned(&self, reason: WarmReason) -> Option<LearnedWarmUp> {
        let cache = self.cache()?.clone();
        let most = cache.warm_hot();
        if most == 0 {
            return None;
        }
        let started = std::time::Instant::now();
        let due_before = end_of_today();
        let mut keyed = BTreeMap::new();
        for family in [Family::Today, Family::Stats, Family::Content] {
            for hot in cache.hot_keys(family, most).await {
                let Some(parts) = cache.parts_of(family, &hot.key) else {
                    continue;
                };
                if let Some(recipe) = Recipe::read(family, &parts, due_before) {
                    keyed.insert(hot.key, recipe);
                }
            }
        }
        let total = keyed.len();
        let loads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let done = self
            .warm_recipes(
                &cache,
                &keyed,
                WarmUpProgress {
                    total,
                    ..WarmUpProgress::default()
                },
                Some(&loads),
                |_| {},
            )
            .await;
        let warmed = LearnedWarmUp {
            reason,
            at_ms: u64::try_from(now_ms()).unwrap_or_default(),
            keys: done.done,
            loaded: loads.load(std::sync::atomic::Ordering::Relaxed),
            failed: done.failed,
            took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        cache.report_learned_warm_up(warmed);
        tracing::info!(
            reason = reason.as_str(),
            keys = warmed.keys,
            failed = warmed.failed,
            took_ms = warmed.took_ms,
            "cache warmed with its learned hot keys"
        );
        Some(warmed)
    }

    /// Keeps the cache warm with what it learned, until the task is
    /// aborted: adds what an earlier process kept in `file` (when given),
    /// warms the hot keys at once ([`WarmReason::Start`]) and again each
    /// time L1 is cleared ([`WarmReason::L1Cleared`]; clears during a
    /// warm-up are one more warm-up after it), and writes what it learned
    /// into `file` every [`SAVE_HOT_KEYS_EVERY`]. Returns at once without
    /// a cache, or when it learns nothing.
    pub async fn keep_warm(self, file: Option<std::path::PathBuf>) {
        let Some(cache) = self.cache().cloned() else {
            return;
        };
        if cache.warm_hot() == 0 {
            return;
        }
        if let Some(file) = &file {
            match cache.load_hot_keys(file) {
                Ok(keys) => tracing::info!(file = %file.display(), keys, "hot keys read"),
                Err(error) => {
                    tracing::warn!(file = %file.display(), %error, "the hot keys kept there cannot be read; learning anew");
                }
            }
        }
        let mut clears = cache.cache().l1_clears();
        clears.borrow_and_update();
        self.warm_learned(WarmReason::Start).await;
        let mut save = tokio::time::interval(SAVE_HOT_KEYS_EVERY);
        save.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        save.tick().await;
        loop {
            tokio::select! {
                changed = clears.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    clears.borrow_and_update();
                    self.warm_learned(WarmReason::L1Cleared).await;
                }
                _ = save.tick(), if file.is_some() => {
                    if let Some(file) = &file
                        && let Err(error) = cache.save_hot_keys(file)
                    {
                        tracing::warn!(file = %file.display(), %error, "the hot keys cannot be kept");
                    }
                }
            }
        }
    }

    /// Warms `items` of one family: a key not cached is loaded by `load`
    /// from its recipe (`recipe` finds it, and is called only then).
    async fn warm_family<T, F, Fut>(
        &self,
        cache: &ApiCache,
        items: Vec<(String, seawall_cache::Options)>,
        recipe: &impl Fn(&str) -> Option<Recipe>,
        report: &mut impl FnMut(WarmUpProgress),
        load: F,
    ) -> WarmUpProgress
    where
        T: Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
        F: Fn(Workload, Recipe) -> Fut,
        Fut: Future<Output = Result<Option<T>, WorkloadError>> + Send + 'static,
    {
        cache
            .cache()
            .warm_up(
                items,
                WARM_CONCURRENCY,
                |key: &str| {
                    let load = recipe(key).map(|recipe| load(self.clone(), recipe));
                    async move {
                        match load {
                            Some(load) => load.await,
                            None => Ok(None),
                        }
                    }
                },
                report,
            )
            .await
    }

    /// Loads every key of `keyed` by its recipe, reporting progress on
    /// top of `base` (what came before it) and counting the loads that ran
    /// in `loads` (a key found cached runs none); returns the progress
    /// after it.
    async fn warm_recipes(
        &self,
        cache: &ApiCache,
        keyed: &BTreeMap<String, Recipe>,
        base: WarmUpProgress,
        loads: Option<&Arc<std::sync::atomic::AtomicUsize>>,
        mut report: impl FnMut(WarmUpProgress),
    ) -> WarmUpProgress {
        // Called only for a key not cached: its load runs.
        let counted = |key: &str| {
            if let Some(loads) = loads {
                loads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            keyed.get(key).cloned()
        };
        let add = |step: WarmUpProgress| WarmUpProgress {
            total: base.total,
            done: base.done + step.done,
            failed: base.failed + step.failed,
        };
        // One pass per family: each caches a value of its own type.
        let mut progress = base;
        for family in [Family::Today, Family::Stats, Family::Content] {
            // Entries of a user are tagged with it, so a change of the user's
            // drops them.
            let items: Vec<_> = keyed
                .iter()
                .filter(|(_, recipe)| recipe.family() == family)
                .map(|(key, recipe)| (key.clone(), ApiCache::options(family, recipe.user())))
                .collect();
            if items.is_empty() {
                continue;
            }
            let at = progress;
            let step = |step: WarmUpProgress| {
                add(WarmUpProgress {
                    total: 0,
                    done: at.done - base.done + step.done,
                    failed: at.failed - base.failed + step.failed,
                })
            };
            let mut report = |now| report(step(now));
            let done = match family {
                Family::Today => {
                    self.warm_family(
                        cache,
                        items,
                        &counted,
                        &mut report,
                        |workload, recipe| async move {
                            let Recipe::Today {
                                user,
                                day,
                                category,
                                limit,
                            } = recipe
                            else {
                                return Ok(None);
                            };
                            load_today(workload, user, category, limit, day).await
                        },
                    )
                    .await
                }
                Family::Stats => {
                    self.warm_family(
                        cache,
                        items,
                        &counted,
                        &mut report,
                        |workload, recipe| async move {
                            let Recipe::Stats { user } = recipe else {
                                return Ok(None);
                            };
                            load_stats(workload, user).await
                        },
                    )
                    .await
                }
                Family::Content => {
                    self.warm_family(
                        cache,
                        items,
                        &counted,
                        &mut report,
                        |workload, recipe| async move {
                            let Recipe::Content {
                                page,
                                size,
                                category,
                            } = recipe
                            else {
                                return Ok(None);
                            };
                            load_contents(workload, page, size, category)
                                .await
                                .map(Some)
                        },
                    )
                    .await
                }
            };
            progress = step(done);
        }
        progress
    }
}

/// The end of the current UTC day, in Unix milliseconds: what today's due
/// reviews are due before.
fn end_of_today() -> i64 {
    let now = now_ms();
    now - now.rem_euclid(DAY_MS) + DAY_MS
}

/// What a cached entry is of, read back from its key: enough to load it
/// again.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Recipe {
    Today {
        user: i64,
        /// The end of the day the reviews are due by (the key's day).
        day: i64,
        category: Option<String>,
        limit: i64,
    },
    Stats {
        user: i64,
    },
    Content {
        page: i64,
        size: i64,
        category: Option<String>,
    },
}

impl Recipe {
    /// The recipe of a `family` key whose parts are `parts`; `None` for a
    /// key of another shape, of values out of the routes' range, or (for
    /// due reviews) of another day than the one ending at `due_before`.
    fn read(family: Family, parts: &[String], due_before: i64) -> Option<Self> {
        let number = |part: &String| part.parse::<i64>().ok();
        let category = |part: &String| (part != "*").then(|| part.clone());
        match (family, parts) {
            (Family::Today, [user, day, kind, limit]) => {
                let limit = number(limit).filter(|limit| (1..=MAX_DUE_LIMIT).contains(limit))?;
                let day = number(day).filter(|day| *day == due_before)?;
                Some(Self::Today {
                    user: number(user)?,
                    day,
                    category: category(kind),
                    limit,
                })
            }
            (Family::Stats, [user]) => Some(Self::Stats {
                user: number(user)?,
            }),
            (Family::Content, [page, size, kind]) => Some(Self::Content {
                page: number(page).filter(|page| (1..=MAX_PAGE).contains(page))?,
                size: number(size).filter(|size| (1..=MAX_PAGE_SIZE).contains(size))?,
                category: category(kind),
            }),
            _ => None,
        }
    }

    fn family(&self) -> Family {
        match self {
            Self::Today { .. } => Family::Today,
            Self::Stats { .. } => Family::Stats,
            Self::Content { .. } => Family::Content,
        }
    }

    /// The user whose change drops the entry, if any.
    fn user(&self) -> Option<i64> {
        match self {
            Self::Today { user, .. } | Self::Stats { user } => Some(*user),
            Self::Content { .. } => None,
        }
    }
}

async fn user_exists(
    connection: &mut AnyConnection,
    db: &Db,
    user_id: i64,
) -> Result<bool, sqlx::Error> {
    const SQL: &str = "SELECT id FROM users WHERE id = $1";
    let found: Option<(i64,)> = sqlx::query_as(SQL)
        .bind(user_id)
        .fetch_optional(connection)
        .timed(db, SQL)
        .await?;
    Ok(found.is_some())
}

/// Reads through the cache when it is on: `load` runs on a miss (once for
/// concurrent misses) and its result, `None` included, is cached by
/// `family`'s class, tagged with the user.
async fn cached<T, F, Fut>(
    workload: &Workload,
    family: Family,
    key: impl FnOnce(&ApiCache) -> String,
    user_id: Option<i64>,
    load: F,
) -> Result<Option<T>, WorkloadError>
where
    T: Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Option<T>, WorkloadError>> + Send + 'static,
{
    let Some(cache) = workload.cache() else {
        return load().await;
    };
    let key = key(cache);
    // The load runs in a task of its own: it keeps the request's span, so
    // its statements are logged under the request.
    let load = tracing::Instrument::in_current_span(load());
    cache
        .cache()
        .get_or_load(&key, ApiCache::options(family, user_id), move || load)
        .await
        .map_err(|error| ServiceError::Cache(error).into())
}

// The reviews due for a learner by the end of the UTC day.
// No doc comment: the OpenAPI contract shows this schema without a
// description, and a doc comment would become one.
#[allow(missing_docs)]
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DueReviews {
    user_id: i64,
    category: Option<String>,
    /// Reviews due before this moment (the end of the current UTC day).
    due_before: String,
    count: usize,
    items: Vec<DueReview>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
struct DueReview {
    content_id: i64,
    title: String,
    category: String,
    difficulty: i64,
    due_at: String,
    interval_days: i64,
    repetitions: i64,
    ease: f64,
}

type DueRow = (i64, String, String, i64, i64, i64, i64, i64, Option<i64>);

/// Rows `/api/review/today` reads beyond its limit under write-behind, so
/// that reviews still pending (which leave the list) do not shorten it.
const PENDING_SLACK: i64 = 32;

/// The due reviews from the database; `None` when the user does not exist.
async fn load_today(
    workload: Workload,
    user_id: i64,
    category: Option<String>,
    limit: i64,
    due_before: i64,
) -> Result<Option<DueReviews>, WorkloadError> {
    let db = workload.db();
    let freshness = workload.load_freshness().await;

    const ALL: &str = "SELECT s.content_id, c.title, c.category, c.difficulty, s.due_at, \
                              s.interval_days, s.repetitions, s.ease_permille, s.last_reviewed_at \
                       FROM review_schedules s JOIN contents c ON c.id = s.content_id \
                       WHERE s.user_id = $1 AND s.due_at < $2 \
                       ORDER BY s.due_at, s.content_id LIMIT $3";
    const IN_CATEGORY: &str = "SELECT s.content_id, c.title, c.category, c.difficulty, s.due_at, \
                                      s.interval_days, s.repetitions, s.ease_permille, \
                                      s.last_reviewed_at \
                               FROM review_schedules s JOIN contents c ON c.id = s.content_id \
                               WHERE s.user_id = $1 AND s.due_at < $2 AND c.category = $4 \
                               ORDER BY s.due_at, s.content_id LIMIT $3";
    let sql = if category.is_some() { IN_CATEGORY } else { ALL };
    let behind = match (workload.review_writes(), workload.cache()) {
        (ReviewWrites::WriteBehind, Some(cache)) => Some(cache),
        _ => None,
    };
    let read = if behind.is_some() {
        limit + PENDING_SLACK
    } else {
        limit
    };
    // One connection for the whole load: under load, every extra pool
    // checkout is another wait. As fresh as `load_freshness` says.
    let found = db
        .read(freshness, |connection| {
            let (db, category) = (db.clone(), category.clone());
            Box::pin(async move {
                let mut query = sqlx::query_as::<_, DueRow>(sql)
                    .bind(user_id)
                    .bind(due_before)
                    .bind(read);
                if let Some(category) = category {
                    query = query.bind(category);
                }
                let rows = query.fetch_all(&mut *connection).timed(&db, sql).await?;
                // Only an empty list can mean an unknown user.
                if rows.is_empty() && !user_exists(connection, &db, user_id).await? {
                    return Ok(None);
                }
                Ok(Some(rows))
            })
        })
        .await
        .map_err(WorkloadError::database)?;
    let Some(mut rows) = found else {
        return Ok(None);
    };
    if let Some(cache) = behind {
        rows = with_pending(cache, user_id, rows, due_before).await;
    }
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let items: Vec<DueReview> = rows
        .into_iter()
        .map(
            |(
                content_id,
                title,
                category,
                difficulty,
                due_at,
                interval_days,
                repetitions,
                ease,
                _,
            )| {
                DueReview {
                    content_id,
                    title,
                    category,
                    difficulty,
                    due_at: timestamp(due_at),
                    interval_days,
                    repetitions,
                    ease: permille(ease),
                }
            },
        )
        .collect();
    Ok(Some(DueReviews {
        user_id,
        category,
        due_before: timestamp(due_before),
        count: items.len(),
        items,
    }))
}

/// Lays the user's reviews still pending behind the cache over the rows
/// read from the database: a pending review newer than the row's last one
/// moves the row to its new schedule, out of the list when that is due
/// after `due_before`.
async fn with_pending(
    cache: &ApiCache,
    user_id: i64,
    rows: Vec<DueRow>,
    due_before: i64,
) -> Vec<DueRow> {
    let contents: Vec<i64> = rows.iter().map(|row| row.0).collect();
    let pending = behind::pending(cache, user_id, &contents).await;
    let mut rows: Vec<DueRow> = rows
        .into_iter()
        .zip(pending)
        .filter_map(|(mut row, pending)| {
            if let Some(pending) = pending.filter(|p| row.8.is_none_or(|last| p.at_ms > last)) {
                row.4 = pending.due_at;
                row.5 = pending.interval_days;
                row.6 = pending.repetitions;
                row.7 = pending.ease_permille;
                row.8 = Some(pending.at_ms);
            }
            (row.4 < due_before).then_some(row)
        })
        .collect();
    rows.sort_by_key(|row| (row.4, row.0));
    rows
}

#[allow(clippy::cast_precision_loss)] // ease factors are a few thousand
fn permille(value: i64) -> f64 {
    value as f64 / 1000.0
}

// A finished review, as a client sends it.
// No doc comment: the OpenAPI contract shows this schema without a
// description, and a doc comment would become one.
#[allow(missing_docs)]
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"user_id": 7, "content_id": 335, "rating": 4, "duration_ms": 5200}))]
pub struct CompleteReview {
    /// The learner.
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 1)]
    user_id: i64,
    /// The content reviewed; the learner must have it scheduled.
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 1)]
    content_id: i64,
    /// SM-2 quality, 0 to 5: below 3 is a failed review.
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 0, maximum = 5)]
    rating: i64,
    /// Time spent on the review in milliseconds (default 0).
    #[serde(default, deserialize_with = "integer")]
    #[schema(minimum = 0, maximum = 86_400_000)]
    duration_ms: i64,
}

impl CompleteReview {
    /// The rules a review must follow before anything is written.
    fn check(&self) -> Result<(), WorkloadError> {
        let invalid = |field, reason: String| Err(WorkloadError::Invalid { field, reason });
        if self.user_id < 1 {
            return invalid("user_id", "must be a positive integer".to_owned());
        }
        if self.content_id < 1 {
            return invalid("content_id", "must be a positive integer".to_owned());
        }
        if !(0..=5).contains(&self.rating) {
            return invalid(
                "rating",
                format!("must be between 0 and 5, got {}", self.rating),
            );
        }
        if !(0..=MAX_REVIEW_MS).contains(&self.duration_ms) {
            return invalid(
                "duration_ms",
                format!(
                    "must be between 0 and {MAX_REVIEW_MS}, got {}",
                    self.duration_ms
                ),
            );
        }
        Ok(())
    }
}

// A recorded review and the next schedule.
// No doc comment: the OpenAPI contract shows this schema without a
// description, and a doc comment would become one.
#[allow(missing_docs)]
#[derive(Debug, Serialize, ToSchema)]
pub struct Completed {
    user_id: i64,
    content_id: i64,
    rating: i64,
    reviewed_at: String,
    next: Schedule,
}

#[derive(Debug, Serialize, ToSchema)]
struct Schedule {
    due_at: String,
    interval_days: i64,
    repetitions: i64,
    ease: f64,
}

// A learner's statistics.
// No doc comment: the OpenAPI contract shows this schema without a
// description, and a doc comment would become one.
#[allow(missing_docs)]
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    user_id: i64,
    generated_at: String,
    totals: Totals,
    last_7_days: Period,
    last_30_days: Period,
    by_category: Vec<CategoryStats>,
    /// Reviews per UTC day over the last 30 days, oldest first, days without
    /// reviews included.
    daily: Vec<Day>,
    schedules: ScheduleStats,
    /// Where the user stands among learners active in the last 30 days.
    standing: Standing,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
struct Totals {
    reviews: i64,
    passed: i64,
    accuracy: f64,
    average_rating: Option<f64>,
    study_time_ms: i64,
    first_review_at: Option<String>,
    last_review_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
struct Period {
    reviews: i64,
    passed: i64,
    accuracy: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
struct CategoryStats {
    category: String,
    reviews: i64,
    accuracy: f64,
    average_rating: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
struct Day {
    date: String,
    reviews: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
struct ScheduleStats {
    total: i64,
    due_now: i64,
    /// Schedules with an interval of three weeks or more.
    mastered: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
struct Standing {
    active_learners: i64,
    /// The share of active learners with fewer reviews in the period.
    percentile: f64,
}

#[allow(clippy::cast_precision_loss)] // counts far below 2^52
fn ratio(part: i64, whole: i64) -> f64 {
    if whole > 0 {
        part as f64 / whole as f64
    } else {
        0.0
    }
}

/// The statistics from the database; `None` when the user does not exist.
async fn load_stats(workload: Workload, user_id: i64) -> Result<Option<Stats>, WorkloadError> {
    let db = workload.db();
    let freshness = workload.load_freshness().await;
    let now = now_ms();
    let week_ago = now - 7 * DAY_MS;
    let month_ago = now - 30 * DAY_MS;
    let first_day = now - now.rem_euclid(DAY_MS) - 29 * DAY_MS;

    const TOTALS: &str = "SELECT COUNT(*), \
             CAST(COALESCE(SUM(CASE WHEN rating >= 3 THEN 1 ELSE 0 END), 0) AS BIGINT), \
             CAST(AVG(rating) AS DOUBLE PRECISION), \
             CAST(COALESCE(SUM(duration_ms), 0) AS BIGINT), \
             MIN(reviewed_at), MAX(reviewed_at), \
             CAST(COALESCE(SUM(CASE WHEN reviewed_at >= $2 THEN 1 ELSE 0 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN reviewed_at >= $2 AND rating >= 3 THEN 1 ELSE 0 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN reviewed_at >= $3 THEN 1 ELSE 0 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN reviewed_at >= $3 AND rating >= 3 THEN 1 ELSE 0 END), 0) AS BIGINT) \
         FROM review_history WHERE user_id = $1";
    const BY_CATEGORY: &str = "SELECT c.category, COUNT(*), \
             CAST(SUM(CASE WHEN h.rating >= 3 THEN 1 ELSE 0 END) AS BIGINT), \
             CAST(AVG(h.rating) AS DOUBLE PRECISION) \
         FROM review_history h JOIN contents c ON c.id = h.content_id \
         WHERE h.user_id = $1 GROUP BY c.category ORDER BY c.category";
    const DAILY: &str = "SELECT (reviewed_at - $2) / 86400000 AS day, COUNT(*) \
         FROM review_history WHERE user_id = $1 AND reviewed_at >= $2 \
         GROUP BY (reviewed_at - $2) / 86400000 ORDER BY day";
    const SCHEDULES: &str = "SELECT COUNT(*), \
             CAST(COALESCE(SUM(CASE WHEN due_at <= $2 THEN 1 ELSE 0 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN interval_days >= 21 THEN 1 ELSE 0 END), 0) AS BIGINT) \
         FROM review_schedules WHERE user_id = $1";

    type TotalsRow = (
        i64,
        i64,
        Option<f64>,
        i64,
        Option<i64>,
        Option<i64>,
        i64,
        i64,
        i64,
        i64,
    );
    type Read = (
        TotalsRow,
        Vec<(String, i64, i64, f64)>,
        Vec<(i64, i64)>,
        (i64, i64, i64),
    );
    // One connection, the statements in turn: under load, four checkouts
    // at once cost more waiting than running them side by side saves, as
    // fresh as `load_freshness` says. The connection is returned before the shared learner counts, which
    // may need one.
    let found: Option<Read> = db
        .read(freshness, |connection| {
            let db = db.clone();
            Box::pin(async move {
                let totals = sqlx::query_as::<_, TotalsRow>(TOTALS)
                    .bind(user_id)
                    .bind(week_ago)
                    .bind(month_ago)
                    .fetch_one(&mut *connection)
                    .timed(&db, TOTALS)
                    .await?;
                // Only a learner without reviews can be an unknown user.
                if totals.0 == 0 && !user_exists(connection, &db, user_id).await? {
                    return Ok(None);
                }
                let by_category = sqlx::query_as::<_, (String, i64, i64, f64)>(BY_CATEGORY)
                    .bind(user_id)
                    .fetch_all(&mut *connection)
                    .timed(&db, BY_CATEGORY)
                    .await?;
                let daily = sqlx::query_as::<_, (i64, i64)>(DAILY)
                    .bind(user_id)
                    .bind(first_day)
                    .fetch_all(&mut *connection)
                    .timed(&db, DAILY)
                    .await?;
                let schedules = sqlx::query_as::<_, (i64, i64, i64)>(SCHEDULES)
                    .bind(user_id)
                    .bind(now)
                    .fetch_one(&mut *connection)
                    .timed(&db, SCHEDULES)
                    .await?;
                Ok(Some((totals, by_category, daily, schedules)))
            })
        })
        .await
        .map_err(WorkloadError::database)?;
    let Some((totals, by_category, daily, schedules)) = found else {
        return Ok(None);
    };
    let (
        reviews,
        passed,
        average_rating,
        study_time_ms,
        first,
        last,
        week,
        week_passed,
        month,
        month_passed,
    ) = totals;
    let learners = learners_by_reviews(&workload).await?;
    let active_learners = learners.iter().map(|&(_, learners)| learners).sum();
    let behind = learners
        .iter()
        .filter(|&&(reviews, _)| reviews < month)
        .map(|&(_, learners)| learners)
        .sum();

    let mut days: Vec<Day> = (0..30)
        .map(|i| Day {
            date: timestamp(first_day + i * DAY_MS)[..10].to_owned(),
            reviews: 0,
        })
        .collect();
    for (day, count) in daily {
        if let Some(slot) = usize::try_from(day).ok().and_then(|day| days.get_mut(day)) {
            slot.reviews = count;
        }
    }
    let (total, due_now, mastered) = schedules;
    Ok(Some(Stats {
        user_id,
        generated_at: timestamp(now),
        totals: Totals {
            reviews,
            passed,
            accuracy: ratio(passed, reviews),
            average_rating,
            study_time_ms,
            first_review_at: first.map(timestamp),
            last_review_at: last.map(timestamp),
        },
        last_7_days: Period {
            reviews: week,
            passed: week_passed,
            accuracy: ratio(week_passed, week),
        },
        last_30_days: Period {
            reviews: month,
            passed: month_passed,
            accuracy: ratio(month_passed, month),
        },
        by_category: by_category
            .into_iter()
            .map(
                |(category, reviews, passed, average_rating)| CategoryStats {
                    category,
                    reviews,
                    accuracy: ratio(passed, reviews),
                    average_rating,
                },
            )
            .collect(),
        daily: days,
        schedules: ScheduleStats {
            total,
            due_now,
            mastered,
        },
        standing: Standing {
            active_learners,
            percentile: ratio(behind, active_learners),
        },
    }))
}

/// How many learners made how many reviews in the last 30 days, as
/// `(reviews, learners)`: what every user's standing is measured against.
/// It is the same for every user and the costliest part of the statistics
/// (it groups the whole month of history), so it is cached on its own, in the
/// computation class, and every user's statistics load shares it; a user's
/// percentile may then lag the other learners' activity by up to the class's
/// TTL, as their cached statistics would anyway.
async fn learners_by_reviews(workload: &Workload) -> Result<Vec<(i64, i64)>, WorkloadError> {
    let found = cached(workload, Family::Stats, ApiCache::standing_key, None, {
        let workload = workload.clone();
        move || load_learners_by_reviews(workload)
    })
    .await?;
    Ok(found.unwrap_or_default())
}

async fn load_learners_by_reviews(
    workload: Workload,
) -> Result<Option<Vec<(i64, i64)>>, WorkloadError> {
    const SQL: &str = "SELECT reviews, COUNT(*) \
         FROM (SELECT user_id, COUNT(*) AS reviews FROM review_history \
               WHERE reviewed_at >= $1 GROUP BY user_id) AS active \
         GROUP BY reviews ORDER BY reviews";
    let db = workload.db();
    let freshness = workload.load_freshness().await;
    let month_ago = now_ms() - 30 * DAY_MS;
    let rows: Vec<(i64, i64)> = db
        .read(freshness, |connection| {
            let db = db.clone();
            Box::pin(async move {
                sqlx::query_as(SQL)
                    .bind(month_ago)
                    .fetch_all(connection)
                    .timed(&db, SQL)
                    .await
            })
        })
        .await
        .map_err(WorkloadError::database)?;
    Ok(Some(rows))
}

// One page of the content catalogue.
// No doc comment: the OpenAPI contract shows this schema without a
// description, and a doc comment would become one.
#[allow(missing_docs)]
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ContentPage {
    page: i64,
    page_size: i64,
    total: i64,
    total_pages: i64,
    category: Option<String>,
    items: Vec<Content>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
struct Content {
    id: i64,
    title: String,
    category: String,
    difficulty: i64,
    created_at: String,
}

/// One page of the catalogue from the database.
async fn load_contents(
    workload: Workload,
    page: i64,
    page_size: i64,
    category: Option<String>,
) -> Result<ContentPage, WorkloadError> {
    let db = workload.db();
    let freshness = workload.load_freshness().await;
    let offset = (page - 1) * page_size;

    const COUNT_ALL: &str = "SELECT COUNT(*) FROM contents";
    const COUNT_IN: &str = "SELECT COUNT(*) FROM contents WHERE category = $1";
    const PAGE_ALL: &str = "SELECT id, title, category, difficulty, created_at FROM contents \
                            ORDER BY id LIMIT $1 OFFSET $2";
    const PAGE_IN: &str = "SELECT id, title, category, difficulty, created_at FROM contents \
                           WHERE category = $3 ORDER BY id LIMIT $1 OFFSET $2";
    let (count_sql, page_sql) = if category.is_some() {
        (COUNT_IN, PAGE_IN)
    } else {
        (COUNT_ALL, PAGE_ALL)
    };
    // Each statement as fresh as `load_freshness` says; the two run side
    // by side.
    let read_count = |category: Option<String>| {
        db.read(freshness, move |connection| {
            let (db, category) = (db.clone(), category.clone());
            Box::pin(async move {
                let mut count = sqlx::query_as::<_, (i64,)>(count_sql);
                if let Some(category) = category {
                    count = count.bind(category);
                }
                count.fetch_one(connection).timed(&db, count_sql).await
            })
        })
    };
    let read_rows = |category: Option<String>| {
        db.read(freshness, move |connection| {
            let (db, category) = (db.clone(), category.clone());
            Box::pin(async move {
                let mut rows = sqlx::query_as::<_, (i64, String, String, i64, i64)>(page_sql)
                    .bind(page_size)
                    .bind(offset);
                if let Some(category) = category {
                    rows = rows.bind(category);
                }
                rows.fetch_all(connection).timed(&db, page_sql).await
            })
        })
    };
    let ((total,), rows) =
        tokio::try_join!(read_count(category.clone()), read_rows(category.clone()))
            .map_err(WorkloadError::database)?;
    Ok(ContentPage {
        page,
        page_size,
        total,
        total_pages: (total + page_size - 1) / page_size,
        category,
        items: rows
            .into_iter()
            .map(|(id, title, category, difficulty, created_at)| Content {
                id,
                title,
                category,
                difficulty,
                created_at: timestamp(created_at),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|part| (*part).to_owned()).collect()
    }

    #[test]
    fn a_recipe_reads_back_from_the_parts_of_each_familys_keys() {
        let day = 1_800_000_000_000;
        assert_eq!(
            Recipe::read(
                Family::Today,
                &parts(&["7", "1800000000000", "*", "100"]),
                day
            ),
            Some(Recipe::Today {
                user: 7,
                day,
                category: None,
                limit: 100
            })
        );
        assert_eq!(
            Recipe::read(
                Family::Today,
                &parts(&["7", "1800000000000", "math", "20"]),
                day
            )
            .and_then(|recipe| match recipe {
                Recipe::Today { category, .. } => category,
                _ => None,
            }),
            Some("math".to_owned())
        );
        assert_eq!(
            Recipe::read(Family::Stats, &parts(&["9"]), day),
            Some(Recipe::Stats { user: 9 })
        );
        assert_eq!(
            Recipe::read(Family::Content, &parts(&["2", "20", "*"]), day),
            Some(Recipe::Content {
                page: 2,
                size: 20,
                category: None
            })
        );
        for (family, key) in [
            // Another day's reviews are stale by now.
            (Family::Today, &["7", "1799913600000", "*", "100"][..]),
            (Family::Today, &["7", "1800000000000", "*", "0"]),
            (Family::Today, &["7", "1800000000000", "*", "501"]),
            (Family::Today, &["x", "1800000000000", "*", "100"]),
            (Family::Stats, &["standing"]),
            (Family::Stats, &["9", "extra"]),
            (Family::Content, &["0", "20", "*"]),
            (Family::Content, &["1", "101", "*"]),
            (Family::Content, &["1", "20"]),
        ] {
            assert_eq!(
                Recipe::read(family, &parts(key), day),
                None,
                "{family:?} {key:?}"
            );
        }
    }
}
