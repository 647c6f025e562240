//! What the event-driven executor keeps and computes per node, decided once per network: which
//! representations each activation needs (dense values for pools, adds, neurons and the
//! output; per-pixel lists for weighted layers), which convs and residual adds are computed
//! inside the neuron that consumes them, and how each node's active pixels follow from its
//! inputs'.

use crate::exec::ConvNode;
use crate::snn::network::{Network, Op};

/// How a `Neuron` node gets its input current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Current {
    /// From its input node's dense values.
    Dense(usize),
    /// Computed per pixel from conv node `conv`, which has no other consumer.
    Conv {
        /// The conv node.
        conv: usize,
    },
    /// Conv node `conv` plus the dense values of node `other`, through an `Add` that has no
    /// other consumer (a residual block's output).
    ConvAdd {
        /// The conv node.
        conv: usize,
        /// The other operand of the add (its source node).
        other: usize,
    },
}

/// One node's plan.
#[derive(Debug, Clone)]
pub struct NodePlan {
    /// The node whose buffers hold this node's values: itself, or for `Flatten` the node it
    /// reinterprets.
    pub source: usize,
    /// Keeps a dense NHWC buffer.
    pub dense: bool,
    /// Keeps per-pixel lists of nonzero values.
    pub lists: bool,
    /// Values are 0 or 1.
    pub binary: bool,
    /// Computed inside this `Neuron` node instead of on its own.
    pub fused_into: Option<usize>,
    /// For `Neuron` nodes: where the current comes from.
    pub current: Option<Current>,
    /// The nodes this one consumes and the window through which it reads them (the leaves of
    /// a fused expression for a neuron).
    pub reads: Vec<Read>,
}

/// One input read by a node's computation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    /// The source node read.
    pub node: usize,
    /// How output pixels map to the input pixels they read.
    pub footprint: Footprint,
}

/// Which input pixels an output pixel reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Footprint {
    /// The same pixel.
    Same,
    /// A window: kernel (kh, kw), stride, padding.
    Window {
        /// Kernel rows and columns.
        kernel: (usize, usize),
        /// Stride.
        stride: usize,
        /// Zero padding.
        padding: usize,
    },
    /// Every pixel (global pooling, linear layers).
    All,
}

