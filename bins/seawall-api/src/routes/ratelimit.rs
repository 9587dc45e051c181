//! The admin rate-limit routes: `GET /api/rate-limit` (limiters, their
//! counts, blocked, most-rejected and most-checked keys, how the health
//! scales them, the
//! in-flight limit, tiers and tenants),
//! `POST /api/rate-limit` (a tenant's tier), `DELETE /api/rate-limit`
//! (reset a key), `POST` / `DELETE /api/rate-limit/block`, and the abuse
//! watch's `GET` / `DELETE /api/rate-limit/abuse` (findings and actions; a
//! pardon).

use axum::extract::State;
use axum::http::StatusCode;
use seawall_perfmon::HealthStatus;
use seawall_ratelimit::Limiter;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::Json;
use crate::params::Params;
use crate::problem::Problem;
use crate::problem::ratelimit::admin_query_failed;
use crate::ratelimit::{RateLimits, Tier, is_tenant_id};
use crate::state::AppState;

/// The limiters' names, as the routes accept them.
const LIMITERS: [&str; 5] = ["ddos", "api", "auth", "report", "tenant"];
/// The longest block an admin may set: a day.
const MAX_BLOCK_SECONDS: i64 = 86_400;
/// The longest key an admin may name, in characters (what the contract's
/// `maxLength` counts). Every key the limiters count is shorter: a client
/// address, `key:` and a key's id, `user:` and 64 characters, or a tenant id.
const MAX_KEY_CHARS: usize = 128;
const _: () = assert!(
    MAX_KEY_CHARS * 4 <= seawall_ratelimit::MAX_KEY_BYTES,
    "any key an admin may name fits the limiters' limit in bytes"
);
/// What is wrong with `key` as a rate-limit key an admin names: too short or
/// long (a range: 400 in a query, 422 in a body), or with a control
/// character (a value no key can have: 422).
enum BadKey {
    Length,
    Control,
}

impl BadKey {
    fn of(key: &str) -> Option<Self> {
        let length = key.chars().count();
        if length == 0 || length > MAX_KEY_CHARS {
            Some(Self::Length)
        } else if key.chars().any(char::is_control) {
            Some(Self::Control)
        } else {
            None
        }
    }

    fn reason(&self) -> String {
        match self {
            Self::Length => format!("must be 1 to {MAX_KEY_CHARS} characters"),
            Self::Control => "must not contain control characters".to_owned(),
        }
    }

    /// The problem for the key given as a query parameter.
    fn in_query(&self) -> Problem {
        match self {
            Self::Length => Problem::bad_parameter("key", self.reason()),
            Self::Control => Problem::unprocessable_parameter("key", self.reason()),
        }
    }
}

/// The admin rate-limit routes; the caller puts them behind the token.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(stats, set_tier, reset))
        .routes(routes!(block, unblock))
        .routes(routes!(abuse, pardon))
}

/// One rule of a limiter.
#[derive(Debug, Serialize, ToSchema)]
struct Rule {
    /// The rule's name (`default` for a limiter of one rule).
    name: String,
    /// The algorithm, such as `sliding_window` or `gcra`.
    algorithm: &'static str,
    /// Requests admitted per period, or the burst of a rate algorithm.
    capacity: u64,
    /// The window, or the period the rate is given per, in seconds.
    period_seconds: f64,
}

/// Decisions by outcome since the instance started.
#[derive(Debug, Serialize, ToSchema)]
struct Counts {
    allowed: u64,
    rejected: u64,
    shadow_rejected: u64,
    near_limit: u64,
    degraded: u64,
}

/// A key blocked now.
#[derive(Debug, Serialize, ToSchema)]
struct Blocked {
    key: String,
    /// Seconds until the block ends.
    remaining_seconds: f64,
}

/// A key often rejected.
#[derive(Debug, Serialize, ToSchema)]
struct Rejected {
    key: String,
    /// Rejections counted (an upper bound).
    rejections: u64,
}

/// A key checked often.
#[derive(Debug, Serialize, ToSchema)]
struct Caller {
    key: String,
    /// Checks estimated for it (one in 32 is counted, 32 times).
    checks: u64,
}

