//! NAB's scoring rules, as its published scorer applies them (numenta/NAB,
//! `nab/sweeper.py`, `nab/optimizer.py`, `nab/runner.py`):
//!
//! - The first 15 % of each series (at most 750 rows) is probation: its rows
//!   are neither rewarded nor penalised.
//! - A detection is a row whose anomaly score is at least the threshold.
//! - Inside a labelled window, a detection is worth the scaled sigmoid of its
//!   relative position (`-1` at the window's left edge, `0` just past its
//!   right), divided by the sigmoid at the left edge and times the profile's
//!   true-positive weight; a window counts only its best detection, and a
//!   window with none costs the false-negative weight.
//! - Outside every window, each detection costs the profile's false-positive
//!   weight times the sigmoid of its distance past the last window (in that
//!   window's widths), or the whole weight before the first window.
//! - One threshold for the whole corpus: the one whose total is highest,
//!   every distinct anomaly score tried (ties: the highest threshold).
//! - The total is normalised so that the null detector (never detects) scores
//!   0 and a perfect one (every window detected at its left edge) 100.

use super::corpus::Series;

/// A scoring profile: how much a detection in a window is worth and what a
/// miss and a false alarm cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// NAB's name for it.
    pub name: &'static str,
    /// A window's best detection, at the window's left edge.
    pub tp: f64,
    /// A false alarm, far from any window.
    pub fp: f64,
    /// A window without a detection.
    pub fn_: f64,
}

impl Profile {
    /// NAB's three profiles (`config/profiles.json`).
    pub const ALL: [Profile; 3] = [
        Profile {
            name: "standard",
            tp: 1.0,
            fp: 0.11,
            fn_: 1.0,
        },
        Profile {
            name: "reward_low_FP_rate",
            tp: 1.0,
            fp: 0.22,
            fn_: 1.0,
        },
        Profile {
            name: "reward_low_FN_rate",
            tp: 1.0,
            fp: 0.11,
            fn_: 2.0,
        },
    ];
}

/// The share of a series that is probation.
pub const PROBATION_SHARE: f64 = 0.15;

/// Probation's rows: 15 % of the series, at most 15 % of 5,000.
pub fn probation(rows: usize) -> usize {
    let share = (PROBATION_SHARE * rows as f64).floor();
    // At most 750, not negative.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let rows = share.min(PROBATION_SHARE * 5000.0) as usize;
    rows
}

/// NAB's scaled sigmoid of a relative position: about 0.987 at a window's
/// left edge (`-1`), 0 at its right edge (`0`), -1 well past it (`> 3`).
pub fn scaled_sigmoid(position: f64) -> f64 {
    if position > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * position).exp()) - 1.0
    }
}

/// One scorable row: its anomaly score, what a detection there is worth
/// under a profile, and the window it is in (an index into the corpus's
/// windows), if any.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    /// The detector's anomaly score of the row.
    pub score: f64,
    /// What a detection there adds to the total (negative outside windows).
    pub worth: f64,
    /// The window the row is in, if any.
    pub window: Option<usize>,
}

/// What a threshold scores: the total, and the rows counted as each kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// The threshold: rows scoring at least it are detections.
    pub threshold: f64,
    /// The total: each window's best detection (or its miss) and every
    /// false alarm.
    pub score: f64,
    /// Detections in windows (rows).
    pub tp: usize,
    /// Rows outside windows not detected.
    pub tn: usize,
    /// Detections outside windows.
    pub fp: usize,
    /// Rows in windows not detected.
    pub fn_: usize,
}

/// The scorable rows of one series under `profile`, with its windows
/// numbered from `first_window`; returns the rows and how many windows the
/// series had (the numbers used).
pub fn points(
    series: &Series,
    scores: &[f64],
    profile: &Profile,
    first_window: usize,
) -> (Vec<Point>, usize) {
    assert_eq!(series.values.len(), scores.len(), "one score per row");
    let best = scaled_sigmoid(-1.0);
    let probation = probation(series.values.len());
    let mut points = Vec::with_capacity(scores.len().saturating_sub(probation));
    let mut windows = series.windows.iter().enumerate().peekable();
    // The window the row is in: (number, left, right).
    let mut inside: Option<(usize, usize, usize)> = None;
    // The last window passed: (right, width).
    let mut passed: Option<(usize, usize)> = None;
    for (row, &score) in scores.iter().enumerate() {
        if inside.is_none()
            && let Some(&(number, &(left, right))) = windows.peek()
            && left == row
        {
            inside = Some((number, left, right));
            windows.next();
        }
        let worth = match inside {
            Some((_, left, right)) => {
                let width = (right - left + 1) as f64;
                let position = -((right as f64 - row as f64 + 1.0) / width);
                scaled_sigmoid(position) * profile.tp / best
            }
            None => {
                let unweighted = match passed {
                    None => -1.0,
                    Some((right, width)) => {
                        scaled_sigmoid(row.abs_diff(right) as f64 / (width as f64 - 1.0))
                    }
                };
                unweighted * profile.fp
            }
        };
        if row >= probation {
            points.push(Point {
                score,
                worth,
                window: inside.map(|(number, _, _)| first_window + number),
            });
        }
        if let Some((_, left, right)) = inside
            && row == right
        {
            passed = Some((right, right - left + 1));
            inside = None;
        }
    }
    (points, series.windows.len())
}

