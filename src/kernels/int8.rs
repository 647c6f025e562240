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
//! The GEMM has two more paths, AVX-512 VNNI and AVX-VNNI, where the CPU has them:
//! `vpdpbusd` makes four u8 × i8 products per i32 lane and instruction, which needs the
//! weights packed four rows at a time, so it is its own loop, written once over a lanes trait
//! (16 or 8 i32 lanes) and instantiated per instruction set (see `x86::vnni_body`); it works
//! on blocks of 4 rows × 4 vectors so each weight load feeds four products. The row
//! sums of the event-driven executor add one row per spike and gain nothing from it; they
//! keep their sums in i16 registers instead (twice the lanes of i32, and no store per row),
//! widened into i32 every [`I16_ROWS`] rows, before an i16 could overflow (`x86::rows_lanes`,
//! one body over a lanes trait for AVX-512 BW and AVX2).

use std::sync::OnceLock;

/// Which compilation of the integer loops runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Level {
    Avx512Vnni,
    Avx512,
    AvxVnni,
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
                if std::arch::is_x86_feature_detected!("avxvnni") {
                    isas.push(Self(Level::AvxVnni));
                }
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
            Level::AvxVnni => "avx-vnni",
            Level::Avx2 => "avx2",
            Level::Portable => "portable",
        }
    }
}

/// `out[o] = Σ_k weight[rows[k] + o]` for every `o < out.len()`: the sum of the int8 rows
/// that the spiking inputs select, with the best instruction set of this CPU.
///
/// Precondition (callers build `rows` from validated shapes):
/// `rows[k] as usize + out.len() <= weight.len()` for every k (a row out of bounds panics).
#[inline]
pub fn sum_rows_i8(weight: &[i8], rows: &[u32], out: &mut [i32]) {
    sum_rows_i8_with(Int8Isa::detect(), weight, rows, out);
}

/// [`sum_rows_i8`] with a given instruction set.
#[inline]
pub fn sum_rows_i8_with(isa: Int8Isa, weight: &[i8], rows: &[u32], out: &mut [i32]) {
    // One pass over the offsets (a compare per row, against out.len() adds per row) makes the
    // vector loops' unchecked reads sound.
    let last = rows.iter().copied().max().unwrap_or(0) as usize;
    assert!(
        rows.is_empty() || last + out.len() <= weight.len(),
        "row offset {last} + {} past {} weights",
        out.len(),
        weight.len()
    );
    match isa.0 {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Int8Isa` of these levels exists only if the CPU has AVX-512F and BW;
        // every row lies inside `weight` (asserted above).
        Level::Avx512 | Level::Avx512Vnni => unsafe { x86::rows_avx512(weight, rows, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for AVX2.
        Level::Avx2 | Level::AvxVnni => unsafe { x86::rows_avx2(weight, rows, out) },
        _ => rows_body(weight, rows, out),
    }
}

/// Rows summed in i16 before widening into i32: 256 · 128 = 2^15, so no run of this many int8
/// values, -128 included, leaves i16 (the file's grid, −127..=127, would allow 258).
const I16_ROWS: usize = 256;

/// One kernel tap's share of an output pixel's inputs: `channels[start..start + len]` are the
/// spiking input channels under that tap, and channel c's weight row starts at `base + c·Cout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapSpan {
    /// Offset of the tap's channel-0 row in the weights.
    pub base: usize,
    /// First entry of the tap's channels in the channel list.
    pub start: usize,
    /// Number of channels.
    pub len: usize,
}

/// Panics unless every row that `spans` select lies inside `weight`: one compare per spike,
/// which makes the vector loops' unchecked reads sound. Inlined into each instruction set's
/// entry point, where the maximum vectorises.
#[inline(always)]
fn check_spans(weight: &[i8], channels: &[u32], spans: &[TapSpan], cout: usize) {
    for s in spans {
        let list = &channels[s.start..s.start + s.len];
        let last = list.iter().fold(0, |m, &c| m.max(c));
        let end = s.base + last as usize * cout + cout;
        assert!(
            s.len == 0 || end <= weight.len(),
            "tap row ends at {end}, past {} weights",
            weight.len()
        );
    }
}

/// A plain row list as one span: each entry is a row offset (stride 1).
#[inline(always)]
fn whole(rows: &[u32]) -> [TapSpan; 1] {
    [TapSpan {
        base: 0,
        start: 0,
        len: rows.len(),
    }]
}

/// The weight-row offsets that `spans` select, in order.
#[inline(always)]
fn span_rows<'a>(
    channels: &'a [u32],
    spans: &'a [TapSpan],
    cout: usize,
) -> impl Iterator<Item = usize> + Clone + 'a {
    spans.iter().flat_map(move |s| {
        channels[s.start..s.start + s.len]
            .iter()
            .map(move |&c| s.base + c as usize * cout)
    })
}

