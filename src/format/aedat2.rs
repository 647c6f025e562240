//! jAER AEDAT 1.0 / 2.0 (`#!AER-DAT2.0`): the `#` text header, the DVS128 and DAVIS address
//! layouts, a streaming decoder and an encoder.
//!
//! A file is a text header of `#`-prefixed lines, then big-endian `(address, timestamp)`
//! records: 6 bytes (`u16`, `u32`) in version 1.0, 8 bytes (`u32`, `u32`) in version 2.0. The
//! timestamp is a 32-bit microsecond counter that wraps.
//!
//! # Where the header ends
//! jAER reads `#` lines until a line does not start with `#` (and, since 2016, stops right after
//! a `#End Of ASCII Header` line). A binary record may itself start with byte 0x23 (`#`): a DAVIS
//! polarity word with raw y in 140..=143 does. jAER would swallow such a record as a header line;
//! we do not. A header line is text: a `#`-prefixed line is taken as data instead as soon as it
//! holds a control byte other than tab (a lone `\r`, a NUL...), which binary records almost
//! always do within a few bytes (timestamps below 16.7 s start with 0x00, DVS128 addresses too).
//! The `#End Of ASCII Header` line, which our encoder always writes, removes the ambiguity.
//! Lines may end in `\r\n` (jAER's writer) or `\n` (some newer files, e.g. tonic's sample).
//! The header is capped at [`DecodeOptions::max_record_bytes`] so that random text cannot make
//! the decoder buffer without bound.
//!
//! # Layouts and orientation
//! The `# AEChip:` line names the jAER chip class, which fixes the address layout and the
//! resolution; [`DecodeOptions::aedat2_layout`] and [`DecodeOptions::resolution`] override it.
//! With no chip line (MNIST-DVS, CIFAR10-DVS) the layout is DVS128, the classic default; an
//! unknown chip class is an error unless the layout is given, because guessing would silently
//! scramble the pixels.
//! - DVS128: `x_raw = (a>>1)&0x7F`, `y_raw = (a>>8)&0x7F`, raw polarity bit 0 (0 = ON), mapped
//!   by [`JaerOrientation`]. Bit 15 (jAER's sync bit) or bit 31 marks a special event (counted
//!   in `triggers_skipped`). The real MNIST-DVS files use only bits 0..=14; any other bit set is
//!   a bad record.
//! - DAVIS: bit 31 = 0 is a DVS word: `y_raw = (a>>22)&0x1FF`, `x_raw = (a>>12)&0x3FF`,
//!   polarity bit 11 (1 = ON); type bits 10..=11 equal to `01` mark an external input event
//!   (`triggers_skipped`). Bit 31 = 1 is an APS sample (`frames_skipped`), or an IMU word when
//!   bits 10 and 11 are also set (`imu_skipped`; one IMU sample is 7 words, each counted). jAER
//!   shows DVS pixels at `(W−1−x_raw, y_raw)` with y = 0 at the *bottom*
//!   (`DavisBaseCamera.DavisEventExtractor`), and v2e, from the same lab, writes top-left images
//!   to AEDAT 2.0 as `x_raw = W−1−x`, `y_raw = H−1−y` so that jAER shows them upright. We
//!   therefore use `x = W−1−x_raw`, `y = H−1−y_raw` (top-left origin). The two DAVIS240C
//!   recordings here hold only DVS and IMU words (no APS frame to compare against); their
//!   events fill exactly 0..=239 × 0..=179, and an event-count image of the translating-boxes
//!   scene drawn with this mapping stands upright (the objects rest on the bottom edge).
//!
//! # Timestamps
//! The 32-bit microsecond counter wraps every 71.6 min. Each raw timestamp is read as the
//! nearest step from the previous record's ([`WrappingClock`]): a drop of more than 2^31 µs
//! is a wrap and adds 2^32 µs, as in jAER; a smaller drop is a regression (kept and counted);
//! a rise of 2^31 µs or more (35.8 min without a single record) reads as a small step back
//! across a wrap. Every record, not only the emitted events, advances the clock, because all
//! of them share the sensor's clock.

use super::common::{Cx, RecordDecoder, Sticky, WrappingClock, skip_or_fail, truncated_tail};
use super::{
    Aedat2Layout, DecodeError, DecodeErrorKind, DecodeOptions, EncodeError, Encoder, Format,
    JaerOrientation,
};
use crate::event::{Event, StreamInfo};

/// DVS128 address fields.
const DVS128_X_SHIFT: u32 = 1;
const DVS128_Y_SHIFT: u32 = 8;
const DVS128_FIELD_MASK: u32 = 0x7F;
/// jAER's DVS128 sync (external input) bit and the special-event bit of newer translators.
const DVS128_SPECIAL_BITS: u32 = 0x8000_8000;
/// Bits a DVS128 pixel address may use.
const DVS128_PIXEL_BITS: u32 = 0x7FFF;
/// The largest coordinate of the DVS128 orientation formulas.
const DVS128_MAX: u16 = 127;

