//! The streaming binner: causal windows over a live event stream, pushed in batches of any size.
//! A window is emitted as soon as it is complete. Pushing a stream in any batch split gives the
//! same windows as pushing it in one call.
//!
//! Windows are built from *panes* of `gcd(window, hop)` (µs or events). Each event is counted
//! once, into the pane it falls in. When a pane completes, its counts are splatted once and added
//! to every window that contains it. Sliding windows therefore cost one increment per event, not
//! one per overlapping window. All counts are integers, so a window equals binning its events
//! directly.
//!
//! Out-of-order timestamps (duration windows): an event in the current pane is counted as usual,
//! and an event in a later pane first completes the current one. An event in an earlier pane is
//! splatted directly into every still-open window that contains it. If all of those windows were
//! already emitted, it is *late*: counted and dropped.
//!
//! Memory: one sensor-sized counter, plus one frame's worth of slots per open window
//! (`ceil(window / hop)` of them, at most
//! [`MAX_OPEN_WINDOWS`](super::window::MAX_OPEN_WINDOWS)), bounded by
//! [`MAX_WINDOW_MEMORY`].

use std::collections::VecDeque;

use crate::event::Event;

use super::counts::{PixelCounts, SlotCounts};
use super::frame::{FrameShape, SparseFrame};
use super::normalize::Normalization;
use super::resize::SplatTable;
use super::window::{StreamWindows, gcd};
use super::{BinnerError, FrameSpec};

/// Highest pane index; later timestamps count in this pane.
const MAX_PANE: u64 = 1 << 62;

/// Most bytes the open windows' slot counts may take together.
pub const MAX_WINDOW_MEMORY: usize = 1 << 30;

/// Default for [`StreamBinner::set_max_idle_windows`].
pub const DEFAULT_MAX_IDLE_WINDOWS: u64 = 1024;

/// One emitted window.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// The window number `k`, from 0 at the start of the stream. It is consecutive, except after
    /// skipped idle windows (see `skipped_before`).
    pub index: u64,
    /// Duration windows: the nominal start `t₀ + k·hop` (µs). Count windows: the timestamp of
    /// the window's first event.
    pub start_us: i64,
    /// Duration windows: the nominal end `t₀ + k·hop + window` (exclusive). Count windows: the
    /// timestamp of the window's last event plus one.
    pub end_us: i64,
    /// Events binned into this window (on the sensor).
    pub events: u64,
    /// `false` for a window cut short by [`StreamBinner::finish`].
    pub complete: bool,
    /// Empty windows skipped just before this one because a run of empty windows exceeded the
    /// idle limit (a long pause or a timestamp jump). 0 normally.
    pub skipped_before: u64,
    /// The binned frame.
    pub frame: SparseFrame,
}

/// What a [`StreamBinner`] has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Events pushed.
    pub events: u64,
    /// Events off the sensor (in no frame).
    pub off_sensor: u64,
    /// Out-of-order events whose windows had all been emitted already, and events before the
    /// stream's first timestamp (in no frame).
    pub late: u64,
    /// Events in the gaps between windows when `hop > window` (in no frame).
    pub between_windows: u64,
    /// Windows emitted.
    pub windows_emitted: u64,
    /// Empty windows not emitted because of the idle limit.
    pub windows_skipped: u64,
}

/// A window still being filled.
#[derive(Debug, Clone)]
struct OpenWindow {
    slots: SlotCounts,
    /// First and last event timestamps (kept for count windows).
    first_t: Option<i64>,
    last_t: Option<i64>,
}

/// The pane that events are being counted into.
#[derive(Debug, Clone, Copy)]
struct CurrentPane {
    index: u64,
    /// Duration panes: `[lo, hi)` µs, the fast-path bounds.
    lo: i64,
    hi: i64,
    /// Whether any window contains this pane.
    binned: bool,
    first_t: Option<i64>,
    last_t: Option<i64>,
}

