//! Random sequences of transitions (enqueue, with its deduplication
//! modes; fetch, acknowledge, fail, renew, cancel; a scheduler's ticks; the
//! queue's and the groups' rate limits; flows whose parent waits for its
//! children) and faults (a worker killed, a worker frozen past its lease, a
//! fetch call re-sent after it ran, a Redis that lost its last writes)
//! checked against a model after every step, on the memory backend and on
//! Redis: no job record is lost or duplicated, ids and lease tokens never
//! repeat, a lease that is gone ends nothing, and every answer is the
//! model's.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use proptest::prelude::*;

use crate::error::Error;
use crate::job::{Cancelled, ChildFailure, Counts, JobId, JobState};
use crate::memory::MemoryStore;
use crate::store::{
    AfterFailure, Failure, FetchCall, Fetched, FlowNode, KeyHold, Lease, MAX_BACKLOG_GROUPS,
    NewJob, Settings, Store, TickGuard, random_id,
};
use crate::wire::WIRE_VERSION;

const MAX_ATTEMPTS: u32 = 3;
const LONG: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
enum Op {
    /// A job enqueued with the key `k`, by `unique`: none (0), held until
    /// the job starts (1) or completes (2), or debounced (3: delayed, and a
    /// later job with the key while it waits replaces its payload).
    Enqueue {
        delayed: bool,
        group: u8,
        unique: u8,
    },
    /// Takes up to `want` jobs, under a lease that lasts or one that has
    /// already run out by the next call.
    Fetch {
        want: usize,
        lapsing: bool,
    },
    Ack(usize),
    Fail(usize, u8),
    Renew,
    Cancel(usize),
    /// The worker forgets a lease without a word, as a killed process does.
    Kill(usize),
    /// The worker keeps a lease but stops renewing it past its end, as a
    /// frozen process does; it may still report the run later.
    Freeze(usize),
    /// The last fetch call is sent again, as a client does that lost the
    /// answer (a dropped connection, a timeout).
    Replay,
    /// The server's state is kept, to be gone back to by `LoseWrites`.
    Snapshot,
    /// The server loses every write since the snapshot (a restart from an
    /// older AOF, a replica promoted before it caught up).
    LoseWrites,
    /// The scheduler's ticks are enqueued: `jobs` of them (0 plans only),
    /// by a call that holds the scheduler's plan, or a stale one (another
    /// process's, or from before a change), which must change nothing;
    /// `ahead` adds a tick still to come, whose job waits for it.
    Tick {
        jobs: u8,
        stale: bool,
        ahead: bool,
    },
    /// The scheduler is upserted: its template changed (the plan stays),
    /// or its schedule (planned anew); either cancels a job enqueued ahead
    /// for a tick still to come.
    Reschedule {
        schedule_changed: bool,
    },
    /// A rate limit of this many starts an hour (0 clears it): within a
    /// test every start since it was set counts.
    RateLimit(u8),
    /// Each named group may start [`GROUP_RATE`] jobs an hour, from now
    /// on (set once: a group that reached it sits out for the hour, which
    /// a later change would not undo).
    GroupRateLimit,
    /// A flow: a parent that waits for two children, each of which fails
    /// it (0), is ignored (1) or is dropped (2) when it fails for good
    /// (dead or cancelled).
    Flow(u8, u8),
}

/// The group rate limit [`Op::GroupRateLimit`] sets, in starts an hour.
const GROUP_RATE: u32 = 2;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<bool>(), 0_u8..3, 0_u8..4)
            .prop_map(|(delayed, group, unique)| Op::Enqueue { delayed, group, unique }),
        3 => (0_usize..4, any::<bool>()).prop_map(|(want, lapsing)| Op::Fetch { want, lapsing }),
        2 => any::<usize>().prop_map(Op::Ack),
        2 => (any::<usize>(), 0_u8..5).prop_map(|(pick, kind)| Op::Fail(pick, kind)),
        1 => Just(Op::Renew),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => any::<usize>().prop_map(Op::Kill),
        1 => any::<usize>().prop_map(Op::Freeze),
        1 => Just(Op::Replay),
        1 => Just(Op::Snapshot),
        1 => Just(Op::LoseWrites),
        2 => (0_u8..3, any::<bool>(), any::<bool>())
            .prop_map(|(jobs, stale, ahead)| Op::Tick { jobs, stale, ahead }),
        1 => any::<bool>().prop_map(|schedule_changed| Op::Reschedule { schedule_changed }),
        1 => (0_u8..4).prop_map(Op::RateLimit),
        1 => Just(Op::GroupRateLimit),
        2 => (0_u8..3, 0_u8..3).prop_map(|(first, second)| Op::Flow(first, second)),
    ]
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expected {
    /// A flow's parent whose children have not all finished.
    WaitingChildren,
    Waiting,
    Delayed,
    Active {
        token: String,
        lapsed: bool,
    },
    Completed,
    Dead,
    Gone,
}

#[derive(Debug, Clone)]
struct Model {
    state: Expected,
    runs: u32,
    failures: u32,
    stalls: u32,
    cancel: bool,
    /// The result its completion carried.
    result: Option<Vec<u8>>,
    /// Its payload: a debounce replaces it.
    payload: Vec<u8>,
    /// Its group: none (0), `a` (1) or `b` (2).
    group: u8,
    /// A flow's child: its parent and what its failure does (see
    /// [`Op::Flow`]), until it told the parent how it finished.
    parent: Option<(JobId, u8)>,
    /// A flow's parent: its children not finished yet.
    pending: u32,
}

