//! What the checker found: per workload, counts of each kind of anomaly
//! with a few examples, as JSON (serde) or as tables (`Display`).

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// One kind of finding: how many, and the first few, described.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Findings {
    /// How many were found.
    pub count: usize,
    /// The first few, in words.
    pub examples: Vec<String>,
}

impl Findings {
    /// Counts one more; keeps its description while fewer than `keep` are.
    pub(crate) fn add(&mut self, keep: usize, example: impl FnOnce() -> String) {
        self.count += 1;
        if self.examples.len() < keep {
            self.examples.push(example());
        }
    }
}

/// How a workload's operations ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Succeeded.
    pub ok: usize,
    /// Certainly did nothing.
    pub fail: usize,
    /// Unknown (including operations the history never completed).
    pub info: usize,
}

impl Tally {
    pub(crate) fn count(&mut self, outcome: crate::history::Outcome) {
        match outcome {
            crate::history::Outcome::Ok(_) => self.ok += 1,
            crate::history::Outcome::Fail(_) => self.fail += 1,
            crate::history::Outcome::Info(_) => self.info += 1,
        }
    }

    /// All operations.
    pub fn total(&self) -> usize {
        self.ok + self.fail + self.info
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} ok, {} fail, {} info)",
            self.total(),
            self.ok,
            self.fail,
            self.info
        )
    }
}

/// A fault, timed from the history's first event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultLine {
    /// Seconds after the first event.
    pub at_s: f64,
    /// What was done.
    pub op: String,
    /// To whom.
    pub value: serde_json::Value,
}

/// The queue: enqueues against outbox rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueueReport {
    /// How the enqueues ended.
    pub enqueues: Tally,
    /// Outbox rows.
    pub rows: usize,
    /// Anomaly: an `ok` enqueue whose job wrote no row.
    pub lost: Findings,
    /// Anomaly: a job with more rows than the faults on its runs' paths
    /// and its stalls explain (one repeat each), or a key that ran as two
    /// jobs.
    pub run_twice_unexplained: Findings,
    /// Anomaly: rows of a key whose every enqueue ended `fail`.
    pub never_acknowledged: Findings,
    /// Anomaly: one job acknowledged to two enqueues that are not retries
    /// of one idempotency key (their keys differ, or one has none): one of
    /// them was answered with another's job.
    pub shared_job: Findings,
    /// Tolerated: a job with more than one row, each repeat explained by a
    /// fault on the path of the run it lost (its worker, its queue's
    /// masters) within the lease and the margin of it, and by a stall the
    /// queue counted or an acknowledgement a master fault lost.
    pub run_twice_explained: Findings,
    /// Tolerated: rows of a key only `info` enqueues used.
    pub unacknowledged_ran: Findings,
    /// Not judged: rows of a job and key no recorded enqueue names.
    pub unrecorded: Findings,
}

/// Time sales: orders against order rows and the store's stock.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SaleReport {
    /// How the orders ended.
    pub orders: Tally,
    /// Order rows.
    pub rows: usize,
    /// Anomaly: more rows than stock, a unit held twice or out of range,
    /// remaining stock below zero, or rows and remaining stock together
    /// above the stock.
    pub oversold: Findings,
    /// Anomaly: an `ok` order without its row (a row of its id that holds
    /// another user counts as none).
    pub acknowledged_missing: Findings,
    /// Anomaly: a row for a (sale, user) whose orders all ended `fail`.
    pub failed_but_written: Findings,
    /// Anomaly: a user with more rows than the sale's per-user limit.
    pub over_per_user: Findings,
    /// Anomaly: an order written twice: a row beyond those its user's
    /// orders account for (one per `ok` order, one per `info` one), of a
    /// user with an acknowledged order, or an order id held by two rows.
    pub written_twice: Findings,
    /// Tolerated: a row that an `info` order may have written.
    pub unacknowledged_written: Findings,
    /// Not judged: a row of a user no recorded order names.
    pub unrecorded: Findings,
}

/// Coupons: issues against coupon rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CouponReport {
    /// How the issues ended.
    pub issues: Tally,
    /// Coupon rows.
    pub rows: usize,
    /// Anomaly: more rows than the quantity, or a number held twice or out
    /// of range.
    pub over_issued: Findings,
    /// Anomaly: a user holding more coupons than the per-user limit.
    pub duplicates: Findings,
    /// Anomaly: an `ok` issue without its row (a row of its code that
    /// holds another user counts as none).
    pub acknowledged_missing: Findings,
    /// Anomaly: a row for a (campaign, user) whose issues all ended `fail`.
    pub failed_but_issued: Findings,
    /// Anomaly: a coupon written twice: a row beyond those its user's
    /// issues account for (one per `ok` issue, one per `info` one), of a
    /// user with an acknowledged issue, or a code held by two rows.
    pub written_twice: Findings,
    /// Tolerated: a row that an `info` issue may have written.
    pub unacknowledged_issued: Findings,
    /// Not judged: a row of a user no recorded issue names.
    pub unrecorded: Findings,
}

