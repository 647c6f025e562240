//! Prophesee EVT 3.0 RAW: a resumable decoder and an encoder.
//!
//! After the `%` header ([`super::prophesee_header`]) come 16-bit little-endian words whose
//! top 4 bits give the type (Prophesee, "EVT 3.0 Format"). The stream is stateful: words set
//! the row, the time or a base column, and only `EVT_ADDR_X` and the vectors emit events.
//! - `EVT_ADDR_Y` 0x0: row = bits 10..0 (bit 11, master/slave system type, is ignored);
//! - `EVT_ADDR_X` 0x2: one event at column bits 10..0, polarity bit 11;
//! - `VECT_BASE_X` 0x3: base column bits 10..0 and polarity bit 11 for the vectors;
//! - `VECT_12` 0x4 / `VECT_8` 0x5: a 12-/8-bit mask, one event at `base + i` per set bit `i`;
//!   the base then advances by 12 / 8;
//! - `EVT_TIME_LOW` 0x6 / `EVT_TIME_HIGH` 0x8: the low / high 12 bits of a 24-bit µs time.
//!   A `TIME_HIGH` that changes the high part clears the low part (a repeated one, which
//!   sensors send, keeps it), as in Metavision. The 24-bit time wraps every 16.8 s; each new
//!   `TIME_HIGH` is read as the nearest step from the previous one, so `t` keeps growing
//!   across wraps (sensors send `TIME_HIGH` every 4096 µs, far below half the range);
//! - `EXT_TRIGGER` 0xA is counted in `triggers_skipped`; `CONTINUED_4` 0x7, `OTHERS` 0xE and
//!   `CONTINUED_12` 0xF in `other_skipped`; the other types are reserved and rejected (skipped
//!   when lenient).
//!
//! Events before the first `TIME_HIGH` (no time base), or before the first `EVT_ADDR_Y` /
//! `VECT_BASE_X` (no address: a stream cut mid-row), are dropped and counted in
//! `other_skipped`, as Metavision drops words until its first time base.
//!
//! Geometry: the caller's resolution if given, else the header's `format`/`geometry` line,
//! else the sensor generation's (Gen4 / Gen4.1 / IMX636 → 1280×720); with none of these the
//! header is rejected. Events outside it are [`DecodeErrorKind::OutOfRange`]. A `% t0` header
//! line (written by faery) is added to every timestamp.
//!
//! The decoder's hot loop is unsafe code (it writes events into spare capacity);
//! [`Evt3Decoder::reference`] is the same decoder reading every word plainly, and the tests
//! check on arbitrary word streams that both give the same events, counts and errors.

use std::mem::MaybeUninit;

use super::common::{Cx, RecordDecoder, Sticky, WrappingClock, time_base, truncated_tail};
use super::evt2::{check_event, check_geometry, move_time_high};
use super::prophesee_header::{RawEncoding, RawPreamble, write_raw_header};
use super::{DecodeError, DecodeErrorKind, DecodeOptions, EncodeError, Encoder, Format};
use crate::event::{Event, StreamInfo};

const ADDR_Y: u32 = 0x0;
const ADDR_X: u32 = 0x2;
const VECT_BASE_X: u32 = 0x3;
const VECT_12: u32 = 0x4;
const VECT_8: u32 = 0x5;
const TIME_LOW: u32 = 0x6;
const CONTINUED_4: u32 = 0x7;
const TIME_HIGH: u32 = 0x8;
const EXT_TRIGGER: u32 = 0xA;
const OTHERS: u32 = 0xE;
const CONTINUED_12: u32 = 0xF;

/// Bits of `EVT_TIME_HIGH`'s payload.
const TIME_HIGH_BITS: u32 = 12;

/// A row or base column not yet set by the stream: larger than any sensor, so events that use
/// it fail the range check and take the out-of-line path, which drops them.
const NO_ADDRESS: u32 = 0xFFFF_0000;

/// The decoder's state between words (and between `feed` calls).
#[derive(Debug, Clone, Copy)]
struct State {
    clock: WrappingClock<TIME_HIGH_BITS>,
    /// The low 12 bits of the time (`EVT_TIME_LOW`).
    low: i64,
    /// The time of the current `TIME_HIGH`, in µs, with the header's `t0` added and
    /// saturated ([`time_base`]): an event's time is `base + low`.
    base: i64,
    /// The header's time origin.
    t0: i64,
    y: u32,
    base_x: u32,
    polarity: bool,
    last_t: i64,
}

impl State {
    /// The time events take now.
    #[inline(always)]
    fn t(&self) -> i64 {
        self.base + self.low
    }

    /// `EVT_TIME_HIGH`: a new high part clears the low part (a repeated one, which sensors
    /// send, keeps it).
    #[inline(always)]
    fn time_high(&mut self, word: u32) {
        let previous = self.clock;
        self.clock.advance(u64::from(word));
        if self.clock != previous {
            self.low = 0;
        }
        self.base = time_base(self.clock.value, 12, self.t0);
    }
}

/// What the out-of-line path needs to know about a vector word it must filter.
#[derive(Debug, Clone, Copy)]
struct Vector {
    offset: u64,
    mask: u32,
    base_x: u32,
    y: u32,
    t: i64,
    polarity: bool,
    synced: bool,
}

/// Decoder for Prophesee EVT 3.0 RAW streams.
pub type Evt3Decoder = Sticky<Evt3Records>;

