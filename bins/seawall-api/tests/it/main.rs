//! Integration tests for the seawall API service: one test binary, one module
//! per area.

mod browser;
mod cache;
mod chromedriver;
mod contract;
mod edge;
mod edges;
mod json_schema;
mod keys;
mod metrics;
mod outage;
mod process;
mod promotions;
mod queue;
mod ratelimit;
mod raw;
mod redis;
mod stack;
mod support;
mod workload;
