//! RFC 9457 problem details: every error the service answers with is one of
//! these, built here and nowhere else.
//!
//! [`Problem`] is the response; the modules below it turn each domain's
//! errors into one, so that a route applies `?` to a domain's error rather
//! than choose its status:
//!
//! - `service`: what failed beneath an operation (the database, the job
//!   queues, a read through the cache, the service itself);
//! - `queue`: the job queues' errors; `workload`, `promotions`, `keys`: the
//!   application's errors of each;
//! - `ratelimit`: a refusal by a rate limiter (429), a limiter that failed;
//! - `rejection`: a path or a JSON body axum could not read.
//!
//! A problem built while a request is being served carries that request's id
//! (`request_id`, the `x-request-id` header's value): the request layer runs
//! the rest of the stack with the request's
//! [`RequestFields`](seawall_app::logging::RequestFields) in scope.

mod keys;
mod promotions;
pub(crate) mod queue;
pub(crate) mod ratelimit;
pub(crate) mod rejection;
mod service;
mod workload;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The media type of a problem body.
pub const PROBLEM_JSON: &str = "application/problem+json";

fn current_request_id() -> Option<Box<str>> {
    seawall_app::logging::RequestFields::current_request_id()
}

/// An HTTP problem: status, a human-readable `detail`, for invalid input the
/// parameters at fault, and the id of the request it answers.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "about:blank",
    "title": "Bad Request",
    "status": 400,
    "detail": "query parameter `page` must be at least 1, got 0",
    "invalid_params": [{"name": "page", "reason": "must be at least 1, got 0"}],
    "request_id": "0b6c4bd6-3f4e-4d8e-9d71-2f0c8e1d5a47"
}))]
pub struct Problem {
    /// `about:blank`: the status says what kind of problem this is.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    kind: AboutBlank,
    /// The status's reason phrase.
    #[schema(value_type = String)]
    title: &'static str,
    /// The HTTP status code.
    #[serde(serialize_with = "serialize_status")]
    #[schema(value_type = u16, minimum = 400, maximum = 599)]
    status: StatusCode,
    /// What went wrong, for a person to read.
    detail: String,
    /// The inputs at fault, for 400 and 422.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    invalid_params: Vec<InvalidParam>,
    /// On a refused points use (409): the user's balance.
    #[serde(skip_serializing_if = "Option::is_none")]
    balance: Option<i64>,
    /// The `x-request-id` of the request, to find it in the logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    request_id: Option<Box<str>>,
    /// The `WWW-Authenticate` challenge that goes with it (a 401).
    #[serde(skip)]
    challenge: Challenge,
    #[serde(skip)]
    retry_after: Option<u32>,
    /// Whether it is the service's own refusal for want of capacity
    /// ([`Problem::shed`]).
    #[serde(skip)]
    shed: bool,
}

/// The problem type `about:blank`: the status alone says what happened
/// (RFC 9457 §4.2.1). Takes no room in a [`Problem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AboutBlank;

impl Serialize for AboutBlank {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("about:blank")
    }
}

/// The `WWW-Authenticate` challenge of a 401: for the admin token or for
/// an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Challenge {
    None,
    AdminToken,
    ApiKey,
}

/// One rejected input: where it was and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct InvalidParam {
    /// The parameter or JSON field.
    pub name: String,
    /// What is wrong with it.
    pub reason: String,
}

fn serialize_status<S: serde::Serializer>(status: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u16(status.as_u16())
}

impl Problem {
    /// A problem with `status` and `detail`; its type is `about:blank`, so its
    /// title is the status's reason phrase (RFC 9457 §4.2.1).
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: AboutBlank,
            title: status.canonical_reason().unwrap_or("Error"),
            status,
            detail: detail.into(),
            invalid_params: Vec::new(),
            balance: None,
            request_id: None,
            challenge: Challenge::None,
            retry_after: None,
            shed: false,
        }
    }

    /// 400: a query parameter is missing, malformed or out of range.
    pub fn bad_parameter(name: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("query parameter `{name}` {reason}"),
        )
        .with_param(name, reason)
    }

    /// 422: a query parameter is well-formed and in range, but its value is
    /// one the route cannot act on.
    pub fn unprocessable_parameter(name: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("query parameter `{name}` {reason}"),
        )
        .with_param(name, reason)
    }

    /// 422: the JSON body is well-formed but a field is invalid.
    pub fn invalid_field(name: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("field `{name}` {reason}"),
        )
        .with_param(name, reason)
    }

    /// 400: a request header is malformed.
    pub fn bad_header(name: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self::new(StatusCode::BAD_REQUEST, format!("header `{name}` {reason}"))
            .with_param(name, reason)
    }

    /// 404 with a detail.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    /// 401: no usable credentials; carries a `WWW-Authenticate` challenge.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        let mut problem = Self::new(StatusCode::UNAUTHORIZED, detail);
        problem.challenge = Challenge::AdminToken;
        problem
    }

    /// 401: an API key the service did not issue, or revoked; carries a
    /// challenge naming the header a key goes in.
    pub fn unauthorized_key(detail: impl Into<String>) -> Self {
        let mut problem = Self::new(StatusCode::UNAUTHORIZED, detail);
        problem.challenge = Challenge::ApiKey;
        problem
    }

    /// 500 that says nothing about the cause: the cause is logged instead.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the server failed to answer this request; the cause is in its log",
        )
    }

    /// 503: a dependency is unavailable.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, detail)
    }

    /// Sets `Retry-After` to `seconds`.
    #[must_use]
    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Marks it as the service's own refusal for want of capacity (no
    /// place among the requests in flight, no pooled connection in time, a
    /// load past its timeout): the adaptive limit backs off on it
    /// ([`seawall_ratelimit::outcome_of`]), as it does not on a dependency
    /// that is down.
    #[must_use]
    pub fn shed(mut self) -> Self {
        self.shed = true;
        self
    }

    /// Sets the `balance` member (a refused points use).
    #[must_use]
    pub fn with_balance(mut self, balance: i64) -> Self {
        self.balance = Some(balance);
        self
    }

    /// Adds an invalid parameter.
    #[must_use]
    pub fn with_param(mut self, name: impl Into<String>, reason: impl Into<String>) -> Self {
        self.invalid_params.push(InvalidParam {
            name: name.into(),
            reason: reason.into(),
        });
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The human-readable explanation.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.title,
            self.detail
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(mut self) -> Response {
        if self.request_id.is_none() {
            self.request_id = current_request_id();
        }
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| {
            br#"{"type":"about:blank","title":"Internal Server Error","status":500}"#.to_vec()
        });
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        let challenge = match self.challenge {
            Challenge::None => None,
            Challenge::AdminToken => Some("Bearer realm=\"seawall-admin\""),
            Challenge::ApiKey => Some("ApiKey realm=\"seawall\", header=\"X-Api-Key\""),
        };
        if let Some(challenge) = challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.shed {
            response.extensions_mut().insert(seawall_ratelimit::Shed);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_follows_rfc_9457() {
        let problem = Problem::bad_parameter("page", "must be at least 1, got 0");
        let json = serde_json::to_value(&problem).expect("serialises");
        assert_eq!(json["type"], "about:blank");
        assert_eq!(json["title"], "Bad Request");
        assert_eq!(json["status"], 400);
        assert_eq!(
            json["detail"],
            "query parameter `page` must be at least 1, got 0"
        );
        assert_eq!(json["invalid_params"][0]["name"], "page");
        let response = problem.into_response();
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }

    #[test]
    fn unauthorized_carries_a_challenge() {
        let response = Problem::unauthorized("no token").into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
