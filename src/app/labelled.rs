//! What `eval` and `replay` share about a labelled dataset: which recordings a split selects
//! (after checking the dataset against the model), how a recording's classification is read
//! from its outputs, and the accuracy scores (top-1, top-k, per class, confusion matrix) with
//! their text form. One piece of code, so the two commands count the same way.

use std::io::Write;
use std::path::{Path, PathBuf};

use inflor::dataset::{Dataset, DatasetError, Sample, Split, SplitSpec};
use inflor::model::Model;
use inflor::session::Output;
use serde::Serialize;

use crate::app::bad_input;

/// Which part of the dataset to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SplitArg {
    /// The test split.
    Test,
    /// The training split.
    Train,
    /// Every recording.
    All,
}

impl SplitArg {
    /// Whether `split` is selected.
    pub fn selects(self, split: Split) -> bool {
        match self {
            SplitArg::Test => split == Split::Test,
            SplitArg::Train => split == Split::Train,
            SplitArg::All => true,
        }
    }

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            SplitArg::Test => "test",
            SplitArg::Train => "train",
            SplitArg::All => "all",
        }
    }
}

/// Writes a command's report to stdout: the whole report as one JSON line with `json`, else
/// its text form.
pub fn write_report<R: Serialize>(
    json: bool,
    report: &R,
    text: impl FnOnce(&mut std::io::StdoutLock<'static>, &R) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, report)?;
        writeln!(out)?;
    } else {
        text(&mut out, report)?;
    }
    out.flush()?;
    Ok(())
}

/// Parses `--split-rule`.
pub fn parse_split_rule(s: &str) -> Result<SplitSpec, String> {
    s.parse()
}

/// Why a dataset split cannot be run with a model.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// The dataset folder is not there or not a dataset.
    #[error("dataset {}", path.display())]
    Dataset {
        /// The folder given.
        path: PathBuf,
        /// Why it cannot be listed.
        #[source]
        source: DatasetError,
    },
    /// The dataset's classes are not the ones the model was trained on.
    #[error("the dataset's classes {dataset:?} are not the model's {model:?}")]
    ClassMismatch {
        /// The dataset's class names, in label order.
        dataset: Vec<String>,
        /// The model's class names.
        model: Vec<String>,
    },
    /// The split holds no recording.
    #[error("{}: no recordings in the {split} split", path.display())]
    EmptySplit {
        /// The dataset folder.
        path: PathBuf,
        /// The split asked for.
        split: &'static str,
    },
}

/// The recordings of `split` in the dataset at `path`, in the dataset's order, after checking
/// that its classes are the model's. Every failure is bad input (exit code 2).
pub fn select(
    path: &Path,
    rule: &SplitSpec,
    split: SplitArg,
    model: &Model,
) -> anyhow::Result<Vec<Sample>> {
    let dataset = Dataset::open(path, rule).map_err(|source| {
        bad_input(SelectError::Dataset {
            path: path.to_path_buf(),
            source,
        })
    })?;
    if dataset.classes != model.metadata.class_names {
        return Err(bad_input(SelectError::ClassMismatch {
            dataset: dataset.classes,
            model: model.metadata.class_names.clone(),
        }));
    }
    let samples: Vec<Sample> = dataset
        .samples
        .into_iter()
        .filter(|s| split.selects(s.split))
        .collect();
    if samples.is_empty() {
        return Err(bad_input(SelectError::EmptySplit {
            path: path.to_path_buf(),
            split: split.name(),
        }));
    }
    Ok(samples)
}

/// Whether `output` classifies its recording in place of `kept`: a recording is classified
/// by its first window (the only one under the per-recording window policies), as the trainer
/// sees a recording and as `eval` reads it. Outputs may be offered in any order.
pub fn classifies_recording(output: &Output, kept: Option<&Output>) -> bool {
    kept.is_none_or(|k| output.window < k.window)
}

/// How many classes the top-k accuracy counts: 5, or every class when there are fewer.
pub fn top_k(classes: usize) -> usize {
    classes.min(5)
}

/// Counts classifications against their labels.
#[derive(Debug, Clone)]
pub struct Tally {
    names: Vec<String>,
    confusion: Vec<Vec<usize>>,
    top1: usize,
    top_k: usize,
    failed: Vec<String>,
}

impl Tally {
    /// An empty tally over the model's classes.
    pub fn new(names: &[String]) -> Self {
        Self {
            names: names.to_vec(),
            confusion: vec![vec![0; names.len()]; names.len()],
            top1: 0,
            top_k: 0,
            failed: Vec::new(),
        }
    }

    /// A recording of class `label` classified as `output`.
    pub fn add(&mut self, label: usize, output: &Output) {
        let k = top_k(self.names.len());
        if let Some(row) = self.confusion.get_mut(label)
            && let Some(cell) = row.get_mut(output.predicted)
        {
            *cell += 1;
        }
        self.top1 += usize::from(output.predicted == label);
        self.top_k += usize::from(output.top_k.iter().take(k).any(|t| t.class == label));
    }

    /// A recording (by its path relative to the dataset) that could not be classified.
    pub fn fail(&mut self, relative: &str) {
        self.failed.push(relative.to_owned());
    }