/// DAVIS address fields (jAER `DavisChip`).
const DAVIS_Y_SHIFT: u32 = 22;
const DAVIS_Y_MASK: u32 = 0x1FF;
const DAVIS_X_SHIFT: u32 = 12;
const DAVIS_X_MASK: u32 = 0x3FF;
const DAVIS_POLARITY_BIT: u32 = 1 << 11;
const DAVIS_TYPE_MASK: u32 = 3 << 10;
const DAVIS_EXTERNAL_INPUT: u32 = 1 << 10;
const DAVIS_NOT_DVS_BIT: u32 = 1 << 31;
const DAVIS_IMU_BITS: u32 = 0x8000_0C00;

/// The largest step between consecutive raw timestamps that the clock reads as it is.
const MAX_STEP: i64 = (1 << 31) - 1;

/// jAER's explicit end-of-header line (after the `#`), written since November 2016.
const END_OF_HEADER: &[u8] = b"End Of ASCII Header";
/// The version line prefix (after the `#`).
const VERSION_PREFIX: &[u8] = b"!AER-DAT";
/// The chip class line key (after the `#` and leading spaces).
const CHIP_PREFIX: &[u8] = b"AEChip:";
/// Longest chip class name kept in [`StreamInfo::source`].
const MAX_CHIP_NAME: usize = 256;

/// The header lines every encoded file starts with (jAER's own wording, CRLF as jAER writes).
const HEADER_PREAMBLE: &str = "#!AER-DAT2.0\r\n\
    # This is a raw AE data file - do not edit\r\n\
    # Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event\r\n\
    # Timestamps tick is 1 us\r\n\
    # created by inflor\r\n";
/// jAER's chip class for the DVS128.
const DVS128_CHIP: &str = "ch.unizh.ini.jaer.chip.retina.DVS128";
/// Prefix of the chip names our encoder writes for DAVIS sizes jAER has no class for.
const GENERIC_DAVIS_CHIP: &str = "inflor.Davis";

/// AEDAT record format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    /// 1.x: `u16` address, `u32` timestamp.
    V1,
    /// 2.x: `u32` address, `u32` timestamp.
    V2,
}

impl Version {
    fn record_bytes(self) -> usize {
        match self {
            Version::V1 => 6,
            Version::V2 => 8,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Version::V1 => "AEDAT 1.0",
            Version::V2 => "AEDAT 2.0",
        }
    }
}

/// How a record's address becomes a pixel, resolved once from the header and options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mapping {
    Dvs128(JaerOrientation),
    Davis(JaerOrientation),
}

impl Mapping {
    /// The mapping in words, for [`StreamInfo::orientation`].
    fn describe(self, width: u16, height: u16) -> String {
        match self {
            Mapping::Dvs128(JaerOrientation::Spikingjelly) => {
                "spikingjelly: x = 127 - y_raw, y = 127 - x_raw, ON = raw polarity 0".to_string()
            }
            Mapping::Dvs128(JaerOrientation::Raw) => {
                "raw: x = x_raw, y = y_raw, ON = raw polarity 0".to_string()
            }
            Mapping::Davis(JaerOrientation::Spikingjelly) => format!(
                "rotated 180 degrees, as jAER shows it: x = {} - x_raw, y = {} - y_raw",
                width - 1,
                height - 1
            ),
            Mapping::Davis(JaerOrientation::Raw) => "raw: x = x_raw, y = y_raw".to_string(),
        }
    }
}

/// What one address word is.
enum Word {
    Pixel { x: i64, y: i64, on: bool },
    Trigger,
    Imu,
    Frame,
    BadAddress(u32),
}

/// Decodes one address word. `w1`/`h1` are width − 1 and height − 1 (DAVIS flips with them).
#[inline(always)]
fn classify(mapping: Mapping, address: u32, w1: i64, h1: i64) -> Word {
    match mapping {
        Mapping::Dvs128(orientation) => {
            if address & !DVS128_PIXEL_BITS != 0 {
                return if address & DVS128_SPECIAL_BITS != 0 {
                    Word::Trigger
                } else {
                    Word::BadAddress(address)
                };
            }
            let x_raw = i64::from((address >> DVS128_X_SHIFT) & DVS128_FIELD_MASK);
            let y_raw = i64::from((address >> DVS128_Y_SHIFT) & DVS128_FIELD_MASK);
            let on = address & 1 == 0;
            let max = i64::from(DVS128_MAX);
            match orientation {
                JaerOrientation::Spikingjelly => Word::Pixel {
                    x: max - y_raw,
                    y: max - x_raw,
                    on,
                },
                JaerOrientation::Raw => Word::Pixel {
                    x: x_raw,
                    y: y_raw,
                    on,
                },
            }
        }
        Mapping::Davis(orientation) => {
            if address & DAVIS_NOT_DVS_BIT != 0 {
                return if address & DAVIS_IMU_BITS == DAVIS_IMU_BITS {
                    Word::Imu
                } else {
                    Word::Frame
                };
            }
            if address & DAVIS_TYPE_MASK == DAVIS_EXTERNAL_INPUT {
                return Word::Trigger;
            }
            let x_raw = i64::from((address >> DAVIS_X_SHIFT) & DAVIS_X_MASK);
            let y_raw = i64::from((address >> DAVIS_Y_SHIFT) & DAVIS_Y_MASK);
            let on = address & DAVIS_POLARITY_BIT != 0;
            match orientation {
                JaerOrientation::Spikingjelly => Word::Pixel {
                    x: w1 - x_raw,
                    y: h1 - y_raw,
                    on,
                },
                JaerOrientation::Raw => Word::Pixel {
                    x: x_raw,
                    y: y_raw,
                    on,
                },
            }
        }
    }
}

