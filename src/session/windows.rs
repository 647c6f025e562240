//! Grouping a stream's events into classification windows of T frames: the streaming binner
//! for the stream policies (bins of fixed duration or event count, every `hop` bins a window of
//! the last T), or the whole recording split into T bins for the per-recording policies.

use std::collections::VecDeque;

use crate::binner::{
    BinnerError, FrameBinner, InputSpec, SparseFrame, StreamBinner, StreamStats, Window as Bin,
};
use crate::event::Event;

/// Most events a per-recording window may hold (16 bytes each: 1 GiB). A per-recording policy
/// must see every event before it can split them into T bins, so this is what bounds memory.
pub const DEFAULT_MAX_RECORDING_EVENTS: usize = 1 << 26;

/// One classification's frames and where they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowFrames {
    /// The window number, from 0.
    pub index: u64,
    /// First timestamp covered (µs): the first bin's start.
    pub start_us: i64,
    /// End of the last bin (µs, exclusive).
    pub end_us: i64,
    /// Events binned into the window's frames.
    pub events: u64,
    /// The frames, oldest first (T of them, fewer only for a stream shorter than one window).
    pub frames: Vec<SparseFrame>,
    /// How many of the frames (the last ones) no earlier window contained. With continuous
    /// membranes only these are run.
    pub new_frames: usize,
    /// Whether the window holds T complete bins (false for one cut short by the end).
    pub complete: bool,
}

/// Why events could not be windowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// The input spec or sensor size does not make a binner.
    #[error(transparent)]
    Binner(#[from] BinnerError),
    /// A per-recording window grew past its limit.
    #[error(
        "the recording has more than {limit} events, the most one per-recording classification \
         holds; use a model with a stream window policy (duration or count bins)"
    )]
    RecordingTooLong {
        /// The limit.
        limit: usize,
    },
    /// `hop` is zero or larger than T.
    #[error("hop must be between 1 and T = {timesteps} bins, found {hop}")]
    BadHop {
        /// The hop given.
        hop: usize,
        /// T.
        timesteps: usize,
    },
}

/// Turns a stream's events into classification windows.
#[derive(Debug)]
pub struct Windowing {
    inner: Inner,
    timesteps: usize,
    next_index: u64,
}

#[derive(Debug)]
enum Inner {
    /// The whole recording is one window.
    Recording {
        binner: Box<FrameBinner>,
        windows: crate::binner::RecordingWindows,
        events: Vec<Event>,
        limit: usize,
    },
    /// Bins of a stream; every `hop` bins, the last T make a window.
    Stream {
        binner: Box<StreamBinner>,
        hop: usize,
        /// The last bins, at most T.
        recent: VecDeque<Bin>,
        /// Bins since the last window was emitted.
        since_last: usize,
        /// Scratch for the binner's output.
        bins: Vec<Bin>,
    },
}

impl Windowing {
    /// Windows of `input` for a sensor of `sensor` (width, height), a window every `hop` bins
    /// (stream policies; `None` = T, tumbling).
    pub fn new(
        input: &InputSpec,
        sensor: (u16, u16),
        hop: Option<usize>,
        max_recording_events: usize,
    ) -> Result<Self, WindowError> {
        input.validate()?;
        let spec = input.frame_spec(sensor.0, sensor.1)?;
        let t = input.timesteps;
        let inner = if let Some(windows) = input.window.recording_windows(t) {
            Inner::Recording {
                binner: Box::new(FrameBinner::new(&spec)?),
                windows,
                events: Vec::new(),
                limit: max_recording_events,
            }
        } else {
            let hop = hop.unwrap_or(t);
            if hop == 0 || hop > t {
                return Err(WindowError::BadHop { hop, timesteps: t });
            }
            let bins = input
                .window
                .stream_bins()
                .ok_or(BinnerError::InvalidWindows("no stream bins".into()))?;
            Inner::Stream {
                binner: Box::new(StreamBinner::new(&spec, bins)?),
                hop,
                recent: VecDeque::with_capacity(t),
                since_last: 0,
                bins: Vec::new(),
            }
        };
        Ok(Self {
            inner,
            timesteps: t,
            next_index: 0,
        })
    }

    /// T.
    pub fn timesteps(&self) -> usize {
        self.timesteps
    }

    /// What the streaming binner has counted (off-sensor, late events...); zeros for the
    /// per-recording policies.
    pub fn stream_stats(&self) -> StreamStats {
        match &self.inner {
            Inner::Stream { binner, .. } => binner.stats(),
            Inner::Recording { .. } => StreamStats::default(),
        }
    }

