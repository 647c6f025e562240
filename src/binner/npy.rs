//! NumPy `.npy` files of frames: a writer for `[T, C, H, W]` little-endian `float32` arrays
//! (format version 1.0, C order) and a strict reader for the same kind of file.
//!
//! Written by hand because the format is a short text header plus raw values, and the crates
//! that implement it pull in large array libraries.

use std::io::{self, Read, Write};

use super::frame::{FrameShape, SparseFrame};

/// The magic string that opens every `.npy` file.
const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Header blocks are padded so the data starts on this boundary (NumPy's own choice).
const ALIGN: usize = 64;

/// Largest header accepted when reading (NumPy caps its own at 10 000 bytes).
const MAX_HEADER: usize = 65_535;

/// A problem writing or reading an `.npy` file.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// Reading or writing failed.
    #[error("npy i/o: {0}")]
    Io(#[from] io::Error),
    /// The frames do not all have the shape given.
    #[error("frame {index} has shape {found:?}, expected {expected:?}")]
    MixedShapes {
        /// The frame's position.
        index: usize,
        /// Its shape.
        found: FrameShape,
        /// The shape of the array being written.
        expected: FrameShape,
    },
    /// The values do not fill the shape.
    #[error("shape {shape:?} needs {expected} values, got {found}")]
    Length {
        /// The array shape.
        shape: Vec<usize>,
        /// Values the shape needs.
        expected: usize,
        /// Values given or present.
        found: usize,
    },
    /// The file is not an `.npy` file this reader accepts.
    #[error("not a little-endian float32 C-order .npy file: {0}")]
    Format(String),
    /// The array is bigger than the caller allows.
    #[error("array of {bytes} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Bytes of data the header announces.
        bytes: u128,
        /// The caller's limit.
        limit: u64,
    },
}

/// A `float32` array read from an `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// The dimensions, outermost first.
    pub shape: Vec<usize>,
    /// The values in C order.
    pub values: Vec<f32>,
}

/// Writes `frames` as one `[T, C, H, W]` float32 array, where `[C, H, W]` is `shape` and `T` is
/// `frames.len()` (so an empty list still records the frame shape).
pub fn write_frames<W: Write>(
    mut out: W,
    shape: FrameShape,
    frames: &[SparseFrame],
) -> Result<(), NpyError> {
    if let Some((index, frame)) = frames.iter().enumerate().find(|(_, f)| f.shape != shape) {
        return Err(NpyError::MixedShapes {
            index,
            found: frame.shape,
            expected: shape,
        });
    }
    let dims = [frames.len(), shape.channels, shape.height, shape.width];
    out.write_all(&header(&dims))?;
    let mut dense = Vec::new();
    let mut bytes = Vec::with_capacity(shape.len() * 4);
    for frame in frames {
        frame.write_dense(&mut dense);
        bytes.clear();
        bytes.extend(dense.iter().flat_map(|v| v.to_le_bytes()));
        out.write_all(&bytes)?;
    }
    out.flush()?;
    Ok(())
}

/// Writes a float32 array of any shape from its C-order values.
pub fn write_f32<W: Write>(mut out: W, shape: &[usize], values: &[f32]) -> Result<(), NpyError> {
    let expected = shape.iter().product::<usize>();
    if expected != values.len() {
        return Err(NpyError::Length {
            shape: shape.to_vec(),
            expected,
            found: values.len(),
        });
    }
    out.write_all(&header(shape))?;
    for chunk in values.chunks(16 * 1024) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
        out.write_all(&bytes)?;
    }
    out.flush()?;
    Ok(())
}

