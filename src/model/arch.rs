//! The built-in architectures, as generators of [`Graph`]s. A model file stores the graph
//! itself, so loading never needs these; they exist to create new models (`model init`,
//! `train`) and to read version 1 files, which named the architecture only.
//!
//! Every conv is `bias=False` and followed by a (td)BN; tensor names are those a PyTorch
//! module of the same structure would give in its `state_dict`.
//!
//! - `tiny`: three stages `features.{i}` of conv3×3 (C→16→32→64) → BN → avgpool 2 → neuron,
//!   then flatten and `classifier` (Linear to classes). The pool sits *before* each neuron,
//!   so every spike-fed layer (stages 2, 3 and the classifier) gets binary input.
//! - `vgg-snn`: TET's VGGSNN. `features.{0..8}` conv3×3 → BN → neuron with widths 64, 128,
//!   pool, 256, 256, pool, 512, 512, pool, 512, 512, pool; flatten; `classifier`. As in TET, each
//!   avgpool follows a neuron, so the layer after each pool (features.2, .4, .6 and the
//!   classifier) receives quarter-valued inputs {0, ¼, ½, ¾, 1}, not binary spikes. TET's
//!   placement is kept so weights trained that way load unchanged.
//! - `resnet19`: (TET / tdBN) `conv1` C→128 → `bn1` → neuron; BasicBlocks [3, 3, 2] at
//!   128/256/512 (first block of stages 2 and 3 with stride 2 and a `downsample` conv1×1 + BN);
//!   global avgpool; `fc1` 512→256 → neuron → `fc2` → output. BasicBlock:
//!   conv1-bn1-neuron-conv2-bn2, plus the shortcut, then a neuron.
//! - `resnet20` (Sengupta / Rathi style): stem `stem.{0,1,2}` of three conv3×3 at 64 channels;
//!   the third is followed by avgpool 2 *before* its neuron (so the blocks get binary spikes);
//!   BasicBlocks [2, 2, 2, 2] at 64/128/256/512 (strides 1, 2, 2, 2); global avgpool; `fc`.
//!
//! In BasicBlocks the two BNs that feed the residual sum (`bn2` and the downsample BN) use
//! tdBN's α = 1/√2; all others α = 1. The graph records each α on its node.

use std::f32::consts::FRAC_1_SQRT_2;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::model::graph::{Graph, GraphError, GraphNode, NodeOp};
use crate::snn::network::{Shape, window_out};

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

/// Batch-norm flavour and ε of every BN a generator makes.
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

/// Why an architecture cannot be laid out.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ArchError {
    /// The input is too small (or empty) for the architecture's strides and pools.
    #[error("{arch}: input {channels}x{height}x{width} is too small or empty (at {detail})")]
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
    /// The generated graph is invalid (a bug in a generator).
    #[error(transparent)]
    Graph(#[from] GraphError),
}

/// Assembles nodes, tracking shapes as it goes.
struct Builder {
    spec: ArchSpec,
    bn: BatchNormConfig,
    nodes: Vec<GraphNode>,
    shapes: Vec<Shape>,
}

impl Builder {
    fn new(spec: ArchSpec, bn: BatchNormConfig) -> Result<Self, ArchError> {
        if spec.classes == 0 {
            return Err(ArchError::NoClasses);
        }
        let mut b = Self {
            spec,
            bn,
            nodes: Vec::new(),
            shapes: Vec::new(),
        };
        let input = Shape::new(spec.height, spec.width, spec.channels);
        if input.is_empty() {
            return Err(b.too_small("input"));
        }
        b.push("input", NodeOp::Input, &[], input);
        Ok(b)
    }

    fn too_small(&self, detail: &str) -> ArchError {
        ArchError::InputTooSmall {
            arch: self.spec.arch,
            channels: self.spec.channels,
            height: self.spec.height,
            width: self.spec.width,
            detail: detail.to_owned(),
        }
    }

    fn push(&mut self, name: &str, op: NodeOp, inputs: &[usize], shape: Shape) -> usize {
        self.nodes.push(GraphNode {
            name: name.to_owned(),
            inputs: inputs.iter().map(|&i| self.nodes[i].name.clone()).collect(),
            op,
            shape: Some([shape.channels, shape.height, shape.width]),
        });
        self.shapes.push(shape);
        self.nodes.len() - 1
    }

