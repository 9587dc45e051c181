//! The fleet with PostgreSQL streaming replicas: the instances read on
//! them, and no read is older than what its caller wrote.

use seawall_testkit::{Fleet, wait};
use serde_json::{Value, json};

use crate::support;

/// Every instance's report of its database replicas (`GET /api/performance`).
pub(crate) async fn reports(client: &reqwest::Client, fleet: &Fleet) -> Vec<Value> {
    let mut reports = Vec::new();
    for base in fleet.instance_urls() {
        let report = support::admin_get(client, fleet, &format!("{base}/api/performance")).await;
        reports.push(report["database"].clone());
    }
    reports
}

/// Waits until every instance has each replica of `replicas` (indices in
/// `database.replicas`) in rotation.
pub(crate) async fn until_in_rotation(client: &reqwest::Client, fleet: &Fleet, replicas: &[usize]) {
    wait::until_async(
        format!("replicas {replicas:?} in rotation on every instance"),
        async || {
            reports(client, fleet).await.iter().all(|database| {
                replicas
                    .iter()
                    .all(|&n| database["replicas"][n]["in_rotation"] == json!(true))
            })
        },
    )
    .await;
}

/// A fleet of two instances with two streaming replicas: each instance
/// finds both in rotation, and the statistics' fills read on them. With
/// both replicas' replay paused, a change of points made through one
/// instance is read back through the other, by the client that carries
/// its `Seawall-Read-After` and by one that carries nothing (the balance's
/// fill is as of now): the primary answers, and no read is stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_instances_read_on_the_replicas_and_nothing_reads_the_past() {
    let mut fleet = support::start(
        support::builder()
            .instances(2)
            .workers(0)
            .postgres_replicas(2),
    )
    .await;
    let client = support::client();
    let bases = fleet.instance_urls();
    until_in_rotation(&client, &fleet, &[0, 1]).await;

    // A fill reads on a replica once a look finds it current within
    // `database.replica_wait`, which a loaded machine may miss: statistics
    // of one learner after another until one did.
    let mut user = 0;
    wait::until_async("a fill read on a replica", async || {
        user += 1;
        for base in &bases {
            let answer = client
                .get(format!("{base}/api/analytics/stats?user_id={user}"))
                .send()
                .await
                .expect("answers");
            assert_eq!(answer.status(), 200);
        }
        reports(&client, &fleet).await.iter().any(|database| {
            database["replicas"]
                .as_array()
                .is_some_and(|replicas| replicas.iter().any(|r| r["reads"].as_u64() > Some(0)))
        })
    })
    .await;

    for n in 1..=2 {
        fleet
            .postgres_replica_mut(n)
            .expect("a replica")
            .pause_replay()
            .expect("pauses");
    }
    let balance = async |base: &str, position: Option<&str>| {
        let mut request = client.get(format!("{base}/api/points/balance?user_id=7"));
        if let Some(position) = position {
            request = request.header("seawall-read-after", position);
        }
        let answer: Value = request
            .send()
            .await
            .expect("answers")
            .json()
            .await
            .expect("JSON");
        answer["balance"].as_i64().expect("a balance")
    };
    let before = balance(&bases[1], None).await;
    let earned = client
        .post(format!("{}/api/points/earn", bases[0]))
        .json(&json!({"user_id": 7, "amount": 25}))
        .send()
        .await
        .expect("answers");
    assert_eq!(earned.status(), 201);
    let position = earned
        .headers()
        .get("seawall-read-after")
        .expect("the change's position")
        .to_str()
        .expect("ASCII")
        .to_owned();
    assert_eq!(balance(&bases[1], Some(&position)).await, before + 25);
    assert_eq!(balance(&bases[1], None).await, before + 25);
    assert_eq!(balance(&bases[0], None).await, before + 25);
    for n in 1..=2 {
        fleet
            .postgres_replica_mut(n)
            .expect("a replica")
            .resume_replay()
            .expect("resumes");
    }
    support::stop(fleet).await;
}
