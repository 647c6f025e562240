//! The executor's per-node computations over a list of active output pixels. Each follows the
//! arithmetic contract of [`crate::exec`]: f32 operands, f64 sums, one rounding per value.

use std::cell::RefCell;

use crate::binner::SparseFrame;
use crate::exec::sparse::bands::{PixelsMut, for_bands};
use crate::exec::sparse::kernels::{Isa, sum_rows, sum_rows_scaled};
use crate::exec::sparse::lists::{ListsMut, PixelLists};
use crate::exec::stats::QuantizationError;
use crate::snn::network::{Node, Op, Shape};
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
    values: Vec<f32>,
    current: Vec<f32>,
}

thread_local! {
    static GATHER: RefCell<Gather> = RefCell::new(Gather::default());
    static SUMS: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

/// A conv ready to gather: geometry and parameters.
#[derive(Debug, Clone, Copy)]
pub struct Conv<'a> {
    in_shape: Shape,
    out_width: usize,
    kernel: (usize, usize),
    stride: usize,
    padding: usize,
    out_ch: usize,
    /// The network's weights, `[Cin][Kh][Kw][Cout]` (the GEMM path's layout).
    weight: &'a [f32],
    /// The same weights tap-major, `[Kh][Kw][Cin][Cout]` (the gather's layout).
    by_tap: &'a [f32],
    bias: &'a [f32],
}

/// A conv's weights reordered from `[Cin][Kh][Kw][Cout]` to `[Kh][Kw][Cin][Cout]`, or None
/// for a 1×1 kernel, whose layout is already that.
///
/// The gather visits a window tap by tap and, within a tap, the active channels in ascending
/// order. In this layout those rows lie at ascending addresses, Cout apart per channel, where
/// in the network's layout they jump by Kh·Kw·Cout: measured 16 % faster for 128 channels and
/// 50 % for 512, whose weights do not fit in L2 (BENCHMARKS.md).
pub fn tap_major(node: &Node) -> Option<Vec<f32>> {
    let Op::Conv2d {
        in_ch,
        out_ch,
        kernel: (kh, kw),
        weight,
        ..
    } = &node.op
    else {
        return None;
    };
    let taps = kh * kw;
    if taps == 1 {
        return None;
    }
    let mut out = vec![0.0f32; weight.len()];
    for (c, per_channel) in weight.chunks_exact(taps * out_ch).enumerate().take(*in_ch) {
        for (tap, row) in per_channel.chunks_exact(*out_ch).enumerate() {
            out[(tap * in_ch + c) * out_ch..][..*out_ch].copy_from_slice(row);
        }
    }
    Some(out)
}

impl<'a> Conv<'a> {
    /// The conv of `node` (None if it is not a conv); `in_shape` is its input's shape and
    /// `by_tap` its [`tap_major`] weights (None for 1×1).
    pub fn of(node: &'a Node, in_shape: Shape, by_tap: Option<&'a [f32]>) -> Option<Self> {
        match &node.op {
            Op::Conv2d {
                out_ch,
                kernel,
                stride,
                padding,
                weight,
                bias,
                ..
            } => Some(Self {
                in_shape,
                out_width: node.shape.width,
                kernel: *kernel,
                stride: *stride,
                padding: *padding,
                out_ch: *out_ch,
                weight,
                by_tap: by_tap.unwrap_or(weight),
                bias,
            }),
            _ => None,
        }
    }

