//! `inflor dataset info DIR`: lists a labelled dataset, decodes every recording in parallel and
//! reports classes, splits, formats, resolutions and event/duration distributions.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use inflor::dataset::info::{DatasetReport, Distribution, report};
use inflor::dataset::{Dataset, SplitSpec};

use super::bad_input;
use super::decode_args::DecodeArgs;

/// `inflor dataset` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DatasetCommand {
    /// Summarise a dataset: classes, splits, formats, resolutions, events and durations.
    Info(InfoArgs),
}

/// `inflor dataset info` arguments.
#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// Dataset folder: one folder per class (CIFAR10-DVS or any labels), or a flat folder of
    /// cifar10_<class>_<n>.aedat files.
    pub dir: PathBuf,
    /// Split rule: auto, default (= test-below:100, CIFAR10-DVS files _0.._99 are test),
    /// test-below:N, ratio:R (SpikingJelly's split_to_train_test_set, string order) or
    /// list:PATH (lines "train|test <relative path>"). auto uses DIR/split.txt if present.
    #[arg(long, default_value = "auto", value_parser = parse_split)]
    pub split: SplitSpec,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Decoder options.
    #[command(flatten)]
    pub decode: DecodeArgs,
}

fn parse_split(s: &str) -> Result<SplitSpec, String> {
    s.parse()
}

/// Runs the command.
pub fn run(cmd: DatasetCommand) -> anyhow::Result<()> {
    match cmd {
        DatasetCommand::Info(args) => info(args),
    }
}

/// A progress bar on stderr, hidden when stderr is not a terminal.
pub fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({eta})")
    {
        bar.set_style(style);
    }
    bar.set_message(what.to_string());
    bar
}

fn info(args: InfoArgs) -> anyhow::Result<()> {
    let dataset = Dataset::open(&args.dir, &args.split)
        .map_err(bad_input)
        .with_context(|| format!("opening dataset {}", args.dir.display()))?;
    let bar = progress_bar(dataset.samples.len() as u64, "decoding");
    let result = report(&dataset, &args.decode.options(), &|| bar.inc(1));
    bar.finish_and_clear();
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &result)?;
        writeln!(out)?;
    } else {
        write_text(&mut out, &result)?;
    }
    out.flush()?;
    // As `inspect`: every recording is reported, and any failure makes the exit code 2.
    if !result.failures.is_empty() {
        return Err(bad_input(anyhow::anyhow!(
            "{} of {} recordings could not be decoded (listed above)",
            result.failures.len(),
            result.train + result.test
        )));
    }
    Ok(())
}

fn dist_line(d: &Option<Distribution>, precision: usize) -> String {
    match d {
        None => "none".to_string(),
        Some(d) => format!(
            "min {:.p$}  p5 {:.p$}  median {:.p$}  mean {:.p$}  p95 {:.p$}  max {:.p$}",
            d.min,
            d.p5,
            d.median,
            d.mean,
            d.p95,
            d.max,
            p = precision
        ),
    }
}

fn counts_line(map: &std::collections::BTreeMap<String, usize>) -> String {
    if map.is_empty() {
        return "none".to_string();
    }
    map.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The human-readable report.
pub fn write_text(out: &mut impl Write, r: &DatasetReport) -> std::io::Result<()> {
    writeln!(out, "dataset       {} ({})", r.root.display(), r.layout)?;
    writeln!(out, "split         {} [{}]", r.split, r.split_reason)?;
    writeln!(
        out,
        "recordings    {} in {} classes: train {}, test {}",
        r.train + r.test,
        r.classes.len(),
        r.train,
        r.test
    )?;
    let width = r
        .classes
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    writeln!(out, "  label  {:<width$}  train   test", "class")?;
    for c in &r.classes {
        writeln!(
            out,
            "  {:>5}  {:<width$}  {:>5}  {:>5}",
            c.label, c.name, c.train, c.test
        )?;
    }
    writeln!(out, "decoded       {} of {}", r.decoded, r.train + r.test)?;
    writeln!(out, "formats       {}", counts_line(&r.formats))?;
    writeln!(out, "resolutions   {}", counts_line(&r.resolutions))?;
    writeln!(out, "events        {} in all", r.total_events)?;
    writeln!(
        out,
        "  per file    {}",
        dist_line(&r.events_per_recording, 0)
    )?;
    writeln!(out, "duration (s)  {}", dist_line(&r.duration_s, 3))?;
    writeln!(out, "failures      {}", r.failures.len())?;
    for f in &r.failures {
        writeln!(out, "  {}: {}", f.path.display(), f.error)?;
    }
    Ok(())
}