/// The resolution and layout a jAER chip class implies, matched on the class's simple name.
fn chip_geometry(chip: &str) -> Option<(Aedat2Layout, (u16, u16))> {
    // Our encoder's name for DAVIS-layout sizes jAER has no class for: `inflor.Davis<W>x<H>`.
    // Checked first: `inflor.Davis346x404` must not match the Davis346 prefix below.
    if let Some(size) = chip.strip_prefix(GENERIC_DAVIS_CHIP) {
        let (w, h) = size.split_once('x')?;
        return Some((Aedat2Layout::Davis, (w.parse().ok()?, h.parse().ok()?)));
    }
    let simple = chip.rsplit('.').next().unwrap_or(chip).trim();
    let lower = simple.to_ascii_lowercase();
    if lower.starts_with("dvs128") || lower.starts_with("tmpdiff128") {
        return Some((Aedat2Layout::Dvs128, (128, 128)));
    }
    if lower.starts_with("davis240") || lower.starts_with("sbret10") {
        return Some((Aedat2Layout::Davis, (240, 180)));
    }
    if lower.starts_with("davis346") {
        return Some((Aedat2Layout::Davis, (346, 260)));
    }
    if lower.starts_with("davis208") {
        return Some((Aedat2Layout::Davis, (208, 192)));
    }
    None
}

/// Where the decoder is in the stream.
#[derive(Debug)]
enum Stage {
    /// Reading `#` lines.
    Header(HeaderReader),
    /// Reading records.
    Body,
}

/// The header parse in progress.
#[derive(Debug, Default)]
struct HeaderReader {
    /// The current `#` line so far, without its `\n`.
    line: Vec<u8>,
    /// Bytes of complete header lines.
    consumed: u64,
    version: Option<Version>,
    chip: Option<String>,
}

/// What a byte does to a `#` line in progress.
enum LineStep {
    /// Part of the line.
    Text,
    /// The line's `\n`.
    End,
    /// Not text: the line was binary data all along.
    Binary,
}

impl HeaderReader {
    fn step(&self, byte: u8) -> LineStep {
        if byte == b'\n' {
            return LineStep::End;
        }
        // A `\r` is only text right before the `\n`.
        if self.line.last() == Some(&b'\r') {
            return LineStep::Binary;
        }
        if byte < 0x20 && byte != b'\t' && byte != b'\r' || byte == 0x7F {
            LineStep::Binary
        } else {
            LineStep::Text
        }
    }

    /// Parses a complete line; returns whether it ends the header.
    fn parse_line(&mut self, offset: u64) -> Result<bool, DecodeError> {
        let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
        let content = line.get(1..).unwrap_or_default();
        if let Some(version) = content.strip_prefix(VERSION_PREFIX) {
            if self.version.is_none() {
                self.version = Some(parse_version(version, offset)?);
            }
            return Ok(false);
        }
        let trimmed = content.trim_ascii();
        if let Some(chip) = trimmed.strip_prefix(CHIP_PREFIX) {
            let chip = String::from_utf8_lossy(chip.trim_ascii());
            self.chip = Some(chip.chars().take(MAX_CHIP_NAME).collect());
            return Ok(false);
        }
        Ok(trimmed.eq_ignore_ascii_case(END_OF_HEADER))
    }
}

/// Parses the text after `#!AER-DAT` (e.g. `2.0`); jAER goes by the integer part.
fn parse_version(text: &[u8], offset: u64) -> Result<Version, DecodeError> {
    let text = String::from_utf8_lossy(text.trim_ascii());
    let bad = |why: &str| {
        DecodeError::new(
            Format::Aedat2,
            offset,
            DecodeErrorKind::BadHeader(format!("version line #!AER-DAT{text}: {why}")),
        )
    };
    let major = text
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
        .ok_or_else(|| bad("expected a version number such as 2.0"))?;
    match major {
        1 => Ok(Version::V1),
        2 => Ok(Version::V2),
        3 => Err(bad("this is AEDAT 3.x; decode it with the aedat3 format")),
        _ => Err(bad("only AEDAT 1.x and 2.x are jAER formats")),
    }
}

/// Streaming decoder for jAER AEDAT 1.0 / 2.0 (see the module docs for the rules it applies).
pub type Aedat2Decoder = Sticky<Aedat2Records>;

/// The jAER side of [`Aedat2Decoder`].
pub struct Aedat2Records {
    options: DecodeOptions,
    stage: Stage,
    version: Version,
    mapping: Mapping,
    /// Width − 1 and height − 1, for the DAVIS flip.
    max_xy: (i64, i64),
    info: Option<StreamInfo>,
    clock: WrappingClock<32>,
    /// The previous emitted event's timestamp.
    last_event: i64,
}

