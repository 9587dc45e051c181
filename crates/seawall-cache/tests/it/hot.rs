//! Hot keys: the keys read most lead each class's ranking, instances on one
//! Redis learn one ranking that outlives them, a clear tells whoever warms
//! the cache, and a warm-up of the hot keys fills L1 again; a key's parts
//! read back from the key.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use fred::interfaces::{KeysInterface as _, SortedSetsInterface as _};
use proptest::prelude::*;
use seawall_cache::{
    Class, Error, HotKey, HotKeyOptions, KeyBuilder, Options, TieredCache, TieredCacheBuilder,
};

use crate::support::{Backend, Ready, client, unique_prefix};
use crate::{on_every_backend, on_redis_backends};

/// Counting every read, merged every 50 ms.
fn every_read() -> HotKeyOptions {
    HotKeyOptions::default()
        .sample(1)
        .merge_every(Duration::from_millis(50))
}

/// A cache of `builder` that learns from every read, following
/// invalidations.
async fn learning(builder: TieredCacheBuilder) -> TieredCache {
    builder.learn_hot_keys(every_read()).ready().await
}

/// Reads `key` through `cache` `times` times, counting the loads in `loads`.
async fn read(cache: &TieredCache, key: &str, times: u32, loads: &Arc<AtomicU32>) {
    for _ in 0..times {
        let (loads, owned) = (Arc::clone(loads), key.to_owned());
        let value: Option<String> = cache
            .get_or_load(key, Class::API, move || async move {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(Some(format!("value of {owned}")))
            })
            .await
            .expect("reads");
        assert_eq!(value.as_deref(), Some(format!("value of {key}").as_str()));
    }
}

async fn the_keys_read_most_lead_their_class(backend: &Backend) {
    let cache = learning(backend.builder().await).await;
    let loads = Arc::new(AtomicU32::new(0));
    read(&cache, "page:a", 30, &loads).await;
    read(&cache, "page:b", 10, &loads).await;
    read(&cache, "page:c", 1, &loads).await;
    let hot = cache.hot_keys(Class::API, 2).await;
    let keys: Vec<&str> = hot.iter().map(|hot| hot.key.as_str()).collect();
    assert_eq!(keys, ["page:a", "page:b"], "{hot:?}");
    // Every read counted, a few milliseconds of decay at most.
    assert!((29.0..=30.0).contains(&hot[0].reads), "{hot:?}");
    assert!((9.0..=10.0).contains(&hot[1].reads), "{hot:?}");
    assert_eq!(cache.hot_keys(Class::SCHEDULE, 10).await, []);
    // A cache that does not learn has none.
    let plain = backend.builder().await.ready().await;
    read(&plain, "page:a", 3, &loads).await;
    assert_eq!(plain.hot_keys(Class::API, 10).await, []);
}

async fn a_clear_is_announced_and_a_warm_up_of_the_hot_keys_fills_l1_again(backend: &Backend) {
    let cache = learning(backend.builder().await).await;
    let loads = Arc::new(AtomicU32::new(0));
    for (key, times) in [("page:1", 5), ("page:2", 4), ("page:3", 3)] {
        read(&cache, key, times, &loads).await;
    }
    assert_eq!(loads.load(Ordering::SeqCst), 3);
    let mut clears = cache.l1_clears();
    let before = *clears.borrow_and_update();
    cache.clear().await.expect("clears");
    tokio::time::timeout(seawall_testkit::wait::patience(), clears.changed())
        .await
        .expect("the clear is announced in time")
        .expect("the cache is alive");
    assert!(*clears.borrow() > before);

    let hot = cache.hot_keys(Class::API, 10).await;
    assert_eq!(hot.len(), 3, "{hot:?}");
    let items = hot
        .into_iter()
        .map(|hot| (hot.key, Options::new(Class::API)));
    let warmed = cache
        .warm_up(
            items,
            4,
            |key: &str| {
                let (loads, key) = (Arc::clone(&loads), key.to_owned());
                async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, std::io::Error>(Some(format!("value of {key}")))
                }
            },
            |_| {},
        )
        .await;
    assert_eq!((warmed.done, warmed.failed), (3, 0));
    assert_eq!(loads.load(Ordering::SeqCst), 6, "each hot key loaded again");
    // Every read now is a hit: no load runs.
    for key in ["page:1", "page:2", "page:3"] {
        read(&cache, key, 1, &loads).await;
    }
    assert_eq!(loads.load(Ordering::SeqCst), 6);
}

