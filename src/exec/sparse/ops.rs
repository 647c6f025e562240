//! The executor's per-node computations over a list of active output pixels. Each follows the
//! arithmetic contract of [`crate::exec`]: f32 operands, f64 sums, one rounding per value; or,
//! for a node with int8 weights, an i32 sum of the selected integer rows and
//! [`int8_current`](crate::snn::network::int8_current).

use std::cell::RefCell;

use crate::binner::SparseFrame;
use crate::exec::ConvNode;
use crate::exec::sparse::bands::{PixelsMut, for_bands};
use crate::exec::sparse::lists::{ListsMut, PixelLists};
use crate::exec::stats::QuantizationError;
use crate::kernels::{
    ConvGeometry, Isa, TapSpan, Transpose, dgemm, igemm, im2col, sum_rows, sum_rows_i8,
    sum_rows_scaled, sum_taps_i8,
};
use crate::snn::network::{Int8Weights, Node, Op, Shape, int8_currents};
use crate::snn::neuron::{NeuronKind, fire};

/// Fewest active output pixels per band when a layer is split across threads.
const GRAIN: usize = 16;

/// Active pixels per band: about four bands per thread (enough to balance uneven pixels
/// without paying a task per handful of pixels), never fewer than `GRAIN`.
fn grain(ctx: Ctx, active: usize) -> usize {
    (active / (4 * ctx.threads.max(1))).max(GRAIN)
}

/// What every step needs besides its buffers.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    /// Kernel instruction set.
    pub isa: Isa,
    /// Split layers into bands on the current rayon pool.
    pub parallel: bool,
    /// Threads of that pool.
    pub threads: usize,
}

/// Per-thread scratch of the gather: one output pixel's weight-row offsets, their values and
/// its currents.
#[derive(Debug, Default)]
struct Gather {
    rows: Vec<u32>,
    /// An int8 conv's taps (its rows named per tap, see [`sum_taps_i8`]).
    spans: Vec<TapSpan>,
    values: Vec<f32>,
    current: Vec<f32>,
    /// An int8 conv's integer sums.
    sums: Vec<i32>,
}

thread_local! {
    static GATHER: RefCell<Gather> = RefCell::new(Gather::default());
    static SUMS: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

/// A conv ready to gather: geometry and parameters.
#[derive(Debug, Clone, Copy)]
pub struct Conv<'a> {
    geometry: ConvGeometry,
    out_ch: usize,
    /// The network's weights, `[Cin][Kh][Kw][Cout]` (the GEMM path's layout).
    weight: &'a [f32],
    /// The same weights tap-major, `[Kh][Kw][Cin][Cout]` (the gather's layout).
    by_tap: &'a [f32],
    bias: &'a [f32],
    /// For an int8 conv: its integer weights.
    int8: Option<Int8Conv<'a>>,
}

/// An int8 conv's integer weights, in both layouts, and its scales.
#[derive(Debug, Clone, Copy)]
pub struct Int8Conv<'a> {
    /// `[Cin][Kh][Kw][Cout]` (the GEMM path's layout).
    pub weight: &'a [i8],
    /// `[Kh][Kw][Cin][Cout]` (the gather's layout; the same slice for a 1×1 kernel).
    pub by_tap: &'a [i8],
    /// One per output channel, batch norm folded in.
    pub scale: &'a [f32],
}

/// A conv's weights reordered from `[Cin][Kh][Kw][Cout]` to `[Kh][Kw][Cin][Cout]`, or None
/// for a 1×1 kernel, whose layout is already that.
///
/// The gather visits a window tap by tap and, within a tap, the active channels in ascending
/// order. In this layout those rows lie at ascending addresses, Cout apart per channel, where
/// in the network's layout they jump by Kh·Kw·Cout: measured 16 % faster for 128 channels and
/// 50 % for 512, whose weights do not fit in L2 (BENCHMARKS.md).
pub fn tap_major(conv: &ConvNode<'_>) -> Option<Vec<f32>> {
    tap_major_of(conv, conv.weight)
}

