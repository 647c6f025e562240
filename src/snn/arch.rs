//! Built-in architectures as declarative blueprints (layers with unfolded, PyTorch-named
//! parameters), random initialisation, and building the inference [`Network`] from a blueprint
//! plus parameters (BN folding, layout changes).
//!
//! # Architectures
//!
//! Every conv is `bias=False` and followed by a (td)BN; parameter names are those a PyTorch
//! module of the same structure would give in its `state_dict`.
//!
//! - `tiny`: three stages `features.{i}` of conv3×3 (C→16→32→64) → BN → avgpool 2 → neuron,
//!   then flatten and `classifier` (Linear to classes). The pool sits *before* each neuron,
//!   so every spike-fed layer (stages 2, 3 and the classifier) gets binary input.
//! - `vgg-snn`: TET's VGGSNN. `features.{0..8}` conv3×3 → BN → neuron with widths 64, 128,
//!   pool, 256, 256, pool, 512, 512, pool, 512, 512, pool; flatten; `classifier`. As in TET, each
//!   avgpool follows a neuron, so the layer after each pool (features.2, .4, .6 and the
//!   classifier) receives quarter-valued inputs {0, ¼, ½, ¾, 1}, not binary spikes. We keep
//!   TET's placement so weights trained that way load unchanged; an event-driven executor can
//!   still treat each input spike as adding W/4.
//! - `resnet19`: (TET / tdBN) `conv1` C→128 → `bn1` → neuron; BasicBlocks [3, 3, 2] at
//!   128/256/512 (first block of stages 2 and 3 with stride 2 and a `downsample` conv1×1 + BN);
//!   global avgpool; `fc1` 512→256 → neuron → `fc2` → output. BasicBlock:
//!   conv1-bn1-neuron-conv2-bn2, plus the shortcut, then a neuron. Every conv input is binary;
//!   `fc1` gets the global average of spikes (non-binary; it is one small layer).
//! - `resnet20` (Sengupta / Rathi style): stem `stem.{0,1,2}` of three conv3×3 at 64 channels;
//!   the third is followed by avgpool 2 *before* its neuron (so the blocks get binary spikes);
//!   BasicBlocks [2, 2, 2, 2] at 64/128/256/512 (strides 1, 2, 2, 2); global avgpool; `fc`.
//!   Only `fc` sees non-binary input (the pooled spike rates).
//!
//! In BasicBlocks the two BNs that feed the residual sum (`bn2` and the downsample BN) use
//! tdBN's α = 1/√2; all others α = 1.
//!
//! # Folding
//!
//! tdBN computes `y = λ·(α·Vth·(x − μ)/√(σ² + ε)) + β` per channel (plain BN: without α·Vth).
//! With `s = λ·α·Vth/√(σ² + ε)` the conv folds to weights `W·s` and bias `β − μ·s`, computed
//! in f64 and rounded to f32 once.

use std::collections::BTreeMap;
use std::f32::consts::FRAC_1_SQRT_2;
use std::fmt;
use std::str::FromStr;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::snn::network::{GraphError, Network, Node, Op, Shape, window_out};
use crate::snn::neuron::{NeuronKind, VTH};

/// A built-in architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Architecture {
    /// Three conv stages, pool before each neuron; for tests and small sensors.
    #[serde(rename = "tiny")]
    Tiny,
    /// TET's VGGSNN.
    #[serde(rename = "vgg-snn")]
    VggSnn,
    /// TET / tdBN ResNet-19.
    #[serde(rename = "resnet19")]
    Resnet19,
    /// Sengupta / Rathi style ResNet-20.
    #[serde(rename = "resnet20")]
    Resnet20,
}

impl Architecture {
    /// Every built-in architecture.
    pub const ALL: [Architecture; 4] = [
        Architecture::Tiny,
        Architecture::VggSnn,
        Architecture::Resnet19,
        Architecture::Resnet20,
    ];

    /// The name used on the command line and in model files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tiny => "tiny",
            Self::VggSnn => "vgg-snn",
            Self::Resnet19 => "resnet19",
            Self::Resnet20 => "resnet20",
        }
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An architecture name that is not built in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown architecture {0:?} (known: tiny, vgg-snn, resnet19, resnet20)")]
pub struct UnknownArchitecture(pub String);