impl Evt3Decoder {
    /// The reference twin of [`Evt3Decoder::new`]: the same decoder with its unsafe fast loop
    /// replaced by a plain word-by-word reading of the format. It must give the same events,
    /// counts and errors on every input; the property tests check that it does.
    pub fn reference(options: &DecodeOptions) -> Self {
        Sticky::wrap(Evt3Records::with_mode(options, false), options)
    }
}

/// The EVT 3.0 side of [`Evt3Decoder`].
pub struct Evt3Records {
    preamble: RawPreamble,
    info: Option<StreamInfo>,
    width: u32,
    height: u32,
    state: State,
    /// Whether the fast loop runs (the default), or only the reference reading.
    fast: bool,
}

/// A `VECT_12` / `VECT_8` word's mask and the columns it spans.
#[inline(always)]
fn vector_bits(kind: u32, word: u32) -> (u32, u32) {
    if kind == VECT_12 {
        (word & 0xFFF, 12)
    } else {
        (word & 0xFF, 8)
    }
}

/// The most events one word can give: a `VECT_12` with every bit set.
const MAX_EVENTS_PER_WORD: usize = 12;

impl Evt3Records {
    fn with_mode(options: &DecodeOptions, fast: bool) -> Self {
        Self {
            preamble: RawPreamble::new(Format::Evt3, RawEncoding::Evt3, options),
            info: None,
            width: 0,
            height: 0,
            state: State {
                clock: WrappingClock::default(),
                low: 0,
                base: 0,
                t0: 0,
                y: NO_ADDRESS,
                base_x: NO_ADDRESS,
                polarity: false,
                last_t: i64::MIN,
            },
            fast,
        }
    }

    fn start_data(&mut self, info: StreamInfo) {
        self.width = u32::from(info.width);
        self.height = u32::from(info.height);
        self.state.t0 = info.t0.unwrap_or(0);
        self.state.base = time_base(self.state.clock.value, 12, self.state.t0);
        self.info = Some(info);
    }

    /// Decodes whole words starting at absolute offset `base`, in blocks that the room left
    /// can hold whatever the words are, and returns the bytes used. [`fast_block`] runs over
    /// a block and stops at any word that needs more than the common case (an event it
    /// cannot emit, a reserved type), which [`Self::slow_word`] handles before the fast loop
    /// resumes. The reference reading instead takes every word through
    /// [`Self::reference_word`].
    fn decode_words(
        &mut self,
        words: &[u8],
        base: u64,
        cx: &mut Cx<'_>,
    ) -> Result<usize, DecodeError> {
        debug_assert!(words.len().is_multiple_of(2));
        let mut tally = Tally::default();
        let dims = (self.width, self.height);
        let mut done = 0;
        let mut result = Ok(());
        let mut counted = cx.out.len();
        while let Some(rest) = words.get(done..).filter(|rest| !rest.is_empty()) {
            let block_words = (cx.room() / MAX_EVENTS_PER_WORD).min(BLOCK_WORDS);
            if block_words == 0 {
                break;
            }
            let block = rest.get(..block_words * 2).unwrap_or(rest);
            if self.fast {
                cx.out.reserve(block.len() / 2 * SLOTS_PER_WORD);
                let (written, used) = fast_block(
                    block,
                    cx.out.spare_capacity_mut(),
                    &mut self.state,
                    dims,
                    &mut tally,
                );
                // SAFETY: `fast_block` counts a slot of the spare capacity in `written` only
                // after initialising it, and its slots are the first `written` ones after
                // the length.
                unsafe { cx.out.set_len(cx.out.len() + written) };
                done += used;
                if let Some(&[low, high]) = block.get(used..used + 2) {
                    let word = u32::from(u16::from_le_bytes([low, high]));
                    result = self.slow_word(word, base + done as u64, cx);
                    done += 2;
                }
            } else {
                let (pairs, _) = block.as_chunks::<2>();
                for &pair in pairs {
                    let word = u32::from(u16::from_le_bytes(pair));
                    result = self.reference_word(word, base + done as u64, cx);
                    done += 2;
                    if result.is_err() {
                        break;
                    }
                }
            }
            // While the block's events are still in cache.
            let emitted = cx.out.get(counted..).unwrap_or_default();
            cx.stats.timestamp_regressions += self.count_regressions(emitted);
            counted = cx.out.len();
            if result.is_err() {
                break;
            }
        }
        cx.stats.triggers_skipped += tally.triggers;
        cx.stats.other_skipped += tally.others;
        result.map(|()| done)
    }

    /// Counts the events of `emitted` (the next ones in stream order) earlier than the event
    /// before them, apart from the hot loop, which then carries less state.
    fn count_regressions(&mut self, emitted: &[Event]) -> u64 {
        let (Some(first), Some(last)) = (emitted.first(), emitted.last()) else {
            return 0;
        };
        let inside = emitted.windows(2).filter(|w| w[1].t < w[0].t).count();
        let regressions = u64::from(first.t < self.state.last_t) + inside as u64;
        self.state.last_t = last.t;
        regressions
    }

