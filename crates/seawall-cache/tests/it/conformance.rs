//! One suite for every tier combination: L1 only, L1 + Redis, L1 + Redis
//! Cluster give the same answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use seawall_cache::{Class, EarlyRefresh, Error, Options, Policy, TieredCache, WriteStrategy};
use seawall_testkit::wait;
use tokio::sync::Notify;

use crate::on_every_backend;
use crate::support::Backend;
use crate::support::Ready;

/// How long the short-lived entries of these scenarios live: many times what
/// the steps that must see them still alive take on a loaded machine.
const SHORT: Duration = Duration::from_secs(5);

/// How long a read may take that must not wait for a held load: well under
/// the 30 s hard timeout that would otherwise end the load and answer it.
const AT_ONCE: Duration = Duration::from_secs(10);

/// A loader that counts its runs and answers `value`.
fn counted<T: Clone + Send + 'static>(
    runs: &Arc<AtomicU32>,
    value: T,
) -> impl FnOnce() -> std::future::Ready<Result<Option<T>, std::io::Error>> {
    let runs = Arc::clone(runs);
    move || {
        runs.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(Some(value)))
    }
}

fn failing() -> std::future::Ready<Result<Option<String>, std::io::Error>> {
    std::future::ready(Err(std::io::Error::other("the database is down")))
}

