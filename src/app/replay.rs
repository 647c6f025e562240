//! `inflor replay`: a labelled dataset split streamed through the daemon's own path (the file
//! source, the pipeline's `StreamWriter` windowing, `Classifier`s on executor worker threads
//! against one shared `Plan`, the publisher and a sink) and summed up in one report: accuracy
//! (scored by the code `eval` uses, so both give the same prediction for every recording),
//! latency, throughput, firing rates, synaptic operations and energy, and optionally the
//! quantization error with and without MPR.
//!
//! Each recording is one stream. `--threads N` starts N executor workers and keeps N streams
//! open at once; the pipeline puts each new stream on the least loaded worker, so each worker
//! runs one recording at a time. Queues block when full (as a file replay in the daemon
//! does), so nothing is dropped and the outputs do not depend on timing.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use inflor::config::Backpressure;
use inflor::dataset::{Sample, SplitSpec};
use inflor::exec::{ExecutorKind, Plan, PlanOptions};
use inflor::model::Model;
use inflor::pipeline::{Pipeline, PipelineHandle, Publish, StreamSpec};
use inflor::session::{Output, SessionOptions};
use inflor::source::{SourceError, file};
use plotters::prelude::*;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::app::bad_input;
use crate::app::decode_args::DecodeArgs;
use crate::app::labelled::{
    Accuracy, SplitArg, Tally, classifies_recording, parse_split_rule, select, top_k,
};

/// Windows a stream's queue holds before its file source waits.
const QUEUE_WINDOWS: usize = 16;

/// `inflor replay` arguments.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The dataset folder (class folders, or CIFAR10-DVS file names).
    pub dataset: PathBuf,
    /// The model file (.safetensors); the bundled DVS-Digits model when omitted.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Which recordings: test, train or all.
    #[arg(long, value_enum, default_value_t = SplitArg::Test)]
    pub split: SplitArg,
    /// The split rule: auto, default, test-below:N, ratio:R or list:PATH (as `dataset info`).
    #[arg(long, default_value = "auto", value_parser = parse_split_rule)]
    pub split_rule: SplitSpec,
    /// Pace each recording by its timestamps at real time (as `--speed 1`).
    #[arg(long, conflicts_with = "speed")]
    pub realtime: bool,
    /// Pace each recording by its timestamps at X times real time; as fast as possible when
    /// neither this nor --realtime is given.
    #[arg(long, value_name = "X", value_parser = parse_speed)]
    pub speed: Option<f64>,
    /// Replay only N recordings of the split, taken from each class in turn (the first of
    /// every class, then the second...), so a short run still covers every class.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Recordings replayed in parallel, each on an executor worker thread of its own.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: u16,
    /// Executor: event, dense or reference (identical logits).
    #[arg(long, value_enum, default_value_t = ExecutorKind::Event)]
    pub executor: ExecutorKind,
    /// Print the whole report as one JSON object (and no progress bar).
    #[arg(long)]
    pub json: bool,
    /// Also draw the confusion matrix into this PNG file (replaced if it exists).
    #[arg(long, value_name = "PATH")]
    pub confusion_png: Option<PathBuf>,
    /// Measure the mean quantization error (H − O)² and (φ(H) − O)² of one neuron layer
    /// (InfLoR Table 3); slows the run.
    #[arg(long)]
    pub quant_error: bool,
    /// The neuron layer --quant-error measures (0 = the first).
    #[arg(long, default_value_t = 0, requires = "quant_error")]
    pub quant_layer: usize,
    /// How to read the recordings.
    #[command(flatten)]
    pub decode: DecodeArgs,
}

fn parse_speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!("expected a positive real-time factor, found {s:?}")),
    }
}

