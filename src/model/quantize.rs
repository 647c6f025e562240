//! Integer (int8) models: which nodes have integer weights ([`Quantization`], part of the
//! metadata), the grid they lie on (one scale per output channel, values −127..=127), and
//! post-training quantization of a float model ([`quantize`]).
//!
//! In memory a quantized weight tensor holds its dequantized values, `f32(q · scale)` for the
//! integer q and its output channel's scale, beside a `<weight>_scale` tensor `[Cout]`: float
//! tools (the layer table, the trainer's view of the tensors) see the weights the integers
//! stand for, and the integers are recovered exactly ([`to_grid`]). The model file stores the
//! integers themselves as safetensors `I8` (see [`crate::model::file`]).
//!
//! Only conv2d and linear nodes whose input is binary spikes are quantized. The first conv
//! (its input is event counts, bilinear-resized and possibly normalized: real values) keeps
//! f32 weights and the f64 sum of the exactness contract in `exec`: quantizing it would mean
//! quantizing the input too, which changes what the model sees, and it holds a small share of
//! the work (Cin = 2: 18 weights per output for a 3×3 kernel against 9·Cin for every later
//! conv; on 2×48×48, 0.11 % of resnet19's dense multiply-accumulates, 0.61 % of resnet20's,
//! 12 % of tiny's). The same holds for a classifier after a global average pool (its input
//! is a mean of spikes, not spikes).

use serde::{Deserialize, Serialize};

use crate::model::graph::{Graph, NodeOp};
use crate::model::tensor::{Parameters, Tensor};
use crate::model::{LoadError, Model};
use crate::snn::network::{INT8_MAX_WEIGHT, MAX_INT8_FAN_IN};

/// The integer weight type. Only int8 exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightType {
    /// Signed 8-bit, symmetric (−127..=127), one f32 scale per output channel.
    Int8,
}

/// Which nodes hold integer weights. Stored in the metadata under `quantization`; absent in a
/// float model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quantization {
    /// The integer type.
    pub weights: WeightType,
    /// The conv2d and linear nodes (by name) whose weight tensor is integer, in graph order.
    pub nodes: Vec<String>,
    /// How the scales were chosen (`max_abs`, or `percentile:P`): informative only.
    #[serde(default)]
    pub method: String,
}

/// The name of the scale tensor of weight tensor `weight`.
pub fn scale_name(weight: &str) -> String {
    format!("{weight}_scale")
}

/// The f32 value integer `q` stands for on a channel of scale `scale`.
#[inline]
pub fn dequantize(q: i8, scale: f32) -> f32 {
    (f64::from(q) * f64::from(scale)) as f32
}

/// The integer whose [`dequantize`] is exactly `w`, if `w` lies on the grid of `scale`.
/// Recovery is exact: `dequantize` rounds q·scale by at most 2⁻²⁴ relatively, so w / scale is
/// within 127·2⁻²⁴ of q (scales are zero or normal, see [`valid_scale`]).
pub fn to_grid(w: f32, scale: f32) -> Option<i8> {
    if scale == 0.0 {
        return (w == 0.0).then_some(0);
    }
    let q = (f64::from(w) / f64::from(scale)).round();
    // NaN (a non-finite w) fails this too.
    if q.is_nan() || q.abs() > f64::from(INT8_MAX_WEIGHT) {
        return None;
    }
    let q = q as i8;
    (dequantize(q, scale) == w).then_some(q)
}

/// Whether `scale` can be a channel's scale: zero (an all-zero channel) or a positive normal
/// f32 (a subnormal one would make the grid inexact).
pub fn valid_scale(scale: f32) -> bool {
    scale == 0.0 || (scale.is_normal() && scale > 0.0)
}

/// How post-training quantization chooses each output channel's scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// scale = max |w| / 127: no weight is clipped.
    MaxAbs,
    /// scale = the P-th percentile of |w| / 127 (0 < P ≤ 100), weights beyond it clipped to
    /// ±127: trades a few large weights for finer steps elsewhere.
    Percentile(f64),
}

impl Method {
    /// The name recorded in [`Quantization::method`].
    pub fn name(self) -> String {
        match self {
            Method::MaxAbs => "max_abs".into(),
            Method::Percentile(p) => format!("percentile:{p}"),
        }
    }

    /// The scale of a channel whose weights are `w`.
    fn scale(self, w: &[f32]) -> f32 {
        let mut mags: Vec<f64> = w.iter().map(|&v| f64::from(v).abs()).collect();
        let top = match self {
            Method::MaxAbs => mags.iter().copied().fold(0.0, f64::max),
            Method::Percentile(p) => {
                mags.sort_by(f64::total_cmp);
                let rank = ((p / 100.0) * mags.len() as f64).ceil() as usize;
                mags.get(rank.clamp(1, mags.len().max(1)) - 1)
                    .copied()
                    .unwrap_or(0.0)
            }
        };
        let scale = (top / f64::from(INT8_MAX_WEIGHT)) as f32;
        if valid_scale(scale) { scale } else { 0.0 }
    }
}

/// The integer of weight `w` on the grid of `scale`: the nearest step (ties away from zero),
/// clipped to ±127; 0 on an all-zero channel (`scale` 0).
#[inline]
pub fn grid_value(w: f32, scale: f32) -> i8 {
    if scale == 0.0 {
        return 0;
    }
    let max = f64::from(INT8_MAX_WEIGHT);
    (f64::from(w) / f64::from(scale)).round().clamp(-max, max) as i8
}

