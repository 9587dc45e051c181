//! `seawall-fleet`: runs a [`Fleet`] and drives it, for `scripts/fleet`.
//!
//! `seawall-fleet run --dir DIR` starts the fleet, writes `DIR/fleet.env`,
//! prints it, and then serves the other verbs on `DIR/control.sock` until
//! `seawall-fleet stop --dir DIR`, which takes every process down in order
//! (HAProxy, the services, then Redis and PostgreSQL), or SIGINT or
//! SIGTERM, on which every process's supervisor stops it (and, with
//! `--hosts`, the network's janitor removes its namespaces). The other verbs
//! connect to that socket, print the answer and exit 0 when the verb
//! succeeded.

// A command-line tool: its output is what it is for.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use seawall_testkit::{Fleet, FleetRedis};

const USAGE: &str = "usage: seawall-fleet VERB [--dir DIR] [options]

verbs:
  run [--instances N] [--workers N] [--redis cluster|standalone|sentinel]
      [--postgres-data DIR] [--postgres-replicas N] [--api BIN] [--worker BIN] [--hosts]
                      start the fleet and keep it up until `stop`, SIGINT or SIGTERM;
                      --postgres-replicas: streaming replicas the instances read on (0 to 4)
                      --hosts: each process on a network host of its own
  env                 the fleet's url=, token=, instances=, redis=, postgres= lines
  status              every process: pid, ready or not, Redis role, HAProxy's view
  stop                take every process down
  kill-master         SIGKILL one Redis master and print its address
  restart-redis ADDR  start a killed Redis node again
  restart-api N       SIGTERM API instance N, start it again, wait until HAProxy uses it
  stop-api N | start-api N
  kill-worker N       SIGKILL worker N and print its pid
  start-worker N | stop-worker N
  hosts               every host: name, address, role (a fleet started with --hosts)
  partition A,B '|' C,D,E
  partition A,B/C,D,E cut the hosts of each side off from the other sides, both ways
  partition --one-way X Y
                      drop what host X sends to host Y
  isolate X           cut host X off from every other host
  heal                remove every partition
  pause X | resume X  SIGSTOP or SIGCONT the process of X (api-1, redis-2, haproxy, ...)

DIR defaults to $SEAWALL_FLEET_DIR, else target/fleet.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(verb) = args.first().cloned() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let mut dir = std::env::var_os("SEAWALL_FLEET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/fleet"));
    let mut rest = Vec::new();
    let mut iter = args.into_iter().skip(1);
    while let Some(arg) = iter.next() {
        if arg == "--dir" {
            match iter.next() {
                Some(value) => dir = PathBuf::from(value),
                None => return usage("--dir needs a value"),
            }
        } else {
            rest.push(arg);
        }
    }
    match verb.as_str() {
        "run" => run(&dir, &rest),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            let mut line = verb;
            for arg in rest {
                line.push(' ');
                line.push_str(&arg);
            }
            client(&dir, &line)
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("seawall-fleet: {problem}\n\n{USAGE}");
    ExitCode::from(2)
}

fn socket_path(dir: &Path) -> PathBuf {
    dir.join("control.sock")
}

/// Sends one verb to the running fleet and prints its answer.
fn client(dir: &Path, line: &str) -> ExitCode {
    let path = socket_path(dir);
    let mut stream = match UnixStream::connect(&path) {
        Ok(stream) => stream,
        Err(error) => {
            eprintln!(
                "seawall-fleet: no fleet answers on {} ({error}); start one with `scripts/fleet start`",
                path.display()
            );
            return ExitCode::from(1);
        }
    };
    let mut answer = String::new();
    let sent = stream
        .write_all(format!("{line}\n").as_bytes())
        .and_then(|()| stream.shutdown(std::net::Shutdown::Write))
        .and_then(|()| stream.read_to_string(&mut answer));
    if let Err(error) = sent {
        eprintln!("seawall-fleet: talking to the fleet: {error}");
        return ExitCode::from(1);
    }
    match answer.split_once('\n') {
        Some(("ok", text)) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Some((_, text)) => {
            eprint!("seawall-fleet: {text}");
            ExitCode::from(1)
        }
        None => {
            eprintln!("seawall-fleet: the fleet gave no answer");
            ExitCode::from(1)
        }
    }
}

struct Options {
    instances: usize,
    workers: usize,
    redis: FleetRedis,
    postgres_data: Option<PathBuf>,
    postgres_replicas: usize,
    api: Option<PathBuf>,
    worker: Option<PathBuf>,
    hosts: bool,
}

