//! `inflor eval`: a model's accuracy on a dataset split, run through `Session` and the
//! executors exactly as `infer` and the daemon run it: top-1 and top-5 accuracy, per-class
//! accuracy and the confusion matrix. Each recording is classified by its first window (the
//! whole recording for the per-recording window policies), as the trainer sees it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use inflor::dataset::{Dataset, Split, SplitSpec};
use inflor::exec::{ExecutorKind, Plan, PlanOptions};
use inflor::format::{DecodeOptions, FileReader};
use inflor::model::Model;
use inflor::session::{Output, Session, SessionOptions};
use rayon::prelude::*;
use serde::Serialize;

use crate::app::bad_input;
use crate::app::decode_args::DecodeArgs;

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
    #[arg(long, default_value = "auto", value_parser = parse_split)]
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

/// Which part of the dataset to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SplitArg {
    /// The test split.
    Test,
    /// The training split.
    Train,
    /// Every recording.
    All,
}

fn parse_split(s: &str) -> Result<SplitSpec, String> {
    s.parse()
}

/// The evaluation result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The model's class names.
    pub classes: Vec<String>,
    /// Recordings classified.
    pub samples: usize,
    /// Recordings that could not be classified, by relative path.
    pub failed: Vec<String>,
    /// Top-1 accuracy.
    pub top1: f64,
    /// Top-5 accuracy (top-k with k = min(5, classes)).
    pub top5: f64,
    /// Per-class accuracy (recall), NaN-free: classes without samples have 0 and count 0.
    pub per_class: Vec<ClassScore>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
    /// The executor used.
    pub executor: String,
}

/// One class's accuracy.
#[derive(Debug, Clone, Serialize)]
pub struct ClassScore {
    /// Name.
    pub name: String,
    /// Samples of that class.
    pub count: usize,
    /// Fraction of them classified correctly.
    pub accuracy: f64,
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
                top_k: model.metadata.class_names.len().min(5),
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
    let dataset = Dataset::open(&args.dataset, &args.split_rule).map_err(bad_input)?;
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
        .filter(|s| match args.split {
            SplitArg::Test => s.split == Split::Test,
            SplitArg::Train => s.split == Split::Train,
            SplitArg::All => true,
        })
        .collect();
    if samples.is_empty() {
        return Err(bad_input(anyhow::anyhow!(
            "{}: no recordings in that split",
            args.dataset.display()
        )));
    }
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
    let classes = model.metadata.class_names.len();
    let k = classes.min(5);
    let mut confusion = vec![vec![0usize; classes]; classes];
    let (mut top1, mut top5, mut n) = (0usize, 0usize, 0usize);
    let mut failed = Vec::new();
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
                failed.push(s.relative.clone());
                continue;
            }
            Err(e) => {
                eprintln!("{}: {}", s.path.display(), crate::app::chain(&e));
                failed.push(s.relative.clone());
                continue;
            }
        };
        n += 1;
        confusion[s.label][output.predicted] += 1;
        top1 += usize::from(output.predicted == s.label);
        top5 += usize::from(output.top_k.iter().take(k).any(|t| t.class == s.label));
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
    let per_class = (0..classes)
        .map(|c| {
            let count: usize = confusion[c].iter().sum();
            ClassScore {
                name: model.metadata.class_names[c].clone(),
                count,
                accuracy: if count > 0 {
                    confusion[c][c] as f64 / count as f64
                } else {
                    0.0
                },
            }
        })
        .collect();
    let report = Report {
        classes: model.metadata.class_names.clone(),
        samples: n,
        failed,
        top1: top1 as f64 / n.max(1) as f64,
        top5: top5 as f64 / n.max(1) as f64,
        per_class,
        confusion,
        executor: format!("{:?}", args.executor).to_lowercase(),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        print_report(&mut out, &report, k)?;
    }
    out.flush()?;
    if !report.failed.is_empty() {
        return Err(bad_input(anyhow::anyhow!(
            "{} of {} recordings could not be classified (see above)",
            report.failed.len(),
            samples.len()
        )));
    }
    Ok(())
}

fn print_report(out: &mut impl Write, r: &Report, k: usize) -> anyhow::Result<()> {
    writeln!(
        out,
        "{} recordings ({} executor): top-1 {:.2}%, top-{k} {:.2}%",
        r.samples,
        r.executor,
        100.0 * r.top1,
        100.0 * r.top5
    )?;
    writeln!(out, "per class:")?;
    for c in &r.per_class {
        writeln!(
            out,
            "  {:<16} {:>6.2}%  ({} recordings)",
            c.name,
            100.0 * c.accuracy,
            c.count
        )?;
    }
    let width = r.classes.iter().map(String::len).max().unwrap_or(1).max(4);
    writeln!(
        out,
        "confusion matrix (rows: true class, columns: predicted):"
    )?;
    write!(out, "  {:>width$}", "")?;
    for name in &r.classes {
        write!(out, " {name:>width$}")?;
    }
    writeln!(out)?;
    for (name, row) in r.classes.iter().zip(&r.confusion) {
        write!(out, "  {name:>width$}")?;
        for v in row {
            write!(out, " {v:>width$}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}
