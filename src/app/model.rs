//! `inflor model`: show a model file (`info`), create a randomly initialised one with
//! calibrated BN statistics (`init`), or quantize one to int8 weights (`quantize`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use inflor::binner::{InputSpec, Normalization, POLARITY_CHANNELS, ResizeMode, WindowPolicy};
use inflor::calibrate::{Calibration, CalibrationError, calibrate};
use inflor::exec::ExecutorKind;
use inflor::model::{
    ArchSpec, Architecture, BatchNormConfig, BatchNormKind, Metadata, Model, NodeOp, Provenance,
    QuantizeError, QuantizeMethod,
};
use inflor::snn::{NeuronKind, Op};

use crate::app::{bad_input, check_output};

/// `inflor model` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ModelCommand {
    /// Print a model's metadata, size, work per timestep and layer table.
    Info(InfoArgs),
    /// Write a randomly initialised model whose BN statistics are calibrated on seeded
    /// synthetic inputs so hidden layers fire at a realistic rate.
    Init(InitArgs),
    /// Write an int8 copy of a float model (post-training quantization: one scale per output
    /// channel, every conv and linear that reads spikes), reporting test-split accuracy
    /// before and after when given a dataset.
    Quantize(QuantizeArgs),
}

/// `inflor model quantize` arguments.
#[derive(Debug, clap::Args)]
pub struct QuantizeArgs {
    /// The float model (.safetensors).
    pub model: PathBuf,
    /// The int8 model to write (.safetensors).
    pub out: PathBuf,
    /// A dataset folder: classify its test split with both models and report their accuracy.
    #[arg(long, value_name = "DATASET")]
    pub calibrate: Option<PathBuf>,
    /// Each channel's scale is this percentile of its weight magnitudes (100: the largest,
    /// nothing clipped).
    #[arg(long, default_value_t = 100.0)]
    pub percentile: f64,
    /// Recordings classified in parallel for the accuracy report.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: u16,
    /// Overwrite the output file if it exists.
    #[arg(long)]
    pub force: bool,
    /// How to read the dataset's recordings.
    #[command(flatten)]
    pub decode: crate::app::decode_args::DecodeArgs,
}

/// `inflor model info` arguments.
#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// The model file (.safetensors).
    pub model: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Neuron choices on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NeuronArg {
    /// Soft-reset IF (InfLoR's SRIF).
    Srif,
    /// Hard-reset IF.
    IfHard,
    /// Hard-reset LIF (see --tau).
    LifHard,
}

impl NeuronArg {
    /// The neuron kind, with `tau` for LIF.
    pub fn kind(self, tau: f32) -> NeuronKind {
        match self {
            NeuronArg::Srif => NeuronKind::Srif,
            NeuronArg::IfHard => NeuronKind::IfHard,
            NeuronArg::LifHard => NeuronKind::LifHard { tau },
        }
    }
}

/// How events become frames, as a model's input spec (shared by commands that create models).
#[derive(Debug, Clone, clap::Args)]
pub struct InputArgs {
    /// Input as CxHxW (channels x height x width); C must be 2 (OFF and ON event counts).
    #[arg(long, default_value = "2x48x48", value_parser = parse_input)]
    pub input: (usize, u16, u16),
    /// Frames per classification (T).
    #[arg(long, default_value_t = 10)]
    pub timesteps: usize,
    /// How events are grouped into the T frames: `equal-count` or `equal-duration` (a whole
    /// recording in T bins, as CIFAR10-DVS is trained), or `duration:US` / `count:N` (a stream
    /// in bins of US microseconds or N events, T bins per classification).
    #[arg(long, default_value = "equal-count")]
    pub window: WindowPolicy,
    /// How the sensor's count frame is resized to the input (torch `interpolate` modes).
    #[arg(long, value_enum, default_value_t = ResizeMode::Bilinear)]
    pub resize: ResizeMode,
    /// How each frame's values are normalised after resizing.
    #[arg(long, value_enum, default_value_t = Normalization::None)]
    pub normalization: Normalization,
}

impl InputArgs {
    /// The input spec these arguments describe.
    pub fn spec(&self) -> anyhow::Result<InputSpec> {
        let (_, height, width) = self.input;
        let spec = InputSpec {
            height,
            width,
            timesteps: self.timesteps,
            window: self.window,
            resize: self.resize,
            normalization: self.normalization,
        };
        spec.validate().map_err(bad_input)?;
        Ok(spec)
    }
}

