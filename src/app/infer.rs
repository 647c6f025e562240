//! `inflor infer`: classify recordings with a model. Each file streams through a `Session`
//! (decoder → windowing → executor) in bounded batches, so memory is bounded by the window,
//! not the recording; each window's `Output` goes to a text or JSON-lines sink on stdout.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use inflor::exec::{ExecutorKind, Plan, PlanOptions};
use inflor::format::FileReader;
use inflor::model::Model;
use inflor::session::{Membranes, Output, Session, SessionOptions};

use crate::app::decode_args::DecodeArgs;
use crate::app::{bad_input, check_output};

/// `inflor infer` arguments.
#[derive(Debug, clap::Args)]
pub struct InferArgs {
    /// The model file (.safetensors); the bundled DVS-Digits model when omitted.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Recordings to classify (any supported event format), or folders of them.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Executor: event (only touches neurons that receive spikes), dense (im2col + GEMM) or
    /// reference (plain loops, for checking). All give identical spikes and logits.
    #[arg(long, value_enum, default_value_t = ExecutorKind::Event)]
    pub executor: ExecutorKind,
    /// Worker threads for the executor (1 runs on the main thread).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: u16,
    /// How many classes to list per window (at least 1).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    pub top_k: u16,
    /// Stream window policies: a classification every HOP bins (default T, tumbling).
    #[arg(long)]
    pub hop: Option<usize>,
    /// Reset membranes at each window (as in training) or carry them across windows.
    #[arg(long, value_enum, default_value_t = Membranes::Reset)]
    pub membranes: Membranes,
    /// One JSON object per window instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write every window's frames to this .npy file, shape [windows, T, 2, H, W] (f32).
    #[arg(long)]
    pub dump_frames: Option<PathBuf>,
    /// Overwrite the --dump-frames file if it exists.
    #[arg(long)]
    pub force: bool,
    /// How to read the files.
    #[command(flatten)]
    pub decode: DecodeArgs,
}

/// File extensions taken from folders (files named on the command line are always read).
const EVENT_EXTENSIONS: [&str; 6] = ["aedat", "aedat4", "raw", "dat", "bin", "es"];

