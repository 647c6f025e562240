//! The training network: parameters and batch-norm statistics for a [`TrainGraph`], the
//! forward pass over a whole batch (keeping what the backward pass needs on a [`Tape`]) and
//! the backward pass into the parameter gradients.

use std::collections::BTreeMap;

use crate::kernels::ConvGeometry;
use crate::model::quantize::{Method, fake_quantize};
use crate::model::tensor::{Parameters, Tensor};
use crate::snn::neuron::Firing;
use crate::train::graph::{TrainGraph, TrainOp};
use crate::train::layers::{self, BnSaved, SpikeIndex};
use crate::train::real::Real;

/// PyTorch's batch-norm momentum for the running statistics.
pub const BN_MOMENTUM: f64 = 0.1;

/// One trainable tensor, in the trainer's layout (conv `[Cin·Kh·Kw][Cout]`, linear
/// `[In][Out]` with In in H·W·C order).
#[derive(Debug, Clone, PartialEq)]
pub struct Param<R> {
    /// `state_dict` name, e.g. `layer1.0.conv1.weight`.
    pub name: String,
    /// Its PyTorch shape.
    pub shape: Vec<usize>,
    /// Values.
    pub value: Vec<R>,
    /// Gradient of the last backward pass.
    pub grad: Vec<R>,
    /// Whether weight decay applies (conv and linear weights only).
    pub decays: bool,
}

/// A batch norm's running statistics (`running_mean`, `running_var`, unbiased).
#[derive(Debug, Clone, PartialEq)]
pub struct RunningStats<R> {
    /// The batch-norm node's name.
    pub name: String,
    /// The running mean's tensor name.
    pub mean_tensor: String,
    /// The running variance's tensor name.
    pub var_tensor: String,
    /// Running mean.
    pub mean: Vec<R>,
    /// Running (unbiased) variance.
    pub var: Vec<R>,
}

/// Where a node's parameters are.
#[derive(Debug, Clone, PartialEq)]
enum Slots {
    None,
    Conv {
        geometry: ConvGeometry,
        weight: usize,
        bias: Option<usize>,
    },
    Bn {
        gamma: usize,
        beta: usize,
        stats: usize,
    },
    Linear {
        inputs: usize,
        weight: usize,
        bias: Option<usize>,
    },
}

/// Training (batch statistics, running statistics updated) or evaluation (running
/// statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Batch statistics; the running statistics move by [`BN_MOMENTUM`].
    Train,
    /// Running statistics; nothing changes.
    Eval,
}

/// What the forward pass keeps for the backward pass.
#[derive(Debug)]
enum Saved<R> {
    None,
    Bn(BnSaved),
    Neuron { potential: Vec<R> },
}

/// The record of one forward pass.
#[derive(Debug)]
pub struct Tape<R> {
    /// Timesteps.
    pub timesteps: usize,
    /// Batch size.
    pub batch: usize,
    mode: Mode,
    values: Vec<Vec<R>>,
    saved: Vec<Saved<R>>,
    index: Vec<Option<SpikeIndex<R>>>,
    /// Nonzero outputs of each neuron node (0 for other nodes).
    pub spikes: Vec<usize>,
}

impl<R: Real> Tape<R> {
    /// The per-timestep outputs `[T][B][C]`.
    pub fn outputs(&self) -> &[R] {
        &self.values[self.values.len() - 1]
    }

    /// The logits `[B][C]`: the mean over T of the outputs.
    pub fn logits(&self) -> Vec<R> {
        layers::output_logits(self.timesteps, self.outputs())
    }

    /// The output of node `i` (`[T][B][H][W][C]`), until the backward pass frees it.
    pub fn value(&self, i: usize) -> &[R] {
        &self.values[i]
    }

    /// The membrane potentials H of neuron node `i` before firing (`[T][B][H][W][C]`), if
    /// it is a neuron node.
    pub fn potential(&self, i: usize) -> Option<&[R]> {
        match &self.saved[i] {
            Saved::Neuron { potential } => Some(potential),
            _ => None,
        }
    }

    /// The fraction of nonzero values in each input that was indexed for the sparse kernels.
    pub fn densities(&self) -> Vec<(usize, f64)> {
        self.index
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s.density())))
            .collect()
    }
}