    /// One word, read plainly as the format describes it: the reference the fast loop must
    /// agree with.
    fn reference_word(
        &mut self,
        word: u32,
        offset: u64,
        cx: &mut Cx<'_>,
    ) -> Result<(), DecodeError> {
        let s = &mut self.state;
        let synced = s.clock.synced;
        match word >> 12 {
            ADDR_Y => s.y = word & 0x7FF,
            ADDR_X => {
                let x = word & 0x7FF;
                if synced && x < self.width && s.y < self.height {
                    let event = Event::new(s.t(), x as u16, s.y as u16, word & 0x800 != 0);
                    cx.out.push(event);
                } else {
                    let y = s.y;
                    return self.reject_single(synced, offset, x, y, cx);
                }
            }
            VECT_BASE_X => {
                s.base_x = word & 0x7FF;
                s.polarity = word & 0x800 != 0;
            }
            kind @ (VECT_12 | VECT_8) => {
                let (mask, span) = vector_bits(kind, word);
                let vector = Vector {
                    offset,
                    mask,
                    base_x: s.base_x,
                    y: s.y,
                    t: s.t(),
                    polarity: s.polarity,
                    synced,
                };
                s.base_x = s.base_x.saturating_add(span);
                return self.filter_vector(vector, cx);
            }
            TIME_LOW => s.low = i64::from(word & 0xFFF),
            TIME_HIGH => s.time_high(word),
            EXT_TRIGGER => cx.stats.triggers_skipped += 1,
            CONTINUED_4 | OTHERS | CONTINUED_12 => cx.stats.other_skipped += 1,
            kind => return self.reject_type(offset, kind, word, cx),
        }
        Ok(())
    }

    /// A word the fast loop stopped at: an event outside the sensor or without time base or
    /// address, a vector with such events, a reserved type (or, never in practice, an event
    /// that did not fit the reserved capacity).
    #[cold]
    #[inline(never)]
    fn slow_word(&mut self, word: u32, offset: u64, cx: &mut Cx<'_>) -> Result<(), DecodeError> {
        let s = self.state;
        let synced = s.clock.synced;
        match word >> 12 {
            ADDR_X => {
                let x = word & 0x7FF;
                if synced && x < self.width && s.y < self.height {
                    cx.out
                        .push(Event::new(s.t(), x as u16, s.y as u16, word & 0x800 != 0));
                    Ok(())
                } else {
                    self.reject_single(synced, offset, x, s.y, cx)
                }
            }
            kind @ (VECT_12 | VECT_8) => {
                let (mask, span) = vector_bits(kind, word);
                self.state.base_x = s.base_x.saturating_add(span);
                let vector = Vector {
                    offset,
                    mask,
                    base_x: s.base_x,
                    y: s.y,
                    t: s.t(),
                    polarity: s.polarity,
                    synced,
                };
                self.filter_vector(vector, cx)
            }
            kind => self.reject_type(offset, kind, word, cx),
        }
    }

    /// An `EVT_ADDR_X` event that is not emitted: no time base or no row yet (dropped and
    /// counted), or outside the sensor (an error, or skipped when lenient).
    #[cold]
    #[inline(never)]
    fn reject_single(
        &self,
        synced: bool,
        offset: u64,
        x: u32,
        y: u32,
        cx: &mut Cx<'_>,
    ) -> Result<(), DecodeError> {
        if !synced || y == NO_ADDRESS {
            cx.stats.other_skipped += 1;
            return Ok(());
        }
        self.out_of_range(offset, x, y, cx)
    }

    /// A vector with at least one event that cannot be emitted: emits the others in column
    /// order and handles each rejected one as [`Self::reject_single`] does.
    #[cold]
    #[inline(never)]
    fn filter_vector(&self, v: Vector, cx: &mut Cx<'_>) -> Result<(), DecodeError> {
        if !v.synced || v.y == NO_ADDRESS || v.base_x >= NO_ADDRESS {
            cx.stats.other_skipped += u64::from(v.mask.count_ones());
            return Ok(());
        }
        let mut bits = v.mask;
        while bits != 0 {
            let x = v.base_x + bits.trailing_zeros();
            bits &= bits - 1;
            if x < self.width && v.y < self.height {
                cx.out
                    .push(Event::new(v.t, x as u16, v.y as u16, v.polarity));
            } else {
                self.out_of_range(v.offset, x, v.y, cx)?;
            }
        }
        Ok(())
    }

    fn out_of_range(
        &self,
        offset: u64,
        x: u32,
        y: u32,
        cx: &mut Cx<'_>,
    ) -> Result<(), DecodeError> {
        let size = (self.width as u16, self.height as u16);
        cx.off_sensor(Format::Evt3, offset, (i64::from(x), i64::from(y)), size)
    }

    #[cold]
    #[inline(never)]
    fn reject_type(
        &self,
        offset: u64,
        kind: u32,
        word: u32,
        cx: &mut Cx<'_>,
    ) -> Result<(), DecodeError> {
        let error = DecodeError::new(
            Format::Evt3,
            offset,
            DecodeErrorKind::Unexpected {
                expected: "an EVT 3.0 word type (0x0, 0x2 to 0x8, 0xA, 0xE or 0xF)".into(),
                found: format!("type {kind:#X} in word {word:#06X}"),
            },
        );
        cx.skip_or_fail(error)
    }
}

impl RecordDecoder for Evt3Records {
    const FORMAT: Format = Format::Evt3;

    const MAX_EVENTS_PER_RECORD: usize = MAX_EVENTS_PER_WORD;

