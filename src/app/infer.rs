//! `inflor infer`: classify recordings with a model. Reads each file, cuts it into windows of
//! T frames as the model's input spec says, runs an executor on each window and prints the
//! class, the top-k scores and the spike statistics (text or JSON lines).
//!
//! Binning here follows the model's [`InputSpec`] with per-axis splat tables (each source
//! column and row spreads its events over target pixels with fixed weights); it is kept small
//! and local until the shared binner lands, at which point this file switches to it.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use inflor::binner::{FrameShape, SparseFrame};
use inflor::event::Event;
use inflor::exec::dense::DenseExecutor;
use inflor::exec::reference::ReferenceExecutor;
use inflor::exec::{Executor, Output, RunOptions, input_frame_shape};
use inflor::format::{DecodeOptions, read_file};
use inflor::snn::file::{InputSpec, Normalisation, ResizeMethod, WindowSpec};
use inflor::snn::{Model, State};

use crate::app::bad_input;

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
    #[arg(long, value_enum, default_value_t = ExecutorArg::Dense)]
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
}

/// Runs the command.
pub fn run(args: InferArgs) -> anyhow::Result<()> {
    let model = Model::load(&args.model)
        .map_err(bad_input)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let network = model.network.clone();
    let mut executor: Box<dyn Executor> = match args.executor {
        ExecutorArg::Dense => Box::new(DenseExecutor::new(&network)),
        ExecutorArg::Reference => Box::new(ReferenceExecutor::new()),
        ExecutorArg::Event => {
            return Err(bad_input(anyhow::anyhow!(
                "the event-driven executor is not part of this build yet; use --executor dense"
            )));
        }
    };
    let mut state = State::new(&network);
    let shape = input_frame_shape(&network);
    let spec = model.metadata.input;
    let mut dumped: Vec<f32> = Vec::new();
    let mut dumped_windows = 0usize;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();

    for file in &args.files {
        let recording = read_file(file, None, &DecodeOptions::default())?;
        let sensor = sensor_size(
            recording.info.width,
            recording.info.height,
            &recording.events,
        );
        let windows = windows(&recording.events, &spec);
        if windows.is_empty() {
            tracing::warn!(file = %file.display(), "no complete window of events");
        }
        let binner = Binner::new(sensor, shape, &spec).map_err(bad_input)?;
        for (index, window) in windows.iter().enumerate() {
            let frames = binner.frames(&recording.events[window.events.clone()], window, &spec);
            if args.dump_frames.is_some() {
                for f in &frames {
                    dumped.extend(f.to_dense());
                }
                dumped_windows += 1;
            }
            let output = executor.run(&network, &mut state, &frames, &RunOptions::default())?;
            report(&mut out, &args, &model, file, index, window, &output)?;
        }
    }
    if let Some(path) = &args.dump_frames {
        let dims = [
            dumped_windows,
            spec.timesteps,
            shape.channels,
            shape.height,
            shape.width,
        ];
        write_npy(path, &dims, &dumped).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
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
            "events": window.events.len(),
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
        window.events.len(),
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
fn sensor_size(width: u16, height: u16, events: &[Event]) -> (usize, usize) {
    if width > 0 && height > 0 {
        return (usize::from(width), usize::from(height));
    }
    let w = events
        .iter()
        .map(|e| usize::from(e.x) + 1)
        .max()
        .unwrap_or(1);
    let h = events
        .iter()
        .map(|e| usize::from(e.y) + 1)
        .max()
        .unwrap_or(1);
    (w, h)
}

/// One classification window: a range of events and its time span.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Window {
    events: std::ops::Range<usize>,
    start_us: i64,
    end_us: i64,
}

/// Cuts a recording into windows per the spec. Time windows are consecutive and aligned to the
/// first event; a trailing partial window is kept only when it is the only one. Count windows
/// likewise.
fn windows(events: &[Event], spec: &InputSpec) -> Vec<Window> {
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Vec::new();
    };
    match spec.window {
        WindowSpec::Recording => vec![Window {
            events: 0..events.len(),
            start_us: first.t,
            end_us: last.t.saturating_add(1),
        }],
        WindowSpec::Time { duration_us } => {
            let d = i64::try_from(duration_us).unwrap_or(i64::MAX).max(1);
            let mut out: Vec<Window> = Vec::new();
            let mut current = -1i64;
            for (i, e) in events.iter().enumerate() {
                // A timestamp that goes backwards stays in the current window.
                let k = (e.t.saturating_sub(first.t) / d).max(current);
                match out.last_mut() {
                    Some(w) if k == current => w.events.end = i + 1,
                    _ => {
                        let start_us = first.t.saturating_add(k.saturating_mul(d));
                        out.push(Window {
                            events: i..i + 1,
                            start_us,
                            end_us: start_us.saturating_add(d),
                        });
                    }
                }
                current = k;
            }
            if out.len() > 1 && out.last().is_some_and(|w| last.t < w.end_us - 1) {
                out.pop();
            }
            out
        }
        WindowSpec::Count { events: n } => {
            let n = usize::try_from(n).unwrap_or(usize::MAX).max(1);
            let full = events.len() / n;
            let count = if full == 0 { 1 } else { full };
            (0..count)
                .map(|k| {
                    let range = k * n..((k + 1) * n).min(events.len());
                    let start_us = events[range.start].t;
                    let end_us = events[range.end - 1].t.saturating_add(1);
                    Window {
                        events: range,
                        start_us,
                        end_us,
                    }
                })
                .collect()
        }
    }
}