/// Bins a live stream into causal windows ([`StreamWindows`]) of one [`FrameSpec`].
#[derive(Debug, Clone)]
pub struct StreamBinner {
    table: SplatTable,
    normalization: Normalization,
    windows: StreamWindows,
    /// Pane length in the policy's unit.
    pane: u64,
    panes_per_window: u64,
    panes_per_hop: u64,
    max_idle_windows: u64,
    pixels: PixelCounts,
    /// A completed pane's splat, added to each window that contains it.
    pane_slots: SlotCounts,
    /// Duration windows: the first event's timestamp.
    origin: Option<i64>,
    /// Count windows: events pushed since the stream started.
    pushed: u64,
    current: Option<CurrentPane>,
    /// Duration windows: the highest pane seen.
    watermark: Option<u64>,
    /// Windows `next_close, next_close + 1, …`; `None` until one receives a pane or an event.
    open: VecDeque<Option<OpenWindow>>,
    spare: Vec<OpenWindow>,
    /// The lowest window not yet emitted.
    next_close: u64,
    /// Consecutive empty windows emitted or skipped so far.
    idle_run: u64,
    /// Empty windows skipped since the last emitted window.
    pending_skipped: u64,
    stats: StreamStats,
}

impl StreamBinner {
    /// A streaming binner for `spec` with `windows`.
    pub fn new(spec: &FrameSpec, windows: StreamWindows) -> Result<Self, BinnerError> {
        windows.validate()?;
        spec.validate()?;
        let (window, hop) = windows.window_and_hop();
        // Windows that may be open at once: those still filling, plus one that has started.
        let open = window.div_ceil(hop) + 1;
        let bytes = (open as usize).saturating_mul(SlotCounts::bytes(SplatTable::slots_for(spec)));
        if bytes > MAX_WINDOW_MEMORY {
            return Err(BinnerError::TooLarge {
                what: "open windows (bytes)",
                values: bytes,
                limit: MAX_WINDOW_MEMORY,
            });
        }
        let table = SplatTable::new(spec)?;
        let pane = gcd(window, hop);
        Ok(Self {
            pixels: PixelCounts::new(&table),
            pane_slots: SlotCounts::new(&table),
            table,
            normalization: spec.normalization,
            windows,
            pane,
            panes_per_window: window / pane,
            panes_per_hop: hop / pane,
            max_idle_windows: DEFAULT_MAX_IDLE_WINDOWS,
            origin: None,
            pushed: 0,
            current: None,
            watermark: None,
            open: VecDeque::new(),
            spare: Vec::new(),
            next_close: 0,
            idle_run: 0,
            pending_skipped: 0,
            stats: StreamStats::default(),
        })
    }

    /// Limits how many consecutive empty windows are emitted (default
    /// [`DEFAULT_MAX_IDLE_WINDOWS`]). Beyond it, empty windows are skipped and counted in the next
    /// window's `skipped_before`. This bounds the output after a long pause or a timestamp jump.
    pub fn set_max_idle_windows(&mut self, max: u64) {
        self.max_idle_windows = max;
    }

    /// The shape of every frame produced.
    pub fn shape(&self) -> FrameShape {
        self.table.shape()
    }

    /// The window policy.
    pub fn windows(&self) -> StreamWindows {
        self.windows
    }

    /// What the binner has seen so far (over all streams since it was built).
    pub fn stats(&self) -> StreamStats {
        self.stats
    }

    /// Bins `events` (the next batch of the stream) and appends every window completed by them
    /// to `out`, in window order.
    pub fn push(&mut self, events: &[Event], out: &mut Vec<Window>) {
        self.stats.events += events.len() as u64;
        match self.windows {
            StreamWindows::Duration { .. } => self.push_duration(events, out),
            StreamWindows::Count { .. } => self.push_count(events, out),
        }
    }

