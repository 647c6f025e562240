//! Per-window accumulation buffers: event counts per sensor pixel (the hot loop) and the
//! per-output slot counts that the splat table turns them into.
//!
//! Both buffers are reused across windows and are cleared only where they were written. Each
//! keeps a "dirty" byte per block of 64 entries, set with an unconditional store (no branch in the
//! hot loop). Draining and extraction then visit only the dirty blocks. So a sparse window on a
//! large sensor costs in proportion to its events, and a dense window is a linear scan.
//! Both buffers have power-of-two lengths, so an index masked with `len - 1` is in bounds by
//! construction. That lets the compiler drop the bounds check in the per-event loop.

use crate::event::Event;

use super::frame::SparseFrame;
use super::normalize::Normalization;
use super::resize::SplatTable;

/// Entries per dirty flag.
const BLOCK: usize = 64;
const BLOCK_SHIFT: u32 = 6;

/// Event counts per sensor pixel and polarity for the window being filled.
#[derive(Debug, Clone)]
pub(crate) struct PixelCounts {
    width: usize,
    height: usize,
    /// Pixels per channel, rounded up to a whole number of blocks so no block spans channels.
    plane: usize,
    /// `[2][plane]` counts, padded to a power of two.
    counts: Vec<u32>,
    /// One flag per block of `counts`.
    dirty: Vec<u8>,
    /// In-range events counted since the last drain.
    events: u64,
}

impl PixelCounts {
    /// Zeroed counts for the table's sensor.
    pub(crate) fn new(table: &SplatTable) -> Self {
        let (width, height) = (table.sensor_width(), table.sensor_height());
        let plane = (width * height).div_ceil(BLOCK) * BLOCK;
        let len = (2 * plane).next_power_of_two();
        Self {
            width,
            height,
            plane,
            counts: vec![0; len],
            dirty: vec![0; len >> BLOCK_SHIFT],
            events: 0,
        }
    }

    /// Counts `events`; returns how many were off the sensor (those are not counted).
    #[inline]
    pub(crate) fn add(&mut self, events: &[Event]) -> u64 {
        let (width, height, plane) = (self.width, self.height, self.plane);
        let counts = &mut self.counts[..];
        let dirty = &mut self.dirty[..];
        let mask = counts.len() - 1;
        let dirty_mask = dirty.len() - 1;
        debug_assert!(counts.len().is_power_of_two() && dirty.len() == counts.len() >> BLOCK_SHIFT);
        let mut off_sensor = 0u64;
        for event in events {
            let (x, y) = (usize::from(event.x), usize::from(event.y));
            if x >= width || y >= height {
                off_sensor += 1;
                continue;
            }
            // In bounds without the mask (x < width, y < height); the mask tells the compiler.
            let p = (usize::from(event.polarity) * plane + y * width + x) & mask;
            counts[p] = counts[p].saturating_add(1);
            dirty[(p >> BLOCK_SHIFT) & dirty_mask] = 1;
        }
        self.events += events.len() as u64 - off_sensor;
        off_sensor
    }

    /// In-range events counted since the last drain.
    #[cfg(test)]
    pub(crate) fn events(&self) -> u64 {
        self.events
    }

    /// Splats every counted pixel into `slots` through `table` and zeroes the counts.
    pub(crate) fn drain_into(&mut self, table: &SplatTable, slots: &mut SlotCounts) {
        let sensor_pixels = self.width * self.height;
        let blocks_per_channel = self.plane / BLOCK;
        let starts = table.starts();
        let targets = table.targets();
        let channel_slots = table.channel_slots();
        let output_block_shift = table.slot_shift() + BLOCK_SHIFT;
        let slot_mask = slots.slots.len() - 1;
        let slot_dirty_mask = slots.dirty.len() - 1;
        for (block, flag) in self.dirty.iter_mut().enumerate() {
            if *flag == 0 {
                continue;
            }
            *flag = 0;
            let channel = block / blocks_per_channel;
            let first = (block % blocks_per_channel) * BLOCK;
            if channel >= 2 || first >= sensor_pixels {
                continue;
            }
            let n = BLOCK.min(sensor_pixels - first);
            let base = channel * channel_slots;
            let counts = &mut self.counts[block * BLOCK..block * BLOCK + n];
            let pixel_starts = &starts[first..=first + n];
            // Branch-free over the block: a zero count adds nothing, and skipping it measured
            // slower on dense windows than adding it.
            for (i, &count) in counts.iter().enumerate() {
                let range = pixel_starts[i] as usize..pixel_starts[i + 1] as usize;
                for &target in &targets[range] {
                    let s = (base + target as usize) & slot_mask;
                    slots.slots[s] = slots.slots[s].saturating_add(count);
                    slots.dirty[(s >> output_block_shift) & slot_dirty_mask] = 1;
                }
            }
            counts.fill(0);
        }
        slots.events += self.events;
        self.events = 0;
    }

