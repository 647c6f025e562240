//! The training graph: a list of ops in topological order, with the shapes they produce.
//! It is built from any op list (a model file's graph, a built-in blueprint, a test's
//! hand-made list), never from an architecture name.

use crate::kernels::im2col::window_out;
use crate::snn::arch::{BatchNormConfig, BatchNormKind, Blueprint, LayerOp};
use crate::snn::network::Shape;
use crate::snn::neuron::{NeuronKind, Surrogate, VTH};

/// How a neuron layer fires and is differentiated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpikingConfig {
    /// Dynamics.
    pub kind: NeuronKind,
    /// Whether the surrogate gradient goes through the MPR φ.
    pub mpr: bool,
    /// The surrogate of Θ.
    pub surrogate: Surrogate,
    /// Whether the spike is detached in the reset term (SpikingJelly's `detach_reset`).
    pub detach_reset: bool,
}

impl Default for SpikingConfig {
    /// SRIF with MPR and Dspike(b = 3, r = ½), reset not detached: InfLoR's setting.
    fn default() -> Self {
        Self {
            kind: NeuronKind::Srif,
            mpr: true,
            surrogate: Surrogate::default(),
            detach_reset: false,
        }
    }
}

/// The scale a batch norm applies to the normalised value before λ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NormScale {
    /// tdBN: `λ·α·Vth·x̂ + β`.
    Threshold {
        /// α of this node (1/√2 on the BNs that meet in a residual add).
        alpha: f32,
    },
    /// Ordinary BN: `λ·x̂ + β`.
    Plain,
}

impl NormScale {
    /// The factor in front of x̂ besides λ: α·Vth, or 1.
    pub fn factor(self) -> f64 {
        match self {
            NormScale::Threshold { alpha } => f64::from(alpha) * f64::from(VTH),
            NormScale::Plain => 1.0,
        }
    }
}

/// One operation of the training graph.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainOp {
    /// The input frames, `channels × height × width` per timestep.
    Input {
        /// Channels.
        channels: usize,
        /// Rows.
        height: usize,
        /// Columns.
        width: usize,
    },
    /// 2-D convolution with zero padding; parameters `{name}.weight` (and `{name}.bias`).
    Conv2d {
        /// Output channels.
        out_channels: usize,
        /// (kh, kw).
        kernel: (usize, usize),
        /// Stride (both axes).
        stride: usize,
        /// Zero padding (both axes, both sides).
        padding: usize,
        /// Whether the conv has a bias.
        bias: bool,
    },
    /// Batch norm over (T, batch, H, W) per channel; parameters `{name}.weight`, `{name}.bias`
    /// and buffers `{name}.running_mean`, `{name}.running_var`.
    BatchNorm {
        /// tdBN's α·Vth, or none.
        scale: NormScale,
        /// ε added to the variance.
        eps: f32,
    },
    /// Average over k×k windows, no padding.
    AvgPool {
        /// Window side.
        k: usize,
        /// Step.
        stride: usize,
    },
    /// Average over all positions per channel.
    GlobalAvgPool,
    /// The spiking nonlinearity.
    Neuron(SpikingConfig),
    /// Residual sum of two inputs.
    Add,
    /// H×W×C to a vector. Stored in H·W·C order; the linear layer after it imports and
    /// exports its weights in PyTorch's C·H·W order.
    Flatten,
    /// Fully connected with bias; parameters `{name}.weight` `[Out, In]` and `{name}.bias`.
    Linear {
        /// Output length.
        out_features: usize,
    },
    /// Collects the per-timestep outputs; logits are their mean over T. Never spikes.
    Output,
}

impl TrainOp {
    /// Short name for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            TrainOp::Input { .. } => "input",
            TrainOp::Conv2d { .. } => "conv2d",
            TrainOp::BatchNorm { .. } => "batch_norm",
            TrainOp::AvgPool { .. } => "avg_pool",
            TrainOp::GlobalAvgPool => "global_avg_pool",
            TrainOp::Neuron(_) => "neuron",
            TrainOp::Add => "add",
            TrainOp::Flatten => "flatten",
            TrainOp::Linear { .. } => "linear",
            TrainOp::Output => "output",
        }
    }
}

/// One node: an op, a name (the parameter prefix of weighted ops) and its inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainNode {
    /// Name; `{name}.weight` and so on for parameters.
    pub name: String,
    /// The op.
    pub op: TrainOp,
    /// Indices of earlier nodes.
    pub inputs: Vec<usize>,
}