/// Points: changes against accounts and ledgers.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PointsReport {
    /// How the changes ended.
    pub changes: Tally,
    /// Ledger rows.
    pub rows: usize,
    /// Anomaly: an account whose ledger does not sum to its balance.
    pub sum_mismatch: Findings,
    /// Anomaly: an idempotency key in a user's ledger more than once.
    pub applied_twice: Findings,
    /// Anomaly: two ledger rows of one account with the same version: two
    /// changes each wrote over the version they read, so one was lost.
    pub lost_update: Findings,
    /// Anomaly: an `ok` change whose key is not in the user's ledger.
    pub acknowledged_missing: Findings,
    /// Anomaly: a ledger row whose key's changes all ended `fail`.
    pub failed_but_applied: Findings,
    /// Tolerated: a ledger row whose key only `info` changes used.
    pub unacknowledged_applied: Findings,
    /// Not judged: a change without an idempotency key.
    pub unkeyed: Findings,
    /// Not judged: a ledger row no recorded change names.
    pub unrecorded: Findings,
}

/// One rate-limiter key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LimiterKey {
    /// The key.
    pub key: String,
    /// Its limit per window.
    pub limit: u64,
    /// Its window, in milliseconds.
    pub window_ms: u64,
    /// Checks made.
    pub checks: usize,
    /// Checks that answered admitted.
    pub admitted: usize,
    /// The most admitted checks that all started and ended within one
    /// window's length.
    pub most_in_window: usize,
    /// `most_in_window / limit`.
    pub ratio: f64,
}

/// Rate limiting across the fleet.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RateLimitReport {
    /// How the checks ended.
    pub checks: Tally,
    /// Every key, worst ratio first.
    pub keys: Vec<LimiterKey>,
    /// The worst `most_in_window / limit` over the keys (0 with none).
    pub worst_ratio: f64,
    /// Anomaly: a key whose ratio is above the allowed multiple.
    pub over_limit: Findings,
}

/// The cache as a register per key.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CacheReport {
    /// How the writes ended.
    pub writes: Tally,
    /// How the reads ended.
    pub reads: Tally,
    /// Anomaly: a read older than a write acknowledged more than the
    /// propagation window before it started.
    pub stale: Findings,
    /// The longest stale read's age (from the superseding write's `ok` to
    /// the read's invoke), in milliseconds (0 without stale reads).
    pub longest_stale_ms: f64,
    /// Anomaly: a read of a version never written, written by a write
    /// that failed, or written only after the read had returned.
    pub impossible: Findings,
    /// Anomaly: a key whose final version is older than its newest `ok`
    /// write.
    pub lost_writes: Findings,
}

/// Schedulers of recurring jobs: the ticks due while each certainly ran,
/// against the jobs their ticks made.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ScheduleReport {
    /// How the resumes and pauses ended.
    pub changes: Tally,
    /// Ticks judged: due while their scheduler certainly ran.
    pub ticks: usize,
    /// Jobs the state lists.
    pub jobs: usize,
    /// Anomaly: a tick that made more than one job.
    pub duplicated: Findings,
    /// Anomaly: a tick due while its scheduler certainly ran that made no
    /// job, and no outage of its queue's masters explains.
    pub missing: Findings,
    /// Anomaly: a job for a tick that is not on its scheduler's schedule.
    pub off_schedule: Findings,
    /// Anomaly: a job for a tick due while its scheduler was certainly
    /// paused.
    pub while_paused: Findings,
    /// Tolerated: ticks with no job that an outage of the queue's masters
    /// explains (counted per tick, described per outage).
    pub missed_in_outage: Findings,
    /// Not judged: jobs of a scheduler no recorded resume names.
    pub unrecorded: Findings,
}

/// Everything the checker found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// Events read.
    pub events: usize,
    /// Operations among them.
    pub ops: usize,
    /// The faults, in order.
    pub faults: Vec<FaultLine>,
    /// The queue, when the history or the state has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueReport>,
    /// Time sales.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sale: Option<SaleReport>,
    /// Coupons.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coupon: Option<CouponReport>,
    /// Points.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points: Option<PointsReport>,
    /// Rate limiting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratelimit: Option<RateLimitReport>,
    /// The cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheReport>,
    /// Schedulers of recurring jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleReport>,
}

