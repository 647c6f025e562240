//! The f32 kernels that make sparse inputs pay: summing selected weight rows (a linear layer
//! whose input is 0/1 and mostly 0), adding rows to rows by a list of pairs (a convolution
//! whose input is mostly 0, 0/1 spikes or event counts, and its weight gradient), and the
//! surrogate gradient over a slice.
//!
//! Each kernel is one generic body compiled three times, for AVX-512, for AVX2 + FMA and for
//! the baseline target, and chosen at run time: the crate is built for baseline x86-64, where
//! the compiler may not use the wider registers on its own. The bodies keep up to 128
//! accumulators in registers (output-stationary), so the only memory traffic of a row sum is
//! the weight rows themselves.

use crate::snn::neuron::Surrogate;

/// The widest instruction set available, checked once per call (the standard library caches
/// the CPU query).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Isa {
    Avx512,
    Avx2,
    Portable,
}

#[inline]
fn isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Isa::Avx2;
        }
    }
    Isa::Portable
}

/// Sums `N`-lane column blocks of the selected rows; N accumulators live in registers.
#[inline(always)]
fn sum_block<const N: usize>(weight: &[f32], rows: &[u32], start: usize, out: &mut [f32]) {
    let mut acc = [0f32; N];
    for &r in rows {
        let w: &[f32; N] = weight[r as usize + start..][..N]
            .try_into()
            .expect("N values");
        for i in 0..N {
            acc[i] += w[i];
        }
    }
    out[start..start + N].copy_from_slice(&acc);
}

#[inline(always)]
fn sum_rows_body(weight: &[f32], rows: &[u32], out: &mut [f32]) {
    let n = out.len();
    let mut start = 0;
    while n - start >= 128 {
        sum_block::<128>(weight, rows, start, out);
        start += 128;
    }
    if n - start >= 64 {
        sum_block::<64>(weight, rows, start, out);
        start += 64;
    }
    if n - start >= 32 {
        sum_block::<32>(weight, rows, start, out);
        start += 32;
    }
    if n - start >= 16 {
        sum_block::<16>(weight, rows, start, out);
        start += 16;
    }
    if start < n {
        let rest = &mut out[start..];
        rest.fill(0.0);
        for &r in rows {
            for (o, w) in rest.iter_mut().zip(&weight[r as usize + start..]) {
                *o += *w;
            }
        }
    }
}

