//! The bookkeeping every decoder shares, written once: [`Sticky`] turns a format's
//! [`RecordDecoder`] into a [`Decoder`] (sticky failure, the event bound, the byte and event
//! counts, and the carry buffer for a record split across `feed` calls), [`skip_or_fail`] is
//! lenient skipping, and [`WrappingClock`] unwraps counters sent modulo `2^BITS`.
//!
//! A format only says how its records look: [`RecordDecoder::decode`] decodes whole records
//! from the front of a byte slice and reports how many bytes it used; [`RecordDecoder::need`]
//! says how long the record that a partial slice starts is. `Sticky` does the rest the same
//! way for every format, so every decoder's [`DecodeStats`] mean the same under any chunking.

use std::mem;

use super::{
    DecodeError, DecodeErrorKind, DecodeOptions, DecodeStats, Decoder, Fed, Format,
    MIN_EVENTS_PER_FEED,
};
use crate::event::{Event, StreamInfo};

/// Where one [`RecordDecoder::decode`] call writes, and what it may write.
pub struct Cx<'a> {
    /// Decoded events go here.
    pub(crate) out: &'a mut Vec<Event>,
    /// `out.len()` may not pass this during the current `feed` call.
    limit: usize,
    /// The counts the decoder keeps.
    pub(crate) stats: &'a mut DecodeStats,
    /// Count and skip bad records instead of failing.
    pub(crate) lenient: bool,
    /// Bytes a decoder already consumed that must be decoded again, before the rest of its
    /// input (see [`Cx::replay`]).
    replay: &'a mut Vec<u8>,
}

impl Cx<'_> {
    /// Events the current call may still append.
    #[inline]
    pub(crate) fn room(&self) -> usize {
        self.limit.saturating_sub(self.out.len())
    }

    /// In lenient mode, counts `error` as a skipped bad record; in strict mode, returns it.
    pub(crate) fn skip_or_fail(&mut self, error: DecodeError) -> Result<(), DecodeError> {
        skip_or_fail(self.stats, self.lenient, error)
    }

    /// [`Cx::skip_or_fail`] for an event at `(x, y)` off a `size` sensor, found at `offset`.
    #[cold]
    pub(crate) fn off_sensor(
        &mut self,
        format: Format,
        offset: u64,
        (x, y): (i64, i64),
        (width, height): (u16, u16),
    ) -> Result<(), DecodeError> {
        let kind = DecodeErrorKind::OutOfRange {
            x,
            y,
            width,
            height,
        };
        self.skip_or_fail(DecodeError::new(format, offset, kind))
    }

    /// The output, reserved for `events` more, the counts and whether bad records are
    /// skipped, borrowed apart for a hot loop.
    pub(crate) fn parts(&mut self, events: usize) -> (&mut Vec<Event>, &mut DecodeStats, bool) {
        self.out.reserve(events);
        (self.out, self.stats, self.lenient)
    }

    /// Hands back `bytes` that the decoder consumed in earlier calls and now finds it must
    /// decode as records (an AEDAT 2.0 `#` line that turned out to be binary data). They are
    /// decoded next, before the input the current call did not use.
    pub(crate) fn replay(&mut self, bytes: &[u8]) {
        self.replay.extend_from_slice(bytes);
    }
}

/// In lenient mode, counts `error` as a skipped bad record (keeping the first message and
/// logging it once); in strict mode, returns it.
#[cold]
pub(crate) fn skip_or_fail(
    stats: &mut DecodeStats,
    lenient: bool,
    error: DecodeError,
) -> Result<(), DecodeError> {
    if !lenient {
        return Err(error);
    }
    stats.bad_records_skipped += 1;
    if stats.first_bad_record.is_none() {
        tracing::warn!(%error, "skipping bad records (lenient mode); this is the first");
        stats.first_bad_record = Some(error.to_string());
    }
    Ok(())
}

/// Ends a stream at absolute offset `at`: fine when nothing is left, else a
/// [`DecodeErrorKind::Truncated`] `what` of `expected` bytes holding `partial`.
pub(crate) fn truncated_tail(
    format: Format,
    what: &'static str,
    expected: usize,
    partial: &[u8],
    at: u64,
) -> Result<(), DecodeError> {
    if partial.is_empty() {
        return Ok(());
    }
    let kind = DecodeErrorKind::Truncated {
        what,
        expected: expected as u64,
        found: partial.len() as u64,
    };
    Err(DecodeError::new(format, at, kind))
}

