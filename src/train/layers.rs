//! Forward and backward passes of each training op, over all T·B frames of a batch at once.
//!
//! Activations are `[T][B][H][W][C]`: frame n = t·B + b, each frame NHWC (channel contiguous),
//! the layout of `exec` and `kernels`. Convolution weights are `[Cin·Kh·Kw][Cout]` (rows in
//! im2col column order), linear weights `[In][Out]`.
//!
//! Parallel work is split into pieces whose boundaries depend only on the shapes and the
//! number of threads, and partial sums are combined in piece order, so a run is deterministic
//! for a given thread count.

use rayon::prelude::*;

use crate::kernels::im2col::col2im_add_tap_major;
use crate::kernels::{ConvGeometry, Transpose, im2col};
use crate::snn::neuron::{Firing, VTH};
use crate::train::graph::SpikingConfig;
use crate::train::real::Real;

/// Elements per task of elementwise passes.
const ELEMENTWISE_CHUNK: usize = 1 << 14;

/// Largest im2col block per task, in values.
const COLS_BUDGET: usize = 1 << 20;

/// Inputs whose fraction of nonzeros is at or below this take the sparse path. Measured on
/// the train bench with the output-stationary row sums: at 30 % ones they still beat
/// im2col + GEMM (see BENCHMARKS.md).
pub const SPARSE_MAX_DENSITY: f64 = 0.3;

/// Number of pieces reductions are split into.
fn pieces(len: usize) -> usize {
    rayon::current_num_threads().clamp(1, len.max(1))
}

/// The active (nonzero) channels of every pixel of a mostly-zero activation, frame by
/// frame: what the sparse convolution and its weight gradient walk instead of every input.
/// An index of 0/1 spikes holds positions only; an index of other values (event counts)
/// also holds the values, by which the weight rows are scaled.
#[derive(Debug, Clone, Default)]
pub struct SpikeIndex<R> {
    frames: Vec<IndexedFrame<R>>,
    /// Whether the values are kept (the input is not 0/1).
    valued: bool,
    /// Number of nonzero values.
    pub ones: usize,
    /// Number of values.
    pub len: usize,
}

/// One frame of a [`SpikeIndex`].
#[derive(Debug, Clone, Default)]
struct IndexedFrame<R> {
    /// `offsets[p]..offsets[p + 1]` indexes `channels` (and `values`) for pixel p.
    offsets: Vec<u32>,
    channels: Vec<u32>,
    /// The nonzero values, for a valued index; empty otherwise.
    values: Vec<R>,
}

impl<R: Real> SpikeIndex<R> {
    /// Indexes `frames` frames of `pixels × channels` 0/1 values each (nonzero means active).
    pub fn build(input: &[R], frames: usize, pixels: usize, channels: usize) -> Self {
        Self::index(input, frames, pixels, channels, false)
    }

    /// Indexes `frames` frames of `pixels × channels` values each, keeping the nonzero values.
    pub fn build_valued(input: &[R], frames: usize, pixels: usize, channels: usize) -> Self {
        Self::index(input, frames, pixels, channels, true)
    }

    fn index(input: &[R], frames: usize, pixels: usize, channels: usize, valued: bool) -> Self {
        let frame_len = pixels * channels;
        let index: Vec<IndexedFrame<R>> = input[..frames * frame_len]
            .par_chunks(frame_len)
            .map(|frame| {
                let mut f = IndexedFrame {
                    offsets: Vec::with_capacity(pixels + 1),
                    channels: Vec::new(),
                    values: Vec::new(),
                };
                f.offsets.push(0u32);
                for px in frame.chunks_exact(channels) {
                    for (c, v) in px.iter().enumerate() {
                        if *v != R::ZERO {
                            f.channels.push(c as u32);
                            if valued {
                                f.values.push(*v);
                            }
                        }
                    }
                    f.offsets.push(f.channels.len() as u32);
                }
                f
            })
            .collect();
        let ones = index.iter().map(|f| f.channels.len()).sum();
        Self {
            frames: index,
            valued,
            ones,
            len: frames * frame_len,
        }
    }

    /// Fraction of nonzero values.
    pub fn density(&self) -> f64 {
        if self.len == 0 {
            0.0
        } else {
            self.ones as f64 / self.len as f64
        }
    }

