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
//!
//! # Versions, headerless files and the time origin
//! A `% Version 1` header (faery writes it on request) packs the data word differently:
//! `x` = bits 8..0, `y` = bits 16..9, polarity = bits 20..17. kAER, the ATIS software that
//! DAT descends from, wrote `_td.dat` files with no header at all (the Poker-DVS and HOTS
//! datasets): 8-byte records in that version 1 layout from the first byte, as the readers
//! published with those datasets (loris' `readATIS_td`) decode them. A stream whose first
//! byte is not `%` is read so, on a 304×240 sensor unless a resolution is given. A `% T0`
//! line (faery) is added to every timestamp.

use super::common::{Cx, RecordDecoder, Sticky, WrappingClock};
use super::prophesee_header::{HeaderReader, write_dat_header};
use super::{DecodeError, DecodeErrorKind, DecodeOptions, EncodeError, Encoder, Format};
use crate::event::{Event, StreamInfo};

/// DAT event type of ATIS `Event2d` records.
pub const EVENT_2D: u8 = 0x00;
/// DAT event type of Metavision CD records.
pub const EVENT_CD: u8 = 0x0C;
/// Bytes per polarity record.
const RECORD: usize = 8;
/// The sensor size assumed when neither the caller nor the header gives one (ATIS).
pub const DEFAULT_GEOMETRY: (u16, u16) = (304, 240);
/// [`StreamInfo::source`] of a headerless kAER file.
const HEADERLESS_SOURCE: &str = "kAER _td.dat (no header; version 1 layout)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Header,
    /// The event type and size bytes after the header.
    TypeAndSize,
    Records,
}

/// How a record's data word holds x, y and polarity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `% Version 1` and headerless kAER files: x = bits 8..0, y = bits 16..9, polarity =
    /// bits 20..17.
    V1,
    /// `% Version 2` (or no version line): x = bits 13..0, y = bits 27..14, polarity =
    /// bits 31..28.
    V2,
}

/// Decoder for Prophesee DAT files (polarity types 0x00 and 0x0C) and headerless kAER files.
pub type DatDecoder = Sticky<DatRecords>;

/// The DAT side of [`DatDecoder`].
pub struct DatRecords {
    resolution: Option<(u16, u16)>,
    reader: HeaderReader,
    phase: Phase,
    info: Option<StreamInfo>,
    width: u32,
    height: u32,
    layout: Layout,
    /// The header's time origin, added to every timestamp.
    t0: i64,
    clock: WrappingClock<32>,
    last_t: i64,
}

impl DatRecords {
    /// Settles the geometry and the time origin, and moves to the records.
    fn start(
        &mut self,
        layout: Layout,
        geometry: Option<(u16, u16)>,
        source: Option<String>,
        t0: Option<i64>,
    ) {
        let (width, height) = self.resolution.or(geometry).unwrap_or(DEFAULT_GEOMETRY);
        self.width = u32::from(width);
        self.height = u32::from(height);
        self.layout = layout;
        self.t0 = t0.unwrap_or(0);
        self.info = Some(StreamInfo {
            source,
            t0,
            ..StreamInfo::new(width, height, Format::Dat.name())
        });
        self.phase = Phase::Records;
    }

    /// Checks the header and the type/size pair found at `at`, and settles the geometry.
    fn start_records(&mut self, kind: u8, size: u8, at: u64) -> Result<(), DecodeError> {
        let header = self.reader.header();
        let bad_header = |message: String| {
            DecodeError::new(Format::Dat, at, DecodeErrorKind::BadHeader(message))
        };
        if let Some(encoding) = &header.encoding {
            return Err(bad_header(format!(
                "the header declares {}: this is a RAW file, not DAT",
                encoding.name()
            )));
        }
        let layout = match header.version.as_deref() {
            None | Some("2") => Layout::V2,
            Some("1") => Layout::V1,
            Some(other) => {
                return Err(bad_header(format!(
                    "DAT version {other:?}: inflor reads versions 1 and 2"
                )));
            }
        };
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
        self.start(layout, header.geometry, header.source(), header.t0);
        Ok(())
    }

    /// The hot loop over whole records starting at absolute offset `base`, for one layout.
    #[inline(always)]
    fn decode_records_as(
        &mut self,
        records: &[u8],
        base: u64,
        fields: impl Fn(u32) -> (u32, u32, u32),
        cx: &mut Cx<'_>,
    ) -> Result<(), DecodeError> {
        debug_assert!(records.len().is_multiple_of(RECORD));
        cx.out.reserve(records.len() / RECORD);
        let mut clock = self.clock;
        let mut last_t = self.last_t;
        let mut regressions = 0u64;
        let mut failure = None;
        for (i, r) in records.chunks_exact(RECORD).enumerate() {
            let ts = u32::from_le_bytes([r[0], r[1], r[2], r[3]]);
            let data = u32::from_le_bytes([r[4], r[5], r[6], r[7]]);
            clock.advance(u64::from(ts));
            let t = clock.value.saturating_add(self.t0);
            let (x, y, polarity) = fields(data);
            if x < self.width && y < self.height && polarity <= 1 {
                regressions += u64::from(t < last_t);
                last_t = t;
                cx.out
                    .push(Event::new(t, x as u16, y as u16, polarity == 1));
            } else if let Err(e) = self.reject(base + (i * RECORD) as u64, (x, y, polarity), cx) {
                failure = Some(e);
                break;
            }
        }
        self.clock = clock;
        self.last_t = last_t;
        cx.stats.timestamp_regressions += regressions;
        failure.map_or(Ok(()), Err)
    }

