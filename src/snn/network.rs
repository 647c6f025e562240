//! The immutable inference graph: nodes in topological order, NHWC activations, BN already
//! folded into the weights. Built from an architecture ([`crate::snn::arch`]) plus parameters,
//! or by hand for tests; validated once in [`Network::new`] so executors can index freely.
//! Integer (int8) weights of a conv or linear node are held beside the node
//! ([`Network::with_int8`]), together with the one f32 expression that turns their integer sum
//! into the node's output ([`int8_current`]).

use std::ops::Range;

use crate::snn::neuron::NeuronKind;

/// The shape of one node's activation for one timestep, NHWC without the batch: `[H][W][C]`,
/// channel contiguous. Vectors (after `Flatten`, `Linear`, `GlobalAvgPool`) are 1×1×C.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Shape {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Channels (contiguous).
    pub channels: usize,
}

impl Shape {
    /// A spatial shape.
    pub const fn new(height: usize, width: usize, channels: usize) -> Self {
        Self {
            height,
            width,
            channels,
        }
    }

    /// A vector of `len` values (1×1×len).
    pub const fn vector(len: usize) -> Self {
        Self::new(1, 1, len)
    }

    /// Number of values.
    pub const fn len(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// Whether the shape holds no values.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Flat NHWC index of (y, x, c).
    #[inline(always)]
    pub const fn index(&self, y: usize, x: usize, c: usize) -> usize {
        (y * self.width + x) * self.channels + c
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}", self.height, self.width, self.channels)
    }
}

/// One operation. Weighted ops hold inference-ready parameters (BN folded, our layouts).
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// The input frame, transposed from the binner's `[C][H][W]` to `[H][W][C]`. Always node 0.
    Input,
    /// 2-D convolution, zero padding, BN folded in.
    Conv2d {
        /// Input channels.
        in_ch: usize,
        /// Output channels.
        out_ch: usize,
        /// (kh, kw).
        kernel: (usize, usize),
        /// Stride (both axes).
        stride: usize,
        /// Zero padding (both axes, both sides).
        padding: usize,
        /// `[Cin][Kh][Kw][Cout]`: one input value at (c, ky, kx) adds a contiguous Cout row.
        weight: Vec<f32>,
        /// `[Cout]`.
        bias: Vec<f32>,
    },
    /// Fully connected.
    Linear {
        /// Input length (the input node's `Shape::len`, in NHWC order).
        in_features: usize,
        /// Output length.
        out_features: usize,
        /// `[In][Out]`: one input value adds a contiguous Out row.
        weight: Vec<f32>,
        /// `[Out]`.
        bias: Vec<f32>,
    },
    /// Average over k×k windows (no padding): the window sum times 1/k².
    AvgPool {
        /// Window side.
        k: usize,
        /// Step between windows.
        stride: usize,
    },
    /// Sum over k×k windows (no padding).
    SumPool {
        /// Window side.
        k: usize,
        /// Step between windows.
        stride: usize,
    },
    /// Average over all positions per channel: the sum divided by H·W.
    GlobalAvgPool,
    /// The spiking nonlinearity applied to its input node's values (the input current X).
    Neuron(NeuronKind),
    /// Elementwise sum of two inputs of the same shape (residual connection).
    Add,
    /// Reinterprets H×W×C as a 1×1×(H·W·C) vector in NHWC order (no data movement).
    Flatten,
    /// Accumulates its input over timesteps and never spikes; logits = sum / T.
    Output,
}

impl Op {
    /// Short name for tables and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Conv2d { .. } => "conv2d",
            Op::Linear { .. } => "linear",
            Op::AvgPool { .. } => "avgpool",
            Op::SumPool { .. } => "sumpool",
            Op::GlobalAvgPool => "global_avgpool",
            Op::Neuron(_) => "neuron",
            Op::Add => "add",
            Op::Flatten => "flatten",
            Op::Output => "output",
        }
    }

    /// Whether the op holds weights (Conv2d or Linear).
    pub fn is_weighted(&self) -> bool {
        matches!(self, Op::Conv2d { .. } | Op::Linear { .. })
    }

    /// Number of parameters (weights and biases) this op holds.
    pub fn parameter_count(&self) -> usize {
        match self {
            Op::Conv2d { weight, bias, .. } | Op::Linear { weight, bias, .. } => {
                weight.len() + bias.len()
            }
            _ => 0,
        }
    }
}

