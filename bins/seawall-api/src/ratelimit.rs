//! The service's rate limiting, built from `ratelimit.*`: the DDoS limiter
//! by client IP in front of every route but the probes; on the workload
//! routes, the tenant quota by the caller's tenant and the API limiter by
//! the caller (its API key, else the user a trusted proxy names, else its
//! client address); the report limiter on `/api/analytics/stats`; and the
//! auth limiter counting failed authentications (admin tokens and API keys)
//! by client address, asked before a credential is checked. State is in memory, or in
//! Redis when a Redis URL is set, so instances share their limits. The API
//! and report limits and the tenant quotas follow the instance's health
//! (`ratelimit.health_*`): a [`Tightening`] reads it every 2 s and scales
//! them down while it is degraded or unhealthy.
//!
//! Who the caller is comes from what the service can check: an API key it
//! issued (`X-Api-Key`, verified through the cache; an unknown or revoked
//! key is a 401), and the identity headers `X-Tenant-Id` and `X-User-Id`
//! only from a trusted proxy (`ratelimit.trusted_proxies`); from any other
//! peer they are ignored. A key's tenant and a tenant's tier are read
//! through the workload's cache, so a revocation or a tier change made
//! through one instance reaches the others as a cache invalidation
//! (milliseconds); an identity that does not exist is remembered in this
//! process only, so made-up keys and tenant ids leave nothing in Redis.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use seawall_app::keys::{self, KeyIdentity};
use seawall_perfmon::Monitor;
use seawall_ratelimit::abuse::{AbuseWatch, Action, Mode};
use seawall_ratelimit::{
    ClientIp, Decision, FailurePolicy, IpNet, Limit, Limiter, Quota, RedisStore, Store, Tightening,
};

use crate::cache::ApiCache;
use crate::config::{AbuseMode, Profile, RateLimitConfig};
use crate::db::Db;
use crate::problem::Problem;
use crate::problem::ratelimit::{too_many, unknown_client};
use crate::read_after::Identity;
use crate::redis::Redis;

/// Paths the DDoS limiter leaves alone: an orchestrator's probes and the
/// scraper share one address and must always get through.
const EXEMPT: [&str; 3] = ["/livez", "/readyz", "/metrics"];
/// How often the service's health is read to scale the limits by it.
const HEALTH_READ: Duration = Duration::from_secs(2);
/// How long a tenant's tier is kept in process when there is no cache to
/// keep it (and to carry a change to other instances).
const TIER_TTL: Duration = Duration::from_secs(5);
/// The headers that name who is calling: the API key, checked by the
/// service; the user and the tenant, believed from trusted proxies only.
pub(crate) const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
pub(crate) const X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");
pub(crate) const X_TENANT_ID: HeaderName = HeaderName::from_static("x-tenant-id");

/// A tenant tier: its quota per minute, hour and day.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub(crate) struct Tier {
    /// The tier's name.
    pub(crate) name: String,
    /// Requests per minute.
    pub(crate) per_minute: i64,
    /// Requests per hour.
    pub(crate) per_hour: i64,
    /// Requests per day.
    pub(crate) per_day: i64,
    /// Most users a tenant on this tier may have; none: unlimited.
    pub(crate) max_users: Option<i64>,
}

impl Tier {
    fn quota(&self) -> Result<Quota, seawall_ratelimit::Error> {
        let count = |n: i64| u64::try_from(n).unwrap_or(1).max(1);
        Quota::builder()
            .rule(
                "minute",
                Limit::sliding_window(count(self.per_minute), Duration::from_secs(60))?,
            )?
            .rule(
                "hour",
                Limit::sliding_window(count(self.per_hour), Duration::from_secs(3600))?,
            )?
            .rule(
                "day",
                Limit::sliding_window(count(self.per_day), Duration::from_secs(86_400))?,
            )?
            .build()
    }
}

/// A tier and its quota, shared by the cache and the checks.
type TierQuota = Arc<(Tier, Quota)>;
/// A cached lookup: the tier (`None`: no such tenant) and when it was read.
type CachedTier = (Option<TierQuota>, Instant);

/// Every limiter of the service. Cheap to clone.
#[derive(Clone)]
pub(crate) struct RateLimits(Arc<Inner>);

