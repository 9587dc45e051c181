//! JSON input as the OpenAPI contract reads it.

use serde::Deserialize as _;

/// Deserializes a JSON integer, which JSON Schema (and so the OpenAPI
/// contract) says includes numbers like `7.0`; other fractions and values
/// outside `i64` are errors. Use as `#[serde(deserialize_with = "integer")]`.
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct Page {
///     #[serde(deserialize_with = "seawall_app::json::integer")]
///     page: i64,
/// }
/// let page: Page = serde_json::from_str(r#"{"page": 7.0}"#)?;
/// assert_eq!(page.page, 7);
/// assert!(serde_json::from_str::<Page>(r#"{"page": 7.5}"#).is_err());
/// # Ok::<(), serde_json::Error>(())
/// ```
pub fn integer<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    if let Some(value) = number.as_i64() {
        return Ok(value);
    }
    let float = number.as_f64().unwrap_or(f64::NAN);
    // i64::MIN is exactly representable; i64::MAX rounds up to 2^63.
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
    if float.fract() == 0.0 && float >= i64::MIN as f64 && float < i64::MAX as f64 {
        return Ok(float as i64);
    }
    Err(serde::de::Error::custom(format!(
        "invalid value: {number}, expected an integer between {} and {}",
        i64::MIN,
        i64::MAX
    )))
}

/// [`integer`] for an optional field: `null` or absent is `None`. Use with
/// `#[serde(default, deserialize_with = "optional_integer")]`.
pub fn optional_integer<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<i64>, D::Error> {
    #[derive(serde::Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "integer")] i64);
    Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(value)| value))
}
