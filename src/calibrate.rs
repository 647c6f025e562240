//! Calibration of an untrained model: sets batch-norm statistics (and the biases of linear
//! layers that feed neurons) so every hidden neuron layer fires at a realistic rate on seeded
//! synthetic inputs. Randomly initialised SNNs are otherwise mostly silent or saturated, which
//! makes them useless for measuring executors. It edits model parameters and runs the dense
//! executor to observe layer outputs, so it sits above both `model` and `exec` (an executor
//! does not edit batch-norm statistics).

use std::sync::Arc;

use crate::binner::SparseFrame;
use crate::exec::{
    ExecError, ExecutorKind, Plan, PlanError, PlanOptions, RunOptions, Scratch, State,
    input_frame_shape, synthetic_frames,
};
use crate::model::graph::Lowering;
use crate::model::{BuildError, Graph, LoadError, Model, NodeOp, Parameters};
use crate::snn::network::{Network, Node, Op};
use crate::snn::neuron::NeuronKind;

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
    /// The model is inconsistent.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A run failed.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// The dense plan could not be built.
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

/// Calibrates `model` in place and rebuilds its network; `progress(done, total, layer)` is
/// called after each neuron layer (resnet19 takes a while).
///
/// Layer by layer in topological order:
/// 1. every batch norm upstream of the next neuron layer gets the running mean and variance
///    of its conv's raw output, measured on the inputs (so it normalises them as in training);
/// 2. the neuron layer's input currents are recorded, and one shift δ is found by bisection
///    such that simulating the neurons on `current + δ` gives the target rate;
/// 3. δ is added to the batch-norm bias β (or the linear bias) on the main path into that
///    layer; a shift passes unchanged through average pools, flattening and the first input
///    of a residual sum.
///
/// Later layers are measured with earlier ones already calibrated.
pub fn calibrate(
    model: &mut Model,
    settings: &Calibration,
    progress: &mut dyn FnMut(usize, usize, &str),
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
    let graph = model.metadata.graph.clone();
    let neuron = model.metadata.neuron.model;
    let lowering = graph.lowering()?;
    let to_graph = graph_index_of(&lowering);
    let params = &mut model.parameters;
    let mut runner = Runner::new(graph.network(params, neuron)?)?;
    let shape = input_frame_shape(runner.network());
    let inputs: Vec<Vec<SparseFrame>> = (0..samples as u64)
        .map(|k| synthetic_frames(shape, timesteps, input_density, seed.wrapping_add(k)))
        .collect();
    let neuron_nodes: Vec<usize> = runner.network().neuron_nodes().collect();
    let mut standardised = vec![false; runner.network().nodes().len()];
    let mut report = CalibrationReport { layers: Vec::new() };
    // Refolds one network node after its parameters changed, without rebuilding the rest.
    let refresh =
        |runner: Runner, params: &Parameters, node: usize| -> Result<Runner, CalibrationError> {
            let lowered = graph.lower_node(&lowering, to_graph[node], params, neuron)?;
            runner.replace_node(node, lowered)
        };

    for (done, &target) in neuron_nodes.iter().enumerate() {
        // 1. Standardise the BNs of convs feeding this layer.
        let convs: Vec<usize> = upstream_convs(runner.network(), target)
            .into_iter()
            .filter(|&c| !standardised[c])
            .filter(|&c| lowering.batch_norm_of[to_graph[c]].is_some())
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
            let folds = convs
                .iter()
                .map(|&c| {
                    bn_of(&lowering, &to_graph, c).map_or(Ok((Vec::new(), Vec::new())), |bn| {
                        graph.batch_norm_fold(bn, params)
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
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
                if let Some(bn) = bn_of(&lowering, &to_graph, c)
                    && let NodeOp::BatchNorm {
                        running_mean,
                        running_var,
                        ..
                    } = &graph.nodes[bn].op
                {
                    set(params, running_mean, mean);
                    set(params, running_var, var);
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
        let shifted = apply_shift(
            &graph,
            &lowering,
            &to_graph,
            params,
            runner.network(),
            source,
            delta,
        );
        if let Some(node) = shifted {
            runner = refresh(runner, params, node)?;
        }
        let name = runner.network().nodes()[target].name.clone();
        report.layers.push((name.clone(), rate(delta)));
        progress(done + 1, neuron_nodes.len(), &name);
    }
    model.rebuild()?;
    Ok(report)
}

/// A dense plan with its scratch and state, rebuilt whenever calibration changes a node
/// (plans are immutable).
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

    /// The same network with `node` replaced, and a plan for it.
    fn replace_node(self, index: usize, node: Node) -> Result<Self, CalibrationError> {
        let network = Arc::clone(self.plan.network());
        drop(self);
        let network = Arc::unwrap_or_clone(network)
            .replace_node(index, node)
            .map_err(BuildError::from)?;
        Self::new(network)
    }
}

/// For each network node, the graph node it was lowered from (not a batch norm).
fn graph_index_of(lowering: &Lowering) -> Vec<usize> {
    let count = lowering.network_node.iter().max().map_or(0, |m| m + 1);
    let mut out = vec![0usize; count];
    for (g, &n) in lowering.network_node.iter().enumerate().rev() {
        // Reversed so that a conv's own index wins over its batch norm's.
        out[n] = g;
    }
    out
}

/// The batch-norm graph node folded into network node `node`, if any.
fn bn_of(lowering: &Lowering, to_graph: &[usize], node: usize) -> Option<usize> {
    lowering.batch_norm_of[to_graph[node]]
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

/// Adds `delta` to every output of the weighted node on the main path into network node
/// `node` (through its batch norm's β, or its own bias); returns that network node.
fn apply_shift(
    graph: &Graph,
    lowering: &Lowering,
    to_graph: &[usize],
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
            Op::Conv2d { .. } | Op::Linear { .. } => {
                let bias = match bn_of(lowering, to_graph, node) {
                    Some(bn) => match &graph.nodes[bn].op {
                        NodeOp::BatchNorm { bias, .. } => Some(bias.clone()),
                        _ => None,
                    },
                    None => match &graph.nodes[to_graph[node]].op {
                        NodeOp::Conv2d { bias, .. } | NodeOp::Linear { bias, .. } => bias.clone(),
                        _ => None,
                    },
                };
                let t = params.get_mut(&bias?)?;
                t.data.iter_mut().for_each(|b| *b += delta);
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
