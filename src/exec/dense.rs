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

use std::sync::Arc;

use rayon::prelude::*;

use crate::binner::SparseFrame;
use crate::exec::pool::{Pool, within};
use crate::exec::stats::{FanOut, InferenceStats, QuantizationError};
use crate::exec::{
    ConvNode, ExecError, ExecutorKind, LayerSpikes, Plan, PlanError, PlanOptions, RunOptions,
    RunOutput, Scratch, State, frame_to_nhwc,
};
use crate::kernels::{ConvGeometry, Transpose, dgemm, im2col};
use crate::snn::arch::{
    BatchNormConfig, BatchNormKind, Blueprint, BuildError, LayerOp, Parameters,
};
use crate::snn::network::{Network, Node, Op, Shape};
use crate::snn::neuron::{NeuronKind, fire};

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
fn im2col_rows(g: &ConvGeometry, x: &[f32], first: usize, rows: usize, cols: &mut [f64]) {
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
            f64::from,
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
            weights: nodes.iter().map(|n| f64_weights(&n.op)).collect(),
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
                    while start < total {
                        let rows = chunk.min(total - start);
                        scratch.cols.resize(rows * k, 0.0);
                        scratch.acc.clear();
                        for _ in 0..rows {
                            scratch.acc.extend(conv.bias.iter().map(|&b| f64::from(b)));
                        }
                        let band = |first: usize, cols: &mut [f64], acc: &mut [f64]| {
                            let n = acc.len() / cout.max(1);
                            im2col_rows(&g, x, start + first, n, cols);
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

/// Settings of [`calibrate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    /// Firing rate to aim for in every hidden neuron layer.
    pub target_rate: f64,
    /// Synthetic recordings to measure on.
    pub samples: usize,
    /// Frames per recording.
    pub timesteps: usize,
    /// Fraction of nonzero input values per frame.
    pub input_density: f64,
    /// Seed of the synthetic inputs.
    pub seed: u64,
}

impl Default for Calibration {
    fn default() -> Self {
        Self {
            target_rate: 0.15,
            samples: 2,
            timesteps: 10,
            input_density: 0.05,
            seed: 0,
        }
    }
}

/// Why calibration failed.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    /// The parameters do not build a network.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A run failed.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// The plan could not be built.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Bad settings.
    #[error(
        "calibration needs samples ≥ 1, timesteps ≥ 1, a target rate in (0, 1) and a density in [0, 1]"
    )]
    Settings,
}

/// The firing rate each neuron layer reached after calibration.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationReport {
    /// (neuron node name, firing rate on the calibration inputs), in order.
    pub layers: Vec<(String, f64)>,
}