async fn instances_learn_one_ranking_that_outlives_them(backend: &Backend) {
    let prefix = unique_prefix();
    let a = learning(backend.instance(&prefix).await).await;
    let b = learning(backend.instance(&prefix).await).await;
    let loads = Arc::new(AtomicU32::new(0));
    read(&a, "page:x", 5, &loads).await;
    read(&b, "page:y", 8, &loads).await;
    // Each sends what it counted when asked (and every 50 ms).
    let from_b = b.hot_keys(Class::API, 10).await;
    assert_eq!(from_b[0].key, "page:y", "{from_b:?}");
    let from_a = a.hot_keys(Class::API, 10).await;
    let keys: Vec<&str> = from_a.iter().map(|hot| hot.key.as_str()).collect();
    assert_eq!(keys, ["page:y", "page:x"], "{from_a:?}");
    drop((a, b));
    // A new instance, which has read nothing, finds them in Redis.
    let c = learning(backend.instance(&prefix).await).await;
    let from_c = c.hot_keys(Class::API, 10).await;
    let keys: Vec<&str> = from_c.iter().map(|hot| hot.key.as_str()).collect();
    assert_eq!(keys, ["page:y", "page:x"], "{from_c:?}");
}

/// Learning `capacity` keys from every read, merged only when the ranking
/// is read: each `hot_keys` below is one merge.
fn merged_when_read(capacity: usize) -> HotKeyOptions {
    HotKeyOptions::default()
        .capacity(capacity)
        .sample(1)
        .merge_every(Duration::from_secs(3600))
}

/// A cache of `backend` under `prefix` that learns with `options`.
async fn learning_with(backend: &Backend, prefix: &str, options: HotKeyOptions) -> TieredCache {
    backend
        .instance(prefix)
        .await
        .learn_hot_keys(options)
        .ready()
        .await
}

/// Asserts that Redis holds what `hot` says for the API class under
/// `prefix` (`hot_keys` answers with this instance's own ranking where
/// Redis refused an addition), and at most `most` keys, candidates
/// included; returns the generation of its recent reads. Nothing to check
/// without Redis.
async fn check_redis(backend: &Backend, prefix: &str, hot: &[HotKey], most: u64) -> Option<u64> {
    let (Backend::Redis(url) | Backend::Cluster(url)) = backend else {
        return None;
    };
    let redis = client(url).await;
    let set = format!("{prefix}:h:{{h:api}}");
    let held: u64 = redis.zcard(&set).await.expect("ZCARD");
    assert!(held <= most, "Redis holds {held} keys");
    let last = i64::try_from(hot.len()).expect("a few keys") - 1;
    let top: Vec<(String, f64)> = redis
        .zrange(&set, 0, last, None, true, None, true)
        .await
        .expect("ZRANGE");
    let hot: Vec<(String, f64)> = hot.iter().map(|hot| (hot.key.clone(), hot.reads)).collect();
    assert_eq!(top, hot, "Redis holds every addition");
    let generation: Option<u64> = redis.get(format!("{set}:gen")).await.expect("GET");
    Some(generation.expect("a generation of recent reads"))
}

/// A key read now takes the place of keys read long ago, once the ranking
/// is full: c, read 100 times between merges, passes a and b, read 1,000
/// times each before it and no more since.
async fn a_key_hot_now_enters_a_full_ranking(backend: &Backend) {
    let prefix = unique_prefix();
    let cache = learning_with(backend, &prefix, merged_when_read(2)).await;
    let loads = Arc::new(AtomicU32::new(0));
    read(&cache, "page:a", 1_000, &loads).await;
    read(&cache, "page:b", 1_000, &loads).await;
    // Tied, in either order.
    let hot = cache.hot_keys(Class::API, 2).await;
    let mut keys: Vec<&str> = hot.iter().map(|hot| hot.key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["page:a", "page:b"], "{hot:?}");
    for _ in 0..20 {
        read(&cache, "page:c", 100, &loads).await;
        let hot = cache.hot_keys(Class::API, 2).await;
        assert_eq!(hot.len(), 2, "{hot:?}");
        check_redis(backend, &prefix, &hot, 4).await;
    }
    let hot = cache.hot_keys(Class::API, 2).await;
    assert_eq!(hot[0].key, "page:c", "{hot:?}");
    // All 2,000 reads of c counted, a few seconds of decay at most.
    assert!((1_990.0..=2_000.0).contains(&hot[0].reads), "{hot:?}");
    assert!(
        ["page:a", "page:b"].contains(&hot[1].key.as_str()),
        "{hot:?}"
    );
}

/// Keys read a lot long ago and not since do not keep a key hot now out,
/// however many: the ranking keeps as candidates the keys read most
/// lately, not those read most ever, and never more than twice its
/// capacity.
async fn keys_read_long_ago_do_not_keep_a_key_hot_now_out(backend: &Backend) {
    let prefix = unique_prefix();
    let cache = learning_with(backend, &prefix, merged_when_read(2)).await;
    let loads = Arc::new(AtomicU32::new(0));
    read(&cache, "page:a", 1_000, &loads).await;
    read(&cache, "page:b", 1_000, &loads).await;
    cache.hot_keys(Class::API, 2).await;
    // Ten more keys, each with five times what c gets in one merge.
    for tail in 0..10 {
        read(&cache, &format!("tail:{tail}"), 500, &loads).await;
        cache.hot_keys(Class::API, 2).await;
    }
    for _ in 0..20 {
        read(&cache, "page:c", 100, &loads).await;
        let hot = cache.hot_keys(Class::API, 2).await;
        assert!(
            !hot.iter().any(|hot| hot.key.starts_with("tail:")),
            "{hot:?}"
        );
        check_redis(backend, &prefix, &hot, 4).await;
    }
    let hot = cache.hot_keys(Class::API, 2).await;
    assert_eq!(hot[0].key, "page:c", "{hot:?}");
}

