//! Still images for the DVS emulator: grayscale PGM (P2/P5), PNG (any colour type, reduced to
//! luma) and the UCI handwritten-digits CSV (gzip or plain), all as [`GrayImage`] with values in
//! `[0, 1]`.
//!
//! PGM is parsed by hand because it is a ten-line format with no well-kept crate that reads
//! only it; PNG goes through the `png` crate; gzip through `flate2`. Every size is checked
//! before allocating: an image may hold at most [`MAX_PIXELS`] pixels.

use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest image accepted, in pixels (a 4096 × 4096 image). The emulator shrinks every
/// image onto a 128 × 128 sensor, so anything larger is a mistake, not a use case.
pub const MAX_PIXELS: usize = 4096 * 4096;

/// The largest digits CSV accepted after decompression, in bytes (the real file is 0.3 MB).
const MAX_CSV_BYTES: u64 = 64 << 20;

/// A grayscale image, row-major, values in `[0, 1]` (0 = black, 1 = white, as display codes
/// before the monitor's gamma).
#[derive(Debug, Clone, PartialEq)]
pub struct GrayImage {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `width * height` values in `[0, 1]`, row-major from the top-left.
    pub pixels: Vec<f32>,
}

impl GrayImage {
    /// Builds an image, checking the size and clamping values into `[0, 1]` (NaN becomes 0).
    pub fn new(width: usize, height: usize, pixels: Vec<f32>) -> Result<Self, ImageError> {
        check_size(width, height)?;
        if pixels.len() != width * height {
            return Err(ImageError::Malformed(format!(
                "expected {} pixels for {width}x{height}, found {}",
                width * height,
                pixels.len()
            )));
        }
        let pixels = pixels
            .into_iter()
            .map(|v| if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) })
            .collect();
        Ok(Self {
            width,
            height,
            pixels,
        })
    }

    /// The image with a border of `margin` pixels of `value` on every side.
    pub fn padded(&self, margin: usize, value: f32) -> Result<Self, ImageError> {
        let width = self.width + 2 * margin;
        let height = self.height + 2 * margin;
        check_size(width, height)?;
        let mut pixels = vec![value; width * height];
        for (y, row) in self.pixels.chunks_exact(self.width.max(1)).enumerate() {
            let start = (y + margin) * width + margin;
            pixels[start..start + self.width].copy_from_slice(row);
        }
        Self::new(width, height, pixels)
    }

    /// The value at column `x`, row `y`, with coordinates clamped to the border.
    #[inline]
    pub fn at_clamped(&self, x: isize, y: isize) -> f32 {
        debug_assert!(self.width > 0 && self.height > 0);
        let x = x.clamp(0, self.width as isize - 1) as usize;
        let y = y.clamp(0, self.height as isize - 1) as usize;
        self.pixels[y * self.width + x]
    }
}

/// One labelled image of the handwritten-digits set.
#[derive(Debug, Clone, PartialEq)]
pub struct DigitImage {
    /// The 8 × 8 image, ink bright (value 16 → 1.0).
    pub image: GrayImage,
    /// The digit, 0..=9.
    pub label: u8,
}

/// Why an image could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a supported image (by magic bytes).
    #[error("{path}: not a PGM (P2/P5) or PNG image (first bytes {prefix:?})")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// Its first bytes, escaped.
        prefix: String,
    },
    /// The content breaks the format.
    #[error("{0}")]
    Malformed(String),
    /// The image is empty or larger than [`MAX_PIXELS`].
    #[error("image size {width}x{height}: expected 1 to {max} pixels", max = MAX_PIXELS)]
    BadSize {
        /// Columns claimed.
        width: usize,
        /// Rows claimed.
        height: usize,
    },
    /// The PNG decoder rejected the file.
    #[error("PNG: {0}")]
    Png(String),
    /// The same error, with the file it came from.
    #[error("{path}: {source}")]
    InFile {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        source: Box<ImageError>,
    },
}

fn check_size(width: usize, height: usize) -> Result<(), ImageError> {
    match width.checked_mul(height) {
        Some(n) if n > 0 && n <= MAX_PIXELS => Ok(()),
        _ => Err(ImageError::BadSize { width, height }),
    }
}

