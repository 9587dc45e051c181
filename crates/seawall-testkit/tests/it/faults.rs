use std::time::{Duration, Instant};

use seawall_testkit::{Conn, Error, Persistence, RedisServer, Reply};

use crate::util::{TestResult, accepts, pid_alive};

#[test]
fn killed_server_refuses_connections_until_restarted() -> TestResult {
    let mut server = RedisServer::start()?;
    let pid = server.pid().ok_or("no pid")?;
    server.connect()?.cmd(&["SET", "k", "v"])?;

    server.kill()?;
    assert!(!pid_alive(pid));
    assert!(!server.is_running());
    assert!(!accepts(server.addr()));
    assert_eq!(server.pid(), None);
    let err = server.connect().expect_err("connected to a killed server");
    assert!(
        matches!(&err, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused),
        "{err:?}"
    );
    assert!(matches!(
        server.pause(Duration::from_millis(1)),
        Err(Error::NotRunning { .. })
    ));
    server.kill()?;

    let port = server.port();
    server.restart()?;
    assert_eq!(server.port(), port);
    assert!(server.is_running());
    // Persistence is off, so nothing survived.
    assert_eq!(server.connect()?.cmd(&["GET", "k"])?, Reply::Nil);
    Ok(())
}

#[test]
fn aof_always_keeps_every_acknowledged_write_across_sigkill() -> TestResult {
    let mut server = RedisServer::builder()
        .persistence(Persistence::AofAlways)
        .start()?;
    let dir = server.dir().to_owned();
    let keys: Vec<String> = (0..1000).map(|i| format!("key:{i}")).collect();
    let commands: Vec<Vec<&str>> = keys
        .iter()
        .map(|k| vec!["SET", k.as_str(), k.as_str()])
        .collect();
    let mut conn = server.connect()?;
    for reply in conn.pipeline(&commands)? {
        assert_eq!(reply, Reply::Simple("OK".into()));
    }

    server.kill()?;
    server.restart()?;
    assert_eq!(server.dir(), dir);

    let mut conn = server.connect()?;
    assert_eq!(conn.cmd(&["DBSIZE"])?, Reply::Integer(1000));
    let gets: Vec<Vec<&str>> = keys.iter().map(|k| vec!["GET", k.as_str()]).collect();
    for (key, reply) in keys.iter().zip(conn.pipeline(&gets)?) {
        assert_eq!(reply.as_str(), Some(key.as_str()), "{key} was lost");
    }
    Ok(())
}

#[test]
fn background_pause_freezes_until_resumed() -> TestResult {
    let server = RedisServer::start()?;
    let mut slow = server.connect()?;
    let mut impatient = server.connect()?;
    impatient.set_timeout(Duration::from_millis(200))?;

    let pause = server.pause_in_background(Duration::from_millis(1200))?;
    let started = Instant::now();
    let err = impatient
        .cmd(&["PING"])
        .expect_err("a frozen server answered");
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    // A late PONG would be mistaken for the next reply, so the connection refuses reuse.
    assert!(matches!(
        impatient.cmd(&["PING"]),
        Err(Error::Broken { .. })
    ));

    // A patient client's command is answered once the server resumes.
    assert_eq!(slow.cmd(&["PING"])?.as_str(), Some("PONG"));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    pause.wait();
    assert_eq!(server.connect()?.cmd(&["PING"])?.as_str(), Some("PONG"));
    Ok(())
}

#[test]
fn pause_can_be_cut_short_or_dropped() -> TestResult {
    let server = RedisServer::start()?;
    let pause = server.pause_in_background(Duration::from_secs(30))?;
    let started = Instant::now();
    pause.resume();
    assert_eq!(server.connect()?.cmd(&["PING"])?.as_str(), Some("PONG"));
    assert!(started.elapsed() < Duration::from_secs(5));

    // Dropping the handle keeps the promised pause length.
    drop(server.pause_in_background(Duration::from_millis(300))?);
    let mut conn = Conn::connect_timeout(server.addr(), Duration::from_millis(100))?;
    assert!(matches!(conn.cmd(&["PING"]), Err(Error::Timeout { .. })));
    let mut conn = Conn::connect_timeout(server.addr(), Duration::from_secs(5))?;
    assert_eq!(conn.cmd(&["PING"])?.as_str(), Some("PONG"));
    Ok(())
}

#[test]
fn blocking_pause_delays_other_clients() -> TestResult {
    let server = RedisServer::start()?;
    let mut conn = server.connect()?;
    std::thread::scope(|s| -> TestResult {
        let pauser = s.spawn(|| server.pause(Duration::from_millis(600)));
        // Give the SIGSTOP a head start.
        std::thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        assert_eq!(conn.cmd(&["PING"])?.as_str(), Some("PONG"));
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
        pauser.join().map_err(|_| "pause thread panicked")??;
        Ok(())
    })
}
