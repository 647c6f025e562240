//! Event Stream (`.es`) version 2, DVS type: a resumable decoder and an encoder.
//!
//! Layout (neuromorphic-paris/event_stream, "Version 2.0"): the ASCII magic `Event Stream`,
//! three version bytes (major must be 2), a type byte (0x01 = DVS), then for DVS the width and
//! height as little-endian `u16`s. Events follow as a byte state machine:
//! - `0xFF` (overflow) adds 127 µs to the time;
//! - `0xFE` (reset, inserted by writers to resynchronise after bit errors) is skipped;
//! - any other byte starts an event: bits 7..1 are the time since the previous event (µs), bit 0
//!   is the polarity (1 = increase), then `x` and `y` as little-endian `u16`s.
//!
//! Time starts at 0 at the beginning of the stream.
//!
//! Orientation: Event Stream writers (sepia, tarsier, faery) put the origin at the
//! bottom-left, `y` growing upwards. inflor's origin is the top-left, so the decoder returns
//! `height - 1 - y` and the encoder writes the same, as faery does when it reads and writes
//! `.es` files. Coordinates outside the declared size are [`DecodeErrorKind::OutOfRange`].
//! Other stream types (generic, ATIS, display, color) are rejected as
//! [`DecodeErrorKind::UnknownStreamType`].

use super::prophesee_header::skip_or_fail;
use super::{
    DecodeError, DecodeErrorKind, DecodeOptions, DecodeStats, Decoder, EncodeError, Encoder,
    Format, escape_prefix,
};
use crate::event::{Event, StreamInfo};

/// The magic at the start of every Event Stream file.
pub const MAGIC: &[u8; 12] = b"Event Stream";
/// Header bytes of a DVS stream: magic, version, type, width, height.
const DVS_HEADER: usize = 20;
/// Bytes before the type-specific part: magic, version, type.
const COMMON_HEADER: usize = 16;
/// The DVS stream type.
const TYPE_DVS: u8 = 0x01;
const OVERFLOW: u8 = 0xFF;
const RESET: u8 = 0xFE;
/// Time added by one overflow byte, in µs.
const OVERFLOW_US: i64 = 127;
/// Bytes of one DVS event.
const EVENT: usize = 5;
/// The longest time step the encoder writes as overflow bytes (2^32 µs, 71.6 min: 34 MB of
/// them); a longer silence has no compact form in the format.
const MAX_ENCODED_STEP: i64 = 1 << 32;

/// Decoder for Event Stream v2 DVS files.
pub struct EsDecoder {
    lenient: bool,
    header: [u8; DVS_HEADER],
    header_len: usize,
    info: Option<StreamInfo>,
    width: u32,
    height: u32,
    /// Bytes of an event split across `feed` calls (its first byte is never 0xFE/0xFF).
    pending: [u8; EVENT],
    pending_len: usize,
    /// Absolute offset of the next byte to be fed.
    offset: u64,
    t: i64,
    stats: DecodeStats,
    failed: Option<DecodeError>,
}

impl EsDecoder {
    /// A fresh decoder.
    pub fn new(options: &DecodeOptions) -> Self {
        Self {
            lenient: options.lenient,
            header: [0; DVS_HEADER],
            header_len: 0,
            info: None,
            width: 0,
            height: 0,
            pending: [0; EVENT],
            pending_len: 0,
            offset: 0,
            t: 0,
            stats: DecodeStats::default(),
            failed: None,
        }
    }

    /// How many header bytes this stream has, as far as it is known yet.
    fn header_size(&self) -> usize {
        if self.header_len >= COMMON_HEADER && self.header[15] != TYPE_DVS {
            COMMON_HEADER
        } else {
            DVS_HEADER
        }
    }

