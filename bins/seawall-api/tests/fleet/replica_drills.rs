//! The PostgreSQL replica drills: two API instances on a primary with two
//! streaming replicas, every process on a network host of its own, while
//! clients earn points through both instances
//! and read every balance through both (reads the cache fills as of now,
//! on a replica once it is found current), the replicas are faulted one
//! way after another; then the primary is killed and a replica promoted.
//! seawall-check reads the history with the state the new primary ends in
//! and counts stale reads (a balance older than a change acknowledged
//! before the read began, on whatever instance), acknowledged changes
//! missing, and changes applied twice.
//!
//! The faults, in order, each held for the form's hold (2 s in the test
//! command, 10 s in full, `scripts/drills --replicas`), with load between
//! them:
//! 1. both replicas' replay paused (`pg_wal_replay_pause()`);
//! 2. both replicas' replay delayed 5 s (`recovery_min_apply_delay`);
//! 3. replica 1 killed, then restarted;
//! 4. replica 1 cut off from every other host, then healed;
//! 5. the primary killed and the replica that has received the most
//!    promoted, under synchronous replication (`synchronous_standby_names
//!    = 'ANY 1 (*)'`: a commit waits for either replica, so that one cut
//!    off holds no commit up): every instance finds the new primary
//!    without a restart, and no acknowledged change is lost.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use seawall_history::{FinalState, Options, Recorder, Report};
use seawall_testkit::{FleetRedis, Postgres, wait};

use crate::partitions::{
    Clients, Form, cache_state, checked_with, drill_dir, never, seed_balances,
};
use crate::replicas::{reports, until_in_rotation};
use crate::support::{self, Running};

/// The state the drill ends in, read on `postgres` (the new primary): the
/// accounts of `users` with their ledgers, and their balances as the
/// instances serve them.
async fn final_state(fleet: &Running, postgres: &Postgres, users: &[i64]) -> FinalState {
    let list = users
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let text = postgres
        .psql(&format!(
            "SELECT COALESCE(json_agg(json_build_object('user_id', a.user_id, \
             'balance', a.balance, 'ledger', COALESCE((SELECT json_agg(json_build_object(\
             'version', l.version, 'delta', l.delta, 'idempotency_key', l.idempotency_key)) \
             FROM point_ledger l WHERE l.user_id = a.user_id), '[]'))), '[]') \
             FROM point_accounts a WHERE a.user_id IN ({list})"
        ))
        .expect("psql");
    let points: Value = serde_json::from_str(text.trim()).expect("JSON");
    serde_json::from_value(json!({
        "points": points,
        "cache": cache_state(fleet, users).await,
    }))
    .expect("a final state")
}

