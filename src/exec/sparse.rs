//! The event-driven executor: each layer does work only for the nonzero inputs it receives
//! and, where the bias-driven background is known, only for the neurons those inputs reach.
//!
//! # How a layer runs
//!
//! Activations that feed a weighted layer are kept as per-pixel lists of their nonzero
//! channels ([`lists::PixelLists`]). A convolution computes each output pixel by summing, in
//! f64 registers, the contiguous Cout-long weight rows `W[c][ky][kx][..]` of the nonzero
//! inputs in its window, then rounds each sum to f32 once ([`crate::kernels::rows`]). For
//! binary spikes the rows are added, never multiplied. The sum is, term for term, the
//! event-driven scatter "every input (c, y, x, v) adds v·W[c, ky, kx, :] to its output
//! neighbourhood"; it is evaluated output-stationary because that keeps the accumulators in
//! registers. The gather reads a tap-major copy of the weights so that a window's rows lie at
//! ascending addresses ([`ops::tap_major`]). A conv whose only consumer is a neuron (directly
//! or through a residual add) is computed inside that neuron's loop, pixel by pixel, so its
//! currents never go to memory ([`plan`]). Pools, adds and the output sum work on dense f32
//! buffers and follow the contract in [`crate::exec`] literally.
//!
//! # Gather or GEMM, per layer and timestep
//!
//! The gather's cost grows with the nonzero inputs; im2col + one f64 GEMM costs the same at
//! any density but runs at several times the gather's rate per accumulate. So a fully active
//! conv whose input density exceeds its threshold runs as the GEMM instead. The threshold is
//! per layer ([`EventOptions::gemm_threshold`]): it is lower for real-valued inputs (each
//! row is a multiply-add with a broadcast value) and for weights that do not fit in the core's
//! cache (each output pixel then streams its rows from further away). Binary spikes at the
//! 10–20 % rates of trained networks stay on the gather; the quarter-valued inputs after
//! VGG-SNN's pools (about half nonzero) go to the GEMM. Both sum the same terms exactly in
//! f64, so the switch never changes a bit. The GEMM's f64 weights are made the first time a
//! conv takes that path, once per plan.
//!
//! # Touching only what receives spikes
//!
//! Folded batch norms give every neuron a bias, so even an empty input makes some channels
//! fire. That response (the [`background`]) is computed when the plan is built, by running
//! on `background_steps` all-zero frames. During a run each node keeps its active [`region`]:
//! the pixels an input event has reached through the windows of the layers before (a neuron
//! stays active once reached, since its membrane keeps the difference; that region belongs to
//! the stream's `State`). Only active pixels are computed; the others hold the background,
//! which is copied in only where an active pixel's window reads it. A region that grows past
//! `max_active_fraction` of its layer switches to computing the whole layer, as does every
//! node whose background table is not small (near the borders the background differs pixel by
//! pixel; in the interior it is uniform), and every node once the stream is older than the
//! background (`background_steps` timesteps since its last reset). Active pixels are computed
//! directly (bias plus every nonzero input in the window, the background's spikes included),
//! so the switch never changes a value.
//!
//! EXECUTOR.md's alternative, X = X₀ + W ⊛ (S − S₀) (one row per spike that differs from the
//! background), was measured by counting instead of built: on uniformly random input 1.5–1.6
//! times as many spikes differ from the background as there are spikes, so it would do more
//! work; it would pay only on localized input to small networks (BENCHMARKS.md, Executors).
//!
//! The counters say what was done: `neuron_updates` counts neurons actually stepped,
//! `performed_ops` the accumulates actually made, against `neuron_updates_total` and the
//! activity-defined `synaptic_ops`.
//!
//! # Exactness
//!
//! Nodes with int8 weights gather their integer rows into i16 runs widened into i32 sums
//! instead ([`crate::kernels::sum_taps_i8`]), which are exact in any order, and make each
//! current with the network's one f32 expression ([`crate::snn::network::int8_current`]).
//! Above `EventOptions::gemm_above_int8` (60 % input density, the measured crossover) an int8
//! conv runs as im2col of its 0/1 input times its int8 weights ([`ops::conv_dense_int8`]),
//! exact in i32 too, so that switch never changes a bit either.
//!
//! Every value is computed from the same f32 operands as the reference, summed in f64 and
//! rounded once; the neuron step is `snn::neuron`'s. Spikes and logits are therefore the
//! reference's bit for bit (tests/it/exec.rs checks every built-in architecture).
//!
//! # Threads
//!
//! With a pool of more than one thread, each layer's active pixels are cut into bands of
//! equal work and run on the pool (see [`bands`]). Without one, nothing is spawned.
//!
//! # Memory
//!
//! Per stream (the `State`): 4 bytes per neuron, plus the regions of the tracked neuron nodes
//! (about 5 bytes per pixel). Per worker ([`EventScratch`]): each node's activation and lists,
//! the stamps, and the GEMM path's im2col buffers. Per network (the plan): the background,
//! the tap-major weights, and the f64 weights of convs that took the GEMM path.

