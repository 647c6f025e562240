//! `inflor model`: show a model file (`info`) or create a randomly initialised one with
//! calibrated BN statistics (`init`).

use std::path::PathBuf;

use anyhow::Context;
use inflor::exec::dense::{Calibration, calibrate};
use inflor::snn::file::Provenance;
use inflor::snn::{ArchSpec, Architecture, Blueprint, Metadata, Model, NeuronKind, Op};

use crate::app::bad_input;

/// `inflor model` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ModelCommand {
    /// Print a model's metadata, size, work per timestep and layer table.
    Info(InfoArgs),
    /// Write a randomly initialised model whose BN statistics are calibrated on seeded
    /// synthetic inputs so hidden layers fire at a realistic rate.
    Init(InitArgs),
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

/// `inflor model init` arguments.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Architecture: tiny, vgg-snn, resnet19, resnet20.
    #[arg(long, value_parser = parse_arch)]
    pub arch: Architecture,
    /// Number of classes.
    #[arg(long)]
    pub classes: usize,
    /// Input as CxHxW (channels x height x width).
    #[arg(long, default_value = "2x48x48", value_parser = parse_input)]
    pub input: (usize, usize, usize),
    /// Seed of the weights and of the calibration inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Frames per classification (T).
    #[arg(long, default_value_t = 10)]
    pub timesteps: usize,
    /// Neuron model.
    #[arg(long, value_enum, default_value_t = NeuronArg::Srif)]
    pub neuron: NeuronArg,
    /// Membrane decay of lif-hard.
    #[arg(long, default_value_t = inflor::snn::neuron::DEFAULT_LIF_TAU)]
    pub tau: f32,
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
    /// Output file (.safetensors).
    pub out: PathBuf,
}

fn parse_arch(s: &str) -> Result<Architecture, String> {
    s.parse()
        .map_err(|e: inflor::snn::arch::UnknownArchitecture| e.to_string())
}

fn parse_input(s: &str) -> Result<(usize, usize, usize), String> {
    let parts: Vec<&str> = s.split(['x', 'X']).collect();
    let [c, h, w] = parts.as_slice() else {
        return Err(format!("expected CxHxW such as 2x48x48, found {s:?}"));
    };
    let num = |p: &str| {
        p.trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{p:?} in {s:?} is not a positive integer"))
    };
    Ok((num(c)?, num(h)?, num(w)?))
}

/// Runs the command.
pub fn run(cmd: ModelCommand) -> anyhow::Result<()> {
    match cmd {
        ModelCommand::Info(args) => info(&args),
        ModelCommand::Init(args) => init(&args),
    }
}