/// One limiter as this instance sees it.
#[derive(Debug, Serialize, ToSchema)]
struct LimiterStats {
    /// `ddos`, `api`, `auth`, `report` or `tenant`.
    name: String,
    /// `memory` or `redis`.
    store: &'static str,
    /// The quota checked now, scaled by `scale` (for `tenant`: the free
    /// tier; each tenant has its tier's, scaled the same).
    rules: Vec<Rule>,
    /// The share of its configured quota the limiter admits now: below 1
    /// while the service's health has tightened it.
    scale: f64,
    /// How long a key is blocked after exceeding the limit.
    block_seconds: f64,
    /// Decisions are counted but not enforced.
    shadow: bool,
    counts: Counts,
    /// Keys blocked now, longest block first (at most 1,000): every
    /// instance's blocks when the limiter keeps its state in Redis, this
    /// instance's otherwise.
    blocked: Vec<Blocked>,
    /// Keys this instance rejected most, most first.
    top_rejected: Vec<Rejected>,
    /// Keys this instance checked most, admitted or not, most first: the
    /// heaviest callers.
    top_callers: Vec<Caller>,
}

/// A tenant and its tier.
#[derive(Debug, Serialize, ToSchema)]
struct TenantTier {
    /// The tenant, as sent in `X-Tenant-Id`.
    #[serde(rename = "tenantId")]
    tenant_id: String,
    /// The tier's name.
    tier: String,
}

/// The tiers an admin can move a tenant to.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum TierName {
    Free,
    Basic,
    Premium,
    Enterprise,
}

impl TierName {
    fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Basic => "basic",
            Self::Premium => "premium",
            Self::Enterprise => "enterprise",
        }
    }
}

/// A tenant's new tier.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TierChange {
    /// The tenant, as sent in `X-Tenant-Id`.
    #[serde(rename = "tenantId")]
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$", example = "demo-free")]
    tenant_id: String,
    /// The tier.
    #[schema(example = "premium")]
    tier: TierName,
}

/// A health level: `healthy`, `degraded` or `unhealthy`.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum Level {
    Healthy,
    Degraded,
    Unhealthy,
}

impl From<HealthStatus> for Level {
    fn from(status: HealthStatus) -> Self {
        match status {
            HealthStatus::Healthy => Self::Healthy,
            HealthStatus::Degraded => Self::Degraded,
            HealthStatus::Unhealthy => Self::Unhealthy,
        }
    }
}

/// How the `api` and `report` limits and the tenant quotas follow the
/// service's health (`ratelimit.health_*`).
#[derive(Debug, Serialize, ToSchema)]
struct HealthLimits {
    /// The health the limits are set for.
    level: Level,
    /// The latest reading of the service's health (read every 2 s).
    health: Level,
    /// The share of their quota those limiters admit now (1: all of it).
    scale: f64,
    /// Seconds until the limits loosen by a level, if every reading until
    /// then stays better than `level`; absent while nothing is pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    loosens_in_seconds: Option<f64>,
    /// Times the limits tightened since the instance started.
    tightened: u64,
    /// Times they loosened.
    loosened: u64,
}

/// The limit on requests in flight (`server.admission`).
#[derive(Debug, Serialize, ToSchema)]
struct AdmissionStanding {
    /// `adaptive` (found from latency) or `static`.
    mode: &'static str,
    /// The limit now.
    limit: u64,
    /// The most it reaches: `server.max_in_flight`.
    ceiling: u64,
    /// Requests holding a place now (the probes and `/metrics` take none).
    in_flight: u64,
    /// Requests shed (503) since the instance started.
    shed: u64,
}

/// Rate limiting at a glance.
#[derive(Debug, Serialize, ToSchema)]
struct RateLimitStats {
    /// Whether requests are rate-limited at all.
    enabled: bool,
    limiters: Vec<LimiterStats>,
    /// How the limits follow the service's health; absent when rate
    /// limiting is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    health: Option<HealthLimits>,
    admission: AdmissionStanding,
    /// The tenant tiers, smallest first.
    tiers: Vec<Tier>,
    /// Tenants and their tiers (the first 1,000 by id).
    tenants: Vec<TenantTier>,
}