impl Aedat2Records {
    /// Decides layout, resolution and record size once the header is complete.
    fn resolve(&mut self, header: &HeaderReader) -> Result<(), DecodeError> {
        let offset = header.consumed;
        let bad = |message: String| {
            DecodeError::new(Format::Aedat2, offset, DecodeErrorKind::BadHeader(message))
        };
        // jAER reads files without a version line as 1.0 (16-bit addresses).
        let version = header.version.unwrap_or(Version::V1);
        let from_chip = match &header.chip {
            Some(chip) => match chip_geometry(chip) {
                Some(geometry) => Some(geometry),
                None if self.options.aedat2_layout.is_some() => None,
                None => {
                    return Err(bad(format!(
                        "unknown AEChip {chip:?}: give the address layout (--aedat2-layout) and \
                         --resolution WxH"
                    )));
                }
            },
            None => None,
        };
        let layout = self
            .options
            .aedat2_layout
            .or(from_chip.map(|(layout, _)| layout))
            .unwrap_or(Aedat2Layout::Dvs128);
        let layout_default = match layout {
            Aedat2Layout::Dvs128 => Some((128, 128)),
            Aedat2Layout::Davis => None,
        };
        // The chip's size only applies to the layout it implies.
        let chip_size = from_chip
            .filter(|(l, _)| *l == layout)
            .map(|(_, size)| size);
        let (width, height) = self
            .options
            .resolution
            .or(chip_size)
            .or(layout_default)
            .ok_or_else(|| {
                bad("DAVIS layout without a known chip class: give --resolution WxH".into())
            })?;
        if width == 0 || height == 0 {
            return Err(bad(format!("sensor size {width}x{height} has no pixels")));
        }
        if layout == Aedat2Layout::Davis && version == Version::V1 {
            return Err(bad(
                "the DAVIS layout needs the 32-bit addresses of AEDAT 2.0, but the header says 1.x"
                    .into(),
            ));
        }
        self.version = version;
        let orientation = self.options.jaer_orientation;
        self.mapping = match layout {
            Aedat2Layout::Dvs128 => Mapping::Dvs128(orientation),
            Aedat2Layout::Davis => Mapping::Davis(orientation),
        };
        self.max_xy = (i64::from(width) - 1, i64::from(height) - 1);
        self.info = Some(StreamInfo {
            source: header.chip.clone(),
            orientation: Some(self.mapping.describe(width, height)),
            ..StreamInfo::new(width, height, version.name())
        });
        self.stage = Stage::Body;
        Ok(())
    }

    /// Reads header bytes. Returns `None` while the header goes on past `input`, else where the
    /// data starts: a `#` line that turned out to be binary (data to decode again) and the
    /// index in `input` of the first byte after the header.
    fn feed_header(&mut self, input: &[u8]) -> Result<Option<(Vec<u8>, usize)>, DecodeError> {
        let cap = self.options.max_record_bytes as u64;
        let Stage::Header(header) = &mut self.stage else {
            return Ok(Some((Vec::new(), 0)));
        };
        for (index, &byte) in input.iter().enumerate() {
            if header.line.is_empty() {
                if byte != b'#' {
                    return Ok(Some((Vec::new(), index)));
                }
            } else {
                match header.step(byte) {
                    LineStep::Text => {}
                    LineStep::End => {
                        let ends = header.parse_line(header.consumed)?;
                        header.consumed += header.line.len() as u64 + 1;
                        header.line.clear();
                        if ends {
                            return Ok(Some((Vec::new(), index + 1)));
                        }
                        continue;
                    }
                    LineStep::Binary => {
                        return Ok(Some((std::mem::take(&mut header.line), index)));
                    }
                }
            }
            if header.consumed + header.line.len() as u64 >= cap {
                return Err(DecodeError::new(
                    Format::Aedat2,
                    header.consumed,
                    DecodeErrorKind::TooLarge {
                        what: "AEDAT 2.0 header",
                        claimed: header.consumed + header.line.len() as u64 + 1,
                        max: cap,
                    },
                ));
            }
            header.line.push(byte);
        }
        Ok(None)
    }

    /// Ends the header at `input[start..]`, after `queued` bytes that looked like a header
    /// line but are data.
    fn end_header(&mut self, queued: &[u8], cx: &mut Cx<'_>) -> Result<(), DecodeError> {
        let stage = std::mem::replace(&mut self.stage, Stage::Body);
        if let Stage::Header(header) = stage {
            self.resolve(&header)?;
        }
        cx.replay(queued);
        Ok(())
    }

    /// Decodes whole records (`records.len()` is a multiple of the record size) starting at
    /// absolute offset `at`.
    fn decode_records(
        &mut self,
        records: &[u8],
        at: u64,
        cx: &mut Cx<'_>,
    ) -> Result<(), DecodeError> {
        match self.version {
            Version::V2 => {
                let (chunks, _) = records.as_chunks::<8>();
                self.decode_chunks(
                    chunks,
                    at,
                    |&[a0, a1, a2, a3, t0, t1, t2, t3]| {
                        (
                            u32::from_be_bytes([a0, a1, a2, a3]),
                            u32::from_be_bytes([t0, t1, t2, t3]),
                        )
                    },
                    cx,
                )
            }
            Version::V1 => {
                let (chunks, _) = records.as_chunks::<6>();
                self.decode_chunks(
                    chunks,
                    at,
                    |&[a0, a1, t0, t1, t2, t3]| {
                        (
                            u32::from(u16::from_be_bytes([a0, a1])),
                            u32::from_be_bytes([t0, t1, t2, t3]),
                        )
                    },
                    cx,
                )
            }
        }
    }