/// [`tap_major`] of `weight`, any weights in `conv`'s layout (its int8 weights).
pub fn tap_major_of<T: Copy + Default>(conv: &ConvNode<'_>, weight: &[T]) -> Option<Vec<T>> {
    let g = &conv.geometry;
    let (cin, cout) = (g.in_channels, conv.out_channels);
    let taps = g.kernel_height * g.kernel_width;
    if taps == 1 {
        return None;
    }
    let mut out = vec![T::default(); weight.len()];
    for (c, per_channel) in weight.chunks_exact(taps * cout).enumerate().take(cin) {
        for (tap, row) in per_channel.chunks_exact(cout).enumerate() {
            out[(tap * cin + c) * cout..][..cout].copy_from_slice(row);
        }
    }
    Some(out)
}

impl<'a> Conv<'a> {
    /// The gather's view of `conv`; `by_tap` is its [`tap_major`] weights (None for 1×1),
    /// `int8` its integer weights tap-major and its scales, for an int8 conv.
    pub fn of(conv: &ConvNode<'a>, by_tap: Option<&'a [f32]>, int8: Option<Int8Conv<'a>>) -> Self {
        Self {
            geometry: conv.geometry,
            out_ch: conv.out_channels,
            weight: conv.weight,
            by_tap: by_tap.unwrap_or(conv.weight),
            bias: conv.bias,
            int8,
        }
    }

    /// Whether the conv has int8 weights.
    pub fn is_int8(&self) -> bool {
        self.int8.is_some()
    }

    /// Calls `tap(q, first)` for each kernel tap of output pixel `p` that lies inside the
    /// input, in (ky, kx) order: `q` is the input pixel under it and `first` the index of its
    /// channel-0 row (`(ky·Kw + kx)·Cin`).
    #[inline(always)]
    fn for_taps(&self, p: usize, mut tap: impl FnMut(usize, usize)) {
        let geo = &self.geometry;
        let (oy, ox) = (p / geo.out_width, p % geo.out_width);
        let (kh, kw) = (geo.kernel_height, geo.kernel_width);
        let cin = geo.in_channels;
        for ky in 0..kh {
            let Some(iy) = (oy * geo.stride + ky)
                .checked_sub(geo.padding)
                .filter(|&iy| iy < geo.in_height)
            else {
                continue;
            };
            for kx in 0..kw {
                let Some(ix) = (ox * geo.stride + kx)
                    .checked_sub(geo.padding)
                    .filter(|&ix| ix < geo.in_width)
                else {
                    continue;
                };
                tap(iy * geo.in_width + ix, (ky * kw + kx) * cin);
            }
        }
    }

    /// Fills `g` with the weight-row offsets (and values) of the nonzero inputs in output
    /// pixel `p`'s window, in (ky, kx, c) order.
    #[inline]
    fn gather(&self, p: usize, input: &PixelLists, g: &mut Gather) {
        g.rows.clear();
        g.values.clear();
        self.for_taps(p, |q, first| {
            g.rows.extend(
                input
                    .channels_at(q)
                    .iter()
                    .map(|&c| ((first + c as usize) * self.out_ch) as u32),
            );
            g.values.extend_from_slice(input.values_at(q));
        });
    }

    /// Fills `g.spans` with output pixel `p`'s taps over `input`'s channel slots; returns the
    /// rows they name.
    #[inline]
    fn gather_spans(&self, p: usize, input: &PixelLists, g: &mut Gather) -> usize {
        g.spans.clear();
        let mut rows = 0;
        self.for_taps(p, |q, first| {
            let (start, len) = input.slot(q);
            if len > 0 {
                g.spans.push(TapSpan {
                    base: first * self.out_ch,
                    start,
                    len,
                });
                rows += len;
            }
        });
        rows
    }

    /// Output pixel `p`'s currents into `out` (Cout values). Returns the accumulates done.
    #[inline]
    fn pixel(
        &self,
        isa: Isa,
        p: usize,
        input: &PixelLists,
        g: &mut Gather,
        out: &mut [f32],
    ) -> u64 {
        if let Some(q) = self.int8 {
            // Integer sums are exact in any order; the one f32 expression makes the current.
            let rows = self.gather_spans(p, input, g);
            g.sums.resize(self.out_ch, 0);
            sum_taps_i8(q.by_tap, input.slots(), &g.spans, &mut g.sums);
            int8_currents(&g.sums, q.scale, self.bias, out);
            return (rows * self.out_ch) as u64;
        }
        self.gather(p, input, g);
        if input.is_binary() {
            sum_rows(isa, self.by_tap, self.bias, &g.rows, out);
        } else {
            sum_rows_scaled(isa, self.by_tap, self.bias, &g.rows, &g.values, out);
        }
        (g.rows.len() * self.out_ch) as u64
    }
}