#[inline(always)]
fn add_row_pairs_body(
    src: &[f32],
    pairs: &[(u32, u32)],
    scales: Option<&[f32]>,
    n: usize,
    dst: &mut [f32],
) {
    match scales {
        None => {
            for &(from, to) in pairs {
                let from = &src[from as usize..][..n];
                for (d, s) in dst[to as usize..][..n].iter_mut().zip(from) {
                    *d += *s;
                }
            }
        }
        Some(scales) => {
            for (&(from, to), &k) in pairs.iter().zip(scales) {
                let from = &src[from as usize..][..n];
                for (d, s) in dst[to as usize..][..n].iter_mut().zip(from) {
                    *d += k * *s;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;

    #[target_feature(enable = "avx512f")]
    pub(super) fn sum_rows_avx512(weight: &[f32], rows: &[u32], out: &mut [f32]) {
        sum_rows_body(weight, rows, out);
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn sum_rows_avx2(weight: &[f32], rows: &[u32], out: &mut [f32]) {
        sum_rows_body(weight, rows, out);
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn add_row_pairs_avx512(
        src: &[f32],
        pairs: &[(u32, u32)],
        scales: Option<&[f32]>,
        n: usize,
        dst: &mut [f32],
    ) {
        add_row_pairs_body(src, pairs, scales, n, dst);
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn add_row_pairs_avx2(
        src: &[f32],
        pairs: &[(u32, u32)],
        scales: Option<&[f32]>,
        n: usize,
        dst: &mut [f32],
    ) {
        add_row_pairs_body(src, pairs, scales, n, dst);
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn spike_gradients_avx512(s: Surrogate, mpr: bool, h: &[f32], g: &mut [f32]) {
        s.spike_gradients(mpr, h, g);
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn spike_gradients_avx2(s: Surrogate, mpr: bool, h: &[f32], g: &mut [f32]) {
        s.spike_gradients(mpr, h, g);
    }
}

/// `out[j] = Σ_k weight[rows[k] + j]` for j < out.len(), in the order of `rows`.
///
/// # Panics
///
/// If a row runs past `weight` (a caller bug: rows come from validated shapes).
pub fn sum_rows(weight: &[f32], rows: &[u32], out: &mut [f32]) {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` checked the CPU for AVX-512F; the body is safe Rust.
        Isa::Avx512 => unsafe { x86::sum_rows_avx512(weight, rows, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for AVX2 and FMA.
        Isa::Avx2 => unsafe { x86::sum_rows_avx2(weight, rows, out) },
        _ => sum_rows_body(weight, rows, out),
    }
}

/// For each pair `(from, to)`, in order: `dst[to + j] += scales[k]·src[from + j]` for j < n
/// (the scale is 1 without `scales`).
///
/// # Panics
///
/// If a row runs past `src` or `dst` (a caller bug).
pub fn add_row_pairs(
    src: &[f32],
    pairs: &[(u32, u32)],
    scales: Option<&[f32]>,
    n: usize,
    dst: &mut [f32],
) {
    debug_assert!(scales.is_none_or(|s| s.len() == pairs.len()));
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` checked the CPU for AVX-512F; the body is safe Rust.
        Isa::Avx512 => unsafe { x86::add_row_pairs_avx512(src, pairs, scales, n, dst) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for AVX2 and FMA.
        Isa::Avx2 => unsafe { x86::add_row_pairs_avx2(src, pairs, scales, n, dst) },
        _ => add_row_pairs_body(src, pairs, scales, n, dst),
    }
}

/// [`Surrogate::spike_gradients`] compiled for the widest instruction set available.
pub fn spike_gradients(s: Surrogate, mpr: bool, h: &[f32], g: &mut [f32]) {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` checked the CPU for AVX-512F; the body is safe Rust.
        Isa::Avx512 => unsafe { x86::spike_gradients_avx512(s, mpr, h, g) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for AVX2 and FMA.
        Isa::Avx2 => unsafe { x86::spike_gradients_avx2(s, mpr, h, g) },
        _ => s.spike_gradients(mpr, h, g),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_sums_and_row_pairs_match_plain_loops() {
        for n in [1usize, 7, 16, 40, 64, 100, 128, 200, 512] {
            let k = 9;
            let weight: Vec<f32> = (0..k * n).map(|i| ((i * 37 % 101) as f32) * 0.01).collect();
            let rows: Vec<u32> = [0usize, 3, 3, 8, 5]
                .iter()
                .map(|&r| (r * n) as u32)
                .collect();
            let mut out = vec![f32::NAN; n];
            sum_rows(&weight, &rows, &mut out);
            for j in 0..n {
                let want: f32 = rows.iter().map(|&r| weight[r as usize + j]).sum();
                assert!((out[j] - want).abs() < 1e-5, "n={n} j={j}");
            }
            // Pairs from the weight rows to the rows of a 3-row destination, repeats included.
            let pairs: Vec<(u32, u32)> = [(0usize, 2usize), (3, 0), (3, 2), (8, 1), (5, 2)]
                .iter()
                .map(|&(f, t)| ((f * n) as u32, (t * n) as u32))
                .collect();
            let scales = [2.0f32, -0.5, 3.0, 1.0, 0.25];
            for scaled in [false, true] {
                let mut dst: Vec<f32> = (0..3 * n).map(|i| i as f32).collect();
                let mut want = dst.clone();
                for (k, &(f, t)) in pairs.iter().enumerate() {
                    let s = if scaled { scales[k] } else { 1.0 };
                    for j in 0..n {
                        want[t as usize + j] += s * weight[f as usize + j];
                    }
                }
                add_row_pairs(&weight, &pairs, scaled.then_some(&scales[..]), n, &mut dst);
                for (got, want) in dst.iter().zip(&want) {
                    assert!((got - want).abs() < 1e-4, "n={n} scaled={scaled}");
                }
            }
        }
    }
}
