//! The model file: one `.safetensors` file holding the parameters as f32 tensors named like a
//! PyTorch `state_dict`, plus a JSON document in `__metadata__` under the key `inflor`: the
//! explicit graph, the neuron, the input spec, the class names and the provenance.
//!
//! `__metadata__` also carries `"format": "pt"` (what Hugging Face tools expect) and
//! `"inflor_format_version"`, so the version can be read without parsing the document.
//!
//! An int8 model (see [`crate::model::quantize`]) stores the weights of the nodes its
//! metadata's `quantization` lists as `I8` tensors holding the integers, each with an F32
//! `<weight>_scale` tensor `[Cout]` beside it; every other tensor is F32. In memory such a
//! weight holds its dequantized values, so reading and writing are exact inverses.
//!
//! Version 2 (written now) stores the graph. Version 1 named a built-in architecture instead;
//! it is still read, by generating that architecture's graph (see [`parse_metadata`]).

use std::collections::{BTreeMap, HashMap};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::binner::{InputSpec, Normalization, ResizeMode, WindowPolicy};
use crate::model::arch::{ArchError, ArchSpec, Architecture, BatchNormConfig};
use crate::model::graph::Graph;
use crate::model::quantize::{Quantization, dequantize, scale_name, to_grid, weight_of};
use crate::model::tensor::{Parameters, Tensor};
use crate::model::{LoadError, SaveError};
use crate::snn::neuron::{NeuronKind, Surrogate, VTH};

/// The `__metadata__` key that holds the JSON document.
pub const METADATA_KEY: &str = "inflor";
/// The `__metadata__` key that holds the format version alone.
pub const VERSION_KEY: &str = "inflor_format_version";
/// The format version this code writes.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format version this code reads.
pub const OLDEST_VERSION: u32 = 1;

/// Everything about a model except its tensors. Stored as JSON in `__metadata__["inflor"]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// [`FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// The network: nodes, their parameters, tensor names and inputs.
    pub graph: Graph,
    /// Neuron model, threshold, surrogate and MPR.
    pub neuron: NeuronSpec,
    /// How recordings become the network's input frames.
    pub input: InputSpec,
    /// One name per class, in logit order.
    pub class_names: Vec<String>,
    /// Where the weights came from.
    pub provenance: Provenance,
    /// Which nodes have int8 weights (absent in a float model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<Quantization>,
}

impl Metadata {
    /// Metadata for `graph` with defaults: SRIF with Dspike(b = 3) and MPR, the given input
    /// spec, classes named `class0`, `class1`, …, and empty provenance.
    pub fn new(graph: Graph, input: InputSpec) -> Result<Self, LoadError> {
        let classes = graph.classes().map_err(crate::model::BuildError::from)?;
        Ok(Self {
            format_version: FORMAT_VERSION,
            graph,
            neuron: NeuronSpec::default(),
            input,
            class_names: (0..classes).map(|c| format!("class{c}")).collect(),
            provenance: Provenance::default(),
            quantization: None,
        })
    }
}

/// The default input spec for an `height × width` input with `timesteps` frames: the whole
/// recording split into T bins of equal event counts (CIFAR10-DVS's convention), bilinear
/// resize, raw counts.
pub fn default_input(height: u16, width: u16, timesteps: usize) -> InputSpec {
    InputSpec {
        height,
        width,
        timesteps,
        window: WindowPolicy::Recording {
            split_by: crate::binner::SplitBy::EqualCount,
        },
        resize: ResizeMode::Bilinear,
        normalization: Normalization::None,
    }
}

/// The spiking neuron of every neuron node.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeuronSpec {
    /// Dynamics.
    pub model: NeuronKind,
    /// Firing threshold; must equal [`VTH`].
    pub vth: f32,
    /// Surrogate used in training.
    pub surrogate: Surrogate,
    /// Whether training applied MPR (never changes inference).
    pub mpr: bool,
}

impl Default for NeuronSpec {
    fn default() -> Self {
        Self {
            model: NeuronKind::Srif,
            vth: VTH,
            surrogate: Surrogate::default(),
            mpr: true,
        }
    }
}