/// Decides, per node, what it keeps and where it is computed.
pub fn plan(network: &Network) -> Vec<NodePlan> {
    let nodes = network.nodes();
    let mut consumers = vec![Vec::new(); nodes.len()];
    for (i, node) in nodes.iter().enumerate() {
        for &input in &node.inputs {
            consumers[input].push(i);
        }
    }
    let mut plans: Vec<NodePlan> = nodes
        .iter()
        .enumerate()
        .map(|(i, _)| NodePlan {
            source: i,
            dense: false,
            lists: false,
            binary: network.is_binary(i),
            fused_into: None,
            current: None,
            reads: Vec::new(),
        })
        .collect();
    for (i, node) in nodes.iter().enumerate() {
        if matches!(node.op, Op::Flatten) {
            plans[i].source = plans[node.inputs[0]].source;
        }
    }
    let sole_consumer = |n: usize, of: usize| consumers[n].len() == 1 && consumers[n][0] == of;
    for (i, node) in nodes.iter().enumerate() {
        if let Op::Neuron(_) = node.op {
            let x = node.inputs[0];
            let current = match &nodes[x].op {
                Op::Conv2d { .. } if sole_consumer(x, i) => Current::Conv { conv: x },
                Op::Add if sole_consumer(x, i) => {
                    let [a, b] = [nodes[x].inputs[0], nodes[x].inputs[1]];
                    let fusable =
                        |c: usize| matches!(nodes[c].op, Op::Conv2d { .. }) && sole_consumer(c, x);
                    if fusable(a) {
                        Current::ConvAdd {
                            conv: a,
                            other: plans[b].source,
                        }
                    } else if fusable(b) {
                        Current::ConvAdd {
                            conv: b,
                            other: plans[a].source,
                        }
                    } else {
                        Current::Dense(plans[x].source)
                    }
                }
                _ => Current::Dense(plans[x].source),
            };
            match current {
                Current::Conv { conv } => plans[conv].fused_into = Some(i),
                Current::ConvAdd { conv, .. } => {
                    plans[conv].fused_into = Some(i);
                    plans[x].fused_into = Some(i);
                }
                Current::Dense(_) => {}
            }
            plans[i].current = Some(current);
        }
    }
    // What each computed node reads, and so what its sources keep.
    for (i, node) in nodes.iter().enumerate() {
        if plans[i].fused_into.is_some() || matches!(node.op, Op::Flatten | Op::Input) {
            continue;
        }
        let mut reads = Vec::new();
        let mut dense_reads = Vec::new();
        let mut list_reads = Vec::new();
        match (&node.op, plans[i].current) {
            (Op::Neuron(_), Some(Current::Conv { conv })) => {
                let src = plans[nodes[conv].inputs[0]].source;
                reads.push(Read {
                    node: src,
                    footprint: conv_footprint(network, conv),
                });
                list_reads.push(src);
            }
            (Op::Neuron(_), Some(Current::ConvAdd { conv, other })) => {
                let src = plans[nodes[conv].inputs[0]].source;
                reads.push(Read {
                    node: src,
                    footprint: conv_footprint(network, conv),
                });
                list_reads.push(src);
                reads.push(Read {
                    node: other,
                    footprint: Footprint::Same,
                });
                dense_reads.push(other);
            }
            (Op::Neuron(_), Some(Current::Dense(src))) => {
                reads.push(Read {
                    node: src,
                    footprint: Footprint::Same,
                });
                dense_reads.push(src);
            }
            (Op::Conv2d { .. }, _) => {
                let src = plans[node.inputs[0]].source;
                reads.push(Read {
                    node: src,
                    footprint: conv_footprint(network, i),
                });
                list_reads.push(src);
            }
            (Op::AvgPool { k, stride } | Op::SumPool { k, stride }, _) => {
                let src = plans[node.inputs[0]].source;
                reads.push(Read {
                    node: src,
                    footprint: Footprint::Window {
                        kernel: (*k, *k),
                        stride: *stride,
                        padding: 0,
                    },
                });
                dense_reads.push(src);
            }
            (Op::Add, _) => {
                for &input in &node.inputs {
                    let src = plans[input].source;
                    reads.push(Read {
                        node: src,
                        footprint: Footprint::Same,
                    });
                    dense_reads.push(src);
                }
            }
            (Op::Linear { .. }, _) => {
                let src = plans[node.inputs[0]].source;
                reads.push(Read {
                    node: src,
                    footprint: Footprint::All,
                });
                list_reads.push(src);
            }
            (Op::GlobalAvgPool | Op::Output, _) => {
                let src = plans[node.inputs[0]].source;
                reads.push(Read {
                    node: src,
                    footprint: Footprint::All,
                });
                dense_reads.push(src);
            }
            _ => {}
        }
        for s in dense_reads {
            plans[s].dense = true;
        }
        for s in list_reads {
            plans[s].lists = true;
        }
        plans[i].reads = reads;
    }
    for (i, node) in nodes.iter().enumerate() {
        // Neurons write their spikes densely (the neuron step's output) and list them for
        // recording; computed non-input nodes hold their values densely.
        let computed = plans[i].fused_into.is_none() && plans[i].source == i;
        if computed && !matches!(node.op, Op::Input) {
            plans[i].dense = true;
        }
        if matches!(node.op, Op::Neuron(_)) {
            plans[i].lists = true;
        }
    }
    plans
}

fn conv_footprint(network: &Network, conv: usize) -> Footprint {
    match ConvNode::of(network, conv) {
        Some(c) => Footprint::Window {
            kernel: (c.geometry.kernel_height, c.geometry.kernel_width),
            stride: c.geometry.stride,
            padding: c.geometry.padding,
        },
        None => Footprint::All,
    }
}