    /// Discards everything counted.
    pub(crate) fn clear(&mut self) {
        for (block, flag) in self.dirty.iter_mut().enumerate() {
            if *flag != 0 {
                *flag = 0;
                self.counts[block * BLOCK..(block + 1) * BLOCK].fill(0);
            }
        }
        self.events = 0;
    }
}

/// Slot counts of one window: the splat of its events, before the per-output weights.
#[derive(Debug, Clone)]
pub(crate) struct SlotCounts {
    /// Slots of both channels, padded to a power of two.
    slots: Vec<u32>,
    /// One flag per block of 64 outputs.
    dirty: Vec<u8>,
    slot_shift: u32,
    /// In-range events binned into this window.
    events: u64,
}

impl SlotCounts {
    /// Zeroed slots for `table`'s outputs.
    pub(crate) fn new(table: &SplatTable) -> Self {
        let len = table.total_slots().next_power_of_two().max(BLOCK << 2);
        let shift = table.slot_shift();
        Self {
            slots: vec![0; len],
            dirty: vec![0; len >> (shift + BLOCK_SHIFT)],
            slot_shift: shift,
            events: 0,
        }
    }

    /// In-range events binned into this window.
    pub(crate) fn events(&self) -> u64 {
        self.events
    }

    /// Splats one event directly (the path for events that arrive out of time order). Returns
    /// `false`, and adds nothing, if it is off the sensor.
    pub(crate) fn splat_event(&mut self, table: &SplatTable, event: &Event) -> bool {
        let (x, y) = (usize::from(event.x), usize::from(event.y));
        if x >= table.sensor_width() || y >= table.sensor_height() {
            return false;
        }
        let base = usize::from(event.polarity) * table.channel_slots();
        let output_block_shift = self.slot_shift + BLOCK_SHIFT;
        for &target in table.pixel_targets(y * table.sensor_width() + x) {
            let s = base + target as usize;
            self.slots[s] = self.slots[s].saturating_add(1);
            self.dirty[s >> output_block_shift] = 1;
        }
        self.events += 1;
        true
    }

    /// Adds `other`'s counts into these (a pane into each window that contains it).
    pub(crate) fn add_from(&mut self, other: &SlotCounts) {
        debug_assert_eq!(self.slots.len(), other.slots.len());
        let block_slots = BLOCK << self.slot_shift;
        for (block, &flag) in other.dirty.iter().enumerate() {
            if flag == 0 {
                continue;
            }
            self.dirty[block] = 1;
            let range = block * block_slots..(block + 1) * block_slots;
            for (mine, &theirs) in self.slots[range.clone()]
                .iter_mut()
                .zip(&other.slots[range])
            {
                *mine = mine.saturating_add(theirs);
            }
        }
        self.events += other.events;
    }

    /// Zeroes every slot.
    pub(crate) fn clear(&mut self) {
        let block_slots = BLOCK << self.slot_shift;
        for (block, flag) in self.dirty.iter_mut().enumerate() {
            if *flag != 0 {
                *flag = 0;
                self.slots[block * block_slots..(block + 1) * block_slots].fill(0);
            }
        }
        self.events = 0;
    }

