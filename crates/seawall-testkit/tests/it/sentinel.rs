//! The Sentinel-managed primary and replica.

use std::time::Instant;

use seawall_testkit::{RedisSentinel, Role, wait};

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
        .wait_for_new_primary(killed, wait::patience())
        .expect("a failover");
    assert_eq!(promoted, sentinel.servers()[1].addr());

    sentinel.restart(killed).expect("restarts");
    let old = &sentinel.servers()[0];
    // A Sentinel asks a replica for INFO every 10 s, and converts an
    // instance that still calls itself primary only after it has said so
    // for 8 s more: up to about 30 s on a quiet machine. A Sentinel whose
    // timer runs late (a loaded machine) enters TILT mode and acts on
    // nothing for 30 s, perhaps more than once: twice the usual patience.
    let patience = wait::patience() * 2;
    let began = Instant::now();
    loop {
        let role = old.role();
        if matches!(role, Ok(Role::Replica)) {
            break;
        }
        assert!(
            began.elapsed() < patience,
            "waited {patience:?} for the Sentinels to make the restarted old primary {} a \
             replica; it last answered ROLE with {role:?}",
            old.addr()
        );
        std::thread::sleep(wait::POLL);
    }
}