struct Inner {
    ddos: Limiter,
    api: Limiter,
    auth: Limiter,
    report: Limiter,
    tenant: Limiter,
    client_ip: ClientIp,
    db: Db,
    /// Where tiers are cached, unless caching is off.
    cache: Option<ApiCache>,
    /// Without a cache: tenant id → its tier (`None`: no such tenant), and
    /// when it was read.
    tiers: Mutex<HashMap<String, CachedTier>>,
    /// Each tier's quota, built once.
    quotas: Mutex<HashMap<Tier, TierQuota>>,
    /// The peers whose identity headers are believed.
    proxies: Vec<IpNet>,
    /// Scales `api`, `report` and `tenant` by the service's health.
    tightening: Tightening,
    /// Reads the health for `tightening`; stopped when the limits go.
    watcher: tokio::task::JoinHandle<()>,
    /// The abuse watch, unless `ratelimit.abuse` is off.
    abuse: Option<AbuseWatch>,
    /// Judges the watch's intervals and blocks what it asks to; stopped
    /// when the limits go.
    judging: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.watcher.abort();
        if let Some(judging) = &self.judging {
            judging.abort();
        }
    }
}

/// The abuse watch's key of a tenant: its requests are judged together,
/// beside each caller's own.
fn tenant_key(tenant: &str) -> String {
    format!("{TENANT_PREFIX}{tenant}")
}

const TENANT_PREFIX: &str = "tenant:";

/// Which limiter acts on a client the abuse watch names, and the client's
/// key on it: the tenant quota for a tenant (by its id), the API limiter
/// for a key or a user, the DDoS limiter for an address.
fn abuse_limiter<'a, 'k>(
    ddos: &'a Limiter,
    api: &'a Limiter,
    tenant: &'a Limiter,
    key: &'k str,
) -> (&'a Limiter, &'k str) {
    if let Some(id) = key.strip_prefix(TENANT_PREFIX) {
        (tenant, id)
    } else if key.starts_with("key:") || key.starts_with("user:") {
        (api, key)
    } else {
        (ddos, key)
    }
}

/// Judges each interval of `watch` once it closes, and blocks each client
/// it asks a block for on its limiter, for `block_for`.
fn judge_abuse(
    watch: AbuseWatch,
    [ddos, api, tenant]: [Limiter; 3],
    block_for: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(watch.until_next_close()).await;
            for finding in watch.judge().await {
                if finding.action != Action::Block {
                    continue;
                }
                let (limiter, key) = abuse_limiter(&ddos, &api, &tenant, &finding.key);
                if let Err(error) = limiter.block(key, block_for).await {
                    tracing::warn!(%error, key = %finding.key, "the abuse watch's block could not be set");
                }
            }
        }
    })
}