fn parse_run(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        instances: 3,
        workers: 2,
        redis: FleetRedis::Cluster,
        postgres_data: None,
        postgres_replicas: 0,
        api: None,
        worker: None,
        hosts: false,
    };
    let mut iter = args.iter();
    while let Some(flag) = iter.next() {
        let mut value = || {
            iter.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let count = |text: String| {
            text.parse::<usize>()
                .ok()
                .filter(|n| (1..=16).contains(n))
                .ok_or_else(|| format!("{flag} takes 1 to 16, not {text:?}"))
        };
        match flag.as_str() {
            "--instances" => options.instances = count(value()?)?,
            "--workers" => {
                options.workers = value()?.parse().map_err(|_| "--workers takes a number")?
            }
            "--redis" => {
                options.redis = match value()?.as_str() {
                    "cluster" => FleetRedis::Cluster,
                    "standalone" => FleetRedis::Standalone,
                    "sentinel" => FleetRedis::Sentinel,
                    other => {
                        return Err(format!(
                            "--redis takes cluster, standalone or sentinel, not {other:?}"
                        ));
                    }
                }
            }
            "--postgres-data" => options.postgres_data = Some(value()?.into()),
            "--postgres-replicas" => {
                let text = value()?;
                options.postgres_replicas = text
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n <= 4)
                    .ok_or_else(|| format!("--postgres-replicas takes 0 to 4, not {text:?}"))?;
            }
            "--api" => options.api = Some(value()?.into()),
            "--worker" => options.worker = Some(value()?.into()),
            "--hosts" => options.hosts = true,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(options)
}

/// Starts the fleet and serves the verbs until told to stop.
fn run(dir: &Path, args: &[String]) -> ExitCode {
    let options = match parse_run(args) {
        Ok(options) => options,
        Err(problem) => return usage(&problem),
    };
    // SIGINT and SIGTERM keep their default action, ending this process:
    // every process of the fleet runs under a supervisor reading a pipe from
    // this one, and each stops its process its own way (SIGTERM and a drain
    // for the services) once the pipe closes. Blocking them here instead
    // would leave them blocked in every child too.
    let mut builder = Fleet::builder()
        .dir(dir)
        .instances(options.instances)
        .workers(options.workers)
        .redis(options.redis)
        .postgres_replicas(options.postgres_replicas)
        .hosts(options.hosts);
    if let Some(data) = options.postgres_data {
        builder = builder.postgres_data(data);
    }
    if let Some(api) = options.api {
        builder = builder.api_binary(api);
    }
    if let Some(worker) = options.worker {
        builder = builder.worker_binary(worker);
    }
    let mut fleet = match builder.start() {
        Ok(fleet) => fleet,
        Err(error) => {
            eprintln!("seawall-fleet: the fleet did not start: {error}");
            return ExitCode::from(1);
        }
    };
    let path = socket_path(dir);
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("seawall-fleet: listening on {}: {error}", path.display());
            return ExitCode::from(1);
        }
    };
    print!("{}", fleet.env_text());
    let _ = std::io::stdout().flush();
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if serve(&mut fleet, stream) == Served::Stop {
                    break;
                }
            }
            Err(error) => eprintln!("seawall-fleet: accepting a connection: {error}"),
        }
    }
    eprintln!("seawall-fleet: stopping");
    let _ = std::fs::remove_file(fleet.env_file());
    drop(fleet);
    let _ = std::fs::remove_file(&path);
    ExitCode::SUCCESS
}

#[derive(PartialEq, Eq)]
enum Served {
    Continue,
    Stop,
}

