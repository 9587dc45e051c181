//! Scenarios run inside this process: a burst of virtual users calling the
//! workload's operations directly (no HTTP), timed per operation and
//! followed by the audit. The dashboard's "run a scenario" starts one; the
//! load-scenario suite (`scripts/scenarios`) is the one that goes through
//! HTTP, the middleware and the fleet.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::audit::Audit;
use super::base::Promotions;
use super::coupons::NewCampaign;
use super::error::PromoError;
use super::points::PointsChange;
use super::sales::{NewSale, OrderRequest};
use crate::ServiceError;
use crate::json::optional_integer;
use crate::time::timestamp;

/// Virtual users a run has by default.
pub const DEFAULT_USERS: i64 = 50;
/// Rounds each virtual user makes by default.
pub const DEFAULT_ROUNDS: i64 = 10;
/// The most virtual users of one run.
pub const MAX_USERS: i64 = 1_000;
/// The most rounds of one virtual user: a run is at most 20,000 rounds,
/// a bound the request's schema states in full.
pub const MAX_ROUNDS: i64 = 20;
/// Runs kept for the listing, newest first.
const KEEP_RUNS: usize = 10;
/// Points a round of the points scenario earns, and then uses.
const EARN: i64 = 100;
const USE: i64 = 60;

/// Which of the brief's scenarios to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScenarioKind {
    /// Every round, a new user asks for a coupon of a new campaign that has
    /// coupons for half of them.
    Coupon,
    /// Every virtual user is one account; each round earns 100 points,
    /// reads the balance, uses 60 and reads it again.
    Points,
    /// Every round, a new user orders a unit of a new sale whose stock
    /// covers half of them.
    Sale,
    /// Every round, a new user takes a coupon, earns points and orders a
    /// unit (the campaign and the sale cover everyone).
    Journey,
}

impl ScenarioKind {
    fn label(self) -> &'static str {
        match self {
            Self::Coupon => "coupon",
            Self::Points => "points",
            Self::Sale => "sale",
            Self::Journey => "journey",
        }
    }
}

// A scenario to run. No doc comment: the OpenAPI contract shows this
// schema without a description, and a doc comment would become one.
#[allow(missing_docs)]
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"scenario": "journey", "users": 50, "rounds": 10}))]
pub struct ScenarioRequest {
    // Plain comment where the OpenAPI contract has no description.
    #[allow(missing_docs)]
    pub scenario: ScenarioKind,
    /// Virtual users running at once, 1 to 1,000 (default 50).
    #[serde(default, deserialize_with = "optional_integer")]
    #[schema(minimum = 1, maximum = 1000)]
    pub users: Option<i64>,
    /// Rounds each virtual user makes, 1 to 20 (default 10).
    #[serde(default, deserialize_with = "optional_integer")]
    #[schema(minimum = 1, maximum = 20)]
    pub rounds: Option<i64>,
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Its virtual users are at work.
    Running,
    /// Every round ran; the report says how it went.
    Finished,
    /// The run stopped before its report (the audit failed, say).
    Failed,
}

/// What a finished run measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct ScenarioReport {
    /// Operations called.
    pub operations: u64,
    /// Operations that did what they were asked.
    pub succeeded: u64,
    /// Operations refused by a rule of the workload (sold out, already
    /// issued, not enough points): the answers a scenario expects.
    pub refused: u64,
    /// Operations that failed otherwise (the store or the database).
    pub failed: u64,
    /// From the first operation to the last answer, in ms.
    pub elapsed_ms: f64,
    /// Operations per second.
    pub per_second: f64,
    /// Mean time per operation, in ms.
    pub mean_ms: f64,
    /// Median time per operation, in ms.
    pub p50_ms: f64,
    /// 95th percentile, in ms.
    pub p95_ms: f64,
    /// 99th percentile, in ms.
    pub p99_ms: f64,
    /// The slowest operation, in ms.
    pub max_ms: f64,
    /// The invariants of every campaign, ledger and sale, counted after the
    /// run.
    pub audit: Audit,
    /// Whether every invariant holds.
    pub holds: bool,
}

