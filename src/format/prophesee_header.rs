//! The `%`-line ASCII header shared by Prophesee RAW (EVT 2.0 / 3.0) and DAT files: a
//! resumable reader, the fields inflor uses, sensor geometry by generation, sniffing, the
//! writer the encoders use, and the RAW preamble the EVT 2.0 and EVT 3.0 decoders share.
//!
//! A header is a run of lines that each start with `%`. It ends at a `% end` line (written by
//! Metavision 2+ and by inflor's encoders) or at the first line that does not start with `%`;
//! that first byte already belongs to the data. Old files (2020 Gen3/Gen4.1 recordings) have no
//! `% end`, so, as in Metavision, data whose first byte happens to be `%` after such a header
//! is read as one more header line.
//!
//! Lines seen in real files: `% evt 2.0`, `% evt 3.0`, `% format EVT3;height=720;width=1280`,
//! `% geometry 1280x720`, `% plugin_name hal_plugin_gen3_fx3`, `% sensor_generation 4.1`,
//! and, in DAT files, `% Data file containing N9Chronocam7Event2dE events.`, `% Version 2`,
//! `% Width 304`, `% Height 240`. Unknown keys (`Date`, `serial_number`, ...) are ignored.
//!
//! # Time origin
//! faery writes `% t0 <µs>` (RAW) or `% T0 <µs>` (DAT): it subtracts the first event's time
//! from every timestamp and keeps it in the header. Readers that honour the line (faery, and
//! inflor) add it back, so timestamps come out as they were before writing; inflor reports
//! it in [`StreamInfo::t0`]. A file without the line has a time origin of 0.

use super::{DecodeError, DecodeErrorKind, DecodeOptions, Format};
use crate::event::StreamInfo;

/// The largest header inflor reads, whatever `max_record_bytes` allows: real headers are a
/// few hundred bytes, so a longer one is corrupt input or not a Prophesee file.
pub const MAX_HEADER_BYTES: usize = 1 << 20;

/// The event encoding a RAW header declares (`% evt ...` or `% format ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawEncoding {
    /// EVT 2.0: 32-bit words.
    Evt2,
    /// EVT 2.1: 64-bit vectorised words (inflor does not decode it).
    Evt21,
    /// EVT 3.0: 16-bit words.
    Evt3,
    /// Anything else, as written.
    Other(String),
}

impl RawEncoding {
    fn parse(name: &str) -> Self {
        match name.to_ascii_uppercase().as_str() {
            "2" | "2.0" | "EVT2" | "EVT2.0" | "EVT20" => RawEncoding::Evt2,
            "2.1" | "EVT2.1" | "EVT21" => RawEncoding::Evt21,
            "3" | "3.0" | "EVT3" | "EVT3.0" | "EVT30" => RawEncoding::Evt3,
            _ => RawEncoding::Other(name.to_string()),
        }
    }

    /// The name used in messages.
    pub fn name(&self) -> &str {
        match self {
            RawEncoding::Evt2 => "EVT 2.0",
            RawEncoding::Evt21 => "EVT 2.1",
            RawEncoding::Evt3 => "EVT 3.0",
            RawEncoding::Other(name) => name,
        }
    }
}

/// What a Prophesee header says, as far as decoding is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PropheseeHeader {
    /// The declared RAW encoding, from `% evt` or `% format`.
    pub encoding: Option<RawEncoding>,
    /// Sensor size `(width, height)` from `% format ...;width=;height=`, else `% geometry`,
    /// else DAT's `% Width` / `% Height` pair.
    pub geometry: Option<(u16, u16)>,
    /// `% plugin_name`, e.g. `hal_plugin_gen3_fx3`.
    pub plugin_name: Option<String>,
    /// `% sensor_generation` / `% generation` (e.g. `4.1`) or `% sensor_name` (e.g. `IMX636`).
    pub sensor: Option<String>,
    /// The class named by DAT's `% Data file containing <class> events.` line.
    pub dat_event_class: Option<String>,
    /// DAT's `% Version` line (`1` or `2`), as written.
    pub version: Option<String>,
    /// The time origin of `% t0` / `% T0`, in µs (see the module docs).
    pub t0: Option<i64>,
    /// Header length in bytes, including the final newline.
    pub len: usize,
    /// Whether the header had any `%` line at all.
    pub present: bool,
    geometry_from_format: Option<(u16, u16)>,
    geometry_from_line: Option<(u16, u16)>,
    dat_width: Option<u16>,
    dat_height: Option<u16>,
}

