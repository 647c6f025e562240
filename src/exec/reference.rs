//! The reference executor: plain, obviously correct loops over every node, output value and
//! weight, following the exactness contract in `exec` literally. Slow; it exists to check the
//! fast executors. It counts synaptic ops with its own loops (independently of
//! [`crate::exec::stats::FanOut`]). It always runs on the caller's thread. Nodes with int8
//! weights sum `weight × spike` in i32 and apply [`int8_current`] once.

use crate::binner::SparseFrame;
use crate::exec::stats::{InferenceStats, QuantizationError};
use crate::exec::{ConvNode, LayerSpikes, RunOptions, RunOutput, State, frame_to_nhwc};
use crate::snn::network::{Network, Op, int8_current};
use crate::snn::neuron::fire;

/// The reference executor's per-worker buffers: one output buffer per node.
#[derive(Debug, Default)]
pub struct ReferenceScratch {
    values: Vec<Vec<f32>>,
}

impl ReferenceScratch {
    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.values
            .iter()
            .map(|v| v.capacity() * std::mem::size_of::<f32>())
            .sum()
    }
}

/// Runs `frames` from `state` (validated by the caller), one timestep after another.
pub(crate) fn run(
    network: &Network,
    scratch: &mut ReferenceScratch,
    state: &mut State,
    frames: &[SparseFrame],
    options: &RunOptions,
) -> RunOutput {
    let nodes = network.nodes();
    let values = &mut scratch.values;
    values.resize_with(nodes.len(), Vec::new);
    for (buf, node) in values.iter_mut().zip(nodes) {
        buf.clear();
        buf.resize(node.shape.len(), 0.0);
    }
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

    for frame in frames {
        for (i, node) in nodes.iter().enumerate() {
            // Take this node's buffer out so inputs can be borrowed alongside it.
            let mut out = std::mem::take(&mut values[i]);
            let input = |k: usize| -> &[f32] { &values[node.inputs[k]] };
            let in_shape = node.inputs.first().map(|&j| nodes[j].shape);
            let s = node.shape;
            let row = &mut stats.nodes[i];
            match &node.op {
                Op::Input => frame_to_nhwc(frame, &mut out),
                Op::Conv2d { .. } => {
                    let x = input(0);
                    // Always a conv view: the network validated this node.
                    if let Some(conv) = ConvNode::of(network, i) {
                        let g = conv.geometry;
                        let out_ch = conv.out_channels;
                        let is = in_shape.unwrap_or(s);
                        let int8 = network.int8(i);
                        // Integer sums of int8 nodes (their inputs are 0/1 spikes).
                        let mut sums = vec![0i32; out_ch];
                        let mut acc = vec![0.0f64; out_ch];
                        for oy in 0..s.height {
                            for ox in 0..s.width {
                                for (a, &b) in acc.iter_mut().zip(conv.bias) {
                                    *a = f64::from(b);
                                }
                                sums.fill(0);
                                for ky in 0..g.kernel_height {
                                    let iy = (oy * g.stride + ky) as isize - g.padding as isize;
                                    if iy < 0 || iy as usize >= is.height {
                                        continue;
                                    }
                                    for kx in 0..g.kernel_width {
                                        let ix = (ox * g.stride + kx) as isize - g.padding as isize;
                                        if ix < 0 || ix as usize >= is.width {
                                            continue;
                                        }
                                        for ci in 0..g.in_channels {
                                            let v = x[is.index(iy as usize, ix as usize, ci)];
                                            let first =
                                                ((ci * g.kernel_height + ky) * g.kernel_width + kx)
                                                    * out_ch;
                                            if let Some(q) = int8 {
                                                let spike = v as i32;
                                                let row_q = &q.weight[first..first + out_ch];
                                                for (a, &w) in sums.iter_mut().zip(row_q) {
                                                    *a += i32::from(w) * spike;
                                                }
                                            } else {
                                                let row_w = &conv.weight[first..first + out_ch];
                                                for (a, &w) in acc.iter_mut().zip(row_w) {
                                                    *a += f64::from(w) * f64::from(v);
                                                }
                                            }
                                            let macs = out_ch as u64;
                                            row.performed_ops += macs;
                                            row.dense_macs += macs;
                                            if v != 0.0 {
                                                row.synaptic_ops += macs;
                                            }
                                        }
                                    }
                                }
                                for (co, &a) in acc.iter().enumerate() {
                                    out[s.index(oy, ox, co)] = match int8 {
                                        Some(q) => {
                                            int8_current(sums[co], q.scale[co], conv.bias[co])
                                        }
                                        None => a as f32,
                                    };
                                }
                            }
                        }
                    }
                }
                Op::Linear {
                    in_features,
                    out_features,
                    weight,
                    bias,
                } => {
                    let x = input(0);
                    let int8 = network.int8(i);
                    for o in 0..*out_features {
                        let mut acc = f64::from(bias[o]);
                        let mut sum = 0i32;
                        for k in 0..*in_features {
                            match int8 {
                                Some(q) => {
                                    sum += i32::from(q.weight[k * out_features + o]) * x[k] as i32
                                }
                                None => {
                                    acc += f64::from(weight[k * out_features + o]) * f64::from(x[k])
                                }
                            }
                            row.performed_ops += 1;
                            row.dense_macs += 1;
                            if x[k] != 0.0 {
                                row.synaptic_ops += 1;
                            }
                        }
                        out[o] = match int8 {
                            Some(q) => int8_current(sum, q.scale[o], bias[o]),
                            None => acc as f32,
                        };
                    }
                }
                Op::AvgPool { k, stride } | Op::SumPool { k, stride } => {
                    let x = input(0);
                    let is = in_shape.unwrap_or(s);
                    let average = matches!(node.op, Op::AvgPool { .. });
                    for oy in 0..s.height {
                        for ox in 0..s.width {
                            for c in 0..s.channels {
                                let mut acc = 0.0f64;
                                for dy in 0..*k {
                                    for dx in 0..*k {
                                        acc += f64::from(
                                            x[is.index(oy * stride + dy, ox * stride + dx, c)],
                                        );
                                    }
                                }
                                if average {
                                    acc /= (k * k) as f64;
                                }
                                out[s.index(oy, ox, c)] = acc as f32;
                            }
                        }
                    }
                }
                Op::GlobalAvgPool => {
                    let x = input(0);
                    let is = in_shape.unwrap_or(s);
                    for c in 0..s.channels {
                        let mut acc = 0.0f64;
                        for y in 0..is.height {
                            for xx in 0..is.width {
                                acc += f64::from(x[is.index(y, xx, c)]);
                            }
                        }
                        out[c] = (acc / (is.height * is.width) as f64) as f32;
                    }
                }
                Op::Neuron(kind) => {
                    let x = input(0);
                    let membranes = &mut state.membranes[network.membrane_range(i)];
                    let mut fired = Vec::new();
                    for (n, (u, &current)) in membranes.iter_mut().zip(x).enumerate() {
                        let h = kind.charge(*u, current);
                        let o = fire(h);
                        *u = kind.reset(h, o);
                        out[n] = o;
                        if o != 0.0 {
                            row.spikes += 1;
                            fired.push(n as u32);
                        }
                        if let Some(q) = stats.quantization.as_mut()
                            && q.node == i
                        {
                            q.observe(h, o);
                        }
                    }
                    row.neuron_updates += membranes.len() as u64;
                    row.neuron_updates_total += membranes.len() as u64;
                    if let Some(layers) = spikes.as_mut()
                        && let Some(layer) = layers.iter_mut().find(|l| l.node == i)
                    {
                        layer.steps.push(fired);
                    }
                }
                Op::Add => {
                    let (a, b) = (input(0), input(1));
                    for n in 0..out.len() {
                        out[n] = (f64::from(a[n]) + f64::from(b[n])) as f32;
                    }
                }
                Op::Flatten => out.copy_from_slice(input(0)),
                Op::Output => {
                    let x = input(0);
                    for (sum, &v) in state.output_sum.iter_mut().zip(x) {
                        *sum += v;
                    }
                    out.copy_from_slice(x);
                }
            }
            values[i] = out;
        }
        state.steps += 1;
        state.output_steps += 1;
        stats.timesteps += 1;
    }
    RunOutput {
        logits: state.logits(),
        timesteps: frames.len(),
        spikes,
        stats,
    }
}
