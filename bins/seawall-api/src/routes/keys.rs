//! The admin API-key routes: `GET /api/keys` (every key a page at a time,
//! revoked ones included, never the keys themselves), `POST /api/keys` (issue a key to a
//! tenant: the answer is the one place the key is shown) and
//! `DELETE /api/keys/{id}` (revoke, on every instance).

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use seawall_app::keys::{self, IssuedKey, KeyCursor, KeyInfo, MAX_NAME_CHARS, MAX_PAGE};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{Json, Path};
use crate::params::Params;
use crate::problem::Problem;
use crate::ratelimit::is_tenant_id;
use crate::state::AppState;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, issue))
        .routes(routes!(revoke))
}

/// A page of keys, newest first.
#[derive(Debug, Serialize, ToSchema)]
struct KeyList {
    /// The keys, without the keys themselves.
    keys: Vec<KeyInfo>,
    /// Where the next page begins (send it as `after`); absent on the last
    /// page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "1764201600000.k0123456789abcdef")]
    next: Option<String>,
}

/// Which page of keys to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // describes the query `Params` reads
struct ListQuery {
    /// How many keys, 1 to 1,000; default 1,000.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The `next` of the page before: the page begins after it.
    #[param(
        pattern = r"^[0-9]{1,18}\.k[0-9a-f]{16}$",
        example = "1764201600000.k0123456789abcdef"
    )]
    after: Option<String>,
}

/// A key to issue.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewKey {
    /// The tenant the key speaks for: its tier's quota applies.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9_.-]{1,64}$",
        example = "demo-basic"
    )]
    tenant_id: String,
    /// What the key is for, 1 to 100 characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$",
        example = "billing service"
    )]
    name: String,
}

/// The API keys, newest first, revoked ones included, a page at a time
/// (`next` names where the following page begins); never the keys
/// themselves, only their first characters.
#[utoipa::path(get, path = "/api/keys", tag = "admin",
    security(("admin_token" = [])),
    params(ListQuery),
    responses((status = 200, description = "A page of keys", body = KeyList)),
)]
async fn list(State(state): State<AppState>, params: Params) -> Result<Json<KeyList>, Problem> {
    let limit = params.int("limit", 1..=MAX_PAGE, Some(MAX_PAGE))?;
    let after = match params.optional("after") {
        None => None,
        Some(text) => Some(KeyCursor::parse(text).ok_or_else(|| {
            Problem::bad_parameter("after", "must be the `next` of a page of keys")
        })?),
    };
    let (keys, next) = keys::list(state.db(), limit, after.as_ref()).await?;
    Ok(Json(KeyList {
        keys,
        next: next.map(|cursor| cursor.to_string()),
    }))
}

/// Issues an API key to a tenant. The answer holds the key itself, shown
/// this once (`Cache-Control: no-store`): only its SHA-256 is stored.
#[utoipa::path(post, path = "/api/keys", tag = "admin",
    security(("admin_token" = [])),
    request_body(content = NewKey, content_type = "application/json"),
    responses(
        (status = 201, description = "The key, shown this once", body = IssuedKey),
        (status = 404, description = "No such tenant",
            body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The body is not valid JSON, or a field is wrong, missing or \
            unknown",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn issue(
    State(state): State<AppState>,
    body: Result<Json<NewKey>, Problem>,
) -> Result<Response, Problem> {
    let Json(request) = body?;
    if !is_tenant_id(&request.tenant_id) {
        return Err(Problem::invalid_field(
            "tenant_id",
            "must be 1 to 64 of A-Z a-z 0-9 _ . -",
        ));
    }
    let name_chars = request.name.chars().count();
    if name_chars == 0 || name_chars > MAX_NAME_CHARS || request.name.chars().any(char::is_control)
    {
        return Err(Problem::invalid_field(
            "name",
            format!("must be 1 to {MAX_NAME_CHARS} characters, none of them a control character"),
        ));
    }
    let issued = keys::issue(
        state.db(),
        &request.tenant_id,
        &request.name,
        seawall_app::time::now_ms(),
    )
    .await?;
    tracing::info!(id = %issued.info.id, tenant = %issued.info.tenant_id, "API key issued");
    // The one answer that holds the key: no cache on the way keeps it.
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(issued),
    )
        .into_response())
}

/// Revokes an API key, on every instance: its cached entry is invalidated
/// (with Redis, other instances drop theirs within milliseconds), and its
/// next use is a 401. Revoking a revoked key changes nothing.
#[utoipa::path(delete, path = "/api/keys/{id}", tag = "admin",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "The key's id", example = "k0123456789abcdef")),
    responses(
        (status = 200, description = "The key, revoked", body = KeyInfo),
        (status = 404, description = "No such key",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<KeyInfo>, Problem> {
    let revoked = keys::revoke(state.db(), state.cache(), &id, seawall_app::time::now_ms()).await?;
    let Some(revoked) = revoked else {
        // The id is not repeated: a caller who put the key itself in the
        // path would get it back in the answer.
        return Err(Problem::not_found(
            "there is no API key with this id (ids are listed by GET /api/keys)",
        ));
    };
    tracing::info!(id = %revoked.id, tenant = %revoked.tenant_id, "API key revoked");
    Ok(Json(revoked))
}