/// Sets BN statistics (and FC biases that feed neurons) so that every hidden neuron layer fires
/// at about `target_rate` on seeded synthetic inputs, layer by layer in topological order:
///
/// 1. every BN upstream of the next neuron layer gets the running mean and variance of its
///    conv's raw output, measured on the inputs (so BN normalises them as in training);
/// 2. the neuron layer's input currents are recorded, and one shift δ is found by bisection
///    such that simulating the neurons on `current + δ` gives the target rate;
/// 3. δ is added to the BN bias β (or the FC bias) on the main path into that layer; a shift
///    passes unchanged through average pools, flattening and the first input of a residual sum.
///
/// Later layers are measured with earlier ones already calibrated.
pub fn calibrate(
    blueprint: &Blueprint,
    params: &mut Parameters,
    neuron: NeuronKind,
    bn: BatchNormConfig,
    settings: &Calibration,
) -> Result<CalibrationReport, CalibrationError> {
    let Calibration {
        target_rate,
        samples,
        timesteps,
        input_density,
        seed,
    } = *settings;
    if samples == 0
        || timesteps == 0
        || !(target_rate > 0.0 && target_rate < 1.0)
        || !(0.0..=1.0).contains(&input_density)
    {
        return Err(CalibrationError::Settings);
    }
    let mut runner = Runner::new(blueprint.build(params, neuron, bn)?)?;
    let shape = crate::exec::input_frame_shape(runner.network());
    let inputs: Vec<Vec<SparseFrame>> = (0..samples as u64)
        .map(|k| {
            crate::exec::synthetic_frames(shape, timesteps, input_density, seed.wrapping_add(k))
        })
        .collect();
    let neuron_nodes: Vec<usize> = runner.network().neuron_nodes().collect();
    let mut standardised = vec![false; runner.network().nodes().len()];
    let mut report = CalibrationReport { layers: Vec::new() };
    // Refolds one layer after its parameters changed, without rebuilding the rest.
    let refresh =
        |runner: Runner, params: &Parameters, layer: usize| -> Result<Runner, CalibrationError> {
            let node = blueprint.build_node(layer, params, neuron, bn)?;
            runner.replace_node(layer, node)
        };

    for &target in &neuron_nodes {
        // 1. Standardise the BNs of convs feeding this layer.
        let convs: Vec<usize> = upstream_convs(runner.network(), target)
            .into_iter()
            .filter(|&c| !standardised[c])
            .collect();
        if let Some(&last) = convs.iter().max() {
            // Per conv, per channel: Σ raw, Σ raw², count.
            let mut moments: Vec<(Vec<f64>, Vec<f64>, u64)> = convs
                .iter()
                .map(|&c| {
                    let ch = runner.network().nodes()[c].shape.channels;
                    (vec![0.0; ch], vec![0.0; ch], 0)
                })
                .collect();
            let folds: Vec<(Vec<f64>, Vec<f64>)> = convs
                .iter()
                .map(|&c| fold_of(blueprint, params, c, bn))
                .collect();
            for frames in &inputs {
                runner.run(frames, Some(last), &mut |node, _, values| {
                    if let Some(j) = convs.iter().position(|&c| c == node) {
                        let (scale, shift) = &folds[j];
                        let (sum, sq, count) = &mut moments[j];
                        let ch = scale.len();
                        for pixel in values.chunks_exact(ch) {
                            for (c, &y) in pixel.iter().enumerate() {
                                // Undo the current fold: raw = (y − b) / s.
                                let raw = (f64::from(y) - shift[c]) / scale[c];
                                sum[c] += raw;
                                sq[c] += raw * raw;
                            }
                        }
                        *count += (values.len() / ch.max(1)) as u64;
                    }
                })?;
            }
            for (j, &c) in convs.iter().enumerate() {
                let (sum, sq, count) = &moments[j];
                let n = (*count).max(1) as f64;
                let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
                let var: Vec<f32> = sum
                    .iter()
                    .zip(sq)
                    .map(|(s, q)| ((q / n - (s / n) * (s / n)).max(1e-6)) as f32)
                    .collect();
                if let LayerOp::Conv { bn: name, .. } = &blueprint.layers[c].op {
                    set(params, &format!("{name}.running_mean"), mean);
                    set(params, &format!("{name}.running_var"), var);
                }
                runner = refresh(runner, params, c)?;
                standardised[c] = true;
            }
        }

        // 2. Record the layer's input currents.
        let source = runner.network().nodes()[target].inputs[0];
        let mut currents: Vec<f32> = Vec::new();
        for frames in &inputs {
            runner.run(frames, Some(source), &mut |node, _, values| {
                if node == source {
                    currents.extend_from_slice(values);
                }
            })?;
        }
        let Op::Neuron(kind) = runner.network().nodes()[target].op else {
            continue;
        };
        let per_step = runner.network().nodes()[target].shape.len();
        let rate = |delta: f32| simulated_rate(kind, &currents, per_step, timesteps, delta);

        // 3. Bisect the shift, then apply it.
        let (mut lo, mut hi) = (-8.0f32, 8.0f32);
        for _ in 0..30 {
            let mid = 0.5 * (lo + hi);
            if rate(mid) < target_rate {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let delta = 0.5 * (lo + hi);
        let shifted = apply_shift(blueprint, params, runner.network(), source, delta);
        if let Some(layer) = shifted {
            runner = refresh(runner, params, layer)?;
        }
        report
            .layers
            .push((runner.network().nodes()[target].name.clone(), rate(delta)));
    }
    Ok(report)
}

/// A dense plan with its scratch and state, rebuilt whenever calibration changes a layer.
struct Runner {
    plan: Arc<Plan>,
    scratch: Scratch,
    state: State,
}

impl Runner {
    fn new(network: Network) -> Result<Self, CalibrationError> {
        let plan = Plan::new(
            Arc::new(network),
            ExecutorKind::Dense,
            PlanOptions::default(),
        )?;
        Ok(Self {
            scratch: plan.new_scratch(),
            state: plan.new_state(),
            plan,
        })
    }

    fn network(&self) -> &Network {
        self.plan.network()
    }

    /// One recording from rest, observed up to node `stop_after`.
    fn run(
        &mut self,
        frames: &[SparseFrame],
        stop_after: Option<usize>,
        observer: &mut dyn FnMut(usize, usize, &[f32]),
    ) -> Result<(), ExecError> {
        self.state.reset();
        self.plan
            .run_observed(
                &mut self.scratch,
                &mut self.state,
                frames,
                &RunOptions::default(),
                stop_after,
                observer,
            )
            .map(|_| ())
    }

    /// The same network with node `layer` replaced, and a plan for it.
    fn replace_node(self, layer: usize, node: Node) -> Result<Self, CalibrationError> {
        let network = Arc::clone(self.plan.network());
        drop(self);
        let network = Arc::unwrap_or_clone(network)
            .replace_node(layer, node)
            .map_err(BuildError::from)?;
        Self::new(network)
    }
}

/// Convs reachable backwards from `node` through non-spiking nodes.
fn upstream_convs(network: &Network, node: usize) -> Vec<usize> {
    let mut found = Vec::new();
    let mut stack: Vec<usize> = network.nodes()[node].inputs.clone();
    while let Some(i) = stack.pop() {
        match network.nodes()[i].op {
            Op::Conv2d { .. } => found.push(i),
            Op::Neuron(_) | Op::Input | Op::Linear { .. } => {}
            _ => stack.extend(network.nodes()[i].inputs.iter().copied()),
        }
    }
    found.sort_unstable();
    found.dedup();
    found
}

/// The folded per-channel (scale, shift) of conv layer `layer` under the current parameters.
fn fold_of(
    blueprint: &Blueprint,
    params: &Parameters,
    layer: usize,
    bn: BatchNormConfig,
) -> (Vec<f64>, Vec<f64>) {
    let LayerOp::Conv {
        bn: name, alpha, ..
    } = &blueprint.layers[layer].op
    else {
        return (Vec::new(), Vec::new());
    };
    let get = |p: &str| {
        params
            .get(&format!("{name}.{p}"))
            .map(|t| t.data.clone())
            .unwrap_or_default()
    };
    let (gamma, beta, mean, var) = (
        get("weight"),
        get("bias"),
        get("running_mean"),
        get("running_var"),
    );
    let factor = match bn.kind {
        BatchNormKind::Td => f64::from(*alpha) * f64::from(crate::snn::neuron::VTH),
        BatchNormKind::Plain => 1.0,
    };
    let scale: Vec<f64> = gamma
        .iter()
        .zip(&var)
        .map(|(&g, &v)| f64::from(g) * factor / (f64::from(v) + f64::from(bn.eps)).sqrt())
        .collect();
    let shift = beta
        .iter()
        .zip(&mean)
        .zip(&scale)
        .map(|((&b, &m), &s)| f64::from(b) - f64::from(m) * s)
        .collect();
    (scale, shift)
}

/// Adds `delta` to every output of the weighted node on the main path into `node`; returns
/// that node.
fn apply_shift(
    blueprint: &Blueprint,
    params: &mut Parameters,
    network: &Network,
    mut node: usize,
    delta: f32,
) -> Option<usize> {
    loop {
        match &network.nodes()[node].op {
            Op::AvgPool { .. } | Op::Flatten | Op::GlobalAvgPool | Op::Add => {
                node = network.nodes()[node].inputs[0];
            }
            Op::Conv2d { .. } => {
                if let LayerOp::Conv { bn: name, .. } = &blueprint.layers[node].op
                    && let Some(t) = params.get_mut(&format!("{name}.bias"))
                {
                    t.data.iter_mut().for_each(|b| *b += delta);
                }
                return Some(node);
            }
            Op::Linear { .. } => {
                if let Some(t) = params.get_mut(&format!("{}.bias", blueprint.layers[node].name)) {
                    t.data.iter_mut().for_each(|b| *b += delta);
                }
                return Some(node);
            }
            _ => return None,
        }
    }
}

fn set(params: &mut Parameters, name: &str, data: Vec<f32>) {
    if let Some(t) = params.get_mut(name) {
        t.data = data;
    }
}

/// Firing rate of neurons driven by recorded currents (`[sample][t][neuron]`) plus `delta`.
fn simulated_rate(
    kind: NeuronKind,
    currents: &[f32],
    per_step: usize,
    timesteps: usize,
    delta: f32,
) -> f64 {
    let per_sample = per_step * timesteps;
    if per_sample == 0 {
        return 0.0;
    }
    let mut membranes = vec![0.0f32; per_step];
    let mut spikes = 0u64;
    for sample in currents.chunks_exact(per_sample) {
        membranes.fill(0.0);
        for step in sample.chunks_exact(per_step) {
            for (u, &x) in membranes.iter_mut().zip(step) {
                let (o, next) = kind.step(*u, x + delta);
                *u = next;
                spikes += o as u64;
            }
        }
    }
    spikes as f64 / currents.len().max(1) as f64
}
