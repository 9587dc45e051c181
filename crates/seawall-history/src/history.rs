//! Histories read back: the events of one or more files, each invoke paired
//! with its completion and its value read into a typed [`Call`].

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::event::{Event, EventType, Workload};

/// What an operation asked for, and (once it ended `ok`) what the answer
/// said. Reply fields are `None` until an `ok` fills them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Call {
    /// `queue` / `enqueue`.
    Enqueue {
        /// The queue (`notification`), when the client named it.
        queue: Option<String>,
        /// The `Idempotency-Key` sent, which the job carries.
        key: Option<String>,
        /// The job acknowledged, as `queue:id` (the outbox's `job` column).
        job: Option<String>,
    },
    /// `sale` / `order`.
    Order {
        /// The sale.
        sale: i64,
        /// The buyer.
        user: i64,
        /// The `Idempotency-Key` sent, if any.
        key: Option<String>,
        /// The order id acknowledged.
        order: Option<String>,
        /// The unit acknowledged.
        unit: Option<i64>,
    },
    /// `coupon` / `issue`.
    Issue {
        /// The campaign.
        campaign: i64,
        /// The user.
        user: i64,
        /// The coupon's code acknowledged.
        coupon: Option<String>,
        /// The coupon's number acknowledged.
        number: Option<i64>,
    },
    /// `points` / `change`: earn (positive) or use (negative).
    Change {
        /// The user.
        user: i64,
        /// The `Idempotency-Key` sent; a change without one cannot be
        /// matched with the ledger.
        key: Option<String>,
        /// Points added (negative: taken).
        amount: i64,
        /// The balance the answer reported.
        balance: Option<i64>,
    },
    /// `ratelimit` / `check`.
    Check {
        /// The limiter's key.
        key: String,
        /// Requests the key may make per window.
        limit: u64,
        /// The window, in milliseconds.
        window_ms: u64,
        /// Whether the request was let through.
        admitted: Option<bool>,
    },
    /// `cache` / `write`.
    Write {
        /// The key.
        key: String,
        /// The version written; versions of a key increase with every write.
        value: i64,
    },
    /// `cache` / `read`.
    Read {
        /// The key.
        key: String,
        /// The version read (`None`: absent, or not `ok`).
        value: Option<i64>,
    },
    /// `schedule` / `resume`: a scheduler of recurring jobs runs from its
    /// `ok` on (a scheduler already running is left as it is).
    Resume {
        /// Its queue.
        queue: String,
        /// Its id in that queue.
        scheduler: String,
        /// Its interval, in milliseconds: it ticks on the whole multiples
        /// of it since the Unix epoch.
        every_ms: u64,
    },
    /// `schedule` / `pause`: from its invoke on, the scheduler's ticks
    /// make no job.
    Pause {
        /// Its queue.
        queue: String,
        /// Its id in that queue.
        scheduler: String,
    },
}

impl Call {
    /// The workload this call belongs to.
    pub fn workload(&self) -> Workload {
        match self {
            Self::Enqueue { .. } => Workload::Queue,
            Self::Order { .. } => Workload::Sale,
            Self::Issue { .. } => Workload::Coupon,
            Self::Change { .. } => Workload::Points,
            Self::Check { .. } => Workload::Ratelimit,
            Self::Write { .. } | Self::Read { .. } => Workload::Cache,
            Self::Resume { .. } | Self::Pause { .. } => Workload::Schedule,
        }
    }

