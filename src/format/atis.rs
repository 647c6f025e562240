//! ATIS 40-bit `.bin` (N-MNIST, N-Caltech101, Orchard et al. 2015): a streaming decoder and an
//! encoder.
//!
//! The file has no header: 5-byte records `x = b0`, `y = b1`, `polarity = b2 >> 7` (1 = ON),
//! `t = ((b2 & 0x7F) << 16) | (b3 << 8) | b4` µs. A record with `y == 240` is not an event but a
//! timestamp-overflow marker: every later timestamp is `2^23` µs further on.
//!
//! The dataset authors' reader (Orchard's `Read_Ndataset.m`) and tonic's `read_mnist_file` add
//! `2^13` per marker, not `2^23`. That cannot be right for a 23-bit counter (after a wrap the
//! time would run backwards by almost 2^23 µs), so we add `2^23` µs, the counter's period. The
//! two real recordings here (0.31 s and 0.30 s) contain no marker, so both rules give the same
//! events for them; a file longer than 8.4 s would differ.
//!
//! # Resolution
//! With [`DecodeOptions::resolution`] the events are checked against it. Without, they are
//! checked against the ATIS sensor (304×240), and [`StreamInfo`] reports 304×240 until
//! [`Decoder::finish`], which then reports the smallest of the datasets' conventional frames
//! that holds every event: 34×34 (N-MNIST), 240×180 (N-Caltech101 as SpikingJelly frames it),
//! else 304×240. So an N-MNIST file comes out as the 34×34 frames every N-MNIST model expects,
//! and every N-Caltech101 file gets the same size whatever its object's extent.

use super::common::{Cx, RecordDecoder, Sticky, skip_or_fail, truncated_tail};
use super::{DecodeError, DecodeErrorKind, DecodeOptions, EncodeError, Encoder, Format};
use crate::event::{Event, StreamInfo};

/// Bytes per record.
const RECORD_BYTES: usize = 5;
/// The `y` value of a timestamp-overflow marker.
const OVERFLOW_Y: u8 = 240;
/// What one overflow marker adds, in µs: the period of the 23-bit timestamp.
const OVERFLOW_PERIOD: i64 = 1 << 23;
/// The ATIS sensor.
const ATIS_SIZE: (u16, u16) = (304, 240);
/// Conventional frames, smallest first (see the module docs).
const CONVENTIONAL_SIZES: [(u16, u16); 3] = [(34, 34), (240, 180), ATIS_SIZE];
/// Log2 of the largest timestamp the encoder accepts (2^40 µs, 12.7 days): it bounds the
/// overflow markers one event may need to 2^17.
const MAX_T_BITS: u32 = 40;

/// Streaming decoder for ATIS `.bin` files (see the module docs).
pub type AtisDecoder = Sticky<AtisRecords>;

/// The ATIS side of [`AtisDecoder`].
pub struct AtisRecords {
    resolution: Option<(u16, u16)>,
    info: StreamInfo,
    /// Bounds events are checked against.
    bounds: (u16, u16),
    /// Largest x and y seen, for the finishing resolution.
    max_x: u16,
    max_y: u16,
    /// µs added by the overflow markers so far.
    time_base: i64,
    last_event: i64,
}

impl RecordDecoder for AtisRecords {
    const FORMAT: Format = Format::Atis;

    fn new(options: &DecodeOptions) -> Self {
        let bounds = options.resolution.unwrap_or(ATIS_SIZE);
        Self {
            resolution: options.resolution,
            info: StreamInfo::new(bounds.0, bounds.1, Format::Atis.name()),
            bounds,
            max_x: 0,
            max_y: 0,
            time_base: 0,
            last_event: i64::MIN,
        }
    }

