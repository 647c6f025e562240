//! `inflor train`: trains a model on a labelled dataset with surrogate-gradient BPTT (the
//! `train` module), shows progress per epoch, writes a checkpoint every epoch and exports the
//! runtime model file. Semantics and options are documented in `docs/training.md`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use inflor::binner::{InputSpec, SparseFrame};
use inflor::dataset::{Dataset, Sample, Split, SplitSpec};
use inflor::format::DecodeOptions;
use inflor::model::quantize::{quantizable_nodes, weight_of};
use inflor::model::tensor::Tensor;
use inflor::model::{
    ArchSpec, Architecture, BatchNormConfig, BatchNormKind, Metadata, Model, NeuronSpec,
    Parameters, Provenance, QuantizeMethod, file, quantize,
};
use inflor::snn::neuron::{Surrogate, VTH};
use inflor::train::data::{FrameCache, batch_frames, bin_bytes};
use inflor::train::{
    Loss, Net, OptimizerKind, Schedule, SpikingConfig, StepStats, TET_LAMBDA, TrainConfig,
    TrainGraph, Trainer,
};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::app::decode_args::DecodeArgs;
use crate::app::model::{InputArgs, NeuronArg};
use crate::app::{bad_input, check_output};

/// `inflor train` arguments.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// The dataset folder (class folders or the CIFAR10-DVS layout).
    pub dataset: PathBuf,
    /// Train/test split: auto, default, test-below:N, ratio:R or list:PATH (as `dataset info`).
    #[arg(long, default_value = "auto", value_parser = parse_split)]
    pub split: SplitSpec,
    /// Built-in architecture to train from random weights: tiny, vgg-snn, resnet19, resnet20.
    #[arg(long, default_value = "tiny", value_parser = parse_arch)]
    pub arch: Architecture,
    /// Start from this model file instead (its graph, input spec and weights: fine-tuning).
    #[arg(long, conflicts_with = "resume")]
    pub init: Option<PathBuf>,
    /// Continue the run saved in this checkpoint (every setting comes from it; --epochs may
    /// extend it).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// The input spec of a new model (ignored with --init and --resume).
    #[command(flatten)]
    pub input: InputArgs,
    /// Epochs (the cosine schedule's T_max).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub epochs: u64,
    /// Stop each epoch after this many steps (for checks and timing).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_steps: Option<u64>,
    /// Samples per step.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,
    /// Base learning rate.
    #[arg(long, default_value_t = 0.01)]
    pub lr: f64,
    /// SGD momentum (0 for plain SGD).
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Coupled L2 weight decay on conv and linear weights (not on BN or biases).
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f64,
    /// Learning-rate schedule over epochs.
    #[arg(long, value_enum, default_value_t = ScheduleArg::Cosine)]
    pub schedule: ScheduleArg,
    /// Optimiser (Adam uses PyTorch's β = (0.9, 0.999), ε = 1e-8).
    #[arg(long, value_enum, default_value_t = OptimizerArg::Sgd)]
    pub optimizer: OptimizerArg,
    /// Seed of the weights, the sample order and the augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// No random flip and roll.
    #[arg(long)]
    pub no_augment: bool,
    /// Augment with the roll only (for data that is not mirror symmetric, such as digits).
    #[arg(long)]
    pub no_flip: bool,
    /// Visit training samples in dataset order every epoch.
    #[arg(long)]
    pub no_shuffle: bool,
    /// Loss: ce (cross-entropy on the output averaged over T) or tet.
    #[arg(long, value_enum, default_value_t = LossArg::Ce)]
    pub loss: LossArg,
    /// TET's MSE weight λ.
    #[arg(long, default_value_t = TET_LAMBDA)]
    pub tet_lambda: f64,
    /// Surrogate gradient KIND:PARAM: dspike:B[:R] (temperature B, region R, default
    /// dspike:3:0.5), rectangle:WIDTH, triangle:GAMMA, sigmoid:ALPHA.
    #[arg(long, default_value = "dspike:3", value_parser = parse_surrogate)]
    pub surrogate: Surrogate,
    /// Train without MPR (dO/dH = g'(H − Vth) instead of g'(φ(H) − Vth)·φ'(H)).
    #[arg(long)]
    pub no_mpr: bool,
    /// Detach the spike in the reset term (SpikingJelly's detach_reset).
    #[arg(long)]
    pub detach_reset: bool,
    /// Neuron model of a new model (ignored with --init, which keeps the file's).
    #[arg(long, value_enum, default_value_t = NeuronArg::Srif)]
    pub neuron: NeuronArg,
    /// Membrane decay of lif-hard, in (0, 1].
    #[arg(long, default_value_t = inflor::snn::neuron::DEFAULT_LIF_TAU)]
    pub tau: f32,
    /// Ordinary batch norm instead of tdBN in a new model.
    #[arg(long)]
    pub plain_bn: bool,
    /// Worker threads (default: all cores). A run is deterministic for a seed and a count.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// Folder of the binned-frame cache (default: $XDG_CACHE_HOME/inflor/frames or
    /// ~/.cache/inflor/frames).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Bin every recording afresh and keep nothing on disk.
    #[arg(long)]
    pub no_cache: bool,
    /// The exported model file (.safetensors); the checkpoint goes beside it as OUT.ckpt.
    #[arg(long)]
    pub out: PathBuf,
    /// Overwrite OUT (and its checkpoint) if they exist.
    #[arg(long)]
    pub force: bool,
    /// Quantization-aware training: the forward pass uses the int8 weights `inflor model
    /// quantize` would give (fake-quant, straight-through gradients) and OUT is the int8
    /// model. The checkpoint keeps the float weights.
    #[arg(long, value_enum, conflicts_with = "resume")]
    pub quantize: Option<QuantizeArg>,
    /// Append one JSON object per epoch to this file.
    #[arg(long)]
    pub metrics_out: Option<PathBuf>,
    /// Write each step's exact input frames [T, B, C, H, W] (after augmentation) and labels
    /// [B] as FILE-stem.eE.sS.npy and FILE-stem.eE.sS.labels.npy (f32).
    #[arg(long)]
    pub dump_batch: Option<PathBuf>,
    /// How to read the recordings.
    #[command(flatten)]
    pub decode: DecodeArgs,
}