impl FromStr for Architecture {
    type Err = UnknownArchitecture;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| UnknownArchitecture(s.to_owned()))
    }
}

/// An architecture instantiated for an input shape and a number of classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchSpec {
    /// Which architecture.
    pub arch: Architecture,
    /// Input channels (2 for polarity).
    pub channels: usize,
    /// Input rows.
    pub height: usize,
    /// Input columns.
    pub width: usize,
    /// Number of classes.
    pub classes: usize,
}

/// Batch-norm flavour and epsilon, shared by every BN of a model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchNormConfig {
    /// tdBN (`λ·α·Vth·x̂ + β`) or plain BN (`λ·x̂ + β`).
    pub kind: BatchNormKind,
    /// ε added to the running variance.
    pub eps: f32,
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        Self {
            kind: BatchNormKind::Td,
            eps: 1e-5,
        }
    }
}

/// Batch-norm flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchNormKind {
    /// Threshold-dependent BN (Zheng et al. 2021): normalised values scaled by α·Vth.
    Td,
    /// Ordinary BN.
    Plain,
}

/// A blueprint layer's operation, with parameter shapes but no values.
#[derive(Debug, Clone, PartialEq)]
pub enum LayerOp {
    /// The input frame.
    Input,
    /// Convolution without bias, then BN named `bn`, with tdBN factor `alpha`.
    Conv {
        /// Input channels.
        in_ch: usize,
        /// Output channels.
        out_ch: usize,
        /// Square kernel side.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Zero padding.
        padding: usize,
        /// Parameter prefix of the BN (`layer1.0.bn1`).
        bn: String,
        /// tdBN α of this BN.
        alpha: f32,
    },
    /// Fully connected with bias; `from` is the spatial shape flattened into its input (for
    /// the PyTorch C·H·W → our H·W·C reordering), or a 1×1×C vector.
    Linear {
        /// Input length.
        in_features: usize,
        /// Output length.
        out_features: usize,
        /// Shape whose flattening is the input.
        from: Shape,
    },
    /// Average pool.
    AvgPool {
        /// Window side.
        k: usize,
        /// Step.
        stride: usize,
    },
    /// Global average pool.
    GlobalAvgPool,
    /// Spiking neuron (the kind comes from the model).
    Neuron,
    /// Residual sum.
    Add,
    /// Flatten to a vector.
    Flatten,
    /// Output accumulator.
    Output,
}

/// One blueprint layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// Parameter prefix (weighted layers) or a readable name.
    pub name: String,
    /// The operation.
    pub op: LayerOp,
    /// Input layer indices.
    pub inputs: Vec<usize>,
    /// Output shape per timestep (NHWC).
    pub shape: Shape,
}

/// One expected tensor: its `state_dict` name and PyTorch shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    /// Name, e.g. `layer1.0.conv1.weight`.
    pub name: String,
    /// Shape in PyTorch layout (conv `[Cout, Cin, Kh, Kw]`, linear `[Out, In]`).
    pub shape: Vec<usize>,
}

/// A parameter tensor in PyTorch layout, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

/// Parameters by `state_dict` name.
pub type Parameters = BTreeMap<String, Tensor>;

/// Why a blueprint or a network could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BuildError {
    /// The input is too small (or empty) for the architecture's strides and pools.
    #[error("{arch}: input {channels}x{height}x{width} is too small or empty ({detail})")]
    InputTooSmall {
        /// Architecture.
        arch: Architecture,
        /// Input channels.
        channels: usize,
        /// Input rows.
        height: usize,
        /// Input columns.
        width: usize,
        /// The layer that did not fit.
        detail: String,
    },
    /// Zero classes.
    #[error("the number of classes must be at least 1")]
    NoClasses,
    /// A tensor the architecture needs is absent.
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
    /// A tensor the architecture does not use (a sign of the wrong architecture).
    #[error("unexpected tensor {name} (not part of this architecture)")]
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
    /// The resulting graph is inconsistent (a bug in a hand-made blueprint).
    #[error(transparent)]
    Graph(#[from] GraphError),
}

