//! Integration tests for the seawall API service: one test binary, one module
//! per area.

mod browser;
mod chromedriver;
mod process;
mod support;
mod workload;