impl RateLimits {
    /// The limiters, on Redis when `redis` is given; `None` when rate
    /// limiting is off.
    pub(crate) fn build(
        config: &RateLimitConfig,
        redis: Option<&Redis>,
        monitor: &Monitor,
        db: Db,
        cache: Option<ApiCache>,
    ) -> Result<Option<Self>, seawall_ratelimit::Error> {
        if !config.enabled {
            return Ok(None);
        }
        // One Redis store for every limiter: clones share its timeout and
        // circuit breaker, so a stalled Redis is found out once for all of
        // them and a request waits for it at most once.
        let redis_store = redis
            .map(|redis| RedisStore::new(redis.client().clone()).with_timeout(config.store_timeout))
            .transpose()?;
        let store = || -> Store {
            match &redis_store {
                Some(store) => store.clone().into(),
                None => seawall_ratelimit::MemoryStore::new().into(),
            }
        };
        let limiter = |name: &str, limit: Limit, profile: &Profile| {
            Limiter::builder(name)
                .limit(limit)
                .penalty(profile.block)
                .store(store())
                // While Redis is down each instance enforces the whole limit
                // by itself: protective, and never an outage of its own.
                .on_store_failure(FailurePolicy::Insurance { instances: 1 })
                .monitor(monitor)
                .build()
        };
        let ddos = &config.ddos;
        let default_tier = Tier {
            name: "free".to_owned(),
            per_minute: 60,
            per_hour: 1000,
            per_day: 10_000,
            max_users: Some(10),
        };
        let proxies = trusted_proxies(config)?;
        let api = limiter("api", sliding(&config.api)?, &config.api)?;
        let report = limiter("report", sliding(&config.report)?, &config.report)?;
        let tenant = Limiter::builder("tenant")
            .quota(default_tier.quota()?)
            .store(store())
            .on_store_failure(FailurePolicy::Insurance { instances: 1 })
            .monitor(monitor)
            .build()?;
        // The per-caller and per-tenant limits follow the service's
        // health; the DDoS and auth limits guard against abuse and stay.
        let tightening = Tightening::builder()
            .degraded(config.health_degraded)
            .unhealthy(config.health_unhealthy)
            .recover_after(config.health_recover)
            .limiter(&api)
            .limiter(&report)
            .limiter(&tenant)
            .metrics(monitor)
            .build()?;
        let ddos = limiter(
            "ddos",
            Limit::gcra(ddos.limit, ddos.period, ddos.limit)?,
            ddos,
        )?;
        let auth = limiter("auth", sliding(&config.auth)?, &config.auth)?;
        let client_ip = ClientIp::trusting(proxies.clone())
            .header(
                HeaderName::try_from(config.client_ip_header.as_str()).map_err(|_| {
                    seawall_ratelimit::Error::InvalidConfig(format!(
                        "ratelimit.client_ip_header: {:?} is not a header name",
                        config.client_ip_header
                    ))
                })?,
            )
            .ipv6_prefix(config.ipv6_prefix)?;
        let abuse = match config.abuse {
            AbuseMode::Off => None,
            mode => {
                let mut builder = AbuseWatch::builder()
                    .mode(if mode == AbuseMode::Act {
                        Mode::Act
                    } else {
                        Mode::Observe
                    })
                    .interval(config.abuse_interval)
                    .min_requests(config.abuse_min_requests)
                    .burst(config.abuse_burst)
                    .tighten(4, config.abuse_tighten_for)
                    .block_for(config.abuse_block_for)
                    .metrics(monitor);
                for entry in &config.abuse_allow {
                    builder = builder.allow(entry.clone());
                }
                if let Some(store) = &redis_store {
                    builder = builder.exchange(store.clone());
                }
                Some(builder.build()?)
            }
        };
        // Last: nothing after them can fail and leave a task running.
        let judging = abuse.as_ref().map(|watch| {
            judge_abuse(
                watch.clone(),
                [ddos.clone(), api.clone(), tenant.clone()],
                config.abuse_block_for,
            )
        });
        let watcher = tightening.watch(monitor, HEALTH_READ);
        Ok(Some(Self(Arc::new(Inner {
            ddos,
            api,
            auth,
            report,
            tenant,
            client_ip,
            db,
            cache,
            tiers: Mutex::new(HashMap::new()),
            quotas: Mutex::new(HashMap::new()),
            proxies,
            tightening,
            watcher,
            abuse,
            judging,
        }))))
    }

    /// The abuse watch, unless it is off.
    pub(crate) fn abuse(&self) -> Option<&AbuseWatch> {
        self.0.abuse.as_ref()
    }