pub mod background;
pub mod bands;
pub mod lists;
pub mod ops;
pub mod plan;
pub mod region;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::binner::SparseFrame;
use crate::exec::pool::{Pool, within};
use crate::exec::stats::{FanOut, InferenceStats, QuantizationError};
use crate::exec::{
    ConvNode, LayerSpikes, PlanError, RunOptions, RunOutput, State, input_frame_shape,
};
use crate::kernels::Isa;
use crate::snn::network::{Network, Op};

use background::{Background, Snapshot};
use lists::PixelLists;
use ops::{Conv, CurrentIn, NeuronOut};
use plan::{Current, Footprint, NodePlan};
use region::{Geometry, Region, Stamps};

/// How the event-driven executor runs (part of [`crate::exec::PlanOptions`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventOptions {
    /// Instruction set for the f64 kernels (None: the best this CPU has). The integer
    /// kernels of int8 nodes always use the best this CPU has ([`crate::kernels::Int8Isa`]).
    pub isa: Option<Isa>,
    /// Compute only the pixels input events reach, holding the background elsewhere.
    pub tracking: bool,
    /// A tracked node whose active pixels exceed this fraction of its layer is computed
    /// everywhere until the stream's next reset (its region would cost more than it saves).
    pub max_active_fraction: f64,
    /// A node is tracked only if its background table has at most this fraction of the
    /// layer's pixels (otherwise the cache would approach the layer's size).
    pub max_background_fraction: f64,
    /// A fully active conv on binary spikes whose weights fit in `cache_bytes` runs as
    /// im2col + GEMM when more than this fraction of its input is nonzero.
    pub gemm_above_binary: f64,
    /// The same for real-valued inputs (event counts, pooled spikes), where each term is a
    /// multiply-add.
    pub gemm_above_valued: f64,
    /// The same for int8 convs (whose inputs are spikes): above it, im2col + the integer
    /// (VNNI) GEMM instead of the i16 row sums. Measured on one 3×3 layer of 64–512
    /// channels (`INFLOR_EXECUTE_CROSSOVER=int8 cargo bench --bench execute`), the row sums
    /// win up to 50 % input density and the GEMM from about 70 % (see BENCHMARKS.md).
    pub gemm_above_int8: f64,
    /// Weights larger than this (tap-major, f32) no longer stay in the core's cache while the
    /// gather walks the output pixels; the thresholds are then scaled by
    /// `large_weights_factor`.
    pub cache_bytes: usize,
    /// Scales the GEMM thresholds of convs whose weights exceed `cache_bytes`.
    pub large_weights_factor: f64,
    /// Measure the wall time of every node (see [`crate::exec::Scratch::node_times`]).
    pub profile: bool,
}

impl Default for EventOptions {
    fn default() -> Self {
        Self {
            isa: None,
            tracking: true,
            max_active_fraction: 0.5,
            max_background_fraction: 0.25,
            gemm_above_binary: 0.5,
            gemm_above_valued: 0.5,
            gemm_above_int8: 0.6,
            cache_bytes: 1 << 20,
            large_weights_factor: 1.0,
            profile: false,
        }
    }
}

