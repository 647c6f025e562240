//! The spiking network: the single definition of the neuron dynamics, MPR and surrogates
//! ([`neuron`]); the immutable inference graph ([`network`]).
//! Imports nothing else from the crate.
//!
//! # The inference representation (what executors consume)
//!
//! A [`Network`] is a list of [`Node`]s in topological order. Node 0 is [`Op::Input`], the last
//! node is [`Op::Output`]; every other node names its input nodes by index (always earlier).
//! Each node has an output [`Shape`] per timestep, **NHWC without the batch: `[H][W][C]`,
//! channel contiguous**. Vectors are 1×1×C.
//!
//! - [`Op::Conv2d`]: weights `[Cin][Kh][Kw][Cout]`, bias `[Cout]`, **BN already folded in**
//!   (the model file keeps the unfolded tensors; `model` folds them when it builds the
//!   network). Zero padding, one stride for both axes. An input value v at (y, x, c) adds
//!   `v·W[c][ky][kx][..]`, a contiguous Cout row, to each output pixel whose window covers it.
//! - [`Op::Linear`]: weights `[In][Out]`, bias `[Out]`; the input index is the NHWC flat index
//!   of the input node (a `Flatten` of H×W×C flattens in H·W·C order).
//! - [`Op::AvgPool`] / [`Op::SumPool`] (k×k windows, no padding), [`Op::GlobalAvgPool`].
//! - [`Op::Neuron`]: the spiking nonlinearity applied to its input node's values, which are
//!   the input current X of that many neurons; outputs spikes 0/1. Its membranes live in the
//!   stream's state at [`Network::membrane_range`].
//! - [`Op::Add`]: residual sum of two same-shaped inputs. [`Op::Flatten`]: a reinterpretation.
//! - [`Op::Output`]: sums its input over timesteps; never spikes; logits = sum / T.
//!
//! Which nodes see binary spikes follows from the graph: see [`Network::is_binary`].
//!
//! The arithmetic contract between executors (f64 accumulation, one rounding per node) is
//! written down in `exec`.

pub mod network;
pub mod neuron;

pub use network::{GraphError, Int8Weights, Network, Node, Op, Shape, int8_current, int8_currents};
pub use neuron::{NeuronKind, Surrogate, VTH};
