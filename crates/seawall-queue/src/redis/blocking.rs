//! Dedicated connections for blocking commands. A blocked `BZPOPMIN` holds
//! its connection until it returns, so it must never run on the shared,
//! multiplexed client: each waiting worker takes a fred client of its own
//! from a bb8 pool, with an acquire timeout and a health check on checkout.
//!
//! A pooled connection sends each command once: an enqueue's `WAIT` counts
//! the writes of the connection it runs on, and one re-sent on the new
//! connection after a reconnection would count none of them and answer at
//! once that every replica has them. A command whose connection dropped
//! fails instead, and the call answers what it knows.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fred::interfaces::ClientLike;
use fred::prelude::Client;
use fred::types::Builder;

use crate::error::{Error, Result};

/// Makes pooled connections from the store's fred builder.
pub(super) struct Manager {
    builder: Builder,
}

/// A pooled client, and whether a blocking command it was given may still
/// be running on the server (its caller stopped waiting for the answer).
pub(super) struct Blocker {
    pub(super) client: Client,
    busy: Arc<AtomicBool>,
}

impl Blocker {
    /// Runs one blocking command. If the caller drops the future before it
    /// ends, the connection is left marked busy and the pool discards it
    /// rather than hand out a connection still blocked on the server.
    pub(super) async fn run<T>(
        &self,
        command: impl Future<Output = Result<T, fred::error::Error>>,
    ) -> Result<T, fred::error::Error> {
        self.busy.store(true, Ordering::SeqCst);
        let result = command.await;
        self.busy.store(false, Ordering::SeqCst);
        result
    }
}

impl bb8::ManageConnection for Manager {
    type Connection = Blocker;
    type Error = fred::error::Error;

    async fn connect(&self) -> Result<Blocker, fred::error::Error> {
        let client = self.builder.build()?;
        client.init().await?;
        Ok(Blocker {
            client,
            busy: Arc::new(AtomicBool::new(false)),
        })
    }

    async fn is_valid(&self, blocker: &mut Blocker) -> Result<(), fred::error::Error> {
        blocker.client.ping::<()>(None).await
    }

    fn has_broken(&self, blocker: &mut Blocker) -> bool {
        if blocker.busy.load(Ordering::SeqCst) {
            let client = blocker.client.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { client.quit().await });
            }
            return true;
        }
        !blocker.client.is_connected()
    }
}

pub(super) struct BlockingPool {
    pool: bb8::Pool<Manager>,
    acquire_timeout: Duration,
}

impl BlockingPool {
    pub(super) fn new(mut builder: Builder, size: u32, acquire_timeout: Duration) -> Self {
        builder.with_connection_config(|connection| connection.max_command_attempts = 1);
        let pool = bb8::Pool::builder()
            .max_size(size)
            .min_idle(Some(0))
            .connection_timeout(acquire_timeout)
            .test_on_check_out(true)
            .build_unchecked(Manager { builder });
        Self {
            pool,
            acquire_timeout,
        }
    }

    pub(super) async fn get(&self) -> Result<bb8::PooledConnection<'_, Manager>> {
        self.pool.get().await.map_err(|error| match error {
            bb8::RunError::TimedOut => Error::PoolTimeout(self.acquire_timeout),
            bb8::RunError::User(error) => Error::from(error),
        })
    }
}
