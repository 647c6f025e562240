//! The dense executor: every conv as im2col + f64 GEMM ([`crate::kernels`]), every linear as
//! a GEMM over timesteps, then the neuron scan. It touches every neuron and every weight, so
//! its cost does not depend on the input; it is the fast path for dense activity and the
//! baseline the event-driven executor is measured against.
//!
//! It runs **layer-major**: each node is computed for all the call's timesteps before the
//! next node. That is valid because layers only feed forward (the recurrence is inside each
//! neuron, whose scan over t runs in order from the state's membranes), and it lets one GEMM
//! cover T×P rows, so the weight matrix is packed once per layer instead of once per
//! timestep; the im2col rows are processed in chunks to bound scratch memory, and each chunk's
//! rows in bands across the pool's threads. Each node's T×len output is freed (for reuse)
//! after its last consumer, so peak memory is a few layers × T, not the whole network × T.
//!
//! Exactness: the GEMM sums in its own blocked order, but in f64 the sums are exact (see the
//! contract in `exec`), so its spikes and logits equal the reference executor's bit for bit.
//! Weights are converted to f64 once, when the plan is built, and weights and biases are read
//! from the plan's own network only.
//!
//! Nodes with int8 weights run as an integer GEMM instead ([`crate::kernels::igemm`]): 0/1
//! im2col bytes times the int8 weights into i32, exact in any order, then
//! [`int8_current`] per output value; their f64 weights are not made.

use rayon::prelude::*;

use crate::binner::SparseFrame;
use crate::exec::pool::{Pool, within};
use crate::exec::stats::{FanOut, InferenceStats, QuantizationError};
use crate::exec::{ConvNode, LayerSpikes, RunOptions, RunOutput, State, frame_to_nhwc};
use crate::kernels::{ConvGeometry, Transpose, dgemm, igemm, im2col};
use crate::snn::network::{Int8Weights, Network, Op, Shape, int8_current, int8_currents};
use crate::snn::neuron::fire;

/// Target size of one im2col chunk, in f64 values (8 MiB).
const CHUNK_VALUES: usize = 1 << 20;

/// Fewest im2col rows per band when a chunk is split across threads: smaller GEMMs lose more
/// to packing than a thread gains.
const BAND_ROWS: usize = 64;

/// What the dense executor computes once per network: f64 weights and fan-out tables.
#[derive(Debug)]
pub struct DensePlan {
    /// Per node: f64 weights of Conv2d ([Cin·Kh·Kw][Cout]) and Linear ([In][Out]).
    weights: Vec<Vec<f64>>,
    /// Per node: fan-out tables for counting synaptic ops.
    fan_outs: Vec<Option<FanOut>>,
    /// Per node: the last node that reads its output.
    last_use: Vec<usize>,
}

/// The dense executor's per-worker buffers.
#[derive(Debug, Default)]
pub struct DenseScratch {
    /// Per node: its output for all timesteps, `[T][len]`, while still needed.
    values: Vec<Vec<f32>>,
    /// Buffers of freed node outputs, reused.
    free: Vec<Vec<f32>>,
    /// im2col chunk [rows][K] (also a linear's f64 input).
    cols: Vec<f64>,
    /// GEMM result chunk [rows][Cout].
    acc: Vec<f64>,
    /// The int8 path's im2col chunk of 0/1 spikes [rows][K] (also a linear's input).
    spikes: Vec<u8>,
    /// The int8 path's integer sums [rows][Cout].
    sums: Vec<i32>,
}

impl DenseScratch {
    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        let f32s: usize = self
            .values
            .iter()
            .chain(&self.free)
            .map(Vec::capacity)
            .sum();
        f32s * std::mem::size_of::<f32>()
            + (self.cols.capacity() + self.acc.capacity()) * std::mem::size_of::<f64>()
            + self.spikes.capacity()
            + self.sums.capacity() * std::mem::size_of::<i32>()
    }

    /// A zeroed buffer of `len` values, from the freed ones when possible.
    fn buffer(&mut self, len: usize) -> Vec<f32> {
        let mut b = self.free.pop().unwrap_or_default();
        b.clear();
        b.resize(len, 0.0);
        b
    }
}

