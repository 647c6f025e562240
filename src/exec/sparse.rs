//! The event-driven executor: each layer does work only for the nonzero inputs it receives
//! and, where the bias-driven "background" is known, only for the neurons those inputs reach.
//!
//! # How a layer runs
//!
//! Activations that feed a weighted layer are kept as per-pixel lists of their nonzero
//! channels ([`lists::PixelLists`]). A convolution computes each output pixel by summing, in
//! f64 registers, the contiguous Cout-long weight rows `W[c][ky][kx][..]` of the nonzero
//! inputs in its window, then rounds each sum to f32 once ([`kernels`]). For binary spikes the
//! rows are added, never multiplied. The sum equals the event-driven scatter "every input
//! (c, y, x, v) adds v·W[c, ky, kx, :] to its output neighbourhood" term for term; it is
//! evaluated output-stationary because that keeps the accumulators in registers (see
//! `kernels` for the measurements). Non-weighted nodes (pools, residual adds, the output sum)
//! work on dense f32 buffers and follow the contract in [`crate::exec`] literally.
//!
//! # Exactness
//!
//! Every value is computed from the same f32 operands as the reference, summed in f64 and
//! rounded once; the neuron step is `snn::neuron`'s. Spikes and logits are therefore the
//! reference's bit for bit (tests/it/exec.rs checks every built-in architecture).
//!
//! # Threads
//!
//! With `threads > 1` each layer's output pixels are cut into bands holding equal numbers of
//! active pixels and run on a private rayon pool (see [`bands`]). With one thread nothing is
//! spawned.

pub mod bands;
pub mod kernels;
pub mod lists;

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::binner::SparseFrame;
use crate::exec::stats::{FanOut, InferenceStats, QuantizationError};
use crate::exec::{ExecError, Executor, LayerSpikes, Output, RunOptions, validate_run};
use crate::snn::network::{Network, Node, Op, Shape};
use crate::snn::neuron::{NeuronKind, fire};
use crate::snn::state::State;

use bands::{PixelsMut, for_bands};
use kernels::{Isa, sum_rows, sum_rows_scaled};
use lists::{ListsMut, PixelLists};

/// How the event-driven executor runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SparseOptions {
    /// Worker threads for the layers (1: run on the caller's thread only).
    pub threads: usize,
    /// Instruction set for the kernels (None: the best this CPU has).
    pub isa: Option<Isa>,
    /// Measure the wall time of every node (see [`SparseExecutor::node_times`]).
    pub profile: bool,
}

impl Default for SparseOptions {
    fn default() -> Self {
        Self {
            threads: 1,
            isa: None,
            profile: false,
        }
    }
}

/// Why the event-driven executor cannot be prepared for a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SparseError {
    /// A weight tensor is too large for 32-bit row offsets.
    #[error("node {node} ({name}) has {weights} weights; the event-driven executor handles at most 2^32")]
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

/// What one node keeps per timestep and how it is computed, decided once per network.
#[derive(Debug, Clone)]
struct NodePlan {
    /// The node whose buffers hold this node's values (itself, or for `Flatten` the node it
    /// reinterprets).
    source: usize,
    /// Keep a dense NHWC buffer (read by pools, adds, neurons, the output).
    dense: bool,
    /// Keep per-pixel lists of nonzero values (read by convs and linears).
    lists: bool,
    /// The values are 0 or 1.
    binary: bool,
}

/// Per-node buffers for the current timestep.
#[derive(Debug, Default)]
struct NodeBuffers {
    values: Vec<f32>,
    lists: PixelLists,
}

/// Per-thread scratch of the gather: the weight-row offsets and values of one output pixel.
#[derive(Debug, Default)]
struct Gather {
    rows: Vec<u32>,
    values: Vec<f32>,
}

thread_local! {
    static GATHER: RefCell<Gather> = RefCell::new(Gather::default());
}

