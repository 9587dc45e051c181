//! The promotions workload over HTTP: coupons, points and time-sale orders
//! with their problems and idempotent replays, the admin routes, and two
//! instances on one Redis that never issue past a campaign's quantity.

use axum::body::Body;
use axum::http::{Request, header};
use futures_util::future::join_all;
use seawall_testkit::wait;
use serde_json::{Value, json};

use crate::support::{Reply, TestApp};

async fn post_keyed(app: &TestApp, uri: &str, key: Option<&str>, body: &Value) -> Reply {
    let mut request = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    app.send(request.body(Body::from(body.to_string())).expect("request"))
        .await
}

async fn create(app: &TestApp, what: &str, body: Value) -> i64 {
    let created = app
        .admin_send("POST", &format!("/api/promotions/{what}"), Some(&body))
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    created.json["id"].as_i64().expect("an id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coupons_points_and_orders_answer_with_their_problems() {
    let app = TestApp::sqlite().await;
    let campaign = create(&app, "campaigns", json!({"name": "launch", "quantity": 2})).await;
    let uri = format!("/api/coupons/{campaign}/issue");
    let issued = app.post_json(&uri, &json!({"user_id": 7})).await;
    assert_eq!(issued.status, 201, "{}", issued.text());
    assert_eq!(issued.json["number"], 1);
    let again = app.post_json(&uri, &json!({"user_id": 7})).await;
    assert!(again.assert_problem(409).contains("already holds 1 coupon"));
    assert_eq!(
        app.post_json(&uri, &json!({"user_id": 8})).await.status,
        201
    );
    let gone = app.post_json(&uri, &json!({"user_id": 9})).await;
    assert!(gone.assert_problem(409).contains("every coupon"));
    app.post_json("/api/coupons/999/issue", &json!({"user_id": 9}))
        .await
        .assert_problem(404);
    app.post_json("/api/coupons/first/issue", &json!({"user_id": 9}))
        .await
        .assert_problem(400);
    app.post_json(&uri, &json!({"user_id": 0}))
        .await
        .assert_problem(422);
    let list = app.get("/api/coupons?user_id=7").await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json["coupons"][0]["code"], issued.json["code"]);

    let earned = post_keyed(
        &app,
        "/api/points/earn",
        Some("earn-7"),
        &json!({"user_id": 7, "amount": 300}),
    )
    .await;
    assert_eq!(earned.status, 201, "{}", earned.text());
    assert!(earned.headers.get("idempotent-replayed").is_none());
    let replayed = post_keyed(
        &app,
        "/api/points/earn",
        Some("earn-7"),
        &json!({"user_id": 7, "amount": 300}),
    )
    .await;
    assert_eq!(replayed.status, 201);
    assert_eq!(replayed.headers["idempotent-replayed"], "true");
    assert_eq!(replayed.json, earned.json);
    let mismatch = post_keyed(
        &app,
        "/api/points/earn",
        Some("earn-7"),
        &json!({"user_id": 7, "amount": 301}),
    )
    .await;
    assert!(mismatch.assert_problem(422).contains("Idempotency-Key"));
    let short = post_keyed(
        &app,
        "/api/points/use",
        None,
        &json!({"user_id": 7, "amount": 400}),
    )
    .await;
    short.assert_problem(409);
    assert_eq!(short.json["balance"], 300);
    post_keyed(
        &app,
        "/api/points/use",
        Some(""),
        &json!({"user_id": 7, "amount": 1}),
    )
    .await
    .assert_problem(400);
    let used = post_keyed(
        &app,
        "/api/points/use",
        None,
        &json!({"user_id": 7, "amount": 100}),
    )
    .await;
    assert_eq!(
        (used.status.as_u16(), used.json["balance"].as_i64()),
        (201, Some(200))
    );
    let balance = app.get("/api/points/balance?user_id=7").await;
    assert_eq!(
        balance.json,
        json!({"user_id": 7, "balance": 200, "version": 2})
    );

    let sale = create(&app, "sales", json!({"name": "noon", "stock": 2})).await;
    let orders = format!("/api/sales/{sale}/orders");
    let first = post_keyed(&app, &orders, Some("buy-1"), &json!({"user_id": 1})).await;
    assert_eq!(first.status, 201, "{}", first.text());
    let repeat = post_keyed(&app, &orders, Some("buy-1"), &json!({"user_id": 1})).await;
    assert_eq!(repeat.headers["idempotent-replayed"], "true");
    assert_eq!(repeat.json["order_id"], first.json["order_id"]);
    let mismatch = post_keyed(&app, &orders, Some("buy-1"), &json!({"user_id": 2})).await;
    assert!(mismatch.assert_problem(422).contains("Idempotency-Key"));
    post_keyed(&app, &orders, None, &json!({"user_id": 1}))
        .await
        .assert_problem(409);
    assert_eq!(
        post_keyed(&app, &orders, None, &json!({"user_id": 2}))
            .await
            .status,
        201
    );
    let sold_out = post_keyed(&app, &orders, None, &json!({"user_id": 3})).await;
    assert!(sold_out.assert_problem(409).contains("sold out"));
    // The in-process worker writes the order.
    let order_id = first.json["order_id"].as_str().expect("an id").to_owned();
    wait::until_async(format!("order {order_id} to be written"), async || {
        app.get(&format!("{orders}/{order_id}")).await.json["state"] == "written"
    })
    .await;
    app.get(&format!("{orders}/NOSUCHORDER"))
        .await
        .assert_problem(404);

    let overview = app.admin_get("/api/promotions").await;
    assert_eq!(overview.status, 200, "{}", overview.text());
    assert_eq!(overview.json["store"], "memory");
    let campaign_row = &overview.json["campaigns"][0];
    assert_eq!(
        (
            &campaign_row["issued"],
            &campaign_row["remaining"],
            &campaign_row["written"]
        ),
        (&json!(2), &json!(0), &json!(2))
    );
    let sale_row = &overview.json["sales"][0];
    assert_eq!(
        (&sale_row["sold"], &sale_row["remaining"]),
        (&json!(2), &json!(0))
    );
    let audit = wait::until_some_async("the audit to count both orders written", async || {
        let audit = app.admin_get("/api/promotions/audit").await.json;
        (audit["orders_written"] == 2).then_some(audit)
    })
    .await;
    for fault in [
        "over_issued_coupons",
        "duplicate_coupons",
        "ledger_mismatches",
        "negative_balances",
        "oversold",
        "lost_orders",
        "duplicate_orders",
        "unaccounted_units",
    ] {
        assert_eq!(audit[fault], 0, "{fault}: {audit}");
    }
    let health = app.admin_get("/api/performance?type=health").await;
    let check = &health.json["checks"]["promotions:reconciliation"][0];
    assert_eq!(check["status"], "pass", "{}", health.text());
}

