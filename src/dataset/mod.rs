//! Labelled event datasets: the CIFAR10-DVS layout and splits, generic labelled folders, the
//! dataset report behind `inflor dataset info`, and the DVS emulator behind `inflor synth`.
//! Imports `event`, `format` and `binner`.
//!
//! - [`Dataset::open`] lists a dataset's recordings ([`Sample`]: path, label, split) for
//!   training, evaluation and replay. Layouts are in [`folder`], split conventions in
//!   [`split`], CIFAR10-DVS naming in [`cifar10dvs`].
//! - [`info`] decodes every recording (in parallel) and summarises the dataset.
//! - [`synth`] emulates a DVS128 watching still images move on a monitor; [`generate`] turns a
//!   set of labelled images into a dataset in the CIFAR10-DVS layout (AEDAT 2.0 files),
//!   [`images`] loads the images, and [`digits`] defines DVS-Digits.

pub mod cifar10dvs;
pub mod digits;
pub mod folder;
pub mod generate;
pub mod images;
pub mod info;
pub mod split;
pub mod synth;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use folder::Layout;
pub use split::{SplitRule, SplitSpec};

/// Which set a recording belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// Training data.
    Train,
    /// Test data.
    Test,
}

impl Split {
    /// `"train"` or `"test"`, as in list files.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// One labelled recording.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Where the file is.
    pub path: PathBuf,
    /// Its path relative to the dataset root, `/`-separated (as in list files).
    pub relative: String,
    /// Class index into [`Dataset::classes`].
    pub label: usize,
    /// The `_<n>` number at the end of the file stem, if any.
    pub index: Option<u64>,
    /// Training or test set.
    pub split: Split,
}

/// A labelled dataset: its classes and recordings, each assigned to a split.
#[derive(Debug, Clone, Serialize)]
pub struct Dataset {
    /// The folder it was opened from.
    pub root: PathBuf,
    /// How the files are laid out.
    pub layout: Layout,
    /// Class names; a sample's label indexes this.
    pub classes: Vec<String>,
    /// The recordings, grouped by label and, within a label, in file-name string order.
    pub samples: Vec<Sample>,
    /// The split rule applied.
    pub split: SplitRule,
    /// Why that rule: "given", or what `auto` found.
    pub split_reason: String,
}

impl Dataset {
    /// Lists the dataset at `root` and assigns splits. Fails if the folder cannot be read,
    /// has no classes, or the split rule cannot be applied (every problem of a list file is
    /// reported at once).
    pub fn open(root: &Path, split: &SplitSpec) -> Result<Self, DatasetError> {
        let listing = folder::list(root)?;
        let mut samples = listing.samples;
        let (rule, split_reason) = split::resolve(split, root, &samples);
        split::assign(&rule, listing.classes.len(), &mut samples)?;
        Ok(Self {
            root: root.to_path_buf(),
            layout: listing.layout,
            classes: listing.classes,
            samples,
            split: rule,
            split_reason,
        })
    }

    /// The recordings of one split, in dataset order.
    pub fn split_samples(&self, split: Split) -> impl Iterator<Item = &Sample> {
        self.samples.iter().filter(move |s| s.split == split)
    }

    /// How many recordings of `label` are in `split`.
    pub fn count(&self, label: usize, split: Split) -> usize {
        self.samples
            .iter()
            .filter(|s| s.label == label && s.split == split)
            .count()
    }
}

/// Why a dataset could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// A folder or list file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Neither class folders nor CIFAR10-DVS-named files were found.
    #[error(
        "{root}: no dataset found: expected one folder per class, or files named \
         cifar10_<class>_<n>.aedat"
    )]
    NoClasses {
        /// The folder.
        root: PathBuf,
    },
    /// A rule needing `_<n>` numbers met file names without one.
    #[error(
        "split {rule} needs file names ending in _<n>; {} do not, e.g. {}",
        files.len(),
        files.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
    )]
    Unnumbered {
        /// The rule.
        rule: String,
        /// The offending files, relative to the root.
        files: Vec<String>,
    },
    /// A list file does not match the dataset.
    #[error(
        "split list {path}: {} problem(s):\n  {}{}",
        problems.len(),
        problems.iter().take(20).cloned().collect::<Vec<_>>().join("\n  "),
        if problems.len() > 20 { format!("\n  ... and {} more", problems.len() - 20) } else { String::new() }
    )]
    SplitList {
        /// The list file.
        path: PathBuf,
        /// Every problem found, with line numbers.
        problems: Vec<String>,
    },
}
