//! Window policies: how a whole recording splits into `T` bins (SpikingJelly's conventions), and
//! the causal windows of a live stream (fixed duration or fixed event count, tumbling or
//! sliding).

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::event::Event;

use super::BinnerError;

/// Most windows a sliding policy may keep open at once (`ceil(window / hop)`); each holds one
/// frame's worth of slot counts.
pub const MAX_OPEN_WINDOWS: u64 = 64;

/// Most panes per window. Sliding windows are built from panes of `gcd(window, hop)`; this bounds
/// the per-pane work when window and hop share only a small divisor.
pub const MAX_PANES_PER_WINDOW: u64 = 4096;

/// How a whole recording is split into a fixed number of bins (the training-time convention).
/// Serialised with a `split_by` tag, e.g. `{"split_by": "equal_count", "bins": 10}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "split_by", rename_all = "snake_case", deny_unknown_fields)]
pub enum RecordingWindows {
    /// SpikingJelly's `integrate_events_by_fixed_frames_number(split_by='number')`. With `N`
    /// events and `T` bins, bin `i` takes events `[i·(N/T), (i+1)·(N/T))` (integer division),
    /// and the last bin takes everything from `(T−1)·(N/T)` to `N`. So the remainder goes to the
    /// last bin, and with `N < T` the first `T−1` bins are empty and the last holds every event.
    EqualCount {
        /// Number of bins `T` (at least 1).
        bins: usize,
    },
    /// SpikingJelly's `split_by='time'`. With `t₀` the first event's timestamp and `t_last` the
    /// last's, `dt = (t_last − t₀) / T` (integer division, in µs). Bin `i < T−1` takes events with
    /// `t₀ + i·dt <= t < t₀ + (i+1)·dt`. The last bin takes every event with
    /// `t >= t₀ + (T−1)·dt`, which includes the up to `T−1` µs lost to the division. Where
    /// SpikingJelly fails (an empty bin, or `dt = 0`), the bin is empty here, and with `dt = 0`
    /// all events fall in the last bin. Events are binned by timestamp, so out-of-order events
    /// land in the bin of their own time. Events before `t₀` go in bin 0.
    EqualDuration {
        /// Number of bins `T` (at least 1).
        bins: usize,
    },
}

impl RecordingWindows {
    /// Number of bins.
    pub fn bins(&self) -> usize {
        match *self {
            Self::EqualCount { bins } | Self::EqualDuration { bins } => bins,
        }
    }

    /// Checks that there is at least one bin.
    pub fn validate(&self) -> Result<(), BinnerError> {
        if self.bins() == 0 {
            return Err(BinnerError::InvalidWindows(
                "a recording needs at least one bin".into(),
            ));
        }
        Ok(())
    }
}

/// The event index range of bin `i` of `n` events under [`RecordingWindows::EqualCount`].
pub fn equal_count_range(n: usize, bins: usize, i: usize) -> Range<usize> {
    debug_assert!(bins > 0 && i < bins);
    let per_bin = n / bins;
    let start = i * per_bin;
    let end = if i + 1 == bins { n } else { start + per_bin };
    start..end
}

/// The bin timing of [`RecordingWindows::EqualDuration`] for one recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EqualDurationBins {
    /// The first event's timestamp.
    pub t0: i64,
    /// The bin duration in µs (`0` when the recording spans less than `bins` µs).
    pub dt: u64,
    /// Number of bins.
    pub bins: usize,
}

impl EqualDurationBins {
    /// The timing for `events` split into `bins` bins; `None` when there are no events.
    pub fn new(events: &[Event], bins: usize) -> Option<Self> {
        debug_assert!(bins > 0);
        let (first, last) = (events.first()?, events.last()?);
        let span = (i128::from(last.t) - i128::from(first.t)).max(0) as u128;
        let dt = (span / bins as u128) as u64;
        Some(Self {
            t0: first.t,
            dt,
            bins,
        })
    }

    /// The bin of an event at `t`.
    #[inline]
    pub fn bin_of(&self, t: i64) -> usize {
        if self.dt == 0 {
            return self.bins - 1;
        }
        let offset = (i128::from(t) - i128::from(self.t0)).max(0) as u128;
        let bin = offset / u128::from(self.dt);
        bin.min(self.bins as u128 - 1) as usize
    }
}

/// Causal windows over a live stream. A window is emitted as soon as it is complete. Serialised
/// with a `window` tag, e.g. `{"window": "duration", "window_us": 50000, "hop_us": 10000}`.
///
/// Windows are numbered `k = 0, 1, …`. With `hop < window` they overlap (sliding), with
/// `hop == window` they tile (tumbling), and with `hop > window` the events between windows are
/// not binned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "window", rename_all = "snake_case", deny_unknown_fields)]
pub enum StreamWindows {
    /// Window `k` covers `[t₀ + k·hop, t₀ + k·hop + window)` µs, where `t₀` is the first event's
    /// timestamp. It completes when an event at or after its end arrives (or at `finish`).
    /// Windows without events are emitted empty, because an SNN still steps through them.
    Duration {
        /// Window length in µs.
        window_us: u64,
        /// Start-to-start distance in µs.
        hop_us: u64,
    },
    /// Window `k` covers the stream's events number `[k·hop, k·hop + window)`, counting every
    /// pushed event, including any off the sensor. It completes on its last event.
    Count {
        /// Events per window.
        window_events: u64,
        /// Start-to-start distance in events.
        hop_events: u64,
    },
}