impl EventOptions {
    /// The input density above which conv node `conv` of `network` runs as im2col + GEMM
    /// (see the module header); `binary` says whether its input is spikes.
    pub fn gemm_threshold(&self, network: &Network, conv: usize, binary: bool) -> f64 {
        let Some(c) = ConvNode::of(network, conv) else {
            return f64::INFINITY;
        };
        let base = if binary {
            self.gemm_above_binary
        } else {
            self.gemm_above_valued
        };
        if std::mem::size_of_val(c.weight) > self.cache_bytes {
            base * self.large_weights_factor
        } else {
            base
        }
    }
}

/// Per-node buffers for the current timestep.
#[derive(Debug, Default)]
struct NodeBuffers {
    values: Vec<f32>,
    lists: PixelLists,
}

/// The event-driven executor's part of a plan: everything computed once per network.
pub struct EventPlan {
    options: EventOptions,
    isa: Isa,
    nodes: Vec<NodePlan>,
    fan_outs: Vec<Option<FanOut>>,
    background: Background,
    /// Per conv node, its weights tap-major for the gather (see [`ops::tap_major`]).
    by_tap: Vec<Option<Vec<f32>>>,
    /// Per int8 conv node, its integer weights tap-major (None for 1×1 and float convs).
    by_tap_i8: Vec<Option<Vec<i8>>>,
    /// Per conv node, the input density above which it runs as im2col + GEMM.
    gemm_above: Vec<f64>,
    /// Per conv node, its weights in f64 once the GEMM path first ran it.
    gemm_weights: Vec<OnceLock<Vec<f64>>>,
    /// 0..pixels of the largest node: the active list of a fully active node.
    all_pixels: Vec<u32>,
    /// Per node: its region belongs to the stream (a tracked neuron node).
    stream_region: Vec<bool>,
}

impl std::fmt::Debug for EventPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventPlan")
            .field("options", &self.options)
            .field("isa", &self.isa)
            .field("background_bytes", &self.background.bytes())
            .finish_non_exhaustive()
    }
}

/// The event-driven executor's per-worker buffers (inside a [`crate::exec::Scratch`]).
#[derive(Debug)]
pub struct EventScratch {
    buffers: Vec<NodeBuffers>,
    /// Per node, this timestep's active pixels (a tracked neuron node's slot holds the
    /// stream's region during a call, and nothing in between).
    regions: Vec<Region>,
    stamps: Vec<Stamps>,
    /// Stamp of the current timestep (see [`Stamps::is_current`]).
    now: u32,
    /// Pixels of a neuron node that became active this timestep.
    newly: Vec<u32>,
    dense_scratch: ops::DenseScratch,
    /// Currents of a fused conv that ran on the GEMM path.
    currents: Vec<f32>,
    /// Per conv node, the timesteps it ran on the GEMM path.
    gemm_steps: Vec<u64>,
    times: Vec<Duration>,
}

impl EventScratch {
    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        let f32s = std::mem::size_of::<f32>();
        let buffers: usize = self
            .buffers
            .iter()
            .map(|b| b.values.capacity() * f32s + b.lists.heap_bytes())
            .sum();
        let regions: usize = self.regions.iter().map(Region::heap_bytes).sum::<usize>()
            + self.stamps.iter().map(Stamps::heap_bytes).sum::<usize>();
        buffers
            + regions
            + self.dense_scratch.heap_bytes()
            + (self.currents.capacity() + self.newly.capacity()) * f32s
    }

    /// Wall time spent in each node since the last reset (zeros unless
    /// [`EventOptions::profile`]). A conv or add computed inside a neuron counts towards that
    /// neuron.
    pub fn node_times(&self) -> &[Duration] {
        &self.times
    }

    /// Per node, the timesteps its conv ran as im2col + GEMM since the last reset.
    pub fn gemm_steps(&self) -> &[u64] {
        &self.gemm_steps
    }

    /// Forgets the node times and GEMM counts.
    pub fn reset_counters(&mut self) {
        self.times.fill(Duration::ZERO);
        self.gemm_steps.fill(0);
    }

    /// Advances the timestep stamp, clearing every stamp when it wraps.
    fn next_stamp(&mut self) {
        if self.now == u32::MAX {
            for s in &mut self.stamps {
                s.clear();
            }
            self.now = 0;
        }
        self.now += 1;
    }
}

