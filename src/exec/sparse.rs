//! The event-driven executor: each layer does work only for the nonzero inputs it receives
//! and, where the bias-driven background is known, only for the neurons those inputs reach.
//!
//! # How a layer runs
//!
//! Activations that feed a weighted layer are kept as per-pixel lists of their nonzero
//! channels ([`lists::PixelLists`]). A convolution computes each output pixel by summing, in
//! f64 registers, the contiguous Cout-long weight rows `W[c][ky][kx][..]` of the nonzero
//! inputs in its window, then rounds each sum to f32 once ([`kernels`]). For binary spikes the
//! rows are added, never multiplied. The sum is, term for term, the event-driven scatter
//! "every input (c, y, x, v) adds v·W[c, ky, kx, :] to its output neighbourhood"; it is
//! evaluated output-stationary because that keeps the accumulators in registers (see
//! [`kernels`] for the measurements). A conv whose only consumer is a neuron (directly or
//! through a residual add) is computed inside that neuron's loop, pixel by pixel, so its
//! currents never go to memory ([`plan`]). Pools, adds and the output sum work on dense f32
//! buffers and follow the contract in [`crate::exec`] literally.
//!
//! Per layer and timestep the conv path is chosen from the measured density of its input: a
//! fully active conv whose input has more than `dense_above` (default 0.5) nonzero values runs
//! as im2col + one f64 GEMM instead. On this machine the gather is faster up to 50–70 %
//! input density (the crossover bench in `benches/execute.rs`), far above the 10–20 % firing
//! of trained networks, so the switch exists for saturated layers. Both sum the same terms
//! exactly in f64, so the switch never changes a bit.
//!
//! # Touching only what receives spikes
//!
//! Folded batch norms give every neuron a bias, so even an empty input makes some channels
//! fire. That response (the [`background`]) is computed once per network by running on
//! all-zero frames. During a run each node keeps its active [`region`]: the pixels an input
//! event has reached through the windows of the layers before (a neuron stays active once
//! reached, since its membrane keeps the difference). Only active pixels are computed; the
//! others hold the background, which is copied in only where an active pixel's window reads
//! it. A region that grows past `max_active_fraction` of its layer switches to computing the
//! whole layer, as does every node whose background table is not small (near the borders the
//! background differs pixel by pixel; in the interior it is uniform). Active pixels are
//! computed directly (bias plus every nonzero input in the window, the background's spikes
//! included), so the switch never changes a value.
//!
//! The counters say what was done: `neuron_updates` counts neurons actually stepped,
//! `performed_ops` the accumulates actually made, against `neuron_updates_total` and the
//! activity-defined `synaptic_ops`.
//!
//! # Exactness
//!
//! Every value is computed from the same f32 operands as the reference, summed in f64 and
//! rounded once; the neuron step is `snn::neuron`'s. Spikes and logits are therefore the
//! reference's bit for bit (tests/it/exec.rs checks every built-in architecture).
//!
//! # Threads
//!
//! With `threads > 1` each layer's active pixels are cut into bands of equal work and run on
//! a private rayon pool (see [`bands`]). With one thread nothing is spawned.

pub mod background;
pub mod bands;
pub mod kernels;
pub mod lists;
pub mod ops;
pub mod plan;
pub mod region;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::binner::SparseFrame;
use crate::exec::stats::{FanOut, InferenceStats, QuantizationError};
use crate::exec::{
    ExecError, Executor, LayerSpikes, Output, RunOptions, input_frame_shape, validate_run,
};
use crate::snn::network::{Network, Op};
use crate::snn::state::State;

use background::{Background, Snapshot};
use kernels::Isa;
use lists::PixelLists;
use ops::{Conv, CurrentIn, NeuronOut};
use plan::{Current, Footprint, NodePlan};
use region::{Geometry, Region};