/// Why a replay cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The folder for the confusion PNG is not there.
    #[error("cannot write {}: the folder {} does not exist", path.display(), folder.display())]
    NoOutputFolder {
        /// The PNG asked for.
        path: PathBuf,
        /// Its folder.
        folder: PathBuf,
    },
    /// The PNG path is a folder.
    #[error("the confusion PNG {} is a folder, not a file", path.display())]
    OutputIsFolder {
        /// The path given.
        path: PathBuf,
    },
}

/// p50, p95 and p99 of one quantity over the recordings (nearest rank), in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    fn of(mut values: Vec<f64>) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let i = ((p / 100.0) * values.len() as f64).ceil() as usize;
            values[i.clamp(1, values.len()) - 1]
        };
        Self {
            p50: rank(50.0),
            p95: rank(95.0),
            p99: rank(99.0),
            max: values[values.len() - 1],
        }
    }
}

/// How fast the split went through.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Throughput {
    /// Wall time from the first stream opened to the last output published, seconds.
    pub wall_s: f64,
    /// Recordings classified per second.
    pub recordings_per_s: f64,
    /// Events the sources delivered.
    pub events: u64,
    /// Events per second.
    pub events_per_s: f64,
    /// The recordings' own duration (first window start to last window end), summed, seconds.
    pub recorded_s: f64,
    /// Recorded duration over wall time: how many times faster than real time.
    pub real_time_factor: f64,
}

/// One layer's activity over every window of the split.
#[derive(Debug, Clone, Serialize)]
pub struct LayerRate {
    /// Node index in the inference network.
    pub node: usize,
    /// Node name.
    pub name: String,
    /// Neurons in the layer.
    pub neurons: u64,
    /// Spikes per neuron per timestep.
    pub firing_rate: f64,
}

/// Work and energy per recording (summed over its windows), averaged over the recordings.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PerSample {
    /// Spikes of every neuron layer.
    pub spikes: f64,
    /// Synaptic operations.
    pub synaptic_ops: f64,
    /// What a dense executor multiplies and adds.
    pub dense_macs: f64,
    /// Energy estimate, picojoules (accumulates in spiking layers, MACs in the first layer).
    pub energy_pj: f64,
    /// The same network run densely as an ANN, picojoules.
    pub dense_energy_pj: f64,
}

/// The quantization error of one neuron layer, over every neuron-timestep of the split.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Quantization {
    /// The neuron layer (0 = the first).
    pub layer: usize,
    /// Its node index.
    pub node: usize,
    /// Neuron-timesteps measured.
    pub samples: u64,
    /// Mean (H − O)², before MPR.
    pub plain: f64,
    /// Mean (φ(H) − O)², after MPR.
    pub mpr: f64,
}

/// One recording's result.
#[derive(Debug, Clone, Serialize)]
pub struct RecordingResult {
    /// Path relative to the dataset root.
    pub path: String,
    /// True class index.
    pub label: usize,
    /// Predicted class index (its first window's), None when it could not be classified.
    pub predicted: Option<usize>,
    /// The first window's logits.
    pub logits: Vec<f32>,
    /// Windows classified.
    pub windows: u64,
    /// Events the source delivered.
    pub events: u64,
    /// First window start to last window end, µs.
    pub duration_us: i64,
    /// The deciding window's end-to-end latency (arrival of its last event to its output), µs.
    pub latency_us: f64,
    /// Executor time over all its windows, µs.
    pub compute_us: f64,
    /// Stream open to stream finished, µs.
    pub wall_us: f64,
    /// Why it failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    /// The model file, or `bundled`.
    pub model: String,
    /// The dataset folder.
    pub dataset: String,
    /// The split replayed.
    pub split: &'static str,
    /// The executor.
    pub executor: &'static str,
    /// Worker threads.
    pub threads: u16,
    /// The pacing factor (1 = real time); null when as fast as possible.
    pub speed: Option<f64>,
    /// Accuracy of each recording's classification (its first window).
    #[serde(flatten)]
    pub accuracy: Accuracy,
    /// Windows classified over all recordings.
    pub windows: u64,
    /// Top-1 accuracy over every window (equal to `top1` under per-recording policies).
    pub window_top1: f64,
    /// Per recording: the deciding window's end-to-end latency.
    pub latency_us: Percentiles,
    /// Per recording: executor time.
    pub compute_us: Percentiles,
    /// Per recording: wall time from opening its stream to its end.
    pub recording_wall_us: Percentiles,
    /// Recordings and events per second, and the real-time factor.
    pub throughput: Throughput,
    /// Spikes per neuron per timestep over every neuron layer.
    pub firing_rate: f64,
    /// Each neuron layer's firing rate.
    pub layers: Vec<LayerRate>,
    /// Work and energy per recording.
    pub per_sample: PerSample,
    /// With `--quant-error`: the quantization error before and after MPR.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantization: Option<Quantization>,
    /// Every recording, in dataset order.
    pub recordings: Vec<RecordingResult>,
}