/// Learning-rate schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScheduleArg {
    /// PyTorch's CosineAnnealingLR with T_max = epochs, stepped per epoch.
    Cosine,
    /// The base rate throughout.
    Constant,
}

/// Optimisers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OptimizerArg {
    /// SGD with momentum (torch.optim.SGD).
    Sgd,
    /// Adam (torch.optim.Adam).
    Adam,
}

/// Weight types of quantization-aware training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QuantizeArg {
    /// Symmetric int8 weights, one max-abs scale per output channel.
    Int8,
}

/// The [`RunRecord::quantize`] value of int8 quantization-aware training.
const INT8: &str = "int8";

/// Losses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LossArg {
    /// Cross-entropy on the mean output over T.
    Ce,
    /// Temporal efficient training: per-timestep CE plus λ·MSE to 1.
    Tet,
}

fn parse_split(s: &str) -> Result<SplitSpec, String> {
    s.parse()
}

fn parse_arch(s: &str) -> Result<Architecture, String> {
    s.parse()
        .map_err(|e: inflor::model::arch::UnknownArchitecture| e.to_string())
}

/// Parses `KIND:PARAM` (and `dspike:B:R`).
pub fn parse_surrogate(s: &str) -> Result<Surrogate, String> {
    let mut parts = s.split(':');
    let kind = parts.next().unwrap_or_default();
    let params: Vec<f32> = parts
        .map(|p| {
            p.trim()
                .parse::<f32>()
                .map_err(|_| format!("{p:?} in {s:?} is not a number"))
        })
        .collect::<Result<_, _>>()?;
    let one = |what: &str| -> Result<f32, String> {
        match params.as_slice() {
            [v] => Ok(*v),
            _ => Err(format!("expected {kind}:{what}, found {s:?}")),
        }
    };
    let surrogate = match kind {
        "dspike" => match params.as_slice() {
            [b] => Surrogate::Dspike {
                b: *b,
                r: inflor::snn::neuron::DEFAULT_DSPIKE_REGION,
            },
            [b, r] => Surrogate::Dspike { b: *b, r: *r },
            _ => return Err(format!("expected dspike:B or dspike:B:R, found {s:?}")),
        },
        "rectangle" => Surrogate::Rectangle {
            width: one("WIDTH")?,
        },
        "triangle" => Surrogate::Triangle {
            gamma: one("GAMMA")?,
        },
        "sigmoid" => Surrogate::Sigmoid {
            alpha: one("ALPHA")?,
        },
        _ => {
            return Err(format!(
                "unknown surrogate {kind:?} (known: dspike, rectangle, triangle, sigmoid)"
            ));
        }
    };
    if !surrogate.is_valid() {
        return Err(format!(
            "surrogate parameters must be finite and positive: {s:?}"
        ));
    }
    Ok(surrogate)
}

