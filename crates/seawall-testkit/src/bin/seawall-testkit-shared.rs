//! `seawall-testkit-shared`: one redis-server and one Redis Cluster for a
//! whole test run whose tests are processes of their own (`cargo nextest`).
//!
//! It starts both, prints `SEAWALL_TESTKIT_REDIS=host:port` and
//! `SEAWALL_TESTKIT_REDIS_CLUSTER=host:port,…` (the variables
//! [`RedisServer::shared`] and [`RedisCluster::shared`] attach to) and then a
//! line `ready`, and keeps them up until its stdin closes: run it as a
//! coprocess, and the servers go when the script that started it ends,
//! however it ends.

// A command-line tool: its output is what it is for.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{Read, Write};
use std::process::ExitCode;

use seawall_testkit::{RedisCluster, RedisServer, SHARED_CLUSTER_ENV, SHARED_REDIS_ENV};

fn main() -> ExitCode {
    if std::env::args().len() > 1 {
        eprintln!("usage: seawall-testkit-shared (no arguments; stops when stdin closes)");
        return ExitCode::from(2);
    }
    let server = match RedisServer::start() {
        Ok(server) => server,
        Err(error) => {
            eprintln!("seawall-testkit-shared: redis-server: {error}");
            return ExitCode::FAILURE;
        }
    };
    let cluster = match RedisCluster::start() {
        Ok(cluster) => cluster,
        Err(error) => {
            eprintln!("seawall-testkit-shared: Redis Cluster: {error}");
            return ExitCode::FAILURE;
        }
    };
    let nodes: Vec<String> = cluster.addrs().iter().map(ToString::to_string).collect();
    let mut out = std::io::stdout().lock();
    let written = writeln!(out, "{SHARED_REDIS_ENV}={}", server.addr())
        .and_then(|()| writeln!(out, "{SHARED_CLUSTER_ENV}={}", nodes.join(",")))
        .and_then(|()| writeln!(out, "ready"))
        .and_then(|()| out.flush());
    if let Err(error) = written {
        eprintln!("seawall-testkit-shared: stdout: {error}");
        return ExitCode::FAILURE;
    }
    drop(out);
    // Until the starting script goes: EOF or an error both mean it has.
    let _ = std::io::stdin().lock().read_to_end(&mut Vec::new());
    drop(cluster);
    drop(server);
    ExitCode::SUCCESS
}
