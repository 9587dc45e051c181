//! A binary's `main`: the configuration for its program, a multi-threaded
//! tokio runtime with the worker threads it asks for (`server.threads` for
//! `seawall-api`, `worker.threads` for `seawall-worker`), and the exit status
//! its outcome maps to.

use std::process::ExitCode;
use std::time::Duration;

use crate::config::{self, Config, Program};
use crate::error_chain;

/// How long dropping the runtime waits for blocking tasks once the process
/// has drained; a stuck task must not keep it alive.
const RUNTIME_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A failure a binary exits with: its sources are printed, and the status
/// tells a bad command line or configuration (2) from a failure (1).
pub trait Failure: std::error::Error {
    /// Whether the command line or configuration is at fault.
    fn is_usage(&self) -> bool;
}

impl Failure for crate::Error {
    fn is_usage(&self) -> bool {
        matches!(self, Self::Config(_))
    }
}

/// The whole `main` of a binary: loads the configuration for `program`
/// (flags, environment, file), then runs `run` on a multi-threaded tokio
/// runtime of [`runtime_threads`] worker threads.
///
/// Exit status: 0 after a clean shutdown (and for `--help` and
/// `--version`), 1 when the process fails, 2 when the command line or
/// configuration is invalid.
pub fn main_with<F, Fut, E>(program: Program, run: F) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Failure,
{
    let name = program.name();
    let config = match config::load_for(program) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{name}: {}", error_chain(&error));
            return ExitCode::from(2);
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = runtime_threads(program, &config) {
        builder.worker_threads(threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!(
                "{name}: cannot start the tokio runtime: {}",
                error_chain(&error)
            );
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(config));
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_GRACE);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{name}: {}", error_chain(&error));
            if error.is_usage() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The worker threads `program`'s runtime is configured with; `None` leaves
/// tokio's default, one per core available to the process.
pub fn runtime_threads(program: Program, config: &Config) -> Option<usize> {
    match program {
        Program::Api => config.server.threads,
        Program::Worker => config.worker.threads,
    }
}