/// A run of a scenario in this process.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ScenarioRun {
    /// The run, counted from 1 since this process started.
    pub id: u64,
    // Plain comment where the OpenAPI contract has no description.
    #[allow(missing_docs)]
    pub scenario: ScenarioKind,
    /// Virtual users.
    pub users: i64,
    /// Rounds per virtual user.
    pub rounds: i64,
    // Plain comment where the OpenAPI contract has no description.
    #[allow(missing_docs)]
    pub state: RunState,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// The campaign it created, present when its scenario takes coupons.
    // Absent rather than null, so that a client following the id (a link to
    // the campaign's issue route) never meets a null.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub campaign_id: Option<i64>,
    /// The sale it created, present when its scenario orders.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub sale_id: Option<i64>,
    /// Once finished.
    pub report: Option<ScenarioReport>,
    /// Why it failed, once failed.
    pub error: Option<String>,
}

/// The runs this process keeps, newest first.
#[derive(Debug, Default)]
struct Runs {
    next: u64,
    runs: VecDeque<ScenarioRun>,
}

/// One virtual user's tally.
#[derive(Debug, Default)]
struct Tally {
    micros: Vec<u32>,
    succeeded: u64,
    refused: u64,
    failed: u64,
}

impl Tally {
    fn record<T>(&mut self, started: Instant, outcome: &Result<T, PromoError>) {
        let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        self.micros.push(micros);
        match outcome {
            Ok(_) => self.succeeded += 1,
            Err(error) if is_refusal(error) => self.refused += 1,
            Err(error) => {
                tracing::debug!(%error, "a scenario operation failed");
                self.failed += 1;
            }
        }
    }

    fn merge(&mut self, other: Self) {
        self.micros.extend(other.micros);
        self.succeeded += other.succeeded;
        self.refused += other.refused;
        self.failed += other.failed;
    }
}

/// A refusal by one of the workload's rules, which a scenario provokes on
/// purpose.
fn is_refusal(error: &PromoError) -> bool {
    matches!(
        error,
        PromoError::CouponsGone(_)
            | PromoError::AlreadyIssued { .. }
            | PromoError::SoldOut(_)
            | PromoError::OrderLimit { .. }
            | PromoError::InsufficientPoints { .. }
    )
}

/// What one run works on.
#[derive(Debug, Clone, Copy)]
struct Plan {
    run: u64,
    kind: ScenarioKind,
    users: i64,
    rounds: i64,
    /// Users are `first_user + vu * rounds + round`; an account of the
    /// points scenario is `first_user + vu`.
    first_user: i64,
    campaign_id: Option<i64>,
    sale_id: Option<i64>,
}

/// `users` and `rounds` of a request, checked.
fn sizes(request: &ScenarioRequest) -> Result<(i64, i64), PromoError> {
    let users = request.users.unwrap_or(DEFAULT_USERS);
    let rounds = request.rounds.unwrap_or(DEFAULT_ROUNDS);
    if !(1..=MAX_USERS).contains(&users) {
        return Err(PromoError::invalid(
            "users",
            format!("must be 1 to {MAX_USERS}"),
        ));
    }
    if !(1..=MAX_ROUNDS).contains(&rounds) {
        return Err(PromoError::invalid(
            "rounds",
            format!("must be 1 to {MAX_ROUNDS}"),
        ));
    }
    Ok((users, rounds))
}

/// The `q`th percentile of sorted microseconds, in ms.
fn percentile_ms(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    f64::from(sorted[rank - 1]) / 1000.0
}

/// The scenario runs of this process over its [`Promotions`]: one at a
/// time, the last ten kept. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Scenarios(Arc<Registry>);

#[derive(Debug)]
struct Registry {
    promotions: Promotions,
    runs: Mutex<Runs>,
}

impl Scenarios {
    /// No runs yet, over `promotions`.
    pub fn new(promotions: Promotions) -> Self {
        Self(Arc::new(Registry {
            promotions,
            runs: Mutex::new(Runs::default()),
        }))
    }

