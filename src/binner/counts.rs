//! Per-window accumulation buffers: event counts per sensor pixel (the hot loop) and the
//! per-output slot counts that the splat table turns them into.
//!
//! Both buffers are reused across windows and cleared only where they were written. Each keeps a
//! flag per block of 16 entries plus the list of flagged blocks, so a sparse window visits only
//! touched blocks and costs in proportion to its events, not to the sensor. Flagging is a branch
//! on the block's flag, which is almost always already set. Dense work skips the flags: a batch
//! with at least one event per counter flags everything up front, and a window with a quarter of
//! its blocks flagged is drained and extracted in plain passes of 64 entries. Blocks of 16
//! measured fastest on sparse windows (fewer untouched entries per touched block). The plain
//! passes recover what small blocks cost on dense ones (`BENCHMARKS.md`, Binning).
//!
//! Both buffers have power-of-two lengths, so an index masked with `len - 1` is in bounds by
//! construction. That lets the compiler drop the bounds check in the per-event loop.

use crate::event::Event;

use super::frame::SparseFrame;
use super::normalize::Normalization;
use super::resize::SplatTable;

/// Entries per dirty flag.
const BLOCK: usize = 16;
const BLOCK_SHIFT: u32 = 4;

/// Which blocks of a buffer hold nonzero entries: a flag per block and the list of flagged
/// blocks (each listed once, so the list never outgrows its preallocated capacity).
#[derive(Debug, Clone)]
struct DirtyBlocks {
    flags: Vec<u8>,
    list: Vec<u32>,
}

impl DirtyBlocks {
    /// `blocks` must be a power of two.
    fn new(blocks: usize) -> Self {
        debug_assert!(blocks.is_power_of_two());
        Self {
            flags: vec![0; blocks],
            list: Vec::with_capacity(blocks),
        }
    }

    /// Flags block `block & (blocks - 1)`.
    #[inline(always)]
    fn mark(&mut self, block: usize) {
        let block = block & (self.flags.len() - 1);
        if self.flags[block] == 0 {
            self.flags[block] = 1;
            self.list.push(block as u32);
        }
    }

    /// The flagged blocks in ascending order: sorted when few, or rebuilt by a scan of the
    /// flags when many (cheaper than sorting a long list).
    fn ascending(&mut self) -> &[u32] {
        if self.list.len() * 16 > self.flags.len() {
            self.list.clear();
            self.list.extend(
                self.flags
                    .iter()
                    .enumerate()
                    .filter(|&(_, &f)| f != 0)
                    .map(|(b, _)| b as u32),
            );
        } else {
            self.list.sort_unstable();
        }
        &self.list
    }

    /// Flags every block (cheaper than flagging per entry when most blocks will be written).
    fn mark_all(&mut self) {
        self.flags.fill(1);
        self.list.clear();
        self.list.extend(0..self.flags.len() as u32);
    }

    /// Whether at least a quarter of the blocks are flagged.
    fn mostly_flagged(&self) -> bool {
        self.list.len() * 4 >= self.flags.len()
    }

    /// Unflags everything.
    fn reset(&mut self) {
        for &block in &self.list {
            self.flags[block as usize] = 0;
        }
        self.list.clear();
    }
}

