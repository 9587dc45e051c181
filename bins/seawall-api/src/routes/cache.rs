//! The admin cache routes: `GET /api/cache` (counters per class, sizes,
//! recent hit ratios, warm-up progress), `POST /api/cache?action=warmup`
//! (load the hot keys in the background) and `DELETE /api/cache` (drop the
//! keys of a class matching a pattern, on every instance).

use axum::extract::State;
use axum::http::StatusCode;
use seawall_cache::BreakerState;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::cache::{ApiCache, Family, LearnedWarmUp, RatioPoint, WarmReason, WarmUp};
use crate::extract::Json;
use crate::params::Params;
use crate::problem::Problem;
use crate::state::AppState;

/// The `type` values `DELETE /api/cache` accepts.
const TYPES: [&str; 5] = ["schedule", "session", "computation", "api", "all"];
/// The longest invalidation pattern, in characters (what the contract's
/// `maxLength` counts).
const MAX_PATTERN: usize = 256;
/// The longest namespace a pattern is put under.
const LONGEST_NAMESPACE: usize = "content:".len();
const _: () = assert!(
    MAX_PATTERN * 4 + LONGEST_NAMESPACE <= seawall_cache::MAX_PATTERN_LEN,
    "every pattern the route accepts fits the cache's limit in bytes once namespaced"
);
/// The most users a warm-up loads.
const MAX_WARM_USERS: i64 = 10_000;

/// The admin cache routes; the caller puts them behind the token.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stats, warm_up, invalidate))
}

/// Reads of one TTL class.
#[derive(Debug, Serialize, ToSchema)]
struct ClassRow {
    /// `schedule`, `session`, `computation`, `api` or `preferences`.
    class: String,
    l1_hits: u64,
    l1_misses: u64,
    l2_hits: u64,
    l2_misses: u64,
    loads: u64,
    load_errors: u64,
    /// Reads answered with a value past its TTL (fail-safe).
    stale_serves: u64,
    early_refreshes: u64,
    evictions: u64,
    /// Hits in either tier over reads, since start.
    hit_ratio: f64,
}

/// A key the cache learned is read often, with about how often.
#[derive(Debug, Serialize, ToSchema)]
struct HotRow {
    /// The cache key (`today:<user>:<day end>:<category>:<limit>`,
    /// `stats:<user>`, `content:<page>:<size>:<category>`).
    key: String,
    /// Reads estimated for it (sampled), each counting half after the
    /// learning's half-life (30 minutes).
    reads: f64,
}

/// The keys read most per family, as the cache learned them: what a
/// learned warm-up loads.
#[derive(Debug, Default, Serialize, ToSchema)]
struct HotKeys {
    /// Due reviews (`/api/review/today`).
    today: Vec<HotRow>,
    /// Statistics (`/api/analytics/stats`).
    stats: Vec<HotRow>,
    /// Catalogue pages (`/api/content`).
    content: Vec<HotRow>,
}

/// How many hot keys of each family `GET /api/cache` lists.
const HOT_LISTED: usize = 10;

/// The cache at a glance.
#[derive(Debug, Serialize, ToSchema)]
struct CacheStats {
    /// Whether the workload reads through the cache (`cache.enabled`).
    enabled: bool,
    /// Whether Redis is the second tier.
    redis: bool,
    /// `absent` (no Redis), `closed` (Redis in use) or `open` (Redis failing:
    /// L1 and the database only).
    breaker: String,
    /// With Redis: whether this instance is reading the other instances'
    /// invalidations. While it is not (starting, or cut off from Redis), its
    /// L1 answers no reads. Always false without Redis.
    following: bool,
    /// Hits over reads, every class, since start.
    hit_ratio: f64,
    /// Entries in this instance's L1.
    l1_entries: u64,
    /// The most entries L1 holds.
    l1_capacity: u64,
    /// Keys in Redis (every key of its database, summed over masters); null
    /// without Redis or when it does not answer.
    l2_keys: Option<u64>,
    classes: Vec<ClassRow>,
    /// Hit ratio per class, every 5 s over the last 15 minutes.
    history: Vec<RatioPoint>,
    warm_up: WarmUp,
    /// How many of each family's hottest keys a learned warm-up loads
    /// (`cache.warm_hot`; 0: the cache learns none).
    warm_hot: usize,
    /// The ten hottest keys of each family, with Redis over every instance.
    hot_keys: HotKeys,
    /// The last warm-up of the learned hot keys (at start, after a clear
    /// of L1); null before the first.
    learned_warm_up: Option<LearnedWarmUp>,
    invalidations_sent: u64,
    invalidations_received: u64,
    /// Times this instance cleared its L1 instead of replaying the
    /// invalidations it missed while cut off: the stream no longer held
    /// them all, or another Redis server held it (a failover or restart).
    l1_clears: u64,
    redis_errors: u64,
}

