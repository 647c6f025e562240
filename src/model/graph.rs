//! The explicit network graph stored in the model file: nodes with their op, parameters,
//! tensor names and inputs. It is the source of truth: loading builds the inference
//! [`Network`] from it (folding each batch norm into the conv or linear before it), and the
//! trainer builds its network from it too. The schema is documented for Python users in
//! `docs/model-format.md`.
//!
//! Conventions (PyTorch's, so a `state_dict` maps one to one):
//! - shapes are per timestep and per sample, `[C, H, W]`; vectors are `[C, 1, 1]`;
//! - conv weights are `[Cout, Cin, Kh, Kw]`, linear weights `[Out, In]`;
//! - `flatten` flattens `[C, H, W]` in C·H·W order (`torch.flatten(x, 1)`);
//! - `batch_norm` with `threshold_scaled` is tdBN: `y = λ·(α·Vth·(x − μ)/√(σ² + ε)) + β` with
//!   the α stored on the node and Vth from the model's neuron; without it, ordinary BN.
//!
//! The inference network is NHWC (channel contiguous) with weights `[Cin][Kh][Kw][Cout]`; the
//! layout change happens in [`Graph::network`].

use std::collections::HashMap;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::model::quantize::{
    Quantization, dequantize, scale_name, to_grid, valid_scale, weight_of,
};
use crate::model::tensor::{ParamRole, ParamSpec, Parameters, Tensor};
use crate::snn::network::{
    GraphError as NetworkError, Int8Weights, Network, Node, Op, Shape, window_out,
};
use crate::snn::neuron::{NeuronKind, VTH};

/// A network as an explicit list of nodes in topological order: the first is the only
/// `input`, the last the only `output`, and every node's inputs are earlier nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Graph {
    /// The nodes, inputs before the nodes that read them.
    pub nodes: Vec<GraphNode>,
}

/// One node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphNode {
    /// A unique name (the parameter prefix for weighted nodes, e.g. `layer1.0.conv1`).
    pub name: String,
    /// The names of the input nodes (none for `input`, two for `add`, one otherwise).
    #[serde(default)]
    pub inputs: Vec<String>,
    /// The operation and its parameters.
    pub op: NodeOp,
    /// Output shape per timestep, `[C, H, W]`. Always written; optional on reading (it is
    /// inferred, and checked against the inference when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<[usize; 3]>,
}

/// An operation, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum NodeOp {
    /// The input frame `[C, H, W]` (C = 2: OFF, ON). Its shape is the node's `shape`.
    Input,
    /// 2-D convolution with zero padding and one stride for both axes.
    Conv2d {
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// `[Kh, Kw]`.
        kernel: [usize; 2],
        /// Stride (both axes).
        stride: usize,
        /// Zero padding (both axes, both sides).
        padding: usize,
        /// Weight tensor name, `[Cout, Cin, Kh, Kw]`.
        weight: String,
        /// Bias tensor name, `[Cout]`, if the conv has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bias: Option<String>,
    },
    /// Batch norm over the channels of its input (a `conv2d` or `linear` it is folded into).
    BatchNorm {
        /// Channels.
        channels: usize,
        /// ε added to the variance.
        eps: f32,
        /// tdBN's α (1 normally, 1/√2 on the BNs that meet in a residual sum).
        alpha: f32,
        /// tdBN (scaled by α·Vth) rather than ordinary BN.
        threshold_scaled: bool,
        /// λ, `[C]`.
        weight: String,
        /// β, `[C]`.
        bias: String,
        /// μ, `[C]`.
        running_mean: String,
        /// σ², `[C]`.
        running_var: String,
    },
    /// Average over `kernel × kernel` windows, no padding.
    AvgPool {
        /// Window side.
        kernel: usize,
        /// Step between windows.
        stride: usize,
    },
    /// Average over all positions per channel, giving `[C, 1, 1]`.
    GlobalAvgPool,
    /// The spiking neuron of the model (`neuron` in the metadata) on its input current.
    Neuron,
    /// Elementwise sum of two same-shaped inputs (residual connection).
    Add,
    /// `[C, H, W]` to `[C·H·W, 1, 1]` in C·H·W order.
    Flatten,
    /// Fully connected, on a `[C, 1, 1]` vector.
    Linear {
        /// Input length.
        in_features: usize,
        /// Output length.
        out_features: usize,
        /// Weight tensor name, `[Out, In]`.
        weight: String,
        /// Bias tensor name, `[Out]`, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bias: Option<String>,
    },
    /// Accumulates its input over timesteps, never spikes; logits = mean over T.
    Output,
}