    /// The limiter that blocks a client the abuse watch names, and the
    /// client's key on it.
    pub(crate) fn abuse_limiter<'k>(&self, key: &'k str) -> (&Limiter, &'k str) {
        abuse_limiter(&self.0.ddos, &self.0.api, &self.0.tenant, key)
    }

    /// What one request of `key` costs of a limit whose requests may cost
    /// at most `max` (asked only of a tightened key): more while the abuse
    /// watch has it tightened, but never past `max`, which the limiter
    /// would refuse as an error and let the request through.
    fn cost_of(&self, key: &str, max: impl FnOnce() -> u64) -> u64 {
        let cost = self.0.abuse.as_ref().map_or(1, |watch| watch.cost(key));
        if cost > 1 {
            cost.min(max()).max(1)
        } else {
            cost
        }
    }

    /// Every limiter, by name.
    pub(crate) fn limiters(&self) -> [&Limiter; 5] {
        let inner = &*self.0;
        [
            &inner.ddos,
            &inner.api,
            &inner.auth,
            &inner.report,
            &inner.tenant,
        ]
    }

    /// How the health-scaled limiters (`api`, `report`, `tenant`) stand.
    pub(crate) fn tightening(&self) -> &Tightening {
        &self.0.tightening
    }

    /// The limiter named `name`.
    pub(crate) fn limiter(&self, name: &str) -> Option<&Limiter> {
        self.limiters()
            .into_iter()
            .find(|limiter| limiter.name() == name)
    }

    /// The auth limiter and how to find the client: for the admin guard.
    pub(crate) fn auth(&self) -> (&Limiter, &ClientIp) {
        (&self.0.auth, &self.0.client_ip)
    }

    /// The key of a request's client: its address, or its IPv6 network
    /// (`ratelimit.ipv6_prefix`).
    pub(crate) fn client_ip(&self, request: &Request) -> Option<String> {
        self.0.client_ip.key_of(request)
    }

    /// Forgets the cached tier of `tenant` on every instance, so its next
    /// request reads the new one. Without a cache, only this instance's copy
    /// goes (others read it again within 5 s).
    pub(crate) async fn forget_tier(&self, tenant: &str) {
        match &self.0.cache {
            Some(cache) => {
                if let Err(error) = cache.cache().invalidate(&cache.tier_key(tenant)).await {
                    tracing::warn!(%error, tenant, "the tier change reached only this instance's cache");
                }
            }
            None => {
                self.0.tiers.lock().remove(tenant);
            }
        }
    }

    /// The tier of `tenant` through the cache; `None` for an unknown tenant.
    async fn tier(&self, tenant: &str) -> Result<Option<TierQuota>, Problem> {
        let Some(cache) = &self.0.cache else {
            return self.tier_uncached(tenant).await;
        };
        let (db, id) = (self.0.db.clone(), tenant.to_owned());
        let tier = cache
            .identity(&cache.tier_key(tenant), move || async move {
                tenant_tier(&db, &id).await
            })
            .await
            .map_err(|error| {
                tracing::error!(%error, "reading a tenant's tier failed");
                Problem::internal()
            })?;
        tier.map(|tier| self.quota_of(tier)).transpose()
    }

    /// [`tier`](Self::tier) with the tier kept in process for [`TIER_TTL`].
    async fn tier_uncached(&self, tenant: &str) -> Result<Option<TierQuota>, Problem> {
        if let Some((tier, read)) = self.0.tiers.lock().get(tenant)
            && read.elapsed() < TIER_TTL
        {
            return Ok(tier.clone());
        }
        let tier = tenant_tier(&self.0.db, tenant)
            .await
            .map_err(|error| {
                tracing::error!(%error, "reading a tenant's tier failed");
                Problem::internal()
            })?
            .map(|tier| self.quota_of(tier))
            .transpose()?;
        let mut tiers = self.0.tiers.lock();
        if tiers.len() >= 10_000 {
            tiers.clear();
        }
        tiers.insert(tenant.to_owned(), (tier.clone(), Instant::now()));
        Ok(tier)
    }

    /// `tier` with its quota, built once per tier.
    fn quota_of(&self, tier: Tier) -> Result<TierQuota, Problem> {
        if let Some(quota) = self.0.quotas.lock().get(&tier) {
            return Ok(Arc::clone(quota));
        }
        let quota = tier.quota().map_err(|error| {
            tracing::error!(%error, tier = %tier.name, "a tier's quota is unusable");
            Problem::internal()
        })?;
        let built = Arc::new((tier.clone(), quota));
        let mut quotas = self.0.quotas.lock();
        if quotas.len() >= 1_000 {
            quotas.clear();
        }
        quotas.insert(tier, Arc::clone(&built));
        Ok(built)
    }

    /// Whether `request` comes straight from a trusted proxy, whose
    /// identity headers are believed.
    fn is_from_trusted_proxy(&self, request: &Request) -> bool {
        request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .is_some_and(|ConnectInfo(peer)| {
                self.0.proxies.iter().any(|net| net.contains(peer.ip()))
            })
    }
}

/// `ratelimit.trusted_proxies`, parsed.
pub(crate) fn trusted_proxies(
    config: &RateLimitConfig,
) -> Result<Vec<IpNet>, seawall_ratelimit::Error> {
    config
        .trusted_proxies
        .iter()
        .map(|net| net.parse::<IpNet>())
        .collect()
}