/// Counters per class, sizes, recent hit ratios and warm-up progress.
#[utoipa::path(get, path = "/api/cache", tag = "admin",
    security(("admin_token" = [])),
    responses((status = 200, description = "The cache at a glance", body = CacheStats)),
)]
async fn stats(State(state): State<AppState>) -> Json<CacheStats> {
    let Some(cache) = state.cache() else {
        return Json(CacheStats {
            enabled: false,
            redis: false,
            breaker: "absent".to_owned(),
            following: false,
            hit_ratio: 0.0,
            l1_entries: 0,
            l1_capacity: 0,
            l2_keys: None,
            classes: Vec::new(),
            history: Vec::new(),
            warm_up: WarmUp::default(),
            warm_hot: 0,
            hot_keys: HotKeys::default(),
            learned_warm_up: None,
            invalidations_sent: 0,
            invalidations_received: 0,
            l1_clears: 0,
            redis_errors: 0,
        });
    };
    let stats = cache.stats();
    let l2_keys = match cache.cache().has_redis() {
        true => cache.cache().redis_keys().await.ok(),
        false => None,
    };
    let hot = async |family| {
        cache
            .hot_keys(family, HOT_LISTED)
            .await
            .into_iter()
            .map(|hot| HotRow {
                key: hot.key,
                reads: hot.reads,
            })
            .collect()
    };
    let hot_keys = HotKeys {
        today: hot(Family::Today).await,
        stats: hot(Family::Stats).await,
        content: hot(Family::Content).await,
    };
    Json(CacheStats {
        enabled: true,
        redis: cache.cache().has_redis(),
        breaker: match stats.breaker {
            BreakerState::Open => "open",
            BreakerState::Closed => "closed",
            _ => "absent",
        }
        .to_owned(),
        following: cache.cache().follows_invalidations(),
        hit_ratio: stats.hit_ratio(),
        l1_entries: stats.l1_entries,
        l1_capacity: cache.capacity(),
        l2_keys,
        classes: stats
            .classes
            .iter()
            .map(|class| ClassRow {
                class: class.class.clone(),
                l1_hits: class.l1.hits,
                l1_misses: class.l1.misses,
                l2_hits: class.l2.hits,
                l2_misses: class.l2.misses,
                loads: class.loads,
                load_errors: class.load_errors,
                stale_serves: class.stale_serves,
                early_refreshes: class.early_refreshes,
                evictions: class.evictions,
                hit_ratio: class.hit_ratio,
            })
            .collect(),
        history: cache.history(),
        warm_up: cache.warm_up_progress(),
        warm_hot: cache.warm_hot(),
        hot_keys,
        learned_warm_up: cache.last_learned_warm_up(),
        invalidations_sent: stats.invalidations_sent,
        invalidations_received: stats.invalidations_received,
        l1_clears: stats.l1_clears,
        redis_errors: stats.redis_errors,
    })
}

fn cache_of(state: &AppState) -> Result<&ApiCache, Problem> {
    state.cache().ok_or_else(|| {
        Problem::new(
            StatusCode::CONFLICT,
            "the cache is off (cache.enabled = false)",
        )
    })
}

/// Starts loading the hot keys in the background: the due reviews and
/// statistics of the first `users` learners and the first catalogue pages.
/// `GET /api/cache` shows the progress.
#[utoipa::path(post, path = "/api/cache", tag = "admin",
    security(("admin_token" = [])),
    params(
        ("action" = String, Query, description = "What to do: `warmup`", pattern = "^warmup$", example = "warmup"),
        ("users" = Option<i64>, Query, description = "Learners to warm (default 100)",
            minimum = 1, maximum = 10_000, example = 50),
    ),
    responses(
        (status = 202, description = "The warm-up started", body = WarmUp),
        (status = 409, description = "A warm-up is running, or the cache is off",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn warm_up(
    State(state): State<AppState>,
    params: Params,
) -> Result<(StatusCode, Json<WarmUp>), Problem> {
    params
        .choice("action", &["warmup"])?
        .ok_or_else(|| Problem::bad_parameter("action", "is required"))?;
    let users = params.int("users", 1..=MAX_WARM_USERS, Some(100))?;
    let cache = cache_of(&state)?.clone();
    let ids = state.workload().first_users(users).await?;
    let total = 2 * ids.len() + usize::try_from(seawall_app::workload::WARM_PAGES).unwrap_or(0);
    if !cache.begin_warm_up(total) {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "a warm-up is already running",
        ));
    }
    tokio::spawn(state.workload().clone().warm_up(ids));
    Ok((StatusCode::ACCEPTED, Json(cache.warm_up_progress())))
}