    fn new(options: &DecodeOptions) -> Self {
        Self::with_mode(options, true)
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
        let words = rest.get(..rest.len() & !1).unwrap_or_default();
        Ok(used + self.decode_words(words, at + used as u64, cx)?)
    }

    fn need(&self, _partial: &[u8]) -> Result<usize, DecodeError> {
        Ok(2)
    }

    fn finish(&mut self, partial: &[u8], at: u64, _cx: &mut Cx<'_>) -> Result<(), DecodeError> {
        if self.info.is_none() {
            let info = self.preamble.finish()?;
            self.start_data(info);
        }
        truncated_tail(Format::Evt3, "EVT 3.0 word", 2, partial, at)
    }

    fn info(&self) -> Option<&StreamInfo> {
        self.info.as_ref()
    }
}

/// Words per block of the fast loop: spare capacity is reserved per block.
const BLOCK_WORDS: usize = 2048;
/// Spare slots reserved per word: a vector writes 16 candidate slots (at most 12 kept).
const SLOTS_PER_WORD: usize = 16;

/// Counts the fast loop keeps in registers.
#[derive(Debug, Default)]
struct Tally {
    triggers: u64,
    others: u64,
}

/// The word types the hot loop handles without a branch between them (bit `kind` set).
const PLAIN_KINDS: u32 = 1 << ADDR_Y | 1 << ADDR_X | 1 << TIME_LOW;

/// Picks `a` if `cond`, else `b`, as a conditional move: the word types come in a data-driven
/// order, so a branch on them would mispredict.
#[inline(always)]
fn pick<T: Copy>(cond: bool, a: T, b: T) -> T {
    *std::hint::select_unpredictable(cond, &a, &b)
}

// `write_event` stores an event as two `u64`s; the layout it relies on.
const _: () = {
    assert!(size_of::<Event>() == 16);
    assert!(std::mem::offset_of!(Event, t) == 0);
    assert!(std::mem::offset_of!(Event, x) == 8);
    assert!(std::mem::offset_of!(Event, y) == 10);
    assert!(std::mem::offset_of!(Event, polarity) == 12);
};

/// In the hot loop the row is kept where an event's second 8 bytes hold it (bits 16..31), and
/// a row not yet set as bit 40 (padding: an event on no row is never kept anyway).
const NO_ROW_FIELD: u64 = 1 << 40;

/// Row `y` (or none, [`NO_ADDRESS`]) as the hot loop keeps it.
fn row_field(y: u32) -> u64 {
    if y == NO_ADDRESS {
        NO_ROW_FIELD
    } else {
        u64::from(y & 0xFFFF) << 16
    }
}

/// The row that [`row_field`] gave `field` for.
fn row_of_field(field: u64) -> u32 {
    if field & NO_ROW_FIELD != 0 {
        NO_ADDRESS
    } else {
        (field >> 16) as u32 & 0xFFFF
    }
}

/// An event's column and polarity where its second 8 bytes hold them (on little-endian).
#[inline(always)]
fn column_field(x: u32, polarity: u32) -> u64 {
    debug_assert!(polarity <= 1);
    u64::from(x & 0xFFFF) | u64::from(polarity) << 32
}

/// Writes an event as two 8-byte stores, where a field-by-field write takes four (stores are
/// what the hot loop is short of): `t`, then the fields of [`column_field`] and [`row_field`].
#[inline(always)]
fn write_event(slot: &mut MaybeUninit<Event>, t: i64, column: u64, row: u64) {
    // Byte 12 (the polarity) is bit 32: nothing else sets bits 32..39.
    debug_assert!((column | row) >> 33 & 0x7F == 0);
    let rest = if cfg!(target_endian = "little") {
        column | row
    } else {
        let [x0, x1] = (column as u16).to_ne_bytes();
        let [y0, y1] = ((row >> 16) as u16).to_ne_bytes();
        u64::from_ne_bytes([x0, x1, y0, y1, (column >> 32) as u8 & 1, 0, 0, 0])
    };
    let words = slot.as_mut_ptr().cast::<[u64; 2]>();
    // SAFETY: `slot` is 16 bytes aligned to 8 (`Event` is `repr(C)` with an `i64` first), so
    // the write is in bounds and aligned; the bytes written are `t`, then `x`, `y` and
    // `polarity` (0 or 1, a valid `bool`) at their offsets (checked above), then padding,
    // so the slot holds a valid `Event`.
    unsafe { words.write([t as u64, rest]) };
}

/// The hot loop's state, in registers.
#[derive(Clone, Copy)]
struct Hot {
    /// The time of the current `TIME_HIGH` (see [`State::base`]) and the low 12 bits.
    base: i64,
    t_low: i64,
    /// The row, as [`row_field`] gives it.
    row: u64,
    /// The columns an event may take on the current row: none outside the sensor.
    row_columns: u32,
    written: usize,
}