    /// The hot loop: one pass over whole records, no allocation beyond `out`'s one reserve.
    #[inline(always)]
    fn decode_chunks<const N: usize>(
        &mut self,
        chunks: &[[u8; N]],
        at: u64,
        split: impl Fn(&[u8; N]) -> (u32, u32),
        cx: &mut Cx<'_>,
    ) -> Result<(), DecodeError> {
        let (out, stats, lenient) = cx.parts(chunks.len());
        let mapping = self.mapping;
        let (w1, h1) = self.max_xy;
        let mut clock = self.clock;
        let mut last_event = self.last_event;
        let (mut regressions, mut triggers, mut imu, mut frames) = (0u64, 0u64, 0u64, 0u64);
        let mut result = Ok(());
        for (i, chunk) in chunks.iter().enumerate() {
            let (address, raw_t) = split(chunk);
            clock.advance(u64::from(raw_t));
            let t = clock.value;
            let kind = match classify(mapping, address, w1, h1) {
                Word::Pixel { x, y, on } => {
                    if (x as u64) <= w1 as u64 && (y as u64) <= h1 as u64 {
                        regressions += u64::from(t < last_event);
                        last_event = t;
                        out.push(Event::new(t, x as u16, y as u16, on));
                        continue;
                    }
                    DecodeErrorKind::OutOfRange {
                        x,
                        y,
                        width: (w1 + 1) as u16,
                        height: (h1 + 1) as u16,
                    }
                }
                Word::Trigger => {
                    triggers += 1;
                    continue;
                }
                Word::Imu => {
                    imu += 1;
                    continue;
                }
                Word::Frame => {
                    frames += 1;
                    continue;
                }
                Word::BadAddress(address) => DecodeErrorKind::Unexpected {
                    expected: "a DVS128 address (bits 16-30 clear)".into(),
                    found: format!("address 0x{address:08x}"),
                },
            };
            let error = DecodeError::new(Format::Aedat2, at + (i * N) as u64, kind);
            if let Err(e) = skip_or_fail(stats, lenient, error) {
                result = Err(e);
                break;
            }
        }
        self.clock = clock;
        self.last_event = last_event;
        stats.timestamp_regressions += regressions;
        stats.triggers_skipped += triggers;
        stats.imu_skipped += imu;
        stats.frames_skipped += frames;
        result
    }
}

impl RecordDecoder for Aedat2Records {
    const FORMAT: Format = Format::Aedat2;

    fn new(options: &DecodeOptions) -> Self {
        Self {
            options: options.clone(),
            stage: Stage::Header(HeaderReader::default()),
            version: Version::V2,
            mapping: Mapping::Dvs128(options.jaer_orientation),
            max_xy: (127, 127),
            info: None,
            clock: WrappingClock::default(),
            last_event: i64::MIN,
        }
    }

    fn decode(&mut self, input: &[u8], at: u64, cx: &mut Cx<'_>) -> Result<usize, DecodeError> {
        let mut start = 0;
        if matches!(self.stage, Stage::Header(_)) {
            match self.feed_header(input)? {
                None => return Ok(input.len()),
                Some((queued, data)) => {
                    self.end_header(&queued, cx)?;
                    if !queued.is_empty() {
                        // The replayed line goes first: decode it before the rest.
                        return Ok(data);
                    }
                    start = data;
                }
            }
        }
        let size = self.version.record_bytes();
        let rest = input.get(start..).unwrap_or_default();
        let whole = (rest.len() / size).min(cx.room()) * size;
        self.decode_records(rest.get(..whole).unwrap_or_default(), at + start as u64, cx)?;
        Ok(start + whole)
    }

    fn need(&self, _partial: &[u8]) -> Result<usize, DecodeError> {
        Ok(self.version.record_bytes())
    }

    fn finish(&mut self, partial: &[u8], at: u64, cx: &mut Cx<'_>) -> Result<(), DecodeError> {
        if let Stage::Header(header) = &self.stage {
            if !header.line.is_empty() {
                return Err(DecodeError::new(
                    Format::Aedat2,
                    header.consumed,
                    DecodeErrorKind::Truncated {
                        what: "AEDAT 2.0 header line (no line end)",
                        expected: header.line.len() as u64 + 1,
                        found: header.line.len() as u64,
                    },
                ));
            }
            if header.consumed == 0 {
                return Err(DecodeError::new(
                    Format::Aedat2,
                    0,
                    DecodeErrorKind::Truncated {
                        what: "AEDAT file (empty)",
                        expected: 1,
                        found: 0,
                    },
                ));
            }
            // A header-only file: no events, but the header still says what the stream is.
            self.end_header(&[], cx)?;
        }
        let size = self.version.record_bytes();
        truncated_tail(Format::Aedat2, "AEDAT 2.0 event record", size, partial, at)
    }

    fn info(&self) -> Option<&StreamInfo> {
        self.info.as_ref()
    }
}

