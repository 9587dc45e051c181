//! The scripts at their edges, driven as the worker drives them, on a real
//! redis-server: thousands of acknowledgements in one call, arguments that
//! must be refused before anything is written, calls re-sent after they
//! ran, writes the server lost, and payloads that must be split by size.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use fred::prelude::{Builder, Config};
use seawall_testkit::Conn;

use super::model;
use super::{dump_keys, restore_keys, server};
use crate::error::Error;
use crate::job::{Cancelled, JobId, JobState};
use crate::redis::{self, RedisOptions, RedisStore};
use crate::store::{
    AfterFailure, Failure, FetchCall, Fetched, KeyHold, Lease, NewJob, Settings, Store, TickGuard,
    random_id,
};
use crate::wire::WIRE_VERSION;

/// A store under a prefix of its own, and that prefix.
async fn store() -> (RedisStore, String) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let prefix = format!("edge-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let config = Config::from_url(&server().url()).expect("a URL");
    let options = RedisOptions {
        prefix: prefix.clone(),
        blocking_connections: 1,
        acquire_timeout: Duration::from_secs(1),
        replicas: None,
        one_slot: false,
    };
    let settings = Settings {
        keep_completed: 100_000,
        ..Settings::default()
    };
    let store = RedisStore::connect(Builder::from_config(config), options, settings)
        .await
        .expect("connects");
    (store, prefix)
}

fn conn() -> Conn {
    server().connect().expect("connects")
}

fn keys(prefix: &str) -> Vec<String> {
    let reply = conn().cmd(&["KEYS", &format!("{prefix}:*")]).expect("KEYS");
    let mut keys: Vec<String> = reply
        .as_array()
        .unwrap_or_default()
        .iter()
        .filter_map(|key| key.as_str().map(str::to_owned))
        .collect();
    keys.sort();
    keys
}

fn job(payload: &[u8]) -> NewJob {
    NewJob {
        payload: payload.to_vec(),
        priority: 3,
        max_attempts: 3,
        backoff: String::new(),
        timeout_ms: 0,
        group: String::new(),
        delay_ms: 0,
        idempotency: None,
        trace: String::new(),
        context: String::new(),
    }
}

fn call(want: usize, acks: Vec<Lease>) -> FetchCall {
    FetchCall {
        caller: random_id(),
        request: random_id(),
        lease: Duration::from_secs(60),
        want,
        max_bytes: 16 << 20,
        acks,
        results: Vec::new(),
    }
}

#[tokio::test]
async fn nine_thousand_acknowledgements_complete_in_one_call() {
    let (store, _) = store().await;
    let jobs = (0..9_000).map(|_| job(b"1")).collect::<Vec<_>>();
    for chunk in jobs.chunks(1_000) {
        store
            .enqueue("q", &random_id(), chunk.to_vec(), WIRE_VERSION)
            .await
            .expect("enqueues");
    }
    let mut held = Vec::new();
    while held.len() < 9_000 {
        let taken = store
            .fetch("q", &call(10_000, Vec::new()))
            .await
            .expect("takes");
        assert!(!taken.jobs.is_empty(), "jobs left to take");
        held.extend(taken.jobs.into_iter().map(|job| job.lease));
    }
    let acked = store
        .fetch("q", &call(0, held))
        .await
        .expect("acknowledges");
    assert_eq!(acked.rejected, 0);
    let counts = store.counts("q").await.expect("counts");
    assert_eq!((counts.completed, counts.active), (9_000, 0), "{counts:?}");
}

#[tokio::test]
async fn a_bad_argument_anywhere_in_a_bulk_writes_nothing() {
    let (store, prefix) = store().await;
    let mut bad = job(b"2");
    // What an idempotency window of Duration::MAX became: past what
    // SET ... PX takes.
    bad.idempotency = Some(("k".to_owned(), KeyHold::Window(u64::MAX)));
    let refused = store
        .enqueue(
            "q",
            &random_id(),
            vec![job(b"1"), bad, job(b"3")],
            WIRE_VERSION,
        )
        .await;
    assert!(matches!(refused, Err(Error::Redis(_))), "{refused:?}");
    assert_eq!(keys(&prefix), Vec::<String>::new(), "nothing written");

    // Every other script refuses before its first write as well.
    let lease = Lease {
        id: "1".into(),
        token: "x.1".to_owned(),
    };
    let fail = store
        .fail("q", &lease, Failure::Retry(Duration::MAX), "no")
        .await;
    assert!(matches!(fail, Err(Error::Redis(_))), "{fail:?}");
    assert_eq!(keys(&prefix), Vec::<String>::new(), "nothing written");
}