    fn decode(&mut self, input: &[u8], at: u64, cx: &mut Cx<'_>) -> Result<usize, DecodeError> {
        let (chunks, _) = input.as_chunks::<RECORD_BYTES>();
        let chunks = chunks.get(..cx.room()).unwrap_or(chunks);
        let (out, stats, lenient) = cx.parts(chunks.len());
        let (width, height) = self.bounds;
        let mut last = self.last_event;
        let mut time_base = self.time_base;
        let (mut max_x, mut max_y) = (self.max_x, self.max_y);
        let mut regressions = 0u64;
        let mut result = Ok(chunks.len() * RECORD_BYTES);
        for (i, &[x, y, b2, b3, b4]) in chunks.iter().enumerate() {
            if y == OVERFLOW_Y {
                // Saturates where the largest 23-bit time still fits, so the sum below cannot
                // overflow.
                time_base = time_base
                    .saturating_add(OVERFLOW_PERIOD)
                    .min(i64::MAX - (OVERFLOW_PERIOD - 1));
                continue;
            }
            let (x, y) = (u16::from(x), u16::from(y));
            if x >= width || y >= height {
                let kind = DecodeErrorKind::OutOfRange {
                    x: i64::from(x),
                    y: i64::from(y),
                    width,
                    height,
                };
                let error = DecodeError::new(Format::Atis, at + (i * RECORD_BYTES) as u64, kind);
                if let Err(e) = skip_or_fail(stats, lenient, error) {
                    result = Err(e);
                    break;
                }
                continue;
            }
            let t = time_base + i64::from(u32::from_be_bytes([0, b2 & 0x7F, b3, b4]));
            regressions += u64::from(t < last);
            last = t;
            max_x = max_x.max(x);
            max_y = max_y.max(y);
            out.push(Event::new(t, x, y, b2 & 0x80 != 0));
        }
        self.last_event = last;
        self.time_base = time_base;
        (self.max_x, self.max_y) = (max_x, max_y);
        stats.timestamp_regressions += regressions;
        result
    }

    fn need(&self, _partial: &[u8]) -> Result<usize, DecodeError> {
        Ok(RECORD_BYTES)
    }

    fn finish(&mut self, partial: &[u8], at: u64, _cx: &mut Cx<'_>) -> Result<(), DecodeError> {
        truncated_tail(Format::Atis, "ATIS event record", RECORD_BYTES, partial, at)?;
        if self.resolution.is_none() {
            let fits = |&(w, h): &(u16, u16)| self.max_x < w && self.max_y < h;
            let (width, height) = CONVENTIONAL_SIZES
                .iter()
                .copied()
                .find(fits)
                .unwrap_or(ATIS_SIZE);
            self.info.width = width;
            self.info.height = height;
        }
        Ok(())
    }

    fn info(&self) -> Option<&StreamInfo> {
        Some(&self.info)
    }
}

/// Writes events as an ATIS `.bin` file that [`AtisDecoder`] decodes back to the same events.
///
/// Timestamps must lie in `0..2^40` µs and, once past a `2^23` µs boundary, stay past it: the
/// encoder writes an overflow marker (`x = 0, y = 240`) for every boundary crossed, and no
/// marker can be undone. Coordinates must satisfy `x <= 255` and `y <= 239`.
#[derive(Debug, Clone, Default)]
pub struct AtisEncoder {
    /// µs covered by the markers written so far.
    time_base: i64,
    /// Events written so far (for error messages).
    index: u64,
}

impl AtisEncoder {
    /// A fresh encoder.
    pub fn new() -> Self {
        Self::default()
    }

    fn check(&self, event: &Event) -> Result<(), String> {
        if event.x > 255 || event.y >= u16::from(OVERFLOW_Y) {
            return Err(format!(
                "({}, {}) does not fit x <= 255, y <= 239",
                event.x, event.y
            ));
        }
        if event.t >= 1 << MAX_T_BITS {
            return Err(format!(
                "timestamp {} µs is not below 2^{MAX_T_BITS}",
                event.t
            ));
        }
        if event.t < self.time_base {
            return Err(format!(
                "timestamp {} µs is before {} µs, where an overflow marker was already written",
                event.t, self.time_base
            ));
        }
        Ok(())
    }
}

impl Encoder for AtisEncoder {
    fn begin(&mut self, _info: &StreamInfo, _out: &mut Vec<u8>) -> Result<(), EncodeError> {
        // Headerless: the sensor size is not stored.
        Ok(())
    }

