//! Finding the recordings of a labelled dataset on disk: CIFAR10-DVS (class folders or one flat
//! folder of `cifar10_<class>_<n>.aedat`) and generic class folders.
//!
//! Every regular, non-hidden file inside a class folder is a recording; whether it decodes is
//! for the reader (and `dataset info`) to find out, so a stray file is reported, never
//! silently skipped. Files directly in a root that has class folders (a `split.txt`, a
//! README) are not recordings.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::cifar10dvs::{self, CLASSES};
use super::{DatasetError, Sample, Split};

/// How the recordings are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// One folder per CIFAR10-DVS class (only canonical names); labels are canonical even
    /// when some classes are missing.
    Cifar10DvsFolders,
    /// One folder of `<prefix>_<class>_<n>.<ext>` files with canonical CIFAR10-DVS classes.
    Cifar10DvsFlat,
    /// One folder per class, any names; labels follow the sorted folder names.
    ClassFolders,
}

impl Layout {
    /// A short description for reports.
    pub fn describe(self) -> &'static str {
        match self {
            Layout::Cifar10DvsFolders => "CIFAR10-DVS, one folder per class",
            Layout::Cifar10DvsFlat => "CIFAR10-DVS, flat folder of cifar10_<class>_<n> files",
            Layout::ClassFolders => "labelled folders, one per class (sorted names)",
        }
    }
}

/// What [`list`] found.
pub(crate) struct Listing {
    pub layout: Layout,
    pub classes: Vec<String>,
    pub samples: Vec<Sample>,
}

fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

/// Entries of `dir` as (name, path, is_dir), skipping hidden ones and names that are not UTF-8
/// (class names and split lists are text).
fn entries(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>, DatasetError> {
    let io = |source| DatasetError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            tracing::warn!(path = %path.display(), "skipping a name that is not UTF-8");
            continue;
        };
        if is_hidden(&name) {
            continue;
        }
        // Follow symlinks: SpikingJelly's split folders are symlink farms.
        let meta = std::fs::metadata(&path).map_err(|source| DatasetError::Io {
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() || meta.is_file() {
            out.push((name, path, meta.is_dir()));
        }
    }
    // Byte order of UTF-8 names is code-point order, which is what Python's sorted() uses.
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Lists the dataset at `root`.
pub(crate) fn list(root: &Path) -> Result<Listing, DatasetError> {
    let top = entries(root)?;
    let dirs: Vec<&(String, PathBuf, bool)> = top.iter().filter(|e| e.2).collect();
    if dirs.is_empty() {
        return list_flat(root, &top);
    }
    let cifar = dirs
        .iter()
        .all(|(name, _, _)| cifar10dvs::class_label(name).is_some());
    let (layout, classes): (Layout, Vec<String>) = if cifar {
        (
            Layout::Cifar10DvsFolders,
            CLASSES.iter().map(|c| c.to_string()).collect(),
        )
    } else {
        (
            Layout::ClassFolders,
            dirs.iter().map(|(name, _, _)| name.clone()).collect(),
        )
    };
    let mut samples = Vec::new();
    for (name, dir, _) in &dirs {
        let label =
            classes
                .iter()
                .position(|c| c == name)
                .ok_or_else(|| DatasetError::NoClasses {
                    root: root.to_path_buf(),
                })?;
        for (file, path, is_dir) in entries(dir)? {
            if is_dir {
                tracing::warn!(path = %path.display(), "skipping a folder inside a class folder");
                continue;
            }
            samples.push(Sample {
                index: cifar10dvs::sample_index(&file),
                relative: format!("{name}/{file}"),
                path,
                label,
                split: Split::Train,
            });
        }
    }
    Ok(Listing {
        layout,
        classes,
        samples,
    })
}

fn list_flat(root: &Path, top: &[(String, PathBuf, bool)]) -> Result<Listing, DatasetError> {
    let mut samples = Vec::new();
    for (name, path, _) in top {
        let Some(parsed) = cifar10dvs::parse_sample_name(name, &CLASSES) else {
            continue;
        };
        let Some(label) = cifar10dvs::class_label(parsed.class) else {
            continue;
        };
        samples.push(Sample {
            path: path.clone(),
            relative: name.clone(),
            label,
            index: Some(parsed.index),
            split: Split::Train,
        });
    }
    if samples.is_empty() {
        return Err(DatasetError::NoClasses {
            root: root.to_path_buf(),
        });
    }
    // Group by label, keeping string order inside each class (the sort is stable).
    samples.sort_by_key(|s| s.label);
    Ok(Listing {
        layout: Layout::Cifar10DvsFlat,
        classes: CLASSES.iter().map(|c| c.to_string()).collect(),
        samples,
    })
}
