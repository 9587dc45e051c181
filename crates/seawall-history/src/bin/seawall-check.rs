//! `seawall-check`: reads a drill's history files and final state, checks
//! them, and prints the report (a table per workload, or JSON). Exits 1
//! when it found an anomaly of a kind `--fail-on` names (every kind unless
//! told otherwise; `--fail-on none` only reports), 0 when it found none, 2
//! when it could not read its input or the state leaves out what the
//! history needs judged.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Arg, ArgAction, Command, value_parser};
use seawall_history::{FinalState, History, Options, Report, check};

fn main() -> ExitCode {
    let matches = Command::new("seawall-check")
        .about("Checks a partition drill's history against the fleet's final state")
        .arg(
            Arg::new("history")
                .long("history")
                .value_name("FILE")
                .required(true)
                .action(ArgAction::Append)
                .value_parser(value_parser!(PathBuf))
                .help("A history file (JSON lines); repeat for several, merged by time"),
        )
        .arg(
            Arg::new("state")
                .long("state")
                .value_name("FILE")
                .value_parser(value_parser!(PathBuf))
                .help("The final state (JSON): each workload the history ran but ratelimit needs its section"),
        )
        .arg(
            Arg::new("window-ms")
                .long("window-ms")
                .value_name("N")
                .value_parser(value_parser!(u64))
                .default_value("10")
                .help("The cache's propagation window: older reads within it are not stale"),
        )
        .arg(
            Arg::new("rate-multiple")
                .long("rate-multiple")
                .value_name("X")
                .value_parser(value_parser!(f64))
                .default_value("1.0")
                .help("Admissions per window a limiter key may reach, as a multiple of its limit"),
        )
        .arg(
            Arg::new("lease-margin-ms")
                .long("lease-margin-ms")
                .value_name("N")
                .value_parser(value_parser!(u64))
                .help("How much further than a job's lease from a fault a lost run's row may be for the fault to explain its repeat (default 1000)"),
        )
        .arg(
            Arg::new("examples")
                .long("examples")
                .value_name("N")
                .value_parser(value_parser!(usize))
                .default_value("5")
                .help("Examples kept per kind of finding"),
        )
        .arg(
            Arg::new("fail-on")
                .long("fail-on")
                .value_name("KINDS")
                .value_delimiter(',')
                .action(ArgAction::Append)
                .default_value("any")
                .help("Exit 1 when any of these kinds is found: `any` (every anomaly, the default), `none` (report only) or names such as queue.lost,cache.stale"),
        )
        .arg(
            Arg::new("json")
                .long("json")
                .action(ArgAction::SetTrue)
                .help("Print the report as JSON"),
        )
        .get_matches();

    let histories: Vec<PathBuf> = matches
        .get_many::<PathBuf>("history")
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let history = match History::read(&histories) {
        Ok(history) => history,
        Err(error) => return unreadable(&error),
    };
    let state = match matches.get_one::<PathBuf>("state") {
        Some(path) => match FinalState::read(path) {
            Ok(state) => state,
            Err(error) => return unreadable(&error),
        },
        None => FinalState::default(),
    };
    let mut options = Options::new();
    if let Some(&margin) = matches.get_one::<u64>("lease-margin-ms") {
        options = options.lease_margin(Duration::from_millis(margin));
    }
    let options = options
        .stale_window(Duration::from_millis(
            matches.get_one::<u64>("window-ms").copied().unwrap_or(10),
        ))
        .rate_limit_multiple(
            matches
                .get_one::<f64>("rate-multiple")
                .copied()
                .unwrap_or(1.0),
        )
        .examples(matches.get_one::<usize>("examples").copied().unwrap_or(5));
    let report = match check(&history, &state, &options) {
        Ok(report) => report,
        Err(error) => return unreadable(&error),
    };

    if matches.get_flag("json") {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(error) => {
                eprintln!("seawall-check: {error}");
                return ExitCode::from(2);
            }
        }
    } else {
        print!("{report}");
    }

    let fail_on: Vec<&String> = matches
        .get_many::<String>("fail-on")
        .into_iter()
        .flatten()
        .collect();
    let counts = report.counts();
    let known = Report::all_kinds();
    let mut failed = false;
    for kind in fail_on {
        let found = if kind == "any" {
            report.anomalies()
        } else if kind == "none" {
            0
        } else if known.contains(kind) {
            // Zero for a workload this drill did not run.
            counts.get(kind.as_str()).copied().unwrap_or(0)
        } else {
            eprintln!(
                "seawall-check: --fail-on {kind}: no such kind (known: any, none, {known:?})"
            );
            return ExitCode::from(2);
        };
        if found > 0 {
            eprintln!("seawall-check: {kind}: {found}");
            failed = true;
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn unreadable(error: &seawall_history::Error) -> ExitCode {
    eprintln!("seawall-check: {error}");
    ExitCode::from(2)
}