/// The files named, with each folder replaced by the event files under it (sorted, hidden
/// entries skipped).
pub fn expand_inputs(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found = Vec::new();
            walk(input, &mut found)
                .with_context(|| format!("listing {}", input.display()))
                .map_err(bad_input)?;
            found.sort();
            if found.is_empty() {
                return Err(bad_input(anyhow::anyhow!(
                    "{} holds no event files ({})",
                    input.display(),
                    EVENT_EXTENSIONS.join(", ")
                )));
            }
            files.extend(found);
        } else {
            files.push(input.clone());
        }
    }
    Ok(files)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
        {
            continue;
        }
        if path.is_dir() {
            walk(&path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EVENT_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Runs the command.
pub fn run(args: InferArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.dump_frames {
        check_output(path, args.force)?;
    }
    let model = match &args.model {
        Some(path) => crate::app::load_model(path)?,
        None => crate::app::bundled_model()?,
    };
    let files = expand_inputs(&args.files)?;
    let pool = crate::app::pool(args.threads)?;
    let plan = Plan::new(
        model.network.clone(),
        args.executor,
        PlanOptions {
            pool,
            background_steps: model.metadata.input.timesteps,
            ..PlanOptions::default()
        },
    )
    .context("preparing the executor")?;
    let mut dump = args.dump_frames.as_ref().map(|_| FrameDump::default());
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failed = 0usize;
    for file in &files {
        match classify(&args, &model, &plan, file, &mut out, dump.as_mut()) {
            Ok(()) => {}
            // A closed stdout ends the command quietly; it is not the file's fault.
            Err(e) if crate::app::is_broken_pipe(&e) => return Err(e),
            Err(e) => {
                failed += 1;
                out.flush()?;
                eprintln!("{}: {}", file.display(), crate::app::chain(&e));
            }
        }
    }
    out.flush()?;
    if let (Some(path), Some(dump)) = (&args.dump_frames, dump) {
        let input = &model.metadata.input;
        let dims = [
            dump.windows,
            input.timesteps,
            inflor::binner::POLARITY_CHANNELS,
            usize::from(input.height),
            usize::from(input.width),
        ];
        let file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        inflor::binner::npy::write_f32(std::io::BufWriter::new(file), &dims, &dump.values)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if failed > 0 {
        return Err(bad_input(anyhow::anyhow!(
            "{failed} of {} inputs could not be classified (see above)",
            files.len()
        )));
    }
    Ok(())
}

/// Frames of every window, for `--dump-frames` (windows shorter than T are padded with empty
/// frames so the array stays rectangular).
#[derive(Default)]
struct FrameDump {
    windows: usize,
    values: Vec<f32>,
}

/// Streams one file through a session and writes its outputs.
fn classify(
    args: &InferArgs,
    model: &Model,
    plan: &std::sync::Arc<Plan>,
    file: &Path,
    out: &mut impl Write,
    mut dump: Option<&mut FrameDump>,
) -> anyhow::Result<()> {
    let mut reader = FileReader::open(file, args.decode.format, &args.decode.options())?;
    let mut events = Vec::new();
    let mut outputs = Vec::new();
    let mut session: Option<Session> = None;
    let stream = file.display().to_string();
    loop {
        events.clear();
        let more = reader.next_batch(&mut events)?;
        if session.is_none() && (reader.info().is_some() || !more) {
            let info = reader.info_or_default();
            if info.width == 0 || info.height == 0 {
                return Err(bad_input(anyhow::anyhow!(
                    "the {} stream does not say its sensor size; pass --resolution WxH",
                    reader.format()
                )));
            }
            let options = SessionOptions {
                stream: stream.clone(),
                top_k: usize::from(args.top_k),
                hop: args.hop,
                membranes: args.membranes,
                keep_frames: dump.is_some(),
                ..SessionOptions::default()
            };
            session = Some(
                Session::new(plan.clone(), model, (info.width, info.height), options)
                    .map_err(bad_input)?,
            );
        }
        if let Some(session) = session.as_mut() {
            outputs.clear();
            if more {
                session.push(&events, &mut outputs).map_err(bad_input)?;
            } else {
                session.push(&events, &mut outputs).map_err(bad_input)?;
                session.finish(&mut outputs).map_err(bad_input)?;
            }
            for output in &outputs {
                if let Some(dump) = dump.as_deref_mut() {
                    add_frames(dump, output, model);
                }
                report(out, args.json, output)?;
            }
        }
        if !more {
            break;
        }
    }
    if session.as_ref().is_some_and(|s| s.windows_out() == 0) {
        tracing::warn!(file = %file.display(), "no events, nothing to classify");
    }
    Ok(())
}

fn add_frames(dump: &mut FrameDump, output: &Output, model: &Model) {
    let Some(frames) = &output.frames else {
        return;
    };
    let t = model.metadata.input.timesteps;
    let len = model.metadata.input.shape().len();
    for frame in frames {
        dump.values.extend(frame.to_dense());
    }
    dump.values.resize(
        dump.values.len() + len * t.saturating_sub(frames.len()),
        0.0,
    );
    dump.windows += 1;
}

fn report(out: &mut impl Write, json: bool, o: &Output) -> anyhow::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, o)?;
        writeln!(out)?;
        return Ok(());
    }
    let s = &o.stats;
    writeln!(
        out,
        "{} window {} [{}..{} µs, {} events]: {} ({:.4}){}",
        o.stream,
        o.window,
        o.start_us,
        o.end_us,
        o.events,
        o.class,
        o.top_k.first().map_or(0.0, |t| t.logit),
        if o.complete { "" } else { " (partial window)" }
    )?;
    let ranked: Vec<String> = o
        .top_k
        .iter()
        .map(|t| format!("{} {:.4}", t.name, t.logit))
        .collect();
    writeln!(out, "  top-{}: {}", o.top_k.len(), ranked.join(", "))?;
    writeln!(
        out,
        "  spikes {} (rate {:.3}), synaptic ops {} vs {} dense MACs; compute {:.2} ms",
        s.spikes,
        s.firing_rate,
        s.synaptic_ops,
        s.dense_macs,
        o.latency.compute_us / 1e3
    )?;
    writeln!(
        out,
        "  energy estimate {:.2} µJ vs {:.2} µJ run densely (45 nm: 0.9 pJ per accumulate, \
         4.6 pJ per multiply-accumulate)",
        s.energy_pj / 1e6,
        s.dense_energy_pj / 1e6
    )?;
    writeln!(
        out,
        "  {:<24} {:>9} {:>7} {:>12} {:>12} {:>21}",
        "layer", "spikes", "rate", "syn. ops", "dense MACs", "neuron updates"
    )?;
    for n in &s.layers {
        let rate = if n.neurons > 0 {
            format!("{:.3}", n.firing_rate)
        } else {
            "-".to_string()
        };
        let updates = if n.neuron_updates_total > 0 {
            format!("{}/{}", n.neuron_updates, n.neuron_updates_total)
        } else {
            "-".to_string()
        };
        writeln!(
            out,
            "  {:<24} {:>9} {:>7} {:>12} {:>12} {:>21}",
            n.name, n.spikes, rate, n.synaptic_ops, n.dense_macs, updates
        )?;
    }
    Ok(())
}