/// Input node: lists (and dense values when read) from a validated frame.
pub fn input(
    frame: &SparseFrame,
    dense: Option<&mut [f32]>,
    lists: Option<&mut PixelLists>,
    mut active: impl FnMut(usize),
) {
    let s = frame.shape;
    let plane = s.height * s.width;
    let mut dense = dense;
    if let Some(d) = dense.as_deref_mut() {
        d.fill(0.0);
    }
    let mut lists = lists;
    if let Some(l) = lists.as_deref_mut() {
        l.clear();
    }
    // Frame indices ascend in [C][H][W] order, so each pixel's channels arrive ascending.
    for (&i, &v) in frame.indices.iter().zip(&frame.values) {
        let i = i as usize;
        let (c, p) = (i / plane, i % plane);
        if let Some(d) = dense.as_deref_mut() {
            d[p * s.channels + c] = v;
        }
        if v != 0.0 {
            if let Some(l) = lists.as_deref_mut() {
                l.push(p, c as u32, v);
            }
            active(p);
        }
    }
}

/// A conv on its own: currents of the active output pixels into `out` (NHWC). Returns the
/// accumulates done.
pub fn conv(
    ctx: Ctx,
    conv: &Conv<'_>,
    input: &PixelLists,
    active: &[u32],
    pixels: usize,
    out: &mut [f32],
) -> u64 {
    let cout = conv.out_ch;
    for_bands(
        ctx.parallel,
        pixels,
        active,
        grain(ctx, active.len()),
        PixelsMut::new(out, cout),
        &|first, active, mut out| {
            GATHER.with_borrow_mut(|g| {
                let mut ops = 0u64;
                for &p in active {
                    let p = p as usize;
                    ops += conv.pixel(ctx.isa, p, input, g, out.pixel(p - first));
                }
                ops
            })
        },
    )
}

/// Scratch of the GEMM conv path.
#[derive(Debug, Default)]
pub struct DenseScratch {
    /// The input image, NHWC, rebuilt from its lists.
    image: Vec<f32>,
    /// im2col matrix, `[pixels][Cin·Kh·Kw]`.
    cols: Vec<f64>,
    /// GEMM accumulator, `[pixels][Cout]`.
    acc: Vec<f64>,
    /// The int8 path's input spikes (NHWC, 0/1) and im2col matrix.
    spikes: Vec<u8>,
    spike_cols: Vec<u8>,
    /// The int8 path's integer sums, `[pixels][Cout]`.
    sums: Vec<i32>,
}

impl DenseScratch {
    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.image.capacity() * std::mem::size_of::<f32>()
            + (self.cols.capacity() + self.acc.capacity()) * std::mem::size_of::<f64>()
            + self.spikes.capacity()
            + self.spike_cols.capacity()
            + self.sums.capacity() * std::mem::size_of::<i32>()
    }
}

impl Conv<'_> {
    /// Output channels.
    pub fn out_ch(&self) -> usize {
        self.out_ch
    }

    /// The weights widened to f64 (the GEMM's operand), `[Cin·Kh·Kw][Cout]`.
    pub fn weights_f64(&self) -> Vec<f64> {
        self.weight.iter().map(|&w| f64::from(w)).collect()
    }
}

