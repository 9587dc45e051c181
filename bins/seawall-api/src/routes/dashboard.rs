//! The dashboard: the static page at `/` and its assets under `/assets/`.
//!
//! Everything under `assets/` is embedded in the binary by `build.rs`, so the
//! service needs no files beside it and the page works offline. The page is
//! plain HTML, CSS and JavaScript modules: `app.js` is the shell (token form,
//! polling, panel loading) and every file in `assets/panels/` is one panel,
//! listed by the generated `/assets/panels.json`.
//!
//! Responses carry an ETag computed at build time and `Cache-Control:
//! no-cache`, so a browser revalidates each time and gets a `304` until the
//! binary changes. The HTML is served with a strict Content-Security-Policy:
//! no inline script or style, everything from this origin.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::Path;
use crate::problem::Problem;

/// One embedded file.
#[derive(Debug)]
pub(crate) struct Asset {
    /// Path under `/assets/`, e.g. `panels/performance.js`.
    pub(crate) path: &'static str,
    /// The `Content-Type` it is served with.
    pub(crate) content_type: &'static str,
    /// A strong ETag (quoted) derived from the content.
    pub(crate) etag: &'static str,
    /// The file's bytes.
    pub(crate) body: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The policy for HTML documents; assets themselves are not documents.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

const INDEX: &str = "index.html";

/// The dashboard's routes: `GET /`, `GET /assets/{file}` and
/// `GET /assets/panels/{file}` (assets are at most one folder deep).
///
/// It needs no state, so it merges into a router of any state type.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> OpenApiRouter<S> {
    OpenApiRouter::new()
        .routes(routes!(index))
        .routes(routes!(asset))
        .routes(routes!(panel))
}

/// Looks an asset up by its path under `/assets/`.
pub(crate) fn find(path: &str) -> Option<&'static Asset> {
    ASSETS
        .binary_search_by(|asset| asset.path.cmp(path))
        .ok()
        .map(|index| &ASSETS[index])
}

/// The dashboard page.
///
/// Plain HTML with a strict Content-Security-Policy; it asks for the admin
/// token and polls the admin API. Revalidated with its ETag each time.
#[utoipa::path(get, path = "/", tag = "dashboard",
    params(("if-none-match" = Option<String>, Header, description = "An ETag seen before")),
    responses(
        (status = 200, description = "The page", body = String, content_type = "text/html; charset=utf-8"),
        (status = 304, description = "Unchanged since the ETag given"),
    ),
)]
async fn index(headers: HeaderMap) -> Response {
    serve(INDEX, &headers)
}

/// A file of the dashboard: script, style sheet, icon, or `panels.json`.
#[utoipa::path(get, path = "/assets/{file}", tag = "dashboard",
    params(
        ("file" = String, Path, description = "The file's name under `assets/`", example = "app.js"),
        ("if-none-match" = Option<String>, Header, description = "An ETag seen before"),
    ),
    responses(
        (status = 200, description = "The file", content(
            (String = "text/javascript; charset=utf-8"),
            (String = "text/css; charset=utf-8"),
            (String = "application/json"),
            (String = "image/svg+xml"),
        )),
        (status = 304, description = "Unchanged since the ETag given"),
        (status = 404, description = "No such file", body = Problem,
            content_type = "application/problem+json"),
    ),
)]
async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    serve(&file, &headers)
}

/// One panel of the dashboard, a JavaScript module listed by `panels.json`.
#[utoipa::path(get, path = "/assets/panels/{file}", tag = "dashboard",
    params(
        ("file" = String, Path, description = "The panel's file name", example = "performance.js"),
        ("if-none-match" = Option<String>, Header, description = "An ETag seen before"),
    ),
    responses(
        (status = 200, description = "The panel module", body = String,
            content_type = "text/javascript; charset=utf-8"),
        (status = 304, description = "Unchanged since the ETag given"),
        (status = 404, description = "No such panel", body = Problem,
            content_type = "application/problem+json"),
    ),
)]
async fn panel(Path(file): Path<String>, headers: HeaderMap) -> Response {
    serve(&format!("panels/{file}"), &headers)
}