async fn a_loaded_value_is_served_until_its_class_expires(backend: &Backend) {
    let short = Policy::new(SHORT).fail_safe(Duration::ZERO);
    let cache = backend.builder().await.define("short", short).ready().await;
    let class = cache.class("short").expect("defined");
    let runs = Arc::new(AtomicU32::new(0));
    for _ in 0..3 {
        let value = cache
            .get_or_load("k", class, counted(&runs, "v1".to_owned()))
            .await
            .expect("loads");
        assert_eq!(value.as_deref(), Some("v1"));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(cache.get::<String>("k", class).await.as_deref(), Some("v1"));
    wait::until_async("the value to expire", async || {
        cache.get::<String>("k", class).await.is_none()
    })
    .await;
    let value = cache
        .get_or_load("k", class, counted(&runs, "v2".to_owned()))
        .await
        .expect("loads");
    assert_eq!(value.as_deref(), Some("v2"));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    let stats = cache.stats();
    let short = stats
        .classes
        .iter()
        .find(|c| c.class == "short")
        .expect("stats");
    assert_eq!(short.loads, 2);
    assert!(short.l1.hits >= 2, "{short:?}");
}

async fn not_found_is_cached_for_the_negative_ttl(backend: &Backend) {
    let policy = Policy::new(Duration::from_secs(60)).negative_ttl(SHORT);
    let cache = backend
        .builder()
        .await
        .class(Class::API, policy)
        .ready()
        .await;
    let runs = Arc::new(AtomicU32::new(0));
    let load = |runs: &Arc<AtomicU32>| {
        let runs = Arc::clone(runs);
        move || {
            runs.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok::<Option<u64>, std::io::Error>(None))
        }
    };
    assert_eq!(
        cache
            .get_or_load("missing", Class::API, load(&runs))
            .await
            .expect("loads"),
        None
    );
    assert_eq!(
        cache
            .get_or_load("missing", Class::API, load(&runs))
            .await
            .expect("loads"),
        None
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the second miss was cached");
    // Read until the negative entry has expired and the loader runs again.
    wait::until_async("the negative entry to expire", async || {
        cache
            .get_or_load("missing", Class::API, load(&runs))
            .await
            .expect("loads");
        runs.load(Ordering::SeqCst) == 2
    })
    .await;
}

/// With no negative caching, a "not found" is still the source's answer:
/// the value it replaced (expired, but kept as a fail-safe copy in either
/// tier) never stands in for a later failed load.
async fn an_uncached_not_found_ends_the_fail_safe_copy(backend: &Backend) {
    let policy = Policy::new(SHORT)
        .fail_safe(Duration::from_secs(3600))
        .negative_ttl(Duration::ZERO);
    let cache = backend.builder().await.define("gone", policy).ready().await;
    let class = cache.class("gone").expect("defined");
    let runs = Arc::new(AtomicU32::new(0));
    let loaded = cache
        .get_or_load("k", class, counted(&runs, "v1".to_owned()))
        .await
        .expect("loads");
    assert_eq!(loaded.as_deref(), Some("v1"));
    wait::until_async("the value to expire", async || {
        cache.get::<String>("k", class).await.is_none()
    })
    .await;
    // The fail-safe copy is there: a failed load is covered by it.
    assert_eq!(
        cache
            .get_or_load("k", class, failing)
            .await
            .expect("covered")
            .as_deref(),
        Some("v1")
    );
    let gone = cache
        .get_or_load("k", class, || {
            std::future::ready(Ok::<Option<String>, std::io::Error>(None))
        })
        .await
        .expect("answered");
    assert_eq!(gone, None);
    let after = cache.get_or_load("k", class, failing).await;
    assert!(
        after.is_err(),
        "a copy of what the source no longer has stood in for a failed load: {after:?}"
    );
}

async fn invalidation_by_key_tag_and_pattern(backend: &Backend) {
    let cache = backend.builder().await.ready().await;
    let user = |id: u32| Options::new(Class::SCHEDULE).tag(format!("user:{id}"));
    for (key, id) in [("today:1", 1), ("stats:1", 1), ("today:2", 2)] {
        cache.set(key, user(id), key.to_owned()).await.expect("set");
    }
    cache
        .set("content:1", Class::API, "page".to_owned())
        .await
        .expect("set");
    cache.invalidate("content:1").await.expect("invalidates");
    assert_eq!(cache.get::<String>("content:1", Class::API).await, None);

    cache.invalidate_tag("user:1").await.expect("invalidates");
    assert_eq!(cache.get::<String>("today:1", Class::SCHEDULE).await, None);
    assert_eq!(cache.get::<String>("stats:1", Class::SCHEDULE).await, None);
    assert_eq!(
        cache
            .get::<String>("today:2", Class::SCHEDULE)
            .await
            .as_deref(),
        Some("today:2")
    );

    cache
        .set("today:3", Class::SCHEDULE, "3".to_owned())
        .await
        .expect("set");
    cache
        .invalidate_pattern("today:*")
        .await
        .expect("invalidates");
    assert_eq!(cache.get::<String>("today:2", Class::SCHEDULE).await, None);
    assert_eq!(cache.get::<String>("today:3", Class::SCHEDULE).await, None);

    cache.set("kept", Class::SCHEDULE, 1_u8).await.expect("set");
    cache.clear().await.expect("clears");
    assert_eq!(cache.get::<u8>("kept", Class::SCHEDULE).await, None);
}

/// A load held until released, reporting when it has started.
struct HeldLoad {
    started: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Notify>,
    handle: tokio::task::JoinHandle<seawall_cache::Result<Option<String>>>,
}

fn held_load(
    cache: &TieredCache,
    key: &'static str,
    options: Options,
    value: &'static str,
) -> HeldLoad {
    let started = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let handle = {
        let (cache, started, release) = (cache.clone(), Arc::clone(&started), Arc::clone(&release));
        tokio::spawn(async move {
            cache
                .get_or_load(key, options, move || async move {
                    started.notify_one();
                    release.notified().await;
                    Ok::<_, std::io::Error>(Some(value.to_owned()))
                })
                .await
        })
    };
    HeldLoad {
        started,
        release,
        handle,
    }
}

/// Invalidations overtake only the loads whose value they would have
/// removed: another user's tag leaves a running load free to fill L1,
/// while the loaded user's tag keeps it out; and a read after the
/// invalidation never joins the overtaken load.
async fn an_invalidation_overtakes_only_the_loads_it_concerns(backend: &Backend) {
    let cache = backend.builder().await.ready().await;
    let user = |id: u32| Options::new(Class::SCHEDULE).tag(format!("user:{id}"));

    let unrelated = held_load(&cache, "today:1", user(1), "one");
    unrelated.started.notified().await;
    cache.invalidate_tag("user:2").await.expect("invalidates");
    unrelated.release.notify_one();
    let value = unrelated.handle.await.expect("no panic").expect("loads");
    assert_eq!(value.as_deref(), Some("one"));
    let runs = Arc::new(AtomicU32::new(0));
    let again = cache
        .get_or_load("today:1", user(1), counted(&runs, "reloaded".to_owned()))
        .await
        .expect("reads");
    assert_eq!(
        again.as_deref(),
        Some("one"),
        "cached despite user 2's invalidation"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);

    let overtaken = held_load(&cache, "today:3", user(3), "before the write");
    overtaken.started.notified().await;
    cache.invalidate_tag("user:3").await.expect("invalidates");
    // A read that starts after the invalidation loads anew, even though
    // the overtaken load is still running.
    let after = cache
        .get_or_load(
            "today:3",
            user(3),
            counted(&runs, "after the write".to_owned()),
        )
        .await
        .expect("reads");
    assert_eq!(after.as_deref(), Some("after the write"));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    overtaken.release.notify_one();
    let old = overtaken.handle.await.expect("no panic").expect("loads");
    assert_eq!(
        old.as_deref(),
        Some("before the write"),
        "its own caller gets it"
    );
    let later = cache
        .get_or_load("today:3", user(3), counted(&runs, "reloaded".to_owned()))
        .await
        .expect("reads");
    assert_eq!(
        later.as_deref(),
        Some("after the write"),
        "the overtaken load did not replace the newer value"
    );
}

async fn a_thousand_concurrent_misses_load_once(backend: &Backend) {
    let cache = backend.builder().await.ready().await;
    let runs = Arc::new(AtomicU32::new(0));
    let calls = (0..1000).map(|_| {
        let (cache, runs) = (cache.clone(), Arc::clone(&runs));
        tokio::spawn(async move {
            cache
                .get_or_load("cold", Class::COMPUTATION, move || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok::<_, std::io::Error>(Some(42_u64))
                })
                .await
        })
    });
    for call in futures_util::future::join_all(calls).await {
        assert_eq!(call.expect("no panic").expect("loads"), Some(42));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

async fn a_failing_panicking_or_cancelled_loader_never_wedges_the_key(backend: &Backend) {
    let cache = backend.builder().await.ready().await;
    let error = cache
        .get_or_load("k", Class::API, failing)
        .await
        .expect_err("fails");
    assert!(matches!(error, Error::Load { .. }), "{error}");
    assert!(
        error.to_string().contains("the database is down"),
        "{error}"
    );

    let panicked = cache
        .get_or_load("k", Class::API, || async {
            if true {
                panic!("a bug in the loader");
            }
            Ok::<Option<String>, std::io::Error>(None)
        })
        .await
        .expect_err("panics");
    assert!(
        matches!(panicked, Error::LoaderPanicked { .. }),
        "{panicked}"
    );

    // The caller gives up while the load is held; the load goes on and is
    // cached.
    let release = Arc::new(Notify::new());
    let held = Arc::clone(&release);
    let slow = cache.get_or_load("k", Class::API, move || async move {
        held.notified().await;
        Ok::<_, std::io::Error>(Some("late".to_owned()))
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(20), slow)
            .await
            .is_err(),
        "the held load cannot have answered"
    );
    release.notify_one();
    let runs = Arc::new(AtomicU32::new(0));
    let value = cache
        .get_or_load("k", Class::API, counted(&runs, "again".to_owned()))
        .await
        .expect("loads");
    assert_eq!(value.as_deref(), Some("late"), "joined the running load");
    assert_eq!(runs.load(Ordering::SeqCst), 0);

    let stats = cache.stats();
    let api = &stats.classes[usize::from(Class::API.index())];
    assert_eq!(api.load_errors, 2, "{api:?}");
}

async fn the_hard_timeout_abandons_a_load(backend: &Backend) {
    let policy = Policy::new(Duration::from_secs(60)).hard_timeout(Duration::from_millis(100));
    let cache = backend
        .builder()
        .await
        .class(Class::API, policy)
        .ready()
        .await;
    let started = std::time::Instant::now();
    let error = cache
        .get_or_load("k", Class::API, || {
            std::future::pending::<Result<Option<u8>, std::io::Error>>()
        })
        .await
        .expect_err("times out");
    assert!(matches!(error, Error::Timeout { .. }), "{error}");
    // The loader never ends: only the 100 ms timeout can have ended the call,
    // and a bound this loose tells it from a timeout taken as seconds.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let value = cache
        .get_or_load("k", Class::API, || async {
            Ok::<_, std::io::Error>(Some(1_u8))
        })
        .await
        .expect("loads");
    assert_eq!(value, Some(1));
}

async fn fail_safe_serves_the_old_value_until_its_maximum(backend: &Backend) {
    let policy = Policy::new(Duration::from_millis(200)).fail_safe(SHORT);
    let cache = backend
        .builder()
        .await
        .class(Class::API, policy)
        .ready()
        .await;
    let runs = Arc::new(AtomicU32::new(0));
    cache
        .get_or_load("k", Class::API, counted(&runs, "old".to_owned()))
        .await
        .expect("loads");
    // Fresh, the value answers without the loader; expired, it stands in
    // for the failed load.
    wait::until_async("the old value to stand in for a failed load", async || {
        let served = cache
            .get_or_load("k", Class::API, failing)
            .await
            .expect("fail-safe");
        assert_eq!(served.as_deref(), Some("old"));
        cache.stats().classes[usize::from(Class::API.index())].stale_serves >= 1
    })
    .await;
    let error = wait::until_some_async("the fail-safe maximum to pass", async || {
        cache.get_or_load("k", Class::API, failing).await.err()
    })
    .await;
    assert!(matches!(error, Error::Load { .. }), "{error}");
}

async fn the_soft_timeout_returns_the_old_value_and_the_load_finishes(backend: &Backend) {
    let policy = Policy::new(Duration::from_millis(200))
        .fail_safe(Duration::from_secs(60))
        .soft_timeout(Duration::from_millis(50));
    let cache = backend
        .builder()
        .await
        .class(Class::API, policy)
        .ready()
        .await;
    cache
        .get_or_load("k", Class::API, || async {
            Ok::<_, std::io::Error>(Some("old".to_owned()))
        })
        .await
        .expect("loads");
    tokio::time::sleep(Duration::from_millis(250)).await;
    // The load is held until the old value was served: without the soft
    // timeout, the read would wait for it.
    let release = Arc::new(Notify::new());
    let held = Arc::clone(&release);
    let read = cache.get_or_load("k", Class::API, move || async move {
        held.notified().await;
        Ok::<_, std::io::Error>(Some("new".to_owned()))
    });
    let served = tokio::time::timeout(AT_ONCE, read)
        .await
        .expect("the soft timeout answers without waiting for the held load")
        .expect("served");
    assert_eq!(served.as_deref(), Some("old"));
    release.notify_one();
    // Read through `get_or_load`: `get` sees the new value only while it is
    // fresh, which a slow poll could miss.
    wait::until_async("the held load to finish in the background", async || {
        let read = cache.get_or_load("k", Class::API, failing).await;
        read.expect("served").as_deref() == Some("new")
    })
    .await;
}

/// A load that finishes within the soft timeout is answered, and the key
/// is not left to a load that never ends: the next read loads again.
async fn a_load_faster_than_the_soft_timeout_is_answered(backend: &Backend) {
    let policy = Policy::new(Duration::from_millis(100))
        .fail_safe(Duration::from_secs(60))
        .soft_timeout(Duration::from_secs(30));
    let cache = backend
        .builder()
        .await
        .class(Class::API, policy)
        .ready()
        .await;
    let load =
        |text: &'static str| move || async move { Ok::<_, std::io::Error>(Some(text.to_owned())) };
    cache
        .get_or_load("k", Class::API, load("old"))
        .await
        .expect("loads");
    for text in ["new", "newer"] {
        // Expired, so the old value is a fallback and the soft timeout is
        // armed; the load beats it by far.
        wait::until_async("the value to expire", async || {
            cache.get::<String>("k", Class::API).await.is_none()
        })
        .await;
        let read = tokio::time::timeout(Duration::from_secs(20), {
            cache.get_or_load("k", Class::API, load(text))
        })
        .await
        .expect("a load faster than the soft timeout is answered before it");
        assert_eq!(read.expect("served").as_deref(), Some(text));
    }
}

async fn stale_while_revalidate_answers_at_once_and_refreshes_once(backend: &Backend) {
    let policy = Policy::new(Duration::from_millis(150))
        .fail_safe(Duration::from_secs(60))
        .stale_while_revalidate(Duration::from_secs(60))
        .early_refresh(EarlyRefresh::Off);
    let cache = backend
        .builder()
        .await
        .class(Class::API, policy)
        .ready()
        .await;
    let runs = Arc::new(AtomicU32::new(0));
    cache
        .get_or_load("k", Class::API, counted(&runs, 1_u32))
        .await
        .expect("loads");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The refresh is held until the five reads are done, so each must
    // answer the old value without waiting for it.
    let release = Arc::new(Notify::new());
    for _ in 0..5 {
        let (runs, held) = (Arc::clone(&runs), Arc::clone(&release));
        let read = cache.get_or_load("k", Class::API, move || async move {
            runs.fetch_add(1, Ordering::SeqCst);
            held.notified().await;
            Ok::<_, std::io::Error>(Some(2_u32))
        });
        let value = tokio::time::timeout(AT_ONCE, read)
            .await
            .expect("a stale read does not wait for the held refresh")
            .expect("served");
        assert_eq!(value, Some(1), "the old value, at once");
    }
    release.notify_one();
    // Read through `get_or_load` (its loader uncounted): `get` sees the
    // refreshed value only while it is fresh, which a slow poll could miss.
    wait::until_async("the refresh to store the new value", async || {
        let read = cache.get_or_load("k", Class::API, || async {
            Ok::<_, std::io::Error>(Some(2_u32))
        });
        read.await.expect("served") == Some(2)
    })
    .await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "one refresh for five stale reads"
    );
}

async fn refresh_ahead_reloads_before_expiry(backend: &Backend) {
    let policy =
        Policy::new(Duration::from_secs(60)).early_refresh(EarlyRefresh::Ahead { at: 0.001 });
    let cache = backend
        .builder()
        .await
        .class(Class::API, policy)
        .ready()
        .await;
    let runs = Arc::new(AtomicU32::new(0));
    cache
        .get_or_load("k", Class::API, counted(&runs, 1_u32))
        .await
        .expect("loads");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let value = cache
        .get_or_load("k", Class::API, counted(&runs, 2_u32))
        .await
        .expect("loads");
    assert_eq!(value, Some(1), "the fresh value is served");
    wait::until_async("the value to be refreshed in the background", async || {
        cache.get::<u32>("k", Class::API).await == Some(2)
    })
    .await;
    let stats = cache.stats();
    assert_eq!(
        stats.classes[usize::from(Class::API.index())].early_refreshes,
        1
    );
}

async fn batches_keep_order_and_report_misses(backend: &Backend) {
    let cache = backend.builder().await.ready().await;
    let entries: Vec<(String, u32)> = (0..100).map(|i| (format!("item:{i}"), i)).collect();
    cache.set_many(entries, Class::API).await.expect("set");
    let mut keys: Vec<String> = (0..100).map(|i| format!("item:{i}")).collect();
    keys.insert(50, "item:absent".to_owned());
    let values = cache.get_many::<u32, _>(&keys, Class::API).await;
    assert_eq!(values.len(), 101);
    for (key, value) in keys.iter().zip(&values) {
        let expected = key
            .strip_prefix("item:")
            .and_then(|i| i.parse::<u32>().ok());
        assert_eq!(*value, expected, "{key}");
    }
}

async fn write_invalidates_or_writes_through(backend: &Backend) {
    let cache = backend.builder().await.ready().await;
    let stored = Arc::new(parking_lot::Mutex::new(String::new()));
    cache
        .set("profile", Class::PREFERENCES, "old".to_owned())
        .await
        .expect("set");
    let sink = Arc::clone(&stored);
    cache
        .write(
            "profile",
            Class::PREFERENCES,
            "new".to_owned(),
            |value| async move {
                *sink.lock() = value;
                Ok::<_, std::io::Error>(())
            },
        )
        .await
        .expect("writes");
    assert_eq!(*stored.lock(), "new");
    assert_eq!(
        cache.get::<String>("profile", Class::PREFERENCES).await,
        None,
        "invalidated"
    );

    let through = Options::new(Class::PREFERENCES).write_strategy(WriteStrategy::Through);
    cache
        .write("profile", through.clone(), "newer".to_owned(), |_| async {
            Ok::<_, std::io::Error>(())
        })
        .await
        .expect("writes");
    assert_eq!(
        cache
            .get::<String>("profile", Class::PREFERENCES)
            .await
            .as_deref(),
        Some("newer")
    );

    let error = cache
        .write("profile", through, "lost".to_owned(), |_| async {
            Err(std::io::Error::other("refused"))
        })
        .await
        .expect_err("the writer failed");
    assert!(error.to_string().contains("refused"));
    assert_eq!(
        cache
            .get::<String>("profile", Class::PREFERENCES)
            .await
            .as_deref(),
        Some("newer"),
        "a failed write leaves the cache alone"
    );
}

async fn bad_input_is_a_typed_error(backend: &Backend) {
    let cache = backend.builder().await.ready().await;
    let too_many = (0..40).fold(Options::new(Class::API), |options, i| {
        options.tag(format!("t{i}"))
    });
    let error = cache
        .get_or_load("k", too_many, || async {
            Ok::<_, std::io::Error>(Some(1_u8))
        })
        .await
        .expect_err("rejected");
    assert!(matches!(error, Error::Invalid(_)), "{error}");
    assert!(matches!(
        cache.invalidate_tag("").await,
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        cache.invalidate_pattern("").await,
        Err(Error::Invalid(_))
    ));
    let longest = "k".repeat(seawall_cache::MAX_PATTERN_LEN);
    cache
        .invalidate_pattern(&longest)
        .await
        .expect("the longest pattern");
    assert!(matches!(
        cache.invalidate_pattern(&format!("{longest}*")).await,
        Err(Error::Invalid(_))
    ));
    // Another type under the same key is a miss, not garbage.
    cache.set("typed", Class::API, 7_u64).await.expect("set");
    assert_eq!(cache.get::<String>("typed", Class::API).await, None);
}

async fn warm_up_reports_progress_and_failures(backend: &Backend) {
    let cache = backend.builder().await.ready().await;
    let keys = (0..20).map(|i| (format!("warm:{i}"), Class::COMPUTATION));
    let mut reports = Vec::new();
    let done = cache
        .warm_up(
            keys,
            4,
            |key: &str| {
                let failing = key == "warm:13";
                let value = key.len();
                async move {
                    if failing {
                        Err(std::io::Error::other("no such row"))
                    } else {
                        Ok(Some(value))
                    }
                }
            },
            |progress| reports.push(progress),
        )
        .await;
    assert_eq!((done.total, done.done, done.failed), (20, 20, 1));
    assert_eq!(reports.len(), 21);
    assert!(
        reports
            .windows(2)
            .all(|pair| pair[1].done == pair[0].done + 1)
    );
    assert_eq!(
        cache.get::<usize>("warm:3", Class::COMPUTATION).await,
        Some("warm:3".len())
    );
}

on_every_backend!(
    a_loaded_value_is_served_until_its_class_expires,
    not_found_is_cached_for_the_negative_ttl,
    an_uncached_not_found_ends_the_fail_safe_copy,
    invalidation_by_key_tag_and_pattern,
    an_invalidation_overtakes_only_the_loads_it_concerns,
    a_thousand_concurrent_misses_load_once,
    a_failing_panicking_or_cancelled_loader_never_wedges_the_key,
    the_hard_timeout_abandons_a_load,
    fail_safe_serves_the_old_value_until_its_maximum,
    the_soft_timeout_returns_the_old_value_and_the_load_finishes,
    a_load_faster_than_the_soft_timeout_is_answered,
    stale_while_revalidate_answers_at_once_and_refreshes_once,
    refresh_ahead_reloads_before_expiry,
    batches_keep_order_and_report_misses,
    write_invalidates_or_writes_through,
    bad_input_is_a_typed_error,
    warm_up_reports_progress_and_failures,
);
