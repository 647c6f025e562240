//! Sums of selected weight rows in f64: the inner loop of the event-driven executor, and of
//! every sparse product the trainer will do (a gradient summed over active positions only).
//!
//! One call computes, for every output channel `o < cout`,
//! `out[o] = f32(f64(bias[o]) + Σ_k f64(weight[rows[k] + o]) · f64(values[k]))`, adding the
//! terms in the order of `rows`. With binary inputs there are no values and each term is the
//! weight itself: additions only.
//!
//! # One body, three instruction sets, one twin
//!
//! The loop is written once, generic over [`Lanes`] (a vector of f64 accumulators that f32
//! weights are widened into), and instantiated per instruction set inside a
//! `#[target_feature]` entry point, so the compiler may use AVX-512 or AVX2 there even though
//! the crate is built for baseline x86-64. [`Isa::detect`] picks the best one the CPU has, once;
//! an [`Isa`] can only be made for a CPU that supports it, so the dispatch is sound.
//! [`sum_rows_scalar`] is the plain definition, one output at a time: the fallback's oracle and
//! what the tests hold every instruction set to, bit for bit.
//!
//! Why the loop looks the way it does (measured, see BENCHMARKS.md):
//! - Output-stationary: the accumulators of up to 128 output channels stay in registers while
//!   the rows stream past, so the only memory traffic is the weight rows. An input-stationary
//!   scatter into an f64 array reads and writes the accumulator for every row, and ran at
//!   half the speed.
//! - Weights stay f32 and are widened in registers: an f64 copy halves the rows that fit in
//!   cache.
//! - f64 accumulation makes every sum of f32 weights exact, so the order of the rows does not
//!   change the result; the order is still kept fixed (that of `rows`) so that real-valued
//!   inputs, whose products carry up to 48 significant bits, round exactly as the reference.
//! - Rows are scattered over the weight tensor, so the hardware prefetchers cannot guess them:
//!   each row is prefetched a few rows ahead.

/// Which code path the row sums use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Avx512,
    Avx2,
    Portable,
}

/// An instruction set the kernels can use on this CPU. Made only by [`Isa::detect`],
/// [`Isa::portable`] or [`Isa::available`], so holding one proves the CPU supports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Isa(Kind);

impl Isa {
    /// The best instruction set this CPU supports.
    pub fn detect() -> Self {
        Self::available()[0]
    }

    /// Plain Rust that the compiler vectorises for the baseline target (always available).
    pub fn portable() -> Self {
        Self(Kind::Portable)
    }

