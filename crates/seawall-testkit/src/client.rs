//! [fred] clients for the servers here, as the libraries' tests use them:
//! a command that takes longer than the test's timeout fails instead of
//! waiting for a lost server, and a lost connection is tried again every
//! 100 ms.
//!
//! ```no_run
//! use std::time::Duration;
//! use seawall_testkit::{RedisServer, client};
//!
//! # async fn run() {
//! let url = RedisServer::shared().url();
//! let connected = client::connect(&url, Duration::from_secs(1)).await;
//! let builder = client::builder(&url, Duration::from_secs(2)); // for a library that connects itself
//! # }
//! ```

use std::time::Duration;

use fred::prelude::{Builder, Client, ClientLike, Config, ReconnectPolicy};

/// A client builder for `url` whose commands, connection attempts and
/// internal commands give up after `timeout`, reconnecting every 100 ms.
///
/// # Panics
///
/// When `url` is not a Redis URL fred reads.
pub fn builder(url: &str, timeout: Duration) -> Builder {
    let mut builder = Builder::from_config(Config::from_url(url).expect("a valid Redis URL"));
    builder
        .with_performance_config(|performance| {
            performance.default_command_timeout = timeout;
        })
        .with_connection_config(|connection| {
            connection.connection_timeout = timeout;
            connection.internal_command_timeout = timeout;
        })
        .set_policy(ReconnectPolicy::new_constant(0, 100));
    builder
}

/// A client of [`builder`]'s, connected.
///
/// # Panics
///
/// When `url` is not a Redis URL fred reads, or the client cannot
/// connect.
pub async fn connect(url: &str, timeout: Duration) -> Client {
    let client = builder(url, timeout).build().expect("a client");
    client.init().await.expect("connects");
    client
}