/// `inflor model init` arguments.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Architecture: tiny, vgg-snn, resnet19, resnet20.
    #[arg(long, value_parser = parse_arch)]
    pub arch: Architecture,
    /// Number of classes.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub classes: u64,
    /// The input spec.
    #[command(flatten)]
    pub input: InputArgs,
    /// Seed of the weights and of the calibration inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Neuron model.
    #[arg(long, value_enum, default_value_t = NeuronArg::Srif)]
    pub neuron: NeuronArg,
    /// Membrane decay of lif-hard, in (0, 1].
    #[arg(long, default_value_t = inflor::snn::neuron::DEFAULT_LIF_TAU)]
    pub tau: f32,
    /// Ordinary batch norm instead of tdBN (threshold-dependent, scaled by α·Vth).
    #[arg(long)]
    pub plain_bn: bool,
    /// Comma-separated class names (default class0, class1, ...).
    #[arg(long, value_delimiter = ',')]
    pub class_names: Option<Vec<String>>,
    /// Firing rate the calibration aims for in every hidden layer.
    #[arg(long, default_value_t = 0.15)]
    pub target_rate: f64,
    /// Synthetic recordings used for calibration.
    #[arg(long, default_value_t = 2)]
    pub calibration_samples: usize,
    /// Fraction of nonzero input values in the synthetic calibration frames.
    #[arg(long, default_value_t = 0.05)]
    pub calibration_density: f64,
    /// Skip calibration (BN mean 0, variance 1: most layers then stay silent).
    #[arg(long)]
    pub no_calibrate: bool,
    /// Overwrite the output file if it exists.
    #[arg(long)]
    pub force: bool,
    /// Output file (.safetensors).
    pub out: PathBuf,
}

fn parse_arch(s: &str) -> Result<Architecture, String> {
    s.parse()
        .map_err(|e: inflor::model::arch::UnknownArchitecture| e.to_string())
}

/// `CxHxW` with C = 2 (the binner's OFF and ON channels) and H, W in 1..=65535.
fn parse_input(s: &str) -> Result<(usize, u16, u16), String> {
    let parts: Vec<&str> = s.split(['x', 'X']).collect();
    let [c, h, w] = parts.as_slice() else {
        return Err(format!("expected CxHxW such as 2x48x48, found {s:?}"));
    };
    let num = |p: &str| {
        p.trim()
            .parse::<u16>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{p:?} in {s:?} is not an integer in 1..=65535"))
    };
    let c = usize::from(num(c)?);
    if c != POLARITY_CHANNELS {
        return Err(format!(
            "{c} input channels: event frames have {POLARITY_CHANNELS} (OFF and ON counts), so C must be 2"
        ));
    }
    Ok((c, num(h)?, num(w)?))
}

/// Runs the command.
pub fn run(cmd: ModelCommand) -> anyhow::Result<()> {
    match cmd {
        ModelCommand::Info(args) => info(&args),
        ModelCommand::Init(args) => init(&args),
        ModelCommand::Quantize(args) => quantize(&args),
    }
}

fn quantize(args: &QuantizeArgs) -> anyhow::Result<()> {
    check_output(&args.out, args.force)?;
    let model = crate::app::load_model(&args.model)?;
    let method = if args.percentile == 100.0 {
        QuantizeMethod::MaxAbs
    } else {
        QuantizeMethod::Percentile(args.percentile)
    };
    let mut quantized = inflor::model::quantize(&model, method).map_err(|e| match e {
        QuantizeError::Load(e) => anyhow::Error::new(e),
        other => bad_input(other),
    })?;
    let nodes = quantized
        .metadata
        .quantization
        .as_ref()
        .map_or(0, |q| q.nodes.len());
    let weighted = model
        .network
        .nodes()
        .iter()
        .filter(|n| n.op.is_weighted())
        .count();
    quantized.metadata.provenance.created_by =
        format!("inflor {} model quantize", env!("CARGO_PKG_VERSION"));
    if let Some(dataset) = &args.calibrate {
        let options = args.decode.options();
        let before = test_accuracy(&model, dataset, args.threads, &options)?;
        let after = test_accuracy(&quantized, dataset, args.threads, &options)?;
        println!(
            "test split of {} ({} recordings): top-1 {:.2}% float, {:.2}% int8 ({:+.2} points)",
            dataset.display(),
            before.1,
            100.0 * before.0,
            100.0 * after.0,
            100.0 * (after.0 - before.0)
        );
        quantized.metadata.provenance.extra.insert(
            "quantization".into(),
            serde_json::json!({
                "from": args.model.display().to_string(),
                "dataset": dataset.display().to_string(),
                "recordings": before.1,
                "top1_float": before.0,
                "top1_int8": after.0,
            }),
        );
    }
    quantized
        .save(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {} ({nodes} of {weighted} conv/linear nodes int8, {})",
        args.out.display(),
        method.name()
    );
    Ok(())
}