fn sliding(profile: &Profile) -> Result<Limit, seawall_ratelimit::Error> {
    Limit::sliding_window(profile.limit, profile.period)
}

/// Reads a tenant's tier from the database.
pub(crate) async fn tenant_tier(db: &Db, tenant: &str) -> Result<Option<Tier>, sqlx::Error> {
    const SQL: &str = "SELECT t.name, t.per_minute, t.per_hour, t.per_day, t.max_users \
                       FROM tenants n JOIN tiers t ON t.name = n.tier WHERE n.id = $1";
    let row: Option<(String, i64, i64, i64, Option<i64>)> = sqlx::query_as(SQL)
        .bind(tenant)
        .fetch_optional(&mut *db.acquire().await?)
        .await?;
    Ok(
        row.map(|(name, per_minute, per_hour, per_day, max_users)| Tier {
            name,
            per_minute,
            per_hour,
            per_day,
            max_users,
        }),
    )
}

/// What the DDoS limiter says of a request.
pub(crate) enum Ddos {
    /// Let it through, with the decision to report on the response (none
    /// for the probes, a client without an address, or a limiter error).
    Admit(Option<Decision>),
    /// Answer with this 429.
    Reject(Response),
    /// The limiter keeps its state in Redis: ask [`ddos_remote`] for this
    /// client address.
    Remote(String),
}

/// The DDoS limiter, by client IP, for every route but the probes, decided
/// at once when its state is in process memory. A limiter error lets the
/// request through; a request with no client address is refused
/// ([`unknown_client`]).
pub(crate) fn ddos(limits: &RateLimits, request: &Request) -> Ddos {
    if EXEMPT.contains(&request.uri().path()) {
        return Ddos::Admit(None);
    }
    let Some(ip) = limits.client_ip(request) else {
        return Ddos::Reject(unknown_client());
    };
    let cost = limits.cost_of(&ip, || limits.0.ddos.max_cost());
    match limits.0.ddos.check_now(&ip, cost) {
        Some(result) => ddos_verdict(result),
        None => Ddos::Remote(ip),
    }
}

/// [`ddos`] for a limiter on Redis.
pub(crate) async fn ddos_remote(limits: &RateLimits, ip: &str) -> Ddos {
    let cost = limits.cost_of(ip, || limits.0.ddos.max_cost());
    ddos_verdict(limits.0.ddos.check(ip, cost).await)
}

fn ddos_verdict(result: seawall_ratelimit::Result<Decision>) -> Ddos {
    match result {
        Ok(decision) if !decision.allowed => {
            Ddos::Reject(too_many(&decision, "this client address"))
        }
        Ok(decision) => Ddos::Admit(Some(decision)),
        Err(error) => {
            tracing::warn!(%error, "the DDoS limiter failed; request let through");
            Ddos::Admit(None)
        }
    }
}

/// What the workload routes' gate needs: the API keys (the database and
/// the cache they are verified through) and the rate limits, unless they
/// are off. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Gate {
    db: Db,
    cache: Option<ApiCache>,
    limits: Option<RateLimits>,
    turns: Arc<Turns>,
}

impl Gate {
    pub(crate) fn new(db: Db, cache: Option<ApiCache>, limits: Option<RateLimits>) -> Self {
        Self {
            db,
            cache,
            limits,
            turns: Arc::default(),
        }
    }
}

/// One API-key verification at a time per client address, among those
/// that read the database or Redis: a burst of made-up keys from one
/// address then meets the auth limiter one key after another, and reaches
/// the database at most the limit's number of times, however many are sent
/// at once. Keys this process knows never wait for a turn.
#[derive(Default)]
struct Turns(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl Turns {
    /// Waits for `client`'s turn; it ends when the returned guard drops.
    async fn take<'a>(&'a self, client: &str) -> Turn<'a> {
        let lock = Arc::clone(self.0.lock().entry(client.to_owned()).or_default());
        // The turn exists before the wait, so a wait cancelled midway (its
        // request dropped) still takes the address's lock out of the map
        // when it was the last to hold it.
        let mut turn = Turn {
            turns: self,
            client: client.to_owned(),
            guard: None,
        };
        turn.guard = Some(lock.lock_owned().await);
        turn
    }
}