    /// Adds the next events of the stream; appends the windows they complete to `out`.
    pub fn push(
        &mut self,
        events: &[Event],
        out: &mut Vec<WindowFrames>,
    ) -> Result<(), WindowError> {
        match &mut self.inner {
            Inner::Recording {
                events: held,
                limit,
                ..
            } => {
                if held.len().saturating_add(events.len()) > *limit {
                    return Err(WindowError::RecordingTooLong { limit: *limit });
                }
                held.extend_from_slice(events);
            }
            Inner::Stream { binner, bins, .. } => {
                bins.clear();
                binner.push(events, bins);
                self.take_bins(out);
            }
        }
        Ok(())
    }

    /// Ends the stream: the per-recording window, or the windows the last bins complete. A
    /// stream shorter than one window still gives one window (with fewer than T frames) so
    /// that a short recording is classified; otherwise trailing bins that do not complete a
    /// window are dropped, as a live stream would.
    pub fn finish(&mut self, out: &mut Vec<WindowFrames>) -> Result<(), WindowError> {
        let index = self.next_index;
        match &mut self.inner {
            Inner::Recording {
                binner,
                windows,
                events,
                ..
            } => {
                let (Some(first), Some(last)) = (events.first(), events.last()) else {
                    return Ok(());
                };
                let (start_us, end_us) = (first.t, last.t.saturating_add(1));
                let frames = binner.bin_recording(events, *windows)?;
                let count = events.len() as u64;
                *events = Vec::new();
                self.next_index += 1;
                out.push(WindowFrames {
                    index,
                    start_us,
                    end_us,
                    events: count,
                    new_frames: frames.len(),
                    frames,
                    complete: true,
                });
            }
            Inner::Stream { binner, bins, .. } => {
                bins.clear();
                binner.finish(bins);
            }
        }
        // A bin cut short by the end is still a bin of the stream.
        self.take_bins(out);
        if let Inner::Stream {
            recent, since_last, ..
        } = &mut self.inner
        {
            if self.next_index == 0 && !recent.is_empty() {
                let frames: Vec<SparseFrame> = recent.iter().map(|b| b.frame.clone()).collect();
                out.push(WindowFrames {
                    index: 0,
                    start_us: recent.front().map_or(0, |b| b.start_us),
                    end_us: recent.back().map_or(0, |b| b.end_us),
                    events: recent.iter().map(|b| b.events).sum(),
                    new_frames: frames.len(),
                    frames,
                    complete: false,
                });
                self.next_index = 1;
            }
            recent.clear();
            *since_last = 0;
        }
        Ok(())
    }