    /// Ends the stream. It completes the current pane, then appends every window that has
    /// started but not been emitted, with `complete: false`. The binner is then ready for a new
    /// stream; its statistics keep accumulating.
    pub fn finish(&mut self, out: &mut Vec<Window>) {
        if let Some(current) = self.current.take() {
            self.close_pane(current);
        }
        let last_started = match self.windows {
            StreamWindows::Duration { .. } => self.watermark.map(|w| w / self.panes_per_hop),
            StreamWindows::Count { .. } => self
                .pushed
                .checked_sub(1)
                .map(|last| last / self.pane / self.panes_per_hop),
        };
        if let Some(last) = last_started {
            self.emit_through(last, false, out);
        }
        while let Some(window) = self.open.pop_front() {
            if let Some(window) = window {
                self.recycle(window);
            }
        }
        self.pixels.clear();
        self.pane_slots.clear();
        self.origin = None;
        self.pushed = 0;
        self.watermark = None;
        self.next_close = 0;
        self.idle_run = 0;
        self.pending_skipped = 0;
    }

    fn push_count(&mut self, events: &[Event], out: &mut Vec<Window>) {
        let mut rest = events;
        while !rest.is_empty() {
            let q = self.pushed / self.pane;
            let room = self.pane - self.pushed % self.pane;
            let take = room.min(rest.len() as u64) as usize;
            let (run, tail) = rest.split_at(take);
            let binned = self.binned(q);
            let current = self.current.get_or_insert(CurrentPane {
                index: q,
                lo: i64::MIN,
                hi: i64::MAX,
                binned,
                first_t: None,
                last_t: None,
            });
            if binned {
                current.first_t = current.first_t.or(run.first().map(|e| e.t));
                current.last_t = run.last().map(|e| e.t).or(current.last_t);
                self.stats.off_sensor += self.pixels.add(run);
            } else {
                self.stats.between_windows += take as u64;
            }
            self.pushed += take as u64;
            rest = tail;
            if self.pushed.is_multiple_of(self.pane) {
                if let Some(done) = self.current.take() {
                    self.close_pane(done);
                }
                self.close_windows_ending_by(q + 1, out);
            }
        }
    }

    fn push_duration(&mut self, events: &[Event], out: &mut Vec<Window>) {
        let mut i = 0;
        while i < events.len() {
            let event = events[i];
            // Fast path: a run of events inside the current pane.
            if let Some(current) = &mut self.current
                && event.t >= current.lo
                && event.t < current.hi
            {
                let (lo, hi) = (current.lo, current.hi);
                let run_len = events[i..]
                    .iter()
                    .position(|e| e.t < lo || e.t >= hi)
                    .unwrap_or(events.len() - i);
                let run = &events[i..i + run_len];
                if current.binned {
                    current.first_t = current.first_t.or(Some(event.t));
                    current.last_t = run.last().map(|e| e.t);
                    self.stats.off_sensor += self.pixels.add(run);
                } else {
                    self.stats.between_windows += run_len as u64;
                }
                i += run_len;
                continue;
            }
            let origin = *self.origin.get_or_insert(event.t);
            i += 1;
            if event.t < origin {
                self.stats.late += 1;
                continue;
            }
            let offset = (i128::from(event.t) - i128::from(origin)) / i128::from(self.pane);
            // Saturate far beyond any real stream (2^62 panes of at least 1 µs is 146 000
            // years), so that window arithmetic on pane indices cannot overflow.
            let q = offset.min(i128::from(MAX_PANE)) as u64;
            match self.watermark {
                Some(watermark) if q < watermark => self.splat_out_of_order(&event, q),
                Some(watermark) if q == watermark => {
                    // The current pane, at a bound the fast path cannot express (i64::MAX).
                    self.add_to_current(&event);
                }
                _ => {
                    // Time moved into a new pane: complete the previous one, emit every window
                    // that ends by this pane, and start counting here.
                    if let Some(done) = self.current.take() {
                        self.close_pane(done);
                    }
                    self.watermark = Some(q);
                    self.close_windows_ending_by(q, out);
                    self.current = Some(self.duration_pane(origin, q));
                    self.add_to_current(&event);
                }
            }
        }
    }