/// One node of the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The operation.
    pub op: Op,
    /// Indices of the input nodes, all smaller than this node's index.
    pub inputs: Vec<usize>,
    /// Shape of this node's output per timestep (validated against the op and inputs).
    pub shape: Shape,
    /// A readable name (the parameter prefix for weighted ops, e.g. `layer1.0.conv1`).
    pub name: String,
}

impl Node {
    /// A node; its shape is checked by [`Network::new`].
    pub fn new(name: impl Into<String>, op: Op, inputs: Vec<usize>, shape: Shape) -> Self {
        Self {
            op,
            inputs,
            shape,
            name: name.into(),
        }
    }
}

/// Why a graph is not a valid network.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GraphError {
    /// The graph has no nodes or node 0 is not `Input`, or `Input` appears later.
    #[error("node 0 must be the only Input node")]
    Input,
    /// There must be exactly one `Output` node, and it must be last.
    #[error("the last node must be the only Output node")]
    Output,
    /// A node refers to itself or a later node.
    #[error("node {node} ({name}) takes input {input}, which is not an earlier node")]
    NotTopological {
        /// Index of the bad node.
        node: usize,
        /// Its name.
        name: String,
        /// The offending input index.
        input: usize,
    },
    /// Wrong number of inputs for the op.
    #[error("node {node} ({name}): {op} takes {expected} input(s), found {found}")]
    Arity {
        /// Index of the bad node.
        node: usize,
        /// Its name.
        name: String,
        /// Op name.
        op: &'static str,
        /// Inputs required.
        expected: usize,
        /// Inputs given.
        found: usize,
    },
    /// Shapes, kernel sizes or parameter lengths do not fit together.
    #[error("node {node} ({name}): {reason}")]
    Mismatch {
        /// Index of the bad node.
        node: usize,
        /// Its name.
        name: String,
        /// What does not fit.
        reason: String,
    },
}

/// The largest fan-in (Cin·Kh·Kw of a conv, In of a linear) an int8 node may have. Its
/// integer sum is then at most 127 × 132 104 = 16 777 208 ≤ 2^24 in magnitude: far inside i32
/// (no overflow in any order of accumulation), and exactly representable in f32, so the
/// conversion in [`int8_current`] is exact and the only roundings are its multiply and add.
pub const MAX_INT8_FAN_IN: usize = (1 << 24) / 127;

/// The largest integer weight magnitude: the grid is symmetric, −127..=127 (−128 is never
/// used, so negating a channel never overflows and the fan-in bound holds for both signs).
pub const INT8_MAX_WEIGHT: i8 = 127;

/// The integer weights of one conv or linear node whose input is binary spikes: the node's
/// output is `int8_current(Σ weight over the spiking inputs, scale[o], bias[o])` for each
/// output channel o, with the bias of the node's op.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Weights {
    /// Same layout as the op's f32 weights (`[Cin][Kh][Kw][Cout]` or `[In][Out]`), each in
    /// −127..=127.
    pub weight: Vec<i8>,
    /// One scale per output channel (BN folded in), finite.
    pub scale: Vec<f32>,
}

/// A quantized node's output value from its exact integer sum: `f32(sum) · scale + bias`, in
/// f32, in that order, with no fused multiply-add. Every executor (and the NumPy reference)
/// computes exactly this, so their outputs agree bit for bit whatever order they summed in.
/// `sum` is exact in f32 because the fan-in is at most [`MAX_INT8_FAN_IN`].
#[inline(always)]
pub fn int8_current(sum: i32, scale: f32, bias: f32) -> f32 {
    sum as f32 * scale + bias
}

/// [`int8_current`] of each output channel: `out[c] = int8_current(sums[c], scale[c],
/// bias[c])`, over the shortest of the four. Compiled for AVX-512 where the CPU has it (the
/// same IEEE conversion, multiply and add per lane, so the same bits).
#[inline]
pub fn int8_currents(sums: &[i32], scale: &[f32], bias: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        unsafe { int8_currents_avx512(sums, scale, bias, out) };
        return;
    }
    int8_currents_body(sums, scale, bias, out);
}

