//! What the virtual users do: one goose scenario per brief scenario, each
//! request checked (status and body), refusals the scenario expects
//! counted as passed checks, anything else as a failed one.
//!
//! Goose calls transactions as plain functions, so what a run shares (the
//! campaign and sale it created, the user counter, the outcome tallies) is
//! one global [`Run`], replaced before each scenario.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use goose::goose::GooseResponse;
use goose::metrics::GooseRequestMetric;
use goose::prelude::*;
use serde_json::{Value, json};

/// The demo dataset the learning workload reads (the service's defaults).
pub(crate) const DEMO_USERS: i64 = 1_000;
const DEMO_CONTENTS: i64 = 5_000;
const DEMO_SCHEDULES_PER_USER: i64 = 200;
const DEMO_PAGES: i64 = DEMO_CONTENTS / 20;

/// What one scenario's users share.
#[derive(Debug, Default)]
pub(crate) struct Run {
    /// The campaign coupons are issued from.
    pub(crate) campaign: i64,
    /// The sale orders are placed in.
    pub(crate) sale: i64,
    /// Distinguishes this run's idempotency keys and users from an earlier
    /// run's on the same database.
    pub(crate) tag: i64,
    /// The next fresh user id.
    pub(crate) next_user: AtomicI64,
    /// Coupons issued (201).
    pub(crate) issued: AtomicU64,
    /// Orders acknowledged (201).
    pub(crate) ordered: AtomicU64,
    /// Orders refused as sold out.
    pub(crate) sold_out: AtomicU64,
    /// Microseconds from the run's start to the first and the last
    /// acknowledged order.
    pub(crate) first_order_us: AtomicU64,
    pub(crate) last_order_us: AtomicU64,
    /// Repeated idempotency keys answered with the first result.
    pub(crate) replays: AtomicU64,
    pub(crate) started: Option<Instant>,
}

static RUN: RwLock<Option<Arc<Run>>> = RwLock::new(None);

/// Makes `run` the one the transactions see.
pub(crate) fn install(run: Arc<Run>) {
    *RUN.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(run);
}

fn run() -> Arc<Run> {
    RUN.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
        .unwrap_or_default()
}

fn elapsed_us(run: &Run) -> u64 {
    run.started.map_or(0, |started| {
        u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
    })
}

/// A small, fast, good-enough random source per call site.
fn random(below: i64) -> i64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(u64::from(std::process::id()));
    let value = i64::try_from(hasher.finish() >> 1).unwrap_or(0);
    value.rem_euclid(below.max(1))
}

/// A request and what came back: the status and the JSON body.
struct Reply {
    request: GooseRequestMetric,
    status: u16,
    body: Value,
    replayed: bool,
}

/// Sends `method path` named `name`, with a JSON body and an idempotency
/// key when given; a 4xx the caller may expect is not yet a failure.
async fn send(
    user: &mut GooseUser,
    method: GooseMethod,
    path: &str,
    name: &str,
    body: Option<&Value>,
    key: Option<&str>,
) -> Result<Reply, Box<TransactionError>> {
    let mut builder = user.get_request_builder(&method, path)?;
    if let Some(body) = body {
        builder = builder.json(body);
    }
    if let Some(key) = key {
        builder = builder.header("idempotency-key", key);
    }
    let request = GooseRequest::builder()
        .method(method)
        .path(path)
        .name(name)
        .set_request_builder(builder)
        .build();
    let GooseResponse { request, response } = user.request(request).await?;
    let (status, replayed, body) = match response {
        Ok(response) => {
            let status = response.status().as_u16();
            let replayed = response.headers().contains_key("idempotent-replayed");
            let body = response.json::<Value>().await.unwrap_or(Value::Null);
            (status, replayed, body)
        }
        Err(_) => (0, false, Value::Null),
    };
    Ok(Reply {
        request,
        status,
        body,
        replayed,
    })
}

/// Records the check on `reply`: passed when `ok`, failed with `why`
/// otherwise.
fn check(user: &mut GooseUser, reply: &mut Reply, ok: bool, why: &str) -> TransactionResult {
    if ok {
        user.set_success(&mut reply.request)
    } else {
        let body = reply.body.to_string();
        user.set_failure(
            &format!("{why}: {} {body}", reply.status),
            &mut reply.request,
            None,
            Some(&body),
        )
    }
}