async fn limiter_stats(limiter: &Limiter) -> LimiterStats {
    let counts = limiter.counts();
    let blocked = match limiter.blocked_keys_everywhere(1000).await {
        Ok(blocked) => blocked,
        Err(error) => {
            tracing::warn!(%error, limiter = limiter.name(), "listing the fleet's blocked keys failed; showing this instance's");
            let mut blocked = limiter.blocked_keys();
            blocked.truncate(1000);
            blocked
        }
    };
    LimiterStats {
        name: limiter.name().to_owned(),
        store: limiter.store_kind(),
        rules: limiter
            .quota()
            .rules()
            .map(|(name, limit)| Rule {
                name: name.to_owned(),
                algorithm: limit.algorithm().name(),
                capacity: limit.capacity(),
                period_seconds: limit.period().as_secs_f64(),
            })
            .collect(),
        scale: limiter.scale(),
        block_seconds: limiter.penalty().as_secs_f64(),
        shadow: limiter.is_shadow(),
        counts: Counts {
            allowed: counts.allowed,
            rejected: counts.rejected,
            shadow_rejected: counts.shadow_rejected,
            near_limit: counts.near_limit,
            degraded: counts.degraded,
        },
        blocked: blocked
            .into_iter()
            .map(|blocked| Blocked {
                key: blocked.key,
                remaining_seconds: blocked.remaining.as_secs_f64(),
            })
            .collect(),
        top_rejected: limiter
            .top_rejected()
            .into_iter()
            .map(|rejected| Rejected {
                key: rejected.key,
                rejections: rejected.rejections,
            })
            .collect(),
        top_callers: limiter
            .top_callers()
            .into_iter()
            .map(|caller| Caller {
                key: caller.key,
                checks: caller.checks,
            })
            .collect(),
    }
}

fn limits(state: &AppState) -> Result<&RateLimits, Problem> {
    state.ratelimits().ok_or_else(|| {
        Problem::new(
            StatusCode::CONFLICT,
            "rate limiting is off (ratelimit.enabled = false)",
        )
    })
}

/// Reads the limiter and key of a query string.
fn limiter_and_key<'l>(
    limits: &'l RateLimits,
    params: &Params,
) -> Result<(&'l Limiter, String), Problem> {
    let name = params
        .choice("limiter", &LIMITERS)?
        .ok_or_else(|| Problem::bad_parameter("limiter", "is required"))?;
    let key = params.required("key")?;
    if let Some(bad) = BadKey::of(key) {
        return Err(bad.in_query());
    }
    let limiter = limits
        .limiter(name)
        .ok_or_else(|| Problem::bad_parameter("limiter", "names no limiter"))?;
    Ok((limiter, key.to_owned()))
}

/// Every limiter with its quota, counts, blocked keys and most-rejected
/// keys, and the tenant tiers.
#[utoipa::path(get, path = "/api/rate-limit", tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Rate limiting at a glance", body = RateLimitStats),
    ),
)]
async fn stats(State(state): State<AppState>) -> Result<Json<RateLimitStats>, Problem> {
    let db = state.db();
    let tiers: Vec<(String, i64, i64, i64, Option<i64>)> = sqlx::query_as(
        "SELECT name, per_minute, per_hour, per_day, max_users FROM tiers ORDER BY per_minute, name",
    )
    .fetch_all(&mut *db.acquire().await.map_err(admin_query_failed)?)
    .await
    .map_err(admin_query_failed)?;
    let tenants: Vec<(String, String)> =
        sqlx::query_as("SELECT id, tier FROM tenants ORDER BY id LIMIT 1000")
            .fetch_all(&mut *db.acquire().await.map_err(admin_query_failed)?)
            .await
            .map_err(admin_query_failed)?;
    let mut limiters = Vec::new();
    if let Some(limits) = state.ratelimits() {
        for limiter in limits.limiters() {
            limiters.push(limiter_stats(limiter).await);
        }
    }
    let health = state.ratelimits().map(|limits| {
        let now = limits.tightening().state();
        HealthLimits {
            level: now.level.into(),
            health: now.health.into(),
            scale: now.scale,
            loosens_in_seconds: now.loosens_in.map(|left| left.as_secs_f64()),
            tightened: now.tightened,
            loosened: now.loosened,
        }
    });
    let admission = state.admission();
    Ok(Json(RateLimitStats {
        enabled: state.ratelimits().is_some(),
        limiters,
        health,
        admission: AdmissionStanding {
            mode: if admission.adaptive {
                "adaptive"
            } else {
                "static"
            },
            limit: admission.limit,
            ceiling: admission.ceiling,
            in_flight: admission.in_flight,
            shed: admission.shed,
        },
        tiers: tiers
            .into_iter()
            .map(|(name, per_minute, per_hour, per_day, max_users)| Tier {
                name,
                per_minute,
                per_hour,
                per_day,
                max_users,
            })
            .collect(),
        tenants: tenants
            .into_iter()
            .map(|(tenant_id, tier)| TenantTier { tenant_id, tier })
            .collect(),
    }))
}

