//! Prophesee DAT: a resumable decoder and an encoder.
//!
//! A DAT file is a `%` header ([`super::prophesee_header`]), one event-type byte, one
//! event-size byte, then fixed-size little-endian records. inflor reads the two polarity
//! types, which share one 8-byte layout: type 0x00 (`Event2d`, ATIS recordings such as
//! N-CARS) and type 0x0C (CD, Metavision): `u32 ts` (µs), then `u32 data` with
//! `x` = bits 13..0, `y` = bits 27..14 and polarity = bits 31..28 (0 = OFF, 1 = ON; other
//! values are [`DecodeErrorKind::BadPolarity`]). Other types (triggers, IMU) carry no polarity
//! events and are rejected as [`DecodeErrorKind::UnknownStreamType`].
//!
//! The 32-bit timestamps wrap every 2^32 µs (71.6 min); each is read as the nearest step from
//! the previous one, so `t` keeps growing across wraps and a small step back is kept as a
//! regression.
//!
//! Geometry: the caller's resolution if given, else the header's `% Width` / `% Height` (or
//! `geometry`) lines, else 304×240, the ATIS sensor that wrote the headerless-geometry
//! `Event2d` files (N-CARS). Events outside it are [`DecodeErrorKind::OutOfRange`].

use super::prophesee_header::{HeaderReader, WrappingClock, skip_or_fail};
use super::{
    DecodeError, DecodeErrorKind, DecodeOptions, DecodeStats, Decoder, EncodeError, Encoder, Format,
};
use crate::event::{Event, StreamInfo};

/// DAT event type of ATIS `Event2d` records.
pub const EVENT_2D: u8 = 0x00;
/// DAT event type of Metavision CD records.
pub const EVENT_CD: u8 = 0x0C;
/// Bytes per polarity record.
const RECORD: usize = 8;
/// The sensor size assumed when neither the caller nor the header gives one (ATIS).
pub const DEFAULT_GEOMETRY: (u16, u16) = (304, 240);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Header,
    /// The event type and size bytes after the header.
    TypeAndSize,
    Records,
}

/// Decoder for Prophesee DAT files (polarity types 0x00 and 0x0C).
pub struct DatDecoder {
    lenient: bool,
    resolution: Option<(u16, u16)>,
    reader: HeaderReader,
    phase: Phase,
    info: Option<StreamInfo>,
    width: u32,
    height: u32,
    /// Bytes of the type/size pair or of a record split across `feed` calls.
    carry: [u8; RECORD],
    carry_len: usize,
    /// Absolute offset of the next byte to be fed.
    offset: u64,
    clock: WrappingClock<32>,
    last_t: i64,
    stats: DecodeStats,
    failed: Option<DecodeError>,
}

impl DatDecoder {
    /// A fresh decoder.
    pub fn new(options: &DecodeOptions) -> Self {
        Self {
            lenient: options.lenient,
            resolution: options.resolution,
            reader: HeaderReader::new(options.max_record_bytes),
            phase: Phase::Header,
            info: None,
            width: 0,
            height: 0,
            carry: [0; RECORD],
            carry_len: 0,
            offset: 0,
            clock: WrappingClock::default(),
            last_t: i64::MIN,
            stats: DecodeStats::default(),
            failed: None,
        }
    }