    fn invoked(workload: Workload, op: &str, value: serde_json::Value) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Enqueue {
            queue: Option<String>,
            key: Option<String>,
        }
        #[derive(Deserialize)]
        struct Order {
            sale: i64,
            user: i64,
            key: Option<String>,
        }
        #[derive(Deserialize)]
        struct Issue {
            campaign: i64,
            user: i64,
        }
        #[derive(Deserialize)]
        struct Change {
            user: i64,
            key: Option<String>,
            amount: i64,
        }
        #[derive(Deserialize)]
        struct Check {
            key: String,
            limit: u64,
            window_ms: u64,
        }
        #[derive(Deserialize)]
        struct Write {
            key: String,
            value: i64,
        }
        #[derive(Deserialize)]
        struct Read {
            key: String,
        }
        #[derive(Deserialize)]
        struct Resume {
            queue: String,
            scheduler: String,
            every_ms: u64,
        }
        #[derive(Deserialize)]
        struct Pause {
            queue: String,
            scheduler: String,
        }
        let call = match (workload, op) {
            (Workload::Queue, "enqueue") => {
                let Enqueue { queue, key } = shaped(value)?;
                Self::Enqueue {
                    queue,
                    key,
                    job: None,
                }
            }
            (Workload::Sale, "order") => {
                let Order { sale, user, key } = shaped(value)?;
                Self::Order {
                    sale,
                    user,
                    key,
                    order: None,
                    unit: None,
                }
            }
            (Workload::Coupon, "issue") => {
                let Issue { campaign, user } = shaped(value)?;
                Self::Issue {
                    campaign,
                    user,
                    coupon: None,
                    number: None,
                }
            }
            (Workload::Points, "change") => {
                let Change { user, key, amount } = shaped(value)?;
                Self::Change {
                    user,
                    key,
                    amount,
                    balance: None,
                }
            }
            (Workload::Ratelimit, "check") => {
                let Check {
                    key,
                    limit,
                    window_ms,
                } = shaped(value)?;
                if limit == 0 || window_ms == 0 {
                    return Err("a check's limit and window_ms must be positive".to_owned());
                }
                Self::Check {
                    key,
                    limit,
                    window_ms,
                    admitted: None,
                }
            }
            (Workload::Cache, "write") => {
                let Write { key, value } = shaped(value)?;
                Self::Write { key, value }
            }
            (Workload::Cache, "read") => {
                let Read { key } = shaped(value)?;
                Self::Read { key, value: None }
            }
            (Workload::Schedule, "resume") => {
                let Resume {
                    queue,
                    scheduler,
                    every_ms,
                } = shaped(value)?;
                if every_ms == 0 {
                    return Err("a resume's every_ms must be positive".to_owned());
                }
                Self::Resume {
                    queue,
                    scheduler,
                    every_ms,
                }
            }
            (Workload::Schedule, "pause") => {
                let Pause { queue, scheduler } = shaped(value)?;
                Self::Pause { queue, scheduler }
            }
            (workload, op) => return Err(format!("{workload} has no operation {op:?}")),
        };
        Ok(call)
    }

    /// Fills the reply fields from an `ok` answer.
    fn answered(&mut self, value: serde_json::Value) -> Result<(), String> {
        #[derive(Deserialize)]
        struct Enqueued {
            job: String,
        }
        #[derive(Deserialize)]
        struct Ordered {
            order: String,
            unit: Option<i64>,
        }
        #[derive(Deserialize)]
        struct Issued {
            coupon: String,
            number: Option<i64>,
        }
        #[derive(Deserialize)]
        struct Changed {
            balance: Option<i64>,
        }
        #[derive(Deserialize)]
        struct Checked {
            admitted: bool,
        }
        #[derive(Deserialize)]
        struct Read {
            // Present and null means "absent"; missing is an error.
            #[serde(deserialize_with = "present")]
            value: Option<i64>,
        }
        match self {
            Self::Enqueue { job, .. } => *job = Some(shaped::<Enqueued>(value)?.job),
            Self::Order { order, unit, .. } => {
                let answer: Ordered = shaped(value)?;
                *order = Some(answer.order);
                *unit = answer.unit;
            }
            Self::Issue { coupon, number, .. } => {
                let answer: Issued = shaped(value)?;
                *coupon = Some(answer.coupon);
                *number = answer.number;
            }
            Self::Change { balance, .. } => *balance = shaped::<Changed>(value)?.balance,
            Self::Check { admitted, .. } => *admitted = Some(shaped::<Checked>(value)?.admitted),
            Self::Write { .. } | Self::Resume { .. } | Self::Pause { .. } => {}
            Self::Read { value: read, .. } => *read = shaped::<Read>(value)?.value,
        }
        Ok(())
    }
}

fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    Option::<i64>::deserialize(deserializer)
}

fn shaped<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
    // A missing value reads as an empty object, so ops without inputs parse.
    let value = if value.is_null() {
        serde_json::Value::Object(serde_json::Map::new())
    } else {
        value
    };
    serde_json::from_value(value).map_err(|error| format!("value: {error}"))
}

/// How an operation ended, and when (microseconds since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded.
    Ok(u64),
    /// It certainly did nothing.
    Fail(u64),
    /// Unknown: it may have taken effect at any time after its invoke.
    /// `None` when the history ends before any completion.
    Info(Option<u64>),
}

impl Outcome {
    /// Whether it succeeded.
    pub fn is_ok(self) -> bool {
        matches!(self, Self::Ok(_))
    }

    /// Whether it certainly did nothing.
    pub fn is_fail(self) -> bool {
        matches!(self, Self::Fail(_))
    }

    /// Whether its effect is unknown.
    pub fn is_info(self) -> bool {
        matches!(self, Self::Info(_))
    }

    /// When the client learned how it ended, if it did.
    pub fn at(self) -> Option<u64> {
        match self {
            Self::Ok(t) | Self::Fail(t) | Self::Info(Some(t)) => Some(t),
            Self::Info(None) => None,
        }
    }
}

