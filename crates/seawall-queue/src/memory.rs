//! The memory backend: the same transitions as the Redis scripts, on one
//! mutex per process. Nothing survives the process; it is for tests of code
//! that uses the queue and for running without Redis.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::job::{
    AttemptError, Backlog, Cancelled, ChildFailure, ChildInfo, ChildOutcome, Counts, Event,
    Finished, JobId, JobInfo, JobState, sort_children,
};
use crate::job::{Limits, Progress, RateLimit, Tick, time_of};
use crate::store::{
    AfterFailure, DeadJobs, DueSchedulers, Failure, FetchCall, Fetched, FlowNode, KeyHold, Lease,
    MAX_SCHEDULERS, NewJob, Renewed, Settings, Store, StoredScheduler, Taken, TickGuard,
    TicksAdded, bounded_message, millis,
};

/// Scores of waiting jobs: priority × 2⁴⁰ + id, as in Redis.
const PRIORITY_STRIDE: u64 = 1 << 40;
/// Jobs at this level wait in a list (FIFO; jobs that come back go to the
/// front), as in Redis; jobs at other levels by score.
const DEFAULT_LEVEL: u64 = crate::options::DEFAULT_PRIORITY as u64;

/// A waiting job's place in its group: level, then order within it.
type Line = (u64, i64, String);
/// Failed attempts kept per job.
const HISTORY: usize = 10;
/// How many jobs one upkeep pass moves, as in the scripts.
const UPKEEP_BATCH: usize = 1000;

pub(crate) struct MemoryStore {
    settings: Settings,
    queues: Mutex<HashMap<String, Arc<Shared>>>,
    /// Announced processes: id → (report, when in ms).
    processes: Mutex<HashMap<String, (Vec<u8>, u64)>>,
    /// The epoch of the ids this store gives (see [`JobId`]), drawn when it
    /// starts and again when it comes back from lost writes, as a Redis
    /// server's replication id is.
    epoch: Mutex<String>,
    /// Every queue's state as kept by `keep_snapshot` (tests of lost writes).
    #[cfg(test)]
    snapshot: Mutex<HashMap<String, QueueState>>,
}

struct Shared {
    state: Mutex<QueueState>,
    wake: Notify,
}

/// Ids count microseconds since this instant (2026-01-01, in µs) when that
/// is above the last id plus one, as in Redis.
const ID_EPOCH_US: u64 = 1_767_225_600_000_000;
/// How long an enqueue call's answer is kept for a replay, as in Redis.
const ANSWER_KEPT_MS: u64 = 30_000;

/// A caller's last fetch call: its request id, the acknowledgements it
/// rejected, the leases it gave.
#[derive(Clone)]
struct LastCall {
    request: String,
    rejected: u32,
    leases: Vec<Lease>,
}

#[derive(Default, Clone)]
struct QueueState {
    last_id: u64,
    /// The order counter of enqueued jobs (waiting jobs of one level run in
    /// its order).
    order: u64,
    /// Enqueue answers by request id, with when they expire, oldest first.
    answers: HashMap<String, Vec<(JobId, bool)>>,
    answer_expiry: VecDeque<(u64, String)>,
    /// Tick calls' answers by request id, with when they expire, oldest
    /// first.
    tick_answers: HashMap<String, TicksAdded>,
    tick_answer_expiry: VecDeque<(u64, String)>,
    last_calls: HashMap<String, LastCall>,
    jobs: HashMap<String, Record>,
    groups: HashMap<String, BTreeSet<Line>>,
    /// Gives each list insertion its place: back ones count up, front ones
    /// down.
    inserted: i64,
    ring: VecDeque<String>,
    ringed: HashSet<String>,
    group_active: HashMap<String, u64>,
    delayed: BTreeSet<(u64, String)>,
    active: BTreeSet<(u64, String)>,
    /// Completed jobs, newest first.
    done: VecDeque<String>,
    dead: BTreeSet<(u64, String)>,
    /// Deduplication keys by key.
    unique: HashMap<String, HeldKey>,
    /// Runs that ended cancelled (their record is gone): the job's id, the
    /// run's lease token and when this is forgotten, so a re-sent failure
    /// answers what it did.
    cancelled_runs: HashMap<String, (String, u64)>,
    paused: bool,
    group_cap: u32,
    waiting: u64,
    events: VecDeque<Event>,
    last_event: (u64, u64),
    /// Set by a transition that should wake a blocked worker.
    woke: bool,
    /// Schedulers by id.
    schedulers: std::collections::BTreeMap<String, StoredScheduler>,
    /// The last revision any scheduler of the queue was given: revisions
    /// never repeat in a queue (schedule.lua's `srev`).
    scheduler_revision: u64,
    /// The rate limit: at most this many starts in this many ms.
    rate: Option<(u32, u64)>,
    /// The starts within the rate limit's window: when, and the run's
    /// lease token, oldest first.
    starts: VecDeque<(u64, String)>,
    /// Nothing starts before this (ms since the epoch): a handler's hold.
    hold_until: u64,
    /// Flow jobs waiting for their children, by when they were added.
    waiting_children: BTreeSet<(u64, String)>,
    /// The group rate limit: at most this many starts of one named group
    /// in this many ms.
    group_rate: Option<(u32, u64)>,
    /// Each named group's starts within that window, oldest first.
    group_starts: HashMap<String, VecDeque<u64>>,
    /// Named groups sitting out of the rotation until a time (held, or at
    /// the group rate limit).
    parked: HashMap<String, u64>,
}

/// A deduplication key: the job holding it, the digest of that job for a
/// window key (which refuses a different job), and when the key expires.
#[derive(Clone)]
struct HeldKey {
    owner: String,
    digest: Option<u64>,
    expires: u64,
}

#[derive(Clone)]
struct Record {
    payload: Vec<u8>,
    /// The trace context stored with it; empty for none.
    trace: String,
    /// Its context; empty for none.
    context: String,
    priority: u8,
    max_attempts: u32,
    backoff: String,
    timeout_ms: u64,
    group: String,
    score: u64,
    idempotency: String,
    state: JobState,
    created: u64,
    ready: u64,
    started: u64,
    finished: u64,
    /// The sort key it has in its state's set (`delayed`, `active`, …).
    position: u64,
    /// Its place among the waiting jobs of its group, while waiting.
    line: (u64, i64),
    /// How many times it was taken.
    runs: u32,
    /// The lease token of its current or last run.
    token: String,
    /// The token of the run that last failed, and what became of the job.
    outcome: Option<(String, AfterFailure)>,
    failures: u32,
    stalls: u32,
    progress: Option<Progress>,
    errors: Vec<AttemptError>,
    /// Why it last went to the dead set; empty if it never did.
    dead_reason: String,
    cancel: bool,
    /// `<tick ms>:<scheduler>` for a scheduler's job; empty otherwise.
    tick: String,
    /// What its handler returned (JSON), once completed; empty for none.
    result: Vec<u8>,
    /// Its part in a flow, if it is in one.
    flow: Option<Box<FlowPart>>,
}

impl Record {
    /// A new job's record, waiting, with no key, tick or flow.
    fn new(job: NewJob, score: u64, now: u64) -> Self {
        Self {
            payload: job.payload,
            trace: job.trace,
            context: job.context,
            priority: job.priority,
            max_attempts: job.max_attempts,
            backoff: job.backoff,
            timeout_ms: job.timeout_ms,
            group: job.group,
            score,
            idempotency: String::new(),
            state: JobState::Waiting,
            created: now,
            ready: now,
            started: 0,
            finished: 0,
            position: 0,
            line: (0, 0),
            runs: 0,
            token: String::new(),
            outcome: None,
            failures: 0,
            stalls: 0,
            progress: None,
            errors: Vec::new(),
            dead_reason: String::new(),
            cancel: false,
            tick: String::new(),
            result: Vec::new(),
            flow: None,
        }
    }

    /// The job as a worker takes it, under `lease`.
    fn taken(&self, lease: Lease) -> Taken {
        Taken {
            lease,
            payload: self.payload.clone(),
            ready_at_ms: self.ready,
            failures: self.failures,
            max_attempts: self.max_attempts,
            backoff: self.backoff.clone(),
            timeout_ms: self.timeout_ms,
            stalls: self.stalls,
            run: self.runs,
            trace: self.trace.clone(),
            context: self.context.clone(),
        }
    }
}

fn now_us() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
}

fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// 16 random hex digits, as ids' epochs are.
fn random_epoch() -> String {
    format!("{:016x}", fastrand::u64(..))
}

impl MemoryStore {
    pub(crate) fn new(settings: Settings) -> Self {
        Self {
            settings,
            queues: Mutex::new(HashMap::new()),
            processes: Mutex::new(HashMap::new()),
            epoch: Mutex::new(random_epoch()),
            #[cfg(test)]
            snapshot: Mutex::new(HashMap::new()),
        }
    }