fn f64_weights(op: &Op) -> Vec<f64> {
    match op {
        Op::Conv2d { weight, .. } | Op::Linear { weight, .. } => {
            weight.iter().map(|&w| f64::from(w)).collect()
        }
        _ => Vec::new(),
    }
}

/// The im2col rows `first..first + rows` of a layer-major input `x` (`[T][in_len]`), whose
/// row r is timestep r / P, output pixel r % P.
fn im2col_rows<T: Copy + Default>(
    g: &ConvGeometry,
    x: &[f32],
    first: usize,
    rows: usize,
    cols: &mut [T],
    convert: impl Fn(f32) -> T + Copy,
) {
    let (p, k, in_len) = (g.out_pixels(), g.columns(), g.in_len());
    let mut r = 0;
    while r < rows {
        let (t, pos) = ((first + r) / p, (first + r) % p);
        let n = (p - pos).min(rows - r);
        im2col(
            g,
            &x[t * in_len..][..in_len],
            pos,
            n,
            &mut cols[r * k..][..n * k],
            convert,
        );
        r += n;
    }
}

impl DensePlan {
    /// Prepares `network`: f64 weights and fan-out tables.
    pub(crate) fn new(network: &Network) -> Self {
        let nodes = network.nodes();
        let mut last_use: Vec<usize> = (0..nodes.len()).collect();
        for (i, n) in nodes.iter().enumerate() {
            for &j in &n.inputs {
                last_use[j] = last_use[j].max(i);
            }
        }
        Self {
            weights: nodes
                .iter()
                .enumerate()
                .map(|(i, n)| match network.int8(i) {
                    Some(_) => Vec::new(),
                    None => f64_weights(&n.op),
                })
                .collect(),
            fan_outs: (0..nodes.len()).map(|i| FanOut::of(network, i)).collect(),
            last_use,
        }
    }

    /// Bytes of the f64 weights.
    pub fn cache_bytes(&self) -> usize {
        self.weights
            .iter()
            .map(|w| w.len() * std::mem::size_of::<f64>())
            .sum()
    }

