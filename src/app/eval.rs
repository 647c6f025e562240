//! `inflor eval`: a model's accuracy on a dataset split, run through `Session` and the
//! executors exactly as `infer` and the daemon run it: top-1 and top-5 accuracy, per-class
//! accuracy and the confusion matrix. Each recording is classified by its first window (the
//! whole recording for the per-recording window policies), as the trainer sees it. The split
//! selection and the scores are [`labelled`](crate::app::labelled)'s, shared with `replay`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use inflor::dataset::SplitSpec;
use inflor::exec::{ExecutorKind, Plan, PlanOptions};
use inflor::format::{DecodeOptions, FileReader};
use inflor::model::Model;
use inflor::session::{Output, Session, SessionOptions};
use rayon::prelude::*;
use serde::Serialize;

use crate::app::bad_input;
use crate::app::decode_args::DecodeArgs;
pub use crate::app::labelled::SplitArg;
use crate::app::labelled::{Accuracy, Tally, parse_split_rule, select, top_k};

/// `inflor eval` arguments.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The model file (.safetensors); the bundled DVS-Digits model when omitted.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The dataset folder.
    pub dataset: PathBuf,
    /// Which recordings: test, train or all.
    #[arg(long, value_enum, default_value_t = SplitArg::Test)]
    pub split: SplitArg,
    /// The split rule: auto, default, test-below:N, ratio:R or list:PATH (as `dataset info`).
    #[arg(long, default_value = "auto", value_parser = parse_split_rule)]
    pub split_rule: SplitSpec,
    /// Executor: event, dense or reference (identical logits).
    #[arg(long, value_enum, default_value_t = ExecutorKind::Event)]
    pub executor: ExecutorKind,
    /// Recordings classified in parallel.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: u16,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also write one JSON object per recording (path, label, prediction, logits).
    #[arg(long)]
    pub logits_out: Option<PathBuf>,
    /// How to read the recordings.
    #[command(flatten)]
    pub decode: DecodeArgs,
}

/// The evaluation result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The accuracy scores.
    #[serde(flatten)]
    pub accuracy: Accuracy,
    /// The executor used.
    pub executor: String,
}

/// One recording's result, for `--logits-out`.
#[derive(Debug, Clone, Serialize)]
struct SampleResult<'a> {
    path: &'a str,
    label: usize,
    predicted: usize,
    logits: &'a [f32],
}

/// The plan that runs `model` on whole recordings (background steps for a recording's T bins),
/// and a pool of `threads` workers to run recordings in parallel.
pub fn plan_and_pool(
    model: &Model,
    executor: ExecutorKind,
    threads: u16,
) -> anyhow::Result<(Arc<Plan>, rayon::ThreadPool)> {
    let plan = Plan::new(
        model.network.clone(),
        executor,
        PlanOptions {
            background_steps: model.metadata.input.timesteps,
            ..PlanOptions::default()
        },
    )
    .context("preparing the executor")?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(usize::from(threads))
        .build()
        .context("starting worker threads")?;
    Ok((plan, pool))
}

/// Classifies one recording through a session: the output of its first window (None when
/// it has no events).
pub fn classify_file(
    model: &Model,
    plan: &Arc<Plan>,
    path: &Path,
    options: &DecodeOptions,
) -> anyhow::Result<Option<Output>> {
    classify_file_measuring(model, plan, path, options, None)
}

/// [`classify_file`], measuring the quantization error at network node `quantization`.
pub fn classify_file_measuring(
    model: &Model,
    plan: &Arc<Plan>,
    path: &Path,
    options: &DecodeOptions,
    quantization: Option<usize>,
) -> anyhow::Result<Option<Output>> {
    let mut reader = FileReader::open(path, None, options)?;
    let mut events = Vec::new();
    let mut outputs = Vec::new();
    let mut session: Option<Session> = None;
    loop {
        events.clear();
        let more = reader.next_batch(&mut events)?;
        if session.is_none() && (reader.info().is_some() || !more) {
            let info = reader.info_or_default();
            let sensor = options.resolution.unwrap_or((info.width, info.height));
            if sensor.0 == 0 || sensor.1 == 0 {
                anyhow::bail!("the stream does not say its sensor size; pass --resolution WxH");
            }
            let opts = SessionOptions {
                stream: path.display().to_string(),
                top_k: top_k(model.metadata.class_names.len()),
                quantization_node: quantization,
                ..SessionOptions::default()
            };
            session = Some(Session::new(plan.clone(), model, sensor, opts)?);
        }
        if let Some(s) = session.as_mut() {
            s.push(&events, &mut outputs)?;
            if !outputs.is_empty() {
                return Ok(outputs.into_iter().next());
            }
            if !more {
                s.finish(&mut outputs)?;
                return Ok(outputs.into_iter().next());
            }
        }
        if !more {
            return Ok(None);
        }
    }
}

/// Runs the command.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let model = match &args.model {
        Some(path) => crate::app::load_model(path)?,
        None => crate::app::bundled_model()?,
    };
    let samples = select(&args.dataset, &args.split_rule, args.split, &model)?;
    let (plan, pool) = plan_and_pool(&model, args.executor, args.threads)?;
    let options = args.decode.options();
    let bar = crate::app::progress_bar(samples.len() as u64, "eval");
    let results: Vec<_> = pool.install(|| {
        samples
            .par_iter()
            .map(|s| {
                let r = classify_file(&model, &plan, &s.path, &options);
                bar.inc(1);
                r
            })
            .collect()
    });
    bar.finish_and_clear();
    let mut tally = Tally::new(&model.metadata.class_names);
    let mut logits_out = match &args.logits_out {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    for (s, r) in samples.iter().zip(results) {
        let output = match r {
            Ok(Some(o)) => o,
            Ok(None) => {
                eprintln!("{}: no events, not classified", s.path.display());
                tally.fail(&s.relative);
                continue;
            }
            Err(e) => {
                eprintln!("{}: {}", s.path.display(), crate::app::chain(&e));
                tally.fail(&s.relative);
                continue;
            }
        };
        tally.add(s.label, &output);
        if let Some(w) = logits_out.as_mut() {
            serde_json::to_writer(
                &mut *w,
                &SampleResult {
                    path: &s.relative,
                    label: s.label,
                    predicted: output.predicted,
                    logits: &output.logits,
                },
            )?;
            writeln!(w)?;
        }
    }
    if let Some(mut w) = logits_out {
        w.flush()?;
    }
    let report = Report {
        accuracy: tally.finish(),
        executor: format!("{:?}", args.executor).to_lowercase(),
    };
    crate::app::labelled::write_report(args.json, &report, print_report)?;
    if !report.accuracy.failed.is_empty() {
        return Err(bad_input(anyhow::anyhow!(
            "{} of {} recordings could not be classified (see above)",
            report.accuracy.failed.len(),
            samples.len()
        )));
    }
    Ok(())
}

fn print_report(out: &mut impl Write, r: &Report) -> anyhow::Result<()> {
    let a = &r.accuracy;
    writeln!(
        out,
        "{} recordings ({} executor): top-1 {:.2}%, top-{} {:.2}%",
        a.samples,
        r.executor,
        100.0 * a.top1,
        top_k(a.classes.len()),
        100.0 * a.top5
    )?;
    a.print(out)?;
    Ok(())
}
