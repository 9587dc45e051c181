//! The `seawall-api` binary: reads the configuration, then runs the service on
//! a multi-threaded tokio runtime until SIGINT or SIGTERM.
//!
//! Exit status: 0 after a clean shutdown (and for `--help` and `--version`),
//! 1 when the service fails, 2 when the command line or configuration is
//! invalid.

use std::process::ExitCode;
use std::time::Duration;

/// How long dropping the runtime waits for blocking tasks once `run` has
/// returned; `run` has drained requests already, so a stuck task must not
/// keep the process alive.
const RUNTIME_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let config = match seawall_api::config::load() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("seawall-api: {}", seawall_api::error_chain(&error));
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
                "seawall-api: cannot start the tokio runtime: {}",
                seawall_api::error_chain(&error)
            );
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(seawall_api::run(config));
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_GRACE);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("seawall-api: {}", seawall_api::error_chain(&error));
            ExitCode::FAILURE
        }
    }
}
