//! AEDAT 3.1 (cAER / libcaer files): the text header, the typed event packets, a streaming
//! decoder for polarity packets and an encoder.
//!
//! **Checked only against the specification.** No real AEDAT 3.1 recording is available to this
//! project; the layout below follows iniVation's "AEDAT 3.1" format description and libcaer's
//! `events/common.h` and `events/polarity.h`. The round-trip and fixture tests use files made
//! by [`Aedat3Encoder`], so they prove self-consistency, not agreement with cAER's output.
//!
//! # Layout
//! - Header: `#!AER-DAT3.1\r\n`, then `#Format: RAW\r\n` (the only format supported; `RAW` is
//!   also the default when the line is missing), `#Source <id>: <device>` lines, any other `#`
//!   lines, and `#!END-HEADER\r\n`. `\n` line ends are accepted too. The sensor size comes from
//!   [`DecodeOptions::resolution`], else from the first source line naming a known device
//!   (`DVS128`, `DAVIS240A/B/C`, `DAVIS346*`, ...), or carrying `sizeX=<w> sizeY=<h>`; lines
//!   preserved from earlier recordings (`#-Source`) are used only when no current one is known.
//! - Packets: a 28-byte little-endian header (`eventType: i16`, `eventSource: i16`,
//!   `eventSize`, `eventTSOffset`, `eventTSOverflow`, `eventCapacity`, `eventNumber`,
//!   `eventValid`: `i32`), then `eventCapacity × eventSize` bytes of which the first
//!   `eventNumber` events are in use.
//! - Polarity events (type 1, 8 bytes): `u32` data (bit 0 valid, bit 1 polarity with 1 = ON,
//!   `y = (data >> 2) & 0x7FFF`, `x = (data >> 17) & 0x7FFF`, origin top-left) and a
//!   non-negative `i32` timestamp; the 64-bit time is `(eventTSOverflow << 31) | timestamp` µs.
//!
//! Invalid (bit 0 clear) polarity events are counted in `other_skipped`. Other packet types are
//! skipped whole, counting their events: special (0) in `triggers_skipped`, frame (2) in
//! `frames_skipped`, IMU6/IMU9 (3, 4) in `imu_skipped`, anything else in `other_skipped`. A
//! packet header that contradicts itself cannot be skipped safely (its length is not to be
//! trusted), so it always fails, also in lenient mode; bad polarity events are skipped in
//! lenient mode. Polarity payloads are decoded as they stream in, never buffered whole.

use super::common::{Cx, RecordDecoder, Sticky, skip_or_fail};
use super::{DecodeError, DecodeErrorKind, DecodeOptions, EncodeError, Encoder, Format};
use crate::event::{Event, StreamInfo};

/// The version line.
const MAGIC: &[u8] = b"#!AER-DAT3.1";
/// The end-of-header line.
const END_HEADER: &[u8] = b"#!END-HEADER";
/// Bytes of a packet header.
const PACKET_HEADER_BYTES: usize = 28;
/// Bytes of a polarity event.
const POLARITY_EVENT_BYTES: usize = 8;
/// Offset of the timestamp inside a polarity event.
const POLARITY_TS_OFFSET: i32 = 4;
/// Timestamps are 31-bit; the overflow counter supplies the bits above.
const TS_OVERFLOW_SHIFT: u32 = 31;
/// Largest x or y a polarity event can carry.
const COORDINATE_MASK: u32 = 0x7FFF;
/// Events per packet the encoder writes.
const ENCODER_PACKET_EVENTS: usize = 4096;

/// libcaer event types.
const SPECIAL_EVENT: i16 = 0;
const POLARITY_EVENT: i16 = 1;
const FRAME_EVENT: i16 = 2;
const IMU6_EVENT: i16 = 3;
const IMU9_EVENT: i16 = 4;

