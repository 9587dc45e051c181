//! Shared test fixtures: the service on a throwaway SQLite file or PostgreSQL
//! database, called in-process through the router or over real TCP.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt;
use seawall_api::App;
use seawall_app::Config;
use seawall_app::config::{QueueConfig, Recurring};
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::ServiceExt;

/// The admin token every test app is configured with.
pub(crate) const TOKEN: &str = "test-admin-token-0123456789";

/// Demo sizes small enough to seed in milliseconds, big enough that every
/// endpoint has rows to return. No recurring job: the tests that count a
/// queue's jobs would find one more at the turn of an hour (or at 03:00
/// and 06:00 UTC); [`recurring_jobs_on`] turns them back on.
pub(crate) fn small_config(database_url: String) -> Config {
    let mut config = Config::default();
    config.database.url = database_url;
    config.database.max_connections = Some(4);
    config.admin.token = Some(TOKEN.to_owned());
    config.demo.users = 20;
    config.demo.contents = 60;
    config.demo.schedules_per_user = 30;
    config.demo.history_per_user = 120;
    config.server.max_body_bytes = 16 * 1024;
    config.queue.nightly_backup = Recurring::Off;
    config.queue.hourly_analytics = Recurring::Off;
    config.queue.daily_report = Recurring::Off;
    // The limits stay as configured whatever the health of a loaded test
    // machine: a test that counts admissions must not find them halved.
    // The test of tightening turns it back on.
    config.ratelimit.health_degraded = 1.0;
    config.ratelimit.health_unhealthy = 1.0;
    config
}

/// The recurring jobs as configured by default.
pub(crate) fn recurring_jobs_on(config: &mut Config) {
    let defaults = QueueConfig::default();
    config.queue.nightly_backup = defaults.nightly_backup;
    config.queue.hourly_analytics = defaults.hourly_analytics;
    config.queue.daily_report = defaults.daily_report;
}

/// The peer address of an in-process request: each its own, in the
/// benchmarking range 198.18.0.0/15, as the service's own server gives
/// every request the address it came from. The limits then keep their
/// counts per address as they do in production, and no test's request is
/// limited by another's; a test that means one client sends its own
/// `ConnectInfo`.
pub(crate) fn peer() -> SocketAddr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let [_, b, c, d] = NEXT.fetch_add(1, Ordering::Relaxed).to_be_bytes();
    SocketAddr::from(([198, 18 | (b & 1), c, d], 40_000))
}

/// Where a test's database lives; dropping it removes the SQLite file.
pub(crate) enum Database {
    Sqlite(#[allow(dead_code)] TempDir),
    /// A PostgreSQL database, or another instance's database: nothing to
    /// remove.
    Postgres,
}

/// The service built in-process, called through its router.
pub(crate) struct TestApp {
    pub(crate) app: App,
    _database: Database,
}

impl TestApp {
    /// The database URL the app was built with.
    pub(crate) fn database_url(&self) -> &str {
        &self.app.config().database.url
    }
}

/// A response, with the body parsed as JSON when it is JSON.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
    pub(crate) json: Value,
}

impl Reply {
    pub(crate) fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts an RFC 9457 problem with `status` and returns its detail.
    #[track_caller]
    pub(crate) fn assert_problem(&self, status: u16) -> String {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        assert_eq!(
            self.content_type(),
            "application/problem+json",
            "body: {}",
            self.text()
        );
        assert_eq!(self.json["status"], status, "body: {}", self.text());
        assert_eq!(self.json["type"], "about:blank");
        assert!(self.json["title"].is_string());
        let detail = self.json["detail"].as_str().unwrap_or_default();
        assert!(
            !detail.is_empty(),
            "a problem needs a detail: {}",
            self.text()
        );
        detail.to_owned()
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl TestApp {
    /// The service on a fresh SQLite file with the small demo dataset.
    pub(crate) async fn sqlite() -> Self {
        Self::sqlite_with(|_| {}).await
    }

    /// Same, after `tweak` changes the configuration.
    pub(crate) async fn sqlite_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("seawall.db").display()
        );
        let mut config = small_config(url);
        config.queue.files = dir.path().join("files");
        tweak(&mut config);
        let app = App::build(config).await.expect("the app builds on SQLite");
        Self {
            app,
            _database: Database::Sqlite(dir),
        }
    }