/// Per-axis splat tables from the sensor to the model's resolution, plus the polarity mapping.
struct Binner {
    shape: FrameShape,
    /// Per source column: (target column, weight).
    cols: Vec<Vec<(usize, f32)>>,
    /// Per source row: (target row, weight).
    rows: Vec<Vec<(usize, f32)>>,
}

impl Binner {
    fn new(sensor: (usize, usize), shape: FrameShape, spec: &InputSpec) -> anyhow::Result<Self> {
        if shape.channels != 1 && shape.channels != 2 {
            anyhow::bail!(
                "the model expects {} input channels; only 1 (both polarities) or 2 (ON, OFF) are supported",
                shape.channels
            );
        }
        let (sw, sh) = sensor;
        if spec.resize == ResizeMethod::None && (sw, sh) != (shape.width, shape.height) {
            anyhow::bail!(
                "the model takes {}x{} without resizing, but the recording is {sw}x{sh}",
                shape.width,
                shape.height
            );
        }
        Ok(Self {
            shape,
            cols: splat(sw, shape.width, spec.resize),
            rows: splat(sh, shape.height, spec.resize),
        })
    }

    /// The T frames of one window: events binned by time (or by count), splatted, normalised.
    fn frames(&self, events: &[Event], window: &Window, spec: &InputSpec) -> Vec<SparseFrame> {
        let t = spec.timesteps.max(1);
        let plane = self.shape.height * self.shape.width;
        let mut dense = vec![vec![0.0f32; self.shape.len()]; t];
        let span = i128::from(window.end_us.saturating_sub(window.start_us)).max(1);
        for (i, e) in events.iter().enumerate() {
            let bin = match spec.window {
                WindowSpec::Count { .. } => i * t / events.len().max(1),
                _ => {
                    let offset = i128::from(e.t.saturating_sub(window.start_us)).clamp(0, span - 1);
                    usize::try_from(offset * t as i128 / span).unwrap_or(t - 1)
                }
            }
            .min(t - 1);
            let (Some(rows), Some(cols)) = (
                self.rows.get(usize::from(e.y)),
                self.cols.get(usize::from(e.x)),
            ) else {
                continue;
            };
            let channel = if self.shape.channels == 2 && !e.polarity {
                1
            } else {
                0
            };
            let frame = &mut dense[bin];
            for &(ty, wy) in rows {
                for &(tx, wx) in cols {
                    frame[channel * plane + ty * self.shape.width + tx] += wy * wx;
                }
            }
        }
        dense
            .into_iter()
            .map(|mut values| {
                for v in values.iter_mut() {
                    *v = normalise(*v, spec.normalisation);
                }
                SparseFrame::from_dense(self.shape, &values)
            })
            .collect()
    }
}

