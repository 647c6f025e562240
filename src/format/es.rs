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

use super::common::{Cx, RecordDecoder, Sticky, truncated_tail};
use super::{
    DecodeError, DecodeErrorKind, DecodeOptions, EncodeError, Encoder, Format, escape_prefix,
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
pub type EsDecoder = Sticky<EsRecords>;

/// The Event Stream side of [`EsDecoder`].
pub struct EsRecords {
    header: [u8; DVS_HEADER],
    header_len: usize,
    info: Option<StreamInfo>,
    width: u32,
    height: u32,
    t: i64,
}

impl EsRecords {
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
            self.info = Some(StreamInfo::new(width, height, Format::Es.name()));
        }
        Ok(used)
    }

    /// The hot loop: decodes events starting at absolute offset `base` and returns how many
    /// bytes it used; it stops before an incomplete event. It reads at most `EVENT` bytes per
    /// event of room, so it never appends more events than there is room for.
    fn decode_bytes(
        &mut self,
        bytes: &[u8],
        base: u64,
        cx: &mut Cx<'_>,
    ) -> Result<usize, DecodeError> {
        let bytes = bytes
            .get(..cx.room().saturating_mul(EVENT))
            .unwrap_or(bytes);
        cx.out.reserve(bytes.len() / EVENT);
        let (width, height) = (self.width, self.height);
        let mut t = self.t;
        let mut i = 0;
        let mut failure = None;
        while let Some(&first) = bytes.get(i) {
            if first == OVERFLOW {
                t = t.saturating_add(OVERFLOW_US);
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
            t = t.saturating_add(i64::from(first >> 1));
            let x = u32::from(u16::from_le_bytes([x0, x1]));
            let y = u32::from(u16::from_le_bytes([y0, y1]));
            if x < width && y < height {
                cx.out.push(Event::new(
                    t,
                    x as u16,
                    (height - 1 - y) as u16,
                    first & 1 == 1,
                ));
            } else if let Err(e) = cx.off_sensor(
                Format::Es,
                base + i as u64,
                (i64::from(x), i64::from(y)),
                (width as u16, height as u16),
            ) {
                failure = Some(e);
                break;
            }
            i += EVENT;
        }
        self.t = t;
        failure.map_or(Ok(i), Err)
    }
}

impl RecordDecoder for EsRecords {
    const FORMAT: Format = Format::Es;

    fn new(_options: &DecodeOptions) -> Self {
        Self {
            header: [0; DVS_HEADER],
            header_len: 0,
            info: None,
            width: 0,
            height: 0,
            t: 0,
        }
    }

    fn decode(&mut self, input: &[u8], at: u64, cx: &mut Cx<'_>) -> Result<usize, DecodeError> {
        let mut used = 0;
        if self.info.is_none() {
            used = self.read_header(input)?;
            if self.info.is_none() {
                return Ok(used);
            }
        }
        let rest = input.get(used..).unwrap_or_default();
        Ok(used + self.decode_bytes(rest, at + used as u64, cx)?)
    }

    fn need(&self, _partial: &[u8]) -> Result<usize, DecodeError> {
        Ok(EVENT)
    }

    fn finish(&mut self, partial: &[u8], at: u64, _cx: &mut Cx<'_>) -> Result<(), DecodeError> {
        if self.info.is_none() {
            return Err(DecodeError::new(
                Format::Es,
                0,
                DecodeErrorKind::Truncated {
                    what: "Event Stream header",
                    expected: self.header_size() as u64,
                    found: self.header_len as u64,
                },
            ));
        }
        truncated_tail(Format::Es, "Event Stream DVS event", EVENT, partial, at)
    }

    fn info(&self) -> Option<&StreamInfo> {
        self.info.as_ref()
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
            // Measured in 128 bits: any two i64 timestamps are apart by less than 2^64.
            let step = i128::from(event.t) - i128::from(self.t);
            let reason = if event.x >= self.width || event.y >= self.height {
                format!("outside the {}x{} sensor", self.width, self.height)
            } else if step < 0 {
                format!(
                    "timestamp before the previous one ({} µs); Event Stream cannot go back",
                    self.t
                )
            } else if step >= i128::from(MAX_ENCODED_STEP) {
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
            let overflows = (step / i128::from(OVERFLOW_US)) as usize;
            out.resize(out.len() + overflows, OVERFLOW);
            let first = (((step % i128::from(OVERFLOW_US)) as u8) << 1) | u8::from(event.polarity);
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
    use crate::testkit::decode;

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
        let (events, result, _) =
            decode(Format::Es, &input, &DecodeOptions::default()).into_parts();
        result.unwrap();
        assert_eq!(
            events,
            vec![Event::new(0, 0, 0, true), Event::new(257, 319, 239, false)]
        );
    }

    #[test]
    fn header_errors_are_the_same_for_any_chunking() {
        let input = b"Event Strudel\x02\x00\x00\x01";
        let (_, whole, _) = decode(Format::Es, input, &DecodeOptions::default()).into_parts();
        let split =
            crate::testkit::decode_split(Format::Es, input, &DecodeOptions::default(), &[1]);
        assert_eq!(whole, split.result);
        assert!(matches!(
            whole.unwrap_err().kind,
            DecodeErrorKind::BadMagic { .. }
        ));

        let mut atis = header(10, 10);
        atis[15] = 2;
        let (_, result, _) = decode(Format::Es, &atis, &DecodeOptions::default()).into_parts();
        assert!(matches!(
            result.unwrap_err().kind,
            DecodeErrorKind::UnknownStreamType(_)
        ));
        let (_, result, _) =
            decode(Format::Es, &header(10, 10)[..18], &DecodeOptions::default()).into_parts();
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
        let (events, result, _) =
            decode(Format::Es, &input, &DecodeOptions::default()).into_parts();
        assert!(events.is_empty());
        assert_eq!(result.unwrap_err().offset, 20);
        let lenient = DecodeOptions {
            lenient: true,
            ..DecodeOptions::default()
        };
        let (events, result, stats) = decode(Format::Es, &input, &lenient).into_parts();
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
        let info = StreamInfo::new(320, 240, "");
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
        let (decoded, result, _) =
            decode(Format::Es, &bytes, &DecodeOptions::default()).into_parts();
        result.unwrap();
        assert_eq!(decoded, events);
        assert!(
            encoder
                .encode(&[Event::new(99, 0, 0, true)], &mut bytes)
                .is_err()
        );
        for t in [i64::MIN, i64::MAX] {
            let mut encoder = EsEncoder::new();
            encoder.begin(&info, &mut Vec::new()).unwrap();
            let far = [Event::new(t, 0, 0, true)];
            assert!(encoder.encode(&far, &mut Vec::new()).is_err(), "{t}");
        }
    }
}