/// Why parameters do not fit a graph.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamError {
    /// A tensor the graph needs is absent.
    #[error("missing tensor {name} (expected shape {expected:?})")]
    Missing {
        /// Name.
        name: String,
        /// PyTorch shape.
        expected: Vec<usize>,
    },
    /// A tensor has the wrong shape.
    #[error("tensor {name} has shape {found:?}, expected {expected:?}")]
    Shape {
        /// Name.
        name: String,
        /// Expected.
        expected: Vec<usize>,
        /// Found.
        found: Vec<usize>,
    },
    /// A tensor holds NaN or infinity (or a negative running variance).
    #[error("tensor {name} holds an invalid value at element {index}")]
    Value {
        /// Name.
        name: String,
        /// First bad element.
        index: usize,
    },
}

/// The network being trained.
#[derive(Debug, Clone)]
pub struct Net<R: Real> {
    graph: TrainGraph,
    slots: Vec<Slots>,
    /// Trainable tensors, in graph order.
    pub params: Vec<Param<R>>,
    /// Batch-norm running statistics, in graph order.
    pub stats: Vec<RunningStats<R>>,
    /// How neurons fire in the forward pass ([`Firing::Spike`] except in gradient checks).
    pub firing: Firing,
    /// Whether convolutions fed by 0/1 spikes or by the (event-count) input, and linear layers
    /// fed by spikes, use the row-sum kernels when their input is sparse enough (on by
    /// default; off measures what they save).
    pub binary_kernels: bool,
    /// Activation and gradient buffers of the last step, reused by the next.
    buffers: Buffers<R>,
    /// Per parameter: the fake-quantized weights the forward and backward passes use instead
    /// of the float (shadow) values, for the weights [`Net::fake_quantize`] named; rebuilt
    /// from the shadow values at every forward pass.
    quantized: Vec<Option<Vec<R>>>,
}

/// Buffers kept from one step to the next. Every step allocates the same sizes, tens of MiB
/// each, and fresh ones come from the kernel as zeroed pages: page faults and page clearing
/// cost about a tenth of a `tiny` step. Kept buffers keep their length and their stale values,
/// so a buffer that a kernel overwrites whole is not filled first.
#[derive(Debug, Default)]
struct Buffers<R> {
    free: Vec<Vec<R>>,
}

/// A copy of a network starts with no kept buffers.
impl<R> Clone for Buffers<R> {
    fn clone(&self) -> Self {
        Self { free: Vec::new() }
    }
}

impl<R: Real> Buffers<R> {
    /// At most this many buffers are kept (a step of the deepest built-in graph uses fewer).
    const KEEP: usize = 512;

    /// The smallest kept buffer with room for `len` values (holding stale values), or a new
    /// one.
    fn take(&mut self, len: usize) -> Vec<R> {
        let fit = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        match fit {
            Some(i) => self.free.swap_remove(i),
            None => Vec::with_capacity(len),
        }
    }

    /// A buffer of `len` values for a kernel that writes every one of them. It holds what
    /// its last user left (zeros where it had to grow), so nothing is written twice. Debug
    /// builds fill it with NaN instead, so that a kernel leaving a value unwritten fails the
    /// tests rather than reading another step's data.
    fn overwritten(&mut self, len: usize) -> Vec<R> {
        let mut b = self.take(len);
        if cfg!(debug_assertions) {
            b.clear();
            b.resize(len, R::of_f64(f64::NAN));
        } else if b.len() >= len {
            b.truncate(len);
        } else {
            b.resize(len, R::ZERO);
        }
        b
    }

    /// A buffer holding a copy of `values`.
    fn copied(&mut self, values: &[R]) -> Vec<R> {
        let mut b = self.take(values.len());
        b.clear();
        b.extend_from_slice(values);
        b
    }

    /// Keeps `b` for a later step.
    fn recycle(&mut self, b: Vec<R>) {
        if b.capacity() > 0 && self.free.len() < Self::KEEP {
            self.free.push(b);
        }
    }
}