/// The event-driven executor, prepared for one network. Holds its scratch buffers; use one
/// per worker thread and run many streams' states through it.
pub struct SparseExecutor {
    network: Arc<Network>,
    options: SparseOptions,
    isa: Isa,
    pool: Option<rayon::ThreadPool>,
    plans: Vec<NodePlan>,
    buffers: Vec<NodeBuffers>,
    fan_outs: Vec<Option<FanOut>>,
    /// 0..pixels of the largest node, the active list of a fully active layer.
    all_pixels: Vec<u32>,
    times: Vec<Duration>,
}

impl std::fmt::Debug for SparseExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SparseExecutor")
            .field("options", &self.options)
            .field("isa", &self.isa)
            .finish_non_exhaustive()
    }
}

impl SparseExecutor {
    /// Prepares an executor for `network` with default options (one thread, best ISA).
    pub fn new(network: Arc<Network>) -> Result<Self, SparseError> {
        Self::with_options(network, SparseOptions::default())
    }

    /// Prepares an executor for `network`.
    pub fn with_options(network: Arc<Network>, options: SparseOptions) -> Result<Self, SparseError> {
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
                    .thread_name(|i| format!("inflor-sparse-{i}"))
                    .build()
                    .map_err(|e| SparseError::Threads {
                        threads: options.threads,
                        reason: e.to_string(),
                    })?,
            )
        } else {
            None
        };
        let plans = plan(&network);
        let buffers = nodes
            .iter()
            .zip(&plans)
            .map(|(node, plan)| NodeBuffers {
                values: if plan.dense && plan.source_is_self(node) {
                    vec![0.0; node.shape.len()]
                } else {
                    Vec::new()
                },
                lists: if plan.lists && plan.source_is_self(node) {
                    PixelLists::new(
                        node.shape.height * node.shape.width,
                        node.shape.channels,
                        plan.binary,
                    )
                } else {
                    PixelLists::default()
                },
            })
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
            network,
            options,
            pool,
            plans,
            buffers,
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

    /// Wall time spent in each node since the executor was made (zeros unless
    /// `options.profile`).
    pub fn node_times(&self) -> &[Duration] {
        &self.times
    }

    /// Forgets the node times.
    pub fn reset_node_times(&mut self) {
        self.times.fill(Duration::ZERO);
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

    fn run_inner(
        &mut self,
        state: &mut State,
        frames: &[SparseFrame],
        options: &RunOptions,
    ) -> Output {
        let network = Arc::clone(&self.network);
        state.reset();
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
        for frame in frames {
            self.step(&network, state, frame, &mut stats, spikes.as_deref_mut());
            state.timesteps += 1;
            stats.timesteps += 1;
        }
        Output {
            logits: state.logits(),
            timesteps: frames.len(),
            spikes,
            stats,
        }
    }

    /// One timestep through every node.
    fn step(
        &mut self,
        network: &Network,
        state: &mut State,
        frame: &SparseFrame,
        stats: &mut InferenceStats,
        mut spikes: Option<&mut [LayerSpikes]>,
    ) {
        let nodes = network.nodes();
        let parallel = self.options.threads > 1;
        for (i, node) in nodes.iter().enumerate() {
            let started = self.options.profile.then(Instant::now);
            let (before, rest) = self.buffers.split_at_mut(i);
            let out = &mut rest[0];
            let plan = &self.plans[i];
            let row = &mut stats.nodes[i];
            let ctx = Ctx {
                isa: self.isa,
                parallel,
                all_pixels: &self.all_pixels,
            };
            let source = |k: usize| -> (&NodeBuffers, &Node) {
                let j = self.plans[node.inputs[k]].source;
                (&before[j], &nodes[j])
            };
            match &node.op {
                Op::Input => input_step(frame, plan, out),
                Op::Conv2d { .. } => {
                    let (input, input_node) = source(0);
                    let ops = conv_step(&ctx, node, input_node.shape, &input.lists, &mut out.values);
                    row.performed_ops += ops;
                    row.dense_macs += network.dense_macs(i);
                    if let Some(f) = &self.fan_outs[i] {
                        row.synaptic_ops += synaptic_ops(f, &input.lists);
                    }
                }
                Op::Linear { .. } => {
                    let (input, _) = source(0);
                    let ops = linear_step(&ctx, node, &input.lists, &mut out.values);
                    row.performed_ops += ops;
                    row.dense_macs += network.dense_macs(i);
                    row.synaptic_ops += ops;
                }
                Op::AvgPool { k, stride } | Op::SumPool { k, stride } => {
                    let (input, input_node) = source(0);
                    let divisor = match node.op {
                        Op::AvgPool { .. } => (k * k) as f64,
                        _ => 1.0,
                    };
                    pool_step(&input.values, input_node.shape, node.shape, *k, *stride, divisor, &mut out.values);
                }
                Op::GlobalAvgPool => {
                    let (input, input_node) = source(0);
                    global_pool_step(&input.values, input_node.shape, &mut out.values);
                }
                Op::Neuron(kind) => {
                    let (input, _) = source(0);
                    let membranes = &mut state.membranes[network.membrane_range(i)];
                    let quantization = stats
                        .quantization
                        .as_mut()
                        .filter(|q| q.node == i);
                    let fired = neuron_step(
                        &ctx,
                        *kind,
                        node.shape,
                        &input.values,
                        membranes,
                        plan.lists,
                        out,
                        quantization,
                    );
                    row.spikes += fired;
                    row.neuron_updates += node.shape.len() as u64;
                    row.neuron_updates_total += node.shape.len() as u64;
                    if let Some(layer) = spikes
                        .as_deref_mut()
                        .and_then(|layers| layers.iter_mut().find(|l| l.node == i))
                    {
                        layer.steps.push(fired_indices(&out.values));
                    }
                }
                Op::Add => {
                    let (a, _) = source(0);
                    let (b, _) = source(1);
                    for ((o, &a), &b) in out.values.iter_mut().zip(&a.values).zip(&b.values) {
                        *o = (f64::from(a) + f64::from(b)) as f32;
                    }
                }
                Op::Flatten => {}
                Op::Output => {
                    let (input, _) = source(0);
                    for (sum, &v) in state.output_sum.iter_mut().zip(&input.values) {
                        *sum += v;
                    }
                }
            }
            // Lists of dense-computed nodes that feed a weighted node.
            if plan.lists
                && plan.source == i
                && !matches!(node.op, Op::Input | Op::Neuron(_))
            {
                let c = node.shape.channels;
                for (p, pixel) in out.values.chunks_exact(c).enumerate() {
                    out.lists.set_from_dense(p, pixel);
                }
            }
            if let Some(t) = started {
                self.times[i] += t.elapsed();
            }
        }
    }
}

