//! Load shedding: a global limit on requests in flight with a bounded wait.
//!
//! A request takes a permit from one semaphore shared by every route; when
//! none is free it waits up to `server.shed_wait` (tokio's semaphore serves
//! waiters in order), then is answered 503 with `Retry-After: 1` at once
//! instead of queueing without bound. Shed requests are counted in
//! `http_shed_requests_total`; requests holding a permit are
//! `http_requests_in_flight`. `/livez` and `/metrics` never wait, so
//! an overloaded instance still answers its liveness probe and its scraper.

use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use seawall_perfmon::{Counter, Gauge, Monitor};
use tokio::sync::Semaphore;

use crate::problem::Problem;

/// Paths that are never shed or counted.
const EXEMPT: [&str; 2] = ["/livez", "/metrics"];

/// The shared admission state. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Shedder(Arc<Inner>);

struct Inner {
    permits: Arc<Semaphore>,
    wait: Duration,
    shed: Counter,
    in_flight: Gauge,
}

impl Shedder {
    /// At most `max_in_flight` requests at once, the rest waiting up to
    /// `wait`; the metrics are registered on `monitor`.
    pub(crate) fn new(
        max_in_flight: usize,
        wait: Duration,
        monitor: &Monitor,
    ) -> Result<Self, seawall_perfmon::Error> {
        let shed = monitor
            .counter(
                "http_shed_requests",
                "Requests answered 503 because the in-flight limit stayed full for the whole wait.",
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
        Ok(Self(Arc::new(Inner {
            permits: Arc::new(Semaphore::new(max_in_flight)),
            wait,
            shed,
            in_flight,
        })))
    }
}

/// A request's place among those in flight: released when dropped.
pub(crate) struct Admission {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _in_flight: InFlight,
}

/// No place is free right now: [`Shedder::admit`] waits for one.
pub(crate) struct Full;

impl Shedder {
    /// Admits a request to `path` if a place is free now; `Ok(None)` for the
    /// exempt paths.
    pub(crate) fn try_admit(&self, path: &str) -> Result<Option<Admission>, Full> {
        if EXEMPT.contains(&path) {
            return Ok(None);
        }
        match self.0.permits.clone().try_acquire_owned() {
            Ok(permit) => Ok(Some(self.admitted(permit))),
            Err(_) => Err(Full),
        }
    }

    /// Admits a request to `path`, waiting up to the configured time for a
    /// place; `Ok(None)` for the exempt paths, the 503 when it is shed.
    pub(crate) async fn admit(&self, path: &str) -> Result<Option<Admission>, Response> {
        if let Ok(admission) = self.try_admit(path) {
            return Ok(admission);
        }
        let inner = &self.0;
        let permit = if inner.wait.is_zero() {
            None
        } else {
            tokio::time::timeout(inner.wait, inner.permits.clone().acquire_owned())
                .await
                .ok()
                .and_then(Result::ok)
        };
        let Some(permit) = permit else {
            inner.shed.inc();
            return Err(Problem::unavailable(
                "the server is at its limit of requests in flight; retry shortly",
            )
            .with_retry_after(1)
            .into_response());
        };
        Ok(Some(self.admitted(permit)))
    }

    fn admitted(&self, permit: tokio::sync::OwnedSemaphorePermit) -> Admission {
        self.0.in_flight.inc();
        Admission {
            _permit: permit,
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
