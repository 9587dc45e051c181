//! The promotions workload's errors.

use axum::http::StatusCode;
use seawall_app::promotions::PromoError;

use super::{Problem, service};

impl From<&PromoError> for Problem {
    fn from(error: &PromoError) -> Self {
        match error {
            PromoError::NoSuchCampaign(_)
            | PromoError::NoSuchSale(_)
            | PromoError::NoSuchOrder { .. } => Self::not_found(error.to_string()),
            PromoError::CouponsGone(_)
            | PromoError::AlreadyIssued { .. }
            | PromoError::SoldOut(_)
            | PromoError::OrderLimit { .. } => Self::new(StatusCode::CONFLICT, error.to_string()),
            PromoError::InsufficientPoints { balance, .. } => {
                Self::new(StatusCode::CONFLICT, error.to_string()).with_balance(*balance)
            }
            PromoError::NotStarted { .. } | PromoError::Ended { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, error.to_string())
            }
            PromoError::ScenarioRunning(_) => Self::new(StatusCode::CONFLICT, error.to_string()),
            // As the queue's enqueue, and as the IETF's Idempotency-Key draft
            // asks: the request cannot be processed with this key.
            PromoError::IdempotencyMismatch(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, error.to_string())
                    .with_param("idempotency-key", "was first used for a different request")
            }
            PromoError::Invalid { field, reason } => Self::invalid_field(field, reason.clone()),
            PromoError::Contention { .. } => {
                Self::unavailable(error.to_string()).with_retry_after(1)
            }
            PromoError::Store(store) => {
                tracing::warn!(error = %store, "the promotions store failed");
                Self::unavailable(
                    "the promotions store (Redis) is not available; try again shortly",
                )
                .with_retry_after(1)
            }
            PromoError::StockReloading { .. } | PromoError::NotReplicated { .. } => {
                Self::unavailable(error.to_string()).with_retry_after(1)
            }
            PromoError::Service(error) => service::problem::<PromoError>(error),
            _ => {
                tracing::error!(%error, "a promotions operation failed");
                Self::internal()
            }
        }
    }
}

impl From<PromoError> for Problem {
    fn from(error: PromoError) -> Self {
        Self::from(&error)
    }
}
