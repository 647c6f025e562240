//! The dataset report behind `inflor dataset info`: decodes every recording in parallel and
//! summarises classes, splits, formats, resolutions, event counts and durations. A recording
//! that fails to decode is listed with its error; it never stops the report.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rayon::prelude::*;
use serde::Serialize;

use super::{Dataset, Split};
use crate::format::{DecodeOptions, read_file};

/// Summary statistics of a sample of values. Percentiles interpolate linearly between order
/// statistics (numpy's default `linear` method), so p50 is the usual median.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Distribution {
    /// Number of values.
    pub count: usize,
    /// Smallest value.
    pub min: f64,
    /// 5th percentile.
    pub p5: f64,
    /// Median.
    pub median: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// 95th percentile.
    pub p95: f64,
    /// Largest value.
    pub max: f64,
}

impl Distribution {
    /// Summarises `values` (any order); `None` when empty or when any value is NaN.
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() || values.iter().any(|v| v.is_nan()) {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let pct = |p: f64| {
            let pos = p * (n - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = pos.ceil() as usize;
            let (a, b) = (sorted[lo.min(n - 1)], sorted[hi.min(n - 1)]);
            a + (b - a) * (pos - lo as f64)
        };
        Some(Self {
            count: n,
            min: sorted[0],
            p5: pct(0.05),
            median: pct(0.5),
            mean: sorted.iter().sum::<f64>() / n as f64,
            p95: pct(0.95),
            max: sorted[n - 1],
        })
    }
}

/// Counts for one class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassCount {
    /// Class index.
    pub label: usize,
    /// Class name.
    pub name: String,
    /// Training recordings.
    pub train: usize,
    /// Test recordings.
    pub test: usize,
}

/// A recording that could not be decoded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    /// The file.
    pub path: PathBuf,
    /// The whole error message.
    pub error: String,
}

/// What `dataset info` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetReport {
    /// The dataset folder.
    pub root: PathBuf,
    /// Layout description.
    pub layout: String,
    /// The split rule applied.
    pub split: String,
    /// Why that rule.
    pub split_reason: String,
    /// Per-class counts, in label order.
    pub classes: Vec<ClassCount>,
    /// Training recordings in all.
    pub train: usize,
    /// Test recordings in all.
    pub test: usize,
    /// Recordings that decoded.
    pub decoded: usize,
    /// Decoded recordings per container format.
    pub formats: BTreeMap<String, usize>,
    /// Decoded recordings per sensor resolution, `"WxH"`.
    pub resolutions: BTreeMap<String, usize>,
    /// Events in all decoded recordings.
    pub total_events: u64,
    /// Events per decoded recording.
    pub events_per_recording: Option<Distribution>,
    /// Duration (last − first timestamp) per decoded recording with at least one event, seconds.
    pub duration_s: Option<Distribution>,
    /// Recordings that failed to decode, in dataset order.
    pub failures: Vec<Failure>,
}

/// What one recording contributed.
enum Outcome {
    Decoded {
        format: &'static str,
        resolution: String,
        events: u64,
        duration_us: Option<i64>,
    },
    Failed(String),
}

/// Decodes every recording of `dataset` on the current rayon pool and builds the report.
/// `progress` is called once per recording, from worker threads.
pub fn report(
    dataset: &Dataset,
    options: &DecodeOptions,
    progress: &(dyn Fn() + Sync),
) -> DatasetReport {
    let outcomes: Vec<Outcome> = dataset
        .samples
        .par_iter()
        .map(|sample| {
            let outcome = match read_file(&sample.path, None, options) {
                Ok(rec) => Outcome::Decoded {
                    format: rec.format.name(),
                    resolution: format!("{}x{}", rec.info.width, rec.info.height),
                    events: rec.events.len() as u64,
                    duration_us: match (rec.events.first(), rec.events.last()) {
                        (Some(first), Some(last)) => Some(last.t - first.t),
                        _ => None,
                    },
                },
                Err(e) => Outcome::Failed(error_chain(&e)),
            };
            progress();
            outcome
        })
        .collect();

    let classes = dataset
        .classes
        .iter()
        .enumerate()
        .map(|(label, name)| ClassCount {
            label,
            name: name.clone(),
            train: dataset.count(label, Split::Train),
            test: dataset.count(label, Split::Test),
        })
        .collect();
    let mut formats = BTreeMap::new();
    let mut resolutions = BTreeMap::new();
    let mut events = Vec::new();
    let mut durations = Vec::new();
    let mut failures = Vec::new();
    let mut total_events = 0u64;
    for (sample, outcome) in dataset.samples.iter().zip(outcomes) {
        match outcome {
            Outcome::Decoded {
                format,
                resolution,
                events: n,
                duration_us,
            } => {
                *formats.entry(format.to_string()).or_insert(0) += 1;
                *resolutions.entry(resolution).or_insert(0) += 1;
                total_events += n;
                events.push(n as f64);
                if let Some(d) = duration_us {
                    durations.push(d as f64 * 1e-6);
                }
            }
            Outcome::Failed(error) => failures.push(Failure {
                path: sample.path.clone(),
                error,
            }),
        }
    }
    DatasetReport {
        root: dataset.root.clone(),
        layout: dataset.layout.describe().to_string(),
        split: dataset.split.to_string(),
        split_reason: dataset.split_reason.clone(),
        classes,
        train: dataset.split_samples(Split::Train).count(),
        test: dataset.split_samples(Split::Test).count(),
        decoded: events.len(),
        formats,
        resolutions,
        total_events,
        events_per_recording: Distribution::of(&events),
        duration_s: Distribution::of(&durations),
        failures,
    }
}

/// The error and its causes on one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // `ReadError` already embeds its source's message; avoid repeating it.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_matches_numpy_linear_percentiles() {
        // numpy.percentile([1, 2, 3, 4, 10], [5, 50, 95]) == [1.2, 3.0, 8.8]
        let d = Distribution::of(&[10.0, 2.0, 1.0, 4.0, 3.0]).unwrap();
        assert_eq!((d.count, d.min, d.max), (5, 1.0, 10.0));
        assert!((d.p5 - 1.2).abs() < 1e-12);
        assert_eq!(d.median, 3.0);
        assert!((d.p95 - 8.8).abs() < 1e-12);
        assert_eq!(d.mean, 4.0);
        let one = Distribution::of(&[7.0]).unwrap();
        assert_eq!((one.p5, one.median, one.p95), (7.0, 7.0, 7.0));
        assert_eq!(Distribution::of(&[]), None);
        assert_eq!(Distribution::of(&[1.0, f64::NAN]), None);
    }
}