/// Everything about a run that the exported model and the checkpoint record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The dataset folder as given.
    pub dataset: String,
    /// The split rule applied.
    pub split: String,
    /// Architecture, or the --init model file.
    pub start: String,
    /// Every optimisation hyper-parameter.
    pub config: TrainConfig,
    /// Neuron training settings.
    pub detach_reset: bool,
    /// Quantization-aware training's weight type (`int8`), or none for a float run.
    #[serde(default)]
    pub quantize: Option<String>,
    /// Threads the run used (the results are deterministic for a seed and a count).
    pub threads: usize,
    /// Training and test recordings used (after skipping bad ones).
    pub train_samples: usize,
    /// Test recordings used.
    pub test_samples: usize,
    /// Recordings skipped because they failed to decode or bin.
    pub skipped: Vec<String>,
    /// Per epoch.
    pub history: Vec<EpochRecord>,
    /// Best test accuracy over epochs.
    pub best_test_accuracy: f64,
    /// Its epoch (1-based).
    pub best_epoch: usize,
    /// Test accuracy after the last epoch.
    pub final_test_accuracy: f64,
    /// The command line of the run (of the first invocation when resumed, then each resume).
    pub command_lines: Vec<String>,
    /// Optimiser steps taken (Adam's bias correction needs it on resume).
    pub optimizer_steps: u64,
}

/// One epoch's results (also the `--metrics-out` line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: usize,
    /// Learning rate used.
    pub lr: f64,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training top-1 accuracy (with augmentation, in training mode).
    pub train_accuracy: f64,
    /// Test loss (evaluation mode).
    pub test_loss: f64,
    /// Test top-1 accuracy.
    pub test_accuracy: f64,
    /// Mean firing rate of each neuron layer on the training batches, by node name.
    pub firing_rates: Vec<(String, f64)>,
    /// Training samples per second (forward, backward and update).
    pub samples_per_s: f64,
    /// Wall-clock seconds of the epoch including evaluation.
    pub seconds: f64,
}

/// The recordings of one split, binned.
pub struct Binned {
    /// Frames per sample.
    pub frames: Vec<Vec<SparseFrame>>,
    /// Labels.
    pub labels: Vec<usize>,
    /// The samples they came from.
    pub samples: Vec<Sample>,
}

/// Bins every recording of `samples` (in parallel on the current pool), through `cache` when
/// given. Recordings that fail are reported on stderr with their path and skipped.
pub fn bin_samples(
    samples: &[&Sample],
    input: &InputSpec,
    options: &DecodeOptions,
    cache: Option<&FrameCache>,
    what: &str,
    skipped: &mut Vec<String>,
) -> Binned {
    let bar = crate::app::progress_bar(samples.len() as u64, what);
    let results: Vec<_> = samples
        .par_iter()
        .map(|s| {
            let r = match cache {
                Some(c) => c.load(&s.path).map(|(f, _)| f),
                None => std::fs::read(&s.path)
                    .map_err(|source| inflor::train::data::DataError::Io {
                        path: s.path.clone(),
                        source,
                    })
                    .and_then(|bytes| bin_bytes(&s.path, &bytes, input, options)),
            };
            bar.inc(1);
            r
        })
        .collect();
    bar.finish_and_clear();
    let mut out = Binned {
        frames: Vec::new(),
        labels: Vec::new(),
        samples: Vec::new(),
    };
    for (s, r) in samples.iter().zip(results) {
        match r {
            Ok(f) => {
                out.frames.push(f);
                out.labels.push(s.label);
                out.samples.push((*s).clone());
            }
            Err(e) => {
                eprintln!("skipping {}: {e}", s.path.display());
                skipped.push(s.relative.clone());
            }
        }
    }
    out
}

/// The default frame cache folder.
fn default_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir).join("inflor").join("frames");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home)
            .join(".cache")
            .join("inflor")
            .join("frames");
    }
    std::env::temp_dir().join("inflor-frames")
}

/// The checkpoint path of an export path.
pub fn checkpoint_path(out: &Path) -> PathBuf {
    let mut p = out.as_os_str().to_owned();
    p.push(".ckpt");
    PathBuf::from(p)
}