fn serve(fleet: &mut Fleet, stream: UnixStream) -> Served {
    // A client that sends nothing must not hold up the others (or `stop`).
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    if BufReader::new(&stream).read_line(&mut line).is_err() {
        return Served::Continue;
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let (outcome, served) = match words.as_slice() {
        ["stop"] => (Ok(String::from("stopping\n")), Served::Stop),
        words => (verb(fleet, words), Served::Continue),
    };
    let answer = match outcome {
        Ok(text) => format!("ok\n{text}"),
        Err(text) => format!("error\n{text}\n"),
    };
    let mut stream = stream;
    let _ = stream.write_all(answer.as_bytes());
    served
}

fn verb(fleet: &mut Fleet, words: &[&str]) -> Result<String, String> {
    let index = |word: &str| {
        word.parse::<usize>()
            .map_err(|_| format!("{word:?} is not an instance number"))
    };
    let done = |result: seawall_testkit::Result<()>, text: String| {
        result.map(|()| text).map_err(|error| error.to_string())
    };
    match words {
        ["env"] => Ok(fleet.env_text()),
        ["status"] => Ok(fleet.status_text()),
        ["kill-master"] => fleet
            .kill_master()
            .map(|addr| format!("killed the Redis master on {addr}\n"))
            .map_err(|error| error.to_string()),
        ["restart-redis", addr] => {
            let addr = addr
                .parse()
                .map_err(|_| format!("{addr:?} is not an address"))?;
            done(fleet.restart_redis(addr), format!("restarted {addr}\n"))
        }
        ["restart-api", n] => {
            let n = index(n)?;
            done(fleet.restart_api(n), format!("restarted api-{n}\n"))
        }
        ["stop-api", n] => {
            let n = index(n)?;
            done(fleet.stop_api(n), format!("stopped api-{n}\n"))
        }
        ["start-api", n] => {
            let n = index(n)?;
            done(fleet.start_api(n), format!("started api-{n}\n"))
        }
        ["kill-worker", n] => {
            let n = index(n)?;
            fleet
                .kill_worker(n)
                .map(|pid| format!("killed worker-{n} (pid {pid})\n"))
                .map_err(|error| error.to_string())
        }
        ["start-worker", n] => {
            let n = index(n)?;
            done(fleet.start_worker(n), format!("started worker-{n}\n"))
        }
        ["stop-worker", n] => {
            let n = index(n)?;
            done(fleet.stop_worker(n), format!("stopped worker-{n}\n"))
        }
        ["hosts"] => {
            let hosts = fleet.hosts();
            if hosts.is_empty() {
                return Err(String::from(
                    "this fleet runs on loopback; start it with --hosts",
                ));
            }
            Ok(hosts
                .iter()
                .map(|host| format!("{:<10} {:<15} {:?}\n", host.name, host.addr, host.role))
                .collect())
        }
        ["partition", "--one-way", from, to] => done(
            fleet.one_way(from, to),
            format!("dropping what {from} sends to {to}\n"),
        ),
        ["partition", sides @ ..] if !sides.is_empty() => {
            let sides = parse_sides(&sides.join(" "))?;
            let refs: Vec<Vec<&str>> = sides
                .iter()
                .map(|side| side.iter().map(String::as_str).collect())
                .collect();
            let refs: Vec<&[&str]> = refs.iter().map(Vec::as_slice).collect();
            let text = sides
                .iter()
                .map(|side| side.join(","))
                .collect::<Vec<_>>()
                .join(" | ");
            done(fleet.partition(&refs), format!("partitioned {text}\n"))
        }
        ["isolate", host] => done(fleet.isolate(host), format!("isolated {host}\n")),
        ["heal"] => done(fleet.heal(), String::from("healed\n")),
        ["pause", host] => done(fleet.pause(host), format!("paused {host}\n")),
        ["resume", host] => done(fleet.resume(host), format!("resumed {host}\n")),
        _ => Err(format!("unknown verb {:?}\n\n{USAGE}", words.join(" "))),
    }
}

/// `A,B | C,D,E` or `A,B/C,D,E`: the sides of a partition, at least two.
fn parse_sides(text: &str) -> Result<Vec<Vec<String>>, String> {
    let sides: Vec<Vec<String>> = text
        .split(['|', '/'])
        .map(|side| {
            side.split([',', ' '])
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .collect();
    if sides.len() < 2 || sides.iter().any(Vec::is_empty) {
        return Err(format!(
            "{text:?} is not a partition: give two or more sides of host names, \
             each side's names joined by commas, the sides split by '|' or '/', \
             e.g. `partition redis-1,api-1 '|' redis-2,haproxy`"
        ));
    }
    Ok(sides)
}

#[cfg(test)]
mod tests {
    use super::parse_sides;

    #[test]
    fn sides_split_on_bars_or_slashes() {
        let expected = vec![vec!["a", "b"], vec!["c", "d", "e"]];
        assert_eq!(parse_sides("a,b | c,d,e"), Ok(strings(&expected)));
        assert_eq!(parse_sides("a,b/c,d,e"), Ok(strings(&expected)));
        assert_eq!(parse_sides("a, b |c,d, e"), Ok(strings(&expected)));
        assert!(parse_sides("a,b").is_err());
        assert!(parse_sides("a,b | ").is_err());
    }

    fn strings(sides: &[Vec<&str>]) -> Vec<Vec<String>> {
        sides
            .iter()
            .map(|side| side.iter().map(|s| (*s).to_owned()).collect())
            .collect()
    }
}