impl NodePlan {
    fn source_is_self(&self, node: &Node) -> bool {
        !matches!(node.op, Op::Flatten)
    }
}

/// Decides, per node, which representations it keeps.
fn plan(network: &Network) -> Vec<NodePlan> {
    let nodes = network.nodes();
    let mut plans: Vec<NodePlan> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| NodePlan {
            source: i,
            dense: matches!(node.op, Op::Neuron(_)) || !matches!(node.op, Op::Flatten | Op::Input),
            lists: false,
            binary: network.is_binary(i),
        })
        .collect();
    for (i, node) in nodes.iter().enumerate() {
        if matches!(node.op, Op::Flatten) {
            plans[i].source = plans[node.inputs[0]].source;
        }
    }
    for node in nodes {
        for &input in &node.inputs {
            let source = plans[input].source;
            match node.op {
                Op::Conv2d { .. } | Op::Linear { .. } => plans[source].lists = true,
                Op::Flatten => {}
                _ => plans[source].dense = true,
            }
        }
    }
    plans
}

/// What every layer step needs besides its buffers.
struct Ctx<'a> {
    isa: Isa,
    parallel: bool,
    all_pixels: &'a [u32],
}

/// Output pixels per band when splitting a layer across threads.
const GRAIN: usize = 16;

