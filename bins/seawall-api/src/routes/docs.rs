//! The API's contract: the OpenAPI 3.1 document, generated from the route
//! annotations and served at `/api/openapi.json`.

use std::sync::Arc;

use axum::Extension;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::problem::{InvalidParam, PROBLEM_JSON, Problem};

/// The name of the admin bearer-token scheme in the document.
pub(crate) const ADMIN_TOKEN: &str = "admin_token";

/// The document's root: title, tags, the problem schema, and the responses
/// every operation can give.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "seawall-api",
        description = "The seawall API service: the reference workload (review schedules, \
                       statistics, the content catalogue), probes, metrics, the admin API and \
                       the dashboard. Every error is an RFC 9457 problem (`application/problem+json`).",
        license(name = "MIT OR Apache-2.0"),
    ),
    tags(
        (name = "workload", description = "The reference workload"),
        (name = "promotions", description = "The promotions workload: coupons, points and \
            time-sale orders"),
        (name = "probes", description = "Liveness, readiness and metrics"),
        (name = "admin", description = "The admin API, behind the admin bearer token"),
        (name = "dashboard", description = "The dashboard page and its assets"),
        (name = "contract", description = "This document"),
    ),
    components(schemas(
        Problem, InvalidParam,
        crate::jobs::EmailJob, crate::jobs::EmailTemplate, crate::jobs::ReportJob,
        crate::jobs::ScheduleJob, crate::jobs::ReviewWrite, crate::jobs::NotificationJob,
        crate::jobs::Channel, crate::jobs::AnalyticsJob, crate::jobs::BackupJob,
        crate::jobs::ExportJob, crate::jobs::ExportTable, crate::jobs::ImportJob,
    )),
)]
pub(crate) struct ApiDoc;

/// The serialised document, shared with the handler that serves it.
#[derive(Clone)]
pub(crate) struct ApiDocument(pub(crate) Arc<str>);

/// The contract route.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> OpenApiRouter<S> {
    OpenApiRouter::new().routes(routes!(openapi_json))
}

/// This OpenAPI 3.1 document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "contract",
    responses((status = 200, description = "The document", body = Object,
        content_type = "application/json")),
)]
async fn openapi_json(Extension(document): Extension<ApiDocument>) -> Response {
    let mut response = document.0.to_string().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Adds what every operation shares rather than repeating it on each: the
/// admin security scheme, 401 and 403 on operations that need the token, and
/// the problems any request can meet before or around its handler. Applied
/// to the assembled document, once every route is in it.
pub(crate) struct Conventions;

/// Answers that can come to any request: from the middleware (duplicate
/// `Authorization`, limits, load shedding, the request timeout) or a failure.
const COMMON: [(&str, &str); 5] = [
    (
        "400",
        "Invalid input: a query parameter the operation does not list, given twice, malformed \
         or out of range; a path segment that is not UTF-8 or not of its type; two \
         `Authorization` headers; or a `Seawall-Read-After` that is not a WAL position",
    ),
    (
        "414",
        "The request target is longer than `server.max_uri_bytes`",
    ),
    (
        "431",
        "More header fields than `server.max_headers`, or more bytes than `server.max_header_bytes`",
    ),
    (
        "500",
        "The server failed; the cause is in its log, under the request id",
    ),
    (
        "503",
        "Overloaded (shed, with `Retry-After`), past `server.request_timeout`, or a dependency is down",
    ),
];

/// Paths no rate limiter answers: the probes and the scraper.
const NOT_LIMITED: [&str; 3] = ["/livez", "/readyz", "/metrics"];

const LIMITED: [(&str, &str); 1] = [(
    "429",
    "A rate limit is used up, or the caller is blocked for exceeding one; comes with \
     `Retry-After` in whole seconds and the `RateLimit-Policy` / `RateLimit` headers",
)];

/// Answers to any request that has a JSON body.
const BODY: [(&str, &str); 2] = [
    ("413", "The body is larger than `server.max_body_bytes`"),
    ("415", "The body is not sent as `application/json`"),
];

/// Answers on the workload routes, which check the API key and the tenant
/// quota.
const TENANT: [(&str, &str); 2] = [
    (
        "401",
        "`X-Api-Key` is not a key the service issued, or it was revoked; comes with a \
         `WWW-Authenticate` challenge",
    ),
    (
        "403",
        "`X-Tenant-Id`, from a trusted proxy, names no tenant",
    ),
];

const ADMIN: [(&str, &str); 2] = [
    (
        "401",
        "No admin bearer token; comes with a `WWW-Authenticate` challenge",
    ),
    ("403", "The admin token is wrong"),
];

impl Modify for Conventions {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            ADMIN_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The admin token: `SEAWALL_ADMIN_TOKEN`, or the one printed at start",
                    ))
                    .build(),
            ),
        );
        for (path, item) in &mut openapi.paths.paths {
            let limited = !NOT_LIMITED.contains(&path.as_str());
            let workload = item.get.iter().chain(item.post.iter()).any(|operation| {
                operation
                    .tags
                    .iter()
                    .flatten()
                    .any(|tag| tag == "workload" || tag == "promotions")
            });
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                add_responses(operation, &COMMON);
                if operation.request_body.is_some() {
                    add_responses(operation, &BODY);
                }
                if limited {
                    add_responses(operation, &LIMITED);
                }
                if workload {
                    add_responses(operation, &TENANT);
                    add_caller_headers(operation);
                    add_position_header(operation);
                }
                // The enqueues of one job run as the caller their
                // `Seawall-Read-After` names, and answer it back.
                if operation
                    .operation_id
                    .as_deref()
                    .is_some_and(|id| id.starts_with("enqueue_") && id != "enqueue_flow")
                {
                    add_position_header(operation);
                }
                if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    add_responses(operation, &ADMIN);
                }
            }
        }
    }
}

