//! Two of NAB's published detectors, written again here from their
//! descriptions so that the scorer can be checked against NAB's published
//! figures for them: the null detector (never detects: the 0 of NAB's
//! scale) and the windowed Gaussian (the tail probability of each value
//! under the mean and standard deviation of the last 6,400 values, the
//! window moved on 100 values at a time).

/// The null detector's score of every row.
pub fn null(rows: usize) -> Vec<f64> {
    vec![0.0; rows]
}

/// The windowed Gaussian's window and step.
const WINDOW: usize = 6400;
const STEP: usize = 100;

/// The windowed Gaussian's score of each value: `1 - Q(|z|)`, 0 for the
/// first; rounded to 12 significant digits, as NAB's published results of
/// it hold them (Python 2 wrote them with `str()`), which makes every score
/// above 0.9999999999995 exactly 1: the threshold NAB's scores of it use.
pub fn windowed_gaussian(values: &[f64]) -> Vec<f64> {
    let mut window: Vec<f64> = Vec::with_capacity(WINDOW);
    let mut pending: Vec<f64> = Vec::with_capacity(STEP);
    let (mut mean, mut std) = (0.0, 1.0);
    let mut scores = Vec::with_capacity(values.len());
    for &value in values {
        scores.push(if window.is_empty() {
            0.0
        } else {
            twelve_digits(1.0 - tail(value, mean, std))
        });
        if window.len() < WINDOW {
            window.push(value);
            (mean, std) = moments(&window);
        } else {
            pending.push(value);
            if pending.len() == STEP {
                window.drain(..STEP);
                window.append(&mut pending);
                (mean, std) = moments(&window);
            }
        }
    }
    scores
}

/// `value` rounded to 12 significant digits.
fn twelve_digits(value: f64) -> f64 {
    if value == 0.0 || !value.is_finite() {
        return value;
    }
    format!("{value:.11e}").parse().unwrap_or(value)
}

/// The probability of a value at least as far from the mean on its side.
fn tail(value: f64, mean: f64, std: f64) -> f64 {
    let z = (value - mean).abs() / std;
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

/// The mean and (population) standard deviation, the latter floored at
/// 1e-6 as NAB's detector does.
fn moments(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = pairwise_sum(values) / n;
    let squares: Vec<f64> = values.iter().map(|v| (v - mean) * (v - mean)).collect();
    let std = (pairwise_sum(&squares) / n).sqrt();
    (mean, if std == 0.0 { 0.000_001 } else { std })
}

/// A pairwise sum (as numpy sums), so that long windows lose as little
/// precision as the published detector's did.
fn pairwise_sum(values: &[f64]) -> f64 {
    if values.len() <= 128 {
        values.iter().sum()
    } else {
        let half = values.len() / 2;
        pairwise_sum(&values[..half]) + pairwise_sum(&values[half..])
    }
}
