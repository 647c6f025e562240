//! The dense executor: every conv as im2col + f64 GEMM (`matrixmultiply::dgemm`), every
//! linear as a GEMM over timesteps, then the neuron scan. It touches every neuron and every
//! weight, so its cost does not depend on the input; it is the fast path for dense activity and
//! the baseline the event-driven executor is measured against.
//!
//! It runs **layer-major**: each node is computed for all T timesteps before the next node.
//! That is valid because layers only feed forward (the recurrence is inside each neuron, whose
//! scan over t runs in order), and it lets one GEMM cover T×P rows, so the weight matrix is
//! packed once per layer instead of once per timestep; the im2col rows are processed in chunks
//! to bound scratch memory. Each node's T×len output is freed (to a pool) after its last
//! consumer, so peak memory is a few layers × T, not the whole network × T.
//!
//! Exactness: the GEMM sums in its own blocked order, but in f64 the sums are exact (see the
//! contract in `exec`), so its spikes and logits equal the reference executor's bit for bit.
//! Weights are converted to f64 once, when the executor is prepared for a network.

use crate::binner::SparseFrame;
use crate::exec::stats::{FanOut, InferenceStats, QuantizationError};
use crate::exec::{
    ExecError, Executor, LayerSpikes, Output, RunOptions, frame_to_nhwc, validate_run,
};
use crate::snn::network::{Network, Op, Shape};
use crate::snn::neuron::fire;
use crate::snn::state::State;

/// Target size of one im2col chunk, in f64 values (8 MiB).
const CHUNK_VALUES: usize = 1 << 20;

/// Identifies the network an executor was prepared for (shapes, ops and parameter count).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint(Vec<(&'static str, Shape, usize)>);

impl Fingerprint {
    fn of(network: &Network) -> Self {
        Self(
            network
                .nodes()
                .iter()
                .map(|n| (n.op.name(), n.shape, n.op.parameter_count()))
                .collect(),
        )
    }
}

/// The dense executor, prepared for one network. Owns all scratch; reuse it across runs.
#[derive(Debug)]
pub struct DenseExecutor {
    fingerprint: Fingerprint,
    /// Per node: f64 weights of Conv2d ([Cin·Kh·Kw][Cout]) and Linear ([In][Out]).
    weights: Vec<Vec<f64>>,
    /// Per node: fan-out tables for counting synaptic ops.
    fan_outs: Vec<Option<FanOut>>,
    /// Per node: the last node that reads its output.
    last_use: Vec<usize>,
    /// Per node: its output for all timesteps, `[T][len]`, while still needed.
    values: Vec<Vec<f32>>,
    /// Buffers of freed node outputs, reused.
    pool: Vec<Vec<f32>>,
    /// im2col chunk [rows][K] (also a linear's f64 input).
    cols: Vec<f64>,
    /// GEMM result chunk [rows][Cout].
    acc: Vec<f64>,
}

fn f64_weights(op: &Op) -> Vec<f64> {
    match op {
        Op::Conv2d { weight, .. } | Op::Linear { weight, .. } => {
            weight.iter().map(|&w| f64::from(w)).collect()
        }
        _ => Vec::new(),
    }
}

impl DenseExecutor {
    /// Prepares an executor for `network` (converts weights to f64, builds fan-out tables).
    pub fn new(network: &Network) -> Self {
        let nodes = network.nodes();
        let mut last_use: Vec<usize> = (0..nodes.len()).collect();
        for (i, n) in nodes.iter().enumerate() {
            for &j in &n.inputs {
                last_use[j] = last_use[j].max(i);
            }
        }
        Self {
            fingerprint: Fingerprint::of(network),
            weights: nodes.iter().map(|n| f64_weights(&n.op)).collect(),
            fan_outs: (0..nodes.len()).map(|i| FanOut::of(network, i)).collect(),
            last_use,
            values: vec![Vec::new(); nodes.len()],
            pool: Vec::new(),
            cols: Vec::new(),
            acc: Vec::new(),
        }
    }

