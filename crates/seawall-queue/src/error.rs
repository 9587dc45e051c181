//! The crate's error type.

/// Why a queue setting or operation was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A backoff policy that cannot work (a factor below 1, a cap below the
    /// first delay, a delay that is not finite).
    #[error("invalid backoff: {0}")]
    InvalidBackoff(String),
    /// A job option out of its range (a priority above the lowest level,
    /// no attempts, an empty or over-long group key).
    #[error("invalid job option: {0}")]
    InvalidOption(String),
}

/// A `Result` whose error defaults to this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