/// The metadata key under which the run record is stored.
const RECORD_KEY: &str = "training";
/// Tensor name prefix of optimiser state in a checkpoint.
const OPT_PREFIX: &str = "optimizer.";

/// Writes `bytes` to `path` atomically (temporary file in the same folder, then rename).
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(format!(".{}.partial", std::process::id()));
    let partial = PathBuf::from(partial);
    let result = std::fs::File::create(&partial)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&partial, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// A run being set up: the model's metadata, the trainer and the record.
struct Run {
    metadata: Metadata,
    trainer: Trainer,
    record: RunRecord,
    /// Epochs already done.
    done: usize,
}

fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// Builds the run from a checkpoint.
fn resume(path: &Path, args: &TrainArgs) -> anyhow::Result<Run> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("reading checkpoint {}", path.display()))
        .map_err(bad_input)?;
    let (mut metadata, mut tensors) = file::read(&bytes)
        .with_context(|| format!("reading checkpoint {}", path.display()))
        .map_err(bad_input)?;
    let record: RunRecord = metadata
        .provenance
        .extra
        .remove(RECORD_KEY)
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or_else(|| {
            bad_input(anyhow::anyhow!(
                "{} is not an inflor train checkpoint (no training record)",
                path.display()
            ))
        })?;
    let mut slots = Vec::new();
    tensors.retain(|name, t| {
        if let Some(rest) = name.strip_prefix(OPT_PREFIX) {
            slots.push((rest.to_owned(), std::mem::take(&mut t.data)));
            false
        } else {
            true
        }
    });
    let mut record = record;
    record.command_lines.push(command_line());
    if args.epochs as usize > record.config.epochs {
        record.config.epochs = args.epochs as usize;
    }
    let spiking = spiking_of(&metadata.neuron, record.detach_reset);
    let graph = TrainGraph::from_graph(&metadata.graph, spiking).map_err(bad_input)?;
    let mut net = Net::from_parameters(graph, &tensors).map_err(bad_input)?;
    match record.quantize.as_deref() {
        None => {}
        Some(INT8) => fake_quantize(&mut net, &metadata, &tensors)?,
        Some(other) => {
            return Err(bad_input(anyhow::anyhow!(
                "{}: unknown quantization {other:?} in the training record",
                path.display()
            )));
        }
    }
    let mut trainer = Trainer::new(net, record.config.clone(), metadata.input.timesteps);
    trainer.optimizer.steps = record.optimizer_steps;
    for (name, data) in slots {
        let (index, which) = name
            .split_once('.')
            .and_then(|(i, w)| Some((i.parse::<usize>().ok()?, w)))
            .ok_or_else(|| bad_input(anyhow::anyhow!("checkpoint tensor {OPT_PREFIX}{name}")))?;
        let Some(slot) = trainer.optimizer.slots.get_mut(index) else {
            return Err(bad_input(anyhow::anyhow!(
                "checkpoint has optimiser state for parameter {index}, the model has {}",
                trainer.net.params.len()
            )));
        };
        if data.len() != trainer.net.params[index].value.len() {
            return Err(bad_input(anyhow::anyhow!(
                "checkpoint optimiser state {name} has the wrong length"
            )));
        }
        match which {
            "first" => slot.first = data,
            "second" => slot.second = data,
            _ => return Err(bad_input(anyhow::anyhow!("checkpoint tensor {name}"))),
        }
    }
    let done = record.history.len();
    Ok(Run {
        metadata,
        trainer,
        record,
        done,
    })
}

/// Turns on int8 fake-quant for exactly the weights post-training quantization of this model
/// would make int8 ([`quantizable_nodes`]), and says which on stderr.
fn fake_quantize(
    net: &mut Net<f32>,
    metadata: &Metadata,
    parameters: &Parameters,
) -> anyhow::Result<()> {
    let model = Model::new(metadata.clone(), parameters.clone())
        .context("the model to train does not load")
        .map_err(bad_input)?;
    let nodes = quantizable_nodes(&model);
    if nodes.is_empty() {
        return Err(bad_input(anyhow::anyhow!(
            "--quantize int8: no conv2d or linear node of this model reads binary spikes; nothing to quantize"
        )));
    }
    let weights: Vec<String> = nodes
        .iter()
        .filter_map(|n| weight_of(model.graph(), n).map(str::to_owned))
        .collect();
    net.fake_quantize(&weights)
        .context("fake-quantizing the weights")?;
    eprintln!(
        "quantization-aware training: int8 weights in {} of the model's conv2d and linear nodes ({})",
        nodes.len(),
        nodes.join(", ")
    );
    Ok(())
}

