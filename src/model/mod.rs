//! Models: the explicit network graph ([`graph`]), the built-in architectures that generate
//! graphs ([`arch`]), parameter tensors ([`tensor`]) and the model file ([`file`](mod@file)).
//! A [`Model`] is metadata plus parameters plus the folded inference [`Network`] built from
//! them. Imports `snn` and `binner` (the input spec is the binner's own type).
//!
//! From Python:
//!
//! ```text
//! from safetensors import safe_open
//! import json
//! with safe_open("model.safetensors", "np") as f:
//!     meta = json.loads(f.metadata()["inflor"])
//!     graph = meta["graph"]["nodes"]            # op, parameters, tensor names, inputs
//!     w = f.get_tensor("conv1.weight")          # [Cout, Cin, Kh, Kw]
//! ```
//!
//! In an int8 model ([`quantize`]) the weights of the nodes `meta["quantization"]["nodes"]`
//! are `int8` tensors with a `float32` `<weight>_scale` tensor `[Cout]` beside them.
//!
//! `docs/model-format.md` documents the schema and the tensor semantics.

pub mod arch;
pub mod file;
pub mod graph;
pub mod quantize;
pub mod tensor;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::binner::{InputSpec, POLARITY_CHANNELS};
use crate::snn::network::Network;
use crate::snn::neuron::VTH;

pub use arch::{ArchError, ArchSpec, Architecture, BatchNormConfig, BatchNormKind};
pub use file::{Metadata, NeuronSpec, Provenance, default_input};
pub use graph::{BuildError, Graph, GraphError, GraphNode, NodeOp};
pub use quantize::{Method as QuantizeMethod, Quantization, QuantizeError, WeightType, quantize};
pub use tensor::{ParamRole, ParamSpec, Parameters, Tensor};