    /// Keeps a copy of every queue's state.
    #[cfg(test)]
    pub(crate) fn keep_snapshot(&self) {
        let queues = self.queues.lock();
        *self.snapshot.lock() = queues
            .iter()
            .map(|(name, shared)| (name.clone(), shared.state.lock().clone()))
            .collect();
    }

    /// Goes back to the kept states, as a server that lost its last writes
    /// does when it comes back; that takes longer than a clock tick.
    #[cfg(test)]
    pub(crate) fn restore_snapshot(&self) {
        std::thread::sleep(Duration::from_millis(1));
        let kept = self.snapshot.lock().clone();
        *self.epoch.lock() = random_epoch();
        for (name, shared) in self.queues.lock().iter() {
            *shared.state.lock() = kept.get(name).cloned().unwrap_or_default();
        }
    }

    fn shared(&self, queue: &str) -> Arc<Shared> {
        let mut queues = self.queues.lock();
        Arc::clone(queues.entry(queue.to_owned()).or_insert_with(|| {
            Arc::new(Shared {
                state: Mutex::new(QueueState::default()),
                wake: Notify::new(),
            })
        }))
    }

    /// Does what steps asked of other jobs of a flow, each in a step of its
    /// own queue (which may ask more of others in turn), in the order asked.
    fn deliver(&self, notices: Vec<(String, Notice)>) {
        let mut notices: VecDeque<(String, Notice)> = notices.into();
        while let Some((queue, notice)) = notices.pop_front() {
            let shared = self.shared(&queue);
            let (woke, more) = {
                let mut state = shared.state.lock();
                let mut step = Step {
                    q: &mut state,
                    settings: &self.settings,
                    now: now_ms(),
                    notices: Vec::new(),
                    queue_name: queue.clone(),
                };
                step.take_notice(notice);
                let more = std::mem::take(&mut step.notices);
                (std::mem::take(&mut state.woke), more)
            };
            if woke {
                shared.wake.notify_one();
            }
            notices.extend(more);
        }
    }

    /// Runs one transition under the queue's lock, then wakes a worker if it
    /// asked to.
    fn with<T>(&self, queue: &str, transition: impl FnOnce(&mut Step<'_>) -> T) -> T {
        let shared = self.shared(queue);
        let (result, woke, notices) = {
            let mut state = shared.state.lock();
            let mut step = Step {
                q: &mut state,
                settings: &self.settings,
                now: now_ms(),
                notices: Vec::new(),
                queue_name: queue.to_owned(),
            };
            let result = transition(&mut step);
            let notices = std::mem::take(&mut step.notices);
            (result, std::mem::take(&mut state.woke), notices)
        };
        if woke {
            shared.wake.notify_one();
        }
        self.deliver(notices);
        result
    }
}

/// One transition's view: the queue, the settings, and the clock read once;
/// and what it asks of flow jobs in other queues (or this one), done after
/// it, each under its own queue's lock.
struct Step<'a> {
    q: &'a mut QueueState,
    settings: &'a Settings,
    now: u64,
    notices: Vec<(String, Notice)>,
    /// The queue's name.
    queue_name: String,
}

/// What one flow job asks of another (see `tell_parent` in prelude/flows.lua).
enum Notice {
    /// A child finished: completed with its result, or failed with why.
    ChildDone {
        parent: String,
        child: (String, String),
        outcome: ChildOutcome,
        policy: ChildFailure,
    },
    /// A cancelled parent's pending child.
    Cancel(String),
}

/// A flow job's place: its parent (queue, id) and what its failure does to
/// it; its children (queue, id) with how each finished, and how many have
/// not; its delay, counted from its release.
#[derive(Clone, Default)]
struct FlowPart {
    parent: Option<(String, String, ChildFailure)>,
    children: Vec<(String, String, ChildOutcome)>,
    pending: u64,
    delay_ms: u64,
}