/// A client address's turn at verifying a key.
struct Turn<'a> {
    turns: &'a Turns,
    client: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        // The address's lock goes once nobody holds or waits for it (each
        // clones it under the map's lock first), so the map holds only
        // addresses verifying now.
        let mut turns = self.turns.0.lock();
        if turns
            .get(&self.client)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            turns.remove(&self.client);
        }
    }
}

/// Who a request comes from, as far as the service can tell.
struct Caller {
    /// The API key it sent, verified.
    key: Option<KeyIdentity>,
    /// The user a trusted proxy names.
    user: Option<String>,
    /// The tenant a trusted proxy names; a key's own tenant comes first.
    tenant: Option<String>,
}

impl Caller {
    /// The tenant whose quota applies.
    fn tenant(&self) -> Option<&str> {
        self.key
            .as_ref()
            .map(|key| key.tenant_id.as_str())
            .or(self.tenant.as_deref())
    }

    /// What the API limiter counts the caller by, when it is identified:
    /// its key (by id, never the key itself), else its user.
    fn identity(&self) -> Option<String> {
        match (&self.key, &self.user) {
            (Some(key), _) => Some(format!("key:{}", key.id)),
            (None, Some(user)) => Some(format!("user:{user}")),
            (None, None) => None,
        }
    }
}

/// The request's API key, verified: `None` without one; a 401 problem for
/// one the service did not issue, or revoked.
///
/// A key this process knows is answered from memory. Any other is a
/// failed authentication waiting to happen, so it is counted, by client
/// address, as the admin token's attempts are: before it is verified, the
/// auth limiter is asked whether the address may try again (a 429, and no
/// database or Redis read, when it may not), and a key found not valid
/// takes a unit of it. An address past the limit is blocked for the
/// profile's block time. A valid key takes nothing.
async fn api_key(
    gate: &Gate,
    key: Option<String>,
    client: Option<&str>,
) -> Result<Option<KeyIdentity>, Response> {
    let Some(key) = key else {
        return Ok(None);
    };
    if let Some(identity) = keys::verify_known(gate.cache.as_ref(), &key) {
        return Ok(Some(identity));
    }
    let auth = gate
        .limits
        .as_ref()
        .zip(client)
        .map(|(limits, client)| (&limits.0.auth, client));
    let _turn = match &auth {
        Some((_, client)) => Some(gate.turns.take(client).await),
        None => None,
    };
    if let Some((limiter, client)) = &auth {
        match limiter.peek(client).await {
            Ok(decision) if decision.blocked_for.is_some() => {
                return Err(too_many(&decision, "this client address"));
            }
            // Used up but not yet blocked: the refused check starts the
            // block, as a refused admin attempt does.
            Ok(decision) if !decision.allowed => {
                let decision = limiter.check(client, 1).await.unwrap_or(decision);
                return Err(too_many(&decision, "this client address"));
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "the auth limiter failed"),
        }
    }
    match keys::verify(&gate.db, gate.cache.as_ref(), &key).await {
        Ok(Some(identity)) => Ok(Some(identity)),
        Ok(None) => {
            if let Some((limiter, client)) = &auth {
                match limiter.check(client, 1).await {
                    Ok(decision) if !decision.allowed => {
                        return Err(too_many(&decision, "this client address"));
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "the auth limiter failed"),
                }
            }
            Err(Problem::unauthorized_key(
                "`X-Api-Key` is not a key this service issued, or it was revoked",
            )
            .into_response())
        }
        Err(error) => {
            tracing::error!(%error, "verifying an API key failed");
            Err(Problem::internal().into_response())
        }
    }
}

/// A 400 problem when the request sends an identity header (`X-Api-Key`,
/// `X-User-Id`, `X-Tenant-Id`) more than once: which one counts would be a
/// guess, and a proxy in front reading the other would see another caller
/// than the one charged.
fn repeated_identity(request: &Request) -> Option<Problem> {
    [&X_API_KEY, &X_USER_ID, &X_TENANT_ID]
        .into_iter()
        .find(|name| request.headers().get_all(*name).iter().nth(1).is_some())
        .map(|name| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                format!("the request has more than one {name} header; send exactly one"),
            )
            .with_param(name.as_str(), "is sent more than once")
        })
}