    /// Starts a run of a scenario in this process and answers at once with
    /// it, `running`; [`Scenarios::runs`] shows how it goes. Its campaign
    /// or sale is created before this answers. One run at a time:
    /// [`PromoError::ScenarioRunning`] while another is at work.
    pub async fn start(&self, request: ScenarioRequest) -> Result<ScenarioRun, PromoError> {
        let (users, rounds) = sizes(&request)?;
        let kind = request.scenario;
        let run = {
            let mut runs = self.0.runs.lock();
            if let Some(running) = runs.runs.iter().find(|run| run.state == RunState::Running) {
                return Err(PromoError::ScenarioRunning(running.id));
            }
            runs.next += 1;
            let run = ScenarioRun {
                id: runs.next,
                scenario: kind,
                users,
                rounds,
                state: RunState::Running,
                started_at: timestamp(crate::time::now_ms()),
                campaign_id: None,
                sale_id: None,
                report: None,
                error: None,
            };
            runs.runs.push_front(run.clone());
            runs.runs.truncate(KEEP_RUNS);
            run
        };
        let promotions = &self.0.promotions;
        let plan = match promotions.plan(run.id, kind, users, rounds).await {
            Ok(plan) => plan,
            Err(error) => {
                self.update(run.id, |run| {
                    run.state = RunState::Failed;
                    run.error = Some(error.to_string());
                });
                return Err(error);
            }
        };
        let mut run = run;
        run.campaign_id = plan.campaign_id;
        run.sale_id = plan.sale_id;
        self.update(run.id, |kept| {
            kept.campaign_id = plan.campaign_id;
            kept.sale_id = plan.sale_id;
        });
        let work = tokio::spawn(promotions.clone().run(plan));
        let scenarios = self.clone();
        // A second task records the end, so that even a panicking run
        // leaves `running` and frees the next one.
        tokio::spawn(async move {
            let outcome = work.await.unwrap_or_else(|error| {
                Err(ServiceError::Internal(format!("the run stopped: {error}")).into())
            });
            scenarios.update(plan.run, |run| match outcome {
                Ok(report) => {
                    run.state = RunState::Finished;
                    run.report = Some(report);
                }
                Err(error) => {
                    run.state = RunState::Failed;
                    run.error = Some(error.to_string());
                }
            });
        });
        Ok(run)
    }

    /// The runs of this process, newest first (at most 10).
    pub fn runs(&self) -> Vec<ScenarioRun> {
        self.0.runs.lock().runs.iter().cloned().collect()
    }

    /// Applies `change` to the run `id`, if it is still kept (a running
    /// run always is: no other starts while it runs).
    fn update(&self, id: u64, change: impl FnOnce(&mut ScenarioRun)) {
        if let Some(run) = self.0.runs.lock().runs.iter_mut().find(|run| run.id == id) {
            change(run);
        }
    }
}

impl Promotions {
    /// Creates what the run works on.
    async fn plan(
        &self,
        run: u64,
        kind: ScenarioKind,
        users: i64,
        rounds: i64,
    ) -> Result<Plan, PromoError> {
        let total = users * rounds;
        let name = format!("scenario {run}: {}", kind.label());
        let (coupons, stock) = match kind {
            ScenarioKind::Coupon => (Some((total + 1) / 2), None),
            ScenarioKind::Points => (None, None),
            ScenarioKind::Sale => (None, Some((total + 1) / 2)),
            ScenarioKind::Journey => (Some(total), Some(total)),
        };
        let campaign_id = match coupons {
            Some(quantity) => Some(
                self.create_campaign(NewCampaign {
                    name: name.clone(),
                    quantity,
                    per_user: None,
                    starts_at_ms: None,
                    duration_ms: None,
                })
                .await?
                .id,
            ),
            None => None,
        };
        let sale_id = match stock {
            Some(stock) => Some(
                self.create_sale(NewSale {
                    name,
                    stock,
                    per_user: None,
                    starts_at_ms: None,
                    duration_ms: None,
                })
                .await?
                .id,
            ),
            None => None,
        };
        // Users no earlier run of this process took, far above the demo's.
        let first_user = 1_000_000_000 + i64::try_from(run).unwrap_or(0) * MAX_USERS * MAX_ROUNDS;
        Ok(Plan {
            run,
            kind,
            users,
            rounds,
            first_user,
            campaign_id,
            sale_id,
        })
    }

    async fn run(self, plan: Plan) -> Result<ScenarioReport, PromoError> {
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for vu in 0..plan.users {
            let promotions = self.clone();
            tasks.spawn(async move { promotions.virtual_user(plan, vu).await });
        }
        let mut tally = Tally::default();
        while let Some(done) = tasks.join_next().await {
            let one = done.map_err(|error| {
                ServiceError::Internal(format!("a virtual user stopped: {error}"))
            })?;
            tally.merge(one);
        }
        let elapsed = started.elapsed().max(Duration::from_micros(1));
        let audit = self.audit().await?;
        let mut micros = tally.micros;
        micros.sort_unstable();
        let operations = micros.len() as u64;
        let total_ms: f64 = micros.iter().map(|&us| f64::from(us) / 1000.0).sum();
        #[allow(clippy::cast_precision_loss)]
        let report = ScenarioReport {
            operations,
            succeeded: tally.succeeded,
            refused: tally.refused,
            failed: tally.failed,
            elapsed_ms: elapsed.as_secs_f64() * 1000.0,
            per_second: operations as f64 / elapsed.as_secs_f64(),
            mean_ms: if operations == 0 {
                0.0
            } else {
                total_ms / operations as f64
            },
            p50_ms: percentile_ms(&micros, 0.50),
            p95_ms: percentile_ms(&micros, 0.95),
            p99_ms: percentile_ms(&micros, 0.99),
            max_ms: percentile_ms(&micros, 1.0),
            holds: audit.holds(),
            audit,
        };
        Ok(report)
    }