/// Event counts per sensor pixel and polarity for the window being filled.
#[derive(Debug, Clone)]
pub(crate) struct PixelCounts {
    width: usize,
    height: usize,
    /// Pixels per channel, rounded up to a whole number of blocks so no block spans channels.
    plane: usize,
    /// `[2][plane]` counts, padded to a power of two.
    counts: Vec<u32>,
    /// The blocks of `counts` written since the last drain.
    dirty: DirtyBlocks,
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
            dirty: DirtyBlocks::new(len >> BLOCK_SHIFT),
            events: 0,
        }
    }

    /// Counts `events`; returns how many were off the sensor (those are not counted).
    #[inline]
    pub(crate) fn add(&mut self, events: &[Event]) -> u64 {
        // A call with at least one event per counter will write most blocks: flag them all up
        // front and count without per-event flagging.
        let off_sensor = if events.len() >= self.counts.len() {
            self.dirty.mark_all();
            self.count::<false>(events)
        } else {
            self.count::<true>(events)
        };
        self.events += events.len() as u64 - off_sensor;
        off_sensor
    }

    /// The per-event loop; `FLAG` marks the block of each counted pixel.
    #[inline(always)]
    fn count<const FLAG: bool>(&mut self, events: &[Event]) -> u64 {
        let (width, height, plane) = (self.width, self.height, self.plane);
        let counts = &mut self.counts[..];
        // Borrow the flags as a plain slice so their pointer and length stay in registers (a
        // `&mut DirtyBlocks` would be reloaded after every push).
        let DirtyBlocks { flags, list } = &mut self.dirty;
        let flags = &mut flags[..];
        assert!(counts.len().is_power_of_two() && flags.len().is_power_of_two());
        let (mask, flag_mask) = (counts.len() - 1, flags.len() - 1);
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
            if FLAG {
                let block = (p >> BLOCK_SHIFT) & flag_mask;
                if flags[block] == 0 {
                    flags[block] = 1;
                    list.push(block as u32);
                }
            }
        }
        off_sensor
    }

    /// In-range events counted since the last drain.
    #[cfg(test)]
    pub(crate) fn events(&self) -> u64 {
        self.events
    }

    /// Splats every counted pixel into `slots` through `table` and zeroes the counts.
    pub(crate) fn drain_into(&mut self, table: &SplatTable, slots: &mut SlotCounts) {
        if self.dirty.mostly_flagged() {
            // A dense window writes most output blocks anyway: flag them all once instead of
            // per splatted slot.
            slots.dirty.mark_all();
            self.drain::<false>(table, slots);
        } else {
            self.drain::<true>(table, slots);
        }
        self.dirty.reset();
        slots.events += self.events;
        self.events = 0;
    }

    /// The per-pixel splat; `FLAG` marks the output block of each slot written.
    #[inline(always)]
    fn drain<const FLAG: bool>(&mut self, table: &SplatTable, slots: &mut SlotCounts) {
        let sensor_pixels = self.width * self.height;
        let blocks_per_channel = self.plane / BLOCK;
        let starts = table.starts();
        let targets = table.targets();
        let channel_slots = table.channel_slots();
        let output_block_shift = table.slot_shift() + BLOCK_SHIFT;
        let identity = table.is_identity();
        // Plain slices, so their pointers and lengths stay in registers across the loop.
        let slot_values = &mut slots.slots[..];
        let slot_mask = slot_values.len() - 1;
        let DirtyBlocks { flags, list } = &mut slots.dirty;
        let flags = &mut flags[..];
        let flag_mask = flags.len() - 1;
        let mut mark = |slot: usize| {
            if FLAG {
                let block = (slot >> output_block_shift) & flag_mask;
                if flags[block] == 0 {
                    flags[block] = 1;
                    list.push(block as u32);
                }
            }
        };
        if !FLAG {
            // Dense: pull each slot's sum from its source pixels through the transposed table.
            // It adds the same integers as splatting, without chains of read-modify-writes on
            // the slot that neighbouring pixels share (measured about 1.8× faster per window).
            let (gather_starts, sources) = (table.gather_starts(), table.gather_sources());
            for channel in 0..2 {
                let base = channel * channel_slots;
                let start = channel * self.plane;
                let plane = &mut self.counts[start..start + sensor_pixels];
                if identity {
                    let slots = &mut slot_values[base..base + sensor_pixels];
                    for (slot, count) in slots.iter_mut().zip(plane.iter_mut()) {
                        *slot = slot.saturating_add(*count);
                        *count = 0;
                    }
                    continue;
                }
                let slots = &mut slot_values[base..base + channel_slots];
                for (slot, range) in slots.iter_mut().zip(gather_starts.windows(2)) {
                    let mut sum = 0u32;
                    for &pixel in &sources[range[0] as usize..range[1] as usize] {
                        sum = sum.saturating_add(plane[pixel as usize]);
                    }
                    *slot = slot.saturating_add(sum);
                }
                plane.fill(0);
            }
            return;
        }
        for &block in &self.dirty.list {
            let block = block as usize;
            // Blocks never span channels (the plane is padded), and only two channels exist.
            let (channel, first) = if block < blocks_per_channel {
                (0, block * BLOCK)
            } else {
                (1, (block - blocks_per_channel) * BLOCK)
            };
            if first >= sensor_pixels {
                continue;
            }
            let n = BLOCK.min(sensor_pixels - first);
            let base = channel * channel_slots;
            let counts = &mut self.counts[block * BLOCK..block * BLOCK + n];
            if identity {
                // Same size, no resize: pixel q is output q, so the block adds as one run (and
                // the table, as large as the sensor, stays out of the cache).
                let run = base + first..base + first + n;
                mark(run.start);
                mark(run.end - 1);
                for (slot, &count) in slot_values[run].iter_mut().zip(counts.iter()) {
                    *slot = slot.saturating_add(count);
                }
                counts.fill(0);
                continue;
            }
            let pixel_starts = &starts[first..=first + n];
            // Visit only the counted pixels, through a bit mask built without branches: a
            // branch per pixel mispredicts on half-full blocks, and adding zeros wastes the
            // splat on sparse ones.
            let mut counted = nonzero_mask(counts.iter().map(|&c| c != 0));
            while counted != 0 {
                let i = counted.trailing_zeros() as usize;
                counted &= counted - 1;
                let count = counts[i];
                let range = pixel_starts[i] as usize..pixel_starts[i + 1] as usize;
                for &target in &targets[range] {
                    let s = (base + target as usize) & slot_mask;
                    slot_values[s] = slot_values[s].saturating_add(count);
                    mark(s);
                }
            }
            counts.fill(0);
        }
    }

    /// Discards everything counted.
    pub(crate) fn clear(&mut self) {
        for &block in &self.dirty.list {
            let block = block as usize;
            self.counts[block * BLOCK..(block + 1) * BLOCK].fill(0);
        }
        self.dirty.reset();
        self.events = 0;
    }
}