/// Which address layout an [`Aedat2Encoder`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EncodeLayout {
    Dvs128(JaerOrientation),
    Davis {
        width: u16,
        height: u16,
        orientation: JaerOrientation,
    },
}

/// Writes events as a jAER AEDAT 2.0 file that [`Aedat2Decoder`] (with default options) decodes
/// back to the same events.
///
/// Timestamps are written modulo 2^32, as the sensor's counter wraps: the first must lie in
/// `0..=u32::MAX` µs, and each later one less than 2^31 µs from the one before (a larger
/// step would read as a wrap the other way). The header ends with jAER's
/// `#End Of ASCII Header` line, so a first record starting with `#` cannot be mistaken for
/// header text.
#[derive(Debug, Clone)]
pub struct Aedat2Encoder {
    layout: EncodeLayout,
    header_written: bool,
    /// Events written so far (for error messages).
    index: u64,
    /// The previous event's timestamp.
    previous: Option<i64>,
}

impl Aedat2Encoder {
    /// DVS128 layout (CIFAR10-DVS, MNIST-DVS), 128×128, with `orientation` mapping inflor's
    /// coordinates back to the raw address bits.
    pub fn dvs128(orientation: JaerOrientation) -> Self {
        Self::with_layout(EncodeLayout::Dvs128(orientation))
    }

    /// DAVIS layout for a `width`×`height` sensor (at most 1024×512, the address fields' range),
    /// with `orientation` mapping inflor's coordinates back to the raw address bits. The
    /// `# AEChip:` line names the jAER class for 240×180 and 346×260 and
    /// `inflor.Davis<W>x<H>` otherwise; the decoder maps all of them back to the size.
    pub fn davis(width: u16, height: u16, orientation: JaerOrientation) -> Self {
        Self::with_layout(EncodeLayout::Davis {
            width,
            height,
            orientation,
        })
    }

    fn with_layout(layout: EncodeLayout) -> Self {
        Self {
            layout,
            header_written: false,
            index: 0,
            previous: None,
        }
    }

    /// The chip class line's value.
    fn chip(&self) -> String {
        match self.layout {
            EncodeLayout::Dvs128(_) => DVS128_CHIP.to_string(),
            EncodeLayout::Davis {
                width: 240,
                height: 180,
                ..
            } => "eu.seebetter.ini.chips.davis.DAVIS240C".to_string(),
            EncodeLayout::Davis {
                width: 346,
                height: 260,
                ..
            } => "eu.seebetter.ini.chips.davis.Davis346B".to_string(),
            EncodeLayout::Davis { width, height, .. } => {
                format!("{GENERIC_DAVIS_CHIP}{width}x{height}")
            }
        }
    }

    fn write_header(&mut self, out: &mut Vec<u8>) {
        if self.header_written {
            return;
        }
        out.extend_from_slice(HEADER_PREAMBLE.as_bytes());
        out.extend_from_slice(format!("# AEChip: {}\r\n", self.chip()).as_bytes());
        out.extend_from_slice(b"#");
        out.extend_from_slice(END_OF_HEADER);
        out.extend_from_slice(b"\r\n");
        self.header_written = true;
    }

    /// The raw address of `event`, or why it has none.
    fn address(&self, event: &Event) -> Result<u32, String> {
        let (x, y) = (u32::from(event.x), u32::from(event.y));
        match self.layout {
            EncodeLayout::Dvs128(orientation) => {
                let max = u32::from(DVS128_MAX);
                if x > max || y > max {
                    return Err(format!("({x}, {y}) is outside the 128x128 DVS128 array"));
                }
                let (x_raw, y_raw) = match orientation {
                    JaerOrientation::Spikingjelly => (max - y, max - x),
                    JaerOrientation::Raw => (x, y),
                };
                let off = u32::from(!event.polarity);
                Ok((y_raw << DVS128_Y_SHIFT) | (x_raw << DVS128_X_SHIFT) | off)
            }
            EncodeLayout::Davis {
                width,
                height,
                orientation,
            } => {
                let (w, h) = (u32::from(width), u32::from(height));
                if w == 0 || h == 0 || w > DAVIS_X_MASK + 1 || h > DAVIS_Y_MASK + 1 {
                    return Err(format!(
                        "the DAVIS layout holds 1x1 to 1024x512 pixels, not {w}x{h}"
                    ));
                }
                if x >= w || y >= h {
                    return Err(format!("({x}, {y}) is outside the {w}x{h} sensor"));
                }
                let on = if event.polarity {
                    DAVIS_POLARITY_BIT
                } else {
                    0
                };
                let (x_raw, y_raw) = match orientation {
                    JaerOrientation::Spikingjelly => (w - 1 - x, h - 1 - y),
                    JaerOrientation::Raw => (x, y),
                };
                Ok((y_raw << DAVIS_Y_SHIFT) | (x_raw << DAVIS_X_SHIFT) | on)
            }
        }
    }

