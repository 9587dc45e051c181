//! What every handler can reach: the database, Redis, the monitor, the admin
//! token, the timeline, the rate limiters, the cache and the review writer.
//! This module imports no handler and no router, so route modules depend on
//! it and never the other way round.

use std::sync::Arc;

use seawall_perfmon::{HealthCheck, Monitor};

use crate::auth::AdminToken;
use crate::cache::ApiCache;
use crate::config::{QueueConfig, ReviewWrites};
use crate::db::Db;
use crate::jobs::Throughput;
use crate::ratelimit::RateLimits;
use crate::redis::Redis;
use crate::reviews::ReviewWriter;
use crate::setup::QueueHandle;
use crate::timeline::Timeline;

/// The state handlers share. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

/// What the state is made of.
pub(crate) struct Parts {
    pub(crate) db: Db,
    pub(crate) redis: Option<Redis>,
    pub(crate) monitor: Monitor,
    pub(crate) admin_token: AdminToken,
    pub(crate) timeline: Timeline,
    pub(crate) ratelimits: Option<RateLimits>,
    pub(crate) cache: Option<ApiCache>,
    pub(crate) queues: QueueHandle,
    pub(crate) throughput: Throughput,
    pub(crate) queue_config: QueueConfig,
    pub(crate) review_writes: ReviewWrites,
}

struct Shared {
    parts: Parts,
    reviews: ReviewWriter,
    readiness: Vec<Box<dyn HealthCheck>>,
}

impl AppState {
    /// Bundles the parts and starts the review writer; readiness checks are
    /// those of the database and, when configured, Redis.
    pub(crate) fn new(parts: Parts) -> Self {
        let mut readiness: Vec<Box<dyn HealthCheck>> = vec![Box::new(parts.db.health_check())];
        if let Some(redis) = &parts.redis {
            readiness.push(Box::new(redis.health_check()));
        }
        let reviews = ReviewWriter::start(parts.db.clone());
        Self(Arc::new(Shared {
            parts,
            reviews,
            readiness,
        }))
    }

    /// The job queues (connected in the background on Redis).
    pub(crate) fn queues(&self) -> &QueueHandle {
        &self.0.parts.queues
    }

    /// What the queues' event streams showed over the last 15 minutes.
    pub(crate) fn throughput(&self) -> &Throughput {
        &self.0.parts.throughput
    }

    /// The queues' policies.
    pub(crate) fn queue_config(&self) -> &QueueConfig {
        &self.0.parts.queue_config
    }

    /// How completed reviews are written.
    pub(crate) fn review_writes(&self) -> ReviewWrites {
        self.0.parts.review_writes
    }

    /// Whether this process runs the processors (memory backend) rather
    /// than `seawall-worker`.
    pub(crate) fn processes_jobs(&self) -> bool {
        self.0.parts.queues.is_memory()
    }

    pub(crate) fn db(&self) -> &Db {
        &self.0.parts.db
    }

    /// Where completed reviews are written.
    pub(crate) fn reviews(&self) -> &ReviewWriter {
        &self.0.reviews
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

    /// The rate limiters, unless rate limiting is off.
    pub(crate) fn ratelimits(&self) -> Option<&RateLimits> {
        self.0.parts.ratelimits.as_ref()
    }

    /// The workload's cache, unless caching is off.
    pub(crate) fn cache(&self) -> Option<&ApiCache> {
        self.0.parts.cache.as_ref()
    }

    pub(crate) fn readiness_checks(&self) -> &[Box<dyn HealthCheck>] {
        &self.0.readiness
    }
}