/// One row of a section's table: its name, whether it is an anomaly, and
/// what was found.
struct Kind<'a> {
    name: &'static str,
    anomaly: bool,
    findings: &'a Findings,
}

const fn anomaly<'a>(name: &'static str, findings: &'a Findings) -> Kind<'a> {
    Kind {
        name,
        anomaly: true,
        findings,
    }
}

const fn tolerated<'a>(name: &'static str, findings: &'a Findings) -> Kind<'a> {
    Kind {
        name,
        anomaly: false,
        findings,
    }
}

impl QueueReport {
    fn kinds(&self) -> Vec<Kind<'_>> {
        vec![
            anomaly("lost", &self.lost),
            anomaly("run_twice_unexplained", &self.run_twice_unexplained),
            anomaly("never_acknowledged", &self.never_acknowledged),
            anomaly("shared_job", &self.shared_job),
            tolerated("run_twice_explained", &self.run_twice_explained),
            tolerated("unacknowledged_ran", &self.unacknowledged_ran),
            tolerated("unrecorded", &self.unrecorded),
        ]
    }
}

impl SaleReport {
    fn kinds(&self) -> Vec<Kind<'_>> {
        vec![
            anomaly("oversold", &self.oversold),
            anomaly("acknowledged_missing", &self.acknowledged_missing),
            anomaly("failed_but_written", &self.failed_but_written),
            anomaly("over_per_user", &self.over_per_user),
            anomaly("written_twice", &self.written_twice),
            tolerated("unacknowledged_written", &self.unacknowledged_written),
            tolerated("unrecorded", &self.unrecorded),
        ]
    }
}

impl CouponReport {
    fn kinds(&self) -> Vec<Kind<'_>> {
        vec![
            anomaly("over_issued", &self.over_issued),
            anomaly("duplicates", &self.duplicates),
            anomaly("acknowledged_missing", &self.acknowledged_missing),
            anomaly("failed_but_issued", &self.failed_but_issued),
            anomaly("written_twice", &self.written_twice),
            tolerated("unacknowledged_issued", &self.unacknowledged_issued),
            tolerated("unrecorded", &self.unrecorded),
        ]
    }
}

impl PointsReport {
    fn kinds(&self) -> Vec<Kind<'_>> {
        vec![
            anomaly("sum_mismatch", &self.sum_mismatch),
            anomaly("applied_twice", &self.applied_twice),
            anomaly("lost_update", &self.lost_update),
            anomaly("acknowledged_missing", &self.acknowledged_missing),
            anomaly("failed_but_applied", &self.failed_but_applied),
            tolerated("unacknowledged_applied", &self.unacknowledged_applied),
            tolerated("unkeyed", &self.unkeyed),
            tolerated("unrecorded", &self.unrecorded),
        ]
    }
}

impl RateLimitReport {
    fn kinds(&self) -> Vec<Kind<'_>> {
        vec![anomaly("over_limit", &self.over_limit)]
    }
}

impl CacheReport {
    fn kinds(&self) -> Vec<Kind<'_>> {
        vec![
            anomaly("stale", &self.stale),
            anomaly("impossible", &self.impossible),
            anomaly("lost_writes", &self.lost_writes),
        ]
    }
}

impl ScheduleReport {
    fn kinds(&self) -> Vec<Kind<'_>> {
        vec![
            anomaly("duplicated", &self.duplicated),
            anomaly("missing", &self.missing),
            anomaly("off_schedule", &self.off_schedule),
            anomaly("while_paused", &self.while_paused),
            tolerated("missed_in_outage", &self.missed_in_outage),
            tolerated("unrecorded", &self.unrecorded),
        ]
    }
}

impl Report {
    /// Every section present, with its rows.
    fn sections(&self) -> Vec<(&'static str, Vec<Kind<'_>>)> {
        let mut sections = Vec::new();
        if let Some(queue) = &self.queue {
            sections.push(("queue", queue.kinds()));
        }
        if let Some(sale) = &self.sale {
            sections.push(("sale", sale.kinds()));
        }
        if let Some(coupon) = &self.coupon {
            sections.push(("coupon", coupon.kinds()));
        }
        if let Some(points) = &self.points {
            sections.push(("points", points.kinds()));
        }
        if let Some(ratelimit) = &self.ratelimit {
            sections.push(("ratelimit", ratelimit.kinds()));
        }
        if let Some(cache) = &self.cache {
            sections.push(("cache", cache.kinds()));
        }
        if let Some(schedule) = &self.schedule {
            sections.push(("schedule", schedule.kinds()));
        }
        sections
    }