    /// Another instance of the service on this one's configuration (its
    /// database, its Redis), after `tweak`: two instances behind one load
    /// balancer. The first instance keeps the database alive.
    pub(crate) async fn another_instance(&self, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = self.app.config().clone();
        tweak(&mut config);
        let app = App::build(config).await.expect("a second instance builds");
        Self {
            app,
            _database: Database::Postgres,
        }
    }

    pub(crate) async fn admin_send(&self, method: &str, uri: &str, body: Option<&Value>) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        let body = match body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        self.send(request.body(body).expect("request")).await
    }

    /// The service on a fresh database of the shared PostgreSQL server.
    pub(crate) async fn postgres(server: &seawall_testkit::Postgres) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("seawall_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        server
            .psql(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        let url = format!("postgres://postgres@{}/{name}", server.addr());
        Self::postgres_with(url, |_| {}).await
    }

    /// The service on the PostgreSQL database at `url`, after `tweak`
    /// changes the configuration.
    pub(crate) async fn postgres_with(url: String, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = small_config(url);
        tweak(&mut config);
        let app = App::build(config)
            .await
            .expect("the app builds on PostgreSQL");
        Self {
            app,
            _database: Database::Postgres,
        }
    }

    /// Sends `request` through the router in process, from an address of
    /// its own (see [`peer`]) unless it names one.
    pub(crate) async fn send(&self, mut request: Request<Body>) -> Reply {
        if request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .is_none()
        {
            request.extensions_mut().insert(ConnectInfo(peer()));
        }
        self.send_as_is(request).await
    }

    /// Sends `request` through the router in process as it is: with no
    /// peer address unless it carries one.
    pub(crate) async fn send_as_is(&self, request: Request<Body>) -> Reply {
        let response = self
            .app
            .router()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            json,
        }
    }

    pub(crate) async fn get(&self, uri: &str) -> Reply {
        self.send(Request::get(uri).body(Body::empty()).expect("request"))
            .await
    }

    pub(crate) async fn admin_get(&self, uri: &str) -> Reply {
        self.send(
            Request::get(uri)
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .expect("request"),
        )
        .await
    }

    pub(crate) async fn post(
        &self,
        uri: &str,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> Reply {
        let mut request = Request::post(uri);
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        self.send(request.body(body.into()).expect("request")).await
    }

    pub(crate) async fn post_json(&self, uri: &str, body: &Value) -> Reply {
        self.post(uri, Some("application/json"), body.to_string())
            .await
    }
}

/// The service on a real loopback port, for clients outside the process (a
/// browser, a load generator).
pub(crate) struct TestServer {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) database_url: String,
    pub(crate) base_url: String,
    pub(crate) admin_token: String,
    pub(crate) client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), seawall_api::Error>>>,
    _dir: TempDir,
}

impl TestServer {
    /// A request to `path` on this server.
    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base_url))
    }

    /// The same, with the admin token.
    pub(crate) fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.request(method, path).bearer_auth(&self.admin_token)
    }

    /// The JSON an admin `GET` of `path` answers.
    pub(crate) async fn admin_json(&self, path: &str) -> serde_json::Value {
        self.admin(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"))
    }

    /// Starts the service on SQLite with the small demo dataset.
    pub(crate) async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Same, after `tweak` changes the configuration.
    pub(crate) async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("seawall.db").display()
        );
        let mut config = small_config(url.clone());
        tweak(&mut config);
        let app = App::build(config).await.expect("the app builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.serve(listener, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            database_url: url,
            base_url: format!("http://{addr}"),
            admin_token: TOKEN.to_owned(),
            client: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    /// Stops the server gracefully and returns how serving ended.
    pub(crate) async fn stop(mut self) -> Result<(), seawall_api::Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.expect("the server task does not panic"),
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
