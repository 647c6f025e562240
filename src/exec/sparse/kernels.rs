//! The event-driven executor's inner loops: sum selected weight rows into f64 accumulators
//! held in registers, one output pixel at a time, and round each sum to f32 once.
//!
//! One call computes, for every output channel `o < cout`,
//! `out[o] = f32(f64(bias[o]) + Σ_k f64(weight[rows[k] + o]) · f64(values[k]))`, adding the
//! terms in the order of `rows`. With binary inputs there are no values and each term is the
//! weight itself: additions only.
//!
//! Why these kernels look the way they do (measured on the 2-core AVX-512 machine, see
//! BENCHMARKS.md):
//! - Output-stationary ("gather"): the accumulators for up to 128 output channels stay in
//!   registers while the active inputs of the receptive field stream past, so the only memory
//!   traffic is the weight rows. An input-stationary scatter into an f64 accumulator array
//!   reads and writes the accumulator for every row and ran at 10–14 G adds/s against 16–28
//!   G adds/s for this gather.
//! - Weights stay f32 and are widened in registers (`vcvtps2pd`): an f64 copy of the weights
//!   halves the rows that fit in cache and measured 11–21 G adds/s against 24–28 G adds/s.
//! - f64 accumulation makes every sum of f32 weights exact, so the order of the rows does not
//!   change the result; the order is still kept fixed (that of `rows`) so that real-valued
//!   inputs, whose products carry up to 48 significant bits, round exactly as the reference.
//! - Each instruction set gets its own copy of the same loop (AVX-512, AVX2 + FMA, portable),
//!   chosen once at run time: the crate is built for baseline x86-64, where the compiler may
//!   not use either extension on its own.

/// The instruction set the kernels use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F: 8 f64 lanes, 32 vector registers.
    Avx512,
    /// AVX2 and FMA: 4 f64 lanes, 16 vector registers.
    Avx2,
    /// Plain Rust that the compiler vectorises for the baseline target.
    Portable,
}

impl Isa {
    /// The best instruction set this CPU supports.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Self::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Self::Avx2;
            }
        }
        Self::Portable
    }

    /// Short name for logs and benchmark labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Avx512 => "avx512",
            Self::Avx2 => "avx2",
            Self::Portable => "portable",
        }
    }
}