/// Quantizes one output channel's weights `w` in place, each replaced by the value of its
/// integer ([`dequantize`] of [`grid_value`]), and returns the channel's scale chosen by
/// `method`. Post-training quantization ([`quantize`]) and quantization-aware training's
/// fake-quant forward both call this, so what is trained is what is exported, bit for bit.
pub fn fake_quantize(method: Method, w: &mut [f32]) -> f32 {
    let scale = method.scale(w);
    for v in w.iter_mut() {
        *v = dequantize(grid_value(*v, scale), scale);
    }
    scale
}

/// Why a model could not be quantized.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    /// The model is already quantized.
    #[error("the model is already quantized (int8 nodes: {0})")]
    AlreadyQuantized(String),
    /// No node can take integer weights (none has spike inputs).
    #[error("no conv2d or linear node of this model reads binary spikes; nothing to quantize")]
    NothingToQuantize,
    /// A percentile outside (0, 100].
    #[error("percentile {0} is not in (0, 100]")]
    BadPercentile(f64),
    /// The quantized model could not be built.
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// The graph nodes of `model` that can take int8 weights: conv2d and linear nodes whose input
/// (in the inference network) is binary spikes and whose fan-in is at most
/// [`MAX_INT8_FAN_IN`], in graph order.
pub fn quantizable_nodes(model: &Model) -> Vec<String> {
    let graph = model.graph();
    let Ok(lowering) = graph.lowering() else {
        return Vec::new();
    };
    let network = &model.network;
    graph
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, node)| {
            let fan_in = match &node.op {
                NodeOp::Conv2d {
                    in_channels,
                    kernel,
                    ..
                } => in_channels * kernel[0] * kernel[1],
                NodeOp::Linear { in_features, .. } => *in_features,
                _ => return false,
            };
            let n = lowering.network_node[*i];
            fan_in <= MAX_INT8_FAN_IN
                && network
                    .nodes()
                    .get(n)
                    .and_then(|n| n.inputs.first())
                    .is_some_and(|&src| network.is_binary(src))
        })
        .map(|(_, node)| node.name.clone())
        .collect()
}

/// The weight tensor name of conv2d or linear node `name`.
pub fn weight_of<'g>(graph: &'g Graph, name: &str) -> Option<&'g str> {
    graph
        .nodes
        .iter()
        .find(|n| n.name == name)
        .and_then(|n| match &n.op {
            NodeOp::Conv2d { weight, .. } | NodeOp::Linear { weight, .. } => Some(weight.as_str()),
            _ => None,
        })
}

/// Post-training quantization: every [`quantizable_nodes`] node's weights on a symmetric int8
/// grid with one scale per output channel chosen by `method`, each weight rounded to the
/// nearest step (ties away from zero) and clipped to ±127. Biases and batch norms are kept.
pub fn quantize(model: &Model, method: Method) -> Result<Model, QuantizeError> {
    if let Some(q) = &model.metadata.quantization {
        return Err(QuantizeError::AlreadyQuantized(q.nodes.join(", ")));
    }
    if let Method::Percentile(p) = method
        && !(p > 0.0 && p <= 100.0)
    {
        return Err(QuantizeError::BadPercentile(p));
    }
    let nodes = quantizable_nodes(model);
    if nodes.is_empty() {
        return Err(QuantizeError::NothingToQuantize);
    }
    let mut parameters: Parameters = model.parameters.clone();
    for name in &nodes {
        let Some(weight) = weight_of(model.graph(), name) else {
            continue;
        };
        let Some(t) = parameters.get_mut(weight) else {
            continue;
        };
        let out = t.shape.first().copied().unwrap_or(0);
        let per_channel = t.data.len() / out.max(1);
        let scales: Vec<f32> = t
            .data
            .chunks_exact_mut(per_channel.max(1))
            .map(|channel| fake_quantize(method, channel))
            .collect();
        parameters.insert(
            scale_name(weight),
            Tensor {
                shape: vec![out],
                data: scales,
            },
        );
    }
    let mut metadata = model.metadata.clone();
    metadata.quantization = Some(Quantization {
        weights: WeightType::Int8,
        nodes,
        method: method.name(),
    });
    Ok(Model::new(metadata, parameters)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_is_recovered_exactly() {
        for scale in [1e-3f32, 0.017, 0.5, 3.7e-20, 1.0e30, f32::MIN_POSITIVE] {
            for q in -127i8..=127 {
                let w = dequantize(q, scale);
                assert_eq!(to_grid(w, scale), Some(q), "q {q} scale {scale}");
            }
        }
        assert_eq!(to_grid(0.0, 0.0), Some(0));
        assert_eq!(to_grid(0.1, 0.0), None);
        // Off the grid, or beyond 127 steps.
        assert_eq!(to_grid(dequantize(3, 0.01) * 1.001, 0.01), None);
        assert_eq!(to_grid(1.28, 0.01), None);
        assert!(!valid_scale(1e-40));
        assert!(!valid_scale(-1.0));
        assert!(valid_scale(0.0));
    }

    #[test]
    fn percentile_clips_the_largest_weights() {
        let w: Vec<f32> = (1..=100).map(|i| i as f32).collect();
        assert_eq!(Method::MaxAbs.scale(&w), (100.0f64 / 127.0) as f32);
        assert_eq!(Method::Percentile(90.0).scale(&w), (90.0f64 / 127.0) as f32);
        assert_eq!(Method::MaxAbs.scale(&[0.0; 4]), 0.0);
    }
}