/// Moves a tenant to another tier; its next request is checked against the
/// new tier's quota: on every instance once the cache invalidation has
/// travelled (milliseconds), or, with caching off, on this instance at once
/// and on others within 5 s.
#[utoipa::path(post, path = "/api/rate-limit", tag = "admin",
    security(("admin_token" = [])),
    request_body(content = TierChange, content_type = "application/json"),
    responses(
        (status = 200, description = "The tenant's new tier", body = TenantTier),
        (status = 404, description = "No such tenant",
            body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The body is not valid JSON, a field is wrong, missing or unknown, or the tier does not exist",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn set_tier(
    State(state): State<AppState>,
    body: Result<Json<TierChange>, Problem>,
) -> Result<Json<TenantTier>, Problem> {
    let Json(change) = body?;
    let tier = change.tier.as_str();
    if !is_tenant_id(&change.tenant_id) {
        return Err(Problem::invalid_field(
            "tenantId",
            "must be 1 to 64 of A-Z a-z 0-9 _ . -",
        ));
    }
    let db = state.db();
    let mut tx = db.begin_write().await.map_err(admin_query_failed)?;
    let tiers: Vec<(String,)> = sqlx::query_as("SELECT name FROM tiers ORDER BY per_minute, name")
        .fetch_all(&mut *tx)
        .await
        .map_err(admin_query_failed)?;
    if !tiers.iter().any(|(name,)| name == tier) {
        let names: Vec<&str> = tiers.iter().map(|(name,)| name.as_str()).collect();
        return Err(Problem::invalid_field(
            "tier",
            format!("must be one of {}", names.join(", ")),
        ));
    }
    let updated = sqlx::query("UPDATE tenants SET tier = $2 WHERE id = $1")
        .bind(&change.tenant_id)
        .bind(tier)
        .execute(&mut *tx)
        .await
        .map_err(admin_query_failed)?;
    if updated.rows_affected() == 0 {
        return Err(Problem::not_found(format!(
            "there is no tenant {:?}",
            change.tenant_id
        )));
    }
    tx.commit().await.map_err(admin_query_failed)?;
    if let Some(limits) = state.ratelimits() {
        limits.forget_tier(&change.tenant_id).await;
    }
    tracing::info!(
        tenant = change.tenant_id.as_str(),
        tier,
        "tenant tier changed"
    );
    Ok(Json(TenantTier {
        tenant_id: change.tenant_id,
        tier: tier.to_owned(),
    }))
}

/// A key and the limiter it was acted on in.
#[derive(Debug, Serialize, ToSchema)]
struct KeyState {
    limiter: String,
    key: String,
    /// Seconds the key stays blocked; 0 when it is not blocked.
    blocked_seconds: f64,
    /// Requests the key may make now in the limiter's tightest rule.
    remaining: u64,
}

fn key_state(limiter: &Limiter, key: String, decision: &seawall_ratelimit::Decision) -> KeyState {
    KeyState {
        limiter: limiter.name().to_owned(),
        key,
        blocked_seconds: decision.blocked_for.map_or(0.0, |d| d.as_secs_f64()),
        remaining: decision.remaining,
    }
}

/// Forgets a key in a limiter: its counts and any block.
#[utoipa::path(delete, path = "/api/rate-limit", tag = "admin",
    security(("admin_token" = [])),
    params(
        ("limiter" = String, Query, description = "The limiter",
            pattern = "^(ddos|api|auth|report|tenant)$", example = "api"),
        ("key" = String, Query, description = "The key: a client address, `key:<key id>`, `user:<id>` or a tenant id",
            min_length = 1, max_length = 128, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$", example = "user:7"),
    ),
    responses(
        (status = 200, description = "The key, fresh", body = KeyState),
        (status = 409, description = "Rate limiting is off",
            body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The key has a control character",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn reset(State(state): State<AppState>, params: Params) -> Result<Json<KeyState>, Problem> {
    let (limiter, key) = limiter_and_key(limits(&state)?, &params)?;
    limiter.reset(&key).await?;
    let standing = limiter.peek(&key).await?;
    Ok(Json(key_state(limiter, key, &standing)))
}

/// A block to set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct BlockRequest {
    /// The limiter.
    #[schema(pattern = "^(ddos|api|auth|report|tenant)$", example = "ddos")]
    limiter: String,
    /// The key: 1 to 128 characters, none of them a control character.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$",
        example = "203.0.113.9"
    )]
    key: String,
    /// How long, in seconds.
    #[serde(deserialize_with = "seawall_app::json::integer")]
    #[schema(minimum = 1, maximum = 86400, example = 600)]
    seconds: i64,
}