/// Bit `i` set where item `i` is true (at most 64 items).
#[inline]
pub(crate) fn nonzero_mask(flags: impl Iterator<Item = bool>) -> u64 {
    flags
        .enumerate()
        .fold(0u64, |mask, (i, set)| mask | (u64::from(set) << i))
}

/// Slot counts of one window: the splat of its events, before the per-output weights.
#[derive(Debug, Clone)]
pub(crate) struct SlotCounts {
    /// Slots of both channels, padded to a power of two.
    slots: Vec<u32>,
    /// The blocks of 64 outputs written since the last finish.
    dirty: DirtyBlocks,
    slot_shift: u32,
    /// In-range events binned into this window.
    events: u64,
}

impl SlotCounts {
    /// Zeroed slots for `table`'s outputs.
    pub(crate) fn new(table: &SplatTable) -> Self {
        let len = Self::len(table.total_slots());
        let shift = table.slot_shift();
        Self {
            slots: vec![0; len],
            dirty: DirtyBlocks::new(len >> (shift + BLOCK_SHIFT)),
            slot_shift: shift,
            events: 0,
        }
    }

    /// Bytes one set of slots takes for a frame of `total_slots` slots.
    pub(crate) fn bytes(total_slots: usize) -> usize {
        Self::len(total_slots) * std::mem::size_of::<u32>()
    }