/// [`sum_rows_i8`] with the rows named per kernel tap instead of listed one by one: the same
/// sums, without first writing out a row offset per spike and tap (what the event-driven
/// conv's gather did per output pixel).
///
/// Panics if a span lies outside `channels` or names a row outside `weight`.
#[inline]
pub fn sum_taps_i8(weight: &[i8], channels: &[u32], spans: &[TapSpan], out: &mut [i32]) {
    sum_taps_i8_with(Int8Isa::detect(), weight, channels, spans, out);
}

/// [`sum_taps_i8`] with a given instruction set.
pub fn sum_taps_i8_with(
    isa: Int8Isa,
    weight: &[i8],
    channels: &[u32],
    spans: &[TapSpan],
    out: &mut [i32],
) {
    let cout = out.len();
    match isa.0 {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Int8Isa` of these levels exists only if the CPU has AVX-512F and BW.
        Level::Avx512 | Level::Avx512Vnni => unsafe {
            x86::taps_avx512(weight, channels, spans, out)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for AVX2.
        Level::Avx2 | Level::AvxVnni => unsafe { x86::taps_avx2(weight, channels, spans, out) },
        _ => {
            check_spans(weight, channels, spans, cout);
            out.fill(0);
            for r in span_rows(channels, spans, cout) {
                for (a, &w) in out.iter_mut().zip(&weight[r..r + cout]) {
                    *a += i32::from(w);
                }
            }
        }
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
        __m256i, __m512i, _mm_loadu_si128, _mm256_add_epi16, _mm256_add_epi32,
        _mm256_castsi256_si128, _mm256_cvtepi8_epi16, _mm256_cvtepi16_epi32,
        _mm256_dpbusd_avx_epi32, _mm256_extracti128_si256, _mm256_loadu_si256, _mm256_set1_epi32,
        _mm256_setzero_si256, _mm256_storeu_si256, _mm512_add_epi16, _mm512_add_epi32,
        _mm512_castsi512_si256, _mm512_cvtepi8_epi16, _mm512_cvtepi16_epi32, _mm512_dpbusd_epi32,
        _mm512_extracti64x4_epi64, _mm512_loadu_si512, _mm512_set1_epi32, _mm512_setzero_si512,
        _mm512_storeu_si512,
    };

    use super::{I16_ROWS, TapSpan, check_spans, igemm_body, span_rows, whole};

    /// A vector of i16 accumulators into which int8 weight rows are widened and added: what
    /// the row sums need from an instruction set. Implementations are zero-sized; their
    /// methods are `unsafe` because they read and write raw pointers and need their
    /// instruction set.
    trait RowLanes {
        /// i16 lanes per vector.
        const LANES: usize;
        /// Enough registers for blocks of 16 vectors (plus the loaded row).
        const WIDE: bool;
        /// One vector.
        type V: Copy;
        /// All lanes 0.
        ///
        /// # Safety
        /// The instruction set available.
        unsafe fn zero() -> Self::V;
        /// `LANES` i8 at `p`, sign-extended to i16.
        ///
        /// # Safety
        /// `p..p + LANES` readable; the instruction set available.
        unsafe fn load_widen(p: *const i8) -> Self::V;
        /// Lane-wise i16 sum (the caller guarantees it cannot overflow).
        ///
        /// # Safety
        /// The instruction set available.
        unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
        /// `out[..LANES] += acc`, each lane sign-extended to i32.
        ///
        /// # Safety
        /// `out..out + LANES` readable and writable; the instruction set available.
        unsafe fn widen_add(acc: Self::V, out: *mut i32);
    }

    /// AVX-512 BW: 32 i16 lanes.
    struct Avx512Rows;

    impl RowLanes for Avx512Rows {
        const LANES: usize = 32;
        const WIDE: bool = true;
        type V = __m512i;
        #[inline(always)]
        unsafe fn zero() -> __m512i {
            // SAFETY: the caller's contract (the instruction set).
            unsafe { _mm512_setzero_si512() }
        }
        #[inline(always)]
        unsafe fn load_widen(p: *const i8) -> __m512i {
            // SAFETY: the caller's contract.
            unsafe { _mm512_cvtepi8_epi16(_mm256_loadu_si256(p.cast())) }
        }
        #[inline(always)]
        unsafe fn add(a: __m512i, b: __m512i) -> __m512i {
            // SAFETY: the caller's contract (the instruction set).
            unsafe { _mm512_add_epi16(a, b) }
        }
        #[inline(always)]
        unsafe fn widen_add(acc: __m512i, out: *mut i32) {
            // SAFETY: the caller's contract: 32 i32 at `out`.
            unsafe {
                let lo = _mm512_cvtepi16_epi32(_mm512_castsi512_si256(acc));
                let hi = _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64::<1>(acc));
                let o = out.cast::<__m512i>();
                _mm512_storeu_si512(o, _mm512_add_epi32(_mm512_loadu_si512(o), lo));
                let o = out.add(16).cast::<__m512i>();
                _mm512_storeu_si512(o, _mm512_add_epi32(_mm512_loadu_si512(o), hi));
            }
        }
    }

    /// AVX2: 16 i16 lanes.
    struct Avx2Rows;

    impl RowLanes for Avx2Rows {
        const LANES: usize = 16;
        const WIDE: bool = false;
        type V = __m256i;
        #[inline(always)]
        unsafe fn zero() -> __m256i {
            // SAFETY: the caller's contract (the instruction set).
            unsafe { _mm256_setzero_si256() }
        }
        #[inline(always)]
        unsafe fn load_widen(p: *const i8) -> __m256i {
            // SAFETY: the caller's contract.
            unsafe { _mm256_cvtepi8_epi16(_mm_loadu_si128(p.cast())) }
        }
        #[inline(always)]
        unsafe fn add(a: __m256i, b: __m256i) -> __m256i {
            // SAFETY: the caller's contract (the instruction set).
            unsafe { _mm256_add_epi16(a, b) }
        }
        #[inline(always)]
        unsafe fn widen_add(acc: __m256i, out: *mut i32) {
            // SAFETY: the caller's contract: 16 i32 at `out`.
            unsafe {
                let lo = _mm256_cvtepi16_epi32(_mm256_castsi256_si128(acc));
                let hi = _mm256_cvtepi16_epi32(_mm256_extracti128_si256::<1>(acc));
                let o = out.cast::<__m256i>();
                _mm256_storeu_si256(o, _mm256_add_epi32(_mm256_loadu_si256(o), lo));
                let o = out.add(8).cast::<__m256i>();
                _mm256_storeu_si256(o, _mm256_add_epi32(_mm256_loadu_si256(o), hi));
            }
        }
    }

    /// The row sums, one body for both widths and both ways of naming rows: row offsets are
    /// `span.base + c·stride` for each channel c of each span (a plain row list is one span
    /// with stride 1). Output channels go in blocks of N vectors whose i16 accumulators stay
    /// in registers while every selected row streams past (the sums never round-trip through
    /// memory per row, which is what bounded the plain loop); every [`I16_ROWS`] rows the
    /// block is widened into the i32 outputs, before an i16 could overflow. The channels past
    /// the last whole vector are summed in scalar code.
    ///
    /// # Safety
    /// `L`'s instruction set must be available; every span lies inside `channels`, and every
    /// row it names satisfies `row + out.len() <= weight.len()`.
    #[inline(always)]
    unsafe fn rows_lanes<L: RowLanes>(
        weight: &[i8],
        channels: &[u32],
        spans: &[TapSpan],
        stride: usize,
        out: &mut [i32],
    ) {
        let (cout, lanes) = (out.len(), L::LANES);
        out.fill(0);
        let mut j = 0;
        // SAFETY (all blocks): j + N·lanes <= cout, so each row's block lies inside its row.
        unsafe {
            while L::WIDE && cout - j >= 16 * lanes {
                rows_block::<L, 16>(weight, channels, spans, stride, out, j);
                j += 16 * lanes;
            }
            while cout - j >= 8 * lanes {
                rows_block::<L, 8>(weight, channels, spans, stride, out, j);
                j += 8 * lanes;
            }
            if cout - j >= 4 * lanes {
                rows_block::<L, 4>(weight, channels, spans, stride, out, j);
                j += 4 * lanes;
            }
            if cout - j >= 2 * lanes {
                rows_block::<L, 2>(weight, channels, spans, stride, out, j);
                j += 2 * lanes;
            }
            if cout - j >= lanes {
                rows_block::<L, 1>(weight, channels, spans, stride, out, j);
                j += lanes;
            }
        }
        if j < cout {
            for r in span_rows(channels, spans, stride) {
                let row = &weight[r + j..][..cout - j];
                for (a, &w) in out[j..].iter_mut().zip(row) {
                    *a += i32::from(w);
                }
            }
        }
    }

    /// Channels `j..j + N·LANES` of the row sums (see [`rows_lanes`]).
    ///
    /// # Safety
    /// As [`rows_lanes`], and `j + N·LANES <= out.len()`.
    #[inline(always)]
    unsafe fn rows_block<L: RowLanes, const N: usize>(
        weight: &[i8],
        channels: &[u32],
        spans: &[TapSpan],
        stride: usize,
        out: &mut [i32],
        j: usize,
    ) {
        // SAFETY: the caller's contract bounds every read and write. (No closure here: a
        // closure does not inherit the target features, and its intrinsics would be calls.)
        unsafe {
            let o = out.as_mut_ptr().add(j);
            let mut acc = [L::zero(); N];
            let mut run = 0;
            for s in spans {
                let w = weight.as_ptr().add(s.base + j);
                for &c in channels.get_unchecked(s.start..s.start + s.len) {
                    let p = w.add(c as usize * stride);
                    for (v, acc) in acc.iter_mut().enumerate() {
                        *acc = L::add(*acc, L::load_widen(p.add(v * L::LANES)));
                    }
                    run += 1;
                    if run == I16_ROWS {
                        for (v, acc) in acc.iter_mut().enumerate() {
                            L::widen_add(*acc, o.add(v * L::LANES));
                            *acc = L::zero();
                        }
                        run = 0;
                    }
                }
            }
            if run > 0 {
                for (v, acc) in acc.iter().enumerate() {
                    L::widen_add(*acc, o.add(v * L::LANES));
                }
            }
        }
    }

    /// A vector of i32 accumulators into which `vpdpbusd` adds, per lane, four u8 × i8
    /// products: what the VNNI GEMM needs from an instruction set. Implementations are
    /// zero-sized; their methods are `unsafe` because they read and write raw pointers and
    /// need their instruction set.
    trait DotLanes {
        /// i32 lanes per vector.
        const LANES: usize;
        /// One vector.
        type V: Copy;
        /// `LANES` i32 at `p`.
        ///
        /// # Safety
        /// `p..p + LANES` readable; the instruction set available.
        unsafe fn load(p: *const i32) -> Self::V;
        /// `4 · LANES` i8 at `p` (four weights per lane).
        ///
        /// # Safety
        /// `p..p + 4·LANES` readable; the instruction set available.
        unsafe fn load_weights(p: *const i8) -> Self::V;
        /// `acc` plus, per lane, the four products of x's bytes (u8) with the lane's four
        /// weights (i8).
        ///
        /// # Safety
        /// The instruction set available.
        unsafe fn dot(acc: Self::V, x: i32, w: Self::V) -> Self::V;
        /// Stores `LANES` i32 at `p`.
        ///
        /// # Safety
        /// `p..p + LANES` writable; the instruction set available.
        unsafe fn store(p: *mut i32, v: Self::V);
    }

    /// AVX-512 VNNI: 16 lanes.
    struct Avx512Vnni;

    impl DotLanes for Avx512Vnni {
        const LANES: usize = 16;
        type V = __m512i;
        #[inline(always)]
        unsafe fn load(p: *const i32) -> __m512i {
            // SAFETY: the caller's contract.
            unsafe { _mm512_loadu_si512(p.cast()) }
        }
        #[inline(always)]
        unsafe fn load_weights(p: *const i8) -> __m512i {
            // SAFETY: the caller's contract.
            unsafe { _mm512_loadu_si512(p.cast()) }
        }
        #[inline(always)]
        unsafe fn dot(acc: __m512i, x: i32, w: __m512i) -> __m512i {
            // SAFETY: the caller's contract (the instruction set).
            unsafe { _mm512_dpbusd_epi32(acc, _mm512_set1_epi32(x), w) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut i32, v: __m512i) {
            // SAFETY: the caller's contract.
            unsafe { _mm512_storeu_si512(p.cast(), v) }
        }
    }

    /// AVX-VNNI (the 256-bit VEX encoding): 8 lanes.
    struct AvxVnni;

    impl DotLanes for AvxVnni {
        const LANES: usize = 8;
        type V = __m256i;
        #[inline(always)]
        unsafe fn load(p: *const i32) -> __m256i {
            // SAFETY: the caller's contract.
            unsafe { _mm256_loadu_si256(p.cast()) }
        }
        #[inline(always)]
        unsafe fn load_weights(p: *const i8) -> __m256i {
            // SAFETY: the caller's contract.
            unsafe { _mm256_loadu_si256(p.cast()) }
        }
        #[inline(always)]
        unsafe fn dot(acc: __m256i, x: i32, w: __m256i) -> __m256i {
            // SAFETY: the caller's contract (the instruction set).
            unsafe { _mm256_dpbusd_avx_epi32(acc, _mm256_set1_epi32(x), w) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut i32, v: __m256i) {
            // SAFETY: the caller's contract.
            unsafe { _mm256_storeu_si256(p.cast(), v) }
        }
    }

    /// The GEMM with VNNI, one body for both widths: `vpdpbusd` adds four u8 × i8 products
    /// into each i32 lane per instruction. `b` is first packed into `packed` as `[k/4][n][4]`
    /// (four consecutive rows of a column side by side, zero rows past k), so one load holds
    /// the four weights of LANES columns; the four inputs of a group are broadcast. Four
    /// vectors of columns are accumulated at once so consecutive `vpdpbusd`s do not wait for
    /// each other; the last columns (fewer than a vector) go through zero-padded copies.
    /// Products are exact and so are the i32 sums, so this equals the scalar GEMM.
    ///
    /// # Safety
    /// `L`'s instruction set must be available; `a`, `b`, `c` hold at least m·k, k·n and m·n
    /// values.
    #[inline(always)]
    unsafe fn vnni_body<L: DotLanes>(
        m: usize,
        k: usize,
        n: usize,
        a: &[u8],
        b: &[i8],
        c: &mut [i32],
        packed: &mut Vec<i8>,
    ) {
        let lanes = L::LANES;
        let groups = k.div_ceil(4);
        packed.clear();
        packed.resize(groups * n * 4, 0);
        for (l, row) in b.chunks_exact(n.max(1)).take(k).enumerate() {
            let (g, r) = (l / 4, l % 4);
            for (j, &w) in row.iter().enumerate() {
                packed[(g * n + j) * 4 + r] = w;
            }
        }
        // Blocks of 4 rows × 4 vectors of columns: 16 accumulators, so each packed weight
        // vector loaded feeds four `vpdpbusd`s (one per row) instead of one. What is left
        // (the last rows, the last columns) goes row by row below.
        let (m4, n4) = (m / 4 * 4, n / (4 * lanes) * (4 * lanes));
        let full = k / 4;
        let word_of = |row: &[u8], g: usize| -> i32 {
            if g < full {
                i32::from_le_bytes([row[4 * g], row[4 * g + 1], row[4 * g + 2], row[4 * g + 3]])
            } else {
                let mut bytes = [0u8; 4];
                bytes[..k - 4 * g].copy_from_slice(&row[4 * g..]);
                i32::from_le_bytes(bytes)
            }
        };
        for i in (0..m4).step_by(4) {
            let rows = [0, 1, 2, 3].map(|r| &a[(i + r) * k..][..k]);
            for j in (0..n4).step_by(4 * lanes) {
                // SAFETY: rows i..i + 4 and columns j..j + 4·lanes lie inside c (i + 4 <= m,
                // j + 4·lanes <= n), and group g's weights of those columns inside `packed`.
                unsafe {
                    let p = c.as_mut_ptr().add(i * n + j);
                    let mut acc = [[L::load(p); 4]; 4];
                    for (r, acc) in acc.iter_mut().enumerate() {
                        for (v, acc) in acc.iter_mut().enumerate() {
                            *acc = L::load(p.add(r * n + v * lanes));
                        }
                    }
                    for g in 0..groups {
                        let w = packed.as_ptr().add((g * n + j) * 4);
                        let wv = [0, 1, 2, 3].map(|v| L::load_weights(w.add(v * 4 * lanes)));
                        for (row, acc) in rows.iter().zip(acc.iter_mut()) {
                            let x = word_of(row, g);
                            for (acc, &w) in acc.iter_mut().zip(&wv) {
                                *acc = L::dot(*acc, x, w);
                            }
                        }
                    }
                    for (r, acc) in acc.iter().enumerate() {
                        for (v, acc) in acc.iter().enumerate() {
                            L::store(p.add(r * n + v * lanes), *acc);
                        }
                    }
                }
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
            let c_row = &mut c[i * n..][..n];
            let mut j = if i < m4 { n4 } else { 0 };
            // SAFETY (both loops): columns j..j + lanes·B lie inside row i of c, and group g's
            // weights of those columns at (g·n + j)·4 .. + 4·lanes·B inside `packed`.
            unsafe {
                while n - j >= 4 * lanes {
                    let p = c_row.as_mut_ptr().add(j);
                    let mut acc = [
                        L::load(p),
                        L::load(p.add(lanes)),
                        L::load(p.add(2 * lanes)),
                        L::load(p.add(3 * lanes)),
                    ];
                    for g in 0..groups {
                        let x = word(g);
                        let w = packed.as_ptr().add((g * n + j) * 4);
                        for (v, acc) in acc.iter_mut().enumerate() {
                            *acc = L::dot(*acc, x, L::load_weights(w.add(v * 4 * lanes)));
                        }
                    }
                    for (v, acc) in acc.iter().enumerate() {
                        L::store(p.add(v * lanes), *acc);
                    }
                    j += 4 * lanes;
                }
                while n - j >= lanes {
                    let p = c_row.as_mut_ptr().add(j);
                    let mut acc = L::load(p);
                    for g in 0..groups {
                        let w = packed.as_ptr().add((g * n + j) * 4);
                        acc = L::dot(acc, word(g), L::load_weights(w));
                    }
                    L::store(p, acc);
                    j += lanes;
                }
            }
            if j < n {
                let width = n - j;
                let mut sums = [0i32; 16];
                let mut weights = [0i8; 64];
                sums[..width].copy_from_slice(&c_row[j..]);
                // SAFETY: the stack buffers hold 16 i32 and 64 i8, at least one vector of
                // each for both widths; the lanes past `width` add zeros and are dropped.
                unsafe {
                    let mut acc = L::load(sums.as_ptr());
                    for g in 0..groups {
                        weights[..4 * width]
                            .copy_from_slice(&packed[(g * n + j) * 4..][..4 * width]);
                        acc = L::dot(acc, word(g), L::load_weights(weights.as_ptr()));
                    }
                    L::store(sums.as_mut_ptr(), acc);
                }
                c_row[j..].copy_from_slice(&sums[..width]);
            }
        }
    }

    /// # Safety
    /// The CPU must have AVX-512F, AVX-512BW and AVX-512 VNNI; `a`, `b`, `c` hold at least
    /// m·k, k·n and m·n values.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn igemm_avx512_vnni(
        m: usize,
        k: usize,
        n: usize,
        a: &[u8],
        b: &[i8],
        c: &mut [i32],
        packed: &mut Vec<i8>,
    ) {
        // SAFETY: this function's contract.
        unsafe { vnni_body::<Avx512Vnni>(m, k, n, a, b, c, packed) }
    }

    /// # Safety
    /// The CPU must have AVX2 and AVX-VNNI; `a`, `b`, `c` hold at least m·k, k·n and m·n
    /// values.
    #[target_feature(enable = "avx2,avxvnni")]
    pub(super) unsafe fn igemm_avx_vnni(
        m: usize,
        k: usize,
        n: usize,
        a: &[u8],
        b: &[i8],
        c: &mut [i32],
        packed: &mut Vec<i8>,
    ) {
        // SAFETY: this function's contract.
        unsafe { vnni_body::<AvxVnni>(m, k, n, a, b, c, packed) }
    }

    /// # Safety
    /// The CPU must have AVX-512F and AVX-512BW; `r + out.len() <= weight.len()` for every r
    /// in `rows`.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn rows_avx512(weight: &[i8], rows: &[u32], out: &mut [i32]) {
        // SAFETY: this function's contract.
        unsafe { rows_lanes::<Avx512Rows>(weight, rows, &whole(rows), 1, out) }
    }

    /// # Safety
    /// The CPU must have AVX-512F and AVX-512BW (a span outside `channels` or `weight` panics).
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn taps_avx512(
        weight: &[i8],
        channels: &[u32],
        spans: &[TapSpan],
        out: &mut [i32],
    ) {
        check_spans(weight, channels, spans, out.len());
        // SAFETY: the CPU has the features (this function's contract); every row lies inside
        // `weight` (checked above).
        unsafe { rows_lanes::<Avx512Rows>(weight, channels, spans, out.len(), out) }
    }

    /// # Safety
    /// The CPU must have AVX2 (a span outside `channels` or `weight` panics).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn taps_avx2(
        weight: &[i8],
        channels: &[u32],
        spans: &[TapSpan],
        out: &mut [i32],
    ) {
        check_spans(weight, channels, spans, out.len());
        // SAFETY: the CPU has the features (this function's contract); every row lies inside
        // `weight` (checked above).
        unsafe { rows_lanes::<Avx2Rows>(weight, channels, spans, out.len(), out) }
    }

    /// # Safety
    /// The CPU must have AVX2; `r + out.len() <= weight.len()` for every r in `rows`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn rows_avx2(weight: &[i8], rows: &[u32], out: &mut [i32]) {
        // SAFETY: this function's contract.
        unsafe { rows_lanes::<Avx2Rows>(weight, rows, &whole(rows), 1, out) }
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
        Level::Avx512Vnni => PACKED
            .with_borrow_mut(|packed| unsafe { x86::igemm_avx512_vnni(m, k, n, a, b, c, packed) }),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Int8Isa` of this level exists only if the CPU has AVX-512F and BW.
        Level::Avx512 => unsafe { x86::igemm_avx512(m, k, n, a, b, c) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Int8Isa` of this level exists only if the CPU has AVX2 and AVX-VNNI.
        Level::AvxVnni => PACKED
            .with_borrow_mut(|packed| unsafe { x86::igemm_avx_vnni(m, k, n, a, b, c, packed) }),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Int8Isa` of this level exists only if the CPU has AVX2.
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
            for (cout, rows_total) in [
                (1usize, 40usize),
                (7, 40),
                (16, 40),
                (33, 40),
                (64, 40),
                (128, 40),
                (300, 40),
                (487, 40),
                (512, 700),
                (96, 1000),
            ] {
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
    fn row_sums_of_extreme_weights_never_overflow_their_i16_runs() {
        // Every channel block width (8, 4, 2 and 1 vectors, then the scalar tail) over more
        // rows than one i16 run, with the weights that reach the i16 limits fastest.
        let cout = 8 * 32 + 4 * 32 + 2 * 32 + 32 + 7;
        for w in [i8::MIN, -127, 127] {
            let weight = vec![w; 2 * cout];
            for n in [I16_ROWS - 1, I16_ROWS, I16_ROWS + 1, 3 * I16_ROWS + 5] {
                let rows: Vec<u32> = (0..n).map(|k| (k % 2 * cout) as u32).collect();
                let want = vec![i32::from(w) * n as i32; cout];
                for isa in Int8Isa::available() {
                    let mut got = vec![0; cout];
                    sum_rows_i8_with(isa, &weight, &rows, &mut got);
                    assert_eq!(got, want, "{} w={w} rows={n}", isa.name());
                }
            }
        }
        // One run more would leave i16: the bound is tight.
        assert!(I16_ROWS as i32 * 127 <= i32::from(i16::MAX));
        assert!(I16_ROWS as i32 * -128 >= i32::from(i16::MIN));
        assert!((I16_ROWS as i32 + 1) * -128 < i32::from(i16::MIN));
    }

    #[test]
    fn tap_sums_equal_the_row_sums_of_their_rows_on_every_instruction_set() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for (cin, cout, taps) in [
            (3usize, 5usize, 9usize),
            (64, 128, 9),
            (130, 256, 9),
            (8, 512, 1),
        ] {
            let weight: Vec<i8> = (0..taps * cin * cout)
                .map(|_| rng.random_range(-128..=127))
                .collect();
            let mut channels = Vec::new();
            let mut spans = Vec::new();
            for tap in 0..taps {
                let start = channels.len();
                channels.extend((0..cin as u32).filter(|_| rng.random_bool(0.3)));
                spans.push(TapSpan {
                    base: tap * cin * cout,
                    start,
                    len: channels.len() - start,
                });
            }
            let rows: Vec<u32> = span_rows(&channels, &spans, cout)
                .map(|r| r as u32)
                .collect();
            let mut want = vec![0; cout];
            sum_rows_i8_scalar(&weight, &rows, &mut want);
            for isa in Int8Isa::available() {
                let mut got = vec![7; cout];
                sum_taps_i8_with(isa, &weight, &channels, &spans, &mut got);
                assert_eq!(got, want, "{} {cin}x{cout}", isa.name());
            }
        }
    }

    #[test]
    #[should_panic(expected = "past")]
    fn a_tap_row_past_the_weights_panics() {
        let weight = vec![1i8; 64];
        let spans = [TapSpan {
            base: 0,
            start: 0,
            len: 2,
        }];
        sum_taps_i8(&weight, &[0, 2], &spans, &mut [0; 32]);
    }

    #[test]
    #[should_panic(expected = "past")]
    fn a_row_past_the_weights_panics_on_every_path() {
        let weight = vec![1i8; 64];
        let mut out = vec![0; 32];
        sum_rows_i8(&weight, &[0, 33], &mut out);
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
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avxvnni") {
            assert!(Int8Isa::available().iter().any(|i| i.name() == "avx-vnni"));
        }
    }
}