    /// Moves the binner's bins into the recent ring, emitting a window every `hop` bins.
    fn take_bins(&mut self, out: &mut Vec<WindowFrames>) {
        let t = self.timesteps;
        let Inner::Stream {
            hop,
            recent,
            since_last,
            bins,
            ..
        } = &mut self.inner
        else {
            return;
        };
        for bin in bins.drain(..) {
            if recent.len() == t {
                recent.pop_front();
            }
            recent.push_back(bin);
            *since_last += 1;
            // The first window needs T bins; later ones come every hop bins.
            let due = if self.next_index == 0 {
                recent.len() == t
            } else {
                *since_last >= *hop
            };
            if due {
                let new_frames = if self.next_index == 0 { t } else { *since_last };
                out.push(WindowFrames {
                    index: self.next_index,
                    start_us: recent.front().map_or(0, |b| b.start_us),
                    end_us: recent.back().map_or(0, |b| b.end_us),
                    events: recent.iter().map(|b| b.events).sum(),
                    frames: recent.iter().map(|b| b.frame.clone()).collect(),
                    new_frames,
                    complete: recent.iter().all(|b| b.complete),
                });
                self.next_index += 1;
                *since_last = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binner::{Normalization, ResizeMode, SplitBy, WindowPolicy};

    fn ev(t: i64, x: u16, y: u16, polarity: bool) -> Event {
        Event { t, x, y, polarity }
    }

    fn spec(window: WindowPolicy, timesteps: usize) -> InputSpec {
        InputSpec {
            height: 2,
            width: 2,
            timesteps,
            window,
            resize: ResizeMode::Nearest,
            normalization: Normalization::None,
        }
    }

    fn windows(
        spec: &InputSpec,
        hop: Option<usize>,
        events: &[Event],
        split: usize,
    ) -> Vec<WindowFrames> {
        let mut w = Windowing::new(spec, (2, 2), hop, DEFAULT_MAX_RECORDING_EVENTS).unwrap();
        let mut out = Vec::new();
        for chunk in events.chunks(split.max(1)) {
            w.push(chunk, &mut out).unwrap();
        }
        w.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn recording_window_bins_by_count_and_polarity() {
        let events = vec![
            ev(0, 0, 0, true),
            ev(50, 1, 0, false),
            ev(99, 1, 1, true),
            ev(100, 0, 1, true),
        ];
        let s = spec(
            WindowPolicy::Recording {
                split_by: SplitBy::EqualCount,
            },
            2,
        );
        let w = windows(&s, None, &events, 3);
        assert_eq!(w.len(), 1);
        assert_eq!((w[0].start_us, w[0].end_us, w[0].events), (0, 101, 4));
        // Channel 0 = OFF, 1 = ON: ON (0, 0) is index 4; OFF (x 1, y 0) is index 1.
        assert_eq!(w[0].frames[0].indices, vec![1, 4]);
        assert_eq!(w[0].frames[1].indices, vec![6, 7]);
        assert!(windows(&s, None, &[], 1).is_empty());
    }

    #[test]
    fn stream_windows_group_t_bins() {
        let events: Vec<Event> = (0..10).map(|i| ev(i * 10, 0, 0, true)).collect();
        let s = spec(WindowPolicy::Duration { bin_us: 20 }, 2);
        // Bins of 20 µs: 5 bins, 2 full classifications of 2 bins.
        let w = windows(&s, None, &events, 1);
        assert_eq!(w.iter().map(|w| w.events).collect::<Vec<_>>(), vec![4, 4]);
        assert_eq!((w[1].start_us, w[1].end_us), (40, 80));
        let s = spec(WindowPolicy::Count { bin_events: 3 }, 2);
        // 3 + 3 + 3 + 1 (the last bin cut short by the end of the recording).
        let w = windows(&s, None, &events, 4);
        assert_eq!(w.iter().map(|w| w.events).collect::<Vec<_>>(), vec![6, 4]);
        assert!(!w[1].complete);
        let s = spec(WindowPolicy::Count { bin_events: 30 }, 4);
        let w = windows(&s, None, &events, 10);
        assert_eq!(
            w.len(),
            1,
            "a short recording still gives one classification"
        );
        assert_eq!(w[0].frames.len(), 1);
    }

    #[test]
    fn sliding_windows_overlap_by_t_minus_hop() {
        let events: Vec<Event> = (0..12).map(|i| ev(i, 0, 0, i % 2 == 0)).collect();
        let s = spec(WindowPolicy::Count { bin_events: 2 }, 3);
        // 6 bins of 2 events; windows of 3 bins every bin: bins 0-2, 1-3, 2-4, 3-5.
        let w = windows(&s, Some(1), &events, 5);
        assert_eq!(w.len(), 4);
        assert_eq!(
            w.iter().map(|w| w.start_us).collect::<Vec<_>>(),
            vec![0, 2, 4, 6]
        );
        assert_eq!(
            w.iter().map(|w| w.new_frames).collect::<Vec<_>>(),
            vec![3, 1, 1, 1]
        );
        assert_eq!(w[2].frames[0], w[1].frames[1]);
        let s = spec(WindowPolicy::Count { bin_events: 2 }, 3);
        assert_eq!(
            Windowing::new(&s, (2, 2), Some(4), 10).unwrap_err(),
            WindowError::BadHop {
                hop: 4,
                timesteps: 3
            }
        );
    }

    #[test]
    fn any_batch_split_gives_the_same_windows() {
        let events: Vec<Event> = (0..200)
            .map(|i| {
                ev(
                    i * 7 + (i % 3),
                    (i % 2) as u16,
                    ((i / 2) % 2) as u16,
                    i % 5 != 0,
                )
            })
            .collect();
        for policy in [
            WindowPolicy::Duration { bin_us: 90 },
            WindowPolicy::Count { bin_events: 13 },
            WindowPolicy::Recording {
                split_by: SplitBy::EqualDuration,
            },
        ] {
            let s = spec(policy, 4);
            let whole = windows(&s, Some(2), &events, events.len());
            for split in [1, 3, 64] {
                assert_eq!(
                    windows(&s, Some(2), &events, split),
                    whole,
                    "{policy} split {split}"
                );
            }
        }
    }

    #[test]
    fn recordings_past_the_limit_are_refused() {
        let s = spec(
            WindowPolicy::Recording {
                split_by: SplitBy::EqualCount,
            },
            2,
        );
        let mut w = Windowing::new(&s, (2, 2), None, 3).unwrap();
        let mut out = Vec::new();
        w.push(&[ev(0, 0, 0, true); 3], &mut out).unwrap();
        assert_eq!(
            w.push(&[ev(1, 0, 0, true)], &mut out),
            Err(WindowError::RecordingTooLong { limit: 3 })
        );
    }
}
