//! Prophesee EVT 2.0 RAW: a resumable decoder and an encoder.
//!
//! After the `%` header ([`super::prophesee_header`]) come 32-bit little-endian words whose
//! top 4 bits give the type (Prophesee, "EVT 2.0 Format"):
//! - `CD_OFF` 0x0 / `CD_ON` 0x1: `ts_low` = bits 27..22, `x` = bits 21..11, `y` = bits 10..0;
//! - `EVT_TIME_HIGH` 0x8: bits 27..0 are the timestamp's bits 33..6, so
//!   `t = time_high << 6 | ts_low` µs. The 34-bit time wraps every 2^34 µs (4 h 46 min); each
//!   new `TIME_HIGH` is read as the nearest step from the previous one, so `t` keeps growing
//!   across wraps;
//! - `EXT_TRIGGER` 0xA is counted in `triggers_skipped`; `OTHERS` 0xE and `CONTINUED` 0xF in
//!   `other_skipped`; the other types are reserved and rejected (skipped when lenient).
//!
//! CD words before the first `TIME_HIGH` carry only 6 of the 34 timestamp bits. Metavision
//! (Prophesee's SDK) discards them, and so does inflor, counting them in `other_skipped`
//! (faery instead stamps them as if `time_high` were 0, i.e. before the rest of the file).
//!
//! Geometry: the caller's resolution if given, else the header's `format`/`geometry` line,
//! else the sensor generation's (Gen3 → 640×480, see
//! [`super::prophesee_header::PropheseeHeader::geometry_by_generation`]); with none of these
//! the header is rejected. Events outside it are [`DecodeErrorKind::OutOfRange`].
//!
//! A `% t0` header line (written by faery) is added to every timestamp.

use super::common::{Cx, RecordDecoder, Sticky, WrappingClock, time_base, truncated_tail};
use super::prophesee_header::{RawEncoding, RawPreamble, write_raw_header};
use super::{DecodeError, DecodeErrorKind, DecodeOptions, EncodeError, Encoder, Format};
use crate::event::{Event, StreamInfo};

const CD_OFF: u32 = 0x0;
const CD_ON: u32 = 0x1;
const TIME_HIGH: u32 = 0x8;
const EXT_TRIGGER: u32 = 0xA;
const OTHERS: u32 = 0xE;
const CONTINUED: u32 = 0xF;

/// Bits of `EVT_TIME_HIGH`'s payload.
const TIME_HIGH_BITS: u32 = 28;

/// Decoder for Prophesee EVT 2.0 RAW streams.
pub type Evt2Decoder = Sticky<Evt2Records>;

/// The EVT 2.0 side of [`Evt2Decoder`].
pub struct Evt2Records {
    preamble: RawPreamble,
    info: Option<StreamInfo>,
    width: u32,
    height: u32,
    /// The header's time origin, added to every timestamp.
    t0: i64,
    /// `EVT_TIME_HIGH`, unwrapped, in units of 64 µs.
    clock: WrappingClock<TIME_HIGH_BITS>,
    last_t: i64,
}

impl Evt2Records {
    fn start_data(&mut self, info: StreamInfo) {
        self.width = u32::from(info.width);
        self.height = u32::from(info.height);
        self.t0 = info.t0.unwrap_or(0);
        self.info = Some(info);
    }

