//! Writing an emulated dataset: one AEDAT 2.0 DVS128 file per labelled image, in the
//! CIFAR10-DVS layout (`<out>/<class>/<prefix>_<class>_<n>.aedat`), plus a `split.txt` list
//! and a `synth.json` provenance record. Recordings are simulated in parallel on the current
//! rayon pool; each one's randomness comes from its own stream, so the bytes written do not
//! depend on the number of threads.
//!
//! Events are stored in SpikingJelly's orientation ([`JaerOrientation::Spikingjelly`]), the
//! decoder's default, so reading a file back gives exactly the emulated coordinates, and
//! tools that read CIFAR10-DVS the SpikingJelly way see the image upright.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use super::cifar10dvs::sample_file_name;
use super::images::GrayImage;
use super::split::{SPLIT_FILE, format_list};
use super::synth::{
    ParamError, SENSOR_HEIGHT, SENSOR_WIDTH, Sensor, SynthParams, recording_rng, simulate,
};
use super::{Split, info::Distribution};
use crate::format::aedat2::encode_dvs128;
use crate::format::{EncodeError, JaerOrientation};

/// The provenance file written beside the classes.
pub const PROVENANCE_FILE: &str = "synth.json";

/// One input image and its class index.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledImage {
    /// The image.
    pub image: GrayImage,
    /// Index into [`GenerateConfig::classes`].
    pub label: usize,
}

/// What to generate.
#[derive(Debug, Clone, Serialize)]
pub struct GenerateConfig {
    /// Output folder; must not exist or be empty.
    pub out: PathBuf,
    /// Class names (folder names), by label; unique and sorted, because datasets are read
    /// back with labels in sorted folder order.
    pub classes: Vec<String>,
    /// File-name prefix: `<prefix>_<class>_<n>.aedat`.
    pub prefix: String,
    /// Per class, recordings numbered below this are test data (written to `split.txt`).
    pub test_per_class: u64,
    /// Master seed.
    pub seed: u64,
    /// Emulator parameters.
    pub params: SynthParams,
    /// Where the images came from, for the provenance record.
    pub source: String,
}

/// The `synth.json` record: what made the dataset, with which parameters, and what came out.
#[derive(Serialize)]
struct Provenance<'a> {
    generator: &'static str,
    config: &'a GenerateConfig,
    summary: &'a GenerateSummary,
}

/// What was generated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerateSummary {
    /// Recordings written.
    pub recordings: usize,
    /// Recordings per class, by label.
    pub per_class: Vec<usize>,
    /// Test recordings (by `test_per_class`).
    pub test: usize,
    /// Events in all recordings.
    pub total_events: u64,
    /// Events per recording.
    pub events_per_recording: Option<Distribution>,
    /// Bytes written in recording files.
    pub bytes: u64,
}

