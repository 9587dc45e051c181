use std::process::Command;
use std::time::Duration;

use seawall_testkit::{Postgres, wait};

use crate::util::{TestResult, accepts, pid_alive};

#[test]
fn postgres_answers_a_query_over_tcp() -> TestResult {
    let pg = Postgres::start()?;
    assert_eq!(
        pg.url(),
        format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port())
    );
    assert!(accepts(pg.addr()));
    assert!(
        pg.dir().join(format!(".s.PGSQL.{}", pg.port())).exists(),
        "no unix socket"
    );

    let out = Command::new("psql")
        .args(["-X", "-A", "-t", "-c", "SELECT 1"])
        .arg(pg.url())
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");

    pg.psql("CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2)")?;
    assert_eq!(pg.psql("SELECT sum(id) FROM t")?, "3");
    assert_eq!(pg.psql("SHOW listen_addresses")?, "127.0.0.1");

    let (pid, addr, dir) = (pg.pid().ok_or("no pid")?, pg.addr(), pg.dir().to_owned());
    drop(pg);
    assert!(!pid_alive(pid));
    assert!(!accepts(addr));
    assert!(!dir.exists());
    Ok(())
}

#[test]
fn postgres_settings_are_applied() -> TestResult {
    let pg = Postgres::builder()
        .setting("max_connections", "17")
        .start()?;
    assert_eq!(pg.psql("SHOW max_connections")?, "17");
    Ok(())
}

/// A replica streams what its primary writes, and its faults do what they
/// say: a paused replay holds reads at the data of the pause while the
/// primary goes on, a resumed one catches up, a killed replica takes no
/// connections and, restarted, catches up from its slot; promoted, it
/// takes writes.
#[test]
fn a_replica_streams_pauses_resumes_restarts_and_is_promoted() -> TestResult {
    let primary = Postgres::start()?;
    primary.psql("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")?;
    let mut replica = Postgres::builder().replica_of(&primary).start()?;
    assert!(replica.is_replica()?);
    assert!(!primary.is_replica()?);
    replica.caught_up_with(&primary)?;
    assert_eq!(replica.psql("SELECT count(*) FROM t")?, "1");
    // A replica refuses writes.
    assert!(replica.psql("INSERT INTO t VALUES (9)").is_err());

    replica.pause_replay()?;
    primary.psql("INSERT INTO t VALUES (2)")?;
    let written = primary.wal_position()?;
    // The replica has received the write (its slot says so) but shows
    // the data of the pause.
    wait::until(
        "the replica to receive the write it does not replay",
        || {
            primary
                .psql(&format!(
                    "SELECT bool_and(flush_lsn >= '{written}') FROM pg_stat_replication"
                ))
                .is_ok_and(|received| received == "t")
        },
    );
    assert_eq!(replica.psql("SELECT count(*) FROM t")?, "1");
    replica.resume_replay()?;
    replica.caught_up_with(&primary)?;
    assert_eq!(replica.psql("SELECT count(*) FROM t")?, "2");

    replica.kill()?;
    assert!(!accepts(replica.addr()));
    primary.psql("INSERT INTO t VALUES (3)")?;
    replica.restart()?;
    replica.caught_up_with(&primary)?;
    assert_eq!(replica.psql("SELECT count(*) FROM t")?, "3");

    replica.apply_delay(Duration::from_secs(600))?;
    primary.psql("INSERT INTO t VALUES (4)")?;
    // Received, not applied: the delay holds it back.
    let written = primary.wal_position()?;
    wait::until("the replica to receive the delayed write", || {
        primary
            .psql(&format!(
                "SELECT bool_and(flush_lsn >= '{written}') FROM pg_stat_replication"
            ))
            .is_ok_and(|received| received == "t")
    });
    assert_eq!(replica.psql("SELECT count(*) FROM t")?, "3");
    replica.apply_delay(Duration::ZERO)?;
    replica.caught_up_with(&primary)?;
    assert_eq!(replica.psql("SELECT count(*) FROM t")?, "4");

    replica.promote()?;
    assert!(!replica.is_replica()?);
    replica.psql("INSERT INTO t VALUES (5)")?;
    assert_eq!(replica.psql("SELECT count(*) FROM t")?, "5");
    Ok(())
}