/// An architecture laid out as layers with parameter shapes.
#[derive(Debug, Clone, PartialEq)]
pub struct Blueprint {
    /// What it was made from.
    pub spec: ArchSpec,
    /// Layers in topological order; layer 0 is the input, the last the output.
    pub layers: Vec<Layer>,
}

/// Assembles layers, computing shapes as it goes.
struct Builder {
    spec: ArchSpec,
    layers: Vec<Layer>,
}

impl Builder {
    fn new(spec: ArchSpec) -> Result<Self, BuildError> {
        if spec.classes == 0 {
            return Err(BuildError::NoClasses);
        }
        let input = Shape::new(spec.height, spec.width, spec.channels);
        let mut b = Self {
            spec,
            layers: Vec::new(),
        };
        if input.is_empty() {
            return Err(b.too_small("input"));
        }
        b.layers.push(Layer {
            name: "input".into(),
            op: LayerOp::Input,
            inputs: vec![],
            shape: input,
        });
        Ok(b)
    }

    fn too_small(&self, detail: &str) -> BuildError {
        BuildError::InputTooSmall {
            arch: self.spec.arch,
            channels: self.spec.channels,
            height: self.spec.height,
            width: self.spec.width,
            detail: detail.to_owned(),
        }
    }

    fn push(&mut self, name: String, op: LayerOp, inputs: Vec<usize>, shape: Shape) -> usize {
        self.layers.push(Layer {
            name,
            op,
            inputs,
            shape,
        });
        self.layers.len() - 1
    }

    fn shape(&self, layer: usize) -> Shape {
        self.layers[layer].shape
    }

    /// conv(k×k, stride, padding k/2) + BN.
    #[allow(clippy::too_many_arguments)]
    fn conv_bn(
        &mut self,
        conv: &str,
        bn: &str,
        input: usize,
        out_ch: usize,
        kernel: usize,
        stride: usize,
        alpha: f32,
    ) -> Result<usize, BuildError> {
        let s = self.shape(input);
        let padding = kernel / 2;
        let (Some(h), Some(w)) = (
            window_out(s.height, kernel, stride, padding),
            window_out(s.width, kernel, stride, padding),
        ) else {
            return Err(self.too_small(conv));
        };
        let op = LayerOp::Conv {
            in_ch: s.channels,
            out_ch,
            kernel,
            stride,
            padding,
            bn: bn.to_owned(),
            alpha,
        };
        Ok(self.push(conv.to_owned(), op, vec![input], Shape::new(h, w, out_ch)))
    }

    fn neuron(&mut self, name: &str, input: usize) -> usize {
        let s = self.shape(input);
        self.push(name.to_owned(), LayerOp::Neuron, vec![input], s)
    }

    fn avgpool(&mut self, name: &str, input: usize) -> Result<usize, BuildError> {
        let s = self.shape(input);
        let (Some(h), Some(w)) = (window_out(s.height, 2, 2, 0), window_out(s.width, 2, 2, 0))
        else {
            return Err(self.too_small(name));
        };
        Ok(self.push(
            name.to_owned(),
            LayerOp::AvgPool { k: 2, stride: 2 },
            vec![input],
            Shape::new(h, w, s.channels),
        ))
    }

    fn flatten(&mut self, input: usize) -> usize {
        let s = self.shape(input);
        self.push(
            "flatten".into(),
            LayerOp::Flatten,
            vec![input],
            Shape::vector(s.len()),
        )
    }

    fn global_pool(&mut self, input: usize) -> usize {
        let s = self.shape(input);
        self.push(
            "avgpool".into(),
            LayerOp::GlobalAvgPool,
            vec![input],
            Shape::vector(s.channels),
        )
    }

    /// Linear on `input`, which is a Flatten (of a spatial layer) or a vector.
    fn linear(&mut self, name: &str, input: usize, out: usize) -> usize {
        let s = self.shape(input);
        let from = match self.layers[input].op {
            LayerOp::Flatten => self.shape(self.layers[input].inputs[0]),
            _ => s,
        };
        let op = LayerOp::Linear {
            in_features: s.len(),
            out_features: out,
            from,
        };
        self.push(name.to_owned(), op, vec![input], Shape::vector(out))
    }