    /// Moves up to `need - carry_len` bytes of `input` into the carry; returns the rest.
    fn fill_carry<'a>(&mut self, input: &'a [u8], need: usize) -> &'a [u8] {
        let take = need.saturating_sub(self.carry_len).min(input.len());
        let (head, rest) = input.split_at(take);
        self.carry[self.carry_len..self.carry_len + take].copy_from_slice(head);
        self.carry_len += take;
        self.offset += take as u64;
        rest
    }

    /// Checks the header and the type/size pair, and settles the geometry.
    fn start_records(&mut self, kind: u8, size: u8) -> Result<(), DecodeError> {
        let header = self.reader.header();
        let at = header.len as u64;
        if let Some(encoding) = &header.encoding {
            return Err(DecodeError::new(
                Format::Dat,
                at,
                DecodeErrorKind::BadHeader(format!(
                    "the header declares {}: this is a RAW file, not DAT",
                    encoding.name()
                )),
            ));
        }
        if kind != EVENT_2D && kind != EVENT_CD {
            return Err(DecodeError::new(
                Format::Dat,
                at,
                DecodeErrorKind::UnknownStreamType(format!(
                    "DAT event type {kind:#04X} (inflor reads 0x00 Event2d and 0x0C CD)"
                )),
            ));
        }
        if usize::from(size) != RECORD {
            return Err(DecodeError::new(
                Format::Dat,
                at + 1,
                DecodeErrorKind::Unexpected {
                    expected: format!("event size {RECORD} for DAT event type {kind:#04X}"),
                    found: format!("event size {size}"),
                },
            ));
        }
        let (width, height) = self
            .resolution
            .or(header.geometry)
            .unwrap_or(DEFAULT_GEOMETRY);
        self.width = u32::from(width);
        self.height = u32::from(height);
        self.info = Some(StreamInfo {
            width,
            height,
            source: header.source(),
            format: Format::Dat.name().to_string(),
        });
        self.phase = Phase::Records;
        Ok(())
    }

    fn feed_inner(&mut self, mut input: &[u8], out: &mut Vec<Event>) -> Result<(), DecodeError> {
        if self.phase == Phase::Header {
            let (used, done) = self
                .reader
                .feed(input)
                .map_err(|e| e.into_decode_error(Format::Dat))?;
            self.offset += used as u64;
            input = input.get(used..).unwrap_or_default();
            if !done {
                return Ok(());
            }
            self.phase = Phase::TypeAndSize;
        }
        if self.phase == Phase::TypeAndSize {
            input = self.fill_carry(input, 2);
            if self.carry_len < 2 {
                return Ok(());
            }
            self.carry_len = 0;
            self.start_records(self.carry[0], self.carry[1])?;
        }
        if self.carry_len > 0 {
            let start = self.offset - self.carry_len as u64;
            input = self.fill_carry(input, RECORD);
            if self.carry_len < RECORD {
                return Ok(());
            }
            self.carry_len = 0;
            let record = self.carry;
            self.decode_records(&record, start, out)?;
        }
        let whole = input.len() / RECORD * RECORD;
        let (records, rest) = input.split_at(whole);
        self.decode_records(records, self.offset, out)?;
        self.offset += whole as u64;
        self.fill_carry(rest, RECORD);
        Ok(())
    }

    /// The hot loop over whole records starting at absolute offset `base`.
    fn decode_records(
        &mut self,
        records: &[u8],
        base: u64,
        out: &mut Vec<Event>,
    ) -> Result<(), DecodeError> {
        debug_assert!(records.len().is_multiple_of(RECORD));
        out.reserve(records.len() / RECORD);
        let first_event = out.len();
        let mut clock = self.clock;
        let mut last_t = self.last_t;
        let mut regressions = 0u64;
        let mut failure = None;
        for (i, r) in records.chunks_exact(RECORD).enumerate() {
            let ts = u32::from_le_bytes([r[0], r[1], r[2], r[3]]);
            let data = u32::from_le_bytes([r[4], r[5], r[6], r[7]]);
            clock.advance(u64::from(ts));
            let t = clock.value;
            let x = data & 0x3FFF;
            let y = (data >> 14) & 0x3FFF;
            let polarity = data >> 28;
            if x < self.width && y < self.height && polarity <= 1 {
                regressions += u64::from(t < last_t);
                last_t = t;
                out.push(Event::new(t, x as u16, y as u16, polarity == 1));
            } else if let Err(e) = self.reject(base + (i * RECORD) as u64, x, y, polarity) {
                failure = Some(e);
                break;
            }
        }
        self.clock = clock;
        self.last_t = last_t;
        self.stats.timestamp_regressions += regressions;
        self.stats.events += (out.len() - first_event) as u64;
        failure.map_or(Ok(()), Err)
    }

    #[cold]
    #[inline(never)]
    fn reject(&mut self, offset: u64, x: u32, y: u32, polarity: u32) -> Result<(), DecodeError> {
        let kind = if polarity > 1 {
            DecodeErrorKind::BadPolarity(polarity as u8)
        } else {
            DecodeErrorKind::OutOfRange {
                x: i64::from(x),
                y: i64::from(y),
                width: self.width as u16,
                height: self.height as u16,
            }
        };
        skip_or_fail(
            &mut self.stats,
            self.lenient,
            DecodeError::new(Format::Dat, offset, kind),
        )
    }
}