/// The `X-User-Id` of a request; a 400 problem when it is not 1 to 64
/// visible ASCII characters.
fn user(request: &Request) -> Result<Option<String>, Problem> {
    let Some(value) = request.headers().get(&X_USER_ID) else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    if (1..=64).contains(&bytes.len()) && bytes.iter().all(|b| (b'!'..=b'~').contains(b)) {
        Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
    } else {
        Err(Problem::bad_header(
            X_USER_ID.as_str(),
            "must be 1 to 64 visible ASCII characters",
        ))
    }
}

/// The `X-Tenant-Id` of a request; a 400 problem when it is malformed.
fn tenant(request: &Request) -> Result<Option<String>, Problem> {
    match request.headers().get(&X_TENANT_ID) {
        None => Ok(None),
        Some(value) => match value.to_str().ok().filter(|id| is_tenant_id(id)) {
            Some(id) => Ok(Some(id.to_owned())),
            None => Err(Problem::bad_header(
                X_TENANT_ID.as_str(),
                "must be 1 to 64 of A-Z a-z 0-9 _ . -",
            )),
        },
    }
}

/// On the workload routes: the API key, verified whether or not limits
/// apply (401 when the service did not issue it or revoked it; 429 once its
/// client address has failed the auth limit's number of times), and the
/// identity headers' form (400); then the tenant quota by the key's tenant
/// (or a trusted proxy's `X-Tenant-Id`), the report limiter on reports, and the API limiter, each by the caller's
/// key, else a trusted proxy's `X-User-Id`, else its client address. Each
/// consumes only when the ones before it admitted; the response carries
/// every one's `RateLimit` items.
pub(crate) async fn workload(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    // The client's address, found once for the gate and the abuse watch.
    let address = gate
        .limits
        .as_ref()
        .and_then(|limits| limits.client_ip(&request));
    let Some(watch) = gate.limits.as_ref().and_then(RateLimits::abuse).cloned() else {
        return gated(gate, request, next, address.as_deref()).await;
    };
    // What the abuse watch is told of the request once it is answered: by
    // whom (the caller the limits counted, else its address), where, and
    // how it was answered.
    let uri = request.uri().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = gated(gate, request, next, address.as_deref()).await;
    let key = response
        .extensions()
        .get::<Counted>()
        .map(|Counted(key)| key.as_str())
        .or(address.as_deref());
    if let Some(key) = key {
        let route = route.as_ref().map_or("", MatchedPath::as_str);
        // What was asked for: the path and the query (a catalogue walked
        // page by page is one path and many queries).
        let asked = uri
            .path_and_query()
            .map_or(uri.path(), |asked| asked.as_str());
        watch.record(key, route, asked, response.status().as_u16());
    }
    if let Some(CountedTenant(tenant)) = response.extensions().get::<CountedTenant>() {
        watch.record_group(tenant, response.status().as_u16());
    }
    response
}

/// Whom the limits counted a request by, on its response: for the abuse
/// watch.
#[derive(Clone)]
struct Counted(String);

/// The tenant a request was counted under, as the abuse watch's key: its
/// users' requests are judged together too.
#[derive(Clone)]
struct CountedTenant(String);

/// `response`, marked as counted by `key`.
fn mark_counted(mut response: Response, key: &str) -> Response {
    response.extensions_mut().insert(Counted(key.to_owned()));
    response
}