/// The format side of a decoder: how its records look. [`Sticky`] drives it.
pub trait RecordDecoder: Send {
    /// The format that errors name.
    const FORMAT: Format;

    /// A fresh format side for a stream read with `options`.
    fn new(options: &DecodeOptions) -> Self
    where
        Self: Sized;

    /// The most events one record can give. `decode` is only called with at least this much
    /// room, so that it never has to stop inside a record.
    const MAX_EVENTS_PER_RECORD: usize = 1;

    /// Decodes whole records from the front of `input`, whose first byte is at absolute
    /// offset `at`, and returns how many bytes it used. It first emits any events it holds
    /// ([`Self::has_pending`]). It stops before a record that `input` does not hold whole,
    /// and once fewer than [`Self::MAX_EVENTS_PER_RECORD`] events of room are left; it uses
    /// at least one byte when `input` starts with a whole record and there is room.
    fn decode(&mut self, input: &[u8], at: u64, cx: &mut Cx<'_>) -> Result<usize, DecodeError>;

    /// The length of the unit (record, packet, header) that `partial` starts, which
    /// `decode` could not use: more than `partial.len()`, or a lower bound that grows as
    /// more of the unit arrives.
    fn need(&self, partial: &[u8]) -> Result<usize, DecodeError>;

    /// Declares the end of input; `partial` holds the bytes of an unfinished unit (starting
    /// at absolute offset `at`), if any.
    fn finish(&mut self, partial: &[u8], at: u64, cx: &mut Cx<'_>) -> Result<(), DecodeError>;

    /// What the stream says about itself, once known.
    fn info(&self) -> Option<&StreamInfo>;

    /// Whether decoded events wait to be emitted (a packet holding more events than one call
    /// may return).
    fn has_pending(&self) -> bool {
        false
    }
}

/// A [`Decoder`] built from a format's [`RecordDecoder`]: it enforces the
/// [`Decoder`] contract for every format alike.
///
/// - **Sticky failure**: after an error, every later call returns the same error.
/// - **The event bound**: one `feed` appends at most
///   [`DecodeOptions::max_events_per_feed`] events and reports where it stopped.
/// - **The carry**: the bytes of a record split across `feed` calls wait in one buffer;
///   only the missing part of the record is copied into it, and a whole record is always
///   decoded straight from the caller's input.
/// - **Counts**: `stats.events` counts the events appended; `stats.bytes` counts the input
///   bytes taken, and after an error the error's offset (the bytes before the record at
///   fault). Both are the same for every chunking of the same input.
pub struct Sticky<R> {
    records: R,
    stats: DecodeStats,
    /// The first bytes of a unit split across inputs (or handed back by `Cx::replay`).
    carry: Vec<u8>,
    /// Bytes the record decoder handed back in the current call.
    replay: Vec<u8>,
    /// Absolute offset of the first byte not yet decoded (the first carried byte, if any).
    decoded: u64,
    /// Input bytes taken by `feed` so far.
    taken: u64,
    max_events: usize,
    lenient: bool,
    finished: bool,
    failed: Option<DecodeError>,
}

impl<R: RecordDecoder> Sticky<R> {
    /// A fresh decoder (see the format's module for the rules it applies).
    pub fn new(options: &DecodeOptions) -> Self {
        Self::wrap(R::new(options), options)
    }

    /// Wraps the format side `records`.
    pub(crate) fn wrap(records: R, options: &DecodeOptions) -> Self {
        Self {
            records,
            stats: DecodeStats::default(),
            carry: Vec::new(),
            replay: Vec::new(),
            decoded: 0,
            taken: 0,
            max_events: options.max_events_per_feed.max(MIN_EVENTS_PER_FEED),
            lenient: options.lenient,
            finished: false,
            failed: None,
        }
    }

    /// The format side, for queries particular to it.
    pub(crate) fn records(&self) -> &R {
        &self.records
    }

    /// One `decode` call on `input` (the carry or the caller's input), with the replayed
    /// bytes moved to the front of the carry. Returns the bytes used and whether anything
    /// happened (bytes used, events appended, bytes handed back, held events taken).
    fn step(
        &mut self,
        input: &[u8],
        out: &mut Vec<Event>,
        limit: usize,
    ) -> Result<(usize, bool), DecodeError> {
        let before = out.len();
        // Held events are consumed even when lenient mode skips them all.
        let had_pending = self.records.has_pending();
        let mut cx = Cx {
            out,
            limit,
            stats: &mut self.stats,
            lenient: self.lenient,
            replay: &mut self.replay,
        };
        let used = self.records.decode(input, self.decoded, &mut cx)?;
        let emitted = cx.out.len() > before;
        self.decoded += used as u64;
        let replayed = !self.replay.is_empty();
        if replayed {
            self.decoded -= self.replay.len() as u64;
            self.replay.append(&mut self.carry);
            mem::swap(&mut self.carry, &mut self.replay);
        }
        Ok((used, used > 0 || emitted || replayed || had_pending))
    }

    fn no_progress(&self) -> DecodeError {
        DecodeError::new(
            R::FORMAT,
            self.decoded,
            DecodeErrorKind::Unexpected {
                expected: "a decoder that makes progress".to_string(),
                found: format!(
                    "no progress with {} carried bytes",
                    self.carry
                        .len()
                        .max(usize::from(self.records.has_pending()))
                ),
            },
        )
    }

    fn run(
        &mut self,
        input: &[u8],
        out: &mut Vec<Event>,
        limit: usize,
    ) -> Result<Fed, DecodeError> {
        let mut consumed = 0;
        // How many bytes at the end of the carry were taken from `input` in this call: those
        // can be handed back and decoded in place.
        let mut lent = 0;
        loop {
            if limit.saturating_sub(out.len()) < R::MAX_EVENTS_PER_RECORD {
                return Ok(Fed {
                    consumed,
                    more: true,
                });
            }
            if self.carry.is_empty() {
                let rest = input.get(consumed..).unwrap_or_default();
                if rest.is_empty() && !self.records.has_pending() {
                    return Ok(Fed {
                        consumed,
                        more: false,
                    });
                }
                let (used, progress) = self.step(rest, out, limit)?;
                consumed += used;
                if !progress {
                    if self.records.has_pending() {
                        return Err(self.no_progress());
                    }
                    // A unit that `rest` does not hold whole: keep it for the next input.
                    self.carry.extend_from_slice(rest);
                    return Ok(Fed {
                        consumed: input.len(),
                        more: false,
                    });
                }
                continue;
            }
            let need = self.records.need(&self.carry)?;
            if self.carry.len() < need {
                let rest = input.get(consumed..).unwrap_or_default();
                let take = (need - self.carry.len()).min(rest.len());
                self.carry
                    .extend_from_slice(rest.get(..take).unwrap_or_default());
                consumed += take;
                lent += take;
                if self.carry.len() < need {
                    return Ok(Fed {
                        consumed,
                        more: false,
                    });
                }
            }
            let carry = mem::take(&mut self.carry);
            let result = self.step(&carry, out, limit);
            // `step` may have put replayed bytes into the (emptied) carry: they come first.
            let replayed = mem::take(&mut self.carry);
            self.carry = carry;
            let (used, progress) = result?;
            self.carry.drain(..used.min(self.carry.len()));
            lent = lent.min(self.carry.len());
            if !replayed.is_empty() {
                self.carry.splice(0..0, replayed);
            }
            if !self.carry.is_empty() && self.carry.len() == lent {
                // All that is left came from this input: decode it from there.
                consumed -= lent;
                self.carry.clear();
                lent = 0;
            }
            if !progress && self.records.need(&self.carry)? <= self.carry.len() {
                return Err(self.no_progress());
            }
        }
    }

    fn finish_inner(&mut self, out: &mut Vec<Event>) -> Result<(), DecodeError> {
        // What is still held: whole records in the carry, pending events. A caller that fed
        // until `more` was false leaves only a partial unit, if anything.
        while !self.carry.is_empty() || self.records.has_pending() {
            let carry = mem::take(&mut self.carry);
            let result = self.step(&carry, out, usize::MAX);
            let replayed = mem::take(&mut self.carry);
            self.carry = carry;
            let (used, progress) = result?;
            self.carry.drain(..used.min(self.carry.len()));
            if !replayed.is_empty() {
                self.carry.splice(0..0, replayed);
            }
            if !progress {
                break;
            }
        }
        let mut cx = Cx {
            out,
            limit: usize::MAX,
            stats: &mut self.stats,
            lenient: self.lenient,
            replay: &mut self.replay,
        };
        self.records.finish(&self.carry, self.decoded, &mut cx)
    }

    /// Records the outcome of a call: a failure sticks, and fixes `stats.bytes`.
    fn settle<T>(&mut self, result: Result<T, DecodeError>) -> Result<T, DecodeError> {
        match result {
            Ok(value) => {
                self.stats.bytes = self.taken;
                Ok(value)
            }
            Err(error) => {
                self.stats.bytes = error.offset;
                self.failed = Some(error.clone());
                Err(error)
            }
        }
    }
}

impl<R: RecordDecoder> Decoder for Sticky<R> {
    fn feed(&mut self, input: &[u8], out: &mut Vec<Event>) -> Result<Fed, DecodeError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.finished {
            if input.is_empty() {
                return Ok(Fed {
                    consumed: 0,
                    more: false,
                });
            }
            let error = DecodeError::new(
                R::FORMAT,
                self.taken,
                DecodeErrorKind::Unexpected {
                    expected: "no input after finish".to_string(),
                    found: format!("{} more bytes", input.len()),
                },
            );
            return self.settle(Err(error));
        }
        let start = out.len();
        let limit = start.saturating_add(self.max_events);
        let result = self.run(input, out, limit);
        self.stats.events += (out.len() - start) as u64;
        if let Ok(fed) = &result {
            self.taken += fed.consumed as u64;
        }
        self.settle(result)
    }

    fn finish(&mut self, out: &mut Vec<Event>) -> Result<(), DecodeError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.finished {
            return Ok(());
        }
        let start = out.len();
        let result = self.finish_inner(out);
        self.stats.events += (out.len() - start) as u64;
        self.finished = true;
        self.settle(result)
    }