/// Loads a PGM or PNG file, chosen by its magic bytes.
pub fn load_image(path: &Path) -> Result<GrayImage, ImageError> {
    let bytes = std::fs::read(path).map_err(|source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let in_file = |source| ImageError::InFile {
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    if bytes.starts_with(b"P2") || bytes.starts_with(b"P5") {
        parse_pgm(&bytes).map_err(in_file)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        parse_png(&bytes).map_err(in_file)
    } else {
        Err(ImageError::UnknownFormat {
            path: path.to_path_buf(),
            prefix: bytes[..bytes.len().min(16)].escape_ascii().to_string(),
        })
    }
}

/// Whether a file name looks like an image this module reads (`.pgm` or `.png`, any case).
pub fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("pgm") || e.eq_ignore_ascii_case("png"))
}

/// Parses a PGM image: `P2` (ASCII) or `P5` (binary, 1 byte per sample when maxval < 256,
/// else 2 bytes big-endian), with `#` comments in the header.
pub fn parse_pgm(bytes: &[u8]) -> Result<GrayImage, ImageError> {
    let ascii = match bytes.get(..2) {
        Some(b"P2") => true,
        Some(b"P5") => false,
        _ => {
            return Err(ImageError::Malformed(
                "PGM: expected magic P2 or P5".to_string(),
            ));
        }
    };
    let mut cursor = PgmCursor { bytes, pos: 2 };
    let width = cursor.header_number("width")?;
    let height = cursor.header_number("height")?;
    let maxval = cursor.header_number("maxval")?;
    check_size(width, height)?;
    if maxval == 0 || maxval > 65535 {
        return Err(ImageError::Malformed(format!(
            "PGM: maxval {maxval}: expected 1 to 65535"
        )));
    }
    let n = width * height;
    // Every ASCII sample takes at least two bytes (a digit and a separator, bar the last), so
    // a header claiming more samples than that cannot be honest; refuse before allocating.
    let remaining = bytes.len().saturating_sub(cursor.pos);
    if ascii && n > remaining / 2 + 1 {
        return Err(ImageError::Malformed(format!(
            "PGM: truncated raster: {n} samples cannot fit in {remaining} bytes"
        )));
    }
    let width_bytes = if maxval < 256 { 1 } else { 2 };
    if !ascii && bytes.len().saturating_sub(cursor.pos + 1) < n * width_bytes {
        return Err(ImageError::Malformed(format!(
            "PGM: truncated raster: expected {} bytes, found {}",
            n * width_bytes,
            bytes.len().saturating_sub(cursor.pos + 1)
        )));
    }
    let scale = 1.0 / maxval as f32;
    let mut pixels = Vec::with_capacity(n);
    if ascii {
        for i in 0..n {
            let v = cursor.number().ok_or_else(|| {
                ImageError::Malformed(format!("PGM: expected {n} samples, found {i}"))
            })?;
            if v > maxval {
                return Err(ImageError::Malformed(format!(
                    "PGM: sample {i} is {v}, above maxval {maxval}"
                )));
            }
            pixels.push(v as f32 * scale);
        }
    } else {
        // Exactly one whitespace byte separates maxval from the raster (length checked above).
        let raster = bytes.get(cursor.pos + 1..).unwrap_or(&[]);
        for (i, sample) in raster.chunks_exact(width_bytes).take(n).enumerate() {
            let v = match sample {
                [b] => usize::from(*b),
                [hi, lo] => usize::from(u16::from_be_bytes([*hi, *lo])),
                _ => 0,
            };
            if v > maxval {
                return Err(ImageError::Malformed(format!(
                    "PGM: sample {i} is {v}, above maxval {maxval}"
                )));
            }
            pixels.push(v as f32 * scale);
        }
    }
    GrayImage::new(width, height, pixels)
}