/// Every threshold's outcome over `points` (of any number of series, their
/// windows numbered apart, `windows` in all), from above every score (no
/// detection) down to the lowest score (every row a detection). A
/// threshold's row counts the points scoring at least it.
pub fn sweep(points: &[Point], windows: usize, profile: &Profile) -> Vec<Outcome> {
    let mut sorted: Vec<&Point> = points.iter().collect();
    // Stable, highest first: NAB's order.
    sorted.sort_by(|a, b| b.score.total_cmp(&a.score));
    // A window counts only if one of its rows is scorable (not probation).
    let mut best: Vec<Option<f64>> = vec![None; windows];
    for point in points {
        if let Some(window) = point.window {
            best[window] = Some(-profile.fn_);
        }
    }
    let mut false_alarms = 0.0;
    let mut tn = points.iter().filter(|p| p.window.is_none()).count();
    let mut fn_ = points.len() - tn;
    let (mut tp, mut fp) = (0, 0);
    let total = |best: &[Option<f64>], false_alarms: f64| {
        // Summed in NAB's order: the false alarms first, then each window.
        best.iter()
            .flatten()
            .fold(false_alarms, |sum, worth| sum + worth)
    };
    let mut outcomes = Vec::new();
    let mut threshold = 1.1;
    for point in sorted {
        if point.score != threshold {
            outcomes.push(Outcome {
                threshold,
                score: total(&best, false_alarms),
                tp,
                tn,
                fp,
                fn_,
            });
            threshold = point.score;
        }
        match point.window {
            Some(window) => {
                tp += 1;
                fn_ -= 1;
                let slot = best[window].get_or_insert(-profile.fn_);
                *slot = slot.max(point.worth);
            }
            None => {
                fp += 1;
                tn -= 1;
                false_alarms += point.worth;
            }
        }
    }
    outcomes.push(Outcome {
        threshold,
        score: total(&best, false_alarms),
        tp,
        tn,
        fp,
        fn_,
    });
    outcomes
}

/// The outcome with the highest total (the first such: the highest
/// threshold among ties).
pub fn best(outcomes: &[Outcome]) -> Outcome {
    let mut best = outcomes[0];
    for outcome in &outcomes[1..] {
        if outcome.score > best.score {
            best = *outcome;
        }
    }
    best
}

/// The outcome of detections at `threshold` (every point scoring at least
/// it) among `outcomes` of one series.
pub fn at(outcomes: &[Outcome], threshold: f64) -> Outcome {
    // Rows run from the highest threshold down; the last one at or above
    // `threshold` counts exactly the points scoring at least it.
    let mut found = outcomes[0];
    for outcome in outcomes {
        if outcome.threshold < threshold {
            break;
        }
        found = *outcome;
    }
    found
}

/// NAB's normalisation: 0 for the null detector's total, 100 for a perfect
/// one (every window of the corpus worth the true-positive weight).
pub fn normalise(total: f64, null: f64, windows: usize, profile: &Profile) -> f64 {
    let perfect = windows as f64 * profile.tp;
    100.0 * (total - null) / (perfect - null)
}

/// One series' outcome at the corpus's threshold.
#[derive(Debug, Clone)]
pub struct SeriesScore {
    /// The series' path in the corpus (`realKnownCause/nyc_taxi.csv`).
    pub path: String,
    /// Its outcome at the corpus's threshold.
    pub outcome: Outcome,
}

/// A detector's scores of the whole corpus under one profile.
#[derive(Debug, Clone)]
pub struct CorpusScore {
    /// The profile scored under.
    pub profile: Profile,
    /// The threshold chosen for the corpus.
    pub threshold: f64,
    /// The corpus's total at it (the sum of the series' totals).
    pub total: f64,
    /// Each series at that threshold.
    pub series: Vec<SeriesScore>,
}

