use std::process::Command;

use seawall_testkit::Postgres;

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