/// The hot loop: decodes `words` into `spare` while every word is the common case, and
/// returns the number of events written (the first slots of `spare`) and of bytes used; it
/// stops early at a word that [`Evt3Records::slow_word`] must handle. No allocation, no
/// error path, little state, in registers; vectors are emitted without a branch per bit.
#[inline(never)]
fn fast_block(
    words: &[u8],
    spare: &mut [MaybeUninit<Event>],
    state: &mut State,
    dims: (u32, u32),
    tally: &mut Tally,
) -> (usize, usize) {
    // Until the first TIME_HIGH the sensor is zero-sized, so every event stops the loop.
    let (mut width, mut height) = if state.clock.synced { dims } else { (0, 0) };
    let row_width = |y: u32, width: u32, height: u32| pick(y < height, width, 0);
    let mut h = Hot {
        base: state.base,
        t_low: state.low,
        row: row_field(state.y),
        row_columns: row_width(state.y, width, height),
        written: 0,
    };
    let mut used = words.len();
    // A macro, not a closure, so that the loop's state stays in registers: one word; `false`
    // to stop before it.
    macro_rules! step {
        ($word:expr) => {{
            let word: u32 = $word;
            let h = &mut h;
            let kind = word >> 12;
            if PLAIN_KINDS >> kind & 1 == 0 {
                let mut s = State {
                    low: h.t_low,
                    y: row_of_field(h.row),
                    ..*state
                };
                let go = rare_word(
                    word,
                    &mut s,
                    h.row,
                    h.written,
                    spare,
                    (width, height),
                    tally,
                );
                if let Some(written) = go {
                    h.written = written;
                }
                if word >> 12 == TIME_HIGH {
                    (width, height) = dims;
                    h.row_columns = row_width(s.y, width, height);
                }
                (h.base, h.t_low) = (s.base, s.low);
                *state = s;
                go.is_some()
            } else {
                // EVT_ADDR_Y, EVT_ADDR_X and EVT_TIME_LOW, most of a stream, in an order that is
                // data, so without a branch between them: each updates its part of the state by a
                // conditional move, and an event candidate is always written but kept only for an
                // EVT_ADDR_X on the sensor.
                let address = word & 0x7FF;
                let is_y = kind == ADDR_Y;
                h.row = pick(is_y, u64::from(address) << 16, h.row);
                let columns = row_width(address, width, height);
                h.row_columns = pick(is_y, columns, h.row_columns);
                h.t_low = pick(kind == TIME_LOW, i64::from(word & 0xFFF), h.t_low);
                // The column for an EVT_ADDR_X, at least 0x1000 for the other types: one compare
                // keeps an event on the sensor, one more finds an EVT_ADDR_X outside it (which
                // stops the loop), with no branch on the type.
                let column = (word ^ ADDR_X << 12) & 0xF7FF;
                let outside =
                    column.wrapping_sub(h.row_columns) < 0x800u32.wrapping_sub(h.row_columns);
                match (spare.get_mut(h.written), outside) {
                    (Some(slot), false) => {
                        // Column bits 0..10 and polarity bit 11, as `column_field` puts them.
                        let column_bits = u64::from(word & 0x7FF) | u64::from(word & 0x800) << 21;
                        write_event(slot, h.base + h.t_low, column_bits, h.row);
                        h.written += usize::from(column < h.row_columns);
                        true
                    }
                    _ => false,
                }
            }
        }};
    }
    // Four words per load.
    let (quads, tail) = words.as_chunks::<8>();
    'quads: for (q, quad) in quads.iter().enumerate() {
        let four = u64::from_le_bytes(*quad);
        // Unrolled by hand: a loop over the four is not, and costs its counter and a shift
        // by a variable.
        macro_rules! word_of_four {
            ($k:literal) => {
                if !step!(u32::from((four >> (16 * $k)) as u16)) {
                    used = 8 * q + 2 * $k;
                    break 'quads;
                }
            };
        }
        word_of_four!(0);
        word_of_four!(1);
        word_of_four!(2);
        word_of_four!(3);
    }
    if used == words.len() {
        let (pairs, _) = tail.as_chunks::<2>();
        for (k, pair) in pairs.iter().enumerate() {
            if !step!(u32::from(u16::from_le_bytes(*pair))) {
                used = 8 * quads.len() + 2 * k;
                break;
            }
        }
    }
    state.low = h.t_low;
    state.y = row_of_field(h.row);
    (h.written, used)
}

/// A word of the other types: vectors, TIME_HIGH, the skipped types; `None` to stop before
/// it (a vector the hot loop cannot emit, a reserved type). Out of line, so that the hot
/// loop keeps its registers.
#[inline(never)]
fn rare_word(
    word: u32,
    s: &mut State,
    row: u64,
    mut written: usize,
    spare: &mut [MaybeUninit<Event>],
    (width, height): (u32, u32),
    tally: &mut Tally,
) -> Option<usize> {
    match word >> 12 {
        VECT_BASE_X => {
            s.base_x = word & 0x7FF;
            s.polarity = word & 0x800 != 0;
        }
        kind @ (VECT_12 | VECT_8) => {
            let (mask, span) = vector_bits(kind, word);
            if mask != 0 {
                // One past the highest column this vector touches.
                let end = s.base_x.saturating_add(32 - mask.leading_zeros());
                let window = spare
                    .get_mut(written..written + SLOTS_PER_WORD)
                    .and_then(|w| <&mut [MaybeUninit<Event>; SLOTS_PER_WORD]>::try_from(w).ok());
                let (Some(window), true) = (window, end <= width && s.y < height) else {
                    return None;
                };
                // Candidate `bit` goes to the slot after the set bits below it; a clear bit's
                // candidate is overwritten by the next set bit or left past the end.
                let mut kept = 0u32;
                for bit in 0..12 {
                    let slot = &mut window[(kept & 15) as usize];
                    let column = column_field(s.base_x + bit, u32::from(s.polarity));
                    write_event(slot, s.t(), column, row);
                    kept += (mask >> bit) & 1;
                }
                written += kept as usize;
            }
            s.base_x = s.base_x.saturating_add(span);
        }
        TIME_HIGH => s.time_high(word),
        // Rare: counted in memory, keeping registers for the common words.
        EXT_TRIGGER => tally.triggers += 1,
        CONTINUED_4 | OTHERS | CONTINUED_12 => tally.others += 1,
        _ => return None,
    }
    Some(written)
}