/// Scores a detector's anomaly scores (`scores[i]` for `corpus[i]`) under
/// `profile`: the corpus's best threshold, then each series at it.
pub fn score_corpus(corpus: &[Series], scores: &[Vec<f64>], profile: &Profile) -> CorpusScore {
    let mut all = Vec::new();
    let mut first = 0;
    let mut each = Vec::with_capacity(corpus.len());
    for (series, scores) in corpus.iter().zip(scores) {
        // Numbered from 0 for the series' own sweep, apart for the corpus's.
        let (points, windows) = points(series, scores, profile, 0);
        all.extend(points.iter().map(|point| Point {
            window: point.window.map(|window| first + window),
            ..*point
        }));
        first += windows;
        each.push((series.path.clone(), points, windows));
    }
    let chosen = best(&sweep(&all, first, profile));
    let mut total = 0.0;
    let series = each
        .into_iter()
        .map(|(path, points, windows)| {
            let outcome = at(&sweep(&points, windows, profile), chosen.threshold);
            total += outcome.score;
            SeriesScore { path, outcome }
        })
        .collect();
    CorpusScore {
        profile: *profile,
        threshold: chosen.threshold,
        total,
        series,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(rows: usize, windows: Vec<(usize, usize)>) -> Series {
        Series {
            path: "test/series.csv".to_owned(),
            timestamps: (0..rows).map(|row| format!("t{row}")).collect(),
            times: (0..rows as i64).map(|row| row * 300).collect(),
            values: vec![0.0; rows],
            windows,
        }
    }

    #[test]
    fn the_sigmoid_has_nabs_landmarks() {
        assert!((scaled_sigmoid(-1.0) - 0.986_614_298_151_430_3).abs() < 1e-12);
        assert!((scaled_sigmoid(-0.5) - 0.848_283_639_957_512_9).abs() < 1e-12);
        assert_eq!(scaled_sigmoid(0.0), 0.0);
        assert!((scaled_sigmoid(1.0) + 0.986_614_298_151_430_3).abs() < 1e-12);
        assert_eq!(scaled_sigmoid(3.5), -1.0);
    }

    #[test]
    fn probation_is_fifteen_percent_up_to_750_rows() {
        assert_eq!(probation(1000), 150);
        assert_eq!(probation(4032), 604);
        assert_eq!(probation(22_695), 750);
    }

    #[test]
    fn an_early_detection_is_worth_the_whole_weight_and_a_late_one_less() {
        // 1,000 rows (150 of probation), one window at rows 500..=599.
        let series = series(1000, vec![(500, 599)]);
        let profile = Profile::ALL[0];
        let mut scores = vec![0.0; 1000];
        scores[500] = 1.0;
        let early = score_corpus(std::slice::from_ref(&series), &[scores.clone()], &profile);
        assert_eq!(early.threshold, 1.0);
        assert!((early.total - 1.0).abs() < 1e-12, "{}", early.total);
        scores[500] = 0.0;
        scores[580] = 1.0;
        let late = score_corpus(std::slice::from_ref(&series), &[scores], &profile);
        let expected = scaled_sigmoid(-20.0 / 100.0) / scaled_sigmoid(-1.0);
        assert!((late.total - expected).abs() < 1e-12, "{}", late.total);
        assert_eq!(
            (late.series[0].outcome.tp, late.series[0].outcome.fn_),
            (1, 99)
        );
    }

    #[test]
    fn a_window_counts_its_best_detection_once_and_false_alarms_each() {
        let series = series(1000, vec![(500, 599)]);
        let profile = Profile::ALL[0];
        let mut scores = vec![0.0; 1000];
        for row in [500, 510, 520] {
            scores[row] = 1.0;
        }
        // Before the first window: the whole weight each; after it, less
        // the nearer it is.
        scores[300] = 1.0;
        scores[650] = 1.0;
        let scored = score_corpus(std::slice::from_ref(&series), &[scores], &profile);
        let past = scaled_sigmoid(51.0 / 99.0) * profile.fp;
        let expected = 1.0 - profile.fp + past;
        assert!((scored.total - expected).abs() < 1e-12, "{}", scored.total);
        let outcome = scored.series[0].outcome;
        assert_eq!((outcome.tp, outcome.fp), (3, 2));
    }

    #[test]
    fn the_null_detector_misses_every_window_outside_probation() {
        // The second window lies in probation: no row of it is scorable.
        let series = series(1000, vec![(20, 40), (500, 599)]);
        for profile in Profile::ALL {
            let scored = score_corpus(std::slice::from_ref(&series), &[vec![0.0; 1000]], &profile);
            assert_eq!(scored.threshold, 1.1, "{}", profile.name);
            assert_eq!(scored.total, -profile.fn_);
            assert_eq!(normalise(scored.total, scored.total, 2, &profile), 0.0);
        }
    }

    #[test]
    fn the_threshold_is_the_corpus_best_and_each_series_is_scored_at_it() {
        let a = series(1000, vec![(500, 599)]);
        let b = series(1000, vec![(700, 799)]);
        let profile = Profile::ALL[0];
        let mut for_a = vec![0.1; 1000];
        for_a[500] = 0.9;
        let mut for_b = vec![0.1; 1000];
        for_b[700] = 0.5;
        for_b[200] = 0.7;
        let scored = score_corpus(&[a, b], &[for_a, for_b], &profile);
        // At 0.5 both windows are found at their left edges, for one false
        // alarm before b's window: 2 - 0.11.
        assert_eq!(scored.threshold, 0.5);
        assert!((scored.total - (2.0 - profile.fp)).abs() < 1e-12);
        assert_eq!(scored.series[1].outcome.fp, 1);
        // A series without a row at the threshold counts those above it.
        let at_a = scored.series[0].outcome;
        assert_eq!((at_a.tp, at_a.fp), (1, 0));
    }
}