    /// For every nonzero input of frame `frame` and every kernel tap through which it
    /// reaches an output pixel: the pair (weight-row offset `row · cout`, output offset
    /// `pixel · cout`) in `pairs`, and for a valued index the input value in `scales`. The
    /// walk is over the nonzero inputs only (input-stationary), so an empty pixel costs one
    /// comparison rather than a visit per tap of each output pixel it reaches.
    fn taps(
        &self,
        g: &ConvGeometry,
        cout: usize,
        frame: usize,
        pairs: &mut Vec<(u32, u32)>,
        scales: &mut Vec<R>,
    ) {
        pairs.clear();
        scales.clear();
        let f = &self.frames[frame];
        let (kh, kw, s) = (g.kernel_height, g.kernel_width, g.stride);
        for (p, span) in f.offsets.windows(2).enumerate() {
            if span[0] == span[1] {
                continue;
            }
            let span = span[0] as usize..span[1] as usize;
            let (iy, ix) = (p / g.in_width, p % g.in_width);
            for ky in 0..kh {
                // Output row oy reads input row oy·s + ky − padding.
                let Some(ny) = (iy + g.padding).checked_sub(ky) else {
                    continue;
                };
                if ny % s != 0 || ny / s >= g.out_height {
                    continue;
                }
                for kx in 0..kw {
                    let Some(nx) = (ix + g.padding).checked_sub(kx) else {
                        continue;
                    };
                    if nx % s != 0 || nx / s >= g.out_width {
                        continue;
                    }
                    let to = ((ny / s * g.out_width + nx / s) * cout) as u32;
                    let tap = ky * kw + kx;
                    for &c in &f.channels[span.clone()] {
                        pairs.push((((c as usize * kh * kw + tap) * cout) as u32, to));
                    }
                    if self.valued {
                        scales.extend_from_slice(&f.values[span.clone()]);
                    }
                }
            }
        }
    }
}

/// Output pixel rows per im2col block for `k` columns.
fn block_rows(k: usize) -> usize {
    (COLS_BUDGET / k.max(1)).clamp(16, 4096)
}

/// im2col of rows `r0..r0 + rows` of the whole batch (row = frame·P + pixel) into `cols`.
fn im2col_rows<R: Real>(g: &ConvGeometry, input: &[R], r0: usize, rows: usize, cols: &mut [R]) {
    let (p, k, in_len) = (g.out_pixels(), g.columns(), g.in_len());
    let mut r = r0;
    while r < r0 + rows {
        let (frame, first) = (r / p, r % p);
        let n = (p - first).min(r0 + rows - r);
        im2col(
            g,
            &input[frame * in_len..][..in_len],
            first,
            n,
            &mut cols[(r - r0) * k..][..n * k],
            |v| v,
        );
        r += n;
    }
}

/// Convolution forward: `out[n][p][co] = Σ_k im2col(input_n)[p][k]·weight[k][co] + bias[co]`,
/// one GEMM over all frames (in row blocks), or, when `spikes` indexes an input sparse
/// enough, sums of the weight rows of the nonzero inputs only (scaled by the values for a
/// valued index).
#[allow(clippy::too_many_arguments)]
pub fn conv_forward<R: Real>(
    g: &ConvGeometry,
    cout: usize,
    frames: usize,
    input: &[R],
    weight: &[R],
    bias: Option<&[R]>,
    spikes: Option<&SpikeIndex<R>>,
    out: &mut [R],
) {
    let (p, k) = (g.out_pixels(), g.columns());
    let out = &mut out[..frames * p * cout];
    match spikes.filter(|s| s.density() <= SPARSE_MAX_DENSITY) {
        Some(index) => {
            out.par_chunks_mut(p * cout).enumerate().for_each_init(
                || (Vec::new(), Vec::new()),
                |(pairs, scales), (frame, out)| {
                    index.taps(g, cout, frame, pairs, scales);
                    out.fill(R::ZERO);
                    let scales = index.valued.then_some(&scales[..]);
                    R::add_row_pairs(weight, pairs, scales, cout, out);
                },
            );
        }
        None => {
            let mb = block_rows(k);
            // One im2col block per worker rather than per block: im2col writes every value.
            out.par_chunks_mut(mb * cout).enumerate().for_each_init(
                || vec![R::ZERO; mb * k],
                |cols, (block, out)| {
                    let rows = out.len() / cout;
                    let cols = &mut cols[..rows * k];
                    im2col_rows(g, input, block * mb, rows, cols);
                    R::gemm(
                        rows,
                        k,
                        cout,
                        cols,
                        Transpose::No,
                        weight,
                        Transpose::No,
                        R::ZERO,
                        out,
                    );
                },
            );
        }
    }
    if let Some(bias) = bias {
        out.par_chunks_mut(ELEMENTWISE_CHUNK / cout * cout + cout)
            .for_each(|chunk| {
                for o in chunk.chunks_exact_mut(cout) {
                    for (v, b) in o.iter_mut().zip(bias) {
                        *v += *b;
                    }
                }
            });
    }
}

