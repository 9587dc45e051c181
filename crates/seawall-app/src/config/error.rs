//! Why the configuration could not be loaded.

use std::error::Error as StdError;
use std::path::PathBuf;

/// Why the configuration could not be loaded.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The command line did not parse. This is also how `--help` and
    /// `--version` come back from [`from_sources`](super::from_sources); [`load`](super::load) lets clap print
    /// those and exit instead.
    #[error("invalid command line")]
    Cli(#[source] clap::Error),
    /// The config file could not be read.
    #[error("cannot read config file {}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML or does not match [`Config`](super::Config) (an
    /// unknown key, a wrong type, a malformed value).
    ///
    /// The message never quotes the file's text, which may hold secrets.
    #[error("invalid config file {}{}: {message}", path.display(), at.map(|(line, column)| format!(", line {line}, column {column}")).unwrap_or_default())]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// Line and column (from 1) of the fault, when known.
        at: Option<(usize, usize)>,
        /// What is wrong, e.g. which key is unknown or which type was expected.
        message: String,
    },
    /// An environment variable holds bytes that are not UTF-8.
    #[error("environment variable {name} is not valid UTF-8")]
    EnvNotUnicode {
        /// The variable.
        name: &'static str,
    },
    /// An environment variable's value does not parse.
    #[error("invalid value {value:?} in environment variable {name}")]
    Env {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// Why it does not parse.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The merged configuration breaks a rule.
    #[error("invalid {key} = {value}: {reason}")]
    Invalid {
        /// The setting, as `section.key` in the TOML file.
        key: &'static str,
        /// Its value, with secrets masked.
        value: String,
        /// The rule it breaks.
        reason: String,
    },
}