impl StreamWindows {
    /// Tumbling windows of `window_us` µs.
    pub fn tumbling_duration(window_us: u64) -> Self {
        Self::Duration {
            window_us,
            hop_us: window_us,
        }
    }

    /// Tumbling windows of `events` events.
    pub fn tumbling_count(events: u64) -> Self {
        Self::Count {
            window_events: events,
            hop_events: events,
        }
    }

    /// `(window, hop)` in the policy's unit (µs or events).
    pub fn window_and_hop(&self) -> (u64, u64) {
        match *self {
            Self::Duration { window_us, hop_us } => (window_us, hop_us),
            Self::Count {
                window_events,
                hop_events,
            } => (window_events, hop_events),
        }
    }

    /// Checks `window, hop >= 1`, at most [`MAX_OPEN_WINDOWS`] overlapping windows and at most
    /// [`MAX_PANES_PER_WINDOW`] panes of `gcd(window, hop)` per window.
    pub fn validate(&self) -> Result<(), BinnerError> {
        let (window, hop) = self.window_and_hop();
        if window == 0 || hop == 0 {
            return Err(BinnerError::InvalidWindows(format!(
                "window ({window}) and hop ({hop}) must be at least 1"
            )));
        }
        let open = window.div_ceil(hop);
        if open > MAX_OPEN_WINDOWS {
            return Err(BinnerError::InvalidWindows(format!(
                "window {window} with hop {hop} keeps {open} windows open; the limit is \
                 {MAX_OPEN_WINDOWS}"
            )));
        }
        let panes = window / gcd(window, hop);
        if panes > MAX_PANES_PER_WINDOW {
            return Err(BinnerError::InvalidWindows(format!(
                "window {window} and hop {hop} share only the divisor {}, giving {panes} panes \
                 per window; the limit is {MAX_PANES_PER_WINDOW} (choose a hop that divides the \
                 window more evenly)",
                gcd(window, hop)
            )));
        }
        Ok(())
    }
}

/// Greatest common divisor.
pub(crate) fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SpikingJelly 2.0 `cal_fixed_frames_number_segment_index(split_by='number')`, transcribed.
    fn spikingjelly_number(n: usize, frames: usize) -> Vec<Range<usize>> {
        let di = n / frames;
        let mut out: Vec<Range<usize>> = (0..frames).map(|i| i * di..i * di + di).collect();
        if let Some(last) = out.last_mut() {
            last.end = n;
        }
        out
    }

    #[test]
    fn equal_count_matches_spikingjelly() {
        for n in [0, 1, 3, 9, 10, 11, 19, 1000, 1009] {
            for bins in [1, 2, 3, 10] {
                let ours: Vec<_> = (0..bins).map(|i| equal_count_range(n, bins, i)).collect();
                assert_eq!(ours, spikingjelly_number(n, bins), "n={n} bins={bins}");
            }
        }
        // Remainder to the last bin; N < T leaves only the last bin filled.
        assert_eq!(equal_count_range(23, 10, 9), 18..23);
        assert_eq!(equal_count_range(7, 10, 3), 0..0);
        assert_eq!(equal_count_range(7, 10, 9), 0..7);
    }

    #[test]
    fn equal_duration_bins() {
        let events: Vec<Event> = [100, 103, 110, 119, 125, 131]
            .iter()
            .map(|&t| Event::new(t, 0, 0, true))
            .collect();
        let timing = EqualDurationBins::new(&events, 3).unwrap();
        // dt = 31 / 3 = 10: bins [100,110), [110,120), and [120, ...).
        assert_eq!(timing.dt, 10);
        let bins: Vec<usize> = events.iter().map(|e| timing.bin_of(e.t)).collect();
        assert_eq!(bins, [0, 0, 1, 1, 2, 2]);
        assert_eq!(timing.bin_of(50), 0);
        // Shorter than T µs: everything in the last bin.
        let short = EqualDurationBins::new(&events[..2], 5).unwrap();
        assert_eq!(short.dt, 0);
        assert_eq!(short.bin_of(103), 4);
        assert!(EqualDurationBins::new(&[], 3).is_none());
    }

    #[test]
    fn validation() {
        assert!(RecordingWindows::EqualCount { bins: 0 }.validate().is_err());
        assert!(StreamWindows::tumbling_duration(0).validate().is_err());
        assert!(StreamWindows::tumbling_count(1).validate().is_ok());
        let too_many_open = StreamWindows::Duration {
            window_us: 1000,
            hop_us: 10,
        };
        assert!(too_many_open.validate().is_err());
        let coprime = StreamWindows::Duration {
            window_us: 10_007,
            hop_us: 10_000,
        };
        assert!(coprime.validate().is_err());
        let sliding = StreamWindows::Duration {
            window_us: 50_000,
            hop_us: 10_000,
        };
        assert!(sliding.validate().is_ok());
        assert_eq!(gcd(50_000, 10_000), 10_000);
    }

    #[test]
    fn serialised_with_tags() {
        let r: RecordingWindows =
            serde_json::from_str(r#"{"split_by": "equal_count", "bins": 10}"#).unwrap();
        assert_eq!(r, RecordingWindows::EqualCount { bins: 10 });
        let s: StreamWindows =
            serde_json::from_str(r#"{"window": "duration", "window_us": 5, "hop_us": 1}"#).unwrap();
        assert_eq!(
            s,
            StreamWindows::Duration {
                window_us: 5,
                hop_us: 1
            }
        );
        assert!(
            serde_json::from_str::<StreamWindows>(
                r#"{"window": "count", "window_events": 5, "hop_events": 1, "x": 1}"#
            )
            .is_err()
        );
    }
}