    /// Runs `frames` from `state` (validated by the caller), calling `observer(node, t,
    /// values)` with every node's output at every timestep (node by node, then t), and
    /// computing only nodes up to `stop_after` when given (the logits are then meaningless).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run(
        &self,
        network: &Network,
        scratch: &mut DenseScratch,
        state: &mut State,
        frames: &[SparseFrame],
        options: &RunOptions,
        stop_after: Option<usize>,
        observer: &mut dyn FnMut(usize, usize, &[f32]),
        pool: Option<&Pool>,
    ) -> RunOutput {
        let nodes = network.nodes();
        let steps = frames.len();
        let last = stop_after.unwrap_or(nodes.len() - 1).min(nodes.len() - 1);
        let threads = pool.map_or(1, Pool::threads);
        let mut stats = InferenceStats::new(network);
        stats.timesteps = steps as u64;
        stats.quantization = options.quantization_node.map(QuantizationError::new);
        let mut spikes: Option<Vec<LayerSpikes>> = options.record_spikes.then(Vec::new);
        scratch.values.resize_with(nodes.len(), Vec::new);
        for i in 0..scratch.values.len() {
            if !scratch.values[i].is_empty() {
                let freed = std::mem::take(&mut scratch.values[i]);
                scratch.free.push(freed);
            }
        }

        for (i, node) in nodes.iter().enumerate().take(last + 1) {
            let s = node.shape;
            let len = s.len();
            let mut out = scratch.buffer(steps * len);
            let in_shape = node.inputs.first().map_or(s, |&j| nodes[j].shape);
            let in_len = in_shape.len();
            let row = &mut stats.nodes[i];
            match &node.op {
                Op::Input => {
                    for (frame, dst) in frames.iter().zip(out.chunks_exact_mut(len)) {
                        frame_to_nhwc(frame, dst);
                    }
                }
                Op::Conv2d { .. } => {
                    // Always a conv view: the network validated this node.
                    let Some(conv) = ConvNode::of(network, i) else {
                        scratch.values[i] = out;
                        continue;
                    };
                    let g = conv.geometry;
                    let x = &scratch.values[node.inputs[0]];
                    let k = g.columns();
                    let cout = conv.out_channels;
                    let weights = &self.weights[i];
                    let total = steps * g.out_pixels();
                    let chunk = (CHUNK_VALUES / k.max(1)).clamp(1, total.max(1));
                    let mut start = 0;
                    if let Some(q) = network.int8(i) {
                        // Every row done: the f64 loop below has nothing left to do.
                        start = total;
                        conv_int8(
                            &g,
                            x,
                            q,
                            conv.bias,
                            total,
                            chunk,
                            threads,
                            pool,
                            &mut scratch.spikes,
                            &mut scratch.sums,
                            &mut out,
                        );
                    }
                    while start < total {
                        let rows = chunk.min(total - start);
                        scratch.cols.resize(rows * k, 0.0);
                        scratch.acc.clear();
                        for _ in 0..rows {
                            scratch.acc.extend(conv.bias.iter().map(|&b| f64::from(b)));
                        }
                        let band = |first: usize, cols: &mut [f64], acc: &mut [f64]| {
                            let n = acc.len() / cout.max(1);
                            im2col_rows(&g, x, start + first, n, cols, f64::from);
                            dgemm(
                                n,
                                k,
                                cout,
                                cols,
                                Transpose::No,
                                weights,
                                Transpose::No,
                                1.0,
                                acc,
                            );
                        };
                        let per_band = rows.div_ceil(threads).max(BAND_ROWS);
                        if threads > 1 && rows > per_band {
                            let (cols, acc) = (&mut scratch.cols, &mut scratch.acc);
                            within(pool, || {
                                cols.par_chunks_mut(per_band * k)
                                    .zip(acc.par_chunks_mut(per_band * cout))
                                    .enumerate()
                                    .for_each(|(b, (c, a))| band(b * per_band, c, a));
                            });
                        } else {
                            band(0, &mut scratch.cols, &mut scratch.acc);
                        }
                        let dst = &mut out[start * cout..][..rows * cout];
                        for (o, &a) in dst.iter_mut().zip(&scratch.acc) {
                            *o = a as f32;
                        }
                        start += rows;
                    }
                    if let Some(f) = &self.fan_outs[i] {
                        for xt in x.chunks_exact(in_len) {
                            row.synaptic_ops += f.synaptic_ops(xt);
                        }
                    }
                    row.dense_macs += network.dense_macs(i) * steps as u64;
                    row.performed_ops += (total * k * cout) as u64;
                }
                Op::Linear {
                    in_features,
                    out_features,
                    bias,
                    ..
                } => {
                    let x = &scratch.values[node.inputs[0]];
                    if let Some(q) = network.int8(i) {
                        // Spikes, so `as u8` is exact (checked when the weights were attached).
                        scratch.spikes.clear();
                        scratch.spikes.extend(x.iter().map(|&v| v as u8));
                        scratch.sums.clear();
                        scratch.sums.resize(steps * out_features, 0);
                        igemm(
                            steps,
                            *in_features,
                            *out_features,
                            &scratch.spikes,
                            &q.weight,
                            &mut scratch.sums,
                        );
                        for (j, (o, &sum)) in out.iter_mut().zip(&scratch.sums).enumerate() {
                            let c = j % out_features;
                            *o = int8_current(sum, q.scale[c], bias[c]);
                        }
                    } else {
                        scratch.cols.clear();
                        scratch.cols.extend(x.iter().map(|&v| f64::from(v)));
                        scratch.acc.clear();
                        for _ in 0..steps {
                            scratch.acc.extend(bias.iter().map(|&b| f64::from(b)));
                        }
                        dgemm(
                            steps,
                            *in_features,
                            *out_features,
                            &scratch.cols,
                            Transpose::No,
                            &self.weights[i],
                            Transpose::No,
                            1.0,
                            &mut scratch.acc,
                        );
                        for (o, &a) in out.iter_mut().zip(&scratch.acc) {
                            *o = a as f32;
                        }
                    }
                    if let Some(f) = &self.fan_outs[i] {
                        for xt in x.chunks_exact(in_len) {
                            row.synaptic_ops += f.synaptic_ops(xt);
                        }
                    }
                    row.dense_macs += network.dense_macs(i) * steps as u64;
                    row.performed_ops += (steps * in_features * out_features) as u64;
                }
                Op::AvgPool { k, stride } | Op::SumPool { k, stride } => {
                    let x = &scratch.values[node.inputs[0]];
                    let divisor = match node.op {
                        Op::AvgPool { .. } => (k * k) as f64,
                        _ => 1.0,
                    };
                    for (xt, ot) in x.chunks_exact(in_len).zip(out.chunks_exact_mut(len)) {
                        pool_step(xt, in_shape, s, *k, *stride, divisor, &mut scratch.acc, ot);
                    }
                }
                Op::GlobalAvgPool => {
                    let x = &scratch.values[node.inputs[0]];
                    let count = (in_shape.height * in_shape.width) as f64;
                    let acc = &mut scratch.acc;
                    for (xt, ot) in x.chunks_exact(in_len).zip(out.chunks_exact_mut(len)) {
                        acc.clear();
                        acc.resize(s.channels, 0.0);
                        for pixel in xt.chunks_exact(in_shape.channels) {
                            for (a, &v) in acc.iter_mut().zip(pixel) {
                                *a += f64::from(v);
                            }
                        }
                        for (o, &a) in ot.iter_mut().zip(acc.iter()) {
                            *o = (a / count) as f32;
                        }
                    }
                }
                Op::Neuron(kind) => {
                    let x = &scratch.values[node.inputs[0]];
                    let membranes = &mut state.membranes[network.membrane_range(i)];
                    let mut layer = LayerSpikes {
                        node: i,
                        steps: Vec::new(),
                    };
                    for (xt, ot) in x.chunks_exact(len).zip(out.chunks_exact_mut(len)) {
                        let fired = match stats.quantization.as_mut() {
                            Some(q) if q.node == i => {
                                let mut count = 0u64;
                                for ((u, &current), o) in
                                    membranes.iter_mut().zip(xt).zip(ot.iter_mut())
                                {
                                    let h = kind.charge(*u, current);
                                    let spike = fire(h);
                                    q.observe(h, spike);
                                    *u = kind.reset(h, spike);
                                    *o = spike;
                                    count += spike as u64;
                                }
                                count
                            }
                            _ => kind.step_all(membranes, xt, ot) as u64,
                        };
                        let row = &mut stats.nodes[i];
                        row.spikes += fired;
                        row.neuron_updates += len as u64;
                        row.neuron_updates_total += len as u64;
                        if spikes.is_some() {
                            layer.steps.push(
                                ot.iter()
                                    .enumerate()
                                    .filter(|(_, v)| **v != 0.0)
                                    .map(|(j, _)| j as u32)
                                    .collect(),
                            );
                        }
                    }
                    if let Some(all) = spikes.as_mut() {
                        all.push(layer);
                    }
                }
                Op::Add => {
                    let (a, b) = (
                        &scratch.values[node.inputs[0]],
                        &scratch.values[node.inputs[1]],
                    );
                    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
                        *o = (f64::from(a) + f64::from(b)) as f32;
                    }
                }
                Op::Flatten => out.copy_from_slice(&scratch.values[node.inputs[0]]),
                Op::Output => {
                    let x = &scratch.values[node.inputs[0]];
                    for xt in x.chunks_exact(len) {
                        for (sum, &v) in state.output_sum.iter_mut().zip(xt) {
                            *sum += v;
                        }
                    }
                    out.copy_from_slice(x);
                }
            }
            for (t, ot) in out.chunks_exact(len).enumerate() {
                observer(i, t, ot);
            }
            scratch.values[i] = out;
            // Free inputs nobody reads after this node.
            for &j in &node.inputs {
                if self.last_use[j] == i && !scratch.values[j].is_empty() {
                    let freed = std::mem::take(&mut scratch.values[j]);
                    scratch.free.push(freed);
                }
            }
        }
        state.steps += steps as u64;
        state.output_steps += steps as u32;
        RunOutput {
            logits: state.logits(),
            timesteps: steps,
            spikes,
            stats,
        }
    }
}