impl Step<'_> {
    fn emit(&mut self, kind: &str, id: &str, fields: &[(&str, String)]) {
        let max = usize::try_from(self.settings.events_max_len).unwrap_or(usize::MAX);
        if max == 0 {
            return;
        }
        let (ms, seq) = self.q.last_event;
        self.q.last_event = if self.now > ms {
            (self.now, 0)
        } else {
            (ms, seq + 1)
        };
        let (ms, seq) = self.q.last_event;
        self.q.events.push_back(Event {
            position: format!("{ms}-{seq}"),
            kind: kind.to_owned(),
            job: JobId::from(id),
            fields: fields
                .iter()
                .map(|(name, value)| ((*name).to_owned(), value.clone()))
                .collect(),
        });
        while self.q.events.len() > max {
            self.q.events.pop_front();
        }
    }

    fn wake(&mut self) {
        self.q.woke = true;
    }

    fn group_room(&self, group: &str) -> u64 {
        if group.is_empty() || self.q.group_cap == 0 {
            return u64::MAX;
        }
        let running = self.q.group_active.get(group).copied().unwrap_or(0);
        u64::from(self.q.group_cap).saturating_sub(running)
    }

    fn ring(&mut self, group: &str) {
        if self.q.ringed.insert(group.to_owned()) {
            self.q.ring.push_back(group.to_owned());
        }
    }

    /// Puts a job in line in its group: at the back, or, for a job that was
    /// in line before (retried, recovered, given back), at the `front` of
    /// the default level.
    fn make_waiting(&mut self, id: &str, front: bool) {
        let Some(job) = self.q.jobs.get_mut(id) else {
            return;
        };
        job.state = JobState::Waiting;
        job.ready = self.now;
        let level = job.score / PRIORITY_STRIDE;
        let order = if level == DEFAULT_LEVEL {
            self.q.inserted += 1;
            if front {
                -self.q.inserted
            } else {
                self.q.inserted
            }
        } else {
            i64::try_from(job.score % PRIORITY_STRIDE).unwrap_or(i64::MAX)
        };
        job.line = (level, order);
        let group = job.group.clone();
        self.q
            .groups
            .entry(group.clone())
            .or_default()
            .insert((level, order, id.to_owned()));
        self.q.waiting += 1;
        if self.group_room(&group) > 0 {
            self.ring(&group);
        }
    }

    fn make_delayed(&mut self, id: &str, due: u64) {
        if let Some(job) = self.q.jobs.get_mut(id) {
            job.state = JobState::Delayed;
            job.ready = due;
            job.position = due;
            self.q.delayed.insert((due, id.to_owned()));
        }
    }

    fn left_active(&mut self, group: &str) {
        if group.is_empty() {
            return;
        }
        if let Some(running) = self.q.group_active.get_mut(group) {
            *running = running.saturating_sub(1);
            if *running == 0 {
                self.q.group_active.remove(group);
            }
        }
        if self.ring_if_ready(group) {
            self.wake();
        }
    }

    /// Takes a job out of the active set; its group, if the job exists.
    fn leave_active(&mut self, id: &str) -> Option<String> {
        let job = self.q.jobs.get(id)?;
        self.q.active.remove(&(job.position, id.to_owned()));
        let group = job.group.clone();
        self.left_active(&group);
        Some(group)
    }

    /// The job that holds `key` for an enqueue whose key holds as `hold`,
    /// if one does (as enqueue.lua): a window key while it lasts; another
    /// while its job is in a state the hold names (a job that ran once has
    /// started, also when it waits to be retried).
    fn key_holder(&self, key: &str, hold: KeyHold) -> Option<String> {
        let held = self
            .q
            .unique
            .get(key)
            .filter(|held| held.expires > self.now)?;
        if let KeyHold::Window(_) = hold {
            return Some(held.owner.clone());
        }
        let job = self.q.jobs.get(&held.owner)?;
        let started = job.runs > 0;
        let holds = match hold {
            KeyHold::UntilCompleted => matches!(
                job.state,
                JobState::Waiting | JobState::Delayed | JobState::Active
            ),
            KeyHold::UntilStarted => {
                !started && matches!(job.state, JobState::Waiting | JobState::Delayed)
            }
            KeyHold::Debounce | KeyHold::Window(_) => !started && job.state == JobState::Delayed,
        };
        holds.then(|| held.owner.clone())
    }

    /// Frees finished job `id`'s deduplication key if the job still holds
    /// it in a mode other than a window (as `release_key` in prelude/finish.lua):
    /// such a key holds, for an enqueue of any mode, at most until its job
    /// completes or dies; a window key lasts its window.
    fn release_key(&mut self, id: &str) {
        let Some(key) = self
            .q
            .jobs
            .get(id)
            .map(|job| job.idempotency.clone())
            .filter(|key| !key.is_empty())
        else {
            return;
        };
        if self
            .q
            .unique
            .get(&key)
            .is_some_and(|held| held.owner == id && held.digest.is_none())
        {
            self.q.unique.remove(&key);
        }
    }

    /// Forgets the enqueue answers kept past their time.
    fn expire_answers(&mut self) {
        while let Some((expires, _)) = self.q.answer_expiry.front()
            && *expires <= self.now
        {
            if let Some((_, old)) = self.q.answer_expiry.pop_front() {
                self.q.answers.remove(&old);
            }
        }
        while let Some((expires, _)) = self.q.tick_answer_expiry.front()
            && *expires <= self.now
        {
            if let Some((_, old)) = self.q.tick_answer_expiry.pop_front() {
                self.q.tick_answers.remove(&old);
            }
        }
    }

    /// A change to scheduler `id` takes effect at its next tick (as
    /// schedule.lua's `drop_ahead`): a job enqueued ahead for a tick still
    /// to come is cancelled, and the run before it is the last again.
    /// Answers that tick.
    fn drop_ahead(&mut self, id: &str) -> Option<u64> {
        let (tick, job) = self.q.schedulers.get(id)?.last.clone()?;
        if tick <= self.now {
            return None;
        }
        // A job that left its delay keeps its tick made.
        if !self
            .q
            .jobs
            .get(job.as_str())
            .is_some_and(|record| record.state == JobState::Delayed)
        {
            return None;
        }
        self.cancel_job(job.as_str());
        if let Some(held) = self.q.schedulers.get_mut(id) {
            held.last = held.previous.take();
        }
        Some(tick)
    }

    /// Keeps an enqueue call's answer for a replay of the call.
    fn keep_answer(&mut self, request: &str, answer: Vec<(JobId, bool)>) {
        self.q.answers.insert(request.to_owned(), answer);
        self.q
            .answer_expiry
            .push_back((self.now + ANSWER_KEPT_MS, request.to_owned()));
    }

    /// Adds a flow's job, waiting for its children; answers its id.
    fn add_waiting_for_children(&mut self, job: NewJob, flow: FlowPart, epoch: &str) -> String {
        let clock_id = now_us().saturating_sub(ID_EPOCH_US);
        let sequence = (self.q.last_id + 1).max(clock_id);
        self.q.last_id = sequence;
        self.q.order += 1;
        let score = u64::from(job.priority) * PRIORITY_STRIDE + self.q.order;
        let id = format!("{sequence}-{epoch}");
        let record = Record {
            state: JobState::WaitingChildren,
            flow: Some(Box::new(flow)),
            ..Record::new(job, score, self.now)
        };
        self.q.jobs.insert(id.clone(), record);
        self.q.waiting_children.insert((self.now, id.clone()));
        self.emit("enqueued", &id, &[]);
        id
    }

    /// A flow child that finished tells its parent, once (as
    /// `tell_parent` in prelude/flows.lua).
    fn tell_parent(&mut self, id: &str, outcome: ChildOutcome) {
        let Some(job) = self.q.jobs.get_mut(id) else {
            return;
        };
        let Some((queue, parent, policy)) = job.flow.as_mut().and_then(|flow| flow.parent.take())
        else {
            return;
        };
        let child = (self.queue_name.clone(), id.to_owned());
        self.notices.push((
            queue,
            Notice::ChildDone {
                parent,
                child,
                outcome,
                policy,
            },
        ));
    }

    /// Does what another flow job asked of this queue.
    fn take_notice(&mut self, notice: Notice) {
        match notice {
            Notice::Cancel(id) => {
                self.cancel_job(&id);
            }
            Notice::ChildDone {
                parent,
                child,
                outcome,
                policy,
            } => {
                let Some(flow) = self
                    .q
                    .jobs
                    .get_mut(&parent)
                    .and_then(|job| job.flow.as_deref_mut())
                else {
                    return;
                };
                let Some(place) = flow.children.iter().position(|(queue, id, outcome)| {
                    (queue, id) == (&child.0, &child.1) && *outcome == ChildOutcome::Pending
                }) else {
                    return;
                };
                let failed = matches!(outcome, ChildOutcome::Failed(_));
                let fails_parent = failed && policy == ChildFailure::FailParent;
                let error = match &outcome {
                    ChildOutcome::Failed(error) => error.clone(),
                    _ => String::new(),
                };
                if failed && policy == ChildFailure::Drop {
                    flow.children.remove(place);
                } else {
                    flow.children[place].2 = outcome;
                }
                if !fails_parent {
                    flow.pending = flow.pending.saturating_sub(1);
                }
                let pending = flow.pending;
                let waiting = self
                    .q
                    .jobs
                    .get(&parent)
                    .is_some_and(|job| job.state == JobState::WaitingChildren);
                if !waiting {
                    return;
                }
                if fails_parent {
                    self.leave_waiting_children(&parent);
                    let message = format!("a child failed ({} {}): {error}", child.0, child.1);
                    self.make_dead(&parent, &message);
                } else if pending == 0 {
                    self.release(&parent);
                }
            }
        }
    }

    fn leave_waiting_children(&mut self, id: &str) {
        if let Some(job) = self.q.jobs.get(id) {
            self.q
                .waiting_children
                .remove(&(job.created, id.to_owned()));
        }
    }

    /// A flow job whose children all finished goes to wait, or to its
    /// delay.
    fn release(&mut self, id: &str) {
        self.leave_waiting_children(id);
        let delay = self
            .q
            .jobs
            .get(id)
            .and_then(|job| job.flow.as_ref())
            .map_or(0, |flow| flow.delay_ms);
        if delay > 0 {
            self.make_delayed(id, self.now + delay);
        } else {
            self.make_waiting(id, false);
        }
        self.emit("released", id, &[]);
        self.wake();
    }

    /// Cancels a job (as `cancel_job` in prelude/cancel.lua).
    fn cancel_job(&mut self, id: &str) -> Cancelled {
        let Some(job) = self.q.jobs.get_mut(id) else {
            return Cancelled::NotFound;
        };
        match job.state {
            JobState::Waiting => {
                let key = (job.line.0, job.line.1, id.to_owned());
                if let Some(jobs) = self.q.groups.get_mut(&job.group) {
                    jobs.remove(&key);
                    if jobs.is_empty() && !self.q.ringed.contains(&job.group) {
                        self.q.groups.remove(&job.group);
                    }
                }
                self.q.waiting = self.q.waiting.saturating_sub(1);
            }
            JobState::Delayed => {
                self.q.delayed.remove(&(job.position, id.to_owned()));
            }
            JobState::WaitingChildren => {
                let pending: Vec<(String, String)> = job
                    .flow
                    .as_ref()
                    .map(|flow| {
                        flow.children
                            .iter()
                            .filter(|(_, _, outcome)| *outcome == ChildOutcome::Pending)
                            .map(|(queue, child, _)| (queue.clone(), child.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                self.leave_waiting_children(id);
                for (queue, child) in pending {
                    self.notices.push((queue, Notice::Cancel(child)));
                }
            }
            JobState::Active => {
                job.cancel = true;
                return Cancelled::Requested;
            }
            state => return Cancelled::AlreadyFinished(state),
        }
        self.emit("cancelled", id, &[]);
        self.forget(id);
        Cancelled::Removed
    }

    fn forget(&mut self, id: &str) {
        self.tell_parent(id, ChildOutcome::Failed("cancelled".to_owned()));
        if let Some(job) = self.q.jobs.remove(id)
            && !job.idempotency.is_empty()
            && self
                .q
                .unique
                .get(&job.idempotency)
                .is_some_and(|held| held.owner == id)
        {
            self.q.unique.remove(&job.idempotency);
        }
    }

    fn trim_dead(&mut self) {
        let keep = usize::try_from(self.settings.keep_dead).unwrap_or(usize::MAX);
        let mut removed = 0;
        while self.q.dead.len() > keep && removed < 100 {
            if let Some((_, id)) = self.q.dead.pop_first() {
                self.q.jobs.remove(&id);
            }
            removed += 1;
        }
    }

    /// Removes up to `limit` completed jobs, oldest first, that finished at
    /// or before `cutoff`, never leaving fewer than `keep`.
    fn trim_done(&mut self, cutoff: u64, keep: u64, limit: u64) -> u64 {
        let removable = (self.q.done.len() as u64).saturating_sub(keep).min(limit);
        let mut removed = 0;
        while removed < removable {
            let Some(id) = self.q.done.back() else {
                break;
            };
            let finished = self.q.jobs.get(id).map_or(0, |job| job.finished);
            if finished > cutoff {
                break;
            }
            if let Some(id) = self.q.done.pop_back() {
                self.q.jobs.remove(&id);
            }
            removed += 1;
        }
        removed
    }

    fn trim_completed(&mut self) {
        if self.settings.keep_completed == 0 {
            return;
        }
        self.trim_done(u64::MAX, self.settings.keep_completed, 1_000);
        self.trim_completed_by_age();
    }

    /// Completed jobs past their age, also when none has completed lately.
    fn trim_completed_by_age(&mut self) {
        if self.settings.keep_completed > 0 && self.settings.keep_completed_for > Duration::ZERO {
            let cutoff = self
                .now
                .saturating_sub(millis(self.settings.keep_completed_for));
            self.trim_done(cutoff, 0, 1_000);
        }
    }

    fn make_dead(&mut self, id: &str, message: &str) {
        self.tell_parent(id, ChildOutcome::Failed(message.to_owned()));
        self.release_key(id);
        let now = self.now;
        if let Some(job) = self.q.jobs.get_mut(id) {
            job.state = JobState::Dead;
            job.finished = now;
            job.position = now;
            job.dead_reason = message.to_owned();
            self.q.dead.insert((now, id.to_owned()));
            self.emit("dead", id, &[("error", message.to_owned())]);
            self.trim_dead();
        }
    }

    fn make_completed(&mut self, id: &str) {
        let result = self
            .q
            .jobs
            .get(id)
            .map(|job| job.result.clone())
            .unwrap_or_default();
        self.tell_parent(
            id,
            ChildOutcome::Completed((!result.is_empty()).then_some(result)),
        );
        self.emit("completed", id, &[]);
        self.release_key(id);
        if self.settings.keep_completed == 0 {
            self.q.jobs.remove(id);
            return;
        }
        let now = self.now;
        if let Some(job) = self.q.jobs.get_mut(id) {
            job.state = JobState::Completed;
            job.finished = now;
            job.position = now;
            self.q.done.push_front(id.to_owned());
        }
    }

    /// Puts `group` in the fetch rotation if it has jobs waiting and room
    /// to run one; whether it did.
    fn ring_if_ready(&mut self, group: &str) -> bool {
        let waiting = self
            .q
            .groups
            .get(group)
            .is_some_and(|jobs| !jobs.is_empty());
        let ready = waiting && self.group_room(group) > 0;
        if ready {
            self.ring(group);
        }
        ready
    }

    /// Parks a group at its rate limit until its oldest start leaves the
    /// window.
    fn park(&mut self, group: &str, per: u64) {
        let back = self
            .q
            .group_starts
            .get(group)
            .and_then(|starts| starts.front())
            .map_or(self.now + 1, |oldest| oldest + per);
        let parked = self.q.parked.entry(group.to_owned()).or_default();
        *parked = (*parked).max(back);
    }

    /// Puts parked groups whose time has come back in the rotation.
    fn unpark(&mut self) {
        let now = self.now;
        let back: Vec<String> = self
            .q
            .parked
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(group, _)| group.clone())
            .collect();
        for group in &back {
            self.q.parked.remove(group);
            self.ring_if_ready(group);
        }
        if !back.is_empty() {
            self.wake();
        }
    }

    fn promote(&mut self) {
        self.unpark();
        let mut due = Vec::new();
        while due.len() < UPKEEP_BATCH
            && self
                .q
                .delayed
                .first()
                .is_some_and(|(at, _)| *at <= self.now)
        {
            if let Some((_, id)) = self.q.delayed.pop_first() {
                due.push(id);
            }
        }
        for id in &due {
            self.make_waiting(id, false);
        }
        if !due.is_empty() {
            self.wake();
        }
    }

    fn recover(&mut self) {
        let mut expired = Vec::new();
        while expired.len() < UPKEEP_BATCH
            && self.q.active.first().is_some_and(|(at, _)| *at <= self.now)
        {
            if let Some((_, id)) = self.q.active.pop_first() {
                expired.push(id);
            }
        }
        for id in &expired {
            let Some(job) = self.q.jobs.get_mut(id) else {
                continue;
            };
            let (group, cancel) = (job.group.clone(), job.cancel);
            self.left_active(&group);
            if cancel {
                if let Some(job) = self.q.jobs.get_mut(id) {
                    job.stalls += 1;
                }
                self.emit("stalled", id, &[]);
                self.emit("cancelled", id, &[]);
                self.forget(id);
            } else {
                self.stalled(id);
            }
        }
        if !expired.is_empty() {
            self.wake();
        }
    }

    fn next_wake(&self) -> Option<Duration> {
        [self.q.delayed.first(), self.q.active.first()]
            .into_iter()
            .flatten()
            .map(|(at, _)| Duration::from_millis(at.saturating_sub(self.now)))
            .min()
    }

    /// Counts a stall of a job whose run lost its lease (it left the
    /// active set): back to waiting, or dead past the queue's stalls.
    fn stalled(&mut self, id: &str) -> AfterFailure {
        let Some(job) = self.q.jobs.get_mut(id) else {
            return AfterFailure::Lost;
        };
        job.stalls += 1;
        let stalls = job.stalls;
        self.emit("stalled", id, &[]);
        if stalls > self.settings.max_stalls {
            let message = format!("stalled {stalls} times: its worker stopped renewing the lease");
            self.make_dead(id, &message);
            AfterFailure::Dead
        } else {
            self.make_waiting(id, true);
            AfterFailure::Waiting
        }
    }

    /// Ends a run that did not succeed (its lease already left the active
    /// set): dropped when cancelled, back in line when given back, else a
    /// counted failure, retried or dead.
    fn end_attempt(&mut self, id: &str, failure: Failure, error: &str) -> AfterFailure {
        let cancel = self.q.jobs.get(id).is_some_and(|job| job.cancel);
        if matches!(failure, Failure::Cancelled) || cancel {
            // A run lost to its lease tells of its stall first, as the
            // upkeep does.
            if matches!(failure, Failure::Stalled) {
                self.emit("stalled", id, &[]);
            }
            self.emit("cancelled", id, &[]);
            self.forget(id);
            return AfterFailure::Cancelled;
        }
        if matches!(failure, Failure::Requeue) {
            self.make_waiting(id, true);
            self.wake();
            self.emit("requeued", id, &[]);
            return AfterFailure::Waiting;
        }
        if matches!(failure, Failure::Stalled) {
            let after = self.stalled(id);
            self.wake();
            return after;
        }
        if let Failure::HoldGroup(delay) = failure
            && let Some(group) = self
                .q
                .jobs
                .get(id)
                .map(|job| job.group.clone())
                .filter(|group| !group.is_empty())
        {
            let until = self.now + millis(delay);
            let parked = self.q.parked.entry(group.clone()).or_default();
            *parked = (*parked).max(until);
            self.make_waiting(id, true);
            self.wake();
            self.emit(
                "held",
                id,
                &[("delay", millis(delay).to_string()), ("group", group)],
            );
            return AfterFailure::Waiting;
        }
        if let Failure::Hold(delay) | Failure::HoldGroup(delay) = failure {
            // A later hold never shortens an earlier one.
            self.q.hold_until = self.q.hold_until.max(self.now + millis(delay));
            self.make_waiting(id, true);
            self.wake();
            self.emit("held", id, &[("delay", millis(delay).to_string())]);
            return AfterFailure::Waiting;
        }
        let now = self.now;
        let Some(job) = self.q.jobs.get_mut(id) else {
            return AfterFailure::Lost;
        };
        job.failures += 1;
        job.errors.push(AttemptError {
            attempt: job.runs,
            at_ms: now,
            error: error.to_owned(),
        });
        if job.errors.len() > HISTORY {
            job.errors.remove(0);
        }
        let out_of_attempts = job.failures >= job.max_attempts;
        self.emit("failed", id, &[("error", error.to_owned())]);
        let delay = match failure {
            Failure::Retry(delay) if !out_of_attempts => delay,
            _ => {
                self.make_dead(id, error);
                return AfterFailure::Dead;
            }
        };
        let delay_ms = millis(delay);
        if delay_ms > 0 {
            self.make_delayed(id, now + delay_ms);
        } else {
            self.make_waiting(id, true);
        }
        self.wake();
        self.emit("retried", id, &[("delay", delay_ms.to_string())]);
        if delay_ms > 0 {
            AfterFailure::Delayed
        } else {
            AfterFailure::Waiting
        }
    }

    /// The job if `lease` is its current lease.
    fn owned(&self, lease: &Lease) -> bool {
        self.q
            .jobs
            .get(lease.id.as_str())
            .is_some_and(|job| job.state == JobState::Active && job.token == lease.token)
    }

    /// Takes up to `want` jobs, and no further job once `max_bytes` of
    /// payload are taken; tokens name `request`.
    fn take(&mut self, lease_ms: u64, want: usize, max_bytes: usize, request: &str) -> Vec<Taken> {
        let mut taken = Vec::new();
        let mut bytes = 0;
        while taken.len() < want && (taken.is_empty() || bytes < max_bytes) {
            let Some(group) = self.q.ring.pop_front() else {
                break;
            };
            let room = self.group_room(&group);
            let turn = if self.q.ring.is_empty() {
                want - taken.len()
            } else {
                1
            };
            let mut turn = u64::try_from(turn).unwrap_or(u64::MAX).min(room);
            // A named group held or at the group rate limit sits out (as
            // fetch.lua).
            let mut parked = !group.is_empty()
                && self
                    .q
                    .parked
                    .get(&group)
                    .is_some_and(|until| *until > self.now);
            let mut group_room_left = None;
            if !group.is_empty()
                && !parked
                && let Some((max, per)) = self.q.group_rate
            {
                let now = self.now;
                let starts = self.q.group_starts.entry(group.clone()).or_default();
                while starts.front().is_some_and(|at| at + per <= now) {
                    starts.pop_front();
                }
                let left = u64::from(max).saturating_sub(starts.len() as u64);
                if left == 0 {
                    self.park(&group, per);
                    parked = true;
                }
                group_room_left = Some(left);
            }
            if parked {
                turn = 0;
            } else if let Some(left) = group_room_left {
                turn = turn.min(left);
            }
            let mut popped = Vec::new();
            if let Some(jobs) = self.q.groups.get_mut(&group) {
                while u64::try_from(popped.len()).unwrap_or(u64::MAX) < turn
                    && (taken.is_empty() && popped.is_empty() || bytes < max_bytes)
                {
                    let Some((_, _, id)) = jobs.pop_first() else {
                        break;
                    };
                    bytes += self.q.jobs.get(&id).map_or(0, |job| job.payload.len());
                    popped.push(id);
                }
            }
            for id in &popped {
                let Some(job) = self.q.jobs.get_mut(id) else {
                    continue;
                };
                job.runs += 1;
                job.token = format!("{request}.{}", taken.len() + 1);
                job.state = JobState::Active;
                job.started = self.now;
                job.position = self.now + lease_ms;
                self.q.active.insert((job.position, id.clone()));
                taken.push(job.taken(Lease {
                    id: JobId::from(id.as_str()),
                    token: job.token.clone(),
                }));
                if !group.is_empty() {
                    *self.q.group_active.entry(group.clone()).or_default() += 1;
                }
                self.emit("active", id, &[]);
            }
            self.q.waiting = self.q.waiting.saturating_sub(popped.len() as u64);
            if let (Some(room_left), Some((_, per))) = (group_room_left, self.q.group_rate)
                && !popped.is_empty()
            {
                let now = self.now;
                self.q
                    .group_starts
                    .entry(group.clone())
                    .or_default()
                    .extend(popped.iter().map(|_| now));
                if popped.len() as u64 >= room_left {
                    self.park(&group, per);
                    parked = true;
                }
            }
            let left = self
                .q
                .groups
                .get(&group)
                .is_some_and(|jobs| !jobs.is_empty());
            if left && self.group_room(&group) > 0 && !parked {
                self.q.ring.push_back(group);
            } else {
                self.q.ringed.remove(&group);
                if !left {
                    self.q.groups.remove(&group);
                }
            }
        }
        if !taken.is_empty() && !self.q.ring.is_empty() {
            self.wake();
        }
        taken
    }

    fn counts(&self) -> Counts {
        Counts {
            waiting: self.q.waiting,
            delayed: self.q.delayed.len() as u64,
            active: self.q.active.len() as u64,
            completed: self.q.done.len() as u64,
            dead: self.q.dead.len() as u64,
            paused: self.q.paused,
            waiting_children: self.q.waiting_children.len() as u64,
        }
    }

    /// When the oldest job at the head of a line became ready, as
    /// `backlog` in `control.lua` finds it: the head of each level of every
    /// group while at most `most_groups` named groups have jobs waiting,
    /// else of jobs without a group and of the first `most_groups` named
    /// groups of the rotation.
    fn oldest_head(&self, most_groups: usize) -> Option<u64> {
        let named = |group: &&String| !group.is_empty();
        let waiting = self
            .q
            .groups
            .iter()
            .filter(|(group, jobs)| named(group) && !jobs.is_empty())
            .count();
        let groups: Vec<&str> = if waiting <= most_groups {
            self.q.groups.keys().map(String::as_str).collect()
        } else {
            let rotation = self.q.ring.iter().filter(named).take(most_groups);
            std::iter::once("")
                .chain(rotation.map(String::as_str))
                .collect()
        };
        let mut heads = Vec::new();
        for jobs in groups.iter().filter_map(|group| self.q.groups.get(*group)) {
            let mut from = 0;
            while let Some((level, _, id)) = jobs.range((from, i64::MIN, String::new())..).next() {
                heads.push(id);
                from = level + 1;
            }
        }
        heads
            .into_iter()
            .filter_map(|id| self.q.jobs.get(id))
            .map(|job| job.ready)
            .min()
    }
}

impl MemoryStore {
    /// Enqueues `jobs` (as enqueue.lua).
    fn enqueue_jobs(
        &self,
        queue: &str,
        request: &str,
        jobs: Vec<NewJob>,
    ) -> Result<Vec<(JobId, bool)>> {
        let epoch = self.epoch.lock().clone();
        self.with(queue, |step| {
            step.expire_answers();
            if let Some(answer) = step.q.answers.get(request) {
                return Ok(answer.clone());
            }
            // A key held by another job refuses the whole call before
            // anything changes.
            let mut claimed: HashMap<&str, u64> = HashMap::new();
            for job in &jobs {
                let Some((key, KeyHold::Window(_))) = &job.idempotency else {
                    continue;
                };
                if key.is_empty() {
                    continue;
                }
                let digest = digest(job);
                let held = claimed.get(key.as_str()).copied().or_else(|| {
                    step.q
                        .unique
                        .get(key)
                        .filter(|held| held.expires > step.now)
                        .and_then(|held| held.digest)
                });
                match held {
                    Some(held) if held != digest => {
                        return Err(Error::IdempotencyMismatch { key: key.clone() });
                    }
                    Some(_) => {}
                    None => {
                        claimed.insert(key, digest);
                    }
                }
            }
            let count = jobs.len() as u64;
            let clock_id = now_us().saturating_sub(ID_EPOCH_US);
            let first = (step.q.last_id + 1).max(clock_id);
            step.q.last_id = first + count.saturating_sub(1);
            let order = step.q.order + 1;
            step.q.order += count;
            let mut out = Vec::with_capacity(jobs.len());
            for (offset, job) in (0_u64..).zip(jobs) {
                let id = format!("{}-{epoch}", first + offset);
                let idempotency = job.idempotency.clone();
                if let Some((key, hold)) = &idempotency {
                    if let Some(earlier) = step.key_holder(key, *hold) {
                        if *hold == KeyHold::Debounce {
                            // The held job takes this payload and waits anew.
                            let ready = step.now + job.delay_ms;
                            if let Some(held) = step.q.jobs.get_mut(&earlier) {
                                held.payload = job.payload;
                                held.context = job.context;
                                let due = held.position;
                                step.q.delayed.remove(&(due, earlier.clone()));
                            }
                            step.make_delayed(&earlier, ready);
                            step.emit("debounced", &earlier, &[]);
                            step.wake();
                        }
                        out.push((JobId::from(earlier), false));
                        continue;
                    }
                    let held = HeldKey {
                        owner: id.clone(),
                        digest: matches!(hold, KeyHold::Window(_)).then(|| digest(&job)),
                        expires: step.now + hold.kept_ms(),
                    };
                    step.q.unique.insert(key.clone(), held);
                }
                let idempotency = idempotency.map(|(key, _)| key).unwrap_or_default();
                let score = u64::from(job.priority) * PRIORITY_STRIDE + order + offset;
                let delay_ms = job.delay_ms;
                let record = Record {
                    idempotency,
                    ..Record::new(job, score, step.now)
                };
                step.q.jobs.insert(id.clone(), record);
                if delay_ms > 0 {
                    step.make_delayed(&id, step.now + delay_ms);
                } else {
                    step.make_waiting(&id, false);
                }
                step.emit("enqueued", &id, &[]);
                step.wake();
                out.push((JobId::from(id), true));
            }
            step.keep_answer(request, out.clone());
            Ok(out)
        })
    }

    /// Enqueues the ticks of each scheduler that is as its guard planned
    /// it (as tick.lua).
    fn enqueue_tick_jobs(&self, queue: &str, request: &str, guards: &[TickGuard]) -> TicksAdded {
        let epoch = self.epoch.lock().clone();
        self.with(queue, |step| {
            step.expire_answers();
            if let Some(answer) = step.q.tick_answers.get(request) {
                return answer.clone();
            }
            // Per guard, the ticks it makes jobs for, or `None` for a stale
            // one. A tick at or before the latest that made a job has its
            // job (tick.lua's guard against a clock stepped back).
            let planned: Vec<Option<Vec<u64>>> = guards
                .iter()
                .map(|guard| {
                    let held = step.q.schedulers.get(&guard.scheduler).filter(|held| {
                        held.revision == guard.revision
                            && held.next_ms == guard.next_ms
                            && !held.paused
                    })?;
                    let made = held.last.as_ref().map(|(tick, _)| *tick);
                    Some(
                        guard
                            .ticks
                            .iter()
                            .copied()
                            .filter(|tick| made.is_none_or(|made| *tick > made))
                            .collect(),
                    )
                })
                .collect();
            let count: u64 = planned
                .iter()
                .flatten()
                .map(|ticks| ticks.len() as u64)
                .sum();
            let clock_id = now_us().saturating_sub(ID_EPOCH_US);
            let first = (step.q.last_id + 1).max(clock_id);
            if count > 0 {
                step.q.last_id = first + count - 1;
            }
            let order = step.q.order + 1;
            step.q.order += count;
            let mut offset = 0;
            let mut out = Vec::with_capacity(guards.len());
            for (guard, planned) in guards.iter().zip(planned) {
                let Some(ticks) = planned else {
                    out.push(None);
                    continue;
                };
                let mut ids = Vec::with_capacity(ticks.len());
                for tick in &ticks {
                    let id = format!("{}-{epoch}", first + offset);
                    let job = guard.job.clone();
                    let score = u64::from(job.priority) * PRIORITY_STRIDE + order + offset;
                    let ready = step.now.max(*tick) + job.delay_ms;
                    let record = Record {
                        tick: format!("{tick}:{}", guard.scheduler),
                        ..Record::new(job, score, step.now)
                    };
                    step.q.jobs.insert(id.clone(), record);
                    if ready > step.now {
                        step.make_delayed(&id, ready);
                    } else {
                        step.make_waiting(&id, false);
                    }
                    step.emit("enqueued", &id, &[]);
                    step.wake();
                    ids.push(JobId::from(id));
                    offset += 1;
                }
                if let Some(held) = step.q.schedulers.get_mut(&guard.scheduler) {
                    held.next_ms = guard.new_next_ms;
                    held.due_ms = guard.due_ms;
                    let runs = ticks.iter().copied().zip(ids.iter().cloned());
                    for run in runs {
                        held.previous = held.last.replace(run);
                    }
                }
                out.push(Some(ids));
            }
            step.q.tick_answers.insert(request.to_owned(), out.clone());
            step.q
                .tick_answer_expiry
                .push_back((step.now + ANSWER_KEPT_MS, request.to_owned()));
            out
        })
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn enqueue(
        &self,
        queue: &str,
        request: &str,
        jobs: Vec<NewJob>,
        _wire: u32,
    ) -> Result<Vec<(JobId, bool)>> {
        self.enqueue_jobs(queue, request, jobs)
    }

    async fn enqueue_ticks(
        &self,
        queue: &str,
        request: &str,
        guards: &[TickGuard],
        _wire: u32,
    ) -> Result<TicksAdded> {
        if let Some(guard) = guards
            .iter()
            .find(|guard| guard.ticks.len() > crate::caps::MAX_TICKS)
        {
            return Err(Error::Refused(format!(
                "scheduler {} plans {} ticks, more than {} in one call",
                guard.scheduler,
                guard.ticks.len(),
                crate::caps::MAX_TICKS
            )));
        }
        Ok(self.enqueue_tick_jobs(queue, request, guards))
    }

    async fn enqueue_flow(
        &self,
        request: &str,
        nodes: &[FlowNode],
        _wire: u32,
    ) -> Result<Vec<JobId>> {
        let root = nodes
            .first()
            .map(|node| node.queue.as_str())
            .ok_or_else(|| Error::InvalidOption("a flow needs a job".to_owned()))?;
        let replayed = self.with(root, |step| {
            step.expire_answers();
            step.q.answers.get(request).cloned()
        });
        if let Some(answer) = replayed {
            return Ok(answer.into_iter().map(|(id, _)| id).collect());
        }
        // One queue at a time, parents before their children: a job is
        // added waiting for its children, then adopted by its parent; the
        // jobs without children are released last, so none runs before its
        // whole flow is in place.
        let epoch = self.epoch.lock().clone();
        let mut ids: Vec<String> = Vec::with_capacity(nodes.len());
        for node in nodes {
            let parent = node.parent.and_then(|parent| {
                Some((nodes.get(parent)?.queue.clone(), ids.get(parent)?.clone()))
            });
            let flow = FlowPart {
                parent: parent
                    .clone()
                    .map(|(queue, id)| (queue, id, node.on_failure)),
                delay_ms: node.job.delay_ms,
                ..FlowPart::default()
            };
            let id = self.with(&node.queue, |step| {
                step.add_waiting_for_children(node.job.clone(), flow, &epoch)
            });
            if let Some((queue, parent)) = parent {
                let child = (node.queue.clone(), id.clone());
                self.with(&queue, |step| {
                    if let Some(flow) = step
                        .q
                        .jobs
                        .get_mut(&parent)
                        .and_then(|job| job.flow.as_deref_mut())
                    {
                        flow.children
                            .push((child.0, child.1, ChildOutcome::Pending));
                        flow.pending += 1;
                    }
                });
            }
            ids.push(id);
        }
        for (index, node) in nodes.iter().enumerate() {
            if !nodes.iter().any(|other| other.parent == Some(index)) {
                self.with(&node.queue, |step| step.release(&ids[index]));
            }
        }
        let ids: Vec<JobId> = ids.into_iter().map(JobId::from).collect();
        let answer = ids.iter().map(|id| (id.clone(), true)).collect();
        self.with(root, |step| step.keep_answer(request, answer));
        Ok(ids)
    }

    async fn children(&self, queue: &str, id: &JobId) -> Result<Vec<ChildInfo>> {
        Ok(self.with(queue, |step| {
            let Some(flow) = step
                .q
                .jobs
                .get(id.as_str())
                .and_then(|job| job.flow.as_ref())
            else {
                return Vec::new();
            };
            let mut children: Vec<ChildInfo> = flow
                .children
                .iter()
                .map(|(queue, child, outcome)| ChildInfo {
                    queue: queue.clone(),
                    id: JobId::from(child.as_str()),
                    outcome: outcome.clone(),
                })
                .collect();
            sort_children(&mut children);
            children
        }))
    }

    async fn upsert_scheduler(
        &self,
        queue: &str,
        id: &str,
        schedule: &str,
        template: &[u8],
    ) -> Result<u64> {
        self.with(queue, |step| {
            let schedulers = &mut step.q.schedulers;
            if !schedulers.contains_key(id) && schedulers.len() as u64 >= MAX_SCHEDULERS {
                return Err(Error::InvalidSetting(format!(
                    "the queue holds {MAX_SCHEDULERS} schedulers, the most it may"
                )));
            }
            let held = schedulers
                .entry(id.to_owned())
                .or_insert_with(|| StoredScheduler {
                    id: id.to_owned(),
                    schedule: String::new(),
                    template: Vec::new(),
                    revision: 0,
                    next_ms: 0,
                    paused: false,
                    last: None,
                    previous: None,
                    due_ms: 0,
                    from_ms: 0,
                });
            if held.schedule == schedule && held.template == template {
                return Ok(held.revision);
            }
            let revision = (step.q.scheduler_revision + 1).max(held.revision + 1);
            step.q.scheduler_revision = revision;
            held.revision = revision;
            let schedule_changed = held.schedule != schedule;
            schedule.clone_into(&mut held.schedule);
            template.clone_into(&mut held.template);
            let dropped = step.drop_ahead(id);
            if let Some(held) = step.q.schedulers.get_mut(id) {
                if schedule_changed {
                    held.next_ms = 0;
                    held.from_ms = step.now;
                } else if let Some(tick) = dropped {
                    held.next_ms = tick;
                }
                if (schedule_changed || dropped.is_some()) && !held.paused {
                    held.due_ms = 0;
                }
            }
            Ok(revision)
        })
    }

    async fn remove_scheduler(&self, queue: &str, id: &str) -> Result<bool> {
        Ok(self.with(queue, |step| {
            step.drop_ahead(id);
            step.q.schedulers.remove(id).is_some()
        }))
    }

    async fn pause_scheduler(&self, queue: &str, id: &str, paused: bool) -> Result<bool> {
        Ok(self.with(queue, |step| {
            if !step.q.schedulers.contains_key(id) {
                return false;
            }
            if paused {
                step.drop_ahead(id);
            }
            let Some(held) = step.q.schedulers.get_mut(id) else {
                return false;
            };
            if !paused && held.paused {
                let revision = (step.q.scheduler_revision + 1).max(held.revision + 1);
                step.q.scheduler_revision = revision;
                held.revision = revision;
                held.next_ms = 0;
                held.from_ms = step.now;
            }
            held.paused = paused;
            held.due_ms = 0;
            true
        }))
    }

    async fn scheduler(&self, queue: &str, id: &str) -> Result<Option<StoredScheduler>> {
        Ok(self.with(queue, |step| step.q.schedulers.get(id).cloned()))
    }

    async fn schedulers(
        &self,
        queue: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<StoredScheduler>> {
        Ok(self.with(queue, |step| {
            step.q
                .schedulers
                .range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
                .take(limit)
                .map(|(_, held)| held.clone())
                .collect()
        }))
    }

    async fn due_schedulers(&self, queue: &str, limit: usize) -> Result<DueSchedulers> {
        Ok(self.with(queue, |step| {
            let mut waiting: Vec<&StoredScheduler> = step
                .q
                .schedulers
                .values()
                .filter(|held| !held.paused)
                .collect();
            waiting.sort_by_key(|held| (held.due_ms, held.id.as_str()));
            let due_count = waiting
                .iter()
                .take(limit)
                .take_while(|held| held.due_ms <= step.now)
                .count();
            DueSchedulers {
                now_ms: step.now,
                next_due_ms: waiting.get(due_count).map(|held| held.due_ms),
                due: waiting[..due_count]
                    .iter()
                    .map(|held| (*held).clone())
                    .collect(),
            }
        }))
    }

    async fn fetch(&self, queue: &str, call: &FetchCall) -> Result<Fetched> {
        // A fetch here never waits on I/O: yield, so a worker's fetch loop
        // cannot keep its thread from the handlers it just spawned.
        tokio::task::yield_now().await;
        Ok(self.with(queue, |step| {
            if let Some(last) = step.q.last_calls.get(&call.caller)
                && last.request == call.request
            {
                // A re-sent call: the first one's answer, less the leases
                // that are no longer held.
                let rejected = last.rejected;
                let held: Vec<Lease> = last
                    .leases
                    .iter()
                    .filter(|lease| step.owned(lease))
                    .cloned()
                    .collect();
                let mut left = millis(call.lease);
                let jobs = held
                    .into_iter()
                    .filter_map(|lease| {
                        let job = step.q.jobs.get(lease.id.as_str())?;
                        // An active job's position is its lease's deadline.
                        left = left.min(job.position.saturating_sub(step.now));
                        Some(job.taken(lease))
                    })
                    .collect();
                return Fetched {
                    now_ms: step.now,
                    next_wake: step.next_wake(),
                    rejected,
                    lease_left: Duration::from_millis(left),
                    jobs,
                };
            }
            let mut rejected = 0;
            for (index, ack) in call.acks.iter().enumerate() {
                if step.owned(ack) {
                    step.leave_active(ack.id.as_str());
                    if let Some(result) =
                        call.results.get(index).filter(|result| !result.is_empty())
                        && let Some(job) = step.q.jobs.get_mut(ack.id.as_str())
                    {
                        job.result.clone_from(result);
                    }
                    step.make_completed(ack.id.as_str());
                } else {
                    rejected += 1;
                }
            }
            if call.acks.is_empty() {
                step.trim_completed_by_age();
            } else {
                step.trim_completed();
            }
            step.promote();
            step.recover();
            let paused = step.q.paused;
            // A hold, then the rate limit (as fetch.lua): how many may
            // start, and when more may if that cuts the call short.
            let mut want = if paused { 0 } else { call.want };
            let mut limited_until = None;
            if step.q.hold_until > step.now {
                want = 0;
                limited_until = Some(step.q.hold_until);
            }
            let rate_room = step.q.rate.map(|(max, per)| {
                let now = step.now;
                while step
                    .q
                    .starts
                    .front()
                    .is_some_and(|(at, _)| *at + per <= now)
                {
                    step.q.starts.pop_front();
                }
                let room = (max as usize).saturating_sub(step.q.starts.len());
                want = want.min(room);
                (room, per)
            });
            let jobs = if want == 0 {
                Vec::new()
            } else {
                step.take(millis(call.lease), want, call.max_bytes, &call.request)
            };
            if let Some((room, per)) = rate_room {
                let now = step.now;
                step.q
                    .starts
                    .extend(jobs.iter().map(|job| (now, job.lease.token.clone())));
                if jobs.len() >= room {
                    let free_at = step.q.starts.front().map_or(now + 1, |(at, _)| at + per);
                    limited_until =
                        Some(limited_until.map_or(free_at, |until: u64| until.max(free_at)));
                }
            }
            step.q.last_calls.insert(
                call.caller.clone(),
                LastCall {
                    request: call.request.clone(),
                    rejected,
                    leases: jobs.iter().map(|job| job.lease.clone()).collect(),
                },
            );
            let parked = step
                .q
                .parked
                .values()
                .min()
                .map(|until| Duration::from_millis(until.saturating_sub(step.now)));
            let limited = limited_until.map(|until| Duration::from_millis(until - step.now));
            let limited = match (limited, parked) {
                (Some(limited), Some(parked)) => Some(limited.min(parked)),
                (limited, parked) => limited.or(parked),
            };
            let next_wake = match (limited, step.next_wake()) {
                (Some(limited), Some(due)) => Some(limited.min(due)),
                (limited, due) => limited.or(due),
            };
            Fetched {
                now_ms: step.now,
                next_wake,
                rejected,
                lease_left: Duration::from_millis(millis(call.lease)),
                jobs,
            }
        }))
    }

    async fn wait(&self, queue: &str, timeout: Duration) -> Result<()> {
        let shared = self.shared(queue);
        let _ = tokio::time::timeout(timeout, shared.wake.notified()).await;
        Ok(())
    }

    async fn fail(
        &self,
        queue: &str,
        lease: &Lease,
        failure: Failure,
        error: &str,
    ) -> Result<AfterFailure> {
        let error = bounded_message(error);
        let error = error.as_ref();
        Ok(self.with(queue, |step| {
            if !step.owned(lease) {
                // A call re-sent after it ran answers what it did.
                let now = step.now;
                if step
                    .q
                    .cancelled_runs
                    .get(lease.id.as_str())
                    .is_some_and(|(token, until)| *token == lease.token && *until > now)
                {
                    return AfterFailure::Cancelled;
                }
                return step
                    .q
                    .jobs
                    .get(lease.id.as_str())
                    .and_then(|job| job.outcome.as_ref())
                    .filter(|(token, _)| *token == lease.token)
                    .map_or(AfterFailure::Lost, |(_, after)| *after);
            }
            let id = lease.id.as_str();
            step.leave_active(id);
            let after = step.end_attempt(id, failure, error);
            if let Some(job) = step.q.jobs.get_mut(id) {
                job.outcome = Some((lease.token.clone(), after));
            }
            if after == AfterFailure::Cancelled {
                let now = step.now;
                step.q.cancelled_runs.retain(|_, (_, until)| *until > now);
                step.q
                    .cancelled_runs
                    .insert(id.to_owned(), (lease.token.clone(), now + ANSWER_KEPT_MS));
            }
            after
        }))
    }

    async fn renew(&self, queue: &str, lease: Duration, held: &[Lease]) -> Result<Renewed> {
        Ok(self.with(queue, |step| {
            let deadline = step.now + millis(lease);
            let mut renewed = Renewed::default();
            for (position, lease) in held.iter().enumerate() {
                if !step.owned(lease) {
                    renewed.lost.push(position);
                    continue;
                }
                let id = lease.id.as_str().to_owned();
                if let Some(job) = step.q.jobs.get_mut(&id) {
                    step.q.active.remove(&(job.position, id.clone()));
                    job.position = deadline;
                    step.q.active.insert((deadline, id));
                    if job.cancel {
                        renewed.cancel.push(position);
                    }
                }
            }
            step.promote();
            step.recover();
            step.trim_completed_by_age();
            renewed
        }))
    }

    async fn progress(
        &self,
        queue: &str,
        lease: &Lease,
        percent: u8,
        message: &str,
    ) -> Result<bool> {
        Ok(self.with(queue, |step| {
            if !step.owned(lease) {
                return false;
            }
            let message = bounded_message(message).into_owned();
            if let Some(job) = step.q.jobs.get_mut(lease.id.as_str()) {
                job.progress = Some(Progress {
                    percent,
                    message: message.clone(),
                });
            }
            let fields = [("percent", percent.to_string()), ("message", message)];
            step.emit("progress", lease.id.as_str(), &fields);
            true
        }))
    }

    async fn check_enqueue(&self, _queue: &str) -> Result<()> {
        Ok(())
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> Result<()> {
        self.with(queue, |step| {
            step.q.paused = paused;
            if !paused {
                step.wake();
            }
        });
        Ok(())
    }

    async fn counts(&self, queue: &str) -> Result<Counts> {
        Ok(self.with(queue, |step| {
            step.promote();
            step.recover();
            step.trim_completed_by_age();
            step.counts()
        }))
    }

    async fn backlog(&self, queue: &str, most_groups: usize) -> Result<Backlog> {
        Ok(self.with(queue, |step| {
            step.promote();
            step.recover();
            step.trim_completed_by_age();
            Backlog {
                counts: step.counts(),
                oldest_waiting: step
                    .oldest_head(most_groups)
                    .map(|ready| Duration::from_millis(step.now.saturating_sub(ready))),
            }
        }))
    }

    async fn cancel(&self, queue: &str, id: &JobId) -> Result<Cancelled> {
        Ok(self.with(queue, |step| step.cancel_job(id.as_str())))
    }

    async fn retry_dead(&self, queue: &str, which: DeadJobs<'_>) -> Result<u64> {
        Ok(self.with(queue, |step| {
            let ids: Vec<String> = match which {
                DeadJobs::One(id) => vec![id.as_str().to_owned()],
                DeadJobs::Oldest(limit) => step
                    .q
                    .dead
                    .iter()
                    .take(usize::try_from(limit).unwrap_or(usize::MAX))
                    .map(|(_, id)| id.clone())
                    .collect(),
            };
            let mut moved = 0;
            for id in ids {
                let Some(job) = step.q.jobs.get_mut(&id) else {
                    continue;
                };
                if job.state != JobState::Dead {
                    continue;
                }
                step.q.dead.remove(&(job.position, id.clone()));
                job.failures = 0;
                job.stalls = 0;
                job.cancel = false;
                step.make_waiting(&id, false);
                step.emit("retried", &id, &[("delay", "0".to_owned())]);
                moved += 1;
            }
            if moved > 0 {
                step.wake();
            }
            moved
        }))
    }

    async fn clean(
        &self,
        queue: &str,
        state: Finished,
        older_than: Duration,
        keep: u64,
        limit: u64,
    ) -> Result<u64> {
        Ok(self.with(queue, |step| {
            let cutoff = step.now.saturating_sub(millis(older_than));
            if state == Finished::Completed {
                return step.trim_done(cutoff, keep, limit);
            }
            let removable = (step.q.dead.len() as u64).saturating_sub(keep).min(limit);
            let mut removed = 0;
            while removed < removable
                && step
                    .q
                    .dead
                    .first()
                    .is_some_and(|(finished, _)| *finished <= cutoff)
            {
                if let Some((_, id)) = step.q.dead.pop_first() {
                    step.q.jobs.remove(&id);
                }
                removed += 1;
            }
            removed
        }))
    }

    async fn set_rate_limit(&self, queue: &str, max: u32, per: Duration) -> Result<()> {
        self.with(queue, |step| {
            if max == 0 {
                step.q.rate = None;
                step.q.starts.clear();
            } else {
                step.q.rate = Some((max, millis(per).max(1)));
            }
            step.wake();
        });
        Ok(())
    }

    async fn set_group_rate_limit(&self, queue: &str, max: u32, per: Duration) -> Result<()> {
        self.with(queue, |step| {
            step.q.group_rate = (max > 0).then(|| (max, millis(per).max(1)));
            step.wake();
        });
        Ok(())
    }

    async fn limits(&self, queue: &str) -> Result<Limits> {
        Ok(self.with(queue, |step| {
            let now = step.now;
            let rate_limit = |(max, per): (u32, u64)| RateLimit {
                max,
                per: Duration::from_millis(per),
            };
            let started_in_window = step.q.rate.map_or(0, |(_, per)| {
                step.q
                    .starts
                    .iter()
                    .filter(|(at, _)| *at + per > now)
                    .count() as u64
            });
            Limits {
                rate: step.q.rate.map(rate_limit),
                started_in_window,
                group_rate: step.q.group_rate.map(rate_limit),
                group_concurrency: (step.q.group_cap > 0).then_some(step.q.group_cap),
                held_for: (step.q.hold_until > now)
                    .then(|| Duration::from_millis(step.q.hold_until - now)),
            }
        }))
    }

    async fn set_group_limit(&self, queue: &str, limit: u32) -> Result<()> {
        self.with(queue, |step| {
            step.q.group_cap = limit;
            let groups: Vec<String> = step
                .q
                .groups
                .iter()
                .filter(|(group, jobs)| !group.is_empty() && !jobs.is_empty())
                .map(|(group, _)| group.clone())
                .collect();
            for group in groups {
                if step.group_room(&group) > 0 {
                    step.ring(&group);
                }
            }
            step.wake();
        });
        Ok(())
    }

    async fn job(&self, queue: &str, id: &JobId) -> Result<Option<JobInfo>> {
        Ok(self.with(queue, |step| {
            step.q.jobs.get(id.as_str()).map(|job| JobInfo {
                id: id.clone(),
                state: job.state,
                payload: job.payload.clone(),
                priority: job.priority,
                group: Some(job.group.clone()).filter(|group| !group.is_empty()),
                failures: job.failures,
                stalls: job.stalls,
                runs: job.runs,
                max_attempts: job.max_attempts,
                created_at: time_of(job.created),
                ready_at: time_of(job.ready),
                started_at: (job.started > 0).then(|| time_of(job.started)),
                finished_at: (job.finished > 0).then(|| time_of(job.finished)),
                progress: job.progress.clone(),
                errors: job.errors.clone(),
                dead_reason: (job.state == JobState::Dead && !job.dead_reason.is_empty())
                    .then(|| job.dead_reason.clone()),
                cancel_requested: job.cancel,
                tick: Tick::parse(&job.tick),
                result: (!job.result.is_empty()).then(|| job.result.clone()),
                context: (!job.context.is_empty()).then(|| job.context.clone()),
            })
        }))
    }

    async fn list(&self, queue: &str, state: JobState, limit: usize) -> Result<Vec<JobId>> {
        Ok(self.with(queue, |step| {
            let q = &step.q;
            let ids: Box<dyn Iterator<Item = &String>> = match state {
                JobState::Active => Box::new(q.active.iter().map(|(_, id)| id)),
                JobState::Delayed => Box::new(q.delayed.iter().map(|(_, id)| id)),
                JobState::Completed => Box::new(q.done.iter()),
                JobState::Dead => Box::new(q.dead.iter().rev().map(|(_, id)| id)),
                JobState::WaitingChildren => Box::new(q.waiting_children.iter().map(|(_, id)| id)),
                JobState::Waiting => Box::new(std::iter::empty()),
            };
            ids.take(limit).map(|id| JobId::from(id.as_str())).collect()
        }))
    }

    async fn events(&self, queue: &str, after: Option<&str>, count: usize) -> Result<Vec<Event>> {
        let position = |text: &str| -> (u64, u64) {
            let (ms, seq) = text.split_once('-').unwrap_or((text, "0"));
            (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
        };
        let after = after.map(position);
        Ok(self.with(queue, |step| {
            step.q
                .events
                .iter()
                .filter(|event| after.is_none_or(|after| position(&event.position) > after))
                .take(count)
                .cloned()
                .collect()
        }))
    }

    async fn durability_warning(&self) -> Result<Option<String>> {
        Ok(Some(
            "the memory backend keeps jobs in this process only: they are lost when it exits"
                .to_owned(),
        ))
    }

    fn round_trips(&self) -> u64 {
        0
    }

    async fn announce(&self, id: &str, report: &[u8]) -> Result<()> {
        let now = now_ms();
        let forget = u64::try_from(crate::store::FORGET_AFTER.as_millis()).unwrap_or(u64::MAX);
        let mut processes = self.processes.lock();
        processes.retain(|_, (_, at)| now.saturating_sub(*at) < forget);
        processes.insert(id.to_owned(), (report.to_vec(), now));
        Ok(())
    }

    async fn withdraw(&self, id: &str) -> Result<()> {
        self.processes.lock().remove(id);
        Ok(())
    }

    async fn processes(&self) -> Result<Vec<(Vec<u8>, u64)>> {
        let now = now_ms();
        Ok(self
            .processes
            .lock()
            .values()
            .map(|(report, at)| (report.clone(), now.saturating_sub(*at)))
            .collect())
    }
}

/// What an idempotency key promises to be the same job: the payload and
/// the options that change how it runs, as the Redis backend digests them.
fn digest(job: &NewJob) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    (
        &job.payload,
        job.priority,
        job.max_attempts,
        &job.backoff,
        job.timeout_ms,
        &job.group,
        job.delay_ms,
    )
        .hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use seawall_testkit::wait;

    use super::*;
    use crate::{Job, JobError, JobOptions, Queues};

    impl MemoryStore {
        /// How many deduplication keys `queue` keeps.
        fn held_keys(&self, queue: &str) -> usize {
            self.queues
                .lock()
                .get(queue)
                .map_or(0, |shared| shared.state.lock().unique.len())
        }
    }

    /// Keys held until a job starts or completes, or for a debounce, go
    /// when their jobs finish (as in Redis, where the integration test
    /// looks at the keys themselves), not at their 30-day expiry.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_key_is_freed_when_its_job_finishes() {
        let store = Arc::new(MemoryStore::new(Settings::default()));
        let queues = Queues::on(Arc::clone(&store) as Arc<dyn Store>);
        let until_done = |key: &str| {
            JobOptions::new()
                .unique_until_completed(key)
                .and_then(|options| options.attempts(1))
                .expect("valid")
        };
        let jobs = [
            (
                "ok",
                JobOptions::new().unique_until_started("s").expect("valid"),
            ),
            ("ok", until_done("c")),
            ("die", until_done("d")),
            (
                "ok",
                JobOptions::new()
                    .debounce("k", Duration::from_millis(20))
                    .expect("valid"),
            ),
        ];
        for (payload, options) in &jobs {
            queues
                .enqueue("keys", payload, options)
                .await
                .expect("enqueues");
        }
        assert_eq!(store.held_keys("keys"), 4);

        let worker =
            queues
                .worker("keys")
                .expect("a valid name")
                .start(|job: Job<String>| async move {
                    if job.payload == "die" {
                        return Err(JobError::permanent("no"));
                    }
                    Ok(())
                });
        wait::until_async("three completed and one dead", async || {
            let counts = queues.counts("keys").await.expect("counts");
            counts.completed == 3 && counts.dead == 1
        })
        .await;
        worker.shutdown(Duration::from_secs(5)).await;
        assert_eq!(store.held_keys("keys"), 0, "finished jobs hold no key");
    }
}
