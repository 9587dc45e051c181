//! The `seawall-worker` binary: reads the configuration (the same file,
//! environment variables and flags as `seawall-api`), then runs the queue
//! processors until SIGINT or SIGTERM.
//!
//! Exit status: 0 after a clean drain (and for `--help` and `--version`),
//! 1 when the worker fails, 2 when the command line or configuration is
//! invalid (a missing Redis URL included).

fn main() -> std::process::ExitCode {
    seawall_api::main_for(seawall_api::config::Program::Worker)
}
