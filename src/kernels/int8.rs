//! Integer kernels of int8 models: sums of selected int8 weight rows into i32 (the gather of
//! the event-driven executor and the reference's definition), and an int8 GEMM over 0/1
//! im2col rows (the dense executor).
//!
//! Integer sums are exact in every order, so none of these fixes an order for correctness:
//! every executor gets the same i32 whatever it does, as long as it sums the same terms. The
//! i32 cannot overflow: a node's fan-in is at most `snn::network::MAX_INT8_FAN_IN`, so a sum
//! is at most 127 × that ≤ 2^24 in magnitude (tests/it/int8.rs checks the worst case).
//!
//! # One body, three instruction sets
//!
//! Each loop is written once, as plain Rust over contiguous rows (an i8 row widened and added
//! into Cout i32 accumulators), and compiled three times: inside `#[target_feature]` entry
//! points for AVX-512 (F + BW: byte widening on 512-bit vectors) and AVX2, and for the
//! baseline target. [`Int8Isa::detect`] picks the best one this CPU has, once; an
//! [`Int8Isa`] can only be made for a CPU that has it, so the dispatch is sound. Integer sums
//! are exact, so every instruction set gives the same i32 as the scalar definitions
//! ([`sum_rows_i8_scalar`], [`igemm_scalar`]), which the tests check on every set this CPU
//! has.
//!
//! The GEMM has one more path, AVX-512 VNNI, where the CPU has it: `vpdpbusd` makes four
//! u8 × i8 products per i32 lane and instruction, which needs the weights packed four rows at
//! a time, so it is its own loop (see `x86::igemm_vnni`). The row sums of the event-driven
//! executor add one row per spike and gain nothing from it.

use std::sync::OnceLock;

/// Which compilation of the integer loops runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Level {
    Avx512Vnni,
    Avx512,
    Avx2,
    Portable,
}

/// An instruction set the integer kernels can use on this CPU. Made only by
/// [`Int8Isa::detect`], [`Int8Isa::available`] or [`Int8Isa::portable`], so holding one proves
/// the CPU supports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Int8Isa(Level);

impl Int8Isa {
    /// The best instruction set this CPU supports (detected once per process).
    pub fn detect() -> Self {
        static BEST: OnceLock<Int8Isa> = OnceLock::new();
        *BEST.get_or_init(|| Self::available()[0])
    }

    /// The baseline compilation (always available).
    pub fn portable() -> Self {
        Self(Level::Portable)
    }

    /// Every instruction set this CPU supports, best first (the portable one last).
    pub fn available() -> Vec<Self> {
        let mut isas = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
            {
                if std::arch::is_x86_feature_detected!("avx512vnni") {
                    isas.push(Self(Level::Avx512Vnni));
                }
                isas.push(Self(Level::Avx512));
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                isas.push(Self(Level::Avx2));
            }
        }
        isas.push(Self(Level::Portable));
        isas
    }

    /// Short name for logs and benchmark labels (`avx512-vnni`, `avx512`, `avx2`, `portable`).
    pub fn name(self) -> &'static str {
        match self.0 {
            Level::Avx512Vnni => "avx512-vnni",
            Level::Avx512 => "avx512",
            Level::Avx2 => "avx2",
            Level::Portable => "portable",
        }
    }
}

/// `out[o] = Σ_k weight[rows[k] + o]` for every `o < out.len()`: the sum of the int8 rows
/// that the spiking inputs select, with the best instruction set of this CPU.
///
/// Precondition (checked in debug builds; callers build `rows` from validated shapes):
/// `rows[k] as usize + out.len() <= weight.len()` for every k (a row out of bounds panics).
#[inline]
pub fn sum_rows_i8(weight: &[i8], rows: &[u32], out: &mut [i32]) {
    sum_rows_i8_with(Int8Isa::detect(), weight, rows, out);
}

