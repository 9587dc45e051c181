//! One line of a history file, as written and read.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What an event says about an operation, or that it is a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// A client is about to send a request.
    Invoke,
    /// The request succeeded, and the answer says what it did.
    Ok,
    /// The request certainly did nothing (a refusal: sold out, 409, 422,
    /// a 503 that says "not queued").
    Fail,
    /// Nobody knows whether the request took effect (a timeout, a lost
    /// connection, a 503 that says "unknown").
    Info,
    /// The nemesis did something to the fleet.
    Fault,
}

/// The workloads a drill runs; each has its own operations and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// `enqueue` onto a durable queue whose jobs write outbox rows.
    Queue,
    /// `order` one unit of a time sale.
    Sale,
    /// `issue` a coupon of a campaign.
    Coupon,
    /// `change` a user's points balance.
    Points,
    /// `check` a rate limiter.
    Ratelimit,
    /// `write` and `read` a cached register.
    Cache,
    /// `resume` and `pause` a scheduler of recurring jobs, whose ticks
    /// each make one job.
    Schedule,
}

impl Workload {
    /// The name the history uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queue => "queue",
            Self::Sale => "sale",
            Self::Coupon => "coupon",
            Self::Points => "points",
            Self::Ratelimit => "ratelimit",
            Self::Cache => "cache",
            Self::Schedule => "schedule",
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of a history: an invoke, its completion, or a fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Microseconds since the Unix epoch.
    pub t: u64,
    /// The recording client (`sale-3`), or `nemesis`.
    pub process: String,
    /// What the event says.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The operation, unique per file; a completion carries its invoke's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// The workload (absent on faults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<Workload>,
    /// The operation (`order`) or the fault (`partition`).
    pub op: String,
    /// The request's inputs on an invoke, the answer on a completion, the
    /// fault's targets on a fault.
    #[serde(default)]
    pub value: serde_json::Value,
}