/// What the sink keeps of one stream's outputs.
#[derive(Debug, Default)]
struct StreamTally {
    first: Option<Output>,
    windows: u64,
    windows_correct: u64,
    start_us: Option<i64>,
    end_us: i64,
    compute_us: f64,
    spikes: u64,
    synaptic_ops: u64,
    dense_macs: u64,
    energy_pj: f64,
    dense_energy_pj: f64,
}

/// One neuron layer's counts over every window.
#[derive(Debug, Default)]
struct LayerTally {
    name: String,
    neurons: u64,
    spikes: u64,
    neuron_steps: u64,
}

#[derive(Debug, Default)]
struct Collected {
    streams: HashMap<String, StreamTally>,
    layers: BTreeMap<usize, LayerTally>,
    /// Σ plain·samples, Σ mpr·samples, Σ samples, and the node.
    quantization: Option<(f64, f64, u64, usize)>,
}

/// The sink: folds every published output into per-stream and per-layer sums, so memory grows
/// with the recordings, not with their windows.
#[derive(Debug, Clone, Default)]
struct Collector(Arc<Mutex<Collected>>);

impl Publish for Collector {
    fn publish(&mut self, output: &Output, _line: &str) {
        let Ok(mut c) = self.0.lock() else {
            return;
        };
        let s = c.streams.entry(output.stream.clone()).or_default();
        s.windows += 1;
        s.windows_correct += u64::from(output.label.as_deref() == Some(output.class.as_str()));
        s.start_us = Some(
            s.start_us
                .map_or(output.start_us, |t| t.min(output.start_us)),
        );
        s.end_us = s.end_us.max(output.end_us);
        s.compute_us += output.latency.compute_us;
        s.spikes += output.stats.spikes;
        s.synaptic_ops += output.stats.synaptic_ops;
        s.dense_macs += output.stats.dense_macs;
        s.energy_pj += output.stats.energy_pj;
        s.dense_energy_pj += output.stats.dense_energy_pj;
        if classifies_recording(output, s.first.as_ref()) {
            s.first = Some(output.clone());
        }
        for l in output.stats.layers.iter().filter(|l| l.neurons > 0) {
            let t = c.layers.entry(l.node).or_default();
            if t.name.is_empty() {
                t.name = l.name.clone();
            }
            t.neurons = l.neurons;
            t.spikes += l.spikes;
            t.neuron_steps += l.neurons * output.stats.timesteps;
        }
        if let Some(q) = &output.quantization {
            let (plain, mpr, n, _) = c.quantization.get_or_insert((0.0, 0.0, 0, q.node));
            *plain += q.plain * q.samples as f64;
            *mpr += q.mpr * q.samples as f64;
            *n += q.samples;
        }
    }

    fn flush(&mut self) {}
}

/// How one recording's stream ended.
struct StreamEnd {
    events: u64,
    wall: Duration,
    result: Result<(), SourceError>,
}