/// Sums weight rows for one output pixel; see the module header.
///
/// Preconditions (checked in debug builds; callers build `rows` from validated shapes):
/// `bias.len() == out.len()`, and `rows[k] as usize + out.len() <= weight.len()` for every k.
#[inline]
pub fn sum_rows(isa: Isa, weight: &[f32], bias: &[f32], rows: &[u32], out: &mut [f32]) {
    debug_assert_eq!(bias.len(), out.len());
    debug_assert!(rows.iter().all(|&r| r as usize + out.len() <= weight.len()));
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx512` is only produced by `Isa::detect` after checking the CPU; the row
        // bounds are the documented precondition.
        Isa::Avx512 => unsafe { x86::sum_rows_avx512(weight, bias, rows, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for AVX2 + FMA.
        Isa::Avx2 => unsafe { x86::sum_rows_avx2(weight, bias, rows, out) },
        _ => portable::sum_rows(weight, bias, rows, out),
    }
}

/// [`sum_rows`] with a value per row: each term is `weight · value` (for real-valued inputs:
/// event counts, pooled spikes). `values.len() == rows.len()`.
#[inline]
pub fn sum_rows_scaled(
    isa: Isa,
    weight: &[f32],
    bias: &[f32],
    rows: &[u32],
    values: &[f32],
    out: &mut [f32],
) {
    debug_assert_eq!(bias.len(), out.len());
    debug_assert_eq!(rows.len(), values.len());
    debug_assert!(rows.iter().all(|&r| r as usize + out.len() <= weight.len()));
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see `sum_rows`.
        Isa::Avx512 => unsafe { x86::sum_rows_scaled_avx512(weight, bias, rows, values, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see `sum_rows`.
        Isa::Avx2 => unsafe { x86::sum_rows_scaled_avx2(weight, bias, rows, values, out) },
        _ => portable::sum_rows_scaled(weight, bias, rows, values, out),
    }
}

/// The loops in plain Rust: the fallback, and the definition the vector versions must match.
mod portable {
    /// Lanes per chunk: enough independent accumulators to hide the add latency.
    const CHUNK: usize = 16;

    pub(super) fn sum_rows(weight: &[f32], bias: &[f32], rows: &[u32], out: &mut [f32]) {
        let mut start = 0;
        while start < out.len() {
            let n = CHUNK.min(out.len() - start);
            let mut acc = [0f64; CHUNK];
            for (a, &b) in acc.iter_mut().zip(&bias[start..start + n]) {
                *a = f64::from(b);
            }
            for &r in rows {
                let base = r as usize + start;
                for (a, &w) in acc.iter_mut().zip(&weight[base..base + n]) {
                    *a += f64::from(w);
                }
            }
            for (o, &a) in out[start..start + n].iter_mut().zip(&acc) {
                *o = a as f32;
            }
            start += n;
        }
    }

    pub(super) fn sum_rows_scaled(
        weight: &[f32],
        bias: &[f32],
        rows: &[u32],
        values: &[f32],
        out: &mut [f32],
    ) {
        let mut start = 0;
        while start < out.len() {
            let n = CHUNK.min(out.len() - start);
            let mut acc = [0f64; CHUNK];
            for (a, &b) in acc.iter_mut().zip(&bias[start..start + n]) {
                *a = f64::from(b);
            }
            for (&r, &v) in rows.iter().zip(values) {
                let base = r as usize + start;
                let v = f64::from(v);
                for (a, &w) in acc.iter_mut().zip(&weight[base..base + n]) {
                    // The product of two f32 values is exact in f64, so this rounds once.
                    *a += f64::from(w) * v;
                }
            }
            for (o, &a) in out[start..start + n].iter_mut().zip(&acc) {
                *o = a as f32;
            }
            start += n;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! Register-blocked versions. Each processes the output channels in blocks of `N` vector
    //! accumulators (largest first), then finishes a tail shorter than one vector in scalar
    //! code. `N` is a constant so the accumulator arrays live in registers.

    use std::arch::x86_64::*;

    /// Rows are scattered over the weight tensor (one per active input channel and tap), so
    /// the hardware prefetchers cannot guess them; the first load of each row stalled on a
    /// cache miss. Fetching the row this many ahead hides that latency.
    const PREFETCH_AHEAD: usize = 4;

    /// Prefetches the `floats` weights of `rows[k]` (if any) starting at `w`.
    #[inline(always)]
    fn prefetch_row(w: *const f32, rows: &[u32], k: usize, floats: usize) {
        if let Some(&r) = rows.get(k) {
            let row = w.wrapping_add(r as usize);
            let mut line = 0;
            while line < floats {
                // SAFETY: prefetching never faults, whatever the address.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(line).cast::<i8>()) };
                line += 16;
            }
        }
    }

    /// # Safety
    /// AVX-512F must be available; rows must satisfy `sum_rows`'s bounds.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn sum_rows_avx512(
        weight: &[f32],
        bias: &[f32],
        rows: &[u32],
        out: &mut [f32],
    ) {
        let cout = out.len();
        let mut start = 0;
        // SAFETY (all blocks): every load reads weight[r + start .. r + start + 8·N] with
        // start + 8·N ≤ cout, inside the slice by the caller's bound; bias and out are read
        // and written in [start, start + 8·N) ⊂ [0, cout).
        unsafe {
            while cout - start >= 128 {
                block512::<16>(weight, bias, rows, out, start);
                start += 128;
            }
            if cout - start >= 64 {
                block512::<8>(weight, bias, rows, out, start);
                start += 64;
            }
            if cout - start >= 32 {
                block512::<4>(weight, bias, rows, out, start);
                start += 32;
            }
            if cout - start >= 16 {
                block512::<2>(weight, bias, rows, out, start);
                start += 16;
            }
            if cout - start >= 8 {
                block512::<1>(weight, bias, rows, out, start);
                start += 8;
            }
        }
        tail(weight, bias, rows, None, out, start);
    }

    #[inline(always)]
    unsafe fn block512<const N: usize>(
        weight: &[f32],
        bias: &[f32],
        rows: &[u32],
        out: &mut [f32],
        start: usize,
    ) {
        unsafe {
            let w = weight.as_ptr().add(start);
            let mut acc = [_mm512_setzero_pd(); N];
            for (i, a) in acc.iter_mut().enumerate() {
                *a = _mm512_cvtps_pd(_mm256_loadu_ps(bias.as_ptr().add(start + 8 * i)));
            }
            for (k, &r) in rows.iter().enumerate() {
                prefetch_row(w, rows, k + PREFETCH_AHEAD, 8 * N);
                let row = w.add(r as usize);
                for (i, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_add_pd(*a, _mm512_cvtps_pd(_mm256_loadu_ps(row.add(8 * i))));
                }
            }
            for (i, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(out.as_mut_ptr().add(start + 8 * i), _mm512_cvtpd_ps(*a));
            }
        }
    }

    /// # Safety
    /// As [`sum_rows_avx512`].
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn sum_rows_scaled_avx512(
        weight: &[f32],
        bias: &[f32],
        rows: &[u32],
        values: &[f32],
        out: &mut [f32],
    ) {
        let cout = out.len();
        let mut start = 0;
        // SAFETY: as in `sum_rows_avx512`.
        unsafe {
            while cout - start >= 128 {
                block512_scaled::<16>(weight, bias, rows, values, out, start);
                start += 128;
            }
            if cout - start >= 64 {
                block512_scaled::<8>(weight, bias, rows, values, out, start);
                start += 64;
            }
            if cout - start >= 32 {
                block512_scaled::<4>(weight, bias, rows, values, out, start);
                start += 32;
            }
            if cout - start >= 16 {
                block512_scaled::<2>(weight, bias, rows, values, out, start);
                start += 16;
            }
            if cout - start >= 8 {
                block512_scaled::<1>(weight, bias, rows, values, out, start);
                start += 8;
            }
        }
        tail(weight, bias, rows, Some(values), out, start);
    }

    #[inline(always)]
    unsafe fn block512_scaled<const N: usize>(
        weight: &[f32],
        bias: &[f32],
        rows: &[u32],
        values: &[f32],
        out: &mut [f32],
        start: usize,
    ) {
        unsafe {
            let w = weight.as_ptr().add(start);
            let mut acc = [_mm512_setzero_pd(); N];
            for (i, a) in acc.iter_mut().enumerate() {
                *a = _mm512_cvtps_pd(_mm256_loadu_ps(bias.as_ptr().add(start + 8 * i)));
            }
            for (k, (&r, &v)) in rows.iter().zip(values).enumerate() {
                prefetch_row(w, rows, k + PREFETCH_AHEAD, 8 * N);
                let row = w.add(r as usize);
                let v = _mm512_set1_pd(f64::from(v));
                for (i, a) in acc.iter_mut().enumerate() {
                    // fma rounds once; the f32×f32 product is exact in f64, so this equals
                    // the reference's separate multiply and add.
                    *a = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(row.add(8 * i))), v, *a);
                }
            }
            for (i, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(out.as_mut_ptr().add(start + 8 * i), _mm512_cvtpd_ps(*a));
            }
        }
    }

    /// # Safety
    /// AVX2 and FMA must be available; rows as in [`sum_rows_avx512`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sum_rows_avx2(
        weight: &[f32],
        bias: &[f32],
        rows: &[u32],
        out: &mut [f32],
    ) {
        let cout = out.len();
        let mut start = 0;
        // SAFETY: as in `sum_rows_avx512`, with 4 lanes per accumulator.
        unsafe {
            while cout - start >= 48 {
                block256::<12>(weight, bias, rows, out, start);
                start += 48;
            }
            if cout - start >= 32 {
                block256::<8>(weight, bias, rows, out, start);
                start += 32;
            }
            if cout - start >= 16 {
                block256::<4>(weight, bias, rows, out, start);
                start += 16;
            }
            while cout - start >= 4 {
                block256::<1>(weight, bias, rows, out, start);
                start += 4;
            }
        }
        tail(weight, bias, rows, None, out, start);
    }

    #[inline(always)]
    unsafe fn block256<const N: usize>(
        weight: &[f32],
        bias: &[f32],
        rows: &[u32],
        out: &mut [f32],
        start: usize,
    ) {
        unsafe {
            let w = weight.as_ptr().add(start);
            let mut acc = [_mm256_setzero_pd(); N];
            for (i, a) in acc.iter_mut().enumerate() {
                *a = _mm256_cvtps_pd(_mm_loadu_ps(bias.as_ptr().add(start + 4 * i)));
            }
            for (k, &r) in rows.iter().enumerate() {
                prefetch_row(w, rows, k + PREFETCH_AHEAD, 4 * N);
                let row = w.add(r as usize);
                for (i, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_add_pd(*a, _mm256_cvtps_pd(_mm_loadu_ps(row.add(4 * i))));
                }
            }
            for (i, a) in acc.iter().enumerate() {
                _mm_storeu_ps(out.as_mut_ptr().add(start + 4 * i), _mm256_cvtpd_ps(*a));
            }
        }
    }

    /// # Safety
    /// As [`sum_rows_avx2`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sum_rows_scaled_avx2(
        weight: &[f32],
        bias: &[f32],
        rows: &[u32],
        values: &[f32],
        out: &mut [f32],
    ) {
        let cout = out.len();
        let mut start = 0;
        // SAFETY: as in `sum_rows_avx2`.
        unsafe {
            while cout - start >= 48 {
                block256_scaled::<12>(weight, bias, rows, values, out, start);
                start += 48;
            }
            if cout - start >= 32 {
                block256_scaled::<8>(weight, bias, rows, values, out, start);
                start += 32;
            }
            if cout - start >= 16 {
                block256_scaled::<4>(weight, bias, rows, values, out, start);
                start += 16;
            }
            while cout - start >= 4 {
                block256_scaled::<1>(weight, bias, rows, values, out, start);
                start += 4;
            }
        }
        tail(weight, bias, rows, Some(values), out, start);
    }

    #[inline(always)]
    unsafe fn block256_scaled<const N: usize>(
        weight: &[f32],
        bias: &[f32],
        rows: &[u32],
        values: &[f32],
        out: &mut [f32],
        start: usize,
    ) {
        unsafe {
            let w = weight.as_ptr().add(start);
            let mut acc = [_mm256_setzero_pd(); N];
            for (i, a) in acc.iter_mut().enumerate() {
                *a = _mm256_cvtps_pd(_mm_loadu_ps(bias.as_ptr().add(start + 4 * i)));
            }
            for (k, (&r, &v)) in rows.iter().zip(values).enumerate() {
                prefetch_row(w, rows, k + PREFETCH_AHEAD, 4 * N);
                let row = w.add(r as usize);
                let v = _mm256_set1_pd(f64::from(v));
                for (i, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(row.add(4 * i))), v, *a);
                }
            }
            for (i, a) in acc.iter().enumerate() {
                _mm_storeu_ps(out.as_mut_ptr().add(start + 4 * i), _mm256_cvtpd_ps(*a));
            }
        }
    }

    /// The last `out.len() − start` (< one vector) channels, in scalar f64.
    #[inline(always)]
    fn tail(
        weight: &[f32],
        bias: &[f32],
        rows: &[u32],
        values: Option<&[f32]>,
        out: &mut [f32],
        start: usize,
    ) {
        for o in start..out.len() {
            let mut acc = f64::from(bias[o]);
            match values {
                None => {
                    for &r in rows {
                        acc += f64::from(weight[r as usize + o]);
                    }
                }
                Some(values) => {
                    for (&r, &v) in rows.iter().zip(values) {
                        acc += f64::from(weight[r as usize + o]) * f64::from(v);
                    }
                }
            }
            out[o] = acc as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all_isas() -> Vec<Isa> {
        let best = Isa::detect();
        let mut isas = vec![Isa::Portable];
        if best == Isa::Avx512 {
            isas.push(Isa::Avx512);
        }
        if matches!(best, Isa::Avx512 | Isa::Avx2) {
            // Every AVX-512 CPU here also has AVX2 + FMA.
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                isas.push(Isa::Avx2);
            }
        }
        isas
    }

    /// The definition, one output at a time, in f64.
    fn naive(weight: &[f32], bias: &[f32], rows: &[u32], values: Option<&[f32]>) -> Vec<f32> {
        (0..bias.len())
            .map(|o| {
                let mut acc = f64::from(bias[o]);
                for (k, &r) in rows.iter().enumerate() {
                    let v = values.map_or(1.0, |v| f64::from(v[k]));
                    acc += f64::from(weight[r as usize + o]) * v;
                }
                acc as f32
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Every instruction set gives the definition's bits, for every channel count
        /// (covering each block size and the scalar tail) and with or without values.
        #[test]
        fn every_isa_matches_the_definition(
            cout in 1usize..300,
            nrows in 0usize..40,
            seed in any::<u64>(),
        ) {
            use rand::{RngExt, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let in_rows = 7usize;
            let weight: Vec<f32> = (0..in_rows * cout).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let bias: Vec<f32> = (0..cout).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let rows: Vec<u32> = (0..nrows).map(|_| (rng.random_range(0..in_rows) * cout) as u32).collect();
            let values: Vec<f32> = (0..nrows).map(|_| rng.random_range(0.0f32..4.0)).collect();
            let expect = naive(&weight, &bias, &rows, None);
            let expect_scaled = naive(&weight, &bias, &rows, Some(&values));
            for isa in all_isas() {
                let mut out = vec![f32::NAN; cout];
                sum_rows(isa, &weight, &bias, &rows, &mut out);
                prop_assert_eq!(&out, &expect, "{}", isa.name());
                sum_rows_scaled(isa, &weight, &bias, &rows, &values, &mut out);
                prop_assert_eq!(&out, &expect_scaled, "{} scaled", isa.name());
            }
        }
    }
}
