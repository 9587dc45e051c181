//! What every handler can reach: the database, Redis, the monitor, the admin
//! token, the timeline, the rate limiters, the cache and the review writer.
//! This module imports no handler and no router, so route modules depend on
//! it and never the other way round.

use std::sync::Arc;

use seawall_perfmon::{HealthCheck, Monitor};

use crate::auth::AdminToken;
use crate::cache::ApiCache;
use crate::db::Db;
use crate::ratelimit::RateLimits;
use crate::redis::Redis;
use crate::reviews::ReviewWriter;
use crate::timeline::Timeline;

/// The state handlers share. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

struct Shared {
    db: Db,
    redis: Option<Redis>,
    monitor: Monitor,
    admin_token: AdminToken,
    timeline: Timeline,
    ratelimits: Option<RateLimits>,
    cache: Option<ApiCache>,
    reviews: ReviewWriter,
    readiness: Vec<Box<dyn HealthCheck>>,
}

impl AppState {
    /// Bundles the parts and starts the review writer; readiness checks are
    /// those of the database and, when configured, Redis.
    pub(crate) fn new(
        db: Db,
        redis: Option<Redis>,
        monitor: Monitor,
        admin_token: AdminToken,
        timeline: Timeline,
        ratelimits: Option<RateLimits>,
        cache: Option<ApiCache>,
    ) -> Self {
        let mut readiness: Vec<Box<dyn HealthCheck>> = vec![Box::new(db.health_check())];
        if let Some(redis) = &redis {
            readiness.push(Box::new(redis.health_check()));
        }
        let reviews = ReviewWriter::start(db.clone());
        Self(Arc::new(Shared {
            db,
            redis,
            monitor,
            admin_token,
            timeline,
            ratelimits,
            cache,
            reviews,
            readiness,
        }))
    }

    pub(crate) fn db(&self) -> &Db {
        &self.0.db
    }

    /// Where completed reviews are written.
    pub(crate) fn reviews(&self) -> &ReviewWriter {
        &self.0.reviews
    }

    pub(crate) fn redis(&self) -> Option<&Redis> {
        self.0.redis.as_ref()
    }

    pub(crate) fn monitor(&self) -> &Monitor {
        &self.0.monitor
    }

    pub(crate) fn admin_token(&self) -> &AdminToken {
        &self.0.admin_token
    }

    pub(crate) fn timeline(&self) -> &Timeline {
        &self.0.timeline
    }

    /// The rate limiters, unless rate limiting is off.
    pub(crate) fn ratelimits(&self) -> Option<&RateLimits> {
        self.0.ratelimits.as_ref()
    }

    /// The workload's cache, unless caching is off.
    pub(crate) fn cache(&self) -> Option<&ApiCache> {
        self.0.cache.as_ref()
    }

    pub(crate) fn readiness_checks(&self) -> &[Box<dyn HealthCheck>] {
        &self.0.readiness
    }
}