fn spiking_of(neuron: &NeuronSpec, detach_reset: bool) -> SpikingConfig {
    SpikingConfig {
        kind: neuron.model,
        mpr: neuron.mpr,
        surrogate: neuron.surrogate,
        detach_reset,
    }
}

/// Builds a new run (random weights of `--arch`, or `--init`).
fn start(args: &TrainArgs, dataset: &Dataset, threads: usize) -> anyhow::Result<Run> {
    let classes = dataset.classes.len();
    let (mut metadata, parameters, start) = match &args.init {
        Some(path) => {
            let model = crate::app::load_model(path)?;
            if model.metadata.quantization.is_some() {
                // Training moves weights off the int8 grid, so the export would be refused;
                // fine-tune the float model and quantize the result instead.
                return Err(bad_input(anyhow::anyhow!(
                    "{} is an int8 model: train from its float original, then `inflor model quantize`",
                    path.display()
                )));
            }
            let have = model.metadata.class_names.len();
            if have != classes {
                return Err(bad_input(anyhow::anyhow!(
                    "{} has {have} classes, the dataset {classes}",
                    path.display()
                )));
            }
            (
                model.metadata,
                model.parameters,
                format!("init:{}", path.display()),
            )
        }
        None => {
            let input = args.input.spec()?;
            let spec = ArchSpec {
                arch: args.arch,
                channels: inflor::binner::POLARITY_CHANNELS,
                height: usize::from(input.height),
                width: usize::from(input.width),
                classes,
            };
            let bn = BatchNormConfig {
                kind: if args.plain_bn {
                    BatchNormKind::Plain
                } else {
                    BatchNormKind::Td
                },
                ..BatchNormConfig::default()
            };
            let graph = spec.graph(bn).map_err(bad_input)?;
            let parameters = graph.random_parameters(args.seed);
            let mut metadata = Metadata::new(graph, input)?;
            metadata.neuron.model = args.neuron.kind(args.tau);
            (metadata, parameters, format!("arch:{}", args.arch.name()))
        }
    };
    metadata.neuron.surrogate = args.surrogate;
    metadata.neuron.mpr = !args.no_mpr;
    metadata.neuron.vth = VTH;
    metadata.class_names = dataset.classes.clone();
    let config = TrainConfig {
        batch: args.batch as usize,
        epochs: args.epochs as usize,
        lr: args.lr,
        optimizer: match args.optimizer {
            OptimizerArg::Sgd => OptimizerKind::Sgd {
                momentum: args.momentum,
            },
            OptimizerArg::Adam => OptimizerKind::ADAM,
        },
        weight_decay: args.weight_decay,
        schedule: match args.schedule {
            ScheduleArg::Cosine => Schedule::Cosine,
            ScheduleArg::Constant => Schedule::Constant,
        },
        seed: args.seed,
        augment: !args.no_augment,
        flip: !args.no_flip,
        shuffle: !args.no_shuffle,
        loss: match args.loss {
            LossArg::Ce => Loss::Ce,
            LossArg::Tet => Loss::Tet {
                lambda: args.tet_lambda,
            },
        },
        max_steps: args.max_steps.map(|v| v as usize),
    };
    let spiking = spiking_of(&metadata.neuron, args.detach_reset);
    let graph = TrainGraph::from_graph(&metadata.graph, spiking).map_err(bad_input)?;
    let mut net = Net::from_parameters(graph, &parameters).map_err(bad_input)?;
    if args.quantize.is_some() {
        fake_quantize(&mut net, &metadata, &parameters)?;
    }
    let trainer = Trainer::new(net, config.clone(), metadata.input.timesteps);
    let record = RunRecord {
        dataset: args.dataset.display().to_string(),
        split: dataset.split.to_string(),
        start,
        config,
        detach_reset: args.detach_reset,
        quantize: args.quantize.map(|QuantizeArg::Int8| INT8.to_owned()),
        threads,
        train_samples: 0,
        test_samples: 0,
        skipped: Vec::new(),
        history: Vec::new(),
        best_test_accuracy: 0.0,
        best_epoch: 0,
        final_test_accuracy: 0.0,
        command_lines: vec![command_line()],
        optimizer_steps: 0,
    };
    Ok(Run {
        metadata,
        trainer,
        record,
        done: 0,
    })
}

