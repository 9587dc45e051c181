//! The Redis connection, when a Redis URL is set: one reconnecting client
//! shared by every Redis backend, its TLS set-up, and its readiness check.
//!
//! Standalone (`redis://`), Cluster (`redis-cluster://host:port?node=host:port`)
//! and Sentinel (`redis-sentinel://host:26379/0?sentinelServiceName=name`)
//! URLs are accepted, each with a `rediss` form that connects over TLS and
//! verifies the server's certificate against the system's roots or
//! `redis.tls_ca_file`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::{Builder, ClientLike, Config, EventInterface, ReconnectPolicy};
use fred::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use fred::rustls::crypto::{CryptoProvider, ring, verify_tls12_signature, verify_tls13_signature};
use fred::rustls::pki_types::pem::PemObject as _;
use fred::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use fred::rustls::{self, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use fred::types::config::{TlsConfig, TlsConnector, UnresponsiveConfig};
use seawall_perfmon::{CheckResult, HealthCheck};

use crate::config::RedisConfig;

/// How long one Redis command may take before it fails; fred waits forever
/// by default, which would hang requests while Redis is unreachable.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long making a connection (TCP, TLS, `HELLO`) and the client's own
/// commands (a Cluster client's `CLUSTER SLOTS`) may take. A Cluster client
/// that reconnects asks the nodes it knows one after another, the one that
/// stopped answering among them: each such try costs this long, so a short
/// bound lets it find a promoted replica within a second. Servers on a
/// network answer a connection in milliseconds.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a request on any of the service's Redis connections may go
/// unanswered before the connection is closed and made again. A link whose
/// packets were dropped (a partition, or a master that stopped answering
/// and has since been replaced) otherwise stays open while TCP backs off
/// its retransmissions, seconds after the network is back or the replica
/// was promoted; every command routed over it would time out meanwhile,
/// and a Cluster client learns of the new master only once it reconnects.
/// The cache's and the rate limiter's commands answer in milliseconds and
/// may be sent again; so may the queues' calls, whose scripts answer a
/// re-sent call with its first result (an enqueue that waits for replicas
/// is sent once: its `WAIT` counts the writes of the connection it runs
/// on). Blocking commands (the invalidation feed's `XREAD`, a worker's
/// wait for jobs) are exempt.
const UNRESPONSIVE: Duration = Duration::from_secs(1);
/// The longest wait between two attempts to reconnect the shared client:
/// once Redis is reachable again, the cache and the limiters use it within
/// about this long.
const RECONNECT_CAP_MS: u32 = 1_000;
/// The longest wait between two attempts to reconnect a queue connection.
/// A worker gives up on a run whose lease no renewal reached by four
/// fifths of the lease (renewing every third of it), and a renewal waiting
/// for its connection is sent the moment the connection is back: a Redis
/// outage that begins right after a renewal and ends before `0.8 × lease −
/// 250 ms` (3.75 s of a 5 s lease, 23.75 s of the default 30 s) costs no
/// run, and one at the worst moment, just before a renewal was due, up to
/// `0.47 × lease − 250 ms`. Attempts against a server that refuses them
/// cost a few system calls each.
const QUEUE_RECONNECT_CAP_MS: u32 = 250;
/// How long start-up waits for the first connection before going on without
/// it (readiness reports Redis as failing until it connects).
const FIRST_CONNECT: Duration = Duration::from_secs(5);

/// Why the Redis client could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// fred rejected the URL or the client settings.
    #[error("invalid Redis URL or settings")]
    Client(#[from] fred::error::Error),
    /// The CA file could not be read or holds no usable certificate.
    #[error("cannot use the Redis CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls rejected the TLS settings.
    #[error("invalid TLS settings for Redis")]
    Tls(#[from] rustls::Error),
}

/// A client builder for `url` with the service's timeouts, its check for
/// unresponsive connections, the queues' reconnect policy and TLS set-up;
/// the queues build their own connections from it.
pub fn builder(settings: &RedisConfig, url: &str) -> Result<Builder, RedisError> {
    let mut config = Config::from_url(url)?;
    // A failed first connection then goes through the reconnect policy
    // instead of ending the connection task for good.
    config.fail_fast = false;
    // `rediss` URLs come with fred's TLS set-up (the system's roots);
    // a CA file or the insecure switch replaces it.
    if config.tls.is_some() && (settings.tls_ca_file.is_some() || settings.tls_insecure) {
        config.tls = Some(tls_config(settings)?);
    }
    let mut builder = Builder::from_config(config);
    builder
        .with_performance_config(|performance| {
            performance.default_command_timeout = COMMAND_TIMEOUT;
        })
        .with_connection_config(|connection| {
            connection.connection_timeout = CONNECT_TIMEOUT;
            connection.internal_command_timeout = CONNECT_TIMEOUT;
            connection.unresponsive = UnresponsiveConfig {
                max_timeout: Some(UNRESPONSIVE),
                interval: UNRESPONSIVE / 4,
            };
        })
        .set_policy(ReconnectPolicy::new_exponential(
            0,
            50,
            QUEUE_RECONNECT_CAP_MS,
            2,
        ));
    Ok(builder)
}

/// A connected (or reconnecting) Redis client.
#[derive(Clone)]
pub struct Redis {
    client: fred::prelude::Client,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("connected", &self.client.is_connected())
            .finish()
    }
}

impl Redis {
    /// Parses the URL, sets up TLS for `rediss` URLs, starts the connection
    /// task and waits a little for the first connection. Fails only on
    /// settings that cannot work; an unreachable server is retried in the
    /// background.
    pub async fn connect(settings: &RedisConfig, url: &str) -> Result<Self, RedisError> {
        let mut builder = builder(settings, url)?;
        builder.set_policy(ReconnectPolicy::new_exponential(
            0,
            100,
            RECONNECT_CAP_MS,
            2,
        ));
        let client = builder.build()?;
        client.on_error(|(error, server)| async move {
            let server = server.map(|server| server.to_string()).unwrap_or_default();
            tracing::warn!(%error, %server, "Redis connection error");
            Ok(())
        });
        client.on_reconnect(|server| async move {
            tracing::info!(%server, "connected to Redis");
            Ok(())
        });
        client.connect();
        match tokio::time::timeout(FIRST_CONNECT, client.wait_for_connect()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "Redis is not reachable yet; retrying in the background");
            }
            Err(_) => tracing::warn!("Redis did not answer within 5 s; retrying in the background"),
        }
        Ok(Self { client })
    }

    /// The client, for the libraries that keep state in Redis.
    pub fn client(&self) -> &fred::prelude::Client {
        &self.client
    }

    /// Whether the client is connected right now.
    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// Closes the connection.
    pub async fn close(&self) {
        if let Err(error) = self.client.quit().await {
            tracing::debug!(%error, "closing the Redis connection");
        }
    }

    /// A check that PINGs Redis.
    pub fn health_check(&self) -> RedisCheck {
        RedisCheck {
            client: self.client.clone(),
        }
    }
}