#[tokio::test]
async fn a_trace_context_is_kept_with_its_job_and_an_oversized_one_writes_nothing() {
    let (store, prefix) = store().await;
    let mut oversized = job(b"2");
    oversized.trace = format!("p {}", "a".repeat(600));
    let refused = store
        .enqueue("q", &random_id(), vec![job(b"1"), oversized], WIRE_VERSION)
        .await;
    assert!(matches!(refused, Err(Error::Redis(_))), "{refused:?}");
    assert_eq!(keys(&prefix), Vec::<String>::new(), "nothing written");

    let context = "p 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 vendor=x";
    let mut traced = job(b"3");
    traced.trace = context.to_owned();
    store
        .enqueue("q", &random_id(), vec![traced, job(b"4")], WIRE_VERSION)
        .await
        .expect("enqueues");
    let taken = store
        .fetch("q", &call(2, Vec::new()))
        .await
        .expect("fetches");
    let contexts: Vec<&str> = taken.jobs.iter().map(|job| job.trace.as_str()).collect();
    if redis::TRACED {
        assert_eq!(
            contexts,
            [context, ""],
            "each job's own, none for the untraced"
        );
    } else {
        // A build that cannot follow a trace is not handed one.
        assert_eq!(contexts, ["", ""], "not asked for, not answered");
    }
}

#[tokio::test]
async fn a_context_travels_with_its_job_and_an_oversized_one_writes_nothing() {
    let (store, prefix) = store().await;
    let with = |payload: &[u8], context: &str, trace: &str| NewJob {
        context: context.to_owned(),
        trace: trace.to_owned(),
        ..job(payload)
    };
    let refused = store
        .enqueue(
            "q",
            &random_id(),
            vec![job(b"1"), with(b"2", &"c".repeat(257), "")],
            WIRE_VERSION,
        )
        .await;
    assert!(matches!(refused, Err(Error::Redis(_))), "{refused:?}");
    assert_eq!(keys(&prefix), Vec::<String>::new(), "nothing written");

    let trace = "p 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let ids = store
        .enqueue(
            "q",
            &random_id(),
            vec![
                with(b"3", "read-after=0/16B3", ""),
                job(b"4"),
                with(b"5", &"c".repeat(256), trace),
            ],
            WIRE_VERSION,
        )
        .await
        .expect("enqueues");
    let taken = store
        .fetch("q", &call(3, Vec::new()))
        .await
        .expect("fetches");
    let seen: Vec<(&str, &str)> = taken
        .jobs
        .iter()
        .map(|job| (job.context.as_str(), job.trace.as_str()))
        .collect();
    let long = "c".repeat(256);
    let trace_seen = if redis::TRACED { trace } else { "" };
    assert_eq!(
        seen,
        [
            ("read-after=0/16B3", ""),
            ("", ""),
            (long.as_str(), trace_seen)
        ]
    );
    let info = store
        .job("q", &ids[0].0)
        .await
        .expect("reads")
        .expect("kept");
    assert_eq!(info.context.as_deref(), Some("read-after=0/16B3"));
    let plain = store
        .job("q", &ids[1].0)
        .await
        .expect("reads")
        .expect("kept");
    assert_eq!(plain.context, None);
}

#[tokio::test]
async fn a_debounce_takes_the_later_jobs_context_with_its_payload() {
    let (store, _) = store().await;
    let debounced = |payload: &[u8], context: &str| NewJob {
        context: context.to_owned(),
        delay_ms: 60_000,
        idempotency: Some(("k".to_owned(), KeyHold::Debounce)),
        ..job(payload)
    };
    let mut ids = Vec::new();
    for (payload, context) in [(b"1", "first"), (b"2", "second"), (b"3", "")] {
        let added = store
            .enqueue(
                "q",
                &random_id(),
                vec![debounced(payload, context)],
                WIRE_VERSION,
            )
            .await
            .expect("enqueues");
        ids.push(added[0].0.clone());
        let info = store.job("q", &ids[0]).await.expect("reads").expect("kept");
        assert_eq!(info.payload, payload);
        assert_eq!(
            info.context.as_deref(),
            Some(context).filter(|c| !c.is_empty())
        );
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "one job: {ids:?}");
}

#[tokio::test]
async fn a_negative_counter_is_an_error_not_a_count() {
    let (store, prefix) = store().await;
    store
        .enqueue("q", &random_id(), vec![job(b"1")], WIRE_VERSION)
        .await
        .expect("enqueues");
    conn()
        .cmd(&["HSET", &format!("{prefix}:{{q}}:meta"), "waiting", "-1"])
        .expect("HSET");
    let counts = store.counts("q").await;
    assert!(
        matches!(&counts, Err(Error::Protocol(why)) if why.contains("-1")),
        "{counts:?}"
    );
}