fn detail(body: &Value) -> &str {
    body["detail"].as_str().unwrap_or_default()
}

/// Coupon issuance: a fresh user per request, and every tenth request
/// repeats a recent user (who must not get a second coupon).
pub(crate) async fn issue(user: &mut GooseUser) -> TransactionResult {
    let run = run();
    let n = run.next_user.fetch_add(1, Ordering::Relaxed);
    let repeat = n % 10 == 9;
    let user_id = if repeat { (n - 5).max(1) } else { n };
    let path = format!("/api/coupons/{}/issue", run.campaign);
    let mut reply = send(
        user,
        GooseMethod::Post,
        &path,
        "coupon issue",
        Some(&json!({"user_id": user_id})),
        None,
    )
    .await?;
    let ok = match reply.status {
        201 => {
            run.issued.fetch_add(1, Ordering::Relaxed);
            reply.body["user_id"] == user_id
                && reply.body["code"].as_str().is_some_and(|c| c.len() == 12)
        }
        409 => {
            let text = detail(&reply.body);
            text.contains("already holds") || text.contains("every coupon")
        }
        _ => false,
    };
    check(user, &mut reply, ok, "coupon issue")
}

/// What a points user knows of its own balance.
#[derive(Debug, Clone, Default)]
struct Wallet {
    user_id: i64,
    balance: i64,
    previous: i64,
    iteration: u64,
}

fn wallet(user: &mut GooseUser) -> Wallet {
    if let Some(wallet) = user.get_session_data::<Wallet>() {
        return wallet.clone();
    }
    let run = run();
    let user_id = run.tag + i64::try_from(user.weighted_users_index).unwrap_or(0) + 1;
    Wallet {
        user_id,
        ..Wallet::default()
    }
}

/// Points: earn 100 (idempotent; every fifth key sent twice), read the
/// balance three times (cached), use 60. Each virtual user has an account
/// of its own; every tenth iteration also earns one point on an account
/// all users share, where writes collide and retry.
pub(crate) async fn points(user: &mut GooseUser) -> TransactionResult {
    let run = run();
    let mut wallet = wallet(user);
    wallet.iteration += 1;
    // Kept before any check can end the transaction early: the next
    // iteration must not reuse this one's key.
    user.set_session_data(wallet.clone());
    let key = format!("r{}-u{}-i{}", run.tag, wallet.user_id, wallet.iteration);
    let body = json!({"user_id": wallet.user_id, "amount": 100});
    let sends = if wallet.iteration.is_multiple_of(5) {
        2
    } else {
        1
    };
    let mut earned = false;
    let expected = wallet.balance + 100;
    for attempt in 0..sends {
        let mut reply = send(
            user,
            GooseMethod::Post,
            "/api/points/earn",
            "points earn",
            Some(&body),
            Some(&key),
        )
        .await?;
        let ok = reply.status == 201 && reply.body["balance"] == expected;
        if ok && !earned {
            earned = true;
            wallet.previous = wallet.balance;
            wallet.balance = expected;
            user.set_session_data(wallet.clone());
        }
        if reply.replayed {
            run.replays.fetch_add(1, Ordering::Relaxed);
        }
        let ok = ok && reply.replayed == (attempt == 1);
        check(user, &mut reply, ok, "points earn")?;
    }
    for _ in 0..3 {
        let path = format!("/api/points/balance?user_id={}", wallet.user_id);
        let mut reply = send(user, GooseMethod::Get, &path, "points balance", None, None).await?;
        // Behind a load balancer another instance may still hold the value
        // before the last change for a few milliseconds.
        let seen = &reply.body["balance"];
        let ok = reply.status == 200 && (*seen == wallet.balance || *seen == wallet.previous);
        check(user, &mut reply, ok, "points balance")?;
    }
    let mut reply = send(
        user,
        GooseMethod::Post,
        "/api/points/use",
        "points use",
        Some(&json!({"user_id": wallet.user_id, "amount": 60})),
        None,
    )
    .await?;
    let ok = reply.status == 201 && reply.body["balance"] == wallet.balance - 60;
    if ok {
        wallet.previous = wallet.balance;
        wallet.balance -= 60;
        user.set_session_data(wallet.clone());
    }
    check(user, &mut reply, ok, "points use")?;
    if wallet.iteration.is_multiple_of(10) {
        let shared = json!({"user_id": run.tag, "amount": 1, "reason": "shared"});
        let mut reply = send(
            user,
            GooseMethod::Post,
            "/api/points/earn",
            "points earn (shared account)",
            Some(&shared),
            None,
        )
        .await?;
        let ok = reply.status == 201;
        check(user, &mut reply, ok, "shared earn")?;
    }
    Ok(())
}