/// Convolution backward. Adds the weight gradient `Σ_n im2col(input_n)ᵀ·grad_out_n` to
/// `grad_weight` (walking only the active inputs when `spikes` indexes a sparse 0/1 input),
/// the bias gradient to `grad_bias`, and writes `col2im(grad_out·weightᵀ)` to `grad_input`.
#[allow(clippy::too_many_arguments)]
pub fn conv_backward<R: Real>(
    g: &ConvGeometry,
    cout: usize,
    frames: usize,
    input: &[R],
    weight: &[R],
    spikes: Option<&SpikeIndex<R>>,
    grad_out: &[R],
    grad_weight: &mut [R],
    grad_bias: Option<&mut [R]>,
    grad_input: Option<&mut [R]>,
) {
    let (p, k, in_len) = (g.out_pixels(), g.columns(), g.in_len());
    let grad_out = &grad_out[..frames * p * cout];
    let sparse = spikes.filter(|s| s.density() <= SPARSE_MAX_DENSITY);
    // Pieces of whole frames for the sparse walk, of output rows for the dense GEMM.
    let total = if sparse.is_some() { frames } else { frames * p };
    let groups = pieces(total);
    let per_group = total.div_ceil(groups);
    let partials: Vec<Vec<R>> = (0..groups)
        .into_par_iter()
        .map(|gi| {
            let mut partial = vec![R::ZERO; k * cout];
            let r0 = (gi * per_group).min(total);
            let r1 = ((gi + 1) * per_group).min(total);
            match sparse {
                Some(index) => {
                    let (mut pairs, mut scales) = (Vec::new(), Vec::new());
                    for frame in r0..r1 {
                        index.taps(g, cout, frame, &mut pairs, &mut scales);
                        // From the output gradient row to the weight-gradient row.
                        for pair in pairs.iter_mut() {
                            *pair = (pair.1, pair.0);
                        }
                        let scales = index.valued.then_some(&scales[..]);
                        let gout = &grad_out[frame * p * cout..][..p * cout];
                        R::add_row_pairs(gout, &pairs, scales, cout, &mut partial);
                    }
                }
                None => {
                    let mb = block_rows(k);
                    let mut cols = vec![R::ZERO; mb.min(r1.saturating_sub(r0)) * k];
                    let mut r = r0;
                    while r < r1 {
                        let n = mb.min(r1 - r);
                        im2col_rows(g, input, r, n, &mut cols[..n * k]);
                        R::gemm(
                            k,
                            n,
                            cout,
                            &cols[..n * k],
                            Transpose::Yes,
                            &grad_out[r * cout..][..n * cout],
                            Transpose::No,
                            R::ONE,
                            &mut partial,
                        );
                        r += n;
                    }
                }
            }
            partial
        })
        .collect();
    for partial in &partials {
        for (gw, v) in grad_weight.iter_mut().zip(partial) {
            *gw += *v;
        }
    }
    if let Some(grad_bias) = grad_bias {
        let sums = channel_sums(grad_out, cout);
        for (gb, s) in grad_bias.iter_mut().zip(sums) {
            *gb += R::of_f64(s);
        }
    }
    if let Some(grad_input) = grad_input {
        // The weight rows in tap-major order (ky, kx, c), so that the columns of
        // grad_out·weightᵀ come out tap-major and col2im adds contiguous runs.
        let (taps, cin) = (g.kernel_height * g.kernel_width, g.in_channels);
        let mut weight_t = vec![R::ZERO; k * cout];
        for c in 0..cin {
            for t in 0..taps {
                weight_t[(t * cin + c) * cout..][..cout]
                    .copy_from_slice(&weight[(c * taps + t) * cout..][..cout]);
            }
        }
        let weight = &weight_t[..];
        let mb = block_rows(k).min(p);
        grad_input[..frames * in_len]
            .par_chunks_mut(in_len)
            .zip(grad_out.par_chunks(p * cout))
            // One column block per worker rather than per frame: the GEMM (β = 0) writes
            // every value it reads back.
            .for_each_init(
                || vec![R::ZERO; mb * k],
                |cols, (gin, gout)| {
                    gin.fill(R::ZERO);
                    let mut first = 0;
                    while first < p {
                        let n = mb.min(p - first);
                        R::gemm(
                            n,
                            cout,
                            k,
                            &gout[first * cout..][..n * cout],
                            Transpose::No,
                            weight,
                            Transpose::Yes,
                            R::ZERO,
                            &mut cols[..n * k],
                        );
                        col2im_add_tap_major(g, &cols[..n * k], first, n, gin);
                        first += n;
                    }
                },
            );
    }
}

