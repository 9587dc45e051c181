//! `seawall-nab`: runs an anomaly detector over the Numenta Anomaly
//! Benchmark's 58 series, writes its results in NAB's format (which NAB's
//! own scorer reads) and scores them by NAB's rules, printing the three
//! profiles' normalised scores.
//!
//! ```sh
//! cargo run --release -p seawall-benches --bin seawall-nab -- \
//!     --detector seawall --results target/nab
//! ```
//!
//! `--scores-from DIR` scores a detector's published results instead (a
//! numenta/NAB checkout's `results/`), without running it.

// A command-line report: its table is its output.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;

use clap::{Arg, ArgAction, Command, value_parser};
use seawall_benches::nab::{self, Which, corpus, score::Profile};

/// What the command line asks for.
struct Args {
    nab: Option<PathBuf>,
    detector: Vec<String>,
    results: Option<PathBuf>,
    scores_from: Option<PathBuf>,
    per_series: bool,
}

fn args() -> Args {
    let matches = Command::new("seawall-nab")
        .about("Scores an anomaly detector on the Numenta Anomaly Benchmark")
        .arg(
            Arg::new("nab")
                .long("nab")
                .value_parser(value_parser!(PathBuf))
                .help("NAB's files (data/, labels/); default: SEAWALL_NAB_DIR, else ../shared/nab beside the workspace"),
        )
        .arg(
            Arg::new("detector")
                .long("detector")
                .value_delimiter(',')
                .default_value("seawall")
                .help("The detectors: seawall, null, windowedGaussian (or, with --scores-from, any NAB names)"),
        )
        .arg(
            Arg::new("results")
                .long("results")
                .value_parser(value_parser!(PathBuf))
                .help("Where to write their results, in NAB's layout (<dir>/<detector>/...)"),
        )
        .arg(
            Arg::new("scores-from")
                .long("scores-from")
                .value_parser(value_parser!(PathBuf))
                .help("Score the named detectors' results found here (NAB's layout) instead of running them"),
        )
        .arg(
            Arg::new("per-series")
                .long("per-series")
                .action(ArgAction::SetTrue)
                .help("Also print each series' score under the standard profile"),
        )
        .get_matches();
    Args {
        nab: matches.get_one::<PathBuf>("nab").cloned(),
        detector: matches
            .get_many::<String>("detector")
            .map(|names| names.cloned().collect())
            .unwrap_or_default(),
        results: matches.get_one::<PathBuf>("results").cloned(),
        scores_from: matches.get_one::<PathBuf>("scores-from").cloned(),
        per_series: matches.get_flag("per-series"),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args();
    let dir = args.nab.unwrap_or_else(corpus::default_dir);
    let corpus = corpus::read(&dir)?;
    println!(
        "NAB: {} series, {} rows, {} windows ({})",
        corpus.len(),
        corpus.iter().map(|s| s.values.len()).sum::<usize>(),
        corpus.iter().map(|s| s.windows.len()).sum::<usize>(),
        dir.display()
    );
    println!(
        "| detector | {} | {} | {} | thresholds | seconds |",
        Profile::ALL[0].name,
        Profile::ALL[1].name,
        Profile::ALL[2].name
    );
    println!("|---|---|---|---|---|---|");
    for name in &args.detector {
        let started = std::time::Instant::now();
        let scores = match &args.scores_from {
            Some(results) => corpus::read_results(results, name, &corpus)?,
            None => {
                let which = match name.as_str() {
                    "seawall" => Which::Seawall,
                    "null" => Which::Null,
                    "windowedGaussian" => Which::WindowedGaussian,
                    other => return Err(format!("no detector {other:?}").into()),
                };
                let scores: Vec<Vec<f64>> = corpus.iter().map(|series| which.run(series)).collect();
                if let Some(results) = &args.results {
                    corpus::write_results(results, which.name(), &corpus, &scores)?;
                }
                scores
            }
        };
        let took = started.elapsed().as_secs_f64();
        let scored = nab::score_all(&corpus, &scores);
        let thresholds: Vec<String> = scored
            .profiles
            .iter()
            .map(|p| format!("{:.4}", p.threshold))
            .collect();
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {} | {took:.1} |",
            scored.normalised[0],
            scored.normalised[1],
            scored.normalised[2],
            thresholds.join(" / ")
        );
        if args.per_series {
            for series in &scored.profiles[0].series {
                let o = series.outcome;
                println!(
                    "    {:<60} {:>8.3}  tp {:>5} fp {:>5} fn {:>5}",
                    series.path, o.score, o.tp, o.fp, o.fn_
                );
            }
        }
    }
    Ok(())
}
