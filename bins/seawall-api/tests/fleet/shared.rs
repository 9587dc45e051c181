//! Shared state is one state: rate limits, blocks and tiers, the cache and
//! the queues, across the instances of one fleet.

use std::time::{Duration, Instant};

use seawall_testkit::wait;
use serde_json::{Value, json};

use crate::support::{self, client};

/// One client's limit is one limit across instances: HAProxy spreads its
/// requests round robin, and the instances count them in one place.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_clients_limit_is_one_limit_across_instances() {
    // A day's window: the 150 requests never straddle two windows (the
    // sliding window would weigh in the one before), however long a loaded
    // machine takes over them.
    let fleet = support::start(
        support::builder()
            .env("SEAWALL_RATELIMIT_REPORT", "100/1d")
            .env("SEAWALL_RATELIMIT_DDOS", "100000/1m"),
    )
    .await;
    let client = client();
    let url = format!("{}/api/analytics/stats?user_id=7", fleet.url());
    let mut admitted = 0;
    let mut limited = 0;
    for _ in 0..150 {
        let response = client.get(&url).send().await.expect("answers");
        match response.status().as_u16() {
            200 => admitted += 1,
            429 => limited += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((admitted, limited), (100, 50));
    // Every instance answered some of them.
    let states = fleet.haproxy().stats().expect("HAProxy's stats");
    assert_eq!(states.len(), 3);
    assert!(
        states.iter().all(|state| state.requests >= 40),
        "round robin: {states:?}"
    );
    support::stop(fleet).await;
}

/// How long after `since` each instance first answers as `reflects` says:
/// one client per instance polls as fast as it gets answers, for up to
/// [`wait::patience`]. The times are figures to print: a loaded machine
/// stretches them, and a change that does not travel never shows (or, for
/// a tier cached in process, only after minutes).
async fn time_until_every_instance(
    instances: &[String],
    since: Instant,
    request: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder + Sync,
    reflects: impl Fn(&reqwest::Response) -> bool + Sync,
) -> Vec<Duration> {
    let polls = instances.iter().map(|base| {
        let (request, reflects) = (&request, &reflects);
        async move {
            let client = client();
            loop {
                let response = request(&client, base).send().await.expect("answers");
                if reflects(&response) {
                    return since.elapsed();
                }
                assert!(
                    since.elapsed() < wait::patience(),
                    "waited {:?} for {base} to reflect the change",
                    wait::patience()
                );
            }
        }
    });
    futures_util::future::join_all(polls).await
}

fn policy(response: &reqwest::Response) -> String {
    response
        .headers()
        .get_all("ratelimit-policy")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A manual block, a penalty and a tier change, each made through one
/// instance, hold on every instance (how soon is printed: milliseconds on a
/// quiet machine, against a goal of 100 ms); the blocked keys every
/// instance lists are the fleet's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blocks_penalties_and_tiers_reach_every_instance() {
    // A day's window, so the penalty's six requests fall in one; blocks of
    // an hour, so both are still listed at the end however long a loaded
    // machine takes to get there.
    let fleet =
        support::start(support::builder().env("SEAWALL_RATELIMIT_API", "5/1d block 1h")).await;
    let client = client();
    let instances = fleet.instance_urls();
    // Two API keys, issued through instance 1: (key, id).
    let mut issued = Vec::new();
    for name in ["by-hand", "greedy"] {
        let response = client
            .post(format!("{}/api/keys", instances[0]))
            .bearer_auth(fleet.token())
            .json(&json!({"tenant_id": "demo-enterprise", "name": name}))
            .send()
            .await
            .expect("answers");
        assert_eq!(response.status(), 201);
        let key: Value = response.json().await.expect("JSON");
        issued.push((
            key["key"].as_str().expect("a key").to_owned(),
            key["id"].as_str().expect("an id").to_owned(),
        ));
    }
    let [(by_hand, by_hand_id), (greedy, greedy_id)] = <[_; 2]>::try_from(issued).expect("two");
    let content = |client: &reqwest::Client, base: &str, key: &str| {
        client
            .get(format!("{base}/api/content?page_size=1"))
            .header("x-api-key", key)
    };

    // A manual block through instance 1.
    let response = client
        .post(format!("{}/api/rate-limit/block", instances[0]))
        .bearer_auth(fleet.token())
        .json(&json!({"limiter": "api", "key": format!("key:{by_hand_id}"), "seconds": 3600}))
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let blocked = time_until_every_instance(
        &instances,
        Instant::now(),
        |client, base| content(client, base, &by_hand),
        |response| response.status() == 429,
    )
    .await;

    // A penalty earned on instance 1.
    for _ in 0..6 {
        content(&client, &instances[0], &greedy)
            .send()
            .await
            .expect("answers");
    }
    let penalised = time_until_every_instance(
        &instances,
        Instant::now(),
        |client, base| content(client, base, &greedy),
        |response| response.status() == 429,
    )
    .await;

    // A tier change through instance 1, after every instance has the old
    // tier cached.
    // Each read as another user behind the trusted proxy, so the API
    // limiter (5 a day here) never stands between a read and its tier.
    let users = std::sync::atomic::AtomicU64::new(1);
    let tenant = |client: &reqwest::Client, base: &str| {
        let user = users.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        client
            .get(format!("{base}/api/content?page_size=1"))
            .header("x-tenant-id", "demo-basic")
            .header("x-user-id", user.to_string())
    };
    for base in &instances {
        let response = tenant(&client, base).send().await.expect("answers");
        assert!(
            policy(&response).contains("\"tenant.minute\";q=120"),
            "{}",
            policy(&response)
        );
    }
    let response = client
        .post(format!("{}/api/rate-limit", instances[0]))
        .bearer_auth(fleet.token())
        .json(&json!({"tenantId": "demo-basic", "tier": "premium"}))
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 200);
    let retiered = time_until_every_instance(&instances, Instant::now(), tenant, |response| {
        policy(response).contains("\"tenant.minute\";q=300")
    })
    .await;
    println!(
        "visible on every instance after: block {blocked:?}, penalty {penalised:?}, tier {retiered:?} \
         (goal: 100 ms)"
    );

    // Every instance lists both blocks, whichever instance set them.
    for base in &instances {
        let stats: Value =
            support::admin_get(&client, &fleet, &format!("{base}/api/rate-limit")).await;
        let api = stats["limiters"]
            .as_array()
            .and_then(|limiters| limiters.iter().find(|l| l["name"] == "api"))
            .expect("the api limiter");
        let keys: Vec<&str> = api["blocked"]
            .as_array()
            .expect("blocked keys")
            .iter()
            .filter_map(|blocked| blocked["key"].as_str())
            .collect();
        assert!(
            keys.contains(&format!("key:{by_hand_id}").as_str())
                && keys.contains(&format!("key:{greedy_id}").as_str()),
            "{base}: {keys:?}"
        );
    }
    support::stop(fleet).await;
}
