//! The HTTP routes, one module per resource. Each exports its routes with
//! their OpenAPI entries (`utoipa_axum::routes!` cannot add a handler without
//! one); `app` assembles them.

pub(crate) mod cache;
pub(crate) mod dashboard;
pub(crate) mod docs;
pub(crate) mod health;
pub(crate) mod keys;
pub(crate) mod performance;
pub(crate) mod promotions;
pub(crate) mod queue;
pub(crate) mod ratelimit;
pub(crate) mod workload;
