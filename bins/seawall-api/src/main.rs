//! The `seawall-api` binary: reads the configuration, then runs the service
//! until SIGINT or SIGTERM; see [`seawall_api::main_for`] for the exit
//! statuses.

fn main() -> std::process::ExitCode {
    seawall_api::main_for(seawall_api::config::Program::Api)
}