impl PropheseeHeader {
    /// Parses the text of one header line (without the leading `%` and the newline).
    /// Returns `Ok(true)` for the `end` line.
    fn parse_line(&mut self, line: &str) -> Result<bool, String> {
        self.present = true;
        let line = line.trim();
        let (key, value) = match line.split_once(char::is_whitespace) {
            Some((key, value)) => (key, value.trim()),
            None => (line, ""),
        };
        match key {
            "end" if value.is_empty() => return Ok(true),
            "evt" => self.set_encoding(RawEncoding::parse(value))?,
            "format" => {
                let mut parts = value.split(';');
                let name = parts.next().unwrap_or_default().trim();
                self.set_encoding(RawEncoding::parse(name))?;
                let (mut width, mut height) = (None, None);
                for part in parts {
                    match part.trim().split_once('=') {
                        Some(("width", v)) => width = Some(parse_dimension(v, line)?),
                        Some(("height", v)) => height = Some(parse_dimension(v, line)?),
                        _ => {}
                    }
                }
                if let (Some(w), Some(h)) = (width, height) {
                    self.geometry_from_format = Some((w, h));
                }
            }
            "geometry" => {
                let (w, h) = value
                    .split_once('x')
                    .ok_or_else(|| format!("line {line:?}: expected `geometry WIDTHxHEIGHT`"))?;
                self.geometry_from_line =
                    Some((parse_dimension(w, line)?, parse_dimension(h, line)?));
            }
            "Version" => self.version = Some(value.to_string()),
            "t0" | "T0" => {
                let t0 = value.parse::<i64>().map_err(|_| {
                    format!("line {line:?}: expected a time origin in whole µs, found {value:?}")
                })?;
                self.t0 = Some(t0);
            }
            "Width" => self.dat_width = Some(parse_dimension(value, line)?),
            "Height" => self.dat_height = Some(parse_dimension(value, line)?),
            "plugin_name" => self.plugin_name = Some(value.to_string()),
            "sensor_generation" | "generation" | "sensor_name" => {
                self.sensor = Some(value.to_string());
            }
            "Data" => {
                // "Data file containing <class> events."
                if let Some(rest) = value.strip_prefix("file containing") {
                    let class = rest.trim().trim_end_matches('.').trim();
                    let class = class.strip_suffix("events").unwrap_or(class).trim();
                    self.dat_event_class = Some(class.to_string());
                }
            }
            _ => {}
        }
        self.geometry = self.geometry_from_format.or(self.geometry_from_line).or(
            match (self.dat_width, self.dat_height) {
                (Some(w), Some(h)) => Some((w, h)),
                _ => None,
            },
        );
        Ok(false)
    }

    fn set_encoding(&mut self, encoding: RawEncoding) -> Result<(), String> {
        match &self.encoding {
            Some(previous) if *previous != encoding => Err(format!(
                "the header declares both {} and {}",
                previous.name(),
                encoding.name()
            )),
            _ => {
                self.encoding = Some(encoding);
                Ok(())
            }
        }
    }

    /// Whether this reads as a DAT header (the `Data file containing` line, or DAT's
    /// capitalised `Width`/`Height` keys) rather than a RAW one.
    pub fn looks_like_dat(&self) -> bool {
        self.encoding.is_none()
            && (self.dat_event_class.is_some()
                || self.dat_width.is_some()
                || self.dat_height.is_some())
    }