/// Per-channel f64 sums over the rows of `[rows][width]` data: `piece(rows, acc)` adds the
/// rows of one piece into `acc` (`width` values), and the pieces, whose bounds depend only on
/// `rows` and the thread count, are added in order, so the sums are deterministic.
fn channel_reduce(
    rows: usize,
    width: usize,
    piece: impl Fn(std::ops::Range<usize>, &mut [f64]) + Sync,
) -> Vec<f64> {
    let groups = pieces(rows);
    let per = rows.div_ceil(groups).max(1);
    let partials: Vec<Vec<f64>> = (0..rows.div_ceil(per))
        .into_par_iter()
        .map(|gi| {
            let mut acc = vec![0.0f64; width];
            piece(gi * per..((gi + 1) * per).min(rows), &mut acc);
            acc
        })
        .collect();
    let mut total = vec![0.0f64; width];
    for p in partials {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    total
}

/// Per-channel sums of a `[..][channels]` buffer, in f64.
fn channel_sums<R: Real>(values: &[R], channels: usize) -> Vec<f64> {
    channel_reduce(values.len() / channels, channels, |rows, acc| {
        for row in values[rows.start * channels..rows.end * channels].chunks_exact(channels) {
            for (a, v) in acc.iter_mut().zip(row) {
                *a += v.to_f64();
            }
        }
    })
}

/// What a training batch norm keeps for its backward pass.
#[derive(Debug, Clone)]
pub struct BnSaved {
    /// Batch mean per channel.
    pub mean: Vec<f64>,
    /// 1/√(biased variance + ε) per channel.
    pub inv_std: Vec<f64>,
    /// Biased batch variance per channel.
    pub var: Vec<f64>,
}

/// Batch norm forward in training mode over all rows of `[..][channels]`:
/// `y = γ·factor·(x − μ)/√(σ² + ε) + β` with the batch mean μ and biased variance σ².
pub fn bn_forward_train<R: Real>(
    x: &[R],
    channels: usize,
    gamma: &[R],
    beta: &[R],
    factor: f64,
    eps: f64,
    y: &mut [R],
) -> BnSaved {
    let m = (x.len() / channels) as f64;
    let sums = channel_sums(x, channels);
    let mean: Vec<f64> = sums.iter().map(|s| s / m).collect();
    // Two passes: the centred second moment does not cancel when |μ| ≫ σ.
    let sq = channel_reduce(x.len() / channels, channels, |rows, acc| {
        for row in x[rows.start * channels..rows.end * channels].chunks_exact(channels) {
            for ((a, v), mu) in acc.iter_mut().zip(row).zip(&mean) {
                let d = v.to_f64() - mu;
                *a += d * d;
            }
        }
    });
    let var: Vec<f64> = sq.iter().map(|s| s / m).collect();
    let inv_std: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let (a, b): (Vec<R>, Vec<R>) = (0..channels)
        .map(|c| {
            let a = gamma[c].to_f64() * factor * inv_std[c];
            (R::of_f64(a), R::of_f64(beta[c].to_f64() - mean[c] * a))
        })
        .unzip();
    affine(x, channels, &a, &b, y);
    BnSaved { mean, inv_std, var }
}

/// Batch norm forward with fixed statistics (evaluation).
#[allow(clippy::too_many_arguments)]
pub fn bn_forward_eval<R: Real>(
    x: &[R],
    channels: usize,
    gamma: &[R],
    beta: &[R],
    running_mean: &[R],
    running_var: &[R],
    factor: f64,
    eps: f64,
    y: &mut [R],
) {
    let (a, b): (Vec<R>, Vec<R>) = (0..channels)
        .map(|c| {
            let a = gamma[c].to_f64() * factor / (running_var[c].to_f64() + eps).sqrt();
            (
                R::of_f64(a),
                R::of_f64(beta[c].to_f64() - running_mean[c].to_f64() * a),
            )
        })
        .unzip();
    affine(x, channels, &a, &b, y);
}

/// `y = a[c]·x + b[c]` per channel.
fn affine<R: Real>(x: &[R], channels: usize, a: &[R], b: &[R], y: &mut [R]) {
    let chunk = (ELEMENTWISE_CHUNK / channels).max(1) * channels;
    y[..x.len()]
        .par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk))
        .for_each(|(y, x)| {
            for (yr, xr) in y.chunks_exact_mut(channels).zip(x.chunks_exact(channels)) {
                for (((y, x), a), b) in yr.iter_mut().zip(xr).zip(a).zip(b) {
                    *y = *a * *x + *b;
                }
            }
        });
}

