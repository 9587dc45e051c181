//! Query strings: which parameters a route accepts, checked for every
//! route in one place before any handler runs, and the typed reading of
//! their values. Unknown or repeated parameters and malformed or
//! out-of-range values are 400 problems that name the parameter.
//!
//! The accepted names are the query parameters of the route's operation in
//! the OpenAPI document: a route declares its parameters once, in its
//! `#[utoipa::path]`, and that declaration is both the contract and the
//! rule. A route cannot forget the check, and cannot read a parameter the
//! contract does not list.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Ready;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use axum::http::{Method, Request};
use axum::response::{IntoResponse as _, Response};
use futures_util::future::Either;
use tower::{Layer, Service};
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::{OpenApi, RefOr};

use crate::problem::Problem;

/// An integer, written plainly or as a number with no fraction (`7.0`),
/// which JSON Schema, and so the OpenAPI contract, counts as an integer.
fn integral(text: &str) -> Option<i64> {
    if let Ok(value) = text.parse::<i64>() {
        return Some(value);
    }
    let (whole, fraction) = text.split_once('.')?;
    if fraction.is_empty() || !fraction.bytes().all(|b| b == b'0') {
        return None;
    }
    whole.parse().ok()
}

fn pairs(
    query: &str,
) -> impl Iterator<Item = (std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)> {
    form_urlencoded::parse(query.as_bytes())
}

/// The query parameters each route accepts, by route template and method,
/// read from the OpenAPI document.
#[derive(Debug, Clone, Default)]
pub(crate) struct QueryRules(Arc<HashMap<String, Vec<Operation>>>);

/// A method of a route and the query parameters it accepts.
type Operation = (Method, Box<[String]>);

impl QueryRules {
    /// The rules of every operation in `document`.
    pub(crate) fn from_document(document: &OpenApi) -> Self {
        let mut routes: HashMap<String, Vec<Operation>> = HashMap::new();
        for (path, item) in &document.paths.paths {
            let shared = item.parameters.iter().flatten();
            let operations = [
                (Method::GET, &item.get),
                (Method::PUT, &item.put),
                (Method::POST, &item.post),
                (Method::DELETE, &item.delete),
                (Method::PATCH, &item.patch),
                (Method::OPTIONS, &item.options),
                (Method::HEAD, &item.head),
                (Method::TRACE, &item.trace),
            ];
            for (method, operation) in operations {
                let Some(operation) = operation else { continue };
                let names = shared
                    .clone()
                    .chain(operation.parameters.iter().flatten())
                    .filter_map(|parameter| match parameter {
                        RefOr::T(parameter) if parameter.parameter_in == ParameterIn::Query => {
                            Some(parameter.name.clone())
                        }
                        _ => None,
                    })
                    .collect();
                routes
                    .entry(path.clone())
                    .or_default()
                    .push((method, names));
            }
        }
        Self(Arc::new(routes))
    }

    /// Refuses a query parameter `route` does not accept for `method`, and
    /// one given twice. A method the route does not serve is let through,
    /// to be answered 405; a route missing from the document accepts none.
    pub(crate) fn check(&self, method: &Method, route: &str, query: &str) -> Result<(), Problem> {
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        let allowed: &[String] = match self.0.get(route) {
            Some(operations) => match operations.iter().find(|(m, _)| m == method) {
                Some((_, names)) => names,
                None => return Ok(()),
            },
            None => &[],
        };
        for (at, (name, _)) in pairs(query).enumerate() {
            if !allowed.iter().any(|allowed| *allowed == name) {
                let reason = if allowed.is_empty() {
                    "is not accepted here; this route takes no query parameters".to_owned()
                } else {
                    let expected = allowed
                        .iter()
                        .map(|name| format!("`{name}`"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    format!("is not accepted here; expected {expected}")
                };
                return Err(Problem::bad_parameter(&name, reason));
            }
            // Parsed again rather than collected, with no allocation: every
            // name so far is allowed and none repeated, so `at` is below the
            // route's few parameters.
            if pairs(query).take(at).any(|(earlier, _)| earlier == name) {
                return Err(Problem::bad_parameter(&name, "is given more than once"));
            }
        }
        Ok(())
    }
}

impl QueryRules {
    /// The problem for `request`'s query string, if its route refuses it.
    fn refusal<B>(&self, request: &Request<B>) -> Option<Problem> {
        let query = request.uri().query()?;
        let route = request.extensions().get::<MatchedPath>()?;
        self.check(request.method(), route.as_str(), query).err()
    }
}

/// The layer that applies [`QueryRules`] to every request of the routes it
/// wraps: one lookup when a request has a query string, nothing otherwise.
#[derive(Debug, Clone)]
pub(crate) struct QueryRulesLayer(pub(crate) QueryRules);

impl<S> Layer<S> for QueryRulesLayer {
    type Service = QueryRulesService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        QueryRulesService {
            rules: self.0.clone(),
            inner,
        }
    }
}

/// The service made by [`QueryRulesLayer`].
#[derive(Debug, Clone)]
pub(crate) struct QueryRulesService<S> {
    rules: QueryRules,
    inner: S,
}

impl<S, B> Service<Request<B>> for QueryRulesService<S>
where
    S: Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match self.rules.refusal(&request) {
            Some(problem) => Either::Left(std::future::ready(Ok(problem.into_response()))),
            None => Either::Right(self.inner.call(request)),
        }
    }
}

/// The decoded query string of one request. Its names were checked against
/// the route's before the handler runs (see [`QueryRules`]); the handler
/// reads and checks the values.
#[derive(Debug)]
pub(crate) struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let query = parts.uri.query().unwrap_or_default();
        Ok(Self(
            pairs(query)
                .map(|(name, value)| (name.into_owned(), value.into_owned()))
                .collect(),
        ))
    }
}

