//! What can go wrong reading, recording or checking a history.

use std::path::PathBuf;

/// A failure of this crate. Reading never panics on bad input: every
/// malformed line comes back as [`Error::Line`] or [`Error::Malformed`]
/// with the file and the line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be opened, read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line of a history is not an event (bad JSON, a missing field, an
    /// unknown `type` or `workload`).
    #[error("{file}:{line}: not an event: {source}")]
    Line {
        /// The file (or the name given to the text).
        file: String,
        /// The line, from 1.
        line: usize,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// A line is an event, but does not fit the history: a completion
    /// without its invoke, an id used twice, a value of the wrong shape.
    #[error("{file}:{line}: {reason}")]
    Malformed {
        /// The file (or the name given to the text).
        file: String,
        /// The line, from 1.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The final state document is not valid.
    #[error("{file}: not a final state: {source}")]
    State {
        /// The file (or the name given to the text).
        file: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// The final state leaves out what the history needs judged: the
    /// section of a workload the history ran, or the final version of a
    /// cache key it wrote. A check without it could not fail.
    #[error("the final state has no {what}, which the history needs judged")]
    Incomplete {
        /// What is missing (`queue section`, `final version of cache key k`).
        what: String,
    },
    /// A fault, an outbox row or a queue's masters name a host that is
    /// not among the fleet's hosts the final state lists.
    #[error("{named_by} names {host}, which is not one of the fleet's hosts")]
    UnknownHost {
        /// The host.
        host: String,
        /// What names it (`a kill at +3.000s`, `a row of notification:7`).
        named_by: String,
    },
    /// An event could not be written to the recorder's file.
    #[error("recording to {}: {source}", path.display())]
    Record {
        /// The recorder's file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// This crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
