//! The promotions workload on each store it runs on: in memory with SQLite
//! (embedded defaults), on a Redis server with SQLite, and on a Redis
//! Cluster with PostgreSQL. Invariants are checked with the audit, which
//! counts rows and store state, never the test's own tallies.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::future::join_all;
use seawall_perfmon::{HealthCheck as _, HealthStatus};
use seawall_testkit::{Postgres, RedisCluster, RedisServer, wait};
use serde_json::json;

use super::base::random_code;
use super::pool::PoolKind;
use super::*;
use crate::Config;
use crate::cache::ApiCache;
use crate::config::QueuePolicy;
use crate::jobs::{Processors, Running};
use crate::redis::Redis;
use crate::setup;
use crate::setup::QueueHandle;
use crate::time::now_ms;

/// Where a rig keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    /// No Redis: pools and queues in memory, SQLite.
    Memory,
    /// A Redis server of its own, SQLite.
    Redis,
    /// The shared Redis Cluster, a PostgreSQL server of its own.
    Cluster,
    /// A Redis server of its own with one replica, SQLite, and
    /// `queue.wait_replicas` 1.
    Replicated,
}

struct Rig {
    promotions: Promotions,
    running: Option<Running>,
    /// What starts the workers again.
    workers: (seawall_queue::Queues, Config, Processors),
    redis: Option<Redis>,
    _server: Option<RedisServer>,
    replica: Option<RedisServer>,
    _postgres: Option<Postgres>,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start(store: Store) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::default();
        config.demo.seed = false;
        config.database.max_connections = Some(8);
        config.database.url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("promo.db").display()
        );
        config.queue.files = dir.path().join("files");
        config.queue.order =
            QueuePolicy::parse_over(config.queue.order, "attempts=3 backoff=fixed:10ms")
                .expect("valid policy");
        let (mut server, mut replica, mut postgres) = (None, None, None);
        match store {
            Store::Memory => {}
            Store::Redis => {
                let started = RedisServer::start().expect("redis starts");
                config.redis.url = Some(started.url());
                server = Some(started);
            }
            Store::Replicated => {
                let started = RedisServer::start().expect("redis starts");
                config.redis.url = Some(started.url());
                config.queue.wait_replicas = 1;
                // Seconds: a loaded machine can hold the replica's
                // acknowledgement up for longer than a few hundred ms.
                config.queue.wait_timeout = Duration::from_secs(5);
                replica = Some(
                    started
                        .start_replica(wait::patience())
                        .expect("the replica syncs"),
                );
                server = Some(started);
            }
            Store::Cluster => {
                config.redis.url = Some(RedisCluster::shared().url());
                let started = Postgres::start().expect("postgres starts");
                config.database.url = started.url();
                postgres = Some(started);
            }
        }
        config.queue.prefix = format!("promo-test-{}", random_code(8).expect("random"));
        let monitor = setup::monitor(&config).expect("monitor");
        let db = setup::database(&config, &monitor).await.expect("database");
        let redis = setup::redis(&config).await.expect("redis");
        let cache = ApiCache::build(&config.cache, redis.as_ref(), &monitor).expect("cache");
        let queues = QueueHandle::connect(&config).expect("queues");
        let connected = tokio::time::timeout(wait::patience(), queues.connected())
            .await
            .expect("the queues connect");
        let processors = Processors::new(db.clone(), cache.clone(), config.queue.files.clone());
        let running =
            Running::start(&connected, &config.queue, &monitor, &processors).expect("workers");
        let promotions = Promotions::new(db, redis.as_ref(), cache, queues, &config, &monitor)
            .expect("promotions");
        Self {
            promotions,
            running: Some(running),
            workers: (connected, config, processors),
            redis,
            _server: server,
            replica,
            _postgres: postgres,
            _dir: dir,
        }
    }

    /// Stops the workers: orders stay on the queue.
    async fn stop_workers(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown(Duration::from_secs(5)).await;
        }
    }

    /// Starts the workers again (their metrics on a monitor of their own).
    fn start_workers(&mut self) {
        let (queues, config, processors) = &self.workers;
        let monitor = setup::monitor(config).expect("monitor");
        self.running =
            Some(Running::start(queues, &config.queue, &monitor, processors).expect("workers"));
    }

    async fn campaign(&self, quantity: i64, per_user: i64) -> Campaign {
        self.promotions
            .create_campaign(
                serde_json::from_value(json!({
                    "name": "test campaign", "quantity": quantity, "per_user": per_user
                }))
                .expect("a campaign"),
            )
            .await
            .expect("created")
    }

    async fn sale(&self, stock: i64, per_user: i64) -> Sale {
        self.promotions
            .create_sale(
                serde_json::from_value(json!({
                    "name": "test sale", "stock": stock, "per_user": per_user
                }))
                .expect("a sale"),
            )
            .await
            .expect("created")
    }

    /// Waits until no order job is queued, then audits.
    async fn drained_audit(&self) -> Audit {
        let began = tokio::time::Instant::now();
        loop {
            let audit = self.promotions.audit().await.expect("audit");
            if audit.orders_queued == 0 && audit.orders_written == audit.orders_acknowledged {
                return audit;
            }
            assert!(
                began.elapsed() < wait::patience(),
                "waited {:?} for the orders to drain: {audit:?}",
                wait::patience()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown(Duration::from_secs(5)).await;
        }
    }
}