/// Top-1 accuracy of `model` on the test split of `dataset` (with the auto split rule), and
/// the recordings classified; through `eval`'s plan and per-recording classification.
fn test_accuracy(
    model: &Model,
    dataset: &std::path::Path,
    threads: u16,
    options: &inflor::format::DecodeOptions,
) -> anyhow::Result<(f64, usize)> {
    use inflor::dataset::{Dataset, Split, SplitSpec};
    use rayon::prelude::*;
    let dataset_path = dataset;
    let dataset = Dataset::open(dataset, &SplitSpec::Auto).map_err(bad_input)?;
    if dataset.classes != model.metadata.class_names {
        return Err(bad_input(anyhow::anyhow!(
            "the dataset's classes {:?} are not the model's {:?}",
            dataset.classes,
            model.metadata.class_names
        )));
    }
    let samples: Vec<_> = dataset
        .samples
        .iter()
        .filter(|s| s.split == Split::Test)
        .collect();
    if samples.is_empty() {
        return Err(bad_input(anyhow::anyhow!(
            "{}: no recordings in the test split",
            dataset_path.display()
        )));
    }
    let (plan, pool) = crate::app::eval::plan_and_pool(model, ExecutorKind::Event, threads)?;
    let bar = crate::app::progress_bar(samples.len() as u64, "accuracy");
    let results: Vec<_> = pool.install(|| {
        samples
            .par_iter()
            .map(|s| {
                let r = crate::app::eval::classify_file(model, &plan, &s.path, options);
                bar.inc(1);
                r.map(|o| o.map(|o| o.predicted == s.label))
            })
            .collect()
    });
    bar.finish_and_clear();
    let mut correct = 0usize;
    let mut classified = 0usize;
    for r in results {
        if let Some(right) = r? {
            classified += 1;
            correct += usize::from(right);
        }
    }
    Ok((correct as f64 / classified.max(1) as f64, classified))
}

/// `[C, H, W]` of a network shape (which is NHWC internally), as users give inputs.
fn chw(s: inflor::snn::Shape) -> String {
    format!("{}x{}x{}", s.channels, s.height, s.width)
}