    /// Re-prepares node `node` after its weights changed in an otherwise identical network
    /// (calibration adjusts one layer at a time).
    pub fn refresh_node(&mut self, network: &Network, node: usize) {
        if let (Some(slot), Some(n)) = (self.weights.get_mut(node), network.nodes().get(node)) {
            *slot = f64_weights(&n.op);
        }
        self.fingerprint = Fingerprint::of(network);
    }

    /// A zeroed buffer of `len` values, from the pool when possible.
    fn buffer(&mut self, len: usize) -> Vec<f32> {
        let mut b = self.pool.pop().unwrap_or_default();
        b.clear();
        b.resize(len, 0.0);
        b
    }
}

/// C[m×n] (row-major, preloaded) += A[m×k] · B[k×n], all row-major f64.
fn gemm_acc(m: usize, k: usize, n: usize, a: &[f64], b: &[f64], c: &mut [f64]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    // SAFETY: the assert above guarantees each matrix lies within its slice for the given
    // row-major strides; `c` is uniquely borrowed and does not alias `a` or `b`.
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

impl Executor for DenseExecutor {
    fn name(&self) -> &'static str {
        "dense"
    }

    fn run(
        &mut self,
        network: &Network,
        state: &mut State,
        frames: &[SparseFrame],
        options: &RunOptions,
    ) -> Result<Output, ExecError> {
        self.run_observed(network, state, frames, options, None, &mut |_, _, _| {})
    }
}