/// Runs the command.
pub fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let model = Arc::new(match &args.model {
        Some(path) => crate::app::load_model(path)?,
        None => crate::app::bundled_model()?,
    });
    let quantization_layer = args
        .quant_error
        .then(|| crate::app::plot::neuron_layer_node(&model, args.quant_layer))
        .transpose()?;
    let mut samples = select(&args.dataset, &args.split_rule, args.split, &model)?;
    if let Some(n) = args.limit {
        samples = each_class_in_turn(samples, usize::try_from(n).unwrap_or(usize::MAX));
    }
    if let Some(path) = &args.confusion_png {
        check_png_path(path).map_err(bad_input)?;
    }
    let speed = if args.realtime { Some(1.0) } else { args.speed };
    let plan = Plan::new(
        model.network.clone(),
        args.executor,
        PlanOptions {
            background_steps: model.metadata.input.timesteps,
            ..PlanOptions::default()
        },
    )
    .context("preparing the executor")?;
    let threads = usize::from(args.threads).min(samples.len()).max(1);
    let collector = Collector::default();
    let pipeline = Pipeline::start(
        Arc::clone(&model),
        plan,
        threads,
        QUEUE_WINDOWS,
        threads,
        vec![Box::new(collector.clone())],
    )
    .context("starting the executor workers")?;
    // A source bins its events on its own task, as in the daemon (file reads go to blocking
    // threads), so each recording in flight gets a runtime thread for its binning.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("inflor-replay-io")
        .enable_all()
        .build()
        .context("starting the I/O runtime")?;
    let bar = crate::app::progress_bar(samples.len() as u64, "replay");
    if args.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let replay = Replayer {
        handle: pipeline.handle(),
        model: Arc::clone(&model),
        decode: args.decode.clone(),
        speed,
        quantization_node: quantization_layer,
    };
    let started = Instant::now();
    let ends = runtime.block_on(replay.all(&samples, threads, &bar));
    drop(replay);
    let totals = pipeline.shutdown();
    let wall = started.elapsed();
    bar.finish_and_clear();
    let collected =
        std::mem::take(&mut *collector.0.lock().map_err(|_| {
            anyhow::anyhow!("the output sink failed while replaying (see the log)")
        })?);
    let report = build_report(
        &args,
        &model,
        &samples,
        ends,
        collected,
        totals.events_received,
        wall,
        speed,
    );
    crate::app::labelled::write_report(args.json, &report, |out, r| Ok(print_report(out, r)?))?;
    if let Some(path) = &args.confusion_png {
        draw_confusion(path, &report.accuracy)?;
    }
    if !report.accuracy.failed.is_empty() {
        return Err(bad_input(anyhow::anyhow!(
            "{} of {} recordings could not be classified (see above)",
            report.accuracy.failed.len(),
            samples.len()
        )));
    }
    Ok(())
}

/// The first `n` of `samples` taken from each class in turn, back in dataset order.
fn each_class_in_turn(samples: Vec<Sample>, n: usize) -> Vec<Sample> {
    let mut seen: HashMap<usize, usize> = HashMap::new();
    let mut ranked: Vec<(usize, usize, Sample)> = samples
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let rank = seen.entry(s.label).or_default();
            *rank += 1;
            (*rank, i, s)
        })
        .collect();
    ranked.sort_by_key(|&(rank, i, _)| (rank, i));
    ranked.truncate(n);
    ranked.sort_by_key(|&(_, i, _)| i);
    ranked.into_iter().map(|(_, _, s)| s).collect()
}

fn check_png_path(path: &Path) -> Result<(), ReplayError> {
    if path.is_dir() {
        return Err(ReplayError::OutputIsFolder {
            path: path.to_path_buf(),
        });
    }
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        return Err(ReplayError::NoOutputFolder {
            path: path.to_path_buf(),
            folder: folder.to_path_buf(),
        });
    }
    Ok(())
}

