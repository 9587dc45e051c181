use std::collections::HashMap;

use seawall_testkit::{Conn, RedisCluster, Reply, Role, key_slot, wait};

use crate::util::TestResult;

fn cluster_info(conn: &mut Conn) -> seawall_testkit::Result<String> {
    Ok(conn
        .cmd(&["CLUSTER", "INFO"])?
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

#[test]
fn three_masters_spread_keys() -> TestResult {
    let mut cluster = RedisCluster::start()?;
    assert_eq!(cluster.nodes().len(), 3);
    assert_eq!(cluster.master_indices(), [0, 1, 2]);
    assert!(cluster.replicas().is_empty());
    assert_eq!(cluster.seed_urls().len(), 3);
    for node in cluster.nodes() {
        assert!(cluster_info(&mut node.connect()?)?.contains("cluster_state:ok"));
        assert_eq!(node.role()?, Role::Master);
    }

    // Write through node 0 and follow MOVED redirects, checking them against key_slot.
    let mut conns: HashMap<u16, Conn> = HashMap::new();
    for node in cluster.nodes() {
        conns.insert(node.port(), node.connect()?);
    }
    let first = cluster.nodes()[0].port();
    for i in 0..300 {
        let key = format!("key:{i}");
        let conn = conns.get_mut(&first).ok_or("no conn")?;
        let mut reply = conn.cmd(&["SET", key.as_str(), "v"])?;
        if let Some(moved) = reply.as_error().and_then(|e| e.strip_prefix("MOVED ")) {
            let (slot, target) = moved.split_once(' ').ok_or("malformed MOVED")?;
            assert_eq!(slot.parse::<u16>()?, key_slot(key.as_bytes()));
            let port: u16 = target
                .rsplit_once(':')
                .ok_or("malformed MOVED")?
                .1
                .parse()?;
            reply = conns
                .get_mut(&port)
                .ok_or("MOVED to an unknown node")?
                .cmd(&["SET", key.as_str(), "v"])?;
        }
        assert_eq!(reply, Reply::Simple("OK".into()), "{key}");
    }
    let mut total = 0;
    for master in cluster.masters() {
        let keys = master
            .connect()?
            .cmd(&["DBSIZE"])?
            .as_int()
            .ok_or("DBSIZE")?;
        assert!(keys > 0, "master {} holds no keys", master.addr());
        total += keys;
    }
    assert_eq!(total, 300);

    // A restarted node rejoins from its nodes.conf.
    cluster.nodes_mut()[1].kill()?;
    cluster.nodes_mut()[1].restart()?;
    cluster.wait_healthy(wait::patience())?;
    assert!(cluster_info(&mut cluster.nodes()[1].connect()?)?.contains("cluster_state:ok"));
    Ok(())
}

#[test]
fn one_replica_per_master_gives_six_nodes() -> TestResult {
    let cluster = RedisCluster::builder()
        .replicas_per_master(1)
        .password("cluster-pw")
        .start()?;
    assert_eq!(cluster.nodes().len(), 6);
    assert_eq!(cluster.masters().len(), 3);
    assert_eq!(cluster.replicas().len(), 3);
    for master in cluster.masters() {
        assert_eq!(master.role()?, Role::Master);
        let info = master.connect()?.cmd(&["INFO", "replication"])?;
        assert!(
            info.as_str()
                .unwrap_or_default()
                .contains("connected_slaves:1"),
            "{info}"
        );
    }
    for replica in cluster.replicas() {
        assert_eq!(replica.role()?, Role::Replica);
        assert!(cluster_info(&mut replica.connect()?)?.contains("cluster_state:ok"));
    }
    assert!(
        cluster
            .seed_urls()
            .iter()
            .all(|u| u.starts_with("redis://:cluster-pw@127.0.0.1:"))
    );
    Ok(())
}

#[test]
fn missing_redis_cli_says_how_to_install() {
    let err = RedisCluster::builder()
        .cli_binary("/nonexistent/redis-cli")
        .start()
        .expect_err("a missing redis-cli cannot form a cluster");
    assert!(
        err.to_string().contains("apt-get install -y redis-server"),
        "{err}"
    );
}