/// A key read steadily keeps its place while a newcomer passes the keys
/// read long ago and keys read once come and go, over more merges than
/// Redis makes before it rescales its recent reads.
async fn a_key_that_stays_hot_stays(backend: &Backend) {
    let prefix = unique_prefix();
    let cache = learning_with(backend, &prefix, merged_when_read(4)).await;
    let loads = Arc::new(AtomicU32::new(0));
    for key in ["page:old:1", "page:old:2", "page:old:3"] {
        read(&cache, key, 1_000, &loads).await;
    }
    read(&cache, "page:steady", 1_500, &loads).await;
    let hot = cache.hot_keys(Class::API, 4).await;
    assert_eq!(hot[0].key, "page:steady", "{hot:?}");
    // Four keys a merge, as many as the sample counts.
    let mut generation = None;
    for round in 0..300 {
        read(&cache, "page:new", 20, &loads).await;
        read(&cache, "page:steady", 10, &loads).await;
        read(&cache, &format!("once:{round}:a"), 1, &loads).await;
        read(&cache, &format!("once:{round}:b"), 1, &loads).await;
        let hot = cache.hot_keys(Class::API, 4).await;
        let keys: Vec<&str> = hot.iter().map(|hot| hot.key.as_str()).collect();
        assert!(keys.contains(&"page:steady"), "{hot:?}");
        assert!(!keys.iter().any(|key| key.starts_with("once:")), "{hot:?}");
        generation = check_redis(backend, &prefix, &hot, 8).await;
    }
    // 301 additions: rescaled once, after the 256th.
    if let Some(generation) = generation {
        assert_eq!(generation, 45);
    }
    let hot = cache.hot_keys(Class::API, 2).await;
    let keys: Vec<&str> = hot.iter().map(|hot| hot.key.as_str()).collect();
    assert_eq!(keys, ["page:new", "page:steady"], "{hot:?}");
}

on_every_backend!(
    the_keys_read_most_lead_their_class,
    a_key_hot_now_enters_a_full_ranking,
    keys_read_long_ago_do_not_keep_a_key_hot_now_out,
    a_key_that_stays_hot_stays,
    a_clear_is_announced_and_a_warm_up_of_the_hot_keys_fills_l1_again,
);

mod shared {
    use super::*;

    on_redis_backends!(instances_learn_one_ranking_that_outlives_them);
}

/// Without Redis, what a process learned carries over to the next one
/// through `learned_hot_keys` and `add_hot_keys`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_without_redis_hands_its_ranking_to_the_next() {
    let first = TieredCache::builder()
        .learn_hot_keys(every_read())
        .build()
        .expect("cache");
    let loads = Arc::new(AtomicU32::new(0));
    read(&first, "page:1", 3, &loads).await;
    read(&first, "page:2", 6, &loads).await;
    // Reading the ranking merges what was sampled, as the cache's own task
    // does every `merge_every`.
    assert_eq!(first.hot_keys(Class::API, 10).await.len(), 2);
    let learned = first.learned_hot_keys();
    assert_eq!(learned.keys().collect::<Vec<_>>(), ["api"], "{learned:?}");
    drop(first);
    let next = TieredCache::builder()
        .learn_hot_keys(every_read())
        .build()
        .expect("cache");
    assert_eq!(next.hot_keys(Class::API, 10).await, []);
    next.add_hot_keys(&learned);
    let hot = next.hot_keys(Class::API, 10).await;
    let keys: Vec<&str> = hot.iter().map(|hot| hot.key.as_str()).collect();
    assert_eq!(keys, ["page:2", "page:1"], "{hot:?}");
    // A cache that does not learn takes nothing.
    let plain = TieredCache::builder().build().expect("cache");
    plain.add_hot_keys(&learned);
    assert_eq!(plain.learned_hot_keys().len(), 0);
}

#[test]
fn hot_key_options_out_of_range_are_refused() {
    for options in [
        HotKeyOptions::default().capacity(0),
        HotKeyOptions::default().capacity(100_001),
        HotKeyOptions::default().half_life(Duration::from_millis(10)),
        HotKeyOptions::default().merge_every(Duration::ZERO),
    ] {
        let built = TieredCache::builder().learn_hot_keys(options).build();
        assert!(matches!(built, Err(Error::Config(_))), "{built:?}");
    }
}

proptest! {
    #[test]
    fn a_key_reads_back_as_its_parts(parts in proptest::collection::vec(".{0,12}", 0..6)) {
        let keys = KeyBuilder::new("family").expect("a namespace");
        let key = keys.key(&parts);
        prop_assume!(!key.contains(":#"));
        prop_assert_eq!(keys.parts(&key), Some(parts));
        prop_assert_eq!(KeyBuilder::new("other").expect("a namespace").parts(&key), None);
    }
}
