//! Integration tests for seawall-testkit, run against real servers. Every test starts
//! its own servers, so they run in parallel.

mod cleanup;
mod cluster;
mod faults;
mod hosts;
mod postgres;
mod sentinel;
mod standalone;
mod tls;
mod util;