impl Model {
    /// A job just enqueued, in `state`, with `payload`.
    fn new(state: Expected, payload: Vec<u8>, group: u8) -> Self {
        Self {
            state,
            runs: 0,
            failures: 0,
            stalls: 0,
            cancel: false,
            result: None,
            payload,
            group,
            parent: None,
            pending: 0,
        }
    }
}

/// A fetch call and what it answered, for a replay.
struct LastFetch {
    call: FetchCall,
    answer: Fetched,
}

#[derive(Default)]
struct World {
    jobs: Vec<(JobId, Model)>,
    held: Vec<Lease>,
    /// Every lease token ever given: none may come twice.
    tokens: HashSet<String>,
    last_fetch: Option<LastFetch>,
    snapshot: Option<Kept>,
    scheduler: Planned,
    limits: Limits,
    /// The job that last claimed the key `k`.
    key: Option<JobId>,
}

/// What a snapshot kept: the jobs, the scheduler, the limits and the key's
/// claimant.
type Kept = (Vec<(JobId, Model)>, Planned, Limits, Option<JobId>);

/// The queue's rate limit (starts an hour) with the starts counted against
/// it, and whether a handler's hold (an hour) stands.
#[derive(Debug, Clone, Default)]
struct Limits {
    rate: Option<(u64, u64)>,
    held: bool,
    /// Whether the group rate limit is set, and each group's starts since.
    group_rate: bool,
    group_started: [u64; 3],
}

impl Limits {
    /// How many of `waiting` jobs of `group` may start now, as far as the
    /// group rate limit goes (an unnamed group has none).
    fn group_room(&self, group: u8, waiting: u64) -> u64 {
        if group == 0 || !self.group_rate {
            return waiting;
        }
        waiting.min(u64::from(GROUP_RATE).saturating_sub(self.group_started[usize::from(group)]))
    }

    /// How many of `want` may start now.
    fn room(&self, want: u64) -> u64 {
        if self.held {
            return 0;
        }
        self.rate
            .map_or(want, |(max, started)| want.min(max.saturating_sub(started)))
    }
}

/// The model's scheduler `s`: its schedule's text (which flips between two),
/// revision and planned tick, and its last two ticks that made a job.
#[derive(Debug, Clone, Default)]
struct Planned {
    schedule: String,
    revision: u64,
    next_ms: u64,
    last: Option<(u64, JobId)>,
    previous: Option<(u64, JobId)>,
    /// When a runner looks at it next.
    due_ms: u64,
}

/// Faults a backend can be put through.
#[async_trait]
trait Faults: Sync {
    /// Keeps the state of every queue.
    async fn snapshot(&self);
    /// Goes back to the state kept.
    async fn lose_writes(&self);
}

#[async_trait]
impl Faults for MemoryStore {
    async fn snapshot(&self) {
        self.keep_snapshot();
    }

    async fn lose_writes(&self) {
        self.restore_snapshot();
    }
}

fn owns(model: &Model, lease: &Lease) -> bool {
    matches!(&model.state, Expected::Active { token, .. } if *token == lease.token)
}

impl World {
    fn find(&mut self, id: &JobId) -> &mut Model {
        let (_, model) = self
            .jobs
            .iter_mut()
            .find(|(job, _)| job == id)
            .expect("a job the model knows");
        model
    }

    /// What the scripts' `recover` does with leases that ran out; answers
    /// the flow children that finished so, for [`World::settle`].
    fn recover(&mut self, max_stalls: u32) -> Vec<JobId> {
        let mut finished = Vec::new();
        for (id, model) in &mut self.jobs {
            if let Expected::Active { lapsed: true, .. } = &model.state {
                model.stalls += 1;
                model.state = if model.cancel {
                    Expected::Gone
                } else if model.stalls > max_stalls {
                    Expected::Dead
                } else {
                    Expected::Waiting
                };
                model.cancel = false;
                if matches!(model.state, Expected::Gone | Expected::Dead) {
                    finished.push(id.clone());
                }
            }
        }
        finished
    }

    /// `recover`, its finished children told at once.
    fn recover_all(&mut self, max_stalls: u32) {
        let finished = self.recover(max_stalls);
        self.settle(&finished);
    }

    /// Each of `finished` (flow children, in a final state) tells its
    /// parent, once (as `tell_parent` and `take_inbox` in the prelude): a
    /// failure that fails the parent dead-letters it; otherwise the parent
    /// has one child fewer to wait for, and none left, it waits to run.
    fn settle(&mut self, finished: &[JobId]) {
        for child in finished {
            let model = self.find(child);
            let failed = model.state != Expected::Completed;
            let Some((parent, policy)) = model.parent.take() else {
                continue;
            };
            let Some((_, parent)) = self.jobs.iter_mut().find(|(id, _)| *id == parent) else {
                continue;
            };
            if failed && policy == 0 {
                if parent.state == Expected::WaitingChildren {
                    parent.state = Expected::Dead;
                }
                continue;
            }
            parent.pending = parent.pending.saturating_sub(1);
            if parent.pending == 0 && parent.state == Expected::WaitingChildren {
                parent.state = Expected::Waiting;
            }
        }
    }

    /// A waiting flow parent cancelled: its children not finished are
    /// cancelled too (running ones asked to stop).
    fn cancel_children(&mut self, parent: &JobId) -> Vec<JobId> {
        let mut finished = Vec::new();
        for (id, model) in &mut self.jobs {
            if model.parent.as_ref().is_some_and(|(of, _)| of == parent) {
                match model.state {
                    Expected::Waiting | Expected::Delayed | Expected::WaitingChildren => {
                        model.state = Expected::Gone;
                        finished.push(id.clone());
                    }
                    Expected::Active { .. } => model.cancel = true,
                    _ => {}
                }
            }
        }
        finished
    }