/// Input: lists (and the dense buffer when something reads it) from a validated frame.
fn input_step(frame: &SparseFrame, plan: &NodePlan, out: &mut NodeBuffers) {
    let s = frame.shape;
    let plane = s.height * s.width;
    if plan.dense {
        out.values.fill(0.0);
    }
    if plan.lists {
        out.lists.clear();
    }
    // Frame indices ascend in [C][H][W] order, so each pixel's channels arrive ascending.
    for (&i, &v) in frame.indices.iter().zip(&frame.values) {
        let i = i as usize;
        let (c, p) = (i / plane, i % plane);
        if plan.dense {
            out.values[p * s.channels + c] = v;
        }
        if plan.lists && v != 0.0 {
            out.lists.push(p, c as u32, v);
        }
    }
}

/// Conv2d over every output pixel: gathers the window's nonzero inputs and sums their
/// weight rows. Returns the accumulates performed.
fn conv_step(ctx: &Ctx<'_>, node: &Node, in_shape: Shape, input: &PixelLists, out: &mut [f32]) -> u64 {
    let Op::Conv2d {
        out_ch,
        kernel,
        stride,
        padding,
        weight,
        bias,
        ..
    } = &node.op
    else {
        return 0;
    };
    let s = node.shape;
    let pixels = s.height * s.width;
    let geometry = ConvGeometry {
        in_shape,
        out_width: s.width,
        kernel: *kernel,
        stride: *stride,
        padding: *padding,
        out_ch: *out_ch,
    };
    let isa = ctx.isa;
    for_bands(
        ctx.parallel,
        pixels,
        &ctx.all_pixels[..pixels],
        GRAIN,
        PixelsMut::new(out, *out_ch),
        &|first, active, mut out| {
            GATHER.with_borrow_mut(|g| {
                let mut ops = 0u64;
                for &p in active {
                    let p = p as usize;
                    geometry.gather(p, input, g);
                    let current = out.pixel(p - first);
                    if input.is_binary() {
                        sum_rows(isa, weight, bias, &g.rows, current);
                    } else {
                        sum_rows_scaled(isa, weight, bias, &g.rows, &g.values, current);
                    }
                    ops += (g.rows.len() * geometry.out_ch) as u64;
                }
                ops
            })
        },
    )
}

/// Window arithmetic of one conv.
#[derive(Debug, Clone, Copy)]
struct ConvGeometry {
    in_shape: Shape,
    out_width: usize,
    kernel: (usize, usize),
    stride: usize,
    padding: usize,
    out_ch: usize,
}

impl ConvGeometry {
    /// Fills `g` with the weight-row offsets (and values) of the nonzero inputs in output
    /// pixel `p`'s window, in (ky, kx, c) order.
    #[inline]
    fn gather(&self, p: usize, input: &PixelLists, g: &mut Gather) {
        g.rows.clear();
        g.values.clear();
        let (oy, ox) = (p / self.out_width, p % self.out_width);
        let (kh, kw) = self.kernel;
        let tap = self.out_ch;
        let per_channel = kh * kw * self.out_ch;
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
                let offset = (ky * kw + kx) * tap;
                g.rows.extend(
                    input
                        .channels_at(q)
                        .iter()
                        .map(|&c| (c as usize * per_channel + offset) as u32),
                );
                g.values.extend_from_slice(input.values_at(q));
            }
        }
    }
}

/// Synaptic ops (activity-defined, see `stats`) from an input's lists.
fn synaptic_ops(fan_out: &FanOut, input: &PixelLists) -> u64 {
    let width = fan_out.cols.len();
    let mut ops = 0u64;
    for (y, &ry) in fan_out.rows.iter().enumerate() {
        for (x, &rx) in fan_out.cols.iter().enumerate() {
            ops += input.channels_at(y * width + x).len() as u64 * ry * rx;
        }
    }
    ops * fan_out.per_position
}