/// Where the weights came from. Unknown keys are kept in `extra` (trainers record their
/// hyper-parameters and results there).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Provenance {
    /// The tool and version that wrote the file (`inflor 0.1.0 model init`).
    #[serde(default)]
    pub created_by: String,
    /// How the weights were obtained: `random`, `trained`, `converted`.
    #[serde(default)]
    pub origin: String,
    /// The built-in architecture the graph was generated from, if any (informative only:
    /// loading reads the graph).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// Random seed, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Training dataset, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// Anything else (training schedule, accuracy, calibration targets).
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Version 1 metadata: the architecture by name, one BN config, and the input spec with
/// channels and the older key `normalisation`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetadataV1 {
    format_version: u32,
    architecture: ArchSpec,
    neuron: NeuronSpec,
    batch_norm: BatchNormConfig,
    input: InputSpecV1,
    class_names: Vec<String>,
    provenance: Provenance,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSpecV1 {
    channels: usize,
    height: usize,
    width: usize,
    timesteps: usize,
    window: WindowPolicy,
    resize: ResizeMode,
    normalisation: Normalization,
}

/// Parses the metadata document of any readable version, in stages so that an unknown
/// architecture or neuron, or a future version, is reported as such rather than as a generic
/// JSON error. A version 1 document gets its graph from the architecture it names.
pub fn parse_metadata(text: &str) -> Result<Metadata, LoadError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| LoadError::BadMetadata(e.to_string()))?;
    let version = value
        .get("format_version")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| LoadError::BadMetadata("format_version missing or not a number".into()))?;
    if !(u64::from(OLDEST_VERSION)..=u64::from(FORMAT_VERSION)).contains(&version) {
        return Err(LoadError::UnsupportedVersion { found: version });
    }
    if let Some(kind) = value
        .pointer("/neuron/model/kind")
        .and_then(serde_json::Value::as_str)
        && !["srif", "if_hard", "lif_hard"].contains(&kind)
    {
        return Err(LoadError::UnknownNeuron(kind.to_owned()));
    }
    if version == 1 {
        if let Some(arch) = value
            .pointer("/architecture/arch")
            .and_then(serde_json::Value::as_str)
            && arch.parse::<Architecture>().is_err()
        {
            return Err(LoadError::UnknownArchitecture(arch.to_owned()));
        }
        let v1: MetadataV1 =
            serde_json::from_value(value).map_err(|e| LoadError::BadMetadata(e.to_string()))?;
        return upgrade(v1);
    }
    serde_json::from_value(value).map_err(|e| LoadError::BadMetadata(e.to_string()))
}

/// A version 1 document as version 2: the named architecture's graph, the input spec in the
/// binner's vocabulary.
fn upgrade(v1: MetadataV1) -> Result<Metadata, LoadError> {
    let a = v1.architecture;
    let i = v1.input;
    if (i.channels, i.height, i.width) != (a.channels, a.height, a.width) {
        return Err(LoadError::BadMetadata(format!(
            "input is {}x{}x{} but the architecture expects {}x{}x{}",
            i.channels, i.height, i.width, a.channels, a.height, a.width
        )));
    }
    let side = |v: usize, what: &str| {
        u16::try_from(v)
            .map_err(|_| LoadError::BadMetadata(format!("input {what} {v} is too large")))
    };
    let graph = a.graph(v1.batch_norm).map_err(|e| match e {
        ArchError::Graph(g) => LoadError::Build(g.into()),
        other => LoadError::Arch(other),
    })?;
    let mut provenance = v1.provenance;
    provenance.architecture = Some(a.arch.name().to_owned());
    Ok(Metadata {
        format_version: v1.format_version,
        graph,
        neuron: v1.neuron,
        input: InputSpec {
            height: side(i.height, "height")?,
            width: side(i.width, "width")?,
            timesteps: i.timesteps,
            window: i.window,
            resize: i.resize,
            normalization: i.normalisation,
        },
        class_names: v1.class_names,
        provenance,
        quantization: None,
    })
}

