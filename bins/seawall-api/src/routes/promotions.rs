//! The promotions workload's routes: coupons, points and time-sale orders
//! (rate-limited like the reference workload), and the admin routes that
//! create campaigns and sales, show where they stand and audit them. A
//! [`PromoError`](seawall_app::promotions::PromoError) becomes a problem by
//! `?`.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use seawall_app::promotions::{
    Audit, Balance, Campaign, CampaignStanding, CouponList, NewCampaign, NewSale, Order,
    OrderRequest, PointsChange, PointsEntry, Sale, SaleStanding, ScenarioRequest, ScenarioRun,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{Json, Path};
use crate::params::Params;
use crate::problem::Problem;
use crate::routes::queue::idempotency_key;
use crate::state::AppState;

/// Set on an answer that repeats the first result of an `Idempotency-Key`.
const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The public routes: coupons, points and orders.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(issue_coupon))
        .routes(routes!(coupons))
        .routes(routes!(balance))
        .routes(routes!(earn))
        .routes(routes!(spend))
        .routes(routes!(order))
        .routes(routes!(find_order))
}

/// The admin routes; the caller puts them behind the token.
pub(crate) fn admin_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(overview))
        .routes(routes!(create_campaign))
        .routes(routes!(create_sale))
        .routes(routes!(audit))
        .routes(routes!(start_scenario, scenario_runs))
}

/// `201 Created` with `body`, marked as a replay when it repeats the first
/// answer to its `Idempotency-Key`.
fn created<T: Serialize>(body: T, replayed: bool) -> Response {
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert(REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

// Whom a coupon goes to. No doc comment: the OpenAPI contract shows this
// schema without a description, and a doc comment would become one.
#[allow(missing_docs)]
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"user_id": 7}))]
pub(crate) struct IssueRequest {
    /// The user.
    #[serde(deserialize_with = "seawall_app::json::integer")]
    #[schema(minimum = 1)]
    user_id: i64,
}

/// Issues a coupon of the campaign to the user.
///
/// One atomic decision in the store (quantity, per-user limit, window),
/// then the coupon's row; the database's unique coupon numbers and per-user
/// places refuse anything the store got wrong. A refusal issues nothing.
#[utoipa::path(post, path = "/api/coupons/{campaign_id}/issue", tag = "promotions",
    params(("campaign_id" = i64, Path, description = "The campaign", minimum = 1, example = 1)),
    request_body(content = IssueRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The coupon", body = seawall_app::promotions::Coupon),
        (status = 400, description = "`campaign_id` is not an integer", body = Problem,
            content_type = "application/problem+json"),
        (status = 404, description = "No such campaign", body = Problem,
            content_type = "application/problem+json"),
        (status = 409, description = "Every coupon is issued, or the user holds as many as one \
            user may", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The campaign has not started or has ended, or the body is \
            wrong", body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn issue_coupon(
    State(state): State<AppState>,
    Path(campaign_id): Path<i64>,
    body: Result<Json<IssueRequest>, Problem>,
) -> Result<Response, Problem> {
    let Json(request) = body?;
    state
        .promotions()
        .issue_coupon(campaign_id, request.user_id)
        .await
        .map(|coupon| created(coupon, false))
        .map_err(Problem::from)
}

/// The user's coupons, newest first (at most 100).
///
/// Read through the cache; an issue drops the user's cached list.
#[utoipa::path(get, path = "/api/coupons", tag = "promotions",
    params(("user_id" = i64, Query, description = "The user", minimum = 1, example = 7)),
    responses((status = 200, description = "The user's coupons", body = CouponList)),
)]
async fn coupons(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<CouponList>, Problem> {
    let user_id = params.int("user_id", 1..=i64::MAX, None)?;
    state
        .promotions()
        .coupons(user_id)
        .await
        .map(Json)
        .map_err(Problem::from)
}

/// The user's points balance.
///
/// Read through the cache; every change drops it.
#[utoipa::path(get, path = "/api/points/balance", tag = "promotions",
    params(("user_id" = i64, Query, description = "The user", minimum = 1, example = 7)),
    responses((status = 200, description = "The balance (0 for a user with no ledger)",
        body = Balance)),
)]
async fn balance(State(state): State<AppState>, params: Params) -> Result<Json<Balance>, Problem> {
    let user_id = params.int("user_id", 1..=i64::MAX, None)?;
    state
        .promotions()
        .balance(user_id)
        .await
        .map(Json)
        .map_err(Problem::from)
}