/// Batch norm backward (training mode): returns (dγ, dβ) and writes dL/dx.
#[allow(clippy::too_many_arguments)]
pub fn bn_backward<R: Real>(
    x: &[R],
    channels: usize,
    gamma: &[R],
    factor: f64,
    saved: &BnSaved,
    grad_y: &[R],
    grad_x: &mut [R],
) -> (Vec<f64>, Vec<f64>) {
    let m = (x.len() / channels) as f64;
    // One pass for both sums: [Σdy | Σdy·x̂] side by side.
    let both = channel_reduce(x.len() / channels, 2 * channels, |rows, acc| {
        let (sum_dy, sum_dy_xhat) = acc.split_at_mut(channels);
        let span = rows.start * channels..rows.end * channels;
        for (dy, x) in grad_y[span.clone()]
            .chunks_exact(channels)
            .zip(x[span].chunks_exact(channels))
        {
            for ((((s, sx), dy), x), (mu, inv_std)) in sum_dy
                .iter_mut()
                .zip(sum_dy_xhat.iter_mut())
                .zip(dy)
                .zip(x)
                .zip(saved.mean.iter().zip(&saved.inv_std))
            {
                let dy = dy.to_f64();
                *s += dy;
                *sx += dy * (x.to_f64() - mu) * inv_std;
            }
        }
    });
    let (sum_dy, sum_dy_xhat) = both.split_at(channels);
    let sum_dy = sum_dy.to_vec();
    // dx = γ·f·s/M·(M·dy − Σdy − x̂·Σ(dy·x̂)) = k1·dy + k2·x + k3, per channel.
    let mut k1 = Vec::with_capacity(channels);
    let mut k2 = Vec::with_capacity(channels);
    let mut k3 = Vec::with_capacity(channels);
    for c in 0..channels {
        let s = saved.inv_std[c];
        let scale = gamma[c].to_f64() * factor * s;
        let a2 = -scale * sum_dy_xhat[c] * s / m;
        k1.push(R::of_f64(scale));
        k2.push(R::of_f64(a2));
        k3.push(R::of_f64(-scale * sum_dy[c] / m - a2 * saved.mean[c]));
    }
    let chunk = (ELEMENTWISE_CHUNK / channels).max(1) * channels;
    grad_x[..x.len()]
        .par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk).zip(grad_y.par_chunks(chunk)))
        .for_each(|(gx, (x, gy))| {
            for ((gr, xr), yr) in gx
                .chunks_exact_mut(channels)
                .zip(x.chunks_exact(channels))
                .zip(gy.chunks_exact(channels))
            {
                for ((((g, dy), x), (k1, k2)), k3) in gr
                    .iter_mut()
                    .zip(yr)
                    .zip(xr)
                    .zip(k1.iter().zip(&k2))
                    .zip(&k3)
                {
                    *g = *k1 * *dy + *k2 * *x + *k3;
                }
            }
        });
    let dgamma = (0..channels).map(|c| factor * sum_dy_xhat[c]).collect();
    (dgamma, sum_dy)
}