    fn add_to_current(&mut self, event: &Event) {
        if let Some(current) = &mut self.current {
            if current.binned {
                current.first_t = current.first_t.or(Some(event.t));
                current.last_t = Some(event.t);
                self.stats.off_sensor += self.pixels.add(std::slice::from_ref(event));
            } else {
                self.stats.between_windows += 1;
            }
        }
    }

    fn duration_pane(&self, origin: i64, q: u64) -> CurrentPane {
        let lo = i128::from(origin) + i128::from(q) * i128::from(self.pane);
        let hi = lo + i128::from(self.pane);
        CurrentPane {
            index: q,
            lo: clamp_i64(lo),
            hi: clamp_i64(hi),
            binned: self.binned(q),
            first_t: None,
            last_t: None,
        }
    }

    /// The windows `[first, last]` that contain pane `q` (empty when `first > last`).
    fn windows_containing(&self, q: u64) -> (u64, u64) {
        let last = q / self.panes_per_hop;
        let first = (q + 1)
            .saturating_sub(self.panes_per_window)
            .div_ceil(self.panes_per_hop);
        (first, last)
    }

    fn binned(&self, q: u64) -> bool {
        let (first, last) = self.windows_containing(q);
        first <= last
    }

    /// An event earlier than the current pane goes straight into its open windows.
    fn splat_out_of_order(&mut self, event: &Event, q: u64) {
        let (first, last) = self.windows_containing(q);
        if first > last {
            self.stats.between_windows += 1;
            return;
        }
        let first = first.max(self.next_close);
        if first > last {
            self.stats.late += 1;
            return;
        }
        for k in first..=last {
            let window = open_window(
                &mut self.open,
                &mut self.spare,
                &self.table,
                self.next_close,
                k,
            );
            if !window.slots.splat_event(&self.table, event) {
                self.stats.off_sensor += 1;
                return;
            }
        }
    }

    /// Splats a completed pane into every window that contains it.
    fn close_pane(&mut self, pane: CurrentPane) {
        let (first, last) = self.windows_containing(pane.index);
        let first = first.max(self.next_close);
        if first > last {
            self.pixels.clear();
            return;
        }
        if first == last {
            let window = open_window(
                &mut self.open,
                &mut self.spare,
                &self.table,
                self.next_close,
                first,
            );
            self.pixels.drain_into(&self.table, &mut window.slots);
        } else {
            self.pixels.drain_into(&self.table, &mut self.pane_slots);
        }
        for k in first..=last {
            let window = open_window(
                &mut self.open,
                &mut self.spare,
                &self.table,
                self.next_close,
                k,
            );
            if first != last {
                window.slots.add_from(&self.pane_slots);
            }
            window.first_t = window.first_t.or(pane.first_t);
            window.last_t = pane.last_t.or(window.last_t);
        }
        self.pane_slots.clear();
    }

    /// Emits every window whose last pane is before pane `end` (complete windows).
    fn close_windows_ending_by(&mut self, end: u64, out: &mut Vec<Window>) {
        if let Some(span) = end.checked_sub(self.panes_per_window) {
            self.emit_through(span / self.panes_per_hop, true, out);
        }
    }

    /// Emits windows `next_close..=last`, with the idle limit applied to runs of empty windows.
    fn emit_through(&mut self, last: u64, complete: bool, out: &mut Vec<Window>) {
        while self.next_close <= last {
            if let Some(Some(_)) = self.open.front() {
                if let Some(Some(window)) = self.open.pop_front() {
                    self.emit(window, complete, out);
                }
                continue;
            }
            // A run of empty windows, up to the next open one or `last`.
            let run_end = self
                .open
                .iter()
                .position(Option::is_some)
                .map_or(last, |offset| {
                    (self.next_close + offset as u64 - 1).min(last)
                });
            let run = run_end - self.next_close + 1;
            let emit = run.min(self.max_idle_windows.saturating_sub(self.idle_run));
            for k in self.next_close..self.next_close + emit {
                let (start_us, end_us) = self.nominal_span(k);
                self.stats.windows_emitted += 1;
                out.push(Window {
                    index: k,
                    start_us,
                    end_us,
                    events: 0,
                    complete,
                    skipped_before: std::mem::take(&mut self.pending_skipped),
                    frame: SparseFrame::empty(self.table.shape()),
                });
            }
            self.pending_skipped += run - emit;
            self.stats.windows_skipped += run - emit;
            self.idle_run = self.idle_run.saturating_add(run);
            let popped = usize::try_from(run).map_or(self.open.len(), |r| r.min(self.open.len()));
            self.open.drain(..popped);
            self.next_close = run_end + 1;
        }
    }

