//! Health scoring: rules over the recent window plus component checks,
//! rendered as `application/health+json` (draft-inadarei-api-health-check).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::window::{HttpWindow, QueryWindow};
use crate::{Error, Result};

/// The media type of a rendered [`HealthReport`].
pub const HEALTH_JSON: &str = "application/health+json";

/// Overall health, worst of every rule and check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Serving normally (`pass`).
    Healthy,
    /// Serving, but slower or with more errors than the rules allow (`warn`).
    Degraded,
    /// Failing (`fail`).
    Unhealthy,
}

impl HealthStatus {
    /// The draft's status word: `pass`, `warn` or `fail`.
    pub fn as_draft(self) -> &'static str {
        match self {
            Self::Healthy => "pass",
            Self::Degraded => "warn",
            Self::Unhealthy => "fail",
        }
    }

    /// The HTTP status to answer with: 200 for pass and warn, 503 for fail.
    pub fn http_status(self) -> u16 {
        if self == Self::Unhealthy { 503 } else { 200 }
    }
}

/// Thresholds that turn the recent window's figures into a status. A figure
/// above `*_degraded` makes the service degraded, above `*_unhealthy` unhealthy.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthRules {
    /// Share of requests answered with 5xx (default 0.05).
    pub error_rate_degraded: f64,
    /// (default 0.25)
    pub error_rate_unhealthy: f64,
    /// 99th-percentile request latency (default 5 s).
    pub p99_degraded: Duration,
    /// (default 15 s)
    pub p99_unhealthy: Duration,
    /// Share of requests and of queries slower than their slow threshold (default 0.10).
    pub slow_rate_degraded: f64,
    /// (default 0.50)
    pub slow_rate_unhealthy: f64,
    /// The error-rate, slow-rate and p99 rules apply only once the window holds
    /// this many samples, so one failed request out of two does not mark a quiet
    /// service unhealthy (default 20).
    pub min_samples: u64,
    /// Route templates whose requests the HTTP rules leave out (default
    /// none): an orchestrator's probes, say, which answer 503 on purpose
    /// while an instance is not ready and are not the traffic the rules
    /// judge. Their requests are still recorded and exposed.
    pub ignored_routes: Vec<String>,
}

impl Default for HealthRules {
    fn default() -> Self {
        Self {
            error_rate_degraded: 0.05,
            error_rate_unhealthy: 0.25,
            p99_degraded: Duration::from_secs(5),
            p99_unhealthy: Duration::from_secs(15),
            slow_rate_degraded: 0.10,
            slow_rate_unhealthy: 0.50,
            min_samples: 20,
            ignored_routes: Vec::new(),
        }
    }
}

impl HealthRules {
    pub(crate) fn validate(&self) -> Result<()> {
        let rate = |field: &'static str, degraded: f64, unhealthy: f64| {
            let valid = |x: f64| (0.0..=1.0).contains(&x);
            if !valid(degraded) || !valid(unhealthy) || degraded > unhealthy {
                return Err(Error::InvalidConfig {
                    field,
                    reason: format!(
                        "needs 0 <= degraded ({degraded}) <= unhealthy ({unhealthy}) <= 1"
                    ),
                });
            }
            Ok(())
        };
        rate(
            "health_rules.error_rate",
            self.error_rate_degraded,
            self.error_rate_unhealthy,
        )?;
        rate(
            "health_rules.slow_rate",
            self.slow_rate_degraded,
            self.slow_rate_unhealthy,
        )?;
        if self.p99_degraded > self.p99_unhealthy {
            return Err(Error::InvalidConfig {
                field: "health_rules.p99",
                reason: format!(
                    "degraded ({:?}) must not exceed unhealthy ({:?})",
                    self.p99_degraded, self.p99_unhealthy
                ),
            });
        }
        Ok(())
    }
}