    /// Waiting jobs of `group`.
    fn waiting_in(&self, group: u8) -> u64 {
        self.jobs
            .iter()
            .filter(|(_, model)| model.group == group && model.state == Expected::Waiting)
            .count() as u64
    }

    fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for (_, model) in &self.jobs {
            match model.state {
                Expected::WaitingChildren => counts.waiting_children += 1,
                Expected::Waiting => counts.waiting += 1,
                Expected::Delayed => counts.delayed += 1,
                Expected::Active { .. } => counts.active += 1,
                Expected::Completed => counts.completed += 1,
                Expected::Dead => counts.dead += 1,
                Expected::Gone => {}
            }
        }
        counts
    }
}

fn settings() -> Settings {
    Settings {
        keep_completed: 1_000_000,
        keep_completed_for: Duration::ZERO,
        keep_dead: 1_000_000,
        max_stalls: 1,
        events_max_len: 100,
    }
}

fn call(want: usize, lease: Duration, acks: Vec<Lease>) -> FetchCall {
    FetchCall {
        caller: "5eed".to_owned(),
        request: random_id(),
        lease,
        want,
        max_bytes: usize::MAX,
        acks,
        results: Vec::new(),
    }
}

/// Runs `ops` on `store` (queue `queue`) and checks every step.
async fn check(
    store: &dyn Store,
    faults: &dyn Faults,
    queue: &str,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let max_stalls = settings().max_stalls;
    let mut world = World::default();
    let revision = store
        .upsert_scheduler(queue, "s", "every 1000 latest", b"{}")
        .await
        .expect("upserts");
    world.scheduler = Planned {
        schedule: "every 1000 latest".to_owned(),
        revision,
        ..Planned::default()
    };
    // A tick still to come: an hour after the test began.
    let later_ms = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(0)
        + 3_600_000;
    // Jobs enqueued so far: each one's payload is its number.
    let mut enqueued = 0_u64;
    for op in ops {
        match op {
            Op::Enqueue {
                delayed,
                group,
                unique,
            } => {
                let hold = match unique {
                    1 => Some(KeyHold::UntilStarted),
                    2 => Some(KeyHold::UntilCompleted),
                    3 => Some(KeyHold::Debounce),
                    _ => None,
                };
                // A debounced job waits for its delay.
                let delayed = delayed || hold == Some(KeyHold::Debounce);
                enqueued += 1;
                let payload = enqueued.to_string().into_bytes();
                // The job that holds `k` for this hold, as enqueue.lua
                // reads it: the key's last claimant, in a state the hold
                // names.
                let holder = hold.and_then(|hold| {
                    let claimant = world.key.clone()?;
                    let (_, model) = world.jobs.iter().find(|(id, _)| *id == claimant)?;
                    let holds = match (&model.state, hold) {
                        (Expected::Waiting | Expected::Delayed, KeyHold::UntilStarted) => {
                            model.runs == 0
                        }
                        (
                            Expected::Waiting | Expected::Delayed | Expected::Active { .. },
                            KeyHold::UntilCompleted,
                        ) => true,
                        (Expected::Delayed, KeyHold::Debounce) => model.runs == 0,
                        _ => false,
                    };
                    holds.then_some(claimant)
                });
                let job = NewJob {
                    payload: payload.clone(),
                    delay_ms: if delayed { 3_600_000 } else { 0 },
                    idempotency: hold.map(|hold| ("k".to_owned(), hold)),
                    ..grouped(["", "a", "b"][usize::from(group)])
                };
                let added = store
                    .enqueue(queue, &random_id(), vec![job], WIRE_VERSION)
                    .await
                    .expect("enqueues");
                prop_assert_eq!(added.len(), 1);
                if let Some(holder) = holder {
                    prop_assert_eq!(
                        &added[0],
                        &(holder.clone(), false),
                        "the key's holder answers"
                    );
                    if hold == Some(KeyHold::Debounce) {
                        world.find(&holder).payload = payload;
                    }
                    continue;
                }
                prop_assert!(added[0].1, "a new job: {:?}", added);
                if hold.is_some() {
                    world.key = Some(added[0].0.clone());
                }
                // Also after lost writes: ids of lost jobs are never given again.
                prop_assert!(
                    world.jobs.iter().all(|(id, _)| *id != added[0].0),
                    "a fresh id"
                );
                let state = if delayed {
                    Expected::Delayed
                } else {
                    Expected::Waiting
                };
                world
                    .jobs
                    .push((added[0].0.clone(), Model::new(state, payload, group)));
            }
            Op::Fetch { want, lapsing } => {
                let lease = if lapsing { Duration::ZERO } else { LONG };
                let call = call(want, lease, Vec::new());
                let fetched = store.fetch(queue, &call).await.expect("fetches");
                // Children that died as their leases ran out tell their
                // parents after this call: a parent so released is not
                // among the jobs it takes.
                let finished = world.recover(max_stalls);
                // Every waiting job a named group's rate limit lets start,
                // up to what the queue's limits let.
                let startable: u64 = (0..3)
                    .map(|group| world.limits.group_room(group, world.waiting_in(group)))
                    .sum();
                let room = world.limits.room(want as u64);
                prop_assert_eq!(fetched.jobs.len() as u64, startable.min(room));
                if let Some((_, started)) = &mut world.limits.rate {
                    *started += fetched.jobs.len() as u64;
                }
                prop_assert_eq!(fetched.lease_left, lease, "a call that ran leases anew");
                for taken in &fetched.jobs {
                    prop_assert!(
                        world.tokens.insert(taken.lease.token.clone()),
                        "token {} given twice",
                        taken.lease.token
                    );
                    let model = world.find(&taken.lease.id);
                    prop_assert_eq!(&model.state, &Expected::Waiting, "took a waiting job");
                    let group = model.group;
                    model.runs += 1;
                    prop_assert_eq!(taken.run, model.runs, "runs are counted");
                    prop_assert_eq!(taken.failures, model.failures);
                    model.state = Expected::Active {
                        token: taken.lease.token.clone(),
                        lapsed: lapsing,
                    };
                    world.held.push(taken.lease.clone());
                    if group > 0 && world.limits.group_rate {
                        let started = &mut world.limits.group_started[usize::from(group)];
                        *started += 1;
                        prop_assert!(
                            *started <= u64::from(GROUP_RATE),
                            "group {group} over its rate limit"
                        );
                    }
                }
                world.last_fetch = Some(LastFetch {
                    call,
                    answer: fetched,
                });
                world.settle(&finished);
            }
            Op::Ack(pick) | Op::Fail(pick, _) | Op::Kill(pick) | Op::Freeze(pick)
                if world.held.is_empty() =>
            {
                let _ = pick;
            }
            Op::Ack(pick) => {
                let lease = world.held.remove(pick % world.held.len());
                // Every other acknowledgement carries a result.
                let result = if pick % 2 == 0 {
                    format!("[{pick}]").into_bytes()
                } else {
                    Vec::new()
                };
                let call = FetchCall {
                    results: vec![result.clone()],
                    ..call(0, LONG, vec![lease.clone()])
                };
                let fetched = store.fetch(queue, &call).await.expect("acks");
                let model = world.find(&lease.id);
                let owned = owns(model, &lease);
                if owned {
                    model.state = Expected::Completed;
                    model.cancel = false;
                    model.result = (!result.is_empty()).then_some(result);
                    world.settle(std::slice::from_ref(&lease.id));
                }
                prop_assert_eq!(fetched.rejected, u32::from(!owned));
                world.last_fetch = Some(LastFetch {
                    call,
                    answer: fetched,
                });
                world.recover_all(max_stalls);
            }
            Op::Freeze(pick) => {
                // Its lease runs out now; the worker still holds it.
                let lease = world.held[pick % world.held.len()].clone();
                store
                    .renew(queue, Duration::ZERO, std::slice::from_ref(&lease))
                    .await
                    .expect("renews");
                let model = world.find(&lease.id);
                if let Expected::Active { token, lapsed } = &mut model.state
                    && *token == lease.token
                {
                    *lapsed = true;
                }
                world.recover_all(max_stalls);
            }
            Op::Replay => {
                let Some(last) = &world.last_fetch else {
                    continue;
                };
                let again = store.fetch(queue, &last.call).await.expect("fetches");
                // The first answer, less the leases no longer held; nothing
                // acknowledged twice, nothing leased to nobody.
                prop_assert_eq!(again.rejected, last.answer.rejected);
                let still: Vec<&Lease> = last
                    .answer
                    .jobs
                    .iter()
                    .map(|job| &job.lease)
                    .filter(|lease| {
                        world
                            .jobs
                            .iter()
                            .any(|(id, model)| *id == lease.id && owns(model, lease))
                    })
                    .collect();
                let answered: Vec<&Lease> = again.jobs.iter().map(|job| &job.lease).collect();
                // The leases began when the call first ran: a replay never
                // gives more time than that, and none to a lapsed lease.
                prop_assert!(again.lease_left <= last.call.lease);
                let lapsed = still.iter().any(|lease| {
                    world.jobs.iter().any(|(id, model)| {
                        *id == lease.id
                            && matches!(&model.state, Expected::Active { lapsed: true, .. })
                    })
                });
                if lapsed {
                    prop_assert_eq!(again.lease_left, Duration::ZERO, "a lapsed lease answered");
                } else if !answered.is_empty() && last.call.lease == LONG {
                    // Leases of a long call, a moment old.
                    prop_assert!(again.lease_left > LONG / 2, "{:?}", again.lease_left);
                }
                prop_assert_eq!(answered, still);
            }
            Op::Tick { jobs, stale, ahead } => {
                let planned = world.scheduler.clone();
                let mut ticks: Vec<u64> = (0..u64::from(jobs))
                    .map(|tick| planned.next_ms + 1_000 * tick)
                    .collect();
                if ahead {
                    ticks.push(later_ms.max(planned.next_ms));
                }
                let guard = TickGuard {
                    scheduler: "s".to_owned(),
                    revision: planned.revision + u64::from(stale),
                    next_ms: planned.next_ms,
                    new_next_ms: ticks.last().copied().unwrap_or(planned.next_ms) + 1_000,
                    due_ms: planned.next_ms + 500,
                    ticks,
                    job: grouped(""),
                };
                // The guard of the scheduler of another queue rides along
                // in the same call, and is stale.
                let other = TickGuard {
                    scheduler: "none".to_owned(),
                    ..guard.clone()
                };
                let mut added = store
                    .enqueue_ticks(queue, &random_id(), &[guard.clone(), other], WIRE_VERSION)
                    .await
                    .expect("enqueues ticks");
                prop_assert_eq!(added.len(), 2);
                prop_assert!(added[1].is_none(), "an unknown scheduler enqueued");
                let added = added.swap_remove(0);
                if stale {
                    prop_assert!(added.is_none(), "a stale plan enqueued {:?}", added);
                } else {
                    let added = added.expect("the plan held");
                    // A tick at or before the latest that made a job
                    // makes none again.
                    let made = world.scheduler.last.as_ref().map(|(tick, _)| *tick);
                    let fresh: Vec<u64> = guard
                        .ticks
                        .iter()
                        .copied()
                        .filter(|tick| made.is_none_or(|made| *tick > made))
                        .collect();
                    prop_assert_eq!(added.len(), fresh.len());
                    for (tick, id) in fresh.iter().zip(added) {
                        prop_assert!(world.jobs.iter().all(|(old, _)| *old != id), "a fresh id");
                        let state = if *tick >= later_ms {
                            Expected::Delayed
                        } else {
                            Expected::Waiting
                        };
                        let model = Model::new(state, b"1".to_vec(), 0);
                        world.jobs.push((id.clone(), model));
                        world.scheduler.previous = world.scheduler.last.replace((*tick, id));
                    }
                    world.scheduler.next_ms = guard.new_next_ms;
                    world.scheduler.due_ms = guard.due_ms;
                }
            }
            Op::Reschedule { schedule_changed } => {
                let planned = &mut world.scheduler;
                let schedule = if schedule_changed {
                    if planned.schedule.starts_with("every 1000") {
                        "every 2000 latest"
                    } else {
                        "every 1000 latest"
                    }
                } else {
                    planned.schedule.as_str()
                }
                .to_owned();
                let template = format!("{{\"r\":{}}}", planned.revision);
                let revision = store
                    .upsert_scheduler(queue, "s", &schedule, template.as_bytes())
                    .await
                    .expect("upserts");
                prop_assert_eq!(revision, planned.revision + 1);
                planned.revision = revision;
                // A job enqueued ahead for a tick still to come, and still
                // delayed, goes; one that left its delay (cancelled here)
                // keeps its tick made.
                let mut dropped = None;
                if let Some((tick, id)) = planned.last.clone()
                    && tick >= later_ms
                    && let Some((_, model)) = world.jobs.iter_mut().find(|(old, _)| *old == id)
                    && model.state == Expected::Delayed
                {
                    model.state = Expected::Gone;
                    dropped = Some(tick);
                    planned.last = planned.previous.take();
                }
                let planned = &mut world.scheduler;
                if schedule_changed {
                    planned.schedule = schedule;
                    planned.next_ms = 0;
                } else if let Some(tick) = dropped {
                    planned.next_ms = tick;
                }
                if schedule_changed || dropped.is_some() {
                    planned.due_ms = 0;
                }
            }
            Op::RateLimit(max) => {
                if max == 0 {
                    store.set_rate_limit(queue, 0, LONG).await.expect("clears");
                    world.limits.rate = None;
                } else {
                    store
                        .set_rate_limit(queue, u32::from(max), LONG)
                        .await
                        .expect("limits");
                    // A new limit counts the starts its window holds: none
                    // after a clear, every one since it was first set.
                    let started = world.limits.rate.map_or(0, |(_, started)| started);
                    world.limits.rate = Some((u64::from(max), started));
                }
            }
            Op::GroupRateLimit => {
                if !world.limits.group_rate {
                    store
                        .set_group_rate_limit(queue, GROUP_RATE, LONG)
                        .await
                        .expect("limits the groups");
                    world.limits.group_rate = true;
                }
            }
            Op::Flow(first, second) => {
                let policy = |code: u8| match code {
                    0 => ChildFailure::FailParent,
                    1 => ChildFailure::Ignore,
                    _ => ChildFailure::Drop,
                };
                let mut nodes = Vec::new();
                let mut payloads = Vec::new();
                for (parent, on_failure) in [(None, 0), (Some(0), first), (Some(0), second)] {
                    enqueued += 1;
                    let payload = enqueued.to_string().into_bytes();
                    payloads.push(payload.clone());
                    nodes.push(FlowNode {
                        queue: queue.to_owned(),
                        parent,
                        on_failure: policy(on_failure),
                        job: NewJob {
                            payload,
                            ..grouped("")
                        },
                    });
                }
                let ids = store
                    .enqueue_flow(&random_id(), &nodes, WIRE_VERSION)
                    .await
                    .expect("enqueues a flow");
                prop_assert_eq!(ids.len(), 3);
                for id in &ids {
                    prop_assert!(world.jobs.iter().all(|(old, _)| old != id), "a fresh id");
                }
                let mut parent = Model::new(Expected::WaitingChildren, payloads[0].clone(), 0);
                parent.pending = 2;
                world.jobs.push((ids[0].clone(), parent));
                for (n, code) in [(1, first), (2, second)] {
                    let mut child = Model::new(Expected::Waiting, payloads[n].clone(), 0);
                    child.parent = Some((ids[0].clone(), code));
                    world.jobs.push((ids[n].clone(), child));
                }
            }
            Op::Snapshot => {
                faults.snapshot().await;
                world.snapshot = Some((
                    world.jobs.clone(),
                    world.scheduler.clone(),
                    world.limits.clone(),
                    world.key.clone(),
                ));
            }
            Op::LoseWrites => {
                let Some((kept, scheduler, limits, key)) = world.snapshot.clone() else {
                    continue;
                };
                world.scheduler = scheduler;
                world.limits = limits;
                world.key = key;
                faults.lose_writes().await;
                // Jobs enqueued since are gone; the workers keep their leases,
                // whether the server still knows them or not.
                for (id, model) in &mut world.jobs {
                    match kept.iter().find(|(old, _)| old == id) {
                        Some((_, old)) => *model = old.clone(),
                        None => model.state = Expected::Gone,
                    }
                }
                world.last_fetch = None;
            }
            Op::Fail(pick, kind) => {
                let lease = world.held.remove(pick % world.held.len());
                let failure = match kind {
                    0 => Failure::Retry(Duration::ZERO),
                    1 => Failure::Retry(LONG),
                    2 => Failure::Dead,
                    3 => Failure::Hold(LONG),
                    _ => Failure::Requeue,
                };
                let after = store
                    .fail(queue, &lease, failure, "no")
                    .await
                    .expect("fails");
                let mut held = false;
                let model = world.find(&lease.id);
                let owned = owns(model, &lease);
                let expected = if !owned {
                    AfterFailure::Lost
                } else if model.cancel {
                    model.state = Expected::Gone;
                    AfterFailure::Cancelled
                } else if matches!(failure, Failure::Requeue) {
                    model.state = Expected::Waiting;
                    AfterFailure::Waiting
                } else if matches!(failure, Failure::Hold(_)) {
                    model.state = Expected::Waiting;
                    held = true;
                    AfterFailure::Waiting
                } else {
                    model.failures += 1;
                    let dead = matches!(failure, Failure::Dead) || model.failures >= MAX_ATTEMPTS;
                    let (state, after) = match failure {
                        _ if dead => (Expected::Dead, AfterFailure::Dead),
                        Failure::Retry(LONG) => (Expected::Delayed, AfterFailure::Delayed),
                        _ => (Expected::Waiting, AfterFailure::Waiting),
                    };
                    model.state = state;
                    after
                };
                prop_assert_eq!(after, expected);
                if matches!(expected, AfterFailure::Dead | AfterFailure::Cancelled) {
                    world.settle(std::slice::from_ref(&lease.id));
                }
                world.limits.held |= held;
            }
            Op::Kill(pick) => {
                world.held.remove(pick % world.held.len());
            }
            Op::Renew => {
                let held = world.held.clone();
                let renewed = store.renew(queue, LONG, &held).await.expect("renews");
                let mut lost = Vec::new();
                for (position, lease) in held.iter().enumerate() {
                    let model = world.find(&lease.id);
                    match &mut model.state {
                        Expected::Active { token, lapsed } if *token == lease.token => {
                            *lapsed = false
                        }
                        _ => lost.push(position),
                    }
                }
                prop_assert_eq!(renewed.lost, lost);
                world.recover_all(max_stalls);
            }
            Op::Cancel(pick) => {
                if world.jobs.is_empty() {
                    continue;
                }
                let index = pick % world.jobs.len();
                let id = world.jobs[index].0.clone();
                let answer = store.cancel(queue, &id).await.expect("cancels");
                let model = world.find(&id);
                let mut finished = Vec::new();
                let expected = match &model.state {
                    Expected::Waiting | Expected::Delayed => {
                        model.state = Expected::Gone;
                        finished.push(id.clone());
                        Cancelled::Removed
                    }
                    Expected::WaitingChildren => {
                        model.state = Expected::Gone;
                        finished.push(id.clone());
                        finished.extend(world.cancel_children(&id));
                        Cancelled::Removed
                    }
                    Expected::Active { .. } => {
                        model.cancel = true;
                        Cancelled::Requested
                    }
                    Expected::Completed => Cancelled::AlreadyFinished(JobState::Completed),
                    Expected::Dead => Cancelled::AlreadyFinished(JobState::Dead),
                    Expected::Gone => Cancelled::NotFound,
                };
                prop_assert_eq!(answer, expected);
                world.settle(&finished);
            }
        }
        // A flow job's word to its parent is read by the parent queue's
        // next script on Redis (at once on memory): the first count reads
        // what this step left, the second what that count's own upkeep
        // left (a child dead as its lease ran out).
        store.counts(queue).await.expect("counts");
        let counts = store.counts(queue).await.expect("counts");
        world.recover_all(max_stalls);
        // Every record is where the model says, and nowhere else.
        for (id, model) in &world.jobs {
            let info = store.job(queue, id).await.expect("reads");
            let state = info.as_ref().map(|info| info.state);
            let expected = match &model.state {
                Expected::WaitingChildren => Some(JobState::WaitingChildren),
                Expected::Waiting => Some(JobState::Waiting),
                Expected::Delayed => Some(JobState::Delayed),
                Expected::Active { .. } => Some(JobState::Active),
                Expected::Completed => Some(JobState::Completed),
                Expected::Dead => Some(JobState::Dead),
                Expected::Gone => None,
            };
            prop_assert_eq!(state, expected, "job {}", id);
            if let Some(info) = info {
                prop_assert_eq!(info.runs, model.runs);
                prop_assert_eq!((info.failures, info.stalls), (model.failures, model.stalls));
                prop_assert_eq!(&info.result, &model.result, "job {}'s result", id);
                prop_assert_eq!(&info.payload, &model.payload, "job {}'s payload", id);
            }
        }
        // The scheduler holds the plan the model made, and nothing else.
        let held = store
            .scheduler(queue, "s")
            .await
            .expect("reads")
            .expect("kept");
        prop_assert_eq!(
            (held.revision, held.next_ms, held.schedule.as_str()),
            (
                world.scheduler.revision,
                world.scheduler.next_ms,
                world.scheduler.schedule.as_str()
            )
        );
        prop_assert_eq!(
            (&held.last, &held.previous, held.due_ms),
            (
                &world.scheduler.last,
                &world.scheduler.previous,
                world.scheduler.due_ms
            )
        );
        prop_assert_eq!(counts, world.counts());
        // The same counts with the oldest head, which there is whenever a
        // job waits.
        let backlog = store
            .backlog(queue, MAX_BACKLOG_GROUPS)
            .await
            .expect("reads the backlog");
        prop_assert_eq!(backlog.counts, counts);
        prop_assert_eq!(backlog.oldest_waiting.is_some(), counts.waiting > 0);
    }
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn memory_transitions_follow_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let store = MemoryStore::new(settings());
        runtime().block_on(check(&store, &store, "q", ops))?;
    }
}