    fn emit(&mut self, mut window: OpenWindow, complete: bool, out: &mut Vec<Window>) {
        let index = self.next_close;
        self.next_close += 1;
        let events = window.slots.events();
        let mut frame = SparseFrame::empty(self.table.shape());
        window
            .slots
            .finish(&self.table, self.normalization, &mut frame);
        let (start_us, end_us) = match self.windows {
            StreamWindows::Duration { .. } => self.nominal_span(index),
            StreamWindows::Count { .. } => (
                window.first_t.unwrap_or(0),
                window.last_t.map_or(0, |t| t.saturating_add(1)),
            ),
        };
        self.idle_run = if events == 0 {
            self.idle_run.saturating_add(1)
        } else {
            0
        };
        self.stats.windows_emitted += 1;
        out.push(Window {
            index,
            start_us,
            end_us,
            events,
            complete,
            skipped_before: std::mem::take(&mut self.pending_skipped),
            frame,
        });
        self.recycle(window);
    }

    fn recycle(&mut self, mut window: OpenWindow) {
        window.slots.clear();
        window.first_t = None;
        window.last_t = None;
        self.spare.push(window);
    }

    /// Duration windows: `[t₀ + k·hop, t₀ + k·hop + window)`. Count windows have no nominal span.
    fn nominal_span(&self, k: u64) -> (i64, i64) {
        match (self.windows, self.origin) {
            (StreamWindows::Duration { window_us, hop_us }, Some(origin)) => {
                let start = i128::from(origin) + i128::from(k) * i128::from(hop_us);
                (clamp_i64(start), clamp_i64(start + i128::from(window_us)))
            }
            _ => (0, 0),
        }
    }
}

/// The open window `k` (`k >= next_close`), created from a spare if needed.
fn open_window<'a>(
    open: &'a mut VecDeque<Option<OpenWindow>>,
    spare: &mut Vec<OpenWindow>,
    table: &SplatTable,
    next_close: u64,
    k: u64,
) -> &'a mut OpenWindow {
    debug_assert!(k >= next_close);
    // Bounded: at most ceil(window / hop) + 1 windows are ever open (policy validation).
    let offset = (k - next_close) as usize;
    if open.len() <= offset {
        open.resize_with(offset + 1, || None);
    }
    open[offset].get_or_insert_with(|| {
        spare.pop().unwrap_or_else(|| OpenWindow {
            slots: SlotCounts::new(table),
            first_t: None,
            last_t: None,
        })
    })
}

