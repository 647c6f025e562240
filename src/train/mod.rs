//! Training: surrogate-gradient BPTT with tdBN on the neuron code the executors run
//! ([`crate::snn::neuron`]), so what is trained is what is deployed. Imports `snn` and
//! `kernels`.
//!
//! - [`graph`]: the training graph, a generic op list (input, conv2d, batch_norm, avg_pool,
//!   global_avg_pool, neuron, add, flatten, linear, output) with shapes.
//! - [`net`]: parameters in the trainer's layouts, import and export in PyTorch's, the
//!   forward pass over all T·B frames at once and the backward pass.
//! - [`layers`]: each op's forward and backward kernels; [`sparse`]: the kernels for
//!   mostly-zero inputs (spikes, event counts); [`real`]: f32 for training, f64 for the
//!   gradient checks.
//! - [`data`]: recordings binned into the model's input frames as a session bins them, and
//!   their disk cache.
//! - [`loss`] (cross-entropy, TET), [`optim`] (SGD, Adam, schedules), [`augment`] (flip and
//!   roll), [`trainer`] (one run: step and evaluation).
//!
//! # Semantics where papers leave room
//!
//! - Dspike(b, r) as in [`crate::snn::neuron::Surrogate::Dspike`], b = 3, r = ½ by default;
//!   dO/dH = g′(φ(H) − Vth)·φ′(H) with MPR, g′(H − Vth) without.
//! - BPTT through the reset, optionally detached, for every neuron kind
//!   ([`crate::snn::neuron::NeuronKind::grad_potential`]).
//! - tdBN: statistics per channel over (T, B, H, W); training normalises with the biased
//!   variance; running statistics move with momentum 0.1 towards the batch mean and the
//!   unbiased variance (n = T·B·H·W), as `nn.BatchNorm2d`; the scale is λ·α·Vth with α from
//!   the graph.
//! - Weight decay is coupled L2 on conv and linear weights only; SGD and Adam follow
//!   `torch.optim`; the cosine schedule is `CosineAnnealingLR(T_max = epochs)` per epoch.
//! - Quantization-aware training ([`Net::fake_quantize`]): the chosen weights are replaced
//!   in both passes by their int8 fake-quant (per output channel, max-abs scale, by
//!   [`crate::model::quantize::fake_quantize`], the function post-training quantization
//!   uses), recomputed from the float weights at every forward pass; the weight gradient is
//!   applied to the float weights unchanged (straight-through estimator).
//! - Flatten keeps our H·W·C order; linear weights are converted from and to PyTorch's
//!   C·H·W order at import and export.

pub mod augment;
pub mod data;
pub mod graph;
pub mod layers;
pub mod loss;
pub mod net;
pub mod optim;
pub mod real;
pub mod sparse;
pub mod trainer;

pub use graph::{NormScale, SpikingConfig, TrainGraph, TrainGraphError, TrainNode, TrainOp};
pub use loss::{Loss, TET_LAMBDA};
pub use net::{Mode, Net, ParamError, Tape};
pub use optim::{Optimizer, OptimizerKind, Schedule};
pub use trainer::{StepStats, TrainConfig, Trainer};

#[cfg(test)]
mod checks;