    /// conv(k×k, stride, padding k/2, no bias) then its BN with tdBN factor `alpha`.
    #[allow(clippy::too_many_arguments)]
    fn conv_bn(
        &mut self,
        conv: &str,
        bn: &str,
        input: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        alpha: f32,
    ) -> Result<usize, ArchError> {
        let s = self.shapes[input];
        let padding = kernel / 2;
        let (Some(h), Some(w)) = (
            window_out(s.height, kernel, stride, padding),
            window_out(s.width, kernel, stride, padding),
        ) else {
            return Err(self.too_small(conv));
        };
        let shape = Shape::new(h, w, out_channels);
        let c = self.push(
            conv,
            NodeOp::Conv2d {
                in_channels: s.channels,
                out_channels,
                kernel: [kernel, kernel],
                stride,
                padding,
                weight: format!("{conv}.weight"),
                bias: None,
            },
            &[input],
            shape,
        );
        Ok(self.push(
            bn,
            NodeOp::BatchNorm {
                channels: out_channels,
                eps: self.bn.eps,
                alpha,
                threshold_scaled: self.bn.kind == BatchNormKind::Td,
                weight: format!("{bn}.weight"),
                bias: format!("{bn}.bias"),
                running_mean: format!("{bn}.running_mean"),
                running_var: format!("{bn}.running_var"),
            },
            &[c],
            shape,
        ))
    }

    fn neuron(&mut self, name: &str, input: usize) -> usize {
        let s = self.shapes[input];
        self.push(name, NodeOp::Neuron, &[input], s)
    }

    fn avgpool(&mut self, name: &str, input: usize) -> Result<usize, ArchError> {
        let s = self.shapes[input];
        let (Some(h), Some(w)) = (window_out(s.height, 2, 2, 0), window_out(s.width, 2, 2, 0))
        else {
            return Err(self.too_small(name));
        };
        Ok(self.push(
            name,
            NodeOp::AvgPool {
                kernel: 2,
                stride: 2,
            },
            &[input],
            Shape::new(h, w, s.channels),
        ))
    }

    fn flatten(&mut self, input: usize) -> usize {
        let s = self.shapes[input];
        self.push("flatten", NodeOp::Flatten, &[input], Shape::vector(s.len()))
    }

    fn global_pool(&mut self, input: usize) -> usize {
        let s = self.shapes[input];
        self.push(
            "avgpool",
            NodeOp::GlobalAvgPool,
            &[input],
            Shape::vector(s.channels),
        )
    }

    fn linear(&mut self, name: &str, input: usize, out: usize) -> usize {
        let s = self.shapes[input];
        self.push(
            name,
            NodeOp::Linear {
                in_features: s.len(),
                out_features: out,
                weight: format!("{name}.weight"),
                bias: Some(format!("{name}.bias")),
            },
            &[input],
            Shape::vector(out),
        )
    }

    /// conv1-bn1-sn1-conv2-bn2 (+ shortcut) → add → sn2; returns the output neuron.
    fn basic_block(
        &mut self,
        prefix: &str,
        input: usize,
        planes: usize,
        stride: usize,
    ) -> Result<usize, ArchError> {
        let in_ch = self.shapes[input].channels;
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
        if self.shapes[shortcut] != self.shapes[c2] {
            return Err(self.too_small(prefix));
        }
        let s = self.shapes[c2];
        let add = self.push(&format!("{prefix}.add"), NodeOp::Add, &[c2, shortcut], s);
        Ok(self.neuron(&format!("{prefix}.sn2"), add))
    }

    fn stage(
        &mut self,
        name: &str,
        mut x: usize,
        planes: usize,
        blocks: usize,
        stride: usize,
    ) -> Result<usize, ArchError> {
        for j in 0..blocks {
            let s = if j == 0 { stride } else { 1 };
            x = self.basic_block(&format!("{name}.{j}"), x, planes, s)?;
        }
        Ok(x)
    }

    fn output(mut self, input: usize) -> Result<Graph, ArchError> {
        let s = self.shapes[input];
        self.push("output", NodeOp::Output, &[input], s);
        let graph = Graph { nodes: self.nodes };
        graph.check()?;
        Ok(graph)
    }
}