impl Decoder for DatDecoder {
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
        let truncated = |what, expected: usize, found: usize, offset: u64| {
            DecodeError::new(
                Format::Dat,
                offset,
                DecodeErrorKind::Truncated {
                    what,
                    expected: expected as u64,
                    found: found as u64,
                },
            )
        };
        let result = match self.phase {
            Phase::Header => match self.reader.finish() {
                Err(found) => Err(truncated(
                    "Prophesee header line",
                    found as usize + 1,
                    found as usize,
                    self.offset - found,
                )),
                Ok(()) => Err(truncated(
                    "DAT event type and size bytes",
                    2,
                    0,
                    self.offset,
                )),
            },
            Phase::TypeAndSize => Err(truncated(
                "DAT event type and size bytes",
                2,
                self.carry_len,
                self.offset - self.carry_len as u64,
            )),
            Phase::Records if self.carry_len > 0 => Err(truncated(
                "DAT record",
                RECORD,
                self.carry_len,
                self.offset - self.carry_len as u64,
            )),
            Phase::Records => Ok(()),
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

/// Encoder for Prophesee DAT, CD type (0x0C): a header with `% Width` / `% Height`, the type
/// and size bytes, then one 8-byte record per event.
#[derive(Debug, Default)]
pub struct DatEncoder {
    width: u16,
    height: u16,
    last_t: Option<i64>,
    index: u64,
}

impl DatEncoder {
    /// A fresh encoder.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Encoder for DatEncoder {
    fn begin(&mut self, info: &StreamInfo, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if info.width == 0 || info.height == 0 || info.width > 0x4000 || info.height > 0x4000 {
            return Err(EncodeError::Unrepresentable {
                index: 0,
                event: Event::default(),
                reason: format!(
                    "DAT addresses sensors up to 16384x16384, not {}x{}",
                    info.width, info.height
                ),
            });
        }
        self.width = info.width;
        self.height = info.height;
        out.extend_from_slice(
            format!(
                "% Data file containing CD events.\n% Version 2\n% Width {}\n% Height {}\n",
                info.width, info.height
            )
            .as_bytes(),
        );
        out.extend_from_slice(&[EVENT_CD, RECORD as u8]);
        Ok(())
    }

    fn encode(&mut self, events: &[Event], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.reserve(events.len() * RECORD);
        for event in events {
            // The decoder starts its clock at the first record and takes each record as the
            // nearest step from the previous one.
            let reason = if event.x >= self.width || event.y >= self.height {
                Some(format!("outside the {}x{} sensor", self.width, self.height))
            } else {
                match self.last_t {
                    None if !(0..1 << 32).contains(&event.t) => {
                        Some("the first timestamp must lie in 0..2^32 µs".to_string())
                    }
                    Some(last) if !(-(1 << 31)..1 << 31).contains(&(event.t - last)) => Some(
                        "a step of 2^31 µs (35.8 min) or more from the previous event".to_string(),
                    ),
                    _ => None,
                }
            };
            if let Some(reason) = reason {
                return Err(EncodeError::Unrepresentable {
                    index: self.index,
                    event: *event,
                    reason,
                });
            }
            self.index += 1;
            self.last_t = Some(event.t);
            let data =
                u32::from(event.x) | (u32::from(event.y) << 14) | (u32::from(event.polarity) << 28);
            out.extend_from_slice(&(event.t as u32).to_le_bytes());
            out.extend_from_slice(&data.to_le_bytes());
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
        let mut decoder = DatDecoder::new(options);
        let mut events = Vec::new();
        let result = decoder
            .feed(input, &mut events)
            .and_then(|()| decoder.finish(&mut events));
        (events, result, decoder.stats().clone())
    }

    fn file(kind: u8, records: &[(u32, u32)]) -> Vec<u8> {
        let mut bytes =
            b"% Data file containing N9Chronocam7Event2dE events.\n% Version 2\n".to_vec();
        bytes.extend_from_slice(&[kind, 8]);
        for (ts, data) in records {
            bytes.extend_from_slice(&ts.to_le_bytes());
            bytes.extend_from_slice(&data.to_le_bytes());
        }
        bytes
    }

    fn data(x: u32, y: u32, p: u32) -> u32 {
        x | (y << 14) | (p << 28)
    }

    #[test]
    fn decodes_event2d_records_with_default_geometry() {
        let input = file(EVENT_2D, &[(0, data(6, 18, 1)), (66, data(303, 239, 0))]);
        let mut decoder = DatDecoder::new(&DecodeOptions::default());
        let mut events = Vec::new();
        decoder.feed(&input, &mut events).unwrap();
        decoder.finish(&mut events).unwrap();
        assert_eq!(
            events,
            vec![Event::new(0, 6, 18, true), Event::new(66, 303, 239, false)]
        );
        let info = decoder.info().unwrap();
        assert_eq!((info.width, info.height), DEFAULT_GEOMETRY);
    }

    #[test]
    fn timestamps_wrap_forward() {
        let input = file(
            EVENT_CD,
            &[
                (u32::MAX, data(0, 0, 1)),
                (5, data(0, 0, 1)),
                (3, data(0, 0, 0)),
            ],
        );
        let (events, result, stats) = decode(&input, &DecodeOptions::default());
        result.unwrap();
        let ts: Vec<i64> = events.iter().map(|e| e.t).collect();
        assert_eq!(ts, vec![(1 << 32) - 1, (1 << 32) + 5, (1 << 32) + 3]);
        assert_eq!(stats.timestamp_regressions, 1);
    }

    #[test]
    fn bad_records_fail_strict_and_are_skipped_lenient() {
        let input = file(
            EVENT_CD,
            &[(1, data(304, 0, 0)), (2, data(0, 0, 2)), (3, data(1, 1, 1))],
        );
        let (events, result, _) = decode(&input, &DecodeOptions::default());
        assert!(events.is_empty());
        assert!(matches!(
            result.unwrap_err().kind,
            DecodeErrorKind::OutOfRange { x: 304, .. }
        ));
        let lenient = DecodeOptions {
            lenient: true,
            ..DecodeOptions::default()
        };
        let (events, result, stats) = decode(&input, &lenient);
        result.unwrap();
        assert_eq!(events, vec![Event::new(3, 1, 1, true)]);
        assert_eq!(stats.bad_records_skipped, 2);
    }

    #[test]
    fn wrong_type_size_and_truncation_are_errors() {
        let (_, result, _) = decode(&file(0x0E, &[]), &DecodeOptions::default());
        assert!(matches!(
            result.unwrap_err().kind,
            DecodeErrorKind::UnknownStreamType(_)
        ));
        let mut input = file(EVENT_CD, &[]);
        let last = input.len() - 1;
        input[last] = 16;
        let (_, result, _) = decode(&input, &DecodeOptions::default());
        assert!(matches!(
            result.unwrap_err().kind,
            DecodeErrorKind::Unexpected { .. }
        ));
        let mut input = file(EVENT_CD, &[(1, 1)]);
        input.pop();
        let (_, result, _) = decode(&input, &DecodeOptions::default());
        assert!(matches!(
            result.unwrap_err().kind,
            DecodeErrorKind::Truncated {
                expected: 8,
                found: 7,
                ..
            }
        ));
        let (_, result, _) = decode(b"% Version 2\n", &DecodeOptions::default());
        assert!(matches!(
            result.unwrap_err().kind,
            DecodeErrorKind::Truncated { .. }
        ));
        let (_, result, _) = decode(b"% evt 3.0\n\x0c\x08", &DecodeOptions::default());
        assert!(matches!(
            result.unwrap_err().kind,
            DecodeErrorKind::BadHeader(_)
        ));
    }

    #[test]
    fn encoder_round_trips_and_rejects_unwrappable_gaps() {
        let info = StreamInfo {
            width: 1280,
            height: 720,
            source: None,
            format: String::new(),
        };
        let events = [
            Event::new(10, 1279, 719, true),
            Event::new(9, 0, 0, false),
            Event::new((1 << 32) + 7, 3, 4, true),
        ];
        let mut encoder = DatEncoder::new();
        let mut bytes = Vec::new();
        encoder.begin(&info, &mut bytes).unwrap();
        encoder.encode(&events[..2], &mut bytes).unwrap();
        assert!(encoder.encode(&events[2..], &mut bytes).is_err());
        let (decoded, result, _) = decode(&bytes, &DecodeOptions::default());
        result.unwrap();
        assert_eq!(decoded, events[..2]);
    }
}
