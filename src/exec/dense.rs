//! The dense executor: every conv as im2col + one f64 GEMM (`matrixmultiply::dgemm`), every
//! linear as a GEMV, then the neuron step over the whole layer. It touches every neuron and
//! every weight each timestep, so its cost does not depend on the input; it is the fast path
//! for dense activity and the baseline the event-driven executor is measured against.
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
    /// Per node: this timestep's output.
    values: Vec<Vec<f32>>,
    /// im2col matrix [P][K] (also the f64 copy of a linear's input).
    cols: Vec<f64>,
    /// GEMM result [P][Cout].
    acc: Vec<f64>,
}

impl DenseExecutor {
    /// Prepares an executor for `network` (converts weights to f64, builds fan-out tables).
    pub fn new(network: &Network) -> Self {
        let nodes = network.nodes();
        Self {
            fingerprint: Fingerprint::of(network),
            weights: nodes
                .iter()
                .map(|n| match &n.op {
                    Op::Conv2d { weight, .. } | Op::Linear { weight, .. } => {
                        weight.iter().map(|&w| f64::from(w)).collect()
                    }
                    _ => Vec::new(),
                })
                .collect(),
            fan_outs: (0..nodes.len()).map(|i| FanOut::of(network, i)).collect(),
            values: nodes.iter().map(|n| vec![0.0; n.shape.len()]).collect(),
            cols: Vec::new(),
            acc: Vec::new(),
        }
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
        if Fingerprint::of(network) != self.fingerprint {
            return Err(ExecError::NetworkMismatch);
        }
        validate_run(network, state, frames, options)?;
        state.reset();
        let nodes = network.nodes();
        let mut stats = InferenceStats::new(network);
        stats.quantization = options.quantization_node.map(QuantizationError::new);
        let mut spikes: Option<Vec<LayerSpikes>> = options.record_spikes.then(|| {
            network
                .neuron_nodes()
                .map(|node| LayerSpikes {
                    node,
                    steps: Vec::with_capacity(frames.len()),
                })
                .collect()
        });

        for frame in frames {
            for (i, node) in nodes.iter().enumerate() {
                let mut out = std::mem::take(&mut self.values[i]);
                let s = node.shape;
                let in_shape = node.inputs.first().map_or(s, |&j| nodes[j].shape);
                let row = &mut stats.nodes[i];
                match &node.op {
                    Op::Input => frame_to_nhwc(frame, &mut out),
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
                        self.cols.clear();
                        self.cols.resize(p * k, 0.0);
                        for oy in 0..s.height {
                            for ox in 0..s.width {
                                let col = &mut self.cols[(oy * s.width + ox) * k..][..k];
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
                                        let src = &x[in_shape.index(iy as usize, ix as usize, 0)..]
                                            [..*in_ch];
                                        for (ci, &v) in src.iter().enumerate() {
                                            col[(ci * kh + ky) * kw + kx] = f64::from(v);
                                        }
                                    }
                                }
                            }
                        }
                        self.acc.clear();
                        for _ in 0..p {
                            self.acc.extend(bias.iter().map(|&b| f64::from(b)));
                        }
                        gemm_acc(p, k, *out_ch, &self.cols, &self.weights[i], &mut self.acc);
                        for (o, &a) in out.iter_mut().zip(&self.acc) {
                            *o = a as f32;
                        }
                        if let Some(f) = &self.fan_outs[i] {
                            row.synaptic_ops += f.synaptic_ops(x);
                        }
                        row.dense_macs += network.dense_macs(i);
                        row.performed_ops += (p * k * out_ch) as u64;
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
                        self.acc.extend(bias.iter().map(|&b| f64::from(b)));
                        gemm_acc(
                            1,
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
                            row.synaptic_ops += f.synaptic_ops(x);
                        }
                        row.dense_macs += network.dense_macs(i);
                        row.performed_ops += (in_features * out_features) as u64;
                    }
                    Op::AvgPool { k, stride } | Op::SumPool { k, stride } => {
                        let x = &self.values[node.inputs[0]];
                        let divisor = match node.op {
                            Op::AvgPool { .. } => (k * k) as f64,
                            _ => 1.0,
                        };
                        pool(
                            x,
                            in_shape,
                            s,
                            *k,
                            *stride,
                            divisor,
                            &mut self.acc,
                            &mut out,
                        );
                    }
                    Op::GlobalAvgPool => {
                        let x = &self.values[node.inputs[0]];
                        self.acc.clear();
                        self.acc.resize(s.channels, 0.0);
                        for pixel in x.chunks_exact(in_shape.channels) {
                            for (a, &v) in self.acc.iter_mut().zip(pixel) {
                                *a += f64::from(v);
                            }
                        }
                        let count = (in_shape.height * in_shape.width) as f64;
                        for (o, &a) in out.iter_mut().zip(&self.acc) {
                            *o = (a / count) as f32;
                        }
                    }
                    Op::Neuron(kind) => {
                        let x = &self.values[node.inputs[0]];
                        let range = network.membrane_range(i);
                        let n = range.len();
                        let membranes = &mut state.membranes[range];
                        let fired = match stats.quantization.as_mut() {
                            Some(q) if q.node == i => {
                                let mut count = 0u64;
                                for ((u, &current), o) in
                                    membranes.iter_mut().zip(x).zip(out.iter_mut())
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
                            _ => kind.step_all(membranes, x, &mut out) as u64,
                        };
                        row.spikes += fired;
                        row.neuron_updates += n as u64;
                        row.neuron_updates_total += n as u64;
                        if let Some(layers) = spikes.as_mut()
                            && let Some(layer) = layers.iter_mut().find(|l| l.node == i)
                        {
                            layer.steps.push(
                                out.iter()
                                    .enumerate()
                                    .filter(|(_, v)| **v != 0.0)
                                    .map(|(j, _)| j as u32)
                                    .collect(),
                            );
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
                        for (sum, &v) in state.output_sum.iter_mut().zip(x) {
                            *sum += v;
                        }
                        out.copy_from_slice(x);
                    }
                }
                self.values[i] = out;
            }
            state.timesteps += 1;
            stats.timesteps += 1;
        }
        Ok(Output {
            logits: state.logits(),
            timesteps: frames.len(),
            spikes,
            stats,
        })
    }
}

/// k×k pooling with the window sum in f64, divided by `divisor` (k² for average, 1 for sum).
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