fn clamp_i64(v: i128) -> i64 {
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> FrameSpec {
        FrameSpec::native(4, 4)
    }

    fn ev(t: i64, x: u16) -> Event {
        Event::new(t, x, 0, true)
    }

    fn run(windows: StreamWindows, events: &[Event]) -> Vec<Window> {
        let mut b = StreamBinner::new(&spec(), windows).unwrap();
        let mut out = Vec::new();
        b.push(events, &mut out);
        b.finish(&mut out);
        out
    }

    fn totals(windows: &[Window]) -> Vec<(u64, u64, bool)> {
        windows
            .iter()
            .map(|w| (w.index, w.events, w.complete))
            .collect()
    }

    #[test]
    fn tumbling_duration_emits_on_the_next_window_and_empty_gaps() {
        let events = [ev(100, 0), ev(105, 1), ev(110, 2), ev(135, 3)];
        let mut b = StreamBinner::new(&spec(), StreamWindows::tumbling_duration(10)).unwrap();
        let mut out = Vec::new();
        b.push(&events[..2], &mut out);
        assert!(out.is_empty());
        b.push(&events[2..3], &mut out);
        assert_eq!(totals(&out), [(0, 2, true)]);
        assert_eq!((out[0].start_us, out[0].end_us), (100, 110));
        b.push(&events[3..], &mut out);
        assert_eq!(totals(&out), [(0, 2, true), (1, 1, true), (2, 0, true)]);
        b.finish(&mut out);
        assert_eq!(totals(&out)[3], (3, 1, false));
    }

    #[test]
    fn sliding_duration_windows_overlap() {
        // window 20, hop 10: window k covers [10k, 10k + 20).
        let events: Vec<Event> = (0..6).map(|i| ev(i * 10, 0)).collect();
        let out = run(
            StreamWindows::Duration {
                window_us: 20,
                hop_us: 10,
            },
            &events,
        );
        assert_eq!(
            totals(&out),
            [
                (0, 2, true),
                (1, 2, true),
                (2, 2, true),
                (3, 2, true),
                (4, 2, false),
                (5, 1, false)
            ]
        );
    }

    #[test]
    fn gapped_windows_skip_events_between() {
        // window 10, hop 30: [0,10), [30,40), ...
        let events: Vec<Event> = (0..8).map(|i| ev(i * 5, 0)).collect();
        let mut b = StreamBinner::new(
            &spec(),
            StreamWindows::Duration {
                window_us: 10,
                hop_us: 30,
            },
        )
        .unwrap();
        let mut out = Vec::new();
        b.push(&events, &mut out);
        b.finish(&mut out);
        assert_eq!(totals(&out), [(0, 2, true), (1, 2, false)]);
        assert_eq!(b.stats().between_windows, 4);
    }

    #[test]
    fn count_windows_emit_on_their_last_event() {
        let events: Vec<Event> = (0..7).map(|i| ev(i, (i % 4) as u16)).collect();
        let mut b = StreamBinner::new(
            &spec(),
            StreamWindows::Count {
                window_events: 4,
                hop_events: 2,
            },
        )
        .unwrap();
        let mut out = Vec::new();
        b.push(&events[..4], &mut out);
        assert_eq!(totals(&out), [(0, 4, true)]);
        assert_eq!((out[0].start_us, out[0].end_us), (0, 4));
        b.push(&events[4..], &mut out);
        b.finish(&mut out);
        assert_eq!(
            totals(&out),
            [(0, 4, true), (1, 4, true), (2, 3, false), (3, 1, false)]
        );
    }

    #[test]
    fn out_of_order_events_join_open_windows_or_are_late() {
        let events = [ev(0, 0), ev(12, 1), ev(8, 2), ev(25, 0), ev(3, 3)];
        let mut b = StreamBinner::new(&spec(), StreamWindows::tumbling_duration(10)).unwrap();
        let mut out = Vec::new();
        b.push(&events, &mut out);
        b.finish(&mut out);
        // t=8 arrives after window 0 closed (at t=12): late. t=3 likewise.
        assert_eq!(totals(&out), [(0, 1, true), (1, 1, true), (2, 1, false)]);
        assert_eq!(b.stats().late, 2);
        // Sliding: t=8 still has window 0 ([0,20)) open.
        let mut b = StreamBinner::new(
            &spec(),
            StreamWindows::Duration {
                window_us: 20,
                hop_us: 10,
            },
        )
        .unwrap();
        let mut out = Vec::new();
        b.push(&events[..3], &mut out);
        b.finish(&mut out);
        assert_eq!(totals(&out), [(0, 3, false), (1, 1, false)]);
    }

    #[test]
    fn idle_limit_skips_long_empty_runs() {
        let mut b = StreamBinner::new(&spec(), StreamWindows::tumbling_duration(10)).unwrap();
        b.set_max_idle_windows(3);
        let mut out = Vec::new();
        b.push(
            &[ev(0, 0), ev(1_000_000_000, 1), ev(1_000_000_005, 1)],
            &mut out,
        );
        b.finish(&mut out);
        assert_eq!(out.len(), 5);
        assert_eq!(
            totals(&out[..4]),
            [(0, 1, true), (1, 0, true), (2, 0, true), (3, 0, true)]
        );
        assert_eq!(out[4].index, 100_000_000);
        assert_eq!(out[4].skipped_before, 100_000_000 - 4);
        assert_eq!(out[4].events, 2);
        // Even a jump across the whole i64 range stays bounded, with any pane length.
        b.push(&[ev(i64::MIN, 0), ev(i64::MAX, 1)], &mut out);
        b.finish(&mut out);
        assert!(out.len() < 20);
        for windows in [
            StreamWindows::tumbling_duration(1),
            StreamWindows::Duration {
                window_us: 3,
                hop_us: 1,
            },
        ] {
            let mut b = StreamBinner::new(&spec(), windows).unwrap();
            b.set_max_idle_windows(2);
            let mut out = Vec::new();
            b.push(
                &[ev(i64::MIN, 0), ev(i64::MAX, 1), ev(i64::MAX, 2)],
                &mut out,
            );
            b.push(&[ev(0, 3)], &mut out);
            b.finish(&mut out);
            assert!(out.len() < 12, "{windows:?}: {}", out.len());
            // t = 0 is 2^63 µs after i64::MIN: it shares the saturated last pane.
            assert_eq!((out[0].index, out[0].events), (0, 1));
            assert_eq!(out.last().map(|w| w.events), Some(3));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        #[test]
        fn arbitrary_timestamps_never_panic_and_split_equals_whole(
            stamps in proptest::collection::vec(proptest::num::i64::ANY, 0..60),
            window in 1u64..5,
            hop in 1u64..5,
            cut in 0usize..60,
        ) {
            let windows = StreamWindows::Duration { window_us: window, hop_us: hop };
            let events: Vec<Event> = stamps.iter().map(|&t| ev(t, (t & 3) as u16)).collect();
            let run = |cuts: &[usize]| {
                let mut b = StreamBinner::new(&spec(), windows).unwrap();
                b.set_max_idle_windows(4);
                let mut out = Vec::new();
                let mut start = 0;
                for &c in cuts {
                    let c = c.clamp(start, events.len());
                    b.push(&events[start..c], &mut out);
                    start = c;
                }
                b.push(&events[start..], &mut out);
                b.finish(&mut out);
                (out, b.stats())
            };
            let (whole, whole_stats) = run(&[]);
            let (split, split_stats) = run(&[cut]);
            proptest::prop_assert_eq!(&whole, &split);
            proptest::prop_assert_eq!(whole_stats, split_stats);
            proptest::prop_assert!(whole.len() <= 8 * (events.len() + 1));
        }
    }

    #[test]
    fn rejects_windows_that_would_not_fit_in_memory() {
        let big = FrameSpec::native(4096, 4096);
        let sliding = StreamWindows::Duration {
            window_us: 8,
            hop_us: 1,
        };
        assert!(matches!(
            StreamBinner::new(&big, sliding),
            Err(BinnerError::TooLarge { .. })
        ));
    }

    #[test]
    fn finish_resets_for_a_new_stream() {
        let events = [ev(50, 0), ev(61, 1)];
        let mut b = StreamBinner::new(&spec(), StreamWindows::tumbling_duration(10)).unwrap();
        let (mut first, mut second) = (Vec::new(), Vec::new());
        b.push(&events, &mut first);
        b.finish(&mut first);
        b.push(&events, &mut second);
        b.finish(&mut second);
        assert_eq!(first, second);
        assert_eq!(b.stats().events, 4);
    }
}