impl NodeOp {
    /// The op's `type` tag.
    pub fn name(&self) -> &'static str {
        match self {
            NodeOp::Input => "input",
            NodeOp::Conv2d { .. } => "conv2d",
            NodeOp::BatchNorm { .. } => "batch_norm",
            NodeOp::AvgPool { .. } => "avg_pool",
            NodeOp::GlobalAvgPool => "global_avg_pool",
            NodeOp::Neuron => "neuron",
            NodeOp::Add => "add",
            NodeOp::Flatten => "flatten",
            NodeOp::Linear { .. } => "linear",
            NodeOp::Output => "output",
        }
    }

    fn arity(&self) -> usize {
        match self {
            NodeOp::Input => 0,
            NodeOp::Add => 2,
            _ => 1,
        }
    }
}

/// Why a graph is not valid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GraphError {
    /// No nodes, or the first node is not the only `input`.
    #[error("the first node must be the only input node")]
    Input,
    /// The last node is not the only `output`.
    #[error("the last node must be the only output node")]
    Output,
    /// Two nodes share a name.
    #[error("node {index}: the name {name:?} is used twice")]
    DuplicateName {
        /// Index of the second node.
        index: usize,
        /// The name.
        name: String,
    },
    /// An input names no earlier node.
    #[error("node {name:?}: input {input:?} is not an earlier node")]
    UnknownInput {
        /// The node.
        name: String,
        /// The input it names.
        input: String,
    },
    /// Wrong number of inputs.
    #[error("node {name:?}: {op} takes {expected} input(s), found {found}")]
    Arity {
        /// The node.
        name: String,
        /// Its op.
        op: &'static str,
        /// Inputs required.
        expected: usize,
        /// Inputs given.
        found: usize,
    },
    /// Shapes or parameters do not fit.
    #[error("node {name:?}: {reason}")]
    Mismatch {
        /// The node.
        name: String,
        /// What does not fit.
        reason: String,
    },
}

/// Why a network could not be built from a graph and parameters.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BuildError {
    /// The graph itself is invalid.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// A tensor the graph names is absent.
    #[error("missing tensor {name} (expected shape {expected:?})")]
    MissingTensor {
        /// Tensor name.
        name: String,
        /// Expected PyTorch shape.
        expected: Vec<usize>,
    },
    /// A tensor has the wrong shape.
    #[error("tensor {name} has shape {found:?}, expected {expected:?}")]
    WrongShape {
        /// Tensor name.
        name: String,
        /// Expected PyTorch shape.
        expected: Vec<usize>,
        /// Shape found.
        found: Vec<usize>,
    },
    /// A tensor the graph does not name.
    #[error("unexpected tensor {name} (no node of the graph uses it)")]
    UnexpectedTensor {
        /// Tensor name.
        name: String,
    },
    /// A tensor holds NaN or infinity, or a negative running variance.
    #[error("tensor {name} holds an invalid value at element {index}")]
    InvalidValue {
        /// Tensor name.
        name: String,
        /// First bad element.
        index: usize,
    },
    /// A batch norm cannot be folded into the node before it.
    #[error(
        "batch norm {name:?} must directly follow a conv2d or linear node that nothing else reads"
    )]
    Unfoldable {
        /// The batch-norm node.
        name: String,
    },
    /// The int8 weights of a node are not usable (see [`crate::model::quantize`]).
    #[error("int8 weights of {name}: {reason}")]
    Int8 {
        /// The node or tensor.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The inference network rejected the result (a bug: the graph checks should catch it).
    #[error(transparent)]
    Network(#[from] NetworkError),
}

/// A validated view of a graph: per-node shapes (NHWC) and input indices.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// Output shape of each node, NHWC.
    pub shapes: Vec<Shape>,
    /// Input node indices of each node.
    pub inputs: Vec<Vec<usize>>,
}