    fn info(&self) -> Option<&StreamInfo> {
        self.records.info()
    }

    fn stats(&self) -> &DecodeStats {
        &self.stats
    }
}

/// A counter sent modulo `2^BITS` units (a 32-bit µs timestamp, a `TIME_HIGH` field): each
/// new raw value is taken as the nearest step from the previous one (less than half the
/// range either way), so wraps forward, and the rare step back across a wrap, keep the
/// unwrapped value continuous without an upper bound. The first value is taken as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct WrappingClock<const BITS: u32> {
    /// Whether a first value was seen.
    pub synced: bool,
    raw: u64,
    /// The unwrapped counter value.
    pub value: i64,
}

impl<const BITS: u32> WrappingClock<BITS> {
    /// Takes the next raw value (only its low `BITS` bits count).
    #[inline(always)]
    pub fn advance(&mut self, raw: u64) {
        let raw = raw & ((1 << BITS) - 1);
        if self.synced {
            // Sign-extend the BITS-bit difference: the step nearest to the previous value.
            let shift = 64 - BITS;
            let delta = ((raw.wrapping_sub(self.raw) << shift) as i64) >> shift;
            self.value = self.value.saturating_add(delta);
        } else {
            self.value = raw as i64;
            self.synced = true;
        }
        self.raw = raw;
    }
}