/// Blocks a key in a limiter for a while: its requests get 429.
#[utoipa::path(post, path = "/api/rate-limit/block", tag = "admin",
    security(("admin_token" = [])),
    request_body(content = BlockRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The key, blocked", body = KeyState),
        (status = 409, description = "Rate limiting is off",
            body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The body is not valid JSON or a field is wrong, missing or unknown",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn block(
    State(state): State<AppState>,
    body: Result<Json<BlockRequest>, Problem>,
) -> Result<Json<KeyState>, Problem> {
    let Json(request) = body?;
    let limits = limits(&state)?;
    let limiter = LIMITERS
        .contains(&request.limiter.as_str())
        .then(|| limits.limiter(&request.limiter))
        .flatten()
        .ok_or_else(|| {
            Problem::invalid_field("limiter", format!("must be one of {}", LIMITERS.join(", ")))
        })?;
    if let Some(bad) = BadKey::of(&request.key) {
        return Err(Problem::invalid_field("key", bad.reason()));
    }
    if !(1..=MAX_BLOCK_SECONDS).contains(&request.seconds) {
        return Err(Problem::invalid_field(
            "seconds",
            "must be between 1 and 86400",
        ));
    }
    let seconds = u64::try_from(request.seconds).unwrap_or(1);
    let decision = limiter
        .block(&request.key, std::time::Duration::from_secs(seconds))
        .await?;
    tracing::info!(
        limiter = limiter.name(),
        key = request.key.as_str(),
        seconds,
        "key blocked by an admin"
    );
    Ok(Json(key_state(limiter, request.key, &decision)))
}

/// Lifts a key's block; its counts stay.
#[utoipa::path(delete, path = "/api/rate-limit/block", tag = "admin",
    security(("admin_token" = [])),
    params(
        ("limiter" = String, Query, description = "The limiter",
            pattern = "^(ddos|api|auth|report|tenant)$", example = "ddos"),
        ("key" = String, Query, description = "The key", min_length = 1, max_length = 128,
            pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$", example = "203.0.113.9"),
    ),
    responses(
        (status = 200, description = "The key, unblocked", body = KeyState),
        (status = 409, description = "Rate limiting is off",
            body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The key has a control character",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn unblock(State(state): State<AppState>, params: Params) -> Result<Json<KeyState>, Problem> {
    let (limiter, key) = limiter_and_key(limits(&state)?, &params)?;
    let decision = limiter.unblock(&key).await?;
    tracing::info!(
        limiter = limiter.name(),
        key = key.as_str(),
        "key unblocked by an admin"
    );
    Ok(Json(key_state(limiter, key, &decision)))
}

/// The abuse watch: what it does, the actions in force and what it found.
#[derive(Debug, Serialize, ToSchema)]
struct AbuseState {
    /// `observe` (findings are only recorded) or `act`.
    #[schema(example = "observe")]
    mode: &'static str,
    /// How often it judges what it counted, in seconds.
    interval_seconds: f64,
    /// The actions in force, the one that ends last first.
    actions: Vec<AbuseAction>,
    /// The latest findings (at most 200), the newest first.
    findings: Vec<AbuseFinding>,
}

/// An action in force on a client.
#[derive(Debug, Serialize, ToSchema)]
struct AbuseAction {
    /// The client: `key:<id>`, `user:<id>` or an address.
    key: String,
    /// `tighten` (its requests cost more of its limits) or `block`.
    #[schema(example = "tighten")]
    action: &'static str,
    /// What one of its requests costs of its limits now.
    cost: u64,
    /// Seconds until the action ends.
    remaining_seconds: f64,
    /// Why.
    reason: String,
}

/// Something the abuse watch found.
#[derive(Debug, Serialize, ToSchema)]
struct AbuseFinding {
    /// The client, or the route for `route_errors`.
    key: String,
    /// `rate`, `paths`, `errors` or `route_errors`.
    #[schema(example = "paths")]
    signal: &'static str,
    /// `observe`, `tighten` or `block`.
    #[schema(example = "observe")]
    action: &'static str,
    /// Why, in a sentence.
    reason: String,
    /// When the interval judged began, in Unix milliseconds.
    interval_start_ms: i64,
    /// When the action ends, in Unix milliseconds; null for `observe`.
    until_ms: Option<i64>,
    /// Requests in the interval.
    requests: u64,
    /// Of them, answered 401, 403, 404 or 429.
    errors: u64,
    /// Distinct paths among them (an estimate).
    distinct_paths: u64,
}

/// The abuse watch, or a 409 problem when it (or rate limiting) is off.
fn watch(
    state: &AppState,
) -> Result<(&RateLimits, &seawall_ratelimit::abuse::AbuseWatch), Problem> {
    let limits = limits(state)?;
    let watch = limits.abuse().ok_or_else(|| {
        Problem::new(
            StatusCode::CONFLICT,
            "abuse detection is off (ratelimit.abuse = off)",
        )
    })?;
    Ok((limits, watch))
}

/// The abuse watch's mode, the actions in force and its latest findings.
#[utoipa::path(get, path = "/api/rate-limit/abuse", tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The abuse watch", body = AbuseState),
        (status = 409, description = "Rate limiting or abuse detection is off",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn abuse(State(state): State<AppState>) -> Result<Json<AbuseState>, Problem> {
    use seawall_ratelimit::abuse::Mode;
    let (_, watch) = watch(&state)?;
    let actions = watch
        .actions()
        .into_iter()
        .map(|action| AbuseAction {
            key: action.key,
            action: action.action.as_str(),
            cost: action.cost,
            remaining_seconds: action.remaining.as_secs_f64(),
            reason: action.reason,
        })
        .collect();
    let findings = watch
        .findings()
        .into_iter()
        .map(|finding| AbuseFinding {
            key: finding.key,
            signal: finding.signal.as_str(),
            action: finding.action.as_str(),
            reason: finding.reason,
            interval_start_ms: finding.interval_start_ms,
            until_ms: finding.until_ms,
            requests: finding.requests,
            errors: finding.errors,
            distinct_paths: finding.distinct_paths,
        })
        .collect();
    Ok(Json(AbuseState {
        mode: match watch.mode() {
            Mode::Act => "act",
            Mode::Observe => "observe",
        },
        interval_seconds: watch.interval().as_secs_f64(),
        actions,
        findings,
    }))
}

/// A pardon's outcome.
#[derive(Debug, Serialize, ToSchema)]
struct Pardon {
    /// The client.
    key: String,
    /// Whether an action was in force on it (and is now ended; a block
    /// is lifted on its limiter).
    ended: bool,
}

/// Ends the abuse watch's action on a client: a tightening ends, a block
/// is lifted. Its findings stay listed.
#[utoipa::path(delete, path = "/api/rate-limit/abuse", tag = "admin",
    security(("admin_token" = [])),
    params(
        ("key" = String, Query, description = "The client: `key:<key id>`, `user:<id>` or an address",
            min_length = 1, max_length = 128, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$", example = "203.0.113.9"),
    ),
    responses(
        (status = 200, description = "The client, pardoned", body = Pardon),
        (status = 409, description = "Rate limiting or abuse detection is off",
            body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The key has a control character",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn pardon(State(state): State<AppState>, params: Params) -> Result<Json<Pardon>, Problem> {
    let (limits, watch) = watch(&state)?;
    let key = params.required("key")?;
    if let Some(bad) = BadKey::of(key) {
        return Err(bad.in_query());
    }
    let blocked = watch.actions().iter().any(|action| {
        action.key == key && action.action == seawall_ratelimit::abuse::Action::Block
    });
    let ended = watch.pardon(key);
    if blocked {
        let (limiter, on_it) = limits.abuse_limiter(key);
        limiter.unblock(on_it).await?;
    }
    tracing::info!(key, ended, "abuse action pardoned by an admin");
    Ok(Json(Pardon {
        key: key.to_owned(),
        ended,
    }))
}
