//! Executors: the plain reference ([`reference`](mod@reference)), the dense im2col + GEMM
//! executor ([`dense`]), the event-driven executor ([`sparse`]), each run through one
//! [`Plan`] API; and spike statistics ([`stats`]). Imports `snn`, `kernels` and the frame
//! type from `binner`.
//!
//! # The exactness contract (all executors)
//!
//! Executors must agree **bit for bit** on every spike and every logit. They do because every
//! node's output is f32 and each output value is computed in f64 from f32 operands and rounded
//! to f32 exactly once:
//!
//! | node | output value |
//! |---|---|
//! | `Input` | the frame value (f32), transposed from `[C][H][W]` to `[H][W][C]` |
//! | `Conv2d`, `Linear` | `f32(bias + Σ w·v)`, the sum in f64 |
//! | `AvgPool` | `f32((Σ window, in f64) / (k·k))` |
//! | `SumPool` | `f32(Σ window, in f64)` |
//! | `GlobalAvgPool` | `f32((Σ over H·W, in f64) / (H·W))` |
//! | `Add` | `f32(a + b)` (the f32 sum, computed in f64) |
//! | `Neuron` | [`crate::snn::neuron::NeuronKind::step`] on the f32 input and f32 membrane |
//! | `Flatten` | its input, unchanged |
//! | `Output` | `sum[c] += input[c]` in f32, in time order; logits = `sum[c] / T` in f32 |
//!
//! Why the order of summation does not matter: a product of two f32 has at most 48
//! significant bits and is exact in f64. A sum of such terms is exact in f64 while every
//! partial sum fits in 53 bits, measured from its leading bit down to the lowest set bit among
//! the terms. For binary spikes the terms are the f32 weights themselves (24 bits), which
//! leaves 29 bits for the spread of weight magnitudes and the growth of the sum; trained and
//! randomly initialised weights stay far inside that. An exact sum is the same in every order,
//! so a reference loop, a blocked GEMM and an event-driven scatter (including a "background
//! plus deviation" update) produce the same f64 and therefore the same f32.
//! The tests check bit equality of spikes and logits across executors on every architecture.
//!
//! # Int8 nodes
//!
//! A conv or linear node with integer weights ([`crate::snn::network::Int8Weights`]; its
//! input is always spikes) is the exception to the f64 rule: each executor sums the int8
//! weights of the spiking inputs in i32, which is exact in any order (the fan-in bound
//! [`crate::snn::network::MAX_INT8_FAN_IN`] keeps it far from overflow), and computes the
//! output with the one f32 expression [`crate::snn::network::int8_current`]. The reference
//! loops, the dense executor's integer GEMM and the event-driven gather therefore agree bit
//! for bit by construction. Every other node of an int8 model (the first conv, pools, adds,
//! neurons) follows the table above.
//!
//! MPR (φ) is never evaluated at inference (it cannot change a spike); only the quantization
//! statistic evaluates it.
//!
//! # Plan, State, Scratch
//!
//! A [`Plan`] is built once per network and executor kind ([`ExecutorKind`]) and shared
//! through an `Arc`: it holds every per-network cache (f64 and reordered weights, fan-out
//! tables, the event-driven executor's background) and the handle of the process's one
//! thread [`Pool`]. Nothing in it changes after [`Plan::new`].
//!
//! The plan makes the two mutable parts of a run, and refuses those made by another plan
//! (each carries its plan's id; a shape that happens to fit is not enough):
//! - a [`State`] per **stream**: the membranes, the output accumulator and how many
//!   timesteps each covers (plus, for the event-driven executor, which neurons the stream's
//!   input has reached). About 4 bytes per neuron.
//! - a [`Scratch`] per **worker thread**: every node's activations and the executor's work
//!   areas. Nothing in it outlives a timestep, so one worker runs any number of streams
//!   through one scratch, interleaved as it likes.
//!
//! # Running and the live-stream semantics
//!
//! [`Plan::run`] runs frames as consecutive timesteps continuing from the state; it never
//! resets. [`Plan::step`] is `run` with one frame, so a stream fed timestep by timestep gives
//! exactly the spikes and logits of one `run` over the same frames. The logits are the
//! output accumulator divided by the timesteps since the last [`State::reset_output`]. The
//! caller chooses between:
//! - **reset at each window** ([`State::reset`] before each window of T frames): every window
//!   is classified from rest, as in training. The default everywhere.
//! - **continuous membranes** ([`State::reset_output`] only): membranes carry across windows
//!   and each window's logits average that window's outputs. The event-driven executor's
//!   background covers the first `background_steps` timesteps after a reset; later timesteps
//!   are computed everywhere.
//!
//! Each call returns a [`RunOutput`]: the logits so far, optionally every spike of the call,
//! and [`stats::InferenceStats`] of the call.