/// Opens one stream per recording and replays it through the daemon's file source.
struct Replayer {
    handle: PipelineHandle,
    model: Arc<Model>,
    decode: DecodeArgs,
    speed: Option<f64>,
    quantization_node: Option<usize>,
}

impl Replayer {
    /// Replays every sample, `threads` at a time; the ends are in sample order.
    async fn all(
        &self,
        samples: &[Sample],
        threads: usize,
        bar: &indicatif::ProgressBar,
    ) -> Vec<StreamEnd> {
        let mut ends: Vec<Option<StreamEnd>> = (0..samples.len()).map(|_| None).collect();
        let mut running = tokio::task::JoinSet::new();
        let mut next = 0;
        while next < samples.len() || !running.is_empty() {
            while running.len() < threads && next < samples.len() {
                let i = next;
                next += 1;
                let opened = self.open(&samples[i]);
                running.spawn(async move { (i, replay_one(opened).await) });
            }
            match running.join_next().await {
                Some(Ok((i, end))) => {
                    ends[i] = Some(end);
                    bar.inc(1);
                }
                Some(Err(e)) => {
                    // A replay task panicked: its recording is reported as failed below.
                    tracing::error!(error = %e, "a replay task failed");
                }
                None => {}
            }
        }
        ends.into_iter()
            .map(|e| {
                e.unwrap_or(StreamEnd {
                    events: 0,
                    wall: Duration::ZERO,
                    result: Err(SourceError::Io {
                        what: "replaying".into(),
                        source: std::io::Error::other("the replay task failed"),
                    }),
                })
            })
            .collect()
    }

    /// The stream of one recording, as the daemon would open it for a file source.
    fn open(
        &self,
        sample: &Sample,
    ) -> Result<(file::Replay, inflor::pipeline::StreamWriter), SourceError> {
        let classes = &self.model.metadata.class_names;
        let spec = StreamSpec {
            id: sample.relative.clone(),
            source: format!("file {}", sample.path.display()),
            input: self.model.metadata.input,
            session: SessionOptions {
                stream: sample.relative.clone(),
                top_k: top_k(classes.len()),
                label: classes.get(sample.label).cloned(),
                quantization_node: self.quantization_node,
                ..SessionOptions::default()
            },
            backpressure: Backpressure::Block,
            max_events_per_s: None,
            resolution: self.decode.resolution,
        };
        let writer = self.handle.open(spec)?;
        let replay = file::Replay {
            path: sample.path.clone(),
            format: self.decode.format,
            speed: self.speed,
            repeat: false,
            options: self.decode.options(),
        };
        Ok((replay, writer))
    }
}

