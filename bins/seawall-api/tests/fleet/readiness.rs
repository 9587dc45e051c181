//! Whether an instance's `/readyz` tells the truth about its enqueues: a
//! watcher asks every instance's `/readyz` every 100 ms through a drill,
//! and the drill's history says, for each moment, whether the last enqueue
//! to that instance answered before it, the one in flight then, and the
//! next one sent were acknowledged. An answer disagrees with them only
//! where all contradict it: an enqueue sent while cut off may hang until
//! the link heals or the client gives up, so its answer, either way, says
//! nothing certain about the moments it hung through, and the next is sent
//! only once it ends; the one answered before says how things stood up to
//! then. So a stretch of disagreement starts once an enqueue's answer has
//! shown the change, not at the fault itself, and a loaded machine's slow
//! answers do not stretch it. The two may disagree only for as long as a
//! probe takes to notice (a probe answers within a second), except that a
//! primary short of the replicas
//! `queue.wait_replicas` asks for leaves every instance ready, its enqueue
//! check a `warn`. The enqueue check's answer is compared with the
//! enqueues at the time it was read (its `time`), not when it was served:
//! it serves for 250 ms, and a probe waits for the one in flight, which a
//! loaded machine stretches. A second watcher sees when a replica is
//! promoted, and the history when the instances on the majority's side
//! enqueued again after it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use seawall_history::{History, Outcome, Workload};
use seawall_testkit::{Conn, Reply};

use crate::support::now_micros;

/// One answer of an instance's `/readyz`.
#[derive(Debug, Clone, Copy)]
struct Sample {
    instance: usize,
    /// When it was asked, µs since the Unix epoch (the history's clock).
    at: u64,
    /// The whole answer was 200.
    ready: bool,
    /// Its `queues:enqueue` check passed.
    enqueue_check: bool,
    /// That check warned: the primary took the probe's write but fewer
    /// replicas confirmed it than `queue.wait_replicas` asks, which every
    /// instance finds alike, so the instance stays ready.
    enqueue_warned: bool,
    /// When that check's answer was read, µs since the epoch (its `time`).
    read_at: Option<u64>,
}

/// Asks each instance's `/readyz` every 100 ms until stopped.
pub(crate) struct Watcher {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Watcher {
    pub(crate) fn start(bases: Vec<String>) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = bases
            .into_iter()
            .enumerate()
            .map(|(instance, base)| {
                let (samples, stop) = (Arc::clone(&samples), Arc::clone(&stop));
                tokio::spawn(async move {
                    let client = reqwest::Client::builder()
                        .timeout(Duration::from_secs(3))
                        .build()
                        .expect("a client");
                    while !stop.load(Ordering::Relaxed) {
                        let at = now_micros();
                        let (ready, enqueue_check, enqueue_warned, read_at) =
                            match client.get(format!("{base}/readyz")).send().await {
                                Ok(response) => {
                                    let ready = response.status() == 200;
                                    let body: serde_json::Value =
                                        response.json().await.unwrap_or_default();
                                    let check = &body["checks"]["queues:enqueue"][0];
                                    let read_at = check["time"]
                                        .as_str()
                                        .and_then(|time| humantime::parse_rfc3339(time).ok())
                                        .and_then(|time| {
                                            time.duration_since(std::time::UNIX_EPOCH).ok()
                                        })
                                        .and_then(|since| u64::try_from(since.as_micros()).ok());
                                    (
                                        ready,
                                        check["status"].as_str() == Some("pass"),
                                        check["status"].as_str() == Some("warn"),
                                        read_at,
                                    )
                                }
                                Err(_) => (false, false, false, None),
                            };
                        samples.lock().push(Sample {
                            instance,
                            at,
                            ready,
                            enqueue_check,
                            enqueue_warned,
                            read_at,
                        });
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                })
            })
            .collect();
        Self {
            samples,
            stop,
            tasks,
        }
    }

    /// Stops asking; compares the answers with the enqueues that the
    /// clients named `queue-<n>` (instance n−1) recorded in `history`, and
    /// finds when the `majority` instances enqueued again after
    /// `promotion`, if it saw one.
    pub(crate) async fn finish(
        self,
        history: &Path,
        promotion: Promotion,
        majority: &[usize],
    ) -> Agreement {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("a watcher ends");
        }
        let promoted_at = promotion.finish().await;
        let samples = std::mem::take(&mut *self.samples.lock());
        // Kept beside the history, for a person reading a failed drill.
        let lines: String = samples
            .iter()
            .map(|sample| {
                format!(
                    "{}\n",
                    serde_json::json!({
                        "instance": sample.instance,
                        "at": sample.at,
                        "ready": sample.ready,
                        "enqueue_check": sample.enqueue_check,
                        "enqueue_warned": sample.enqueue_warned,
                        "read_at": sample.read_at,
                    })
                )
            })
            .collect();
        std::fs::write(history.with_file_name("readiness.jsonl"), lines).expect("writes");
        let enqueues = enqueues(history);
        let mut agreement = Agreement::of(&samples, &enqueues);
        agreement.enqueued_after_promotion = promoted_at.map(|promoted| {
            majority
                .iter()
                .map(|instance| {
                    enqueues
                        .get(instance)
                        .into_iter()
                        .flatten()
                        .find(|enqueue| enqueue.acknowledged && enqueue.to >= promoted)
                        .map(|enqueue| Duration::from_micros(enqueue.to - promoted))
                })
                .collect()
        });
        agreement
    }
}