    /// The hot loop: decodes whole words starting at absolute offset `base`. State lives in
    /// locals and is written back once, so the loop body is a few shifts, one range check
    /// and a push; all rare cases go through out-of-line calls.
    fn decode_words(
        &mut self,
        words: &[u8],
        base: u64,
        cx: &mut Cx<'_>,
    ) -> Result<(), DecodeError> {
        debug_assert!(words.len().is_multiple_of(4));
        cx.out.reserve(words.len() / 4);
        let mut clock = self.clock;
        let mut time_high = time_base(clock.value, 6, self.t0);
        let mut last_t = self.last_t;
        // Until the first TIME_HIGH the sensor is zero-sized, so every CD word takes the
        // out-of-line path, which drops it.
        let (mut width, mut height) = if clock.synced {
            (self.width, self.height)
        } else {
            (0, 0)
        };
        let (mut regressions, mut triggers, mut others) = (0u64, 0u64, 0u64);
        let mut failure = None;
        for (i, bytes) in words.chunks_exact(4).enumerate() {
            let word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            let kind = word >> 28;
            if kind <= CD_ON {
                let x = (word >> 11) & 0x7FF;
                let y = word & 0x7FF;
                let t = time_high + i64::from((word >> 22) & 0x3F);
                if x < width && y < height {
                    regressions += u64::from(t < last_t);
                    last_t = t;
                    cx.out
                        .push(Event::new(t, x as u16, y as u16, kind == CD_ON));
                } else if let Err(e) = self.reject_cd(clock.synced, base + 4 * i as u64, x, y, cx) {
                    failure = Some(e);
                    break;
                }
            } else {
                match kind {
                    TIME_HIGH => {
                        clock.advance(u64::from(word));
                        time_high = time_base(clock.value, 6, self.t0);
                        width = self.width;
                        height = self.height;
                    }
                    EXT_TRIGGER => triggers += 1,
                    OTHERS | CONTINUED => others += 1,
                    _ => {
                        let error = DecodeError::new(
                            Format::Evt2,
                            base + 4 * i as u64,
                            DecodeErrorKind::Unexpected {
                                expected: "an EVT 2.0 word type (0x0, 0x1, 0x8, 0xA, 0xE or 0xF)"
                                    .into(),
                                found: format!("type {kind:#X} in word {word:#010X}"),
                            },
                        );
                        if let Err(e) = cx.skip_or_fail(error) {
                            failure = Some(e);
                            break;
                        }
                    }
                }
            }
        }
        self.clock = clock;
        self.last_t = last_t;
        cx.stats.timestamp_regressions += regressions;
        cx.stats.triggers_skipped += triggers;
        cx.stats.other_skipped += others;
        failure.map_or(Ok(()), Err)
    }

    /// A CD word that is not emitted: before the first TIME_HIGH (dropped and counted), or
    /// outside the sensor (an error, or skipped when lenient).
    #[cold]
    #[inline(never)]
    fn reject_cd(
        &self,
        synced: bool,
        offset: u64,
        x: u32,
        y: u32,
        cx: &mut Cx<'_>,
    ) -> Result<(), DecodeError> {
        if !synced {
            cx.stats.other_skipped += 1;
            return Ok(());
        }
        let size = (self.width as u16, self.height as u16);
        cx.off_sensor(Format::Evt2, offset, (i64::from(x), i64::from(y)), size)
    }
}

impl RecordDecoder for Evt2Records {
    const FORMAT: Format = Format::Evt2;

    fn new(options: &DecodeOptions) -> Self {
        Self {
            preamble: RawPreamble::new(Format::Evt2, RawEncoding::Evt2, options),
            info: None,
            width: 0,
            height: 0,
            t0: 0,
            clock: WrappingClock::default(),
            last_t: i64::MIN,
        }
    }

    fn decode(&mut self, input: &[u8], at: u64, cx: &mut Cx<'_>) -> Result<usize, DecodeError> {
        let mut used = 0;
        if self.info.is_none() {
            let (header, info) = self.preamble.feed(input)?;
            used = header;
            match info {
                Some(info) => self.start_data(info),
                None => return Ok(used),
            }
        }
        let rest = input.get(used..).unwrap_or_default();
        let whole = (rest.len() / 4).min(cx.room()) * 4;
        self.decode_words(rest.get(..whole).unwrap_or_default(), at + used as u64, cx)?;
        Ok(used + whole)
    }

    fn need(&self, _partial: &[u8]) -> Result<usize, DecodeError> {
        Ok(4)
    }

    fn finish(&mut self, partial: &[u8], at: u64, _cx: &mut Cx<'_>) -> Result<(), DecodeError> {
        if self.info.is_none() {
            let info = self.preamble.finish()?;
            self.start_data(info);
        }
        truncated_tail(Format::Evt2, "EVT 2.0 word", 4, partial, at)
    }