/// Reads the metadata and the tensors of a `.safetensors` file.
pub fn read(bytes: &[u8]) -> Result<(Metadata, Parameters), LoadError> {
    let tensors = SafeTensors::deserialize(bytes)?;
    let (_, header) = SafeTensors::read_metadata(bytes)?;
    let text = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(METADATA_KEY))
        .ok_or(LoadError::MissingMetadata)?;
    let metadata = parse_metadata(text)?;
    let integer = integer_weights(&metadata);
    let mut parameters = Parameters::new();
    let mut quantized = Vec::new();
    for (name, view) in tensors.iter() {
        if name.ends_with(".num_batches_tracked") {
            continue;
        }
        let is_integer = integer.contains(&name);
        let expected = if is_integer { Dtype::I8 } else { Dtype::F32 };
        if view.dtype() != expected {
            return Err(LoadError::WrongDtype {
                name: name.to_owned(),
                found: format!("{:?}", view.dtype()),
                expected: if is_integer { "I8" } else { "F32" },
            });
        }
        let data = if is_integer {
            quantized.push(name.to_owned());
            // The integers for now; dequantized once the scales are read.
            view.data().iter().map(|&b| f32::from(b as i8)).collect()
        } else {
            view.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        };
        parameters.insert(
            name.to_owned(),
            Tensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    for name in quantized {
        let scales = parameters
            .get(&scale_name(&name))
            .map(|t| t.data.clone())
            .unwrap_or_default();
        let Some(t) = parameters.get_mut(&name) else {
            continue;
        };
        let out = t.shape.first().copied().unwrap_or(0);
        if scales.len() != out || out == 0 {
            return Err(LoadError::BadMetadata(format!(
                "int8 tensor {name} has {out} output channels but {} has {} scales",
                scale_name(&name),
                scales.len()
            )));
        }
        let per_channel = t.data.len() / out;
        for (k, w) in t.data.iter_mut().enumerate() {
            // Exact: w holds an integer in -128..=127.
            *w = dequantize(*w as i8, scales[k / per_channel]);
        }
    }
    Ok((metadata, parameters))
}

/// The weight tensors that `metadata` says are int8.
fn integer_weights(metadata: &Metadata) -> Vec<&str> {
    metadata.quantization.as_ref().map_or(Vec::new(), |q| {
        q.nodes
            .iter()
            .filter_map(|n| weight_of(&metadata.graph, n))
            .collect()
    })
}

/// The `.safetensors` bytes of `metadata` (written as the current version) and `parameters`.
pub fn write(metadata: &Metadata, parameters: &Parameters) -> Result<Vec<u8>, SaveError> {
    let integer = integer_weights(metadata);
    let mut raw: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = Vec::with_capacity(parameters.len());
    for (name, t) in parameters {
        if integer.contains(&name.as_str()) {
            let scales = parameters
                .get(&scale_name(name))
                .map_or(&[][..], |s| s.data.as_slice());
            let out = t.shape.first().copied().unwrap_or(0);
            let per_channel = t.data.len() / out.max(1);
            let mut bytes = Vec::with_capacity(t.data.len());
            for (k, &w) in t.data.iter().enumerate() {
                let q = scales
                    .get(k / per_channel.max(1))
                    .and_then(|&s| to_grid(w, s))
                    .ok_or_else(|| {
                        SaveError::Invalid(format!(
                            "int8 tensor {name}: element {k} is not on its channel's grid"
                        ))
                    })?;
                bytes.push(q as u8);
            }
            raw.push((name.as_str(), Dtype::I8, t.shape.clone(), bytes));
        } else {
            let bytes = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            raw.push((name.as_str(), Dtype::F32, t.shape.clone(), bytes));
        }
    }
    let mut views = Vec::with_capacity(raw.len());
    for (name, dtype, shape, bytes) in &raw {
        views.push((*name, TensorView::new(*dtype, shape.clone(), bytes)?));
    }
    let mut current = metadata.clone();
    current.format_version = FORMAT_VERSION;
    current.graph = current
        .graph
        .with_shapes()
        .map_err(|e| SaveError::Invalid(e.to_string()))?;
    let mut info = HashMap::new();
    info.insert(METADATA_KEY.to_owned(), serde_json::to_string(&current)?);
    info.insert(VERSION_KEY.to_owned(), FORMAT_VERSION.to_string());
    info.insert("format".to_owned(), "pt".to_owned());
    Ok(safetensors::serialize(views, Some(info))?)
}