/// Watches a replica until it reports itself a primary.
pub(crate) struct Promotion {
    task: tokio::task::JoinHandle<Option<u64>>,
    stop: Arc<AtomicBool>,
}

impl Promotion {
    /// Asks `replica` its `ROLE` every 20 ms.
    pub(crate) fn watch(replica: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let task = tokio::task::spawn_blocking(move || {
            while !stopped.load(Ordering::Relaxed) {
                let at = now_micros();
                let role = Conn::connect(replica)
                    .and_then(|mut conn| conn.cmd(&["ROLE"]))
                    .ok();
                let first = role
                    .as_ref()
                    .and_then(Reply::as_array)
                    .and_then(|items| items.first())
                    .and_then(Reply::as_str)
                    .map(str::to_owned);
                if first.as_deref() == Some("master") {
                    return Some(at);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            None
        });
        Self { task, stop }
    }

    /// When the replica was first seen a primary, µs since the epoch.
    async fn finish(self) -> Option<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the watcher ends")
    }
}

/// An enqueue: sent at `from`, answered at `to`, acknowledged or not.
#[derive(Debug, Clone, Copy)]
struct Enqueue {
    from: u64,
    to: u64,
    acknowledged: bool,
}

/// The enqueues each instance answered, in the order they were sent.
fn enqueues(history: &Path) -> HashMap<usize, Vec<Enqueue>> {
    let history = History::read(&[history]).expect("reads the history");
    let mut by_instance: HashMap<usize, Vec<Enqueue>> = HashMap::new();
    for op in history.ops() {
        let instance = op
            .process
            .strip_prefix("queue-")
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| n.checked_sub(1));
        let (Some(instance), Workload::Queue) = (instance, op.call.workload()) else {
            continue;
        };
        let (to, acknowledged) = match op.outcome {
            Outcome::Ok(at) => (at, true),
            Outcome::Fail(at) | Outcome::Info(Some(at)) => (at, false),
            Outcome::Info(None) => continue,
        };
        by_instance.entry(instance).or_default().push(Enqueue {
            from: op.invoke,
            to,
            acknowledged,
        });
    }
    // In the order they were sent: `ops` is by invoke time.
    by_instance
}

/// The longest stretches, over every instance, in which `/readyz` and the
/// enqueues disagreed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Agreement {
    /// `/readyz` answered 200 while every enqueue sent meanwhile failed,
    /// other than while the enqueue check warned of replicas too few.
    pub(crate) ready_but_cannot_enqueue: Duration,
    /// The `queues:enqueue` check passed while enqueues failed.
    pub(crate) check_passed_but_cannot_enqueue: Duration,
    /// The `queues:enqueue` check failed while enqueues were acknowledged.
    pub(crate) check_failed_but_enqueued: Duration,
    /// Samples compared.
    pub(crate) samples: usize,
    /// Once a replica was promoted while the watchers ran: per instance
    /// on the majority's side, from the promotion to the answer of its
    /// first acknowledged enqueue after it (`None` inside: none was).
    pub(crate) enqueued_after_promotion: Option<Vec<Option<Duration>>>,
}

impl std::fmt::Display for Agreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "longest ready while enqueues failed (replicas not short) {:?}, longest enqueue check passing while enqueues failed {:?}, longest enqueue check failing while enqueues were acknowledged {:?} ({} samples); ",
            self.ready_but_cannot_enqueue,
            self.check_passed_but_cannot_enqueue,
            self.check_failed_but_enqueued,
            self.samples
        )?;
        match &self.enqueued_after_promotion {
            Some(after) => write!(
                f,
                "the majority's first acknowledged enqueue after the promotion: {after:?}"
            ),
            None => write!(f, "no promotion"),
        }
    }
}

