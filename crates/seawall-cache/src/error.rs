//! The crate's error type.

use std::sync::Arc;
use std::time::Duration;

use fred::error::ErrorKind;

/// What a cache call can fail with.
///
/// A failing Redis never appears here from a read or a load: the cache
/// falls back to L1 and the loader and counts the failure. Only calls that
/// must reach Redis to mean anything (a lock, an invalidation the caller
/// wants confirmed) report it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The loader failed and no earlier value could stand in for it.
    #[error("loading {key:?} failed: {source}")]
    Load {
        /// The key being loaded.
        key: String,
        /// What the loader returned.
        #[source]
        source: BoxError,
    },
    /// The loader panicked (or its task was aborted); the key is not wedged.
    #[error("the loader of {key:?} panicked")]
    LoaderPanicked {
        /// The key being loaded.
        key: String,
    },
    /// The load took longer than the hard timeout and no earlier value could
    /// stand in for it.
    #[error("loading {key:?} took longer than {timeout:?}")]
    Timeout {
        /// The key being loaded.
        key: String,
        /// The hard timeout.
        timeout: Duration,
    },
    /// A value could not be encoded.
    #[error("encoding the value of {key:?}: {message}")]
    Encode {
        /// The key.
        key: String,
        /// What the codec said.
        message: String,
    },
    /// Redis failed, did not answer within the configured timeout (an
    /// error of kind [`Timeout`](fred::error::ErrorKind::Timeout)), or
    /// answered in a shape the cache never asks for (of kind
    /// [`Protocol`](fred::error::ErrorKind::Protocol)). The error's
    /// [`kind`](fred::error::Error::kind) and
    /// [`details`](fred::error::Error::details) say which.
    #[error("redis: {0}")]
    Redis(#[source] fred::error::Error),
    /// Redis is not used: the cache has no L2, or its circuit breaker is open.
    #[error("redis is unavailable ({0})")]
    Unavailable(&'static str),
    /// A lock is held by someone else.
    #[error("the lock {name:?} is held by another owner")]
    Locked {
        /// The lock's name.
        name: String,
    },
    /// A lock guard no longer owns its lock (it expired and was taken, or was
    /// released).
    #[error("the lock {name:?} is no longer owned by this guard")]
    LockLost {
        /// The lock's name.
        name: String,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A pattern, tag or key is not acceptable.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// Registering the cache's metrics failed.
    #[error("metrics: {0}")]
    Metrics(#[from] seawall_perfmon::Error),
}

impl Error {
    /// The loader's own error, for [`Error::Load`]: what the loader returned,
    /// also when its load was shared by several callers. Downcast it to
    /// recover a typed error.
    ///
    /// ```
    /// # use seawall_cache::Error;
    /// let error = Error::Load { key: "k".into(), source: Box::new(std::io::Error::other("down")) };
    /// let io = error.loader_error().and_then(|e| e.downcast_ref::<std::io::Error>());
    /// assert_eq!(io.map(ToString::to_string).as_deref(), Some("down"));
    /// ```
    pub fn loader_error(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match self {
            Self::Load { source, .. } => Some(unshare(&**source)),
            _ => None,
        }
    }
}

/// The error of a Redis call that got no answer within `timeout`.
pub(crate) fn no_answer(timeout: Duration) -> fred::error::Error {
    fred::error::Error::new(ErrorKind::Timeout, format!("no answer within {timeout:?}"))
}

/// The error of a Redis answer in a shape the cache never asks for.
pub(crate) fn unexpected_reply(what: &'static str) -> Error {
    Error::Redis(fred::error::Error::new(ErrorKind::Protocol, what))
}

/// A loader's error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error for one more waiter of a shared failure.
pub(crate) fn share(error: &Arc<Error>) -> Error {
    match &**error {
        Error::LoaderPanicked { key } => Error::LoaderPanicked { key: key.clone() },
        Error::Timeout { key, timeout } => Error::Timeout {
            key: key.clone(),
            timeout: *timeout,
        },
        Error::Load { key, .. } => Error::Load {
            key: key.clone(),
            source: Box::new(SharedError(Arc::clone(error))),
        },
        other => Error::Invalid(other.to_string()),
    }
}

/// The loader's error behind a shared one.
pub(crate) fn unshare<'a>(
    error: &'a (dyn std::error::Error + Send + Sync + 'static),
) -> &'a (dyn std::error::Error + Send + Sync + 'static) {
    match error.downcast_ref::<SharedError>().map(|shared| &*shared.0) {
        Some(Error::Load { source, .. }) => unshare(&**source),
        _ => error,
    }
}

/// A loader's error seen by several waiters.
#[derive(Debug)]
struct SharedError(Arc<Error>);

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.0 {
            Error::Load { source, .. } => source.fmt(f),
            other => other.fmt(f),
        }
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.0 {
            Error::Load { source, .. } => source.source(),
            _ => None,
        }
    }
}