impl TrainNode {
    /// A node.
    pub fn new(name: impl Into<String>, op: TrainOp, inputs: Vec<usize>) -> Self {
        Self {
            name: name.into(),
            op,
            inputs,
        }
    }
}

/// Why an op list is not a trainable graph.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrainGraphError {
    /// Node 0 must be the only input, the last node the only output.
    #[error("node 0 must be the only input and the last node the only output")]
    Ends,
    /// A node's inputs are wrong in number or not earlier nodes.
    #[error("node {node} ({name}): {reason}")]
    Node {
        /// Index.
        node: usize,
        /// Name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// A validated training graph with the per-timestep shape of every node (NHWC).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainGraph {
    nodes: Vec<TrainNode>,
    shapes: Vec<Shape>,
}

impl TrainGraph {
    /// Validates `nodes` (topological, arities, shapes, parameters) and computes the shapes.
    pub fn new(nodes: Vec<TrainNode>) -> Result<Self, TrainGraphError> {
        let n = nodes.len();
        if n < 2
            || !matches!(nodes[0].op, TrainOp::Input { .. })
            || nodes[n - 1].op != TrainOp::Output
        {
            return Err(TrainGraphError::Ends);
        }
        let mut shapes: Vec<Shape> = Vec::with_capacity(n);
        for (i, node) in nodes.iter().enumerate() {
            let bad = |reason: String| TrainGraphError::Node {
                node: i,
                name: node.name.clone(),
                reason,
            };
            let arity = match node.op {
                TrainOp::Input { .. } => 0,
                TrainOp::Add => 2,
                _ => 1,
            };
            if node.inputs.len() != arity {
                return Err(bad(format!(
                    "{} takes {arity} input(s), found {}",
                    node.op.name(),
                    node.inputs.len()
                )));
            }
            if let Some(&j) = node.inputs.iter().find(|&&j| j >= i) {
                return Err(bad(format!("input {j} is not an earlier node")));
            }
            if (i > 0 && matches!(node.op, TrainOp::Input { .. }))
                || (i + 1 < n && node.op == TrainOp::Output)
            {
                return Err(TrainGraphError::Ends);
            }
            let s = node.inputs.first().map(|&j| shapes[j]);
            let shape = match (&node.op, s) {
                (
                    TrainOp::Input {
                        channels,
                        height,
                        width,
                    },
                    _,
                ) => Shape::new(*height, *width, *channels),
                (_, None) => return Err(TrainGraphError::Ends),
                (
                    TrainOp::Conv2d {
                        out_channels,
                        kernel,
                        stride,
                        padding,
                        ..
                    },
                    Some(s),
                ) => {
                    let (Some(h), Some(w)) = (
                        window_out(s.height, kernel.0, *stride, *padding),
                        window_out(s.width, kernel.1, *stride, *padding),
                    ) else {
                        return Err(bad(format!(
                            "kernel {}x{} stride {stride} padding {padding} does not fit {s}",
                            kernel.0, kernel.1
                        )));
                    };
                    Shape::new(h, w, *out_channels)
                }
                (TrainOp::BatchNorm { eps, scale }, Some(s)) => {
                    let alpha_ok = match scale {
                        NormScale::Threshold { alpha } => alpha.is_finite() && *alpha > 0.0,
                        NormScale::Plain => true,
                    };
                    if !(eps.is_finite() && *eps > 0.0 && alpha_ok) {
                        return Err(bad(format!("invalid ε {eps} or scale {scale:?}")));
                    }
                    s
                }
                (TrainOp::AvgPool { k, stride }, Some(s)) => {
                    let (Some(h), Some(w)) = (
                        window_out(s.height, *k, *stride, 0),
                        window_out(s.width, *k, *stride, 0),
                    ) else {
                        return Err(bad(format!("pool {k} stride {stride} does not fit {s}")));
                    };
                    Shape::new(h, w, s.channels)
                }
                (TrainOp::GlobalAvgPool, Some(s)) => Shape::vector(s.channels),
                (TrainOp::Neuron(cfg), Some(s)) => {
                    if !cfg.kind.is_valid() || !cfg.surrogate.is_valid() {
                        return Err(bad(format!("invalid neuron {cfg:?}")));
                    }
                    s
                }
                (TrainOp::Add, Some(s)) => {
                    let other = shapes[node.inputs[1]];
                    if other != s {
                        return Err(bad(format!("add of {s} and {other}")));
                    }
                    s
                }
                (TrainOp::Flatten, Some(s)) => Shape::vector(s.len()),
                (TrainOp::Linear { out_features }, Some(s)) => {
                    if s.height != 1 || s.width != 1 {
                        return Err(bad(format!("linear needs a vector input, found {s}")));
                    }
                    Shape::vector(*out_features)
                }
                (TrainOp::Output, Some(s)) => {
                    if s.height != 1 || s.width != 1 {
                        return Err(bad(format!("output needs a vector input, found {s}")));
                    }
                    s
                }
            };
            if shape.is_empty() {
                return Err(bad("empty shape".into()));
            }
            shapes.push(shape);
        }
        Ok(Self { nodes, shapes })
    }

