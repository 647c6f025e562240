//! The model file: one `.safetensors` file holding the unfolded parameters as f32 tensors
//! named like a PyTorch `state_dict`, plus a JSON document in `__metadata__` under the key
//! `inflor` (architecture, neuron, input spec, class names, provenance). Loading validates
//! everything and builds the folded [`Network`].
//!
//! From Python:
//!
//! ```text
//! from safetensors import safe_open
//! import json
//! with safe_open("model.safetensors", "pt") as f:
//!     meta = json.loads(f.metadata()["inflor"])
//!     w = f.get_tensor("conv1.weight")          # [Cout, Cin, Kh, Kw]
//! ```
//!
//! `__metadata__` also carries `"format": "pt"` (what Hugging Face tools expect) and
//! `"inflor_format_version"` so the version can be read without parsing the document.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::snn::arch::{
    ArchSpec, Architecture, BatchNormConfig, Blueprint, BuildError, Parameters, Tensor,
};
use crate::snn::network::Network;
use crate::snn::neuron::{NeuronKind, Surrogate, VTH};

/// The `__metadata__` key that holds the JSON document.
pub const METADATA_KEY: &str = "inflor";
/// The `__metadata__` key that holds the format version alone.
pub const VERSION_KEY: &str = "inflor_format_version";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Everything about a model except its tensors. Stored as JSON in `__metadata__["inflor"]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// [`FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// Architecture, input shape and number of classes.
    pub architecture: ArchSpec,
    /// Neuron model, threshold, surrogate and MPR.
    pub neuron: NeuronSpec,
    /// BN flavour and ε (needed to fold).
    pub batch_norm: BatchNormConfig,
    /// How recordings become the network's input frames.
    pub input: InputSpec,
    /// One name per class, in logit order.
    pub class_names: Vec<String>,
    /// Where the weights came from.
    pub provenance: Provenance,
}

impl Metadata {
    /// Metadata with defaults for `spec`: SRIF with Dspike(b = 3) and MPR, tdBN (ε = 1e-5),
    /// the whole recording split into `timesteps` bins of equal event counts, bilinear resize,
    /// raw counts, classes named `class0`, `class1`, …, and empty provenance.
    pub fn new(spec: ArchSpec, timesteps: usize) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            architecture: spec,
            neuron: NeuronSpec::default(),
            batch_norm: BatchNormConfig::default(),
            input: InputSpec {
                channels: spec.channels,
                height: spec.height,
                width: spec.width,
                timesteps,
                window: WindowSpec::Recording {
                    split_by: SplitBy::EqualCount,
                },
                resize: ResizeMethod::Bilinear,
                normalisation: Normalisation::None,
            },
            class_names: (0..spec.classes).map(|c| format!("class{c}")).collect(),
            provenance: Provenance::default(),
        }
    }
}

/// The spiking neuron of every hidden layer.
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

/// The network's input: shape, timesteps and how events become frames. Plain data in the
/// binner's vocabulary (the binner maps it one to one); `snn` does not import the binner.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Channels: 2, indexed by polarity (0 = OFF, 1 = ON, as SpikingJelly's frames).
    pub channels: usize,
    /// Rows after resizing.
    pub height: usize,
    /// Columns after resizing.
    pub width: usize,
    /// Frames per classification (T).
    pub timesteps: usize,
    /// How events are grouped into the T frames of one classification.
    pub window: WindowSpec,
    /// How the sensor's count frame is resized to height × width (torch `interpolate` modes).
    pub resize: ResizeMethod,
    /// How each frame's values are normalised after resizing.
    pub normalisation: Normalisation,
}

/// How events are grouped into the T frames of one classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum WindowSpec {
    /// The whole recording is one classification, split into T bins (the training-time
    /// convention of CIFAR10-DVS and similar datasets).
    Recording {
        /// SpikingJelly's `split_by`: equal event counts or equal durations.
        split_by: SplitBy,
    },
    /// A stream: consecutive bins of `bin_us` microseconds; every T consecutive bins form one
    /// classification.
    Duration {
        /// Length of one bin (one timestep) in microseconds.
        bin_us: u64,
    },
    /// A stream: consecutive bins of `bin_events` events; every T consecutive bins form one
    /// classification.
    Count {
        /// Events in one bin (one timestep).
        bin_events: u64,
    },
}

/// How a whole recording is split into T bins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitBy {
    /// Equal numbers of events (SpikingJelly `split_by='number'`).
    EqualCount,
    /// Equal durations (SpikingJelly `split_by='time'`).
    EqualDuration,
}

