//! Splitting a layer's output pixels into bands that threads work on: every mutable buffer of
//! the layer is cut at the same pixel, recursively with `rayon::join`, so no band allocates and
//! no two bands touch the same memory.

use std::ops::Range;

use crate::exec::sparse::lists::ListsMut;

/// Something laid out pixel after pixel that can be cut in two at a pixel boundary.
pub trait SplitAtPixel: Sized + Send {
    /// (pixels `[0, p)`, pixels `[p, ..)`), both re-based to start at pixel 0.
    fn split_at_pixel(self, p: usize) -> (Self, Self);
}

/// A mutable NHWC buffer with `per_pixel` values per pixel.
#[derive(Debug)]
pub struct PixelsMut<'a, T> {
    /// The values, pixel-major.
    pub data: &'a mut [T],
    /// Values per pixel.
    pub per_pixel: usize,
}

impl<'a, T> PixelsMut<'a, T> {
    /// Wraps `data` holding `per_pixel` values per pixel.
    pub fn new(data: &'a mut [T], per_pixel: usize) -> Self {
        Self { data, per_pixel }
    }

    /// Pixel `p`'s values.
    #[inline]
    pub fn pixel(&mut self, p: usize) -> &mut [T] {
        let start = p * self.per_pixel;
        &mut self.data[start..start + self.per_pixel]
    }
}

impl<T: Send> SplitAtPixel for PixelsMut<'_, T> {
    fn split_at_pixel(self, p: usize) -> (Self, Self) {
        let (a, b) = self.data.split_at_mut(p * self.per_pixel);
        (
            Self {
                data: a,
                per_pixel: self.per_pixel,
            },
            Self {
                data: b,
                per_pixel: self.per_pixel,
            },
        )
    }
}

impl SplitAtPixel for ListsMut<'_> {
    fn split_at_pixel(self, p: usize) -> (Self, Self) {
        self.split_at(p)
    }
}

impl SplitAtPixel for () {
    fn split_at_pixel(self, _p: usize) -> (Self, Self) {
        ((), ())
    }
}

impl<A: SplitAtPixel, B: SplitAtPixel> SplitAtPixel for (A, B) {
    fn split_at_pixel(self, p: usize) -> (Self, Self) {
        let (a0, a1) = self.0.split_at_pixel(p);
        let (b0, b1) = self.1.split_at_pixel(p);
        ((a0, b0), (a1, b1))
    }
}

impl<A: SplitAtPixel, B: SplitAtPixel, C: SplitAtPixel> SplitAtPixel for (A, B, C) {
    fn split_at_pixel(self, p: usize) -> (Self, Self) {
        let (a0, a1) = self.0.split_at_pixel(p);
        let (b0, b1) = self.1.split_at_pixel(p);
        let (c0, c1) = self.2.split_at_pixel(p);
        ((a0, b0, c0), (a1, b1, c1))
    }
}

/// Runs `work(first_pixel, active, parts)` over bands covering pixels `[0, pixels)`.
///
/// `active` lists the pixels to work on, ascending (all of them when the layer is fully
/// active); each band receives the slice of it inside the band and `parts` cut to the band
/// (re-based: index the band's buffers with `pixel − first_pixel`). With `parallel` false the
/// whole range is one band on the calling thread. Bands are split until they hold at most
/// `grain` active pixels, so work balances by active pixels rather than by area. The return
/// values are summed.
pub fn for_bands<P, F>(
    parallel: bool,
    pixels: usize,
    active: &[u32],
    grain: usize,
    parts: P,
    work: &F,
) -> u64
where
    P: SplitAtPixel,
    F: Fn(usize, &[u32], P) -> u64 + Sync,
{
    if !parallel {
        return work(0, active, parts);
    }
    split(0..pixels, active, grain.max(1), parts, work)
}

fn split<P, F>(range: Range<usize>, active: &[u32], grain: usize, parts: P, work: &F) -> u64
where
    P: SplitAtPixel,
    F: Fn(usize, &[u32], P) -> u64 + Sync,
{
    if active.len() <= grain || range.len() < 2 {
        return work(range.start, active, parts);
    }
    // Cut at the median active pixel so both halves carry the same work.
    let mid = (active[active.len() / 2] as usize).clamp(range.start + 1, range.end - 1);
    let cut = active.partition_point(|&p| (p as usize) < mid);
    let (left_active, right_active) = active.split_at(cut);
    let (left, right) = parts.split_at_pixel(mid - range.start);
    let (a, b) = rayon::join(
        || split(range.start..mid, left_active, grain, left, work),
        || split(mid..range.end, right_active, grain, right, work),
    );
    a + b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_visit_every_active_pixel_once_with_rebased_buffers() {
        let pixels = 37;
        let active: Vec<u32> = (0..pixels as u32).filter(|p| p % 3 != 1).collect();
        let mut data = vec![0u32; pixels * 2];
        let total = for_bands(
            true,
            pixels,
            &active,
            4,
            PixelsMut::new(&mut data, 2),
            &|first, act, mut buf| {
                for &p in act {
                    let v = buf.pixel(p as usize - first);
                    v[0] += p;
                    v[1] += 1;
                }
                act.len() as u64
            },
        );
        assert_eq!(total, active.len() as u64);
        for p in 0..pixels {
            let expect = if p % 3 != 1 { (p as u32, 1) } else { (0, 0) };
            assert_eq!((data[2 * p], data[2 * p + 1]), expect);
        }
    }
}
