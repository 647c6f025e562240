//! `inflor infer`: classify recordings with a model. Reads each file, bins it with the binner
//! exactly as the model's input spec says (window policy, resize, normalisation), runs an
//! executor on each classification window of T frames, and prints the class, the top-k scores
//! and the spike statistics (text, or one JSON object per window).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use inflor::binner::{
    FrameBinner, FrameSpec, Normalization, RecordingWindows, ResizeMode, SparseFrame, StreamBinner,
    StreamWindows,
};
use inflor::event::Event;
use inflor::exec::{
    ExecutorKind, Plan, PlanOptions, RunOptions, RunOutput as Output, input_frame_shape,
};
use inflor::format::read_file;
use inflor::snn::Model;
use inflor::snn::file::{InputSpec, Normalisation, ResizeMethod, SplitBy, WindowSpec};

use crate::app::bad_input;
use crate::app::decode_args::DecodeArgs;

/// Which executor runs the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorArg {
    /// The event-driven executor (only touches neurons that receive spikes).
    Event,
    /// im2col + GEMM over every neuron and weight.
    Dense,
    /// Plain loops; slow, for checking.
    Reference,
}

/// `inflor infer` arguments.
#[derive(Debug, clap::Args)]
pub struct InferArgs {
    /// The model file (.safetensors).
    #[arg(long)]
    pub model: PathBuf,
    /// Recordings to classify (any supported event format).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Executor.
    #[arg(long, value_enum, default_value_t = ExecutorArg::Event)]
    pub executor: ExecutorArg,
    /// How many classes to list per window.
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// One JSON object per window instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write every window's frames to this .npy file, shape [windows, T, C, H, W] (f32).
    #[arg(long)]
    pub dump_frames: Option<PathBuf>,
    /// How to read the files.
    #[command(flatten)]
    pub decode: DecodeArgs,
}

/// One classification: T frames and where they came from.
#[derive(Debug, Clone, PartialEq)]
struct Window {
    frames: Vec<SparseFrame>,
    start_us: i64,
    end_us: i64,
    events: u64,
}