    /// The scores.
    pub fn finish(self) -> Accuracy {
        let samples: usize = self.confusion.iter().flatten().sum();
        let per_class = self
            .names
            .iter()
            .zip(&self.confusion)
            .enumerate()
            .map(|(c, (name, row))| {
                let count: usize = row.iter().sum();
                ClassScore {
                    name: name.clone(),
                    count,
                    accuracy: if count > 0 {
                        row[c] as f64 / count as f64
                    } else {
                        0.0
                    },
                }
            })
            .collect();
        Accuracy {
            classes: self.names,
            samples,
            failed: self.failed,
            top1: self.top1 as f64 / samples.max(1) as f64,
            top5: self.top_k as f64 / samples.max(1) as f64,
            per_class,
            confusion: self.confusion,
        }
    }
}

/// Accuracy over a split.
#[derive(Debug, Clone, Serialize)]
pub struct Accuracy {
    /// The model's class names.
    pub classes: Vec<String>,
    /// Recordings classified.
    pub samples: usize,
    /// Recordings that could not be classified, by relative path.
    pub failed: Vec<String>,
    /// Top-1 accuracy.
    pub top1: f64,
    /// Top-5 accuracy (top-k with k = min(5, classes)).
    pub top5: f64,
    /// Per-class accuracy (recall), NaN-free: classes without samples have 0 and count 0.
    pub per_class: Vec<ClassScore>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
}

/// One class's accuracy.
#[derive(Debug, Clone, Serialize)]
pub struct ClassScore {
    /// Name.
    pub name: String,
    /// Samples of that class.
    pub count: usize,
    /// Fraction of them classified correctly.
    pub accuracy: f64,
}

impl Accuracy {
    /// The per-class accuracies and the confusion matrix as text.
    pub fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(out, "per class:")?;
        for c in &self.per_class {
            writeln!(
                out,
                "  {:<16} {:>6.2}%  ({} recordings)",
                c.name,
                100.0 * c.accuracy,
                c.count
            )?;
        }
        let width = self
            .classes
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(1)
            .max(4);
        writeln!(
            out,
            "confusion matrix (rows: true class, columns: predicted):"
        )?;
        write!(out, "  {:>width$}", "")?;
        for name in &self.classes {
            write!(out, " {name:>width$}")?;
        }
        writeln!(out)?;
        for (name, row) in self.classes.iter().zip(&self.confusion) {
            write!(out, "  {name:>width$}")?;
            for v in row {
                write!(out, " {v:>width$}")?;
            }
            writeln!(out)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inflor::session::{Latency, Score, SpikeStats};

    fn output(window: u64, ranked: &[usize]) -> Output {
        Output {
            stream: "s".into(),
            window,
            start_us: 0,
            end_us: 1,
            events: 1,
            predicted: ranked[0],
            class: ranked[0].to_string(),
            top_k: ranked
                .iter()
                .map(|&c| Score {
                    class: c,
                    name: c.to_string(),
                    logit: 0.0,
                })
                .collect(),
            logits: Vec::new(),
            stats: SpikeStats {
                timesteps: 1,
                spikes: 0,
                firing_rate: 0.0,
                synaptic_ops: 0,
                dense_macs: 0,
                performed_ops: 0,
                neuron_updates: 0,
                neuron_updates_total: 0,
                energy_pj: 0.0,
                dense_energy_pj: 0.0,
                layers: Vec::new(),
            },
            latency: Latency {
                compute_us: 0.0,
                end_to_end_us: 0.0,
            },
            gap: false,
            complete: true,
            executor: "event".into(),
            quantization: None,
            label: None,
            frames: None,
        }
    }

    #[test]
    fn tally_counts_top1_top_k_per_class_and_confusion() {
        let names: Vec<String> = (0..6).map(|c| c.to_string()).collect();
        let mut t = Tally::new(&names);
        t.add(0, &output(0, &[0, 1, 2, 3, 4]));
        t.add(1, &output(0, &[0, 1, 2, 3, 4]));
        t.add(1, &output(0, &[5, 4, 3, 2, 0]));
        t.fail("1/x.aedat");
        let a = t.finish();
        assert_eq!(a.samples, 3);
        assert_eq!(a.failed, ["1/x.aedat"]);
        assert!((a.top1 - 1.0 / 3.0).abs() < 1e-12);
        assert!((a.top5 - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(a.confusion[1], [1, 0, 0, 0, 0, 1]);
        assert_eq!(a.per_class[1].count, 2);
        assert_eq!(a.per_class[1].accuracy, 0.0);
        assert_eq!(a.per_class[0].accuracy, 1.0);
        assert_eq!(a.per_class[2].count, 0);
        let mut text = Vec::new();
        a.print(&mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("confusion matrix"), "{text}");
    }

    #[test]
    fn a_recording_is_classified_by_its_first_window() {
        let mut kept: Option<Output> = None;
        for o in [output(3, &[2]), output(1, &[4]), output(2, &[0])] {
            if classifies_recording(&o, kept.as_ref()) {
                kept = Some(o);
            }
        }
        assert_eq!(kept.unwrap().predicted, 4);
    }
}
