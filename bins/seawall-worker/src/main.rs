//! The `seawall-worker` binary: reads the configuration (the same file,
//! environment variables and flags as `seawall-api`), then runs the queue
//! processors on a multi-threaded tokio runtime until SIGINT or SIGTERM.
//!
//! Exit status: 0 after a clean drain (and for `--help` and `--version`),
//! 1 when the worker fails, 2 when the command line or configuration is
//! invalid (a missing Redis URL included).

use std::process::ExitCode;
use std::time::Duration;

use seawall_api::config::{self, Program};

/// How long dropping the runtime waits for blocking tasks once the drain
/// is over.
const RUNTIME_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let config = match config::load_for(Program::Worker) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("seawall-worker: {}", seawall_api::error_chain(&error));
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!(
                "seawall-worker: cannot start the tokio runtime: {}",
                seawall_api::error_chain(&error)
            );
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(seawall_api::worker::run(config));
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_GRACE);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error @ seawall_api::Error::Config(_)) => {
            eprintln!("seawall-worker: {}", seawall_api::error_chain(&error));
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("seawall-worker: {}", seawall_api::error_chain(&error));
            ExitCode::FAILURE
        }
    }
}