#[inline(always)]
fn int8_currents_body(sums: &[i32], scale: &[f32], bias: &[f32], out: &mut [f32]) {
    for (((o, &sum), &s), &b) in out.iter_mut().zip(sums).zip(scale).zip(bias) {
        *o = int8_current(sum, s, b);
    }
}

/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn int8_currents_avx512(sums: &[i32], scale: &[f32], bias: &[f32], out: &mut [f32]) {
    int8_currents_body(sums, scale, bias, out);
}

/// An immutable, validated network. Share it across streams in an `Arc`; each stream keeps
/// its own [`crate::snn::State`].
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    nodes: Vec<Node>,
    /// For each node, the range of its neurons in the flat membrane vector (empty if the node
    /// is not a `Neuron`).
    membranes: Vec<Range<usize>>,
    neuron_count: usize,
    /// Per node, its integer weights (None: f32 weights). Empty when no node has any.
    int8: Vec<Option<Int8Weights>>,
}

/// Output size of a window op along one axis, or None if the window does not fit.
pub fn window_out(len: usize, k: usize, stride: usize, padding: usize) -> Option<usize> {
    let padded = len.checked_add(padding.checked_mul(2)?)?;
    if k == 0 || stride == 0 || padded < k {
        return None;
    }
    Some((padded - k) / stride + 1)
}

impl Network {
    /// Validates and wraps a graph: node 0 is `Input`, the last node is `Output`, inputs come
    /// from earlier nodes, each op's arity, kernel, parameter lengths and output shape fit.
    pub fn new(nodes: Vec<Node>) -> Result<Self, GraphError> {
        if nodes.first().map(|n| &n.op) != Some(&Op::Input) {
            return Err(GraphError::Input);
        }
        if nodes.last().map(|n| &n.op) != Some(&Op::Output) {
            return Err(GraphError::Output);
        }
        let mut membranes = Vec::with_capacity(nodes.len());
        let mut neuron_count = 0usize;
        for (i, node) in nodes.iter().enumerate() {
            let mismatch = |reason: String| GraphError::Mismatch {
                node: i,
                name: node.name.clone(),
                reason,
            };
            for &input in &node.inputs {
                if input >= i {
                    return Err(GraphError::NotTopological {
                        node: i,
                        name: node.name.clone(),
                        input,
                    });
                }
            }
            let arity = match node.op {
                Op::Input => 0,
                Op::Add => 2,
                _ => 1,
            };
            if node.inputs.len() != arity {
                return Err(GraphError::Arity {
                    node: i,
                    name: node.name.clone(),
                    op: node.op.name(),
                    expected: arity,
                    found: node.inputs.len(),
                });
            }
            if i > 0 && node.op == Op::Input {
                return Err(GraphError::Input);
            }
            if i + 1 < nodes.len() && node.op == Op::Output {
                return Err(GraphError::Output);
            }
            let input_shape = node.inputs.first().map(|&j| nodes[j].shape);
            let expected = match (&node.op, input_shape) {
                (Op::Input, _) => node.shape,
                (_, None) => unreachable_shape(),
                (
                    Op::Conv2d {
                        in_ch,
                        out_ch,
                        kernel,
                        stride,
                        padding,
                        weight,
                        bias,
                    },
                    Some(s),
                ) => {
                    if s.channels != *in_ch {
                        return Err(mismatch(format!(
                            "conv expects {in_ch} input channels, input has {}",
                            s.channels
                        )));
                    }
                    let wlen = in_ch * kernel.0 * kernel.1 * out_ch;
                    if weight.len() != wlen || bias.len() != *out_ch {
                        return Err(mismatch(format!(
                            "conv weight has {} values (expected {wlen}), bias {} (expected {out_ch})",
                            weight.len(),
                            bias.len()
                        )));
                    }
                    let (Some(h), Some(w)) = (
                        window_out(s.height, kernel.0, *stride, *padding),
                        window_out(s.width, kernel.1, *stride, *padding),
                    ) else {
                        return Err(mismatch(format!(
                            "kernel {}x{} stride {stride} padding {padding} does not fit input {s}",
                            kernel.0, kernel.1
                        )));
                    };
                    Shape::new(h, w, *out_ch)
                }
                (
                    Op::Linear {
                        in_features,
                        out_features,
                        weight,
                        bias,
                    },
                    Some(s),
                ) => {
                    if s.len() != *in_features || s.height != 1 || s.width != 1 {
                        return Err(mismatch(format!(
                            "linear expects a vector of {in_features}, input is {s}"
                        )));
                    }
                    if weight.len() != in_features * out_features || bias.len() != *out_features {
                        return Err(mismatch(format!(
                            "linear weight has {} values (expected {}), bias {} (expected {out_features})",
                            weight.len(),
                            in_features * out_features,
                            bias.len()
                        )));
                    }
                    Shape::vector(*out_features)
                }
                (Op::AvgPool { k, stride } | Op::SumPool { k, stride }, Some(s)) => {
                    let (Some(h), Some(w)) = (
                        window_out(s.height, *k, *stride, 0),
                        window_out(s.width, *k, *stride, 0),
                    ) else {
                        return Err(mismatch(format!(
                            "pool {k}x{k} stride {stride} does not fit input {s}"
                        )));
                    };
                    Shape::new(h, w, s.channels)
                }
                (Op::GlobalAvgPool, Some(s)) => Shape::vector(s.channels),
                (Op::Neuron(kind), Some(s)) => {
                    if !kind.is_valid() {
                        return Err(mismatch(format!("invalid neuron parameters {kind:?}")));
                    }
                    s
                }
                (Op::Add, Some(s)) => {
                    let other = nodes[node.inputs[1]].shape;
                    if other != s {
                        return Err(mismatch(format!("add of {s} and {other}")));
                    }
                    s
                }
                (Op::Flatten, Some(s)) => Shape::vector(s.len()),
                (Op::Output, Some(s)) => {
                    if s.height != 1 || s.width != 1 {
                        return Err(mismatch(format!("output expects a vector, input is {s}")));
                    }
                    s
                }
            };
            if node.shape != expected {
                return Err(mismatch(format!(
                    "declared shape {} but the op produces {expected}",
                    node.shape
                )));
            }
            if node.shape.is_empty() {
                return Err(mismatch("empty shape".into()));
            }
            if matches!(node.op, Op::Neuron(_)) {
                let n = node.shape.len();
                membranes.push(neuron_count..neuron_count + n);
                neuron_count += n;
            } else {
                membranes.push(neuron_count..neuron_count);
            }
        }
        Ok(Self {
            nodes,
            membranes,
            neuron_count,
            int8: Vec::new(),
        })
    }