/// The time, in µs, at which a counter of `2^unit_bits` µs units stands at `counter`, offset by
/// the header's time origin `t0`, saturated so that adding the low `unit_bits` bits of an
/// event's time cannot overflow.
#[inline]
pub(crate) fn time_base(counter: i64, unit_bits: u32, t0: i64) -> i64 {
    let low_span = (1i64 << unit_bits) - 1;
    counter
        .saturating_mul(1 << unit_bits)
        .saturating_add(t0)
        .min(i64::MAX - low_span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_base_leaves_room_for_the_low_bits() {
        assert_eq!(time_base(3, 6, 10), 3 * 64 + 10);
        assert_eq!(time_base(i64::MAX / 8, 6, 0), i64::MAX - 63);
        assert_eq!(time_base(-2, 12, i64::MIN), i64::MIN);
        assert_eq!(time_base(5, 0, i64::MAX), i64::MAX);
    }

    #[test]
    fn clock_takes_the_nearest_step_and_saturates() {
        let mut clock = WrappingClock::<32>::default();
        clock.advance(u64::from(u32::MAX));
        clock.advance(5);
        assert_eq!(clock.value, (1 << 32) + 5);
        clock.advance(u64::from(u32::MAX));
        assert_eq!(
            clock.value,
            (1 << 32) - 1,
            "a small step back across the wrap"
        );
        let mut clock = WrappingClock::<4> {
            synced: true,
            raw: 0,
            value: i64::MAX - 1,
        };
        clock.advance(7);
        assert_eq!(clock.value, i64::MAX);
    }
}
