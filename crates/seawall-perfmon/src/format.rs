//! [`ExpositionFormat`]: which text format a scrape is answered in, chosen
//! from an `Accept` header, with its content type and its writer.

use crate::exposed::Exposed;
use crate::openmetrics::{self, OPENMETRICS_CONTENT_TYPE};
use crate::prometheus::{self, PROMETHEUS_CONTENT_TYPE};

/// Which text format a scrape is answered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExpositionFormat {
    /// The Prometheus text format, version 0.0.4
    /// ([`PROMETHEUS_CONTENT_TYPE`]).
    Prometheus,
    /// OpenMetrics 1.0 text ([`OPENMETRICS_CONTENT_TYPE`]).
    OpenMetrics,
}

impl ExpositionFormat {
    /// The format to answer a request with this `Accept` header (`None` when
    /// the request has none; join several headers with `,`).
    ///
    /// OpenMetrics when the header lists `application/openmetrics-text`
    /// (without a `version`, or `version=1.0.0`) with a non-zero `q` at least
    /// that of any range covering `text/plain` (`text/plain`, `text/*`,
    /// `*/*`); the Prometheus text format otherwise, which is also what an
    /// absent or unreadable header gets. Prometheus servers list OpenMetrics
    /// first, so they get OpenMetrics.
    ///
    /// ```
    /// use seawall_perfmon::ExpositionFormat;
    ///
    /// let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,\
    ///                   text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
    /// assert_eq!(ExpositionFormat::from_accept(Some(prometheus)), ExpositionFormat::OpenMetrics);
    /// assert_eq!(ExpositionFormat::from_accept(Some("*/*")), ExpositionFormat::Prometheus);
    /// assert_eq!(ExpositionFormat::from_accept(None), ExpositionFormat::Prometheus);
    /// assert_eq!(
    ///     ExpositionFormat::from_accept(Some("application/openmetrics-text;q=0")),
    ///     ExpositionFormat::Prometheus
    /// );
    /// ```
    pub fn from_accept(accept: Option<&str>) -> Self {
        let mut openmetrics = 0.0_f64;
        let mut text = 0.0_f64;
        for range in accept.unwrap_or("").split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let mut q = 1.0;
            let mut version = None;
            let mut valid = true;
            for param in parts {
                let (key, value) = param.split_once('=').unwrap_or((param, ""));
                let value = value.trim().trim_matches('"');
                match key.trim().to_ascii_lowercase().as_str() {
                    "q" => match value.parse::<f64>() {
                        Ok(parsed) if (0.0..=1.0).contains(&parsed) => q = parsed,
                        _ => valid = false,
                    },
                    "version" => version = Some(value.to_owned()),
                    _ => {}
                }
            }
            if !valid {
                continue;
            }
            match media.as_str() {
                "application/openmetrics-text"
                    if version.as_deref().is_none_or(|v| v == "1.0.0") =>
                {
                    openmetrics = openmetrics.max(q);
                }
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Self::OpenMetrics
        } else {
            Self::Prometheus
        }
    }

    /// The `Content-Type` of an exposition in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => PROMETHEUS_CONTENT_TYPE,
            Self::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }

    /// `families` written in this format.
    pub(crate) fn write(self, families: &[Exposed]) -> String {
        match self {
            Self::Prometheus => prometheus::write(families),
            Self::OpenMetrics => openmetrics::write(families),
        }
    }
}