/// The model file of the run's current weights, with the record in its provenance.
fn export_metadata(run: &Run, dataset_name: &str) -> Metadata {
    let mut m = run.metadata.clone();
    m.provenance = Provenance {
        created_by: format!("inflor {} train", env!("CARGO_PKG_VERSION")),
        origin: "trained".into(),
        architecture: run
            .record
            .start
            .strip_prefix("arch:")
            .map(str::to_owned)
            .or(run.metadata.provenance.architecture.clone()),
        seed: Some(run.record.config.seed),
        dataset: Some(dataset_name.to_owned()),
        extra: Default::default(),
    };
    m.provenance.extra.insert(
        RECORD_KEY.to_owned(),
        serde_json::to_value(&run.record).unwrap_or_default(),
    );
    m
}

/// Saves the checkpoint (weights, BN statistics, optimiser state, record) atomically.
fn save_checkpoint(run: &Run, path: &Path, dataset_name: &str) -> anyhow::Result<()> {
    let metadata = export_metadata(run, dataset_name);
    let mut tensors: Parameters = run.trainer.net.to_parameters();
    for (i, slot) in run.trainer.optimizer.slots.iter().enumerate() {
        for (which, data) in [("first", &slot.first), ("second", &slot.second)] {
            if !data.is_empty() {
                tensors.insert(
                    format!("{OPT_PREFIX}{i}.{which}"),
                    Tensor {
                        shape: vec![data.len()],
                        data: data.clone(),
                    },
                );
            }
        }
    }
    let bytes = file::write(&metadata, &tensors).context("encoding the checkpoint")?;
    write_atomic(path, &bytes)
}

/// Top-1 accuracy and mean loss of the trainer's own evaluation pass over `data`, with the
/// logits of every sample (`[N][classes]`).
pub fn evaluate(trainer: &mut Trainer, data: &Binned, batch: usize) -> (f64, f64, Vec<f32>) {
    let t = trainer.timesteps;
    let (mut correct, mut loss, mut logits) = (0usize, 0.0, Vec::new());
    let mut frames = Vec::new();
    for (chunk, labels) in data.frames.chunks(batch).zip(data.labels.chunks(batch)) {
        let views: Vec<&[SparseFrame]> = chunk.iter().map(Vec::as_slice).collect();
        batch_frames(&views, t, &mut frames);
        let (l, stats) = trainer.evaluate(&frames, labels);
        correct += stats.correct;
        loss += stats.loss * labels.len() as f64;
        logits.extend(l);
    }
    let n = data.labels.len().max(1) as f64;
    (correct as f64 / n, loss / n, logits)
}

/// The `--dump-batch` file names of one step.
fn dump_paths(base: &Path, epoch: usize, step: usize) -> (PathBuf, PathBuf) {
    let stem = base.with_extension("");
    let name = |suffix: &str| {
        let mut s = stem.as_os_str().to_owned();
        s.push(format!(".e{epoch}.s{step}{suffix}"));
        PathBuf::from(s)
    };
    (name(".npy"), name(".labels.npy"))
}

/// The frames of a step after augmentation, in `[T][B][C][H][W]`.
fn augmented(
    trainer: &Trainer,
    frames: &[f32],
    batch: usize,
    epoch: usize,
    step: usize,
) -> Vec<f32> {
    let s = trainer.net.graph().input_shape();
    let (t, c, h, w) = (trainer.timesteps, s.channels, s.height, s.width);
    let transforms = trainer.transforms(epoch, step, batch);
    let mut nhwc = vec![0.0; frames.len()];
    inflor::train::augment::to_nhwc(frames, (t, batch, c, h, w), &transforms, &mut nhwc);
    let mut out = vec![0.0; frames.len()];
    for (src, dst) in nhwc
        .chunks_exact(c * h * w)
        .zip(out.chunks_exact_mut(c * h * w))
    {
        for p in 0..h * w {
            for ch in 0..c {
                dst[ch * h * w + p] = src[p * c + ch];
            }
        }
    }
    out
}

/// Runs the command.
pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let ckpt = checkpoint_path(&args.out);
    if args.resume.is_none() {
        check_output(&args.out, args.force)?;
        check_output(&ckpt, args.force)?;
    }
    let threads = args.threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        usize::from,
    );
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("starting worker threads")?;
    pool.install(|| train(&args, &ckpt, threads))
}