/// One operation: its invoke and its completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// The recording client.
    pub process: String,
    /// When it was invoked (microseconds since the epoch).
    pub invoke: u64,
    /// What it asked for and what it got.
    pub call: Call,
    /// How it ended.
    pub outcome: Outcome,
}

/// Something the nemesis did.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// When (microseconds since the epoch).
    pub t: u64,
    /// `partition`, `isolate`, `one-way`, `heal`, `kill`, `pause`,
    /// `resume`, `restart`, `start` or `stop` (others are kept as written).
    pub op: String,
    /// Its targets, e.g. `{"host": "worker-1"}`.
    pub value: serde_json::Value,
}

impl Fault {
    /// The hosts it names: every string under `host`, `hosts`, `from`,
    /// `to`, `sides` or `targets`, at any depth of arrays.
    pub fn hosts(&self) -> Vec<&str> {
        fn strings<'a>(value: &'a serde_json::Value, into: &mut Vec<&'a str>) {
            match value {
                serde_json::Value::String(host) => into.push(host),
                serde_json::Value::Array(items) => {
                    items.iter().for_each(|item| strings(item, into));
                }
                _ => {}
            }
        }
        let mut hosts = Vec::new();
        match &self.value {
            serde_json::Value::Object(fields) => {
                for name in ["host", "hosts", "from", "to", "sides", "targets"] {
                    if let Some(value) = fields.get(name) {
                        strings(value, &mut hosts);
                    }
                }
            }
            other => strings(other, &mut hosts),
        }
        hosts
    }

    /// Whether it takes `host` out: stops or freezes its process (a kill,
    /// pause, stop or restart) or cuts it off from every other host (an
    /// isolation).
    pub fn takes_out(&self, host: &str) -> bool {
        matches!(
            self.op.as_str(),
            "kill" | "pause" | "stop" | "restart" | "isolate"
        ) && self.value.get("host").and_then(serde_json::Value::as_str) == Some(host)
    }

    /// Whether it cuts `a` and `b` apart: a partition with them on
    /// different sides, or a one-way link between them (either way, since
    /// a request without its answer is lost as well). A host on no side
    /// of a partition still reaches every host.
    pub fn separates(&self, a: &str, b: &str) -> bool {
        match self.op.as_str() {
            "partition" => {
                let side_of = |host: &str| {
                    self.value
                        .get("sides")
                        .and_then(serde_json::Value::as_array)
                        .and_then(|sides| {
                            sides.iter().position(|side| {
                                side.as_array()
                                    .is_some_and(|side| side.iter().any(|name| name == host))
                            })
                        })
                };
                matches!((side_of(a), side_of(b)), (Some(x), Some(y)) if x != y)
            }
            "one-way" => {
                let end = |name: &str| self.value.get(name).and_then(serde_json::Value::as_str);
                let (from, to) = (end("from"), end("to"));
                (from == Some(a) && to == Some(b)) || (from == Some(b) && to == Some(a))
            }
            _ => false,
        }
    }
}

/// Operations and faults, from one or more files, in invoke order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    ops: Vec<Op>,
    faults: Vec<Fault>,
    start: Option<u64>,
    events: usize,
}

impl History {
    /// Reads the events of one file's text; `name` names it in errors.
    pub fn parse(name: &str, text: &str) -> Result<Self> {
        Self::from_reader(name, text.as_bytes())
    }

    /// Reads the events of one file from `reader`; `name` names it in
    /// errors. Ids are paired within this file only.
    pub fn from_reader(name: &str, reader: impl BufRead) -> Result<Self> {
        let mut reading = Reading::new(name);
        for (index, line) in reader.lines().enumerate() {
            let line = line.map_err(|source| Error::Io {
                path: name.into(),
                source,
            })?;
            reading.line(index + 1, &line)?;
        }
        Ok(reading.finish())
    }

    /// Reads every file and merges them (see [`History::merge`]): the
    /// clients' files and the nemesis's `faults.jsonl`, say.
    pub fn read<P: AsRef<Path>>(paths: &[P]) -> Result<Self> {
        let mut parts = Vec::with_capacity(paths.len());
        for path in paths {
            let path = path.as_ref();
            let file = std::fs::File::open(path).map_err(|source| Error::Io {
                path: path.to_owned(),
                source,
            })?;
            let name = path.display().to_string();
            parts.push(Self::from_reader(&name, std::io::BufReader::new(file))?);
        }
        Ok(Self::merge(parts))
    }