impl ArchSpec {
    /// Lays out the architecture as a graph, with every BN made as `bn` says.
    pub fn graph(&self, bn: BatchNormConfig) -> Result<Graph, ArchError> {
        let mut b = Builder::new(*self, bn)?;
        let classes = self.classes;
        match self.arch {
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::graph::BuildError;
    use crate::snn::network::Op;
    use crate::snn::neuron::NeuronKind;

    fn spec(arch: Architecture, h: usize) -> ArchSpec {
        ArchSpec {
            arch,
            channels: 2,
            height: h,
            width: h,
            classes: 10,
        }
    }

    fn graph(arch: Architecture, h: usize) -> Graph {
        spec(arch, h).graph(BatchNormConfig::default()).unwrap()
    }

    fn count_weighted(g: &Graph, skip_downsample: bool) -> usize {
        g.nodes
            .iter()
            .filter(|n| matches!(n.op, NodeOp::Conv2d { .. } | NodeOp::Linear { .. }))
            .filter(|n| !(skip_downsample && n.name.contains("downsample")))
            .count()
    }

    #[test]
    fn layer_counts_match_the_names() {
        // 19 = 1 stem conv + 16 block convs + 2 FC (downsample convs not counted).
        assert_eq!(count_weighted(&graph(Architecture::Resnet19, 48), true), 19);
        assert_eq!(count_weighted(&graph(Architecture::Resnet20, 48), true), 20);
        let vgg = graph(Architecture::VggSnn, 48);
        assert_eq!(count_weighted(&vgg, false), 9);
        assert_eq!(vgg.nodes.last().unwrap().shape, Some([10, 1, 1]));
        let flat = vgg.nodes.iter().find(|n| n.op == NodeOp::Flatten).unwrap();
        assert_eq!(flat.shape, Some([512 * 3 * 3, 1, 1]));
    }

    #[test]
    fn residual_batch_norms_carry_alpha() {
        let g = graph(Architecture::Resnet19, 16);
        let alpha = |name: &str| match &g.nodes[g.position(name).unwrap()].op {
            NodeOp::BatchNorm { alpha, .. } => *alpha,
            _ => panic!("{name} is a batch norm"),
        };
        assert_eq!(alpha("bn1"), 1.0);
        assert_eq!(alpha("layer1.0.bn1"), 1.0);
        assert_eq!(alpha("layer1.0.bn2"), FRAC_1_SQRT_2);
        assert_eq!(alpha("layer2.0.downsample.1"), FRAC_1_SQRT_2);
    }

    #[test]
    fn too_small_inputs_are_rejected() {
        let bn = BatchNormConfig::default();
        assert!(matches!(
            spec(Architecture::VggSnn, 8).graph(bn),
            Err(ArchError::InputTooSmall { .. })
        ));
        assert!(matches!(
            spec(Architecture::Tiny, 0).graph(bn),
            Err(ArchError::InputTooSmall { .. })
        ));
        let mut s = spec(Architecture::Tiny, 8);
        s.classes = 0;
        assert_eq!(s.graph(bn), Err(ArchError::NoClasses));
    }

    #[test]
    fn folding_matches_bn_applied_after_the_conv() {
        let g = graph(Architecture::Tiny, 8);
        let mut params = g.random_parameters(3);
        let bn = "features.0.bn";
        params.get_mut(&format!("{bn}.weight")).unwrap().data[5] = 1.7;
        params.get_mut(&format!("{bn}.bias")).unwrap().data[5] = -0.2;
        params.get_mut(&format!("{bn}.running_mean")).unwrap().data[5] = 0.3;
        params.get_mut(&format!("{bn}.running_var")).unwrap().data[5] = 2.5;
        let net = g.network(&params, NeuronKind::Srif).unwrap();
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
        let g = graph(Architecture::Tiny, 16);
        let params = g.random_parameters(1);
        let net = g.network(&params, NeuronKind::Srif).unwrap();
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
        let g = graph(Architecture::Resnet20, 16);
        let a = g.random_parameters(7);
        assert_eq!(a, g.random_parameters(7));
        assert_ne!(a, g.random_parameters(8));
        g.check_parameters(&a).unwrap();
        let w = &a["layer1.0.conv1.weight"].data;
        let var = w.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / w.len() as f64;
        assert!(
            (var / (2.0 / (64.0 * 9.0)) - 1.0).abs() < 0.1,
            "kaiming variance {var}"
        );
    }

    #[test]
    fn unfoldable_batch_norm_is_refused() {
        let mut g = graph(Architecture::Tiny, 8);
        // Move the first BN after the pool: nothing to fold it into.
        let bn = g.nodes.remove(2);
        let NodeOp::BatchNorm { .. } = bn.op else {
            panic!("node 2 is the first BN")
        };
        g.nodes[2].inputs = vec!["features.0.conv".into()];
        g.nodes[3].inputs = vec!["features.0.bn".into()];
        let mut moved = bn;
        moved.inputs = vec!["features.0.pool".into()];
        moved.shape = Some([16, 4, 4]);
        g.nodes.insert(3, moved);
        let params = g.random_parameters(0);
        assert!(matches!(
            g.network(&params, NeuronKind::Srif),
            Err(BuildError::Unfoldable { name }) if name == "features.0.bn"
        ));
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