fn train(args: &TrainArgs, ckpt: &Path, threads: usize) -> anyhow::Result<()> {
    let dataset = Dataset::open(&args.dataset, &args.split).map_err(bad_input)?;
    let mut run = match &args.resume {
        Some(path) => resume(path, args)?,
        None => start(args, &dataset, threads)?,
    };
    if run.metadata.class_names != dataset.classes {
        return Err(bad_input(anyhow::anyhow!(
            "the model's classes {:?} are not the dataset's {:?}",
            run.metadata.class_names,
            dataset.classes
        )));
    }
    let dataset_name = args.dataset.file_name().map_or_else(
        || args.dataset.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let input = run.metadata.input;
    let options = args.decode.options();
    let cache = if args.no_cache {
        None
    } else {
        let dir = args.cache.clone().unwrap_or_else(default_cache);
        Some(FrameCache::new(&dir, input, options.clone()).map_err(bad_input)?)
    };
    let started = Instant::now();
    let mut skipped = Vec::new();
    let train_list: Vec<&Sample> = dataset.split_samples(Split::Train).collect();
    let test_list: Vec<&Sample> = dataset.split_samples(Split::Test).collect();
    let train_data = bin_samples(
        &train_list,
        &input,
        &options,
        cache.as_ref(),
        "binning train",
        &mut skipped,
    );
    let test_data = bin_samples(
        &test_list,
        &input,
        &options,
        cache.as_ref(),
        "binning test",
        &mut skipped,
    );
    if train_data.labels.is_empty() {
        return Err(bad_input(anyhow::anyhow!(
            "{}: no usable training recordings",
            args.dataset.display()
        )));
    }
    run.record.train_samples = train_data.labels.len();
    run.record.test_samples = test_data.labels.len();
    run.record.skipped = skipped;
    eprintln!(
        "{}: {} train, {} test recordings ({} skipped), binned in {:.1} s; {} threads",
        args.dataset.display(),
        train_data.labels.len(),
        test_data.labels.len(),
        run.record.skipped.len(),
        started.elapsed().as_secs_f64(),
        threads
    );
    let mut metrics = match &args.metrics_out {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))
                .map_err(bad_input)?,
        )),
        None => None,
    };
    let batch = run.trainer.config.batch;
    let epochs = run.trainer.config.epochs;
    let n = train_data.labels.len();
    let steps_per_epoch = n.div_ceil(batch);
    let steps = run
        .trainer
        .config
        .max_steps
        .map_or(steps_per_epoch, |m| m.min(steps_per_epoch));
    let neurons: Vec<String> = run
        .trainer
        .net
        .graph()
        .nodes()
        .iter()
        .filter(|node| matches!(node.op, inflor::train::TrainOp::Neuron(_)))
        .map(|node| node.name.clone())
        .collect();
    let mut frames = Vec::new();
    for epoch in run.done..epochs {
        let t0 = Instant::now();
        let lr = run.trainer.rate(epoch);
        let order = run.trainer.order(n, epoch);
        let bar = crate::app::progress_bar(steps as u64, &format!("epoch {}/{epochs}", epoch + 1));
        let (mut loss_sum, mut correct, mut seen) = (0.0, 0usize, 0usize);
        let mut firing = vec![0.0; neurons.len()];
        for step in 0..steps {
            let idx = &order[step * batch..((step + 1) * batch).min(n)];
            let views: Vec<&[SparseFrame]> = idx
                .iter()
                .map(|&i| train_data.frames[i].as_slice())
                .collect();
            let labels: Vec<usize> = idx.iter().map(|&i| train_data.labels[i]).collect();
            batch_frames(&views, run.trainer.timesteps, &mut frames);
            if let Some(base) = &args.dump_batch {
                let (fp, lp) = dump_paths(base, epoch, step);
                let s = run.trainer.net.graph().input_shape();
                let dims = [
                    run.trainer.timesteps,
                    labels.len(),
                    s.channels,
                    s.height,
                    s.width,
                ];
                let data = augmented(&run.trainer, &frames, labels.len(), epoch, step);
                let write = |path: &Path, dims: &[usize], values: &[f32]| -> anyhow::Result<()> {
                    let f = std::fs::File::create(path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    inflor::binner::npy::write_f32(std::io::BufWriter::new(f), dims, values)
                        .with_context(|| format!("writing {}", path.display()))
                };
                write(&fp, &dims, &data)?;
                let l: Vec<f32> = labels.iter().map(|&v| v as f32).collect();
                write(&lp, &[labels.len()], &l)?;
            }
            let transforms = run.trainer.transforms(epoch, step, labels.len());
            let stats: StepStats = run.trainer.step(&frames, &labels, &transforms, lr);
            loss_sum += stats.loss * labels.len() as f64;
            correct += stats.correct;
            seen += labels.len();
            for (acc, (_, rate)) in firing.iter_mut().zip(&stats.firing) {
                *acc += rate * labels.len() as f64;
            }
            let elapsed = t0.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "{:.1} samples/s, loss {:.4}, acc {:.1}%",
                seen as f64 / elapsed,
                loss_sum / seen as f64,
                100.0 * correct as f64 / seen as f64
            ));
            bar.inc(1);
        }
        bar.finish_and_clear();
        let train_seconds = t0.elapsed().as_secs_f64();
        let (test_accuracy, test_loss, _) = evaluate(&mut run.trainer, &test_data, batch.max(32));
        let record = EpochRecord {
            epoch: epoch + 1,
            lr,
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: correct as f64 / seen.max(1) as f64,
            test_loss,
            test_accuracy,
            firing_rates: neurons
                .iter()
                .cloned()
                .zip(firing.iter().map(|f| f / seen.max(1) as f64))
                .collect(),
            samples_per_s: seen as f64 / train_seconds.max(1e-9),
            seconds: t0.elapsed().as_secs_f64(),
        };
        println!(
            "epoch {:>3}/{epochs}  lr {:.5}  train loss {:.4} acc {:5.1}%  test loss {:.4} acc {:5.1}%  \
             {:.1} samples/s  {:.1} s",
            record.epoch,
            lr,
            record.train_loss,
            100.0 * record.train_accuracy,
            record.test_loss,
            100.0 * record.test_accuracy,
            record.samples_per_s,
            record.seconds
        );
        if let Some(m) = metrics.as_mut() {
            serde_json::to_writer(&mut *m, &record)?;
            writeln!(m)?;
            m.flush()?;
        }
        if record.test_accuracy > run.record.best_test_accuracy || run.record.best_epoch == 0 {
            run.record.best_test_accuracy = record.test_accuracy;
            run.record.best_epoch = record.epoch;
        }
        run.record.final_test_accuracy = record.test_accuracy;
        run.record.history.push(record);
        run.record.optimizer_steps = run.trainer.optimizer.steps;
        run.done = epoch + 1;
        save_checkpoint(&run, ckpt, &dataset_name)?;
    }
    let metadata = export_metadata(&run, &dataset_name);
    let mut model = Model::new(metadata, run.trainer.net.to_parameters())
        .context("the trained model does not load (a bug)")?;
    if run.record.quantize.is_some() {
        // The same quantization as the fake-quant forward pass (one shared definition), so
        // the exported int8 model is the network whose test accuracy was reported.
        model = quantize(&model, QuantizeMethod::MaxAbs)
            .context("quantizing the trained model (a bug)")?;
    }
    model
        .save(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {} (final test accuracy {:.2}%, best {:.2}% at epoch {}; {:.1} s)",
        args.out.display(),
        100.0 * run.record.final_test_accuracy,
        100.0 * run.record.best_test_accuracy,
        run.record.best_epoch,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surrogates_parse_and_reject_clearly() {
        assert_eq!(
            parse_surrogate("dspike:3"),
            Ok(Surrogate::Dspike { b: 3.0, r: 0.5 })
        );
        assert_eq!(
            parse_surrogate("dspike:2:1"),
            Ok(Surrogate::Dspike { b: 2.0, r: 1.0 })
        );
        assert_eq!(
            parse_surrogate("sigmoid:4"),
            Ok(Surrogate::Sigmoid { alpha: 4.0 })
        );
        assert!(parse_surrogate("rectangle").unwrap_err().contains("WIDTH"));
        assert!(parse_surrogate("zif:1").unwrap_err().contains("unknown"));
        assert!(
            parse_surrogate("triangle:-1")
                .unwrap_err()
                .contains("positive")
        );
        assert!(
            parse_surrogate("dspike:x")
                .unwrap_err()
                .contains("not a number")
        );
    }

    #[test]
    fn dump_names_carry_epoch_and_step() {
        let (f, l) = dump_paths(Path::new("/d/batch.npy"), 2, 7);
        assert_eq!(f, Path::new("/d/batch.e2.s7.npy"));
        assert_eq!(l, Path::new("/d/batch.e2.s7.labels.npy"));
    }
}
