//! Training data: labelled recordings binned into a model's input frames, exactly as a
//! [`Session`](crate::session::Session) bins them (through the same [`Windowing`]), and a disk
//! cache of those frames.
//!
//! - A recording becomes the frames of its **first window**: for the per-recording policies
//!   (CIFAR10-DVS's equal-count bins) that is the whole recording in T bins; for the stream
//!   policies it is the first T bins. A stream shorter than one window gives fewer frames,
//!   padded with empty ones.
//! - **Cache.** One file per recording, named by a 128-bit XXH3 key of the cache version, the
//!   input spec, the decode options and the XXH3-128 hash of the file's bytes, so a changed
//!   file, spec or option never reads stale frames, and a renamed file still hits. A writer
//!   writes a private temporary file in the cache folder and renames it into place, so
//!   concurrent writers (two runs) and interrupted ones (a crash) never leave a partial file
//!   under the final name; a reader checks the magic, the sizes and the exact length, and bins
//!   again whatever does not check out.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use twox_hash::XxHash3_128;

use crate::binner::{InputSpec, SparseFrame};
use crate::format::{DecodeError, DecodeOptions, decode_bytes, detect::detect};
use crate::session::{DEFAULT_MAX_RECORDING_EVENTS, WindowError, Windowing};

/// Bumped whenever binning or the cache file layout changes.
const CACHE_VERSION: u32 = 1;
/// Cache file magic.
const MAGIC: &[u8; 8] = b"INFLORFC";

/// Why a recording could not become training frames. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file (or the cache folder) could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No decoder recognised the file.
    #[error("{path}: unrecognised event format")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// The decoder rejected the content.
    #[error("{path}: {source}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// Where and why.
        source: DecodeError,
    },
    /// The stream does not say its sensor size.
    #[error("{path}: the stream does not say its sensor size (pass a resolution)")]
    NoSensorSize {
        /// The file.
        path: PathBuf,
    },
    /// The recording cannot be windowed for this input spec.
    #[error("{path}: {source}")]
    Window {
        /// The file.
        path: PathBuf,
        /// Why.
        source: WindowError,
    },
    /// The recording holds no events, so it has no window.
    #[error("{path}: no events")]
    NoEvents {
        /// The file.
        path: PathBuf,
    },
}

/// Bins the recording `bytes` (read from `path`) into the `T` frames of its first window.
pub fn bin_bytes(
    path: &Path,
    bytes: &[u8],
    input: &InputSpec,
    options: &DecodeOptions,
) -> Result<Vec<SparseFrame>, DataError> {
    let format = detect(Some(path), bytes).ok_or_else(|| DataError::UnknownFormat {
        path: path.to_owned(),
    })?;
    let recording = decode_bytes(format, bytes, options).map_err(|source| DataError::Decode {
        path: path.to_owned(),
        source,
    })?;
    let (width, height) = options
        .resolution
        .unwrap_or((recording.info.width, recording.info.height));
    if width == 0 || height == 0 {
        return Err(DataError::NoSensorSize {
            path: path.to_owned(),
        });
    }
    let window = |source| DataError::Window {
        path: path.to_owned(),
        source,
    };
    let mut windowing = Windowing::new(input, (width, height), None, DEFAULT_MAX_RECORDING_EVENTS)
        .map_err(window)?;
    let mut windows = Vec::new();
    windowing
        .push(&recording.events, &mut windows)
        .map_err(window)?;
    if windows.is_empty() {
        windowing.finish(&mut windows).map_err(window)?;
    }
    let Some(first) = windows.into_iter().next() else {
        return Err(DataError::NoEvents {
            path: path.to_owned(),
        });
    };
    let mut frames = first.frames;
    frames.truncate(input.timesteps);
    frames.resize_with(input.timesteps, || SparseFrame::empty(input.shape()));
    Ok(frames)
}

/// The on-disk frame cache of one input spec and one set of decode options.
#[derive(Debug, Clone)]
pub struct FrameCache {
    dir: PathBuf,
    input: InputSpec,
    options: DecodeOptions,
    /// Hash of everything but the file content.
    prefix: Vec<u8>,
}