impl EventPlan {
    /// Prepares `network`: the node plans, reordered weights, fan-out tables, and the
    /// background over `background_steps` timesteps (computed here, on `pool` if given).
    pub(crate) fn new(
        network: &Network,
        options: EventOptions,
        background_steps: usize,
        pool: Option<&Pool>,
    ) -> Result<Self, PlanError> {
        let nodes = network.nodes();
        for (i, node) in nodes.iter().enumerate() {
            if let Op::Conv2d { weight, .. } | Op::Linear { weight, .. } = &node.op
                && u32::try_from(weight.len()).is_err()
            {
                return Err(PlanError::TooLarge {
                    node: i,
                    name: node.name.clone(),
                    weights: weight.len(),
                });
            }
        }
        let plans = plan::plan(network);
        let gemm_above = (0..nodes.len())
            .map(|i| {
                let binary = nodes[i]
                    .inputs
                    .first()
                    .is_some_and(|&src| network.is_binary(src));
                if network.int8(i).is_some() {
                    options.gemm_above_int8
                } else {
                    options.gemm_threshold(network, i, binary)
                }
            })
            .collect();
        let max_pixels = nodes
            .iter()
            .map(|n| n.shape.height * n.shape.width)
            .max()
            .unwrap_or(0);
        let mut plan = Self {
            fan_outs: (0..nodes.len()).map(|i| FanOut::of(network, i)).collect(),
            isa: options.isa.unwrap_or_else(Isa::detect),
            background: Background::new(nodes.len(), 0),
            by_tap: (0..nodes.len())
                .map(|i| ConvNode::of(network, i).and_then(|c| ops::tap_major(&c)))
                .collect(),
            by_tap_i8: (0..nodes.len())
                .map(|i| {
                    let q = network.int8(i)?;
                    ops::tap_major_of(&ConvNode::of(network, i)?, &q.weight)
                })
                .collect(),
            gemm_above,
            gemm_weights: (0..nodes.len()).map(|_| OnceLock::new()).collect(),
            all_pixels: (0..max_pixels as u32).collect(),
            stream_region: vec![false; nodes.len()],
            nodes: plans,
            options,
        };
        if options.tracking && background_steps > 0 {
            let threads = pool.map_or(1, Pool::threads);
            let background = within(pool, || {
                plan.compute_background(network, background_steps, threads)
            });
            plan.stream_region = nodes
                .iter()
                .enumerate()
                .map(|(i, n)| matches!(n.op, Op::Neuron(_)) && background.tracks(i))
                .collect();
            plan.background = background;
        }
        Ok(plan)
    }

    /// The gather's view of conv node `i` (with its int8 weights, if any).
    fn conv<'a>(&'a self, network: &'a Network, i: usize) -> Option<Conv<'a>> {
        let c = ConvNode::of(network, i)?;
        let int8 = network.int8(i).map(|q| ops::Int8Conv {
            weight: &q.weight,
            by_tap: self.by_tap_i8[i].as_deref().unwrap_or(&q.weight),
            scale: &q.scale,
        });
        Some(Conv::of(&c, self.by_tap[i].as_deref(), int8))
    }

    /// The instruction set the kernels use.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The background.
    pub fn background(&self) -> &Background {
        &self.background
    }

    /// Whether node `node` is tracked (computed only where input events reach it).
    pub fn tracks(&self, node: usize) -> bool {
        self.background.tracks(node)
    }

    /// The input density above which conv node `node` runs as im2col + GEMM.
    pub fn gemm_above(&self, node: usize) -> f64 {
        self.gemm_above.get(node).copied().unwrap_or(f64::INFINITY)
    }

    /// Bytes of the per-network cache: background, reordered weights and the GEMM path's
    /// f64 weights made so far.
    pub fn cache_bytes(&self) -> usize {
        self.background.bytes()
            + self
                .by_tap
                .iter()
                .flatten()
                .map(|w| w.len() * std::mem::size_of::<f32>())
                .sum::<usize>()
            + self
                .gemm_weights
                .iter()
                .filter_map(OnceLock::get)
                .map(|w| w.len() * std::mem::size_of::<f64>())
                .sum::<usize>()
    }