    /// One virtual user's rounds, one after another.
    async fn virtual_user(self, plan: Plan, vu: i64) -> Tally {
        let mut tally = Tally::default();
        for round in 0..plan.rounds {
            let user = plan.first_user + vu * plan.rounds + round;
            match plan.kind {
                ScenarioKind::Coupon => self.try_coupon(&plan, user, &mut tally).await,
                ScenarioKind::Sale => self.try_order(&plan, user, round, &mut tally).await,
                ScenarioKind::Points => {
                    let account = plan.first_user + vu;
                    let key = |what: &str| format!("scenario-{}-{vu}-{round}-{what}", plan.run);
                    let started = Instant::now();
                    let outcome = self
                        .earn_points(change(account, EARN), Some(&key("earn")))
                        .await;
                    tally.record(started, &outcome);
                    let started = Instant::now();
                    let outcome = self.balance(account).await;
                    tally.record(started, &outcome);
                    let started = Instant::now();
                    let outcome = self
                        .use_points(change(account, USE), Some(&key("use")))
                        .await;
                    tally.record(started, &outcome);
                    let started = Instant::now();
                    let outcome = self.balance(account).await;
                    tally.record(started, &outcome);
                }
                ScenarioKind::Journey => {
                    self.try_coupon(&plan, user, &mut tally).await;
                    let started = Instant::now();
                    let key = format!("scenario-{}-{user}-earn", plan.run);
                    let outcome = self.earn_points(change(user, EARN), Some(&key)).await;
                    tally.record(started, &outcome);
                    self.try_order(&plan, user, round, &mut tally).await;
                }
            }
        }
        tally
    }

    async fn try_coupon(&self, plan: &Plan, user: i64, tally: &mut Tally) {
        if let Some(campaign_id) = plan.campaign_id {
            let started = Instant::now();
            let outcome = self.issue_coupon(campaign_id, user).await;
            tally.record(started, &outcome);
        }
    }

    async fn try_order(&self, plan: &Plan, user: i64, round: i64, tally: &mut Tally) {
        if let Some(sale_id) = plan.sale_id {
            let key = format!("scenario-{}-{user}-{round}-order", plan.run);
            let started = Instant::now();
            let outcome = self
                .order(sale_id, OrderRequest { user_id: user }, Some(&key))
                .await;
            tally.record(started, &outcome);
        }
    }
}

fn change(user_id: i64, amount: i64) -> PointsChange {
    PointsChange {
        user_id,
        amount,
        reason: Some("scenario".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let sorted: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        assert!((percentile_ms(&sorted, 0.50) - 50.0).abs() < f64::EPSILON);
        assert!((percentile_ms(&sorted, 0.95) - 95.0).abs() < f64::EPSILON);
        assert!((percentile_ms(&sorted, 1.0) - 100.0).abs() < f64::EPSILON);
        assert!(percentile_ms(&[], 0.5).abs() < f64::EPSILON);
    }

    #[test]
    fn sizes_are_bounded() {
        let request = |users, rounds| ScenarioRequest {
            scenario: ScenarioKind::Coupon,
            users,
            rounds,
        };
        assert_eq!(sizes(&request(None, None)).ok(), Some((50, 10)));
        for (users, rounds, field) in [
            (Some(0), None, "users"),
            (Some(1001), None, "users"),
            (None, Some(0), "rounds"),
            (None, Some(21), "rounds"),
        ] {
            match sizes(&request(users, rounds)) {
                Err(PromoError::Invalid { field: got, .. }) => assert_eq!(got, field),
                other => panic!("{users:?} × {rounds:?}: {other:?}"),
            }
        }
        assert_eq!(sizes(&request(Some(1000), Some(20))).ok(), Some((1000, 20)));
    }
}
