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
//! requests' latency, 100 ms at a time, each answer read by
//! [`seawall_ratelimit::outcome_of`]: the service's own refusals (a request
//! timed out, no pooled connection in time, marked with
//! [`Problem::shed`]) and 504s are drops that back it off; the caller's
//! mistakes (4xx) and a dependency's failures (an unmarked 5xx, such as the
//! fast 503 of a write whose Redis is down) say nothing of capacity), and
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

use axum::extract::{MatchedPath, Request};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use seawall_app::config::Admission as Mode;
use seawall_perfmon::{Counter, Gauge, Monitor};
use seawall_ratelimit::{AdaptiveLimiter, Gradient, Token, Wait};
use tokio::sync::Semaphore;

use crate::auth::AdminToken;
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
    /// The admin API with the admin token: the whole limit, ahead of
    /// waiting public requests, so an operator reaches an overloaded
    /// instance.
    Admin,
    /// The rest of the public API, reads and writes alike (orders,
    /// coupons, points, reviews, content), the dashboard's page and the
    /// documents: one class, served newest first, since a write held ahead
    /// of the reads fills the places with the slowest requests when the
    /// database slows down.
    Public,
    /// The lowest: the expensive reads (the statistics), and what no route
    /// serves or no credential admits (a path nothing is served at, a
    /// scanner's guess, an admin call without the admin token), which
    /// would otherwise take the places of the admin.
    Lowest,
}

impl Class {
    /// The share of the limit the class may fill.
    fn share(self) -> f64 {
        match self {
            Self::Probe | Self::Admin => 1.0,
            Self::Public => 0.9,
            Self::Lowest => 0.5,
        }
    }
}

/// The class of a request to `path`: `routed` when a route serves it (the
/// router found one), `admin` when it carries the admin token (asked only
/// of the admin routes).
pub(crate) fn class(path: &str, routed: bool, admin: impl FnOnce() -> bool) -> Class {
    if EXEMPT.contains(&path) {
        Class::Probe
    } else if !routed || path == "/api/analytics/stats" {
        Class::Lowest
    } else if seawall_app::slo::is_admin_route(path) {
        if admin() { Class::Admin } else { Class::Lowest }
    } else {
        Class::Public
    }
}

/// Whether `request` carries `token` as its bearer token.
fn carries(token: &AdminToken, request: &Request) -> bool {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .is_some_and(|(scheme, candidate)| {
            scheme.eq_ignore_ascii_case("bearer") && token.matches(candidate.trim())
        })
}

/// The shared admission state. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Shedder(Arc<Inner>);

struct Inner {
    limit: Limit,
    /// The token that puts an admin call in the admin class; without one,
    /// no call is.
    admin: Option<AdminToken>,
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
        admin: Option<AdminToken>,
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
            admin,
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
    /// The request was answered with `response` (the request timeout's own
    /// included): an adaptive limit learns from it what
    /// [`seawall_ratelimit::outcome_of`] reads in it.
    pub(crate) fn finish(self, response: &Response) {
        let Place::Token(token) = self.place else {
            return;
        };
        token.report(seawall_ratelimit::outcome_of(
            response.status(),
            response.extensions(),
        ));
    }
}

/// No place is free right now: [`Shedder::wait_for`] waits for one.
pub(crate) enum Full {
    Static,
    Adaptive(Wait),
}

impl Shedder {
    /// The class of `request`: decided before it waits for anything, so
    /// that no borrow of the request is held across a wait.
    pub(crate) fn class_of(&self, request: &Request) -> Class {
        let path = request.uri().path();
        let routed = request.extensions().get::<MatchedPath>().is_some();
        class(path, routed, || {
            self.0
                .admin
                .as_ref()
                .is_some_and(|token| carries(token, request))
        })
    }

    /// Admits a request of `class` if a place is free now; `Ok(None)` for
    /// the probes.
    pub(crate) fn try_admit(&self, class: Class) -> Result<Option<Admission>, Full> {
        if class == Class::Probe {
            return Ok(None);
        }
        match &self.0.limit {
            Limit::Static { permits, .. } => match Arc::clone(permits).try_acquire_owned() {
                Ok(permit) => Ok(Some(self.admitted(Place::Permit(permit)))),
                Err(_) => Err(Full::Static),
            },
            Limit::Adaptive { limiter, .. } => match limiter.acquire_share(class.share()) {
                Ok(token) => Ok(Some(self.admitted(Place::Token(token)))),
                Err(wait) => Err(Full::Adaptive(wait)),
            },
        }
    }

    /// Admits a request of `class`, waiting up to the configured time for a
    /// place; `Ok(None)` for the probes, the 503 when it is shed.
    pub(crate) async fn admit(&self, class: Class) -> Result<Option<Admission>, Response> {
        match self.try_admit(class) {
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
            .shed()
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
        for (path, routed, admin, expected) in [
            ("/livez", true, false, Class::Probe),
            ("/readyz", true, false, Class::Probe),
            ("/metrics", true, false, Class::Probe),
            ("/", true, false, Class::Public),
            ("/assets/app.js", true, false, Class::Public),
            ("/api/openapi.json", true, false, Class::Public),
            ("/api/queue", true, true, Class::Admin),
            ("/api/queue/email", true, true, Class::Admin),
            ("/api/cache", true, true, Class::Admin),
            ("/api/review/complete", true, false, Class::Public),
            ("/api/sales/1/orders", true, false, Class::Public),
            ("/api/points/earn", true, false, Class::Public),
            ("/api/content", true, false, Class::Public),
            ("/api/points/balance", true, false, Class::Public),
            ("/api/analytics/stats", true, false, Class::Lowest),
            // Nothing is served there: a scanner's guess, a typo.
            ("/wp-login.php", false, false, Class::Lowest),
            ("/api/queueing", false, false, Class::Lowest),
            ("/api/queue/email/nothing/here", false, true, Class::Lowest),
            // An admin call without the admin token.
            ("/api/queue", true, false, Class::Lowest),
            ("/api/keys", true, false, Class::Lowest),
        ] {
            assert_eq!(class(path, routed, || admin), expected, "{path}");
        }
        let shares: Vec<f64> = [Class::Admin, Class::Public, Class::Lowest]
            .iter()
            .map(|class| class.share())
            .collect();
        assert!(shares.is_sorted_by(|a, b| a >= b), "{shares:?}");
    }

    #[test]
    fn only_the_admin_token_puts_an_admin_call_in_the_admin_class() {
        let token = AdminToken::new(Some("sw_right")).expect("accepted");
        let request = |authorization: Option<&str>| {
            let mut request = Request::builder().uri("/api/queue");
            if let Some(value) = authorization {
                request = request.header(header::AUTHORIZATION, value);
            }
            request.body(axum::body::Body::empty()).expect("request")
        };
        assert!(carries(&token, &request(Some("Bearer sw_right"))));
        assert!(carries(&token, &request(Some("bearer  sw_right"))));
        assert!(!carries(&token, &request(Some("Bearer sw_wrong"))));
        assert!(!carries(&token, &request(Some("Basic sw_right"))));
        assert!(!carries(&token, &request(Some("sw_right"))));
        assert!(!carries(&token, &request(None)));
    }
}
