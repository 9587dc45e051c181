//! The Redis connection against real servers the testkit starts: TLS with
//! certificate verification (`rediss://`), Redis Cluster, and URLs that
//! cannot work refused at start.

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use seawall_testkit::{RedisCluster, RedisServer, wait};

use crate::support::{Reply, TestApp};

fn tls_server() -> RedisServer {
    RedisServer::builder()
        .tls()
        .start()
        .expect("a TLS redis-server starts")
}

/// A CA certificate that signed nothing the testkit's servers present.
fn unrelated_ca(dir: &std::path::Path) -> std::path::PathBuf {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = params.self_signed(&key).expect("self-signed CA");
    let path = dir.join("other-ca.pem");
    std::fs::write(&path, ca.pem()).expect("write the CA file");
    path
}

/// Waits for `/readyz` with Redis connected: 200 and a passing Redis
/// check. Start-up goes on without Redis after a few seconds, and a PING
/// on a busy machine can miss the check's 1 s: ready once it answers.
async fn wait_for_redis_ready(app: &TestApp) {
    wait::until_async("/readyz to pass with Redis connected", async || {
        let readyz = app.get("/readyz").await;
        readyz.status == 200 && readyz.json["checks"]["redis:responseTime"][0]["status"] == "pass"
    })
    .await;
}

/// `/readyz` with Redis configured but not connected.
#[track_caller]
fn assert_redis_failing(readyz: &Reply) {
    assert_eq!(readyz.status, 503, "{}", readyz.text());
    assert_eq!(
        readyz.json["checks"]["redis:responseTime"][0]["status"],
        "fail",
        "{}",
        readyz.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_connects_when_the_certificate_verifies_against_the_ca_file() {
    let server = tls_server();
    assert!(server.url().starts_with("rediss://"));
    let app = TestApp::sqlite_with(|config| {
        config.redis.url = Some(server.url());
        config.redis.tls_ca_file = server.ca_cert_path().map(ToOwned::to_owned);
    })
    .await;
    wait_for_redis_ready(&app).await;
    let metrics = app.get("/metrics").await.text();
    assert!(metrics.contains("\nredis_connected 1\n"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_does_not_connect_to_a_certificate_it_cannot_verify() {
    let server = tls_server();
    let dir = tempfile::tempdir().expect("temp dir");
    let other_ca = unrelated_ca(dir.path());

    // Another CA, and the system's roots (no CA file): both refuse the
    // testkit's certificate, so Redis never counts as connected.
    let with_other_ca = TestApp::sqlite_with(|config| {
        config.redis.url = Some(server.url());
        config.redis.tls_ca_file = Some(other_ca.clone());
    });
    let with_system_roots = TestApp::sqlite_with(|config| {
        config.redis.url = Some(server.url());
    });
    let (with_other_ca, with_system_roots) = tokio::join!(with_other_ca, with_system_roots);
    for app in [&with_other_ca, &with_system_roots] {
        assert_redis_failing(&app.get("/readyz").await);
        let metrics = app.get("/metrics").await.text();
        assert!(metrics.contains("\nredis_connected 0\n"), "{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text_to_a_tls_port_does_not_connect_and_insecure_does() {
    let server = tls_server();
    let plain_url = server.url().replacen("rediss://", "redis://", 1);
    let plain = TestApp::sqlite_with(|config| config.redis.url = Some(plain_url));
    // Development only: any certificate, but still TLS.
    let insecure = TestApp::sqlite_with(|config| {
        config.redis.url = Some(server.url());
        config.redis.tls_insecure = true;
    });
    let (plain, insecure) = tokio::join!(plain, insecure);
    assert_redis_failing(&plain.get("/readyz").await);
    wait_for_redis_ready(&insecure).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_that_cannot_work_are_refused_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = format!("sqlite://{}?mode=rwc", dir.path().join("x.db").display());
    let empty_ca = dir.path().join("empty.pem");
    std::fs::write(&empty_ca, "not a certificate\n").expect("write");
    let cases: [(&str, Option<&std::path::Path>, &str); 4] = [
        ("http://127.0.0.1:6379", None, "scheme"),
        ("unix:///tmp/redis.sock", None, "scheme"),
        ("redis://127.0.0.1:6379", Some(&empty_ca), "rediss"),
        (
            "rediss://127.0.0.1:6379",
            Some(&empty_ca),
            "no PEM certificate",
        ),
    ];
    for (url, ca_file, reason) in cases {
        let mut config = crate::support::small_config(database.clone());
        config.redis.url = Some(url.to_owned());
        config.redis.tls_ca_file = ca_file.map(ToOwned::to_owned);
        let error = seawall_api::App::build(config).await.expect_err("refused");
        let chain = seawall_app::error_chain(&error);
        assert!(chain.contains(reason), "{url}: {chain}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_url_connects_to_the_cluster() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .expect("task")
        .expect("a Redis Cluster starts");
    let addrs = cluster.addrs();
    let others: Vec<String> = addrs[1..]
        .iter()
        .map(|addr| format!("node={addr}"))
        .collect();
    let url = format!("redis-cluster://{}?{}", addrs[0], others.join("&"));
    let app = TestApp::sqlite_with(|config| config.redis.url = Some(url)).await;
    wait_for_redis_ready(&app).await;
    let metrics = app.get("/metrics").await.text();
    assert!(metrics.contains("\nredis_connected 1\n"), "{metrics}");

    // The queues keep their keys in slots of their own: a flow within one
    // queue is enqueued whole, one over two queues is refused before
    // anything is written.
    let within = serde_json::json!({
        "queue": "report",
        "payload": {"user_id": 1, "days": 7},
        "children": [{"queue": "report", "payload": {"user_id": 2, "days": 7}}],
    });
    let enqueued = wait::until_some_async("the queues to take a flow", async || {
        let reply = app
            .admin_send("POST", "/api/queue/flows", Some(&within))
            .await;
        (reply.status != 503).then_some(reply)
    })
    .await;
    assert_eq!(enqueued.status, 202, "{}", enqueued.text());
    let parent = enqueued.json["id"].as_str().expect("an id");
    let children = app
        .admin_get(&format!("/api/queue/report/jobs/{parent}/children"))
        .await;
    assert_eq!(children.status, 200, "{}", children.text());
    assert_eq!(children.json["children"][0]["outcome"], "pending");
    let across = serde_json::json!({
        "queue": "report",
        "payload": {"user_id": 1, "days": 7},
        "children": [{"queue": "analytics", "payload": {"days": 7}}],
    });
    let refused = app
        .admin_send("POST", "/api/queue/flows", Some(&across))
        .await;
    assert_eq!(refused.status, 422, "{}", refused.text());
}
