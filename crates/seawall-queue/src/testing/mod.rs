//! Tests of the stores below the public API, on the memory backend and on
//! a real redis-server: the model every sequence of transitions and faults
//! must follow ([`model`]), and the Redis scripts at their edges
//! ([`edges`]). Built for the crate's unit tests only; no other module
//! imports it.

mod edges;
mod model;

use std::sync::OnceLock;

use seawall_testkit::RedisServer;

/// The redis-server of this test process, started on first use.
fn server() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(|| RedisServer::start().expect("redis-server starts"))
}

/// A key, its time to live in ms (0: none), its `DUMP`.
type Dumped = (Vec<u8>, i64, Vec<u8>);

/// The keys of `prefix` on `server`.
fn keys_on(server: &RedisServer, prefix: &str) -> Vec<Vec<u8>> {
    let mut conn = server.connect().expect("connects");
    let reply = conn.cmd(&["KEYS", &format!("{prefix}:*")]).expect("KEYS");
    reply
        .as_array()
        .unwrap_or_default()
        .iter()
        .filter_map(|key| key.as_bytes().map(<[u8]>::to_vec))
        .collect()
}

/// Every key of `prefix` on `server`, dumped with its time to live, to be
/// restored as a server that lost the writes made since.
fn dump_keys(server: &RedisServer, prefix: &str) -> Vec<Dumped> {
    let mut conn = server.connect().expect("connects");
    keys_on(server, prefix)
        .into_iter()
        .filter_map(|key| {
            let dump = conn.cmd(&[b"DUMP".as_slice(), &key]).expect("DUMP");
            let ttl = conn.cmd(&[b"PTTL".as_slice(), &key]).expect("PTTL");
            let (dump, ttl) = (dump.as_bytes()?.to_vec(), ttl.as_int()?);
            Some((key, ttl.max(0), dump))
        })
        .collect()
}

/// Replaces the keys of `prefix` on `server` by `dumped`.
fn restore_keys(server: &RedisServer, prefix: &str, dumped: &[Dumped]) {
    let mut conn = server.connect().expect("connects");
    for key in keys_on(server, prefix) {
        conn.cmd(&[b"DEL".as_slice(), &key]).expect("DEL");
    }
    for (key, ttl, dump) in dumped {
        let ttl = ttl.to_string();
        conn.cmd(&[b"RESTORE".as_slice(), key, ttl.as_bytes(), dump])
            .expect("RESTORE");
    }
}
