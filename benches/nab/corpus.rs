//! NAB's corpus as its repository lays it out: `data/<category>/<name>.csv`
//! (`timestamp,value`) and `labels/combined_windows.json` (each series'
//! windows as pairs of timestamps that occur in its data); and NAB's
//! results format, one CSV per series.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// One series with its labelled windows.
#[derive(Debug, Clone)]
pub struct Series {
    /// Its path under `data/`, as the labels name it
    /// (`realKnownCause/nyc_taxi.csv`).
    pub path: String,
    /// Each row's timestamp, as written in the data.
    pub timestamps: Vec<String>,
    /// Each row's time, seconds since the Unix epoch (NAB's times carry no
    /// zone; they are read as UTC).
    pub times: Vec<i64>,
    /// Each row's value.
    pub values: Vec<f64>,
    /// The windows, as the rows of their first and last timestamps.
    pub windows: Vec<(usize, usize)>,
}

impl Series {
    /// Whether `row` lies in a window: NAB's `label` column.
    pub fn label(&self, row: usize) -> u8 {
        u8::from(
            self.windows
                .iter()
                .any(|&(left, right)| (left..=right).contains(&row)),
        )
    }
}

/// Why the corpus cannot be read.
#[derive(Debug)]
pub struct CorpusError(pub String);

impl fmt::Display for CorpusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CorpusError {}

fn error(what: impl fmt::Display) -> CorpusError {
    CorpusError(what.to_string())
}

/// Reads a NAB time (`2014-04-10 07:15:00`, fractions of a second allowed)
/// as seconds since the Unix epoch.
pub fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|time| time.and_utc().timestamp())
}

/// Where NAB's files are: `SEAWALL_NAB_DIR`, else `shared/nab` beside the
/// workspace (as the project's checkouts lay it out).
pub fn default_dir() -> PathBuf {
    std::env::var_os("SEAWALL_NAB_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/nab"),
        PathBuf::from,
    )
}

/// Reads every series that the labels name, in the labels' (sorted) order.
pub fn read(dir: &Path) -> Result<Vec<Series>, CorpusError> {
    let labels = dir.join("labels/combined_windows.json");
    let text = std::fs::read_to_string(&labels)
        .map_err(|e| error(format_args!("{}: {e}", labels.display())))?;
    let windows: BTreeMap<String, Vec<(String, String)>> = serde_json::from_str(&text)
        .map_err(|e| error(format_args!("{}: {e}", labels.display())))?;
    windows
        .into_iter()
        .map(|(path, windows)| read_series(dir, path, &windows))
        .collect()
}

fn read_series(
    dir: &Path,
    path: String,
    windows: &[(String, String)],
) -> Result<Series, CorpusError> {
    let file = dir.join("data").join(&path);
    let mut reader = csv::Reader::from_path(&file)
        .map_err(|e| error(format_args!("{}: {e}", file.display())))?;
    let (mut timestamps, mut times, mut values) = (Vec::new(), Vec::new(), Vec::new());
    for (row, record) in reader.records().enumerate() {
        let record = record.map_err(|e| error(format_args!("{}: {e}", file.display())))?;
        let (Some(timestamp), Some(value)) = (record.get(0), record.get(1)) else {
            return Err(error(format_args!(
                "{}: row {row} is not timestamp,value",
                file.display()
            )));
        };
        let time = parse_time(timestamp).ok_or_else(|| {
            error(format_args!(
                "{}: row {row}: no time: {timestamp:?}",
                file.display()
            ))
        })?;
        let value = value.trim().parse::<f64>().map_err(|e| {
            error(format_args!(
                "{}: row {row}: {value:?}: {e}",
                file.display()
            ))
        })?;
        timestamps.push(timestamp.to_owned());
        times.push(time);
        values.push(value);
    }
    let row_of = |text: &str| {
        let time = parse_time(text)
            .ok_or_else(|| error(format_args!("{path}: a window's time is no time: {text:?}")))?;
        times.iter().position(|&t| t == time).ok_or_else(|| {
            error(format_args!(
                "{path}: a window's time {text} is not in the data"
            ))
        })
    };
    let windows = windows
        .iter()
        .map(|(left, right)| Ok((row_of(left)?, row_of(right)?)))
        .collect::<Result<Vec<_>, CorpusError>>()?;
    Ok(Series {
        path,
        timestamps,
        times,
        values,
        windows,
    })
}