    /// conv1-bn1-sn1-conv2-bn2 (+ shortcut) → sn2; returns the output neuron layer.
    fn basic_block(
        &mut self,
        prefix: &str,
        input: usize,
        planes: usize,
        stride: usize,
    ) -> Result<usize, BuildError> {
        let in_ch = self.shape(input).channels;
        let c1 = self.conv_bn(
            &format!("{prefix}.conv1"),
            &format!("{prefix}.bn1"),
            input,
            planes,
            3,
            stride,
            1.0,
        )?;
        let s1 = self.neuron(&format!("{prefix}.sn1"), c1);
        let c2 = self.conv_bn(
            &format!("{prefix}.conv2"),
            &format!("{prefix}.bn2"),
            s1,
            planes,
            3,
            1,
            FRAC_1_SQRT_2,
        )?;
        let shortcut = if stride != 1 || in_ch != planes {
            self.conv_bn(
                &format!("{prefix}.downsample.0"),
                &format!("{prefix}.downsample.1"),
                input,
                planes,
                1,
                stride,
                FRAC_1_SQRT_2,
            )?
        } else {
            input
        };
        if self.shape(shortcut) != self.shape(c2) {
            return Err(self.too_small(prefix));
        }
        let s = self.shape(c2);
        let add = self.push(format!("{prefix}.add"), LayerOp::Add, vec![c2, shortcut], s);
        Ok(self.neuron(&format!("{prefix}.sn2"), add))
    }

    fn stage(
        &mut self,
        name: &str,
        mut x: usize,
        planes: usize,
        blocks: usize,
        stride: usize,
    ) -> Result<usize, BuildError> {
        for j in 0..blocks {
            let s = if j == 0 { stride } else { 1 };
            x = self.basic_block(&format!("{name}.{j}"), x, planes, s)?;
        }
        Ok(x)
    }

    fn output(mut self, input: usize) -> Blueprint {
        let s = self.shape(input);
        self.push("output".into(), LayerOp::Output, vec![input], s);
        Blueprint {
            spec: self.spec,
            layers: self.layers,
        }
    }
}

impl Blueprint {
    /// Lays out `spec`'s architecture.
    pub fn new(spec: ArchSpec) -> Result<Self, BuildError> {
        let mut b = Builder::new(spec)?;
        let classes = spec.classes;
        Ok(match spec.arch {
            Architecture::Tiny => {
                let mut x = 0;
                for (i, ch) in [16, 32, 64].into_iter().enumerate() {
                    let c = b.conv_bn(
                        &format!("features.{i}.conv"),
                        &format!("features.{i}.bn"),
                        x,
                        ch,
                        3,
                        1,
                        1.0,
                    )?;
                    let p = b.avgpool(&format!("features.{i}.pool"), c)?;
                    x = b.neuron(&format!("features.{i}.sn"), p);
                }
                let f = b.flatten(x);
                let fc = b.linear("classifier", f, classes);
                b.output(fc)
            }
            Architecture::VggSnn => {
                let mut x = 0;
                let mut i = 0;
                for stage in [[64, 128], [256, 256], [512, 512], [512, 512]] {
                    for ch in stage {
                        let c = b.conv_bn(
                            &format!("features.{i}.conv"),
                            &format!("features.{i}.bn"),
                            x,
                            ch,
                            3,
                            1,
                            1.0,
                        )?;
                        x = b.neuron(&format!("features.{i}.sn"), c);
                        i += 1;
                    }
                    x = b.avgpool(&format!("pool{}", i / 2), x)?;
                }
                let f = b.flatten(x);
                let fc = b.linear("classifier", f, classes);
                b.output(fc)
            }
            Architecture::Resnet19 => {
                let c = b.conv_bn("conv1", "bn1", 0, 128, 3, 1, 1.0)?;
                let mut x = b.neuron("sn1", c);
                x = b.stage("layer1", x, 128, 3, 1)?;
                x = b.stage("layer2", x, 256, 3, 2)?;
                x = b.stage("layer3", x, 512, 2, 2)?;
                let g = b.global_pool(x);
                let fc1 = b.linear("fc1", g, 256);
                let s = b.neuron("sn_fc1", fc1);
                let fc2 = b.linear("fc2", s, classes);
                b.output(fc2)
            }
            Architecture::Resnet20 => {
                let mut x = 0;
                for i in 0..3 {
                    let c = b.conv_bn(
                        &format!("stem.{i}.conv"),
                        &format!("stem.{i}.bn"),
                        x,
                        64,
                        3,
                        1,
                        1.0,
                    )?;
                    let pre = if i == 2 {
                        b.avgpool("stem.pool", c)?
                    } else {
                        c
                    };
                    x = b.neuron(&format!("stem.{i}.sn"), pre);
                }
                x = b.stage("layer1", x, 64, 2, 1)?;
                x = b.stage("layer2", x, 128, 2, 2)?;
                x = b.stage("layer3", x, 256, 2, 2)?;
                x = b.stage("layer4", x, 512, 2, 2)?;
                let g = b.global_pool(x);
                let fc = b.linear("fc", g, classes);
                b.output(fc)
            }
        })
    }