async fn replay_one(
    opened: Result<(file::Replay, inflor::pipeline::StreamWriter), SourceError>,
) -> StreamEnd {
    let started = Instant::now();
    let (replay, writer) = match opened {
        Ok(o) => o,
        Err(e) => {
            return StreamEnd {
                events: 0,
                wall: started.elapsed(),
                result: Err(e),
            };
        }
    };
    let r = file::replay(&replay, None, writer, CancellationToken::new()).await;
    StreamEnd {
        events: r.as_ref().map_or(0, |r| r.events),
        wall: started.elapsed(),
        result: r.map(|_| ()),
    }
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    args: &ReplayArgs,
    model: &Model,
    samples: &[Sample],
    ends: Vec<StreamEnd>,
    mut collected: Collected,
    events: u64,
    wall: Duration,
    speed: Option<f64>,
) -> ReplayReport {
    let mut tally = Tally::new(&model.metadata.class_names);
    let mut recordings = Vec::with_capacity(samples.len());
    let (mut windows, mut windows_correct, mut recorded_us) = (0u64, 0u64, 0i64);
    let mut per_sample = PerSample::default();
    let (mut latency, mut compute, mut recording_wall) = (Vec::new(), Vec::new(), Vec::new());
    for (s, end) in samples.iter().zip(ends) {
        let stream = collected.streams.remove(&s.relative).unwrap_or_default();
        let error = match (&end.result, &stream.first) {
            (Err(e), _) => Some(error_chain(e)),
            (Ok(()), None) => Some("no events, not classified".to_owned()),
            (Ok(()), Some(_)) => None,
        };
        let duration_us = stream
            .start_us
            .map_or(0, |start| stream.end_us.saturating_sub(start));
        let mut result = RecordingResult {
            path: s.relative.clone(),
            label: s.label,
            predicted: None,
            logits: Vec::new(),
            windows: stream.windows,
            events: end.events,
            duration_us,
            latency_us: 0.0,
            compute_us: stream.compute_us,
            wall_us: end.wall.as_secs_f64() * 1e6,
            error,
        };
        match (&result.error, &stream.first) {
            (None, Some(first)) => {
                tally.add(s.label, first);
                result.predicted = Some(first.predicted);
                result.logits = first.logits.clone();
                result.latency_us = first.latency.end_to_end_us;
                windows += stream.windows;
                windows_correct += stream.windows_correct;
                recorded_us = recorded_us.saturating_add(duration_us);
                latency.push(result.latency_us);
                compute.push(result.compute_us);
                recording_wall.push(result.wall_us);
                per_sample.spikes += stream.spikes as f64;
                per_sample.synaptic_ops += stream.synaptic_ops as f64;
                per_sample.dense_macs += stream.dense_macs as f64;
                per_sample.energy_pj += stream.energy_pj;
                per_sample.dense_energy_pj += stream.dense_energy_pj;
            }
            (error, _) => {
                eprintln!(
                    "{}: {}",
                    s.path.display(),
                    error.as_deref().unwrap_or("not classified")
                );
                tally.fail(&s.relative);
            }
        }
        recordings.push(result);
    }
    let accuracy = tally.finish();
    let n = accuracy.samples.max(1) as f64;
    per_sample.spikes /= n;
    per_sample.synaptic_ops /= n;
    per_sample.dense_macs /= n;
    per_sample.energy_pj /= n;
    per_sample.dense_energy_pj /= n;
    let wall_s = wall.as_secs_f64().max(1e-9);
    let (spikes, steps) = collected
        .layers
        .values()
        .fold((0u64, 0u64), |(s, n), l| (s + l.spikes, n + l.neuron_steps));
    let layers = collected
        .layers
        .iter()
        .map(|(&node, l)| LayerRate {
            node,
            name: l.name.clone(),
            neurons: l.neurons,
            firing_rate: l.spikes as f64 / l.neuron_steps.max(1) as f64,
        })
        .collect();
    let recorded_s = recorded_us as f64 * 1e-6;
    ReplayReport {
        model: args
            .model
            .as_ref()
            .map_or_else(|| "bundled".to_owned(), |p| p.display().to_string()),
        dataset: args.dataset.display().to_string(),
        split: args.split.name(),
        executor: args.executor.name(),
        threads: args.threads,
        speed,
        window_top1: windows_correct as f64 / windows.max(1) as f64,
        windows,
        latency_us: Percentiles::of(latency),
        compute_us: Percentiles::of(compute),
        recording_wall_us: Percentiles::of(recording_wall),
        throughput: Throughput {
            wall_s,
            recordings_per_s: accuracy.samples as f64 / wall_s,
            events,
            events_per_s: events as f64 / wall_s,
            recorded_s,
            real_time_factor: recorded_s / wall_s,
        },
        accuracy,
        firing_rate: spikes as f64 / steps.max(1) as f64,
        layers,
        per_sample,
        quantization: collected
            .quantization
            .map(|(plain, mpr, samples, node)| Quantization {
                layer: args.quant_layer,
                node,
                samples,
                plain: plain / samples.max(1) as f64,
                mpr: mpr / samples.max(1) as f64,
            }),
        recordings,
    }
}

