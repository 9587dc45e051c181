//! Metrics, blocked keys, and the rankings of the keys rejected and
//! checked most.

use std::time::Duration;

use seawall_perfmon::Monitor;
use seawall_ratelimit::{Limit, Limiter};
use seawall_testkit::wait;

use crate::support::Backend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_counted_by_outcome() {
    let monitor = Monitor::new();
    let limiter = Limiter::builder("api")
        .limit(Limit::fixed_window(5, Duration::from_secs(3600)).expect("limit"))
        .monitor(&monitor)
        .build()
        .expect("limiter");
    let shadow = Limiter::builder("trial")
        .limit(Limit::fixed_window(1, Duration::from_secs(3600)).expect("limit"))
        .shadow(true)
        .monitor(&monitor)
        .build()
        .expect("limiter");
    for _ in 0..7 {
        limiter.check("k", 1).await.expect("check");
    }
    for _ in 0..3 {
        shadow.check("k", 1).await.expect("check");
    }
    let text = monitor.prometheus();
    for line in [
        "ratelimit_decisions_total{limiter=\"api\",outcome=\"allowed\"} 5",
        "ratelimit_decisions_total{limiter=\"api\",outcome=\"rejected\"} 2",
        "ratelimit_decisions_total{limiter=\"trial\",outcome=\"allowed\"} 1",
        "ratelimit_decisions_total{limiter=\"trial\",outcome=\"shadow_rejected\"} 2",
        // 4 and 5 of 5 leave less than 20 %: remaining 0 only.
        "ratelimit_near_limit_total{limiter=\"api\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_keys_and_the_most_rejected_keys_are_listed() {
    let monitor = Monitor::new();
    let limiter = Limiter::builder("auth")
        .limit(Limit::gcra(1, Duration::from_secs(60), 1).expect("limit"))
        .penalty(Duration::from_secs(900))
        .monitor(&monitor)
        .build()
        .expect("limiter");
    for key in ["alice", "bob"] {
        limiter.check(key, 1).await.expect("check");
    }
    for _ in 0..3 {
        limiter.check("alice", 1).await.expect("check");
    }
    limiter.check("bob", 1).await.expect("check");
    limiter
        .block("mallory", Duration::from_secs(60))
        .await
        .expect("block");

    let blocked: Vec<String> = limiter.blocked_keys().into_iter().map(|b| b.key).collect();
    assert_eq!(blocked.len(), 3, "{blocked:?}");
    assert_eq!(
        blocked[2], "mallory",
        "the shortest block last: {blocked:?}"
    );
    assert!(
        monitor
            .prometheus()
            .contains("ratelimit_blocked_keys{limiter=\"auth\"} 3")
    );

    limiter.unblock("alice").await.expect("unblock");
    let blocked: Vec<String> = limiter.blocked_keys().into_iter().map(|b| b.key).collect();
    assert!(!blocked.contains(&"alice".to_owned()), "{blocked:?}");
    assert!(
        monitor
            .prometheus()
            .contains("ratelimit_blocked_keys{limiter=\"auth\"} 2")
    );

    let top = limiter.top_rejected();
    assert_eq!(top[0].key, "alice");
    assert_eq!(top[0].rejections, 3);
    assert_eq!(top[1].key, "bob");
}

/// Two limiters of one name on one store stand for two instances of a
/// service: a block either of them sets, by penalty or by hand, is listed by
/// both, and an unblock through one takes it off both lists.
async fn blocks_are_listed_by_every_instance(backend: &Backend) {
    let name = crate::support::unique_name();
    let instance = |backend: &Backend| {
        let builder = Limiter::builder(&name)
            .limit(Limit::fixed_window(2, Duration::from_secs(3600)).expect("limit"))
            .penalty(Duration::from_secs(60));
        match backend {
            Backend::Memory(_, store) => builder.store(store.clone()),
            Backend::Redis(store) => builder.store(store.clone()),
        }
        .build()
        .expect("limiter")
    };
    let (one, two) = (instance(backend), instance(backend));
    for _ in 0..3 {
        one.check("mallory", 1).await.expect("check");
    }
    two.block("trudy", Duration::from_secs(600))
        .await
        .expect("block");
    let listed = |limiter: &Limiter| {
        let limiter = limiter.clone();
        async move {
            limiter
                .blocked_keys_everywhere(100)
                .await
                .expect("the registry answers")
                .into_iter()
                .map(|blocked| blocked.key)
                .collect::<Vec<_>>()
        }
    };
    if backend.real_time() {
        // Shared through Redis: the longest block first, on both.
        assert_eq!(listed(&one).await, ["trudy", "mallory"]);
        assert_eq!(listed(&two).await, ["trudy", "mallory"]);
        let everywhere = two.blocked_keys_everywhere(1).await.expect("answers");
        assert_eq!(everywhere.len(), 1);
        assert!(everywhere[0].remaining > Duration::from_secs(590));
        // A manual block replaces a longer one on the list too.
        one.block("trudy", Duration::from_secs(5))
            .await
            .expect("block");
        let everywhere = two.blocked_keys_everywhere(10).await.expect("answers");
        let trudy = everywhere
            .iter()
            .find(|blocked| blocked.key == "trudy")
            .expect("listed");
        assert!(trudy.remaining <= Duration::from_secs(5), "{everywhere:?}");
        assert_eq!(everywhere[0].key, "mallory", "the longest block first");
        one.unblock("trudy").await.expect("unblock");
        two.reset("mallory").await.expect("reset");
        assert!(listed(&one).await.is_empty());
        assert!(listed(&two).await.is_empty());

        // A key penalised again once its first penalty ended is listed again.
        // The penalty lasts seconds, so the listing read just after it was
        // set finds it however loaded the machine.
        let short = match backend {
            Backend::Redis(store) => Limiter::builder(&format!("{name}-short"))
                .limit(Limit::fixed_window(1, Duration::from_secs(3600)).expect("limit"))
                .penalty(Duration::from_secs(5))
                .store(store.clone())
                .build()
                .expect("limiter"),
            Backend::Memory(..) => unreachable!("real time is Redis"),
        };
        for _ in 0..2 {
            short.check("eve", 1).await.expect("check");
        }
        assert_eq!(listed(&short).await, ["eve"]);
        wait::until_async("the first penalty to end", async || {
            listed(&short).await.is_empty()
        })
        .await;
        short.check("eve", 1).await.expect("check");
        assert_eq!(
            listed(&short).await,
            ["eve"],
            "penalised again, listed again"
        );
    } else {
        // In process memory each limiter is its own instance.
        assert_eq!(listed(&one).await, ["mallory"]);
        assert_eq!(listed(&two).await, ["trudy"]);
    }
}

crate::on_every_backend!(blocks_are_listed_by_every_instance);

/// The heaviest callers are found among many light ones, admitted or not,
/// with counts near their true ones, in fixed memory.
#[test]
fn the_heaviest_callers_are_ranked_from_a_sample_of_the_checks() {
    let limiter = Limiter::builder("api")
        .limit(Limit::fixed_window(100, Duration::from_secs(3600)).expect("limit"))
        .build()
        .expect("limiter");
    for round in 0..32_000 {
        let check = |key: &str| limiter.check_now(key, 1).expect("a memory store");
        check("heavy").expect("check");
        if round % 2 == 0 {
            check("medium").expect("check");
        }
        check(&format!("light-{round}")).expect("check");
    }
    let ranking = limiter.top_callers();
    assert_eq!(ranking.len(), 32, "fixed memory: {ranking:?}");
    let heavy = &ranking[0];
    assert_eq!(heavy.key, "heavy", "{ranking:?}");
    // One check in 32 drawn at random, counted 32 times: about 1,000 and
    // 500 draws, so within a fifth of the truth (more than four standard
    // deviations) plus what a count may have inherited.
    let near = |estimate: u64, overcount: u64, truth: u64| {
        estimate * 5 >= truth * 4 && estimate <= truth * 6 / 5 + overcount
    };
    assert!(near(heavy.checks, heavy.overcount, 32_000), "{heavy:?}");
    let medium = ranking
        .iter()
        .find(|caller| caller.key == "medium")
        .expect("the medium caller is ranked");
    assert!(near(medium.checks, medium.overcount, 16_000), "{medium:?}");
}

/// Two limiters checked in turn on one thread, as the DDoS and API limits
/// are for each request, both rank their callers.
#[test]
fn limiters_checked_in_turn_both_rank_their_callers() {
    let build = |name: &str| {
        Limiter::builder(name)
            .limit(Limit::fixed_window(1_000_000, Duration::from_secs(3600)).expect("limit"))
            .build()
            .expect("limiter")
    };
    let (ddos, api) = (build("ddos"), build("api"));
    for _ in 0..3_200 {
        ddos.check_now("203.0.113.7", 1)
            .expect("memory")
            .expect("check");
        api.check_now("key:k1", 1).expect("memory").expect("check");
    }
    for (limiter, key) in [(&ddos, "203.0.113.7"), (&api, "key:k1")] {
        let ranking = limiter.top_callers();
        assert_eq!(
            ranking.first().map(|caller| caller.key.as_str()),
            Some(key),
            "{}: {ranking:?}",
            limiter.name()
        );
    }
}