/// Where NAB keeps a detector's results for a series:
/// `<detector>/<category>/<detector>_<name>.csv` under `results`.
pub fn results_path(results: &Path, detector: &str, series: &str) -> PathBuf {
    let (category, name) = series.rsplit_once('/').unwrap_or(("", series));
    results
        .join(detector)
        .join(category)
        .join(format!("{detector}_{name}"))
}

/// Writes a detector's scores of the corpus in NAB's results format, which
/// NAB's own scorer reads (`run.py -d <detector> --optimize --score
/// --normalize` with the files under its `results/`).
pub fn write_results(
    results: &Path,
    detector: &str,
    corpus: &[Series],
    scores: &[Vec<f64>],
) -> Result<(), CorpusError> {
    for (series, scores) in corpus.iter().zip(scores) {
        let file = results_path(results, detector, &series.path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| error(format_args!("{}: {e}", parent.display())))?;
        }
        let mut text = String::from("timestamp,value,anomaly_score,label\n");
        for (row, score) in scores.iter().enumerate() {
            use std::fmt::Write as _;
            let _ = writeln!(
                text,
                "{},{},{},{}",
                series.timestamps[row],
                series.values[row],
                score,
                series.label(row)
            );
        }
        std::fs::write(&file, text).map_err(|e| error(format_args!("{}: {e}", file.display())))?;
    }
    Ok(())
}

/// Reads a detector's anomaly scores of the corpus from NAB's results
/// format (its own, or a published detector's from numenta/NAB's
/// `results/`).
pub fn read_results(
    results: &Path,
    detector: &str,
    corpus: &[Series],
) -> Result<Vec<Vec<f64>>, CorpusError> {
    corpus
        .iter()
        .map(|series| {
            let file = results_path(results, detector, &series.path);
            let mut reader = csv::Reader::from_path(&file)
                .map_err(|e| error(format_args!("{}: {e}", file.display())))?;
            let column = reader
                .headers()
                .map_err(|e| error(format_args!("{}: {e}", file.display())))?
                .iter()
                .position(|name| name == "anomaly_score")
                .ok_or_else(|| {
                    error(format_args!("{}: no anomaly_score column", file.display()))
                })?;
            let scores = reader
                .records()
                .map(|record| {
                    let record =
                        record.map_err(|e| error(format_args!("{}: {e}", file.display())))?;
                    record
                        .get(column)
                        .and_then(|text| text.trim().parse::<f64>().ok())
                        .ok_or_else(|| {
                            error(format_args!(
                                "{}: an anomaly score is no number",
                                file.display()
                            ))
                        })
                })
                .collect::<Result<Vec<f64>, CorpusError>>()?;
            if scores.len() != series.values.len() {
                return Err(error(format_args!(
                    "{}: {} rows, the series has {}",
                    file.display(),
                    scores.len(),
                    series.values.len()
                )));
            }
            Ok(scores)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_with_and_without_fractions() {
        assert_eq!(parse_time("1970-01-01 00:01:00"), Some(60));
        assert_eq!(
            parse_time("2014-04-10 07:15:00.000000"),
            Some(1_397_114_100)
        );
        assert_eq!(parse_time("2014-04-10"), None);
    }

    #[test]
    fn a_results_file_goes_where_nab_looks_for_it() {
        assert_eq!(
            results_path(
                Path::new("results"),
                "seawall",
                "realKnownCause/nyc_taxi.csv"
            ),
            Path::new("results/seawall/realKnownCause/seawall_nyc_taxi.csv")
        );
    }
}