#[tokio::test]
async fn a_re_sent_enqueue_adds_its_jobs_once() {
    let (store, _) = store().await;
    let request = random_id();
    let first = store
        .enqueue("q", &request, vec![job(b"1"), job(b"2")], WIRE_VERSION)
        .await
        .expect("enqueues");
    let again = store
        .enqueue("q", &request, vec![job(b"1"), job(b"2")], WIRE_VERSION)
        .await
        .expect("answers");
    assert_eq!(first, again);
    assert_eq!(store.counts("q").await.expect("counts").waiting, 2);
}

#[tokio::test]
async fn a_re_sent_fetch_answers_its_first_result() {
    let (store, _) = store().await;
    store
        .enqueue(
            "q",
            &random_id(),
            (0..4).map(|n| job(&[b'0' + n])).collect(),
            WIRE_VERSION,
        )
        .await
        .expect("enqueues");
    let first = store.fetch("q", &call(2, Vec::new())).await.expect("takes");
    let leases: Vec<Lease> = first.jobs.iter().map(|job| job.lease.clone()).collect();
    assert_eq!(leases.len(), 2);

    // The acknowledgement's answer is lost and the call sent again: the
    // first answer comes back, nothing is counted twice or leased to nobody.
    let ack = FetchCall {
        want: 1,
        ..call(0, leases.clone())
    };
    let answered = store.fetch("q", &ack).await.expect("acknowledges");
    let again = store.fetch("q", &ack).await.expect("answers again");
    assert_eq!(answered.rejected, 0);
    assert_eq!(again.rejected, 0, "the acknowledgements were taken once");
    let ids = |fetched: &Fetched| {
        fetched
            .jobs
            .iter()
            .map(|job| job.lease.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&again), ids(&answered), "the same job, the same lease");
    let counts = store.counts("q").await.expect("counts");
    assert_eq!(
        (counts.completed, counts.active, counts.waiting),
        (2, 1, 1),
        "{counts:?}"
    );

    // A failure report re-sent after it ran answers the same.
    let lease = answered.jobs[0].lease.clone();
    let failure = Failure::Retry(Duration::from_secs(60));
    let after = store.fail("q", &lease, failure, "no").await.expect("fails");
    let after_again = store
        .fail("q", &lease, failure, "no")
        .await
        .expect("answers");
    assert_eq!(
        (after, after_again),
        (AfterFailure::Delayed, AfterFailure::Delayed)
    );
    let info = store
        .job("q", &lease.id)
        .await
        .expect("reads")
        .expect("kept");
    assert_eq!(info.failures, 1, "counted once");
}

#[tokio::test]
async fn after_lost_writes_ids_and_lease_tokens_never_repeat() {
    let (store, prefix) = store().await;
    let before = store
        .enqueue("q", &random_id(), vec![job(b"1")], WIRE_VERSION)
        .await
        .expect("enqueues");
    let kept = dump_keys(server(), &prefix);
    // Written, then lost: a second job and the first one's run.
    let lost_job = store
        .enqueue("q", &random_id(), vec![job(b"2")], WIRE_VERSION)
        .await
        .expect("enqueues");
    let old = store.fetch("q", &call(1, Vec::new())).await.expect("takes");
    let old_lease = old.jobs[0].lease.clone();
    std::thread::sleep(Duration::from_millis(2));
    restore_keys(server(), &prefix, &kept);

    let after = store
        .enqueue("q", &random_id(), vec![job(b"3")], WIRE_VERSION)
        .await
        .expect("enqueues");
    assert_ne!(
        after[0].0, lost_job[0].0,
        "a lost job's id is not given again"
    );
    assert_ne!(after[0].0, before[0].0);
    let new = store.fetch("q", &call(1, Vec::new())).await.expect("takes");
    let new_lease = new.jobs[0].lease.clone();
    assert_eq!(new_lease.id, old_lease.id, "the same job runs again");
    assert_ne!(new_lease.token, old_lease.token, "under a token of its own");

    // The worker that held the lost lease renews nothing, ends nothing.
    let renewed = store
        .renew(
            "q",
            Duration::from_secs(60),
            std::slice::from_ref(&old_lease),
        )
        .await
        .expect("renews");
    assert_eq!(renewed.lost, vec![0]);
    let failed = store
        .fail("q", &old_lease, Failure::Retry(Duration::ZERO), "late")
        .await
        .expect("answers");
    assert_eq!(failed, AfterFailure::Lost);
    let acked = store
        .fetch("q", &call(0, vec![old_lease]))
        .await
        .expect("answers");
    assert_eq!(acked.rejected, 1);
    let info = store
        .job("q", &new_lease.id)
        .await
        .expect("reads")
        .expect("kept");
    assert_eq!(info.state, JobState::Active, "still the new run's");
}

