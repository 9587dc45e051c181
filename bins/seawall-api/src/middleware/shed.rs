//! Load shedding: a limit on requests in flight, static or adaptive.
//!
//! Static (`server.admission = "static"`): a request takes a permit from one
//! semaphore shared by every route; when none is free it waits up to
//! `server.shed_wait` (tokio's semaphore serves waiters in order), then is
//! answered 503 with `Retry-After: 1` at once instead of queueing without
//! bound.
//!
//! Adaptive (`"adaptive"`): the limit is found by a latency-based
//! [`AdaptiveLimiter`] (Gradient2) between 4 and `server.max_in_flight`,
//! from each finished request's latency (a 503 or 504, or a request timed
//! out, is a drop that backs it off; a 4xx says nothing of capacity), and
//! requests fill it by priority class ([`class`]): a class may take a
//! place only while fewer than its share of the limit are in flight, so
//! the lowest class is refused first as the service fills. A request with
//! no room is answered 503 with `Retry-After: 1` at once, never after a
//! wait.
//!
//! Either way, shed requests are counted in `http_shed_requests_total`
//! and requests holding a place are `http_requests_in_flight`; the probes
//! and `/metrics` never take a place, so an overloaded instance still
//! answers its orchestrator and its scraper.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use seawall_app::config::Admission as Mode;
use seawall_perfmon::{Counter, Gauge, Monitor};
use seawall_ratelimit::{AdaptiveLimiter, Gradient, Token};
use tokio::sync::Semaphore;

use crate::problem::Problem;

/// Paths that are never shed or counted, in either mode.
const EXEMPT: [&str; 2] = ["/livez", "/metrics"];

/// The lowest the adaptive limit goes.
const ADAPTIVE_FLOOR: usize = 4;
/// Where the adaptive limit starts, below `server.max_in_flight`.
const ADAPTIVE_START: usize = 64;

/// What share of the adaptive limit a request may fill, by what it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Class {
    /// The probes and the scraper: never limited.
    Probe,
    /// The admin API, the dashboard and the documents: the whole limit.
    Admin,
    /// Writes of the public API (orders, coupons, points, reviews).
    Write,
    /// Reads of the public API.
    Read,
    /// The expensive reads (the statistics).
    Expensive,
}

impl Class {
    /// The share of the limit the class may fill.
    fn share(self) -> f64 {
        match self {
            Self::Probe | Self::Admin => 1.0,
            Self::Write => 0.9,
            Self::Read => 0.75,
            Self::Expensive => 0.5,
        }
    }
}

/// The class of a request to `path` with `method`.
pub(crate) fn class(method: &Method, path: &str) -> Class {
    const ADMIN: [&str; 7] = [
        "/api/queue",
        "/api/cache",
        "/api/rate-limit",
        "/api/keys",
        "/api/performance",
        "/api/promotions",
        "/api/openapi.json",
    ];
    if EXEMPT.contains(&path) || path == "/readyz" {
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
    } else if method == Method::GET || method == Method::HEAD {
        Class::Read
    } else {
        Class::Write
    }
}

/// The shared admission state. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Shedder(Arc<Inner>);

struct Inner {
    limit: Limit,
    shed: Counter,
    in_flight: Gauge,
}

enum Limit {
    Static {
        permits: Arc<Semaphore>,
        wait: Duration,
    },
    Adaptive(AdaptiveLimiter),
}

impl Shedder {
    /// At most `max_in_flight` requests at once by `mode`, the rest waiting
    /// up to `wait` (static admission only); the metrics are registered on
    /// `monitor`.
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
                    .initial((ADAPTIVE_START as u64).clamp(min, max))
                    .metrics(monitor, "http")
                    .build()
                    .map_err(|error| crate::Error::App(seawall_app::Error::RateLimit(error)))?;
                Limit::Adaptive(limiter)
            }
        };
        Ok(Self(Arc::new(Inner {
            limit,
            shed,
            in_flight,
        })))
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

/// No place is free right now: [`Shedder::admit`] waits for one (static
/// admission) or sheds at once (adaptive).
pub(crate) struct Full;

impl Shedder {
    /// Admits a request if a place is free now; `Ok(None)` for the exempt
    /// paths.
    pub(crate) fn try_admit(&self, method: &Method, path: &str) -> Result<Option<Admission>, Full> {
        match &self.0.limit {
            Limit::Static { permits, .. } => {
                if EXEMPT.contains(&path) {
                    return Ok(None);
                }
                match Arc::clone(permits).try_acquire_owned() {
                    Ok(permit) => Ok(Some(self.admitted(Place::Permit(permit)))),
                    Err(_) => Err(Full),
                }
            }
            Limit::Adaptive(limiter) => {
                let class = class(method, path);
                if class == Class::Probe {
                    return Ok(None);
                }
                match limiter.try_acquire_share(class.share()) {
                    Some(token) => Ok(Some(self.admitted(Place::Token(token)))),
                    None => Err(Full),
                }
            }
        }
    }

    /// Admits a request, waiting up to the configured time for a place
    /// (static admission); `Ok(None)` for the exempt paths, the 503 when it
    /// is shed.
    pub(crate) async fn admit(
        &self,
        method: &Method,
        path: &str,
    ) -> Result<Option<Admission>, Response> {
        if let Ok(admission) = self.try_admit(method, path) {
            return Ok(admission);
        }
        let inner = &self.0;
        let permit = match &inner.limit {
            Limit::Static { permits, wait } if !wait.is_zero() => {
                tokio::time::timeout(*wait, Arc::clone(permits).acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            _ => None,
        };
        let Some(permit) = permit else {
            return Err(self.shed());
        };
        Ok(Some(self.admitted(Place::Permit(permit))))
    }

    /// Whether a request with no room is shed at once (adaptive admission)
    /// rather than waiting for a place.
    pub(crate) fn sheds_at_once(&self) -> bool {
        matches!(self.0.limit, Limit::Adaptive(_))
    }

    /// Counts a shed request and answers it: 503, `Retry-After: 1`.
    pub(crate) fn shed(&self) -> Response {
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
        for (method, path, expected) in [
            (Method::GET, "/livez", Class::Probe),
            (Method::GET, "/readyz", Class::Probe),
            (Method::GET, "/metrics", Class::Probe),
            (Method::GET, "/", Class::Admin),
            (Method::GET, "/assets/app.js", Class::Admin),
            (Method::GET, "/api/queue", Class::Admin),
            (Method::POST, "/api/queue/email", Class::Admin),
            (Method::DELETE, "/api/cache", Class::Admin),
            (Method::GET, "/api/openapi.json", Class::Admin),
            (Method::POST, "/api/review/complete", Class::Write),
            (Method::POST, "/api/sales/1/orders", Class::Write),
            (Method::POST, "/api/points/earn", Class::Write),
            (Method::GET, "/api/content", Class::Read),
            (Method::GET, "/api/points/balance", Class::Read),
            (Method::GET, "/api/analytics/stats", Class::Expensive),
            (Method::GET, "/api/queueing", Class::Read),
        ] {
            assert_eq!(class(&method, path), expected, "{method} {path}");
        }
        let shares: Vec<f64> = [Class::Admin, Class::Write, Class::Read, Class::Expensive]
            .iter()
            .map(|class| class.share())
            .collect();
        assert!(shares.is_sorted_by(|a, b| a >= b), "{shares:?}");
    }
}