/// Log2 of the largest timestamp the EVT 3.0 encoder accepts (2^40 µs, 12.7 days). The limit
/// bounds the bridging `TIME_HIGH` words a jump needs (each spans at most 2047 × 4096 µs):
/// at most 131,072.
const EVT3_MAX_T_BITS: u32 = 40;

/// The fewest events with one timestamp, row and polarity, in increasing columns, that the
/// encoder writes as a vector instead of one `EVT_ADDR_X` each.
const MIN_VECTOR_RUN: usize = 3;

/// Encoder for Prophesee EVT 3.0 RAW: `EVT_TIME_HIGH`/`EVT_TIME_LOW` when the time changes,
/// `EVT_ADDR_Y` when the row changes, then either `EVT_ADDR_X` per event or, for runs of
/// same-time, same-row, same-polarity events in increasing columns, `VECT_BASE_X` and
/// `VECT_12`/`VECT_8` masks (as a sensor writes a burst along a row). Timestamps must lie in
/// `0..2^40` µs; steps of 8.4 s or more are bridged with extra `TIME_HIGH` words.
#[derive(Debug, Default)]
pub struct Evt3Encoder {
    width: u16,
    height: u16,
    time_high: Option<i64>,
    time_low: Option<i64>,
    y: Option<u16>,
    index: u64,
}

impl Evt3Encoder {
    /// A fresh encoder.
    pub fn new() -> Self {
        Self::default()
    }

    fn set_time(&mut self, t: i64, out: &mut Vec<u8>) {
        let before = self.time_high;
        move_time_high(&mut self.time_high, t >> 12, TIME_HIGH_BITS, |high| {
            push_word(out, TIME_HIGH, high as u32);
        });
        if self.time_high != before {
            self.time_low = None;
        }
        let low = t & 0xFFF;
        if self.time_low != Some(low) {
            push_word(out, TIME_LOW, low as u32);
            self.time_low = Some(low);
        }
    }

    /// Writes a run of events sharing time, row and polarity, in strictly increasing columns.
    fn write_vectors(run: &[Event], out: &mut Vec<u8>) {
        let polarity = run.first().is_some_and(|e| e.polarity);
        let pol_bit = u32::from(polarity) << 11;
        let mut base: Option<u32> = None;
        let mut k = 0;
        while let Some(first) = run.get(k) {
            let x = u32::from(first.x);
            let b = match base {
                Some(b) if x < b + 12 => b,
                _ => {
                    push_word(out, VECT_BASE_X, pol_bit | x);
                    x
                }
            };
            let mut mask = 0u32;
            while let Some(e) = run.get(k).filter(|e| u32::from(e.x) < b + 12) {
                mask |= 1 << (u32::from(e.x) - b);
                k += 1;
            }
            if mask < 0x100 {
                push_word(out, VECT_8, mask);
                base = Some(b + 8);
            } else {
                push_word(out, VECT_12, mask);
                base = Some(b + 12);
            }
        }
    }
}

fn push_word(out: &mut Vec<u8>, kind: u32, payload: u32) {
    debug_assert!(payload < 0x1000);
    out.extend_from_slice(&(((kind << 12) | payload) as u16).to_le_bytes());
}

impl Encoder for Evt3Encoder {
    fn begin(&mut self, info: &StreamInfo, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        check_geometry(info, "EVT 3.0")?;
        self.width = info.width;
        self.height = info.height;
        write_raw_header(info, "3.0", "EVT3", out);
        Ok(())
    }