/// A tensor's PyTorch shape and how our flat layout maps to it.
enum Layout {
    /// `[Cout, Cin, Kh, Kw]` ↔ `[Cin·Kh·Kw][Cout]`.
    Conv {
        cout: usize,
        cin: usize,
        kh: usize,
        kw: usize,
    },
    /// `[Out, In]` with In in C·H·W order ↔ `[In][Out]` with In in H·W·C order, `from` the
    /// flattened shape `(h, w, c)`.
    Linear {
        out: usize,
        from: (usize, usize, usize),
    },
    /// The same 1-D layout.
    Vector(usize),
}

impl Layout {
    fn shape(&self) -> Vec<usize> {
        match *self {
            Layout::Conv { cout, cin, kh, kw } => vec![cout, cin, kh, kw],
            Layout::Linear { out, from } => vec![out, from.0 * from.1 * from.2],
            Layout::Vector(n) => vec![n],
        }
    }

    /// PyTorch flat index of our flat index `i`.
    fn torch_index(&self, i: usize) -> usize {
        match *self {
            Layout::Conv { cout, cin, kh, kw } => {
                let (row, co) = (i / cout, i % cout);
                let (ci, tap) = (row / (kh * kw), row % (kh * kw));
                (co * cin + ci) * kh * kw + tap
            }
            Layout::Linear {
                out,
                from: (h, w, c),
            } => {
                let (input, o) = (i / out, i % out);
                let (p, ch) = (input / c, input % c);
                o * (h * w * c) + ch * (h * w) + p
            }
            Layout::Vector(_) => i,
        }
    }
}

impl<R: Real> Net<R> {
    /// The network of `graph` with `params` (PyTorch layouts and `state_dict` names; extra
    /// tensors such as `num_batches_tracked` are ignored).
    pub fn from_parameters(graph: TrainGraph, params: &Parameters) -> Result<Self, ParamError> {
        let mut net = Self {
            slots: Vec::new(),
            params: Vec::new(),
            stats: Vec::new(),
            firing: Firing::Spike,
            binary_kernels: true,
            buffers: Buffers::default(),
            quantized: Vec::new(),
            graph,
        };
        let get = |name: String, layout: &Layout| -> Result<Vec<R>, ParamError> {
            let expected = layout.shape();
            let t = params.get(&name).ok_or_else(|| ParamError::Missing {
                name: name.clone(),
                expected: expected.clone(),
            })?;
            if t.shape != expected || t.data.len() != expected.iter().product::<usize>() {
                return Err(ParamError::Shape {
                    name,
                    expected,
                    found: t.shape.clone(),
                });
            }
            let var = name.ends_with(".running_var");
            if let Some(index) = t
                .data
                .iter()
                .position(|v| !v.is_finite() || (var && *v < 0.0))
            {
                return Err(ParamError::Value { name, index });
            }
            Ok((0..t.data.len())
                .map(|i| R::of_f32(t.data[layout.torch_index(i)]))
                .collect())
        };
        let nodes = net.graph.nodes().to_vec();
        for (i, node) in nodes.iter().enumerate() {
            let slot = match &node.op {
                TrainOp::Conv2d {
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    bias,
                } => {
                    let s = net.graph.shape(node.inputs[0]);
                    let geometry = ConvGeometry::new(
                        (s.height, s.width, s.channels),
                        *kernel,
                        *stride,
                        *padding,
                    )
                    .ok_or_else(|| ParamError::Missing {
                        name: node.name.clone(),
                        expected: vec![],
                    })?;
                    let layout = Layout::Conv {
                        cout: *out_channels,
                        cin: s.channels,
                        kh: kernel.0,
                        kw: kernel.1,
                    };
                    let t = &node.tensors;
                    let weight = net.push(t[0].clone(), &layout, get(t[0].clone(), &layout)?, true);
                    let bias = if *bias {
                        let l = Layout::Vector(*out_channels);
                        let v = get(t[1].clone(), &l)?;
                        Some(net.push(t[1].clone(), &l, v, false))
                    } else {
                        None
                    };
                    Slots::Conv {
                        geometry,
                        weight,
                        bias,
                    }
                }
                TrainOp::BatchNorm { .. } => {
                    let c = net.graph.shape(i).channels;
                    let l = Layout::Vector(c);
                    let t = &node.tensors;
                    let gamma = get(t[0].clone(), &l)?;
                    let beta = get(t[1].clone(), &l)?;
                    let mean = get(t[2].clone(), &l)?;
                    let var = get(t[3].clone(), &l)?;
                    let gamma = net.push(t[0].clone(), &l, gamma, false);
                    let beta = net.push(t[1].clone(), &l, beta, false);
                    net.stats.push(RunningStats {
                        name: node.name.clone(),
                        mean_tensor: t[2].clone(),
                        var_tensor: t[3].clone(),
                        mean,
                        var,
                    });
                    Slots::Bn {
                        gamma,
                        beta,
                        stats: net.stats.len() - 1,
                    }
                }
                TrainOp::Linear { out_features, bias } => {
                    let from = net.graph.flatten_source(i);
                    let inputs = from.len();
                    let layout = Layout::Linear {
                        out: *out_features,
                        from: (from.height, from.width, from.channels),
                    };
                    let t = &node.tensors;
                    let w = get(t[0].clone(), &layout)?;
                    let weight = net.push(t[0].clone(), &layout, w, true);
                    let bias = if *bias {
                        let l = Layout::Vector(*out_features);
                        let b = get(t[1].clone(), &l)?;
                        Some(net.push(t[1].clone(), &l, b, false))
                    } else {
                        None
                    };
                    Slots::Linear {
                        inputs,
                        weight,
                        bias,
                    }
                }
                _ => Slots::None,
            };
            net.slots.push(slot);
        }
        net.quantized = vec![None; net.params.len()];
        Ok(net)
    }