    /// The training graph of a built-in blueprint: each blueprint conv becomes a conv without
    /// bias plus its batch norm (named as in the blueprint's `state_dict`), every neuron uses
    /// `spiking`.
    pub fn from_blueprint(
        bp: &Blueprint,
        spiking: SpikingConfig,
        bn: BatchNormConfig,
    ) -> Result<Self, TrainGraphError> {
        let mut nodes = Vec::new();
        // Blueprint layer index -> training node index of its output.
        let mut map = Vec::with_capacity(bp.layers.len());
        for layer in &bp.layers {
            let inputs: Vec<usize> = layer.inputs.iter().map(|&j| map[j]).collect();
            let op = match &layer.op {
                LayerOp::Input => TrainOp::Input {
                    channels: layer.shape.channels,
                    height: layer.shape.height,
                    width: layer.shape.width,
                },
                LayerOp::Conv {
                    out_ch,
                    kernel,
                    stride,
                    padding,
                    bn: bn_name,
                    alpha,
                    ..
                } => {
                    nodes.push(TrainNode::new(
                        layer.name.clone(),
                        TrainOp::Conv2d {
                            out_channels: *out_ch,
                            kernel: (*kernel, *kernel),
                            stride: *stride,
                            padding: *padding,
                            bias: false,
                        },
                        inputs,
                    ));
                    let scale = match bn.kind {
                        BatchNormKind::Td => NormScale::Threshold { alpha: *alpha },
                        BatchNormKind::Plain => NormScale::Plain,
                    };
                    let conv = nodes.len() - 1;
                    nodes.push(TrainNode::new(
                        bn_name.clone(),
                        TrainOp::BatchNorm { scale, eps: bn.eps },
                        vec![conv],
                    ));
                    map.push(nodes.len() - 1);
                    continue;
                }
                LayerOp::Linear { out_features, .. } => TrainOp::Linear {
                    out_features: *out_features,
                },
                LayerOp::AvgPool { k, stride } => TrainOp::AvgPool {
                    k: *k,
                    stride: *stride,
                },
                LayerOp::GlobalAvgPool => TrainOp::GlobalAvgPool,
                LayerOp::Neuron => TrainOp::Neuron(spiking),
                LayerOp::Add => TrainOp::Add,
                LayerOp::Flatten => TrainOp::Flatten,
                LayerOp::Output => TrainOp::Output,
            };
            nodes.push(TrainNode::new(layer.name.clone(), op, inputs));
            map.push(nodes.len() - 1);
        }
        Self::new(nodes)
    }

    /// The nodes.
    pub fn nodes(&self) -> &[TrainNode] {
        &self.nodes
    }

    /// The per-timestep output shape of node `i` (NHWC).
    pub fn shape(&self, i: usize) -> Shape {
        self.shapes[i]
    }

    /// The input shape per timestep (NHWC).
    pub fn input_shape(&self) -> Shape {
        self.shapes[0]
    }

    /// The number of classes.
    pub fn classes(&self) -> usize {
        self.shapes[self.shapes.len() - 1].len()
    }

    /// Whether node `i` outputs only 0 and 1 when neurons fire real spikes.
    pub fn is_binary(&self, i: usize) -> bool {
        match self.nodes[i].op {
            TrainOp::Neuron(_) => true,
            TrainOp::Flatten => self.is_binary(self.nodes[i].inputs[0]),
            _ => false,
        }
    }

    /// The spatial shape a linear layer's input was flattened from (its own input shape when
    /// that is already a vector): what maps PyTorch's C·H·W order to ours.
    pub fn flatten_source(&self, linear: usize) -> Shape {
        let input = self.nodes[linear].inputs[0];
        match self.nodes[input].op {
            TrainOp::Flatten => self.shapes[self.nodes[input].inputs[0]],
            _ => self.shapes[input],
        }
    }
}