    /// The raw timestamp of `event`, or why it has none.
    fn timestamp(&self, event: &Event) -> Result<u32, String> {
        match self.previous {
            None if u32::try_from(event.t).is_err() => Err(format!(
                "the first timestamp, {} µs, is outside 0..=2^32-1",
                event.t
            )),
            Some(previous)
                if (i128::from(event.t) - i128::from(previous)).unsigned_abs()
                    > MAX_STEP as u128 =>
            {
                Err(format!(
                    "timestamp {} µs is 2^31 µs or more from the previous {previous} µs, \
                     which readers take for a counter wrap",
                    event.t
                ))
            }
            // Modulo 2^32: the decoder's clock unwraps it.
            _ => Ok(event.t as u32),
        }
    }
}

impl Encoder for Aedat2Encoder {
    fn begin(&mut self, _info: &StreamInfo, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        // The layout chosen at construction fixes the resolution; `info` adds nothing a jAER
        // header can carry.
        self.write_header(out);
        Ok(())
    }

    fn encode(&mut self, events: &[Event], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.write_header(out);
        out.reserve(events.len() * 8);
        for event in events {
            let record = self
                .address(event)
                .and_then(|address| Ok((address, self.timestamp(event)?)));
            let (address, raw) = record.map_err(|reason| EncodeError::Unrepresentable {
                index: self.index,
                event: *event,
                reason,
            })?;
            out.extend_from_slice(&address.to_be_bytes());
            out.extend_from_slice(&raw.to_be_bytes());
            self.previous = Some(event.t);
            self.index += 1;
        }
        Ok(())
    }

    fn end(&mut self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.write_header(out);
        Ok(())
    }
}