/// Adds points to the user's balance.
///
/// Written with optimistic locking: the change names the account version
/// it read and is retried if another change got there first.
#[utoipa::path(post, path = "/api/points/earn", tag = "promotions",
    params(
        ("Idempotency-Key" = Option<String>, Header,
            description = "Names this change across its retries: a repeat with the same key \
                changes nothing and answers the first entry (with `Idempotent-Replayed: true`)",
            nullable = false, min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$",
            example = "earn-7-1042"),
    ),
    request_body(content = PointsChange, content_type = "application/json"),
    responses(
        (status = 201, description = "The ledger entry", body = PointsEntry),
        (status = 400, description = "`Idempotency-Key` is malformed or sent twice", body = Problem,
            content_type = "application/problem+json"),
        (status = 422, description = "The body is wrong, the balance would pass its ceiling, or \
            the key was first used for a different change; nothing changed",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn earn(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<PointsChange>, Problem>,
) -> Result<Response, Problem> {
    let key = idempotency_key(&headers)?;
    let Json(change) = body?;
    state
        .promotions()
        .earn_points(change, key.as_deref())
        .await
        .map(|entry| {
            let replayed = entry.replayed;
            created(entry, replayed)
        })
        .map_err(Problem::from)
}

/// Takes points from the user's balance, never below zero.
///
/// Written with optimistic locking, as earning is.
#[utoipa::path(post, path = "/api/points/use", tag = "promotions",
    params(
        ("Idempotency-Key" = Option<String>, Header,
            description = "Names this change across its retries, as for earning",
            nullable = false, min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$",
            example = "use-7-1043"),
    ),
    request_body(content = PointsChange, content_type = "application/json"),
    responses(
        (status = 201, description = "The ledger entry", body = PointsEntry),
        (status = 400, description = "`Idempotency-Key` is malformed or sent twice", body = Problem,
            content_type = "application/problem+json"),
        (status = 409, description = "The balance is below the amount (the problem's `balance` \
            says what it is)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The body is wrong, or the key was first used for a \
            different change; nothing changed", body = Problem,
            content_type = "application/problem+json"),
    ),
)]
async fn spend(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<PointsChange>, Problem>,
) -> Result<Response, Problem> {
    let key = idempotency_key(&headers)?;
    let Json(change) = body?;
    state
        .promotions()
        .use_points(change, key.as_deref())
        .await
        .map(|entry| {
            let replayed = entry.replayed;
            created(entry, replayed)
        })
        .map_err(Problem::from)
}

/// Orders one unit of a time sale.
///
/// One atomic script reserves the unit (stock, per-user limit, window,
/// idempotency key); the order is on the durable `order` queue before the
/// answer leaves, and a worker writes its row.
#[utoipa::path(post, path = "/api/sales/{sale_id}/orders", tag = "promotions",
    params(
        ("sale_id" = i64, Path, description = "The sale", minimum = 1, example = 1),
        ("Idempotency-Key" = Option<String>, Header,
            description = "Names this order across its retries: a repeat with the same key \
                answers the first order (with `Idempotent-Replayed: true`)",
            nullable = false, min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$",
            example = "order-7-noon"),
    ),
    request_body(content = OrderRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The order, acknowledged", body = Order),
        (status = 400, description = "`sale_id` is not an integer, or `Idempotency-Key` is \
            malformed or sent twice", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such sale", body = Problem,
            content_type = "application/problem+json"),
        (status = 409, description = "Sold out, or the user placed as many orders as one user \
            may", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The sale has not started or has ended, the body is wrong, \
            or the key was first used for another user; nothing was ordered",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Nothing was ordered: the store or the queues' Redis does \
            not answer, the sale's stock is being loaded again after the store lost it, or the \
            reservation did not reach `queue.wait_replicas` replicas in time (`Retry-After`)",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn order(
    State(state): State<AppState>,
    Path(sale_id): Path<i64>,
    headers: HeaderMap,
    body: Result<Json<OrderRequest>, Problem>,
) -> Result<Response, Problem> {
    let key = idempotency_key(&headers)?;
    let Json(request) = body?;
    state
        .promotions()
        .order(sale_id, request, key.as_deref())
        .await
        .map(|order| {
            let replayed = order.replayed;
            created(order, replayed)
        })
        .map_err(Problem::from)
}

/// An order of a time sale: `accepted` until a worker writes it, then
/// `written`.
#[utoipa::path(get, path = "/api/sales/{sale_id}/orders/{order_id}", tag = "promotions",
    params(
        ("sale_id" = i64, Path, description = "The sale", minimum = 1, example = 1),
        ("order_id" = String, Path, description = "The order", example = "7QH2M0C4WX9TZK3P5R8N"),
    ),
    responses(
        (status = 200, description = "The order", body = Order),
        (status = 400, description = "`sale_id` is not an integer", body = Problem,
            content_type = "application/problem+json"),
        (status = 404, description = "No such sale or order", body = Problem,
            content_type = "application/problem+json"),
    ),
)]
async fn find_order(
    State(state): State<AppState>,
    Path((sale_id, order_id)): Path<(i64, String)>,
) -> Result<Json<Order>, Problem> {
    state
        .promotions()
        .find_order(sale_id, &order_id)
        .await
        .map(Json)
        .map_err(Problem::from)
}

