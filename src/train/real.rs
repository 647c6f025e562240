//! The number type of the trainer: f32 for training, f64 for the gradient checks. Every layer
//! is written once over [`Real`]; the f32 instance routes the hot loops to vectorised kernels.

use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{AddAssign, Div, MulAssign, Neg, SubAssign};

use crate::kernels::{self, Transpose};
use crate::snn::neuron::{Potential, Surrogate};
use crate::train::sparse;

/// f32 or f64.
pub trait Real:
    Potential
    + Debug
    + Default
    + Send
    + Sync
    + 'static
    + AddAssign
    + SubAssign
    + MulAssign
    + Div<Output = Self>
    + Neg<Output = Self>
    + Sum
{
    /// Rounds from f64.
    fn of_f64(v: f64) -> Self;
    /// Widens to f64.
    fn to_f64(self) -> f64;
    /// Narrows to f32.
    fn to_f32(self) -> f32;
    /// Square root.
    fn sqrt(self) -> Self;

    /// `C = β·C + op(A)·op(B)` ([`kernels::sgemm`] or [`kernels::dgemm`]).
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: &[Self],
        at: Transpose,
        b: &[Self],
        bt: Transpose,
        beta: Self,
        c: &mut [Self],
    );

    /// `g[i] = dO/dH(h[i])` ([`Surrogate::spike_gradients`] in f32, the f64 definition in f64).
    fn spike_gradients(surrogate: Surrogate, mpr: bool, h: &[Self], g: &mut [Self]);

    /// `out[..] = Σ_k weight[rows[k]..][..out.len()]`, adding in the order of `rows`.
    fn sum_rows(weight: &[Self], rows: &[u32], out: &mut [Self]);

    /// For each pair `(from, to)`, in order: `dst[to..][..n] += scales[k]·src[from..][..n]`
    /// (the scale is 1 without `scales`).
    fn add_row_pairs(
        src: &[Self],
        pairs: &[(u32, u32)],
        scales: Option<&[Self]>,
        n: usize,
        dst: &mut [Self],
    );
}

impl Real for f32 {
    #[inline(always)]
    fn of_f64(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: &[Self],
        at: Transpose,
        b: &[Self],
        bt: Transpose,
        beta: Self,
        c: &mut [Self],
    ) {
        kernels::sgemm(m, k, n, a, at, b, bt, beta, c);
    }
    fn spike_gradients(surrogate: Surrogate, mpr: bool, h: &[Self], g: &mut [Self]) {
        sparse::spike_gradients(surrogate, mpr, h, g);
    }
    fn sum_rows(weight: &[Self], rows: &[u32], out: &mut [Self]) {
        sparse::sum_rows(weight, rows, out);
    }
    fn add_row_pairs(
        src: &[Self],
        pairs: &[(u32, u32)],
        scales: Option<&[Self]>,
        n: usize,
        dst: &mut [Self],
    ) {
        sparse::add_row_pairs(src, pairs, scales, n, dst);
    }
}

impl Real for f64 {
    #[inline(always)]
    fn of_f64(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self as f32
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: &[Self],
        at: Transpose,
        b: &[Self],
        bt: Transpose,
        beta: Self,
        c: &mut [Self],
    ) {
        kernels::dgemm(m, k, n, a, at, b, bt, beta, c);
    }
    fn spike_gradients(surrogate: Surrogate, mpr: bool, h: &[Self], g: &mut [Self]) {
        for (gi, &hi) in g.iter_mut().zip(h) {
            *gi = surrogate.spike_gradient_f64(hi, mpr);
        }
    }
    fn sum_rows(weight: &[Self], rows: &[u32], out: &mut [Self]) {
        out.fill(0.0);
        for &r in rows {
            for (o, w) in out.iter_mut().zip(&weight[r as usize..]) {
                *o += *w;
            }
        }
    }
    fn add_row_pairs(
        src: &[Self],
        pairs: &[(u32, u32)],
        scales: Option<&[Self]>,
        n: usize,
        dst: &mut [Self],
    ) {
        for (k, &(from, to)) in pairs.iter().enumerate() {
            let s = scales.map_or(1.0, |s| s[k]);
            for (d, v) in dst[to as usize..][..n]
                .iter_mut()
                .zip(&src[from as usize..][..n])
            {
                *d += s * *v;
            }
        }
    }
}