/// Linear: the input's nonzero entries in NHWC order, each adding its weight row.
fn linear_step(ctx: &Ctx<'_>, node: &Node, input: &PixelLists, out: &mut [f32]) -> u64 {
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

/// k×k pooling: the window sum in f64 divided by `divisor`, rounded once.
fn pool_step(
    x: &[f32],
    in_shape: Shape,
    s: Shape,
    k: usize,
    stride: usize,
    divisor: f64,
    out: &mut [f32],
) {
    let c = s.channels;
    for oy in 0..s.height {
        for ox in 0..s.width {
            let o = &mut out[s.index(oy, ox, 0)..][..c];
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
}

/// Global average: per channel, the f64 sum over all pixels divided by H·W, rounded once.
fn global_pool_step(x: &[f32], in_shape: Shape, out: &mut [f32]) {
    let c = in_shape.channels;
    GLOBAL.with_borrow_mut(|acc| {
        acc.clear();
        acc.resize(c, 0.0);
        for pixel in x.chunks_exact(c) {
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

thread_local! {
    static GLOBAL: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

/// Steps every neuron of a node: `membranes` and the node's spikes (dense 0/1 in
/// `out.values`, lists when `lists`). Returns the spike count.
#[allow(clippy::too_many_arguments)]
fn neuron_step(
    ctx: &Ctx<'_>,
    kind: NeuronKind,
    shape: Shape,
    current: &[f32],
    membranes: &mut [f32],
    lists: bool,
    out: &mut NodeBuffers,
    quantization: Option<&mut QuantizationError>,
) -> u64 {
    let c = shape.channels;
    let pixels = shape.height * shape.width;
    if let Some(q) = quantization {
        // The statistic needs H before the reset, so this node runs the scalar step.
        let mut fired = 0u64;
        for ((u, &x), o) in membranes.iter_mut().zip(current).zip(out.values.iter_mut()) {
            let h = kind.charge(*u, x);
            let spike = fire(h);
            q.observe(h, spike);
            *u = kind.reset(h, spike);
            *o = spike;
            fired += spike as u64;
        }
        if lists {
            for (p, pixel) in out.values.chunks_exact(c).enumerate() {
                out.lists.set_from_dense(p, pixel);
            }
        }
        return fired;
    }
    let list_parts: Option<ListsMut<'_>> = lists.then(|| out.lists.as_mut());
    for_bands(
        ctx.parallel,
        pixels,
        &ctx.all_pixels[..pixels],
        GRAIN * 4,
        (
            PixelsMut::new(membranes, c),
            PixelsMut::new(out.values.as_mut_slice(), c),
            OptionalLists(list_parts),
        ),
        &|first, active, (mut u, mut o, mut l)| {
            let mut fired = 0u64;
            for &p in active {
                let local = p as usize - first;
                let x = &current[p as usize * c..][..c];
                let spikes = o.pixel(local);
                fired += kind.step_all(u.pixel(local), x, spikes) as u64;
                if let Some(l) = l.0.as_mut() {
                    l.set_from_dense(local, spikes);
                }
            }
            fired
        },
    )
}

/// Lists that may be absent, split alongside the other buffers.
struct OptionalLists<'a>(Option<ListsMut<'a>>);

impl bands::SplitAtPixel for OptionalLists<'_> {
    fn split_at_pixel(self, p: usize) -> (Self, Self) {
        match self.0 {
            Some(l) => {
                let (a, b) = l.split_at(p);
                (Self(Some(a)), Self(Some(b)))
            }
            None => (Self(None), Self(None)),
        }
    }
}

/// NHWC indices of the ones in a spike buffer.
fn fired_indices(spikes: &[f32]) -> Vec<u32> {
    spikes
        .iter()
        .enumerate()
        .filter(|(_, v)| **v != 0.0)
        .map(|(j, _)| j as u32)
        .collect()
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