    fn encode(&mut self, events: &[Event], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.reserve(events.len() * 2);
        let first_index = self.index;
        let dims = (self.width, self.height);
        let mut i = 0;
        while let Some(first) = events.get(i) {
            check_event(first, first_index + i as u64, dims, EVT3_MAX_T_BITS)?;
            let mut end = i + 1;
            while let (Some(prev), Some(next)) = (events.get(end - 1), events.get(end)) {
                if next.t != first.t
                    || next.y != first.y
                    || next.polarity != first.polarity
                    || next.x <= prev.x
                {
                    break;
                }
                check_event(next, first_index + end as u64, dims, EVT3_MAX_T_BITS)?;
                end += 1;
            }
            self.set_time(first.t, out);
            if self.y != Some(first.y) {
                push_word(out, ADDR_Y, u32::from(first.y));
                self.y = Some(first.y);
            }
            let run = events.get(i..end).unwrap_or_default();
            if run.len() >= MIN_VECTOR_RUN {
                Self::write_vectors(run, out);
            } else {
                for e in run {
                    push_word(out, ADDR_X, (u32::from(e.polarity) << 11) | u32::from(e.x));
                }
            }
            i = end;
        }
        self.index = first_index + events.len() as u64;
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
    use crate::testkit::{Decoded, drive};
    use proptest::prelude::*;

    const HEADER: &str = "% evt 3.0\n% format EVT3;height=720;width=1280\n% end\n";

    fn stream(words: &[u16]) -> Vec<u8> {
        let mut bytes = HEADER.as_bytes().to_vec();
        for w in words {
            bytes.extend_from_slice(&w.to_le_bytes());
        }
        bytes
    }

    /// Decodes with the fast decoder and with its reference twin.
    fn both(input: &[u8], options: &DecodeOptions, sizes: &[usize]) -> (Decoded, Decoded) {
        let fast = drive(&mut Evt3Decoder::new(options), input, options, sizes);
        let reference = drive(&mut Evt3Decoder::reference(options), input, options, sizes);
        (fast, reference)
    }

    /// Word streams that reach every path: mostly the common types on a small sensor (so
    /// coordinates fall both inside and outside it), vectors, time words, skipped and
    /// reserved types, and arbitrary words.
    fn word_streams() -> impl Strategy<Value = Vec<u16>> {
        let word = prop_oneof![
            4 => (0u16..24).prop_map(|y| y),                       // EVT_ADDR_Y
            6 => (0u16..0x1000).prop_map(|p| 0x2000 | (p & 0x80F) | (p & 0x1F)), // EVT_ADDR_X
            2 => (0u16..0x1000).prop_map(|p| 0x3000 | (p & 0x800) | (p & 0x1F)), // VECT_BASE_X
            2 => any::<u16>().prop_map(|m| 0x4000 | (m & 0xFFF)),    // VECT_12
            2 => any::<u16>().prop_map(|m| 0x5000 | (m & 0xFF)),     // VECT_8
            4 => any::<u16>().prop_map(|l| 0x6000 | (l & 0xFFF)),    // EVT_TIME_LOW
            2 => any::<u16>().prop_map(|h| 0x8000 | (h & 0xFFF)),    // EVT_TIME_HIGH
            1 => prop::sample::select(vec![0x7000u16, 0xA000, 0xE000, 0xF000]),
            1 => any::<u16>(),
        ];
        prop::collection::vec(word, 0..600)
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0xE7_3E7),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// The unsafe fast loop equals the plain reading on arbitrary word streams: the same
        /// events, counts and outcome, strict and lenient, whatever the chunking and the
        /// event bound.
        #[test]
        fn fast_loop_equals_the_reference_reading(
            words in word_streams(),
            sizes in prop::collection::vec(1usize..400, 1..5),
            lenient in any::<bool>(),
            bound in prop_oneof![Just(usize::MAX), 12usize..64],
        ) {
            let mut input = b"% evt 3.0\n% format EVT3;height=20;width=24\n% t0 7\n% end\n".to_vec();
            for w in &words {
                input.extend_from_slice(&w.to_le_bytes());
            }
            let options = DecodeOptions {
                lenient,
                max_events_per_feed: bound,
                ..DecodeOptions::default()
            };
            let (fast, reference) = both(&input, &options, &sizes);
            prop_assert_eq!(&fast, &reference);
            // And chunking changes nothing.
            let (whole, _) = both(&input, &DecodeOptions { lenient, ..DecodeOptions::default() }, &[usize::MAX]);
            prop_assert_eq!(&fast, &whole);
        }
    }

    #[test]
    fn decodes_single_and_vector_events() {
        let input = stream(&[
            0x8001,        // TIME_HIGH 1
            0x6005,        // TIME_LOW 5
            0x0064,        // y = 100
            0x2A0A,        // ON event at x = 0x20A (bit 11 set)
            0x3800 | 1270, // base 1270, ON
            0x4801,        // VECT_12: bits 0 and 11 -> 1270, 1281? (out of range for bit 11)
        ]);
        let (events, result, _) =
            decode(Format::Evt3, &input, &DecodeOptions::default()).into_parts();
        let error = result.unwrap_err();
        assert!(matches!(
            error.kind,
            DecodeErrorKind::OutOfRange {
                x: 1281,
                y: 100,
                ..
            }
        ));
        assert_eq!(
            events,
            vec![
                Event::new(4096 + 5, 0x20A, 100, true),
                Event::new(4096 + 5, 1270, 100, true),
            ]
        );
    }

    #[test]
    fn vectors_advance_the_base() {
        let input = stream(&[
            0x8000,
            0x0002,         // y = 2
            0x3000 | 10,    // base 10, OFF
            0x4000 | 0b101, // 10, 12; base -> 22
            0x5000 | 0x80,  // VECT_8 bit 7 -> 29; base -> 30
            0x4001,         // 30
            0x7000,         // CONTINUED_4
            0xA000,         // trigger
        ]);
        let (events, result, stats) =
            decode(Format::Evt3, &input, &DecodeOptions::default()).into_parts();
        result.unwrap();
        let xs: Vec<u16> = events.iter().map(|e| e.x).collect();
        assert_eq!(xs, vec![10, 12, 29, 30]);
        assert!(events.iter().all(|e| e.y == 2 && !e.polarity && e.t == 0));
        assert_eq!((stats.triggers_skipped, stats.other_skipped), (1, 1));
    }

    #[test]
    fn time_wraps_keep_t_growing() {
        let input = stream(&[
            0x8FFF, 0x6FFF, 0x0000, 0x2000, 0x8000, // wraps: t = 2^24
            0x2001, 0x6001, 0x2002, 0x6000, // back one µs: a regression, kept
            0x2003,
        ]);
        let (events, result, stats) =
            decode(Format::Evt3, &input, &DecodeOptions::default()).into_parts();
        result.unwrap();
        let ts: Vec<i64> = events.iter().map(|e| e.t).collect();
        assert_eq!(ts, vec![(1 << 24) - 1, 1 << 24, (1 << 24) + 1, 1 << 24]);
        assert_eq!(stats.timestamp_regressions, 1);
    }