    /// The same network with integer weights for conv or linear node `index`. Refused unless
    /// the node's input is binary spikes ([`Network::is_binary`]), its fan-in is at most
    /// [`MAX_INT8_FAN_IN`], the weights fit the op's layout and lie in −127..=127, and there is
    /// one finite scale per output channel. The op's f32 weights are left as they are (the
    /// caller sets them to the dequantized values, for tools that read f32 weights); executors
    /// use the integers.
    pub fn with_int8(mut self, index: usize, weights: Int8Weights) -> Result<Self, GraphError> {
        let Some(node) = self.nodes.get(index) else {
            return Err(GraphError::Mismatch {
                node: index,
                name: String::new(),
                reason: "no such node".into(),
            });
        };
        let mismatch = |reason: String| GraphError::Mismatch {
            node: index,
            name: node.name.clone(),
            reason,
        };
        let (fan_in, out, len) = match &node.op {
            Op::Conv2d {
                in_ch,
                out_ch,
                kernel,
                weight,
                ..
            } => (in_ch * kernel.0 * kernel.1, *out_ch, weight.len()),
            Op::Linear {
                in_features,
                out_features,
                weight,
                ..
            } => (*in_features, *out_features, weight.len()),
            _ => {
                return Err(mismatch(
                    "only conv2d and linear nodes have int8 weights".into(),
                ));
            }
        };
        if !node.inputs.first().is_some_and(|&j| self.is_binary(j)) {
            return Err(mismatch(
                "int8 weights need binary (spike) inputs; this node's input is real-valued".into(),
            ));
        }
        if fan_in > MAX_INT8_FAN_IN {
            return Err(mismatch(format!(
                "fan-in {fan_in} exceeds {MAX_INT8_FAN_IN}, the most an exact int8 sum allows"
            )));
        }
        if weights.weight.len() != len || weights.scale.len() != out {
            return Err(mismatch(format!(
                "int8 weights have {} values (expected {len}) and {} scales (expected {out})",
                weights.weight.len(),
                weights.scale.len()
            )));
        }
        if let Some(k) = weights.weight.iter().position(|&w| w == i8::MIN) {
            return Err(mismatch(format!(
                "int8 weight {k} is -128 (the grid is -127..=127)"
            )));
        }
        if let Some(k) = weights.scale.iter().position(|s| !s.is_finite()) {
            return Err(mismatch(format!("int8 scale {k} is not finite")));
        }
        if self.int8.is_empty() {
            self.int8 = vec![None; self.nodes.len()];
        }
        self.int8[index] = Some(weights);
        Ok(self)
    }