    /// Every tensor the architecture expects, in layer order.
    pub fn parameter_specs(&self) -> Vec<ParamSpec> {
        let mut specs = Vec::new();
        let mut add = |name: String, shape: Vec<usize>| specs.push(ParamSpec { name, shape });
        for layer in &self.layers {
            match &layer.op {
                LayerOp::Conv {
                    in_ch,
                    out_ch,
                    kernel,
                    bn,
                    ..
                } => {
                    add(
                        format!("{}.weight", layer.name),
                        vec![*out_ch, *in_ch, *kernel, *kernel],
                    );
                    for p in ["weight", "bias", "running_mean", "running_var"] {
                        add(format!("{bn}.{p}"), vec![*out_ch]);
                    }
                }
                LayerOp::Linear {
                    in_features,
                    out_features,
                    ..
                } => {
                    add(
                        format!("{}.weight", layer.name),
                        vec![*out_features, *in_features],
                    );
                    add(format!("{}.bias", layer.name), vec![*out_features]);
                }
                _ => {}
            }
        }
        specs
    }

    /// Names of the BN layers, in order, with their channel counts.
    pub fn batch_norms(&self) -> Vec<(String, usize)> {
        self.layers
            .iter()
            .filter_map(|l| match &l.op {
                LayerOp::Conv { bn, out_ch, .. } => Some((bn.clone(), *out_ch)),
                _ => None,
            })
            .collect()
    }

    /// Randomly initialised parameters, deterministic in `seed`: conv weights Kaiming normal
    /// (fan-out, gain √2), BN λ = 1, β = 0, μ = 0, σ² = 1, linear weights and biases uniform in
    /// ±1/√in (PyTorch's defaults).
    pub fn random_parameters(&self, seed: u64) -> Parameters {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut params = Parameters::new();
        for layer in &self.layers {
            match &layer.op {
                LayerOp::Conv {
                    in_ch,
                    out_ch,
                    kernel,
                    bn,
                    ..
                } => {
                    let n = out_ch * in_ch * kernel * kernel;
                    let std = (2.0 / (out_ch * kernel * kernel) as f64).sqrt();
                    let mut data = Vec::with_capacity(n + 1);
                    while data.len() < n {
                        let (a, b) = normal_pair(&mut rng);
                        data.push((a * std) as f32);
                        data.push((b * std) as f32);
                    }
                    data.truncate(n);
                    params.insert(
                        format!("{}.weight", layer.name),
                        Tensor {
                            shape: vec![*out_ch, *in_ch, *kernel, *kernel],
                            data,
                        },
                    );
                    for (p, v) in [
                        ("weight", 1.0),
                        ("bias", 0.0),
                        ("running_mean", 0.0),
                        ("running_var", 1.0),
                    ] {
                        params.insert(
                            format!("{bn}.{p}"),
                            Tensor {
                                shape: vec![*out_ch],
                                data: vec![v; *out_ch],
                            },
                        );
                    }
                }
                LayerOp::Linear {
                    in_features,
                    out_features,
                    ..
                } => {
                    let bound = 1.0 / (*in_features as f64).sqrt();
                    let mut uniform = |n: usize| -> Vec<f32> {
                        (0..n)
                            .map(|_| (rng.random_range(-bound..bound)) as f32)
                            .collect()
                    };
                    let weight = uniform(in_features * out_features);
                    let bias = uniform(*out_features);
                    params.insert(
                        format!("{}.weight", layer.name),
                        Tensor {
                            shape: vec![*out_features, *in_features],
                            data: weight,
                        },
                    );
                    params.insert(
                        format!("{}.bias", layer.name),
                        Tensor {
                            shape: vec![*out_features],
                            data: bias,
                        },
                    );
                }
                _ => {}
            }
        }
        params
    }