impl DenseExecutor {
    /// [`Executor::run`], calling `observer(node, t, values)` with every node's output at every
    /// timestep (node by node, then t), and computing only nodes up to `stop_after` when given
    /// (the logits are then meaningless). Used by calibration and inspection.
    pub fn run_observed(
        &mut self,
        network: &Network,
        state: &mut State,
        frames: &[SparseFrame],
        options: &RunOptions,
        stop_after: Option<usize>,
        observer: &mut dyn FnMut(usize, usize, &[f32]),
    ) -> Result<Output, ExecError> {
        if Fingerprint::of(network) != self.fingerprint {
            return Err(ExecError::NetworkMismatch);
        }
        validate_run(network, state, frames, options)?;
        state.reset();
        let nodes = network.nodes();
        let steps = frames.len();
        let last = stop_after.unwrap_or(nodes.len() - 1).min(nodes.len() - 1);
        let mut stats = InferenceStats::new(network);
        stats.timesteps = steps as u64;
        stats.quantization = options.quantization_node.map(QuantizationError::new);
        let mut spikes: Option<Vec<LayerSpikes>> = options.record_spikes.then(Vec::new);
        for v in self.values.iter_mut() {
            if !v.is_empty() {
                self.pool.push(std::mem::take(v));
            }
        }

        for (i, node) in nodes.iter().enumerate().take(last + 1) {
            let s = node.shape;
            let len = s.len();
            let mut out = self.buffer(steps * len);
            let in_shape = node.inputs.first().map_or(s, |&j| nodes[j].shape);
            let in_len = in_shape.len();
            let row = &mut stats.nodes[i];
            match &node.op {
                Op::Input => {
                    for (frame, dst) in frames.iter().zip(out.chunks_exact_mut(len)) {
                        frame_to_nhwc(frame, dst);
                    }
                }
                Op::Conv2d {
                    in_ch,
                    out_ch,
                    kernel,
                    stride,
                    padding,
                    bias,
                    ..
                } => {
                    let x = &self.values[node.inputs[0]];
                    let (kh, kw) = *kernel;
                    let p = s.height * s.width;
                    let k = in_ch * kh * kw;
                    let total = steps * p;
                    let chunk = (CHUNK_VALUES / k.max(1)).clamp(1, total.max(1));
                    let mut start = 0;
                    while start < total {
                        let rows = chunk.min(total - start);
                        self.cols.clear();
                        self.cols.resize(rows * k, 0.0);
                        for r in 0..rows {
                            let (t, pos) = ((start + r) / p, (start + r) % p);
                            let (oy, ox) = (pos / s.width, pos % s.width);
                            let xt = &x[t * in_len..][..in_len];
                            let col = &mut self.cols[r * k..][..k];
                            for ky in 0..kh {
                                let iy = (oy * stride + ky) as isize - *padding as isize;
                                if iy < 0 || iy as usize >= in_shape.height {
                                    continue;
                                }
                                for kx in 0..kw {
                                    let ix = (ox * stride + kx) as isize - *padding as isize;
                                    if ix < 0 || ix as usize >= in_shape.width {
                                        continue;
                                    }
                                    let src = &xt[in_shape.index(iy as usize, ix as usize, 0)..]
                                        [..*in_ch];
                                    for (ci, &v) in src.iter().enumerate() {
                                        col[(ci * kh + ky) * kw + kx] = f64::from(v);
                                    }
                                }
                            }
                        }
                        self.acc.clear();
                        for _ in 0..rows {
                            self.acc.extend(bias.iter().map(|&b| f64::from(b)));
                        }
                        gemm_acc(
                            rows,
                            k,
                            *out_ch,
                            &self.cols,
                            &self.weights[i],
                            &mut self.acc,
                        );
                        let dst = &mut out[start * out_ch..][..rows * out_ch];
                        for (o, &a) in dst.iter_mut().zip(&self.acc) {
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
                    row.performed_ops += (total * k * out_ch) as u64;
                }
                Op::Linear {
                    in_features,
                    out_features,
                    bias,
                    ..
                } => {
                    let x = &self.values[node.inputs[0]];
                    self.cols.clear();
                    self.cols.extend(x.iter().map(|&v| f64::from(v)));
                    self.acc.clear();
                    for _ in 0..steps {
                        self.acc.extend(bias.iter().map(|&b| f64::from(b)));
                    }
                    gemm_acc(
                        steps,
                        *in_features,
                        *out_features,
                        &self.cols,
                        &self.weights[i],
                        &mut self.acc,
                    );
                    for (o, &a) in out.iter_mut().zip(&self.acc) {
                        *o = a as f32;
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
                    let x = &self.values[node.inputs[0]];
                    let divisor = match node.op {
                        Op::AvgPool { .. } => (k * k) as f64,
                        _ => 1.0,
                    };
                    for (xt, ot) in x.chunks_exact(in_len).zip(out.chunks_exact_mut(len)) {
                        pool(xt, in_shape, s, *k, *stride, divisor, &mut self.acc, ot);
                    }
                }
                Op::GlobalAvgPool => {
                    let x = &self.values[node.inputs[0]];
                    let count = (in_shape.height * in_shape.width) as f64;
                    for (xt, ot) in x.chunks_exact(in_len).zip(out.chunks_exact_mut(len)) {
                        self.acc.clear();
                        self.acc.resize(s.channels, 0.0);
                        for pixel in xt.chunks_exact(in_shape.channels) {
                            for (a, &v) in self.acc.iter_mut().zip(pixel) {
                                *a += f64::from(v);
                            }
                        }
                        for (o, &a) in ot.iter_mut().zip(&self.acc) {
                            *o = (a / count) as f32;
                        }
                    }
                }
                Op::Neuron(kind) => {
                    let x = &self.values[node.inputs[0]];
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
                    let (a, b) = (&self.values[node.inputs[0]], &self.values[node.inputs[1]]);
                    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
                        *o = (f64::from(a) + f64::from(b)) as f32;
                    }
                }
                Op::Flatten => out.copy_from_slice(&self.values[node.inputs[0]]),
                Op::Output => {
                    let x = &self.values[node.inputs[0]];
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
            self.values[i] = out;
            // Free inputs nobody reads after this node.
            for &j in &node.inputs {
                if self.last_use[j] == i && !self.values[j].is_empty() {
                    let freed = std::mem::take(&mut self.values[j]);
                    self.pool.push(freed);
                }
            }
        }
        state.timesteps = steps as u32;
        Ok(Output {
            logits: state.logits(),
            timesteps: steps,
            spikes,
            stats,
        })
    }
}

/// k×k pooling of one timestep with the window sum in f64, divided by `divisor` (k² for
/// average, 1 for sum).
#[allow(clippy::too_many_arguments)]
fn pool(
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
