//! Partition drills: the fleet on network hosts, the network between them
//! cut on purpose while clients record every operation (seawall-history's
//! JSON lines), then a checker reads that history with the state the
//! database ended in and counts what an acknowledged operation was worth.
//!
//! The test command runs drills 1 and 4 in a short form (a 4 s cut);
//! `scripts/drills --partitions` runs every drill (2, 3 and 5 are
//! `#[ignore]`d in the test command for their length) in the full form
//! (`SEAWALL_DRILL_FULL=1`: a 10 s cut, a link flapping 20 times), with and
//! without `queue.wait_replicas`, and prints each report. Every
//! run leaves its histories, the final state and the report under
//! `target/tmp/drills/<drill>/`, where `seawall-check` reads them again.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use seawall_history::{FinalState, History, Options, Recorder, Report, Workload};
use seawall_testkit::wait;

use crate::hosts::wait_for_rotation;
use crate::readiness::{Agreement, Promotion, Watcher};
use crate::support::{self, Running, now_micros};

/// How long the drills hold their faults: 4 s in the test command, 10 s in
/// the full form.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Form {
    /// Load before the fault.
    pub(crate) before: Duration,
    /// How long the fault holds.
    pub(crate) hold: Duration,
    /// Load after the heal.
    pub(crate) after: Duration,
}

impl Form {
    pub(crate) fn chosen() -> Self {
        if std::env::var("SEAWALL_DRILL_FULL").is_ok_and(|v| v == "1") {
            Self {
                before: Duration::from_secs(3),
                hold: Duration::from_secs(10),
                after: Duration::from_secs(6),
            }
        } else {
            Self {
                before: Duration::from_secs(2),
                hold: Duration::from_secs(4),
                after: Duration::from_secs(4),
            }
        }
    }
}

/// The `wait_replicas` settings a drill runs with: `SEAWALL_DRILL_WAIT`
/// (`0`, `1` or `0,1`), by default the one the test names.
fn wait_settings(default: &[u32]) -> Vec<u32> {
    std::env::var("SEAWALL_DRILL_WAIT")
        .ok()
        .map(|text| {
            text.split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        })
        .filter(|settings: &Vec<u32>| !settings.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

/// Where a drill's files go, emptied first.
pub(crate) fn drill_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("drills")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the drill's directory");
    dir
}

/// A client that answers within the drills' patience: an operation cut
/// off by a partition ends as `info` after 2 s rather than hanging.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .expect("a client")
}

/// What a request came back with.
pub(crate) enum Answer {
    Status(u16, Value),
    Lost(String),
}

pub(crate) async fn send(request: reqwest::RequestBuilder) -> Answer {
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let body = response.json().await.unwrap_or(Value::Null);
            Answer::Status(status, body)
        }
        Err(error) => Answer::Lost(error.to_string()),
    }
}

/// A 5xx or a lost answer: the operation may or may not have happened.
pub(crate) fn unknown(answer: &Answer) -> Value {
    match answer {
        Answer::Status(status, body) => json!({"status": status, "detail": body["detail"]}),
        Answer::Lost(error) => json!({"error": error}),
    }
}

/// The shared parts of every client loop.
#[derive(Clone)]
pub(crate) struct Clients {
    pub(crate) recorder: Recorder,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) token: String,
}