/// The magic, version 1.0, and the padded header dictionary for a `<f4` C-order array.
fn header(shape: &[usize]) -> Vec<u8> {
    let dims = match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {dims}, }}");
    // magic (6) + version (2) + length (2) + dict + padding + '\n' is a multiple of ALIGN.
    let unpadded = MAGIC.len() + 2 + 2 + dict.len() + 1;
    dict.extend(std::iter::repeat_n(
        ' ',
        unpadded.next_multiple_of(ALIGN) - unpadded,
    ));
    dict.push('\n');
    let mut out = Vec::with_capacity(10 + dict.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    // Shapes of a handful of dimensions keep the dictionary far below 64 KiB.
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// Reads a little-endian float32 C-order `.npy` file (versions 1.0 to 3.0) whose data is at most
/// `max_bytes`. Anything else is an error, including trailing bytes after the data.
pub fn read_f32<R: Read>(mut input: R, max_bytes: u64) -> Result<NpyArray, NpyError> {
    let mut prefix = [0u8; 8];
    input.read_exact(&mut prefix)?;
    if &prefix[..6] != MAGIC {
        return Err(NpyError::Format("missing \\x93NUMPY magic".into()));
    }
    let header_len = match prefix[6] {
        1 => {
            let mut len = [0u8; 2];
            input.read_exact(&mut len)?;
            usize::from(u16::from_le_bytes(len))
        }
        2 | 3 => {
            let mut len = [0u8; 4];
            input.read_exact(&mut len)?;
            u32::from_le_bytes(len) as usize
        }
        v => return Err(NpyError::Format(format!("unsupported version {v}"))),
    };
    if header_len > MAX_HEADER {
        return Err(NpyError::Format(format!(
            "header of {header_len} bytes is over {MAX_HEADER}"
        )));
    }
    let mut text = vec![0u8; header_len];
    input.read_exact(&mut text)?;
    let text =
        std::str::from_utf8(&text).map_err(|_| NpyError::Format("header is not UTF-8".into()))?;
    let shape = parse_header(text)?;

    let count = shape
        .iter()
        .try_fold(1u128, |acc, &d| acc.checked_mul(d as u128))
        .unwrap_or(u128::MAX);
    let bytes = count.saturating_mul(4);
    if bytes > u128::from(max_bytes) {
        return Err(NpyError::TooLarge {
            bytes,
            limit: max_bytes,
        });
    }
    // Within max_bytes, which the caller chose to fit in memory.
    let bytes = bytes as usize;
    let mut data = Vec::new();
    input.by_ref().take(bytes as u64).read_to_end(&mut data)?;
    if data.len() != bytes {
        return Err(NpyError::Length {
            shape,
            expected: bytes / 4,
            found: data.len() / 4,
        });
    }
    let mut trailing = [0u8; 1];
    if input.read(&mut trailing)? != 0 {
        return Err(NpyError::Format("bytes after the array data".into()));
    }
    let values = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(NpyArray { shape, values })
}

/// Parses the header dictionary and returns the shape; requires `'<f4'` and C order.
fn parse_header(text: &str) -> Result<Vec<usize>, NpyError> {
    let bad = |what: &str| NpyError::Format(format!("{what} in header {text:?}"));
    let field = |key: &str| -> Result<&str, NpyError> {
        let start = text
            .find(&format!("'{key}':"))
            .ok_or_else(|| bad(&format!("no '{key}'")))?;
        Ok(text[start + key.len() + 3..].trim_start())
    };
    let descr = field("descr")?;
    if !(descr.starts_with("'<f4'") || descr.starts_with("\"<f4\"")) {
        return Err(bad("dtype is not '<f4'"));
    }
    if !field("fortran_order")?.starts_with("False") {
        return Err(bad("Fortran order"));
    }
    let shape = field("shape")?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split_once(')'))
        .map(|(inner, _)| inner)
        .ok_or_else(|| bad("malformed shape"))?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| bad("malformed shape")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_aligned_and_readable() {
        for shape in [&[10usize, 2, 48, 48][..], &[0, 2, 3, 3], &[7], &[]] {
            let h = header(shape);
            assert_eq!(h.len() % ALIGN, 0);
            assert_eq!(*h.last().unwrap(), b'\n');
            let text = std::str::from_utf8(&h[10..]).unwrap();
            assert_eq!(parse_header(text).unwrap(), shape);
        }
        let h = header(&[10, 2, 48, 48]);
        assert_eq!(
            std::str::from_utf8(&h[10..]).unwrap().trim_end(),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (10, 2, 48, 48), }"
        );
    }

    #[test]
    fn round_trip_frames() {
        let shape = FrameShape {
            channels: 2,
            height: 3,
            width: 4,
        };
        let mut dense = vec![0f32; shape.len()];
        dense[5] = 1.5;
        dense[23] = -2.0;
        let frames = vec![
            SparseFrame::from_dense(shape, &dense),
            SparseFrame::empty(shape),
        ];
        let mut file = Vec::new();
        write_frames(&mut file, shape, &frames).unwrap();
        let array = read_f32(&file[..], 1 << 20).unwrap();
        assert_eq!(array.shape, [2, 2, 3, 4]);
        assert_eq!(&array.values[..24], &dense[..]);
        assert!(array.values[24..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        let mut file = Vec::new();
        write_f32(&mut file, &[2, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!(matches!(
            read_f32(&file[..], 8),
            Err(NpyError::TooLarge { .. })
        ));
        assert!(matches!(
            read_f32(&file[..file.len() - 1], 1 << 10),
            Err(NpyError::Length { .. })
        ));
        let mut longer = file.clone();
        longer.push(0);
        assert!(matches!(
            read_f32(&longer[..], 1 << 10),
            Err(NpyError::Format(_))
        ));
        let mut f8 = file.clone();
        let at = f8.windows(3).position(|w| w == b"<f4").unwrap();
        f8[at + 2] = b'8';
        assert!(matches!(
            read_f32(&f8[..], 1 << 10),
            Err(NpyError::Format(_))
        ));
        assert!(read_f32(&b"\x93NUMPX"[..], 1 << 10).is_err());
        assert!(matches!(
            write_f32(&mut Vec::new(), &[3], &[1.0]),
            Err(NpyError::Length { .. })
        ));
        let other = FrameShape {
            channels: 2,
            height: 1,
            width: 1,
        };
        let frames = [SparseFrame::empty(other)];
        let shape = FrameShape { width: 2, ..other };
        assert!(matches!(
            write_frames(&mut Vec::new(), shape, &frames),
            Err(NpyError::MixedShapes { .. })
        ));
    }
}