fn info(args: &InfoArgs) -> anyhow::Result<()> {
    let model = Model::load(&args.model)
        .map_err(bad_input)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let network = &model.network;
    let macs: u64 = (0..network.nodes().len())
        .map(|i| network.dense_macs(i))
        .sum();
    let m = &model.metadata;
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
                    "shape": [n.shape.height, n.shape.width, n.shape.channels],
                    "parameters": n.op.parameter_count(),
                    "dense_macs_per_timestep": network.dense_macs(i),
                    "binary_input": n.inputs.first().is_some_and(|&j| network.is_binary(j)),
                })
            })
            .collect();
        let doc = serde_json::json!({
            "file": args.model.display().to_string(),
            "metadata": m,
            "stored_parameters": model.stored_parameter_count(),
            "folded_parameters": network.parameter_count(),
            "neurons": network.neuron_count(),
            "state_bytes_per_stream": 4 * (network.neuron_count() + network.classes()),
            "dense_macs_per_timestep": macs,
            "layers": layers,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let a = &m.architecture;
    let n = &m.neuron;
    let i = &m.input;
    println!("model:            {}", args.model.display());
    println!("format version:   {}", m.format_version);
    println!(
        "architecture:     {} (input {}x{}x{}, {} classes)",
        a.arch, a.channels, a.height, a.width, a.classes
    );
    println!(
        "neuron:           {} (Vth {}, surrogate {}, MPR {})",
        describe_neuron(n.model),
        n.vth,
        serde_json::to_string(&n.surrogate)?,
        if n.mpr { "on" } else { "off" }
    );
    println!(
        "batch norm:       {} (eps {})",
        serde_json::to_string(&m.batch_norm.kind)?.trim_matches('"'),
        m.batch_norm.eps
    );
    println!(
        "input:            {}x{}x{}, T = {}, window {}, resize {}, normalisation {}",
        i.channels,
        i.height,
        i.width,
        i.timesteps,
        serde_json::to_string(&i.window)?,
        serde_json::to_string(&i.resize)?.trim_matches('"'),
        serde_json::to_string(&i.normalisation)?
    );
    println!("classes:          {}", m.class_names.join(", "));
    println!(
        "provenance:       {}",
        serde_json::to_string(&m.provenance)?
    );
    println!(
        "parameters:       {} stored, {} after folding BN",
        model.stored_parameter_count(),
        network.parameter_count()
    );
    println!(
        "neurons:          {} (state {} KiB per stream)",
        network.neuron_count(),
        4 * (network.neuron_count() + network.classes()) / 1024
    );
    println!("dense MACs/step:  {macs}");
    println!();
    println!(
        "{:>4}  {:<24} {:<15} {:>13} {:>11} {:>14}  input",
        "node", "name", "op", "shape", "params", "MACs/step"
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
        println!(
            "{:>4}  {:<24} {:<15} {:>13} {:>11} {:>14}  {}",
            idx,
            node.name,
            node.op.name(),
            node.shape.to_string(),
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
    let (channels, height, width) = args.input;
    let spec = ArchSpec {
        arch: args.arch,
        channels,
        height,
        width,
        classes: args.classes,
    };
    if args.timesteps == 0 {
        return Err(bad_input(anyhow::anyhow!("--timesteps must be at least 1")));
    }
    let blueprint = Blueprint::new(spec).map_err(bad_input)?;
    let mut metadata = Metadata::new(spec, args.timesteps);
    metadata.neuron.model = match args.neuron {
        NeuronArg::Srif => NeuronKind::Srif,
        NeuronArg::IfHard => NeuronKind::IfHard,
        NeuronArg::LifHard => NeuronKind::LifHard { tau: args.tau },
    };
    if !metadata.neuron.model.is_valid() {
        return Err(bad_input(anyhow::anyhow!("--tau must be in (0, 1]")));
    }
    if let Some(names) = &args.class_names {
        if names.len() != args.classes {
            return Err(bad_input(anyhow::anyhow!(
                "{} class names given for {} classes",
                names.len(),
                args.classes
            )));
        }
        metadata.class_names = names.clone();
    }
    let mut params = blueprint.random_parameters(args.seed);
    let mut provenance = Provenance {
        created_by: format!("inflor {} model init", env!("CARGO_PKG_VERSION")),
        origin: "random".into(),
        seed: Some(args.seed),
        ..Provenance::default()
    };
    if !args.no_calibrate {
        let settings = Calibration {
            target_rate: args.target_rate,
            samples: args.calibration_samples,
            timesteps: args.timesteps,
            input_density: args.calibration_density,
            seed: args.seed,
        };
        let started = std::time::Instant::now();
        let report = calibrate(
            &blueprint,
            &mut params,
            metadata.neuron.model,
            metadata.batch_norm,
            &settings,
        )
        .map_err(|e| match e {
            inflor::exec::dense::CalibrationError::Settings => bad_input(e),
            other => anyhow::Error::new(other),
        })?;
        tracing::info!(
            layers = report.layers.len(),
            seconds = started.elapsed().as_secs_f64(),
            "calibrated"
        );
        let rates: serde_json::Map<String, serde_json::Value> = report
            .layers
            .iter()
            .map(|(name, rate)| (name.clone(), serde_json::json!(rate)))
            .collect();
        provenance.extra.insert(
            "calibration".into(),
            serde_json::json!({
                "target_rate": args.target_rate,
                "samples": args.calibration_samples,
                "timesteps": args.timesteps,
                "input_density": args.calibration_density,
                "inputs": "seeded synthetic sparse frames (not sensor data)",
                "rates": rates,
            }),
        );
        let mean =
            report.layers.iter().map(|(_, r)| r).sum::<f64>() / report.layers.len().max(1) as f64;
        eprintln!(
            "calibrated {} neuron layers to a mean firing rate of {:.3} (target {})",
            report.layers.len(),
            mean,
            args.target_rate
        );
    }
    metadata.provenance = provenance;
    let model = Model::new(metadata, params)?;
    model
        .save(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {} ({} {}x{}x{}, {} classes, {} parameters)",
        args.out.display(),
        spec.arch,
        channels,
        height,
        width,
        args.classes,
        model.stored_parameter_count()
    );
    Ok(())
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
        assert_eq!(parse_arch("vgg-snn"), Ok(Architecture::VggSnn));
        assert!(parse_arch("lenet").is_err());
    }
}