/// [`sum_rows_i8`] with a given instruction set.
#[inline]
pub fn sum_rows_i8_with(isa: Int8Isa, weight: &[i8], rows: &[u32], out: &mut [i32]) {
    debug_assert!(rows.iter().all(|&r| r as usize + out.len() <= weight.len()));
    match isa.0 {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Int8Isa` of these levels exists only if the CPU has AVX-512F and BW.
        Level::Avx512 | Level::Avx512Vnni => unsafe { x86::rows_avx512(weight, rows, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for AVX2.
        Level::Avx2 => unsafe { x86::rows_avx2(weight, rows, out) },
        _ => rows_body(weight, rows, out),
    }
}

/// The row sum, compiled into each instruction set's entry point.
#[inline(always)]
fn rows_body(weight: &[i8], rows: &[u32], out: &mut [i32]) {
    let cout = out.len();
    out.fill(0);
    for &r in rows {
        let row = &weight[r as usize..][..cout];
        for (a, &w) in out.iter_mut().zip(row) {
            *a += i32::from(w);
        }
    }
}

/// The integer GEMM, compiled into each instruction set's entry point.
#[inline(always)]
fn igemm_body(m: usize, k: usize, n: usize, a: &[u8], b: &[i8], c: &mut [i32]) {
    for (a_row, c_row) in a
        .chunks_exact(k.max(1))
        .zip(c.chunks_exact_mut(n.max(1)))
        .take(m)
    {
        for (&x, b_row) in a_row.iter().zip(b.chunks_exact(n.max(1))) {
            let x = i32::from(x);
            for (acc, &w) in c_row.iter_mut().zip(b_row) {
                *acc += x * i32::from(w);
            }
        }
    }
}

thread_local! {
    /// The VNNI GEMM's weights packed in groups of four rows (reused from call to call).
    static PACKED: std::cell::RefCell<Vec<i8>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m512i, _mm512_dpbusd_epi32, _mm512_loadu_si512, _mm512_mask_storeu_epi32,
        _mm512_maskz_loadu_epi8, _mm512_maskz_loadu_epi32, _mm512_set1_epi32, _mm512_setzero_si512,
        _mm512_storeu_si512,
    };

    use super::{igemm_body, rows_body};

    /// i32 lanes of one 512-bit vector.
    const LANES: usize = 16;

    /// The GEMM with AVX-512 VNNI: `vpdpbusd` adds four u8 × i8 products into each of 16
    /// i32 lanes per instruction. `b` is first packed into `packed` as `[k/4][n][4]` (four
    /// consecutive rows of a column side by side, zero rows past k), so one 64-byte load
    /// holds the four weights of 16 columns; the four inputs of a group are broadcast. Four
    /// vectors of columns are accumulated at once so consecutive `vpdpbusd`s do not wait for
    /// each other. Products are exact and so are the i32 sums, so this equals the scalar GEMM.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, AVX-512BW and AVX-512 VNNI; `a`, `b`, `c` hold at least
    /// m·k, k·n and m·n values.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn igemm_vnni(
        m: usize,
        k: usize,
        n: usize,
        a: &[u8],
        b: &[i8],
        c: &mut [i32],
        packed: &mut Vec<i8>,
    ) {
        let groups = k.div_ceil(4);
        packed.clear();
        packed.resize(groups * n * 4, 0);
        for (l, row) in b.chunks_exact(n.max(1)).take(k).enumerate() {
            let (g, r) = (l / 4, l % 4);
            for (j, &w) in row.iter().enumerate() {
                packed[(g * n + j) * 4 + r] = w;
            }
        }
        for i in 0..m {
            let a_row = &a[i * k..][..k];
            let word = |g: usize| -> i32 {
                let mut bytes = [0u8; 4];
                let first = 4 * g;
                let len = (k - first).min(4);
                bytes[..len].copy_from_slice(&a_row[first..first + len]);
                i32::from_le_bytes(bytes)
            };
            let c_row = c[i * n..][..n].as_mut_ptr();
            let mut j = 0;
            // SAFETY (all blocks): columns j..j + width lie inside c's row i, and packed
            // group g's columns j..j + width at (g·n + j)·4 .. + 4·width inside `packed`;
            // masked loads and stores touch only the columns below n.
            unsafe {
                while n - j >= 4 * LANES {
                    let mut acc: [__m512i; 4] = [_mm512_setzero_si512(); 4];
                    for (v, acc) in acc.iter_mut().enumerate() {
                        *acc = _mm512_loadu_si512(c_row.add(j + v * LANES).cast());
                    }
                    for g in 0..groups {
                        let x = _mm512_set1_epi32(word(g));
                        let w = packed.as_ptr().add((g * n + j) * 4);
                        for (v, acc) in acc.iter_mut().enumerate() {
                            let wv = _mm512_loadu_si512(w.add(v * 4 * LANES).cast());
                            *acc = _mm512_dpbusd_epi32(*acc, x, wv);
                        }
                    }
                    for (v, acc) in acc.iter().enumerate() {
                        _mm512_storeu_si512(c_row.add(j + v * LANES).cast(), *acc);
                    }
                    j += 4 * LANES;
                }
                while j < n {
                    let width = (n - j).min(LANES);
                    let lanes: u16 = if width == LANES {
                        u16::MAX
                    } else {
                        (1 << width) - 1
                    };
                    let bytes: u64 = if width == LANES {
                        u64::MAX
                    } else {
                        (1 << (4 * width)) - 1
                    };
                    let mut acc = _mm512_maskz_loadu_epi32(lanes, c_row.add(j));
                    for g in 0..groups {
                        let x = _mm512_set1_epi32(word(g));
                        let wv =
                            _mm512_maskz_loadu_epi8(bytes, packed.as_ptr().add((g * n + j) * 4));
                        acc = _mm512_dpbusd_epi32(acc, x, wv);
                    }
                    _mm512_mask_storeu_epi32(c_row.add(j), lanes, acc);
                    j += width;
                }
            }
        }
    }

    /// # Safety
    /// The CPU must have AVX-512F and AVX-512BW.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn rows_avx512(weight: &[i8], rows: &[u32], out: &mut [i32]) {
        rows_body(weight, rows, out);
    }

    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn rows_avx2(weight: &[i8], rows: &[u32], out: &mut [i32]) {
        rows_body(weight, rows, out);
    }

    /// # Safety
    /// The CPU must have AVX-512F and AVX-512BW.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn igemm_avx512(
        m: usize,
        k: usize,
        n: usize,
        a: &[u8],
        b: &[i8],
        c: &mut [i32],
    ) {
        igemm_body(m, k, n, a, b, c);
    }

    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn igemm_avx2(
        m: usize,
        k: usize,
        n: usize,
        a: &[u8],
        b: &[i8],
        c: &mut [i32],
    ) {
        igemm_body(m, k, n, a, b, c);
    }
}

/// The definition of [`sum_rows_i8`], one output at a time (what the tests hold it to).
pub fn sum_rows_i8_scalar(weight: &[i8], rows: &[u32], out: &mut [i32]) {
    for (o, out) in out.iter_mut().enumerate() {
        *out = rows
            .iter()
            .map(|&r| i32::from(weight[r as usize + o]))
            .sum();
    }
}

/// `c[m×n] += a[m×k] · b[k×n]`, row-major, with `a` the 0/1 im2col matrix of binary spikes
/// and `b` int8 weights, with the best instruction set of this CPU. Every product is made (the
/// dense executor's cost does not depend on the input); rows of `b` stream past one row of
/// `c` at a time.
pub fn igemm(m: usize, k: usize, n: usize, a: &[u8], b: &[i8], c: &mut [i32]) {
    igemm_with(Int8Isa::detect(), m, k, n, a, b, c);
}

/// [`igemm`] with a given instruction set.
pub fn igemm_with(isa: Int8Isa, m: usize, k: usize, n: usize, a: &[u8], b: &[i8], c: &mut [i32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    match isa.0 {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Int8Isa` of this level exists only if the CPU has AVX-512F, BW and
        // VNNI; `a` is 0/1 by the documented contract (any u8 is exact in vpdpbusd anyway).
        Level::Avx512Vnni => {
            PACKED.with_borrow_mut(|packed| unsafe { x86::igemm_vnni(m, k, n, a, b, c, packed) })
        }
        // SAFETY: an `Int8Isa` of this level exists only if the CPU has AVX-512F and BW.
        Level::Avx512 => unsafe { x86::igemm_avx512(m, k, n, a, b, c) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for AVX2.
        Level::Avx2 => unsafe { x86::igemm_avx2(m, k, n, a, b, c) },
        _ => igemm_body(m, k, n, a, b, c),
    }
}

/// The definition of [`igemm`], one product at a time (what the tests hold it to).
pub fn igemm_scalar(m: usize, k: usize, n: usize, a: &[u8], b: &[i8], c: &mut [i32]) {
    for i in 0..m {
        for j in 0..n {
            for l in 0..k {
                c[i * n + j] += i32::from(a[i * k + l]) * i32::from(b[l * n + j]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn row_sums_equal_their_definition_on_every_instruction_set() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for isa in Int8Isa::available() {
            for cout in [1usize, 7, 16, 33, 64, 128, 300] {
                let rows_total = 40;
                let weight: Vec<i8> = (0..rows_total * cout)
                    .map(|_| rng.random_range(-127..=127))
                    .collect();
                let rows: Vec<u32> = (0..rows_total)
                    .filter(|_| rng.random_bool(0.4))
                    .map(|r| (r * cout) as u32)
                    .collect();
                let (mut fast, mut slow) = (vec![5; cout], vec![0; cout]);
                sum_rows_i8_with(isa, &weight, &rows, &mut fast);
                sum_rows_i8_scalar(&weight, &rows, &mut slow);
                assert_eq!(fast, slow, "{}", isa.name());
            }
        }
        assert_eq!(Int8Isa::available().last(), Some(&Int8Isa::portable()));
    }

    #[test]
    fn igemm_equals_its_definition_on_every_instruction_set() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for isa in Int8Isa::available() {
            for (m, k, n) in [(1, 1, 1), (7, 18, 16), (33, 576, 64), (4, 1152, 130)] {
                let a: Vec<u8> = (0..m * k).map(|_| u8::from(rng.random_bool(0.2))).collect();
                let b: Vec<i8> = (0..k * n).map(|_| rng.random_range(-127..=127)).collect();
                let init: Vec<i32> = (0..m * n).map(|_| rng.random_range(-1000..1000)).collect();
                let (mut fast, mut slow) = (init.clone(), init);
                igemm_with(isa, m, k, n, &a, &b, &mut fast);
                igemm_scalar(m, k, n, &a, &b, &mut slow);
                assert_eq!(fast, slow, "{} {m}x{k}x{n}", isa.name());
            }
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512vnni")
            && std::arch::is_x86_feature_detected!("avx512bw")
        {
            assert_eq!(Int8Isa::detect().name(), "avx512-vnni");
        }
    }
}