/// Why a dataset could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// A parameter is out of range.
    #[error(transparent)]
    Param(#[from] ParamError),
    /// The output folder already holds files.
    #[error("{0}: output folder is not empty; choose a new folder or empty it")]
    NotEmpty(PathBuf),
    /// A class name cannot be a folder name, or a label has no class.
    #[error("bad class: {0}")]
    BadClass(String),
    /// Writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The AEDAT 2.0 encoder refused an event (a bug: the emulator stays on the sensor).
    #[error("{path}: {source}")]
    Encode {
        /// The recording.
        path: PathBuf,
        /// Why.
        source: EncodeError,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> GenerateError + '_ {
    move |source| GenerateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The per-class number of each input: its position among the inputs of its class.
fn numbering(inputs: &[LabelledImage], classes: usize) -> Vec<u64> {
    let mut next = vec![0u64; classes];
    inputs
        .iter()
        .map(|input| {
            next.get_mut(input.label).map_or(0, |n| {
                *n += 1;
                *n - 1
            })
        })
        .collect()
}

/// Simulates and writes every input; `progress` is called once per recording written.
pub fn generate(
    inputs: &[LabelledImage],
    config: &GenerateConfig,
    progress: &(dyn Fn() + Sync),
) -> Result<GenerateSummary, GenerateError> {
    config.params.validate()?;
    // Datasets label sorted class folders; other orders would relabel on reading.
    if config.classes.windows(2).any(|w| w[0] >= w[1]) {
        return Err(GenerateError::BadClass(format!(
            "class names must be unique and in sorted order, as readers label sorted folders: \
             {:?}",
            config.classes
        )));
    }
    for class in &config.classes {
        if class.is_empty() || class.starts_with('.') || class.contains(['/', '\\']) {
            return Err(GenerateError::BadClass(format!(
                "{class:?} cannot be a folder name"
            )));
        }
    }
    if let Some(bad) = inputs.iter().find(|i| i.label >= config.classes.len()) {
        return Err(GenerateError::BadClass(format!(
            "label {} but only {} classes",
            bad.label,
            config.classes.len()
        )));
    }
    let out = &config.out;
    if out.exists() {
        let mut entries = std::fs::read_dir(out).map_err(io_err(out))?;
        if entries.next().is_some() {
            return Err(GenerateError::NotEmpty(out.clone()));
        }
    }
    for class in &config.classes {
        let dir = out.join(class);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    }
    let numbers = numbering(inputs, config.classes.len());
    let sensor = Sensor::new(
        SENSOR_WIDTH,
        SENSOR_HEIGHT,
        &config.params.pixel,
        config.seed,
    );
    let relative = |i: usize| {
        let class = &config.classes[inputs[i].label];
        format!(
            "{class}/{}",
            sample_file_name(&config.prefix, class, numbers[i])
        )
    };

    let written: Vec<(u64, u64)> = inputs
        .par_iter()
        .enumerate()
        .map(|(i, input)| {
            let mut rng = recording_rng(config.seed, i as u64);
            let recording = simulate(&input.image, &config.params, &sensor, &mut rng);
            let path = out.join(relative(i));
            let bytes = encode_dvs128(&recording.events, JaerOrientation::Spikingjelly).map_err(
                |source| GenerateError::Encode {
                    path: path.clone(),
                    source,
                },
            )?;
            std::fs::write(&path, &bytes).map_err(io_err(&path))?;
            progress();
            Ok((recording.events.len() as u64, bytes.len() as u64))
        })
        .collect::<Result<_, GenerateError>>()?;

    let split_of = |i: usize| {
        if numbers[i] < config.test_per_class {
            Split::Test
        } else {
            Split::Train
        }
    };
    // List by class, then number, so the file reads like the folders.
    let mut order: Vec<usize> = (0..inputs.len()).collect();
    order.sort_by_key(|&i| (inputs[i].label, numbers[i]));
    let names: Vec<(String, Split)> = order.iter().map(|&i| (relative(i), split_of(i))).collect();
    let list = format_list(names.iter().map(|(n, split)| (n.as_str(), *split)));
    let list_path = out.join(SPLIT_FILE);
    std::fs::write(&list_path, list).map_err(io_err(&list_path))?;

    let mut per_class = vec![0usize; config.classes.len()];
    for input in inputs {
        per_class[input.label] += 1;
    }
    let counts: Vec<f64> = written.iter().map(|&(n, _)| n as f64).collect();
    let summary = GenerateSummary {
        recordings: inputs.len(),
        per_class,
        test: (0..inputs.len())
            .filter(|&i| split_of(i) == Split::Test)
            .count(),
        total_events: written.iter().map(|&(n, _)| n).sum(),
        events_per_recording: Distribution::of(&counts),
        bytes: written.iter().map(|&(_, b)| b).sum(),
    };
    let provenance = Provenance {
        generator: concat!("inflor ", env!("CARGO_PKG_VERSION"), " synth"),
        config,
        summary: &summary,
    };
    let provenance_path = out.join(PROVENANCE_FILE);
    let text = serde_json::to_string_pretty(&provenance).unwrap_or_default();
    std::fs::write(&provenance_path, text + "\n").map_err(io_err(&provenance_path))?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbering_is_per_class_in_input_order() {
        let img = GrayImage::new(1, 1, vec![0.0]).unwrap();
        let inputs: Vec<LabelledImage> = [1, 0, 1, 1, 0]
            .iter()
            .map(|&label| LabelledImage {
                image: img.clone(),
                label,
            })
            .collect();
        assert_eq!(numbering(&inputs, 2), vec![0, 0, 1, 2, 1]);
    }
}
