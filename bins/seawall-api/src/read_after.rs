//! Read-your-writes across requests and instances: the `Seawall-Read-After`
//! header. Each workload request runs as one
//! [`Caller`](seawall_app::db::caller::Caller), starting from the WAL
//! position the client sent back in the header, or, when it sends none,
//! from the one its identity (as the workload's gate found it: an API key,
//! a trusted proxy's user, the client address) last wrote at, kept in
//! Redis; its writes raise the position, its reads that may go to a
//! replica go only to one that has replayed that far, and the response
//! carries the position back. A client that sends the last value it
//! received reads its own writes on any instance, with no fixed delay, and
//! so does one that sends nothing while Redis answers. Without database
//! replicas there is no position: the header is accepted, checked for its
//! form, and never sent.

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use seawall_app::db::caller::{Caller, Positions};
use seawall_app::db::replicas::Lsn;

use crate::problem::Problem;

/// The header, as requests send it and responses carry it.
pub(crate) const HEADER: &str = "seawall-read-after";

/// Who a request is, as the workload's gate found it: the identity under
/// which the position of a caller that carries none is kept.
#[derive(Debug, Clone)]
pub(crate) struct Identity(pub(crate) String);

/// Runs the request as the caller its header names, else as its identity's
/// (with `positions`, when there are replicas and Redis); 400 when the
/// header is not a WAL position (or given twice).
pub(crate) async fn scope(
    State(positions): State<Option<Positions>>,
    request: Request,
    next: Next,
) -> Response {
    let mut values = request.headers().get_all(HEADER).iter();
    let carried = match (values.next(), values.next()) {
        (None, _) => None,
        (Some(value), None) => match value.to_str().ok().and_then(position) {
            Some(position) => Some(position),
            None => {
                return Problem::bad_header(
                    "Seawall-Read-After",
                    "must be a WAL position: as a response gave it (two hexadecimal numbers of \
                     at most 8 digits, as in 16/B374D848), or as one of at most 16 (16B374D848)",
                )
                .into_response();
            }
        },
        (Some(_), Some(_)) => {
            return Problem::bad_header("Seawall-Read-After", "must be given once").into_response();
        }
    };
    let identity = request.extensions().get::<Identity>();
    let caller = match (carried, positions, identity) {
        (None, Some(positions), Some(Identity(identity))) => {
            Caller::remembered(positions, identity.clone())
        }
        _ => Caller::new(carried),
    };
    let mut response = caller.clone().scope(next.run(request)).await;
    if let Some(position) = caller.position()
        && let Ok(value) = HeaderValue::from_str(&position.to_string())
    {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

/// Runs a request that carries a `Seawall-Read-After` as the caller it
/// names (400 when it is not a position), and one that carries none as no
/// caller at all: for the admin enqueues, whose jobs then read as of when
/// they run rather than as a caller that has written nothing.
pub(crate) async fn carried(request: Request, next: Next) -> Response {
    if request.headers().contains_key(HEADER) {
        scope(State(None), request, next).await
    } else {
        next.run(request).await
    }
}

/// A WAL position as PostgreSQL prints it (`16/B374D848`), or as one
/// hexadecimal number of at most 16 digits (`16B374D848`).
fn position(text: &str) -> Option<Lsn> {
    if let Ok(position) = text.parse::<Lsn>() {
        return Some(position);
    }
    let plain = (1..=16).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit());
    plain
        .then(|| u64::from_str_radix(text, 16).ok())
        .flatten()
        .map(Lsn)
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use seawall_app::db::caller::Caller;
    use seawall_app::db::replicas::Lsn;
    use tower::ServiceExt as _;

    use super::{HEADER, scope};

    /// A route that says where its caller stands, after a write that
    /// reached `0/2000` when asked to.
    fn router() -> Router {
        Router::new()
            .route(
                "/",
                get(|request: axum::extract::Request| async move {
                    let caller = Caller::current().expect("in a caller's scope");
                    if request.uri().query() == Some("write") {
                        caller.raise(Lsn(0x2000));
                    }
                    caller.position().map(|p| p.to_string()).unwrap_or_default()
                }),
            )
            .layer(axum::middleware::from_fn_with_state(None, scope))
    }

    async fn call(uri: &str, headers: &[&str]) -> (StatusCode, Option<String>, String) {
        let mut request = Request::get(uri);
        for value in headers {
            request = request.header(HEADER, *value);
        }
        let response = router()
            .oneshot(request.body(Body::empty()).expect("a request"))
            .await
            .expect("answers");
        let status = response.status();
        let header = response
            .headers()
            .get(HEADER)
            .map(|value| value.to_str().expect("ASCII").to_owned());
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("a body");
        (
            status,
            header,
            String::from_utf8(body.to_vec()).expect("UTF-8"),
        )
    }

    #[tokio::test]
    async fn the_position_comes_in_and_goes_out_raised_by_writes() {
        // Nothing carried, nothing written: no header.
        assert_eq!(call("/", &[]).await, (StatusCode::OK, None, String::new()));
        // Carried: the request reads after it, and it comes back.
        let (status, header, seen) = call("/", &["1/A"]).await;
        assert_eq!(
            (status, header.as_deref(), seen.as_str()),
            (StatusCode::OK, Some("1/A"), "1/A")
        );
        // A write past it raises it; one below it does not lower it.
        let (_, header, _) = call("/?write", &["0/10"]).await;
        assert_eq!(header.as_deref(), Some("0/2000"));
        let (_, header, _) = call("/?write", &["5/0"]).await;
        assert_eq!(header.as_deref(), Some("5/0"));
    }

    #[tokio::test]
    async fn a_header_that_is_no_position_is_refused() {
        // One number is a position too.
        let (status, header, seen) = call("/", &["16B374D848"]).await;
        assert_eq!(
            (status, header.as_deref(), seen.as_str()),
            (StatusCode::OK, Some("16/B374D848"), "16/B374D848")
        );
        for bad in [
            "",
            "16/",
            "/1",
            "x/1",
            "1/123456789",
            "1/2/3",
            " 1/2",
            "g",
            "12345678901234567",
            "-1",
        ] {
            let (status, header, body) = call("/", &[bad]).await;
            assert_eq!((status, header), (StatusCode::BAD_REQUEST, None), "{bad:?}");
            assert!(body.contains("Seawall-Read-After"), "{bad:?}: {body}");
        }
        let (status, _, body) = call("/", &["1/2", "1/3"]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("once"), "{body}");
    }
}
