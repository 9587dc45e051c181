//! Histories written by hand, in the file format, with times in
//! milliseconds from a fixed start.

use seawall_history::{FinalState, History, Options, Report, check};
use serde_json::{Value, json};

/// The first event's time, µs since the epoch.
pub(crate) const START: u64 = 1_764_000_000_000_000;

/// `ms` after [`START`], in µs.
pub(crate) fn at(ms: u64) -> u64 {
    START + ms * 1000
}

/// A history file being written: one operation or fault at a time.
#[derive(Default)]
pub(crate) struct Lines {
    lines: Vec<String>,
    next_id: u64,
}

impl Lines {
    /// An operation of `workload` by `process`, invoked at `from` ms and
    /// completed with `kind` (`ok`, `fail`, `info`, or `none` for never) at
    /// `to` ms.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn op(
        &mut self,
        process: &str,
        workload: &str,
        op: &str,
        from: u64,
        value: Value,
        kind: &str,
        to: u64,
        reply: Value,
    ) -> &mut Self {
        let id = self.next_id;
        self.next_id += 1;
        self.lines.push(event(
            at(from),
            process,
            "invoke",
            Some(id),
            workload,
            op,
            value,
        ));
        if kind != "none" {
            self.lines
                .push(event(at(to), process, kind, Some(id), workload, op, reply));
        }
        self
    }

    /// A fault at `t` ms.
    pub(crate) fn fault(&mut self, t: u64, op: &str, value: Value) -> &mut Self {
        self.lines
            .push(event(at(t), "nemesis", "fault", None, "", op, value));
        self
    }

    /// The file's text.
    pub(crate) fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// The history read back.
    pub(crate) fn history(&self) -> History {
        History::parse("test.jsonl", &self.text()).expect("a well-formed history")
    }
}

/// One event's line; no `id` or `workload` where they are `None` or empty.
fn event(
    t: u64,
    process: &str,
    kind: &str,
    id: Option<u64>,
    workload: &str,
    op: &str,
    value: Value,
) -> String {
    let mut event = serde_json::Map::new();
    event.insert("t".to_owned(), json!(t));
    event.insert("process".to_owned(), json!(process));
    event.insert("type".to_owned(), json!(kind));
    if let Some(id) = id {
        event.insert("id".to_owned(), json!(id));
    }
    if !workload.is_empty() {
        event.insert("workload".to_owned(), json!(workload));
    }
    event.insert("op".to_owned(), json!(op));
    event.insert("value".to_owned(), value);
    Value::Object(event).to_string()
}

/// Checks `lines` against the final state `state` (JSON) with `options`.
pub(crate) fn report_with(lines: &Lines, state: &Value, options: &Options) -> Report {
    let state = FinalState::parse("state.json", &state.to_string()).expect("a valid state");
    let report = check(&lines.history(), &state, options).expect("a state with every section");
    // Every report renders, and as JSON.
    assert!(!report.to_string().is_empty());
    serde_json::to_string(&report).expect("a report serializes");
    report
}

/// Checks `lines` against `state` with the default options.
pub(crate) fn report(lines: &Lines, state: &Value) -> Report {
    report_with(lines, state, &Options::default())
}

/// The count of `kind` (`queue.lost`).
pub(crate) fn count(report: &Report, kind: &str) -> usize {
    *report
        .counts()
        .get(kind)
        .unwrap_or_else(|| panic!("no kind {kind} in {report}"))
}