    #[test]
    fn regressions_are_counted_across_blocks_and_feeds() {
        // A regression every 1000 words, so some fall on the hot loop's block boundaries
        // (every BLOCK_WORDS words) and on feed boundaries; vectors among the singles.
        let mut words = vec![0x8001u16, 0x0005];
        let mut expected = 0u64;
        let mut low = 0u16;
        for i in 1..5000u16 {
            if i % 1000 == 0 {
                low -= 1;
                expected += 1;
            } else if i % 3 == 0 {
                low += 1;
            }
            words.push(0x6000 | low);
            if i % 7 == 0 {
                words.extend([0x3010, 0x4005]);
            } else {
                words.push(0x2000 | (i % 1280));
            }
        }
        let input = stream(&words);
        let (whole, result, stats) =
            decode(Format::Evt3, &input, &DecodeOptions::default()).into_parts();
        result.unwrap();
        assert_eq!(stats.timestamp_regressions, expected);
        for chunk in [1, 7, 4096, 4097] {
            let d = crate::testkit::decode_split(
                Format::Evt3,
                &input,
                &DecodeOptions::default(),
                &[chunk],
            );
            d.result.unwrap();
            assert_eq!(d.events, whole, "chunk {chunk}");
            assert_eq!(d.stats.timestamp_regressions, expected, "chunk {chunk}");
        }
    }

    #[test]
    fn events_without_time_base_or_row_are_dropped_and_counted() {
        let input = stream(&[0x0001, 0x2001, 0x8000, 0x2002, 0x4003, 0x0003, 0x2004]);
        let (events, result, stats) =
            decode(Format::Evt3, &input, &DecodeOptions::default()).into_parts();
        result.unwrap();
        // Before TIME_HIGH: 1 event. After it, row 1 is known (set before the time base),
        // but the vector has no base column: 2 events dropped.
        assert_eq!(
            events,
            vec![Event::new(0, 2, 1, false), Event::new(0, 4, 3, false)]
        );
        assert_eq!(stats.other_skipped, 3);
    }

    #[test]
    fn reserved_types_fail_strict_and_are_skipped_lenient() {
        let input = stream(&[0x8000, 0x0001, 0x1000, 0x2001, 0x9000]);
        let (events, result, _) =
            decode(Format::Evt3, &input, &DecodeOptions::default()).into_parts();
        assert!(events.is_empty());
        let error = result.unwrap_err();
        assert_eq!(error.offset, HEADER.len() as u64 + 4);
        let lenient = DecodeOptions {
            lenient: true,
            ..DecodeOptions::default()
        };
        let (events, result, stats) = decode(Format::Evt3, &input, &lenient).into_parts();
        result.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(stats.bad_records_skipped, 2);
    }

    #[test]
    fn odd_trailing_byte_is_truncation() {
        let mut input = stream(&[0x8000]);
        input.push(0x20);
        let (_, result, _) = decode(Format::Evt3, &input, &DecodeOptions::default()).into_parts();
        let error = result.unwrap_err();
        assert_eq!(error.offset, input.len() as u64 - 1);
        assert!(matches!(
            error.kind,
            DecodeErrorKind::Truncated {
                expected: 2,
                found: 1,
                ..
            }
        ));
    }

    #[test]
    fn encoder_vectorises_runs_and_round_trips() {
        let info = StreamInfo::new(1280, 720, "");
        let mut events = Vec::new();
        // A burst along a row with gaps (vectors, rebased), singles, a long quiet gap.
        for x in [3u16, 4, 9, 14, 15, 40, 41, 42, 1279] {
            events.push(Event::new(100, x, 7, true));
        }
        events.push(Event::new(100, 5, 7, true));
        events.push(Event::new(101, 5, 8, false));
        events.push(Event::new(60_000_000, 0, 719, false));
        events.push(Event::new(59_000_000, 1, 719, false));
        let mut encoder = Evt3Encoder::new();
        let mut bytes = Vec::new();
        encoder.begin(&info, &mut bytes).unwrap();
        encoder.encode(&events, &mut bytes).unwrap();
        encoder.end(&mut bytes).unwrap();
        let (decoded, result, stats) =
            decode(Format::Evt3, &bytes, &DecodeOptions::default()).into_parts();
        result.unwrap();
        assert_eq!(decoded, events);
        assert_eq!(stats.timestamp_regressions, 1);
        let data = bytes.windows(6).position(|w| w == b"% end\n").unwrap() + 6;
        let vectors = bytes[data..]
            .chunks_exact(2)
            .filter(|w| matches!(w[1] >> 4, 0x4 | 0x5))
            .count();
        let far = [Event::new(1 << EVT3_MAX_T_BITS, 0, 0, true)];
        let error = encoder.encode(&far, &mut Vec::new()).unwrap_err();
        assert!(error.to_string().contains("2^40"), "{error}");
        // One run of nine: {3,4,9,14} VECT_12, {15} VECT_8, rebase {40,41,42} VECT_8,
        // rebase {1279} VECT_8.
        assert_eq!(vectors, 4);
    }
}