impl Agreement {
    fn of(samples: &[Sample], enqueues: &HashMap<usize, Vec<Enqueue>>) -> Self {
        let mut agreement = Self::default();
        let mut by_instance: HashMap<usize, Vec<Sample>> = HashMap::new();
        for sample in samples {
            by_instance
                .entry(sample.instance)
                .or_default()
                .push(*sample);
        }
        for (instance, mut samples) in by_instance {
            samples.sort_by_key(|sample| sample.at);
            let Some(sent) = enqueues.get(&instance) else {
                continue;
            };
            // What the enqueues say of `at`: whether the last one answered
            // before it went through, the one in flight then, and the next
            // one sent. Each alone may mislead: one sent while cut off may
            // hang until the link heals (and be acknowledged) or the client
            // gives up (and fail), either way after the instance's state
            // changed; the next one is sent only once that one ends. A
            // sample disagrees with them only where all contradict it.
            let evidence = |at: u64| -> Vec<bool> {
                let before = sent
                    .iter()
                    .filter(|enqueue| enqueue.to < at)
                    .max_by_key(|enqueue| enqueue.to);
                let in_flight = sent
                    .iter()
                    .find(|enqueue| enqueue.from <= at && at <= enqueue.to);
                let next = sent.iter().find(|enqueue| enqueue.from >= at);
                before
                    .into_iter()
                    .chain(in_flight)
                    .chain(next)
                    .map(|enqueue| enqueue.acknowledged)
                    .collect()
            };
            let contradicts = |evidence: &[bool], enqueues: bool| {
                !evidence.is_empty()
                    && evidence
                        .iter()
                        .all(|&acknowledged| acknowledged != enqueues)
            };
            let mut ready_wrong: Option<(u64, u64)> = None;
            let mut passed_wrong: Option<(u64, u64)> = None;
            let mut check_wrong: Option<(u64, u64)> = None;
            let longest =
                |stretch: &mut Option<(u64, u64)>, at: u64, wrong: bool, most: &mut Duration| {
                    if wrong {
                        let (from, _) = stretch.get_or_insert((at, at));
                        let from = *from;
                        *stretch = Some((from, at.max(from)));
                        *most = (*most).max(Duration::from_micros(at.saturating_sub(from)));
                    } else {
                        *stretch = None;
                    }
                };
            for sample in &samples {
                let then = evidence(sample.at);
                if then.is_empty() {
                    continue;
                }
                agreement.samples += 1;
                longest(
                    &mut ready_wrong,
                    sample.at,
                    sample.ready && !sample.enqueue_warned && contradicts(&then, true),
                    &mut agreement.ready_but_cannot_enqueue,
                );
                // The check as of when it was read: a probe asked while a
                // check ran waits for that check's answer.
                let read_at = sample.read_at.unwrap_or(sample.at);
                let when_read = evidence(read_at);
                longest(
                    &mut passed_wrong,
                    read_at,
                    sample.enqueue_check && contradicts(&when_read, true),
                    &mut agreement.check_passed_but_cannot_enqueue,
                );
                longest(
                    &mut check_wrong,
                    read_at,
                    !sample.enqueue_check && contradicts(&when_read, false),
                    &mut agreement.check_failed_but_enqueued,
                );
            }
        }
        agreement
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    fn failing_check(instance: usize, at: u64) -> Sample {
        Sample {
            instance,
            at,
            ready: false,
            enqueue_check: false,
            enqueue_warned: false,
            read_at: Some(at),
        }
    }

    fn enqueue(from: u64, to: u64, acknowledged: bool) -> Enqueue {
        Enqueue {
            from,
            to,
            acknowledged,
        }
    }

    /// Checks read every 100 ms from `from` up to `to` (µs), all failing.
    fn failing_checks(from: u64, to: u64) -> Vec<Sample> {
        (from..to)
            .step_by(100_000)
            .map(|at| failing_check(0, at))
            .collect()
    }

    /// The instance is cut off from 10 s to 13 s: an enqueue sent at 11 s
    /// hangs until the link heals and is acknowledged at 13.2 s. The checks
    /// read while it hung failed rightly; the next enqueue's success says
    /// nothing of them, nor does the hung one's.
    #[test]
    fn an_enqueue_that_hung_through_the_heal_does_not_count_against_a_failing_check() {
        let enqueues = HashMap::from([(
            0,
            vec![
                enqueue(9 * S, 9 * S + 5_000, true),
                enqueue(10 * S - 10_000, 11 * S - 30_000, false),
                enqueue(11 * S, 13 * S + 200_000, true),
                enqueue(13 * S + 220_000, 13 * S + 225_000, true),
            ],
        )]);
        let agreement = Agreement::of(&failing_checks(10 * S, 13 * S + 200_000), &enqueues);
        assert_eq!(agreement.check_failed_but_enqueued, Duration::ZERO);
    }

    /// A check that goes on failing after an enqueue was answered with
    /// success is wrong from that answer on.
    #[test]
    fn a_check_failing_after_an_acknowledged_answer_disagrees() {
        let enqueues = HashMap::from([(
            0,
            vec![
                enqueue(10 * S, 10 * S + 5_000, true),
                enqueue(10 * S + 25_000, 14 * S, true),
            ],
        )]);
        let agreement = Agreement::of(&failing_checks(11 * S, 13 * S), &enqueues);
        assert!(
            agreement.check_failed_but_enqueued >= Duration::from_millis(1_800),
            "{agreement}"
        );
    }
}
