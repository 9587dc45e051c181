//! What axum's extractors could not read: a path segment, a JSON body.
//! `crate::extract` wraps them so that routes see these problems.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::http::StatusCode;

use super::Problem;

impl From<JsonRejection> for Problem {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the request body must be JSON, sent with `Content-Type: application/json`",
            ),
            JsonRejection::JsonSyntaxError(error) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("the body is not valid JSON: {}", source_text(&error)),
            ),
            JsonRejection::JsonDataError(error) => mismatched_fields(source_text(&error)),
            JsonRejection::BytesRejection(error)
                if error.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Self::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the request body is larger than the server accepts",
                )
            }
            other => Self::new(other.status(), other.body_text()),
        }
    }
}

/// 422: the body is JSON, but not an object.
pub(crate) fn not_an_object() -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "the body must be a JSON object",
    )
}

/// 422: the body is a JSON object, but not of the route's shape.
pub(crate) fn mismatched_fields(why: impl std::fmt::Display) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!("the body does not match the expected fields: {why}"),
    )
}

impl From<PathRejection> for Problem {
    fn from(rejection: PathRejection) -> Self {
        use axum::extract::path::ErrorKind;
        let PathRejection::FailedToDeserializePathParams(error) = rejection else {
            // The route has no parameters to give: a fault of the route table.
            return Self::internal();
        };
        let detail = match error.kind() {
            ErrorKind::InvalidUtf8InPathParam { key } => {
                return Self::new(
                    StatusCode::BAD_REQUEST,
                    format!("path segment `{key}` is not valid UTF-8"),
                )
                .with_param(key.as_str(), "is not valid UTF-8");
            }
            ErrorKind::ParseErrorAtKey { key, .. } | ErrorKind::DeserializeError { key, .. } => {
                return Self::new(
                    StatusCode::BAD_REQUEST,
                    format!("path segment `{key}` is malformed"),
                )
                .with_param(key.as_str(), "is malformed");
            }
            other => other.to_string(),
        };
        Self::new(StatusCode::BAD_REQUEST, format!("invalid path: {detail}"))
    }
}

/// The innermost error message: axum's own text repeats the rejection name.
fn source_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = error;
    while let Some(source) = inner.source() {
        inner = source;
    }
    inner.to_string()
}