/// Average pool forward (k×k windows, no padding), frame by frame.
#[allow(clippy::too_many_arguments)]
pub fn avg_pool_forward<R: Real>(
    (h, w, c): (usize, usize, usize),
    k: usize,
    stride: usize,
    (oh, ow): (usize, usize),
    frames: usize,
    x: &[R],
    y: &mut [R],
) {
    let inv = R::of_f64(1.0 / (k * k) as f64);
    y[..frames * oh * ow * c]
        .par_chunks_mut(oh * ow * c)
        .zip(x.par_chunks(h * w * c))
        .for_each(|(y, x)| {
            for oy in 0..oh {
                for ox in 0..ow {
                    let out = &mut y[(oy * ow + ox) * c..][..c];
                    out.fill(R::ZERO);
                    for ky in 0..k {
                        for kx in 0..k {
                            let src = &x[((oy * stride + ky) * w + ox * stride + kx) * c..][..c];
                            for (o, s) in out.iter_mut().zip(src) {
                                *o += *s;
                            }
                        }
                    }
                    for o in out.iter_mut() {
                        *o *= inv;
                    }
                }
            }
        });
}

/// Average pool backward: each input gets the mean of its windows' gradients.
#[allow(clippy::too_many_arguments)]
pub fn avg_pool_backward<R: Real>(
    (h, w, c): (usize, usize, usize),
    k: usize,
    stride: usize,
    (oh, ow): (usize, usize),
    frames: usize,
    grad_y: &[R],
    grad_x: &mut [R],
) {
    let inv = R::of_f64(1.0 / (k * k) as f64);
    // Windows that tile the input exactly (the usual 2×2, stride 2): each input gets the
    // one gradient of its window, written without a fill and a read-modify-write.
    let tiles = stride == k && oh * k == h && ow * k == w;
    grad_x[..frames * h * w * c]
        .par_chunks_mut(h * w * c)
        .zip(grad_y.par_chunks(oh * ow * c))
        .for_each(|(gx, gy)| {
            if tiles {
                for (y, gx_row) in gx.chunks_exact_mut(w * c).enumerate() {
                    let gy_row = &gy[(y / k) * ow * c..][..ow * c];
                    for (x, d) in gx_row.chunks_exact_mut(c).enumerate() {
                        for (d, g) in d.iter_mut().zip(&gy_row[(x / k) * c..][..c]) {
                            *d = *g * inv;
                        }
                    }
                }
                return;
            }
            gx.fill(R::ZERO);
            for oy in 0..oh {
                for ox in 0..ow {
                    let g = &gy[(oy * ow + ox) * c..][..c];
                    for ky in 0..k {
                        for kx in 0..k {
                            let dst =
                                &mut gx[((oy * stride + ky) * w + ox * stride + kx) * c..][..c];
                            for (d, s) in dst.iter_mut().zip(g) {
                                *d += *s * inv;
                            }
                        }
                    }
                }
            }
        });
}

/// Global average pool forward: the mean over the `pixels` positions of each frame.
pub fn global_pool_forward<R: Real>(pixels: usize, c: usize, frames: usize, x: &[R], y: &mut [R]) {
    let inv = R::of_f64(1.0 / pixels as f64);
    y[..frames * c]
        .par_chunks_mut(c)
        .zip(x.par_chunks(pixels * c))
        .for_each(|(y, x)| {
            y.fill(R::ZERO);
            for px in x.chunks_exact(c) {
                for (o, v) in y.iter_mut().zip(px) {
                    *o += *v;
                }
            }
            for o in y.iter_mut() {
                *o *= inv;
            }
        });
}

/// Global average pool backward.
pub fn global_pool_backward<R: Real>(
    pixels: usize,
    c: usize,
    frames: usize,
    grad_y: &[R],
    grad_x: &mut [R],
) {
    let inv = R::of_f64(1.0 / pixels as f64);
    grad_x[..frames * pixels * c]
        .par_chunks_mut(pixels * c)
        .zip(grad_y.par_chunks(c))
        .for_each(|(gx, gy)| {
            for px in gx.chunks_exact_mut(c) {
                for (d, g) in px.iter_mut().zip(gy) {
                    *d = *g * inv;
                }
            }
        });
}

