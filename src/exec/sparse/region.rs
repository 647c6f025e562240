//! Active regions: the pixels of a node whose values may differ from the background at the
//! current timestep, and which pixels' buffers hold this timestep's values.
//!
//! A pixel is active when an input event reaches it through the windows of the layers before
//! (or, for a neuron, reached it at an earlier timestep, since its membrane keeps the
//! difference). Every other pixel holds the background value. When a region grows past a
//! fraction of the layer it becomes "all": the layer is then computed everywhere, which costs
//! less than tracking a region that covers it.
//!
//! A neuron node's region belongs to the stream (it lives in the `State` and grows over the
//! stream's timesteps); every other node's is recomputed at each timestep and belongs to the
//! worker's scratch, as do the stamps that say which buffers are current.

use crate::exec::sparse::plan::Footprint;

/// The active pixels of one node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Region {
    /// Every pixel is active (computed this timestep).
    pub all: bool,
    /// Per pixel: active.
    mask: Vec<bool>,
    /// The active pixels, ascending once [`Region::finish`] ran.
    list: Vec<u32>,
}

impl Region {
    /// An empty region over `pixels` pixels.
    pub fn new(pixels: usize) -> Self {
        Self {
            all: false,
            mask: vec![false; pixels],
            list: Vec::new(),
        }
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.mask.capacity() + self.list.capacity() * std::mem::size_of::<u32>()
    }

    /// Number of pixels of the node.
    pub fn pixels(&self) -> usize {
        self.mask.len()
    }

    /// Back to empty.
    pub fn reset(&mut self) {
        self.all = false;
        for &p in &self.list {
            self.mask[p as usize] = false;
        }
        self.list.clear();
    }

    /// Whether pixel `p` is active.
    #[inline]
    pub fn contains(&self, p: usize) -> bool {
        self.all || self.mask[p]
    }

    /// Whether pixel `p` was ever inserted (ignoring `all`).
    #[inline]
    pub fn listed(&self, p: usize) -> bool {
        self.mask[p]
    }

    /// The pixels inserted after the first `from` (in insertion order until
    /// [`Region::finish`] sorts them).
    pub fn tail(&self, from: usize) -> &[u32] {
        self.list.get(from..).unwrap_or(&[])
    }

    /// Adds pixel `p`.
    #[inline]
    pub fn insert(&mut self, p: usize) {
        if !self.mask[p] {
            self.mask[p] = true;
            self.list.push(p as u32);
        }
    }

    /// Sorts the list and switches to "all" when more than `max_fraction` of the pixels are
    /// active.
    pub fn finish(&mut self, max_fraction: f64) {
        if self.all {
            return;
        }
        if self.list.len() as f64 > max_fraction * self.mask.len() as f64 {
            self.all = true;
        } else {
            self.list.sort_unstable();
        }
    }

    /// The active pixels (all of `all_pixels[..pixels]` when `all`).
    pub fn active<'a>(&'a self, all_pixels: &'a [u32]) -> &'a [u32] {
        if self.all {
            &all_pixels[..self.mask.len()]
        } else {
            &self.list
        }
    }

    /// Number of active pixels.
    pub fn len(&self) -> usize {
        if self.all {
            self.mask.len()
        } else {
            self.list.len()
        }
    }

    /// Whether no pixel is active.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Per pixel of one node, the stamp of the timestep whose values its buffers hold. The
/// executor stamps every timestep it runs, whichever stream it belongs to, so values left
/// by another stream's timestep are never taken for current.
#[derive(Debug, Clone, Default)]
pub struct Stamps {
    stamp: Vec<u32>,
}

impl Stamps {
    /// Stamps for `pixels` pixels, none current.
    pub fn new(pixels: usize) -> Self {
        Self {
            stamp: vec![0; pixels],
        }
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.stamp.capacity() * std::mem::size_of::<u32>()
    }

    /// Forgets every stamp (when the stamp counter wraps).
    pub fn clear(&mut self) {
        self.stamp.fill(0);
    }

    /// Whether pixel `p`'s buffers hold the values of the timestep stamped `now` (always, for
    /// a node computed everywhere: `all`).
    #[inline]
    pub fn is_current(&self, all: bool, p: usize, now: u32) -> bool {
        all || self.stamp[p] == now
    }

