//! Spans and events for loads, misses, Redis calls and the breaker's
//! refusals, with OpenTelemetry's semantic-convention field names on plain
//! `tracing` spans (as seawall-queue's are). Without a subscriber, or with
//! one that leaves the level out, each is a disabled callsite: one check,
//! no field evaluated, nothing formatted.
//!
//! Keys are left out of every span and event here: they often carry a
//! user's id (`review:today:42`), and spans travel to trace backends kept
//! longer and read more widely than logs. The cache's name and the class
//! say which data a span is about; the key still appears in the debug
//! event of a failed load, as it did before spans.

use tracing::Span;

use crate::error::Error;

/// The tier a miss was counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    L1,
    L2,
}

impl Tier {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::L1 => "l1",
            Self::L2 => "l2",
        }
    }
}

/// One Redis round trip of the cache, as its span names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    /// A plain command: `GET`, `MGET`, `SET`, `SCAN`, `DBSIZE`, `XADD`.
    Plain(&'static str),
    /// One of the cache's scripts, by its purpose (`lease`, `fill`,
    /// `drop_lease`, `forget`, `tombstone`, `tag`, `take_tag`, and the
    /// locks' `lock_acquire`, `lock_extend`, `lock_release`), sent as
    /// `EVALSHA` (and loaded first, in the same span, if the server lacks
    /// it).
    Script(&'static str),
}

impl Command {
    fn operation(self) -> &'static str {
        match self {
            Self::Plain(command) => command,
            Self::Script(_) => "EVALSHA",
        }
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Plain(command) => f.write_str(command),
            Self::Script(purpose) => write!(f, "EVALSHA {purpose}"),
        }
    }
}

/// The `cache.load` span of a loader's run and the caching of its
/// result, in cache `cache`, class `class`. [`loaded`] records how it
/// ended.
pub(crate) fn load_span(cache: &str, class: &str) -> Span {
    tracing::info_span!(
        "cache.load",
        seawall.cache.name = cache,
        seawall.cache.class = class,
        seawall.cache.outcome = tracing::field::Empty,
        seawall.cache.stale_served = tracing::field::Empty,
        error.type = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// Records on a [`load_span`] what the loader answered: `loaded` (a
/// value), `not_found` (`None`), or, as an error, `failed` (it returned
/// an error), `panicked` or `timed_out` (past the hard timeout).
pub(crate) fn loaded<T>(span: &Span, result: &Result<Option<T>, Error>) {
    let outcome = match result {
        Ok(Some(_)) => "loaded",
        Ok(None) => "not_found",
        Err(Error::LoaderPanicked { .. }) => "panicked",
        Err(Error::Timeout { .. }) => "timed_out",
        Err(_) => "failed",
    };
    span.record("seawall.cache.outcome", outcome);
    if result.is_err() {
        span.record("error.type", outcome);
        span.record("otel.status_code", "ERROR");
    }
}

/// Records on a [`load_span`] that a previous value was served in place
/// of the failed load (fail-safe).
pub(crate) fn stale_served(span: &Span) {
    span.record("seawall.cache.stale_served", true);
}

/// The `cache.redis` span of one Redis round trip of the cache whose keys
/// start with `prefix`; [`redis_failed`] records a failure.
pub(crate) fn redis_span(prefix: &str, command: Command) -> Span {
    tracing::debug_span!(
        "cache.redis",
        otel.name = %command,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        otel.status_message = tracing::field::Empty,
        db.system.name = "redis",
        db.operation.name = command.operation(),
        db.query.summary = %command,
        error.type = tracing::field::Empty,
        seawall.cache.prefix = prefix,
    )
}

/// Records on a [`redis_span`] that the call failed: `timeout` when Redis
/// did not answer in time, else the client's kind of error.
pub(crate) fn redis_failed(span: &Span, error_type: &str, message: &str) {
    span.record("error.type", error_type);
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_message", message);
}

/// A Redis call the open circuit breaker kept from being sent.
pub(crate) fn breaker_refused(prefix: &str) {
    tracing::debug!(
        name: "cache.breaker_refused",
        {
            seawall.cache.prefix = prefix,
            db.system.name = "redis",
        },
        "redis not called: the circuit breaker is open"
    );
}
