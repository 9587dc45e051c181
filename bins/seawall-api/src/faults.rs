//! Fault knobs for benchmarks and tests, in builds with the `faults` feature
//! only (off by default and in production builds).
//!
//! With `SEAWALL_FAULT_DB_SLOWDOWN=<factor>` set (an integer from 2 to
//! 1000), each SIGUSR1 toggles the database between its own speed and
//! answering `factor` times slower ([`seawall_app::faults::set_db_slowdown`]):
//! a benchmark slows the dependency down in the middle of a run and lets it
//! recover, without restarting the service. A build without the feature
//! ignores the variable, and says so once.

use crate::Error;

/// The factor the database slows down by when SIGUSR1 turns the fault on.
pub(crate) const DB_SLOWDOWN_VAR: &str = "SEAWALL_FAULT_DB_SLOWDOWN";

/// The slowdown factors [`DB_SLOWDOWN_VAR`] accepts.
#[cfg(feature = "faults")]
const DB_SLOWDOWN_FACTORS: std::ops::RangeInclusive<u32> = 2..=1000;

/// Why the fault knobs could not be set up.
#[cfg(feature = "faults")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FaultError {
    /// The slowdown factor is not an integer from 2 to 1000.
    #[error(
        "{DB_SLOWDOWN_VAR} must be an integer from 2 to 1000 (how many times slower the \
         database answers while the fault is on), not {value:?}"
    )]
    DbSlowdown {
        /// What the variable holds.
        value: String,
    },
    /// The SIGUSR1 handler could not be installed.
    #[error("could not listen for SIGUSR1, which toggles the database slowdown")]
    Signal(#[source] std::io::Error),
}

/// The fault knobs the environment asks for, read before the service is
/// built so that a bad value stops it at once.
#[derive(Debug)]
pub(crate) struct Knobs {
    /// The factor SIGUSR1 toggles the database slowdown to.
    #[cfg(feature = "faults")]
    db_slowdown: Option<u32>,
}

/// Reads the knobs from the environment; refuses a bad slowdown factor.
#[cfg(feature = "faults")]
pub(crate) fn from_env() -> Result<Knobs, Error> {
    let db_slowdown = match std::env::var_os(DB_SLOWDOWN_VAR) {
        None => None,
        Some(value) => Some(parse_db_slowdown(&value.to_string_lossy())?),
    };
    Ok(Knobs { db_slowdown })
}

/// Reads the knobs from the environment: a build without the `faults`
/// feature has none, and warns when the variable is set anyway.
#[cfg(not(feature = "faults"))]
pub(crate) fn from_env() -> Result<Knobs, Error> {
    if std::env::var_os(DB_SLOWDOWN_VAR).is_some() {
        tracing::warn!(
            "{DB_SLOWDOWN_VAR} is set, but this build has no fault knobs (the `faults` \
             feature); the variable is ignored"
        );
    }
    Ok(Knobs {})
}

/// A slowdown factor, `2..=1000`.
#[cfg(feature = "faults")]
fn parse_db_slowdown(value: &str) -> Result<u32, FaultError> {
    value
        .parse::<u32>()
        .ok()
        .filter(|factor| DB_SLOWDOWN_FACTORS.contains(factor))
        .ok_or_else(|| FaultError::DbSlowdown {
            value: value.to_owned(),
        })
}

impl Knobs {
    /// Starts the task that toggles the database slowdown on each SIGUSR1,
    /// when a factor is set; the fault starts off.
    #[cfg(all(feature = "faults", unix))]
    pub(crate) fn listen(self) -> Result<(), Error> {
        use tokio::signal::unix::{SignalKind, signal};
        let Some(factor) = self.db_slowdown else {
            return Ok(());
        };
        let mut toggles = signal(SignalKind::user_defined1()).map_err(FaultError::Signal)?;
        tracing::warn!("database slowdown fault armed: SIGUSR1 toggles {factor}× slower queries");
        tokio::spawn(async move {
            while toggles.recv().await.is_some() {
                if seawall_app::faults::db_slowdown() > 1 {
                    seawall_app::faults::set_db_slowdown(1);
                    tracing::warn!("database slowdown fault off");
                } else {
                    seawall_app::faults::set_db_slowdown(factor);
                    tracing::warn!("database slowdown fault on: {factor}×");
                }
            }
        });
        Ok(())
    }

    /// Without SIGUSR1 the slowdown cannot be toggled; says so when a factor
    /// is set.
    #[cfg(all(feature = "faults", not(unix)))]
    pub(crate) fn listen(self) -> Result<(), Error> {
        if self.db_slowdown.is_some() {
            tracing::warn!(
                "{DB_SLOWDOWN_VAR} is set, but SIGUSR1, which toggles it, exists on Unix only"
            );
        }
        Ok(())
    }

    /// A build without the `faults` feature has nothing to start.
    #[cfg(not(feature = "faults"))]
    pub(crate) fn listen(self) -> Result<(), Error> {
        Ok(())
    }
}

#[cfg(all(test, feature = "faults"))]
mod tests {
    use super::*;

    #[test]
    fn a_slowdown_factor_from_2_to_1000_is_accepted() {
        for (value, factor) in [("2", 2), ("10", 10), ("1000", 1000)] {
            assert_eq!(parse_db_slowdown(value).expect(value), factor);
        }
    }

    #[test]
    fn any_other_slowdown_is_refused_with_the_variable_named() {
        for value in ["", "0", "1", "1001", "-10", "10x", "2.5", " 10", "ten"] {
            let error = parse_db_slowdown(value).expect_err(value);
            let text = error.to_string();
            assert!(text.contains(DB_SLOWDOWN_VAR), "{text}");
            assert!(text.contains(&format!("{value:?}")), "{text}");
        }
    }
}