impl Clients {
    pub(crate) fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    /// Enqueues notifications through `base`, each with a key of its own,
    /// once: 202 is ok, a 503 that says "not queued" or a 4xx is fail,
    /// anything else info.
    async fn enqueue(self, process: String, base: String) {
        let client = client();
        let mut n = 0u64;
        while self.running() {
            n += 1;
            let key = format!("drill-{process}-{n}");
            let op = self
                .recorder
                .invoke(
                    &process,
                    Workload::Queue,
                    "enqueue",
                    json!({"queue": "notification", "key": key}),
                )
                .expect("records");
            let answer = send(
                client
                    .post(format!("{base}/api/queue/notification"))
                    .bearer_auth(&self.token)
                    .header("idempotency-key", &key)
                    .json(&json!({"user_id": 1 + n % 50, "channel": "push", "message": key})),
            )
            .await;
            match &answer {
                Answer::Status(202, body) => op.ok(json!({"job": format!(
                    "notification:{}",
                    body["id"].as_str().expect("an id")
                )})),
                Answer::Status(503, body)
                    if body["detail"]
                        .as_str()
                        .is_some_and(|detail| detail.contains("was not queued")) =>
                {
                    op.fail(unknown(&answer))
                }
                Answer::Status(status, _) if (400..500).contains(status) => {
                    op.fail(unknown(&answer))
                }
                _ => op.info(unknown(&answer)),
            }
            .expect("records");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Orders units of `sale`, one per new user: 201 is ok, a 4xx fail
    /// (sold out), anything else info.
    async fn order(self, process: String, base: String, sale: i64, first_user: i64) {
        let url = format!("{base}/api/sales/{sale}/orders");
        self.claim(
            process,
            Workload::Sale,
            "order",
            url,
            first_user,
            |process, user| {
                let key = format!("order-{process}-{user}");
                (json!({"sale": sale, "user": user, "key": key}), Some(key))
            },
            |body| json!({"order": body["order_id"], "unit": body["unit"]}),
        )
        .await;
    }

    /// Issues coupons of `campaign`, one per new user, as orders go.
    async fn issue(self, process: String, base: String, campaign: i64, first_user: i64) {
        let url = format!("{base}/api/coupons/{campaign}/issue");
        self.claim(
            process,
            Workload::Coupon,
            "issue",
            url,
            first_user,
            |_, user| (json!({"campaign": campaign, "user": user}), None),
            |body| json!({"coupon": body["code"], "number": body["number"]}),
        )
        .await;
    }

    /// Posts `{"user_id": …}` to `url` for one new user after another:
    /// `invoke` gives what the invoke records and the `Idempotency-Key` to
    /// send, if any; 201 is ok with `answered` of the body, a 4xx fail,
    /// anything else info.
    #[allow(clippy::too_many_arguments)] // the loop's whole description
    async fn claim(
        self,
        process: String,
        workload: Workload,
        op: &str,
        url: String,
        first_user: i64,
        invoke: impl Fn(&str, i64) -> (Value, Option<String>),
        answered: impl Fn(&Value) -> Value,
    ) {
        let client = client();
        let mut user = first_user;
        while self.running() {
            user += 1;
            let (value, key) = invoke(&process, user);
            let recorded = self
                .recorder
                .invoke(&process, workload, op, value)
                .expect("records");
            let mut request = client.post(&url).json(&json!({"user_id": user}));
            if let Some(key) = key {
                request = request.header("idempotency-key", key);
            }
            let answer = send(request).await;
            match &answer {
                Answer::Status(201, body) => recorded.ok(answered(body)),
                Answer::Status(status, _) if (400..500).contains(status) => {
                    recorded.fail(unknown(&answer))
                }
                _ => recorded.info(unknown(&answer)),
            }
            .expect("records");
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }

    /// Earns one point at a time for `user` through `base`, each change
    /// with its own key, retried with that key until it is answered 201:
    /// every attempt is a points change, and the whole is one cache write
    /// of the balance it leads to (the balance is read through the cache).
    pub(crate) async fn earn(self, process: String, base: String, user: i64, mut balance: i64) {
        let client = client();
        let mut n = 0u64;
        'writes: while self.running() {
            n += 1;
            let key = format!("earn-{process}-{n}");
            let write = self
                .recorder
                .invoke(
                    &process,
                    Workload::Cache,
                    "write",
                    json!({"key": user.to_string(), "value": balance + 1}),
                )
                .expect("records");
            loop {
                let change = self
                    .recorder
                    .invoke(
                        &process,
                        Workload::Points,
                        "change",
                        json!({"user": user, "key": key, "amount": 1}),
                    )
                    .expect("records");
                let answer = send(
                    client
                        .post(format!("{base}/api/points/earn"))
                        .header("idempotency-key", &key)
                        .json(&json!({"user_id": user, "amount": 1, "reason": "drill"})),
                )
                .await;
                match &answer {
                    Answer::Status(201, body) => {
                        let after = body["balance"].as_i64().expect("a balance");
                        change.ok(json!({"balance": after})).expect("records");
                        write.ok(json!({"balance": after})).expect("records");
                        balance = after;
                        break;
                    }
                    Answer::Status(status, _) if (400..500).contains(status) => {
                        change.fail(unknown(&answer)).expect("records");
                        write.fail(unknown(&answer)).expect("records");
                        break;
                    }
                    _ => change.info(unknown(&answer)).expect("records"),
                }
                if !self.running() {
                    write.info(json!({"gave up": true})).expect("records");
                    break 'writes;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asks for a report (`/api/analytics/stats`, limited per client
    /// address to `limit` a `window`) through each of `bases` in turn, as
    /// fast as answered: 200 is admitted, 429 refused (both ok), anything
    /// else info.
    async fn check(self, process: String, bases: Vec<String>, limit: u64, window: Duration) {
        let client = client();
        let mut i = 0usize;
        while self.running() {
            i += 1;
            let base = &bases[i % bases.len()];
            let op = self
                .recorder
                .invoke(
                    &process,
                    Workload::Ratelimit,
                    "check",
                    json!({"key": "report:drill", "limit": limit,
                           "window_ms": u64::try_from(window.as_millis()).expect("fits")}),
                )
                .expect("records");
            let answer =
                send(client.get(format!("{base}/api/analytics/stats?user_id={}", 1 + i % 50)))
                    .await;
            match &answer {
                Answer::Status(200, _) => op.ok(json!({"admitted": true})),
                Answer::Status(429, _) => op.ok(json!({"admitted": false})),
                _ => op.info(unknown(&answer)),
            }
            .expect("records");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Reads the balances of `users` through `base` in turn; each read goes
    /// to `during` until `healed` is set, to `after` from then on.
    pub(crate) async fn read(
        self,
        process: String,
        base: String,
        users: Vec<i64>,
        after: Recorder,
        healed: Arc<AtomicBool>,
    ) {
        let client = client();
        let mut i = 0usize;
        while self.running() {
            i += 1;
            let user = users[i % users.len()];
            let recorder = if healed.load(Ordering::Relaxed) {
                &after
            } else {
                &self.recorder
            };
            let op = recorder
                .invoke(
                    &process,
                    Workload::Cache,
                    "read",
                    json!({"key": user.to_string()}),
                )
                .expect("records");
            let answer =
                send(client.get(format!("{base}/api/points/balance?user_id={user}"))).await;
            match &answer {
                Answer::Status(200, body) => op.ok(json!({"value": body["balance"]})),
                Answer::Status(status, _) if (400..500).contains(status) => {
                    op.fail(unknown(&answer))
                }
                _ => op.info(unknown(&answer)),
            }
            .expect("records");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Creates a time sale and a coupon campaign of `units` each through the
/// admin API; returns their ids.
async fn promotions(fleet: &Running, units: i64) -> (i64, i64) {
    let client = support::client();
    let mut ids = Vec::new();
    for (path, body) in [
        (
            "sales",
            json!({"name": "drill sale", "stock": units, "per_user": 1}),
        ),
        (
            "campaigns",
            json!({"name": "drill coupons", "quantity": units, "per_user": 1}),
        ),
    ] {
        let response = client
            .post(format!("{}/api/promotions/{path}", fleet.url()))
            .bearer_auth(fleet.token())
            .json(&body)
            .send()
            .await
            .expect("answers");
        assert_eq!(response.status(), 201, "POST /api/promotions/{path}");
        let created: Value = response.json().await.expect("JSON");
        ids.push(created["id"].as_i64().expect("an id"));
    }
    (ids[0], ids[1])
}

/// Writes each user's first point, recorded as the first write of its
/// balance, so that every value a reader can see was written by someone.
pub(crate) async fn seed_balances(fleet: &Running, recorder: &Recorder, users: &[i64]) {
    for &user in users {
        let key = format!("seed-{user}");
        let write = recorder
            .invoke(
                "setup",
                Workload::Cache,
                "write",
                json!({"key": user.to_string(), "value": 1}),
            )
            .expect("records");
        let change = recorder
            .invoke(
                "setup",
                Workload::Points,
                "change",
                json!({"user": user, "key": key, "amount": 1}),
            )
            .expect("records");
        let response = support::client()
            .post(format!("{}/api/points/earn", fleet.url()))
            .header("idempotency-key", &key)
            .json(&json!({"user_id": user, "amount": 1, "reason": "drill"}))
            .send()
            .await
            .expect("answers");
        assert_eq!(response.status(), 201, "the first point of {user}");
        change.ok(json!({"balance": 1})).expect("records");
        write.ok(json!({"balance": 1})).expect("records");
    }
}

/// One psql query answering one JSON value.
fn json_of(fleet: &Running, sql: &str) -> Value {
    let text = fleet.postgres().psql(sql).expect("psql");
    serde_json::from_str(text.trim()).unwrap_or_else(|error| panic!("{sql}: {error}: {text}"))
}

/// Waits until the workers are done: the notification and order queues
/// have nothing waiting, delayed or running (a job a lost lease held runs
/// until it is taken over), and the rows the workers write have not
/// changed for 3 s. Gives up only once the rows have not changed for the
/// whole of [`wait::patience`].
async fn quiesce(fleet: &Running) {
    let count = || {
        fleet
            .postgres()
            .psql("SELECT (SELECT COUNT(*) FROM notification_deliveries) + (SELECT COUNT(*) FROM sale_orders)")
            .expect("psql")
    };
    let client = support::client();
    let (mut last, mut since) = (count(), Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle = support::queues_idle(&client, fleet, &["notification", "order"]).await;
        let now = count();
        if now != last {
            (last, since) = (now, Instant::now());
        } else if idle && since.elapsed() >= Duration::from_secs(3) {
            return;
        }
        assert!(
            since.elapsed() < wait::patience(),
            "waited {:?} for the workers to finish; their rows ({last}) stopped changing, \
             the queues idle: {idle}",
            wait::patience()
        );
    }
}

/// The final state of drill 1: the fleet's hosts, the `queue` part, the
/// sale with its orders and the units the store says remain, the campaign
/// with its coupons, the accounts with their ledgers, and the balances the
/// cache ends at.
async fn final_state(
    fleet: &Running,
    queue: Value,
    sale: i64,
    campaign: i64,
    users: &[i64],
) -> FinalState {
    let mut sale_state = json_of(
        fleet,
        &format!(
            "SELECT json_build_object('id', s.id, 'stock', s.stock, \
            'per_user', s.per_user, 'orders', COALESCE((SELECT json_agg(json_build_object(\
            'id', o.id, 'unit', o.unit, 'user_id', o.user_id, 'nth', o.nth)) \
            FROM sale_orders o WHERE o.sale_id = s.id), '[]')) FROM time_sales s WHERE s.id = {sale}"
        ),
    );
    sale_state["remaining"] = json!(remaining_stock(fleet, sale).await);
    let state = json!({
        "hosts": host_names(fleet),
        "queue": queue,
        "sale": [sale_state],
        "coupon": [json_of(fleet, &format!("SELECT json_build_object('id', c.id, 'quantity', c.quantity, \
            'per_user', c.per_user, 'coupons', COALESCE((SELECT json_agg(json_build_object(\
            'code', k.code, 'number', k.number, 'user_id', k.user_id, 'nth', k.nth)) \
            FROM coupons k WHERE k.campaign_id = c.id), '[]')) FROM coupon_campaigns c WHERE c.id = {campaign}"))],
        "points": points_state(fleet, users),
        "cache": cache_state(fleet, users).await,
    });
    serde_json::from_value(state).expect("a final state")
}

/// The units of `sale` the store says remain: its stock less the units
/// `GET /api/promotions` says it sold. Not that answer's own `remaining`,
/// which stops at zero, so that a store that sold more than its stock
/// shows it.
async fn remaining_stock(fleet: &Running, sale: i64) -> i64 {
    let overview = support::admin_get(
        &support::client(),
        fleet,
        &format!("{}/api/promotions", fleet.url()),
    )
    .await;
    let standing = overview["sales"]
        .as_array()
        .and_then(|sales| sales.iter().find(|standing| standing["id"] == sale))
        .unwrap_or_else(|| panic!("sale {sale} in {overview}"));
    standing["stock"].as_i64().expect("a stock") - standing["sold"].as_i64().expect("units sold")
}

/// The balance each of `users` ends at as the cache serves it (the cache
/// part of a final state, keyed as the readers key their reads): read
/// through every instance, and the lowest answer kept, since an instance
/// still serving an older balance is where a lost write would show.
pub(crate) async fn cache_state(fleet: &Running, users: &[i64]) -> Value {
    let client = support::client();
    let mut finals = serde_json::Map::new();
    for &user in users {
        let mut lowest: Option<i64> = None;
        for base in fleet.instance_urls() {
            let answer = support::admin_get(
                &client,
                fleet,
                &format!("{base}/api/points/balance?user_id={user}"),
            )
            .await;
            let balance = answer["balance"].as_i64().expect("a balance");
            lowest = Some(lowest.map_or(balance, |lowest| lowest.min(balance)));
        }
        finals.insert(user.to_string(), json!(lowest));
    }
    Value::Object(finals)
}

/// Checks the histories in `files` against `state` with the checker's
/// `options`, writes the report beside them as `<name>.txt`, and prints it.
pub(crate) fn checked_with(
    dir: &Path,
    name: &str,
    files: &[PathBuf],
    state: &FinalState,
    options: &Options,
) -> Report {
    let history = History::read(files).expect("the history reads back");
    let report =
        seawall_history::check(&history, state, options).expect("the state covers the history");
    std::fs::write(dir.join(format!("{name}.txt")), report.to_string()).expect("writes");
    println!("{name}:\n{report}");
    report
}

/// What drill 1 found, per `wait_replicas`.
pub(crate) struct Outcome {
    pub(crate) whole: Report,
    pub(crate) healed: Report,
}

/// A fleet on network hosts for the drills that enqueue: rate limiting
/// off (the clients come from one address, limits would refuse them),
/// `wait_replicas` with a 500 ms wait, and `lease`.
fn queue_fleet(wait_replicas: u32, lease: Duration) -> seawall_testkit::FleetBuilder {
    support::builder()
        .hosts(true)
        .env("SEAWALL_RATELIMIT", "false")
        .env("SEAWALL_QUEUE_WAIT_REPLICAS", wait_replicas.to_string())
        .env("SEAWALL_QUEUE_WAIT_TIMEOUT", "500ms")
        .env("SEAWALL_QUEUE_LEASE", humantime_secs(lease))
}

/// Drill 1 (and 6): the Redis master of the notification queue's slot and
/// api-1 cut off from every other host for `form.hold` while clients
/// pinned to each instance enqueue, order the last units of a sale, take
/// coupons, earn points and read balances; then healed. Also returns how
/// far each instance's `/readyz` strayed from its enqueues.
pub(crate) async fn master_and_instance_cut_off(
    form: Form,
    wait_replicas: u32,
) -> (Outcome, Agreement) {
    const LEASE: Duration = Duration::from_secs(5);
    let dir = drill_dir(&format!("cut-off-w{wait_replicas}"));
    let mut fleet = support::start(queue_fleet(wait_replicas, LEASE)).await;
    name_row_writers(&fleet);
    // The sale sells out while the cut holds: three buyers get about 12
    // units a second between them.
    let units = i64::try_from((form.before + form.hold / 2).as_secs() * 12).expect("fits");
    let (sale, campaign) = promotions(&fleet, units).await;
    let master = fleet
        .master_host_of("{notification}")
        .expect("the queue's master");

    let recorder = Recorder::create(dir.join("clients.jsonl")).expect("a recorder");
    let after = Recorder::create(dir.join("reads-healed.jsonl")).expect("a recorder");
    let clients = Clients {
        recorder: recorder.clone(),
        stop: Arc::new(AtomicBool::new(false)),
        token: fleet.token().to_owned(),
    };
    let healed = Arc::new(AtomicBool::new(false));
    let users: Vec<i64> = (1..=3).map(|n| 900_000 + n).collect();
    seed_balances(&fleet, &recorder, &users).await;
    let mut tasks = Vec::new();
    for (n, base) in fleet.instance_urls().into_iter().enumerate() {
        let c = clients.clone();
        let buyers = 1_000_000 * (i64::try_from(n).expect("fits") + 1);
        tasks.push(tokio::spawn(
            c.clone().enqueue(format!("queue-{}", n + 1), base.clone()),
        ));
        tasks.push(tokio::spawn(c.clone().order(
            format!("sale-{}", n + 1),
            base.clone(),
            sale,
            buyers,
        )));
        tasks.push(tokio::spawn(c.clone().issue(
            format!("coupon-{}", n + 1),
            base.clone(),
            campaign,
            buyers,
        )));
        tasks.push(tokio::spawn(c.clone().earn(
            format!("points-{}", n + 1),
            base.clone(),
            users[n],
            1,
        )));
        tasks.push(tokio::spawn(c.read(
            format!("reader-{}", n + 1),
            base,
            users.clone(),
            after.clone(),
            Arc::clone(&healed),
        )));
    }
    tokio::time::sleep(form.before).await;
    let watcher = Watcher::start(fleet.instance_urls());
    let replica = fleet
        .replica_host_of("{notification}")
        .expect("the queue's replica");
    let promotion = Promotion::watch(redis_addr(&fleet, &replica));

    let others: Vec<String> = fleet
        .hosts()
        .into_iter()
        .map(|host| host.name)
        .filter(|name| *name != master && name != "api-1")
        .collect();
    let minority = [master.as_str(), "api-1"];
    let majority: Vec<&str> = others.iter().map(String::as_str).collect();
    fleet
        .partition(&[&minority, &majority])
        .expect("partitions");
    println!("cut off {minority:?} from {majority:?} for {:?}", form.hold);
    tokio::time::sleep(form.hold).await;
    fleet.heal().expect("heals");
    let healed_at = Instant::now();
    // The heal is over once every instance is ready again (it reaches
    // Redis and PostgreSQL, and has sent what it could not send while cut
    // off): reads from then on are held to the propagation window.
    let ready = ready_again(&fleet).await;
    healed.store(true, Ordering::Relaxed);
    println!("every instance ready again {ready:?} after the heal");
    tokio::time::sleep(form.after.saturating_sub(healed_at.elapsed())).await;
    clients.stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a client ends");
    }
    drop((clients, recorder, after));
    // api-2 and api-3 stay with the replica.
    let readiness = watcher
        .finish(&dir.join("clients.jsonl"), promotion, &[1, 2])
        .await;
    println!("readiness against enqueues: {readiness}");

    quiesce(&fleet).await;
    let queue = queue_state(&fleet, &dir.join("clients.jsonl"), LEASE, &master).await;
    let state = final_state(&fleet, queue, sale, campaign, &users).await;
    let (whole, healed) = around_the_heal(&dir, &fleet, &state, &Options::default());
    support::stop(fleet).await;
    (Outcome { whole, healed }, readiness)
}

/// The address of the Redis node called `host` (`redis-N`).
fn redis_addr(fleet: &Running, host: &str) -> std::net::SocketAddr {
    let n: usize = host
        .strip_prefix("redis-")
        .and_then(|n| n.parse().ok())
        .expect("a Redis host");
    fleet.cluster().expect("a Cluster").nodes()[n - 1].addr()
}

/// Writes `state` and the fleet's faults into `dir` and checks the
/// clients' history (`clients.jsonl`, with the reads that began once the
/// fleet was healed in `reads-healed.jsonl`) twice: whole, and with only
/// the reads after the heal, which the cache's promise holds to its
/// window.
fn around_the_heal(
    dir: &Path,
    fleet: &Running,
    state: &FinalState,
    options: &Options,
) -> (Report, Report) {
    std::fs::write(
        dir.join("state.json"),
        serde_json::to_string_pretty(state).expect("JSON"),
    )
    .expect("writes");
    std::fs::copy(fleet.faults_path(), dir.join("faults.jsonl")).expect("the faults");
    let (clients, healed_reads, faults) = (
        dir.join("clients.jsonl"),
        dir.join("reads-healed.jsonl"),
        dir.join("faults.jsonl"),
    );
    let whole = checked_with(
        dir,
        "report",
        &[clients.clone(), healed_reads.clone(), faults.clone()],
        state,
        options,
    );
    let text = std::fs::read_to_string(&clients).expect("reads");
    let kept: String = text
        .lines()
        .filter(|line| !line.contains("\"op\":\"read\""))
        .map(|line| format!("{line}\n"))
        .collect();
    let without_cut_reads = dir.join("clients-without-cut-reads.jsonl");
    std::fs::write(&without_cut_reads, kept).expect("writes");
    let healed = checked_with(
        dir,
        "report-after-heal",
        &[without_cut_reads, healed_reads, faults],
        state,
        options,
    );
    (whole, healed)
}

/// Waits until every instance answers `/readyz` with 200; how long it took
/// (a figure, not a bound: the wait goes on for up to [`wait::patience`]).
async fn ready_again(fleet: &Running) -> Duration {
    let since = Instant::now();
    let client = client();
    loop {
        let mut ready = 0;
        for base in fleet.instance_urls() {
            if let Ok(response) = client.get(format!("{base}/readyz")).send().await
                && response.status() == 200
            {
                ready += 1;
            }
        }
        if ready == fleet.instance_urls().len() {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < wait::patience(),
            "waited {:?} for every instance to be ready ({ready} of {} are)",
            wait::patience(),
            fleet.instance_urls().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Counts of the anomalies that must be 0 whatever `wait_replicas` is.
pub(crate) fn never(report: &Report) -> Vec<(String, usize)> {
    let counts = report.counts();
    [
        "sale.oversold",
        "sale.over_per_user",
        "sale.failed_but_written",
        "coupon.over_issued",
        "coupon.duplicates",
        "coupon.failed_but_issued",
        "points.sum_mismatch",
        "points.applied_twice",
        "points.failed_but_applied",
        "queue.never_acknowledged",
        "queue.run_twice_unexplained",
        "cache.impossible",
        "cache.lost_writes",
    ]
    .iter()
    .map(|kind| ((*kind).to_owned(), counts.get(*kind).copied().unwrap_or(0)))
    .filter(|(_, count)| *count > 0)
    .collect()
}

/// How long an instance's `/readyz` may disagree with its enqueues: a probe
/// answers within a second, and its answer serves for 250 ms (the enqueue
/// check is compared as of when it was read, and a disagreement counts from
/// the first enqueue answer that showed the change, so neither a loaded
/// machine's slow answers nor an enqueue that hung through the heal count
/// against it).
const READINESS_LAG: Duration = Duration::from_millis(1_500);

/// Drill 1: with `wait_replicas = 1` nothing acknowledged is lost and
/// nothing is oversold; without it, the loss is printed (scripts/drills).
/// After the heal no read is staler than the propagation window.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_and_an_instance_cut_off_lose_nothing_acknowledged() {
    let form = Form::chosen();
    for wait_replicas in wait_settings(&[1]) {
        let (Outcome { whole, healed }, readiness) =
            master_and_instance_cut_off(form, wait_replicas).await;
        let counts = whole.counts();
        assert_eq!(never(&whole), [], "wait_replicas {wait_replicas}:\n{whole}");
        if wait_replicas > 0 {
            for kind in [
                "queue.lost",
                "sale.acknowledged_missing",
                "coupon.acknowledged_missing",
                "points.acknowledged_missing",
            ] {
                assert_eq!(
                    counts[kind], 0,
                    "{kind}, wait_replicas {wait_replicas}:\n{whole}"
                );
            }
        }
        // The enqueue check passes exactly while the instance can enqueue,
        // and `/readyz` fails while it cannot, unless the check warned that
        // the primary is short of replicas (`wait_replicas` after the
        // promotion: every instance alike, so they all stay ready): the
        // two disagree only while a probe notices (a second at most, its
        // answer reused for 250 ms, the check taken as of its reading), on
        // the cut-off side and on the majority's, before the failover and
        // after it.
        assert!(
            readiness.ready_but_cannot_enqueue <= READINESS_LAG
                && readiness.check_passed_but_cannot_enqueue <= READINESS_LAG
                && readiness.check_failed_but_enqueued <= READINESS_LAG,
            "wait_replicas {wait_replicas}: {readiness}"
        );
        // When the cut lasts long enough for the replica to be promoted
        // (the full form), the majority's instances enqueue again within a
        // second of it. Not with `wait_replicas`: the promoted replica has
        // no replica of its own until the old master rejoins after the
        // heal, so an enqueue is refused (fast, and the check warns).
        if let Some(after) = &readiness.enqueued_after_promotion
            && wait_replicas == 0
        {
            assert!(
                after
                    .iter()
                    .all(|after| after.is_some_and(|after| after <= Duration::from_secs(1))),
                "wait_replicas {wait_replicas}: {readiness}"
            );
        }
        // Once every instance is ready again (each reaches every Redis
        // master, and has sent what it could not send while cut off), every
        // write's invalidation lands before the write is answered.
        assert_eq!(
            healed.counts()["cache.stale"],
            0,
            "stale reads after the heal, wait_replicas {wait_replicas}:\n{healed}"
        );
    }
}

/// Drill 4: worker-1 cut off from every Redis host while it runs jobs
/// longer than their lease. The jobs are long because their one write
/// waits on a lock that a psql session holds on the outbox table; once
/// worker-1 can no longer renew, worker-2 takes the jobs over when their
/// leases end, and the lock is let go after that. A job runs twice only if
/// worker-1 went on with a job it no longer held. Returns the report.
pub(crate) async fn worker_cut_off_mid_job(form: Form) -> Report {
    const LEASE: Duration = Duration::from_secs(3);
    const JOBS: usize = 12;
    let dir = drill_dir("worker-cut-off");
    let mut fleet = support::start(
        support::builder()
            .hosts(true)
            .instances(1)
            .workers(2)
            .env("SEAWALL_RATELIMIT", "false")
            .env("SEAWALL_QUEUE_LEASE", humantime_secs(LEASE)),
    )
    .await;
    name_row_writers(&fleet);
    let master = fleet
        .master_host_of("{notification}")
        .expect("the queue's master");
    let recorder = Recorder::create(dir.join("clients.jsonl")).expect("a recorder");
    // The lock: taken before the jobs are queued, and let go only once the
    // cut has cost worker-1 its leases, however long each step takes. A
    // psql session holds it until it is told to commit.
    let mut lock = Command::new(fleet.postgres().bin_dir().join("psql"))
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &fleet.postgres().url(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql runs");
    let mut session = lock.stdin.take().expect("psql's stdin");
    session
        .write_all(b"BEGIN;\nLOCK TABLE notification_deliveries IN EXCLUSIVE MODE;\n")
        .and_then(|()| session.flush())
        .expect("psql reads the lock");
    wait::until_async(
        "the psql session to hold its lock on the outbox",
        async || {
            if let Some(status) = lock.try_wait().expect("psql") {
                panic!("psql exited before taking the lock: {status}");
            }
            fleet
                .postgres()
                .psql(
                    "SELECT COUNT(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                     WHERE c.relname = 'notification_deliveries' \
                     AND l.mode = 'ExclusiveLock' AND l.granted",
                )
                .expect("psql")
                == "1"
        },
    )
    .await;
    let client = client();
    let mut ids = Vec::new();
    for n in 0..JOBS {
        let key = format!("drill-long-{n}");
        let op = recorder
            .invoke(
                "producer",
                Workload::Queue,
                "enqueue",
                json!({"queue": "notification", "key": key}),
            )
            .expect("records");
        let answer = send(
            client
                .post(format!("{}/api/queue/notification", fleet.url()))
                .bearer_auth(fleet.token())
                .header("idempotency-key", &key)
                .json(&json!({"user_id": 1 + n % 50, "channel": "push", "message": key})),
        )
        .await;
        let Answer::Status(202, body) = &answer else {
            op.info(unknown(&answer)).expect("records");
            panic!("enqueue {n}: {}", unknown(&answer));
        };
        let id = body["id"].as_str().expect("an id").to_owned();
        op.ok(json!({"job": format!("notification:{id}")}))
            .expect("records");
        ids.push(id);
    }
    // Both workers hold jobs now, blocked on the lock: with eight at once
    // each, every job taken means worker-1 holds some.
    tokio::time::sleep(form.before).await;
    wait::until_async(
        "every job to be taken, each run waiting on the lock",
        async || {
            support::queue_rows(&client, &fleet)
                .await
                .and_then(|rows| {
                    let row = rows.iter().find(|row| row["name"] == "notification")?;
                    row["active"].as_u64()
                })
                .is_some_and(|active| active == JOBS as u64)
        },
    )
    .await;
    let redis: Vec<String> = fleet
        .hosts()
        .into_iter()
        .map(|host| host.name)
        .filter(|name| name.starts_with("redis-"))
        .collect();
    let redis: Vec<&str> = redis.iter().map(String::as_str).collect();
    fleet
        .partition(&[&["worker-1"], &redis])
        .expect("partitions");
    // Worker-1's runs end with their leases, on its own clock; then the
    // leases run out on Redis's, and the jobs go back with a stall.
    tokio::time::sleep(LEASE * 2).await;
    let admin = support::client();
    wait::until_async(
        "a job worker-1 lost with its lease to be taken back",
        async || {
            for id in &ids {
                let job = support::admin_get(
                    &admin,
                    &fleet,
                    &format!("{}/api/queue/notification/jobs/{id}", fleet.url()),
                )
                .await;
                if job["stalls"].as_u64() > Some(0) {
                    return true;
                }
            }
            // A dozen requests a round: a slower round than the wait's own.
            tokio::time::sleep(Duration::from_millis(200)).await;
            false
        },
    )
    .await;
    session
        .write_all(b"COMMIT;\n")
        .expect("psql reads the commit");
    drop(session);
    let out = tokio::task::spawn_blocking(move || lock.wait_with_output())
        .await
        .expect("joins")
        .expect("psql ends");
    assert!(out.status.success(), "the lock: {out:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    fleet.heal().expect("heals");
    drop(recorder);

    quiesce(&fleet).await;
    // Each job's record: a stall is a lease that ran out, the job taken
    // over by the other worker.
    let state = json!({
        "hosts": host_names(&fleet),
        "queue": queue_state(&fleet, &dir.join("clients.jsonl"), LEASE, &master).await,
    });
    let jobs = state["queue"]["jobs"].as_array().expect("the jobs");
    let stalled = jobs
        .iter()
        .filter(|job| job["stalls"].as_u64() > Some(0))
        .count();
    println!("{stalled} of {JOBS} jobs were taken over after their lease ran out");
    assert!(stalled > 0, "the cut broke no lease: {jobs:?}");
    let report = finish(&dir, &fleet, &state, &Options::default());
    support::stop(fleet).await;
    report
}

/// `duration` as whole seconds for a configuration value (`3s`).
fn humantime_secs(duration: Duration) -> String {
    format!("{}s", duration.as_secs())
}

/// Drill 4: no job runs twice and none is lost when its worker is cut off
/// from Redis mid-job. The checker would explain a second run by the cut
/// (it is on the path of worker-1's runs); the drill holds the worker to
/// more: it stops each run before its lease ends, so none runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_cut_off_mid_job_stops_before_its_lease_ends() {
    let report = worker_cut_off_mid_job(Form::chosen()).await;
    let counts = report.counts();
    for kind in [
        "queue.lost",
        "queue.run_twice_explained",
        "queue.run_twice_unexplained",
        "queue.never_acknowledged",
    ] {
        assert_eq!(counts[kind], 0, "{kind}:\n{report}");
    }
}

/// The queue part of a final state: the notification rows the drill's
/// enqueues left, each with the host of the worker that wrote it (see
/// [`name_row_writers`]); the runs and stalls (leases that ran out, the
/// job taken over) of each job acknowledged or run, from the queue's API;
/// and what a run
/// of the notification queue goes through: its `lease`, and the masters
/// that held it (`first_master`, and the one holding it now if another
/// took over).
async fn queue_state(
    fleet: &Running,
    history: &Path,
    lease: Duration,
    first_master: &str,
) -> Value {
    let addresses: std::collections::HashMap<String, String> = fleet
        .hosts()
        .into_iter()
        .map(|host| (host.addr.to_string(), host.name))
        .collect();
    let mut rows = json_of(
        fleet,
        "SELECT COALESCE(json_agg(json_build_object('job', job, 'idempotency_key', message, \
         'at_ms', delivered_at, 'written_from', host(written_from))), '[]') \
         FROM notification_deliveries WHERE message LIKE 'drill-%'",
    );
    for row in rows.as_array_mut().expect("rows") {
        let from = row["written_from"].as_str().unwrap_or_default();
        row["worker"] = json!(addresses.get(from));
    }
    // The acknowledged jobs, and every job that ran: an enqueue whose
    // answer was lost may have queued its job, and a repeat of it is
    // explained by the stalls its record counts as any other's.
    let text = std::fs::read_to_string(history).expect("the history");
    let mut named = std::collections::BTreeSet::new();
    for line in text.lines() {
        let event: Value = serde_json::from_str(line).expect("JSON");
        if event["type"] == "ok" && event["op"] == "enqueue" {
            named.insert(event["value"]["job"].as_str().expect("a job").to_owned());
        }
    }
    for row in rows.as_array().expect("rows") {
        named.insert(row["job"].as_str().expect("a job").to_owned());
    }
    let client = support::client();
    let mut jobs = Vec::new();
    for job in named {
        let id = job.trim_start_matches("notification:");
        let response = client
            .get(format!("{}/api/queue/notification/jobs/{id}", fleet.url()))
            .bearer_auth(fleet.token())
            .send()
            .await
            .expect("answers");
        // A job a failover lost is not found: the checker counts it.
        if response.status() == 200 {
            let record: Value = response.json().await.expect("JSON");
            jobs.push(json!({"job": job, "runs": record["runs"], "stalls": record["stalls"]}));
        }
    }
    let mut masters = vec![first_master.to_owned()];
    let now = fleet
        .master_host_of("{notification}")
        .expect("the queue's master");
    if now != first_master {
        masters.push(now);
    }
    json!({
        "queues": {"notification": {
            "lease_ms": u64::try_from(lease.as_millis()).expect("fits"),
            "masters": masters,
        }},
        "rows": rows,
        "jobs": jobs,
    })
}

/// Has every notification row name the address it was written from
/// (`written_from`, PostgreSQL's `inet_client_addr()` as the column's
/// default), so that each row says which worker ran it: on network hosts
/// each worker writes from an address of its own. The processors name
/// the columns they write, so the extra one changes nothing for them.
fn name_row_writers(fleet: &Running) {
    fleet
        .postgres()
        .psql(
            "ALTER TABLE notification_deliveries \
             ADD COLUMN IF NOT EXISTS written_from inet DEFAULT inet_client_addr()",
        )
        .expect("psql");
}

/// The names of the fleet's hosts, which its faults and rows name.
pub(crate) fn host_names(fleet: &Running) -> Vec<String> {
    fleet.hosts().into_iter().map(|host| host.name).collect()
}

/// The accounts of `users` with their ledgers: the points part of a final
/// state.
fn points_state(fleet: &Running, users: &[i64]) -> Value {
    let users = users
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    json_of(
        fleet,
        &format!(
            "SELECT COALESCE(json_agg(json_build_object('user_id', a.user_id, \
            'balance', a.balance, 'ledger', COALESCE((SELECT json_agg(json_build_object(\
            'version', l.version, 'delta', l.delta, 'idempotency_key', l.idempotency_key)) \
            FROM point_ledger l WHERE l.user_id = a.user_id), '[]'))), '[]') \
            FROM point_accounts a WHERE a.user_id IN ({users})"
        ),
    )
}

/// Writes `state` and the fleet's faults into `dir`, and checks the
/// clients' history with them.
pub(crate) fn finish(dir: &Path, fleet: &Running, state: &Value, options: &Options) -> Report {
    let state: FinalState = serde_json::from_value(state.clone()).expect("a final state");
    std::fs::write(
        dir.join("state.json"),
        serde_json::to_string_pretty(&state).expect("JSON"),
    )
    .expect("writes");
    std::fs::copy(fleet.faults_path(), dir.join("faults.jsonl")).expect("the faults");
    checked_with(
        dir,
        "report",
        &[dir.join("clients.jsonl"), dir.join("faults.jsonl")],
        &state,
        options,
    )
}

/// Three producers enqueue through HAProxy while `fault` (given the fleet,
/// the notification queue's master and its replica, after `form.before`)
/// runs; then `form.after` more, the queues drained, and the history
/// checked with the rows and each job's stalls. Drills 2 and 5.
async fn enqueues_under(
    name: &str,
    form: Form,
    wait_replicas: u32,
    fault: impl AsyncFnOnce(&mut Running, &str, &str),
) -> Report {
    const LEASE: Duration = Duration::from_secs(3);
    let dir = drill_dir(&format!("{name}-w{wait_replicas}"));
    let mut fleet = support::start(queue_fleet(wait_replicas, LEASE)).await;
    name_row_writers(&fleet);
    let master = fleet
        .master_host_of("{notification}")
        .expect("the queue's master");
    let replica = fleet
        .replica_host_of("{notification}")
        .expect("the master's replica");
    let recorder = Recorder::create(dir.join("clients.jsonl")).expect("a recorder");
    let clients = Clients {
        recorder: recorder.clone(),
        stop: Arc::new(AtomicBool::new(false)),
        token: fleet.token().to_owned(),
    };
    let tasks: Vec<_> = (1..=3)
        .map(|n| tokio::spawn(clients.clone().enqueue(format!("queue-{n}"), fleet.url())))
        .collect();
    tokio::time::sleep(form.before).await;
    fault(&mut fleet, &master, &replica).await;
    tokio::time::sleep(form.after).await;
    clients.stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a client ends");
    }
    drop((clients, recorder));
    quiesce(&fleet).await;
    let state = json!({
        "hosts": host_names(&fleet),
        "queue": queue_state(&fleet, &dir.join("clients.jsonl"), LEASE, &master).await,
    });
    let report = finish(&dir, &fleet, &state, &Options::default());
    support::stop(fleet).await;
    report
}

/// Drill 2: the Redis master of the notification queue's slot isolated
/// alone, its replica promoted on the majority side, while producers
/// enqueue and both workers hold leases on its jobs.
pub(crate) async fn master_isolated(form: Form, wait_replicas: u32) -> Report {
    enqueues_under(
        "master-isolated",
        form,
        wait_replicas,
        async |fleet: &mut Running, master: &str, _: &str| {
            fleet.isolate(master).expect("isolates");
            println!("isolated {master} for {:?}", form.hold);
            tokio::time::sleep(form.hold).await;
            fleet.heal().expect("heals");
        },
    )
    .await
}

/// Drill 2: with `wait_replicas = 1` no acknowledged job is lost when its
/// master is isolated; a job run twice is one whose lease ran out (its
/// worker could not acknowledge it to the isolated master).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "one of the full partition drills, which scripts/drills --partitions runs"]
async fn an_isolated_master_loses_no_replicated_job() {
    for wait_replicas in wait_settings(&[1]) {
        let report = master_isolated(Form::chosen(), wait_replicas).await;
        assert_eq!(
            never(&report),
            [],
            "wait_replicas {wait_replicas}:\n{report}"
        );
        if wait_replicas > 0 {
            assert_eq!(report.counts()["queue.lost"], 0, "{report}");
        }
    }
}

/// What drill 3 measured besides its report.
#[derive(Debug)]
#[allow(dead_code)] // printed whole
pub(crate) struct CutFromRedis {
    pub(crate) left_rotation_after: Duration,
    pub(crate) back_in_rotation_after_heal: Duration,
    pub(crate) through_haproxy: (u64, u64),
    /// Answers of the instance itself to its reader while cut off: status
    /// (0 for none) and count.
    pub(crate) direct_answers: Vec<(u16, usize)>,
}

/// Drill 3: api-2 cut off from every Redis host, not from HAProxy nor
/// PostgreSQL, while a steady load goes through HAProxy, writers earn
/// points through HAProxy, one reader reads balances from api-2 directly
/// and another through HAProxy, and one client asks every instance in turn
/// for reports limited to 20 per 2 s per client address.
pub(crate) async fn instance_cut_off_from_redis(form: Form) -> (Outcome, CutFromRedis) {
    const LIMIT: u64 = 20;
    const WINDOW: Duration = Duration::from_secs(2);
    let dir = drill_dir("instance-cut-off-from-redis");
    let mut fleet = support::start(
        support::builder()
            .hosts(true)
            .workers(1)
            .env(
                "SEAWALL_RATELIMIT_REPORT",
                format!("{LIMIT}/{}s", WINDOW.as_secs()),
            )
            .env("SEAWALL_RATELIMIT_API", "1000000/1s")
            .env("SEAWALL_RATELIMIT_DDOS", "1000000/1s"),
    )
    .await;
    let recorder = Recorder::create(dir.join("clients.jsonl")).expect("a recorder");
    let after = Recorder::create(dir.join("reads-healed.jsonl")).expect("a recorder");
    let clients = Clients {
        recorder: recorder.clone(),
        stop: Arc::new(AtomicBool::new(false)),
        token: fleet.token().to_owned(),
    };
    let users: Vec<i64> = (1..=3).map(|n| 900_000 + n).collect();
    seed_balances(&fleet, &recorder, &users).await;
    let (tally, mut tasks) = crate::drills::steady_load(&fleet.url(), 4, &clients.stop);
    let healed = Arc::new(AtomicBool::new(false));
    for (n, &user) in users.iter().enumerate() {
        tasks.push(tokio::spawn(clients.clone().earn(
            format!("points-{}", n + 1),
            fleet.url(),
            user,
            1,
        )));
    }
    let api2 = fleet.instance_urls()[1].clone();
    tasks.push(tokio::spawn(clients.clone().read(
        "reader-api-2".to_owned(),
        api2,
        users.clone(),
        after.clone(),
        Arc::clone(&healed),
    )));
    tasks.push(tokio::spawn(clients.clone().read(
        "reader-haproxy".to_owned(),
        fleet.url(),
        users.clone(),
        after.clone(),
        Arc::clone(&healed),
    )));
    tasks.push(tokio::spawn(clients.clone().check(
        "limits".to_owned(),
        fleet.instance_urls(),
        LIMIT,
        WINDOW,
    )));
    tokio::time::sleep(form.before).await;

    let redis: Vec<String> = fleet
        .hosts()
        .into_iter()
        .map(|host| host.name)
        .filter(|name| name.starts_with("redis-"))
        .collect();
    let redis: Vec<&str> = redis.iter().map(String::as_str).collect();
    let cut_at = Instant::now();
    let cut_t = now_micros();
    fleet.partition(&[&["api-2"], &redis]).expect("partitions");
    let left_rotation_after = wait_for_rotation(&fleet, "api-2", false).await;
    tokio::time::sleep(form.hold.saturating_sub(cut_at.elapsed())).await;
    fleet.heal().expect("heals");
    let heal_t = now_micros();
    let back_in_rotation_after_heal = wait_for_rotation(&fleet, "api-2", true).await;
    ready_again(&fleet).await;
    healed.store(true, Ordering::Relaxed);
    tokio::time::sleep(form.after).await;
    clients.stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a client ends");
    }
    drop((clients, recorder, after));

    // What api-2 answered its own reader while cut off.
    let mut answers = std::collections::BTreeMap::<u16, usize>::new();
    let text = std::fs::read_to_string(dir.join("clients.jsonl")).expect("the history");
    for line in text.lines() {
        let event: Value = serde_json::from_str(line).expect("JSON");
        let t = event["t"].as_u64().expect("a time");
        if event["process"] == "reader-api-2"
            && event["type"] != "invoke"
            && (cut_t..heal_t).contains(&t)
        {
            let status = match event["type"].as_str() {
                Some("ok") => 200,
                _ => event["value"]["status"]
                    .as_u64()
                    .and_then(|s| u16::try_from(s).ok())
                    .unwrap_or(0),
            };
            *answers.entry(status).or_default() += 1;
        }
    }
    let state: FinalState = serde_json::from_value(json!({
        "hosts": host_names(&fleet),
        "points": points_state(&fleet, &users),
        "cache": cache_state(&fleet, &users).await,
    }))
    .expect("a final state");
    let (whole, healed) = around_the_heal(
        &dir,
        &fleet,
        &state,
        &Options::default().rate_limit_multiple(fleet.instance_urls().len() as f64),
    );
    let figures = CutFromRedis {
        left_rotation_after,
        back_in_rotation_after_heal,
        through_haproxy: (
            tally.ok.load(Ordering::Relaxed),
            tally.failed.load(Ordering::Relaxed),
        ),
        direct_answers: answers.into_iter().collect(),
    };
    println!("api-2 cut off from Redis: {figures:#?}");
    support::stop(fleet).await;
    (Outcome { whole, healed }, figures)
}

/// Drill 3: an instance cut off from Redis leaves HAProxy's rotation and
/// comes back after the heal, no request through HAProxy fails, no
/// acknowledged points change goes missing, no read after the heal is
/// stale beyond the window (while cut off, the instance reads the
/// database, not L1, once it has noticed), and the fleet admits at most
/// its instance count times the report limit in any window.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "one of the full partition drills, which scripts/drills --partitions runs"]
async fn an_instance_cut_off_from_redis_leaves_the_rotation_and_serves_fresh() {
    let (Outcome { whole, healed }, figures) = instance_cut_off_from_redis(Form::chosen()).await;
    assert_eq!(figures.through_haproxy.1, 0, "{figures:#?}");
    assert_eq!(never(&whole), [], "{whole}");
    assert_eq!(
        whole.counts()["points.acknowledged_missing"],
        0,
        "points.acknowledged_missing:\n{whole}"
    );
    assert_eq!(whole.counts()["ratelimit.over_limit"], 0, "{whole}");
    assert_eq!(healed.counts()["cache.stale"], 0, "{healed}");
    let stale = whole
        .cache
        .as_ref()
        .map(|cache| (cache.stale.count, cache.longest_stale_ms));
    println!("stale reads in the whole drill (before the instance noticed the cut): {stale:?}");
}

/// Drill 5: the replica of the notification queue's master cannot send
/// to its master (a one-way partition) for `form.hold`, then the link
/// between them flaps (cut 1 s, healed 1 s) `flaps` times, while three
/// producers enqueue through HAProxy.
pub(crate) async fn replica_link_fails(form: Form, wait_replicas: u32, flaps: u32) -> Report {
    enqueues_under(
        "replica-link",
        form,
        wait_replicas,
        async |fleet: &mut Running, master: &str, replica: &str| {
            fleet.one_way(replica, master).expect("cuts one way");
            tokio::time::sleep(form.hold).await;
            fleet.heal().expect("heals");
            for _ in 0..flaps {
                tokio::time::sleep(Duration::from_secs(1)).await;
                fleet.partition(&[&[master], &[replica]]).expect("cuts");
                tokio::time::sleep(Duration::from_secs(1)).await;
                fleet.heal().expect("heals");
            }
        },
    )
    .await
}

/// Drill 5: a replica that cannot answer its master, then a flapping link
/// between them: no acknowledged job is lost and none runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "one of the full partition drills, which scripts/drills --partitions runs"]
async fn a_one_way_and_a_flapping_replica_link_lose_no_job() {
    let full = std::env::var("SEAWALL_DRILL_FULL").is_ok_and(|v| v == "1");
    for wait_replicas in wait_settings(&[1]) {
        let report =
            replica_link_fails(Form::chosen(), wait_replicas, if full { 20 } else { 3 }).await;
        let counts = report.counts();
        assert_eq!(
            never(&report),
            [],
            "wait_replicas {wait_replicas}:\n{report}"
        );
        assert_eq!(counts["queue.lost"], 0, "{report}");
        assert_eq!(counts["queue.run_twice_explained"], 0, "{report}");
    }
}