    /// Takes header bytes from `input`, checking each part as soon as it is complete (the
    /// magic byte by byte, so any chunking reports the same error). Returns the bytes used.
    fn read_header(&mut self, input: &[u8]) -> Result<usize, DecodeError> {
        let mut used = 0;
        while self.header_len < self.header_size() {
            let Some(&byte) = input.get(used) else {
                break;
            };
            let at = self.header_len;
            self.header[at] = byte;
            self.header_len += 1;
            used += 1;
            if at < MAGIC.len() && MAGIC.get(at) != Some(&byte) {
                return Err(DecodeError::new(
                    Format::Es,
                    0,
                    DecodeErrorKind::BadMagic {
                        expected: "Event Stream",
                        found: escape_prefix(&self.header[..self.header_len]),
                    },
                ));
            }
            if at == 12 && byte != 2 {
                return Err(DecodeError::new(
                    Format::Es,
                    12,
                    DecodeErrorKind::BadHeader(format!(
                        "Event Stream major version {byte}: inflor reads version 2"
                    )),
                ));
            }
            if at == 15 && byte != TYPE_DVS {
                let name = match byte {
                    0 => "generic",
                    2 => "ATIS",
                    3 => "asynchronous display",
                    4 => "color",
                    _ => "undefined",
                };
                return Err(DecodeError::new(
                    Format::Es,
                    15,
                    DecodeErrorKind::UnknownStreamType(format!(
                        "Event Stream type {byte} ({name}); inflor reads DVS (1)"
                    )),
                ));
            }
        }
        if self.header_len == DVS_HEADER && self.info.is_none() {
            let width = u16::from_le_bytes([self.header[16], self.header[17]]);
            let height = u16::from_le_bytes([self.header[18], self.header[19]]);
            if width == 0 || height == 0 {
                return Err(DecodeError::new(
                    Format::Es,
                    16,
                    DecodeErrorKind::BadHeader(format!("sensor size {width}x{height}")),
                ));
            }
            self.width = u32::from(width);
            self.height = u32::from(height);
            self.info = Some(StreamInfo {
                width,
                height,
                source: None,
                format: Format::Es.name().to_string(),
            });
        }
        Ok(used)
    }

    fn feed_inner(&mut self, mut input: &[u8], out: &mut Vec<Event>) -> Result<(), DecodeError> {
        if self.info.is_none() {
            let used = self.read_header(input)?;
            self.offset += used as u64;
            input = input.get(used..).unwrap_or_default();
            if self.info.is_none() {
                return Ok(());
            }
        }
        if self.pending_len > 0 {
            let take = (EVENT - self.pending_len).min(input.len());
            let start = self.offset - self.pending_len as u64;
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&input[..take]);
            self.pending_len += take;
            self.offset += take as u64;
            input = &input[take..];
            if self.pending_len < EVENT {
                return Ok(());
            }
            self.pending_len = 0;
            let event = self.pending;
            self.decode_bytes(&event, start, out)?;
        }
        let used = self.decode_bytes(input, self.offset, out)?;
        self.offset += used as u64;
        let rest = input.get(used..).unwrap_or_default();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
        self.offset += rest.len() as u64;
        Ok(())
    }

    /// The hot loop: decodes events starting at absolute offset `base` and returns how many
    /// bytes it used; the rest (fewer than [`EVENT`] bytes) is an incomplete event.
    fn decode_bytes(
        &mut self,
        bytes: &[u8],
        base: u64,
        out: &mut Vec<Event>,
    ) -> Result<usize, DecodeError> {
        out.reserve(bytes.len() / EVENT);
        let first_event = out.len();
        let (width, height) = (self.width, self.height);
        let mut t = self.t;
        let mut i = 0;
        let mut failure = None;
        while let Some(&first) = bytes.get(i) {
            if first == OVERFLOW {
                t += OVERFLOW_US;
                i += 1;
                continue;
            }
            if first == RESET {
                i += 1;
                continue;
            }
            let Some(&[_, x0, x1, y0, y1]) = bytes.get(i..i + EVENT) else {
                break;
            };
            t += i64::from(first >> 1);
            let x = u32::from(u16::from_le_bytes([x0, x1]));
            let y = u32::from(u16::from_le_bytes([y0, y1]));
            if x < width && y < height {
                out.push(Event::new(
                    t,
                    x as u16,
                    (height - 1 - y) as u16,
                    first & 1 == 1,
                ));
            } else if let Err(e) = self.out_of_range(base + i as u64, x, y) {
                failure = Some(e);
                break;
            }
            i += EVENT;
        }
        self.t = t;
        self.stats.events += (out.len() - first_event) as u64;
        failure.map_or(Ok(i), Err)
    }

    #[cold]
    #[inline(never)]
    fn out_of_range(&mut self, offset: u64, x: u32, y: u32) -> Result<(), DecodeError> {
        let error = DecodeError::new(
            Format::Es,
            offset,
            DecodeErrorKind::OutOfRange {
                x: i64::from(x),
                y: i64::from(y),
                width: self.width as u16,
                height: self.height as u16,
            },
        );
        skip_or_fail(&mut self.stats, self.lenient, error)
    }
}