    /// Every instruction set this CPU supports, best first (the portable one last).
    pub fn available() -> Vec<Self> {
        let mut isas = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                isas.push(Self(Kind::Avx512));
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                isas.push(Self(Kind::Avx2));
            }
        }
        isas.push(Self(Kind::Portable));
        isas
    }

    /// The instruction set called `name` (`avx512`, `avx2`, `portable`), if this CPU has it.
    pub fn named(name: &str) -> Option<Self> {
        Self::available().into_iter().find(|i| i.name() == name)
    }

    /// Short name for logs and benchmark labels.
    pub fn name(self) -> &'static str {
        match self.0 {
            Kind::Avx512 => "avx512",
            Kind::Avx2 => "avx2",
            Kind::Portable => "portable",
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
    match isa.0 {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Isa` of this kind exists only if the CPU has AVX-512F (see `Isa`); the
        // row bounds are the documented precondition.
        Kind::Avx512 => unsafe { x86::avx512::<false>(weight, bias, rows, &[], out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for AVX2 + FMA.
        Kind::Avx2 => unsafe { x86::avx2::<false>(weight, bias, rows, &[], out) },
        // SAFETY: the portable lanes use no CPU extension; bounds as above.
        _ => unsafe { body::<Portable, false>(weight, bias, rows, &[], out) },
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
    match isa.0 {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see `sum_rows`.
        Kind::Avx512 => unsafe { x86::avx512::<true>(weight, bias, rows, values, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see `sum_rows`.
        Kind::Avx2 => unsafe { x86::avx2::<true>(weight, bias, rows, values, out) },
        // SAFETY: see `sum_rows`.
        _ => unsafe { body::<Portable, true>(weight, bias, rows, values, out) },
    }
}

/// The definition, one output channel at a time: `values` None for binary inputs. What every
/// instruction set must equal bit for bit.
pub fn sum_rows_scalar(
    weight: &[f32],
    bias: &[f32],
    rows: &[u32],
    values: Option<&[f32]>,
    out: &mut [f32],
) {
    for (o, (out, &b)) in out.iter_mut().zip(bias).enumerate() {
        let mut acc = f64::from(b);
        match values {
            None => {
                for &r in rows {
                    acc += f64::from(weight[r as usize + o]);
                }
            }
            Some(values) => {
                for (&r, &v) in rows.iter().zip(values) {
                    // The product of two f32 is exact in f64, so this rounds once per term,
                    // as a fused multiply-add does.
                    acc += f64::from(weight[r as usize + o]) * f64::from(v);
                }
            }
        }
        *out = acc as f32;
    }
}

/// A vector of f64 accumulators and the few operations the row sum needs. Implementations are
/// zero-sized; their methods are `unsafe` because they read and write raw pointers (and, for
/// the x86 ones, need their instruction set).
pub trait Lanes {
    /// f64 lanes per vector.
    const LANES: usize;
    /// The largest block of vectors the loop keeps in registers (the register file's size).
    const MAX_BLOCK: usize;
    /// One vector.
    type V: Copy;

    /// `LANES` f32 at `p`, widened to f64.
    ///
    /// # Safety
    /// `p..p + LANES` must be readable (and the instruction set available).
    unsafe fn load_widen(p: *const f32) -> Self::V;
    /// Every lane `v`.
    ///
    /// # Safety
    /// The instruction set must be available.
    unsafe fn splat(v: f64) -> Self::V;
    /// `a + b`.
    ///
    /// # Safety
    /// The instruction set must be available.
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// `a · b + c`, rounded once.
    ///
    /// # Safety
    /// The instruction set must be available.
    unsafe fn mul_add(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// Rounds to f32 and stores `LANES` values at `p`.
    ///
    /// # Safety
    /// `p..p + LANES` must be writable (and the instruction set available).
    unsafe fn store_narrow(p: *mut f32, v: Self::V);
}

/// How many rows ahead each row is prefetched: enough to hide a miss to L3.
const PREFETCH_AHEAD: usize = 4;

/// Prefetches `floats` weights of `rows[k]`, if there is such a row.
#[inline(always)]
fn prefetch_row(w: *const f32, rows: &[u32], k: usize, floats: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(&r) = rows.get(k) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let row = w.wrapping_add(r as usize);
        let mut line = 0;
        while line < floats {
            // SAFETY: prefetching never faults, whatever the address; SSE is baseline x86-64.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(line).cast::<i8>()) };
            line += 16;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (w, rows, k, floats);
}

/// The row sum: output channels in blocks of `B` vectors (the largest that fits first), then
/// a scalar tail shorter than one vector. `SCALED` selects weight·value terms.
///
/// # Safety
/// `L`'s instruction set must be available; the bounds of [`sum_rows`] must hold, and
/// `values.len() >= rows.len()` when `SCALED`.
#[inline(always)]
unsafe fn body<L: Lanes, const SCALED: bool>(
    weight: &[f32],
    bias: &[f32],
    rows: &[u32],
    values: &[f32],
    out: &mut [f32],
) {
    let cout = out.len();
    let n = L::LANES;
    let mut start = 0;
    // SAFETY (every block): a block of B vectors reads weight[r + start .. r + start + B·n]
    // and bias/out in [start, start + B·n), with start + B·n ≤ cout: inside the slices by the
    // caller's bounds.
    unsafe {
        if L::MAX_BLOCK >= 16 {
            while cout - start >= 16 * n {
                block::<L, 16, SCALED>(weight, bias, rows, values, out, start);
                start += 16 * n;
            }
        } else {
            while cout - start >= 12 * n {
                block::<L, 12, SCALED>(weight, bias, rows, values, out, start);
                start += 12 * n;
            }
        }
        if cout - start >= 8 * n {
            block::<L, 8, SCALED>(weight, bias, rows, values, out, start);
            start += 8 * n;
        }
        if cout - start >= 4 * n {
            block::<L, 4, SCALED>(weight, bias, rows, values, out, start);
            start += 4 * n;
        }
        if cout - start >= 2 * n {
            block::<L, 2, SCALED>(weight, bias, rows, values, out, start);
            start += 2 * n;
        }
        while cout - start >= n {
            block::<L, 1, SCALED>(weight, bias, rows, values, out, start);
            start += n;
        }
    }
    if start < cout {
        let values = SCALED.then_some(values);
        sum_rows_scalar(
            &weight[start.min(weight.len())..],
            &bias[start..],
            rows,
            values,
            &mut out[start..],
        );
    }
}

/// `B` vectors of accumulators starting at output channel `start`; `B` is a constant so the
/// accumulator array lives in registers.
///
/// # Safety
/// As [`body`], with `start + B·LANES ≤ out.len()`.
#[inline(always)]
unsafe fn block<L: Lanes, const B: usize, const SCALED: bool>(
    weight: &[f32],
    bias: &[f32],
    rows: &[u32],
    values: &[f32],
    out: &mut [f32],
    start: usize,
) {
    let n = L::LANES;
    // SAFETY: see `body`; `rows[k] + start + B·n ≤ weight.len()` by the caller's bound.
    unsafe {
        let w = weight.as_ptr().add(start);
        let mut acc = [L::splat(0.0); B];
        for (i, a) in acc.iter_mut().enumerate() {
            *a = L::load_widen(bias.as_ptr().add(start + n * i));
        }
        for (k, &r) in rows.iter().enumerate() {
            prefetch_row(w, rows, k + PREFETCH_AHEAD, n * B);
            let row = w.add(r as usize);
            if SCALED {
                let v = L::splat(f64::from(*values.get_unchecked(k)));
                for (i, a) in acc.iter_mut().enumerate() {
                    // The f32×f32 product is exact in f64, so the fused multiply-add equals
                    // the definition's separate multiply and add.
                    *a = L::mul_add(L::load_widen(row.add(n * i)), v, *a);
                }
            } else {
                for (i, a) in acc.iter_mut().enumerate() {
                    *a = L::add(*a, L::load_widen(row.add(n * i)));
                }
            }
        }
        for (i, a) in acc.iter().enumerate() {
            L::store_narrow(out.as_mut_ptr().add(start + n * i), *a);
        }
    }
}

/// Four f64 lanes in plain Rust, which the compiler maps to whatever vectors the target has.
struct Portable;

impl Lanes for Portable {
    const LANES: usize = 4;
    const MAX_BLOCK: usize = 12;
    type V = [f64; 4];

    #[inline(always)]
    unsafe fn load_widen(p: *const f32) -> Self::V {
        // SAFETY: the caller guarantees 4 readable floats.
        let x = unsafe { p.cast::<[f32; 4]>().read_unaligned() };
        x.map(f64::from)
    }
    #[inline(always)]
    unsafe fn splat(v: f64) -> Self::V {
        [v; 4]
    }
    #[inline(always)]
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
        [a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]]
    }
    #[inline(always)]
    unsafe fn mul_add(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        // Separate multiply and add: the product is exact in f64, so this equals a fused one
        // and the compiler needs no FMA on the baseline target.
        [
            a[0] * b[0] + c[0],
            a[1] * b[1] + c[1],
            a[2] * b[2] + c[2],
            a[3] * b[3] + c[3],
        ]
    }
    #[inline(always)]
    unsafe fn store_narrow(p: *mut f32, v: Self::V) {
        // SAFETY: the caller guarantees 4 writable floats.
        unsafe { p.cast::<[f32; 4]>().write_unaligned(v.map(|x| x as f32)) }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The x86 lanes and their entry points. The generic body is inlined into each entry
    //! point, whose `#[target_feature]` lets the compiler use the extension's instructions.

    use std::arch::x86_64::*;

    use super::{Lanes, body};

    /// AVX-512F: 8 f64 lanes, 32 vector registers (blocks of 16 vectors).
    pub(super) struct Avx512;

    impl Lanes for Avx512 {
        const LANES: usize = 8;
        const MAX_BLOCK: usize = 16;
        type V = __m512d;

        #[inline(always)]
        unsafe fn load_widen(p: *const f32) -> __m512d {
            // SAFETY: the caller guarantees 8 readable floats and AVX-512F.
            unsafe { _mm512_cvtps_pd(_mm256_loadu_ps(p)) }
        }
        #[inline(always)]
        unsafe fn splat(v: f64) -> __m512d {
            // SAFETY: the caller guarantees AVX-512F.
            unsafe { _mm512_set1_pd(v) }
        }
        #[inline(always)]
        unsafe fn add(a: __m512d, b: __m512d) -> __m512d {
            // SAFETY: the caller guarantees AVX-512F.
            unsafe { _mm512_add_pd(a, b) }
        }
        #[inline(always)]
        unsafe fn mul_add(a: __m512d, b: __m512d, c: __m512d) -> __m512d {
            // SAFETY: the caller guarantees AVX-512F.
            unsafe { _mm512_fmadd_pd(a, b, c) }
        }
        #[inline(always)]
        unsafe fn store_narrow(p: *mut f32, v: __m512d) {
            // SAFETY: the caller guarantees 8 writable floats and AVX-512F.
            unsafe { _mm256_storeu_ps(p, _mm512_cvtpd_ps(v)) }
        }
    }

    /// AVX2 + FMA: 4 f64 lanes, 16 vector registers (blocks of 12 vectors).
    pub(super) struct Avx2;

    impl Lanes for Avx2 {
        const LANES: usize = 4;
        const MAX_BLOCK: usize = 12;
        type V = __m256d;

        #[inline(always)]
        unsafe fn load_widen(p: *const f32) -> __m256d {
            // SAFETY: the caller guarantees 4 readable floats and AVX2.
            unsafe { _mm256_cvtps_pd(_mm_loadu_ps(p)) }
        }
        #[inline(always)]
        unsafe fn splat(v: f64) -> __m256d {
            // SAFETY: the caller guarantees AVX.
            unsafe { _mm256_set1_pd(v) }
        }
        #[inline(always)]
        unsafe fn add(a: __m256d, b: __m256d) -> __m256d {
            // SAFETY: the caller guarantees AVX.
            unsafe { _mm256_add_pd(a, b) }
        }
        #[inline(always)]
        unsafe fn mul_add(a: __m256d, b: __m256d, c: __m256d) -> __m256d {
            // SAFETY: the caller guarantees FMA.
            unsafe { _mm256_fmadd_pd(a, b, c) }
        }
        #[inline(always)]
        unsafe fn store_narrow(p: *mut f32, v: __m256d) {
            // SAFETY: the caller guarantees 4 writable floats and AVX.
            unsafe { _mm_storeu_ps(p, _mm256_cvtpd_ps(v)) }
        }
    }

    /// # Safety
    /// AVX-512F must be available; the bounds of [`super::sum_rows`] must hold.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512<const SCALED: bool>(
        weight: &[f32],
        bias: &[f32],
        rows: &[u32],
        values: &[f32],
        out: &mut [f32],
    ) {
        // SAFETY: forwarded from the caller.
        unsafe { body::<Avx512, SCALED>(weight, bias, rows, values, out) }
    }

    /// # Safety
    /// AVX2 and FMA must be available; the bounds of [`super::sum_rows`] must hold.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2<const SCALED: bool>(
        weight: &[f32],
        bias: &[f32],
        rows: &[u32],
        values: &[f32],
        out: &mut [f32],
    ) {
        // SAFETY: forwarded from the caller.
        unsafe { body::<Avx2, SCALED>(weight, bias, rows, values, out) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn this_machine_runs_every_vector_path() {
        // The development and CI machines have AVX-512; say so loudly if a run would skip
        // the AVX-512 and AVX2 paths rather than pass without testing them.
        let names: Vec<&str> = Isa::available().iter().map(|i| i.name()).collect();
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            assert_eq!(names, ["avx512", "avx2", "portable"]);
        }
        assert_eq!(names.last(), Some(&"portable"));
        assert_eq!(Isa::named("portable"), Some(Isa::portable()));
        assert_eq!(Isa::named("sse9"), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Every instruction set gives the scalar twin's bits, for every channel count
        /// (covering each block size and the tail) and with or without values.
        #[test]
        fn every_isa_matches_the_scalar_twin(
            cout in 1usize..300,
            nrows in 0usize..40,
            seed in any::<u64>(),
        ) {
            use rand::{RngExt, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let in_rows = 7usize;
            let weight: Vec<f32> =
                (0..in_rows * cout).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let bias: Vec<f32> = (0..cout).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let rows: Vec<u32> =
                (0..nrows).map(|_| (rng.random_range(0..in_rows) * cout) as u32).collect();
            let values: Vec<f32> = (0..nrows).map(|_| rng.random_range(0.0f32..4.0)).collect();
            let mut expect = vec![0.0; cout];
            sum_rows_scalar(&weight, &bias, &rows, None, &mut expect);
            let mut expect_scaled = vec![0.0; cout];
            sum_rows_scalar(&weight, &bias, &rows, Some(&values), &mut expect_scaled);
            for isa in Isa::available() {
                let mut out = vec![f32::NAN; cout];
                sum_rows(isa, &weight, &bias, &rows, &mut out);
                prop_assert_eq!(&out, &expect, "{}", isa.name());
                let mut out = vec![f32::NAN; cout];
                sum_rows_scaled(isa, &weight, &bias, &rows, &values, &mut out);
                prop_assert_eq!(&out, &expect_scaled, "{} scaled", isa.name());
            }
        }
    }

    /// Sums that f32 accumulation would get wrong: 1 + 3·(ε/4) is 1 + ε after one rounding,
    /// but 1 when rounded after every term. Every path must keep the small terms.
    #[test]
    fn small_terms_survive_in_every_isa() {
        let cout = 37;
        let mut weight = vec![f32::EPSILON / 4.0; 4 * cout];
        weight[..cout].fill(1.0);
        let bias = vec![0.0f32; cout];
        let rows: Vec<u32> = (0..4).map(|r| (r * cout) as u32).collect();
        for isa in Isa::available() {
            let mut out = vec![0.0; cout];
            sum_rows(isa, &weight, &bias, &rows, &mut out);
            assert_eq!(out, vec![1.0 + f32::EPSILON; cout], "{}", isa.name());
        }
    }
}
