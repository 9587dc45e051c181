//! What every handler can reach: the workload (with the database, the cache
//! and the queues), Redis, the monitor, the admin token, the timeline and
//! the rate limiters and the in-flight limit.
//! This module imports no handler and no router, so route modules depend on
//! it and never the other way round.

use std::sync::Arc;

use seawall_app::cache::ApiCache;
use seawall_app::config::QueueConfig;
use seawall_app::db::Db;
use seawall_app::jobs::Throughput;
use seawall_app::promotions::{Promotions, Scenarios};
use seawall_app::redis::Redis;
use seawall_app::setup::QueueHandle;
use seawall_app::workload::Workload;
use seawall_perfmon::{HealthCheck, Monitor, ShutdownCheck};

use crate::auth::AdminToken;
use crate::middleware::{Shedder, Standing};
use crate::ratelimit::RateLimits;
use crate::timeline::Timeline;

/// The state handlers share. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

/// What the state is made of.
pub(crate) struct Parts {
    pub(crate) workload: Workload,
    pub(crate) promotions: Promotions,
    /// The dashboard's scenario runs, over `promotions`.
    pub(crate) scenarios: Scenarios,
    pub(crate) redis: Option<Redis>,
    pub(crate) monitor: Monitor,
    pub(crate) admin_token: AdminToken,
    pub(crate) timeline: Timeline,
    /// The forecasts of Redis's memory and the request rate.
    pub(crate) capacity: seawall_app::capacity::Capacity,
    /// The route classes' objectives, as this instance sees them.
    pub(crate) slo: seawall_app::slo::Slo,
    pub(crate) ratelimits: Option<RateLimits>,
    /// The in-flight limit, read for the dashboard.
    pub(crate) shedder: Shedder,
    pub(crate) throughput: Throughput,
    /// Fails readiness once shutdown begins.
    pub(crate) shutdown: ShutdownCheck,
}

struct Shared {
    parts: Parts,
    readiness: Vec<Box<dyn HealthCheck>>,
}

impl AppState {
    /// Bundles the parts; readiness checks are those of the database and,
    /// when configured, Redis, the cache's following of other instances'
    /// invalidations, the queues' enqueue path, and shutdown.
    pub(crate) fn new(parts: Parts) -> Self {
        let mut readiness: Vec<Box<dyn HealthCheck>> = vec![
            Box::new(parts.shutdown.clone()),
            Box::new(parts.workload.db().health_check()),
        ];
        if let Some(redis) = &parts.redis {
            readiness.push(Box::new(redis.health_check()));
        }
        if let Some(cache) = parts.workload.cache() {
            readiness.push(Box::new(cache.cache().readiness_check()));
        }
        if !parts.workload.queues().is_memory() {
            readiness.push(Box::new(parts.workload.queues().enqueue_check()));
        }
        Self(Arc::new(Shared { parts, readiness }))
    }

    /// The reference workload.
    pub(crate) fn workload(&self) -> &Workload {
        &self.0.parts.workload
    }

    /// The promotions workload.
    pub(crate) fn promotions(&self) -> &Promotions {
        &self.0.parts.promotions
    }

    /// The scenario runs of this process.
    pub(crate) fn scenarios(&self) -> &Scenarios {
        &self.0.parts.scenarios
    }

    /// The job queues (connected in the background on Redis).
    pub(crate) fn queues(&self) -> &QueueHandle {
        self.0.parts.workload.queues()
    }

    /// What the queues' event streams showed over the last 15 minutes.
    pub(crate) fn throughput(&self) -> &Throughput {
        &self.0.parts.throughput
    }

    /// The queues' policies.
    pub(crate) fn queue_config(&self) -> &QueueConfig {
        self.0.parts.workload.queue_config()
    }

    /// Whether this process runs the processors (memory backend) rather
    /// than `seawall-worker`.
    pub(crate) fn processes_jobs(&self) -> bool {
        self.queues().is_memory()
    }

    pub(crate) fn db(&self) -> &Db {
        self.0.parts.workload.db()
    }

    pub(crate) fn redis(&self) -> Option<&Redis> {
        self.0.parts.redis.as_ref()
    }

    pub(crate) fn monitor(&self) -> &Monitor {
        &self.0.parts.monitor
    }

    pub(crate) fn admin_token(&self) -> &AdminToken {
        &self.0.parts.admin_token
    }

    pub(crate) fn timeline(&self) -> &Timeline {
        &self.0.parts.timeline
    }

    pub(crate) fn capacity(&self) -> &seawall_app::capacity::Capacity {
        &self.0.parts.capacity
    }

    pub(crate) fn slo(&self) -> &seawall_app::slo::Slo {
        &self.0.parts.slo
    }

    /// The rate limiters, unless rate limiting is off.
    pub(crate) fn ratelimits(&self) -> Option<&RateLimits> {
        self.0.parts.ratelimits.as_ref()
    }

    /// Where the in-flight limit stands now.
    pub(crate) fn admission(&self) -> Standing {
        self.0.parts.shedder.standing()
    }

    /// The workload's cache, unless caching is off.
    pub(crate) fn cache(&self) -> Option<&ApiCache> {
        self.0.parts.workload.cache()
    }

    /// Readiness fails from now on: shutdown has begun.
    pub(crate) fn begin_shutdown(&self) {
        self.0.parts.shutdown.begin();
    }

    pub(crate) fn readiness_checks(&self) -> &[Box<dyn HealthCheck>] {
        &self.0.readiness
    }
}