struct PgmCursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl PgmCursor<'_> {
    /// Skips whitespace and `#` comments (comments run to the end of the line).
    fn skip_space(&mut self) {
        while let Some(&b) = self.bytes.get(self.pos) {
            if b == b'#' {
                while let Some(&c) = self.bytes.get(self.pos) {
                    if c == b'\n' || c == b'\r' {
                        break;
                    }
                    self.pos += 1;
                }
            } else if b.is_ascii_whitespace() {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    /// The next decimal number, or `None` at the end or on a non-digit. Saturates rather
    /// than overflowing; callers bound the values.
    fn number(&mut self) -> Option<usize> {
        self.skip_space();
        let start = self.pos;
        let mut value: usize = 0;
        while let Some(&b) = self.bytes.get(self.pos) {
            if !b.is_ascii_digit() {
                break;
            }
            value = value
                .saturating_mul(10)
                .saturating_add(usize::from(b - b'0'));
            self.pos += 1;
        }
        (self.pos > start).then_some(value)
    }

    fn header_number(&mut self, what: &str) -> Result<usize, ImageError> {
        self.number()
            .ok_or_else(|| ImageError::Malformed(format!("PGM header: expected {what}")))
    }
}

/// Decodes a PNG of any colour type and bit depth to luma in `[0, 1]`: palettes are expanded,
/// 16-bit samples reduced to 8, colour converted with the Rec. 601 weights on the stored
/// (gamma-encoded) codes, and alpha ignored.
pub fn parse_png(bytes: &[u8]) -> Result<GrayImage, ImageError> {
    let png_err = |e: png::DecodingError| ImageError::Png(e.to_string());
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(png_err)?;
    let (width, height) = {
        let info = reader.info();
        (info.width as usize, info.height as usize)
    };
    check_size(width, height)?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| ImageError::Png("output buffer size overflows".to_string()))?;
    // EXPAND + STRIP_16 give at most 4 bytes per pixel; refuse anything claiming more.
    if size > MAX_PIXELS * 4 {
        return Err(ImageError::BadSize { width, height });
    }
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(png_err)?;
    let channels = frame.color_type.samples();
    let line = frame.line_size;
    let mut pixels = Vec::with_capacity(width * height);
    for row in buf.chunks_exact(line).take(height) {
        for px in row.chunks_exact(channels).take(width) {
            let luma = match px {
                [g] | [g, _] => f32::from(*g),
                [r, g, b] | [r, g, b, _] => {
                    0.299 * f32::from(*r) + 0.587 * f32::from(*g) + 0.114 * f32::from(*b)
                }
                _ => 0.0,
            };
            pixels.push(luma / 255.0);
        }
    }
    GrayImage::new(width, height, pixels)
}

/// Loads the UCI handwritten-digits CSV (`digits.csv.gz` as shipped by scikit-learn, or the
/// same text uncompressed): one image per line, 64 integers 0..=16 (8 × 8, row-major) then
/// the label 0..=9. Ink is the high value, so digits come out bright on black.
pub fn load_digits_csv(path: &Path) -> Result<Vec<DigitImage>, ImageError> {
    let io = |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut raw = Vec::new();
    file.take(MAX_CSV_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(io)?;
    let text = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .take(MAX_CSV_BYTES + 1)
            .read_to_end(&mut text)
            .map_err(io)?;
        text
    } else {
        raw
    };
    if text.len() as u64 > MAX_CSV_BYTES {
        return Err(ImageError::InFile {
            path: path.to_path_buf(),
            source: Box::new(ImageError::Malformed(format!(
                "digits CSV larger than {MAX_CSV_BYTES} bytes"
            ))),
        });
    }
    parse_digits_csv(&text).map_err(|source| ImageError::InFile {
        path: path.to_path_buf(),
        source: Box::new(source),
    })
}

/// Parses the digits CSV text (see [`load_digits_csv`]). Blank lines are skipped.
pub fn parse_digits_csv(text: &[u8]) -> Result<Vec<DigitImage>, ImageError> {
    let text = std::str::from_utf8(text)
        .map_err(|e| ImageError::Malformed(format!("digits CSV: not UTF-8: {e}")))?;
    let mut digits = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad =
            |what: String| ImageError::Malformed(format!("digits CSV line {}: {what}", n + 1));
        let mut values = [0u8; 65];
        let mut count = 0;
        for field in line.split(',') {
            if count == values.len() {
                return Err(bad("expected 65 fields, found more".to_string()));
            }
            values[count] = field.trim().parse().map_err(|_| {
                bad(format!(
                    "field {}: expected an integer, found {field:?}",
                    count + 1
                ))
            })?;
            count += 1;
        }
        if count != values.len() {
            return Err(bad(format!("expected 65 fields, found {count}")));
        }
        let (pixels, label) = values.split_at(64);
        if let Some(v) = pixels.iter().find(|&&v| v > 16) {
            return Err(bad(format!("pixel value {v}: expected 0 to 16")));
        }
        let label = label[0];
        if label > 9 {
            return Err(bad(format!("label {label}: expected 0 to 9")));
        }
        let image = GrayImage::new(8, 8, pixels.iter().map(|&v| f32::from(v) / 16.0).collect())?;
        digits.push(DigitImage { image, label });
    }
    Ok(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgm_ascii_with_comments() {
        let img = parse_pgm(b"P2\n# a comment\n3 2\n# another\n4\n0 1 2\n3 4 0\n").unwrap();
        assert_eq!((img.width, img.height), (3, 2));
        assert_eq!(img.pixels, vec![0.0, 0.25, 0.5, 0.75, 1.0, 0.0]);
    }

    #[test]
    fn pgm_binary_8_and_16_bit() {
        let mut b = b"P5 2 1 255\n".to_vec();
        b.extend_from_slice(&[0, 255]);
        assert_eq!(parse_pgm(&b).unwrap().pixels, vec![0.0, 1.0]);
        let mut b = b"P5 2 1 65535\n".to_vec();
        b.extend_from_slice(&[0, 0, 0xff, 0xff]);
        assert_eq!(parse_pgm(&b).unwrap().pixels, vec![0.0, 1.0]);
    }

    #[test]
    fn pgm_rejects_bad_input_without_panicking() {
        for bad in [
            &b"P5 2 2 255\n\x00"[..],
            b"P2 2 1 4\n1",
            b"P2 2 1 4\n1 5",
            b"P5 0 3 255\n",
            b"P5 99999999 99999999 255\n",
            b"P2",
            b"P5 2 1 70000\n\x00\x00\x00\x00",
        ] {
            assert!(parse_pgm(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn png_gray_and_rgb_round_trip() {
        for (color, data, expected) in [
            (
                png::ColorType::Grayscale,
                vec![0u8, 255, 51, 102],
                vec![0.0, 1.0, 0.2, 0.4],
            ),
            (
                png::ColorType::Rgb,
                vec![255, 255, 255, 0, 0, 0, 255, 0, 0, 0, 0, 255],
                vec![1.0, 0.0, 0.299, 0.114],
            ),
        ] {
            let mut bytes = Vec::new();
            {
                let mut enc = png::Encoder::new(&mut bytes, 2, 2);
                enc.set_color(color);
                enc.set_depth(png::BitDepth::Eight);
                let mut w = enc.write_header().unwrap();
                w.write_image_data(&data).unwrap();
            }
            let img = parse_png(&bytes).unwrap();
            assert_eq!((img.width, img.height), (2, 2));
            for (a, b) in img.pixels.iter().zip(&expected) {
                assert!((a - b).abs() < 1e-6, "{:?} vs {expected:?}", img.pixels);
            }
        }
    }

    #[test]
    fn padding_surrounds_the_image() {
        let img = GrayImage::new(2, 1, vec![0.5, 1.0]).unwrap();
        let p = img.padded(1, 0.0).unwrap();
        assert_eq!((p.width, p.height), (4, 3));
        assert_eq!(
            p.pixels,
            vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        );
    }

    #[test]
    fn digits_csv_parses_and_validates() {
        let row: Vec<String> = (0..64).map(|i| (i % 17).to_string()).collect();
        let text = format!("{},7\n\n", row.join(","));
        let digits = parse_digits_csv(text.as_bytes()).unwrap();
        assert_eq!(digits.len(), 1);
        assert_eq!(digits[0].label, 7);
        assert_eq!(digits[0].image.pixels[16], 16.0 / 16.0);
        assert!(parse_digits_csv(format!("{},10\n", row.join(",")).as_bytes()).is_err());
        assert!(parse_digits_csv(b"1,2,3\n").is_err());
        let too_bright = format!("17,{},1\n", row[1..].join(","));
        assert!(parse_digits_csv(too_bright.as_bytes()).is_err());
    }
}
