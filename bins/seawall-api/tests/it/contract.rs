//! The HTTP contract is the OpenAPI document generated from the code; this
//! test holds it to the copy committed in `tests/openapi.json`, so that a
//! change to the contract is a change to that file, made on purpose and
//! seen in review. After such a change, write the new document with
//! `SEAWALL_WRITE_OPENAPI=1 cargo test -p seawall-api --test it contract`.

use std::path::PathBuf;

use crate::support::TestApp;

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
