//! Binning whole recordings (or any event slice) into frames: the offline path used for
//! datasets and training, and a one-frame accumulator for callers that choose their own windows.

use crate::event::Event;

use super::counts::{PixelCounts, SlotCounts};
use super::frame::{FrameShape, SparseFrame};
use super::normalize::Normalization;
use super::resize::SplatTable;
use super::window::{EqualDurationBins, RecordingWindows, equal_count_range};
use super::{BinnerError, FrameSpec};

/// What a [`FrameBinner`] has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BinStats {
    /// Events given to the binner.
    pub events: u64,
    /// Events whose coordinates were off the sensor; they are in no frame.
    pub off_sensor: u64,
}

/// Bins event slices into sparse frames of one [`FrameSpec`], reusing its buffers.
#[derive(Debug, Clone)]
pub struct FrameBinner {
    table: SplatTable,
    normalization: Normalization,
    pixels: PixelCounts,
    slots: SlotCounts,
    stats: BinStats,
    /// Event indices grouped by bin, for recordings whose timestamps are out of order.
    order: Vec<usize>,
}

impl FrameBinner {
    /// A binner for `spec` (builds its splat table).
    pub fn new(spec: &FrameSpec) -> Result<Self, BinnerError> {
        let table = SplatTable::new(spec)?;
        Ok(Self {
            pixels: PixelCounts::new(&table),
            slots: SlotCounts::new(&table),
            table,
            normalization: spec.normalization,
            stats: BinStats::default(),
            order: Vec::new(),
        })
    }

    /// The shape of every frame produced.
    pub fn shape(&self) -> FrameShape {
        self.table.shape()
    }

    /// The splat table in use.
    pub fn table(&self) -> &SplatTable {
        &self.table
    }

    /// What the binner has seen so far.
    pub fn stats(&self) -> BinStats {
        self.stats
    }

    /// Adds `events` to the frame being accumulated.
    pub fn add(&mut self, events: &[Event]) {
        self.stats.events += events.len() as u64;
        self.stats.off_sensor += self.pixels.add(events);
    }

    /// Adds `events` by splatting each one through the table as it comes, instead of counting
    /// per pixel and splatting once per window. The result is identical (integer counts either
    /// way). This is the plain reference twin of [`Self::add`]: tests check one against the
    /// other, and `benches/binner.rs` measures both.
    pub fn add_splatting_each_event(&mut self, events: &[Event]) {
        self.stats.events += events.len() as u64;
        for event in events {
            if !self.slots.splat_event(&self.table, event) {
                self.stats.off_sensor += 1;
            }
        }
    }

    /// Writes the accumulated frame into `frame` (reusing its buffers) and starts a new one.
    pub fn finish_frame_into(&mut self, frame: &mut SparseFrame) {
        self.pixels.drain_into(&self.table, &mut self.slots);
        self.slots.finish(&self.table, self.normalization, frame);
    }

    /// The accumulated frame; starts a new one.
    pub fn finish_frame(&mut self) -> SparseFrame {
        let mut frame = SparseFrame::empty(self.shape());
        self.finish_frame_into(&mut frame);
        frame
    }

    /// Bins a whole recording into `windows.bins()` frames.
    pub fn bin_recording(
        &mut self,
        events: &[Event],
        windows: RecordingWindows,
    ) -> Result<Vec<SparseFrame>, BinnerError> {
        let mut frames = Vec::new();
        self.bin_recording_into(events, windows, &mut frames)?;
        Ok(frames)
    }

    /// Bins a whole recording into `frames` (resized to `windows.bins()`, buffers reused).
    /// Anything accumulated with [`Self::add`] and not yet finished is discarded first.
    pub fn bin_recording_into(
        &mut self,
        events: &[Event],
        windows: RecordingWindows,
        frames: &mut Vec<SparseFrame>,
    ) -> Result<(), BinnerError> {
        windows.validate()?;
        self.pixels.clear();
        self.slots.clear();
        let bins = windows.bins();
        let shape = self.shape();
        frames.truncate(bins);
        frames.resize_with(bins, || SparseFrame::empty(shape));
        match windows {
            RecordingWindows::EqualCount { .. } => {
                for (i, frame) in frames.iter_mut().enumerate() {
                    self.add(&events[equal_count_range(events.len(), bins, i)]);
                    self.finish_frame_into(frame);
                }
            }
            RecordingWindows::EqualDuration { .. } => self.bin_equal_duration(events, frames),
        }
        Ok(())
    }