/// Time sale: a fresh buyer per request, with an idempotency key.
pub(crate) async fn order(user: &mut GooseUser) -> TransactionResult {
    let run = run();
    let user_id = run.next_user.fetch_add(1, Ordering::Relaxed);
    place_order(user, &run, user_id, "sale order").await
}

async fn place_order(
    user: &mut GooseUser,
    run: &Run,
    user_id: i64,
    name: &str,
) -> TransactionResult {
    let path = format!("/api/sales/{}/orders", run.sale);
    let key = format!("r{}-buy-{user_id}", run.tag);
    let mut reply = send(
        user,
        GooseMethod::Post,
        &path,
        name,
        Some(&json!({"user_id": user_id})),
        Some(&key),
    )
    .await?;
    let ok = match reply.status {
        201 => {
            run.ordered.fetch_add(1, Ordering::Relaxed);
            let now = elapsed_us(run);
            let _ = run.first_order_us.compare_exchange(
                0,
                now.max(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            run.last_order_us.fetch_max(now, Ordering::Relaxed);
            reply.body["user_id"] == user_id && reply.body["state"] == "accepted"
        }
        409 => {
            run.sold_out.fetch_add(1, Ordering::Relaxed);
            detail(&reply.body).contains("sold out")
        }
        _ => false,
    };
    check(user, &mut reply, ok, name)
}

/// The full system: a coupon, then points, then an order, for one user.
pub(crate) async fn journey(user: &mut GooseUser) -> TransactionResult {
    let run = run();
    let user_id = run.next_user.fetch_add(1, Ordering::Relaxed);
    let path = format!("/api/coupons/{}/issue", run.campaign);
    let mut reply = send(
        user,
        GooseMethod::Post,
        &path,
        "journey coupon",
        Some(&json!({"user_id": user_id})),
        None,
    )
    .await?;
    let ok = reply.status == 201;
    if ok {
        run.issued.fetch_add(1, Ordering::Relaxed);
    }
    check(user, &mut reply, ok, "journey coupon")?;
    let mut reply = send(
        user,
        GooseMethod::Post,
        "/api/points/earn",
        "journey points",
        Some(&json!({"user_id": user_id, "amount": 50})),
        Some(&format!("r{}-journey-{user_id}", run.tag)),
    )
    .await?;
    let ok = reply.status == 201 && reply.body["balance"] == 50;
    check(user, &mut reply, ok, "journey points")?;
    place_order(user, &run, user_id, "journey order").await
}

/// The learning workload: 30 % due reviews, 30 % statistics, 30 % the
/// catalogue, 10 % completed reviews, users and pages drawn uniformly.
pub(crate) async fn learning(user: &mut GooseUser) -> TransactionResult {
    let draw = random(10);
    let learner = 1 + random(DEMO_USERS);
    let (method, path, name, body) = match draw {
        0..=2 => (
            GooseMethod::Get,
            format!("/api/review/today?user_id={learner}"),
            "review today",
            None,
        ),
        3..=5 => (
            GooseMethod::Get,
            format!("/api/analytics/stats?user_id={learner}"),
            "analytics stats",
            None,
        ),
        6..=8 => (
            GooseMethod::Get,
            format!("/api/content?page={}", 1 + random(DEMO_PAGES)),
            "content page",
            None,
        ),
        _ => {
            let k = random(DEMO_SCHEDULES_PER_USER);
            let content = (learner * 37 + k) % DEMO_CONTENTS + 1;
            (
                GooseMethod::Post,
                "/api/review/complete".to_owned(),
                "review complete",
                Some(
                    json!({"user_id": learner, "content_id": content, "rating": 1 + random(5),
                    "duration_ms": 1000 + random(9000)}),
                ),
            )
        }
    };
    let mut reply = send(user, method, &path, name, body.as_ref(), None).await?;
    let ok = reply.status == 200;
    check(user, &mut reply, ok, name)
}