    /// One history of several, ordered by time (ties keep the order of
    /// `parts`, then of each part).
    pub fn merge(parts: impl IntoIterator<Item = History>) -> Self {
        let mut merged = Self::default();
        for part in parts {
            merged.ops.extend(part.ops);
            merged.faults.extend(part.faults);
            merged.events += part.events;
            merged.start = match (merged.start, part.start) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        merged.ops.sort_by_key(|op| op.invoke);
        merged.faults.sort_by_key(|fault| fault.t);
        merged
    }

    /// The operations, by invoke time.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// The faults, by time.
    pub fn faults(&self) -> &[Fault] {
        &self.faults
    }

    /// The time of the first event, if any.
    pub fn start(&self) -> Option<u64> {
        self.start
    }

    /// How many events (lines) were read.
    pub fn events(&self) -> usize {
        self.events
    }
}

/// One file being read: the ops so far and those still waiting for their
/// completion, by id (with the invoke's operation name, which the
/// completion must repeat).
struct Reading<'a> {
    name: &'a str,
    history: History,
    waiting: HashMap<u64, (usize, String)>,
    seen: HashSet<u64>,
}

impl<'a> Reading<'a> {
    fn new(name: &'a str) -> Self {
        Self {
            name,
            history: History::default(),
            waiting: HashMap::new(),
            seen: HashSet::new(),
        }
    }

    fn malformed(&self, line: usize, reason: String) -> Error {
        malformed(self.name, line, reason)
    }

    fn line(&mut self, number: usize, text: &str) -> Result<()> {
        if text.trim().is_empty() {
            return Ok(());
        }
        let event: Event = serde_json::from_str(text).map_err(|source| Error::Line {
            file: self.name.to_owned(),
            line: number,
            source,
        })?;
        self.history.events += 1;
        self.history.start = Some(self.history.start.map_or(event.t, |t| t.min(event.t)));
        if event.kind == EventType::Fault {
            self.history.faults.push(Fault {
                t: event.t,
                op: event.op,
                value: event.value,
            });
            return Ok(());
        }
        let Some(id) = event.id else {
            return Err(self.malformed(number, format!("a {:?} event needs an id", event.kind)));
        };
        match event.kind {
            EventType::Invoke => {
                let Some(workload) = event.workload else {
                    return Err(self.malformed(number, "an invoke needs a workload".to_owned()));
                };
                if !self.seen.insert(id) {
                    return Err(self.malformed(number, format!("id {id} is invoked twice")));
                }
                let call = Call::invoked(workload, &event.op, event.value).map_err(|reason| {
                    self.malformed(number, format!("{workload} {}: {reason}", event.op))
                })?;
                self.waiting.insert(id, (self.history.ops.len(), event.op));
                self.history.ops.push(Op {
                    process: event.process,
                    invoke: event.t,
                    call,
                    outcome: Outcome::Info(None),
                });
            }
            EventType::Ok | EventType::Fail | EventType::Info => {
                let Some((index, invoked)) = self.waiting.remove(&id) else {
                    let reason = if self.seen.contains(&id) {
                        format!("id {id} completes twice")
                    } else {
                        format!("id {id} completes before (or without) its invoke")
                    };
                    return Err(self.malformed(number, reason));
                };
                let name = self.name;
                let op = &mut self.history.ops[index];
                if event.t < op.invoke {
                    let reason = format!("id {id} completes before its invoke's time");
                    return Err(malformed(name, number, reason));
                }
                // An id pairs the events of one file; a completion that
                // names another process, workload or operation is another
                // client's, or a mistake either way.
                let workload = op.call.workload();
                if event.process != op.process
                    || event.workload != Some(workload)
                    || event.op != invoked
                {
                    let reason = format!(
                        "id {id} completes as {} {} {}, but was invoked as {} {workload} {invoked}",
                        event.process,
                        event
                            .workload
                            .map_or_else(|| "(no workload)".to_owned(), |w| w.to_string()),
                        event.op,
                        op.process,
                    );
                    return Err(malformed(name, number, reason));
                }
                op.outcome = if event.kind == EventType::Ok {
                    op.call.answered(event.value).map_err(|reason| {
                        malformed(
                            name,
                            number,
                            format!("{workload} {} ok: {reason}", event.op),
                        )
                    })?;
                    Outcome::Ok(event.t)
                } else if event.kind == EventType::Fail {
                    Outcome::Fail(event.t)
                } else {
                    Outcome::Info(Some(event.t))
                };
            }
            // Faults returned above.
            EventType::Fault => {}
        }
        Ok(())
    }

    fn finish(mut self) -> History {
        self.history.ops.sort_by_key(|op| op.invoke);
        self.history.faults.sort_by_key(|fault| fault.t);
        self.history
    }
}

fn malformed(file: &str, line: usize, reason: String) -> Error {
    Error::Malformed {
        file: file.to_owned(),
        line,
        reason,
    }
}
