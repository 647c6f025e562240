//! The training graph: a list of ops in topological order, with the shapes they produce and
//! the names of the tensors they use. It is built from a model's [`Graph`] (a file's, or a
//! built-in architecture's generated one), never from an architecture name.

use crate::kernels::im2col::window_out;
use crate::model::graph::{Graph, GraphError, NodeOp};
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
    /// 2-D convolution with zero padding; tensors weight (and bias).
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
    /// Batch norm over (T, batch, H, W) per channel; tensors weight (λ), bias (β), running
    /// mean and running variance.
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
    /// Fully connected; tensors weight `[Out, In]` (and bias).
    Linear {
        /// Output length.
        out_features: usize,
        /// Whether it has a bias.
        bias: bool,
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

/// One node: an op, a name, its inputs and the names of its tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainNode {
    /// Name.
    pub name: String,
    /// The op.
    pub op: TrainOp,
    /// Indices of earlier nodes.
    pub inputs: Vec<usize>,
    /// Tensor names (`state_dict` keys): conv and linear `[weight, bias?]`, batch norm
    /// `[weight, bias, running_mean, running_var]`, none for other ops.
    pub tensors: Vec<String>,
}

/// Why an op list is not a trainable graph.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrainGraphError {
    /// The model graph itself is invalid.
    #[error(transparent)]
    Graph(#[from] GraphError),
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
    /// For each conv or linear node, the batch norm that directly follows it and is its only
    /// reader: the runtime folds that BN into it (and so does evaluation here).
    folded: Vec<Option<usize>>,
}

impl TrainGraph {
    /// Validates `nodes` (topological, arities, shapes, parameters) and computes the shapes.
    fn new(nodes: Vec<TrainNode>) -> Result<Self, TrainGraphError> {
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
                (TrainOp::Linear { out_features, .. }, Some(s)) => {
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
            let tensors = match node.op {
                TrainOp::Conv2d { bias, .. } | TrainOp::Linear { bias, .. } => {
                    1 + usize::from(bias)
                }
                TrainOp::BatchNorm { .. } => 4,
                _ => 0,
            };
            if node.tensors.len() != tensors {
                return Err(bad(format!(
                    "{} names {} tensors, expected {tensors}",
                    node.op.name(),
                    node.tensors.len()
                )));
            }
            shapes.push(shape);
        }
        let mut readers = vec![0usize; n];
        for node in &nodes {
            for &j in &node.inputs {
                readers[j] += 1;
            }
        }
        let mut folded = vec![None; n];
        for (i, node) in nodes.iter().enumerate() {
            if let TrainOp::BatchNorm { .. } = node.op {
                let j = node.inputs[0];
                if matches!(nodes[j].op, TrainOp::Conv2d { .. } | TrainOp::Linear { .. })
                    && readers[j] == 1
                {
                    folded[j] = Some(i);
                }
            }
        }
        Ok(Self {
            nodes,
            shapes,
            folded,
        })
    }

    /// The batch norm folded into conv or linear node `i` at inference, if any.
    pub fn folded_norm(&self, i: usize) -> Option<usize> {
        self.folded[i]
    }

    /// Whether batch-norm node `i` is folded into the node before it at inference.
    pub fn is_folded(&self, i: usize) -> bool {
        self.nodes[i]
            .inputs
            .first()
            .is_some_and(|&j| self.folded[j] == Some(i))
    }

    /// The training graph of a model graph (the model file's, or a built-in architecture's
    /// generated one), every neuron using `spiking`. Tensor names come from the graph;
    /// shapes and inputs are checked by [`Graph::check`] first.
    pub fn from_graph(graph: &Graph, spiking: SpikingConfig) -> Result<Self, TrainGraphError> {
        let checked = graph.check()?;
        let mut nodes = Vec::with_capacity(graph.nodes.len());
        for (i, node) in graph.nodes.iter().enumerate() {
            let (op, tensors) = match &node.op {
                NodeOp::Input => {
                    let s = checked.shapes[i];
                    (
                        TrainOp::Input {
                            channels: s.channels,
                            height: s.height,
                            width: s.width,
                        },
                        vec![],
                    )
                }
                NodeOp::Conv2d {
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    weight,
                    bias,
                    ..
                } => (
                    TrainOp::Conv2d {
                        out_channels: *out_channels,
                        kernel: (kernel[0], kernel[1]),
                        stride: *stride,
                        padding: *padding,
                        bias: bias.is_some(),
                    },
                    std::iter::once(weight.clone())
                        .chain(bias.clone())
                        .collect(),
                ),
                NodeOp::BatchNorm {
                    eps,
                    alpha,
                    threshold_scaled,
                    weight,
                    bias,
                    running_mean,
                    running_var,
                    ..
                } => (
                    TrainOp::BatchNorm {
                        scale: if *threshold_scaled {
                            NormScale::Threshold { alpha: *alpha }
                        } else {
                            NormScale::Plain
                        },
                        eps: *eps,
                    },
                    vec![
                        weight.clone(),
                        bias.clone(),
                        running_mean.clone(),
                        running_var.clone(),
                    ],
                ),
                NodeOp::AvgPool { kernel, stride } => (
                    TrainOp::AvgPool {
                        k: *kernel,
                        stride: *stride,
                    },
                    vec![],
                ),
                NodeOp::GlobalAvgPool => (TrainOp::GlobalAvgPool, vec![]),
                NodeOp::Neuron => (TrainOp::Neuron(spiking), vec![]),
                NodeOp::Add => (TrainOp::Add, vec![]),
                NodeOp::Flatten => (TrainOp::Flatten, vec![]),
                NodeOp::Linear {
                    out_features,
                    weight,
                    bias,
                    ..
                } => (
                    TrainOp::Linear {
                        out_features: *out_features,
                        bias: bias.is_some(),
                    },
                    std::iter::once(weight.clone())
                        .chain(bias.clone())
                        .collect(),
                ),
                NodeOp::Output => (TrainOp::Output, vec![]),
            };
            nodes.push(TrainNode {
                name: node.name.clone(),
                op,
                inputs: checked.inputs[i].clone(),
                tensors,
            });
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