/// Encodes `events` as a complete DVS128 AEDAT 2.0 file (CIFAR10-DVS style).
pub fn encode_dvs128(
    events: &[Event],
    orientation: JaerOrientation,
) -> Result<Vec<u8>, EncodeError> {
    let mut encoder = Aedat2Encoder::dvs128(orientation);
    let mut out = Vec::with_capacity(256 + events.len() * 8);
    encoder.encode(events, &mut out)?;
    encoder.end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{Decoded, decode};
    use proptest::prelude::*;

    /// Decodes `bytes`, failing the test on an error.
    fn decode_all(bytes: &[u8], options: &DecodeOptions) -> Result<Decoded, DecodeError> {
        let decoded = decode(Format::Aedat2, bytes, options);
        decoded.result.clone().map(|()| decoded)
    }

    /// Events with non-decreasing timestamps inside a `width`×`height` sensor.
    fn events_strategy(width: u16, height: u16) -> impl Strategy<Value = Vec<Event>> {
        (
            0u32..=u32::MAX / 2,
            prop::collection::vec((0u32..5000, 0..width, 0..height, any::<bool>()), 0..200),
        )
            .prop_map(|(start, steps)| {
                let mut t = i64::from(start);
                steps
                    .into_iter()
                    .map(|(dt, x, y, on)| {
                        t += i64::from(dt);
                        Event::new(t, x, y, on)
                    })
                    .collect()
            })
    }

    proptest! {
        #[test]
        fn dvs128_round_trips_in_both_orientations(
            events in events_strategy(128, 128),
            raw in any::<bool>(),
        ) {
            let orientation = if raw { JaerOrientation::Raw } else { JaerOrientation::Spikingjelly };
            let bytes = encode_dvs128(&events, orientation).unwrap();
            let options = DecodeOptions { jaer_orientation: orientation, ..DecodeOptions::default() };
            let decoded = decode_all(&bytes, &options).unwrap();
            prop_assert_eq!(&decoded.events, &events);
            let info = decoded.info.unwrap();
            prop_assert_eq!((info.width, info.height), (128, 128));
        }

        #[test]
        fn davis_round_trips_for_any_size_in_both_orientations(
            (width, height, events) in (1u16..=1024, 1u16..=512)
                .prop_flat_map(|(w, h)| (Just(w), Just(h), events_strategy(w, h))),
            raw in any::<bool>(),
        ) {
            let orientation = if raw { JaerOrientation::Raw } else { JaerOrientation::Spikingjelly };
            let mut encoder = Aedat2Encoder::davis(width, height, orientation);
            let mut bytes = Vec::new();
            let info = StreamInfo::new(width, height, "AEDAT 2.0");
            encoder.begin(&info, &mut bytes).unwrap();
            encoder.encode(&events, &mut bytes).unwrap();
            encoder.end(&mut bytes).unwrap();
            let options = DecodeOptions { jaer_orientation: orientation, ..DecodeOptions::default() };
            let decoded = decode_all(&bytes, &options).unwrap();
            prop_assert_eq!(&decoded.events, &events);
            let info = decoded.info.unwrap();
            prop_assert_eq!((info.width, info.height), (width, height));
            prop_assert_eq!(info.orientation.unwrap().starts_with("raw"), raw);
        }
    }

    #[test]
    fn davis240_header_names_the_jaer_chip() {
        let mut encoder = Aedat2Encoder::davis(240, 180, JaerOrientation::default());
        let mut bytes = Vec::new();
        encoder
            .encode(&[Event::new(5, 1, 2, true)], &mut bytes)
            .unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("# AEChip: eu.seebetter.ini.chips.davis.DAVIS240C\r\n"));
        assert!(text.starts_with("#!AER-DAT2.0\r\n"));
    }

    #[test]
    fn record_starting_with_hash_is_data_not_header() {
        // y_raw = 140 puts 0x23 ('#') in the first address byte of a DAVIS polarity word.
        let event = Event::new(1000, 10, 179 - 140, true);
        let mut encoder = Aedat2Encoder::davis(240, 180, JaerOrientation::default());
        let mut bytes = Vec::new();
        encoder.encode(&[event], &mut bytes).unwrap();
        assert_eq!(bytes[bytes.len() - 8], b'#');
        let decoded = decode_all(&bytes, &DecodeOptions::default()).unwrap();
        assert_eq!(decoded.events, vec![event]);
        // Without the end-of-header line the text rule still finds the record: its timestamp
        // bytes are 0x00.
        let marker = b"#End Of ASCII Header\r\n";
        let at = bytes
            .windows(marker.len())
            .position(|w| w == marker)
            .unwrap();
        let mut legacy = bytes[..at].to_vec();
        legacy.extend_from_slice(&bytes[at + marker.len()..]);
        let decoded = decode_all(&legacy, &DecodeOptions::default()).unwrap();
        assert_eq!(decoded.events, vec![event]);
    }

    #[test]
    fn unrepresentable_events_are_rejected() {
        let bad = [
            Event::new(-1, 0, 0, true),
            Event::new(i64::from(u32::MAX) + 1, 0, 0, true),
            Event::new(0, 128, 0, true),
            Event::new(0, 0, 128, false),
        ];
        for event in bad {
            let error = encode_dvs128(&[event], JaerOrientation::Spikingjelly).unwrap_err();
            assert!(
                matches!(error, EncodeError::Unrepresentable { index: 0, .. }),
                "{error}"
            );
        }
        let wrap_like = [
            Event::new(3_000_000_000, 0, 0, true),
            Event::new(3_000_000_000 - (1 << 31), 0, 0, true),
        ];
        let error = encode_dvs128(&wrap_like, JaerOrientation::Raw).unwrap_err();
        assert!(matches!(
            error,
            EncodeError::Unrepresentable { index: 1, .. }
        ));
        let mut encoder = Aedat2Encoder::davis(2000, 10, JaerOrientation::default());
        let error = encoder
            .encode(&[Event::new(0, 0, 0, true)], &mut Vec::new())
            .unwrap_err();
        assert!(matches!(error, EncodeError::Unrepresentable { .. }));
    }

    #[test]
    fn davis_words_are_sorted_by_kind() {
        let mut bytes =
            b"#!AER-DAT2.0\r\n# AEChip: eu.seebetter.ini.chips.davis.DAVIS240C\r\n".to_vec();
        let words: [u32; 5] = [
            0x8000_0000 | (5 << 22) | (6 << 12) | 300, // APS reset read
            0x8000_0400 | 300,                         // APS signal read
            0x8000_0C00 | (3 << 28),                   // IMU
            (1 << 10) | (2 << 22),                     // external input
            (179 << 22) | (239 << 12) | (3 << 10),     // DVS ON with bit 10 set: still a DVS event
        ];
        for (i, word) in words.into_iter().enumerate() {
            bytes.extend_from_slice(&word.to_be_bytes());
            bytes.extend_from_slice(&(i as u32).to_be_bytes());
        }
        let decoded = decode_all(&bytes, &DecodeOptions::default()).unwrap();
        assert_eq!(decoded.events, [Event::new(4, 0, 0, true)]);
        let stats = &decoded.stats;
        assert_eq!(
            (
                stats.frames_skipped,
                stats.imu_skipped,
                stats.triggers_skipped
            ),
            (2, 1, 1)
        );
    }

    #[test]
    fn wrap_adds_2_pow_32_and_small_drops_are_regressions() {
        let mut bytes = b"#!AER-DAT2.0\r\n".to_vec();
        for raw_t in [4_000_000_000u32, 3_999_999_000, 100] {
            bytes.extend_from_slice(&0u32.to_be_bytes());
            bytes.extend_from_slice(&raw_t.to_be_bytes());
        }
        let decoded = decode_all(&bytes, &DecodeOptions::default()).unwrap();
        let times: Vec<i64> = decoded.events.iter().map(|e| e.t).collect();
        assert_eq!(times, [4_000_000_000, 3_999_999_000, (1 << 32) + 100]);
        assert_eq!(decoded.stats.timestamp_regressions, 1);
    }

    #[test]
    fn encoder_wraps_timestamps_past_2_pow_32_and_refuses_big_steps() {
        let events = [
            Event::new(4_000_000_000, 0, 0, true),
            Event::new(5_000_000_000, 1, 0, true),
            Event::new(4_999_999_999, 2, 0, false),
        ];
        let bytes = encode_dvs128(&events, JaerOrientation::Raw).unwrap();
        let raw = DecodeOptions {
            jaer_orientation: JaerOrientation::Raw,
            ..DecodeOptions::default()
        };
        assert_eq!(decode_all(&bytes, &raw).unwrap().events, events);
        let far = [Event::new(0, 0, 0, true), Event::new(1 << 31, 0, 0, true)];
        let error = encode_dvs128(&far, JaerOrientation::Raw).unwrap_err();
        assert!(matches!(
            error,
            EncodeError::Unrepresentable { index: 1, .. }
        ));
        assert!(!error.to_string().contains("Event {"), "{error}");
    }
}