    fn encode(&mut self, events: &[Event], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.reserve(events.len() * RECORD_BYTES);
        for event in events {
            self.check(event)
                .map_err(|reason| EncodeError::Unrepresentable {
                    index: self.index,
                    event: *event,
                    reason,
                })?;
            while event.t - self.time_base >= OVERFLOW_PERIOD {
                out.extend_from_slice(&[0, OVERFLOW_Y, 0, 0, 0]);
                self.time_base += OVERFLOW_PERIOD;
            }
            let [_, t2, t3, t4] = ((event.t - self.time_base) as u32).to_be_bytes();
            let polarity = if event.polarity { 0x80 } else { 0 };
            out.extend_from_slice(&[event.x as u8, event.y as u8, t2 | polarity, t3, t4]);
            self.index += 1;
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
    use crate::format::Decoder;
    use crate::testkit::{Decoded, decode};

    fn atis(input: &[u8]) -> Decoded {
        decode(Format::Atis, input, &DecodeOptions::default())
    }

    #[test]
    fn record_fields_decode() {
        let d = atis(&[7, 15, 0x80 | 0x01, 0x02, 0x03, 8, 9, 0x00, 0x00, 0x05]);
        d.result.unwrap();
        assert_eq!(
            d.events,
            [
                Event::new(0x010203, 7, 15, true),
                Event::new(5, 8, 9, false)
            ]
        );
    }

    #[test]
    fn overflow_marker_adds_the_counter_period() {
        let d = atis(&[1, 1, 0, 0, 9, 0, 240, 0, 0, 0, 2, 2, 0, 0, 3]);
        d.result.unwrap();
        assert_eq!(
            d.events,
            [
                Event::new(9, 1, 1, false),
                Event::new((1 << 23) + 3, 2, 2, false)
            ]
        );
        assert_eq!(d.stats.timestamp_regressions, 0);
    }

    #[test]
    fn finishing_resolution_is_the_smallest_conventional_frame() {
        for ((x, y), size) in [
            ((33, 33), (34, 34)),
            ((34, 0), (240, 180)),
            ((239, 179), (240, 180)),
            ((0, 180), (304, 240)),
        ] {
            let d = atis(&[x, y, 0, 0, 1]);
            d.result.unwrap();
            let info = d.info.unwrap();
            assert_eq!((info.width, info.height), size, "event at ({x}, {y})");
        }
    }

    #[test]
    fn y_above_the_marker_is_out_of_range() {
        let error = atis(&[0, 241, 0, 0, 1]).result.unwrap_err();
        assert!(
            matches!(error.kind, DecodeErrorKind::OutOfRange { y: 241, .. }),
            "{error}"
        );
    }

    #[test]
    fn encoder_writes_markers_and_round_trips() {
        let events = [
            Event::new(0, 255, 239, true),
            Event::new((1 << 23) - 1, 1, 2, false),
            Event::new(3 << 23, 3, 4, true),
        ];
        let mut bytes = Vec::new();
        AtisEncoder::new().encode(&events, &mut bytes).unwrap();
        assert_eq!(bytes.len(), 5 * (3 + 3));
        let d = atis(&bytes);
        d.result.unwrap();
        assert_eq!(d.events, events);
        let error = AtisEncoder::new()
            .encode(
                &[Event::new(1 << 23, 0, 0, true), Event::new(1, 0, 0, true)],
                &mut Vec::new(),
            )
            .unwrap_err();
        assert!(matches!(
            error,
            EncodeError::Unrepresentable { index: 1, .. }
        ));
        let far = [Event::new(1 << MAX_T_BITS, 0, 0, true)];
        assert!(AtisEncoder::new().encode(&far, &mut Vec::new()).is_err());
    }

    #[test]
    fn markers_saturate_instead_of_overflowing() {
        let mut decoder = AtisRecords::new(&DecodeOptions::default());
        decoder.time_base = i64::MAX - OVERFLOW_PERIOD;
        let mut sticky = Sticky::wrap(decoder, &DecodeOptions::default());
        let mut events = Vec::new();
        sticky
            .feed_all(&[0, 240, 0, 0, 0, 1, 1, 0x7F, 0xFF, 0xFF], &mut events)
            .unwrap();
        assert_eq!(events, [Event::new(i64::MAX, 1, 1, false)]);
    }
}
