//! Request limits the server sets from its configuration and answers with a
//! problem: a request target over `server.max_uri_bytes` (414), more header
//! fields than `server.max_headers` or more header bytes than
//! `server.max_header_bytes` (431), and two `Authorization` headers (400:
//! which credential counts would be a guess).
//!
//! hyper enforces looser hard limits of its own before any of this runs
//! (see `server.rs`); a request past those gets hyper's bare reply.

use axum::http::{StatusCode, header};

use crate::config::ServerConfig;
use crate::problem::Problem;

/// The configured limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    max_uri_bytes: usize,
    max_headers: usize,
    max_header_bytes: usize,
}

impl Limits {
    pub(crate) fn from_config(config: &ServerConfig) -> Self {
        Self {
            max_uri_bytes: config.max_uri_bytes,
            max_headers: config.max_headers,
            max_header_bytes: config.max_header_bytes,
        }
    }
}

/// The first configured limit `request` breaks, as the problem to answer.
pub(crate) fn violation<B>(limits: &Limits, request: &axum::http::Request<B>) -> Option<Problem> {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if target > limits.max_uri_bytes {
        return Some(Problem::new(
            StatusCode::URI_TOO_LONG,
            format!(
                "the request target is {target} bytes long; at most {} are accepted",
                limits.max_uri_bytes
            ),
        ));
    }
    let headers = request.headers();
    if headers.len() > limits.max_headers {
        return Some(Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "the request has {} header fields; at most {} are accepted",
                headers.len(),
                limits.max_headers
            ),
        ));
    }
    // Each field as it travels: name, ": ", value, CRLF.
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if bytes > limits.max_header_bytes {
        return Some(Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "the request's header fields take {bytes} bytes; at most {} are accepted",
                limits.max_header_bytes
            ),
        ));
    }
    if headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        return Some(Problem::new(
            StatusCode::BAD_REQUEST,
            "the request has more than one Authorization header; send exactly one",
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use axum::http::Request;

    use super::*;

    const LIMITS: Limits = Limits {
        max_uri_bytes: 32,
        max_headers: 3,
        max_header_bytes: 64,
    };

    fn status(request: &Request<()>) -> Option<u16> {
        violation(&LIMITS, request).map(|problem| problem.status().as_u16())
    }

    #[test]
    fn each_limit_is_answered_with_its_status() {
        let ok = Request::get("/api/content?page=2")
            .body(())
            .expect("request");
        assert_eq!(status(&ok), None);

        let long = Request::get(format!("/{}", "a".repeat(32)))
            .body(())
            .expect("request");
        assert_eq!(status(&long), Some(414));
        let exact = Request::get(format!("/{}", "a".repeat(31)))
            .body(())
            .expect("request");
        assert_eq!(status(&exact), None);

        let mut many = Request::get("/").body(()).expect("request");
        for name in ["a", "b", "c", "d"] {
            many.headers_mut().insert(
                header::HeaderName::from_static(name),
                "1".parse().expect("value"),
            );
        }
        assert_eq!(status(&many), Some(431));

        let big = Request::get("/")
            .header("x-big", "v".repeat(60))
            .body(())
            .expect("request");
        assert_eq!(status(&big), Some(431));

        let twice = Request::get("/")
            .header(header::AUTHORIZATION, "Bearer a")
            .header(header::AUTHORIZATION, "Bearer b")
            .body(())
            .expect("request");
        assert_eq!(status(&twice), Some(400));
    }
}