impl Params {
    fn raw(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// An integer within `range`; `default` when absent, an error when absent
    /// without a default.
    pub(crate) fn int(
        &self,
        name: &str,
        range: RangeInclusive<i64>,
        default: Option<i64>,
    ) -> Result<i64, Problem> {
        let Some(raw) = self.raw(name) else {
            return default.ok_or_else(|| Problem::bad_parameter(name, "is required"));
        };
        let value = integral(raw.trim()).ok_or_else(|| {
            Problem::bad_parameter(name, format!("must be an integer, got {raw:?}"))
        })?;
        if !range.contains(&value) {
            return Err(Problem::bad_parameter(
                name,
                format!(
                    "must be between {} and {}, got {value}",
                    range.start(),
                    range.end()
                ),
            ));
        }
        Ok(value)
    }

    /// A value as given, or `None` when absent.
    pub(crate) fn optional(&self, name: &str) -> Option<&str> {
        self.raw(name)
    }

    /// A required value, as given.
    pub(crate) fn required(&self, name: &str) -> Result<&str, Problem> {
        self.raw(name)
            .ok_or_else(|| Problem::bad_parameter(name, "is required"))
    }

    /// One of `choices`, or `None` when absent.
    pub(crate) fn choice<'c>(
        &self,
        name: &str,
        choices: &[&'c str],
    ) -> Result<Option<&'c str>, Problem> {
        let Some(raw) = self.raw(name) else {
            return Ok(None);
        };
        choices
            .iter()
            .find(|choice| **choice == raw)
            .map(|choice| Some(*choice))
            .ok_or_else(|| {
                Problem::bad_parameter(
                    name,
                    format!("must be one of {}, got {raw:?}", choices.join(", ")),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &str) -> Params {
        Params(
            pairs(query)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    #[test]
    fn every_route_accepts_the_query_parameters_of_its_contract_and_no_other() {
        let rules = QueryRules::from_document(&crate::openapi());
        let check = |method: Method, route: &str, query: &str| rules.check(&method, route, query);
        assert!(
            check(
                Method::GET,
                "/api/content",
                "page=2&page_size=20&category=math"
            )
            .is_ok()
        );
        assert!(check(Method::HEAD, "/api/content", "page=2").is_ok());
        assert!(check(Method::GET, "/api/content", "").is_ok());
        let unknown = check(Method::GET, "/api/content", "page=1&userid=1").expect_err("refused");
        assert!(unknown.detail().contains("`userid`"), "{unknown}");
        assert!(unknown.detail().contains("`page_size`"), "{unknown}");
        let repeated = check(Method::GET, "/api/content", "page=1&page=2").expect_err("refused");
        assert!(repeated.detail().contains("more than once"), "{repeated}");
        let none = check(Method::GET, "/api/cache", "typo=1").expect_err("refused");
        assert!(
            none.detail().contains("takes no query parameters"),
            "{none}"
        );
        // A name given without a value is still given.
        assert!(check(Method::GET, "/livez", "verbose").is_err());
        // Parameters of one method are not those of another.
        assert!(check(Method::POST, "/api/cache", "action=warmup&users=5").is_ok());
        assert!(check(Method::GET, "/api/cache", "action=warmup").is_err());
        assert!(check(Method::DELETE, "/api/rate-limit/block", "limiter=api&key=k").is_ok());
        assert!(check(Method::POST, "/api/rate-limit/block", "limiter=api").is_err());
        // A method the route does not serve is left to its 405.
        assert!(check(Method::PUT, "/api/cache", "typo=1").is_ok());
        // A route outside the contract accepts none.
        assert!(check(Method::GET, "/not/in/the/document", "a=1").is_err());
    }

    #[test]
    fn values_are_decoded() {
        let p = params("key=a%0Ab+c&empty=");
        assert_eq!(p.required("key").expect("given"), "a\nb c");
        assert_eq!(p.required("empty").expect("given"), "");
        assert!(p.required("absent").is_err());
    }

    #[test]
    fn integers_with_a_zero_fraction_count_as_integers() {
        for (text, expected) in [("7", Some(7)), ("7.0", Some(7)), ("-3.00", Some(-3))] {
            assert_eq!(integral(text), expected, "{text}");
        }
        for text in ["7.5", "7.", ".0", "1e3", "7.0x", ""] {
            assert_eq!(integral(text), None, "{text}");
        }
    }

    #[test]
    fn integers_are_parsed_and_bounded() {
        let p = params("page=3&size=-1&x=1e3");
        assert_eq!(p.int("page", 1..=10, None).expect("accepted"), 3);
        assert_eq!(p.int("absent", 1..=10, Some(7)).expect("accepted"), 7);
        assert!(
            p.int("absent", 1..=10, None)
                .expect_err("rejected")
                .detail()
                .contains("required")
        );
        assert!(
            p.int("size", 1..=10, None)
                .expect_err("rejected")
                .detail()
                .contains("between 1 and 10")
        );
        assert!(
            p.int("x", 1..=10, None)
                .expect_err("rejected")
                .detail()
                .contains("integer")
        );
        let huge = params("page=99999999999999999999999");
        assert!(huge.int("page", 1..=10, None).is_err());
    }

    #[test]
    fn choices_are_exact() {
        let p = params("category=Math");
        assert!(p.choice("category", &["math"]).is_err());
        let p = params("category=math");
        assert_eq!(
            p.choice("category", &["math"]).expect("accepted"),
            Some("math")
        );
    }
}
