//! The Numenta Anomaly Benchmark (NAB): its corpus and results format
//! ([`corpus`]), its scoring rules ([`score`]), two of its published
//! detectors as references for the scorer ([`reference`](mod@reference)), and the runner
//! that scores seawall-perfmon's [`seawall_perfmon::anomaly::Detector`]
//! on it (the `seawall-nab` program).

pub mod corpus;
pub mod reference;
pub mod score;

use seawall_perfmon::anomaly::{AnomalyOptions, Detector};

/// The detectors the runner knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// seawall-perfmon's detector with its default options: what the
    /// service runs.
    Seawall,
    /// NAB's null detector.
    Null,
    /// NAB's windowed Gaussian.
    WindowedGaussian,
}

impl Which {
    /// NAB's name for the detector's results.
    pub fn name(self) -> &'static str {
        match self {
            Which::Seawall => "seawall",
            Which::Null => "null",
            Which::WindowedGaussian => "windowedGaussian",
        }
    }

    /// The detector's scores of one series.
    pub fn run(self, series: &corpus::Series) -> Vec<f64> {
        match self {
            Which::Seawall => seawall(series, AnomalyOptions::default()),
            Which::Null => reference::null(series.values.len()),
            Which::WindowedGaussian => reference::windowed_gaussian(&series.values),
        }
    }
}

/// seawall's detector over one series with `options`: each row's score.
pub fn seawall(series: &corpus::Series, options: AnomalyOptions) -> Vec<f64> {
    let mut detector = Detector::new(options);
    series
        .times
        .iter()
        .zip(&series.values)
        .map(|(&time, &value)| detector.observe(time, value).score)
        .collect()
}

/// A detector's three profile scores, normalised against the null
/// detector's.
#[derive(Debug, Clone)]
pub struct Scored {
    /// Per profile (in [`score::Profile::ALL`]'s order): the corpus score.
    pub profiles: Vec<score::CorpusScore>,
    /// Per profile: the normalised score (null 0, perfect 100).
    pub normalised: Vec<f64>,
}