/// Runs the drill in `form`; returns the checker's report.
pub(crate) async fn replicas_faulted_then_promoted(form: Form) -> Report {
    let dir = drill_dir("replicas");
    let mut fleet = support::start(
        support::builder()
            .hosts(true)
            .redis(FleetRedis::Standalone)
            .instances(2)
            .workers(0)
            .postgres_replicas(2)
            .postgres_setting("synchronous_standby_names", "ANY 1 (*)")
            .postgres_setting("synchronous_commit", "on")
            .env("SEAWALL_RATELIMIT", "false"),
    )
    .await;
    let client = support::client();
    until_in_rotation(&client, &fleet, &[0, 1]).await;

    let recorder = Recorder::create(dir.join("clients.jsonl")).expect("a recorder");
    let clients = Clients {
        recorder: recorder.clone(),
        stop: Arc::new(AtomicBool::new(false)),
        token: fleet.token().to_owned(),
    };
    let users: Vec<i64> = (1..=4).map(|n| 950_000 + n).collect();
    seed_balances(&fleet, &recorder, &users).await;
    let bases = fleet.instance_urls();
    let mut tasks = Vec::new();
    for (n, &user) in users.iter().enumerate() {
        tasks.push(tokio::spawn(clients.clone().earn(
            format!("points-{}", n + 1),
            bases[n % bases.len()].clone(),
            user,
            1,
        )));
    }
    // The readers' recorder is the same before and after any fault: every
    // read is held to the cache's window.
    let never_healed = Arc::new(AtomicBool::new(false));
    for (n, base) in bases.iter().enumerate() {
        tasks.push(tokio::spawn(clients.clone().read(
            format!("reader-{}", n + 1),
            base.clone(),
            users.clone(),
            recorder.clone(),
            Arc::clone(&never_healed),
        )));
    }
    let between = form.after / 2;
    tokio::time::sleep(form.before).await;

    let fault = |op: &str, value: Value| recorder.fault(op, value).expect("records");
    let replica_hosts = ["postgres-replica-1", "postgres-replica-2"];

    // 1. Replay paused on both replicas.
    for n in 1..=2 {
        let replica = fleet.postgres_replica_mut(n).expect("a replica");
        replica.pause_replay().expect("pauses");
        fault("pause", json!({"host": replica_hosts[n - 1]}));
    }
    tokio::time::sleep(form.hold).await;
    for n in 1..=2 {
        let replica = fleet.postgres_replica_mut(n).expect("a replica");
        replica.resume_replay().expect("resumes");
        fault("resume", json!({"host": replica_hosts[n - 1]}));
    }
    tokio::time::sleep(between).await;

    // 2. Replay delayed 5 s on both.
    for n in 1..=2 {
        let replica = fleet.postgres_replica_mut(n).expect("a replica");
        replica.apply_delay(Duration::from_secs(5)).expect("delays");
        fault("delay", json!({"host": replica_hosts[n - 1], "ms": 5000}));
    }
    tokio::time::sleep(form.hold).await;
    for n in 1..=2 {
        let replica = fleet.postgres_replica_mut(n).expect("a replica");
        replica.apply_delay(Duration::ZERO).expect("undelays");
        fault("resume", json!({"host": replica_hosts[n - 1]}));
    }
    tokio::time::sleep(between).await;

    // 3. Replica 1 killed, then restarted.
    fleet
        .postgres_replica_mut(1)
        .expect("a replica")
        .kill()
        .expect("kills");
    fault("kill", json!({"host": replica_hosts[0]}));
    tokio::time::sleep(form.hold).await;
    fleet
        .postgres_replica_mut(1)
        .expect("a replica")
        .restart()
        .expect("restarts");
    fault("restart", json!({"host": replica_hosts[0]}));
    until_in_rotation(&client, &fleet, &[0]).await;
    tokio::time::sleep(between).await;

    // 4. Replica 1 cut off from every other host.
    fleet.isolate(replica_hosts[0]).expect("isolates");
    tokio::time::sleep(form.hold).await;
    fleet.heal().expect("heals");
    until_in_rotation(&client, &fleet, &[0]).await;
    tokio::time::sleep(between).await;

    // 5. The primary killed; the replica that has received the most is
    // promoted, as a failover manager would choose: under `ANY 1` every
    // acknowledged commit is on at least one of them.
    fleet.postgres_mut().kill().expect("kills the primary");
    fault("kill", json!({"host": "postgres"}));
    let received = |n: usize| {
        fleet.postgres_replicas()[n]
            .psql("SELECT pg_last_wal_receive_lsn() - '0/0'::pg_lsn")
            .expect("psql")
            .trim()
            .parse::<u64>()
            .expect("a position")
    };
    let chosen = if received(1) > received(0) { 1 } else { 0 };
    fleet.postgres_replicas()[chosen]
        .promote()
        .expect("promotes");
    fault("promote", json!({"host": replica_hosts[chosen]}));
    let promoted_at = std::time::Instant::now();
    let promoted = json!(fleet.postgres_replicas()[chosen].addr().to_string());
    wait::until_async(
        "every instance to write to the promoted replica",
        async || {
            reports(&client, &fleet)
                .await
                .iter()
                .all(|database| database["primary"]["name"] == promoted)
        },
    )
    .await;
    // As seen by asking each instance in turn: an upper bound.
    println!(
        "every instance wrote to the promoted replica {:?} after the promotion",
        promoted_at.elapsed()
    );
    tokio::time::sleep(form.after).await;

    clients.stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a client ends");
    }
    drop((clients, recorder));
    let new_primary = &fleet.postgres_replicas()[chosen];
    let state = final_state(&fleet, new_primary, &users).await;
    std::fs::write(
        dir.join("state.json"),
        serde_json::to_string_pretty(&state).expect("JSON"),
    )
    .expect("writes");
    std::fs::copy(fleet.faults_path(), dir.join("faults.jsonl")).expect("the faults");
    let report = checked_with(
        &dir,
        "report",
        &[dir.join("clients.jsonl"), dir.join("faults.jsonl")],
        &state,
        &Options::default(),
    );
    let reads: Vec<Value> = reports(&client, &fleet).await;
    println!("the instances' databases at the end: {reads:#?}");
    support::stop(fleet).await;
    report
}

/// The full form (`SEAWALL_DRILL_FULL=1`: 10 s faults), or, in the test
/// command, 2 s faults: five faults one after another, each with load
/// before and after it, make the fleet tests' longest drill, and 2 s is
/// four times what a replica that stops answering takes to leave rotation
/// ([`seawall_app::db::replicas::DOWN_AFTER`]).
fn drill_form() -> Form {
    if std::env::var("SEAWALL_DRILL_FULL").is_ok_and(|v| v == "1") {
        return Form::chosen();
    }
    Form {
        before: Duration::from_secs(1),
        hold: Duration::from_secs(2),
        after: Duration::from_secs(2),
    }
}

/// The drill in the form chosen (`SEAWALL_DRILL_FULL`): no read staler
/// than the cache's window, nothing acknowledged lost, nothing applied
/// twice, whatever the replicas do, and through the promotion.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_paused_delayed_killed_and_promoted_serve_nothing_stale() {
    let report = replicas_faulted_then_promoted(drill_form()).await;
    let counts = report.counts();
    assert_eq!(never(&report), [], "{report}");
    for kind in ["cache.stale", "points.acknowledged_missing"] {
        assert_eq!(counts[kind], 0, "{kind}:\n{report}");
    }
    // The drill read and wrote throughout, not only before the faults.
    let cache = report.cache.as_ref().expect("the cache's section");
    assert!(cache.reads.ok > 100 && cache.writes.ok > 20, "{report}");
}