    /// Writes the window's frame into `frame` (nonzero outputs, ascending, normalised) and zeroes
    /// the slots for the next window.
    pub(crate) fn finish(
        &mut self,
        table: &SplatTable,
        normalization: Normalization,
        frame: &mut SparseFrame,
    ) {
        let shape = table.shape();
        let outputs = shape.len();
        frame.shape = shape;
        frame.indices.clear();
        frame.values.clear();
        let shift = self.slot_shift;
        for (block, flag) in self.dirty.iter_mut().enumerate() {
            if *flag == 0 {
                continue;
            }
            *flag = 0;
            let first = block * BLOCK;
            let slot_range = (first << shift)..((first + BLOCK) << shift);
            if first < outputs {
                let end = outputs.min(first + BLOCK);
                let slots = &self.slots[(first << shift)..(end << shift)];
                table.output_values(first, end, slots, |index, value| {
                    if value != 0.0 {
                        frame.indices.push(index as u32);
                        frame.values.push(value);
                    }
                });
            }
            self.slots[slot_range].fill(0);
        }
        normalization.apply(&mut frame.values);
        self.events = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::super::{FrameSpec, ResizeMode};
    use super::*;

    fn table(sw: u16, sh: u16, w: u16, h: u16, mode: ResizeMode) -> SplatTable {
        SplatTable::new(&FrameSpec {
            sensor_width: sw,
            sensor_height: sh,
            width: w,
            height: h,
            resize: mode,
            normalization: Normalization::None,
        })
        .unwrap()
    }

    #[test]
    fn counts_drain_and_reset() {
        let table = table(5, 3, 5, 3, ResizeMode::Nearest);
        let mut pixels = PixelCounts::new(&table);
        let mut slots = SlotCounts::new(&table);
        let events = [
            Event::new(0, 1, 2, true),
            Event::new(1, 1, 2, true),
            Event::new(2, 4, 0, false),
            Event::new(3, 5, 0, false),
            Event::new(4, 0, 3, false),
        ];
        assert_eq!(pixels.add(&events), 2);
        assert_eq!(pixels.events(), 3);
        pixels.drain_into(&table, &mut slots);
        assert_eq!(slots.events(), 3);
        let mut frame = SparseFrame::empty(table.shape());
        slots.finish(&table, Normalization::None, &mut frame);
        assert_eq!(frame.indices, [4, 15 + 2 * 5 + 1]);
        assert_eq!(frame.values, [1.0, 2.0]);
        // Everything was reset.
        slots.finish(&table, Normalization::None, &mut frame);
        assert_eq!(frame.nnz(), 0);
        assert!(pixels.counts.iter().all(|&c| c == 0));
    }

    #[test]
    fn splat_event_equals_count_then_drain() {
        for mode in [ResizeMode::Nearest, ResizeMode::Bilinear, ResizeMode::Area] {
            let table = table(13, 9, 5, 4, mode);
            let events: Vec<Event> = (0..200u16)
                .map(|i| Event::new(i64::from(i), (i * 7) % 14, (i * 3) % 10, i % 3 == 0))
                .collect();
            let mut pixels = PixelCounts::new(&table);
            let mut drained = SlotCounts::new(&table);
            pixels.add(&events);
            pixels.drain_into(&table, &mut drained);
            let mut direct = SlotCounts::new(&table);
            for e in &events {
                direct.splat_event(&table, e);
            }
            let (mut a, mut b) = (
                SparseFrame::empty(table.shape()),
                SparseFrame::empty(table.shape()),
            );
            drained.finish(&table, Normalization::None, &mut a);
            direct.finish(&table, Normalization::None, &mut b);
            assert_eq!(a, b, "{mode:?}");
            assert!(a.nnz() > 0);
        }
    }

    #[test]
    fn add_from_sums_panes() {
        let table = table(8, 8, 3, 3, ResizeMode::Bilinear);
        let mut pane = SlotCounts::new(&table);
        let mut window = SlotCounts::new(&table);
        let mut whole = SlotCounts::new(&table);
        for i in 0..40u16 {
            let e = Event::new(0, i % 8, (i / 3) % 8, i % 2 == 0);
            pane.splat_event(&table, &e);
            whole.splat_event(&table, &e);
            if i % 10 == 9 {
                window.add_from(&pane);
                pane.clear();
            }
        }
        let (mut a, mut b) = (
            SparseFrame::empty(table.shape()),
            SparseFrame::empty(table.shape()),
        );
        window.finish(&table, Normalization::None, &mut a);
        whole.finish(&table, Normalization::None, &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn saturates_instead_of_wrapping() {
        let table = table(2, 2, 2, 2, ResizeMode::Nearest);
        let mut slots = SlotCounts::new(&table);
        slots.slots[0] = u32::MAX;
        slots.dirty[0] = 1;
        slots.splat_event(&table, &Event::new(0, 0, 0, false));
        assert_eq!(slots.slots[0], u32::MAX);
    }
}