/// Scores `scores` (one list per series of `corpus`) under every profile.
pub fn score_all(corpus: &[corpus::Series], scores: &[Vec<f64>]) -> Scored {
    let windows = corpus.iter().map(|series| series.windows.len()).sum();
    let nulls: Vec<Vec<f64>> = corpus
        .iter()
        .map(|series| reference::null(series.values.len()))
        .collect();
    let mut profiles = Vec::new();
    let mut normalised = Vec::new();
    for profile in score::Profile::ALL {
        let null = score::score_corpus(corpus, &nulls, &profile);
        let scored = score::score_corpus(corpus, scores, &profile);
        normalised.push(score::normalise(
            scored.total,
            null.total,
            windows,
            &profile,
        ));
        profiles.push(scored);
    }
    Scored {
        profiles,
        normalised,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NAB's published normalised scores (`results/final_results.json`).
    fn published(detector: &str) -> [f64; 3] {
        let path = corpus::default_dir().join("results/final_results.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let all: serde_json::Value = serde_json::from_str(&text).expect("NAB's results are JSON");
        score::Profile::ALL.map(|profile| {
            all[detector][profile.name]
                .as_f64()
                .unwrap_or_else(|| panic!("no {detector} {} in {}", profile.name, path.display()))
        })
    }

    fn corpus() -> Vec<corpus::Series> {
        let dir = corpus::default_dir();
        corpus::read(&dir).unwrap_or_else(|e| panic!("NAB's corpus at {}: {e}", dir.display()))
    }

    #[test]
    fn the_corpus_is_nabs_58_series_with_116_windows() {
        let corpus = corpus();
        assert_eq!(corpus.len(), 58);
        assert_eq!(corpus.iter().map(|s| s.windows.len()).sum::<usize>(), 116);
        assert_eq!(
            corpus.iter().map(|s| s.values.len()).sum::<usize>(),
            365_558
        );
    }

    /// The scorer gives the null detector 0 and the windowed Gaussian its
    /// published scores: every series' score under every profile, the
    /// threshold, and the normalised totals.
    #[test]
    fn the_scorer_reproduces_nabs_published_scores() {
        let corpus = corpus();
        let nulls: Vec<Vec<f64>> = corpus.iter().map(|s| Which::Null.run(s)).collect();
        let null = score_all(&corpus, &nulls);
        assert_eq!(null.normalised, vec![0.0; 3]);
        assert_eq!(published("null"), [0.0; 3]);

        let scores: Vec<Vec<f64>> = corpus
            .iter()
            .map(|s| Which::WindowedGaussian.run(s))
            .collect();
        let scored = score_all(&corpus, &scores);
        let expected = published("windowedGaussian");
        for (i, profile) in score::Profile::ALL.iter().enumerate() {
            let ours = scored.normalised[i];
            assert!(
                (ours - expected[i]).abs() < 0.01,
                "{}: {ours} against NAB's {}",
                profile.name,
                expected[i]
            );
            let file = format!(
                "{}/nab/published/windowedGaussian_{}_scores.csv",
                env!("CARGO_MANIFEST_DIR"),
                profile.name
            );
            let mut reader = csv::Reader::from_path(&file).expect("the published scores");
            let mut checked = 0;
            for record in reader.records() {
                let record = record.expect("a row");
                let (path, threshold, total) = (&record[2], &record[3], &record[4]);
                if &record[0] == "Totals" {
                    let total: f64 = total.parse().expect("a number");
                    let ours = scored.profiles[i].total;
                    assert!(
                        (ours - total).abs() < 1e-6,
                        "{}: {ours} against {total}",
                        profile.name
                    );
                    continue;
                }
                let threshold: f64 = threshold.parse().expect("a number");
                assert_eq!(scored.profiles[i].threshold, threshold, "{}", profile.name);
                let ours = scored.profiles[i]
                    .series
                    .iter()
                    .find(|s| s.path == path)
                    .unwrap_or_else(|| panic!("{path} scored"));
                let total: f64 = total.parse().expect("a number");
                assert!(
                    (ours.outcome.score - total).abs() < 1e-6,
                    "{} {path}: {} against {total}",
                    profile.name,
                    ours.outcome.score
                );
                let counts: Vec<usize> = (5..9)
                    .map(|c| record[c].parse().expect("a count"))
                    .collect();
                let o = ours.outcome;
                assert_eq!(
                    vec![o.tp, o.tn, o.fp, o.fn_],
                    counts,
                    "{} {path}",
                    profile.name
                );
                checked += 1;
            }
            assert_eq!(checked, 58, "{}", profile.name);
        }
    }

    /// The service's detector, with its default options, scores on NAB
    /// what docs/benchmarks.md records ("Anomaly detection on the Numenta
    /// Anomaly Benchmark"): a change to the detector or its defaults shows
    /// here, and the docs are updated with it.
    #[test]
    fn the_service_detector_scores_what_the_docs_record() {
        let corpus = corpus();
        let scores: Vec<Vec<f64>> = corpus.iter().map(|s| Which::Seawall.run(s)).collect();
        let scored = score_all(&corpus, &scores);
        let recorded = [75.10, 70.80, 78.80];
        for (i, profile) in score::Profile::ALL.iter().enumerate() {
            assert!(
                (scored.normalised[i] - recorded[i]).abs() < 0.005,
                "{}: {:.2}, the docs record {:.2}",
                profile.name,
                scored.normalised[i],
                recorded[i]
            );
        }
    }

    /// What the runner writes in NAB's format reads back to the same
    /// scores, and so to the same result.
    #[test]
    fn results_written_in_nabs_format_score_the_same_read_back() {
        let corpus: Vec<_> = corpus().into_iter().step_by(7).collect();
        let scores: Vec<Vec<f64>> = corpus.iter().map(|s| Which::Seawall.run(s)).collect();
        let dir = std::env::temp_dir().join(format!("seawall-nab-{}", std::process::id()));
        corpus::write_results(&dir, "seawall", &corpus, &scores).expect("written");
        let read = corpus::read_results(&dir, "seawall", &corpus).expect("read back");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(read, scores);
        assert!(scores.iter().flatten().all(|s| (0.0..=1.0).contains(s)));
    }
}