    /// Quantization-aware training: from now on the forward pass uses the weight tensors
    /// named in `weights` (`state_dict` names of conv or linear weights) fake-quantized to
    /// int8, per output channel with the max-abs scale of post-training quantization
    /// ([`fake_quantize`]), recomputed from the float values at every forward pass. The
    /// backward pass is the straight-through estimator: the input gradients go through the
    /// fake-quantized weights and the weight gradient lands on the float values, which the
    /// optimiser updates and [`Net::to_parameters`] exports.
    pub fn fake_quantize(&mut self, weights: &[String]) -> Result<(), ParamError> {
        for name in weights {
            let p = self
                .params
                .iter()
                .position(|p| p.decays && &p.name == name)
                .ok_or_else(|| ParamError::Missing {
                    name: name.clone(),
                    expected: vec![],
                })?;
            self.quantized[p] = Some(Vec::new());
        }
        self.refresh_quantized();
        Ok(())
    }

    /// The names of the fake-quantized weight tensors, in graph order.
    pub fn fake_quantized(&self) -> Vec<&str> {
        self.params
            .iter()
            .zip(&self.quantized)
            .filter(|(_, q)| q.is_some())
            .map(|(p, _)| p.name.as_str())
            .collect()
    }

    /// Rebuilds every fake-quantized weight from its float values. The output channel is
    /// the last (fastest) index of both trainer layouts; each channel goes through f32, as
    /// the exported tensor does, so the grid is the one `quantize` puts the export on.
    fn refresh_quantized(&mut self) {
        for (param, q) in self.params.iter().zip(&mut self.quantized) {
            let Some(q) = q else { continue };
            let out = param.shape.first().copied().unwrap_or(1).max(1);
            q.clear();
            q.resize(param.value.len(), R::ZERO);
            let mut channel = Vec::with_capacity(param.value.len() / out);
            for c in 0..out {
                channel.clear();
                channel.extend(param.value.iter().skip(c).step_by(out).map(|v| v.to_f32()));
                fake_quantize(Method::MaxAbs, &mut channel);
                for (dst, v) in q.iter_mut().skip(c).step_by(out).zip(&channel) {
                    *dst = R::of_f32(*v);
                }
            }
        }
    }

    /// The weights the passes use: the fake-quantized ones where set, else the float ones.
    fn weights(&self, p: usize) -> &[R] {
        self.quantized[p]
            .as_deref()
            .unwrap_or(&self.params[p].value)
    }

    fn push(&mut self, name: String, layout: &Layout, value: Vec<R>, decays: bool) -> usize {
        self.params.push(Param {
            name,
            shape: layout.shape(),
            grad: vec![R::ZERO; value.len()],
            value,
            decays,
        });
        self.params.len() - 1
    }

    /// The graph.
    pub fn graph(&self) -> &TrainGraph {
        &self.graph
    }