fn serve(path: &str, request: &HeaderMap) -> Response {
    let Some(asset) = find(path) else {
        return not_found(path);
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if asset.content_type.starts_with("text/html") {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    if is_fresh(request, asset.etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    (StatusCode::OK, headers, asset.body).into_response()
}

/// Whether `If-None-Match` names the current version (RFC 9110 §13.1.2:
/// weak comparison, a list of tags, or `*`).
fn is_fresh(request: &HeaderMap, etag: &str) -> bool {
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// An RFC 9457 problem for an unknown asset.
fn not_found(path: &str) -> Response {
    let nosniff = [(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    )];
    (
        nosniff,
        Problem::not_found(format!("no asset named {path:?}")),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

    async fn fetch(
        uri: &str,
        if_none_match: Option<&str>,
    ) -> TestResult<(StatusCode, HeaderMap, Vec<u8>)> {
        let mut request = Request::get(uri);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        let router: axum::Router = routes::<()>().into();
        let response = router.oneshot(request.body(Body::empty())?).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes().to_vec();
        Ok((status, headers, body))
    }

    fn header_of<'h>(headers: &'h HeaderMap, name: &header::HeaderName) -> TestResult<&'h str> {
        Ok(headers
            .get(name)
            .ok_or(format!("no {name} header"))?
            .to_str()?)
    }

    fn asset(path: &str) -> TestResult<&'static Asset> {
        Ok(find(path).ok_or(format!("{path} is not embedded"))?)
    }

    #[test]
    fn the_table_is_sorted_unique_and_typed() -> TestResult {
        assert!(ASSETS.windows(2).all(|pair| pair[0].path < pair[1].path));
        let types = [
            ("index.html", "text/html; charset=utf-8"),
            ("app.css", "text/css; charset=utf-8"),
            ("app.js", "text/javascript; charset=utf-8"),
            ("chart.js", "text/javascript; charset=utf-8"),
            ("panels/performance.js", "text/javascript; charset=utf-8"),
            ("panels.json", "application/json"),
            ("favicon.svg", "image/svg+xml"),
        ];
        for (path, content_type) in types {
            assert_eq!(asset(path)?.content_type, content_type, "{path}");
        }
        assert!(find("missing.js").is_none());
        assert!(find("").is_none());
        for asset in ASSETS {
            assert!(!asset.body.is_empty(), "{} is empty", asset.path);
            let quoted_hex = asset
                .etag
                .strip_prefix('"')
                .and_then(|tag| tag.strip_suffix('"'))
                .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
            assert!(quoted_hex, "{}: ETag {}", asset.path, asset.etag);
        }
        Ok(())
    }

    #[test]
    fn panels_json_lists_every_panel_module_sorted() -> TestResult {
        let listed: Vec<String> = serde_json::from_slice(asset("panels.json")?.body)?;
        let embedded: Vec<&str> = ASSETS
            .iter()
            .filter_map(|asset| asset.path.strip_prefix("panels/"))
            .filter(|name| name.ends_with(".js"))
            .collect();
        assert_eq!(listed, embedded);
        assert!(listed.iter().any(|name| name == "performance.js"));
        assert!(listed.is_sorted());
        Ok(())
    }

    /// The policy forbids inline code, so the page must not have any: a
    /// `<script>` without `src`, a `<style>` element, a `style` attribute or
    /// an `on…` handler attribute would be blocked and break the page.
    #[test]
    fn the_html_has_nothing_inline_that_the_policy_blocks() -> TestResult {
        let html = std::str::from_utf8(asset(INDEX)?.body)?.to_ascii_lowercase();
        for tag in html
            .split('<')
            .skip(1)
            .map(|rest| rest.split('>').next().unwrap_or(rest))
        {
            let name = tag.split_whitespace().next().unwrap_or_default();
            assert!(
                name != "script" || tag.contains(" src="),
                "inline script: <{tag}>"
            );
            assert!(name != "style", "inline <style> element");
            for attribute in tag.split_whitespace().skip(1) {
                let attribute = attribute.split('=').next().unwrap_or_default();
                assert!(attribute != "style", "inline style attribute: <{tag}>");
                assert!(
                    !attribute.starts_with("on"),
                    "inline event handler: <{tag}>"
                );
            }
        }
        Ok(())
    }

    #[tokio::test]
    async fn the_index_is_html_with_a_strict_policy() -> TestResult {
        let (status, headers, body) = fetch("/", None).await?;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            header_of(&headers, &header::CONTENT_TYPE)?,
            "text/html; charset=utf-8"
        );
        assert_eq!(
            header_of(&headers, &header::CONTENT_SECURITY_POLICY)?,
            CONTENT_SECURITY_POLICY
        );
        assert_eq!(header_of(&headers, &header::CACHE_CONTROL)?, "no-cache");
        assert_eq!(
            header_of(&headers, &header::X_CONTENT_TYPE_OPTIONS)?,
            "nosniff"
        );
        assert_eq!(header_of(&headers, &header::ETAG)?, asset(INDEX)?.etag);
        assert_eq!(body, asset(INDEX)?.body);
        Ok(())
    }

    #[tokio::test]
    async fn assets_are_served_with_their_type_and_without_the_page_policy() -> TestResult {
        let (status, headers, body) = fetch("/assets/panels/performance.js", None).await?;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            header_of(&headers, &header::CONTENT_TYPE)?,
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            header_of(&headers, &header::X_CONTENT_TYPE_OPTIONS)?,
            "nosniff"
        );
        assert_eq!(header_of(&headers, &header::CACHE_CONTROL)?, "no-cache");
        assert!(headers.get(header::CONTENT_SECURITY_POLICY).is_none());
        assert_eq!(body, asset("panels/performance.js")?.body);

        let (status, headers, body) = fetch("/assets/panels.json", None).await?;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            header_of(&headers, &header::CONTENT_TYPE)?,
            "application/json"
        );
        let panels: Vec<String> = serde_json::from_slice(&body)?;
        assert!(panels.contains(&"performance.js".to_owned()));
        Ok(())
    }

    #[tokio::test]
    async fn a_matching_etag_gets_not_modified() -> TestResult {
        let etag = asset("app.css")?.etag;
        let (status, headers, body) = fetch("/assets/app.css", Some(etag)).await?;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert_eq!(header_of(&headers, &header::ETAG)?, etag);
        assert!(body.is_empty());

        for matching in [format!("\"0000000000000000\", W/{etag}"), "*".to_owned()] {
            let (status, _, _) = fetch("/assets/app.css", Some(&matching)).await?;
            assert_eq!(
                status,
                StatusCode::NOT_MODIFIED,
                "If-None-Match: {matching}"
            );
        }

        let (status, _, body) = fetch("/assets/app.css", Some("\"0000000000000000\"")).await?;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, asset("app.css")?.body);
        Ok(())
    }

    #[tokio::test]
    async fn an_unknown_asset_is_a_problem() -> TestResult {
        let (status, headers, body) = fetch("/assets/nope.js.map", None).await?;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            header_of(&headers, &header::X_CONTENT_TYPE_OPTIONS)?,
            "nosniff"
        );
        assert_eq!(
            header_of(&headers, &header::CONTENT_TYPE)?,
            "application/problem+json"
        );
        let problem: serde_json::Value = serde_json::from_slice(&body)?;
        let expected = serde_json::json!({
            "type": "about:blank",
            "title": "Not Found",
            "status": 404,
            "detail": "no asset named \"nope.js.map\"",
        });
        assert_eq!(problem, expected);
        Ok(())
    }
}
