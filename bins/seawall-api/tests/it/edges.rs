//! The edges every route shares, walked over the OpenAPI document so that a
//! new route is covered without a new test: a path segment that is not
//! UTF-8, an unknown or repeated query parameter, and a body that is not
//! JSON are RFC 9457 problems on every route. Also the admin inputs that
//! reach the log or Redis: rate-limit keys, cache patterns at their limit,
//! and the forms of the bearer token accepted.

use axum::body::Body;
use axum::http::{Method, Request, header};
use serde_json::{Value, json};

use crate::support::{Reply, TOKEN, TestApp};

/// Every operation of the served document: method, path template, and the
/// operation.
async fn operations(app: &TestApp) -> Vec<(Method, String, Value)> {
    let document = app.get("/api/openapi.json").await;
    assert_eq!(document.status, 200);
    let mut operations = Vec::new();
    for (path, item) in document.json["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            let Ok(method) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            if operation.is_object() && method != Method::OPTIONS {
                operations.push((method, path.clone(), operation.clone()));
            }
        }
    }
    assert!(operations.len() > 30, "{operations:?}");
    operations
}

/// The names of an operation's parameters in `place` (`path`, `query`).
fn parameters<'a>(operation: &'a Value, place: &str) -> Vec<&'a str> {
    operation["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|parameter| parameter["in"] == place)
        .filter_map(|parameter| parameter["name"].as_str())
        .collect()
}

/// `template` with each path parameter set to a value that names something
/// real, except `raw` (already percent-encoded) for `bad`.
fn fill(template: &str, bad: Option<(&str, &str)>) -> String {
    let mut path = template.to_owned();
    for (name, good) in [
        ("queue", "email"),
        ("id", "1"),
        ("file", "app.js"),
        ("campaign_id", "1"),
        ("sale_id", "1"),
        ("order_id", "ABC"),
    ] {
        let value = match bad {
            Some((name_at_fault, raw)) if name_at_fault == name => raw,
            _ => good,
        };
        path = path.replace(&format!("{{{name}}}"), value);
    }
    assert!(
        !path.contains('{'),
        "a path parameter with no value: {path}"
    );
    path
}