mod redis {
    use std::sync::atomic::{AtomicU32, Ordering};

    use fred::prelude::{Builder, Config};

    use super::*;
    use crate::redis::{RedisOptions, RedisStore};
    use crate::testing::{Dumped, dump_keys, restore_keys, server};

    /// Lost writes on a real server: every key of the test's prefix is
    /// dumped at the snapshot, and at the loss the prefix's keys are
    /// replaced by the dumps (with the time to live they had).
    struct DumpedKeys {
        prefix: String,
        kept: parking_lot::Mutex<Vec<Dumped>>,
    }

    #[async_trait]
    impl Faults for DumpedKeys {
        async fn snapshot(&self) {
            *self.kept.lock() = dump_keys(server(), &self.prefix);
        }

        async fn lose_writes(&self) {
            restore_keys(server(), &self.prefix, &self.kept.lock());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn redis_transitions_follow_the_model(ops in proptest::collection::vec(op(), 1..40)) {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let runtime = runtime();
            let prefix = format!("model-{}", NEXT.fetch_add(1, Ordering::Relaxed));
            let faults = DumpedKeys { prefix: prefix.clone(), kept: parking_lot::Mutex::default() };
            let store = runtime.block_on(async {
                let config = Config::from_url(&server().url()).expect("a URL");
                let options = RedisOptions {
                    prefix,
                    blocking_connections: 1,
                    acquire_timeout: Duration::from_secs(1),
                    replicas: None,
                    one_slot: false,
                };
                RedisStore::connect(Builder::from_config(config), options, settings())
                    .await
                    .expect("connects")
            });
            let store: Arc<dyn Store> = Arc::new(store);
            runtime.block_on(check(&*store, &faults, "q", ops))?;
        }
    }
}

/// A job of group `g` (capped at one running job) and its lease, on `store`.
async fn one_running(store: &dyn Store, queue: &str) -> Lease {
    store.set_group_limit(queue, 1).await.expect("caps");
    let job = |payload: &[u8]| NewJob {
        payload: payload.to_vec(),
        ..grouped("g")
    };
    store
        .enqueue(
            queue,
            &random_id(),
            vec![job(b"1"), job(b"2"), job(b"3")],
            WIRE_VERSION,
        )
        .await
        .expect("enqueues");
    let fetched = store
        .fetch(queue, &call(3, LONG, Vec::new()))
        .await
        .expect("takes");
    assert_eq!(fetched.jobs.len(), 1, "the cap lets one run");
    fetched.jobs[0].lease.clone()
}

/// The same lease twice in one call's acknowledgements completes the job
/// once and rejects the second, so the group's running count drops once
/// and the cap still holds.
pub(super) async fn duplicate_acks_count_once(store: &dyn Store) {
    let lease = one_running(store, "dup").await;
    let acked = store
        .fetch("dup", &call(0, LONG, vec![lease.clone(), lease]))
        .await
        .expect("acknowledges");
    assert_eq!(acked.rejected, 1, "the second acknowledgement is rejected");
    let counts = store.counts("dup").await.expect("counts");
    assert_eq!((counts.completed, counts.waiting), (1, 2), "{counts:?}");
    let next = store
        .fetch("dup", &call(3, LONG, Vec::new()))
        .await
        .expect("takes");
    assert_eq!(next.jobs.len(), 1, "the group's cap still holds");
}

/// A call that plans more ticks for a scheduler than the caps allow is
/// refused whole, on every store, and one at the cap makes a job per tick:
/// the memory store holds the calls to what the Redis scripts hold them.
pub(super) async fn ticks_past_the_cap_are_refused(store: &dyn Store) {
    let revision = store
        .upsert_scheduler("caps", "s", "every 1000 latest", b"{}")
        .await
        .expect("upserts");
    let guard = |ticks: usize| TickGuard {
        scheduler: "s".to_owned(),
        revision,
        next_ms: 0,
        new_next_ms: 10_000_000,
        due_ms: 9_000_000,
        ticks: (0..ticks as u64).map(|tick| 1_000 + tick).collect(),
        job: grouped(""),
    };
    let refused = store
        .enqueue_ticks(
            "caps",
            &random_id(),
            &[guard(crate::caps::MAX_TICKS + 1)],
            WIRE_VERSION,
        )
        .await;
    assert!(
        refused.as_ref().is_err_and(Error::is_refusal),
        "{refused:?}"
    );
    assert_eq!(store.counts("caps").await.expect("counts").waiting, 0);
    let added = store
        .enqueue_ticks(
            "caps",
            &random_id(),
            &[guard(crate::caps::MAX_TICKS)],
            WIRE_VERSION,
        )
        .await
        .expect("enqueues");
    assert_eq!(
        added[0].as_ref().map(Vec::len),
        Some(crate::caps::MAX_TICKS)
    );
}

/// A look planned for a scheduler that was then removed and added again
/// makes nothing: revisions never repeat in a queue, so the new scheduler
/// does not take the old one's plan for its own.
pub(super) async fn a_scheduler_added_again_refuses_the_old_ones_plan(store: &dyn Store) {
    let first = store
        .upsert_scheduler("again", "s", "every 1000 latest", b"{}")
        .await
        .expect("upserts");
    let planned = TickGuard {
        scheduler: "s".to_owned(),
        revision: first,
        next_ms: 0,
        new_next_ms: 10_000_000,
        due_ms: 9_000_000,
        ticks: vec![1_000],
        job: grouped(""),
    };
    assert!(store.remove_scheduler("again", "s").await.expect("removes"));
    let second = store
        .upsert_scheduler("again", "s", "every 1000 latest", b"{}")
        .await
        .expect("upserts");
    assert_ne!(first, second, "a revision of the queue repeats");
    let added = store
        .enqueue_ticks("again", &random_id(), &[planned], WIRE_VERSION)
        .await
        .expect("answers");
    assert_eq!(added, vec![None], "the old plan is stale");
}

/// A failure report of a run that ended cancelled answers `cancelled`
/// when it is re-sent, as every other failure answers what it did.
pub(super) async fn a_re_sent_cancelled_failure_answers_cancelled(store: &dyn Store) {
    let lease = one_running(store, "cx").await;
    assert_eq!(
        store.cancel("cx", &lease.id).await.expect("asks"),
        Cancelled::Requested
    );
    for attempt in ["first", "re-sent"] {
        let after = store
            .fail("cx", &lease, Failure::Cancelled, "cancelled")
            .await
            .expect("answers");
        assert_eq!(after, AfterFailure::Cancelled, "{attempt}");
    }
    let counts = store.counts("cx").await.expect("counts");
    assert_eq!((counts.active, counts.waiting), (0, 2), "{counts:?}");
}

/// A default-priority job of `group`.
fn grouped(group: &str) -> NewJob {
    NewJob {
        payload: b"1".to_vec(),
        priority: 3,
        max_attempts: MAX_ATTEMPTS,
        backoff: String::new(),
        timeout_ms: 0,
        group: group.to_owned(),
        delay_ms: 0,
        idempotency: None,
        trace: String::new(),
        context: String::new(),
    }
}

/// The clock's slack between a backend and this process: both read whole
/// milliseconds.
const SLACK: Duration = Duration::from_millis(2);

/// The age of the oldest head of `queue`, looking at `most_groups` named
/// groups at most.
async fn oldest_head(store: &dyn Store, queue: &str, most_groups: usize) -> Duration {
    store
        .backlog(queue, most_groups)
        .await
        .expect("reads the backlog")
        .oldest_waiting
        .expect("a job waits")
}

/// Only the heads of the lines are looked at: a job given back to the
/// front of its line hides the older job behind it.
pub(super) async fn a_job_behind_a_younger_head_is_not_looked_at(store: &dyn Store) {
    let queue = "heads";
    store
        .enqueue(
            queue,
            &random_id(),
            vec![grouped(""), grouped("")],
            WIRE_VERSION,
        )
        .await
        .expect("enqueues");
    let taken = store
        .fetch(queue, &call(1, LONG, Vec::new()))
        .await
        .expect("takes");
    let lease = taken.jobs[0].lease.clone();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let behind = oldest_head(store, queue, MAX_BACKLOG_GROUPS).await;
    assert!(behind >= Duration::from_millis(200), "{behind:?}");

    let given_back = Instant::now();
    let after = store
        .fail(queue, &lease, Failure::Requeue, "shutting down")
        .await
        .expect("gives back");
    assert_eq!(after, AfterFailure::Waiting);
    let head = oldest_head(store, queue, MAX_BACKLOG_GROUPS).await;
    assert!(head <= given_back.elapsed() + SLACK, "{head:?}");
}

/// Past `most_groups` named groups with jobs waiting, the lines of jobs
/// without a group and of the first `most_groups` groups of the rotation
/// are looked at; a group at its cap is out of the rotation.
pub(super) async fn past_the_most_groups_the_rotation_is_looked_at(store: &dyn Store) {
    let queue = "rotation";
    store.set_group_limit(queue, 1).await.expect("caps");
    store
        .enqueue(
            queue,
            &random_id(),
            vec![grouped("capped"), grouped("capped")],
            WIRE_VERSION,
        )
        .await
        .expect("enqueues");
    let taken = store
        .fetch(queue, &call(1, LONG, Vec::new()))
        .await
        .expect("takes");
    assert_eq!(taken.jobs.len(), 1, "the cap lets one run");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let ungrouped = Instant::now();
    store
        .enqueue(queue, &random_id(), vec![grouped("")], WIRE_VERSION)
        .await
        .expect("enqueues");
    tokio::time::sleep(Duration::from_millis(150)).await;
    store
        .enqueue(
            queue,
            &random_id(),
            vec![grouped("a"), grouped("b")],
            WIRE_VERSION,
        )
        .await
        .expect("enqueues");

    // Three named groups wait: all of them are looked at with room for three.
    let every = oldest_head(store, queue, 3).await;
    assert!(every >= Duration::from_millis(300), "{every:?}");
    // With room for two, the rotation's "a" and "b" and the jobs without
    // a group: the capped group's job is left out.
    let rotation = oldest_head(store, queue, 2).await;
    assert!(rotation >= Duration::from_millis(150), "{rotation:?}");
    assert!(rotation <= ungrouped.elapsed() + SLACK, "{rotation:?}");
}

#[tokio::test]
async fn memory_looks_at_the_heads_of_the_lines_only() {
    a_job_behind_a_younger_head_is_not_looked_at(&MemoryStore::new(settings())).await;
}

#[tokio::test]
async fn memory_looks_at_the_rotation_past_the_most_groups() {
    past_the_most_groups_the_rotation_is_looked_at(&MemoryStore::new(settings())).await;
}

#[tokio::test]
async fn memory_counts_a_lease_acknowledged_twice_once() {
    duplicate_acks_count_once(&MemoryStore::new(settings())).await;
}

#[tokio::test]
async fn memory_refuses_the_plan_of_a_scheduler_removed_and_added_again() {
    a_scheduler_added_again_refuses_the_old_ones_plan(&MemoryStore::new(settings())).await;
}

#[tokio::test]
async fn memory_refuses_ticks_past_the_cap() {
    ticks_past_the_cap_are_refused(&MemoryStore::new(settings())).await;
}

#[tokio::test]
async fn memory_answers_a_re_sent_cancelled_failure() {
    a_re_sent_cancelled_failure_answers_cancelled(&MemoryStore::new(settings())).await;
}