    /// Every tensor in PyTorch layout, by `state_dict` name: parameters, then running
    /// statistics (BN stays unfolded).
    pub fn to_parameters(&self) -> Parameters {
        self.parameters_of(false)
    }

    /// [`Net::to_parameters`] with the fake-quantized weights (as of the last forward pass)
    /// in place of the float ones: the values the int8 export stands for.
    pub fn fake_quantized_parameters(&self) -> Parameters {
        self.parameters_of(true)
    }

    fn parameters_of(&self, fake_quantized: bool) -> Parameters {
        let mut out = BTreeMap::new();
        for (i, node) in self.graph.nodes().iter().enumerate() {
            let layouts: Vec<(usize, Layout)> = match (&self.slots[i], &node.op) {
                (
                    Slots::Conv { weight, bias, .. },
                    TrainOp::Conv2d {
                        out_channels,
                        kernel,
                        ..
                    },
                ) => {
                    let cin = self.graph.shape(node.inputs[0]).channels;
                    let mut v = vec![(
                        *weight,
                        Layout::Conv {
                            cout: *out_channels,
                            cin,
                            kh: kernel.0,
                            kw: kernel.1,
                        },
                    )];
                    if let Some(b) = bias {
                        v.push((*b, Layout::Vector(*out_channels)));
                    }
                    v
                }
                (Slots::Bn { gamma, beta, stats }, _) => {
                    let c = self.graph.shape(i).channels;
                    let s = &self.stats[*stats];
                    for (name, values) in [(&s.mean_tensor, &s.mean), (&s.var_tensor, &s.var)] {
                        out.insert(
                            name.clone(),
                            Tensor {
                                shape: vec![c],
                                data: values.iter().map(|v| v.to_f32()).collect(),
                            },
                        );
                    }
                    vec![(*gamma, Layout::Vector(c)), (*beta, Layout::Vector(c))]
                }
                (Slots::Linear { weight, bias, .. }, TrainOp::Linear { out_features, .. }) => {
                    let from = self.graph.flatten_source(i);
                    let mut v = vec![(
                        *weight,
                        Layout::Linear {
                            out: *out_features,
                            from: (from.height, from.width, from.channels),
                        },
                    )];
                    if let Some(b) = bias {
                        v.push((*b, Layout::Vector(*out_features)));
                    }
                    v
                }
                _ => vec![],
            };
            for (p, layout) in layouts {
                let param = &self.params[p];
                let values = if fake_quantized {
                    self.weights(p)
                } else {
                    &param.value
                };
                let mut data = vec![0.0f32; values.len()];
                for (j, v) in values.iter().enumerate() {
                    data[layout.torch_index(j)] = v.to_f32();
                }
                out.insert(
                    param.name.clone(),
                    Tensor {
                        shape: layout.shape(),
                        data,
                    },
                );
            }
        }
        out
    }