/// Runs the command.
pub fn run(args: InferArgs) -> anyhow::Result<()> {
    let model = Model::load(&args.model)
        .map_err(bad_input)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let network = model.network.clone();
    let kind = match args.executor {
        ExecutorArg::Dense => ExecutorKind::Dense,
        ExecutorArg::Reference => ExecutorKind::Reference,
        ExecutorArg::Event => ExecutorKind::Event,
    };
    let options = PlanOptions {
        background_steps: model.metadata.input.timesteps,
        ..PlanOptions::default()
    };
    let plan = Plan::new(network.clone(), kind, options)
        .with_context(|| format!("preparing the {kind} executor"))?;
    let mut state = plan.new_state();
    let mut scratch = plan.new_scratch();
    let shape = input_frame_shape(&network);
    let input = model.metadata.input;
    let mut dumped: Vec<f32> = Vec::new();
    let mut dumped_windows = 0usize;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();

    for file in &args.files {
        let recording = read_file(file, args.decode.format, &args.decode.options())?;
        let sensor = sensor_size(
            recording.info.width,
            recording.info.height,
            &recording.events,
        );
        let windows = bin(&recording.events, sensor, &input).map_err(bad_input)?;
        if windows.is_empty() {
            tracing::warn!(file = %file.display(), "no events, nothing to classify");
        }
        for (index, window) in windows.iter().enumerate() {
            if args.dump_frames.is_some() {
                for f in &window.frames {
                    debug_assert_eq!(f.shape, shape);
                    dumped.extend(f.to_dense());
                }
                dumped_windows += 1;
            }
            state.reset();
            let output = plan.run(
                &mut scratch,
                &mut state,
                &window.frames,
                &RunOptions::default(),
            )?;
            report(&mut out, &args, &model, file, index, window, &output)?;
        }
    }
    if let Some(path) = &args.dump_frames {
        let dims = [
            dumped_windows,
            input.timesteps,
            shape.channels,
            shape.height,
            shape.width,
        ];
        let file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        inflor::binner::npy::write_f32(std::io::BufWriter::new(file), &dims, &dumped)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Bins a recording into classification windows per the model's input spec.
fn bin(events: &[Event], sensor: (u16, u16), input: &InputSpec) -> anyhow::Result<Vec<Window>> {
    if input.channels != inflor::binner::POLARITY_CHANNELS {
        anyhow::bail!(
            "the model expects {} input channels; the binner makes {} (OFF, ON)",
            input.channels,
            inflor::binner::POLARITY_CHANNELS
        );
    }
    let to_u16 = |v: usize, what: &str| {
        u16::try_from(v).map_err(|_| anyhow::anyhow!("model input {what} {v} is too large"))
    };
    let spec = FrameSpec {
        sensor_width: sensor.0,
        sensor_height: sensor.1,
        width: to_u16(input.width, "width")?,
        height: to_u16(input.height, "height")?,
        resize: match input.resize {
            ResizeMethod::Nearest => ResizeMode::Nearest,
            ResizeMethod::Bilinear => ResizeMode::Bilinear,
            ResizeMethod::Area => ResizeMode::Area,
        },
        normalization: match input.normalisation {
            Normalisation::None => Normalization::None,
            Normalisation::Binary => Normalization::Binary,
            Normalisation::MaxPerFrame => Normalization::MaxPerFrame,
            Normalisation::Log1p => Normalization::Log1p,
        },
    };
    let t = input.timesteps;
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Ok(Vec::new());
    };
    let stream = match input.window {
        WindowSpec::Recording { split_by } => {
            let windows = match split_by {
                SplitBy::EqualCount => RecordingWindows::EqualCount { bins: t },
                SplitBy::EqualDuration => RecordingWindows::EqualDuration { bins: t },
            };
            let frames = FrameBinner::new(&spec)?.bin_recording(events, windows)?;
            return Ok(vec![Window {
                frames,
                start_us: first.t,
                end_us: last.t.saturating_add(1),
                events: events.len() as u64,
            }]);
        }
        WindowSpec::Duration { bin_us } => StreamWindows::tumbling_duration(bin_us),
        WindowSpec::Count { bin_events } => StreamWindows::tumbling_count(bin_events),
    };
    let mut binner = StreamBinner::new(&spec, stream)?;
    let mut bins = Vec::new();
    binner.push(events, &mut bins);
    binner.finish(&mut bins);
    // Every T consecutive bins are one classification; a trailing partial group is kept only
    // when it is the only one (a recording shorter than one classification).
    let groups = bins.len() / t.max(1);
    let take = if groups == 0 {
        usize::from(!bins.is_empty())
    } else {
        groups
    };
    Ok(bins
        .chunks(t.max(1))
        .take(take)
        .map(|group| Window {
            start_us: group.first().map_or(0, |b| b.start_us),
            end_us: group.last().map_or(0, |b| b.end_us),
            events: group.iter().map(|b| b.events).sum(),
            frames: group.iter().map(|b| b.frame.clone()).collect(),
        })
        .collect())
}

fn report(
    out: &mut impl Write,
    args: &InferArgs,
    model: &Model,
    file: &Path,
    index: usize,
    window: &Window,
    output: &Output,
) -> anyhow::Result<()> {
    let names = &model.metadata.class_names;
    let name = |c: usize| names.get(c).map_or("?", String::as_str);
    let top = output.top_k(args.top_k.max(1));
    let stats = &output.stats;
    let (updates, updates_total) = stats.neuron_updates();
    if args.json {
        let doc = serde_json::json!({
            "file": file.display().to_string(),
            "window": index,
            "start_us": window.start_us,
            "end_us": window.end_us,
            "events": window.events,
            "predicted": output.predicted(),
            "class": name(output.predicted()),
            "top_k": top.iter().map(|&(c, l)| serde_json::json!({"class": c, "name": name(c), "logit": l})).collect::<Vec<_>>(),
            "logits": output.logits,
            "executor": args.executor.to_possible_value_name(),
            "stats": {
                "timesteps": stats.timesteps,
                "spikes": stats.total_spikes(),
                "firing_rate": stats.mean_firing_rate(),
                "synaptic_ops": stats.total_synaptic_ops(),
                "dense_macs": stats.total_dense_macs(),
                "performed_ops": stats.total_performed_ops(),
                "neuron_updates": updates,
                "neuron_updates_total": updates_total,
                "energy_pj": stats.energy_pj(),
                "dense_energy_pj": stats.dense_energy_pj(),
                "layers": stats.nodes.iter().filter(|n| n.neurons > 0 || n.dense_macs > 0).collect::<Vec<_>>(),
            },
        });
        writeln!(out, "{doc}")?;
        return Ok(());
    }
    writeln!(
        out,
        "{} window {index} [{}..{} µs, {} events]: {} ({:.4})",
        file.display(),
        window.start_us,
        window.end_us,
        window.events,
        name(output.predicted()),
        top.first().map_or(0.0, |t| t.1)
    )?;
    let ranked: Vec<String> = top
        .iter()
        .map(|&(c, l)| format!("{} {:.4}", name(c), l))
        .collect();
    writeln!(out, "  top-{}: {}", top.len(), ranked.join(", "))?;
    writeln!(
        out,
        "  spikes {} (rate {:.3}), synaptic ops {} vs {} dense MACs, energy {:.2} µJ vs {:.2} µJ dense",
        stats.total_spikes(),
        stats.mean_firing_rate(),
        stats.total_synaptic_ops(),
        stats.total_dense_macs(),
        stats.energy_pj() / 1e6,
        stats.dense_energy_pj() / 1e6
    )?;
    writeln!(
        out,
        "  {:<24} {:>9} {:>7} {:>12} {:>12} {:>21}",
        "layer", "spikes", "rate", "syn. ops", "dense MACs", "neuron updates"
    )?;
    for n in stats
        .nodes
        .iter()
        .filter(|n| n.neurons > 0 || n.dense_macs > 0)
    {
        let rate = if n.neurons > 0 && stats.timesteps > 0 {
            format!(
                "{:.3}",
                n.spikes as f64 / (n.neurons as f64 * stats.timesteps as f64)
            )
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

impl ExecutorArg {
    fn to_possible_value_name(self) -> &'static str {
        match self {
            Self::Event => "event",
            Self::Dense => "dense",
            Self::Reference => "reference",
        }
    }
}

/// The sensor size: from the stream header, else from the largest coordinates seen.
fn sensor_size(width: u16, height: u16, events: &[Event]) -> (u16, u16) {
    if width > 0 && height > 0 {
        return (width, height);
    }
    let w = events
        .iter()
        .map(|e| e.x.saturating_add(1))
        .max()
        .unwrap_or(1);
    let h = events
        .iter()
        .map(|e| e.y.saturating_add(1))
        .max()
        .unwrap_or(1);
    (w, h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: i64, x: u16, y: u16, polarity: bool) -> Event {
        Event { t, x, y, polarity }
    }

    fn spec(window: WindowSpec, timesteps: usize) -> InputSpec {
        InputSpec {
            channels: 2,
            height: 2,
            width: 2,
            timesteps,
            window,
            resize: ResizeMethod::Nearest,
            normalisation: Normalisation::None,
        }
    }

    #[test]
    fn recording_window_bins_by_count_and_polarity() {
        let events = vec![
            ev(0, 0, 0, true),
            ev(50, 1, 0, false),
            ev(99, 1, 1, true),
            ev(100, 0, 1, true),
        ];
        let split_by = SplitBy::EqualCount;
        let w = bin(
            &events,
            (2, 2),
            &spec(WindowSpec::Recording { split_by }, 2),
        )
        .unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!((w[0].start_us, w[0].end_us, w[0].events), (0, 101, 4));
        // Channel 0 = OFF, 1 = ON: ON (0, 0) is index 4; OFF (x 1, y 0) is index 1.
        assert_eq!(w[0].frames[0].indices, vec![1, 4]);
        assert_eq!(w[0].frames[1].indices, vec![6, 7]);
    }

    #[test]
    fn stream_windows_group_t_bins() {
        let events: Vec<Event> = (0..10).map(|i| ev(i * 10, 0, 0, true)).collect();
        let w = bin(
            &events,
            (2, 2),
            &spec(WindowSpec::Duration { bin_us: 20 }, 2),
        )
        .unwrap();
        // Bins of 20 µs: 5 bins, 2 full classifications of 2 bins.
        assert_eq!(w.len(), 2);
        assert_eq!(w.iter().map(|w| w.events).collect::<Vec<_>>(), vec![4, 4]);
        assert_eq!((w[1].start_us, w[1].end_us), (40, 80));
        let w = bin(
            &events,
            (2, 2),
            &spec(WindowSpec::Count { bin_events: 3 }, 2),
        )
        .unwrap();
        // 3 + 3 + 3 + 1 (the last bin cut short by the end of the recording).
        assert_eq!(w.iter().map(|w| w.events).collect::<Vec<_>>(), vec![6, 4]);
        let w = bin(
            &events,
            (2, 2),
            &spec(WindowSpec::Count { bin_events: 30 }, 4),
        )
        .unwrap();
        assert_eq!(
            w.len(),
            1,
            "a short recording still gives one classification"
        );
    }

    #[test]
    fn sensor_size_falls_back_to_coordinates() {
        assert_eq!(sensor_size(128, 128, &[]), (128, 128));
        assert_eq!(sensor_size(0, 0, &[ev(0, 9, 3, true)]), (10, 4));
    }
}