    fn decode_records(
        &mut self,
        records: &[u8],
        base: u64,
        cx: &mut Cx<'_>,
    ) -> Result<(), DecodeError> {
        match self.layout {
            Layout::V1 => self.decode_records_as(
                records,
                base,
                |data| (data & 0x1FF, (data >> 9) & 0xFF, (data >> 17) & 0xF),
                cx,
            ),
            Layout::V2 => self.decode_records_as(
                records,
                base,
                |data| (data & 0x3FFF, (data >> 14) & 0x3FFF, data >> 28),
                cx,
            ),
        }
    }

    #[cold]
    #[inline(never)]
    fn reject(
        &self,
        offset: u64,
        (x, y, polarity): (u32, u32, u32),
        cx: &mut Cx<'_>,
    ) -> Result<(), DecodeError> {
        if polarity > 1 {
            let kind = DecodeErrorKind::BadPolarity(polarity as u8);
            return cx.skip_or_fail(DecodeError::new(Format::Dat, offset, kind));
        }
        let size = (self.width as u16, self.height as u16);
        cx.off_sensor(Format::Dat, offset, (i64::from(x), i64::from(y)), size)
    }
}

impl RecordDecoder for DatRecords {
    const FORMAT: Format = Format::Dat;

    fn new(options: &DecodeOptions) -> Self {
        Self {
            resolution: options.resolution,
            reader: HeaderReader::new(options.max_record_bytes),
            phase: Phase::Header,
            info: None,
            width: 0,
            height: 0,
            layout: Layout::V2,
            t0: 0,
            clock: WrappingClock::default(),
            last_t: i64::MIN,
        }
    }

    fn decode(&mut self, input: &[u8], at: u64, cx: &mut Cx<'_>) -> Result<usize, DecodeError> {
        let mut used = 0;
        if self.phase == Phase::Header {
            let (header, done) = self
                .reader
                .feed(input)
                .map_err(|e| e.into_decode_error(Format::Dat))?;
            used = header;
            if !done {
                return Ok(used);
            }
            if self.reader.header().present {
                self.phase = Phase::TypeAndSize;
            } else {
                // No `%` line at all: a kAER `_td.dat` file, records from the first byte.
                self.start(Layout::V1, None, Some(HEADERLESS_SOURCE.to_string()), None);
            }
        }
        if self.phase == Phase::TypeAndSize {
            let Some(&[kind, size]) = input.get(used..used + 2) else {
                return Ok(used);
            };
            self.start_records(kind, size, at + used as u64)?;
            used += 2;
        }
        let rest = input.get(used..).unwrap_or_default();
        let whole = (rest.len() / RECORD).min(cx.room()) * RECORD;
        self.decode_records(rest.get(..whole).unwrap_or_default(), at + used as u64, cx)?;
        Ok(used + whole)
    }

    fn need(&self, _partial: &[u8]) -> Result<usize, DecodeError> {
        Ok(match self.phase {
            Phase::TypeAndSize => 2,
            _ => RECORD,
        })
    }

    fn finish(&mut self, partial: &[u8], at: u64, _cx: &mut Cx<'_>) -> Result<(), DecodeError> {
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
        match self.phase {
            Phase::Header => match self.reader.finish() {
                Err(found) => Err(truncated(
                    "Prophesee header line",
                    found as usize + 1,
                    found as usize,
                    at - found,
                )),
                Ok(()) => Err(truncated("DAT event type and size bytes", 2, 0, at)),
            },
            Phase::TypeAndSize => Err(truncated(
                "DAT event type and size bytes",
                2,
                partial.len(),
                at,
            )),
            Phase::Records if !partial.is_empty() => {
                Err(truncated("DAT record", RECORD, partial.len(), at))
            }
            Phase::Records => Ok(()),
        }
    }