#[tokio::test]
async fn a_fetch_stops_taking_past_its_byte_budget() {
    let (store, _) = store().await;
    let big = vec![b'7'; 7 << 20];
    store
        .enqueue(
            "q",
            &random_id(),
            (0..5).map(|_| job(&big)).collect(),
            WIRE_VERSION,
        )
        .await
        .expect("enqueues");
    let taken = store.fetch("q", &call(5, Vec::new())).await.expect("takes");
    // 7 + 7 MiB is under the 16 MiB budget, the third passes it: no fourth.
    assert_eq!(taken.jobs.len(), 3);
    assert_eq!(taken.next_wake, Some(Duration::ZERO), "look again at once");
    let rest = store.fetch("q", &call(5, Vec::new())).await.expect("takes");
    let order = |fetched: &Fetched| {
        fetched
            .jobs
            .iter()
            .map(|job| job.lease.id.sequence().expect("a sequence"))
            .collect::<Vec<_>>()
    };
    let (first, second) = (order(&taken), order(&rest));
    assert_eq!(second.len(), 2, "the rest waited, in their order");
    assert!(first.iter().all(|id| second.iter().all(|later| id < later)));
    assert!(second[0] < second[1]);
}

/// Numbers a command would refuse (`3600000.0` to `SET ... PX`, `1e1`,
/// `07`) are refused by the script's checks, before its first write:
/// an enqueue whose idempotency window was one of them once kept its
/// answer for a replay, and a re-sent call answered jobs never created.
#[tokio::test]
async fn numbers_that_are_not_integers_are_refused_before_anything_is_written() {
    let (store, prefix) = store().await;
    let enqueue = |window: &'static str, priority: &'static str| {
        let (keys, mut args) = store.prelude("q", 13);
        args.extend([
            fred::types::Value::from(random_id()),
            redis::int(1),
            redis::int(u64::from(WIRE_VERSION)),
            fred::types::Value::from("1"),
            fred::types::Value::from(priority),
            fred::types::Value::from("3"),
            fred::types::Value::from(""),
            fred::types::Value::from("0"),
            fred::types::Value::from(""),
            fred::types::Value::from("0"),
            fred::types::Value::from("key"),
            fred::types::Value::from(window),
            fred::types::Value::from(""),
        ]);
        store.run(&store.scripts.enqueue, keys, args)
    };
    for (window, priority) in [
        ("3600000.0", "3"),
        ("1e3", "3"),
        ("60000", "3.0"),
        ("60000", "03"),
    ] {
        let refused = enqueue(window, priority).await;
        assert!(
            matches!(refused, Err(Error::Redis(_))),
            "{window} {priority}: {refused:?}"
        );
        assert_eq!(
            keys(&prefix),
            Vec::<String>::new(),
            "{window} {priority}: nothing written"
        );
    }
    enqueue("60000", "3").await.expect("integers are taken");

    let (keys_, mut args) = store.prelude("q", 6);
    args.extend([
        fred::types::Value::from(random_id()),
        fred::types::Value::from(random_id()),
        fred::types::Value::from("6e4"),
        redis::int(1),
        redis::int(1 << 20),
        redis::int(0),
        redis::int(1),
    ]);
    let before = keys(&prefix);
    let refused = store.run(&store.scripts.fetch, keys_, args).await;
    assert!(matches!(refused, Err(Error::Redis(_))), "{refused:?}");
    assert_eq!(keys(&prefix), before, "a refused fetch writes nothing");
}

/// A lease acknowledged twice in one call completes its job once: the
/// second is rejected, and a group's running count drops once.
#[tokio::test]
async fn a_lease_acknowledged_twice_in_one_call_completes_once() {
    let (store, _) = store().await;
    model::duplicate_acks_count_once(&store).await;
}

/// A failure report for a run that ended cancelled, re-sent, answers
/// `cancelled` again, not `lost`.
#[tokio::test]
async fn a_re_sent_cancellation_answers_cancelled() {
    let (store, _) = store().await;
    model::a_re_sent_cancelled_failure_answers_cancelled(&store).await;
}

/// A scheduler removed and added again refuses a plan made for the old
/// one, as in memory.
#[tokio::test]
async fn a_scheduler_added_again_refuses_the_old_ones_plan() {
    let (store, _) = store().await;
    model::a_scheduler_added_again_refuses_the_old_ones_plan(&store).await;
}