/// A conv over every output pixel as im2col + one f64 GEMM per band of pixels: for inputs too
/// dense for the gather to pay (see `EventOptions::gemm_threshold`). The sums are exact in f64
/// (the contract in `exec`), so the result is the gather's bit for bit. Writes (all.len() ×
/// Cout) currents into `out`; `all` lists every output pixel.
pub fn conv_dense(
    ctx: Ctx,
    conv: &Conv<'_>,
    weights: &[f64],
    input: &PixelLists,
    all: &[u32],
    scratch: &mut DenseScratch,
    out: &mut [f32],
) {
    let g = &conv.geometry;
    let pixels = all.len();
    let k = g.columns();
    let cout = conv.out_ch;
    let cin = g.in_channels;
    scratch.image.clear();
    scratch.image.resize(g.in_len(), 0.0);
    for q in 0..input.pixels() {
        let dst = &mut scratch.image[q * cin..][..cin];
        let values = input.values_at(q);
        for (j, &c) in input.channels_at(q).iter().enumerate() {
            dst[c as usize] = values.get(j).copied().unwrap_or(1.0);
        }
    }
    scratch.cols.resize(pixels * k, 0.0);
    scratch.acc.clear();
    scratch.acc.reserve(pixels * cout);
    for _ in 0..pixels {
        scratch.acc.extend(conv.bias.iter().map(|&b| f64::from(b)));
    }
    let image = &scratch.image;
    // Bands of at least 64 pixels keep each GEMM large enough to run at speed.
    for_bands(
        ctx.parallel,
        pixels,
        all,
        grain(ctx, all.len()).max(4 * GRAIN),
        (
            PixelsMut::new(scratch.cols.as_mut_slice(), k),
            (
                PixelsMut::new(scratch.acc.as_mut_slice(), cout),
                PixelsMut::new(&mut *out, cout),
            ),
        ),
        &|first, _, (cols, (acc, out))| {
            let rows = acc.data.len() / cout.max(1);
            im2col(g, image, first, rows, cols.data, f64::from);
            dgemm(
                rows,
                k,
                cout,
                cols.data,
                Transpose::No,
                weights,
                Transpose::No,
                1.0,
                acc.data,
            );
            for (o, &a) in out.data.iter_mut().zip(acc.data.iter()) {
                *o = a as f32;
            }
            0
        },
    );
}

/// [`conv_dense`] for an int8 conv (whose input is spikes): im2col of the 0/1 input as bytes,
/// one integer GEMM per band of pixels ([`crate::kernels::igemm`], exact in i32), and
/// [`int8_current`](crate::snn::network::int8_current) per value, so the result is the
/// gather's bit for bit. Returns false (and writes nothing) for a float conv.
pub fn conv_dense_int8(
    ctx: Ctx,
    conv: &Conv<'_>,
    input: &PixelLists,
    all: &[u32],
    scratch: &mut DenseScratch,
    out: &mut [f32],
) -> bool {
    let Some(q) = conv.int8 else {
        return false;
    };
    let g = &conv.geometry;
    let pixels = all.len();
    let k = g.columns();
    let cout = conv.out_ch;
    let cin = g.in_channels;
    scratch.spikes.clear();
    scratch.spikes.resize(g.in_len(), 0);
    for p in 0..input.pixels() {
        for &c in input.channels_at(p) {
            scratch.spikes[p * cin + c as usize] = 1;
        }
    }
    scratch.spike_cols.resize(pixels * k, 0);
    scratch.sums.clear();
    scratch.sums.resize(pixels * cout, 0);
    let image = &scratch.spikes;
    for_bands(
        ctx.parallel,
        pixels,
        all,
        grain(ctx, all.len()).max(4 * GRAIN),
        (
            PixelsMut::new(scratch.spike_cols.as_mut_slice(), k),
            (
                PixelsMut::new(scratch.sums.as_mut_slice(), cout),
                PixelsMut::new(&mut *out, cout),
            ),
        ),
        &|first, _, (cols, (sums, out))| {
            let rows = sums.data.len() / cout.max(1);
            im2col(g, image, first, rows, cols.data, |v| v);
            igemm(rows, k, cout, cols.data, q.weight, sums.data);
            for (o_px, s_px) in out
                .data
                .chunks_exact_mut(cout)
                .zip(sums.data.chunks_exact(cout))
            {
                int8_currents(s_px, q.scale, conv.bias, o_px);
            }
            0
        },
    );
    true
}

/// Where a neuron node's current comes from.
#[derive(Debug, Clone, Copy)]
pub enum CurrentIn<'a> {
    /// Dense values (of the input node, or computed by [`conv_dense`]), optionally plus the
    /// dense values of a residual operand.
    Dense {
        /// The currents (or the first operand of the add).
        values: &'a [f32],
        /// The other operand of a residual add.
        add: Option<&'a [f32]>,
    },
    /// A conv computed per pixel, optionally plus the dense values of a residual operand.
    Conv {
        /// The conv.
        conv: Conv<'a>,
        /// Its input lists.
        input: &'a PixelLists,
        /// The other operand of a residual add.
        add: Option<&'a [f32]>,
    },
}