/// The headers that pick the caller's rate limits on the workload routes:
/// an API key the service issued, and the identity headers a trusted proxy
/// sets (from any other peer they are ignored).
fn add_caller_headers(operation: &mut Operation) {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let header = |name: &str, description: &str, pattern: &str, example: &str| {
        let parameter = ParameterBuilder::new()
            .name(name)
            .parameter_in(ParameterIn::Header)
            .description(Some(description))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(pattern))
                    .examples([serde_json::json!(example)]),
            ))
            .build();
        RefOr::T(parameter)
    };
    let parameters = operation.parameters.get_or_insert_with(Vec::new);
    parameters.push(header(
        "X-Api-Key",
        "An API key issued through `POST /api/keys`: the API limiter counts per key, and the \
         quota of its tenant's tier applies. Without one, the caller is counted by its client \
         address",
        "^swk_[0-9a-f]{64}$",
        "swk_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ));
    parameters.push(header(
        "X-Tenant-Id",
        "Set by a trusted proxy (`ratelimit.trusted_proxies`), ignored (but checked for its form) \
         from any other peer and when an API key is sent: the tenant whose tier's quota applies",
        "^[A-Za-z0-9_.-]{1,64}$",
        "demo-free",
    ));
    parameters.push(header(
        "Seawall-Read-After",
        "The `Seawall-Read-After` of the last response this client received, if any: with \
         database replicas, reads go only to a replica that has replayed the database up to \
         this position (the client's own writes on any instance), else to the primary. \
         Without it, the position last written by the caller's API key, trusted user or \
         client address is used, as kept in Redis. A response carries the caller's position \
         once it has one: send back the last one",
        "^([0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}|[0-9A-Fa-f]{1,16})$",
        "16/B374D848",
    ));
    parameters.push(header(
        "X-User-Id",
        "Set by a trusted proxy, ignored (but checked for its form) from any other peer and when \
         an API key is sent: the user the API limiter counts by",
        "^[!-~]{1,64}$",
        "7",
    ));
}

/// The caller's WAL position on the workload's successful answers, once it
/// has one (see `read_after.rs`).
fn add_position_header(operation: &mut Operation) {
    use utoipa::openapi::header::HeaderBuilder;
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    for (status, response) in &mut operation.responses.responses {
        if let (true, RefOr::T(response)) = (status.starts_with('2'), response) {
            response.headers.insert(
                "Seawall-Read-After".to_owned(),
                RefOr::T(
                    HeaderBuilder::new()
                        .schema(Some(
                            ObjectBuilder::new()
                                .schema_type(Type::String)
                                .pattern(Some("^[0-9A-F]{1,8}/[0-9A-F]{1,8}$")),
                        ))
                    .description(Some(
                        "With database replicas, once the caller has a position: the database's \
                         WAL position at or past the caller's last write (and the one it sent). \
                         Send it back as `Seawall-Read-After` to read your own writes on any \
                         instance",
                        ))
                        .build(),
                ),
            );
        }
    }
}

fn add_responses(operation: &mut Operation, responses: &[(&str, &str)]) {
    for (status, description) in responses {
        operation
            .responses
            .responses
            .entry((*status).to_owned())
            .or_insert_with(|| RefOr::T(problem_response(description)));
    }
}

fn problem_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

#[cfg(test)]
mod tests {
    #[test]
    fn operations_with_a_body_document_its_refusals() {
        let document = crate::openapi();
        let mut with_body = 0;
        for (path, item) in &document.paths.paths {
            for operation in [&item.get, &item.post, &item.delete].into_iter().flatten() {
                let responses = &operation.responses.responses;
                if operation.request_body.is_some() {
                    with_body += 1;
                    for status in ["413", "415", "422"] {
                        assert!(responses.contains_key(status), "{path}: no {status}");
                    }
                } else {
                    assert!(!responses.contains_key("415"), "{path}: 415 without a body");
                }
            }
        }
        assert_eq!(
            with_body, 22,
            "review/complete, rate-limit, rate-limit/block, cache (DELETE), \
             the eight enqueues, a flow, queue clean, coupon issue, points earn and use, \
             order, campaign and sale creation, a scenario run, and an API key"
        );
    }
}
