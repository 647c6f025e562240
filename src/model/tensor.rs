//! Parameter tensors as stored in the model file: PyTorch layout, row-major f32, by
//! `state_dict` name.

use std::collections::BTreeMap;

/// A parameter tensor in PyTorch layout, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor of `shape` filled with `value`.
    pub fn filled(shape: Vec<usize>, value: f32) -> Self {
        let n = shape.iter().product();
        Self {
            shape,
            data: vec![value; n],
        }
    }
}

/// Parameters by `state_dict` name.
pub type Parameters = BTreeMap<String, Tensor>;

/// One tensor a graph expects: its `state_dict` name and PyTorch shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    /// Name, e.g. `layer1.0.conv1.weight`.
    pub name: String,
    /// Shape in PyTorch layout (conv `[Cout, Cin, Kh, Kw]`, linear `[Out, In]`, BN `[C]`).
    pub shape: Vec<usize>,
    /// What the tensor is, for error messages and trainers.
    pub role: ParamRole,
}

/// What a parameter tensor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamRole {
    /// Convolution or linear weights (trained, with weight decay).
    Weight,
    /// Convolution or linear bias (trained, no weight decay).
    Bias,
    /// Batch-norm scale λ (trained, no weight decay).
    BatchNormWeight,
    /// Batch-norm shift β (trained, no weight decay).
    BatchNormBias,
    /// Batch-norm running mean (statistics, not trained by gradient).
    RunningMean,
    /// Batch-norm running variance (statistics, not trained by gradient).
    RunningVar,
    /// The per-output-channel scales of an int8 weight (`<weight>_scale`, `[Cout]`).
    WeightScale,
}