/// How the count frame is resized from the sensor to the model input, named as in
/// `torch.nn.functional.interpolate`. Irrelevant when the sizes match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMethod {
    /// `mode='nearest'`.
    Nearest,
    /// `mode='bilinear', align_corners=False` (what TET's `transforms.Resize` does to frames).
    Bilinear,
    /// `mode='area'` (mean over each output's window).
    Area,
}

/// How each frame's values are normalised after resizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalisation {
    /// Raw (resized) event counts.
    None,
    /// 1 where the value is positive, else 0.
    Binary,
    /// Divided by the frame's largest value.
    MaxPerFrame,
    /// ln(1 + x).
    Log1p,
}

/// Where the weights came from. Unknown keys are kept in `extra`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Provenance {
    /// The tool and version that wrote the file (`inflor 0.1.0 model init`).
    #[serde(default)]
    pub created_by: String,
    /// How the weights were obtained: `random`, `trained`, `converted`.
    #[serde(default)]
    pub origin: String,
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

/// Why a model file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read model file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Not a valid safetensors container.
    #[error("not a valid safetensors file: {0}")]
    Container(#[from] safetensors::SafeTensorError),
    /// The `inflor` metadata entry is absent (a safetensors file from elsewhere).
    #[error("no inflor metadata (__metadata__[\"{METADATA_KEY}\"] is missing)")]
    MissingMetadata,
    /// The metadata is not the JSON we expect.
    #[error("bad metadata: {0}")]
    BadMetadata(String),
    /// A format version this code does not read.
    #[error("unsupported model format version {found} (this build reads {FORMAT_VERSION})")]
    UnsupportedVersion {
        /// Version in the file.
        found: u64,
    },
    /// The architecture name is not built in.
    #[error("unknown architecture {0:?} (known: tiny, vgg-snn, resnet19, resnet20)")]
    UnknownArchitecture(String),
    /// The neuron model name is unknown.
    #[error("unknown neuron model {0:?} (known: srif, if_hard, lif_hard)")]
    UnknownNeuron(String),
    /// A tensor is stored in a type other than F32.
    #[error("tensor {name} is {found}, expected F32")]
    WrongDtype {
        /// Tensor name.
        name: String,
        /// Its dtype.
        found: String,
    },
    /// The tensors do not fit the architecture (missing, wrong shape, unexpected, invalid).
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// Why a model could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// Serialising the container failed.
    #[error("cannot serialise model: {0}")]
    Container(#[from] safetensors::SafeTensorError),
    /// Serialising the metadata failed.
    #[error("cannot serialise metadata: {0}")]
    Metadata(#[from] serde_json::Error),
    /// Writing the file failed.
    #[error("cannot write model file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A loaded model: metadata, unfolded parameters, and the folded network ready to share.
#[derive(Debug, Clone)]
pub struct Model {
    /// The metadata.
    pub metadata: Metadata,
    /// Parameters as stored (PyTorch layout, BN unfolded).
    pub parameters: Parameters,
    /// The architecture's layers.
    pub blueprint: Blueprint,
    /// The inference network (BN folded).
    pub network: Arc<Network>,
}

impl Model {
    /// Validates metadata against parameters and builds the network.
    pub fn new(metadata: Metadata, parameters: Parameters) -> Result<Self, LoadError> {
        validate(&metadata)?;
        let blueprint = Blueprint::new(metadata.architecture)?;
        let network = blueprint.build(&parameters, metadata.neuron.model, metadata.batch_norm)?;
        Ok(Self {
            metadata,
            parameters,
            blueprint,
            network: Arc::new(network),
        })
    }

    /// A model with [`Metadata::new`] defaults and seeded random parameters
    /// ([`Blueprint::random_parameters`], BN statistics not calibrated).
    pub fn random(spec: ArchSpec, timesteps: usize, seed: u64) -> Result<Self, LoadError> {
        let blueprint = Blueprint::new(spec)?;
        let parameters = blueprint.random_parameters(seed);
        let mut metadata = Metadata::new(spec, timesteps);
        metadata.provenance.origin = "random".into();
        metadata.provenance.seed = Some(seed);
        Self::new(metadata, parameters)
    }

    /// Total number of stored (unfolded) parameter values.
    pub fn stored_parameter_count(&self) -> usize {
        self.parameters.values().map(|t| t.data.len()).sum()
    }

    /// Reads and validates a model file.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }

    /// Parses and validates a model from the bytes of a `.safetensors` file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LoadError> {
        let tensors = SafeTensors::deserialize(bytes)?;
        let (_, header) = SafeTensors::read_metadata(bytes)?;
        let text = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(METADATA_KEY))
            .ok_or(LoadError::MissingMetadata)?;
        let metadata = parse_metadata(text)?;
        let mut parameters = Parameters::new();
        for (name, view) in tensors.iter() {
            if name.ends_with(".num_batches_tracked") {
                continue;
            }
            if view.dtype() != Dtype::F32 {
                return Err(LoadError::WrongDtype {
                    name: name.to_owned(),
                    found: format!("{:?}", view.dtype()),
                });
            }
            let data = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            parameters.insert(
                name.to_owned(),
                Tensor {
                    shape: view.shape().to_vec(),
                    data,
                },
            );
        }
        Self::new(metadata, parameters)
    }

    /// The `.safetensors` bytes of this model.
    pub fn to_bytes(&self) -> Result<Vec<u8>, SaveError> {
        let mut raw: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(self.parameters.len());
        for (name, t) in &self.parameters {
            let bytes = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            raw.push((name.clone(), t.shape.clone(), bytes));
        }
        let mut views = Vec::with_capacity(raw.len());
        for (name, shape, bytes) in &raw {
            views.push((
                name.as_str(),
                TensorView::new(Dtype::F32, shape.clone(), bytes)?,
            ));
        }
        let mut info = HashMap::new();
        info.insert(
            METADATA_KEY.to_owned(),
            serde_json::to_string(&self.metadata)?,
        );
        info.insert(VERSION_KEY.to_owned(), FORMAT_VERSION.to_string());
        info.insert("format".to_owned(), "pt".to_owned());
        Ok(safetensors::serialize(views, Some(info))?)
    }

    /// Writes the model to `path`.
    pub fn save(&self, path: &Path) -> Result<(), SaveError> {
        let bytes = self.to_bytes()?;
        std::fs::write(path, bytes).map_err(|source| SaveError::Io {
            path: path.to_owned(),
            source,
        })
    }
}

/// Parses the metadata document in stages so that an unknown architecture or neuron, or a
/// future version, is reported as such rather than as a generic JSON error.
pub fn parse_metadata(text: &str) -> Result<Metadata, LoadError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| LoadError::BadMetadata(e.to_string()))?;
    let version = value
        .get("format_version")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| LoadError::BadMetadata("format_version missing or not a number".into()))?;
    if version != u64::from(FORMAT_VERSION) {
        return Err(LoadError::UnsupportedVersion { found: version });
    }
    if let Some(arch) = value
        .pointer("/architecture/arch")
        .and_then(serde_json::Value::as_str)
        && arch.parse::<Architecture>().is_err()
    {
        return Err(LoadError::UnknownArchitecture(arch.to_owned()));
    }
    if let Some(kind) = value
        .pointer("/neuron/model/kind")
        .and_then(serde_json::Value::as_str)
        && !["srif", "if_hard", "lif_hard"].contains(&kind)
    {
        return Err(LoadError::UnknownNeuron(kind.to_owned()));
    }
    serde_json::from_value(value).map_err(|e| LoadError::BadMetadata(e.to_string()))
}