/// Linear forward: `y[n] = x[n]·W + b` with W `[In][Out]`; sparse row sums when `binary`
/// says the input is 0/1.
#[allow(clippy::too_many_arguments)]
pub fn linear_forward<R: Real>(
    inputs: usize,
    outputs: usize,
    frames: usize,
    x: &[R],
    weight: &[R],
    bias: Option<&[R]>,
    binary: bool,
    y: &mut [R],
) {
    let y = &mut y[..frames * outputs];
    if binary {
        y.par_chunks_mut(outputs)
            .zip(x.par_chunks(inputs))
            .for_each(|(y, x)| {
                let rows: Vec<u32> = x
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| **v != R::ZERO)
                    .map(|(i, _)| (i * outputs) as u32)
                    .collect();
                R::sum_rows(weight, &rows, y);
            });
    } else {
        R::gemm(
            frames,
            inputs,
            outputs,
            x,
            Transpose::No,
            weight,
            Transpose::No,
            R::ZERO,
            y,
        );
    }
    if let Some(bias) = bias {
        for row in y.chunks_exact_mut(outputs) {
            for (v, b) in row.iter_mut().zip(bias) {
                *v += *b;
            }
        }
    }
}

/// Linear backward: adds `xᵀ·grad_y` to `grad_weight` and `Σ grad_y` to `grad_bias`, writes
/// `grad_y·Wᵀ` to `grad_x`.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward<R: Real>(
    inputs: usize,
    outputs: usize,
    frames: usize,
    x: &[R],
    weight: &[R],
    grad_y: &[R],
    grad_weight: &mut [R],
    grad_bias: Option<&mut [R]>,
    grad_x: Option<&mut [R]>,
) {
    R::gemm(
        inputs,
        frames,
        outputs,
        x,
        Transpose::Yes,
        grad_y,
        Transpose::No,
        R::ONE,
        grad_weight,
    );
    if let Some(grad_bias) = grad_bias {
        let sums = channel_sums(&grad_y[..frames * outputs], outputs);
        for (gb, s) in grad_bias.iter_mut().zip(sums) {
            *gb += R::of_f64(s);
        }
    }
    if let Some(grad_x) = grad_x {
        R::gemm(
            frames,
            outputs,
            inputs,
            grad_y,
            Transpose::No,
            weight,
            Transpose::Yes,
            R::ZERO,
            grad_x,
        );
    }
}

/// Neuron forward over `[T][L]` currents: writes the potentials H and outputs O (spikes, or
/// the surrogate value under [`Firing::Surrogate`]). Returns the number of nonzero outputs.
///
/// The membrane U[t−1] is not stored: it is `reset(H[t−1], O[t−1])`, recomputed from the
/// previous timestep's H and O, which saves a buffer the size of one timestep and its writes.
pub fn neuron_forward<R: Real>(
    cfg: &SpikingConfig,
    firing: Firing,
    timesteps: usize,
    x: &[R],
    h: &mut [R],
    o: &mut [R],
) -> usize {
    let l = x.len() / timesteps;
    let mut count = 0usize;
    for t in 0..timesteps {
        let (h_done, h_t) = h[..timesteps * l].split_at_mut(t * l);
        let (o_done, o_t) = o[..timesteps * l].split_at_mut(t * l);
        let previous = t
            .checked_sub(1)
            .map(|p| (&h_done[p * l..][..l], &o_done[p * l..][..l]));
        let x_t = &x[t * l..][..l];
        count += h_t[..l]
            .par_chunks_mut(ELEMENTWISE_CHUNK)
            .zip(o_t[..l].par_chunks_mut(ELEMENTWISE_CHUNK))
            .enumerate()
            .map(|(ci, (h, o))| {
                let at = ci * ELEMENTWISE_CHUNK;
                let x = &x_t[at..][..h.len()];
                let previous =
                    previous.map(|(ph, po)| (&ph[at..][..h.len()], &po[at..][..h.len()]));
                fire(cfg, firing, x, previous, h, o)
            })
            .sum::<usize>();
    }
    count
}

/// One timestep of the neuron over a slice: `previous` holds H and O of the timestep before
/// (None at t = 0, where the membrane is 0). Returns the number of nonzero outputs.
fn fire<R: Real>(
    cfg: &SpikingConfig,
    firing: Firing,
    x: &[R],
    previous: Option<(&[R], &[R])>,
    h: &mut [R],
    o: &mut [R],
) -> usize {
    let kind = cfg.kind;
    let vth = R::of_f32(VTH);
    let mut n = 0usize;
    for i in 0..h.len() {
        let u = previous.map_or(R::ZERO, |(ph, po)| kind.reset_as(ph[i], po[i]));
        let pot = kind.charge_as(u, x[i]);
        let out = match firing {
            Firing::Spike => {
                if pot >= vth {
                    R::ONE
                } else {
                    R::ZERO
                }
            }
            Firing::Surrogate => R::of_f64(cfg.surrogate.soft_spike_f64(pot.to_f64(), cfg.mpr)),
        };
        h[i] = pot;
        o[i] = out;
        n += usize::from(out != R::ZERO);
    }
    n
}