/// Known device names (libcaer's `chipIDToName`) and their sensor sizes. Longer names first
/// where one is a prefix of another.
const DEVICES: [(&str, (u16, u16)); 9] = [
    ("DVS128", (128, 128)),
    ("DAVIS240", (240, 180)),
    ("DAVIS128", (128, 128)),
    ("DAVIS346", (346, 260)),
    ("DAVIS640", (640, 480)),
    ("DAVISRGB", (320, 240)),
    ("DAVIS208", (208, 192)),
    ("DVXPLORER", (640, 480)),
    ("DVXPLORER_LITE", (320, 240)),
];

/// The sensor size a source description names, if any.
fn source_size(description: &str) -> Option<(u16, u16)> {
    let upper = description.to_ascii_uppercase();
    let number_after = |key: &str| -> Option<u16> {
        let at = upper.find(key)? + key.len();
        let digits: String = upper
            .get(at..)?
            .trim_start_matches([' ', '=', ':'])
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    if let (Some(w), Some(h)) = (number_after("SIZEX"), number_after("SIZEY")) {
        return Some((w, h));
    }
    // The most specific (longest) device name found anywhere in the description wins.
    DEVICES
        .iter()
        .filter(|(name, _)| upper.contains(name))
        .max_by_key(|(name, _)| name.len())
        .map(|&(_, size)| size)
}

/// The header parse in progress.
#[derive(Debug, Default)]
struct HeaderReader {
    /// The current line so far, without its `\n`.
    line: Vec<u8>,
    /// Bytes of complete lines.
    consumed: u64,
    lines: u64,
    /// Size from a current `#Source` line, and from a preserved `#-Source` line.
    source: Option<(String, (u16, u16))>,
    old_source: Option<(String, (u16, u16))>,
    /// The first source description, even if no size is known for it.
    first_source: Option<String>,
}

/// A packet header, as read.
#[derive(Debug, Clone, Copy)]
struct PacketHeader {
    event_type: i16,
    event_size: i32,
    ts_offset: i32,
    ts_overflow: i32,
    capacity: i32,
    number: i32,
    valid: i32,
}

impl PacketHeader {
    fn parse(bytes: &[u8; PACKET_HEADER_BYTES]) -> Self {
        let i16_at = |at: usize| i16::from_le_bytes([bytes[at], bytes[at + 1]]);
        let i32_at = |at: usize| {
            i32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        Self {
            event_type: i16_at(0),
            event_size: i32_at(4),
            ts_offset: i32_at(8),
            ts_overflow: i32_at(12),
            capacity: i32_at(16),
            number: i32_at(20),
            valid: i32_at(24),
        }
    }
}

/// Where the decoder is in the stream.
#[derive(Debug)]
enum Stage {
    /// Reading header lines.
    Header(HeaderReader),
    /// At a packet header.
    PacketHeader,
    /// Inside a polarity packet: events still to decode, then padding bytes to skip.
    Polarity {
        /// `eventTSOverflow << 31`.
        time_base: i64,
        events_left: u64,
        padding: u64,
        /// Payload size and where it started, for truncation reports.
        payload: u64,
        payload_start: u64,
    },
    /// Skipping the payload of a packet we do not decode.
    Skip {
        bytes_left: u64,
        payload: u64,
        payload_start: u64,
    },
}

/// Streaming decoder for AEDAT 3.1 polarity data (see the module docs for the layout).
pub type Aedat3Decoder = Sticky<Aedat3Records>;

/// The AEDAT 3.1 side of [`Aedat3Decoder`].
pub struct Aedat3Records {
    options: DecodeOptions,
    stage: Stage,
    info: Option<StreamInfo>,
    width: u16,
    height: u16,
    last_event: i64,
}

fn error(offset: u64, kind: DecodeErrorKind) -> DecodeError {
    DecodeError::new(Format::Aedat3, offset, kind)
}

impl Aedat3Records {
    /// Reads header bytes; returns how many bytes of `input` it used.
    fn feed_header(&mut self, input: &[u8]) -> Result<usize, DecodeError> {
        let cap = self.options.max_record_bytes as u64;
        let Stage::Header(header) = &mut self.stage else {
            return Ok(0);
        };
        for (index, &byte) in input.iter().enumerate() {
            if byte != b'\n' {
                // Reject a wrong first line at its first wrong byte, not after a megabyte.
                if header.lines == 0
                    && header.line.len() < MAGIC.len()
                    && MAGIC.get(header.line.len()) != Some(&byte)
                {
                    let mut found = header.line.clone();
                    found.push(byte);
                    return Err(error(
                        0,
                        DecodeErrorKind::BadMagic {
                            expected: "#!AER-DAT3.1",
                            found: super::escape_prefix(&found),
                        },
                    ));
                }
                if header.consumed + header.line.len() as u64 >= cap {
                    return Err(error(
                        header.consumed,
                        DecodeErrorKind::TooLarge {
                            what: "AEDAT 3.1 header",
                            claimed: header.consumed + header.line.len() as u64 + 1,
                            max: cap,
                        },
                    ));
                }
                header.line.push(byte);
                continue;
            }
            let line_start = header.consumed;
            let ends = parse_line(header, line_start)?;
            header.consumed += header.line.len() as u64 + 1;
            header.lines += 1;
            header.line.clear();
            if ends {
                let used = index + 1;
                let header = std::mem::take(header);
                self.resolve(&header)?;
                return Ok(used);
            }
        }
        Ok(input.len())
    }

    /// Decides the sensor size once the header is complete.
    fn resolve(&mut self, header: &HeaderReader) -> Result<(), DecodeError> {
        let from_sources = header.source.as_ref().or(header.old_source.as_ref());
        let (width, height) = match (self.options.resolution, from_sources) {
            (Some(size), _) => size,
            (None, Some((_, size))) => *size,
            (None, None) => {
                return Err(error(
                    header.consumed,
                    DecodeErrorKind::BadHeader(format!(
                        "no #Source line names a known device ({}): give --resolution WxH",
                        header.first_source.as_deref().unwrap_or("no source line")
                    )),
                ));
            }
        };
        if width == 0 || height == 0 {
            return Err(error(
                header.consumed,
                DecodeErrorKind::BadHeader(format!("sensor size {width}x{height} has no pixels")),
            ));
        }
        self.width = width;
        self.height = height;
        self.info = Some(StreamInfo {
            source: from_sources
                .map(|(name, _)| name.clone())
                .or_else(|| header.first_source.clone()),
            ..StreamInfo::new(width, height, Format::Aedat3.name())
        });
        self.stage = Stage::PacketHeader;
        Ok(())
    }

    /// Validates the packet header `bytes` found at `header_offset` and moves to its payload.
    fn start_packet(
        &mut self,
        bytes: &[u8; PACKET_HEADER_BYTES],
        header_offset: u64,
        cx: &mut Cx<'_>,
    ) -> Result<(), DecodeError> {
        let packet = PacketHeader::parse(bytes);
        let bad = |expected: &str, found: String| {
            error(
                header_offset,
                DecodeErrorKind::Unexpected {
                    expected: expected.to_string(),
                    found,
                },
            )
        };
        if packet.event_type < 0 {
            return Err(error(
                header_offset,
                DecodeErrorKind::UnknownStreamType(format!(
                    "AEDAT 3.1 event type {}",
                    packet.event_type
                )),
            ));
        }
        if packet.capacity < 0
            || packet.number < 0
            || packet.valid < 0
            || packet.number > packet.capacity
            || packet.valid > packet.number
        {
            return Err(bad(
                "0 <= eventValid <= eventNumber <= eventCapacity",
                format!(
                    "eventValid {}, eventNumber {}, eventCapacity {}",
                    packet.valid, packet.number, packet.capacity
                ),
            ));
        }
        if packet.event_size <= 0 && packet.capacity > 0 {
            return Err(bad(
                "a positive eventSize",
                format!("eventSize {}", packet.event_size),
            ));
        }
        if packet.ts_overflow < 0 {
            return Err(bad(
                "a non-negative eventTSOverflow",
                format!("eventTSOverflow {}", packet.ts_overflow),
            ));
        }
        let payload = i64::from(packet.event_size.max(0)) * i64::from(packet.capacity);
        let payload = payload as u64;
        let max = self.options.max_record_bytes as u64;
        if payload > max {
            return Err(error(
                header_offset,
                DecodeErrorKind::TooLarge {
                    what: "AEDAT 3.1 packet (eventSize x eventCapacity)",
                    claimed: payload,
                    max,
                },
            ));
        }
        let number = packet.number as u64;
        let payload_start = header_offset + PACKET_HEADER_BYTES as u64;
        match packet.event_type {
            POLARITY_EVENT => {
                if packet.event_size != POLARITY_EVENT_BYTES as i32
                    || packet.ts_offset != POLARITY_TS_OFFSET
                {
                    return Err(bad(
                        "polarity events of 8 bytes with the timestamp at offset 4",
                        format!(
                            "eventSize {}, eventTSOffset {}",
                            packet.event_size, packet.ts_offset
                        ),
                    ));
                }
                self.stage = Stage::Polarity {
                    time_base: i64::from(packet.ts_overflow) << TS_OVERFLOW_SHIFT,
                    events_left: number,
                    padding: payload - number * POLARITY_EVENT_BYTES as u64,
                    payload,
                    payload_start,
                };
            }
            other => {
                let counter = match other {
                    SPECIAL_EVENT => &mut cx.stats.triggers_skipped,
                    FRAME_EVENT => &mut cx.stats.frames_skipped,
                    IMU6_EVENT | IMU9_EVENT => &mut cx.stats.imu_skipped,
                    _ => &mut cx.stats.other_skipped,
                };
                *counter += number;
                self.stage = Stage::Skip {
                    bytes_left: payload,
                    payload,
                    payload_start,
                };
            }
        }
        self.end_payload_if_done();
        Ok(())
    }

    /// Moves on to the next packet header once the current payload is consumed.
    fn end_payload_if_done(&mut self) {
        let done = match self.stage {
            Stage::Polarity {
                events_left: 0,
                padding: 0,
                ..
            } => true,
            Stage::Polarity {
                events_left: 0,
                padding,
                payload,
                payload_start,
                ..
            } => {
                self.stage = Stage::Skip {
                    bytes_left: padding,
                    payload,
                    payload_start,
                };
                false
            }
            Stage::Skip { bytes_left: 0, .. } => true,
            _ => false,
        };
        if done {
            self.stage = Stage::PacketHeader;
        }
    }

    /// Decodes whole polarity events from `records`, the first at absolute offset `at`.
    fn decode_polarity(
        &mut self,
        records: &[u8],
        at: u64,
        time_base: i64,
        cx: &mut Cx<'_>,
    ) -> Result<(), DecodeError> {
        let (events, _) = records.as_chunks::<POLARITY_EVENT_BYTES>();
        let (out, stats, lenient) = cx.parts(events.len());
        let (width, height) = (u32::from(self.width), u32::from(self.height));
        let mut last = self.last_event;
        let (mut regressions, mut invalid) = (0u64, 0u64);
        let mut result = Ok(());
        for (i, &[d0, d1, d2, d3, t0, t1, t2, t3]) in events.iter().enumerate() {
            let data = u32::from_le_bytes([d0, d1, d2, d3]);
            let timestamp = i32::from_le_bytes([t0, t1, t2, t3]);
            if data & 1 == 0 {
                invalid += 1;
                continue;
            }
            let x = (data >> 17) & COORDINATE_MASK;
            let y = (data >> 2) & COORDINATE_MASK;
            let problem = if timestamp < 0 {
                Some(DecodeErrorKind::Unexpected {
                    expected: "a non-negative 31-bit event timestamp".into(),
                    found: format!("timestamp {timestamp}"),
                })
            } else if x >= width || y >= height {
                Some(DecodeErrorKind::OutOfRange {
                    x: i64::from(x),
                    y: i64::from(y),
                    width: self.width,
                    height: self.height,
                })
            } else {
                None
            };
            if let Some(kind) = problem {
                let offset = at + (i * POLARITY_EVENT_BYTES) as u64;
                if let Err(e) = skip_or_fail(stats, lenient, error(offset, kind)) {
                    result = Err(e);
                    break;
                }
                continue;
            }
            let t = time_base | i64::from(timestamp);
            regressions += u64::from(t < last);
            last = t;
            out.push(Event::new(t, x as u16, y as u16, data & 2 != 0));
        }
        self.last_event = last;
        stats.timestamp_regressions += regressions;
        stats.other_skipped += invalid;
        result
    }
}

impl RecordDecoder for Aedat3Records {
    const FORMAT: Format = Format::Aedat3;

    fn new(options: &DecodeOptions) -> Self {
        Self {
            options: options.clone(),
            stage: Stage::Header(HeaderReader::default()),
            info: None,
            width: 0,
            height: 0,
            last_event: i64::MIN,
        }
    }

    fn decode(&mut self, input: &[u8], at: u64, cx: &mut Cx<'_>) -> Result<usize, DecodeError> {
        let mut used = 0;
        while let Some(rest) = input.get(used..).filter(|rest| !rest.is_empty()) {
            let offset = at + used as u64;
            match &mut self.stage {
                Stage::Header(_) => used += self.feed_header(rest)?,
                Stage::PacketHeader => {
                    let Some(bytes) = rest.first_chunk::<PACKET_HEADER_BYTES>() else {
                        break;
                    };
                    self.start_packet(bytes, offset, cx)?;
                    used += PACKET_HEADER_BYTES;
                }
                Stage::Skip { bytes_left, .. } => {
                    let take = (*bytes_left).min(rest.len() as u64);
                    *bytes_left -= take;
                    used += take as usize;
                    self.end_payload_if_done();
                }
                Stage::Polarity {
                    time_base,
                    events_left,
                    ..
                } => {
                    let whole = (rest.len() / POLARITY_EVENT_BYTES)
                        .min(usize::try_from(*events_left).unwrap_or(usize::MAX))
                        .min(cx.room());
                    if whole == 0 {
                        break;
                    }
                    *events_left -= whole as u64;
                    let time_base = *time_base;
                    let records = rest.get(..whole * POLARITY_EVENT_BYTES).unwrap_or_default();
                    self.decode_polarity(records, offset, time_base, cx)?;
                    used += records.len();
                    self.end_payload_if_done();
                }
            }
        }
        Ok(used)
    }

    fn need(&self, _partial: &[u8]) -> Result<usize, DecodeError> {
        Ok(match self.stage {
            Stage::PacketHeader => PACKET_HEADER_BYTES,
            _ => POLARITY_EVENT_BYTES,
        })
    }

    fn finish(&mut self, partial: &[u8], at: u64, _cx: &mut Cx<'_>) -> Result<(), DecodeError> {
        match &self.stage {
            Stage::Header(header) => {
                let found = header.consumed + header.line.len() as u64;
                Err(error(
                    header.consumed,
                    DecodeErrorKind::Truncated {
                        what: "AEDAT 3.1 header (no #!END-HEADER line)",
                        expected: found + 1,
                        found,
                    },
                ))
            }
            Stage::PacketHeader if partial.is_empty() => Ok(()),
            Stage::PacketHeader => Err(error(
                at,
                DecodeErrorKind::Truncated {
                    what: "AEDAT 3.1 packet header",
                    expected: PACKET_HEADER_BYTES as u64,
                    found: partial.len() as u64,
                },
            )),
            Stage::Polarity {
                payload,
                payload_start,
                ..
            }
            | Stage::Skip {
                payload,
                payload_start,
                ..
            } => Err(error(
                *payload_start,
                DecodeErrorKind::Truncated {
                    what: "AEDAT 3.1 packet payload",
                    expected: *payload,
                    found: at + partial.len() as u64 - payload_start,
                },
            )),
        }
    }

    fn info(&self) -> Option<&StreamInfo> {
        self.info.as_ref()
    }
}

/// Parses one complete header line; returns whether it is the end-of-header line.
fn parse_line(header: &mut HeaderReader, offset: u64) -> Result<bool, DecodeError> {
    let line = header.line.strip_suffix(b"\r").unwrap_or(&header.line);
    if header.lines == 0 {
        if line != MAGIC {
            return Err(error(
                0,
                DecodeErrorKind::BadMagic {
                    expected: "#!AER-DAT3.1",
                    found: super::escape_prefix(line.get(..32).unwrap_or(line)),
                },
            ));
        }
        return Ok(false);
    }
    if line == END_HEADER {
        return Ok(true);
    }
    let Some(content) = line.strip_prefix(b"#") else {
        return Err(error(
            offset,
            DecodeErrorKind::BadHeader(format!(
                "expected a '#' header line or #!END-HEADER, found {:?}",
                super::escape_prefix(line.get(..32).unwrap_or(line))
            )),
        ));
    };
    let text = String::from_utf8_lossy(content).into_owned();
    if let Some(format) = text.strip_prefix("Format:") {
        let format = format.trim();
        if format != "RAW" {
            return Err(error(
                offset,
                DecodeErrorKind::BadHeader(format!(
                    "event packet format {format:?} is not supported; only RAW is"
                )),
            ));
        }
    } else if let Some(source) = text.strip_prefix("Source ") {
        remember_source(header, source, false);
    } else if let Some(source) = text.strip_prefix("-Source ") {
        remember_source(header, source, true);
    }
    Ok(false)
}

/// Records a `#Source <id>: <description>` line (the first of each kind wins).
fn remember_source(header: &mut HeaderReader, line: &str, preserved: bool) {
    let description = line
        .split_once(':')
        .map_or(line, |(_, description)| description)
        .trim();
    let description: String = description.chars().take(256).collect();
    if header.first_source.is_none() {
        header.first_source = Some(description.clone());
    }
    let Some(size) = source_size(&description) else {
        return;
    };
    let slot = if preserved {
        &mut header.old_source
    } else {
        &mut header.source
    };
    if slot.is_none() {
        *slot = Some((description, size));
    }
}

/// Writes events as an AEDAT 3.1 file of polarity packets (source 1), which [`Aedat3Decoder`]
/// decodes back to the same events.
///
/// Each `encode` call writes its events at once, in packets of up to 4096 events that share a
/// timestamp overflow value. Timestamps must be non-negative; coordinates must lie on the
/// `width`×`height` sensor (at most 32768×32768). The `#Start-Time` line, which the format
/// requires, says 1970-01-01 (the epoch of inflor's timestamps is unknown to the encoder).
#[derive(Debug, Clone)]
pub struct Aedat3Encoder {
    width: u16,
    height: u16,
    header_written: bool,
    /// Events written so far (for error messages).
    index: u64,
}

impl Aedat3Encoder {
    /// An encoder for a `width`×`height` sensor.
    pub fn new(width: u16, height: u16) -> Self {
        Self {
            width,
            height,
            header_written: false,
            index: 0,
        }
    }

    /// The `#Source` description: a libcaer device name when the size is a known device's.
    fn source(&self) -> String {
        let size = (self.width, self.height);
        match size {
            (128, 128) => "DVS128".to_string(),
            (240, 180) => "DAVIS240C".to_string(),
            (346, 260) => "DAVIS346B".to_string(),
            (640, 480) => "DAVIS640".to_string(),
            (w, h) => format!("inflor sizeX={w} sizeY={h}"),
        }
    }

    fn write_header(&mut self, out: &mut Vec<u8>) {
        if self.header_written {
            return;
        }
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(b"\r\n#Format: RAW\r\n");
        out.extend_from_slice(format!("#Source 1: {}\r\n", self.source()).as_bytes());
        out.extend_from_slice(b"#Start-Time: 1970-01-01 00:00:00 (TZ+0000)\r\n");
        out.extend_from_slice(END_HEADER);
        out.extend_from_slice(b"\r\n");
        self.header_written = true;
    }

    /// The polarity event's data word and the timestamp split into (overflow, 31-bit time).
    fn split(&self, event: &Event) -> Result<(u32, i32, i32), String> {
        if event.t < 0 {
            return Err(format!("timestamp {} µs is negative", event.t));
        }
        let overflow = i32::try_from(event.t >> TS_OVERFLOW_SHIFT)
            .map_err(|_| format!("timestamp {} µs is beyond the 62-bit range", event.t))?;
        let time = (event.t & i64::from(i32::MAX)) as i32;
        let (x, y) = (u32::from(event.x), u32::from(event.y));
        if event.x >= self.width
            || event.y >= self.height
            || x > COORDINATE_MASK
            || y > COORDINATE_MASK
        {
            return Err(format!(
                "({x}, {y}) is outside the {}x{} sensor",
                self.width, self.height
            ));
        }
        let data = (x << 17) | (y << 2) | (u32::from(event.polarity) << 1) | 1;
        Ok((data, overflow, time))
    }
}

impl Encoder for Aedat3Encoder {
    fn begin(&mut self, _info: &StreamInfo, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.write_header(out);
        Ok(())
    }

    fn encode(&mut self, events: &[Event], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.write_header(out);
        let mut packet: Vec<(u32, i32)> = Vec::with_capacity(ENCODER_PACKET_EVENTS);
        let mut packet_overflow = 0;
        let flush = |packet: &mut Vec<(u32, i32)>, overflow: i32, out: &mut Vec<u8>| {
            if packet.is_empty() {
                return;
            }
            let count = packet.len() as i32;
            out.extend_from_slice(&POLARITY_EVENT.to_le_bytes());
            out.extend_from_slice(&1i16.to_le_bytes());
            for field in [
                POLARITY_EVENT_BYTES as i32,
                POLARITY_TS_OFFSET,
                overflow,
                count,
                count,
                count,
            ] {
                out.extend_from_slice(&field.to_le_bytes());
            }
            for (data, time) in packet.drain(..) {
                out.extend_from_slice(&data.to_le_bytes());
                out.extend_from_slice(&time.to_le_bytes());
            }
        };
        for event in events {
            let (data, overflow, time) = match self.split(event) {
                Ok(parts) => parts,
                Err(reason) => {
                    // Keep the output a valid file holding every event before the bad one.
                    flush(&mut packet, packet_overflow, out);
                    return Err(EncodeError::Unrepresentable {
                        index: self.index,
                        event: *event,
                        reason,
                    });
                }
            };
            if overflow != packet_overflow || packet.len() == ENCODER_PACKET_EVENTS {
                flush(&mut packet, packet_overflow, out);
                packet_overflow = overflow;
            }
            packet.push((data, time));
            self.index += 1;
        }
        flush(&mut packet, packet_overflow, out);
        Ok(())
    }

    fn end(&mut self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.write_header(out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::decode;

    fn packet(event_type: i16, size: i32, overflow: i32, capacity: i32, number: i32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&event_type.to_le_bytes());
        out.extend_from_slice(&1i16.to_le_bytes());
        for field in [size, 4, overflow, capacity, number, number] {
            out.extend_from_slice(&field.to_le_bytes());
        }
        out
    }

    fn header() -> Vec<u8> {
        b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DAVIS240C\r\n#!END-HEADER\r\n".to_vec()
    }

    #[test]
    fn polarity_fields_and_overflow_make_the_64_bit_time() {
        let mut input = header();
        input.extend(packet(POLARITY_EVENT, 8, 3, 2, 2));
        let data = (200u32 << 17) | (100 << 2) | 0b11;
        input.extend_from_slice(&data.to_le_bytes());
        input.extend_from_slice(&7i32.to_le_bytes());
        let invalid = (1u32 << 17) | (1 << 2);
        input.extend_from_slice(&invalid.to_le_bytes());
        input.extend_from_slice(&8i32.to_le_bytes());
        let (events, result, stats) =
            decode(Format::Aedat3, &input, &DecodeOptions::default()).into_parts();
        result.unwrap();
        assert_eq!(events, [Event::new((3 << 31) | 7, 200, 100, true)]);
        assert_eq!(stats.other_skipped, 1);
    }

    #[test]
    fn other_packets_are_skipped_and_counted_by_kind() {
        let mut input = header();
        for (kind, size, count) in [
            (SPECIAL_EVENT, 8, 3),
            (FRAME_EVENT, 40, 2),
            (IMU6_EVENT, 40, 5),
            (12, 12, 4),
        ] {
            input.extend(packet(kind, size, 0, count, count));
            input.extend(std::iter::repeat_n(0xAB, (size * count) as usize));
        }
        let (events, result, stats) =
            decode(Format::Aedat3, &input, &DecodeOptions::default()).into_parts();
        result.unwrap();
        assert!(events.is_empty());
        assert_eq!(
            (
                stats.triggers_skipped,
                stats.frames_skipped,
                stats.imu_skipped,
                stats.other_skipped
            ),
            (3, 2, 5, 4)
        );
    }

    #[test]
    fn forged_capacity_is_too_large_before_any_payload() {
        let mut input = header();
        input.extend(packet(FRAME_EVENT, 8, 0, i32::MAX, 0));
        let (_, result, _) = decode(Format::Aedat3, &input, &DecodeOptions::default()).into_parts();
        let error = result.unwrap_err();
        assert!(
            matches!(error.kind, DecodeErrorKind::TooLarge { .. }),
            "{error}"
        );
        assert_eq!(error.offset, header().len() as u64);
    }

    #[test]
    fn polarity_packets_need_8_byte_events() {
        let mut input = header();
        input.extend(packet(POLARITY_EVENT, 12, 0, 1, 1));
        input.extend([0; 12]);
        let (_, result, _) = decode(Format::Aedat3, &input, &DecodeOptions::default()).into_parts();
        assert!(matches!(
            result.unwrap_err().kind,
            DecodeErrorKind::Unexpected { .. }
        ));
    }

    #[test]
    fn only_the_raw_format_is_supported() {
        let input =
            b"#!AER-DAT3.1\r\n#Format: SerializedTS\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n";
        let (_, result, _) = decode(Format::Aedat3, input, &DecodeOptions::default()).into_parts();
        let error = result.unwrap_err();
        assert!(error.to_string().contains("only RAW"), "{error}");
    }

    #[test]
    fn wrong_magic_fails_at_the_first_wrong_byte() {
        let (_, result, _) = decode(
            Format::Aedat3,
            b"#!AER-DAT2.0\r\n",
            &DecodeOptions::default(),
        )
        .into_parts();
        assert!(matches!(
            result.unwrap_err().kind,
            DecodeErrorKind::BadMagic { .. }
        ));
    }

    #[test]
    fn source_sizes_come_from_device_names_or_size_keys() {
        assert_eq!(source_size("DVS128"), Some((128, 128)));
        assert_eq!(source_size("DAVIS346B"), Some((346, 260)));
        assert_eq!(source_size("inflor sizeX=64 sizeY=48"), Some((64, 48)));
        assert_eq!(source_size("Mystery camera"), None);
    }

    #[test]
    fn encoder_round_trips_across_overflow_boundaries() {
        let events = [
            Event::new(5, 0, 0, true),
            Event::new((1 << 31) - 1, 239, 179, false),
            Event::new(1 << 31, 1, 2, true),
            Event::new((5 << 31) + 9, 3, 4, false),
            Event::new(4, 5, 6, true),
        ];
        let mut encoder = Aedat3Encoder::new(240, 180);
        let mut bytes = Vec::new();
        encoder.encode(&events, &mut bytes).unwrap();
        encoder.end(&mut bytes).unwrap();
        let (decoded, result, stats) =
            decode(Format::Aedat3, &bytes, &DecodeOptions::default()).into_parts();
        result.unwrap();
        assert_eq!(decoded, events);
        assert_eq!(stats.timestamp_regressions, 1);
    }
}