fn info(args: &InfoArgs) -> anyhow::Result<()> {
    // Written with errors returned, not `println!`'s panic, so `inflor model info M | head`
    // ends quietly when the reader goes away.
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    macro_rules! say {
        ($($t:tt)*) => {
            writeln!(out, $($t)*)?
        };
    }
    let model = crate::app::load_model(&args.model)?;
    let network = &model.network;
    let macs: u64 = (0..network.nodes().len())
        .map(|i| network.dense_macs(i))
        .sum();
    let m = &model.metadata;
    let state_bytes = 4 * (network.neuron_count() + network.classes());
    if args.json {
        let layers: Vec<serde_json::Value> = network
            .nodes()
            .iter()
            .enumerate()
            .map(|(i, n)| {
                serde_json::json!({
                    "node": i,
                    "name": n.name,
                    "op": n.op.name(),
                    "inputs": n.inputs,
                    "shape_chw": [n.shape.channels, n.shape.height, n.shape.width],
                    "parameters": n.op.parameter_count(),
                    "dense_macs_per_timestep": network.dense_macs(i),
                    "binary_input": n.inputs.first().is_some_and(|&j| network.is_binary(j)),
                    "int8": network.int8(i).is_some(),
                })
            })
            .collect();
        let doc = serde_json::json!({
            "file": args.model.display().to_string(),
            "metadata": m,
            "stored_parameters": model.stored_parameter_count(),
            "folded_parameters": network.parameter_count(),
            "neurons": network.neuron_count(),
            "state_bytes_per_stream": state_bytes,
            "dense_macs_per_timestep": macs,
            "layers": layers,
        });
        say!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let n = &m.neuron;
    let i = &m.input;
    let bn_nodes: Vec<(f32, bool, f32)> = m
        .graph
        .nodes
        .iter()
        .filter_map(|node| match node.op {
            NodeOp::BatchNorm {
                alpha,
                threshold_scaled,
                eps,
                ..
            } => Some((alpha, threshold_scaled, eps)),
            _ => None,
        })
        .collect();
    say!("model:            {}", args.model.display());
    say!("format version:   {}", m.format_version);
    say!(
        "graph:            {} nodes{}, input {}, {} {}",
        m.graph.nodes.len(),
        m.provenance
            .architecture
            .as_deref()
            .map_or(String::new(), |a| format!(" (made as {a})")),
        chw(network.input_shape()),
        network.classes(),
        if network.classes() == 1 {
            "class"
        } else {
            "classes"
        }
    );
    if let Some(q) = &m.quantization {
        say!(
            "weights:          int8 in {} of {} conv/linear nodes ({}; the others f32)",
            q.nodes.len(),
            network
                .nodes()
                .iter()
                .filter(|n| n.op.is_weighted())
                .count(),
            if q.method.is_empty() {
                "per-channel scales"
            } else {
                q.method.as_str()
            }
        );
    }
    say!(
        "neuron:           {} (Vth {}, surrogate {}, MPR {})",
        describe_neuron(n.model),
        n.vth,
        serde_json::to_string(&n.surrogate)?,
        if n.mpr { "on" } else { "off" }
    );
    if !bn_nodes.is_empty() {
        let td = bn_nodes.iter().filter(|b| b.1).count();
        let residual = bn_nodes.iter().filter(|b| b.0 != 1.0).count();
        say!(
            "batch norm:       {} ({} tdBN, {} with α ≠ 1), folded into the convs at load",
            bn_nodes.len(),
            td,
            residual
        );
    }
    say!(
        "input:            2x{}x{} (OFF, ON), T = {}, window {}, resize {}, normalization {}",
        i.height,
        i.width,
        i.timesteps,
        i.window,
        serde_json::to_string(&i.resize)?.trim_matches('"'),
        serde_json::to_string(&i.normalization)?.trim_matches('"')
    );
    say!("classes:          {}", m.class_names.join(", "));
    print_provenance(&mut out, &m.provenance)?;
    say!(
        "parameters:       {} stored, {} after folding BN",
        model.stored_parameter_count(),
        network.parameter_count()
    );
    say!(
        "neurons:          {} (state {} KiB per stream)",
        network.neuron_count(),
        state_bytes / 1024
    );
    say!("dense MACs/step:  {macs}");
    say!();
    say!(
        "{:>4}  {:<24} {:<15} {:>13} {:>11} {:>14}  input",
        "node",
        "name",
        "op",
        "shape (CxHxW)",
        "params",
        "MACs/step"
    );
    for (idx, node) in network.nodes().iter().enumerate() {
        let input = match &node.op {
            Op::Input => String::new(),
            _ if node.op.is_weighted() => {
                let j = node.inputs[0];
                let kind = if network.is_binary(j) {
                    "spikes"
                } else {
                    "real"
                };
                format!("{j} ({kind})")
            }
            _ => node
                .inputs
                .iter()
                .map(|j| j.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        };
        say!(
            "{:>4}  {:<24} {:<15} {:>13} {:>11} {:>14}  {}",
            idx,
            node.name,
            node.op.name(),
            chw(node.shape),
            node.op.parameter_count(),
            network.dense_macs(idx),
            input
        );
    }
    Ok(())
}

fn describe_neuron(kind: NeuronKind) -> String {
    match kind {
        NeuronKind::LifHard { tau } => format!("lif_hard (tau {tau})"),
        other => other.name().to_owned(),
    }
}

fn init(args: &InitArgs) -> anyhow::Result<()> {
    check_output(&args.out, args.force)?;
    let (channels, height, width) = args.input.input;
    let input = args.input.spec()?;
    let classes = usize::try_from(args.classes).map_err(bad_input)?;
    let spec = ArchSpec {
        arch: args.arch,
        channels,
        height: usize::from(height),
        width: usize::from(width),
        classes,
    };
    let neuron = args.neuron.kind(args.tau);
    if !neuron.is_valid() {
        return Err(bad_input(anyhow::anyhow!(
            "--tau {} is not in (0, 1]",
            args.tau
        )));
    }
    let bn = BatchNormConfig {
        kind: if args.plain_bn {
            BatchNormKind::Plain
        } else {
            BatchNormKind::Td
        },
        ..BatchNormConfig::default()
    };
    let graph = spec.graph(bn).map_err(bad_input)?;
    let mut metadata = Metadata::new(graph, input)?;
    metadata.neuron.model = neuron;
    if let Some(names) = &args.class_names {
        if names.len() != classes {
            return Err(bad_input(anyhow::anyhow!(
                "{} class names given for {} classes",
                names.len(),
                classes
            )));
        }
        metadata.class_names = names.clone();
    }
    let params = metadata.graph.random_parameters(args.seed);
    metadata.provenance = Provenance {
        created_by: format!("inflor {} model init", env!("CARGO_PKG_VERSION")),
        origin: "random".into(),
        architecture: Some(args.arch.name().to_owned()),
        seed: Some(args.seed),
        ..Provenance::default()
    };
    let mut model = Model::new(metadata, params)?;
    if !args.no_calibrate {
        let settings = Calibration {
            target_rate: args.target_rate,
            samples: args.calibration_samples,
            timesteps: input.timesteps,
            input_density: args.calibration_density,
            seed: args.seed,
        };
        let started = std::time::Instant::now();
        let layers = model.network.neuron_nodes().count() as u64;
        let bar = crate::app::progress_bar(layers, "calibrating");
        let report = calibrate(&mut model, &settings, &mut |done, _, layer| {
            bar.set_position(done as u64);
            bar.set_message(layer.to_owned());
        })
        .map_err(|e| match e {
            CalibrationError::Settings => bad_input(e),
            other => anyhow::Error::new(other),
        })?;
        bar.finish_and_clear();
        let rates: serde_json::Map<String, serde_json::Value> = report
            .layers
            .iter()
            .map(|(name, rate)| (name.clone(), serde_json::json!(rate)))
            .collect();
        model.metadata.provenance.extra.insert(
            "calibration".into(),
            serde_json::json!({
                "target_rate": args.target_rate,
                "samples": args.calibration_samples,
                "timesteps": input.timesteps,
                "input_density": args.calibration_density,
                "inputs": "seeded synthetic sparse frames (not sensor data)",
                "rates": rates,
            }),
        );
        let mean =
            report.layers.iter().map(|(_, r)| r).sum::<f64>() / report.layers.len().max(1) as f64;
        eprintln!(
            "calibrated {} neuron layers in {:.1} s to a mean firing rate of {:.3} (target {})",
            report.layers.len(),
            started.elapsed().as_secs_f64(),
            mean,
            args.target_rate
        );
    }
    model
        .save(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {} ({} {}x{}x{}, {} {}, {} parameters)",
        args.out.display(),
        spec.arch,
        channels,
        height,
        width,
        classes,
        if classes == 1 { "class" } else { "classes" },
        model.stored_parameter_count()
    );
    Ok(())
}

/// The provenance as lines: its fields, and one level into nested records, where lists (a
/// training run's per-epoch history) are counted rather than printed.
fn print_provenance(out: &mut impl Write, p: &inflor::model::Provenance) -> std::io::Result<()> {
    macro_rules! say {
        ($($t:tt)*) => {
            writeln!(out, $($t)*)?
        };
    }
    let mut fields = vec![
        ("created by".to_owned(), p.created_by.clone()),
        ("origin".to_owned(), p.origin.clone()),
    ];
    if let Some(seed) = p.seed {
        fields.push(("seed".into(), seed.to_string()));
    }
    if let Some(d) = &p.dataset {
        fields.push(("dataset".into(), d.clone()));
    }
    for (key, value) in &p.extra {
        match value {
            serde_json::Value::Object(inner) => {
                for (k, v) in inner {
                    fields.push((format!("{key}.{k}"), brief(v)));
                }
            }
            v => fields.push((key.clone(), brief(v))),
        }
    }
    say!("provenance:");
    for (k, v) in fields {
        say!("  {k:<28} {v}");
    }
    Ok(())
}

fn brief(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Array(items)
            if items.iter().all(|i| !i.is_object()) && items.len() <= 4 =>
        {
            v.to_string()
        }
        serde_json::Value::Array(items) => format!("[{} entries]", items.len()),
        serde_json::Value::Object(o) if o.len() > 6 => format!("{{{} fields}}", o.len()),
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_dimensions_parse() {
        assert_eq!(parse_input("2x48x48"), Ok((2, 48, 48)));
        assert_eq!(parse_input("2X34x34"), Ok((2, 34, 34)));
        assert!(parse_input("2x48").is_err());
        assert!(parse_input("0x48x48").is_err());
        assert!(parse_input("ax48x48").is_err());
        let three = parse_input("3x48x48").unwrap_err();
        assert!(three.contains("C must be 2"), "{three}");
        assert!(parse_input("2x70000x48").is_err());
        assert_eq!(parse_arch("vgg-snn"), Ok(Architecture::VggSnn));
        assert!(parse_arch("lenet").is_err());
    }
}