    fn bin_equal_duration(&mut self, events: &[Event], frames: &mut [SparseFrame]) {
        let bins = frames.len();
        let Some(timing) = EqualDurationBins::new(events, bins) else {
            for frame in frames.iter_mut() {
                self.finish_frame_into(frame);
            }
            return;
        };
        if events.windows(2).all(|w| w[0].t <= w[1].t) {
            // Time-ordered: each bin is a contiguous run, found by binary search.
            let mut start = 0;
            for (i, frame) in frames.iter_mut().enumerate() {
                let end = if i + 1 == bins {
                    events.len()
                } else {
                    start + events[start..].partition_point(|e| timing.bin_of(e.t) <= i)
                };
                self.add(&events[start..end]);
                self.finish_frame_into(frame);
                start = end;
            }
            return;
        }
        // Out of order: group event indices by bin (a counting sort), then bin each group.
        let mut bin_starts = vec![0usize; bins + 1];
        for e in events {
            bin_starts[timing.bin_of(e.t) + 1] += 1;
        }
        for i in 0..bins {
            bin_starts[i + 1] += bin_starts[i];
        }
        let mut next = bin_starts.clone();
        self.order.clear();
        self.order.resize(events.len(), 0);
        for (index, e) in events.iter().enumerate() {
            let bin = timing.bin_of(e.t);
            self.order[next[bin]] = index;
            next[bin] += 1;
        }
        for (i, frame) in frames.iter_mut().enumerate() {
            for k in bin_starts[i]..bin_starts[i + 1] {
                let event = events[self.order[k]];
                self.add(std::slice::from_ref(&event));
            }
            self.finish_frame_into(frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ResizeMode;
    use super::*;

    fn binner(normalization: Normalization) -> FrameBinner {
        FrameBinner::new(&FrameSpec {
            normalization,
            ..FrameSpec::native(4, 3)
        })
        .unwrap()
    }

    fn event(t: i64, x: u16, y: u16, on: bool) -> Event {
        Event::new(t, x, y, on)
    }

    #[test]
    fn channel_is_polarity_on_is_one() {
        let mut b = binner(Normalization::None);
        b.add(&[
            event(0, 1, 2, true),
            event(1, 3, 0, false),
            event(2, 1, 2, true),
        ]);
        let frame = b.finish_frame();
        let shape = frame.shape;
        assert_eq!(
            frame.indices,
            [shape.index(0, 0, 3) as u32, shape.index(1, 2, 1) as u32]
        );
        assert_eq!(frame.values, [1.0, 2.0]);
    }

    #[test]
    fn equal_count_remainder_and_fewer_events_than_bins() {
        let mut b = binner(Normalization::None);
        let events: Vec<Event> = (0..7).map(|i| event(i, (i % 4) as u16, 0, true)).collect();
        let frames = b
            .bin_recording(&events, RecordingWindows::EqualCount { bins: 3 })
            .unwrap();
        // 7 / 3 = 2: bins of 2, 2 and 3 events.
        let totals: Vec<f32> = frames.iter().map(|f| f.values.iter().sum()).collect();
        assert_eq!(totals, [2.0, 2.0, 3.0]);
        let frames = b
            .bin_recording(&events, RecordingWindows::EqualCount { bins: 10 })
            .unwrap();
        let totals: Vec<f32> = frames.iter().map(|f| f.values.iter().sum()).collect();
        assert_eq!(totals, [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 7.0]);
        assert_eq!(b.stats().events, 14);
    }

    #[test]
    fn equal_duration_sorted_and_unsorted_agree() {
        let mut b = binner(Normalization::None);
        let sorted: Vec<Event> = (0..50)
            .map(|i| event(i * 3, (i % 4) as u16, (i % 3) as u16, i % 2 == 0))
            .collect();
        let policy = RecordingWindows::EqualDuration { bins: 4 };
        let expected = b.bin_recording(&sorted, policy).unwrap();
        // Swap two events across a bin boundary, keeping the first and last in place.
        let mut shuffled = sorted.clone();
        shuffled.swap(5, 40);
        let got = b.bin_recording(&shuffled, policy).unwrap();
        assert_eq!(got, expected);
        assert_eq!(
            expected
                .iter()
                .map(|f| f.values.iter().sum::<f32>())
                .sum::<f32>(),
            50.0
        );
    }

    #[test]
    fn off_sensor_events_are_counted_and_dropped() {
        let mut b = binner(Normalization::Binary);
        b.add(&[
            event(0, 4, 0, true),
            event(0, 0, 3, true),
            event(0, 0, 0, true),
        ]);
        b.add(&[event(0, 0, 0, true)]);
        let frame = b.finish_frame();
        assert_eq!(frame.values, [1.0]);
        assert_eq!(
            b.stats(),
            BinStats {
                events: 4,
                off_sensor: 2
            }
        );
    }

    #[test]
    fn empty_recording_gives_empty_frames() {
        let mut b = FrameBinner::new(&FrameSpec {
            resize: ResizeMode::Area,
            width: 2,
            height: 2,
            ..FrameSpec::native(4, 3)
        })
        .unwrap();
        for policy in [
            RecordingWindows::EqualCount { bins: 3 },
            RecordingWindows::EqualDuration { bins: 3 },
        ] {
            let frames = b.bin_recording(&[], policy).unwrap();
            assert_eq!(frames.len(), 3);
            assert!(frames.iter().all(|f| f.nnz() == 0));
        }
        assert!(
            b.bin_recording(&[], RecordingWindows::EqualCount { bins: 0 })
                .is_err()
        );
    }
}
