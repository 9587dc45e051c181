//! Queues across the fleet: jobs enqueued through any instance run once, on
//! whichever worker takes them, and every instance lists every worker.

use std::time::{Duration, Instant};

use seawall_testkit::wait;
use serde_json::{Value, json};

use crate::support::{self, client};

/// 200 emails through HAProxy (so through every instance) are each sent
/// exactly once, by the two workers between them; `/api/queue` on any
/// instance lists both workers, alive, with what each completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_run_once_on_either_worker_and_every_instance_lists_every_worker() {
    const JOBS: usize = 200;
    let fleet = support::start(support::builder()).await;
    let client = client();
    let mut ids = Vec::with_capacity(JOBS);
    for n in 0..JOBS {
        let response = client
            .post(format!("{}/api/queue/email", fleet.url()))
            .bearer_auth(fleet.token())
            .json(&json!({"user_id": 1 + n % 50, "template": "welcome"}))
            .send()
            .await
            .expect("answers");
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.expect("JSON");
        ids.push(body["id"].as_str().expect("an id").to_owned());
    }
    let began = Instant::now();
    let overview = loop {
        let overview: Value =
            support::admin_get(&client, &fleet, &format!("{}/api/queue", fleet.url())).await;
        let completed: u64 = processes(&overview)
            .iter()
            .map(|process| email(process, "completed"))
            .sum();
        if completed >= JOBS as u64 {
            break overview;
        }
        assert!(
            began.elapsed() < wait::patience(),
            "waited {:?} for the emails to be sent: {overview:#}",
            wait::patience()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Once each: one outbox row per job, whichever worker ran it.
    let rows = fleet
        .postgres()
        .psql("SELECT COUNT(*), COUNT(DISTINCT job) FROM email_outbox")
        .expect("psql");
    assert_eq!(rows, format!("{JOBS}|{JOBS}"));

    // Both workers, alive, between them every job; as every instance says.
    let pids: Vec<u64> = (1..=2)
        .map(|n| u64::from(fleet.worker_pid(n).expect("runs")))
        .collect();
    let mut expected = pids.clone();
    expected.sort_unstable();
    for base in fleet.instance_urls() {
        // A worker announces itself every second and counts as alive for
        // 5 s after: a loaded machine can hold an announcement up.
        let began = Instant::now();
        loop {
            let listed: Value =
                support::admin_get(&client, &fleet, &format!("{base}/api/queue")).await;
            let processes = processes(&listed);
            let mut listed_pids: Vec<u64> = processes
                .iter()
                .filter(|process| process["alive"] == true)
                .filter_map(|process| process["pid"].as_u64())
                .collect();
            listed_pids.sort_unstable();
            if listed_pids == expected {
                break;
            }
            assert!(
                began.elapsed() < wait::patience(),
                "waited {:?} for {base} to list the workers {expected:?} alive: {processes:#?}",
                wait::patience()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let per_worker: Vec<u64> = processes(&overview)
        .iter()
        .map(|process| email(process, "completed"))
        .collect();
    println!("emails completed per worker: {per_worker:?}");
    assert_eq!(per_worker.iter().sum::<u64>(), JOBS as u64);
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "both workers took jobs: {per_worker:?}"
    );
    support::stop(fleet).await;
}

fn processes(overview: &Value) -> Vec<Value> {
    overview["processes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A count of the email queue's worker in `process`.
fn email(process: &Value, field: &str) -> u64 {
    process["queues"]
        .as_array()
        .and_then(|queues| queues.iter().find(|queue| queue["queue"] == "email"))
        .and_then(|queue| queue[field].as_u64())
        .unwrap_or(0)
}