    /// The integer weights of node `index`, if it has any.
    #[inline]
    pub fn int8(&self, index: usize) -> Option<&Int8Weights> {
        self.int8.get(index).and_then(Option::as_ref)
    }

    /// Whether any node has integer weights.
    pub fn is_quantized(&self) -> bool {
        self.int8.iter().any(Option::is_some)
    }

    /// The same network with node `index` replaced (re-validated). Consumes `self` so no
    /// weights are copied; for tools that adjust one layer at a time.
    pub fn replace_node(self, index: usize, node: Node) -> Result<Self, GraphError> {
        let int8 = self.int8;
        let mut nodes = self.nodes;
        if let Some(slot) = nodes.get_mut(index) {
            *slot = node;
        }
        let mut network = Self::new(nodes)?;
        // The replaced node's integer weights no longer describe it; the others still do.
        for (i, w) in int8.into_iter().enumerate() {
            if let Some(w) = w
                && i != index
            {
                network = network.with_int8(i, w)?;
            }
        }
        Ok(network)
    }

    /// Takes the nodes back out (integer weights are dropped with the network).
    pub fn into_nodes(self) -> Vec<Node> {
        self.nodes
    }

    /// The nodes in topological order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The input shape per timestep (NHWC; the binner's frame is the same values as `[C][H][W]`).
    pub fn input_shape(&self) -> Shape {
        self.nodes[0].shape
    }

    /// Index of the `Output` node (the last one).
    pub fn output_node(&self) -> usize {
        self.nodes.len() - 1
    }

    /// Number of classes (the output length).
    pub fn classes(&self) -> usize {
        self.nodes[self.output_node()].shape.len()
    }

    /// Total spiking neurons (the length of a State's membrane vector).
    pub fn neuron_count(&self) -> usize {
        self.neuron_count
    }

    /// The slice of the flat membrane vector that belongs to `node` (empty unless a `Neuron`).
    pub fn membrane_range(&self, node: usize) -> Range<usize> {
        self.membranes.get(node).cloned().unwrap_or(0..0)
    }

    /// Indices of the `Neuron` nodes, in order.
    pub fn neuron_nodes(&self) -> impl Iterator<Item = usize> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| matches!(n.op, Op::Neuron(_)))
            .map(|(i, _)| i)
    }

    /// Number of parameters after folding.
    pub fn parameter_count(&self) -> usize {
        self.nodes.iter().map(|n| n.op.parameter_count()).sum()
    }

    /// Dense multiply-accumulates per timestep of one weighted node (0 for others): every
    /// output value times its fan-in that lies inside the (unpadded) input.
    pub fn dense_macs(&self, node: usize) -> u64 {
        let Some(n) = self.nodes.get(node) else {
            return 0;
        };
        match &n.op {
            Op::Conv2d {
                in_ch,
                out_ch,
                kernel,
                stride,
                padding,
                ..
            } => {
                let input = self.nodes[n.inputs[0]].shape;
                let taps_y = taps_inside(input.height, n.shape.height, kernel.0, *stride, *padding);
                let taps_x = taps_inside(input.width, n.shape.width, kernel.1, *stride, *padding);
                taps_y * taps_x * (*in_ch as u64) * (*out_ch as u64)
            }
            Op::Linear {
                in_features,
                out_features,
                ..
            } => (*in_features as u64) * (*out_features as u64),
            _ => 0,
        }
    }

    /// Whether every value `node` outputs is 0 or 1 (a spike map, or a flattening of one).
    pub fn is_binary(&self, node: usize) -> bool {
        match self.nodes.get(node).map(|n| &n.op) {
            Some(Op::Neuron(_)) => true,
            Some(Op::Flatten) => self.is_binary(self.nodes[node].inputs[0]),
            _ => false,
        }
    }
}