/// After the server's clock stepped back (a failover to a replica whose
/// clock is behind), the latest tick that made a job seems still to come.
/// A change to the scheduler then cancels nothing (the job left its delay:
/// it ran), keeps that tick as made, and no look makes it again. Here the
/// job of a tick an hour ahead is taken out of its delay by hand, as if it
/// had run.
#[tokio::test]
async fn a_tick_already_made_is_not_made_again_after_the_clock_steps_back() {
    let (store, prefix) = store().await;
    let revision = store
        .upsert_scheduler("q", "s", "every 3600000 latest", b"{}")
        .await
        .expect("upserts");
    let now = store.due_schedulers("q", 10).await.expect("reads").now_ms;
    let tick = (now / 3_600_000 + 1) * 3_600_000;
    let guard = TickGuard {
        scheduler: "s".to_owned(),
        revision,
        next_ms: 0,
        new_next_ms: tick + 3_600_000,
        due_ms: tick + 3_000_000,
        ticks: vec![tick],
        job: job(b"{}"),
    };
    let added = store
        .enqueue_ticks("q", &random_id(), &[guard], WIRE_VERSION)
        .await
        .expect("enqueues");
    let id = added[0].clone().expect("planned")[0].clone();
    let mut conn = conn();
    conn.cmd(&["ZREM", &format!("{prefix}:{{q}}:delayed"), id.as_str()])
        .expect("ZREM");
    conn.cmd(&["HSET", &format!("{prefix}:{{q}}:j:{id}"), "s", "completed"])
        .expect("HSET");
    // A new template: the change takes effect from the next tick, and
    // there is nothing ahead to cancel.
    let revision = store
        .upsert_scheduler("q", "s", "every 3600000 latest", b"{\"v\":2}")
        .await
        .expect("changes");
    let held = store
        .scheduler("q", "s")
        .await
        .expect("reads")
        .expect("kept");
    assert_eq!(
        held.last.as_ref().map(|(at, _)| *at),
        Some(tick),
        "still made"
    );
    let again = TickGuard {
        scheduler: "s".to_owned(),
        revision,
        next_ms: held.next_ms,
        new_next_ms: tick + 3_600_000,
        due_ms: tick + 3_000_000,
        ticks: vec![tick],
        job: job(b"{}"),
    };
    let added = store
        .enqueue_ticks("q", &random_id(), &[again], WIRE_VERSION)
        .await
        .expect("answers");
    assert_eq!(added, vec![Some(Vec::new())], "the tick made no second job");
}

/// A call past the caps is refused, as in memory.
#[tokio::test]
async fn ticks_past_the_cap_are_refused() {
    let (store, _) = store().await;
    model::ticks_past_the_cap_are_refused(&store).await;
}

/// A job given back to the front of its line hides the older one behind
/// it from the oldest waiting age, as in memory.
#[tokio::test]
async fn the_oldest_waiting_age_looks_at_the_heads_of_the_lines() {
    let (store, _) = store().await;
    model::a_job_behind_a_younger_head_is_not_looked_at(&store).await;
}

/// Past the most groups looked at, the oldest waiting age reads the fetch
/// rotation's first groups, as in memory.
#[tokio::test]
async fn the_oldest_waiting_age_looks_at_the_rotation_past_the_most_groups() {
    let (store, _) = store().await;
    model::past_the_most_groups_the_rotation_is_looked_at(&store).await;
}

/// Taking back an enqueue that `WAIT` did not confirm removes its jobs
/// (records, lines, idempotency keys, the replay record) while no worker
/// took one, and changes nothing once one did.
#[tokio::test]
async fn an_unreplicated_enqueue_is_taken_back_only_while_untouched() {
    let (store, prefix) = store().await;
    let take_back = |request: String, ids: Vec<String>| {
        let mut rest = vec![
            fred::types::Value::from(request),
            redis::int(ids.len() as u64),
        ];
        rest.extend(ids.into_iter().map(fred::types::Value::from));
        store.control("q", "take_back", rest)
    };
    let request = random_id();
    let mut keyed = job(b"2");
    keyed.idempotency = Some(("k".to_owned(), KeyHold::Window(60_000)));
    let mut delayed = job(b"3");
    delayed.delay_ms = 60_000;
    let added = store
        .enqueue(
            "q",
            &request,
            vec![job(b"1"), keyed.clone(), delayed],
            WIRE_VERSION,
        )
        .await
        .expect("enqueues");
    let ids: Vec<String> = added.iter().map(|(id, _)| id.to_string()).collect();
    let answer = take_back(request.clone(), ids).await.expect("takes back");
    assert_eq!(answer.as_i64(), Some(1), "{answer:?}");
    let counts = store.counts("q").await.expect("counts");
    assert_eq!((counts.waiting, counts.delayed), (0, 0), "{counts:?}");
    for (id, _) in &added {
        assert!(
            store.job("q", id).await.expect("reads").is_none(),
            "{id} is gone"
        );
    }
    assert!(
        !keys(&prefix)
            .iter()
            .any(|key| key.contains(":u:") || key.contains(":r:")),
        "the key and the replay record are freed: {:?}",
        keys(&prefix)
    );
    // The key is free: the same job enqueued again is a new one.
    let again = store
        .enqueue("q", &random_id(), vec![keyed], WIRE_VERSION)
        .await
        .expect("enqueues");
    assert!(again[0].1, "added anew");

    // Once a worker took one of a call's jobs, nothing is taken back.
    let request = random_id();
    let added = store
        .enqueue("q", &request, vec![job(b"4")], WIRE_VERSION)
        .await
        .expect("enqueues");
    let taken = store
        .fetch("q", &call(10, Vec::new()))
        .await
        .expect("takes");
    assert_eq!(taken.jobs.len(), 2);
    let ids = added.iter().map(|(id, _)| id.to_string()).collect();
    let answer = take_back(request, ids).await.expect("answers");
    assert_eq!(answer.as_i64(), Some(0), "{answer:?}");
    assert_eq!(store.counts("q").await.expect("counts").active, 2);
}