    fn info(&self) -> Option<&StreamInfo> {
        self.info.as_ref()
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
        write_dat_header(info, out);
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
                    Some(last)
                        if !(-(1i128 << 31)..1 << 31)
                            .contains(&(i128::from(event.t) - i128::from(last))) =>
                    {
                        Some(
                            "a step of 2^31 µs (35.8 min) or more from the previous event"
                                .to_string(),
                        )
                    }
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
    use crate::testkit::decode;

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
        let d = decode(Format::Dat, &input, &DecodeOptions::default());
        d.result.unwrap();
        assert_eq!(
            d.events,
            vec![Event::new(0, 6, 18, true), Event::new(66, 303, 239, false)]
        );
        let info = d.info.unwrap();
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
        let (events, result, stats) =
            decode(Format::Dat, &input, &DecodeOptions::default()).into_parts();
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
        let (events, result, _) =
            decode(Format::Dat, &input, &DecodeOptions::default()).into_parts();
        assert!(events.is_empty());
        assert!(matches!(
            result.unwrap_err().kind,
            DecodeErrorKind::OutOfRange { x: 304, .. }
        ));
        let lenient = DecodeOptions {
            lenient: true,
            ..DecodeOptions::default()
        };
        let (events, result, stats) = decode(Format::Dat, &input, &lenient).into_parts();
        result.unwrap();
        assert_eq!(events, vec![Event::new(3, 1, 1, true)]);
        assert_eq!(stats.bad_records_skipped, 2);
    }

    #[test]
    fn wrong_type_size_and_truncation_are_errors() {
        let (_, result, _) =
            decode(Format::Dat, &file(0x0E, &[]), &DecodeOptions::default()).into_parts();
        assert!(matches!(
            result.unwrap_err().kind,
            DecodeErrorKind::UnknownStreamType(_)
        ));
        let mut input = file(EVENT_CD, &[]);
        let last = input.len() - 1;
        input[last] = 16;
        let (_, result, _) = decode(Format::Dat, &input, &DecodeOptions::default()).into_parts();
        assert!(matches!(
            result.unwrap_err().kind,
            DecodeErrorKind::Unexpected { .. }
        ));
        let mut input = file(EVENT_CD, &[(1, 1)]);
        input.pop();
        let (_, result, _) = decode(Format::Dat, &input, &DecodeOptions::default()).into_parts();
        assert!(matches!(
            result.unwrap_err().kind,
            DecodeErrorKind::Truncated {
                expected: 8,
                found: 7,
                ..
            }
        ));
        let (_, result, _) =
            decode(Format::Dat, b"% Version 2\n", &DecodeOptions::default()).into_parts();
        assert!(matches!(
            result.unwrap_err().kind,
            DecodeErrorKind::Truncated { .. }
        ));
        let (_, result, _) = decode(
            Format::Dat,
            b"% evt 3.0\n\x0c\x08",
            &DecodeOptions::default(),
        )
        .into_parts();
        assert!(matches!(
            result.unwrap_err().kind,
            DecodeErrorKind::BadHeader(_)
        ));
    }

    #[test]
    fn version_1_headers_and_headerless_kaer_files_use_the_narrow_layout() {
        let v1 = |x: u32, y: u32, p: u32| x | (y << 9) | (p << 17);
        let records = [(5u32, v1(303, 239, 1)), (9, v1(0, 1, 0))];
        let mut versioned = b"% Version 1\n% Width 304\n% Height 240\n% T0 1000\n".to_vec();
        versioned.extend_from_slice(&[EVENT_CD, 8]);
        let mut headerless = Vec::new();
        for (ts, d) in records {
            for bytes in [&mut versioned, &mut headerless] {
                bytes.extend_from_slice(&ts.to_le_bytes());
                bytes.extend_from_slice(&d.to_le_bytes());
            }
        }
        let (events, result, _) =
            decode(Format::Dat, &versioned, &DecodeOptions::default()).into_parts();
        result.unwrap();
        assert_eq!(
            events,
            [
                Event::new(1005, 303, 239, true),
                Event::new(1009, 0, 1, false)
            ]
        );
        let d = decode(Format::Dat, &headerless, &DecodeOptions::default());
        d.result.unwrap();
        assert_eq!(
            d.events,
            [Event::new(5, 303, 239, true), Event::new(9, 0, 1, false)]
        );
        let info = d.info.unwrap();
        assert_eq!((info.width, info.height), DEFAULT_GEOMETRY);
        assert!(info.source.unwrap().contains("kAER"));
        let (_, result, _) = decode(
            Format::Dat,
            b"% Version 3\n\x0c\x08",
            &DecodeOptions::default(),
        )
        .into_parts();
        assert!(matches!(
            result.unwrap_err().kind,
            DecodeErrorKind::BadHeader(_)
        ));
    }

    #[test]
    fn encoder_round_trips_and_rejects_unwrappable_gaps() {
        let info = StreamInfo::new(1280, 720, "");
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
        assert!(
            encoder
                .encode(&[Event::new(i64::MIN, 0, 0, true)], &mut bytes)
                .is_err()
        );
        let (decoded, result, _) =
            decode(Format::Dat, &bytes, &DecodeOptions::default()).into_parts();
        result.unwrap();
        assert_eq!(decoded, events[..2]);
    }
}
