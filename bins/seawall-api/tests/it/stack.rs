//! The middleware stack and the server's connection handling, over real TCP:
//! request ids, the request timeout, load shedding, slow clients, request
//! limits (problems and hyper's bare replies), compression and CORS.

use std::io::Read as _;
use std::time::{Duration, Instant};

use reqwest::header::{self, HeaderMap, HeaderValue};
use seawall_testkit::wait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::raw;
use crate::support::TestServer;

/// A request to a route that reads a JSON body, whose body never arrives in
/// full: it holds its place among the requests in flight for as long as the
/// connection stays open.
const HELD_POST: &[u8] = b"POST /api/review/complete HTTP/1.1\r\nHost: test\r\n\
Content-Type: application/json\r\nContent-Length: 64\r\nConnection: close\r\n\r\n{\"user_id\"";

/// The rest of [`HELD_POST`]'s body: 64 bytes in all, for a user that does
/// not exist.
fn rest_of_held_body() -> Vec<u8> {
    let rest = format!("{:<54}", r#": 999999999, "content_id": 1, "rating": 3}"#);
    assert_eq!(rest.len(), 64 - r#"{"user_id""#.len());
    rest.into_bytes()
}

/// Opens a connection and sends [`HELD_POST`], then waits until the server
/// has admitted it (`http_requests_in_flight` reads `expected`).
async fn hold_a_request(server: &TestServer, expected: u32) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream.write_all(HELD_POST).await.expect("write");
    let want = format!("http_requests_in_flight {expected}\n");
    wait::until_async(
        format!("the held request to be admitted ({})", want.trim_end()),
        async || metrics(server).await.contains(&want),
    )
    .await;
    stream
}

async fn metrics(server: &TestServer) -> String {
    server
        .client
        .get(format!("{}/metrics", server.base_url))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_kept_or_generated_and_reach_problem_bodies() {
    let server = TestServer::start().await;
    let bad_request = format!("{}/api/review/today", server.base_url);

    // A plain id from the client is returned and names the problem.
    let reply = server
        .client
        .get(&bad_request)
        .header("x-request-id", "it-trace:42")
        .send()
        .await
        .expect("request");
    assert_eq!(reply.status(), 400);
    assert_eq!(reply.headers()["x-request-id"], "it-trace:42");
    let body: serde_json::Value = reply.json().await.expect("problem JSON");
    assert_eq!(body["request_id"], "it-trace:42", "{body}");

    // No id, or one too long or with characters unfit for a log line: a
    // fresh UUID, the same in the header and the body.
    for sent in [
        None,
        Some("x".repeat(129)),
        Some("a\"quoted\"id".to_owned()),
    ] {
        let mut request = server.client.get(&bad_request);
        if let Some(id) = &sent {
            request = request.header("x-request-id", id.as_str());
        }
        let reply = request.send().await.expect("request");
        let id = reply.headers()["x-request-id"]
            .to_str()
            .expect("ASCII")
            .to_owned();
        assert_eq!(id.len(), 36, "a UUID for {sent:?}: {id}");
        assert_eq!(id.matches('-').count(), 4, "a UUID for {sent:?}: {id}");
        let body: serde_json::Value = reply.json().await.expect("problem JSON");
        assert_eq!(body["request_id"], id.as_str(), "{body}");
    }

    // Successful responses carry it too.
    let reply = server
        .client
        .get(format!("{}/livez", server.base_url))
        .header("x-request-id", "probe-1")
        .send()
        .await
        .expect("request");
    assert_eq!(reply.headers()["x-request-id"], "probe-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_timeout_is_answered_with_a_problem() {
    let server = TestServer::start_with(|config| {
        config.server.request_timeout = Duration::from_millis(300);
    })
    .await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream.write_all(HELD_POST).await.expect("write");
    let reply = raw::read_reply(&mut stream).await;
    let waited = started.elapsed();

    let body = reply.assert_problem(503);
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("300ms"), "{detail}");
    assert!(body["request_id"].is_string(), "{body}");
    // Without the timeout the body that never comes would be waited for
    // until the connection ends: a minute is far past 300 ms, even on a
    // busy machine.
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(60),
        "answered after {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflow_is_shed_with_503_while_the_probes_stay_up() {
    overflow_is_shed(seawall_app::config::Admission::Static).await;
}

/// A ceiling of 1 leaves the adaptive limit no room to move, and every
/// class still has its one place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_overflow_is_shed_with_503_while_the_probes_stay_up() {
    overflow_is_shed(seawall_app::config::Admission::Adaptive).await;
}

/// One request held fills a limit of 1: the next waits `shed_wait`, is
/// answered 503, and the probes still answer.
async fn overflow_is_shed(admission: seawall_app::config::Admission) {
    let server = TestServer::start_with(|config| {
        config.server.max_in_flight = 1;
        config.server.shed_wait = Duration::from_millis(50);
        config.server.admission = admission;
    })
    .await;
    let held = hold_a_request(&server, 1).await;

    let started = Instant::now();
    let shed = raw::exchange(server.addr, &raw::get("/api/content", "")).await;
    let body = shed.assert_problem(503);
    assert_eq!(shed.header("retry-after"), Some("1"), "{shed:?}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("in flight"),
        "{body}"
    );
    // Not shed, it would wait for the held request, which never ends: a
    // minute is far past the 50 ms shed wait, even on a busy machine.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "shedding took {:?}",
        started.elapsed()
    );

    // The liveness probe and the scraper are never shed.
    let livez = raw::exchange(server.addr, &raw::get("/livez", "")).await;
    assert_eq!(livez.status, 200, "{livez:?}");
    let exposition = metrics(&server).await;
    assert!(
        exposition.contains("\nhttp_shed_requests_total 1\n"),
        "{exposition}"
    );
    assert!(
        exposition.contains("\nhttp_requests_in_flight 1\n"),
        "{exposition}"
    );

    // Once the held request ends, requests are admitted again.
    drop(held);
    wait::until_async("a request to be admitted again", async || {
        raw::exchange(server.addr, &raw::get("/api/content", ""))
            .await
            .status
            == 200
    })
    .await;
    assert!(
        metrics(&server)
            .await
            .contains("\nhttp_requests_in_flight 0\n")
    );
}