/// A neuron node's buffers.
#[derive(Debug)]
pub struct NeuronOut<'a> {
    /// Membranes of the node (NHWC).
    pub membranes: &'a mut [f32],
    /// Spikes, dense 0/1 (NHWC).
    pub spikes: &'a mut [f32],
    /// Spike lists.
    pub lists: &'a mut PixelLists,
}

/// Steps the neurons of the active pixels: computes their current, charges, fires, resets,
/// and writes spikes densely and as lists. Returns (spikes fired, conv accumulates done).
pub fn neuron(
    ctx: Ctx,
    kind: NeuronKind,
    channels: usize,
    current: CurrentIn<'_>,
    active: &[u32],
    out: NeuronOut<'_>,
    quantization: Option<&mut QuantizationError>,
) -> (u64, u64) {
    let c = channels;
    let pixels = out.membranes.len() / c.max(1);
    let pixel_work = |g: &mut Gather,
                      p: usize,
                      u: &mut [f32],
                      o: &mut [f32],
                      q: Option<&mut QuantizationError>|
     -> (u64, u64) {
        let mut ops = 0u64;
        let x: &[f32] = match current {
            CurrentIn::Dense { values, add: None } => &values[p * c..][..c],
            CurrentIn::Dense {
                values,
                add: Some(other),
            } => {
                let mut buf = std::mem::take(&mut g.current);
                buf.clear();
                buf.extend(
                    values[p * c..][..c]
                        .iter()
                        .zip(&other[p * c..][..c])
                        .map(|(&x, &y)| (f64::from(x) + f64::from(y)) as f32),
                );
                g.current = buf;
                &g.current
            }
            CurrentIn::Conv { conv, input, add } => {
                let mut buf = std::mem::take(&mut g.current);
                buf.resize(c, 0.0);
                ops = conv.pixel(ctx.isa, p, input, g, &mut buf);
                if let Some(other) = add {
                    for (x, &y) in buf.iter_mut().zip(&other[p * c..][..c]) {
                        *x = (f64::from(*x) + f64::from(y)) as f32;
                    }
                }
                g.current = buf;
                &g.current
            }
        };
        let fired = match q {
            None => kind.step_all(u, x, o) as u64,
            Some(q) => {
                // The statistic needs H before the reset, so this runs the scalar step.
                let mut fired = 0u64;
                for ((u, &x), o) in u.iter_mut().zip(x).zip(o.iter_mut()) {
                    let h = kind.charge(*u, x);
                    let spike = fire(h);
                    q.observe(h, spike);
                    *u = kind.reset(h, spike);
                    *o = spike;
                    fired += spike as u64;
                }
                fired
            }
        };
        (fired, ops)
    };
    if let Some(q) = quantization {
        return GATHER.with_borrow_mut(|g| {
            let (mut fired, mut ops) = (0, 0);
            for &p in active {
                let p = p as usize;
                let (f, o) = pixel_work(
                    g,
                    p,
                    &mut out.membranes[p * c..][..c],
                    &mut out.spikes[p * c..][..c],
                    Some(&mut *q),
                );
                out.lists.set_from_dense(p, &out.spikes[p * c..][..c]);
                fired += f;
                ops += o;
            }
            (fired, ops)
        });
    }
    // Bands return their spike counts; their accumulate counts go through an atomic.
    let ops = std::sync::atomic::AtomicU64::new(0);
    let fired = for_bands(
        ctx.parallel,
        pixels,
        active,
        grain(ctx, active.len()),
        (
            PixelsMut::new(&mut *out.membranes, c),
            PixelsMut::new(&mut *out.spikes, c),
            out.lists.as_mut(),
        ),
        &|first,
          active,
          (mut u, mut o, mut l): (PixelsMut<'_, f32>, PixelsMut<'_, f32>, ListsMut<'_>)| {
            GATHER.with_borrow_mut(|g| {
                let (mut fired, mut band_ops) = (0u64, 0u64);
                for &p in active {
                    let local = p as usize - first;
                    let spikes = o.pixel(local);
                    let (f, w) = pixel_work(g, p as usize, u.pixel(local), spikes, None);
                    l.set_from_dense(local, spikes);
                    fired += f;
                    band_ops += w;
                }
                ops.fetch_add(band_ops, std::sync::atomic::Ordering::Relaxed);
                fired
            })
        },
    );
    (fired, ops.into_inner())
}