/// Every campaign and sale at a glance.
#[derive(Debug, Serialize, ToSchema)]
struct PromotionsOverview {
    /// `memory` (embedded defaults: decided in this process) or `redis`.
    store: &'static str,
    /// The newest campaigns (at most 50).
    campaigns: Vec<CampaignStanding>,
    /// The newest sales (at most 50).
    sales: Vec<SaleStanding>,
}

/// The newest coupon campaigns and time sales, with issued, remaining and
/// sold counts from the store and written counts from the database.
#[utoipa::path(get, path = "/api/promotions", tag = "admin",
    security(("admin_token" = [])),
    responses((status = 200, description = "Campaigns and sales", body = PromotionsOverview)),
)]
async fn overview(State(state): State<AppState>) -> Result<Json<PromotionsOverview>, Problem> {
    let promotions = state.promotions();
    let campaigns = promotions.campaigns().await.map_err(Problem::from)?;
    let sales = promotions.sales().await.map_err(Problem::from)?;
    Ok(Json(PromotionsOverview {
        store: if promotions.in_memory() {
            "memory"
        } else {
            "redis"
        },
        campaigns,
        sales,
    }))
}

/// Creates a coupon campaign.
#[utoipa::path(post, path = "/api/promotions/campaigns", tag = "admin",
    security(("admin_token" = [])),
    request_body(content = NewCampaign, content_type = "application/json"),
    responses(
        (status = 201, description = "The campaign", body = Campaign),
        (status = 422, description = "A field is wrong; nothing was created", body = Problem,
            content_type = "application/problem+json"),
    ),
)]
async fn create_campaign(
    State(state): State<AppState>,
    body: Result<Json<NewCampaign>, Problem>,
) -> Result<Response, Problem> {
    let Json(new) = body?;
    state
        .promotions()
        .create_campaign(new)
        .await
        .map(|campaign| created(campaign, false))
        .map_err(Problem::from)
}

/// Creates a time sale.
#[utoipa::path(post, path = "/api/promotions/sales", tag = "admin",
    security(("admin_token" = [])),
    request_body(content = NewSale, content_type = "application/json"),
    responses(
        (status = 201, description = "The sale", body = Sale),
        (status = 422, description = "A field is wrong; nothing was created", body = Problem,
            content_type = "application/problem+json"),
    ),
)]
async fn create_sale(
    State(state): State<AppState>,
    body: Result<Json<NewSale>, Problem>,
) -> Result<Response, Problem> {
    let Json(new) = body?;
    state
        .promotions()
        .create_sale(new)
        .await
        .map(|sale| created(sale, false))
        .map_err(Problem::from)
}

/// Counts every invariant of the promotions in the database and the store:
/// over-issued and duplicate coupons, ledger mismatches and negative
/// balances, oversold units, lost and duplicate orders.
#[utoipa::path(get, path = "/api/promotions/audit", tag = "admin",
    security(("admin_token" = [])),
    responses((status = 200, description = "The counts; every fault is 0 when all holds",
        body = Audit)),
)]
async fn audit(State(state): State<AppState>) -> Result<Json<Audit>, Problem> {
    state
        .promotions()
        .audit()
        .await
        .map(Json)
        .map_err(Problem::from)
}

/// Starts a scenario in this instance: virtual users calling the
/// workload's operations in process (no HTTP), timed per operation, then
/// the audit.
///
/// Answers at once with the run, `running`; `GET /api/promotions/scenarios`
/// shows it finish with its report. The campaign or sale it works on is
/// created before the answer. One run at a time per instance.
#[utoipa::path(post, path = "/api/promotions/scenarios", tag = "admin",
    security(("admin_token" = [])),
    request_body(content = ScenarioRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "The run, started", body = ScenarioRun),
        (status = 409, description = "Another run is at work in this instance", body = Problem,
            content_type = "application/problem+json"),
        (status = 422, description = "A field is wrong; nothing was started", body = Problem,
            content_type = "application/problem+json"),
    ),
)]
async fn start_scenario(
    State(state): State<AppState>,
    body: Result<Json<ScenarioRequest>, Problem>,
) -> Result<Response, Problem> {
    let Json(request) = body?;
    state
        .scenarios()
        .start(request)
        .await
        .map(|run| (StatusCode::ACCEPTED, Json(run)).into_response())
        .map_err(Problem::from)
}

/// The scenario runs of this instance, newest first (at most 10).
#[utoipa::path(get, path = "/api/promotions/scenarios", tag = "admin",
    security(("admin_token" = [])),
    responses((status = 200, description = "The runs", body = [ScenarioRun])),
)]
async fn scenario_runs(State(state): State<AppState>) -> Json<Vec<ScenarioRun>> {
    Json(state.scenarios().runs())
}