/// Adaptive admission on a limit its bounds hold at 4: each class fills
/// its share of it (the statistics, unknown paths and admin calls without
/// the token 2, reads and writes 3, the admin API with its token 4), so as
/// requests are held the lowest class is shed first, then the other reads
/// and the writes, and the admin API still gets in; the probes and the
/// scraper never take a place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_admission_sheds_the_lowest_class_first_and_never_a_probe() {
    let server = TestServer::start_with(|config| {
        config.server.max_in_flight = 4;
        config.server.admission = seawall_app::config::Admission::Adaptive;
    })
    .await;
    let status = async |request: Vec<u8>| raw::exchange(server.addr, &request).await;
    let admin = format!("Authorization: Bearer {}\r\n", crate::support::TOKEN);
    let mut held = vec![
        hold_a_request(&server, 1).await,
        hold_a_request(&server, 2).await,
    ];
    let stats = status(raw::get("/api/analytics/stats", "")).await;
    stats.assert_problem(503);
    assert_eq!(stats.header("retry-after"), Some("1"), "{stats:?}");
    // What no route serves (a scanner's guess) and an admin call without
    // the admin token are in the lowest class too, not the admin's.
    status(raw::get("/wp-login.php", ""))
        .await
        .assert_problem(503);
    status(raw::get("/api/queue", "")).await.assert_problem(503);
    let wrong = "Authorization: Bearer not-the-token\r\n";
    status(raw::get("/api/queue", wrong))
        .await
        .assert_problem(503);
    assert_eq!(status(raw::get("/api/content", "")).await.status, 200);

    held.push(hold_a_request(&server, 3).await);
    status(raw::get("/api/content", ""))
        .await
        .assert_problem(503);
    let body = r#"{"user_id": 1, "amount": 5, "reason": "shed"}"#;
    let earn = format!(
        "POST /api/points/earn HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    status(earn.into_bytes()).await.assert_problem(503);
    assert_eq!(status(raw::get("/api/queue", &admin)).await.status, 200);
    for probe in ["/livez", "/readyz", "/metrics"] {
        assert_eq!(status(raw::get(probe, "")).await.status, 200, "{probe}");
    }
    let exposition = metrics(&server).await;
    for line in [
        "\nhttp_shed_requests_total 6\n",
        "\nhttp_requests_in_flight 3\n",
        "\nadaptive_limit{limiter=\"http\"} 4\n",
        "\nadaptive_rejected_total{limiter=\"http\"} 6\n",
    ] {
        assert!(exposition.contains(line), "{line:?} in {exposition}");
    }
    drop(held);
    wait::until_async("the held requests to leave", async || {
        metrics(&server)
            .await
            .contains("\nhttp_requests_in_flight 0\n")
    })
    .await;
}