    fn info(&self) -> Option<&StreamInfo> {
        self.info.as_ref()
    }
}

/// Log2 of the largest timestamp the EVT 2.0 encoder accepts (2^50 µs, 35 years). The limit
/// bounds the bridging `TIME_HIGH` words a jump needs: at most 2^50 / 2^33 = 131,072.
const EVT2_MAX_T_BITS: u32 = 50;

/// Checks what every EVT encoder requires of an event: on the sensor, and a timestamp in
/// `0..2^max_t_bits` µs.
pub(crate) fn check_event(
    event: &Event,
    index: u64,
    (width, height): (u16, u16),
    max_t_bits: u32,
) -> Result<(), EncodeError> {
    let reason = if event.x >= width || event.y >= height {
        format!("outside the {width}x{height} sensor")
    } else if !(0..1i64 << max_t_bits).contains(&event.t) {
        format!("timestamp outside 0..2^{max_t_bits} µs")
    } else {
        return Ok(());
    };
    Err(EncodeError::Unrepresentable {
        index,
        event: *event,
        reason,
    })
}

/// Checks a sensor size for the 11-bit EVT address fields.
pub(crate) fn check_geometry(info: &StreamInfo, name: &str) -> Result<(), EncodeError> {
    if info.width == 0 || info.height == 0 || info.width > 2048 || info.height > 2048 {
        return Err(EncodeError::Unrepresentable {
            index: 0,
            event: Event::default(),
            reason: format!(
                "{name} addresses sensors up to 2048x2048, not {}x{}",
                info.width, info.height
            ),
        });
    }
    Ok(())
}

/// Emits `TIME_HIGH` words so that a decoder's unwrapped counter reaches `target`. A decoder
/// takes each word as the nearest step from the previous one, so a jump of half the counter
/// range or more is bridged by intermediate words.
pub(crate) fn move_time_high(
    current: &mut Option<i64>,
    target: i64,
    bits: u32,
    mut emit: impl FnMut(u64),
) {
    let mask = (1i64 << bits) - 1;
    let max_step = (1i64 << (bits - 1)) - 1;
    let mut value = match *current {
        Some(value) => value,
        None => {
            // The first word sets the counter directly, within one wrap period.
            let first = target.min(mask);
            emit(first as u64);
            first
        }
    };
    while value != target {
        value += (target - value).clamp(-max_step, max_step);
        emit((value & mask) as u64);
    }
    *current = Some(value);
}

/// Encoder for Prophesee EVT 2.0 RAW: a `TIME_HIGH` word whenever the timestamp's bits 33..6
/// change, then one CD word per event.
#[derive(Debug, Default)]
pub struct Evt2Encoder {
    width: u16,
    height: u16,
    time_high: Option<i64>,
    index: u64,
}

impl Evt2Encoder {
    /// A fresh encoder.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Encoder for Evt2Encoder {
    fn begin(&mut self, info: &StreamInfo, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        check_geometry(info, "EVT 2.0")?;
        self.width = info.width;
        self.height = info.height;
        write_raw_header(info, "2.0", "EVT2", out);
        Ok(())
    }

