//! One trace across two processes: a request to the API from a trusted
//! proxy, carrying a W3C `traceparent`, enqueues an email job; a
//! `seawall-worker` process runs it. Both export over OTLP/HTTP to a
//! receiver that decodes the official protobuf schema, and the spans must
//! form one trace: the caller's span → the API's server span → the
//! enqueue's producer span → the worker's consumer span, each the parent of
//! the next, with the messaging attributes the conventions name.

use seawall_testkit::{OtlpReceiver, ReceivedSpan, RedisServer, wait};
use serde_json::{Value, json};

use crate::support::{ServedApi, TOKEN, Worker, shared_config, until, worker};

/// The caller's trace and span, as a proxy in front of the API would send
/// them.
const TRACE: &str = "5e3f1c0a9b8d7e6f5a4b3c2d1e0f9a8b";
const CALLER: &str = "a1b2c3d4e5f60718";

/// The span of `service` named `name` in `spans`, which must be the only one.
fn only<'a>(spans: &'a [ReceivedSpan], service: &str, name: &str) -> &'a ReceivedSpan {
    let found: Vec<_> = spans
        .iter()
        .filter(|span| span.service == service && span.name == name)
        .collect();
    match found.as_slice() {
        [span] => span,
        _ => panic!("one {name:?} span from {service}, got {found:#?} among {spans:#?}"),
    }
}

/// Whether `ancestor` is `span` or one of its ancestors in `spans`.
fn descends(spans: &[ReceivedSpan], span: &ReceivedSpan, ancestor: &ReceivedSpan) -> bool {
    let mut current = span;
    for _ in 0..64 {
        if current.span_id == ancestor.span_id {
            return true;
        }
        match spans.iter().find(|s| s.span_id == current.parent_span_id) {
            Some(parent) => current = parent,
            None => return false,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_its_enqueue_and_the_jobs_run_on_a_worker_are_one_trace() {
    let receiver = OtlpReceiver::start().expect("the OTLP receiver starts");
    let redis = RedisServer::start().expect("redis-server starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = shared_config(dir.path(), &redis.url());
    config.otel.endpoint = Some(receiver.url());
    // The test is the proxy: its trace context is believed.
    config.ratelimit.trusted_proxies = vec!["127.0.0.1/32".to_owned()];

    let api = ServedApi::start(&config).await;
    let client = reqwest::Client::new();
    until(&client, &format!("{}/api/queue", api.base), |status, _| {
        status == 200
    })
    .await;
    let mut command = worker(&config);
    command.env("SEAWALL_OTEL_ENDPOINT", receiver.url());
    let working = Worker::start(command);

    let response = client
        .post(format!("{}/api/queue/email", api.base))
        .bearer_auth(TOKEN)
        .header("traceparent", format!("00-{TRACE}-{CALLER}-01"))
        .header("tracestate", "proxy=edge-1")
        .json(&json!({"user_id": 1, "template": "welcome"}))
        .send()
        .await
        .expect("the API answers");
    assert_eq!(response.status(), 202);
    let reply: Value = response.json().await.expect("JSON");
    let id = reply["id"].as_str().expect("a job id").to_owned();
    until(
        &client,
        &format!("{}/api/queue/email/jobs/{id}", api.base),
        |status, body| {
            status == 200
                && serde_json::from_str::<Value>(body).is_ok_and(|job| job["state"] == "completed")
        },
    )
    .await;

    // Stopping flushes what each process still batches.
    let (status, worker_log) = working.terminate();
    assert_eq!(status, 0, "the worker stops cleanly: {worker_log:?}");
    api.stop().await;
    wait::until("the request's, the enqueue's and the run's spans", || {
        let spans = receiver.spans();
        ["POST /api/queue/email", "send email", "process email"]
            .iter()
            .all(|name| spans.iter().any(|span| span.name == *name))
    });
    let spans = receiver.spans();
    assert_eq!(receiver.refused(), 0, "every export was OTLP protobuf");

    let server = only(&spans, "seawall-api", "POST /api/queue/email");
    assert_eq!(
        server.trace_id, TRACE,
        "the request joins the caller's trace"
    );
    assert_eq!(
        server.parent_span_id, CALLER,
        "its parent is the caller's span"
    );
    assert_eq!(server.kind, 2, "a server span");
    assert_eq!(server.attribute("http.request.method"), Some("POST"));
    assert_eq!(server.attribute("http.route"), Some("/api/queue/email"));
    assert_eq!(server.attribute("http.response.status_code"), Some("202"));

    let send = only(&spans, "seawall-api", "send email");
    assert_eq!(send.trace_id, TRACE);
    assert_eq!(send.kind, 4, "a producer span");
    assert!(
        descends(&spans, send, server),
        "the enqueue happens inside the request: {spans:#?}"
    );
    assert_eq!(send.attribute("messaging.destination.name"), Some("email"));
    assert_eq!(send.attribute("messaging.message.id"), Some(id.as_str()));

    let process = only(&spans, "seawall-worker", "process email");
    assert_eq!(
        process.trace_id, TRACE,
        "the run continues the request's trace"
    );
    assert_eq!(
        process.parent_span_id, send.span_id,
        "the run's parent is the enqueue"
    );
    assert_eq!(process.kind, 5, "a consumer span");
    assert!(process.links.is_empty());
    assert_eq!(process.attribute("messaging.system"), Some("seawall"));
    assert_eq!(
        process.attribute("messaging.operation.type"),
        Some("process")
    );
    assert_eq!(
        process.attribute("messaging.destination.name"),
        Some("email")
    );
    assert_eq!(process.attribute("messaging.message.id"), Some(id.as_str()));
    assert_eq!(process.attribute("seawall.job.run"), Some("1"));
    assert_eq!(process.attribute("seawall.job.outcome"), Some("completed"));
    assert_ne!(process.status, 2, "not an error");
}