    /// A stream's regions: one per tracked neuron node, empty elsewhere.
    pub(crate) fn new_regions(&self, network: &Network) -> Vec<Region> {
        if !self.stream_region.contains(&true) {
            return Vec::new();
        }
        network
            .nodes()
            .iter()
            .zip(&self.stream_region)
            .map(|(n, &own)| {
                if own {
                    Region::new(n.shape.height * n.shape.width)
                } else {
                    Region::default()
                }
            })
            .collect()
    }

    /// Buffers for one worker.
    pub(crate) fn new_scratch(&self, network: &Network) -> EventScratch {
        let nodes = network.nodes();
        let buffers = nodes
            .iter()
            .zip(&self.nodes)
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
        let pixels = |n: &crate::snn::network::Node| n.shape.height * n.shape.width;
        EventScratch {
            buffers,
            regions: nodes
                .iter()
                .zip(&self.stream_region)
                .map(|(n, &own)| {
                    if own {
                        Region::default()
                    } else {
                        Region::new(pixels(n))
                    }
                })
                .collect(),
            stamps: nodes.iter().map(|n| Stamps::new(pixels(n))).collect(),
            now: 0,
            newly: Vec::new(),
            dense_scratch: ops::DenseScratch::default(),
            currents: Vec::new(),
            gemm_steps: vec![0; nodes.len()],
            times: vec![Duration::ZERO; nodes.len()],
        }
    }

    /// The exact membranes of `state`: its own where the stream has reached, the
    /// background's elsewhere.
    pub(crate) fn membranes(&self, network: &Network, state: &State) -> Vec<f32> {
        let mut membranes = state.membranes.clone();
        let Some(last) = state.steps.checked_sub(1) else {
            return membranes;
        };
        for (i, region) in state.regions.iter().enumerate() {
            if !self.stream_region[i] || region.all {
                continue;
            }
            let Some(bg) = usize::try_from(last)
                .ok()
                .and_then(|t| self.background.at(i, t))
            else {
                continue;
            };
            let c = network.nodes()[i].shape.channels;
            let m = &mut membranes[network.membrane_range(i)];
            for p in (0..region.pixels()).filter(|&p| !region.contains(p)) {
                m[p * c..][..c].copy_from_slice(bg.membranes_at(p));
            }
        }
        membranes
    }

    /// Runs `frames` from `state` (validated by the caller), inside `pool` when given.
    pub(crate) fn run(
        &self,
        network: &Network,
        scratch: &mut EventScratch,
        state: &mut State,
        frames: &[SparseFrame],
        options: &RunOptions,
        pool: Option<&Pool>,
    ) -> RunOutput {
        let threads = pool.map_or(1, Pool::threads);
        within(pool, || {
            self.run_inner(network, scratch, state, frames, options, threads)
        })
    }

    fn run_inner(
        &self,
        network: &Network,
        s: &mut EventScratch,
        state: &mut State,
        frames: &[SparseFrame],
        options: &RunOptions,
        threads: usize,
    ) -> RunOutput {
        // The quantization statistic observes every neuron, so such calls compute everything.
        let tracking = self.options.tracking && options.quantization_node.is_none();
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
        // The stream's regions work in the scratch's slots for the call (a swap of vector
        // headers), and go back with the state afterwards.
        self.swap_regions(s, state);
        for frame in frames {
            let t = usize::try_from(state.steps).unwrap_or(usize::MAX);
            s.next_stamp();
            self.step(
                network,
                s,
                state,
                frame,
                t,
                tracking && t < self.background.steps(),
                threads,
                &mut stats,
                spikes.as_deref_mut(),
                None,
            );
            state.steps += 1;
            state.output_steps += 1;
            stats.timesteps += 1;
        }
        self.swap_regions(s, state);
        RunOutput {
            logits: state.logits(),
            timesteps: frames.len(),
            spikes,
            stats,
        }
    }

    fn swap_regions(&self, s: &mut EventScratch, state: &mut State) {
        for (i, r) in state.regions.iter_mut().enumerate() {
            if self.stream_region[i] {
                std::mem::swap(&mut s.regions[i], r);
            }
        }
    }