impl Graph {
    /// Checks the graph and infers every node's shape.
    pub fn check(&self) -> Result<Checked, GraphError> {
        let nodes = &self.nodes;
        if nodes.first().map(|n| &n.op) != Some(&NodeOp::Input) {
            return Err(GraphError::Input);
        }
        if nodes.last().map(|n| &n.op) != Some(&NodeOp::Output) {
            return Err(GraphError::Output);
        }
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(nodes.len());
        let mut shapes: Vec<Shape> = Vec::with_capacity(nodes.len());
        let mut inputs: Vec<Vec<usize>> = Vec::with_capacity(nodes.len());
        for (i, node) in nodes.iter().enumerate() {
            let mismatch = |reason: String| GraphError::Mismatch {
                name: node.name.clone(),
                reason,
            };
            if (i > 0 && node.op == NodeOp::Input)
                || (i + 1 < nodes.len() && node.op == NodeOp::Output)
            {
                return Err(if node.op == NodeOp::Input {
                    GraphError::Input
                } else {
                    GraphError::Output
                });
            }
            if node.inputs.len() != node.op.arity() {
                return Err(GraphError::Arity {
                    name: node.name.clone(),
                    op: node.op.name(),
                    expected: node.op.arity(),
                    found: node.inputs.len(),
                });
            }
            let ins = node
                .inputs
                .iter()
                .map(|n| {
                    index
                        .get(n.as_str())
                        .copied()
                        .ok_or_else(|| GraphError::UnknownInput {
                            name: node.name.clone(),
                            input: n.clone(),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let input = ins.first().map(|&j| shapes[j]);
            let shape = match (&node.op, input) {
                (NodeOp::Input, _) => {
                    let Some([c, h, w]) = node.shape else {
                        return Err(mismatch("the input node must declare its shape".into()));
                    };
                    Shape::new(h, w, c)
                }
                (_, None) => return Err(GraphError::Input),
                (
                    NodeOp::Conv2d {
                        in_channels,
                        out_channels,
                        kernel,
                        stride,
                        padding,
                        ..
                    },
                    Some(s),
                ) => {
                    if s.channels != *in_channels {
                        return Err(mismatch(format!(
                            "conv2d expects {in_channels} input channels, its input has {}",
                            s.channels
                        )));
                    }
                    let (Some(h), Some(w)) = (
                        window_out(s.height, kernel[0], *stride, *padding),
                        window_out(s.width, kernel[1], *stride, *padding),
                    ) else {
                        return Err(mismatch(format!(
                            "kernel {}x{} stride {stride} padding {padding} does not fit its input {}x{}",
                            kernel[0], kernel[1], s.height, s.width
                        )));
                    };
                    Shape::new(h, w, *out_channels)
                }
                (
                    NodeOp::BatchNorm {
                        channels,
                        eps,
                        alpha,
                        ..
                    },
                    Some(s),
                ) => {
                    if s.channels != *channels {
                        return Err(mismatch(format!(
                            "batch_norm has {channels} channels, its input has {}",
                            s.channels
                        )));
                    }
                    if !(eps.is_finite() && *eps > 0.0) {
                        return Err(mismatch(format!("eps must be positive, found {eps}")));
                    }
                    if !alpha.is_finite() {
                        return Err(mismatch(format!("alpha must be finite, found {alpha}")));
                    }
                    s
                }
                (NodeOp::AvgPool { kernel, stride }, Some(s)) => {
                    let (Some(h), Some(w)) = (
                        window_out(s.height, *kernel, *stride, 0),
                        window_out(s.width, *kernel, *stride, 0),
                    ) else {
                        return Err(mismatch(format!(
                            "pool {kernel}x{kernel} stride {stride} does not fit its input {}x{}",
                            s.height, s.width
                        )));
                    };
                    Shape::new(h, w, s.channels)
                }
                (NodeOp::GlobalAvgPool, Some(s)) => Shape::vector(s.channels),
                (NodeOp::Neuron, Some(s)) => s,
                (NodeOp::Add, Some(s)) => {
                    let other = shapes[ins[1]];
                    if other != s {
                        return Err(mismatch(format!("add of {} and {}", chw(s), chw(other))));
                    }
                    s
                }
                (NodeOp::Flatten, Some(s)) => Shape::vector(s.len()),
                (
                    NodeOp::Linear {
                        in_features,
                        out_features,
                        ..
                    },
                    Some(s),
                ) => {
                    if s.height != 1 || s.width != 1 || s.channels != *in_features {
                        return Err(mismatch(format!(
                            "linear expects a vector of {in_features}, its input is {}",
                            chw(s)
                        )));
                    }
                    Shape::vector(*out_features)
                }
                (NodeOp::Output, Some(s)) => {
                    if s.height != 1 || s.width != 1 {
                        return Err(mismatch(format!(
                            "output expects a vector, its input is {}",
                            chw(s)
                        )));
                    }
                    s
                }
            };
            if shape.is_empty() {
                return Err(mismatch("empty shape".into()));
            }
            if let Some(declared) = node.shape
                && declared != [shape.channels, shape.height, shape.width]
            {
                return Err(mismatch(format!(
                    "declared shape {declared:?} but the op produces {}",
                    chw(shape)
                )));
            }
            if index.insert(node.name.as_str(), i).is_some() {
                return Err(GraphError::DuplicateName {
                    index: i,
                    name: node.name.clone(),
                });
            }
            shapes.push(shape);
            inputs.push(ins);
        }
        Ok(Checked { shapes, inputs })
    }

    /// The same graph with every node's `shape` filled in (what is written to files).
    pub fn with_shapes(mut self) -> Result<Self, GraphError> {
        let checked = self.check()?;
        for (node, s) in self.nodes.iter_mut().zip(&checked.shapes) {
            node.shape = Some([s.channels, s.height, s.width]);
        }
        Ok(self)
    }

    /// The input shape `[C, H, W]`, if the first node is an input with a shape.
    pub fn input_shape(&self) -> Option<[usize; 3]> {
        self.nodes
            .first()
            .filter(|n| n.op == NodeOp::Input)
            .and_then(|n| n.shape)
    }

    /// Number of classes (the output length), once checked.
    pub fn classes(&self) -> Result<usize, GraphError> {
        Ok(self.check()?.shapes.last().map_or(0, Shape::len))
    }

    /// Every tensor the graph names, in node order.
    pub fn parameter_specs(&self) -> Vec<ParamSpec> {
        let mut specs = Vec::new();
        let mut add = |name: &str, shape: Vec<usize>, role| {
            specs.push(ParamSpec {
                name: name.to_owned(),
                shape,
                role,
            })
        };
        for node in &self.nodes {
            match &node.op {
                NodeOp::Conv2d {
                    in_channels,
                    out_channels,
                    kernel,
                    weight,
                    bias,
                    ..
                } => {
                    add(
                        weight,
                        vec![*out_channels, *in_channels, kernel[0], kernel[1]],
                        ParamRole::Weight,
                    );
                    if let Some(b) = bias {
                        add(b, vec![*out_channels], ParamRole::Bias);
                    }
                }
                NodeOp::BatchNorm {
                    channels,
                    weight,
                    bias,
                    running_mean,
                    running_var,
                    ..
                } => {
                    add(weight, vec![*channels], ParamRole::BatchNormWeight);
                    add(bias, vec![*channels], ParamRole::BatchNormBias);
                    add(running_mean, vec![*channels], ParamRole::RunningMean);
                    add(running_var, vec![*channels], ParamRole::RunningVar);
                }
                NodeOp::Linear {
                    in_features,
                    out_features,
                    weight,
                    bias,
                } => {
                    add(weight, vec![*out_features, *in_features], ParamRole::Weight);
                    if let Some(b) = bias {
                        add(b, vec![*out_features], ParamRole::Bias);
                    }
                }
                _ => {}
            }
        }
        specs
    }

    /// [`Graph::parameter_specs`] plus, after each weight of a node `quantization` lists, its
    /// `<weight>_scale` tensor `[Cout]`.
    pub fn parameter_specs_with(&self, quantization: Option<&Quantization>) -> Vec<ParamSpec> {
        let specs = self.parameter_specs();
        let Some(q) = quantization else {
            return specs;
        };
        let quantized: Vec<&str> = q.nodes.iter().filter_map(|n| weight_of(self, n)).collect();
        let mut out = Vec::with_capacity(specs.len() + quantized.len());
        for spec in specs {
            let scale = (spec.role == ParamRole::Weight && quantized.contains(&spec.name.as_str()))
                .then(|| ParamSpec {
                    name: scale_name(&spec.name),
                    shape: vec![spec.shape[0]],
                    role: ParamRole::WeightScale,
                });
            out.push(spec);
            out.extend(scale);
        }
        out
    }

    /// Checks that `params` holds exactly the tensors the graph names, with their shapes and
    /// finite values (and non-negative running variances). PyTorch's `num_batches_tracked`
    /// entries are ignored.
    pub fn check_parameters(&self, params: &Parameters) -> Result<(), BuildError> {
        self.check_parameters_with(params, None)
    }

    /// [`Graph::check_parameters`] for a model whose `quantization` nodes have int8 weights:
    /// their scale tensors are expected too, each scale zero or a positive normal f32, and
    /// every such weight on its channel's grid (see [`crate::model::quantize::to_grid`]).
    pub fn check_parameters_with(
        &self,
        params: &Parameters,
        quantization: Option<&Quantization>,
    ) -> Result<(), BuildError> {
        if let Some(q) = quantization {
            for (k, name) in q.nodes.iter().enumerate() {
                if weight_of(self, name).is_none() || q.nodes[..k].contains(name) {
                    return Err(BuildError::Int8 {
                        name: name.clone(),
                        reason: "is not a conv2d or linear node of the graph, or is listed twice"
                            .into(),
                    });
                }
            }
        }
        let specs = self.parameter_specs_with(quantization);
        for spec in &specs {
            let Some(t) = params.get(&spec.name) else {
                return Err(BuildError::MissingTensor {
                    name: spec.name.clone(),
                    expected: spec.shape.clone(),
                });
            };
            if t.shape != spec.shape || t.data.len() != spec.shape.iter().product::<usize>() {
                return Err(BuildError::WrongShape {
                    name: spec.name.clone(),
                    expected: spec.shape.clone(),
                    found: t.shape.clone(),
                });
            }
            let variance = spec.role == ParamRole::RunningVar;
            let scale = spec.role == ParamRole::WeightScale;
            if let Some(index) = t.data.iter().position(|v| {
                !v.is_finite() || (variance && *v < 0.0) || (scale && !valid_scale(*v))
            }) {
                return Err(BuildError::InvalidValue {
                    name: spec.name.clone(),
                    index,
                });
            }
            if let Some(scales) = params
                .get(&scale_name(&spec.name))
                .filter(|_| spec.role == ParamRole::Weight)
                .filter(|_| specs.iter().any(|s| s.name == scale_name(&spec.name)))
            {
                let per_channel = t.data.len() / spec.shape[0].max(1);
                if let Some(index) = t.data.iter().enumerate().position(|(k, &w)| {
                    scales
                        .data
                        .get(k / per_channel.max(1))
                        .is_none_or(|&s| to_grid(w, s).is_none())
                }) {
                    return Err(BuildError::Int8 {
                        name: spec.name.clone(),
                        reason: format!("element {index} is not on its channel's int8 grid"),
                    });
                }
            }
        }
        if let Some(extra) = params.keys().find(|name| {
            !name.ends_with(".num_batches_tracked") && !specs.iter().any(|s| &s.name == *name)
        }) {
            return Err(BuildError::UnexpectedTensor {
                name: extra.clone(),
            });
        }
        Ok(())
    }

    /// Seeded random parameters: conv weights Kaiming normal (fan-out, gain √2), BN λ = 1,
    /// β = 0, μ = 0, σ² = 1, linear weights and biases uniform in ±1/√in, conv biases 0
    /// (PyTorch's defaults for these layers, as the SNN papers initialise them).
    pub fn random_parameters(&self, seed: u64) -> Parameters {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut params = Parameters::new();
        for node in &self.nodes {
            match &node.op {
                NodeOp::Conv2d {
                    in_channels,
                    out_channels,
                    kernel,
                    weight,
                    bias,
                    ..
                } => {
                    let n = out_channels * in_channels * kernel[0] * kernel[1];
                    let std = (2.0 / (out_channels * kernel[0] * kernel[1]) as f64).sqrt();
                    let mut data = Vec::with_capacity(n + 1);
                    while data.len() < n {
                        let (a, b) = normal_pair(&mut rng);
                        data.push((a * std) as f32);
                        data.push((b * std) as f32);
                    }
                    data.truncate(n);
                    params.insert(
                        weight.clone(),
                        Tensor {
                            shape: vec![*out_channels, *in_channels, kernel[0], kernel[1]],
                            data,
                        },
                    );
                    if let Some(b) = bias {
                        params.insert(b.clone(), Tensor::filled(vec![*out_channels], 0.0));
                    }
                }
                NodeOp::BatchNorm {
                    channels,
                    weight,
                    bias,
                    running_mean,
                    running_var,
                    ..
                } => {
                    for (name, v) in [
                        (weight, 1.0),
                        (bias, 0.0),
                        (running_mean, 0.0),
                        (running_var, 1.0),
                    ] {
                        params.insert(name.clone(), Tensor::filled(vec![*channels], v));
                    }
                }
                NodeOp::Linear {
                    in_features,
                    out_features,
                    weight,
                    bias,
                } => {
                    let bound = 1.0 / (*in_features as f64).sqrt();
                    let mut uniform = |n: usize| -> Vec<f32> {
                        (0..n)
                            .map(|_| (rng.random_range(-bound..bound)) as f32)
                            .collect()
                    };
                    let w = uniform(in_features * out_features);
                    let b = uniform(*out_features);
                    params.insert(
                        weight.clone(),
                        Tensor {
                            shape: vec![*out_features, *in_features],
                            data: w,
                        },
                    );
                    if let Some(name) = bias {
                        params.insert(
                            name.clone(),
                            Tensor {
                                shape: vec![*out_features],
                                data: b,
                            },
                        );
                    }
                }
                _ => {}
            }
        }
        params
    }

    /// The inference plan of the graph: which network node each graph node becomes (a batch
    /// norm becomes part of the node it follows).
    pub fn lowering(&self) -> Result<Lowering, BuildError> {
        let checked = self.check()?;
        let n = self.nodes.len();
        let mut readers = vec![0usize; n];
        for ins in &checked.inputs {
            for &j in ins {
                readers[j] += 1;
            }
        }
        let mut target = vec![0usize; n];
        let mut batch_norm_of = vec![None; n];
        let mut next = 0usize;
        for (i, node) in self.nodes.iter().enumerate() {
            if let NodeOp::BatchNorm { .. } = node.op {
                let src = checked.inputs[i][0];
                let foldable = matches!(
                    self.nodes[src].op,
                    NodeOp::Conv2d { .. } | NodeOp::Linear { .. }
                ) && readers[src] == 1
                    && batch_norm_of[src].is_none();
                if !foldable {
                    return Err(BuildError::Unfoldable {
                        name: node.name.clone(),
                    });
                }
                batch_norm_of[src] = Some(i);
                target[i] = target[src];
            } else {
                target[i] = next;
                next += 1;
            }
        }
        Ok(Lowering {
            checked,
            network_node: target,
            batch_norm_of,
        })
    }

    /// Builds the inference network: checks the parameters, folds each batch norm into the
    /// conv or linear before it, reorders conv weights to `[Cin][Kh][Kw][Cout]` and linear
    /// weights to `[In][Out]` (turning PyTorch's C·H·W flatten order into H·W·C), and uses
    /// `neuron` for every neuron node.
    pub fn network(&self, params: &Parameters, neuron: NeuronKind) -> Result<Network, BuildError> {
        self.network_with(params, neuron, None)
    }

    /// [`Graph::network`] with int8 weights for the nodes `quantization` lists: each gets
    /// [`Int8Weights`] in the network's layout, with its scales multiplied by the folded batch
    /// norm's (in f64, rounded once), and f32 weights that are the dequantized integers
    /// (`f32(q · scale)` with the folded scale), for tools that read f32 weights.
    pub fn network_with(
        &self,
        params: &Parameters,
        neuron: NeuronKind,
        quantization: Option<&Quantization>,
    ) -> Result<Network, BuildError> {
        self.check_parameters_with(params, quantization)?;
        let lowering = self.lowering()?;
        let mut nodes = Vec::new();
        let mut int8 = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if matches!(node.op, NodeOp::BatchNorm { .. }) {
                continue;
            }
            let mut lowered = self.lower_node(&lowering, i, params, neuron)?;
            if quantization.is_some_and(|q| q.nodes.contains(&node.name)) {
                let w = self.lower_int8(&lowering, i, params)?;
                if let Op::Conv2d {
                    weight, out_ch: n, ..
                }
                | Op::Linear {
                    weight,
                    out_features: n,
                    ..
                } = &mut lowered.op
                {
                    for (k, v) in weight.iter_mut().enumerate() {
                        *v = dequantize(w.weight[k], w.scale[k % *n]);
                    }
                }
                int8.push((nodes.len(), w));
            }
            nodes.push(lowered);
        }
        let mut network = Network::new(nodes)?;
        for (index, w) in int8 {
            network = network.with_int8(index, w)?;
        }
        Ok(network)
    }

    /// The int8 weights of quantized conv or linear graph node `index` in the network's layout
    /// (`[Cin][Kh][Kw][Cout]` or `[In][Out]`, as [`Graph::lower_node`] lays out f32 weights),
    /// with the folded batch norm's scale multiplied into the channel scales.
    fn lower_int8(
        &self,
        lowering: &Lowering,
        index: usize,
        params: &Parameters,
    ) -> Result<Int8Weights, BuildError> {
        let node = &self.nodes[index];
        let missing = |name: &str| BuildError::MissingTensor {
            name: name.to_owned(),
            expected: Vec::new(),
        };
        let (weight, out) = match &node.op {
            NodeOp::Conv2d {
                weight,
                out_channels,
                ..
            } => (weight, *out_channels),
            NodeOp::Linear {
                weight,
                out_features,
                ..
            } => (weight, *out_features),
            _ => {
                return Err(BuildError::Int8 {
                    name: node.name.clone(),
                    reason: "is not a conv2d or linear node".into(),
                });
            }
        };
        let w = params.get(weight).ok_or_else(|| missing(weight))?;
        let scale_tensor = scale_name(weight);
        let scales = params
            .get(&scale_tensor)
            .ok_or_else(|| missing(&scale_tensor))?;
        let per_channel = w.data.len() / out.max(1);
        let q = |src: usize| -> Result<i8, BuildError> {
            to_grid(w.data[src], scales.data[src / per_channel]).ok_or_else(|| BuildError::Int8 {
                name: weight.clone(),
                reason: format!("element {src} is not on its channel's int8 grid"),
            })
        };
        let mut lowered = vec![0i8; w.data.len()];
        match &node.op {
            NodeOp::Conv2d {
                in_channels,
                kernel,
                ..
            } => {
                let (cin, kh, kw) = (*in_channels, kernel[0], kernel[1]);
                for co in 0..out {
                    for ci in 0..cin {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let src = ((co * cin + ci) * kh + ky) * kw + kx;
                                let dst = ((ci * kh + ky) * kw + kx) * out + co;
                                lowered[dst] = q(src)?;
                            }
                        }
                    }
                }
            }
            _ => {
                let from = self.flattened_shape(lowering, index);
                let plane = from.height * from.width;
                let nin = per_channel;
                for o in 0..out {
                    for c in 0..from.channels {
                        for p in 0..plane {
                            lowered[(p * from.channels + c) * out + o] =
                                q(o * nin + c * plane + p)?;
                        }
                    }
                }
            }
        }
        let fold = match lowering.batch_norm_of[index] {
            Some(bn) => Some(self.batch_norm_fold(bn, params)?.0),
            None => None,
        };
        let scale = (0..out)
            .map(|c| {
                let s = f64::from(scales.data[c]);
                fold.as_ref().map_or(s, |f| s * f[c]) as f32
            })
            .collect();
        Ok(Int8Weights {
            weight: lowered,
            scale,
        })
    }

    /// Builds the inference node of graph node `index` (not a batch norm), folding the batch
    /// norm that follows it. [`Graph::network`] checks the parameters first; called alone this
    /// reports only missing tensors, so use it to refresh one node of checked parameters.
    pub fn lower_node(
        &self,
        lowering: &Lowering,
        index: usize,
        params: &Parameters,
        neuron: NeuronKind,
    ) -> Result<Node, BuildError> {
        let get = |name: &str| -> Result<&Tensor, BuildError> {
            params.get(name).ok_or_else(|| BuildError::MissingTensor {
                expected: self
                    .parameter_specs()
                    .into_iter()
                    .find(|s| s.name == name)
                    .map(|s| s.shape)
                    .unwrap_or_default(),
                name: name.to_owned(),
            })
        };
        let node = &self.nodes[index];
        let shape = lowering.checked.shapes[index];
        let inputs: Vec<usize> = lowering.checked.inputs[index]
            .iter()
            .map(|&j| lowering.network_node[j])
            .collect();
        let fold = match lowering.batch_norm_of[index] {
            Some(bn) => Some(self.batch_norm_fold(bn, params)?),
            None => None,
        };
        let op = match &node.op {
            NodeOp::Input => Op::Input,
            NodeOp::Conv2d {
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
                weight,
                bias,
            } => {
                let w = get(weight)?;
                let b = match bias {
                    Some(b) => Some(get(b)?),
                    None => None,
                };
                let (cin, cout, kh, kw) = (*in_channels, *out_channels, kernel[0], kernel[1]);
                let (scale, shift) = affine(fold.as_ref(), b, cout);
                let mut folded = vec![0.0f32; cin * kh * kw * cout];
                for (co, &sc) in scale.iter().enumerate() {
                    for ci in 0..cin {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let src = ((co * cin + ci) * kh + ky) * kw + kx;
                                let dst = ((ci * kh + ky) * kw + kx) * cout + co;
                                folded[dst] = (f64::from(w.data[src]) * sc) as f32;
                            }
                        }
                    }
                }
                Op::Conv2d {
                    in_ch: cin,
                    out_ch: cout,
                    kernel: (kh, kw),
                    stride: *stride,
                    padding: *padding,
                    weight: folded,
                    bias: shift.iter().map(|&v| v as f32).collect(),
                }
            }
            NodeOp::Linear {
                in_features,
                out_features,
                weight,
                bias,
            } => {
                let w = get(weight)?;
                let b = match bias {
                    Some(b) => Some(get(b)?),
                    None => None,
                };
                let (nin, nout) = (*in_features, *out_features);
                let (scale, shift) = affine(fold.as_ref(), b, nout);
                // PyTorch flattens [C][H][W]; the network flattens [H][W][C]. Only a flatten
                // of a spatial map needs the permutation.
                let from = self.flattened_shape(lowering, index);
                let plane = from.height * from.width;
                let mut folded = vec![0.0f32; nin * nout];
                for (o, &sc) in scale.iter().enumerate() {
                    for c in 0..from.channels {
                        for p in 0..plane {
                            let src_in = c * plane + p;
                            let dst_in = p * from.channels + c;
                            folded[dst_in * nout + o] =
                                (f64::from(w.data[o * nin + src_in]) * sc) as f32;
                        }
                    }
                }
                Op::Linear {
                    in_features: nin,
                    out_features: nout,
                    weight: folded,
                    bias: shift.iter().map(|&v| v as f32).collect(),
                }
            }
            NodeOp::AvgPool { kernel, stride } => Op::AvgPool {
                k: *kernel,
                stride: *stride,
            },
            NodeOp::GlobalAvgPool => Op::GlobalAvgPool,
            NodeOp::Neuron => Op::Neuron(neuron),
            NodeOp::Add => Op::Add,
            NodeOp::Flatten => Op::Flatten,
            NodeOp::Output => Op::Output,
            NodeOp::BatchNorm { .. } => {
                return Err(BuildError::Unfoldable {
                    name: node.name.clone(),
                });
            }
        };
        Ok(Node::new(node.name.clone(), op, inputs, shape))
    }

    /// The `[H][W][C]` shape whose flattening is the input of linear node `index` (its own
    /// input shape when that is not a flatten).
    fn flattened_shape(&self, lowering: &Lowering, index: usize) -> Shape {
        let src = lowering.checked.inputs[index][0];
        match self.nodes[src].op {
            NodeOp::Flatten => lowering.checked.shapes[lowering.checked.inputs[src][0]],
            _ => lowering.checked.shapes[src],
        }
    }

    /// The per-channel (scale, shift) of batch-norm node `index`: `y = scale·x + shift`, in
    /// f64, with tdBN's α·Vth.
    pub fn batch_norm_fold(
        &self,
        index: usize,
        params: &Parameters,
    ) -> Result<(Vec<f64>, Vec<f64>), BuildError> {
        let NodeOp::BatchNorm {
            channels,
            eps,
            alpha,
            threshold_scaled,
            weight,
            bias,
            running_mean,
            running_var,
        } = &self.nodes[index].op
        else {
            return Err(BuildError::Unfoldable {
                name: self.nodes[index].name.clone(),
            });
        };
        let get = |name: &str| {
            params
                .get(name)
                .map(|t| t.data.as_slice())
                .ok_or_else(|| BuildError::MissingTensor {
                    name: name.to_owned(),
                    expected: vec![*channels],
                })
        };
        let (gamma, beta, mean, var) = (
            get(weight)?,
            get(bias)?,
            get(running_mean)?,
            get(running_var)?,
        );
        let factor = if *threshold_scaled {
            f64::from(*alpha) * f64::from(VTH)
        } else {
            1.0
        };
        let scale: Vec<f64> = (0..*channels)
            .map(|c| f64::from(gamma[c]) * factor / (f64::from(var[c]) + f64::from(*eps)).sqrt())
            .collect();
        let shift = (0..*channels)
            .map(|c| f64::from(beta[c]) - f64::from(mean[c]) * scale[c])
            .collect();
        Ok((scale, shift))
    }

    /// The index of the node named `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }
}