/// A fresh instance's adaptive limit is its ceiling: it serves what static
/// admission would until latency shows it has too much in flight, rather
/// than shedding while a low limit climbs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adaptive_limit_starts_at_its_ceiling() {
    let server = TestServer::start_with(|config| {
        config.server.max_in_flight = 300;
        config.server.admission = seawall_app::config::Admission::Adaptive;
    })
    .await;
    let exposition = metrics(&server).await;
    assert!(
        exposition.contains("\nadaptive_limit{limiter=\"http\"} 300\n"),
        "{exposition}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waits_for_a_place_within_the_shed_wait() {
    waits_for_a_place(seawall_app::config::Admission::Static, 1, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adaptive_admission_waits_for_a_place_within_the_shed_wait() {
    // A limit of 4: the public API (writes and reads alike) fills 3.
    waits_for_a_place(seawall_app::config::Admission::Adaptive, 4, 3).await;
}

/// `held` requests fill the limit (`max_in_flight`, under `admission`); a
/// read waits, and takes the place of a held request once it finishes
/// instead of being shed.
async fn waits_for_a_place(
    admission: seawall_app::config::Admission,
    max_in_flight: usize,
    held: u32,
) {
    let server = TestServer::start_with(|config| {
        config.server.max_in_flight = max_in_flight;
        config.server.admission = admission;
        // The most it may be: the held request is finished and answered
        // within it, however busy the machine.
        config.server.shed_wait = Duration::from_secs(10);
    })
    .await;
    let mut streams = Vec::new();
    for expected in 1..=held {
        streams.push(hold_a_request(&server, expected).await);
    }
    let addr = server.addr;
    let waiting =
        tokio::spawn(async move { raw::exchange(addr, &raw::get("/api/content", "")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the read did not wait");

    // Finish a held request's body: it is answered, and the waiting
    // request takes its place instead of being shed.
    let mut first = streams.pop().expect("held");
    first
        .write_all(&rest_of_held_body())
        .await
        .expect("finish the body");
    let first = raw::read_reply(&mut first).await;
    assert_eq!(first.status, 404, "{first:?}");
    let second = waiting.await.expect("task");
    assert_eq!(second.status, 200, "{second:?}");
    assert!(
        metrics(&server)
            .await
            .contains("\nhttp_shed_requests_total 0\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_headers_is_cut_off() {
    let server = TestServer::start_with(|config| {
        config.server.header_read_timeout = Duration::from_millis(600);
    })
    .await;

    // One byte every 100 ms, each well within the timeout: sending this
    // whole head would take over five minutes.
    let head = raw::get("/livez", &format!("X-Slow: {}\r\n", "a".repeat(3000)));
    let started = Instant::now();
    let stream = TcpStream::connect(server.addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for byte in head {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(wait::patience(), reader.read_to_end(&mut answer)).await;
    let after = started.elapsed();
    trickle.abort();
    assert!(
        closed.is_ok(),
        "the connection was still open after {:?}",
        wait::patience()
    );
    // A minute: far past the 600 ms timeout on a busy machine, far short of
    // the time the head takes.
    assert!(
        after < Duration::from_secs(60),
        "closed only after {after:?}"
    );
    // hyper closes without a reply or with a bare 408.
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    // A connection that sends nothing at all is closed as well.
    let started = Instant::now();
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    let mut buffer = Vec::new();
    let closed = tokio::time::timeout(wait::patience(), silent.read_to_end(&mut buffer)).await;
    assert!(
        closed.is_ok(),
        "a silent connection stayed open for {:?}",
        wait::patience()
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "closed only after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_limits_are_problems_and_hypers_own_are_bare() {
    let server = TestServer::start_with(|config| {
        config.server.max_uri_bytes = 1024;
        config.server.max_headers = 20;
        config.server.max_header_bytes = 4096;
    })
    .await;
    let addr = server.addr;

    // Over the configured limits: problems.
    let long_target = format!("/api/content?q={}", "a".repeat(2000));
    let reply = raw::exchange(addr, &raw::get(&long_target, "")).await;
    let body = reply.assert_problem(414);
    assert!(
        body["detail"].as_str().unwrap_or_default().contains("1024"),
        "{body}"
    );

    let many: String = (0..25).map(|i| format!("X-Extra-{i}: v\r\n")).collect();
    raw::exchange(addr, &raw::get("/livez", &many))
        .await
        .assert_problem(431);

    let big = format!("X-Big: {}\r\n", "b".repeat(6000));
    raw::exchange(addr, &raw::get("/livez", &big))
        .await
        .assert_problem(431);

    let twice = "Authorization: Bearer a\r\nAuthorization: Bearer b\r\n";
    let reply = raw::exchange(addr, &raw::get("/api/performance", twice)).await;
    let body = reply.assert_problem(400);
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("Authorization"),
        "{body}"
    );

    // Past hyper's own limits, or not valid HTTP: a bare status line.
    let huge_target = format!("/livez?q={}", "a".repeat(70 * 1024));
    raw::exchange(addr, &raw::get(&huge_target, ""))
        .await
        .assert_bare(414);
    let too_many: String = (0..45).map(|i| format!("X-Extra-{i}: v\r\n")).collect();
    raw::exchange(addr, &raw::get("/livez", &too_many))
        .await
        .assert_bare(431);
    raw::exchange(addr, b"GET /a\x01b HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .assert_bare(400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_compressed_per_accept_encoding() {
    let server = TestServer::start().await;
    let plain = raw::exchange(server.addr, &raw::get("/api/content?page_size=50", "")).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("content-encoding"), None);

    for path in [
        "/api/content?page_size=50",
        "/metrics",
        "/",
        "/api/openapi.json",
    ] {
        let gzip = raw::exchange(server.addr, &raw::get(path, "Accept-Encoding: gzip\r\n")).await;
        assert_eq!(gzip.status, 200, "{path}");
        assert_eq!(gzip.header("content-encoding"), Some("gzip"), "{path}");
        let mut inflated = Vec::new();
        flate2::read::GzDecoder::new(gzip.body.as_slice())
            .read_to_end(&mut inflated)
            .expect("valid gzip");
        assert!(inflated.len() > gzip.body.len(), "{path}");
        if path.starts_with("/api/content") {
            assert_eq!(inflated, plain.body, "{path}");
        }

        let br = raw::exchange(
            server.addr,
            &raw::get(path, "Accept-Encoding: br;q=1, gzip;q=0.5\r\n"),
        )
        .await;
        assert_eq!(br.header("content-encoding"), Some("br"), "{path}");
    }

    let server = TestServer::start_with(|config| config.server.compression = false).await;
    let reply = raw::exchange(
        server.addr,
        &raw::get("/api/content?page_size=50", "Accept-Encoding: gzip\r\n"),
    )
    .await;
    assert_eq!(reply.header("content-encoding"), None, "{reply:?}");
}

fn preflight(server: &TestServer, origin: &str) -> reqwest::RequestBuilder {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::ORIGIN,
        HeaderValue::from_str(origin).expect("origin"),
    );
    headers.insert(
        header::ACCESS_CONTROL_REQUEST_METHOD,
        HeaderValue::from_static("POST"),
    );
    headers.insert(
        header::ACCESS_CONTROL_REQUEST_HEADERS,
        HeaderValue::from_static("content-type"),
    );
    server
        .client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/api/review/complete", server.base_url),
        )
        .headers(headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_off_by_default_and_follows_the_origin_list() {
    let server = TestServer::start().await;
    let reply = preflight(&server, "https://app.example")
        .send()
        .await
        .expect("preflight");
    assert!(
        reply
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none(),
        "{reply:?}"
    );

    let server = TestServer::start_with(|config| {
        config.server.cors_origins = vec!["https://app.example".to_owned()];
    })
    .await;
    let reply = preflight(&server, "https://app.example")
        .send()
        .await
        .expect("preflight");
    assert!(reply.status().is_success(), "{reply:?}");
    assert_eq!(
        reply.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example"
    );
    let methods = reply.headers()[header::ACCESS_CONTROL_ALLOW_METHODS]
        .to_str()
        .expect("ASCII");
    assert!(methods.contains("POST"), "{methods}");

    let reply = preflight(&server, "https://evil.example")
        .send()
        .await
        .expect("preflight");
    assert!(
        reply
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none(),
        "{reply:?}"
    );

    let reply = server
        .client
        .get(format!("{}/api/content", server.base_url))
        .header(header::ORIGIN, "https://app.example")
        .send()
        .await
        .expect("request");
    assert_eq!(
        reply.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example"
    );
    let exposed = reply.headers()[header::ACCESS_CONTROL_EXPOSE_HEADERS]
        .to_str()
        .expect("ASCII")
        .to_ascii_lowercase();
    assert!(exposed.contains("x-request-id"), "{exposed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_in_the_document_is_served() {
    let server = TestServer::start().await;
    let document: serde_json::Value = server
        .client
        .get(format!("{}/api/openapi.json", server.base_url))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().expect("paths");
    let mut listed: Vec<&str> = paths.keys().map(String::as_str).collect();
    listed.sort_unstable();
    assert_eq!(
        listed,
        [
            "/",
            "/api/analytics/stats",
            "/api/cache",
            "/api/content",
            "/api/coupons",
            "/api/coupons/{campaign_id}/issue",
            "/api/keys",
            "/api/keys/{id}",
            "/api/openapi.json",
            "/api/performance",
            "/api/points/balance",
            "/api/points/earn",
            "/api/points/use",
            "/api/promotions",
            "/api/promotions/audit",
            "/api/promotions/campaigns",
            "/api/promotions/sales",
            "/api/promotions/scenarios",
            "/api/queue",
            "/api/queue/analytics",
            "/api/queue/backup",
            "/api/queue/email",
            "/api/queue/export",
            "/api/queue/flows",
            "/api/queue/import",
            "/api/queue/notification",
            "/api/queue/report",
            "/api/queue/schedule",
            "/api/queue/{queue}/clean",
            "/api/queue/{queue}/group-rate-limit",
            "/api/queue/{queue}/jobs",
            "/api/queue/{queue}/jobs/{id}",
            "/api/queue/{queue}/jobs/{id}/children",
            "/api/queue/{queue}/jobs/{id}/retry",
            "/api/queue/{queue}/limits",
            "/api/queue/{queue}/pause",
            "/api/queue/{queue}/rate-limit",
            "/api/queue/{queue}/resume",
            "/api/queue/{queue}/retry",
            "/api/queue/{queue}/schedulers",
            "/api/queue/{queue}/schedulers/{id}/pause",
            "/api/queue/{queue}/schedulers/{id}/resume",
            "/api/rate-limit",
            "/api/rate-limit/abuse",
            "/api/rate-limit/block",
            "/api/review/complete",
            "/api/review/today",
            "/api/sales/{sale_id}/orders",
            "/api/sales/{sale_id}/orders/{order_id}",
            "/assets/panels/{file}",
            "/assets/{file}",
            "/livez",
            "/metrics",
            "/readyz",
        ]
    );
    for (path, operations) in paths {
        let concrete = path
            .replace("{queue}", "email")
            .replace("{id}", "1")
            .replace("{campaign_id}", "1")
            .replace("{sale_id}", "1")
            .replace("{order_id}", "NOSUCHORDER")
            .replace("{file}", "no-such-file.js")
            .replace("panels/no-such-file.js", "panels/no-such-panel.js");
        for method in operations.as_object().expect("operations").keys() {
            let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                .expect("method");
            let reply = server
                .client
                .request(method.clone(), format!("{}{concrete}", server.base_url))
                .send()
                .await
                .expect("request");
            let status = reply.status().as_u16();
            let body: serde_json::Value = reply.json().await.unwrap_or_default();
            // An operation that is routed answers anything but the
            // fallback's 404 ("nothing is served at …") or a 405.
            let fallback = body["detail"]
                .as_str()
                .is_some_and(|detail| detail.starts_with("nothing is served"));
            assert!(
                status != 405 && !fallback,
                "{method} {path}: {status} {body}"
            );
        }
    }
}