fn change(user_id: i64, amount: i64) -> PointsChange {
    PointsChange {
        user_id,
        amount,
        reason: None,
    }
}

/// 300 issues from 150 users (each twice, all at once) against 60 coupons:
/// 60 issued, to 60 users, and every other request refused as gone or
/// already issued.
async fn coupons_hold_under_concurrency(store: Store) {
    let rig = Rig::start(store).await;
    let campaign = rig.campaign(60, 1).await;
    let issues = (0..300).map(|i| rig.promotions.issue_coupon(campaign.id, 1 + i % 150));
    let results = join_all(issues).await;
    let mut holders = HashSet::new();
    let (mut gone, mut already) = (0, 0);
    for result in results {
        match result {
            Ok(coupon) => assert!(holders.insert(coupon.user_id), "{coupon:?}"),
            Err(PromoError::CouponsGone(_)) => gone += 1,
            Err(PromoError::AlreadyIssued { held: 1, .. }) => already += 1,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(holders.len(), 60);
    assert_eq!(gone + already, 240);
    let audit = rig.promotions.audit().await.expect("audit");
    assert_eq!(audit.coupons, 60);
    assert!(audit.holds(), "{audit:?}");
    let standing = rig.promotions.campaigns().await.expect("campaigns");
    assert_eq!(
        (
            standing[0].issued,
            standing[0].remaining,
            standing[0].written
        ),
        (60, 0, 60)
    );
    let user = *holders.iter().next().expect("a holder");
    let list = rig.promotions.coupons(user).await.expect("list");
    assert_eq!(list.coupons.len(), 1);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coupons_hold_under_concurrency_in_memory() {
    coupons_hold_under_concurrency(Store::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coupons_hold_under_concurrency_on_redis() {
    coupons_hold_under_concurrency(Store::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coupons_hold_under_concurrency_on_a_cluster_with_postgres() {
    coupons_hold_under_concurrency(Store::Cluster).await;
}

#[tokio::test]
async fn a_coupon_list_is_cached_and_dropped_on_issue() {
    let rig = Rig::start(Store::Redis).await;
    let first = rig.campaign(10, 2).await;
    assert!(
        rig.promotions
            .coupons(5)
            .await
            .expect("list")
            .coupons
            .is_empty()
    );
    let coupon = rig
        .promotions
        .issue_coupon(first.id, 5)
        .await
        .expect("issued");
    assert_eq!(coupon.code.len(), 12);
    let list = rig.promotions.coupons(5).await.expect("list");
    assert_eq!(list.coupons, vec![coupon.clone()]);
    let second = rig
        .promotions
        .issue_coupon(first.id, 5)
        .await
        .expect("second");
    assert_eq!(second.number, 2);
    assert_eq!(
        rig.promotions.coupons(5).await.expect("list").coupons.len(),
        2
    );
    let third = rig.promotions.issue_coupon(first.id, 5).await;
    assert!(
        matches!(third, Err(PromoError::AlreadyIssued { held: 2, .. })),
        "{third:?}"
    );
    rig.stop().await;
}

#[tokio::test]
async fn windows_and_unknown_campaigns_are_refused() {
    let rig = Rig::start(Store::Memory).await;
    let now = now_ms();
    let later: NewCampaign = serde_json::from_value(json!({
        "name": "later", "quantity": 5, "starts_at_ms": now + 60_000
    }))
    .expect("campaign");
    let later = rig
        .promotions
        .create_campaign(later)
        .await
        .expect("created");
    let early = rig.promotions.issue_coupon(later.id, 1).await;
    assert!(
        matches!(early, Err(PromoError::NotStarted { .. })),
        "{early:?}"
    );
    let brief: NewSale = serde_json::from_value(json!({
        "name": "brief", "stock": 5, "duration_ms": 300
    }))
    .expect("sale");
    let brief = rig.promotions.create_sale(brief).await.expect("created");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let ended = rig
        .promotions
        .order(brief.id, OrderRequest { user_id: 1 }, None)
        .await;
    assert!(matches!(ended, Err(PromoError::Ended { .. })), "{ended:?}");
    let missing = rig.promotions.issue_coupon(999, 1).await;
    assert!(
        matches!(missing, Err(PromoError::NoSuchCampaign(999))),
        "{missing:?}"
    );
    let missing = rig
        .promotions
        .order(0, OrderRequest { user_id: 1 }, None)
        .await;
    assert!(
        matches!(missing, Err(PromoError::NoSuchSale(0))),
        "{missing:?}"
    );
    for (body, field) in [
        (json!({"name": "", "quantity": 5}), "name"),
        (json!({"name": "x", "quantity": 0}), "quantity"),
        (
            json!({"name": "x", "quantity": 5, "per_user": 101}),
            "per_user",
        ),
        (
            json!({"name": "x", "quantity": 5, "duration_ms": 0}),
            "duration_ms",
        ),
    ] {
        let refused = rig
            .promotions
            .create_campaign(serde_json::from_value(body).expect("shape"))
            .await;
        assert!(
            matches!(&refused, Err(PromoError::Invalid { field: f, .. }) if *f == field),
            "{refused:?}"
        );
    }
    assert_eq!(rig.promotions.audit().await.expect("audit").campaigns, 1);
    rig.stop().await;
}

/// A store that lost its state is loaded again from the rows: users keep
/// their coupons, numbers go on after the highest written. A store that
/// went back in time (a failover that lost writes) is caught by the
/// database's unique numbers and moved forward.
#[tokio::test]
async fn a_store_that_lost_state_is_caught_by_the_database() {
    let rig = Rig::start(Store::Redis).await;
    let campaign = rig.campaign(10, 1).await;
    for user in 1..=3 {
        rig.promotions
            .issue_coupon(campaign.id, user)
            .await
            .expect("issued");
    }
    let client = rig.redis.as_ref().expect("redis").client().clone();
    let (pool, _) = rig
        .promotions
        .pool(PoolKind::Coupons, campaign.id)
        .await
        .expect("pool");
    // Lost writes: the store forgets user 3 and number 3.
    let state = pool.keys();
    let _: () = fred::interfaces::HashesInterface::hset(&client, &state[0], ("next", 3))
        .await
        .expect("hset");
    let _: () = fred::interfaces::HashesInterface::hdel(&client, &state[1], "3")
        .await
        .expect("hdel");
    let again = rig.promotions.issue_coupon(campaign.id, 3).await;
    assert!(
        matches!(again, Err(PromoError::AlreadyIssued { held: 1, .. })),
        "{again:?}"
    );
    let fourth = rig
        .promotions
        .issue_coupon(campaign.id, 4)
        .await
        .expect("issued");
    assert_eq!(fourth.number, 4);
    // Everything lost: loaded again from the rows on the next issue.
    let _: () = fred::interfaces::KeysInterface::del(&client, state.clone())
        .await
        .expect("del");
    let repeat = rig.promotions.issue_coupon(campaign.id, 2).await;
    assert!(
        matches!(repeat, Err(PromoError::AlreadyIssued { .. })),
        "{repeat:?}"
    );
    let fifth = rig
        .promotions
        .issue_coupon(campaign.id, 5)
        .await
        .expect("issued");
    assert_eq!(fifth.number, 5);
    let audit = rig.promotions.audit().await.expect("audit");
    assert_eq!(audit.coupons, 5);
    assert!(audit.holds(), "{audit:?}");
    rig.stop().await;
}

async fn points_stay_exact(store: Store) {
    let rig = Rig::start(store).await;
    let promotions = &rig.promotions;
    assert_eq!(promotions.balance(7).await.expect("balance").balance, 0);
    let earned = promotions
        .earn_points(change(7, 500), Some("earn-1"))
        .await
        .expect("earned");
    assert_eq!(
        (earned.balance, earned.version, earned.delta),
        (500, 1, 500)
    );
    let replay = promotions
        .earn_points(change(7, 500), Some("earn-1"))
        .await
        .expect("replayed");
    assert!(replay.replayed);
    assert_eq!((replay.balance, replay.version), (500, 1));
    let mismatch = promotions.earn_points(change(7, 501), Some("earn-1")).await;
    assert!(
        matches!(mismatch, Err(PromoError::IdempotencyMismatch(_))),
        "{mismatch:?}"
    );
    assert_eq!(promotions.balance(7).await.expect("balance").balance, 500);
    let refused = promotions.use_points(change(7, 501), None).await;
    assert!(
        matches!(
            refused,
            Err(PromoError::InsufficientPoints {
                balance: 500,
                wanted: 501,
                ..
            })
        ),
        "{refused:?}"
    );
    promotions
        .use_points(change(7, 200), Some("use-1"))
        .await
        .expect("used");
    assert_eq!(promotions.balance(7).await.expect("balance").balance, 300);
    // 20 writers at once on one account, half earning 10, half using 5:
    // every write lands once, and the balance is the ledger's sum.
    let writes = (0..20).map(|i| async move {
        if i % 2 == 0 {
            promotions
                .earn_points(change(7, 10), Some(&format!("burst-{i}")))
                .await
        } else {
            promotions.use_points(change(7, 5), None).await
        }
    });
    for result in join_all(writes).await {
        result.expect("every write lands");
    }
    let balance = promotions.balance(7).await.expect("balance");
    assert_eq!((balance.balance, balance.version), (300 + 100 - 50, 22));
    let audit = promotions.audit().await.expect("audit");
    assert_eq!(audit.ledger_entries, 22);
    assert!(audit.holds(), "{audit:?}");
    let mut retries = promotions.0.earn_retries.get() + promotions.0.use_retries.get();
    if store == Store::Cluster {
        // PostgreSQL: writers that read the same version collide, and the
        // losers retry. Collisions depend on scheduling: a burst in which
        // none happened is followed by another, at most four more.
        let mut expected = 350;
        for burst in 0..4 {
            if retries > 0 {
                break;
            }
            let writes = (0..20).map(|_| promotions.earn_points(change(7, 1), None));
            for result in join_all(writes).await {
                result.expect("every write lands");
            }
            expected += 20;
            retries = promotions.0.earn_retries.get() + promotions.0.use_retries.get();
            tracing::debug!(burst, retries, "another burst");
        }
        assert!(retries > 0, "no write retried");
        let balance = promotions.balance(7).await.expect("balance");
        assert_eq!(balance.balance, expected);
        assert!(promotions.audit().await.expect("audit").holds());
    } else {
        // SQLite: writers take turns, so none reads a version another
        // then moves.
        assert_eq!(retries, 0);
    }
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn points_stay_exact_in_memory() {
    points_stay_exact(Store::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn points_stay_exact_on_a_cluster_with_postgres() {
    points_stay_exact(Store::Cluster).await;
}

/// 250 orders from 250 buyers at once against a stock of 100: 100
/// acknowledged, 150 sold out, and once the workers drain, 100 rows.
async fn a_sale_never_oversells(store: Store) {
    let rig = Rig::start(store).await;
    let sale = rig.sale(100, 1).await;
    let promotions = &rig.promotions;
    let orders = (1..=250).map(|user_id| async move {
        let key = format!("key-{user_id}");
        promotions
            .order(sale.id, OrderRequest { user_id }, Some(&key))
            .await
    });
    let mut accepted = Vec::new();
    let mut sold_out = 0;
    for result in join_all(orders).await {
        match result {
            Ok(order) => accepted.push(order),
            Err(PromoError::SoldOut(_)) => sold_out += 1,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!((accepted.len(), sold_out), (100, 150));
    let units: HashSet<i64> = accepted.iter().map(|order| order.unit).collect();
    assert_eq!(units, (1..=100).collect());
    let first = &accepted[0];
    let again = rig
        .promotions
        .order(
            sale.id,
            OrderRequest {
                user_id: first.user_id,
            },
            Some(&format!("key-{}", first.user_id)),
        )
        .await
        .expect("replayed");
    assert!(again.replayed);
    assert_eq!(again.order_id, first.order_id);
    let limit = rig
        .promotions
        .order(
            sale.id,
            OrderRequest {
                user_id: first.user_id,
            },
            None,
        )
        .await;
    assert!(
        matches!(
            limit,
            Err(PromoError::SoldOut(_) | PromoError::OrderLimit { .. })
        ),
        "{limit:?}"
    );
    let audit = rig.drained_audit().await;
    assert_eq!((audit.sold, audit.orders_written), (100, 100));
    assert!(audit.holds(), "{audit:?}");
    let found = rig
        .promotions
        .find_order(sale.id, &first.order_id)
        .await
        .expect("found");
    assert_eq!(found.state, OrderState::Written);
    let check = rig.promotions.reconciliation_check().check().await;
    assert_eq!(check.status, HealthStatus::Healthy, "{check:?}");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sale_never_oversells_in_memory() {
    a_sale_never_oversells(Store::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sale_never_oversells_on_redis() {
    a_sale_never_oversells(Store::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sale_never_oversells_on_a_cluster_with_postgres() {
    a_sale_never_oversells(Store::Cluster).await;
}

/// A written order that disappears from the database is reported: by the
/// audit as lost, by the health check as a disagreement.
#[tokio::test]
async fn the_reconciliation_reports_a_lost_order() {
    let rig = Rig::start(Store::Memory).await;
    let sale = rig.sale(10, 1).await;
    for user_id in 1..=4 {
        rig.promotions
            .order(sale.id, OrderRequest { user_id }, None)
            .await
            .expect("accepted");
    }
    assert!(rig.drained_audit().await.holds());
    sqlx::query("DELETE FROM sale_orders WHERE user_id = 2")
        .execute(&rig.promotions.db().pool())
        .await
        .expect("deleted");
    let audit = rig.promotions.audit().await.expect("audit");
    assert_eq!(audit.lost_orders, 1, "{audit:?}");
    assert!(!audit.holds());
    let check = rig.promotions.reconciliation_check().check().await;
    assert_eq!(check.status, HealthStatus::Degraded, "{check:?}");
    rig.stop().await;
}

/// A sale's stock that left the store is loaded again only once the queued
/// orders are written: the rows then show every unit handed out, and the
/// next order gets a new unit, not one a queued order holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stock_lost_by_the_store_is_loaded_after_the_queued_orders() {
    let mut rig = Rig::start(Store::Redis).await;
    let sale = rig.sale(10, 1).await;
    rig.stop_workers().await;
    for user_id in 1..=3 {
        rig.promotions
            .order(sale.id, OrderRequest { user_id }, None)
            .await
            .expect("accepted");
    }
    // The store forgets the sale (a restart without persistence).
    let (pool, _) = rig
        .promotions
        .pool(PoolKind::Stock, sale.id)
        .await
        .expect("pool");
    let client = rig.redis.as_ref().expect("redis").client().clone();
    let _: () = fred::interfaces::KeysInterface::del(&client, pool.keys())
        .await
        .expect("del");
    let promotions = rig.promotions.clone();
    let fourth = tokio::spawn(async move {
        promotions
            .order(sale.id, OrderRequest { user_id: 4 }, None)
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !fourth.is_finished(),
        "the order did not wait for the queue"
    );
    rig.start_workers();
    let fourth = fourth.await.expect("joined").expect("accepted");
    assert_eq!(fourth.unit, 4, "{fourth:?}");
    let audit = rig.drained_audit().await;
    assert_eq!((audit.sold, audit.orders_written), (4, 4), "{audit:?}");
    assert!(audit.holds(), "{audit:?}");
    rig.stop().await;
}

/// Each pool loads under a lock of its own: a sale whose reload is held (its
/// orders table locked in PostgreSQL, so the reload stops at its read) holds
/// up no other pool's load, and finishes once the table is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_reload_holds_up_no_other_pool() {
    let rig = Rig::start(Store::Cluster).await;
    let sale = rig.sale(10, 1).await;
    let campaign = rig.campaign(10, 1).await;
    // The store forgets both (a restart without persistence).
    let client = rig.redis.as_ref().expect("redis").client().clone();
    for (kind, id) in [(PoolKind::Stock, sale.id), (PoolKind::Coupons, campaign.id)] {
        let (pool, _) = rig.promotions.pool(kind, id).await.expect("pool");
        let _: () = fred::interfaces::KeysInterface::del(&client, pool.keys())
            .await
            .expect("del");
    }
    let mut holder = rig.promotions.db().pool().begin().await.expect("begins");
    sqlx::query("LOCK TABLE sale_orders IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *holder)
        .await
        .expect("locks");
    let promotions = rig.promotions.clone();
    let order = tokio::spawn(async move {
        promotions
            .order(sale.id, OrderRequest { user_id: 1 }, None)
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!order.is_finished(), "the sale's reload was not held");
    // Had the campaign's load waited for the sale's, it would wait until
    // the table is unlocked below: the bound only ends that wait.
    let issued = tokio::time::timeout(
        Duration::from_secs(30),
        rig.promotions.issue_coupon(campaign.id, 1),
    )
    .await;
    let held = !order.is_finished();
    holder.rollback().await.expect("unlocks");
    let order = order.await.expect("joined").expect("accepted");
    assert!(
        held,
        "the sale's reload was still held while the coupon was issued"
    );
    let coupon = issued
        .expect("the campaign's load did not wait for the sale's")
        .expect("issued");
    assert_eq!(
        (coupon.campaign_id, order.unit),
        (campaign.id, 1),
        "{coupon:?} {order:?}"
    );
    let audit = rig.drained_audit().await;
    assert!(audit.holds(), "{audit:?}");
    rig.stop().await;
}

/// With `queue.wait_replicas` 1, an acknowledged order's unit is on the
/// replica before the answer; with the replica gone the order is refused
/// and its unit given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sale_order_waits_for_its_replica() {
    let mut rig = Rig::start(Store::Replicated).await;
    let sale = rig.sale(10, 1).await;
    let first = rig
        .promotions
        .order(sale.id, OrderRequest { user_id: 1 }, None)
        .await
        .expect("accepted");
    let (pool, _) = rig
        .promotions
        .pool(PoolKind::Stock, sale.id)
        .await
        .expect("pool");
    let grants = pool.keys()[2].clone();
    let mut replica = rig.replica.take().expect("a replica");
    let held = replica
        .connect()
        .expect("connect")
        .cmd(&["HEXISTS", &grants, &first.order_id])
        .expect("HEXISTS");
    assert_eq!(
        held.as_int(),
        Some(1),
        "the replica lacks the unit: {held:?}"
    );
    replica.kill().expect("killed");
    let refused = rig
        .promotions
        .order(
            sale.id,
            OrderRequest { user_id: 2 },
            Some("after-the-replica"),
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(PromoError::NotReplicated {
                acked: 0,
                wanted: 1
            })
        ),
        "{refused:?}"
    );
    let audit = rig.drained_audit().await;
    assert_eq!((audit.sold, audit.orders_written), (1, 1), "{audit:?}");
    assert!(audit.holds(), "{audit:?}");
    rig.stop().await;
}

/// With Redis, a balance changed through one instance is read at once
/// through another, which has the old balance cached: balances are read
/// from Redis, where the change's invalidation is before the change is
/// answered, not from L1 (the invalidation stream reaches other L1s a few
/// milliseconds later).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_balance_changed_on_one_instance_is_read_at_once_on_another() {
    let rig = Rig::start(Store::Redis).await;
    let config = &rig.workers.1;
    let monitor = setup::monitor(config).expect("monitor");
    let other_cache = ApiCache::build(&config.cache, rig.redis.as_ref(), &monitor)
        .expect("cache")
        .expect("the cache is on");
    let other = Promotions::new(
        rig.promotions.db().clone(),
        rig.redis.as_ref(),
        Some(other_cache.clone()),
        QueueHandle::connect(config).expect("queues"),
        config,
        &monitor,
    )
    .expect("another instance");
    rig.promotions
        .earn_points(change(9, 100), None)
        .await
        .expect("earned");
    assert_eq!(other.balance(9).await.expect("balance").balance, 100);
    for round in 1..=20 {
        rig.promotions
            .earn_points(change(9, 1), None)
            .await
            .expect("earned");
        let seen = other.balance(9).await.expect("balance");
        assert_eq!(seen.balance, 100 + round, "round {round}: {seen:?}");
    }
    // Unchanged, it is read from Redis every time, never from L1 alone
    // (where a change on another instance could not be seen until the
    // stream brings its invalidation). A load that the stream's late
    // invalidation overtakes does not fill Redis, so the first reads may
    // load again; once one read is answered by Redis, the next five are.
    let balances = || {
        other_cache
            .cache()
            .stats()
            .classes
            .into_iter()
            .find(|class| class.class == "balance")
            .expect("the balance class")
    };
    let began = std::time::Instant::now();
    let filled = loop {
        let before = balances().l2.hits;
        assert_eq!(other.balance(9).await.expect("balance").balance, 120);
        let after = balances();
        if after.l2.hits > before {
            break after;
        }
        assert!(
            began.elapsed() < wait::patience(),
            "waited {:?} for a read answered by Redis: {after:?}",
            wait::patience()
        );
    };
    for _ in 0..5 {
        assert_eq!(other.balance(9).await.expect("balance").balance, 120);
    }
    let read = balances();
    assert_eq!(read.l1.hits, 0, "{read:?}");
    assert_eq!(read.l2.hits, filled.l2.hits + 5, "{filled:?} then {read:?}");
    rig.stop().await;
}