/// Scale and shift of a weighted node's outputs: its folded batch norm composed with its own
/// bias (`y = s·(Wx + b) + t`, so the folded bias is `s·b + t`).
fn affine(
    fold: Option<&(Vec<f64>, Vec<f64>)>,
    bias: Option<&Tensor>,
    channels: usize,
) -> (Vec<f64>, Vec<f64>) {
    let b = |c: usize| bias.map_or(0.0, |t| f64::from(t.data[c]));
    match fold {
        Some((scale, shift)) => (
            scale.clone(),
            (0..channels).map(|c| scale[c] * b(c) + shift[c]).collect(),
        ),
        None => (vec![1.0; channels], (0..channels).map(b).collect()),
    }
}

/// How graph nodes map onto inference-network nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct Lowering {
    /// Shapes and input indices of the graph's nodes.
    pub checked: Checked,
    /// For each graph node, the network node it becomes (a batch norm: its conv's).
    pub network_node: Vec<usize>,
    /// For each conv or linear graph node, the batch norm folded into it.
    pub batch_norm_of: Vec<Option<usize>>,
}

/// `[C, H, W]` for messages.
fn chw(s: Shape) -> String {
    format!("[{}, {}, {}]", s.channels, s.height, s.width)
}

/// Two independent standard normal samples (Box–Muller).
fn normal_pair(rng: &mut ChaCha8Rng) -> (f64, f64) {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]: ln stays finite
    let u2: f64 = rng.random::<f64>();
    let r = (-2.0 * u1.ln()).sqrt();
    let (sin, cos) = (std::f64::consts::TAU * u2).sin_cos();
    (r * cos, r * sin)
}
