//! The reference executor: plain, obviously correct loops over every node, output value and
//! weight, following the exactness contract in `exec` literally. Slow; it exists to check the
//! fast executors. It counts synaptic ops with its own loops (independently of
//! [`crate::exec::stats::FanOut`]).

use crate::binner::SparseFrame;
use crate::exec::stats::{InferenceStats, QuantizationError};
use crate::exec::{
    ExecError, Executor, LayerSpikes, Output, RunOptions, frame_to_nhwc, validate_run,
};
use crate::snn::network::{Network, Op};
use crate::snn::neuron::fire;
use crate::snn::state::State;

/// The reference executor. Holds one output buffer per node, reused across runs.
#[derive(Debug, Default)]
pub struct ReferenceExecutor {
    values: Vec<Vec<f32>>,
}

impl ReferenceExecutor {
    /// A new executor.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Executor for ReferenceExecutor {
    fn name(&self) -> &'static str {
        "reference"
    }

    fn run(
        &mut self,
        network: &Network,
        state: &mut State,
        frames: &[SparseFrame],
        options: &RunOptions,
    ) -> Result<Output, ExecError> {
        validate_run(network, state, frames, options)?;
        state.reset();
        let nodes = network.nodes();
        self.values.resize_with(nodes.len(), Vec::new);
        for (buf, node) in self.values.iter_mut().zip(nodes) {
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
                let mut out = std::mem::take(&mut self.values[i]);
                let input = |k: usize| -> &[f32] { &self.values[node.inputs[k]] };
                let in_shape = node.inputs.first().map(|&j| nodes[j].shape);
                let s = node.shape;
                let row = &mut stats.nodes[i];
                match &node.op {
                    Op::Input => frame_to_nhwc(frame, &mut out),
                    Op::Conv2d {
                        in_ch,
                        out_ch,
                        kernel,
                        stride,
                        padding,
                        weight,
                        bias,
                    } => {
                        let x = input(0);
                        let is = in_shape.unwrap_or(s);
                        let mut acc = vec![0.0f64; *out_ch];
                        for oy in 0..s.height {
                            for ox in 0..s.width {
                                for (a, &b) in acc.iter_mut().zip(bias) {
                                    *a = f64::from(b);
                                }
                                for ky in 0..kernel.0 {
                                    let iy = (oy * stride + ky) as isize - *padding as isize;
                                    if iy < 0 || iy as usize >= is.height {
                                        continue;
                                    }
                                    for kx in 0..kernel.1 {
                                        let ix = (ox * stride + kx) as isize - *padding as isize;
                                        if ix < 0 || ix as usize >= is.width {
                                            continue;
                                        }
                                        for ci in 0..*in_ch {
                                            let v = x[is.index(iy as usize, ix as usize, ci)];
                                            let first =
                                                ((ci * kernel.0 + ky) * kernel.1 + kx) * out_ch;
                                            let row_w = &weight[first..first + out_ch];
                                            for (a, &w) in acc.iter_mut().zip(row_w) {
                                                *a += f64::from(w) * f64::from(v);
                                            }
                                            let macs = *out_ch as u64;
                                            row.performed_ops += macs;
                                            row.dense_macs += macs;
                                            if v != 0.0 {
                                                row.synaptic_ops += macs;
                                            }
                                        }
                                    }
                                }
                                for (co, &a) in acc.iter().enumerate() {
                                    out[s.index(oy, ox, co)] = a as f32;
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
                        for o in 0..*out_features {
                            let mut acc = f64::from(bias[o]);
                            for k in 0..*in_features {
                                acc += f64::from(weight[k * out_features + o]) * f64::from(x[k]);
                                row.performed_ops += 1;
                                row.dense_macs += 1;
                                if x[k] != 0.0 {
                                    row.synaptic_ops += 1;
                                }
                            }
                            out[o] = acc as f32;
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
                self.values[i] = out;
            }
            state.timesteps += 1;
            stats.timesteps += 1;
        }
        Ok(Output {
            logits: state.logits(),
            timesteps: frames.len(),
            spikes,
            stats,
        })
    }
}
