//! `inflor ablate`: the InfLoR paper's ablations on one dataset, as a Markdown table. Trains
//! SRIF, hard-reset IF and hard-reset LIF without MPR (Table 1), SRIF with MPR (Table 2),
//! each with several seeds, then measures on the test split, through `Session`, the mean
//! quantization error (H − O)² and (φ(H) − O)² of one neuron layer (Table 3). Each run is an
//! ordinary `inflor train` run; options after `--` are passed to every one of them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;
use inflor::dataset::{Dataset, Split};
use inflor::exec::{ExecutorKind, Plan, PlanOptions};
use inflor::model::Model;

use crate::app::bad_input;
use crate::app::train::TrainArgs;

/// `inflor ablate` arguments.
#[derive(Debug, clap::Args)]
pub struct AblateArgs {
    /// The dataset folder.
    pub dataset: PathBuf,
    /// Seeds per configuration (0, 1, …).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub seeds: u64,
    /// Folder for the trained models (created; one file per configuration and seed).
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Write the table here (default: stdout).
    #[arg(long)]
    pub table: Option<PathBuf>,
    /// The neuron layer (0 = first) whose quantization error Table 3 reports.
    #[arg(long, default_value_t = 0)]
    pub layer: usize,
    /// Options for every training run, e.g. `-- --epochs 20 --input 2x32x32 --no-flip`
    /// (--neuron, --no-mpr, --seed and --out are set per run).
    #[arg(last = true)]
    pub train: Vec<String>,
}

/// One configuration of the protocol.
struct Config {
    name: &'static str,
    neuron: &'static str,
    mpr: bool,
}

const CONFIGS: [Config; 4] = [
    Config {
        name: "SRIF",
        neuron: "srif",
        mpr: false,
    },
    Config {
        name: "hard-reset IF",
        neuron: "if-hard",
        mpr: false,
    },
    Config {
        name: "hard-reset LIF (τ = 0.25)",
        neuron: "lif-hard",
        mpr: false,
    },
    Config {
        name: "SRIF + MPR",
        neuron: "srif",
        mpr: true,
    },
];

#[derive(Debug, Parser)]
#[command(name = "train")]
struct TrainCli {
    #[command(flatten)]
    args: TrainArgs,
}

/// Mean and sample standard deviation.
fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// Mean (H − O)² and (φ(H) − O)² at neuron layer `layer` over the test split.
fn quantization(
    model: &Model,
    dataset: &Path,
    split: &inflor::dataset::SplitSpec,
    options: &inflor::format::DecodeOptions,
    layer: usize,
) -> anyhow::Result<(f64, f64)> {
    let node = crate::app::plot::neuron_layer_node(model, layer)?;
    let data = Dataset::open(dataset, split)?;
    let plan = Plan::new(
        model.network.clone(),
        ExecutorKind::Dense,
        PlanOptions {
            background_steps: model.metadata.input.timesteps,
            ..PlanOptions::default()
        },
    )?;
    let (mut plain, mut mpr, mut samples) = (0.0, 0.0, 0u64);
    for s in data.split_samples(Split::Test) {
        let out =
            crate::app::eval::classify_file_measuring(model, &plan, &s.path, options, Some(node))?;
        if let Some(q) = out.and_then(|o| o.quantization) {
            plain += q.plain * q.samples as f64;
            mpr += q.mpr * q.samples as f64;
            samples += q.samples;
        }
    }
    let n = samples.max(1) as f64;
    Ok((plain / n, mpr / n))
}

/// Runs the command.
pub fn run(args: AblateArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    let mut accuracy: Vec<Vec<f64>> = Vec::new();
    let mut quant: Vec<Vec<(f64, f64)>> = Vec::new();
    for (c, config) in CONFIGS.iter().enumerate() {
        let (mut acc, mut q) = (Vec::new(), Vec::new());
        for seed in 0..args.seeds {
            let out = args.out_dir.join(format!(
                "{}{}-seed{seed}.safetensors",
                config.neuron,
                if config.mpr { "-mpr" } else { "" }
            ));
            let mut argv: Vec<String> = vec!["train".into(), args.dataset.display().to_string()];
            argv.extend(args.train.iter().cloned());
            argv.extend([
                "--neuron".into(),
                config.neuron.into(),
                "--seed".into(),
                seed.to_string(),
                "--out".into(),
                out.display().to_string(),
                "--force".into(),
            ]);
            if !config.mpr {
                argv.push("--no-mpr".into());
            }
            let cli = TrainCli::try_parse_from(&argv).map_err(|e| bad_input(anyhow::anyhow!(e)))?;
            eprintln!(
                "ablation {}/{}: {} seed {seed}",
                c * args.seeds as usize + seed as usize + 1,
                CONFIGS.len() * args.seeds as usize,
                config.name
            );
            let split = cli.args.split.clone();
            let options = cli.args.decode.options();
            crate::app::train::run(cli.args)?;
            let model = crate::app::load_model(&out)?;
            let record = &model.metadata.provenance.extra["training"];
            acc.push(record["final_test_accuracy"].as_f64().unwrap_or(0.0));
            if config.neuron == "srif" {
                q.push(quantization(
                    &model,
                    &args.dataset,
                    &split,
                    &options,
                    args.layer,
                )?);
            }
        }
        accuracy.push(acc);
        quant.push(q);
    }
    let mut t = String::new();
    let pct = |v: &[f64]| {
        let (m, s) = mean_std(v);
        format!("{:.2} ± {:.2}", 100.0 * m, 100.0 * s)
    };
    writeln!(
        t,
        "Final test accuracy (%) on {}, mean ± std over {} seeds; training options: `{}`.\n",
        args.dataset.display(),
        args.seeds,
        args.train.join(" ")
    )?;
    writeln!(t, "| Table 1: neuron (no MPR) | accuracy |\n|---|---|")?;
    for c in 0..3 {
        writeln!(t, "| {} | {} |", CONFIGS[c].name, pct(&accuracy[c]))?;
    }
    writeln!(t, "\n| Table 2: SRIF | accuracy |\n|---|---|")?;
    writeln!(t, "| without MPR | {} |", pct(&accuracy[0]))?;
    writeln!(t, "| with MPR | {} |", pct(&accuracy[3]))?;
    writeln!(
        t,
        "\n| Table 3: neuron layer {} | mean (H − O)² | mean (φ(H) − O)² |\n|---|---|---|",
        args.layer
    )?;
    for c in [0, 3] {
        let plain: Vec<f64> = quant[c].iter().map(|q| q.0).collect();
        let mpr: Vec<f64> = quant[c].iter().map(|q| q.1).collect();
        let (pm, ps) = mean_std(&plain);
        let (mm, ms) = mean_std(&mpr);
        writeln!(
            t,
            "| {} | {pm:.4} ± {ps:.4} | {mm:.4} ± {ms:.4} |",
            CONFIGS[c].name
        )?;
    }
    match &args.table {
        Some(path) => {
            std::fs::write(path, &t).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{t}"),
    }
    Ok(())
}
