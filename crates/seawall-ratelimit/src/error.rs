//! The crate's error type.

/// Why a limiter could not decide, or could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A limit that cannot work (zero, or too large to compute exactly).
    #[error("invalid limit: {0}")]
    InvalidLimit(String),
    /// A limiter's configuration is unusable (no limits, a bad name).
    #[error("invalid limiter configuration: {0}")]
    InvalidConfig(String),
    /// A request asked for more units than the limit admits in one
    /// request: its capacity, or for a sliding log at most
    /// [`MAX_LOG_COST`](crate::MAX_LOG_COST).
    #[error(
        "a cost of {cost} can never be admitted by {limiter}, which admits at most {capacity} in one request"
    )]
    CostTooHigh {
        /// The limiter.
        limiter: String,
        /// The cost asked for.
        cost: u64,
        /// The most any request can cost.
        capacity: u64,
    },
    /// A key that is empty or longer than [`MAX_KEY_BYTES`](crate::MAX_KEY_BYTES).
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// A request carries no peer address, so its client cannot be told
    /// apart: the server is not started with axum's
    /// `into_make_service_with_connect_info::<SocketAddr>()`, nor inserts a
    /// `PeerAddr`.
    #[error(
        "the request carries no peer address (serve with ConnectInfo<SocketAddr> or insert PeerAddr)"
    )]
    UnknownPeer,
    /// Redis failed (a lost connection, no answer within the store's
    /// timeout) and the limiter's failure policy is to report it.
    #[error("Redis failed")]
    Redis(#[source] fred::error::Error),
    /// Redis answered this call with an error (a script's error reply, a
    /// key of the wrong type): the store is up, and this call alone failed.
    /// It does not open the store's circuit breaker.
    #[error("Redis refused the call")]
    Refused(#[source] fred::error::Error),
    /// Redis failed moments ago: the store's circuit breaker is open and
    /// this call was not the one probe let through.
    #[error("Redis failed moments ago; it is tried again shortly")]
    Unavailable,
    /// A memory store holds its most keys, none of them fresh enough to
    /// forget, and the limiter's failure policy is to report it.
    #[error("the memory store of {limiter} is full")]
    StoreFull {
        /// The limiter.
        limiter: String,
    },
    /// Redis answered something the script never returns.
    #[error("unexpected reply from the rate-limit script: {0}")]
    Protocol(String),
    /// Registering the limiter's metrics failed.
    #[error("metrics registration failed")]
    Metrics(#[source] seawall_perfmon::Error),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