    /// Anomalies found, over every workload (tolerated findings excluded).
    pub fn anomalies(&self) -> usize {
        self.sections()
            .iter()
            .flat_map(|(_, kinds)| kinds.iter())
            .filter(|kind| kind.anomaly)
            .map(|kind| kind.findings.count)
            .sum()
    }

    /// The count of every kind of finding, anomaly or not, named
    /// `workload.kind` (`queue.lost`, `cache.stale`, …), so a drill can
    /// assert on one.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        self.sections()
            .iter()
            .flat_map(|(section, kinds)| {
                kinds
                    .iter()
                    .map(move |kind| (format!("{section}.{}", kind.name), kind.findings.count))
            })
            .collect()
    }

    /// Every name [`Report::counts`] can give, over every workload.
    pub fn all_kinds() -> Vec<String> {
        let every = Self {
            queue: Some(QueueReport::default()),
            sale: Some(SaleReport::default()),
            coupon: Some(CouponReport::default()),
            points: Some(PointsReport::default()),
            ratelimit: Some(RateLimitReport::default()),
            cache: Some(CacheReport::default()),
            schedule: Some(ScheduleReport::default()),
            ..Self::default()
        };
        every.counts().into_keys().collect()
    }

    /// The names [`Report::counts`] gives anomalies (not tolerated kinds).
    pub fn anomaly_kinds(&self) -> Vec<String> {
        self.sections()
            .iter()
            .flat_map(|(section, kinds)| {
                kinds
                    .iter()
                    .filter(|kind| kind.anomaly)
                    .map(move |kind| format!("{section}.{}", kind.name))
            })
            .collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} events, {} operations, {} faults, {} anomalies",
            self.events,
            self.ops,
            self.faults.len(),
            self.anomalies()
        )?;
        if !self.faults.is_empty() {
            writeln!(f, "\nfaults")?;
            for fault in &self.faults {
                writeln!(
                    f,
                    "  {:>10.3}s  {:<10} {}",
                    fault.at_s, fault.op, fault.value
                )?;
            }
        }
        for (section, kinds) in self.sections() {
            writeln!(f, "\n{section}: {}", self.summary(section))?;
            writeln!(f, "  {:<26} {:>8}", "kind", "count")?;
            for kind in kinds {
                let mark = if kind.anomaly && kind.findings.count > 0 {
                    "ANOMALY"
                } else if kind.anomaly {
                    ""
                } else {
                    "(tolerated)"
                };
                let row = format!("  {:<26} {:>8}  {mark}", kind.name, kind.findings.count);
                writeln!(f, "{}", row.trim_end())?;
                for example in &kind.findings.examples {
                    writeln!(f, "      {example}")?;
                }
            }
        }
        Ok(())
    }
}

impl Report {
    fn summary(&self, section: &str) -> String {
        match section {
            "queue" => self.queue.as_ref().map(|queue| {
                format!("{} enqueues, {} outbox rows", queue.enqueues, queue.rows)
            }),
            "sale" => self
                .sale
                .as_ref()
                .map(|sale| format!("{} orders, {} order rows", sale.orders, sale.rows)),
            "coupon" => self.coupon.as_ref().map(|coupon| {
                format!("{} issues, {} coupon rows", coupon.issues, coupon.rows)
            }),
            "points" => self.points.as_ref().map(|points| {
                format!("{} changes, {} ledger rows", points.changes, points.rows)
            }),
            "ratelimit" => self.ratelimit.as_ref().map(|limit| {
                let mut text = format!(
                    "{} checks, {} keys, worst admitted/limit in a window {:.2}",
                    limit.checks,
                    limit.keys.len(),
                    limit.worst_ratio
                );
                for key in limit.keys.iter().take(5) {
                    text.push_str(&format!(
                        "\n  key {}: {} of {} admitted, at most {} in {} ms (limit {}, ratio {:.2})",
                        key.key,
                        key.admitted,
                        key.checks,
                        key.most_in_window,
                        key.window_ms,
                        key.limit,
                        key.ratio
                    ));
                }
                text
            }),
            "cache" => self.cache.as_ref().map(|cache| {
                format!(
                    "{} writes, {} reads, longest stale read {:.3} ms",
                    cache.writes, cache.reads, cache.longest_stale_ms
                )
            }),
            "schedule" => self.schedule.as_ref().map(|schedule| {
                format!(
                    "{} resumes and pauses, {} ticks judged, {} jobs",
                    schedule.changes, schedule.ticks, schedule.jobs
                )
            }),
            _ => None,
        }
        .unwrap_or_default()
    }
}
