//! Load shedding: a limit on requests in flight, static or adaptive.
//!
//! Static (`server.admission = "static"`): a request takes a permit from one
//! semaphore shared by every route; when none is free it waits up to
//! `server.shed_wait` (tokio's semaphore serves waiters in order), then is
//! answered 503 with `Retry-After: 1` at once instead of queueing without
//! bound.
//!
//! Adaptive (`"adaptive"`, the default): the limit is found by a
//! latency-based [`AdaptiveLimiter`] (Gradient2) between 4 and
//! `server.max_in_flight`, starting at the latter, from the finished
//! requests' latency, 100 ms at a time (a 503 or 504, or a request timed
//! out, is a drop that backs it off; a 4xx says nothing of capacity), and
//! requests fill it by priority class ([`class`]): a class may take a
//! place only while fewer than its share of the limit are in flight, so
//! the lowest class is refused first as the service fills. A request with
//! no room waits up to `server.shed_wait` for one (a finished request
//! hands its place to the waiting request of the highest class, the newest
//! first, so that under overload an admitted request carries little of the
//! wait), then is answered 503 with `Retry-After: 1`: the wait is what
//! keeps a client that re-sends a refused request at once from turning
//! overload into a storm of refusals.
//!
//! Either way, shed requests are counted in `http_shed_requests_total`
//! and requests holding a place are `http_requests_in_flight`; the probes
//! and `/metrics` never take a place, so an overloaded instance still
//! answers its orchestrator and its scraper.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use seawall_app::config::Admission as Mode;
use seawall_perfmon::{Counter, Gauge, Monitor};
use seawall_ratelimit::{AdaptiveLimiter, Gradient, Token, Wait};
use tokio::sync::Semaphore;

use crate::problem::Problem;

/// Paths that are never shed or counted, in either mode.
const EXEMPT: [&str; 3] = ["/livez", "/readyz", "/metrics"];

/// The lowest the adaptive limit goes.
const ADAPTIVE_FLOOR: usize = 4;

/// What share of the adaptive limit a request may fill, by what it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Class {
    /// The probes and the scraper: never limited.
    Probe,
    /// The admin API, the dashboard and the documents: the whole limit.
    Admin,
    /// The rest of the public API, reads and writes alike (orders,
    /// coupons, points, reviews, content): one class, served newest first,
    /// since a write held ahead of the reads fills the places with the
    /// slowest requests when the database slows down.
    Public,
    /// The expensive reads (the statistics).
    Expensive,
}

impl Class {
    /// The share of the limit the class may fill.
    fn share(self) -> f64 {
        match self {
            Self::Probe | Self::Admin => 1.0,
            Self::Public => 0.9,
            Self::Expensive => 0.5,
        }
    }
}

/// The class of a request to `path`.
pub(crate) fn class(path: &str) -> Class {
    const ADMIN: [&str; 7] = [
        "/api/queue",
        "/api/cache",
        "/api/rate-limit",
        "/api/keys",
        "/api/performance",
        "/api/promotions",
        "/api/openapi.json",
    ];
    if EXEMPT.contains(&path) {
        Class::Probe
    } else if path == "/api/analytics/stats" {
        Class::Expensive
    } else if !path.starts_with("/api/")
        || ADMIN.iter().any(|prefix| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    {
        // The dashboard and its assets, the API documents.
        Class::Admin
    } else {
        Class::Public
    }
}

/// The shared admission state. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Shedder(Arc<Inner>);

struct Inner {
    limit: Limit,
    shed: Counter,
    in_flight: Gauge,
    /// `server.max_in_flight`.
    ceiling: u64,
}

/// The in-flight limit as it stands, for the dashboard.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Standing {
    /// Whether the limit is adaptive (else static).
    pub(crate) adaptive: bool,
    /// The limit now: found from latency, or `server.max_in_flight`.
    pub(crate) limit: u64,
    /// `server.max_in_flight`: the most the limit reaches.
    pub(crate) ceiling: u64,
    /// Requests holding a place now.
    pub(crate) in_flight: u64,
    /// Requests shed since the process started.
    pub(crate) shed: u64,
}

enum Limit {
    Static {
        permits: Arc<Semaphore>,
        wait: Duration,
    },
    Adaptive {
        limiter: AdaptiveLimiter,
        wait: Duration,
    },
}

impl Shedder {
    /// At most `max_in_flight` requests at once by `mode`, the rest waiting
    /// up to `wait` for a place; the metrics are registered on `monitor`.
    pub(crate) fn new(
        max_in_flight: usize,
        wait: Duration,
        mode: Mode,
        monitor: &Monitor,
    ) -> Result<Self, crate::Error> {
        let shed = monitor
            .counter(
                "http_shed_requests",
                "Requests answered 503 because the in-flight limit had no room for them.",
                &[],
            )?
            .with_labels(&[])?;
        let in_flight = monitor
            .gauge(
                "http_requests_in_flight",
                "Requests being served now (the probes and /metrics are not counted).",
                &[],
            )?
            .with_labels(&[])?;
        let limit = match mode {
            Mode::Static => Limit::Static {
                permits: Arc::new(Semaphore::new(max_in_flight)),
                wait,
            },
            Mode::Adaptive => {
                let max = max_in_flight as u64;
                let min = (ADAPTIVE_FLOOR as u64).min(max);
                let limiter = AdaptiveLimiter::builder(Gradient::new())
                    .bounds(min, max)
                    // At its ceiling: a fresh instance serves what static
                    // admission would until latency shows it has too much
                    // in flight. Started low, it shed the statistics of a
                    // load it served in time while the limit climbed.
                    .initial(max)
                    .metrics(monitor, "http")
                    .build()
                    .map_err(|error| crate::Error::App(seawall_app::Error::RateLimit(error)))?;
                Limit::Adaptive { limiter, wait }
            }
        };
        Ok(Self(Arc::new(Inner {
            limit,
            shed,
            in_flight,
            ceiling: max_in_flight as u64,
        })))
    }