impl Decoder for EsDecoder {
    fn feed(&mut self, input: &[u8], out: &mut Vec<Event>) -> Result<(), DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.feed_inner(input, out);
        match &result {
            Ok(()) => self.stats.bytes = self.offset,
            // Bytes before the failing record: the same for every chunking.
            Err(e) => {
                self.stats.bytes = e.offset;
                self.failed = Some(e.clone());
            }
        }
        result
    }

    fn finish(&mut self, _out: &mut Vec<Event>) -> Result<(), DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = if self.info.is_none() {
            Err(DecodeError::new(
                Format::Es,
                0,
                DecodeErrorKind::Truncated {
                    what: "Event Stream header",
                    expected: self.header_size() as u64,
                    found: self.header_len as u64,
                },
            ))
        } else if self.pending_len > 0 {
            Err(DecodeError::new(
                Format::Es,
                self.offset - self.pending_len as u64,
                DecodeErrorKind::Truncated {
                    what: "Event Stream DVS event",
                    expected: EVENT as u64,
                    found: self.pending_len as u64,
                },
            ))
        } else {
            Ok(())
        };
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    fn info(&self) -> Option<&StreamInfo> {
        self.info.as_ref()
    }

    fn stats(&self) -> &DecodeStats {
        &self.stats
    }
}

/// Encoder for Event Stream v2.0.0, DVS type. Timestamps must not decrease (the format stores
/// non-negative steps from a start at 0), and a step must be under 2^32 µs.
#[derive(Debug, Default)]
pub struct EsEncoder {
    width: u16,
    height: u16,
    t: i64,
    index: u64,
}

