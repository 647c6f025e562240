//! Per-pixel lists of the nonzero inputs of a layer: what the gather kernels read.

use crate::kernels::compact_nonzero;

/// The nonzero values of an `[pixels][channels]` activation, pixel by pixel: pixel p's nonzero
/// channels are `channel[p·C .. p·C + count[p]]`, ascending, with `value` alongside unless the
/// activation is binary (spikes, whose value is always 1).
///
/// Every pixel owns a fixed slot of C entries, so row bands of a layer can be written in
/// parallel without a prefix sum, and clearing is one pass over the counts.
#[derive(Debug, Clone, Default)]
pub struct PixelLists {
    channels: usize,
    count: Vec<u32>,
    channel: Vec<u32>,
    value: Vec<f32>,
    binary: bool,
}

impl PixelLists {
    /// Empty lists for `pixels` pixels of `channels` channels each.
    pub fn new(pixels: usize, channels: usize, binary: bool) -> Self {
        Self {
            channels,
            count: vec![0; pixels],
            channel: vec![0; pixels * channels],
            value: if binary {
                Vec::new()
            } else {
                vec![0.0; pixels * channels]
            },
            binary,
        }
    }

    /// Whether every listed value is 1 (spikes), so no values are stored.
    pub fn is_binary(&self) -> bool {
        self.binary
    }

    /// Channels per pixel.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Number of pixels.
    pub fn pixels(&self) -> usize {
        self.count.len()
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        (self.count.capacity() + self.channel.capacity() + self.value.capacity()) * 4
    }

    /// Forgets every entry.
    pub fn clear(&mut self) {
        self.count.fill(0);
    }

    /// Total number of listed entries.
    pub fn nnz(&self) -> u64 {
        self.count.iter().map(|&c| u64::from(c)).sum()
    }

    /// Pixel `p`'s nonzero channels, ascending.
    #[inline]
    pub fn channels_at(&self, p: usize) -> &[u32] {
        let start = p * self.channels;
        &self.channel[start..start + self.count[p] as usize]
    }

    /// Where pixel `p`'s channels lie in [`Self::slots`]: (first entry, count).
    #[inline]
    pub fn slot(&self, p: usize) -> (usize, usize) {
        (p * self.channels, self.count[p] as usize)
    }

    /// Every pixel's channel slots, `channels` per pixel, of which the first `count` of each
    /// pixel are its list (see [`Self::slot`]).
    #[inline]
    pub fn slots(&self) -> &[u32] {
        &self.channel
    }

    /// Pixel `p`'s values, parallel to [`Self::channels_at`] (empty when binary).
    #[inline]
    pub fn values_at(&self, p: usize) -> &[f32] {
        if self.binary {
            return &[];
        }
        let start = p * self.channels;
        &self.value[start..start + self.count[p] as usize]
    }

    /// Appends channel `c` with value `v` to pixel `p`. Channels must come in ascending order
    /// and at most `channels` per pixel.
    #[inline]
    pub fn push(&mut self, p: usize, c: u32, v: f32) {
        let k = self.count[p] as usize;
        debug_assert!(k < self.channels);
        debug_assert!(k == 0 || self.channel[p * self.channels + k - 1] < c);
        self.channel[p * self.channels + k] = c;
        if !self.binary {
            self.value[p * self.channels + k] = v;
        }
        self.count[p] += 1;
    }

    /// Replaces pixel `p`'s list with the nonzero entries of `dense` (its C values).
    #[inline]
    pub fn set_from_dense(&mut self, p: usize, dense: &[f32]) {
        self.as_mut().set_from_dense(p, dense);
    }

    /// Copies pixel `p`'s list from pixel `q` of `other` (same channels and kind).
    #[inline]
    pub fn copy_pixel(&mut self, p: usize, other: &PixelLists, q: usize) {
        self.as_mut().copy_pixel(p, other, q);
    }

    /// The whole as one mutable view.
    pub fn as_mut(&mut self) -> ListsMut<'_> {
        ListsMut {
            channels: self.channels,
            count: &mut self.count,
            channel: &mut self.channel,
            value: &mut self.value,
            binary: self.binary,
        }
    }
}