/// An int8 conv over all `total` im2col rows (T × P) of a layer-major spike input `x`: the
/// rows as 0/1 bytes, one integer GEMM per band of rows (on the pool when it has several
/// threads), and [`int8_current`] once per output value, in chunks of `chunk` rows.
#[allow(clippy::too_many_arguments)]
fn conv_int8(
    g: &ConvGeometry,
    x: &[f32],
    q: &Int8Weights,
    bias: &[f32],
    total: usize,
    chunk: usize,
    threads: usize,
    pool: Option<&Pool>,
    cols: &mut Vec<u8>,
    sums: &mut Vec<i32>,
    out: &mut [f32],
) {
    let (k, cout) = (g.columns(), bias.len());
    let mut start = 0;
    while start < total {
        let rows = chunk.min(total - start);
        cols.resize(rows * k, 0);
        sums.clear();
        sums.resize(rows * cout, 0);
        let band = |first: usize, cols: &mut [u8], sums: &mut [i32]| {
            let n = sums.len() / cout.max(1);
            // Inputs are spikes (checked when the weights were attached), so `as u8` is exact.
            im2col_rows(g, x, start + first, n, cols, |v| v as u8);
            igemm(n, k, cout, cols, &q.weight, sums);
        };
        let per_band = rows.div_ceil(threads).max(BAND_ROWS);
        if threads > 1 && rows > per_band {
            within(pool, || {
                cols.par_chunks_mut(per_band * k)
                    .zip(sums.par_chunks_mut(per_band * cout))
                    .enumerate()
                    .for_each(|(b, (c, s))| band(b * per_band, c, s));
            });
        } else {
            band(0, cols, sums);
        }
        let dst = &mut out[start * cout..][..rows * cout];
        for (pixel, sum) in dst.chunks_exact_mut(cout).zip(sums.chunks_exact(cout)) {
            int8_currents(sum, &q.scale, bias, pixel);
        }
        start += rows;
    }
}

/// k×k pooling of one timestep with the window sum in f64, divided by `divisor` (k² for
/// average, 1 for sum).
#[allow(clippy::too_many_arguments)]
fn pool_step(
    x: &[f32],
    in_shape: Shape,
    s: Shape,
    k: usize,
    stride: usize,
    divisor: f64,
    acc: &mut Vec<f64>,
    out: &mut [f32],
) {
    let c = s.channels;
    acc.clear();
    acc.resize(c, 0.0);
    for oy in 0..s.height {
        for ox in 0..s.width {
            acc.fill(0.0);
            for dy in 0..k {
                for dx in 0..k {
                    let src = &x[in_shape.index(oy * stride + dy, ox * stride + dx, 0)..][..c];
                    for (a, &v) in acc.iter_mut().zip(src) {
                        *a += f64::from(v);
                    }
                }
            }
            let dst = &mut out[s.index(oy, ox, 0)..][..c];
            for (o, &a) in dst.iter_mut().zip(acc.iter()) {
                *o = (a / divisor) as f32;
            }
        }
    }
}