    /// The sensor name for [`crate::event::StreamInfo::source`]: the plugin, else the sensor.
    pub fn source(&self) -> Option<String> {
        self.plugin_name.clone().or_else(|| self.sensor.clone())
    }

    /// The RAW encoding implied by the sensor generation when no `evt`/`format` line says it:
    /// Gen3 sensors stream EVT 2.0, Gen4 / Gen4.1 / IMX636 stream EVT 3.0 (Metavision's
    /// defaults for those plugins).
    pub fn encoding_by_generation(&self) -> Option<RawEncoding> {
        match self.generation()? {
            Generation::Gen3 => Some(RawEncoding::Evt2),
            Generation::Gen4 => Some(RawEncoding::Evt3),
            Generation::GenX320 => None,
        }
    }

    /// The sensor size implied by the generation: Gen3 / Gen3.1 are VGA 640×480,
    /// Gen4 / Gen4.1 / IMX636 are HD 1280×720, GenX320 is 320×320.
    pub fn geometry_by_generation(&self) -> Option<(u16, u16)> {
        Some(match self.generation()? {
            Generation::Gen3 => (640, 480),
            Generation::Gen4 => (1280, 720),
            Generation::GenX320 => (320, 320),
        })
    }

    fn generation(&self) -> Option<Generation> {
        let names = [self.plugin_name.as_deref(), self.sensor.as_deref()];
        names.into_iter().flatten().find_map(|name| {
            let name = name.to_ascii_lowercase();
            if name.contains("genx320") || name.contains("gen_x320") {
                Some(Generation::GenX320)
            } else if name.contains("gen4") || name.contains("imx636") || name.starts_with('4') {
                Some(Generation::Gen4)
            } else if name.contains("gen3") || name.starts_with('3') {
                Some(Generation::Gen3)
            } else {
                None
            }
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Generation {
    Gen3,
    Gen4,
    GenX320,
}

fn parse_dimension(text: &str, line: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(0) | Err(_) => Err(format!(
            "line {line:?}: expected a sensor dimension in 1..=65535, found {:?}",
            text.trim()
        )),
        Ok(v) => Ok(v),
    }
}

/// Why a header could not be read. The decoders turn this into a [`super::DecodeError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// A line's content is malformed; `offset` is where the line starts.
    Bad {
        /// Byte offset of the line.
        offset: u64,
        /// What was wrong.
        message: String,
    },
    /// The header is longer than the limit.
    TooLarge {
        /// The limit.
        max: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReaderState {
    /// At the start of a line: the next byte decides whether the header goes on.
    LineStart,
    /// Inside a `%` line.
    InLine,
    /// The header is complete.
    Done,
}

/// Reads a header from chunks of any size, consuming exactly the header's bytes.
#[derive(Debug, Clone)]
pub struct HeaderReader {
    state: ReaderState,
    line: Vec<u8>,
    line_start: usize,
    consumed: usize,
    max: usize,
    header: PropheseeHeader,
}

impl HeaderReader {
    /// A reader that accepts at most `max` header bytes (capped at [`MAX_HEADER_BYTES`]).
    pub fn new(max: usize) -> Self {
        Self {
            state: ReaderState::LineStart,
            line: Vec::new(),
            line_start: 0,
            consumed: 0,
            max: max.min(MAX_HEADER_BYTES),
            header: PropheseeHeader::default(),
        }
    }

    /// Consumes header bytes from the front of `input`. Returns how many bytes belong to the
    /// header and whether the header is now complete (the rest of `input` is data).
    pub fn feed(&mut self, input: &[u8]) -> Result<(usize, bool), HeaderError> {
        let mut used = 0;
        loop {
            match self.state {
                ReaderState::Done => return Ok((used, true)),
                ReaderState::LineStart => {
                    let Some(&first) = input.get(used) else {
                        return Ok((used, false));
                    };
                    if first != b'%' {
                        self.state = ReaderState::Done;
                        continue;
                    }
                    self.line_start = self.consumed;
                    self.line.clear();
                    self.advance(1)?;
                    used += 1;
                    self.state = ReaderState::InLine;
                }
                ReaderState::InLine => {
                    let rest = input.get(used..).unwrap_or_default();
                    match rest.iter().position(|&b| b == b'\n') {
                        Some(newline) => {
                            self.advance(newline + 1)?;
                            self.line.extend_from_slice(&rest[..newline]);
                            used += newline + 1;
                            let text = String::from_utf8_lossy(&self.line).into_owned();
                            let end = self.header.parse_line(&text).map_err(|message| {
                                HeaderError::Bad {
                                    offset: self.line_start as u64,
                                    message,
                                }
                            })?;
                            self.state = if end {
                                ReaderState::Done
                            } else {
                                ReaderState::LineStart
                            };
                        }
                        None => {
                            self.advance(rest.len())?;
                            self.line.extend_from_slice(rest);
                            return Ok((input.len(), false));
                        }
                    }
                }
            }
        }
    }

    /// Counts `n` more header bytes, failing once the header would exceed the limit; the
    /// check depends only on the total, so every chunking fails at the same point.
    fn advance(&mut self, n: usize) -> Result<(), HeaderError> {
        self.consumed += n;
        if self.consumed > self.max {
            return Err(HeaderError::TooLarge { max: self.max });
        }
        Ok(())
    }

    /// Declares the end of input. A header cut inside a line is an error: `Err(found)` gives
    /// the bytes of the unfinished line.
    pub fn finish(&mut self) -> Result<(), u64> {
        match self.state {
            ReaderState::InLine => Err(self.consumed.saturating_sub(self.line_start) as u64),
            ReaderState::LineStart | ReaderState::Done => {
                self.state = ReaderState::Done;
                Ok(())
            }
        }
    }

    /// Whether the header is complete.
    pub fn is_done(&self) -> bool {
        self.state == ReaderState::Done
    }

    /// The header read so far (complete once [`Self::is_done`]).
    pub fn header(&self) -> PropheseeHeader {
        PropheseeHeader {
            len: self.consumed,
            ..self.header.clone()
        }
    }
}

impl HeaderError {
    /// The decoder error for this header problem.
    pub fn into_decode_error(self, format: Format) -> DecodeError {
        match self {
            HeaderError::Bad { offset, message } => {
                DecodeError::new(format, offset, DecodeErrorKind::BadHeader(message))
            }
            HeaderError::TooLarge { max } => DecodeError::new(
                format,
                0,
                DecodeErrorKind::TooLarge {
                    what: "Prophesee header",
                    claimed: max as u64 + 1,
                    max: max as u64,
                },
            ),
        }
    }
}

/// Reads the header of a RAW stream to its end, for the EVT decoders: `Ok(None)` while the
/// header goes on, `Ok(Some(info))` once it is complete and says nothing against `expected`.
pub(crate) struct RawPreamble {
    reader: HeaderReader,
    resolution: Option<(u16, u16)>,
    format: Format,
    expected: RawEncoding,
}

impl RawPreamble {
    /// A preamble reader for `format` (whose RAW encoding is `expected`).
    pub(crate) fn new(format: Format, expected: RawEncoding, options: &DecodeOptions) -> Self {
        Self {
            reader: HeaderReader::new(options.max_record_bytes),
            resolution: options.resolution,
            format,
            expected,
        }
    }

    /// Consumes header bytes; returns how many, and the stream description once complete.
    pub(crate) fn feed(
        &mut self,
        input: &[u8],
    ) -> Result<(usize, Option<StreamInfo>), DecodeError> {
        let (used, done) = self
            .reader
            .feed(input)
            .map_err(|e| e.into_decode_error(self.format))?;
        if !done {
            return Ok((used, None));
        }
        Ok((used, Some(self.stream_info()?)))
    }

    /// At the end of input: the stream description, or why the header is unusable.
    pub(crate) fn finish(&mut self) -> Result<StreamInfo, DecodeError> {
        if let Err(found) = self.reader.finish() {
            let header = self.reader.header();
            return Err(DecodeError::new(
                self.format,
                header.len as u64 - found,
                DecodeErrorKind::Truncated {
                    what: "Prophesee header line",
                    expected: found + 1,
                    found,
                },
            ));
        }
        self.stream_info()
    }

    /// Checks the header against the decoder and settles the geometry: the caller's
    /// resolution, else the header's, else the one implied by the sensor generation.
    fn stream_info(&self) -> Result<StreamInfo, DecodeError> {
        let header = self.reader.header();
        let bad = |message: String| {
            DecodeError::new(
                self.format,
                header.len as u64,
                DecodeErrorKind::BadHeader(message),
            )
        };
        if header.looks_like_dat() {
            return Err(bad(format!(
                "this is a DAT header (`Data file containing` / `Width` / `Height`), not an {} RAW header",
                self.expected.name()
            )));
        }
        if let Some(encoding) = &header.encoding
            && *encoding != self.expected
        {
            return Err(bad(format!(
                "the header declares {}, expected {}",
                encoding.name(),
                self.expected.name()
            )));
        }
        let (width, height) = self
            .resolution
            .or(header.geometry)
            .or_else(|| header.geometry_by_generation())
            .ok_or_else(|| {
                bad(
                    "no sensor geometry: no `format`/`geometry` line and no known sensor \
                     generation in the header; pass --resolution WxH"
                        .to_string(),
                )
            })?;
        Ok(StreamInfo {
            source: header.source(),
            t0: header.t0,
            ..StreamInfo::new(width, height, self.format.name())
        })
    }
}

/// Writes one `% key value` header line.
fn write_line(out: &mut Vec<u8>, line: &str) {
    out.extend_from_slice(b"% ");
    out.extend_from_slice(line.as_bytes());
    out.push(b'\n');
}

/// Writes the RAW header of inflor's EVT encoders (`evt` is `2.0` or `3.0`, `format` `EVT2`
/// or `EVT3`); `% end` closes it so that data starting with a `%` byte is never taken for a
/// header line.
pub(crate) fn write_raw_header(info: &StreamInfo, evt: &str, format: &str, out: &mut Vec<u8>) {
    let (w, h) = (info.width, info.height);
    write_line(out, &format!("evt {evt}"));
    write_line(out, &format!("format {format};height={h};width={w}"));
    write_line(out, &format!("geometry {w}x{h}"));
    write_line(out, "integrator_name inflor");
    write_line(out, "end");
}

/// Writes the header of inflor's DAT encoder, for CD events; the event type and size bytes
/// follow it.
pub(crate) fn write_dat_header(info: &StreamInfo, out: &mut Vec<u8>) {
    write_line(out, "Data file containing CD events.");
    write_line(out, "Version 2");
    write_line(out, &format!("Width {}", info.width));
    write_line(out, &format!("Height {}", info.height));
}

/// Recognises a Prophesee RAW or DAT file from its first bytes: EVT 2.0 / 3.0 from the
/// `evt`/`format` line, else from the plugin or sensor generation (Gen3 → EVT 2.0,
/// Gen4 / Gen4.1 / IMX636 → EVT 3.0); DAT from its `Data file containing` line or `Width` /
/// `Height` keys, else from the event type and size bytes after a header that names no RAW
/// encoding (type 0x00 Event2D or 0x0C CD, size 8). `None` if the prefix starts no such
/// header, or declares an encoding inflor does not read (EVT 2.1).
pub fn sniff(prefix: &[u8]) -> Option<Format> {
    if prefix.first() != Some(&b'%') {
        return None;
    }
    let mut reader = HeaderReader::new(MAX_HEADER_BYTES);
    // A header longer than the prefix is judged by its complete lines; parse errors in a
    // line make the prefix unrecognisable rather than failing detection.
    let (used, done) = reader.feed(prefix).ok()?;
    let header = reader.header();
    match header
        .encoding
        .clone()
        .or_else(|| header.encoding_by_generation())
    {
        Some(RawEncoding::Evt2) => return Some(Format::Evt2),
        Some(RawEncoding::Evt3) => return Some(Format::Evt3),
        Some(_) => return None,
        None => {}
    }
    if header.looks_like_dat() {
        return Some(Format::Dat);
    }
    match prefix.get(used..used + 2) {
        Some([0x00 | 0x0C, 8]) if done => Some(Format::Dat),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8]) -> Result<(usize, bool, PropheseeHeader), HeaderError> {
        let mut reader = HeaderReader::new(MAX_HEADER_BYTES);
        let (used, done) = reader.feed(bytes)?;
        Ok((used, done, reader.header()))
    }

    #[test]
    fn reads_a_metavision_header_with_end_line() {
        let text = b"% camera_integrator_name Prophesee\n% evt 3.0\n\
            % format EVT3;height=720;width=1280\n% geometry 1280x720\n\
            % plugin_name hal_plugin_imx636_evk4\n% end\n%\x00\x80";
        let (used, done, header) = read_all(text).unwrap();
        assert!(done);
        assert_eq!(
            &text[used..],
            b"%\x00\x80",
            "data after `% end` may start with %"
        );
        assert_eq!(header.encoding, Some(RawEncoding::Evt3));
        assert_eq!(header.geometry, Some((1280, 720)));
        assert_eq!(header.source().as_deref(), Some("hal_plugin_imx636_evk4"));
    }

    #[test]
    fn header_without_end_stops_at_the_first_binary_byte() {
        let text = b"% Date 2020-09-14 09:03:25\n% plugin_name hal_plugin_gen3_fx3\n\
            % evt 2.0\n\x70\x50\x00\x80";
        let (used, done, header) = read_all(text).unwrap();
        assert!(done);
        assert_eq!(used, text.len() - 4);
        assert_eq!(header.encoding, Some(RawEncoding::Evt2));
        assert_eq!(header.geometry, None);
        assert_eq!(header.geometry_by_generation(), Some((640, 480)));
    }

    #[test]
    fn dat_header_fields() {
        let text = b"% Data file containing N9Chronocam7Event2dE events.\n% Version 2\n\
            % Width 304\n% Height 240\n\x00\x08";
        let (_, done, header) = read_all(text).unwrap();
        assert!(done);
        assert!(header.looks_like_dat());
        assert_eq!(
            header.dat_event_class.as_deref(),
            Some("N9Chronocam7Event2dE")
        );
        assert_eq!(header.geometry, Some((304, 240)));
    }

    #[test]
    fn split_feeding_gives_the_same_header() {
        let text: &[u8] = b"% evt 3.0\n% format EVT3;height=720;width=1280\n% end\n\x01\x02";
        let (whole_used, _, whole) = read_all(text).unwrap();
        for split in 0..text.len() {
            let mut reader = HeaderReader::new(MAX_HEADER_BYTES);
            let (a, done_a) = reader.feed(&text[..split]).unwrap();
            let used = if done_a {
                a
            } else {
                assert_eq!(a, split);
                a + reader.feed(&text[split..]).unwrap().0
            };
            assert_eq!(used, whole_used, "split at {split}");
            assert_eq!(reader.header(), whole, "split at {split}");
        }
    }

    #[test]
    fn malformed_geometry_and_conflicting_versions_are_errors() {
        assert!(matches!(
            read_all(b"% geometry 1280by720\n"),
            Err(HeaderError::Bad { offset: 0, .. })
        ));
        assert!(matches!(
            read_all(b"% Date x\n% evt 2.0\n% format EVT3\n"),
            Err(HeaderError::Bad { offset: 19, .. })
        ));
        assert!(matches!(
            read_all(b"% Width 0\n"),
            Err(HeaderError::Bad { .. })
        ));
    }

    #[test]
    fn header_longer_than_the_limit_fails_at_the_same_point_for_any_chunking() {
        let long = vec![b'%'; 100];
        let mut whole = HeaderReader::new(64);
        assert_eq!(whole.feed(&long), Err(HeaderError::TooLarge { max: 64 }));
        let mut split = HeaderReader::new(64);
        let mut result = Ok((0, false));
        for byte in long.chunks(1) {
            result = split.feed(byte);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(HeaderError::TooLarge { max: 64 }));
        assert_eq!(split.consumed, 65);
    }

    #[test]
    fn finish_inside_a_line_reports_its_length() {
        let mut reader = HeaderReader::new(MAX_HEADER_BYTES);
        reader.feed(b"% evt 2.0\n% plug").unwrap();
        assert_eq!(reader.finish(), Err(6));
        let mut reader = HeaderReader::new(MAX_HEADER_BYTES);
        reader.feed(b"% evt 2.0\n").unwrap();
        assert_eq!(reader.finish(), Ok(()));
        assert!(reader.is_done());
    }

    #[test]
    fn time_origin_lines_are_read_and_checked() {
        let (_, _, header) = read_all(b"% evt 2.0\n% t0 1700000123456789\n").unwrap();
        assert_eq!(header.t0, Some(1_700_000_123_456_789));
        let (_, _, header) = read_all(b"% Version 2\n% T0 5\n").unwrap();
        assert_eq!((header.t0, header.version.as_deref()), (Some(5), Some("2")));
        assert!(matches!(
            read_all(b"% t0 soon\n"),
            Err(HeaderError::Bad { offset: 0, .. })
        ));
        let (_, _, header) = read_all(b"% evt 3.0\n").unwrap();
        assert_eq!(header.t0, None);
    }

    #[test]
    fn the_writers_headers_read_back() {
        let info = StreamInfo::new(1280, 720, "EVT 3.0");
        let mut raw = Vec::new();
        write_raw_header(&info, "3.0", "EVT3", &mut raw);
        let (used, done, header) = read_all(&raw).unwrap();
        assert!(done && used == raw.len());
        assert_eq!(header.encoding, Some(RawEncoding::Evt3));
        assert_eq!(header.geometry, Some((1280, 720)));
        let mut dat = Vec::new();
        write_dat_header(&StreamInfo::new(304, 240, "DAT"), &mut dat);
        dat.extend_from_slice(&[0x0C, 8]);
        let (used, done, header) = read_all(&dat).unwrap();
        assert!(done && header.looks_like_dat());
        assert_eq!(header.geometry, Some((304, 240)));
        assert_eq!(&dat[used..], &[0x0C, 8]);
        assert_eq!(sniff(&dat), Some(Format::Dat));
    }

    #[test]
    fn sniffs_real_header_shapes() {
        assert_eq!(sniff(b"% evt 2.0\n\x00"), Some(Format::Evt2));
        assert_eq!(
            sniff(b"% format EVT3;height=720;width=1280\n"),
            Some(Format::Evt3)
        );
        assert_eq!(
            sniff(b"% Date 2020\n% plugin_name hal_plugin_gen41_evk3\n\x00\x80"),
            Some(Format::Evt3)
        );
        assert_eq!(
            sniff(b"% plugin_name hal_plugin_gen3_fx3\n"),
            Some(Format::Evt2)
        );
        assert_eq!(
            sniff(b"% Data file containing N9Chronocam7Event2dE events.\n\x00\x08"),
            Some(Format::Dat)
        );
        assert_eq!(
            sniff(b"% Date 2017-10-31\n\x0c\x08\x00\x00"),
            Some(Format::Dat)
        );
        assert_eq!(sniff(b"% Date 2017-10-31\n\x07\x08\x00\x00"), None);
        assert_eq!(sniff(b"% evt 2.1\n"), None);
        assert_eq!(sniff(b"#!AER-DAT2.0\n"), None);
        assert_eq!(sniff(b""), None);
    }
}
