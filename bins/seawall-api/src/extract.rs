//! The extractors routes use, whose rejections are RFC 9457 problems: a
//! path segment that is not UTF-8 or not of its type, a body that is not
//! JSON or not of its shape. axum's own extractors answer such requests
//! with `text/plain`; this module is the one place their rejections become
//! [`Problem`]s (`crate::problem` says which), and the crate's `clippy.toml`
//! disallows using them directly
//! (query strings go through [`crate::params::Params`], headers are read
//! from the `HeaderMap` and refused with problems where they are checked).
//!
//! A handler that must check something else first (an `Idempotency-Key`
//! before the body, the queue before its body) takes
//! `Result<Json<T>, Problem>` and applies `?` where the order says.
#![allow(clippy::disallowed_types)]

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::problem::{Problem, rejection};

/// A JSON object body: as an extractor, refused with a problem (415 without
/// a JSON content type, 413 over the body limit, 422 otherwise: an array or
/// a scalar, and an object that names a member twice at any depth, which
/// serde would read as its last value); as a response, `application/json`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Json<T>(pub(crate) T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        // Every body this API takes is an object, and serde would read a
        // struct from an array too (`[7]` as `{"user_id": 7}`).
        let axum::Json(Unique(value)) = axum::Json::<Unique>::from_request(request, state)
            .await
            .map_err(Problem::from)?;
        if !value.is_object() {
            return Err(rejection::not_an_object());
        }
        T::deserialize(value)
            .map(Self)
            .map_err(rejection::mismatched_fields)
    }
}

/// A JSON value whose objects name each member once: RFC 8259 leaves
/// duplicates to the reader, and `serde_json::Value` keeps the last, so
/// `{"state":"completed","state":"dead"}` would be read as `dead`.
struct Unique(serde_json::Value);

impl<'de> serde::Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Self::Value, E> {
        Ok(value.into())
    }

    fn visit_i64<E>(self, value: i64) -> Result<Self::Value, E> {
        Ok(value.into())
    }

    fn visit_u64<E>(self, value: u64) -> Result<Self::Value, E> {
        Ok(value.into())
    }

    fn visit_f64<E>(self, value: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(value).map_or(serde_json::Value::Null, Into::into))
    }

    fn visit_str<E>(self, value: &str) -> Result<Self::Value, E> {
        Ok(value.into())
    }

    fn visit_string<E>(self, value: String) -> Result<Self::Value, E> {
        Ok(value.into())
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, inner: D) -> Result<Self::Value, D::Error> {
        inner.deserialize_any(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Unique(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(serde_json::Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = serde_json::Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if members.contains_key(&name) {
                return Err(serde::de::Error::custom(format!(
                    "member `{name}` is given more than once"
                )));
            }
            let Unique(value) = map.next_value()?;
            members.insert(name, value);
        }
        Ok(serde_json::Value::Object(members))
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Path parameters: a segment that is not UTF-8 or does not parse is a 400
/// problem naming it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Path<T>(pub(crate) T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(Problem::from)
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::{get, post};
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    use super::*;

    async fn call(
        router: Router,
        request: axum::http::Request<Body>,
    ) -> (StatusCode, String, String) {
        let response = router.oneshot(request).await.expect("infallible");
        let status = response.status();
        let kind = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, kind, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_path_segment_that_is_not_utf8_is_a_problem() {
        let router = Router::new().route(
            "/q/{queue}",
            get(|Path(queue): Path<String>| async move { queue }),
        );
        for uri in ["/q/%ff", "/q/%c3%28"] {
            let request = axum::http::Request::get(uri)
                .body(Body::empty())
                .expect("request");
            let (status, kind, body) = call(router.clone(), request).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
            assert_eq!(kind, crate::problem::PROBLEM_JSON, "{uri}: {body}");
            assert!(body.contains("`queue` is not valid UTF-8"), "{uri}: {body}");
        }
    }

    #[tokio::test]
    async fn a_path_segment_of_the_wrong_type_is_a_problem() {
        #[derive(serde::Deserialize)]
        struct Job {
            id: u32,
        }
        let router = Router::new()
            .route(
                "/n/{id}",
                get(|Path(job): Path<Job>| async move { job.id.to_string() }),
            )
            .route(
                "/m/{id}",
                get(|Path(id): Path<u32>| async move { id.to_string() }),
            );
        for (uri, expected) in [("/n/x", "`id` is malformed"), ("/m/x", "Cannot parse `x`")] {
            let request = axum::http::Request::get(uri)
                .body(Body::empty())
                .expect("request");
            let (status, kind, body) = call(router.clone(), request).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(kind, crate::problem::PROBLEM_JSON, "{body}");
            assert!(body.contains(expected), "{body}");
        }
    }

    #[tokio::test]
    async fn json_refusals_are_problems() {
        let router =
            Router::new().route(
                "/j",
                post(
                    |Json(value): Json<std::collections::BTreeMap<String, u8>>| async move {
                        Json(value)
                    },
                ),
            );
        let cases = [
            (None, "{}", StatusCode::UNSUPPORTED_MEDIA_TYPE),
            (
                Some("application/json"),
                "{",
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                Some("application/json"),
                r#"{"a": -1}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
        ];
        for (kind, body, expected) in cases {
            let mut request = axum::http::Request::post("/j");
            if let Some(kind) = kind {
                request = request.header("content-type", kind);
            }
            let request = request.body(Body::from(body)).expect("request");
            let (status, answer_kind, answer) = call(router.clone(), request).await;
            assert_eq!(status, expected, "{body}: {answer}");
            assert_eq!(
                answer_kind,
                crate::problem::PROBLEM_JSON,
                "{body}: {answer}"
            );
        }
        for body in [r#"{"a": 1, "a": 2}"#, r#"{"a": 1, "b": {"c": 1, "c": 1}}"#] {
            let router = Router::new().route(
                "/v",
                post(|Json(value): Json<serde_json::Value>| async move { Json(value) }),
            );
            let request = axum::http::Request::post("/v")
                .header("content-type", "application/json")
                .body(Body::from(body))
                .expect("request");
            let (status, kind, answer) = call(router, request).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
            assert_eq!(kind, crate::problem::PROBLEM_JSON, "{body}: {answer}");
            assert!(answer.contains("is given more than once"), "{answer}");
        }
        let request = axum::http::Request::post("/j")
            .header("content-type", "application/json")
            .body(Body::from(r#"{"a": 1}"#))
            .expect("request");
        let (status, kind, body) = call(router, request).await;
        assert_eq!(
            (status, kind.as_str(), body.as_str()),
            (StatusCode::OK, "application/json", r#"{"a":1}"#)
        );
    }
}