    /// Runs the network on `steps` empty frames, everything computed, and keeps each node's
    /// maps; nodes whose tables are small (and whose inputs are tracked) become tracked.
    fn compute_background(&self, network: &Network, steps: usize, threads: usize) -> Background {
        let nodes = network.nodes();
        let empty = SparseFrame::empty(input_frame_shape(network));
        let mut s = self.new_scratch(network);
        let mut state = State::new(0, network.neuron_count(), network.classes(), Vec::new());
        let mut stats = InferenceStats::new(network);
        let eligible: Vec<bool> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let plan = &self.nodes[i];
                n.shape.height * n.shape.width > 1
                    && plan.fused_into.is_none()
                    && plan.source == i
                    && !matches!(n.op, Op::Input)
            })
            .collect();
        let mut snapshots: Vec<Vec<Snapshot>> = vec![Vec::new(); nodes.len()];
        let mut compact = eligible.clone();
        // Only nodes that can still end up tracked are computed: a node whose table grew too
        // large, and everything that reads it, is computed everywhere during runs and needs
        // no background. In deep networks that leaves the first layers, so building the
        // background costs a fraction of a run.
        let mut alive = vec![false; nodes.len()];
        for t in 0..steps {
            for i in 1..nodes.len() {
                let reads_alive = self.nodes[i]
                    .reads
                    .iter()
                    .all(|r| (r.node == 0 || alive[r.node]) && r.footprint != Footprint::All);
                alive[i] = compact[i] && reads_alive;
                if compact[i] && !alive[i] {
                    compact[i] = false;
                    snapshots[i] = Vec::new();
                }
            }
            s.next_stamp();
            self.step(
                network,
                &mut s,
                &mut state,
                &empty,
                t,
                false,
                threads,
                &mut stats,
                None,
                Some(&alive),
            );
            for (i, n) in nodes.iter().enumerate() {
                if !alive[i] {
                    continue;
                }
                let shape = n.shape;
                let plan = &self.nodes[i];
                let membranes: &[f32] = if matches!(n.op, Op::Neuron(_)) {
                    &state.membranes[network.membrane_range(i)]
                } else {
                    &[]
                };
                let snap = Snapshot::compress(
                    shape.height,
                    shape.width,
                    shape.channels,
                    &s.buffers[i].values,
                    membranes,
                    plan.lists,
                    plan.binary,
                );
                let pixels = (shape.height * shape.width) as f64;
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
            let reads_tracked = self.nodes[i]
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

    /// One timestep through every node (or, with `only`, the nodes it marks); `t` is the
    /// stream's timestep since its reset.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        network: &Network,
        s: &mut EventScratch,
        state: &mut State,
        frame: &SparseFrame,
        t: usize,
        tracking: bool,
        threads: usize,
        stats: &mut InferenceStats,
        mut spikes: Option<&mut [LayerSpikes]>,
        only: Option<&[bool]>,
    ) {
        let nodes = network.nodes();
        let ctx = ops::Ctx {
            isa: self.isa,
            parallel: threads > 1,
            threads,
        };
        let now = s.now;
        for (i, node) in nodes.iter().enumerate() {
            let plan = &self.nodes[i];
            if plan.fused_into.is_some() || plan.source != i {
                continue;
            }
            if i > 0 && only.is_some_and(|only| !only[i]) {
                continue;
            }
            let started = self.options.profile.then(Instant::now);
            let tracked = tracking && self.background.tracks(i);
            if let Op::Input = node.op {
                let region = &mut s.regions[i];
                region.reset();
                let buffers = &mut s.buffers[i];
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
            self.update_region(network, s, i, tracked, t, state);
            self.fill_reads(network, s, i, t);
            let (before, rest) = s.buffers.split_at_mut(i);
            let out = &mut rest[0];
            let region = &s.regions[i];
            let active = region.active(&self.all_pixels);
            match &node.op {
                Op::Input | Op::Flatten => {}
                Op::Conv2d { .. } => {
                    let src = self.nodes[node.inputs[0]].source;
                    let Some(k) = self.conv(network, i) else {
                        continue;
                    };
                    let input = &before[src].lists;
                    let ops = if region.all && density(input) > self.gemm_above[i] {
                        if !ops::conv_dense_int8(
                            ctx,
                            &k,
                            input,
                            active,
                            &mut s.dense_scratch,
                            &mut out.values,
                        ) {
                            let weights = self.gemm_weights[i].get_or_init(|| k.weights_f64());
                            ops::conv_dense(
                                ctx,
                                &k,
                                weights,
                                input,
                                active,
                                &mut s.dense_scratch,
                                &mut out.values,
                            );
                        }
                        s.gemm_steps[i] += 1;
                        network.dense_macs(i)
                    } else {
                        let pixels = node.shape.height * node.shape.width;
                        ops::conv(ctx, &k, input, active, pixels, &mut out.values)
                    };
                    let row = &mut stats.nodes[i];
                    row.performed_ops += ops;
                    row.dense_macs += network.dense_macs(i);
                    row.synaptic_ops += synaptic_ops(
                        self.fan_outs[i].as_ref(),
                        &s.regions[src],
                        &s.stamps[src],
                        self.source_background(&s.regions, src, t),
                        now,
                        input,
                    );
                }
                Op::Linear { .. } => {
                    let src = self.nodes[node.inputs[0]].source;
                    let ops = ops::linear(
                        ctx,
                        node,
                        network.int8(i),
                        &before[src].lists,
                        &mut out.values,
                    );
                    let row = &mut stats.nodes[i];
                    row.performed_ops += ops;
                    row.dense_macs += network.dense_macs(i);
                    row.synaptic_ops += ops;
                }
                Op::AvgPool { k, stride } | Op::SumPool { k, stride } => {
                    let src = self.nodes[node.inputs[0]].source;
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
                    let src = self.nodes[node.inputs[0]].source;
                    ops::global_pool(&before[src].values, nodes[src].shape, &mut out.values);
                }
                Op::Add => {
                    let a = self.nodes[node.inputs[0]].source;
                    let b = self.nodes[node.inputs[1]].source;
                    ops::add(
                        &before[a].values,
                        &before[b].values,
                        node.shape.channels,
                        active,
                        &mut out.values,
                    );
                }
                Op::Output => {
                    let src = self.nodes[node.inputs[0]].source;
                    for (sum, &v) in state.output_sum.iter_mut().zip(&before[src].values) {
                        *sum += v;
                    }
                }
                Op::Neuron(kind) => {
                    let c = node.shape.channels;
                    let mut gemm_ops = None;
                    let (current, conv_node) = match plan.current {
                        Some(Current::Conv { conv }) | Some(Current::ConvAdd { conv, .. }) => {
                            let src = self.nodes[nodes[conv].inputs[0]].source;
                            let add = match plan.current {
                                Some(Current::ConvAdd { other, .. }) => {
                                    Some(before[other].values.as_slice())
                                }
                                _ => None,
                            };
                            let input = &before[src].lists;
                            let Some(k) = self.conv(network, conv) else {
                                continue;
                            };
                            if region.all && density(input) > self.gemm_above[conv] {
                                // Too dense for the gather: the whole layer as one GEMM.
                                s.currents.resize(node.shape.len(), 0.0);
                                if !ops::conv_dense_int8(
                                    ctx,
                                    &k,
                                    input,
                                    active,
                                    &mut s.dense_scratch,
                                    &mut s.currents,
                                ) {
                                    let weights =
                                        self.gemm_weights[conv].get_or_init(|| k.weights_f64());
                                    ops::conv_dense(
                                        ctx,
                                        &k,
                                        weights,
                                        input,
                                        active,
                                        &mut s.dense_scratch,
                                        &mut s.currents,
                                    );
                                }
                                s.gemm_steps[conv] += 1;
                                gemm_ops = Some(network.dense_macs(conv));
                                (
                                    CurrentIn::Dense {
                                        values: &s.currents,
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
                        let row = &mut stats.nodes[conv];
                        row.performed_ops += gemm_ops.unwrap_or(ops);
                        row.dense_macs += network.dense_macs(conv);
                        row.synaptic_ops += synaptic_ops(
                            self.fan_outs[conv].as_ref(),
                            &s.regions[src],
                            &s.stamps[src],
                            self.source_background(&s.regions, src, t),
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
            s.stamps[i].stamp_active(&s.regions[i], now);
            if let Some(started) = started {
                s.times[i] += started.elapsed();
            }
        }
    }

    /// Sets node `i`'s active region for timestep `t` from its inputs' regions, and gives
    /// neurons that become active the background membranes they would have had.
    fn update_region(
        &self,
        network: &Network,
        s: &mut EventScratch,
        i: usize,
        tracked: bool,
        t: usize,
        state: &mut State,
    ) {
        let nodes = network.nodes();
        let is_neuron = matches!(nodes[i].op, Op::Neuron(_));
        let (before, rest) = s.regions.split_at_mut(i);
        let region = &mut rest[0];
        if !is_neuron {
            // Recomputed at every timestep: it depends only on this timestep's inputs.
            region.reset();
        }
        if region.all {
            return;
        }
        let old = region.len();
        if !tracked {
            // Untracked from the start, or past the background's last timestep: compute
            // everything (a neuron's never-reached pixels get their background membranes
            // below).
            region.all = true;
        }
        let out = nodes[i].shape;
        for read in &self.nodes[i].reads {
            let src = &before[read.node];
            if region.all || src.all {
                region.all = true;
                break;
            }
            let shape = nodes[read.node].shape;
            let geometry = Geometry {
                input: (shape.height, shape.width),
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
        // that is the rest state the stream began with): the pixels added to the list, and
        // when the region saturates, every pixel never listed.
        s.newly.clear();
        s.newly.extend_from_slice(region.tail(old));
        region.finish(self.options.max_active_fraction);
        if region.all {
            s.newly
                .extend((0..region.pixels() as u32).filter(|&p| !region.listed(p as usize)));
        }
        let Some(prev) = t.checked_sub(1).and_then(|tp| self.background.at(i, tp)) else {
            return;
        };
        let c = nodes[i].shape.channels;
        let membranes = &mut state.membranes[network.membrane_range(i)];
        for &p in &s.newly {
            let p = p as usize;
            membranes[p * c..][..c].copy_from_slice(prev.membranes_at(p));
        }
    }

    /// Copies the background into every pixel that node `i`'s active pixels read but whose
    /// source has not computed this timestep.
    fn fill_reads(&self, network: &Network, s: &mut EventScratch, i: usize, t: usize) {
        let nodes = network.nodes();
        let now = s.now;
        let region = &s.regions[i];
        let out = nodes[i].shape;
        for read in &self.nodes[i].reads {
            let src = read.node;
            let src_region = &s.regions[src];
            if src == 0 || src_region.all {
                continue;
            }
            let Some(bg) = self.background.at(src, t) else {
                continue;
            };
            let shape = nodes[src].shape;
            let c = shape.channels;
            let plan = &self.nodes[src];
            let buffers = &mut s.buffers[src];
            let stamps = &mut s.stamps[src];
            let mut fill = |q: usize| {
                if stamps.is_current(false, q, now) {
                    return;
                }
                if plan.dense {
                    buffers.values[q * c..][..c].copy_from_slice(bg.values_at(q));
                }
                if plan.lists {
                    buffers.lists.copy_pixel(q, bg.lists(), bg.cell(q));
                }
                stamps.set_current(q, now);
            };
            if region.all || read.footprint == Footprint::All {
                (0..shape.height * shape.width).for_each(&mut fill);
            } else {
                let geometry = Geometry {
                    input: (shape.height, shape.width),
                    output: (out.height, out.width),
                    footprint: read.footprint,
                };
                for &o in region.active(&[]) {
                    geometry.for_each_read(o as usize, &mut fill);
                }
            }
        }
    }

    /// The background of a source node where some of its pixels may be inactive.
    fn source_background(&self, regions: &[Region], src: usize, t: usize) -> Option<&Snapshot> {
        if src == 0 || regions[src].all {
            None
        } else {
            self.background.at(src, t)
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

/// Activity-defined synaptic ops of a weighted node: every nonzero input (computed where the
/// source is current, its background elsewhere) times its fan-out.
fn synaptic_ops(
    fan_out: Option<&FanOut>,
    region: &Region,
    stamps: &Stamps,
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
                Some(bg) if !stamps.is_current(region.all, p, now) => bg.nnz_at(p),
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
