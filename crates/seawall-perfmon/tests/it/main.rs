//! Integration tests for seawall-perfmon. Run with `--all-features`: the layer
//! and sqlx modules need the `axum` and `sqlx` features.

mod collectors;
mod exposition;
mod gauges;
mod health;
#[cfg(feature = "axum")]
mod layer;
mod negotiation;
mod openmetrics;
mod process;
mod properties;
#[cfg(feature = "sqlx")]
mod sqlx;
mod windows;
