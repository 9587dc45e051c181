use seawall_testkit::{Conn, Error, Persistence, RedisServer, Reply};

use crate::util::TestResult;

#[test]
fn start_ping_set_get() -> TestResult {
    let server = RedisServer::start()?;
    assert_ne!(server.port(), 6379);
    assert_eq!(server.url(), format!("redis://127.0.0.1:{}", server.port()));
    assert!(server.dir().join("redis.conf").is_file());
    assert!(server.log_path().is_file());

    let mut conn = server.connect()?;
    assert_eq!(conn.cmd(&["PING"])?, Reply::Simple("PONG".into()));
    assert_eq!(conn.cmd(&["SET", "k", "v"])?, Reply::Simple("OK".into()));
    assert_eq!(conn.cmd(&["GET", "k"])?.as_str(), Some("v"));
    assert_eq!(conn.cmd(&["GET", "missing"])?, Reply::Nil);
    assert_eq!(conn.cmd(&["INCRBY", "n", "-7"])?, Reply::Integer(-7));

    // Binary-safe values, including CRLF and non-UTF-8 bytes.
    let value: &[u8] = b"a\r\nb\x00\xff";
    conn.cmd(&[&b"SET"[..], b"bin", value])?;
    assert_eq!(conn.cmd(&["GET", "bin"])?, Reply::Bulk(value.to_vec()));

    let reply = conn.cmd(&["INCR", "k"])?;
    assert!(
        reply.as_error().is_some_and(|e| e.starts_with("ERR")),
        "{reply}"
    );
    assert!(matches!(reply.into_result(), Err(Error::Server { .. })));

    conn.cmd(&["RPUSH", "list", "a", "b", "c"])?;
    let range = conn.cmd(&["LRANGE", "list", "0", "-1"])?;
    let items: Vec<_> = range
        .as_array()
        .unwrap_or_default()
        .iter()
        .filter_map(Reply::as_str)
        .collect();
    assert_eq!(items, ["a", "b", "c"]);

    let replies = conn.pipeline(&[vec!["SET", "p", "1"], vec!["INCR", "p"], vec!["GET", "p"]])?;
    assert_eq!(
        replies,
        [
            Reply::Simple("OK".into()),
            Reply::Integer(2),
            Reply::Bulk(b"2".to_vec())
        ]
    );
    Ok(())
}

#[test]
fn persistence_is_off_by_default_and_configurable() -> TestResult {
    let config = |server: &RedisServer, key: &str| -> seawall_testkit::Result<String> {
        let reply = server.connect()?.cmd(&["CONFIG", "GET", key])?;
        Ok(reply
            .as_array()
            .and_then(|a| a.get(1))
            .and_then(Reply::as_str)
            .unwrap_or("?")
            .to_owned())
    };
    let off = RedisServer::start()?;
    assert_eq!(config(&off, "save")?, "");
    assert_eq!(config(&off, "appendonly")?, "no");

    let everysec = RedisServer::builder()
        .persistence(Persistence::AofEverySec)
        .start()?;
    assert_eq!(config(&everysec, "appendonly")?, "yes");
    assert_eq!(config(&everysec, "appendfsync")?, "everysec");

    let custom = RedisServer::builder().config("maxmemory", "10mb").start()?;
    assert_eq!(
        config(&custom, "maxmemory")?,
        (10 * 1024 * 1024).to_string()
    );
    Ok(())
}

#[test]
fn requirepass_demands_auth() -> TestResult {
    let server = RedisServer::builder().password("p@ss word").start()?;
    assert_eq!(
        server.url(),
        format!("redis://:p%40ss%20word@127.0.0.1:{}", server.port())
    );

    let mut anonymous = Conn::connect(server.addr())?;
    let reply = anonymous.cmd(&["GET", "k"])?;
    assert!(
        reply.as_error().is_some_and(|e| e.starts_with("NOAUTH")),
        "{reply}"
    );

    let wrong = Conn::connect(server.addr())?.auth("nope");
    assert!(
        matches!(wrong, Err(Error::Server { ref message }) if message.starts_with("WRONGPASS")),
        "{wrong:?}"
    );

    anonymous.auth("p@ss word")?;
    assert_eq!(
        anonymous.cmd(&["SET", "k", "v"])?,
        Reply::Simple("OK".into())
    );
    assert_eq!(server.connect()?.cmd(&["GET", "k"])?.as_str(), Some("v"));
    Ok(())
}

#[test]
fn missing_binary_says_how_to_install() {
    let err = RedisServer::builder()
        .binary("/nonexistent/redis-server")
        .start()
        .expect_err("a missing binary cannot start");
    assert!(matches!(err, Error::MissingBinary { .. }), "{err:?}");
    assert!(
        err.to_string().contains("apt-get install -y redis-server"),
        "{err}"
    );
}

#[test]
fn taken_fixed_port_fails_with_the_log_tail() -> TestResult {
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port();
    let err = RedisServer::builder()
        .port(port)
        .start()
        .expect_err("the port is taken");
    assert!(matches!(err, Error::Exited { .. }), "{err:?}");
    assert!(err.to_string().contains("Address already in use"), "{err}");
    Ok(())
}

#[test]
fn parallel_starts_get_distinct_ports() -> TestResult {
    let servers = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6).map(|_| s.spawn(RedisServer::start)).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("start thread panicked"))
            .collect::<Result<Vec<_>, _>>()
    })?;
    let mut ports: Vec<u16> = servers.iter().map(RedisServer::port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), servers.len());
    for server in &servers {
        assert_eq!(server.connect()?.cmd(&["PING"])?.as_str(), Some("PONG"));
    }
    Ok(())
}