/// Ids stay above the last one issued when the server's clock is behind
/// it (a replica promoted whose clock lags the old primary's): the last
/// id lives in the queue's slot, here set a minute ahead of the clock.
#[tokio::test]
async fn ids_stay_above_the_last_one_when_the_clock_is_behind() {
    let (store, prefix) = store().await;
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_micros();
    let ahead = u64::try_from(now_us - 1_767_225_600_000_000 + 60_000_000).expect("fits");
    conn()
        .cmd(&["SET", &format!("{prefix}:{{q}}:jid"), &ahead.to_string()])
        .expect("SET");
    let added = store
        .enqueue("q", &random_id(), vec![job(b"1"), job(b"2")], WIRE_VERSION)
        .await
        .expect("enqueues");
    let ids: Vec<u64> = added
        .iter()
        .map(|(id, _)| id.sequence().expect("a sequence"))
        .collect();
    assert_eq!(ids, vec![ahead + 1, ahead + 2]);
    let next = store
        .enqueue("q", &random_id(), vec![job(b"3")], WIRE_VERSION)
        .await
        .expect("enqueues");
    assert_eq!(next[0].0.sequence(), Some(ahead + 3));
}

/// An id ends with the first 16 hex digits of the server's replication id,
/// the same for every id the server gives while it is the primary.
#[tokio::test]
async fn ids_carry_the_primarys_replication_id() {
    let (store, _) = store().await;
    let info = conn().cmd(&["INFO", "replication"]).expect("INFO");
    let replid = info
        .as_str()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.trim().strip_prefix("master_replid:"))
        })
        .expect("a replication id")
        .to_owned();
    let added = store
        .enqueue("q", &random_id(), vec![job(b"1"), job(b"2")], WIRE_VERSION)
        .await
        .expect("enqueues");
    for (id, _) in &added {
        let (_, epoch) = id.as_str().split_once('-').expect("sequence-epoch");
        assert_eq!(epoch, &replid[..16], "{id}");
        assert_eq!(JobId::parse(id.as_str()).as_ref(), Some(id));
    }
}

/// Told wire version 1, an enqueue gives ids of digits alone from the same
/// sequence, as the release before epochs did; a version it does not write
/// is refused before anything is written.
#[tokio::test]
async fn wire_version_1_gives_ids_of_digits_alone() {
    let (store, prefix) = store().await;
    let old = store
        .enqueue("q", &random_id(), vec![job(b"1"), job(b"2")], 1)
        .await
        .expect("enqueues");
    let new = store
        .enqueue("q", &random_id(), vec![job(b"3")], WIRE_VERSION)
        .await
        .expect("enqueues");
    for (id, _) in &old {
        assert!(id.as_str().bytes().all(|b| b.is_ascii_digit()), "{id}");
    }
    let sequences: Vec<u64> = old
        .iter()
        .chain(&new)
        .map(|(id, _)| id.sequence().expect("a sequence"))
        .collect();
    assert!(sequences.is_sorted(), "{sequences:?}");
    assert!(new[0].0.as_str().contains('-'));
    let written = keys(&prefix);
    for wire in [0, WIRE_VERSION + 1] {
        let refused = store
            .enqueue("q", &random_id(), vec![job(b"4")], wire)
            .await;
        assert!(
            matches!(&refused, Err(error) if error.is_refusal()),
            "{wire}: {refused:?}"
        );
        assert_eq!(keys(&prefix), written, "{wire}: nothing written");
    }
}

/// Ids of the old form (digits alone) are still taken by every script, and
/// malformed ones are refused before anything changes.
#[tokio::test]
async fn ids_of_the_old_form_are_taken_and_malformed_ones_refused() {
    let (store, _) = store().await;
    for old in ["12345", "31556926000000"] {
        let answer = store.cancel("q", &JobId::from(old)).await;
        assert!(
            matches!(answer, Ok(Cancelled::NotFound)),
            "{old}: {answer:?}"
        );
    }
    for bad in [
        "",
        "12-",
        "-ab",
        "12-xyz",
        "1:2",
        "1 2",
        "12-ab-cd",
        &"1".repeat(41),
    ] {
        let refused = store.cancel("q", &JobId::from(bad)).await;
        assert!(
            matches!(&refused, Err(Error::Redis(why)) if why.details().contains("not a job id")),
            "{bad:?}: {refused:?}"
        );
        assert!(JobId::parse(bad).is_none(), "{bad:?}");
    }
}