    fn len(total_slots: usize) -> usize {
        total_slots.next_power_of_two().max(BLOCK << 2)
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
            self.dirty.mark(s >> output_block_shift);
        }
        self.events += 1;
        true
    }

    /// Adds `other`'s counts into these (a pane into each window that contains it).
    pub(crate) fn add_from(&mut self, other: &SlotCounts) {
        debug_assert_eq!(self.slots.len(), other.slots.len());
        let block_slots = BLOCK << self.slot_shift;
        for &block in &other.dirty.list {
            let block = block as usize;
            self.dirty.mark(block);
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
        for &block in &self.dirty.list {
            let block = block as usize;
            self.slots[block * block_slots..(block + 1) * block_slots].fill(0);
        }
        self.dirty.reset();
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
        let mut extract = |first: usize, end: usize, slots: &[u32]| {
            table.output_values(first, end, slots, |index, value| {
                if value != 0.0 {
                    frame.indices.push(index as u32);
                    frame.values.push(value);
                }
            });
        };
        if self.dirty.mostly_flagged() {
            // Dense: one pass over all outputs in runs of 64, without per-block bookkeeping.
            let used = outputs << shift;
            for (run, slots) in self.slots[..used].chunks(64 << shift).enumerate() {
                let first = run * 64;
                extract(first, first + (slots.len() >> shift), slots);
            }
            self.slots[..used].fill(0);
            let (flags, list) = (&mut self.dirty.flags, &mut self.dirty.list);
            flags.fill(0);
            list.clear();
        } else {
            for &block in self.dirty.ascending() {
                let first = block as usize * BLOCK;
                let slot_range = (first << shift)..((first + BLOCK) << shift);
                if first < outputs {
                    let end = outputs.min(first + BLOCK);
                    extract(first, end, &self.slots[(first << shift)..(end << shift)]);
                }
                self.slots[slot_range].fill(0);
            }
            self.dirty.reset();
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
    fn sparse_and_dense_drains_equal_splatting_each_event() {
        for mode in [ResizeMode::Nearest, ResizeMode::Bilinear, ResizeMode::Area] {
            for (sensor, out) in [
                ((200, 150), (17, 9)),
                ((64, 48), (64, 48)),
                ((30, 20), (45, 31)),
            ] {
                let table = table(sensor.0, sensor.1, out.0, out.1, mode);
                // 40 events touch few blocks (sparse path); 70 000 exceed the counter length
                // (dense counting) and flag every block (gather drain).
                for n in [40u32, 70_000] {
                    let events: Vec<Event> = (0..n)
                        .map(|i| {
                            let x = (i.wrapping_mul(2_654_435_761) >> 7) % u32::from(sensor.0);
                            let y = (i.wrapping_mul(40_503) >> 3) % u32::from(sensor.1);
                            Event::new(i64::from(i), x as u16, y as u16, i % 3 == 0)
                        })
                        .collect();
                    let mut pixels = PixelCounts::new(&table);
                    let mut drained = SlotCounts::new(&table);
                    pixels.add(&events);
                    let dense = pixels.dirty.mostly_flagged();
                    assert_eq!(dense, n > 40, "{mode:?} {sensor:?} n={n}");
                    pixels.drain_into(&table, &mut drained);
                    let mut direct = SlotCounts::new(&table);
                    for e in &events {
                        direct.splat_event(&table, e);
                    }
                    let mut a = SparseFrame::empty(table.shape());
                    let mut b = SparseFrame::empty(table.shape());
                    drained.finish(&table, Normalization::None, &mut a);
                    direct.finish(&table, Normalization::None, &mut b);
                    assert_eq!(a, b, "{mode:?} {sensor:?} n={n}");
                    assert!(a.nnz() > 0);
                }
            }
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
    fn dirty_blocks_ascend_by_sort_or_scan() {
        let mut few = DirtyBlocks::new(64);
        for b in [9, 3, 9, 70] {
            few.mark(b);
        }
        assert_eq!(few.ascending(), [3, 6, 9]);
        few.reset();
        assert!(few.flags.iter().all(|&f| f == 0) && few.list.is_empty());
        let mut many = DirtyBlocks::new(16);
        for b in [15, 2, 7] {
            many.mark(b);
        }
        assert_eq!(many.ascending(), [2, 7, 15]);
    }

    #[test]
    fn saturates_instead_of_wrapping() {
        let table = table(2, 2, 2, 2, ResizeMode::Nearest);
        let mut slots = SlotCounts::new(&table);
        slots.slots[0] = u32::MAX;
        slots.dirty.mark(0);
        slots.splat_event(&table, &Event::new(0, 0, 0, false));
        assert_eq!(slots.slots[0], u32::MAX);
    }
}
