//! The HTTP contract is the OpenAPI document generated from the code; these
//! tests hold it to the copy committed in `tests/openapi.json`, so that a
//! change to the contract is a change to that file, made on purpose and
//! seen in review, and hold the document to itself (every `$ref` names a
//! part of it) and the answers to the document (each keeps to the schema
//! given for its status, `null`s included). After a change to the
//! contract, write the new document with
//! `SEAWALL_WRITE_OPENAPI=1 cargo test -p seawall-api --test it contract`.

use std::path::PathBuf;

use serde_json::Value;

use crate::json_schema;
use crate::support::{Reply, TestApp};

fn committed() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/openapi.json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_is_the_committed_contract() {
    let generated = seawall_api::openapi()
        .to_pretty_json()
        .expect("the document serialises");
    let app = TestApp::sqlite().await;
    let served = app.get("/api/openapi.json").await;
    assert_eq!(served.status, 200);
    let generated_value: serde_json::Value =
        serde_json::from_str(&generated).expect("the document is JSON");
    assert_eq!(
        served.json, generated_value,
        "the served document is the generated one"
    );
    if std::env::var_os("SEAWALL_WRITE_OPENAPI").is_some() {
        std::fs::write(committed(), format!("{generated}\n")).expect("write the contract");
    }
    let on_disk = std::fs::read_to_string(committed()).expect("tests/openapi.json exists");
    let on_disk: serde_json::Value =
        serde_json::from_str(&on_disk).expect("tests/openapi.json is JSON");
    assert!(
        on_disk == generated_value,
        "the contract changed: compare tests/openapi.json with the generated \
         document, and if the change is meant, write it with \
         SEAWALL_WRITE_OPENAPI=1 (see this module's documentation)"
    );
}

/// The generated document as JSON.
fn document() -> Value {
    serde_json::to_value(seawall_api::openapi()).expect("the document serialises")
}

/// A client generated from a document with a `$ref` to nothing does not
/// build, or builds without the type the reference names.
#[test]
fn every_reference_in_the_document_resolves() {
    let dangling = json_schema::dangling_references(&document());
    assert!(
        dangling.is_empty(),
        "these `$ref`s name nothing in the document (where, reference): {dangling:#?}"
    );
}

/// The path of the document that `uri` is answered by for `method`: of
/// those that match it, the one with the most literal segments, as
/// `/api/queue/flows` over `/api/queue/{queue}`.
fn template_of<'a>(document: &'a Value, method: &str, uri: &str) -> &'a str {
    let path = uri.split('?').next().unwrap_or(uri);
    let segments: Vec<&str> = path.split('/').collect();
    document["paths"]
        .as_object()
        .expect("the document has paths")
        .iter()
        .filter(|(_, item)| item.get(method).is_some())
        .map(|(template, _)| template.as_str())
        .filter(|template| {
            let parts: Vec<&str> = template.split('/').collect();
            parts.len() == segments.len()
                && parts
                    .iter()
                    .zip(&segments)
                    .all(|(part, segment)| part.starts_with('{') || part == segment)
        })
        .max_by_key(|template| {
            template
                .split('/')
                .filter(|part| !part.starts_with('{'))
                .count()
        })
        .unwrap_or_else(|| panic!("the document has no {method} operation for {uri}"))
}

/// Sends `method uri` with `body`, and checks that the document declares
/// the answer's status and content type for the operation and that the
/// answer keeps to the schema it gives them.
async fn answer_keeping_to_the_contract(
    app: &TestApp,
    document: &Value,
    method: &str,
    uri: &str,
    body: Option<&Value>,
) -> Reply {
    let reply = app.admin_send(method, uri, body).await;
    let operation = method.to_ascii_lowercase();
    let template = template_of(document, &operation, uri);
    let status = reply.status.as_u16().to_string();
    let response = &document["paths"][template][&operation]["responses"][&status];
    assert!(
        response.is_object(),
        "{method} {template} answers {status}, which the document does not declare: {}",
        reply.text()
    );
    let content_type = reply.content_type();
    let content_type = content_type.split(';').next().unwrap_or_default().trim();
    let schema = &response["content"][content_type]["schema"];
    assert!(
        schema.is_object(),
        "{method} {template} answers {status} as {content_type:?}, which the document \
         does not declare: {}",
        reply.text()
    );
    let breaches = json_schema::breaches(document, schema, &reply.json);
    assert!(
        breaches.is_empty(),
        "{method} {uri} answers {status} off its schema:\n{}\nthe answer: {}",
        breaches.join("\n"),
        reply.text()
    );
    reply
}

/// A client generated from the document reads the answers as the schemas
/// say, so an answer off its schema (a `null` where the schema takes none)
/// breaks it: a flow's enqueue, its parent waiting, its children (one
/// pending, one completed), a queue's limits and a job that is not there
/// keep to theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_keep_to_the_schemas_the_document_gives_them() {
    let document = document();
    let app = TestApp::sqlite().await;
    let check = async |method: &str, uri: &str, body: Option<&Value>| {
        answer_keeping_to_the_contract(&app, &document, method, uri, body).await
    };
    // The statistics' refresh waits while its queue is paused, and the
    // report with it.
    let paused = check("POST", "/api/queue/analytics/pause", None).await;
    assert_eq!(paused.status, 200, "{}", paused.text());
    let flow = crate::queue::report_flow();
    let enqueued = check("POST", "/api/queue/flows", Some(&flow)).await;
    assert_eq!(enqueued.status, 202, "{}", enqueued.text());
    let parent = enqueued.json["id"].as_str().expect("an id");
    let email = enqueued.json["children"][1]["id"].as_str().expect("an id");
    let parent = format!("/api/queue/report/jobs/{parent}");
    let children = format!("{parent}/children");
    // The parent hears of its child's completion just after the child's
    // own record says so: wait on the parent's view.
    seawall_testkit::wait::until_async("the parent to see the email completed", async || {
        app.admin_get(&children).await.json["children"][1]["outcome"] == "completed"
    })
    .await;
    check("GET", &format!("/api/queue/email/jobs/{email}"), None).await;
    let waiting = check("GET", &parent, None).await;
    assert_eq!(
        waiting.json["state"],
        "waiting-children",
        "{}",
        waiting.text()
    );

    let children = check("GET", &children, None).await;
    assert_eq!(children.status, 200, "{}", children.text());
    let outcomes: Vec<&Value> = children.json["children"]
        .as_array()
        .expect("children")
        .iter()
        .map(|child| &child["outcome"])
        .collect();
    assert_eq!(outcomes, ["pending", "completed"], "{}", children.text());

    let limits = check("GET", "/api/queue/report/limits", None).await;
    assert_eq!(limits.status, 200, "{}", limits.text());
    let missing = check(
        "GET",
        "/api/queue/report/jobs/31556926000000-9f86d081884c7d65/children",
        None,
    )
    .await;
    assert_eq!(missing.status, 404, "{}", missing.text());
}