/// The enqueue check answers as an enqueue would when the producer's
/// breaker holds its node's calls back, with replicas waited for or not:
/// a readiness probe that went past the breaker passed while every enqueue
/// was refused (a partition drill saw 2.4 s of it, the breaker open on
/// the node the client still routed the queue to after a failover).
#[tokio::test]
async fn the_enqueue_check_is_held_back_by_the_breaker_as_an_enqueue_is() {
    for replicas in [None, Some((1, Duration::from_millis(50)))] {
        let config = Config::from_url(&server().url()).expect("a URL");
        let options = RedisOptions {
            prefix: format!("edge-breaker-{}", random_id()),
            blocking_connections: 1,
            acquire_timeout: Duration::from_secs(1),
            replicas,
            one_slot: false,
        };
        let store = RedisStore::connect(Builder::from_config(config), options, Settings::default())
            .await
            .expect("connects");
        // Opened, the breaker lets the next probe through a second later.
        let open = || store.breakers.node(None).open();
        open();
        let enqueued = store
            .enqueue("q", &random_id(), vec![job(b"1")], WIRE_VERSION)
            .await;
        assert!(
            matches!(enqueued, Err(Error::Unavailable { .. })),
            "replicas {replicas:?}: {enqueued:?}"
        );
        open();
        let checked = store.check_enqueue("q").await;
        assert!(
            matches!(checked, Err(Error::Unavailable { .. })),
            "replicas {replicas:?}: the check went past the breaker: {checked:?}"
        );
        // Closed, the check answers what the server says: no replica on
        // this one.
        store.breakers.node(None).close();
        let checked = store.check_enqueue("q").await;
        match replicas {
            None => checked.expect("passes"),
            Some(_) => assert!(
                matches!(
                    checked,
                    Err(Error::NotReplicated {
                        acked: 0,
                        wanted: 1
                    })
                ),
                "{checked:?}"
            ),
        }
    }
}

/// A queue's keys as a comparable list: each key without the queue's
/// prefix, whether it expires, and its content in order (a hash's fields
/// and a set's members sorted, a stream's entries without their ids).
/// Each of `ids` reads `#n` (its place), the job's times `t`, and the id
/// sequence's last value `seq` (checked to be at or past the last id's).
fn normalized_keys(prefix: &str, queue: &str, ids: &[JobId]) -> Vec<(String, bool, Vec<String>)> {
    let base = format!("{prefix}:{{{queue}}}:");
    let named = |text: &str| -> String {
        let mut text = text.to_owned();
        for (n, id) in ids.iter().enumerate() {
            text = text.replace(id.as_str(), &format!("#{n}"));
        }
        text
    };
    let texts = |reply: &seawall_testkit::Reply| -> Vec<String> {
        reply
            .as_array()
            .unwrap_or_default()
            .iter()
            .map(|item| {
                item.as_str()
                    .map(&named)
                    .unwrap_or_else(|| format!("{item:?}"))
            })
            .collect()
    };
    let mut conn = conn();
    let mut dumped = Vec::new();
    for key in keys(prefix) {
        let Some(name) = key.strip_prefix(&base) else {
            continue;
        };
        let kind = conn.cmd(&["TYPE", &key]).expect("TYPE");
        let content = match kind.as_str().unwrap_or_default() {
            "string" => {
                let value = conn.cmd(&["GET", &key]).expect("GET");
                let value = value.as_str().unwrap_or_default();
                if name == "jid" {
                    // At or past the last id's: a replayed call of one job
                    // moves it on (see `claim_sequence`).
                    let last = ids.last().expect("an id").as_str();
                    let last: u64 = last
                        .split('-')
                        .next()
                        .and_then(|s| s.parse().ok())
                        .expect("a sequence");
                    let value: u64 = value.parse().expect("a number");
                    assert!(
                        value >= last,
                        "{queue}: the sequence {value} is behind {last}"
                    );
                    vec!["seq".to_owned()]
                } else {
                    vec![named(value)]
                }
            }
            "hash" => {
                let pairs = texts(&conn.cmd(&["HGETALL", &key]).expect("HGETALL"));
                let mut fields: Vec<String> = pairs
                    .chunks(2)
                    .map(|pair| match pair[0].as_str() {
                        "ct" | "rt" => format!("{}=t", pair[0]),
                        _ => format!("{}={}", pair[0], pair[1]),
                    })
                    .collect();
                fields.sort();
                fields
            }
            "list" => texts(&conn.cmd(&["LRANGE", &key, "0", "-1"]).expect("LRANGE")),
            "set" => {
                let mut members = texts(&conn.cmd(&["SMEMBERS", &key]).expect("SMEMBERS"));
                members.sort();
                members
            }
            "zset" => texts(
                &conn
                    .cmd(&["ZRANGE", &key, "0", "-1", "WITHSCORES"])
                    .expect("ZRANGE"),
            ),
            "stream" => conn
                .cmd(&["XRANGE", &key, "-", "+"])
                .expect("XRANGE")
                .as_array()
                .unwrap_or_default()
                .iter()
                .map(|entry| {
                    let fields = entry.as_array().and_then(|entry| entry.get(1));
                    texts(fields.expect("an entry's fields")).join(" ")
                })
                .collect(),
            other => panic!("{key}: a {other}"),
        };
        let ttl = conn.cmd(&["PTTL", &key]).expect("PTTL").as_int();
        dumped.push((named(name), ttl.is_some_and(|ttl| ttl > 0), content));
    }
    dumped
}