async fn send(app: &TestApp, method: &Method, uri: &str, body: Option<(&str, &str)>) -> Reply {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    let body = match body {
        Some((content_type, text)) => {
            request = request.header(header::CONTENT_TYPE, content_type);
            Body::from(text.to_owned())
        }
        None => Body::empty(),
    };
    app.send(request.body(body).expect("a request")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_segment_that_is_not_utf8_is_a_problem_on_every_route() {
    let app = TestApp::sqlite().await;
    let mut checked = 0;
    for (method, template, operation) in operations(&app).await {
        for name in parameters(&operation, "path") {
            for raw in ["%ff", "%c3%28"] {
                let uri = fill(&template, Some((name, raw)));
                let reply = send(&app, &method, &uri, None).await;
                let detail = reply.assert_problem(400);
                assert!(
                    detail.contains(&format!("`{name}` is not valid UTF-8")),
                    "{method} {uri}: {detail}"
                );
                assert_eq!(
                    reply.json["invalid_params"][0]["name"], name,
                    "{method} {uri}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "{checked} path parameters checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_a_query_parameter_its_contract_does_not_list() {
    let app = TestApp::sqlite().await;
    for (method, template, operation) in operations(&app).await {
        let path = fill(&template, None);
        let reply = send(&app, &method, &format!("{path}?typo=1"), None).await;
        let detail = reply.assert_problem(400);
        assert!(detail.contains("`typo`"), "{method} {path}: {detail}");
        assert_eq!(reply.json["invalid_params"][0]["name"], "typo");
        let declared = parameters(&operation, "query");
        if let Some(first) = declared.first() {
            // A listed parameter is let through to the route, and is refused
            // when given twice.
            let once = send(&app, &method, &format!("{path}?{first}=1"), None).await;
            assert!(
                !once.text().contains("is not accepted here"),
                "{method} {path}?{first}=1: {}",
                once.text()
            );
            let twice = send(&app, &method, &format!("{path}?{first}=1&{first}=1"), None).await;
            let detail = twice.assert_problem(400);
            assert!(
                detail.contains("more than once"),
                "{method} {path}: {detail}"
            );
        }
    }
    // A name without a value is a parameter too; an empty query string is none.
    app.admin_get("/api/cache?typo").await.assert_problem(400);
    assert_eq!(app.admin_get("/api/cache?").await.status, 200);
    assert_eq!(app.get("/livez?").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_json_is_a_problem_on_every_route_that_takes_one() {
    let app = TestApp::sqlite().await;
    let mut checked = 0;
    for (method, template, operation) in operations(&app).await {
        if operation["requestBody"].is_null() {
            continue;
        }
        let path = fill(&template, None);
        let untyped = send(&app, &method, &path, Some(("text/plain", "{}"))).await;
        untyped.assert_problem(415);
        let broken = send(&app, &method, &path, Some(("application/json", "{"))).await;
        let detail = broken.assert_problem(422);
        assert!(
            detail.contains("not valid JSON"),
            "{method} {path}: {detail}"
        );
        let shapeless = send(&app, &method, &path, Some(("application/json", "[1]"))).await;
        shapeless.assert_problem(422);
        checked += 1;
    }
    assert_eq!(checked, 24, "every operation with a body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_names_a_member_twice_is_a_problem_on_every_route_that_takes_one() {
    let app = TestApp::sqlite().await;
    let mut checked = 0;
    for (method, template, operation) in operations(&app).await {
        if operation["requestBody"].is_null() {
            continue;
        }
        let path = fill(&template, None);
        for body in [r#"{"a": 1, "a": 1}"#, r#"{"a": {"b": 1, "b": 2}}"#] {
            let reply = send(&app, &method, &path, Some(("application/json", body))).await;
            let detail = reply.assert_problem(422);
            assert!(
                detail.contains("`a` is given more than once")
                    || detail.contains("`b` is given more than once"),
                "{method} {path} {body}: {detail}"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 24, "every operation with a body");
    // Read as its last member, this body would clean the dead jobs.
    let reply = send(
        &app,
        &Method::POST,
        "/api/queue/email/clean",
        Some((
            "application/json",
            r#"{"state": "completed", "state": "dead"}"#,
        )),
    )
    .await;
    let detail = reply.assert_problem(422);
    assert!(
        detail.contains("`state` is given more than once"),
        "{detail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_authenticate_before_reading_the_query() {
    let app = TestApp::sqlite().await;
    let mut checked = 0;
    for (method, template, operation) in operations(&app).await {
        if operation["security"].as_array().is_none_or(Vec::is_empty) {
            continue;
        }
        let uri = format!("{}?typo=1", fill(&template, None));
        let request = Request::builder()
            .method(&method)
            .uri(&uri)
            .body(Body::empty())
            .expect("a request");
        let reply = app.send(request).await;
        reply.assert_problem(401);
        assert!(
            reply.headers.contains_key(header::WWW_AUTHENTICATE),
            "{method} {uri}"
        );
        checked += 1;
    }
    assert!(checked >= 20, "{checked} admin operations checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_keys_with_control_characters_are_refused() {
    let app = TestApp::sqlite().await;
    for key in [
        "x\nFORGED ERROR line",
        "x\r\ny",
        "tab\there",
        "nul\0",
        "c1\u{85}",
    ] {
        let blocked = app
            .admin_send(
                "POST",
                "/api/rate-limit/block",
                Some(&json!({"limiter": "api", "key": key, "seconds": 60})),
            )
            .await;
        let detail = blocked.assert_problem(422);
        assert!(detail.contains("control characters"), "{key:?}: {detail}");
        assert_eq!(blocked.json["invalid_params"][0]["name"], "key");
        let encoded: String = form_encoded(key);
        for route in ["/api/rate-limit/block", "/api/rate-limit"] {
            let reply = app
                .admin_send(
                    "DELETE",
                    &format!("{route}?limiter=api&key={encoded}"),
                    None,
                )
                .await;
            let detail = reply.assert_problem(422);
            assert!(
                detail.contains("control characters"),
                "{route} {key:?}: {detail}"
            );
        }
    }
    // Nothing was blocked.
    let stats = app.admin_get("/api/rate-limit").await;
    let api = stats.json["limiters"]
        .as_array()
        .expect("limiters")
        .iter()
        .find(|limiter| limiter["name"] == "api")
        .expect("the api limiter");
    assert_eq!(api["blocked"], json!([]), "{api}");

    // The limit is in characters, as the contract's maxLength counts them.
    let longest = "🦀".repeat(128);
    let blocked = app
        .admin_send(
            "POST",
            "/api/rate-limit/block",
            Some(&json!({"limiter": "api", "key": longest, "seconds": 60})),
        )
        .await;
    assert_eq!(blocked.status, 200, "{}", blocked.text());
    let unblocked = app
        .admin_send(
            "DELETE",
            &format!(
                "/api/rate-limit/block?limiter=api&key={}",
                form_encoded(&longest)
            ),
            None,
        )
        .await;
    assert_eq!(unblocked.status, 200, "{}", unblocked.text());
    assert_eq!(unblocked.json["key"], longest.as_str());
    let too_long = "🦀".repeat(129);
    app.admin_send(
        "POST",
        "/api/rate-limit/block",
        Some(&json!({"limiter": "api", "key": too_long, "seconds": 60})),
    )
    .await
    .assert_problem(422);
    app.admin_send(
        "DELETE",
        &format!(
            "/api/rate-limit?limiter=api&key={}",
            form_encoded(&too_long)
        ),
        None,
    )
    .await
    .assert_problem(400);
}

fn form_encoded(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

/// A pattern of 256 four-byte characters: at the documented limit in
/// characters, 1,024 bytes before its namespace.
fn widest_pattern() -> String {
    format!("{}*", "😀".repeat(255))
}

async fn assert_patterns_at_the_limit(app: &TestApp) {
    let pattern = widest_pattern();
    assert_eq!(pattern.chars().count(), 256);
    let dropped = app
        .admin_send(
            "DELETE",
            "/api/cache",
            Some(&json!({"pattern": pattern, "type": "all"})),
        )
        .await;
    assert_eq!(dropped.status, 200, "{}", dropped.text());
    assert_eq!(dropped.json["deferred"], false, "{}", dropped.text());
    assert_eq!(dropped.json["patterns"].as_array().map(Vec::len), Some(3));
    let over = app
        .admin_send(
            "DELETE",
            "/api/cache",
            Some(&json!({"pattern": format!("{pattern}*"), "type": "all"})),
        )
        .await;
    let detail = over.assert_problem(422);
    assert!(detail.contains("256 characters"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_pattern_at_its_limit_is_dropped_and_not_deferred() {
    let app = TestApp::sqlite().await;
    assert_patterns_at_the_limit(&app).await;
    let redis = seawall_testkit::RedisServer::start().expect("redis-server starts");
    let app = TestApp::sqlite_with(|config| config.redis.url = Some(redis.url())).await;
    assert_eq!(app.admin_get("/api/cache").await.json["redis"], true);
    assert_patterns_at_the_limit(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive_and_spaces_around_the_token_are_ignored() {
    let app = TestApp::sqlite().await;
    let with = |value: String| {
        Request::get("/api/cache")
            .header(header::AUTHORIZATION, value)
            .body(Body::empty())
            .expect("a request")
    };
    for accepted in [
        format!("Bearer {TOKEN}"),
        format!("bearer {TOKEN}"),
        format!("BEARER {TOKEN}"),
        format!("Bearer   {TOKEN}"),
        format!("Bearer {TOKEN}  "),
    ] {
        let reply = app.send(with(accepted.clone())).await;
        assert_eq!(reply.status, 200, "{accepted:?}: {}", reply.text());
    }
    for (refused, status) in [
        (format!("Bearer\t{TOKEN}"), 401),
        (format!("Basic {TOKEN}"), 401),
        (format!("Bearer{TOKEN}"), 401),
        ("Bearer".to_owned(), 401),
        ("Bearer ".to_owned(), 401),
        (format!("Bearer {TOKEN}x"), 403),
        (format!("Bearer x{TOKEN}"), 403),
        (format!("Bearer {TOKEN} {TOKEN}"), 403),
    ] {
        app.send(with(refused)).await.assert_problem(status);
    }
}