/// An error and its causes on one line.
fn error_chain(e: &SourceError) -> String {
    let mut msg = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cause = c.source();
    }
    msg
}

fn print_report(out: &mut impl Write, r: &ReplayReport) -> std::io::Result<()> {
    let a = &r.accuracy;
    let pacing = match r.speed {
        Some(x) => format!("paced at {x}x real time"),
        None => "as fast as possible".to_owned(),
    };
    writeln!(
        out,
        "{} recordings of {} ({} split), {} windows, {} executor, {} thread{}, {pacing}",
        a.samples,
        r.dataset,
        r.split,
        r.windows,
        r.executor,
        r.threads,
        if r.threads == 1 { "" } else { "s" }
    )?;
    writeln!(
        out,
        "accuracy: top-1 {:.2}%, top-{} {:.2}% (every window: top-1 {:.2}%)",
        100.0 * a.top1,
        top_k(a.classes.len()),
        100.0 * a.top5,
        100.0 * r.window_top1
    )?;
    a.print(out)?;
    let ms = |p: &Percentiles| {
        format!(
            "p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms",
            p.p50 * 1e-3,
            p.p95 * 1e-3,
            p.p99 * 1e-3
        )
    };
    writeln!(out, "latency per recording:")?;
    writeln!(
        out,
        "  decision (last event to output): {}",
        ms(&r.latency_us)
    )?;
    writeln!(
        out,
        "  executor:                        {}",
        ms(&r.compute_us)
    )?;
    writeln!(
        out,
        "  stream open to end:              {}",
        ms(&r.recording_wall_us)
    )?;
    let t = &r.throughput;
    writeln!(
        out,
        "throughput: {:.1} recordings/s, {:.0} events/s, {:.1}x real time ({:.2} s recorded in {:.2} s)",
        t.recordings_per_s, t.events_per_s, t.real_time_factor, t.recorded_s, t.wall_s
    )?;
    writeln!(
        out,
        "firing rate: {:.4} spikes per neuron per timestep; per layer:",
        r.firing_rate
    )?;
    for l in &r.layers {
        writeln!(
            out,
            "  {:<24} {:>8} neurons  {:.4}",
            l.name, l.neurons, l.firing_rate
        )?;
    }
    let p = &r.per_sample;
    writeln!(
        out,
        "per recording: {:.0} spikes, {:.0} synaptic ops ({:.0} dense MACs), energy {:.3} µJ \
         ({:.3} µJ as a dense ANN)",
        p.spikes,
        p.synaptic_ops,
        p.dense_macs,
        p.energy_pj * 1e-6,
        p.dense_energy_pj * 1e-6
    )?;
    if let Some(q) = &r.quantization {
        writeln!(
            out,
            "quantization error of neuron layer {} over {} neuron-timesteps: (H - O)^2 {:.5} \
             before MPR, (phi(H) - O)^2 {:.5} after",
            q.layer, q.samples, q.plain, q.mpr
        )?;
    }
    Ok(())
}

/// Side of a confusion-matrix cell in pixels for `classes` classes.
fn cell_size(classes: usize) -> u32 {
    if classes <= 20 {
        48
    } else {
        (960 / classes.max(1) as u32).max(6)
    }
}

/// The confusion matrix's PNG size: 140 pixels of margins plus one cell per class each way.
pub fn confusion_png_size(classes: usize) -> (u32, u32) {
    let side = 140 + cell_size(classes) * classes as u32;
    (side, side)
}