/// Neuron backward (BPTT through the membrane, see
/// [`crate::snn::neuron::NeuronKind::grad_potential`]): from dL/dO `[T][L]`, the saved H and O,
/// writes dL/dX.
///
/// dL/dU[t] is `leak·dL/dH[t + 1]`, read back from the dL/dX already written for t + 1
/// (dX = dH), so no membrane-gradient buffer is kept; the surrogate gradients of a slice are
/// computed into its dL/dX, which the BPTT step then overwrites in place.
pub fn neuron_backward<R: Real>(
    cfg: &SpikingConfig,
    timesteps: usize,
    h: &[R],
    o: &[R],
    grad_o: &[R],
    grad_x: &mut [R],
) {
    let l = h.len() / timesteps;
    for t in (0..timesteps).rev() {
        let (head, later) = grad_x[..timesteps * l].split_at_mut((t + 1) * l);
        let next = (t + 1 < timesteps).then(|| &later[..l]);
        let range = t * l..(t + 1) * l;
        let (h_t, o_t, go_t) = (&h[range.clone()], &o[range.clone()], &grad_o[range]);
        head[t * l..]
            .par_chunks_mut(ELEMENTWISE_CHUNK)
            .enumerate()
            .for_each(|(ci, gx)| {
                let at = ci * ELEMENTWISE_CHUNK;
                let n = gx.len();
                let h = &h_t[at..][..n];
                R::spike_gradients(cfg.surrogate, cfg.mpr, h, gx);
                let next = next.map(|g| &g[at..][..n]);
                bptt_step(cfg, h, &o_t[at..][..n], &go_t[at..][..n], next, gx);
            });
    }
}

/// One timestep of BPTT over a slice, with the neuron kind and detach flag hoisted out of the
/// loop so each arm is a straight loop. `grad_x` holds dO/dH on entry and dL/dH on return;
/// `next` is dL/dH of the following timestep (None at the last).
fn bptt_step<R: Real>(
    cfg: &SpikingConfig,
    h: &[R],
    o: &[R],
    grad_o: &[R],
    next: Option<&[R]>,
    grad_x: &mut [R],
) {
    use crate::snn::neuron::NeuronKind;
    macro_rules! arm {
        ($kind:expr, $detach:expr) => {{
            let kind = $kind;
            let leak: R = kind.leak();
            match next {
                Some(next) => {
                    for i in 0..h.len() {
                        grad_x[i] = kind.grad_potential(
                            $detach,
                            h[i],
                            o[i],
                            grad_x[i],
                            grad_o[i],
                            leak * next[i],
                        );
                    }
                }
                None => {
                    for i in 0..h.len() {
                        grad_x[i] =
                            kind.grad_potential($detach, h[i], o[i], grad_x[i], grad_o[i], R::ZERO);
                    }
                }
            }
        }};
    }
    match (cfg.kind, cfg.detach_reset) {
        (NeuronKind::Srif, false) => arm!(NeuronKind::Srif, false),
        (NeuronKind::Srif, true) => arm!(NeuronKind::Srif, true),
        (NeuronKind::IfHard, false) => arm!(NeuronKind::IfHard, false),
        (NeuronKind::IfHard, true) => arm!(NeuronKind::IfHard, true),
        (k @ NeuronKind::LifHard { .. }, false) => arm!(k, false),
        (k @ NeuronKind::LifHard { .. }, true) => arm!(k, true),
    }
}

/// The output accumulation: logits `[B][C]` = mean over T of the per-timestep outputs
/// `[T][B][C]`.
pub fn output_logits<R: Real>(timesteps: usize, per_step: &[R]) -> Vec<R> {
    let bc = per_step.len() / timesteps;
    let inv = 1.0 / timesteps as f64;
    (0..bc)
        .map(|i| {
            let s: f64 = (0..timesteps).map(|t| per_step[t * bc + i].to_f64()).sum();
            R::of_f64(s * inv)
        })
        .collect()
}