    /// Sets every gradient to 0.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.grad.fill(R::ZERO);
        }
    }

    /// Runs `input` (`[T][B][H][W][C]`, the graph's input shape per frame) through the
    /// network. In [`Mode::Train`] batch norms use batch statistics and update their running
    /// statistics.
    pub fn forward(&mut self, input: &[R], timesteps: usize, batch: usize, mode: Mode) -> Tape<R> {
        let frames = timesteps * batch;
        let n = self.graph.nodes().len();
        assert_eq!(
            input.len(),
            frames * self.graph.input_shape().len(),
            "input is not T·B frames of the input shape"
        );
        let mut tape = Tape {
            timesteps,
            batch,
            mode,
            values: Vec::with_capacity(n),
            saved: Vec::with_capacity(n),
            index: vec![None; n],
            spikes: vec![0; n],
        };
        let sparse_ok = self.firing == Firing::Spike && self.binary_kernels;
        self.refresh_quantized();
        for i in 0..n {
            let node = &self.graph.nodes()[i];
            let shape = self.graph.shape(i);
            let mut saved = Saved::None;
            let value = match (&node.op, &self.slots[i]) {
                (TrainOp::Input { .. }, _) => self.buffers.copied(input),
                (
                    TrainOp::Conv2d { out_channels, .. },
                    Slots::Conv {
                        geometry,
                        weight,
                        bias,
                    },
                ) => {
                    let j = node.inputs[0];
                    // Event-count inputs are mostly zero too: their index keeps the values.
                    let input = matches!(self.graph.nodes()[j].op, TrainOp::Input { .. });
                    if sparse_ok && (input || self.graph.is_binary(j)) && tape.index[j].is_none() {
                        let s = self.graph.shape(j);
                        let build = if input {
                            SpikeIndex::build_valued
                        } else {
                            SpikeIndex::build
                        };
                        tape.index[j] = Some(build(
                            &tape.values[j],
                            frames,
                            s.height * s.width,
                            s.channels,
                        ));
                    }
                    let mut out = self.buffers.overwritten(frames * shape.len());
                    layers::conv_forward(
                        geometry,
                        *out_channels,
                        frames,
                        &tape.values[j],
                        self.quantized[*weight]
                            .as_deref()
                            .unwrap_or(&self.params[*weight].value),
                        bias.map(|b| &self.params[b].value[..]),
                        tape.index[j].as_ref(),
                        &mut out,
                    );
                    out
                }
                (TrainOp::BatchNorm { scale, eps }, Slots::Bn { gamma, beta, stats }) => {
                    let x = &tape.values[node.inputs[0]];
                    let c = shape.channels;
                    let mut y = self.buffers.overwritten(x.len());
                    let (g, b) = (&self.params[*gamma].value, &self.params[*beta].value);
                    let eps = f64::from(*eps);
                    match mode {
                        Mode::Train => {
                            let s =
                                layers::bn_forward_train(x, c, g, b, scale.factor(), eps, &mut y);
                            let m = (x.len() / c) as f64;
                            let st = &mut self.stats[*stats];
                            let unbias = if m > 1.0 { m / (m - 1.0) } else { 1.0 };
                            for ch in 0..c {
                                st.mean[ch] = R::of_f64(
                                    (1.0 - BN_MOMENTUM) * st.mean[ch].to_f64()
                                        + BN_MOMENTUM * s.mean[ch],
                                );
                                st.var[ch] = R::of_f64(
                                    (1.0 - BN_MOMENTUM) * st.var[ch].to_f64()
                                        + BN_MOMENTUM * s.var[ch] * unbias,
                                );
                            }
                            saved = Saved::Bn(s);
                        }
                        Mode::Eval => {
                            let st = &self.stats[*stats];
                            layers::bn_forward_eval(
                                x,
                                c,
                                g,
                                b,
                                &st.mean,
                                &st.var,
                                scale.factor(),
                                eps,
                                &mut y,
                            );
                        }
                    }
                    y
                }
                (TrainOp::AvgPool { k, stride }, _) => {
                    let s = self.graph.shape(node.inputs[0]);
                    let mut y = self.buffers.overwritten(frames * shape.len());
                    layers::avg_pool_forward(
                        (s.height, s.width, s.channels),
                        *k,
                        *stride,
                        (shape.height, shape.width),
                        frames,
                        &tape.values[node.inputs[0]],
                        &mut y,
                    );
                    y
                }
                (TrainOp::GlobalAvgPool, _) => {
                    let s = self.graph.shape(node.inputs[0]);
                    let mut y = self.buffers.overwritten(frames * shape.len());
                    layers::global_pool_forward(
                        s.height * s.width,
                        s.channels,
                        frames,
                        &tape.values[node.inputs[0]],
                        &mut y,
                    );
                    y
                }
                (TrainOp::Neuron(cfg), _) => {
                    let x = &tape.values[node.inputs[0]];
                    let mut h = self.buffers.overwritten(x.len());
                    let mut o = self.buffers.overwritten(x.len());
                    tape.spikes[i] =
                        layers::neuron_forward(cfg, self.firing, timesteps, x, &mut h, &mut o);
                    saved = Saved::Neuron { potential: h };
                    o
                }
                (TrainOp::Add, _) => {
                    let (a, b) = (&tape.values[node.inputs[0]], &tape.values[node.inputs[1]]);
                    let mut y = self.buffers.copied(a);
                    for (y, v) in y.iter_mut().zip(b) {
                        *y += *v;
                    }
                    y
                }
                (TrainOp::Flatten | TrainOp::Output, _) => {
                    self.buffers.copied(&tape.values[node.inputs[0]])
                }
                (
                    TrainOp::Linear { out_features, .. },
                    Slots::Linear {
                        inputs,
                        weight,
                        bias,
                    },
                ) => {
                    let j = node.inputs[0];
                    let mut y = self.buffers.overwritten(frames * out_features);
                    layers::linear_forward(
                        *inputs,
                        *out_features,
                        frames,
                        &tape.values[j],
                        self.quantized[*weight]
                            .as_deref()
                            .unwrap_or(&self.params[*weight].value),
                        bias.map(|b| &self.params[b].value[..]),
                        sparse_ok && self.graph.is_binary(j),
                        &mut y,
                    );
                    y
                }
                (op, _) => unreachable!("slots are built per op: {op:?}"),
            };
            tape.values.push(value);
            tape.saved.push(saved);
        }
        tape
    }

    /// Backpropagates `grad_outputs` (dL/d per-timestep output, `[T][B][C]`) through the
    /// tape, adding into each parameter's gradient. Consumes the tape, freeing each node's
    /// record as soon as nothing below needs it.
    pub fn backward(&mut self, mut tape: Tape<R>, grad_outputs: Vec<R>) {
        assert_eq!(
            tape.mode,
            Mode::Train,
            "backward needs a training-mode tape"
        );
        let n = self.graph.nodes().len();
        let frames = tape.timesteps * tape.batch;
        let mut grads: Vec<Option<Vec<R>>> = vec![None; n];
        grads[n - 1] = Some(grad_outputs);
        for i in (1..n).rev() {
            let Some(mut g) = grads[i].take() else {
                self.recycle_node(&mut tape, i);
                continue;
            };
            let node = self.graph.nodes()[i].clone();
            let shape = self.graph.shape(i);
            let j = node.inputs[0];
            let wants = |k: usize| k != 0;
            match (&node.op, self.slots[i].clone()) {
                (TrainOp::Output | TrainOp::Flatten, _) => {
                    accumulate(&mut self.buffers, &mut grads, j, std::mem::take(&mut g));
                }
                (TrainOp::Add, _) => {
                    let k = node.inputs[1];
                    if wants(k) {
                        let copy = self.buffers.copied(&g);
                        accumulate(&mut self.buffers, &mut grads, k, copy);
                    }
                    if wants(j) {
                        accumulate(&mut self.buffers, &mut grads, j, std::mem::take(&mut g));
                    }
                }
                (
                    TrainOp::Linear { out_features, .. },
                    Slots::Linear {
                        inputs,
                        weight,
                        bias,
                    },
                ) => {
                    let mut gx = wants(j).then(|| self.buffers.overwritten(frames * inputs));
                    let w = self.params_value(weight);
                    let mut gb = bias.map(|b| std::mem::take(&mut self.params[b].grad));
                    layers::linear_backward(
                        inputs,
                        *out_features,
                        frames,
                        &tape.values[j],
                        &w,
                        &g,
                        &mut self.params[weight].grad,
                        gb.as_deref_mut(),
                        gx.as_deref_mut(),
                    );
                    if let (Some(b), Some(gb)) = (bias, gb) {
                        self.params[b].grad = gb;
                    }
                    if let Some(gx) = gx {
                        accumulate(&mut self.buffers, &mut grads, j, gx);
                    }
                }
                (
                    TrainOp::Conv2d { out_channels, .. },
                    Slots::Conv {
                        geometry,
                        weight,
                        bias,
                    },
                ) => {
                    let mut gx = wants(j)
                        .then(|| self.buffers.overwritten(frames * self.graph.shape(j).len()));
                    let w = self.params_value(weight);
                    let mut gb = bias.map(|b| std::mem::take(&mut self.params[b].grad));
                    layers::conv_backward(
                        &geometry,
                        *out_channels,
                        frames,
                        &tape.values[j],
                        &w,
                        tape.index[j].as_ref(),
                        &g,
                        &mut self.params[weight].grad,
                        gb.as_deref_mut(),
                        gx.as_deref_mut(),
                    );
                    if let (Some(b), Some(gb)) = (bias, gb) {
                        self.params[b].grad = gb;
                    }
                    if let Some(gx) = gx {
                        accumulate(&mut self.buffers, &mut grads, j, gx);
                    }
                }
                (TrainOp::BatchNorm { scale, .. }, Slots::Bn { gamma, beta, .. }) => {
                    let Saved::Bn(saved) = &tape.saved[i] else {
                        unreachable!("a training tape saves every batch norm")
                    };
                    let x = &tape.values[j];
                    let mut gx = self.buffers.overwritten(x.len());
                    let (dgamma, dbeta) = layers::bn_backward(
                        x,
                        shape.channels,
                        &self.params[gamma].value,
                        scale.factor(),
                        saved,
                        &g,
                        &mut gx,
                    );
                    for (p, d) in self.params[gamma].grad.iter_mut().zip(dgamma) {
                        *p += R::of_f64(d);
                    }
                    for (p, d) in self.params[beta].grad.iter_mut().zip(dbeta) {
                        *p += R::of_f64(d);
                    }
                    if wants(j) {
                        accumulate(&mut self.buffers, &mut grads, j, gx);
                    }
                }
                (TrainOp::AvgPool { k, stride }, _) => {
                    if wants(j) {
                        let s = self.graph.shape(j);
                        let mut gx = self.buffers.overwritten(frames * s.len());
                        layers::avg_pool_backward(
                            (s.height, s.width, s.channels),
                            *k,
                            *stride,
                            (shape.height, shape.width),
                            frames,
                            &g,
                            &mut gx,
                        );
                        accumulate(&mut self.buffers, &mut grads, j, gx);
                    }
                }
                (TrainOp::GlobalAvgPool, _) => {
                    if wants(j) {
                        let s = self.graph.shape(j);
                        let mut gx = self.buffers.overwritten(frames * s.len());
                        layers::global_pool_backward(
                            s.height * s.width,
                            s.channels,
                            frames,
                            &g,
                            &mut gx,
                        );
                        accumulate(&mut self.buffers, &mut grads, j, gx);
                    }
                }
                (TrainOp::Neuron(cfg), _) => {
                    if wants(j) {
                        let Saved::Neuron { potential } = &tape.saved[i] else {
                            unreachable!("every neuron saves its potentials")
                        };
                        let mut gx = self.buffers.overwritten(g.len());
                        layers::neuron_backward(
                            cfg,
                            tape.timesteps,
                            potential,
                            &tape.values[i],
                            &g,
                            &mut gx,
                        );
                        accumulate(&mut self.buffers, &mut grads, j, gx);
                    }
                }
                (op, _) => unreachable!("slots are built per op: {op:?}"),
            }
            self.buffers.recycle(g);
            self.recycle_node(&mut tape, i);
        }
        self.recycle(tape);
    }

    /// Keeps a tape's buffers for the next step (a tape that [`Net::backward`] does not
    /// consume, such as an evaluation's).
    pub fn recycle(&mut self, mut tape: Tape<R>) {
        for i in 0..tape.values.len() {
            self.recycle_node(&mut tape, i);
        }
    }

    /// Keeps node `i`'s buffers and frees its record.
    fn recycle_node(&mut self, tape: &mut Tape<R>, i: usize) {
        self.buffers.recycle(std::mem::take(&mut tape.values[i]));
        if let Saved::Neuron { potential } = std::mem::replace(&mut tape.saved[i], Saved::None) {
            self.buffers.recycle(potential);
        }
        tape.index[i] = None;
    }

    /// A copy of a parameter's values (the backward pass needs them while their gradient is
    /// borrowed mutably; weights are small next to activations).
    /// Fake-quantized weights where set (straight-through: the gradient of the quantized
    /// weight is the float weight's).
    fn params_value(&self, p: usize) -> Vec<R> {
        self.weights(p).to_vec()
    }
}

/// Adds `g` to node `j`'s incoming gradient.
fn accumulate<R: Real>(
    buffers: &mut Buffers<R>,
    grads: &mut [Option<Vec<R>>],
    j: usize,
    g: Vec<R>,
) {
    match &mut grads[j] {
        Some(existing) => {
            for (e, v) in existing.iter_mut().zip(&g) {
                *e += *v;
            }
            buffers.recycle(g);
        }
        slot @ None => *slot = Some(g),
    }
}