/// How the event-driven executor runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SparseOptions {
    /// Worker threads for the layers (1: run on the caller's thread only).
    pub threads: usize,
    /// Instruction set for the kernels (None: the best this CPU has).
    pub isa: Option<Isa>,
    /// Compute only the pixels input events reach, holding the background elsewhere.
    pub tracking: bool,
    /// A tracked node whose active pixels exceed this fraction of its layer is computed
    /// everywhere for the rest of the run (its region would cost more than it saves).
    pub max_active_fraction: f64,
    /// A node is tracked only if its background table has at most this fraction of the
    /// layer's pixels (otherwise the cache would approach the layer's size).
    pub max_background_fraction: f64,
    /// A fully active conv whose input has more than this fraction of nonzero values runs as
    /// im2col + GEMM instead of the gather (measured crossover: 0.5–0.7, see BENCHMARKS.md).
    /// Both paths give the same bits.
    pub dense_above: f64,
    /// Measure the wall time of every node (see [`SparseExecutor::node_times`]).
    pub profile: bool,
}

impl Default for SparseOptions {
    fn default() -> Self {
        Self {
            threads: 1,
            isa: None,
            tracking: true,
            max_active_fraction: 0.5,
            max_background_fraction: 0.25,
            dense_above: 0.5,
            profile: false,
        }
    }
}

/// Why the event-driven executor cannot be prepared for a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SparseError {
    /// A weight tensor is too large for 32-bit row offsets.
    #[error(
        "node {node} ({name}) has {weights} weights; the event-driven executor handles fewer than 2^32"
    )]
    TooLarge {
        /// Node index.
        node: usize,
        /// Node name.
        name: String,
        /// Its weight count.
        weights: usize,
    },
    /// The worker pool could not be started.
    #[error("cannot start {threads} worker threads: {reason}")]
    Threads {
        /// Threads asked for.
        threads: usize,
        /// The pool builder's message.
        reason: String,
    },
}

/// Per-node buffers for the current timestep.
#[derive(Debug, Default)]
struct NodeBuffers {
    values: Vec<f32>,
    lists: PixelLists,
}

/// The event-driven executor, prepared for one network. Holds its scratch buffers and the
/// network's background; use one per worker thread and run many streams' states through it.
pub struct SparseExecutor {
    network: Arc<Network>,
    options: SparseOptions,
    isa: Isa,
    pool: Option<rayon::ThreadPool>,
    plans: Vec<NodePlan>,
    buffers: Vec<NodeBuffers>,
    regions: Vec<Region>,
    fan_outs: Vec<Option<FanOut>>,
    background: Arc<Background>,
    /// Per conv node, its weights tap-major for the gather (see [`ops::tap_major`]), shared
    /// like the background.
    by_tap: Arc<Vec<Option<Vec<f32>>>>,
    /// 0..pixels of the largest node: the active list of a fully active node.
    all_pixels: Vec<u32>,
    /// Stamp of the current timestep (see [`Region::is_current`]).
    now: u32,
    /// Scratch: pixels of a neuron node that became active this timestep.
    newly: Vec<u32>,
    /// Per conv node, its weights in f64 once the dense path first ran it.
    dense_weights: Vec<Option<Vec<f64>>>,
    /// Per conv node, the timesteps it ran on the dense path.
    dense_steps: Vec<u64>,
    dense_scratch: ops::DenseScratch,
    /// Currents of a fused conv that ran on the dense path.
    currents: Vec<f32>,
    times: Vec<Duration>,
}

impl std::fmt::Debug for SparseExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SparseExecutor")
            .field("options", &self.options)
            .field("isa", &self.isa)
            .field("background_bytes", &self.background.bytes())
            .finish_non_exhaustive()
    }
}

impl SparseExecutor {
    /// Prepares an executor for `network` with default options.
    pub fn new(network: Arc<Network>) -> Result<Self, SparseError> {
        Self::with_options(network, SparseOptions::default())
    }

