use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use seawall_testkit::{Postgres, RedisServer, wait};

use crate::util::{TestResult, accepts, pid_alive};

#[test]
fn drop_kills_the_server_and_removes_its_dir() -> TestResult {
    let server = RedisServer::start()?;
    let (pid, addr, dir) = (
        server.pid().ok_or("no pid")?,
        server.addr(),
        server.dir().to_owned(),
    );
    assert!(pid_alive(pid) && accepts(addr));
    drop(server);
    assert!(!pid_alive(pid), "redis-server {pid} survived its drop");
    assert!(!accepts(addr));
    assert!(!dir.exists());
    Ok(())
}

#[test]
fn drop_during_a_panic_kills_the_server() -> TestResult {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let server = RedisServer::start().expect("redis-server starts");
        tx.send((server.pid(), server.addr()))
            .expect("receiver alive");
        panic!("simulated test failure");
    })
    .join();
    assert!(result.is_err());
    let (pid, addr) = rx.recv()?;
    assert!(!pid_alive(pid.ok_or("no pid")?));
    assert!(!accepts(addr));
    Ok(())
}

#[test]
fn frozen_server_is_still_killed_on_drop() -> TestResult {
    let server = RedisServer::start()?;
    let pid = server.pid().ok_or("no pid")?;
    let _pause = server.pause_in_background(Duration::from_secs(60))?;
    drop(server);
    assert!(!pid_alive(pid));
    Ok(())
}

/// Set in the copy of this test binary that [`servers_die_with_a_killed_test_process`] runs.
const CHILD_ENV: &str = "SEAWALL_TESTKIT_ORPHAN_CHILD";

/// Marks the child's report line, which the harness may prefix with its own output.
const REPORT: &str = "SEAWALL-ORPHAN-REPORT";

/// Runs a copy of this very test, which starts servers and then sits waiting, SIGKILLs
/// it, and checks that its servers die too even though no destructor ran.
#[test]
fn servers_die_with_a_killed_test_process() -> TestResult {
    if std::env::var_os(CHILD_ENV).is_some() {
        let redis = RedisServer::start()?;
        let postgres = Postgres::start()?;
        let report = format!(
            "{REPORT} {} {} {} {}\n",
            redis.pid().ok_or("no pid")?,
            postgres.pid().ok_or("no pid")?,
            redis.dir().display(),
            postgres.dir().display(),
        );
        std::io::Write::write_all(&mut std::io::stdout(), report.as_bytes())?;
        std::thread::sleep(Duration::from_secs(60));
        return Err("the parent test should have killed this process".into());
    }
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "cleanup::servers_die_with_a_killed_test_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let mut out = String::new();
    let mut buf = [0; 256];
    // The harness prints its own lines first; read until ours arrives.
    let report: Vec<String> = loop {
        let n = stdout.read(&mut buf)?;
        if n == 0 {
            child.kill()?;
            child.wait()?;
            return Err(format!("child exited before reporting its servers: {out:?}").into());
        }
        out.push_str(&String::from_utf8_lossy(&buf[..n]));
        let found = out.lines().find_map(|line| {
            let fields: Vec<String> = line
                .split_once(REPORT)?
                .1
                .split_whitespace()
                .map(String::from)
                .collect();
            (fields.len() == 4).then_some(fields)
        });
        if let Some(fields) = found {
            break fields;
        }
    };
    let pids = [report[0].parse::<u32>()?, report[1].parse::<u32>()?];
    let dirs = [Path::new(&report[2]), Path::new(&report[3])];
    assert!(pids.iter().all(|&pid| pid_alive(pid)));
    assert!(dirs.iter().all(|dir| dir.is_dir()));
    child.kill()?; // SIGKILL: no destructor runs in the child
    child.wait()?;
    // The supervisors notice the closed pipe and clean up on their own time.
    for pid in pids {
        wait::until(
            format!("server {pid} to die with its killed test process"),
            || !pid_alive(pid),
        );
    }
    for dir in dirs {
        wait::until(
            format!("{} to go with its killed test process", dir.display()),
            || !dir.exists(),
        );
    }
    Ok(())
}
