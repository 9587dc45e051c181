use std::time::{Duration, Instant};

use seawall_testkit::{Conn, Error, Persistence, RedisServer, Reply, wait};

use crate::util::{TestResult, accepts, pid_alive, pid_stopped};

/// How long the pauses that end on their own last: long enough that the
/// checks a test makes while the server is frozen are over before it
/// resumes, even when a loaded machine holds the test up for seconds.
const PAUSE: Duration = Duration::from_secs(5);

/// Waits until the signal has stopped `server`'s process, so that what
/// the test sends next meets a frozen server.
#[track_caller]
fn wait_until_frozen(server: &RedisServer) {
    let pid = server.pid().expect("a running server");
    wait::until(format!("redis-server {pid} to be stopped"), || {
        pid_stopped(pid)
    });
}

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

    let pause = server.pause_in_background(PAUSE)?;
    wait_until_frozen(&server);
    let err = impatient
        .cmd(&["PING"])
        .expect_err("a frozen server answered");
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    // A late PONG would be mistaken for the next reply, so the connection refuses reuse.
    assert!(matches!(
        impatient.cmd(&["PING"]),
        Err(Error::Broken { .. })
    ));

    // A patient client's command is answered once the server resumes, not
    // before. Its connection's timeout must outlast the pause.
    slow.set_timeout(PAUSE * 4)?;
    assert_eq!(slow.cmd(&["PING"])?.as_str(), Some("PONG"));
    let early = pause.until().saturating_duration_since(Instant::now());
    assert!(early.is_zero(), "answered {early:?} before the resume");
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
    // Not cut short, it would have taken 30 s: half of that tells them
    // apart with room for a loaded machine.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    // Dropping the handle keeps the promised pause length.
    let pause = server.pause_in_background(PAUSE)?;
    let until = pause.until();
    drop(pause);
    wait_until_frozen(&server);
    let mut conn = Conn::connect_timeout(server.addr(), Duration::from_millis(100))?;
    assert!(matches!(conn.cmd(&["PING"]), Err(Error::Timeout { .. })));
    let mut conn = Conn::connect_timeout(server.addr(), PAUSE * 4)?;
    assert_eq!(conn.cmd(&["PING"])?.as_str(), Some("PONG"));
    let early = until.saturating_duration_since(Instant::now());
    assert!(early.is_zero(), "answered {early:?} before the resume");
    Ok(())
}

#[test]
fn blocking_pause_delays_other_clients() -> TestResult {
    let server = RedisServer::start()?;
    let mut conn = server.connect()?;
    conn.set_timeout(PAUSE * 4)?;
    std::thread::scope(|s| -> TestResult {
        // Before the SIGSTOP, so the SIGCONT comes at least PAUSE later.
        let started = Instant::now();
        let pauser = s.spawn(|| server.pause(PAUSE));
        wait_until_frozen(&server);
        assert_eq!(conn.cmd(&["PING"])?.as_str(), Some("PONG"));
        assert!(
            started.elapsed() >= PAUSE,
            "answered after {:?}, within the {PAUSE:?} pause",
            started.elapsed()
        );
        pauser.join().map_err(|_| "pause thread panicked")??;
        Ok(())
    })
}