    /// Prepares an executor for `network`. The background is computed at the first run that
    /// tracks regions, for as many timesteps as it has frames (and again if a later run is
    /// longer).
    pub fn with_options(
        network: Arc<Network>,
        options: SparseOptions,
    ) -> Result<Self, SparseError> {
        let nodes = network.nodes();
        for (i, node) in nodes.iter().enumerate() {
            if let Op::Conv2d { weight, .. } | Op::Linear { weight, .. } = &node.op
                && u32::try_from(weight.len()).is_err()
            {
                return Err(SparseError::TooLarge {
                    node: i,
                    name: node.name.clone(),
                    weights: weight.len(),
                });
            }
        }
        let pool = if options.threads > 1 {
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(options.threads)
                    .thread_name(|i| format!("inflor-event-{i}"))
                    .build()
                    .map_err(|e| SparseError::Threads {
                        threads: options.threads,
                        reason: e.to_string(),
                    })?,
            )
        } else {
            None
        };
        let plans = plan::plan(&network);
        let buffers = nodes
            .iter()
            .zip(&plans)
            .map(|(node, plan)| {
                let pixels = node.shape.height * node.shape.width;
                NodeBuffers {
                    values: if plan.dense {
                        vec![0.0; node.shape.len()]
                    } else {
                        Vec::new()
                    },
                    lists: if plan.lists {
                        PixelLists::new(pixels, node.shape.channels, plan.binary)
                    } else {
                        PixelLists::default()
                    },
                }
            })
            .collect();
        let regions = nodes
            .iter()
            .map(|n| Region::new(n.shape.height * n.shape.width))
            .collect();
        let max_pixels = nodes
            .iter()
            .map(|n| n.shape.height * n.shape.width)
            .max()
            .unwrap_or(0);
        Ok(Self {
            fan_outs: (0..nodes.len()).map(|i| FanOut::of(&network, i)).collect(),
            times: vec![Duration::ZERO; nodes.len()],
            isa: options.isa.unwrap_or_else(Isa::detect),
            all_pixels: (0..max_pixels as u32).collect(),
            background: Arc::new(Background::new(nodes.len(), 0)),
            by_tap: Arc::new(nodes.iter().map(ops::tap_major).collect()),
            now: 0,
            newly: Vec::new(),
            dense_weights: vec![None; nodes.len()],
            dense_steps: vec![0; nodes.len()],
            dense_scratch: ops::DenseScratch::default(),
            currents: Vec::new(),
            network,
            options,
            pool,
            plans,
            buffers,
            regions,
        })
    }

    /// The network this executor was prepared for.
    pub fn network(&self) -> &Arc<Network> {
        &self.network
    }

    /// The instruction set the kernels use.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The background computed so far (shareable with other executors of the same network
    /// through [`SparseExecutor::share_cache`]).
    pub fn background(&self) -> &Arc<Background> {
        &self.background
    }

    /// Uses the per-network cache (background and reordered weights) of another executor
    /// prepared for the same network (the same `Arc`) instead of holding a second copy.
    pub fn share_cache(&mut self, from: &SparseExecutor) -> Result<(), ExecError> {
        if !Arc::ptr_eq(&self.network, &from.network) {
            return Err(ExecError::NetworkMismatch);
        }
        self.background = Arc::clone(&from.background);
        self.by_tap = Arc::clone(&from.by_tap);
        Ok(())
    }

    /// Bytes of the per-network cache: the background and the reordered conv weights.
    pub fn cache_bytes(&self) -> usize {
        self.background.bytes()
            + self
                .by_tap
                .iter()
                .flatten()
                .map(|w| w.len() * std::mem::size_of::<f32>())
                .sum::<usize>()
    }

    /// Whether node `node` is tracked (computed only where input events reach it).
    pub fn tracks(&self, node: usize) -> bool {
        self.background.tracks(node)
    }

    /// Wall time spent in each node since the last reset (zeros unless `options.profile`).
    /// A conv or add computed inside a neuron counts towards that neuron.
    pub fn node_times(&self) -> &[Duration] {
        &self.times
    }

    /// Forgets the node times and dense-path counts.
    pub fn reset_node_times(&mut self) {
        self.times.fill(Duration::ZERO);
        self.dense_steps.fill(0);
    }

    /// Per node, the timesteps its conv ran as im2col + GEMM (see `dense_above`) since the
    /// last reset.
    pub fn dense_steps(&self) -> &[u64] {
        &self.dense_steps
    }

    fn check_network(&self, network: &Network) -> Result<(), ExecError> {
        // The Arc keeps the prepared network alive, so an equal address is the same network;
        // anything else must be equal in every weight.
        if std::ptr::eq(network, &*self.network) || *network == *self.network {
            Ok(())
        } else {
            Err(ExecError::NetworkMismatch)
        }
    }

    /// Advances the timestep stamp, clearing every stamp when it wraps.
    fn next_stamp(&mut self) {
        if self.now == u32::MAX {
            for r in &mut self.regions {
                r.reset_stamps();
            }
            self.now = 0;
        }
        self.now += 1;
    }

    fn start_run(&mut self) {
        for r in &mut self.regions {
            r.reset();
        }
    }

    fn run_inner(
        &mut self,
        state: &mut State,
        frames: &[SparseFrame],
        options: &RunOptions,
    ) -> Output {
        let network = Arc::clone(&self.network);
        // The quantization statistic observes every neuron, so such runs compute everything.
        let tracking = self.options.tracking && options.quantization_node.is_none();
        if tracking && self.background.steps() < frames.len() {
            self.background = Arc::new(self.compute_background(frames.len()));
        }
        state.reset();
        self.start_run();
        let mut stats = InferenceStats::new(&network);
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
        for (t, frame) in frames.iter().enumerate() {
            self.next_stamp();
            self.step(
                &network,
                state,
                frame,
                t,
                tracking,
                &mut stats,
                spikes.as_deref_mut(),
            );
            state.timesteps += 1;
            stats.timesteps += 1;
        }
        if tracking && let Some(last) = frames.len().checked_sub(1) {
            self.settle_membranes(&network, state, last);
        }
        Output {
            logits: state.logits(),
            timesteps: frames.len(),
            spikes,
            stats,
        }
    }

    /// Writes the background membranes into the pixels that stayed inactive, so the state
    /// after a run is complete.
    fn settle_membranes(&self, network: &Network, state: &mut State, last: usize) {
        for i in network.neuron_nodes() {
            let region = &self.regions[i];
            let Some(bg) = self.background.at(i, last) else {
                continue;
            };
            if region.all {
                continue;
            }
            let c = network.nodes()[i].shape.channels;
            let membranes = &mut state.membranes[network.membrane_range(i)];
            for p in 0..region.pixels() {
                if !region.contains(p) {
                    membranes[p * c..][..c].copy_from_slice(bg.membranes_at(p));
                }
            }
        }
    }

    /// Runs the network on `steps` empty frames, everything computed, and keeps each node's
    /// maps; nodes whose tables are small (and whose inputs are tracked) become tracked.
    fn compute_background(&mut self, steps: usize) -> Background {
        let network = Arc::clone(&self.network);
        let nodes = network.nodes();
        let empty = SparseFrame::empty(input_frame_shape(&network));
        let mut state = State::new(&network);
        let mut stats = InferenceStats::new(&network);
        self.start_run();
        let eligible: Vec<bool> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let plan = &self.plans[i];
                n.shape.height * n.shape.width > 1
                    && plan.fused_into.is_none()
                    && plan.source == i
                    && !matches!(n.op, Op::Input)
            })
            .collect();
        let mut snapshots: Vec<Vec<Snapshot>> = vec![Vec::new(); nodes.len()];
        let mut compact = eligible.clone();
        for t in 0..steps {
            self.next_stamp();
            self.step(&network, &mut state, &empty, t, false, &mut stats, None);
            for (i, n) in nodes.iter().enumerate() {
                if !compact[i] {
                    continue;
                }
                let s = n.shape;
                let plan = &self.plans[i];
                let membranes: &[f32] = if matches!(n.op, Op::Neuron(_)) {
                    &state.membranes[network.membrane_range(i)]
                } else {
                    &[]
                };
                let snap = Snapshot::compress(
                    s.height,
                    s.width,
                    s.channels,
                    &self.buffers[i].values,
                    membranes,
                    plan.lists,
                    plan.binary,
                );
                let pixels = (s.height * s.width) as f64;
                if snap.cells() as f64 > self.options.max_background_fraction * pixels {
                    compact[i] = false;
                    snapshots[i] = Vec::new();
                } else {
                    snapshots[i].push(snap);
                }
            }
        }
        let mut background = Background::new(nodes.len(), steps);
        let mut tracked = vec![false; nodes.len()];
        tracked[0] = true;
        for (i, snaps) in snapshots.into_iter().enumerate() {
            let reads_tracked = self.plans[i]
                .reads
                .iter()
                .all(|r| tracked[r.node] && r.footprint != Footprint::All);
            if compact[i] && reads_tracked && snaps.len() == steps {
                tracked[i] = true;
                background.set(i, snaps);
            }
        }
        tracing::debug!(
            tracked = tracked.iter().filter(|t| **t).count() - 1,
            bytes = background.bytes(),
            steps,
            "event executor: background computed"
        );
        background
    }

    /// One timestep through every node.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        network: &Network,
        state: &mut State,
        frame: &SparseFrame,
        t: usize,
        tracking: bool,
        stats: &mut InferenceStats,
        mut spikes: Option<&mut [LayerSpikes]>,
    ) {
        let nodes = network.nodes();
        let ctx = ops::Ctx {
            isa: self.isa,
            parallel: self.options.threads > 1,
            threads: self.options.threads,
        };
        let now = self.now;
        for (i, node) in nodes.iter().enumerate() {
            if self.plans[i].fused_into.is_some() || self.plans[i].source != i {
                continue;
            }
            let started = self.options.profile.then(Instant::now);
            let tracked = tracking && self.background.tracks(i);
            if let Op::Input = node.op {
                let plan = &self.plans[i];
                let region = &mut self.regions[i];
                region.reset();
                let buffers = &mut self.buffers[i];
                ops::input(
                    frame,
                    plan.dense.then_some(buffers.values.as_mut_slice()),
                    plan.lists.then_some(&mut buffers.lists),
                    |p| region.insert(p),
                );
                // Input buffers are rewritten everywhere each timestep: always current.
                region.all = !tracking;
                region.finish(f64::INFINITY);
                continue;
            }
            self.update_region(i, tracked, t, state, network);
            self.fill_reads(i, t);
            let plan = &self.plans[i];
            let (before, rest) = self.buffers.split_at_mut(i);
            let out = &mut rest[0];
            let region = &self.regions[i];
            let active = region.active(&self.all_pixels);
            let row = &mut stats.nodes[i];
            match &node.op {
                Op::Input | Op::Flatten => {}
                Op::Conv2d { .. } => {
                    let src = self.plans[node.inputs[0]].source;
                    if let Some(conv) = Conv::of(node, nodes[src].shape, self.by_tap[i].as_deref())
                    {
                        let input = &before[src].lists;
                        let ops = if region.all && density(input) > self.options.dense_above {
                            let weights =
                                self.dense_weights[i].get_or_insert_with(|| conv.weights_f64());
                            ops::conv_dense(
                                ctx,
                                &conv,
                                weights,
                                input,
                                active,
                                &mut self.dense_scratch,
                                &mut out.values,
                            );
                            self.dense_steps[i] += 1;
                            network.dense_macs(i)
                        } else {
                            let pixels = node.shape.height * node.shape.width;
                            ops::conv(ctx, &conv, input, active, pixels, &mut out.values)
                        };
                        stats.nodes[i].performed_ops += ops;
                        stats.nodes[i].dense_macs += network.dense_macs(i);
                        stats.nodes[i].synaptic_ops += synaptic_ops(
                            self.fan_outs[i].as_ref(),
                            &self.regions[src],
                            source_background(&self.regions, &self.background, src, t),
                            now,
                            input,
                        );
                    }
                }
                Op::Linear { .. } => {
                    let src = self.plans[node.inputs[0]].source;
                    let ops = ops::linear(ctx, node, &before[src].lists, &mut out.values);
                    row.performed_ops += ops;
                    row.dense_macs += network.dense_macs(i);
                    row.synaptic_ops += ops;
                }
                Op::AvgPool { k, stride } | Op::SumPool { k, stride } => {
                    let src = self.plans[node.inputs[0]].source;
                    let divisor = match node.op {
                        Op::AvgPool { .. } => (k * k) as f64,
                        _ => 1.0,
                    };
                    ops::pool(
                        &before[src].values,
                        nodes[src].shape,
                        node.shape,
                        *k,
                        *stride,
                        divisor,
                        active,
                        &mut out.values,
                    );
                }
                Op::GlobalAvgPool => {
                    let src = self.plans[node.inputs[0]].source;
                    ops::global_pool(&before[src].values, nodes[src].shape, &mut out.values);
                }
                Op::Add => {
                    let a = self.plans[node.inputs[0]].source;
                    let b = self.plans[node.inputs[1]].source;
                    ops::add(
                        &before[a].values,
                        &before[b].values,
                        node.shape.channels,
                        active,
                        &mut out.values,
                    );
                }
                Op::Output => {
                    let src = self.plans[node.inputs[0]].source;
                    for (sum, &v) in state.output_sum.iter_mut().zip(&before[src].values) {
                        *sum += v;
                    }
                }
                Op::Neuron(kind) => {
                    let c = node.shape.channels;
                    let mut dense_ops = None;
                    let (current, conv_node) = match plan.current {
                        Some(Current::Conv { conv }) | Some(Current::ConvAdd { conv, .. }) => {
                            let src = self.plans[nodes[conv].inputs[0]].source;
                            let add = match plan.current {
                                Some(Current::ConvAdd { other, .. }) => {
                                    Some(before[other].values.as_slice())
                                }
                                _ => None,
                            };
                            let input = &before[src].lists;
                            let Some(k) = Conv::of(
                                &nodes[conv],
                                nodes[src].shape,
                                self.by_tap[conv].as_deref(),
                            ) else {
                                continue;
                            };
                            if region.all && density(input) > self.options.dense_above {
                                // Too dense for the gather: the whole layer as one GEMM.
                                let weights =
                                    self.dense_weights[conv].get_or_insert_with(|| k.weights_f64());
                                self.currents.resize(node.shape.len(), 0.0);
                                ops::conv_dense(
                                    ctx,
                                    &k,
                                    weights,
                                    input,
                                    active,
                                    &mut self.dense_scratch,
                                    &mut self.currents,
                                );
                                self.dense_steps[conv] += 1;
                                dense_ops = Some(network.dense_macs(conv));
                                (
                                    CurrentIn::Dense {
                                        values: &self.currents,
                                        add,
                                    },
                                    Some((conv, src)),
                                )
                            } else {
                                (
                                    CurrentIn::Conv {
                                        conv: k,
                                        input,
                                        add,
                                    },
                                    Some((conv, src)),
                                )
                            }
                        }
                        Some(Current::Dense(src)) => (
                            CurrentIn::Dense {
                                values: &before[src].values,
                                add: None,
                            },
                            None,
                        ),
                        None => continue,
                    };
                    let quantization = stats.quantization.as_mut().filter(|q| q.node == i);
                    let (fired, ops) = ops::neuron(
                        ctx,
                        *kind,
                        c,
                        current,
                        active,
                        NeuronOut {
                            membranes: &mut state.membranes[network.membrane_range(i)],
                            spikes: &mut out.values,
                            lists: &mut out.lists,
                        },
                        quantization,
                    );
                    let pixels = node.shape.height * node.shape.width;
                    let bg = if region.all {
                        None
                    } else {
                        self.background.at(i, t)
                    };
                    let background_spikes = bg.map_or(0, |bg| {
                        bg.nnz()
                            - active
                                .iter()
                                .map(|&p| bg.nnz_at(p as usize) as u64)
                                .sum::<u64>()
                    });
                    let row = &mut stats.nodes[i];
                    row.spikes += fired + background_spikes;
                    row.neuron_updates += (active.len() * c) as u64;
                    row.neuron_updates_total += (pixels * c) as u64;
                    if let Some((conv, src)) = conv_node {
                        stats.nodes[conv].performed_ops += dense_ops.unwrap_or(ops);
                        stats.nodes[conv].dense_macs += network.dense_macs(conv);
                        stats.nodes[conv].synaptic_ops += synaptic_ops(
                            self.fan_outs[conv].as_ref(),
                            &self.regions[src],
                            source_background(&self.regions, &self.background, src, t),
                            now,
                            &before[src].lists,
                        );
                    }
                    if let Some(layer) = spikes
                        .as_deref_mut()
                        .and_then(|layers| layers.iter_mut().find(|l| l.node == i))
                    {
                        layer.steps.push(fired_indices(&out.values, c, region, bg));
                    }
                }
            }
            // Lists of dense-computed nodes that feed a weighted node.
            if plan.lists && !matches!(node.op, Op::Neuron(_)) {
                let c = node.shape.channels;
                for &p in active {
                    let p = p as usize;
                    out.lists.set_from_dense(p, &out.values[p * c..][..c]);
                }
            }
            self.regions[i].stamp_active(now);
            if let Some(started) = started {
                self.times[i] += started.elapsed();
            }
        }
    }

    /// Sets node `i`'s active region for timestep `t` from its inputs' regions, and gives
    /// neurons that become active the background membranes they would have had.
    fn update_region(
        &mut self,
        i: usize,
        tracked: bool,
        t: usize,
        state: &mut State,
        network: &Network,
    ) {
        let nodes = network.nodes();
        let is_neuron = matches!(nodes[i].op, Op::Neuron(_));
        let (before, rest) = self.regions.split_at_mut(i);
        let region = &mut rest[0];
        if !tracked {
            region.all = true;
            return;
        }
        if region.all {
            return;
        }
        if !is_neuron {
            region.reset();
        }
        let old = region.len();
        let out = nodes[i].shape;
        for read in &self.plans[i].reads {
            let src = &before[read.node];
            if src.all {
                region.all = true;
                break;
            }
            let s = nodes[read.node].shape;
            let geometry = Geometry {
                input: (s.height, s.width),
                output: (out.height, out.width),
                footprint: read.footprint,
            };
            for &p in src.active(&[]) {
                geometry.for_each_reader(p as usize, |o| region.insert(o));
            }
        }
        if !is_neuron {
            region.finish(self.options.max_active_fraction);
            return;
        }
        // Neurons becoming active now start from the background membrane of t − 1 (at t = 0
        // that is the rest state the run began with): the pixels added to the list, and when
        // the region saturates, every pixel never listed.
        self.newly.clear();
        self.newly.extend_from_slice(region.tail(old));
        region.finish(self.options.max_active_fraction);
        if region.all {
            self.newly
                .extend((0..region.pixels() as u32).filter(|&p| !region.listed(p as usize)));
        }
        let Some(prev) = t.checked_sub(1).and_then(|tp| self.background.at(i, tp)) else {
            return;
        };
        let c = nodes[i].shape.channels;
        let membranes = &mut state.membranes[network.membrane_range(i)];
        for &p in &self.newly {
            let p = p as usize;
            membranes[p * c..][..c].copy_from_slice(prev.membranes_at(p));
        }
    }

    /// Copies the background into every pixel that node `i`'s active pixels read but whose
    /// source has not computed this timestep.
    fn fill_reads(&mut self, i: usize, t: usize) {
        let nodes = self.network.nodes();
        let now = self.now;
        let (before, rest) = self.regions.split_at_mut(i);
        let region = &rest[0];
        let out = nodes[i].shape;
        for read in &self.plans[i].reads {
            let src = read.node;
            if src == 0 || before[src].all {
                continue;
            }
            let Some(bg) = self.background.at(src, t) else {
                continue;
            };
            let s = nodes[src].shape;
            let c = s.channels;
            let plan = &self.plans[src];
            let buffers = &mut self.buffers[src];
            let src_region = &mut before[src];
            let mut fill = |q: usize| {
                if src_region.is_current(q, now) {
                    return;
                }
                if plan.dense {
                    buffers.values[q * c..][..c].copy_from_slice(bg.values_at(q));
                }
                if plan.lists {
                    buffers.lists.copy_pixel(q, bg.lists(), bg.cell(q));
                }
                src_region.set_current(q, now);
            };
            if region.all || read.footprint == Footprint::All {
                (0..s.height * s.width).for_each(&mut fill);
            } else {
                let geometry = Geometry {
                    input: (s.height, s.width),
                    output: (out.height, out.width),
                    footprint: read.footprint,
                };
                for &o in region.active(&[]) {
                    geometry.for_each_read(o as usize, &mut fill);
                }
            }
        }
    }
}

