//! Integration tests for seawall-perfmon. Run with `--all-features`: the layer
//! and sqlx modules need the `axum` and `sqlx` features.

mod exposition;
mod health;
#[cfg(feature = "axum")]
mod layer;
mod properties;
#[cfg(feature = "sqlx")]
mod sqlx;
mod windows;
