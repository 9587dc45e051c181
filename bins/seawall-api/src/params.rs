//! Query-string validation: unknown or repeated parameters and out-of-range
//! values are 400 problems that name the parameter.

use std::ops::RangeInclusive;

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;

use crate::problem::Problem;

/// A handler's query string as decoded pairs, or why it could not be decoded.
pub(crate) type QueryPairs = Result<Query<Vec<(String, String)>>, QueryRejection>;

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

/// The decoded query string of one request, checked against the parameters
/// an endpoint accepts.
#[derive(Debug)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// The parameters of a request's query string; see [`Params::new`].
    pub(crate) fn from_query(query: QueryPairs, allowed: &[&str]) -> Result<Self, Problem> {
        let Query(pairs) = query?;
        Self::new(pairs, allowed)
    }

    /// Rejects parameters not in `allowed`, and any given twice.
    pub(crate) fn new(pairs: Vec<(String, String)>, allowed: &[&str]) -> Result<Self, Problem> {
        for (i, (name, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&name.as_str()) {
                let expected = allowed
                    .iter()
                    .map(|name| format!("`{name}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(Problem::bad_parameter(
                    name,
                    format!("is not accepted here; expected {expected}"),
                ));
            }
            if pairs[..i].iter().any(|(earlier, _)| earlier == name) {
                return Err(Problem::bad_parameter(name, "is given more than once"));
            }
        }
        Ok(Self(pairs))
    }

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

    /// A required text of 1 to `max_bytes` bytes.
    pub(crate) fn text(&self, name: &str, max_bytes: usize) -> Result<&str, Problem> {
        let raw = self
            .raw(name)
            .ok_or_else(|| Problem::bad_parameter(name, "is required"))?;
        if raw.is_empty() || raw.len() > max_bytes {
            return Err(Problem::bad_parameter(
                name,
                format!("must be 1 to {max_bytes} bytes, got {}", raw.len()),
            ));
        }
        Ok(raw)
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

    fn params(pairs: &[(&str, &str)], allowed: &[&str]) -> Result<Params, Problem> {
        Params::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            allowed,
        )
    }

    #[test]
    fn rejects_unknown_and_repeated_parameters() {
        let unknown = params(&[("userid", "1")], &["user_id"]).expect_err("rejected");
        assert!(unknown.detail().contains("`userid`"), "{unknown}");
        let repeated = params(&[("page", "1"), ("page", "2")], &["page"]).expect_err("rejected");
        assert!(repeated.detail().contains("more than once"), "{repeated}");
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
        let p = params(
            &[("page", "3"), ("size", "-1"), ("x", "1e3")],
            &["page", "size", "x"],
        )
        .expect("accepted");
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
        let huge = params(&[("page", "99999999999999999999999")], &["page"]).expect("accepted");
        assert!(huge.int("page", 1..=10, None).is_err());
    }

    #[test]
    fn choices_are_exact() {
        let p = params(&[("category", "Math")], &["category"]).expect("accepted");
        assert!(p.choice("category", &["math"]).is_err());
        let p = params(&[("category", "math")], &["category"]).expect("accepted");
        assert_eq!(
            p.choice("category", &["math"]).expect("accepted"),
            Some("math")
        );
    }
}