/// The gate itself, for a request from `client` (its address, when the
/// limits are on and it has one).
async fn gated(gate: Gate, mut request: Request, next: Next, client: Option<&str>) -> Response {
    if let Some(problem) = repeated_identity(&request) {
        return problem.into_response();
    }
    // Read before the wait: a request's body is not `Sync`, so the future
    // must not hold a reference to the request across it.
    let sent = request
        .headers()
        .get(&X_API_KEY)
        .map(|value| value.to_str().unwrap_or_default().to_owned());
    let key = match api_key(&gate, sent, client).await {
        Ok(key) => key,
        Err(response) => return response,
    };
    // The identity headers are part of the contract from any peer, and
    // believed from trusted proxies only.
    let (user, tenant) = match (user(&request), tenant(&request)) {
        (Ok(user), Ok(tenant)) => (user, tenant),
        (Err(problem), _) | (_, Err(problem)) => return problem.into_response(),
    };
    let Some(limits) = &gate.limits else {
        if let Some(key) = &key {
            request
                .extensions_mut()
                .insert(Identity(format!("key:{}", key.id)));
        }
        return next.run(request).await;
    };
    let trusted = limits.is_from_trusted_proxy(&request);
    let caller = Caller {
        key,
        user: user.filter(|_| trusted),
        tenant: tenant.filter(|_| trusted),
    };
    let mut decisions: Vec<Decision> = Vec::new();
    let mut counted_tenant = None;
    if let Some(tenant) = caller.tenant() {
        let tier = match limits.tier(tenant).await {
            Ok(Some(tier)) => tier,
            Ok(None) => {
                return Problem::new(
                    StatusCode::FORBIDDEN,
                    format!("there is no tenant {tenant:?}"),
                )
                .into_response();
            }
            Err(problem) => return problem.into_response(),
        };
        let who = format!("tenant {tenant} ({} tier)", tier.0.name);
        // Its abuse key, only while there is a watch to tell.
        counted_tenant = limits.abuse().map(|_| tenant_key(tenant));
        let cost = counted_tenant
            .as_deref()
            .map_or(1, |key| limits.cost_of(key, || tier.1.max_cost()));
        match limits.0.tenant.check_quota(tenant, cost, &tier.1).await {
            Ok(decision) if !decision.allowed => return too_many(&decision, &who),
            Ok(decision) => decisions.push(decision),
            Err(error) => tracing::warn!(%error, "the tenant quota failed; request let through"),
        }
    }
    let identity = caller.identity();
    let who = if identity.is_some() {
        "this caller"
    } else {
        "this client address"
    };
    let Some(counted) = identity.or_else(|| client.map(str::to_owned)) else {
        // No key, no trusted user and no peer address: nothing to count by,
        // and so no request is let through (the DDoS limiter in front
        // already refused it; this stays true without it).
        return unknown_client();
    };
    let mut checks: Vec<(&Limiter, &str)> = Vec::new();
    if request.uri().path() == "/api/analytics/stats" {
        checks.push((&limits.0.report, "this caller's report quota"));
    }
    checks.push((&limits.0.api, who));
    for (limiter, who) in checks {
        let cost = limits.cost_of(&counted, || limiter.max_cost());
        match limiter.check(&counted, cost).await {
            Ok(decision) if !decision.allowed => {
                return mark_counted(too_many(&decision, who), &counted);
            }
            Ok(decision) => decisions.push(decision),
            Err(error) => {
                tracing::warn!(%error, limiter = limiter.name(), "rate limiter failed; request let through");
            }
        }
    }
    request.extensions_mut().insert(Identity(counted.clone()));
    let mut response = next.run(request).await;
    for decision in &decisions {
        seawall_ratelimit::set_headers(response.headers_mut(), decision);
    }
    if limits.abuse().is_some() {
        response.extensions_mut().insert(Counted(counted));
        if let Some(tenant) = counted_tenant {
            response.extensions_mut().insert(CountedTenant(tenant));
        }
    }
    response
}

/// Whether `id` is a well-formed tenant id.
pub(crate) fn is_tenant_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One verification at a time per address, and the map keeps only the
    /// addresses verifying or waiting now: a wait cancelled midway leaves
    /// nothing behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn turns_are_one_at_a_time_per_address_and_leave_nothing_behind() {
        let turns = Arc::new(Turns::default());
        let first = turns.take("192.0.2.1").await;
        let other = turns.take("192.0.2.2").await;
        let waiting = {
            let turns = Arc::clone(&turns);
            tokio::spawn(async move {
                let _turn = turns.take("192.0.2.1").await;
            })
        };
        seawall_testkit::wait::until("the second turn to wait for the first", || {
            turns
                .0
                .lock()
                .get("192.0.2.1")
                .is_some_and(|lock| Arc::strong_count(lock) == 3)
        });
        assert!(
            !waiting.is_finished(),
            "a second turn of one address ran at once"
        );
        waiting.abort();
        assert!(waiting.await.is_err_and(|error| error.is_cancelled()));
        drop(first);
        drop(other);
        assert!(turns.0.lock().is_empty(), "{:?}", turns.0.lock().keys());
    }
}