/// Cross-field checks the types cannot express.
fn validate(m: &Metadata) -> Result<(), LoadError> {
    let bad = |s: String| Err(LoadError::BadMetadata(s));
    if m.format_version != FORMAT_VERSION {
        return Err(LoadError::UnsupportedVersion {
            found: u64::from(m.format_version),
        });
    }
    if m.neuron.vth != VTH {
        return bad(format!(
            "neuron.vth is {}, but executors implement Vth = {VTH}",
            m.neuron.vth
        ));
    }
    if !m.neuron.model.is_valid() {
        return bad(format!(
            "neuron.model has invalid parameters: {:?}",
            m.neuron.model
        ));
    }
    if !m.neuron.surrogate.is_valid() {
        return bad(format!(
            "neuron.surrogate has invalid parameters: {:?}",
            m.neuron.surrogate
        ));
    }
    if !(m.batch_norm.eps.is_finite() && m.batch_norm.eps > 0.0) {
        return bad(format!(
            "batch_norm.eps must be positive, found {}",
            m.batch_norm.eps
        ));
    }
    let a = &m.architecture;
    let i = &m.input;
    if (i.channels, i.height, i.width) != (a.channels, a.height, a.width) {
        return bad(format!(
            "input is {}x{}x{} but the architecture expects {}x{}x{}",
            i.channels, i.height, i.width, a.channels, a.height, a.width
        ));
    }
    if i.timesteps == 0 {
        return bad("input.timesteps must be at least 1".into());
    }
    if matches!(
        i.window,
        WindowSpec::Duration { bin_us: 0 } | WindowSpec::Count { bin_events: 0 }
    ) {
        return bad("input.window bins must be non-empty".into());
    }
    if m.class_names.len() != a.classes {
        return bad(format!(
            "{} class names for {} classes",
            m.class_names.len(),
            a.classes
        ));
    }
    Ok(())
}