/// Distinguishes temporary files of one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl FrameCache {
    /// A cache in `dir` (created if missing) for frames of `input` decoded with `options`.
    pub fn new(dir: &Path, input: InputSpec, options: DecodeOptions) -> Result<Self, DataError> {
        std::fs::create_dir_all(dir).map_err(|source| DataError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let spec = serde_json::to_string(&input).unwrap_or_default();
        let prefix = format!("{CACHE_VERSION}\n{spec}\n{options:?}\n").into_bytes();
        Ok(Self {
            dir: dir.to_owned(),
            input,
            options,
            prefix,
        })
    }

    /// The cache file of a recording with these bytes.
    pub fn entry(&self, bytes: &[u8]) -> PathBuf {
        let content = XxHash3_128::oneshot(bytes);
        let mut keyed = self.prefix.clone();
        keyed.extend_from_slice(&content.to_le_bytes());
        let key = XxHash3_128::oneshot(&keyed);
        self.dir.join(format!("{key:032x}.frames"))
    }

    /// The frames of the recording at `path`: from the cache when an entry checks out,
    /// otherwise binned and then stored. Returns whether it was a hit.
    pub fn load(&self, path: &Path) -> Result<(Vec<SparseFrame>, bool), DataError> {
        let bytes = std::fs::read(path).map_err(|source| DataError::Io {
            path: path.to_owned(),
            source,
        })?;
        let entry = self.entry(&bytes);
        if let Ok(stored) = std::fs::read(&entry)
            && let Some(frames) = decode_entry(&stored, &self.input)
        {
            return Ok((frames, true));
        }
        let frames = bin_bytes(path, &bytes, &self.input, &self.options)?;
        self.store(&entry, &frames)?;
        Ok((frames, false))
    }

    fn store(&self, entry: &Path, frames: &[SparseFrame]) -> Result<(), DataError> {
        let io = |source| DataError::Io {
            path: entry.to_owned(),
            source,
        };
        let temp = self.dir.join(format!(
            ".{}.{}.{}.tmp",
            entry
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("entry"),
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let written = std::fs::File::create(&temp)
            .and_then(|mut f| f.write_all(&encode_entry(frames)))
            .and_then(|()| std::fs::rename(&temp, entry));
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written.map_err(io)
    }
}

/// Cache file: magic, T, frame length (u32 each), then per frame its nnz (u32), indices (u32)
/// and values (f32), all little-endian.
fn encode_entry(frames: &[SparseFrame]) -> Vec<u8> {
    let nnz: usize = frames.iter().map(SparseFrame::nnz).sum();
    let mut out = Vec::with_capacity(16 + 4 * frames.len() + 8 * nnz);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    let len = frames.first().map_or(0, |f| f.shape.len());
    out.extend_from_slice(&(len as u32).to_le_bytes());
    for f in frames {
        out.extend_from_slice(&(f.nnz() as u32).to_le_bytes());
        f.indices
            .iter()
            .for_each(|i| out.extend_from_slice(&i.to_le_bytes()));
        f.values
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    }
    out
}

/// Parses a cache file; `None` for anything that does not match `input` exactly.
fn decode_entry(bytes: &[u8], input: &InputSpec) -> Option<Vec<SparseFrame>> {
    let shape = input.shape();
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    if bytes.get(..8)? != MAGIC
        || word(8)? as usize != input.timesteps
        || word(12)? as usize != shape.len()
    {
        return None;
    }
    let mut at = 16;
    let mut frames = Vec::with_capacity(input.timesteps);
    for _ in 0..input.timesteps {
        let nnz = word(at)? as usize;
        at += 4;
        let end = at.checked_add(nnz.checked_mul(8)?)?;
        if end > bytes.len() || nnz > shape.len() {
            return None;
        }
        let mut frame = SparseFrame::empty(shape);
        frame.indices = bytes[at..at + 4 * nnz]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        frame.values = bytes[at + 4 * nnz..end]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        at = end;
        let ascending = frame.indices.windows(2).all(|w| w[0] < w[1]);
        if !ascending
            || frame
                .indices
                .last()
                .is_some_and(|&i| i as usize >= shape.len())
        {
            return None;
        }
        frames.push(frame);
    }
    (at == bytes.len()).then_some(frames)
}

/// Writes the frames of `samples` as one batch in the binner's layout `[T][B][C][H][W]`.
pub fn batch_frames(samples: &[&[SparseFrame]], timesteps: usize, out: &mut Vec<f32>) {
    let len = samples
        .first()
        .and_then(|s| s.first())
        .map_or(0, |f| f.shape.len());
    let b = samples.len();
    out.clear();
    out.resize(timesteps * b * len, 0.0);
    for (j, sample) in samples.iter().enumerate() {
        for (t, frame) in sample.iter().enumerate().take(timesteps) {
            let base = (t * b + j) * len;
            for (&i, &v) in frame.indices.iter().zip(&frame.values) {
                out[base + i as usize] = v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binner::{Normalization, ResizeMode, SplitBy, WindowPolicy};

    fn input() -> InputSpec {
        InputSpec {
            height: 4,
            width: 4,
            timesteps: 2,
            window: WindowPolicy::Recording {
                split_by: SplitBy::EqualCount,
            },
            resize: ResizeMode::Nearest,
            normalization: Normalization::None,
        }
    }

    #[test]
    fn cache_entries_round_trip_and_refuse_damage() {
        let shape = input().shape();
        let mut a = SparseFrame::empty(shape);
        a.indices = vec![1, 7, 31];
        a.values = vec![1.0, 2.5, 3.0];
        let frames = vec![a, SparseFrame::empty(shape)];
        let bytes = encode_entry(&frames);
        assert_eq!(decode_entry(&bytes, &input()), Some(frames));
        // Truncated, extended, or for another spec: rejected.
        assert_eq!(decode_entry(&bytes[..bytes.len() - 1], &input()), None);
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode_entry(&longer, &input()), None);
        let other = InputSpec {
            timesteps: 3,
            ..input()
        };
        assert_eq!(decode_entry(&bytes, &other), None);
        let mut bad_index = bytes;
        bad_index[24..28].copy_from_slice(&40u32.to_le_bytes());
        assert_eq!(decode_entry(&bad_index, &input()), None);
    }

    #[test]
    fn batches_are_time_major() {
        let shape = input().shape();
        let frame = |i: u32, v: f32| {
            let mut f = SparseFrame::empty(shape);
            f.indices = vec![i];
            f.values = vec![v];
            f
        };
        let s0 = vec![frame(0, 1.0), frame(1, 2.0)];
        let s1 = vec![frame(2, 3.0), frame(3, 4.0)];
        let mut out = Vec::new();
        batch_frames(&[&s0, &s1], 2, &mut out);
        let len = shape.len();
        assert_eq!(out.len(), 4 * len);
        assert_eq!(out[0], 1.0); // t0 b0
        assert_eq!(out[len + 2], 3.0); // t0 b1
        assert_eq!(out[2 * len + 1], 2.0); // t1 b0
        assert_eq!(out[3 * len + 3], 4.0); // t1 b1
        assert_eq!(out.iter().filter(|v| **v != 0.0).count(), 4);
    }
}