fn normalise(v: f32, how: Normalisation) -> f32 {
    match how {
        Normalisation::Counts => v,
        Normalisation::Binary => {
            if v > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        Normalisation::Clip { max } => v.min(max),
        Normalisation::Scale { factor } => v * factor,
    }
}

/// Weights from each of `from` source cells to the `to` target cells along one axis; each
/// source cell's weights sum to 1, so event counts are conserved.
fn splat(from: usize, to: usize, method: ResizeMethod) -> Vec<Vec<(usize, f32)>> {
    let scale = to as f64 / from.max(1) as f64;
    (0..from)
        .map(|x| match method {
            ResizeMethod::None => {
                if x < to {
                    vec![(x, 1.0)]
                } else {
                    Vec::new()
                }
            }
            ResizeMethod::Nearest => {
                let j = (((x as f64 + 0.5) * scale).floor() as usize).min(to - 1);
                vec![(j, 1.0)]
            }
            ResizeMethod::Area => {
                let (lo, hi) = (x as f64 * scale, (x + 1) as f64 * scale);
                let mut cells = Vec::new();
                let mut j = lo.floor() as usize;
                while (j as f64) < hi && j < to {
                    let overlap = hi.min(j as f64 + 1.0) - lo.max(j as f64);
                    if overlap > 0.0 {
                        cells.push((j, (overlap / scale) as f32));
                    }
                    j += 1;
                }
                cells
            }
            ResizeMethod::Bilinear => {
                let centre = ((x as f64 + 0.5) * scale - 0.5).clamp(0.0, (to - 1) as f64);
                let j0 = centre.floor() as usize;
                let frac = centre - j0 as f64;
                if frac == 0.0 || j0 + 1 >= to {
                    vec![(j0, 1.0)]
                } else {
                    vec![(j0, (1.0 - frac) as f32), (j0 + 1, frac as f32)]
                }
            }
        })
        .collect()
}

/// Writes a little-endian f32 array in NumPy's `.npy` format (version 1.0).
fn write_npy(path: &Path, dims: &[usize], values: &[f32]) -> std::io::Result<()> {
    let shape = dims
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({shape},), }}");
    // Magic (6) + version (2) + length (2) + header + newline, padded to a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + 4 * values.len());
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: i64, x: u16, y: u16, polarity: bool) -> Event {
        Event { t, x, y, polarity }
    }

    #[test]
    fn splat_weights_conserve_counts() {
        for method in [
            ResizeMethod::Area,
            ResizeMethod::Bilinear,
            ResizeMethod::Nearest,
        ] {
            for (from, to) in [(128, 48), (346, 48), (34, 48), (48, 48)] {
                let table = splat(from, to, method);
                for (x, cells) in table.iter().enumerate() {
                    let total: f32 = cells.iter().map(|c| c.1).sum();
                    assert!(
                        (total - 1.0).abs() < 1e-5,
                        "{method:?} {from}->{to} at {x}: {total}"
                    );
                    assert!(cells.iter().all(|c| c.0 < to));
                }
            }
        }
        // Integer downscale by area: each source pixel lands whole in one target pixel.
        assert_eq!(splat(4, 2, ResizeMethod::Area)[3], vec![(1, 1.0)]);
    }

    #[test]
    fn recording_window_bins_by_time_and_polarity() {
        let events = vec![ev(0, 0, 0, true), ev(50, 1, 0, false), ev(99, 1, 1, true)];
        let spec = InputSpec {
            channels: 2,
            height: 2,
            width: 2,
            timesteps: 2,
            window: WindowSpec::Recording,
            resize: ResizeMethod::None,
            normalisation: Normalisation::Counts,
        };
        let w = windows(&events, &spec);
        assert_eq!(w.len(), 1);
        let shape = FrameShape {
            channels: 2,
            height: 2,
            width: 2,
        };
        let b = Binner::new((2, 2), shape, &spec).unwrap();
        let frames = b.frames(&events, &w[0], &spec);
        assert_eq!(frames[0].indices, vec![0]); // ON at (0, 0)
        // OFF at (x 1, y 0) -> channel 1 index 4 + 1; ON at (1, 1) -> index 3.
        assert_eq!(frames[1].indices, vec![3, 5]);
    }

    #[test]
    fn time_and_count_windows() {
        let events: Vec<Event> = (0..10).map(|i| ev(i * 10, 0, 0, true)).collect();
        let mut spec = InputSpec {
            channels: 2,
            height: 1,
            width: 1,
            timesteps: 1,
            window: WindowSpec::Time { duration_us: 30 },
            resize: ResizeMethod::None,
            normalisation: Normalisation::Counts,
        };
        let w = windows(&events, &spec);
        assert_eq!(
            w.iter().map(|w| w.events.len()).collect::<Vec<_>>(),
            vec![3, 3, 3]
        );
        spec.window = WindowSpec::Count { events: 4 };
        let w = windows(&events, &spec);
        assert_eq!(
            w.iter().map(|w| w.events.clone()).collect::<Vec<_>>(),
            vec![0..4, 4..8]
        );
    }

    #[test]
    fn npy_header_is_aligned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.npy");
        write_npy(&path, &[1, 2, 3], &[0.0; 6]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        assert_eq!(bytes.len(), 10 + header_len + 24);
        assert!(String::from_utf8_lossy(&bytes[10..10 + header_len]).contains("(1, 2, 3,)"));
    }
}