/// Fraction of nonzero values in `lists`.
fn density(lists: &PixelLists) -> f64 {
    let total = lists.pixels() * lists.channels();
    if total == 0 {
        0.0
    } else {
        lists.nnz() as f64 / total as f64
    }
}

/// The background of a source node where some of its pixels may be inactive.
fn source_background<'a>(
    regions: &[Region],
    background: &'a Background,
    src: usize,
    t: usize,
) -> Option<&'a Snapshot> {
    if src == 0 || regions[src].all {
        None
    } else {
        background.at(src, t)
    }
}

/// Activity-defined synaptic ops of a weighted node: every nonzero input (computed where the
/// source is current, its background elsewhere) times its fan-out.
fn synaptic_ops(
    fan_out: Option<&FanOut>,
    region: &Region,
    bg: Option<&Snapshot>,
    now: u32,
    lists: &PixelLists,
) -> u64 {
    let Some(fan_out) = fan_out else {
        return 0;
    };
    let width = fan_out.cols.len();
    let mut ops = 0u64;
    for (y, &ry) in fan_out.rows.iter().enumerate() {
        for (x, &rx) in fan_out.cols.iter().enumerate() {
            let p = y * width + x;
            let nnz = match bg {
                Some(bg) if !region.is_current(p, now) => bg.nnz_at(p),
                _ => lists.channels_at(p).len(),
            };
            ops += nnz as u64 * ry * rx;
        }
    }
    ops * fan_out.per_position
}