/// Why a model could not be loaded or assembled.
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
    #[error("not a valid safetensors file")]
    Container(#[from] safetensors::SafeTensorError),
    /// The `inflor` metadata entry is absent (a safetensors file from elsewhere).
    #[error(
        "no inflor metadata (__metadata__[\"{}\"] is missing)",
        file::METADATA_KEY
    )]
    MissingMetadata,
    /// The metadata is not the JSON expected, or its fields do not fit together.
    #[error("bad metadata: {0}")]
    BadMetadata(String),
    /// A format version this code does not read.
    #[error(
        "unsupported model format version {found} (this build reads versions {}..={})",
        file::OLDEST_VERSION,
        file::FORMAT_VERSION
    )]
    UnsupportedVersion {
        /// Version in the file.
        found: u64,
    },
    /// A version 1 file names an architecture that is not built in.
    #[error("unknown architecture {0:?} (known: tiny, vgg-snn, resnet19, resnet20)")]
    UnknownArchitecture(String),
    /// A version 1 file's architecture cannot be laid out for its input.
    #[error(transparent)]
    Arch(#[from] ArchError),
    /// The neuron model name is unknown.
    #[error("unknown neuron model {0:?} (known: srif, if_hard, lif_hard)")]
    UnknownNeuron(String),
    /// A tensor is stored in a type other than F32 (or I8 for the weights of int8 nodes).
    #[error("tensor {name} is {found}, expected {expected}")]
    WrongDtype {
        /// Tensor name.
        name: String,
        /// Its dtype.
        found: String,
        /// The dtype this tensor must have.
        expected: &'static str,
    },
    /// The graph is invalid or the tensors do not fit it.
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// Why a model could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// Serialising the container failed.
    #[error("cannot serialise model")]
    Container(#[from] safetensors::SafeTensorError),
    /// Serialising the metadata failed.
    #[error("cannot serialise metadata")]
    Metadata(#[from] serde_json::Error),
    /// The model's graph is invalid.
    #[error("invalid graph: {0}")]
    Invalid(String),
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

/// A loaded model: metadata (with the graph), parameters as stored, and the folded network
/// ready to share between streams.
#[derive(Debug, Clone)]
pub struct Model {
    /// The metadata, including the graph.
    pub metadata: Metadata,
    /// Parameters as stored (PyTorch layout, BN unfolded).
    pub parameters: Parameters,
    /// The inference network (BN folded, NHWC).
    pub network: Arc<Network>,
}

impl Model {
    /// Validates the metadata against the parameters and builds the network.
    pub fn new(metadata: Metadata, parameters: Parameters) -> Result<Self, LoadError> {
        validate(&metadata)?;
        let network = metadata.graph.network_with(
            &parameters,
            metadata.neuron.model,
            metadata.quantization.as_ref(),
        )?;
        Ok(Self {
            metadata,
            parameters,
            network: Arc::new(network),
        })
    }

    /// A built-in architecture with seeded random parameters (BN statistics not calibrated),
    /// tdBN, and [`default_input`] with `timesteps` frames.
    pub fn random(spec: ArchSpec, timesteps: usize, seed: u64) -> Result<Self, LoadError> {
        let graph = spec.graph(BatchNormConfig::default())?;
        let side = |v: usize| {
            u16::try_from(v)
                .map_err(|_| LoadError::BadMetadata(format!("input size {v} is too large")))
        };
        let input = default_input(side(spec.height)?, side(spec.width)?, timesteps);
        let parameters = graph.random_parameters(seed);
        let mut metadata = Metadata::new(graph, input)?;
        metadata.provenance.origin = "random".into();
        metadata.provenance.seed = Some(seed);
        metadata.provenance.architecture = Some(spec.arch.name().to_owned());
        Self::new(metadata, parameters)
    }

    /// The graph.
    pub fn graph(&self) -> &Graph {
        &self.metadata.graph
    }

    /// The input spec.
    pub fn input(&self) -> &InputSpec {
        &self.metadata.input
    }

    /// Rebuilds the network after the parameters (or the metadata) changed.
    pub fn rebuild(&mut self) -> Result<(), LoadError> {
        validate(&self.metadata)?;
        let network = self.metadata.graph.network_with(
            &self.parameters,
            self.metadata.neuron.model,
            self.metadata.quantization.as_ref(),
        )?;
        self.network = Arc::new(network);
        Ok(())
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
        let (metadata, parameters) = file::read(bytes)?;
        Self::new(metadata, parameters)
    }

    /// The `.safetensors` bytes of this model (always the current format version).
    pub fn to_bytes(&self) -> Result<Vec<u8>, SaveError> {
        file::write(&self.metadata, &self.parameters)
    }

    /// Writes the model to `path` atomically: to `path.partial` first, then renamed, so a
    /// crash never leaves a half-written model under the final name.
    pub fn save(&self, path: &Path) -> Result<(), SaveError> {
        let bytes = self.to_bytes()?;
        let io = |source| SaveError::Io {
            path: path.to_owned(),
            source,
        };
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&partial).map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&partial, path).map_err(io)
    }
}

/// Cross-field checks the types cannot express.
fn validate(m: &Metadata) -> Result<(), LoadError> {
    let bad = |s: String| Err(LoadError::BadMetadata(s));
    if m.neuron.vth != VTH {
        return bad(format!(
            "neuron.vth is {}, but the executors implement Vth = {VTH}",
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
    // The input's channels first: a 3-channel (RGB) graph fails later checks less clearly.
    if let Some([channels, ..]) = m.graph.input_shape()
        && channels != POLARITY_CHANNELS
    {
        return bad(format!(
            "the graph's input has {channels} channels; event frames have {POLARITY_CHANNELS} (OFF, ON)"
        ));
    }
    let checked = m.graph.check().map_err(BuildError::from)?;
    let input = checked.shapes[0];
    let i = &m.input;
    if (usize::from(i.height), usize::from(i.width)) != (input.height, input.width) {
        return bad(format!(
            "input is {}x{} but the graph's input is {}x{}",
            i.height, i.width, input.height, input.width
        ));
    }
    if let Err(e) = i.validate() {
        return bad(format!("input: {e}"));
    }
    let classes = checked.shapes.last().map_or(0, |s| s.len());
    if m.class_names.len() != classes {
        return bad(format!(
            "{} class names for {classes} classes",
            m.class_names.len()
        ));
    }
    Ok(())
}