    /// Checks that `params` holds exactly the expected tensors with the expected shapes and
    /// finite values (and non-negative running variances). `num_batches_tracked` entries, which
    /// PyTorch adds to every BN, are ignored.
    pub fn check_parameters(&self, params: &Parameters) -> Result<(), BuildError> {
        let specs = self.parameter_specs();
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
            let variance = spec.name.ends_with(".running_var");
            if let Some(index) = t
                .data
                .iter()
                .position(|v| !v.is_finite() || (variance && *v < 0.0))
            {
                return Err(BuildError::InvalidValue {
                    name: spec.name.clone(),
                    index,
                });
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

    /// Builds the inference network: checks the parameters, folds each BN into its conv,
    /// reorders conv weights to `[Cin][Kh][Kw][Cout]` and linear weights to `[In][Out]` (with
    /// PyTorch's C·H·W flatten order turned into our H·W·C), and uses `neuron` everywhere.
    pub fn build(
        &self,
        params: &Parameters,
        neuron: NeuronKind,
        bn: BatchNormConfig,
    ) -> Result<Network, BuildError> {
        self.check_parameters(params)?;
        let nodes = (0..self.layers.len())
            .map(|i| self.build_node(i, params, neuron, bn))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Network::new(nodes)?)
    }

    /// Builds the inference node of one layer (folding its BN). [`Blueprint::build`] checks
    /// the parameters first; called alone, this reports only missing tensors, so use it to
    /// refresh one layer of parameters already checked.
    pub fn build_node(
        &self,
        index: usize,
        params: &Parameters,
        neuron: NeuronKind,
        bn: BatchNormConfig,
    ) -> Result<Node, BuildError> {
        let get = |name: String| -> Result<&Tensor, BuildError> {
            params.get(&name).ok_or_else(|| BuildError::MissingTensor {
                expected: self
                    .parameter_specs()
                    .into_iter()
                    .find(|s| s.name == name)
                    .map(|s| s.shape)
                    .unwrap_or_default(),
                name,
            })
        };
        let Some(layer) = self.layers.get(index) else {
            return Err(BuildError::Graph(GraphError::Input));
        };
        {
            let op = match &layer.op {
                LayerOp::Input => Op::Input,
                LayerOp::Conv {
                    in_ch,
                    out_ch,
                    kernel,
                    stride,
                    padding,
                    bn: bn_name,
                    alpha,
                } => {
                    let w = get(format!("{}.weight", layer.name))?;
                    let gamma = get(format!("{bn_name}.weight"))?;
                    let beta = get(format!("{bn_name}.bias"))?;
                    let mean = get(format!("{bn_name}.running_mean"))?;
                    let var = get(format!("{bn_name}.running_var"))?;
                    let factor = match bn.kind {
                        BatchNormKind::Td => f64::from(*alpha) * f64::from(VTH),
                        BatchNormKind::Plain => 1.0,
                    };
                    let scale: Vec<f64> = (0..*out_ch)
                        .map(|c| {
                            f64::from(gamma.data[c]) * factor
                                / (f64::from(var.data[c]) + f64::from(bn.eps)).sqrt()
                        })
                        .collect();
                    let bias = (0..*out_ch)
                        .map(|c| {
                            (f64::from(beta.data[c]) - f64::from(mean.data[c]) * scale[c]) as f32
                        })
                        .collect();
                    let k = *kernel;
                    let mut weight = vec![0.0f32; in_ch * k * k * out_ch];
                    for (co, &sc) in scale.iter().enumerate() {
                        for ci in 0..*in_ch {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let src = ((co * in_ch + ci) * k + ky) * k + kx;
                                    let dst = ((ci * k + ky) * k + kx) * out_ch + co;
                                    weight[dst] = (f64::from(w.data[src]) * sc) as f32;
                                }
                            }
                        }
                    }
                    Op::Conv2d {
                        in_ch: *in_ch,
                        out_ch: *out_ch,
                        kernel: (k, k),
                        stride: *stride,
                        padding: *padding,
                        weight,
                        bias,
                    }
                }
                LayerOp::Linear {
                    in_features,
                    out_features,
                    from,
                } => {
                    let w = get(format!("{}.weight", layer.name))?;
                    let b = get(format!("{}.bias", layer.name))?;
                    let mut weight = vec![0.0f32; in_features * out_features];
                    let plane = from.height * from.width;
                    for o in 0..*out_features {
                        for c in 0..from.channels {
                            for p in 0..plane {
                                // PyTorch flattens [C][H][W]; we flatten [H][W][C].
                                let src_in = c * plane + p;
                                let dst_in = p * from.channels + c;
                                weight[dst_in * out_features + o] =
                                    w.data[o * in_features + src_in];
                            }
                        }
                    }
                    Op::Linear {
                        in_features: *in_features,
                        out_features: *out_features,
                        weight,
                        bias: b.data.clone(),
                    }
                }
                LayerOp::AvgPool { k, stride } => Op::AvgPool {
                    k: *k,
                    stride: *stride,
                },
                LayerOp::GlobalAvgPool => Op::GlobalAvgPool,
                LayerOp::Neuron => Op::Neuron(neuron),
                LayerOp::Add => Op::Add,
                LayerOp::Flatten => Op::Flatten,
                LayerOp::Output => Op::Output,
            };
            Ok(Node::new(
                layer.name.clone(),
                op,
                layer.inputs.clone(),
                layer.shape,
            ))
        }
    }
}

