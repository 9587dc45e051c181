//! The `seawall-api` binary: reads the configuration, then serves until
//! SIGINT or SIGTERM; see [`seawall_app::process::main_with`] for the exit
//! statuses.

fn main() -> std::process::ExitCode {
    seawall_app::process::main_with(seawall_app::config::Program::Api, seawall_api::run)
}