/// k×k pooling of the active output pixels: the window sum in f64 divided by `divisor`,
/// rounded once.
#[allow(clippy::too_many_arguments)]
pub fn pool(
    x: &[f32],
    in_shape: Shape,
    s: Shape,
    k: usize,
    stride: usize,
    divisor: f64,
    active: &[u32],
    out: &mut [f32],
) {
    let c = s.channels;
    for &p in active {
        let p = p as usize;
        let (oy, ox) = (p / s.width, p % s.width);
        let o = &mut out[p * c..][..c];
        for (ch, o) in o.iter_mut().enumerate() {
            let mut acc = 0.0f64;
            for dy in 0..k {
                let base = in_shape.index(oy * stride + dy, ox * stride, ch);
                for dx in 0..k {
                    acc += f64::from(x[base + dx * c]);
                }
            }
            *o = (acc / divisor) as f32;
        }
    }
}

/// Residual sum of the active pixels: `f32(a + b)`.
pub fn add(a: &[f32], b: &[f32], channels: usize, active: &[u32], out: &mut [f32]) {
    let c = channels;
    for &p in active {
        let p = p as usize;
        for ((o, &a), &b) in out[p * c..][..c]
            .iter_mut()
            .zip(&a[p * c..][..c])
            .zip(&b[p * c..][..c])
        {
            *o = (f64::from(a) + f64::from(b)) as f32;
        }
    }
}

/// Global average: per channel, the f64 sum over all pixels divided by H·W, rounded once.
pub fn global_pool(x: &[f32], in_shape: Shape, out: &mut [f32]) {
    let c = in_shape.channels;
    SUMS.with_borrow_mut(|acc| {
        acc.clear();
        acc.resize(c, 0.0);
        for pixel in x.chunks_exact(c.max(1)) {
            for (a, &v) in acc.iter_mut().zip(pixel) {
                *a += f64::from(v);
            }
        }
        let count = (in_shape.height * in_shape.width) as f64;
        for (o, &a) in out.iter_mut().zip(acc.iter()) {
            *o = (a / count) as f32;
        }
    });
}

/// Linear: the input's nonzero entries in NHWC order, each adding its weight row. Returns the
/// accumulates done.
pub fn linear(
    ctx: Ctx,
    node: &Node,
    int8: Option<&Int8Weights>,
    input: &PixelLists,
    out: &mut [f32],
) -> u64 {
    let Op::Linear {
        out_features,
        weight,
        bias,
        ..
    } = &node.op
    else {
        return 0;
    };
    GATHER.with_borrow_mut(|g| {
        g.rows.clear();
        g.values.clear();
        let c = input.channels();
        for p in 0..input.pixels() {
            g.rows.extend(
                input
                    .channels_at(p)
                    .iter()
                    .map(|&ch| ((p * c + ch as usize) * out_features) as u32),
            );
            g.values.extend_from_slice(input.values_at(p));
        }
        if let Some(q) = int8 {
            g.sums.resize(*out_features, 0);
            sum_rows_i8(&q.weight, &g.rows, &mut g.sums);
            int8_currents(&g.sums, &q.scale, bias, out);
        } else if input.is_binary() {
            sum_rows(ctx.isa, weight, bias, &g.rows, out);
        } else {
            sum_rows_scaled(ctx.isa, weight, bias, &g.rows, &g.values, out);
        }
        (g.rows.len() * out_features) as u64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_major_moves_each_row_to_its_tap() {
        let (cin, cout) = (3, 2);
        let weight: Vec<f32> = (0..cin * 9 * cout).map(|i| i as f32).collect();
        let conv = ConvNode {
            geometry: ConvGeometry::new((4, 4, cin), (3, 3), 1, 1).unwrap(),
            out_channels: cout,
            weight: &weight,
            bias: &[0.0; 2],
        };
        let by_tap = tap_major(&conv).expect("3x3 reorders");
        for c in 0..cin {
            for tap in 0..9 {
                for o in 0..cout {
                    assert_eq!(
                        by_tap[(tap * cin + c) * cout + o],
                        weight[(c * 9 + tap) * cout + o]
                    );
                }
            }
        }
    }
}