/// Two independent standard normal samples (Box–Muller).
fn normal_pair(rng: &mut ChaCha8Rng) -> (f64, f64) {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]: ln stays finite
    let u2: f64 = rng.random::<f64>();
    let r = (-2.0 * u1.ln()).sqrt();
    let (sin, cos) = (std::f64::consts::TAU * u2).sin_cos();
    (r * cos, r * sin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(arch: Architecture, h: usize) -> ArchSpec {
        ArchSpec {
            arch,
            channels: 2,
            height: h,
            width: h,
            classes: 10,
        }
    }

    fn count_weighted(bp: &Blueprint) -> usize {
        bp.layers
            .iter()
            .filter(|l| matches!(l.op, LayerOp::Conv { .. } | LayerOp::Linear { .. }))
            .count()
    }

    #[test]
    fn layer_counts_match_the_names() {
        let bp = Blueprint::new(spec(Architecture::Resnet19, 48)).unwrap();
        // 19 = 1 stem conv + 16 block convs + 2 FC (downsample convs not counted).
        let downsamples = bp
            .layers
            .iter()
            .filter(|l| l.name.contains("downsample"))
            .count();
        assert_eq!(count_weighted(&bp) - downsamples, 19);
        let bp = Blueprint::new(spec(Architecture::Resnet20, 48)).unwrap();
        let downsamples = bp
            .layers
            .iter()
            .filter(|l| l.name.contains("downsample"))
            .count();
        assert_eq!(count_weighted(&bp) - downsamples, 20);
        let bp = Blueprint::new(spec(Architecture::VggSnn, 48)).unwrap();
        assert_eq!(count_weighted(&bp), 9);
        assert_eq!(bp.layers.last().unwrap().shape, Shape::vector(10));
        let flat = bp.layers.iter().find(|l| l.op == LayerOp::Flatten).unwrap();
        assert_eq!(flat.shape, Shape::vector(512 * 3 * 3));
    }

    #[test]
    fn too_small_inputs_are_rejected() {
        assert!(matches!(
            Blueprint::new(spec(Architecture::VggSnn, 8)),
            Err(BuildError::InputTooSmall { .. })
        ));
        assert!(matches!(
            Blueprint::new(spec(Architecture::Tiny, 0)),
            Err(BuildError::InputTooSmall { .. })
        ));
        let mut s = spec(Architecture::Tiny, 8);
        s.classes = 0;
        assert_eq!(Blueprint::new(s), Err(BuildError::NoClasses));
    }

    #[test]
    fn folding_matches_bn_applied_after_the_conv() {
        let bp = Blueprint::new(spec(Architecture::Tiny, 8)).unwrap();
        let mut params = bp.random_parameters(3);
        let bn = "features.0.bn";
        params.get_mut(&format!("{bn}.weight")).unwrap().data[5] = 1.7;
        params.get_mut(&format!("{bn}.bias")).unwrap().data[5] = -0.2;
        params.get_mut(&format!("{bn}.running_mean")).unwrap().data[5] = 0.3;
        params.get_mut(&format!("{bn}.running_var")).unwrap().data[5] = 2.5;
        let cfg = BatchNormConfig::default();
        let net = bp.build(&params, NeuronKind::Srif, cfg).unwrap();
        let Op::Conv2d { weight, bias, .. } = &net.nodes()[1].op else {
            panic!("node 1 is the first conv")
        };
        let w = &params["features.0.conv.weight"];
        // One conv output, channel 5, at a single input value of 1 at (ci=1, ky=2, kx=0).
        let raw = f64::from(w.data[((5 * 2 + 1) * 3 + 2) * 3]);
        let bn_out = 1.7 * 0.5 * (raw - 0.3) / (2.5f64 + 1e-5).sqrt() - 0.2;
        let folded = f64::from(weight[((3 + 2) * 3) * 16 + 5]) + f64::from(bias[5]);
        assert!((bn_out - folded).abs() < 1e-6, "{bn_out} vs {folded}");
    }

    #[test]
    fn linear_reorders_the_flatten() {
        let bp = Blueprint::new(spec(Architecture::Tiny, 8)).unwrap();
        let params = bp.random_parameters(1);
        let net = bp
            .build(&params, NeuronKind::Srif, BatchNormConfig::default())
            .unwrap();
        let fc = net.nodes().iter().find(|n| n.name == "classifier").unwrap();
        let Op::Linear { weight, .. } = &fc.op else {
            panic!("classifier is linear")
        };
        // Final map is 1x1x64, so both orders agree; check the transpose only.
        let w = &params["classifier.weight"];
        assert_eq!(weight[7 * 10 + 3], w.data[3 * 64 + 7]);
        let bp = Blueprint::new(spec(Architecture::Tiny, 16)).unwrap();
        let params = bp.random_parameters(1);
        let net = bp
            .build(&params, NeuronKind::Srif, BatchNormConfig::default())
            .unwrap();
        let fc = net.nodes().iter().find(|n| n.name == "classifier").unwrap();
        let Op::Linear { weight, .. } = &fc.op else {
            panic!("classifier is linear")
        };
        // 2x2x64: PyTorch input index c*4 + p maps to ours p*64 + c.
        let w = &params["classifier.weight"];
        let (o, c, p) = (4, 9, 3);
        assert_eq!(weight[(p * 64 + c) * 10 + o], w.data[o * 256 + c * 4 + p]);
    }

    #[test]
    fn random_parameters_are_deterministic_and_complete() {
        let bp = Blueprint::new(spec(Architecture::Resnet20, 16)).unwrap();
        let a = bp.random_parameters(7);
        assert_eq!(a, bp.random_parameters(7));
        assert_ne!(a, bp.random_parameters(8));
        bp.check_parameters(&a).unwrap();
        let w = &a["layer1.0.conv1.weight"].data;
        let var = w.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / w.len() as f64;
        assert!(
            (var / (2.0 / (64.0 * 9.0)) - 1.0).abs() < 0.1,
            "kaiming variance {var}"
        );
    }

    #[test]
    fn architecture_names_round_trip() {
        for a in Architecture::ALL {
            assert_eq!(a.name().parse::<Architecture>(), Ok(a));
            assert_eq!(
                serde_json::to_string(&a).unwrap(),
                format!("\"{}\"", a.name())
            );
        }
        assert!("resnet18".parse::<Architecture>().is_err());
    }
}