/// Σ over output positions along one axis of the kernel taps that land inside the input.
fn taps_inside(len: usize, out: usize, k: usize, stride: usize, padding: usize) -> u64 {
    let mut total = 0u64;
    for o in 0..out {
        for t in 0..k {
            let pos = (o * stride + t) as isize - padding as isize;
            if pos >= 0 && (pos as usize) < len {
                total += 1;
            }
        }
    }
    total
}

/// Node 0 is `Input` and every other node has at least one input (arity is checked first),
/// so a non-input op without an input shape cannot occur; this keeps the match total
/// without panicking.
fn unreachable_shape() -> Shape {
    Shape::new(0, 0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_graph() -> Vec<Node> {
        vec![
            Node::new("input", Op::Input, vec![], Shape::new(4, 4, 2)),
            Node::new(
                "conv",
                Op::Conv2d {
                    in_ch: 2,
                    out_ch: 3,
                    kernel: (3, 3),
                    stride: 1,
                    padding: 1,
                    weight: vec![0.1; 2 * 9 * 3],
                    bias: vec![0.0; 3],
                },
                vec![0],
                Shape::new(4, 4, 3),
            ),
            Node::new(
                "pool",
                Op::AvgPool { k: 2, stride: 2 },
                vec![1],
                Shape::new(2, 2, 3),
            ),
            Node::new(
                "lif",
                Op::Neuron(NeuronKind::Srif),
                vec![2],
                Shape::new(2, 2, 3),
            ),
            Node::new("flat", Op::Flatten, vec![3], Shape::vector(12)),
            Node::new(
                "fc",
                Op::Linear {
                    in_features: 12,
                    out_features: 5,
                    weight: vec![0.0; 60],
                    bias: vec![0.0; 5],
                },
                vec![4],
                Shape::vector(5),
            ),
            Node::new("out", Op::Output, vec![5], Shape::vector(5)),
        ]
    }

    #[test]
    fn validates_a_good_graph() {
        let net = Network::new(tiny_graph()).unwrap();
        assert_eq!(net.classes(), 5);
        assert_eq!(net.neuron_count(), 12);
        assert_eq!(net.membrane_range(3), 0..12);
        assert_eq!(net.membrane_range(1), 0..0);
        assert_eq!(net.neuron_nodes().collect::<Vec<_>>(), vec![3]);
        // 4x4 output, 3x3 kernel with padding 1: taps inside per axis = 3+3+3+3 - 2 = 10.
        assert_eq!(net.dense_macs(1), 10 * 10 * 2 * 3);
        assert_eq!(net.dense_macs(5), 60);
        assert!(net.is_binary(4));
        assert!(!net.is_binary(2));
    }

    #[test]
    fn rejects_bad_graphs() {
        let mut g = tiny_graph();
        g[2].shape = Shape::new(4, 4, 3);
        assert!(matches!(
            Network::new(g),
            Err(GraphError::Mismatch { node: 2, .. })
        ));
        let mut g = tiny_graph();
        g[3].inputs = vec![4];
        assert!(matches!(
            Network::new(g),
            Err(GraphError::NotTopological { node: 3, .. })
        ));
        let mut g = tiny_graph();
        g[6].inputs = vec![5, 4];
        assert!(matches!(
            Network::new(g),
            Err(GraphError::Arity { node: 6, .. })
        ));
        let mut g = tiny_graph();
        g.pop();
        assert_eq!(Network::new(g), Err(GraphError::Output));
        let mut g = tiny_graph();
        if let Op::Conv2d { weight, .. } = &mut g[1].op {
            weight.pop();
        }
        assert!(matches!(
            Network::new(g),
            Err(GraphError::Mismatch { node: 1, .. })
        ));
        let mut g = tiny_graph();
        g[3].op = Op::Neuron(NeuronKind::LifHard { tau: -1.0 });
        assert!(matches!(
            Network::new(g),
            Err(GraphError::Mismatch { node: 3, .. })
        ));
    }
}