/// NHWC indices of a neuron node's spikes: computed at active pixels, background elsewhere.
fn fired_indices(spikes: &[f32], c: usize, region: &Region, bg: Option<&Snapshot>) -> Vec<u32> {
    let mut fired = Vec::new();
    for (p, pixel) in spikes.chunks_exact(c.max(1)).enumerate() {
        let values = match bg {
            Some(bg) if !region.contains(p) => bg.values_at(p),
            _ => pixel,
        };
        fired.extend(
            values
                .iter()
                .enumerate()
                .filter(|(_, v)| **v != 0.0)
                .map(|(ch, _)| (p * c + ch) as u32),
        );
    }
    fired
}

impl Executor for SparseExecutor {
    fn name(&self) -> &'static str {
        "event"
    }

    fn run(
        &mut self,
        network: &Network,
        state: &mut State,
        frames: &[SparseFrame],
        options: &RunOptions,
    ) -> Result<Output, ExecError> {
        self.check_network(network)?;
        validate_run(network, state, frames, options)?;
        // The whole run executes inside the private pool, so the bands' `rayon::join`s use its
        // threads (and never the global pool).
        let pool = self.pool.take();
        let output = match &pool {
            Some(pool) => pool.install(|| self.run_inner(state, frames, options)),
            None => self.run_inner(state, frames, options),
        };
        self.pool = pool;
        Ok(output)
    }
}