/// A mutable view of some consecutive pixels of a [`PixelLists`] (pixel 0 is the first pixel
/// of the view).
#[derive(Debug)]
pub struct ListsMut<'a> {
    channels: usize,
    count: &'a mut [u32],
    channel: &'a mut [u32],
    value: &'a mut [f32],
    binary: bool,
}

impl ListsMut<'_> {
    /// Replaces pixel `p`'s list with the nonzero entries of `dense` (its C values).
    #[inline]
    pub fn set_from_dense(&mut self, p: usize, dense: &[f32]) {
        debug_assert_eq!(dense.len(), self.channels);
        let base = p * self.channels;
        let slots = &mut self.channel[base..base + self.channels];
        let values = (!self.binary).then(|| &mut self.value[base..base + self.channels]);
        let k = compact_nonzero(dense, slots, values);
        self.count[p] = k as u32;
    }

    /// Empties pixel `p`'s list.
    #[inline]
    pub fn clear_pixel(&mut self, p: usize) {
        self.count[p] = 0;
    }

    /// Appends channel `c` with value `v` to pixel `p` (ascending channels, at most C).
    #[inline]
    pub fn push(&mut self, p: usize, c: u32, v: f32) {
        let k = self.count[p] as usize;
        debug_assert!(k < self.channels);
        self.channel[p * self.channels + k] = c;
        if !self.binary {
            self.value[p * self.channels + k] = v;
        }
        self.count[p] += 1;
    }

    /// Copies pixel `p`'s list from pixel `q` of `other` (same channels and kind).
    #[inline]
    pub fn copy_pixel(&mut self, p: usize, other: &PixelLists, q: usize) {
        debug_assert_eq!(other.channels, self.channels);
        let src = other.channels_at(q);
        let base = p * self.channels;
        self.channel[base..base + src.len()].copy_from_slice(src);
        if !self.binary {
            self.value[base..base + src.len()].copy_from_slice(other.values_at(q));
        }
        self.count[p] = src.len() as u32;
    }

    /// (pixels `[0, p)`, pixels `[p, ..)`).
    pub fn split_at(self, p: usize) -> (Self, Self) {
        let c = self.channels;
        let (count0, count1) = self.count.split_at_mut(p);
        let (channel0, channel1) = self.channel.split_at_mut(p * c);
        let (value0, value1) = if self.binary {
            self.value.split_at_mut(0)
        } else {
            self.value.split_at_mut(p * c)
        };
        (
            Self {
                channels: c,
                count: count0,
                channel: channel0,
                value: value0,
                binary: self.binary,
            },
            Self {
                channels: c,
                count: count1,
                channel: channel1,
                value: value1,
                binary: self.binary,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_hold_the_nonzero_channels_in_order() {
        let mut lists = PixelLists::new(3, 4, false);
        lists.set_from_dense(0, &[0.0, 2.0, 0.0, 0.5]);
        lists.set_from_dense(2, &[1.0, 1.0, 1.0, 1.0]);
        assert_eq!(lists.channels_at(0), &[1, 3]);
        assert_eq!(lists.values_at(0), &[2.0, 0.5]);
        assert!(lists.channels_at(1).is_empty());
        assert_eq!(lists.channels_at(2), &[0, 1, 2, 3]);
        assert_eq!(lists.nnz(), 6);
        lists.clear();
        assert_eq!(lists.nnz(), 0);
    }

    #[test]
    fn split_views_write_their_own_pixels() {
        let mut lists = PixelLists::new(5, 2, true);
        let (mut a, mut b) = lists.as_mut().split_at(2);
        a.set_from_dense(1, &[0.0, 1.0]);
        b.set_from_dense(0, &[1.0, 1.0]);
        b.push(2, 1, 1.0);
        assert_eq!(lists.channels_at(1), &[1]);
        assert_eq!(lists.channels_at(2), &[0, 1]);
        assert_eq!(lists.channels_at(4), &[1]);
        assert!(lists.channels_at(0).is_empty());
    }
}