    /// Marks pixel `p`'s buffers as holding the values of timestep `now`.
    #[inline]
    pub fn set_current(&mut self, p: usize, now: u32) {
        self.stamp[p] = now;
    }

    /// Marks every active pixel of `region` current.
    pub fn stamp_active(&mut self, region: &Region, now: u32) {
        if region.all {
            return;
        }
        for &p in &region.list {
            self.stamp[p as usize] = now;
        }
    }
}

/// Output geometry of a read: how output pixels map to input pixels.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    /// Input (height, width).
    pub input: (usize, usize),
    /// Output (height, width).
    pub output: (usize, usize),
    /// The footprint.
    pub footprint: Footprint,
}

impl Geometry {
    /// Calls `f` for every input pixel that output pixel `o` reads (for `Footprint::All`,
    /// every input pixel).
    #[inline]
    pub fn for_each_read(&self, o: usize, mut f: impl FnMut(usize)) {
        let (ih, iw) = self.input;
        match self.footprint {
            Footprint::Same => f(o),
            Footprint::All => (0..ih * iw).for_each(f),
            Footprint::Window {
                kernel: (kh, kw),
                stride,
                padding,
            } => {
                let (oy, ox) = (o / self.output.1, o % self.output.1);
                for ky in 0..kh {
                    let Some(iy) = (oy * stride + ky).checked_sub(padding).filter(|&y| y < ih)
                    else {
                        continue;
                    };
                    for kx in 0..kw {
                        let Some(ix) = (ox * stride + kx).checked_sub(padding).filter(|&x| x < iw)
                        else {
                            continue;
                        };
                        f(iy * iw + ix);
                    }
                }
            }
        }
    }

    /// Calls `f` for every output pixel that reads input pixel `i` (for `Footprint::All`,
    /// every output pixel).
    #[inline]
    pub fn for_each_reader(&self, i: usize, mut f: impl FnMut(usize)) {
        let (oh, ow) = self.output;
        match self.footprint {
            Footprint::Same => f(i),
            Footprint::All => (0..oh * ow).for_each(f),
            Footprint::Window {
                kernel: (kh, kw),
                stride,
                padding,
            } => {
                let (iy, ix) = (i / self.input.1, i % self.input.1);
                // Output o reads iy when o·stride + ky − padding = iy for some ky < kh.
                let range = |pos: usize, k: usize, out: usize| {
                    let hi = (pos + padding) / stride;
                    let lo = (pos + padding + stride).saturating_sub(k) / stride;
                    lo..(hi + 1).min(out)
                };
                for oy in range(iy, kh, oh) {
                    for ox in range(ix, kw, ow) {
                        f(oy * ow + ox);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Readers and reads are inverse relations, for strides, paddings and kernels that do
    /// and do not divide the input.
    #[test]
    fn readers_invert_reads() {
        for (h, k, stride, padding) in [
            (7, 3, 1, 1),
            (8, 3, 2, 1),
            (9, 1, 2, 0),
            (6, 2, 2, 0),
            (5, 3, 1, 0),
        ] {
            let out = (h + 2 * padding - k) / stride + 1;
            let g = Geometry {
                input: (h, h),
                output: (out, out),
                footprint: Footprint::Window {
                    kernel: (k, k),
                    stride,
                    padding,
                },
            };
            for o in 0..out * out {
                let mut reads = Vec::new();
                g.for_each_read(o, |i| reads.push(i));
                for i in 0..h * h {
                    let mut readers = Vec::new();
                    g.for_each_reader(i, |r| readers.push(r));
                    assert_eq!(
                        reads.contains(&i),
                        readers.contains(&o),
                        "h={h} k={k} s={stride} p={padding} o={o} i={i}"
                    );
                }
            }
        }
    }

    #[test]
    fn regions_grow_sort_and_saturate() {
        let mut r = Region::new(10);
        r.insert(7);
        r.insert(2);
        r.insert(7);
        r.finish(0.5);
        assert_eq!(r.active(&[]), &[2, 7]);
        assert!(r.contains(2) && !r.contains(3));
        for p in 0..6 {
            r.insert(p);
        }
        r.finish(0.5);
        assert!(r.all);
        assert_eq!(r.len(), 10);
        r.reset();
        assert!(r.is_empty());
    }
}
