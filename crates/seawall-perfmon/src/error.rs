//! The crate's error type.

/// What can go wrong when configuring or using a [`Monitor`](crate::Monitor).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of range.
    #[error("invalid perfmon configuration: `{field}` {reason}")]
    InvalidConfig {
        /// The setting that was rejected.
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// A metric or label name is not a valid Prometheus name.
    #[error("invalid metric or label name `{name}`: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A metric was registered twice with a different kind or label names.
    #[error("metric `{name}` is already registered with different {what}")]
    Conflict {
        /// The metric's name.
        name: String,
        /// What differs (kind or label names).
        what: &'static str,
    },
    /// A series was asked for with the wrong number of label values.
    #[error("metric `{name}` has labels {expected:?}, got {got} value(s)")]
    LabelCount {
        /// The metric's name.
        name: String,
        /// The label names the metric was registered with.
        expected: Vec<String>,
        /// How many values were given.
        got: usize,
    },
    /// A [`Collector`](crate::Collector) reported a family or sample that cannot
    /// be exposed.
    #[error("collected metric `{name}` cannot be exposed: {reason}")]
    InvalidCollected {
        /// The family's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