/// One entry of a health report's `checks`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// `pass`, `warn` or `fail` in the rendered form.
    #[serde(serialize_with = "draft_status")]
    pub status: HealthStatus,
    /// The measured value, e.g. a response time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_value: Option<serde_json::Value>,
    /// The unit of `observed_value` (`ms`, `percent`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_unit: Option<String>,
    /// Why the status is not `pass`, or an error message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// What kind of component this is (`datastore`, `component`, `system`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component_type: Option<String>,
    /// When the reading was taken, RFC 3339 in UTC: set by a check whose
    /// answer is reused for a while, so a reader can tell how old it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

impl CheckResult {
    /// A passing check.
    pub fn pass() -> Self {
        Self::with_status(HealthStatus::Healthy)
    }

    /// A check with the given status and nothing else filled in.
    pub fn with_status(status: HealthStatus) -> Self {
        Self {
            status,
            observed_value: None,
            observed_unit: None,
            output: None,
            component_type: None,
            time: None,
        }
    }

    /// A failing check with a message.
    pub fn fail(output: impl Into<String>) -> Self {
        Self {
            output: Some(output.into()),
            ..Self::with_status(HealthStatus::Unhealthy)
        }
    }

    /// Adds a measured value and its unit.
    pub fn observed(
        mut self,
        value: impl Into<serde_json::Value>,
        unit: impl Into<String>,
    ) -> Self {
        self.observed_value = Some(value.into());
        self.observed_unit = Some(unit.into());
        self
    }

    /// Adds a message.
    pub fn output(mut self, output: impl Into<String>) -> Self {
        self.output = Some(output.into());
        self
    }

    /// Adds the component type.
    pub fn component_type(mut self, component_type: impl Into<String>) -> Self {
        self.component_type = Some(component_type.into());
        self
    }

    /// Adds when the reading was taken (the draft's `time`), to the
    /// millisecond.
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use seawall_perfmon::CheckResult;
    ///
    /// let result = CheckResult::pass().read_at(UNIX_EPOCH + Duration::from_millis(1_500));
    /// assert_eq!(result.time.as_deref(), Some("1970-01-01T00:00:01.500Z"));
    /// ```
    pub fn read_at(mut self, at: std::time::SystemTime) -> Self {
        self.time = Some(humantime::format_rfc3339_millis(at).to_string());
        self
    }
}

fn draft_status<S: serde::Serializer>(
    status: &HealthStatus,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    serializer.serialize_str(status.as_draft())
}

/// A component check, e.g. one that pings Redis and reports `redis:responseTime`.
///
/// Checks run one after another on every health read; bound their own time
/// (a timeout inside `check`) so a hung dependency cannot hang the report.
#[async_trait]
pub trait HealthCheck: Send + Sync {
    /// The `checks` key, `component:measurement` (e.g. `redis:responseTime`).
    fn key(&self) -> String;
    /// Runs the check.
    async fn check(&self) -> CheckResult;
}

/// The outcome of a health evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    /// The worst status of every check.
    #[serde(serialize_with = "draft_status")]
    pub status: HealthStatus,
    /// `healthy`, `degraded` or `unhealthy`.
    pub health: HealthStatus,
    /// Why the status is not `pass`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Every check, keyed `component:measurement`.
    pub checks: BTreeMap<String, Vec<CheckResult>>,
}

impl HealthReport {
    /// The HTTP status to answer with: 200 for pass and warn, 503 for fail.
    pub fn http_status(&self) -> u16 {
        self.status.http_status()
    }

    /// The report as `application/health+json`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|_| format!("{{\"status\":\"{}\"}}", self.status.as_draft()))
    }
}

fn grade(value: f64, degraded: f64, unhealthy: f64) -> HealthStatus {
    if value > unhealthy {
        HealthStatus::Unhealthy
    } else if value > degraded {
        HealthStatus::Degraded
    } else {
        HealthStatus::Healthy
    }
}

fn percent(rate: f64) -> serde_json::Value {
    serde_json::json!((rate * 10_000.0).round() / 100.0)
}