pub mod dense;
mod plan;
mod pool;
pub mod reference;
pub mod sparse;
mod state;
pub mod stats;

use crate::binner::{FrameShape, SparseFrame};
use crate::kernels::ConvGeometry;
use crate::snn::network::{Network, Op};

pub use plan::{ExecutorKind, Plan, PlanError, PlanOptions, Scratch, UnknownExecutor};
pub use pool::{Pool, PoolError};
pub use sparse::EventOptions;
pub use state::State;
pub use stats::{Histogram, InferenceStats, MembraneHistograms, NodeStats, QuantizationError};

/// What to record besides the logits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Keep the indices of every spike of every neuron node and timestep.
    pub record_spikes: bool,
    /// Measure the mean quantization error (H − O)² with and without MPR at this `Neuron`
    /// node (InfLoR Table 3).
    pub quantization_node: Option<usize>,
}

/// The spikes of one neuron node over a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSpikes {
    /// The `Neuron` node.
    pub node: usize,
    /// Per timestep, the NHWC indices of the neurons that fired, ascending.
    pub steps: Vec<Vec<u32>>,
}

/// The result of one [`Plan::run`] or [`Plan::step`].
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutput {
    /// The state's output accumulator divided by its timesteps since the last
    /// [`State::reset_output`], one per class.
    pub logits: Vec<f32>,
    /// Timesteps run by this call (frames given).
    pub timesteps: usize,
    /// Spikes per neuron node during this call, when requested.
    pub spikes: Option<Vec<LayerSpikes>>,
    /// Work and activity counters of this call.
    pub stats: InferenceStats,
}

impl RunOutput {
    /// The class with the largest logit (the first on ties).
    pub fn predicted(&self) -> usize {
        self.top_k(1).first().map_or(0, |&(c, _)| c)
    }

    /// The `k` largest logits as (class, logit), largest first; ties keep class order.
    pub fn top_k(&self, k: usize) -> Vec<(usize, f32)> {
        let mut ranked: Vec<(usize, f32)> = self.logits.iter().copied().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(k);
        ranked
    }
}

/// Why a run could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// No frames: a call needs at least one timestep.
    #[error("no frames to run")]
    NoFrames,
    /// A frame's shape differs from the network's input.
    #[error(
        "frame {index} is {}x{}x{}, the network expects {}x{}x{}",
        found.channels, found.height, found.width,
        expected.channels, expected.height, expected.width
    )]
    FrameShape {
        /// Frame position.
        index: usize,
        /// The network's input (C, H, W).
        expected: FrameShape,
        /// The frame's shape.
        found: FrameShape,
    },
    /// A frame's indices are out of range or not strictly ascending, or values/indices differ
    /// in length.
    #[error("frame {index} is malformed: {reason}")]
    BadFrame {
        /// Frame position.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The state was made by another plan.
    #[error("the state was made by another plan")]
    StateMismatch,
    /// The scratch was made by another plan.
    #[error("the scratch was made by another plan")]
    ScratchMismatch,
    /// The quantization node is not a `Neuron` node.
    #[error("node {0} is not a neuron node")]
    NotANeuron(usize),
    /// Per-node observation needs a dense plan.
    #[error("the {0} executor cannot observe every node; use a dense plan")]
    NotObservable(ExecutorKind),
}