impl EsEncoder {
    /// A fresh encoder.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Encoder for EsEncoder {
    fn begin(&mut self, info: &StreamInfo, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if info.width == 0 || info.height == 0 {
            return Err(EncodeError::Unrepresentable {
                index: 0,
                event: Event::default(),
                reason: format!("sensor size {}x{}", info.width, info.height),
            });
        }
        self.width = info.width;
        self.height = info.height;
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[2, 0, 0, TYPE_DVS]);
        out.extend_from_slice(&info.width.to_le_bytes());
        out.extend_from_slice(&info.height.to_le_bytes());
        Ok(())
    }

    fn encode(&mut self, events: &[Event], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.reserve(events.len() * EVENT);
        for event in events {
            let step = event.t - self.t;
            let reason = if event.x >= self.width || event.y >= self.height {
                format!("outside the {}x{} sensor", self.width, self.height)
            } else if step < 0 {
                format!(
                    "timestamp before the previous one ({} µs); Event Stream cannot go back",
                    self.t
                )
            } else if step >= MAX_ENCODED_STEP {
                "a step of 2^32 µs or more from the previous event".to_string()
            } else {
                String::new()
            };
            if !reason.is_empty() {
                return Err(EncodeError::Unrepresentable {
                    index: self.index,
                    event: *event,
                    reason,
                });
            }
            self.index += 1;
            self.t = event.t;
            let overflows = (step / OVERFLOW_US) as usize;
            out.resize(out.len() + overflows, OVERFLOW);
            let first = (((step % OVERFLOW_US) as u8) << 1) | u8::from(event.polarity);
            out.push(first);
            out.extend_from_slice(&event.x.to_le_bytes());
            out.extend_from_slice(&(self.height - 1 - event.y).to_le_bytes());
        }
        Ok(())
    }

    fn end(&mut self, _out: &mut Vec<u8>) -> Result<(), EncodeError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(
        input: &[u8],
        options: &DecodeOptions,
    ) -> (Vec<Event>, Result<(), DecodeError>, DecodeStats) {
        let mut decoder = EsDecoder::new(options);
        let mut events = Vec::new();
        let result = decoder
            .feed(input, &mut events)
            .and_then(|()| decoder.finish(&mut events));
        (events, result, decoder.stats().clone())
    }

    fn header(width: u16, height: u16) -> Vec<u8> {
        let mut bytes = b"Event Stream\x02\x00\x00\x01".to_vec();
        bytes.extend_from_slice(&width.to_le_bytes());
        bytes.extend_from_slice(&height.to_le_bytes());
        bytes
    }

    #[test]
    fn decodes_overflow_reset_and_flips_y() {
        let mut input = header(320, 240);
        input.extend_from_slice(&[0x01, 0, 0, 239, 0]); // t 0, ON, (0, 239) -> y 0
        input.extend_from_slice(&[OVERFLOW, RESET, OVERFLOW]);
        input.extend_from_slice(&[0x06, 0x3F, 0x01, 0, 0]); // +3 µs, OFF, (319, 0) -> y 239
        let (events, result, _) = decode(&input, &DecodeOptions::default());
        result.unwrap();
        assert_eq!(
            events,
            vec![Event::new(0, 0, 0, true), Event::new(257, 319, 239, false)]
        );
    }

    #[test]
    fn header_errors_are_the_same_for_any_chunking() {
        let input = b"Event Strudel\x02\x00\x00\x01";
        let (_, whole, _) = decode(input, &DecodeOptions::default());
        let mut decoder = EsDecoder::new(&DecodeOptions::default());
        let mut split = Ok(());
        for byte in input.chunks(1) {
            split = decoder.feed(byte, &mut Vec::new());
            if split.is_err() {
                break;
            }
        }
        assert_eq!(whole, split);
        assert!(matches!(
            whole.unwrap_err().kind,
            DecodeErrorKind::BadMagic { .. }
        ));

        let mut atis = header(10, 10);
        atis[15] = 2;
        let (_, result, _) = decode(&atis, &DecodeOptions::default());
        assert!(matches!(
            result.unwrap_err().kind,
            DecodeErrorKind::UnknownStreamType(_)
        ));
        let (_, result, _) = decode(&header(10, 10)[..18], &DecodeOptions::default());
        assert!(matches!(
            result.unwrap_err().kind,
            DecodeErrorKind::Truncated {
                expected: 20,
                found: 18,
                ..
            }
        ));
    }

    #[test]
    fn out_of_range_and_truncated_events() {
        let mut input = header(4, 4);
        input.extend_from_slice(&[0x00, 4, 0, 0, 0, 0x02, 1, 0, 1, 0, 0x00, 1]);
        let (events, result, _) = decode(&input, &DecodeOptions::default());
        assert!(events.is_empty());
        assert_eq!(result.unwrap_err().offset, 20);
        let lenient = DecodeOptions {
            lenient: true,
            ..DecodeOptions::default()
        };
        let (events, result, stats) = decode(&input, &lenient);
        assert_eq!(events, vec![Event::new(1, 1, 2, false)]);
        assert_eq!(stats.bad_records_skipped, 1);
        assert!(matches!(
            result.unwrap_err().kind,
            DecodeErrorKind::Truncated {
                expected: 5,
                found: 2,
                ..
            }
        ));
    }

    #[test]
    fn encoder_round_trips_and_refuses_to_go_back() {
        let info = StreamInfo {
            width: 320,
            height: 240,
            source: None,
            format: String::new(),
        };
        let events = vec![
            Event::new(5, 0, 0, true),
            Event::new(5, 319, 239, false),
            Event::new(5 + 127, 1, 1, true),
            Event::new(100_000, 2, 2, false),
        ];
        let mut encoder = EsEncoder::new();
        let mut bytes = Vec::new();
        encoder.begin(&info, &mut bytes).unwrap();
        encoder.encode(&events, &mut bytes).unwrap();
        encoder.end(&mut bytes).unwrap();
        let (decoded, result, _) = decode(&bytes, &DecodeOptions::default());
        result.unwrap();
        assert_eq!(decoded, events);
        assert!(
            encoder
                .encode(&[Event::new(99, 0, 0, true)], &mut bytes)
                .is_err()
        );
    }
}
