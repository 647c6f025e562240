//! Batches: the binner's `[T][B][C][H][W]` frames to the trainer's `[T][B][H][W][C]`, with
//! the augmentation of the InfLoR / TET CIFAR10-DVS recipe applied on the way.
//!
//! Per sample (the same for all its T frames): a horizontal flip with probability ½, then a
//! circular shift (`torch.roll`) by dy, dx drawn uniformly from −5..=5 (`random.randint(-5, 5)`
//! on each axis). The draws come from a ChaCha8 generator seeded per (run seed, epoch, batch),
//! in sample order: flip, dy, dx.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The largest roll on each axis.
pub const MAX_ROLL: i32 = 5;

/// One sample's transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Transform {
    /// Mirror x.
    pub flip: bool,
    /// Rows to roll down (negative: up).
    pub dy: i32,
    /// Columns to roll right (negative: left).
    pub dx: i32,
}

/// The transforms of one batch: `batch` draws from the generator for (seed, epoch, step).
pub fn draw(seed: u64, epoch: usize, step: usize, batch: usize) -> Vec<Transform> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Independent streams per batch without reseeding arithmetic collisions.
    rng.set_stream(((epoch as u64) << 32) | step as u64);
    (0..batch)
        .map(|_| Transform {
            flip: rng.random_bool(0.5),
            dy: rng.random_range(-MAX_ROLL..=MAX_ROLL),
            dx: rng.random_range(-MAX_ROLL..=MAX_ROLL),
        })
        .collect()
}

/// Writes `frames` (`[T][B][C][H][W]`) as `[T][B][H][W][C]` into `out`, each sample moved by
/// its transform (`transforms` empty: none). out[y][x] = in[(y − dy) mod H][x′ − dx mod W]
/// with x′ the flipped column.
pub fn to_nhwc(
    frames: &[f32],
    (t, b, c, h, w): (usize, usize, usize, usize, usize),
    transforms: &[Transform],
    out: &mut [f32],
) {
    let plane = h * w;
    let sample = c * plane;
    for ti in 0..t {
        for bi in 0..b {
            let tr = transforms.get(bi).copied().unwrap_or_default();
            let src = &frames[(ti * b + bi) * sample..][..sample];
            let dst = &mut out[(ti * b + bi) * sample..][..sample];
            for y in 0..h {
                let sy = (y as i64 - i64::from(tr.dy)).rem_euclid(h as i64) as usize;
                for x in 0..w {
                    let rx = (x as i64 - i64::from(tr.dx)).rem_euclid(w as i64) as usize;
                    let sx = if tr.flip { w - 1 - rx } else { rx };
                    for ch in 0..c {
                        dst[(y * w + x) * c + ch] = src[ch * plane + sy * w + sx];
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roll_and_flip_follow_torch() {
        // One 1x3x4 frame, values = index.
        let frame: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let mut out = vec![0.0; 12];
        // torch.roll(x, shifts=(1, -1), dims=(1, 2)) of torch.flip(x, dims=(2,)).
        let tr = Transform {
            flip: true,
            dy: 1,
            dx: -1,
        };
        to_nhwc(&frame, (1, 1, 1, 3, 4), &[tr], &mut out);
        // flip: rows [3 2 1 0] [7 6 5 4] [11 10 9 8]; roll rows +1: [11 10 9 8] [3 2 1 0] [7 6 5 4];
        // roll columns −1: [10 9 8 11] [2 1 0 3] [6 5 4 7].
        assert_eq!(out, vec![10., 9., 8., 11., 2., 1., 0., 3., 6., 5., 4., 7.]);
        let a = draw(3, 1, 2, 16);
        assert_eq!(a, draw(3, 1, 2, 16));
        assert_ne!(a, draw(3, 1, 3, 16));
        assert!(a.iter().all(|t| t.dx.abs() <= 5 && t.dy.abs() <= 5));
    }
}