/// Draws the confusion matrix: rows are true classes, columns predictions, each cell shaded by
/// the fraction of its row and labelled with its count.
fn draw_confusion(path: &Path, a: &Accuracy) -> anyhow::Result<()> {
    use crate::app::plot::{FAMILY, drawing, register_font, write_png};
    register_font()?;
    let n = a.classes.len();
    let cell = cell_size(n) as i32;
    let (left, top) = (100i32, 40i32);
    let size = confusion_png_size(n);
    write_png(path, size, |root| {
        let title = format!(
            "confusion matrix: {} recordings, top-1 {:.2}%",
            a.samples,
            100.0 * a.top1
        );
        root.draw(&Text::new(title, (left, 10), (FAMILY, 18).into_font()))
            .map_err(drawing)?;
        let label_font = (FAMILY, (cell / 3).clamp(8, 16)).into_font();
        for (r, row) in a.confusion.iter().enumerate() {
            let total: usize = row.iter().sum();
            for (c, &count) in row.iter().enumerate() {
                let share = if total > 0 {
                    count as f64 / total as f64
                } else {
                    0.0
                };
                let shade = |full: u8| (255.0 - share * (255.0 - f64::from(full))) as u8;
                let colour = RGBColor(shade(33), shade(102), shade(172));
                let (x, y) = (left + c as i32 * cell, top + r as i32 * cell);
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    colour.filled(),
                ))
                .map_err(drawing)?;
                if count > 0 && cell >= 20 {
                    let ink = if share > 0.5 { WHITE } else { BLACK };
                    root.draw(&Text::new(
                        count.to_string(),
                        (x + cell / 4, y + cell / 3),
                        label_font.clone().color(&ink),
                    ))
                    .map_err(drawing)?;
                }
            }
        }
        let grid = n as i32 * cell;
        root.draw(&Rectangle::new(
            [(left, top), (left + grid, top + grid)],
            BLACK.stroke_width(1),
        ))
        .map_err(drawing)?;
        for (i, name) in a.classes.iter().enumerate() {
            let short: String = name.chars().take(10).collect();
            let mid = i as i32 * cell + cell / 3;
            root.draw(&Text::new(
                short.clone(),
                (8, top + mid),
                label_font.clone(),
            ))
            .map_err(drawing)?;
            root.draw(&Text::new(
                short,
                (left + mid, top + grid + 8),
                label_font.clone().transform(FontTransform::Rotate90),
            ))
            .map_err(drawing)?;
        }
        root.draw(&Text::new(
            "true class (rows), predicted (columns)",
            (left, top + grid + 80),
            (FAMILY, 14).into_font(),
        ))
        .map_err(drawing)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = Percentiles::of((1..=100).map(f64::from).collect());
        assert_eq!((p.p50, p.p95, p.p99, p.max), (50.0, 95.0, 99.0, 100.0));
        let one = Percentiles::of(vec![7.0]);
        assert_eq!((one.p50, one.p99), (7.0, 7.0));
        assert_eq!(Percentiles::of(Vec::new()).p50, 0.0);
    }

    #[test]
    fn a_limit_takes_each_class_in_turn_and_keeps_dataset_order() {
        let sample = |label: usize, n: u64| Sample {
            path: PathBuf::from(format!("{label}/{n}")),
            relative: format!("{label}/{n}"),
            label,
            index: Some(n),
            split: inflor::dataset::Split::Test,
        };
        let all = vec![
            sample(0, 0),
            sample(0, 1),
            sample(0, 2),
            sample(1, 0),
            sample(2, 0),
        ];
        let names = |v: Vec<Sample>| v.into_iter().map(|s| s.relative).collect::<Vec<_>>();
        assert_eq!(
            names(each_class_in_turn(all.clone(), 4)),
            ["0/0", "0/1", "1/0", "2/0"]
        );
        assert_eq!(names(each_class_in_turn(all.clone(), 2)), ["0/0", "1/0"]);
        assert_eq!(each_class_in_turn(all, 99).len(), 5);
    }

    #[test]
    fn speeds_must_be_positive_and_finite() {
        assert_eq!(parse_speed("2.5"), Ok(2.5));
        for bad in ["0", "-1", "inf", "NaN", "fast"] {
            assert!(parse_speed(bad).is_err(), "{bad}");
        }
    }
}