#[tokio::test]
async fn creating_campaigns_and_sales_takes_the_admin_token() {
    let app = TestApp::sqlite().await;
    app.post_json(
        "/api/promotions/campaigns",
        &json!({"name": "x", "quantity": 1}),
    )
    .await
    .assert_problem(401);
    let refused = app
        .admin_send(
            "POST",
            "/api/promotions/sales",
            Some(&json!({"name": "x", "stock": 0})),
        )
        .await;
    assert!(refused.assert_problem(422).contains("stock"));
    let overview = app.admin_get("/api/promotions").await;
    assert_eq!(overview.json["sales"], json!([]));
}

/// A scenario run over the admin API: refused sizes, one run at a time,
/// and a finished sale run whose report and audit agree with its stock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_runs_one_at_a_time_and_reports_its_audit() {
    let app = TestApp::sqlite().await;
    let uri = "/api/promotions/scenarios";
    app.post_json(uri, &json!({"scenario": "sale"}))
        .await
        .assert_problem(401);
    for (body, field) in [
        (json!({"scenario": "sale", "users": 1001}), "users"),
        (json!({"scenario": "sale", "rounds": 21}), "rounds"),
        (json!({"scenario": "sale", "rounds": 0}), "rounds"),
        (json!({"scenario": "lottery"}), "expected one of `coupon`"),
    ] {
        let refused = app.admin_send("POST", uri, Some(&body)).await;
        let detail = refused.assert_problem(422);
        assert!(detail.contains(field), "{body}: {detail}");
    }
    assert_eq!(app.admin_get(uri).await.json, json!([]));

    // 1,000 users × 20 rounds against a stock of 10,000: the second request
    // arrives while the first run's 20,000 orders are under way.
    let body = json!({"scenario": "sale", "users": 1000, "rounds": 20});
    let started = app.admin_send("POST", uri, Some(&body)).await;
    assert_eq!(started.status, 202, "{}", started.text());
    assert_eq!(started.json["state"], "running");
    assert!(
        started.json.get("campaign_id").is_none(),
        "{}",
        started.text()
    );
    let id = started.json["id"].clone();
    let busy = app.admin_send("POST", uri, Some(&body)).await;
    assert!(busy.assert_problem(409).contains("running"));

    let run = wait::until_some_async("the scenario run to end", async || {
        let run = app.admin_get(uri).await.json[0].clone();
        (run["state"] != "running").then_some(run)
    })
    .await;
    assert_eq!(run["id"], id);
    assert_eq!(run["state"], "finished", "{run}");
    let report = &run["report"];
    assert_eq!(report["operations"], 20_000, "{run}");
    assert_eq!(report["succeeded"], 10_000, "{run}");
    assert_eq!(report["refused"], 10_000, "{run}");
    assert_eq!(report["failed"], 0, "{run}");
    assert_eq!(report["holds"], true, "{run}");

    let sale = run["sale_id"].as_i64().expect("the run's sale");
    let overview = app.admin_get("/api/promotions").await;
    let standing = overview.json["sales"]
        .as_array()
        .and_then(|sales| sales.iter().find(|s| s["id"] == sale))
        .cloned()
        .expect("the run's sale is listed");
    assert_eq!(standing["sold"], 10_000, "{standing}");
    assert_eq!(standing["remaining"], 0, "{standing}");
}

/// Two instances on one Redis, 60 issues each at once against 25 coupons:
/// 25 issued in all, to 25 users.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_never_issue_past_the_quantity() {
    let redis = seawall_testkit::RedisServer::start().expect("redis-server starts");
    let a = TestApp::sqlite_with(|config| config.redis.url = Some(redis.url())).await;
    let b = a.another_instance(|_| {}).await;
    let campaign = create(&a, "campaigns", json!({"name": "shared", "quantity": 25})).await;
    let uri = format!("/api/coupons/{campaign}/issue");
    let issues = (0..120).map(|i| {
        let (app, uri) = (if i % 2 == 0 { &a } else { &b }, uri.clone());
        async move {
            app.post_json(&uri, &json!({"user_id": 1 + i % 60}))
                .await
                .status
                .as_u16()
        }
    });
    let statuses = join_all(issues).await;
    assert_eq!(statuses.iter().filter(|status| **status == 201).count(), 25);
    assert!(
        statuses.iter().all(|status| [201, 409].contains(status)),
        "{statuses:?}"
    );
    let audit = b.admin_get("/api/promotions/audit").await.json;
    assert_eq!(audit["coupons"], 25, "{audit}");
    assert_eq!(audit["duplicate_coupons"], 0);
    assert_eq!(b.admin_get("/api/promotions").await.json["store"], "redis");
}
