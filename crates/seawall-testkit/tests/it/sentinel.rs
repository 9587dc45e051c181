//! The Sentinel-managed primary and replica.

use std::time::Duration;

use seawall_testkit::{RedisSentinel, Role};

#[test]
fn the_sentinels_promote_the_replica_and_take_the_old_primary_back_as_one() {
    let mut sentinel = RedisSentinel::start().expect("starts");
    let url = sentinel.url();
    assert!(url.starts_with("redis-sentinel://127.0.0.1:"), "{url}");
    assert_eq!(url.matches("&node=").count(), 2, "{url}");
    let first = sentinel.primary().expect("a primary");
    assert_eq!(first, sentinel.servers()[0].addr());
    sentinel.servers()[0]
        .connect()
        .and_then(|mut conn| conn.cmd(&["SET", "kept", "yes"]))
        .expect("writes");

    let killed = sentinel.kill_primary().expect("kills");
    assert_eq!(killed, first);
    let promoted = sentinel
        .wait_for_new_primary(killed, Duration::from_secs(30))
        .expect("a failover");
    assert_eq!(promoted, sentinel.servers()[1].addr());

    sentinel.restart(killed).expect("restarts");
    let old = &sentinel.servers()[0];
    // A Sentinel asks a replica for INFO every 10 s, and converts an
    // instance that still calls itself primary only after it has said so
    // for 8 s more: up to about 30 s on a quiet machine, so the wait allows
    // three times that.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while old.role().ok() != Some(Role::Replica) {
        assert!(
            std::time::Instant::now() < deadline,
            "the old primary never became a replica"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