/// Which keys to drop.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"pattern": "7:*", "type": "schedule"}))]
struct Invalidation {
    /// A glob (`*`, `?`, `[a-z]`) over the keys of the class, after its
    /// namespace: due reviews are `<user>:<day>:<category>:<limit>`,
    /// statistics `<user>` (and `standing`, the learners' review counts
    /// every user's standing is measured against), catalogue pages
    /// `<page>:<size>:<category>`.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pattern: String,
    /// `schedule` (due reviews), `computation` (statistics), `api`
    /// (catalogue pages), `session` (nothing of the workload), or `all`.
    #[serde(rename = "type")]
    #[schema(pattern = "^(schedule|session|computation|api|all)$")]
    kind: String,
}

/// What was dropped.
#[derive(Debug, Serialize, ToSchema)]
struct Invalidated {
    #[serde(rename = "type")]
    kind: String,
    pattern: String,
    /// The key patterns dropped, one per key family of the type.
    patterns: Vec<String>,
    /// Redis did not answer: this instance dropped its copies, and the rest
    /// is sent once Redis is back.
    deferred: bool,
}

/// Drops the keys of a class that match a pattern, in Redis (with `SCAN`,
/// never `KEYS`) and in the L1 of every instance. With the pattern `*`,
/// the keys the cache learned are read most are loaded again in the
/// background (see `learned_warm_up` in `GET /api/cache`).
#[utoipa::path(delete, path = "/api/cache", tag = "admin",
    security(("admin_token" = [])),
    request_body(content = Invalidation, content_type = "application/json"),
    responses(
        (status = 200, description = "The keys were dropped", body = Invalidated),
        (status = 409, description = "The cache is off",
            body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The body is not valid JSON, a field is missing or unknown, the type is not one of schedule, session, computation, api, all, or the pattern is empty, longer than 256 characters or holds a control character",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn invalidate(
    State(state): State<AppState>,
    body: Result<Json<Invalidation>, Problem>,
) -> Result<Json<Invalidated>, Problem> {
    let Json(request) = body?;
    if !TYPES.contains(&request.kind.as_str()) {
        return Err(Problem::invalid_field(
            "type",
            format!("must be one of {}", TYPES.join(", ")),
        ));
    }
    let length = request.pattern.chars().count();
    if length == 0 || length > MAX_PATTERN || request.pattern.chars().any(char::is_control) {
        return Err(Problem::invalid_field(
            "pattern",
            format!("must be 1 to {MAX_PATTERN} characters without control characters"),
        ));
    }
    let cache = cache_of(&state)?;
    let families: &[Family] = match request.kind.as_str() {
        "schedule" => &[Family::Today],
        "computation" => &[Family::Stats],
        "api" => &[Family::Content],
        "all" => &[Family::Today, Family::Stats, Family::Content],
        _ => &[],
    };
    let mut patterns = Vec::with_capacity(families.len());
    let mut deferred = false;
    for family in families {
        let pattern = format!("{}:{}", family.namespace(), request.pattern);
        match cache.cache().invalidate_pattern(&pattern).await {
            Ok(()) => {}
            Err(error @ seawall_cache::Error::Invalid(_)) => {
                tracing::error!(%error, pattern = pattern.as_str(), "the cache refused an invalidation the route accepted");
                return Err(Problem::internal());
            }
            // Redis failed: L1 here was dropped, and Redis and the other
            // instances get the invalidation once Redis answers.
            Err(error) => {
                tracing::warn!(%error, pattern = pattern.as_str(), "a cache invalidation reached only this instance for now");
                deferred = true;
            }
        }
        patterns.push(pattern);
    }
    tracing::info!(
        kind = request.kind.as_str(),
        pattern = request.pattern.as_str(),
        "cache invalidated"
    );
    // Whole families dropped: load what the cache learned is read most
    // again before the traffic asks for it.
    if request.pattern == "*" && !patterns.is_empty() {
        let workload = state.workload().clone();
        tokio::spawn(async move { workload.warm_learned(WarmReason::Dropped).await });
    }
    Ok(Json(Invalidated {
        kind: request.kind,
        pattern: request.pattern,
        patterns,
        deferred,
    }))
}