pub(crate) fn evaluate(
    rules: &HealthRules,
    http: &HttpWindow,
    queries: &QueryWindow,
    components: Vec<(String, CheckResult)>,
) -> HealthReport {
    let mut checks: BTreeMap<String, Vec<CheckResult>> = BTreeMap::new();
    let requests = http.stats.latency.count;
    let enough = requests >= rules.min_samples;

    let error = if enough {
        grade(
            http.error_rate,
            rules.error_rate_degraded,
            rules.error_rate_unhealthy,
        )
    } else {
        HealthStatus::Healthy
    };
    checks.insert(
        "http:errorRate".into(),
        vec![
            CheckResult::with_status(error)
                .observed(percent(http.error_rate), "percent")
                .component_type("component"),
        ],
    );

    #[allow(clippy::cast_precision_loss)] // microseconds to seconds for comparison
    let p99 = http.stats.latency.p99_us as f64 / 1e6;
    let latency = if enough {
        grade(
            p99,
            rules.p99_degraded.as_secs_f64(),
            rules.p99_unhealthy.as_secs_f64(),
        )
    } else {
        HealthStatus::Healthy
    };
    checks.insert(
        "http:latencyP99".into(),
        vec![
            CheckResult::with_status(latency)
                .observed((p99 * 1e6).round() / 1000.0, "ms")
                .component_type("component"),
        ],
    );

    let slow_http = if enough {
        grade(
            http.slow_rate,
            rules.slow_rate_degraded,
            rules.slow_rate_unhealthy,
        )
    } else {
        HealthStatus::Healthy
    };
    checks.insert(
        "http:slowRate".into(),
        vec![
            CheckResult::with_status(slow_http)
                .observed(percent(http.slow_rate), "percent")
                .component_type("component"),
        ],
    );

    if queries.stats.latency.count > 0 {
        let enough = queries.stats.latency.count >= rules.min_samples;
        let slow = if enough {
            grade(
                queries.slow_rate,
                rules.slow_rate_degraded,
                rules.slow_rate_unhealthy,
            )
        } else {
            HealthStatus::Healthy
        };
        checks.insert(
            "database:slowRate".into(),
            vec![
                CheckResult::with_status(slow)
                    .observed(percent(queries.slow_rate), "percent")
                    .component_type("datastore"),
            ],
        );
    }

    for (key, result) in components {
        checks.entry(key).or_default().push(result);
    }

    let status = checks
        .values()
        .flatten()
        .map(|c| c.status)
        .max()
        .unwrap_or(HealthStatus::Healthy);
    let failing: Vec<&str> = checks
        .iter()
        .filter(|(_, results)| results.iter().any(|r| r.status != HealthStatus::Healthy))
        .map(|(key, _)| key.as_str())
        .collect();
    let output = (!failing.is_empty()).then(|| format!("not passing: {}", failing.join(", ")));
    HealthReport {
        status,
        health: status,
        output,
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{LatencyStats, WindowStats};

    fn window(requests: u64, errors: u64, p99_us: u64, slow: u64) -> HttpWindow {
        let latency = LatencyStats {
            count: requests,
            p99_us,
            ..LatencyStats::default()
        };
        #[allow(clippy::cast_precision_loss)]
        let rate = |n: u64| {
            if requests == 0 {
                0.0
            } else {
                n as f64 / requests as f64
            }
        };
        HttpWindow {
            stats: WindowStats::new(Duration::from_secs(60), Duration::from_secs(60), latency),
            by_status_class: BTreeMap::new(),
            errors,
            error_rate: rate(errors),
            slow,
            slow_rate: rate(slow),
        }
    }

    fn no_queries() -> QueryWindow {
        QueryWindow {
            stats: WindowStats::new(
                Duration::from_secs(60),
                Duration::from_secs(60),
                LatencyStats::default(),
            ),
            errors: 0,
            slow: 0,
            slow_rate: 0.0,
        }
    }

    #[test]
    fn rules_grade_error_rate_latency_and_slow_rate() {
        let rules = HealthRules::default();
        let healthy = evaluate(&rules, &window(100, 1, 10_000, 0), &no_queries(), vec![]);
        assert_eq!(healthy.status, HealthStatus::Healthy);
        assert_eq!(healthy.http_status(), 200);
        assert!(healthy.output.is_none());

        let errors = evaluate(&rules, &window(100, 6, 10_000, 0), &no_queries(), vec![]);
        assert_eq!(errors.status, HealthStatus::Degraded);
        assert_eq!(errors.http_status(), 200);
        assert_eq!(
            evaluate(&rules, &window(100, 30, 10_000, 0), &no_queries(), vec![]).status,
            HealthStatus::Unhealthy
        );

        let slow_p99 = evaluate(&rules, &window(100, 0, 6_000_000, 0), &no_queries(), vec![]);
        assert_eq!(slow_p99.status, HealthStatus::Degraded);
        assert_eq!(
            slow_p99.output.as_deref(),
            Some("not passing: http:latencyP99")
        );

        assert_eq!(
            evaluate(&rules, &window(100, 0, 10_000, 60), &no_queries(), vec![]).status,
            HealthStatus::Unhealthy
        );
    }

    #[test]
    fn too_few_samples_do_not_trip_rate_rules() {
        let report = evaluate(
            &HealthRules::default(),
            &window(2, 2, 10_000_000, 2),
            &no_queries(),
            vec![],
        );
        assert_eq!(report.status, HealthStatus::Healthy);
    }

    #[test]
    fn a_failing_component_fails_the_report_and_renders_as_the_draft()
    -> std::result::Result<(), serde_json::Error> {
        let components = vec![
            (
                "redis:responseTime".to_owned(),
                CheckResult::fail("connection refused").component_type("datastore"),
            ),
            (
                "database:responseTime".to_owned(),
                CheckResult::pass().observed(3, "ms"),
            ),
        ];
        let report = evaluate(
            &HealthRules::default(),
            &window(100, 0, 1_000, 0),
            &no_queries(),
            components,
        );
        assert_eq!(report.status, HealthStatus::Unhealthy);
        assert_eq!(report.http_status(), 503);
        let json: serde_json::Value = serde_json::from_str(&report.to_json())?;
        assert_eq!(json["status"], "fail");
        assert_eq!(json["health"], "unhealthy");
        assert_eq!(json["checks"]["redis:responseTime"][0]["status"], "fail");
        assert_eq!(
            json["checks"]["redis:responseTime"][0]["output"],
            "connection refused"
        );
        assert_eq!(
            json["checks"]["database:responseTime"][0]["observedValue"],
            3
        );
        assert_eq!(
            json["checks"]["database:responseTime"][0]["observedUnit"],
            "ms"
        );
        assert_eq!(json["checks"]["http:errorRate"][0]["status"], "pass");
        Ok(())
    }

    #[test]
    fn inconsistent_rules_are_rejected() {
        let rules = HealthRules {
            error_rate_degraded: 0.5,
            error_rate_unhealthy: 0.1,
            ..HealthRules::default()
        };
        assert!(rules.validate().is_err());
        let rules = HealthRules {
            slow_rate_degraded: 1.5,
            ..HealthRules::default()
        };
        assert!(rules.validate().is_err());
        let rules = HealthRules {
            p99_degraded: Duration::from_secs(20),
            ..HealthRules::default()
        };
        assert!(rules.validate().is_err());
        assert!(HealthRules::default().validate().is_ok());
    }
}

/// A readiness check that passes until the process begins to shut down:
/// a service fails `/readyz` first, so a load balancer stops sending it
/// requests before its listener closes. Cheap to clone; every clone shares
/// one state.
///
/// ```
/// use seawall_perfmon::{HealthCheck, HealthStatus, ShutdownCheck};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let shutdown = ShutdownCheck::new();
/// assert_eq!(shutdown.check().await.status, HealthStatus::Healthy);
/// shutdown.clone().begin();
/// assert_eq!(shutdown.check().await.status, HealthStatus::Unhealthy);
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ShutdownCheck(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl ShutdownCheck {
    /// A check that passes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Shutdown has begun: the check fails from now on.
    pub fn begin(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[async_trait]
impl HealthCheck for ShutdownCheck {
    fn key(&self) -> String {
        String::from("process:shutdown")
    }

    async fn check(&self) -> CheckResult {
        if self.is_shutting_down() {
            CheckResult::fail("shutting down").component_type("system")
        } else {
            CheckResult::pass().component_type("system")
        }
    }
}