/// The TLS settings of a `rediss` URL with a CA file, or (for development)
/// with no certificate check at all.
fn tls_config(settings: &RedisConfig) -> Result<TlsConfig, RedisError> {
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let client = if settings.tls_insecure {
        tracing::warn!("redis.tls_insecure is set: the Redis server's certificate is not checked");
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let roots = match &settings.tls_ca_file {
            Some(path) => roots_from_file(path)?,
            None => RootCertStore::empty(),
        };
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(TlsConfig::from(TlsConnector::from(client)))
}

fn roots_from_file(path: &Path) -> Result<RootCertStore, RedisError> {
    let fail = |reason: String| RedisError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    let certificates =
        CertificateDer::pem_file_iter(path).map_err(|error| fail(error.to_string()))?;
    for certificate in certificates {
        let certificate = certificate.map_err(|error| fail(error.to_string()))?;
        roots
            .add(certificate)
            .map_err(|error| fail(error.to_string()))?;
    }
    if roots.is_empty() {
        return Err(fail("it holds no PEM certificate".to_owned()));
    }
    Ok(roots)
}

/// Accepts every certificate: `redis.tls_insecure`. Signatures are still
/// checked, so the handshake itself is sound.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Reports Redis's PING round trip as `redis:responseTime`.
#[derive(Clone)]
pub struct RedisCheck {
    client: fred::prelude::Client,
}

#[async_trait]
impl HealthCheck for RedisCheck {
    fn key(&self) -> String {
        "redis:responseTime".to_owned()
    }

    async fn check(&self) -> CheckResult {
        crate::checks::timed_ping("redis", self.client.ping::<String>(None)).await
    }
}

#[cfg(test)]
mod tests {
    use fred::types::config::ServerConfig;

    use super::*;

    #[test]
    fn the_documented_url_forms_parse() {
        let cases = [
            (
                "redis://:password@cache.internal:6379/0",
                "centralized",
                false,
            ),
            (
                "rediss://:password@cache.internal:6380/0",
                "centralized",
                true,
            ),
            (
                "redis-cluster://node-a:6379?node=node-b:6379&node=node-c:6379",
                "cluster",
                false,
            ),
            (
                "rediss-cluster://node-a:6380?node=node-b:6380",
                "cluster",
                true,
            ),
            (
                "redis-sentinel://sentinel-a:26379/0?sentinelServiceName=main&node=sentinel-b:26379",
                "sentinel",
                false,
            ),
            (
                "rediss-sentinel://sentinel-a:26380/0?sentinelServiceName=main",
                "sentinel",
                true,
            ),
        ];
        for (url, kind, tls) in cases {
            let config = Config::from_url(url).unwrap_or_else(|error| panic!("{url}: {error}"));
            let parsed = match &config.server {
                ServerConfig::Centralized { .. } => "centralized",
                ServerConfig::Clustered { .. } => "cluster",
                ServerConfig::Sentinel { .. } => "sentinel",
            };
            assert_eq!(parsed, kind, "{url}");
            assert_eq!(config.tls.is_some(), tls, "{url}");
        }
    }

    /// The lease deadline (server ms) of the one job running in `queue`.
    fn lease_deadline(server: &seawall_testkit::RedisServer, queue: &str) -> Option<f64> {
        let mut conn = server.connect().ok()?;
        let key = format!("seawall:{{{queue}}}:active");
        let reply = conn.cmd(&["ZRANGE", &key, "0", "-1", "WITHSCORES"]).ok()?;
        reply.as_array()?.get(1)?.as_str()?.parse().ok()
    }

    /// A Redis outage shorter than a job's lease that begins right after a
    /// renewal costs the job no run: the queues' connections are back
    /// within 250 ms of the server, and the renewal that waited goes at
    /// once, before the worker's cut-off at four fifths of the lease.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_redis_outage_shorter_than_a_lease_costs_no_run() {
        use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

        use seawall_queue::{Job, JobError, JobOptions, Queues};
        use seawall_testkit::{Persistence, RedisServer, wait};

        const LEASE: Duration = Duration::from_secs(20);
        // Ends after the 11.3–12.1 s at which a client that backs off from
        // 100 ms, doubling up to 5 s (with fred's jitter of up to 100 ms a
        // try), makes its eighth reconnection attempt, so that such a
        // client's next comes at 16.3 s or later; and well before the 16 s
        // after the last renewal (four fifths of the lease) at which the
        // worker gives the run up.
        const OUTAGE: Duration = Duration::from_millis(12_300);
        let mut server = RedisServer::builder()
            .persistence(Persistence::AofAlways)
            .start()
            .expect("redis-server starts");
        let settings = RedisConfig::default();
        let queues = Queues::redis(builder(&settings, &server.url()).expect("a builder"))
            .connect()
            .await
            .expect("connects");
        let (runs, cancelled) = (
            Arc::new(AtomicU32::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let release = Arc::new(tokio::sync::Notify::new());
        let worker = {
            let (runs, cancelled, release) = (
                Arc::clone(&runs),
                Arc::clone(&cancelled),
                Arc::clone(&release),
            );
            queues
                .worker("outage")
                .and_then(|worker| worker.concurrency(1))
                .and_then(|worker| worker.lease(LEASE))
                .expect("valid")
                .start(move |job: Job<u32>| {
                    runs.fetch_add(1, Ordering::SeqCst);
                    let token = job.cancellation().clone();
                    let (cancelled, release) = (Arc::clone(&cancelled), Arc::clone(&release));
                    async move {
                        tokio::select! {
                            () = token.cancelled() => {
                                cancelled.store(true, Ordering::SeqCst);
                                Err(JobError::new("cancelled"))
                            }
                            () = release.notified() => Ok(()),
                        }
                    }
                })
        };
        queues
            .enqueue("outage", &1_u32, &JobOptions::new())
            .await
            .expect("enqueues");
        let first = wait::until_some("the job to start", || lease_deadline(&server, "outage"));
        // Cut right after a renewal: the whole outage then falls inside one
        // renewal's reach.
        let renewed = wait::until_some("a renewal", || {
            lease_deadline(&server, "outage").filter(|deadline| *deadline > first)
        });
        server.kill().expect("SIGKILL");
        tokio::time::sleep(OUTAGE).await;
        server.restart().expect("restarts on its AOF");
        wait::until(
            "the lease renewed after the outage, or the run given up",
            || {
                cancelled.load(Ordering::SeqCst)
                    || lease_deadline(&server, "outage").is_some_and(|deadline| deadline > renewed)
            },
        );
        release.notify_one();
        wait::until_async("the job to complete", async || {
            queues
                .counts("outage")
                .await
                .is_ok_and(|counts| counts.completed == 1)
        })
        .await;
        let stats = worker.shutdown(Duration::from_secs(5)).await;
        assert!(
            !cancelled.load(Ordering::SeqCst),
            "the run was given up: {stats:?}"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1, "{stats:?}");
        assert_eq!((stats.lost_leases, stats.requeued), (0, 0), "{stats:?}");
    }
}
