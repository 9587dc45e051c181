//! Integration tests for the seawall API service: one test binary, one module
//! per area.

mod browser;
mod process;
mod support;
mod webdriver;
mod workload;