/// enqueue_one.lua, which a call of one plain job runs, writes what
/// enqueue.lua writes for the same job: the same keys, fields, line,
/// rotation, wake, event, count, kept answer and id sequence; and a
/// re-sent call answers alike.
#[tokio::test]
async fn a_plain_job_is_stored_alike_by_both_enqueues() {
    let (store, prefix) = store().await;
    let mut timed = job(b"2");
    timed.timeout_ms = 5_000;
    timed.backoff = "e:1000:2:3600000:0".to_owned();
    let mut traced = job(b"3");
    traced.trace = "p 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned();
    let mut with_context = job(b"4");
    with_context.context = "tenant=a".to_owned();
    with_context.max_attempts = 25;
    let jobs = [job(b"{\"n\":1}"), timed, traced, with_context];
    let (mut alone, mut general) = (Vec::new(), Vec::new());
    for job in jobs {
        let request = random_id();
        let ids = store
            .enqueue("one", &request, vec![job.clone()], WIRE_VERSION)
            .await
            .expect("enqueues alone");
        let again = store
            .enqueue("one", &request, vec![job.clone()], WIRE_VERSION)
            .await
            .expect("answers a re-sent call");
        assert_eq!(ids, again);
        assert!(ids[0].1, "added");
        alone.push(ids[0].0.clone());
        let (keys, args) =
            redis::enqueue_args(store.prelude("many", 0), &request, &[job], WIRE_VERSION);
        let reply = store
            .run(&store.scripts.enqueue, keys, args)
            .await
            .expect("enqueues through enqueue.lua");
        let answer: Vec<String> = reply.convert().expect("an id and a flag");
        assert_eq!(answer.get(1).map(String::as_str), Some("1"), "added");
        general.push(JobId::from(answer[0].as_str()));
    }
    let one = normalized_keys(&prefix, "one", &alone);
    assert_eq!(one, normalized_keys(&prefix, "many", &general));
    let names: Vec<&str> = one.iter().map(|(name, _, _)| name.as_str()).collect();
    assert!(
        names.contains(&"j:#3") && names.contains(&"ev"),
        "{names:?}"
    );
}

/// A call of one plain job (enqueue_one.lua) refuses what enqueue.lua
/// refuses, before it writes anything.
#[tokio::test]
async fn a_plain_job_alone_is_refused_whole_as_in_a_bulk() {
    let (store, prefix) = store().await;
    let mut traced = job(b"1");
    traced.trace = format!("p {}", "a".repeat(600));
    let mut with_context = job(b"2");
    with_context.context = "c".repeat(crate::MAX_CONTEXT_BYTES + 1);
    let mut no_attempts = job(b"3");
    no_attempts.max_attempts = 0;
    let mut backoff = job(b"4");
    backoff.backoff = "b".repeat(257);
    let mut timeout = job(b"5");
    timeout.timeout_ms = u64::MAX;
    for job in [traced, with_context, no_attempts, backoff, timeout] {
        let refused = store
            .enqueue("q", &random_id(), vec![job.clone()], WIRE_VERSION)
            .await;
        assert!(matches!(refused, Err(Error::Redis(_))), "{refused:?}");
        assert_eq!(keys(&prefix), Vec::<String>::new(), "nothing written");
        let refused = store
            .enqueue("q", &random_id(), vec![job, self::job(b"6")], WIRE_VERSION)
            .await;
        assert!(matches!(refused, Err(Error::Redis(_))), "{refused:?}");
        assert_eq!(keys(&prefix), Vec::<String>::new(), "nothing written");
    }
}

/// A script call's future stays small: fred's own is about 14 KiB, and
/// every future that awaits one unboxed carries and moves it (an enqueue's
/// boxed future was copied whole on every call, a third of the client's
/// instructions per enqueue).
#[tokio::test]
async fn a_script_call_is_a_small_future() {
    let (store, _) = store().await;
    let (keys, args) = store.prelude("q", 0);
    let call = store.run(&store.scripts.enqueue, keys, args);
    let size = std::mem::size_of_val(&call);
    drop(call);
    assert!(size <= 1024, "{size} bytes");
}