    /// Fills `g` with the weight-row offsets (and values) of the nonzero inputs in output
    /// pixel `p`'s window, in (ky, kx, c) order.
    #[inline]
    fn gather(&self, p: usize, input: &PixelLists, g: &mut Gather) {
        g.rows.clear();
        g.values.clear();
        let (oy, ox) = (p / self.out_width, p % self.out_width);
        let (kh, kw) = self.kernel;
        let cin = self.in_shape.channels;
        for ky in 0..kh {
            let Some(iy) = (oy * self.stride + ky)
                .checked_sub(self.padding)
                .filter(|&iy| iy < self.in_shape.height)
            else {
                continue;
            };
            for kx in 0..kw {
                let Some(ix) = (ox * self.stride + kx)
                    .checked_sub(self.padding)
                    .filter(|&ix| ix < self.in_shape.width)
                else {
                    continue;
                };
                let q = iy * self.in_shape.width + ix;
                let first = (ky * kw + kx) * cin;
                g.rows.extend(
                    input
                        .channels_at(q)
                        .iter()
                        .map(|&c| ((first + c as usize) * self.out_ch) as u32),
                );
                g.values.extend_from_slice(input.values_at(q));
            }
        }
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

/// Scratch and f64 weights of the dense conv path.
#[derive(Debug, Default)]
pub struct DenseScratch {
    /// im2col matrix, `[pixels][Cin·Kh·Kw]`.
    cols: Vec<f64>,
    /// GEMM accumulator, `[pixels][Cout]`.
    acc: Vec<f64>,
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
/// dense for the gather to pay (see `SparseOptions::dense_above`). The sums are exact in f64
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
    let pixels = all.len();
    let (kh, kw) = conv.kernel;
    let cin = conv.in_shape.channels;
    let k = cin * kh * kw;
    let cout = conv.out_ch;
    scratch.cols.clear();
    scratch.cols.resize(pixels * k, 0.0);
    scratch.acc.clear();
    scratch.acc.reserve(pixels * cout);
    for _ in 0..pixels {
        scratch.acc.extend(conv.bias.iter().map(|&b| f64::from(b)));
    }
    for p in 0..pixels {
        let (oy, ox) = (p / conv.out_width, p % conv.out_width);
        let col = &mut scratch.cols[p * k..][..k];
        for ky in 0..kh {
            let Some(iy) = (oy * conv.stride + ky)
                .checked_sub(conv.padding)
                .filter(|&iy| iy < conv.in_shape.height)
            else {
                continue;
            };
            for kx in 0..kw {
                let Some(ix) = (ox * conv.stride + kx)
                    .checked_sub(conv.padding)
                    .filter(|&ix| ix < conv.in_shape.width)
                else {
                    continue;
                };
                let q = iy * conv.in_shape.width + ix;
                let channels = input.channels_at(q);
                let values = input.values_at(q);
                for (j, &c) in channels.iter().enumerate() {
                    let v = values.get(j).map_or(1.0, |&v| f64::from(v));
                    col[(c as usize * kh + ky) * kw + kx] = v;
                }
            }
        }
    }
    let cols = &scratch.cols;
    // Bands of at least 64 pixels keep each GEMM large enough to run at speed.
    for_bands(
        ctx.parallel,
        pixels,
        all,
        grain(ctx, all.len()).max(4 * GRAIN),
        (
            PixelsMut::new(scratch.acc.as_mut_slice(), cout),
            PixelsMut::new(&mut *out, cout),
        ),
        &|first, _, (acc, out)| {
            let rows = acc.data.len() / cout.max(1);
            gemm_acc(
                rows,
                k,
                cout,
                &cols[first * k..][..rows * k],
                weights,
                acc.data,
            );
            for (o, &a) in out.data.iter_mut().zip(acc.data.iter()) {
                *o = a as f32;
            }
            0
        },
    );
}

/// C[m×n] (row-major, preloaded) += A[m×k] · B[k×n], all row-major f64.
fn gemm_acc(m: usize, k: usize, n: usize, a: &[f64], b: &[f64], c: &mut [f64]) {
    if m == 0 || n == 0 || k == 0 || a.len() < m * k || b.len() < k * n || c.len() < m * n {
        debug_assert!(m == 0 || n == 0 || k == 0, "gemm operands too short");
        return;
    }
    // SAFETY: checked above: each matrix lies within its slice for the given row-major
    // strides; `c` is uniquely borrowed and does not alias `a` or `b`.
    unsafe {
        matrixmultiply::dgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            1.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
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
pub fn linear(ctx: Ctx, node: &Node, input: &PixelLists, out: &mut [f32]) -> u64 {
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
        if input.is_binary() {
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
        let node = Node::new(
            "conv",
            Op::Conv2d {
                in_ch: cin,
                out_ch: cout,
                kernel: (3, 3),
                stride: 1,
                padding: 1,
                weight: weight.clone(),
                bias: vec![0.0; cout],
            },
            vec![0],
            Shape::new(4, 4, cout),
        );
        let by_tap = tap_major(&node).expect("3x3 reorders");
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