    fn encode(&mut self, events: &[Event], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.reserve(events.len() * 4);
        for event in events {
            check_event(
                event,
                self.index,
                (self.width, self.height),
                EVT2_MAX_T_BITS,
            )?;
            self.index += 1;
            move_time_high(&mut self.time_high, event.t >> 6, TIME_HIGH_BITS, |high| {
                out.extend_from_slice(&((TIME_HIGH << 28) | high as u32).to_le_bytes());
            });
            let kind = if event.polarity { CD_ON } else { CD_OFF };
            let word = (kind << 28)
                | (((event.t & 0x3F) as u32) << 22)
                | (u32::from(event.x) << 11)
                | u32::from(event.y);
            out.extend_from_slice(&word.to_le_bytes());
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

    fn words(header: &str, words: &[u32]) -> Vec<u8> {
        let mut bytes = header.as_bytes().to_vec();
        for w in words {
            bytes.extend_from_slice(&w.to_le_bytes());
        }
        bytes
    }

    fn cd(on: bool, ts_low: u32, x: u32, y: u32) -> u32 {
        (u32::from(on) << 28) | (ts_low << 22) | (x << 11) | y
    }

    const HEADER: &str = "% evt 2.0\n% geometry 640x480\n";

    #[test]
    fn decodes_cd_words_with_time_high() {
        let input = words(
            HEADER,
            &[
                0x8000_0010,
                cd(true, 5, 10, 20),
                cd(false, 63, 639, 479),
                0xA000_0000,
                0xE000_0000,
            ],
        );
        let (events, result, stats) =
            decode(Format::Evt2, &input, &DecodeOptions::default()).into_parts();
        result.unwrap();
        assert_eq!(
            events,
            vec![
                Event::new((0x10 << 6) + 5, 10, 20, true),
                Event::new((0x10 << 6) + 63, 639, 479, false)
            ]
        );
        assert_eq!((stats.triggers_skipped, stats.other_skipped), (1, 1));
        assert_eq!(stats.events, 2);
        assert_eq!(stats.bytes, input.len() as u64);
    }

    #[test]
    fn events_before_the_first_time_high_are_dropped_and_counted() {
        let input = words(HEADER, &[cd(true, 1, 1, 1), 0x8000_0001, cd(true, 2, 2, 2)]);
        let (events, result, stats) =
            decode(Format::Evt2, &input, &DecodeOptions::default()).into_parts();
        result.unwrap();
        assert_eq!(events, vec![Event::new(64 + 2, 2, 2, true)]);
        assert_eq!(stats.other_skipped, 1);
    }

    #[test]
    fn time_high_wraps_forward_and_regressions_are_kept() {
        let top = (1u32 << 28) - 1;
        let input = words(
            HEADER,
            &[
                0x8000_0000 | top,
                cd(true, 0, 0, 0),
                0x8000_0000,
                cd(true, 0, 1, 0),
                cd(true, 0, 1, 0),
                0x8000_0000 | top, // back across the wrap: a regression, not a new epoch
                cd(true, 0, 2, 0),
            ],
        );
        let (events, result, stats) =
            decode(Format::Evt2, &input, &DecodeOptions::default()).into_parts();
        result.unwrap();
        let ts: Vec<i64> = events.iter().map(|e| e.t).collect();
        assert_eq!(
            ts,
            vec![i64::from(top) << 6, 1 << 34, 1 << 34, i64::from(top) << 6]
        );
        assert_eq!(stats.timestamp_regressions, 1);
    }

    #[test]
    fn out_of_range_and_unknown_types_fail_strict_and_are_counted_lenient() {
        let input = words(
            HEADER,
            &[
                0x8000_0000,
                cd(true, 0, 640, 0),
                0x3000_0000,
                cd(true, 0, 1, 1),
            ],
        );
        let (events, result, _) =
            decode(Format::Evt2, &input, &DecodeOptions::default()).into_parts();
        assert!(events.is_empty());
        let error = result.unwrap_err();
        assert_eq!(error.offset, HEADER.len() as u64 + 4);
        assert!(matches!(
            error.kind,
            DecodeErrorKind::OutOfRange { x: 640, .. }
        ));
        let lenient = DecodeOptions {
            lenient: true,
            ..DecodeOptions::default()
        };
        let (events, result, stats) = decode(Format::Evt2, &input, &lenient).into_parts();
        result.unwrap();
        assert_eq!(events, vec![Event::new(0, 1, 1, true)]);
        assert_eq!(stats.bad_records_skipped, 2);
        assert!(
            stats
                .first_bad_record
                .unwrap()
                .contains("outside the 640x480")
        );
    }

    #[test]
    fn t0_is_added_to_every_timestamp() {
        let header = "% evt 2.0\n% geometry 640x480\n% t0 1000000\n";
        let input = words(header, &[0x8000_0002, cd(true, 3, 1, 2)]);
        let d = decode(Format::Evt2, &input, &DecodeOptions::default());
        d.result.unwrap();
        assert_eq!(d.events, [Event::new(1_000_000 + 128 + 3, 1, 2, true)]);
        assert_eq!(d.info.unwrap().t0, Some(1_000_000));
        // An origin near the top saturates instead of wrapping.
        let header = format!("% evt 2.0\n% geometry 640x480\n% t0 {}\n", i64::MAX);
        let input = words(&header, &[0x8FFF_FFFF, cd(true, 63, 1, 2)]);
        let d = decode(Format::Evt2, &input, &DecodeOptions::default());
        d.result.unwrap();
        assert_eq!(d.events, [Event::new(i64::MAX, 1, 2, true)]);
    }

    #[test]
    fn truncated_word_and_header_are_errors() {
        let mut input = words(HEADER, &[0x8000_0000]);
        input.push(0);
        let (_, result, _) = decode(Format::Evt2, &input, &DecodeOptions::default()).into_parts();
        assert!(matches!(
            result.unwrap_err().kind,
            DecodeErrorKind::Truncated {
                expected: 4,
                found: 1,
                ..
            }
        ));
        let (_, result, _) = decode(
            Format::Evt2,
            b"% evt 2.0\n% geom",
            &DecodeOptions::default(),
        )
        .into_parts();
        assert!(matches!(
            result.unwrap_err().kind,
            DecodeErrorKind::Truncated { .. }
        ));
    }

    #[test]
    fn geometry_comes_from_options_then_header_then_generation() {
        let gen3 = "% plugin_name hal_plugin_gen3_fx3\n% evt 2.0\n";
        let d = decode(Format::Evt2, gen3.as_bytes(), &DecodeOptions::default());
        d.result.unwrap();
        let info = d.info.unwrap();
        assert_eq!((info.width, info.height), (640, 480));
        assert_eq!(info.source.as_deref(), Some("hal_plugin_gen3_fx3"));

        let forced = DecodeOptions {
            resolution: Some((100, 50)),
            ..DecodeOptions::default()
        };
        let d = decode(Format::Evt2, HEADER.as_bytes(), &forced);
        d.result.unwrap();
        assert_eq!(d.info.map(|i| (i.width, i.height)), Some((100, 50)));

        let (_, result, _) =
            decode(Format::Evt2, b"% evt 2.0\n", &DecodeOptions::default()).into_parts();
        assert!(matches!(
            result.unwrap_err().kind,
            DecodeErrorKind::BadHeader(_)
        ));
        let (_, result, _) = decode(
            Format::Evt2,
            b"% evt 3.0\n% geometry 1x1\n",
            &DecodeOptions::default(),
        )
        .into_parts();
        assert!(matches!(
            result.unwrap_err().kind,
            DecodeErrorKind::BadHeader(_)
        ));
    }

    #[test]
    fn encoder_bridges_long_gaps_and_round_trips() {
        let info = StreamInfo::new(640, 480, "");
        let events = vec![
            Event::new(5, 1, 2, true),
            Event::new(3, 1, 2, false),
            Event::new(1 << 40, 639, 479, true),
            Event::new((1 << 40) + 64, 0, 0, false),
            Event::new(7, 0, 0, false),
        ];
        let mut encoder = Evt2Encoder::new();
        let mut bytes = Vec::new();
        encoder.begin(&info, &mut bytes).unwrap();
        encoder.encode(&events, &mut bytes).unwrap();
        encoder.end(&mut bytes).unwrap();
        let (decoded, result, _) =
            decode(Format::Evt2, &bytes, &DecodeOptions::default()).into_parts();
        result.unwrap();
        assert_eq!(decoded, events);

        let bad = [Event::new(-1, 0, 0, true)];
        assert!(encoder.encode(&bad, &mut bytes).is_err());
        let bad = [Event::new(0, 640, 0, true)];
        assert!(encoder.encode(&bad, &mut bytes).is_err());
    }
}