/// A conv node's geometry and parameters: the one place `exec` reads [`Op::Conv2d`].
#[derive(Debug, Clone, Copy)]
pub struct ConvNode<'a> {
    /// Input and output sizes, kernel, stride and padding.
    pub geometry: ConvGeometry,
    /// Output channels (Cout).
    pub out_channels: usize,
    /// `[Cin][Kh][Kw][Cout]`.
    pub weight: &'a [f32],
    /// `[Cout]`.
    pub bias: &'a [f32],
}

impl<'a> ConvNode<'a> {
    /// Node `node` of `network`, if it is a conv.
    pub fn of(network: &'a Network, node: usize) -> Option<Self> {
        let n = network.nodes().get(node)?;
        let Op::Conv2d {
            out_ch,
            kernel,
            stride,
            padding,
            weight,
            bias,
            ..
        } = &n.op
        else {
            return None;
        };
        let input = network.nodes().get(*n.inputs.first()?)?.shape;
        let geometry = ConvGeometry::new(
            (input.height, input.width, input.channels),
            *kernel,
            *stride,
            *padding,
        )?;
        Some(Self {
            geometry,
            out_channels: *out_ch,
            weight,
            bias,
        })
    }
}

/// The network's input as the binner's frame shape (C, H, W).
pub fn input_frame_shape(network: &Network) -> FrameShape {
    let s = network.input_shape();
    FrameShape {
        channels: s.channels,
        height: s.height,
        width: s.width,
    }
}

/// Checks everything a run relies on besides the plan's own objects, so the hot loops can
/// index without further checks.
pub fn validate_run(
    network: &Network,
    frames: &[SparseFrame],
    options: &RunOptions,
) -> Result<(), ExecError> {
    if frames.is_empty() {
        return Err(ExecError::NoFrames);
    }
    if let Some(q) = options.quantization_node
        && !matches!(network.nodes().get(q).map(|n| &n.op), Some(Op::Neuron(_)))
    {
        return Err(ExecError::NotANeuron(q));
    }
    let expected = input_frame_shape(network);
    for (index, frame) in frames.iter().enumerate() {
        if frame.shape != expected {
            return Err(ExecError::FrameShape {
                index,
                expected,
                found: frame.shape,
            });
        }
        if frame.indices.len() != frame.values.len() {
            return Err(ExecError::BadFrame {
                index,
                reason: "indices and values differ in length",
            });
        }
        let len = expected.len();
        let mut prev: Option<u32> = None;
        for &i in &frame.indices {
            if i as usize >= len {
                return Err(ExecError::BadFrame {
                    index,
                    reason: "index out of range",
                });
            }
            if prev.is_some_and(|p| p >= i) {
                return Err(ExecError::BadFrame {
                    index,
                    reason: "indices not strictly ascending",
                });
            }
            prev = Some(i);
        }
    }
    Ok(())
}

/// Writes a validated frame into a dense NHWC buffer of the network's input shape.
pub fn frame_to_nhwc(frame: &SparseFrame, out: &mut [f32]) {
    let s = frame.shape;
    debug_assert_eq!(out.len(), s.len());
    out.fill(0.0);
    let plane = s.height * s.width;
    for (&i, &v) in frame.indices.iter().zip(&frame.values) {
        let i = i as usize;
        let (c, p) = (i / plane, i % plane);
        out[p * s.channels + c] = v;
    }
}

/// Seeded random sparse frames: each (c, y, x) is nonzero with probability `density`, with an
/// event count of 1, 2 or 3 (probabilities 0.7, 0.2, 0.1), a rough stand-in for binned DVS
/// events. Used for calibration, tests and benchmarks; never presented as sensor data.
pub fn synthetic_frames(
    shape: FrameShape,
    timesteps: usize,
    density: f64,
    seed: u64,
) -> Vec<SparseFrame> {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..timesteps)
        .map(|_| {
            let mut frame = SparseFrame::empty(shape);
            for i in 0..shape.len() {
                if rng.random::<f64>() < density {
                    let r: f64 = rng.random();
                    let count = if r < 0.7 {
                        1.0
                    } else if r < 0.9 {
                        2.0
                    } else {
                        3.0
                    };
                    frame.indices.push(i as u32);
                    frame.values.push(count);
                }
            }
            frame
        })
        .collect()
}