    /// Where the limit stands now.
    pub(crate) fn standing(&self) -> Standing {
        let inner = &*self.0;
        let (adaptive, limit, in_flight) = match &inner.limit {
            Limit::Static { permits, .. } => {
                let free = permits.available_permits() as u64;
                (false, inner.ceiling, inner.ceiling.saturating_sub(free))
            }
            Limit::Adaptive { limiter, .. } => (true, limiter.limit(), limiter.in_flight()),
        };
        Standing {
            adaptive,
            limit,
            ceiling: inner.ceiling,
            in_flight,
            shed: inner.shed.get(),
        }
    }
}

/// A request's place among those in flight: given back when dropped;
/// [`Admission::finish`] also tells an adaptive limit how the request
/// went.
pub(crate) struct Admission {
    place: Place,
    _in_flight: InFlight,
}

enum Place {
    Permit(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit), // held for its drop
    Token(Token),
}

impl Admission {
    /// The request was answered with `status`, or (`None`) stopped by the
    /// request timeout.
    pub(crate) fn finish(self, status: Option<StatusCode>) {
        let Place::Token(token) = self.place else {
            return;
        };
        match status {
            None | Some(StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT) => {
                token.dropped();
            }
            Some(status) if status.is_client_error() => token.ignore(),
            Some(_) => token.success(),
        }
    }
}

/// No place is free right now: [`Shedder::wait_for`] waits for one.
pub(crate) enum Full {
    Static,
    Adaptive(Wait),
}

impl Shedder {
    /// Admits a request if a place is free now; `Ok(None)` for the exempt
    /// paths.
    pub(crate) fn try_admit(&self, path: &str) -> Result<Option<Admission>, Full> {
        match &self.0.limit {
            Limit::Static { permits, .. } => {
                if EXEMPT.contains(&path) {
                    return Ok(None);
                }
                match Arc::clone(permits).try_acquire_owned() {
                    Ok(permit) => Ok(Some(self.admitted(Place::Permit(permit)))),
                    Err(_) => Err(Full::Static),
                }
            }
            Limit::Adaptive { limiter, .. } => {
                let class = class(path);
                if class == Class::Probe {
                    return Ok(None);
                }
                match limiter.acquire_share(class.share()) {
                    Ok(token) => Ok(Some(self.admitted(Place::Token(token)))),
                    Err(wait) => Err(Full::Adaptive(wait)),
                }
            }
        }
    }

    /// Admits a request, waiting up to the configured time for a place;
    /// `Ok(None)` for the exempt paths, the 503 when it is shed.
    pub(crate) async fn admit(&self, path: &str) -> Result<Option<Admission>, Response> {
        match self.try_admit(path) {
            Ok(admission) => Ok(admission),
            Err(full) => self.wait_for(full).await.map(Some),
        }
    }

    /// Waits up to the configured time for the place [`Shedder::try_admit`]
    /// found no room for; the 503 when none comes.
    pub(crate) async fn wait_for(&self, full: Full) -> Result<Admission, Response> {
        let place = match (&self.0.limit, full) {
            (Limit::Static { permits, wait }, Full::Static) if !wait.is_zero() => {
                tokio::time::timeout(*wait, Arc::clone(permits).acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .map(Place::Permit)
            }
            (Limit::Adaptive { wait, .. }, Full::Adaptive(waiting)) => {
                waiting.within(*wait).await.map(Place::Token)
            }
            _ => None,
        };
        match place {
            Some(place) => Ok(self.admitted(place)),
            None => Err(self.shed()),
        }
    }

    /// Counts a shed request and answers it: 503, `Retry-After: 1`.
    fn shed(&self) -> Response {
        self.0.shed.inc();
        Problem::unavailable("the server is at its limit of requests in flight; retry shortly")
            .with_retry_after(1)
            .into_response()
    }

    fn admitted(&self, place: Place) -> Admission {
        self.0.in_flight.inc();
        Admission {
            place,
            _in_flight: InFlight(self.0.in_flight.clone()),
        }
    }
}

/// Decrements the in-flight gauge however the request ends (a cancelled
/// future included).
struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_sorted_into_classes() {
        for (path, expected) in [
            ("/livez", Class::Probe),
            ("/readyz", Class::Probe),
            ("/metrics", Class::Probe),
            ("/", Class::Admin),
            ("/assets/app.js", Class::Admin),
            ("/api/queue", Class::Admin),
            ("/api/queue/email", Class::Admin),
            ("/api/cache", Class::Admin),
            ("/api/openapi.json", Class::Admin),
            ("/api/review/complete", Class::Public),
            ("/api/sales/1/orders", Class::Public),
            ("/api/points/earn", Class::Public),
            ("/api/content", Class::Public),
            ("/api/points/balance", Class::Public),
            ("/api/analytics/stats", Class::Expensive),
            ("/api/queueing", Class::Public),
        ] {
            assert_eq!(class(path), expected, "{path}");
        }
        let shares: Vec<f64> = [Class::Admin, Class::Public, Class::Expensive]
            .iter()
            .map(|class| class.share())
            .collect();
        assert!(shares.is_sorted_by(|a, b| a >= b), "{shares:?}");
    }
}
