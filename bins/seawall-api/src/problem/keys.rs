//! The API keys' errors.

use seawall_app::keys::KeyError;

use super::Problem;

impl From<KeyError> for Problem {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::NoTenant(tenant) => Self::not_found(format!("there is no tenant {tenant:?}")),
            KeyError::Cache(error) => {
                tracing::warn!(%error, "an API key's cache entry could not be invalidated");
                Self::unavailable(
                    "the key is revoked in the database, but the cache could not be told; retry",
                )
                .with_retry_after(1)
            }
            error => {
                tracing::error!(%error, "an API-key operation failed");
                Self::internal()
            }
        }
    }
}
