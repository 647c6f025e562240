//! Command-line arguments: one clap subcommand per job.

use clap::{Parser, Subcommand};

use crate::app;

/// inflor: event-camera I/O and spiking-network inference (SRIF + MPR).
#[derive(Debug, Parser)]
#[command(name = "inflor", version, about, long_about = None)]
pub struct Cli {
    /// More log output (-v info, -vv debug); INFLOR_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// The job to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The jobs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print format, resolution, counts, timing and skipped records of event files.
    Inspect(app::inspect::InspectArgs),
    /// Convert an event file to AEDAT 4.0 or AEDAT 2.0.
    Convert(app::convert::ConvertArgs),
    /// Labelled datasets (CIFAR10-DVS layout, class folders).
    #[command(subcommand)]
    Dataset(app::dataset::DatasetCommand),
    /// Emulate a DVS128 watching moving images and write a labelled dataset.
    Synth(app::synth::SynthArgs),
    /// Model files: show or create.
    #[command(subcommand)]
    Model(app::model::ModelCommand),
    /// Classify recordings with a model.
    Infer(app::infer::InferArgs),
    /// The streaming daemon: sources in; classifications, spike statistics and metrics out.
    Run(app::run::RunArgs),
    /// List the connected USB event cameras (Prophesee EVK3/EVK4, iniVation DVXplorer/DAVIS346).
    Cameras(app::cameras::CamerasArgs),
    /// Check a daemon config and report every error with its key path.
    Validate(app::run::ValidateArgs),
    /// Serve a recording as a DV network stream (a simulated camera), paced by its timestamps.
    ServeEvents(app::serve_events::ServeEventsArgs),
    /// Train a model on a labelled dataset (surrogate-gradient BPTT, tdBN, SRIF + MPR).
    Train(Box<app::train::TrainArgs>),
    /// Evaluate a model on a dataset split: top-1/top-5, per-class accuracy, confusion matrix.
    Eval(app::eval::EvalArgs),
    /// Replay a dataset split through the daemon's pipeline: accuracy, latency, throughput,
    /// firing rates and energy in one report.
    Replay(Box<app::replay::ReplayArgs>),
    /// The InfLoR ablations (neuron kinds, MPR, quantization error) as a Markdown table.
    Ablate(app::ablate::AblateArgs),
    /// PNG plots of a training run: loss, accuracy, firing rates, membrane histograms.
    Plot(app::plot::PlotArgs),
}
