//! `inflor plot`: PNG plots of a training run, from the model file `inflor train` wrote or its
//! `--metrics-out` JSON lines: loss and accuracy curves, per-layer firing rates over epochs,
//! and, given a dataset, the histograms of one neuron layer's membrane potential before firing
//! and after MPR over the test split (the InfLoR paper's Figures 4 and 5), measured through
//! `Session` and the executors.

use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::Context;
use inflor::dataset::{Dataset, Split, SplitSpec};
use inflor::exec::{ExecutorKind, Histogram, MembraneHistograms};
use inflor::model::{LoadError, Model, file};
use inflor::snn::network::Op;
use inflor::snn::neuron::VTH;
use plotters::coord::Shift;
use plotters::prelude::*;
use rayon::prelude::*;
use serde::Deserialize as _;

use crate::app::bad_input;
use crate::app::decode_args::DecodeArgs;
use crate::app::train::EpochRecord;

/// `inflor plot` arguments.
#[derive(Debug, clap::Args)]
pub struct PlotArgs {
    /// A model file written by `inflor train` (or its checkpoint), or the JSON-lines file of
    /// its `--metrics-out`.
    pub input: PathBuf,
    /// The folder to write the PNG files into (created; existing plots are replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// Also plot the membrane-potential histograms of this dataset's test split (needs a model
    /// file as INPUT).
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// The split rule: auto, default, test-below:N, ratio:R or list:PATH (as `dataset info`).
    #[arg(long, default_value = "auto", value_parser = parse_split)]
    pub split: SplitSpec,
    /// The neuron layer of the histograms (0 = the first neuron layer).
    #[arg(long, default_value_t = 0)]
    pub layer: usize,
    /// Executor that runs the model for the histograms: event, dense or reference.
    #[arg(long, value_enum, default_value_t = ExecutorKind::Dense)]
    pub executor: ExecutorKind,
    /// Recordings run in parallel for the histograms.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: u16,
    /// How to read the recordings.
    #[command(flatten)]
    pub decode: DecodeArgs,
}

fn parse_split(s: &str) -> Result<SplitSpec, String> {
    s.parse()
}

/// Why a file gives no training history.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Neither a model file nor JSON lines.
    #[error(
        "{} is neither a model file written by `inflor train` (.safetensors) nor its \
         --metrics-out file (JSON lines)",
        path.display()
    )]
    Unrecognised {
        /// The file.
        path: PathBuf,
    },
    /// A model file that does not parse.
    #[error("{} is not a readable model file", path.display())]
    Model {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: LoadError,
    },
    /// A model without a training record.
    #[error(
        "{} has no training history: it was not written by `inflor train`",
        path.display()
    )]
    NoRecord {
        /// The file.
        path: PathBuf,
    },
    /// A training record whose history does not parse.
    #[error("{}: the training history in its metadata does not parse", path.display())]
    BadRecord {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A JSON line that is not an epoch record.
    #[error("{}, line {line}: not an epoch record of `inflor train --metrics-out`", path.display())]
    BadLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A record with no epochs.
    #[error("{} has no training history: no epoch is recorded in it", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// What the input file turned out to be.
enum Input {
    /// A model file (or checkpoint), with its bytes.
    Model(Vec<u8>),
    /// A metrics file, with its text.
    Metrics(String),
}

/// Whether `bytes` start like a safetensors file: an 8-byte little-endian header length that
/// fits the file, then the JSON header's `{`.
fn looks_like_safetensors(bytes: &[u8]) -> bool {
    let Some(len) = bytes.get(..8) else {
        return false;
    };
    let mut n = [0u8; 8];
    n.copy_from_slice(len);
    let n = u64::from_le_bytes(n);
    bytes.get(8) == Some(&b'{')
        && n.checked_add(8)
            .is_some_and(|end| end <= bytes.len() as u64)
}

/// Reads `path` and decides what it is: by extension first, else by content.
fn read_input(path: &Path) -> Result<Input, HistoryError> {
    let bytes = std::fs::read(path).map_err(|source| HistoryError::Io {
        path: path.to_owned(),
        source,
    })?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let as_text = |bytes: Vec<u8>| {
        String::from_utf8(bytes)
            .map(Input::Metrics)
            .map_err(|_| HistoryError::Unrecognised {
                path: path.to_owned(),
            })
    };
    match ext.as_deref() {
        Some("safetensors" | "ckpt") => Ok(Input::Model(bytes)),
        Some("jsonl" | "ndjson" | "json") => as_text(bytes),
        _ if looks_like_safetensors(&bytes) => Ok(Input::Model(bytes)),
        _ if bytes.trim_ascii_start().first() == Some(&b'{') => as_text(bytes),
        _ => Err(HistoryError::Unrecognised {
            path: path.to_owned(),
        }),
    }
}

/// The per-epoch history stored in a model file's training record.
fn history_of_model(path: &Path, bytes: &[u8]) -> Result<Vec<EpochRecord>, HistoryError> {
    let (metadata, _) = file::read(bytes).map_err(|source| HistoryError::Model {
        path: path.to_owned(),
        source,
    })?;
    let history = metadata
        .provenance
        .extra
        .get("training")
        .and_then(|record| record.get("history"))
        .ok_or_else(|| HistoryError::NoRecord {
            path: path.to_owned(),
        })?;
    Vec::<EpochRecord>::deserialize(history).map_err(|source| HistoryError::BadRecord {
        path: path.to_owned(),
        source,
    })
}

/// The epochs of a `--metrics-out` file. The file is appended to, so it may hold a run that
/// was resumed (an epoch repeated after a crash between its line and its checkpoint) or
/// several runs: a line whose epoch is not after the previous one replaces the lines from
/// that epoch on, so the result is the last run, with each epoch's latest record.
fn history_of_metrics(path: &Path, text: &str) -> Result<Vec<EpochRecord>, HistoryError> {
    let mut history: Vec<EpochRecord> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record: EpochRecord =
            serde_json::from_str(line).map_err(|source| HistoryError::BadLine {
                path: path.to_owned(),
                line: i + 1,
                source,
            })?;
        history.retain(|r| r.epoch < record.epoch);
        history.push(record);
    }
    Ok(history)
}

/// Reads the training history of `path` (model file or metrics file), and the model bytes
/// when it is a model file.
fn read_history(path: &Path) -> Result<(Vec<EpochRecord>, Option<Vec<u8>>), HistoryError> {
    let (history, model) = match read_input(path)? {
        Input::Model(bytes) => (history_of_model(path, &bytes)?, Some(bytes)),
        Input::Metrics(text) => (history_of_metrics(path, &text)?, None),
    };
    if history.is_empty() {
        return Err(HistoryError::Empty {
            path: path.to_owned(),
        });
    }
    Ok((history, model))
}

/// The network node of neuron layer `layer` (0 = the first), or a bad-input error.
pub fn neuron_layer_node(model: &Model, layer: usize) -> anyhow::Result<usize> {
    let neurons: Vec<usize> = model
        .network
        .nodes()
        .iter()
        .enumerate()
        .filter(|(_, n)| matches!(n.op, Op::Neuron(_)))
        .map(|(i, _)| i)
        .collect();
    neurons.get(layer).copied().ok_or_else(|| {
        bad_input(anyhow::anyhow!(
            "the model has no neuron layer {layer} (it has {}, numbered from 0)",
            neurons.len()
        ))
    })
}

/// The histograms of H and φ(H) at `node` over the test split of `dataset`, and the number of
/// recordings measured. Recordings that fail are reported with their path and skipped.
fn measure(
    model: &Model,
    args: &PlotArgs,
    dataset: &Path,
    node: usize,
) -> anyhow::Result<(MembraneHistograms, usize)> {
    let data = Dataset::open(dataset, &args.split).map_err(bad_input)?;
    let samples: Vec<_> = data.split_samples(Split::Test).collect();
    if samples.is_empty() {
        return Err(bad_input(anyhow::anyhow!(
            "{}: the test split has no recordings",
            dataset.display()
        )));
    }
    let (plan, pool) = crate::app::eval::plan_and_pool(model, args.executor, args.threads)?;
    let options = args.decode.options();
    let bar = crate::app::progress_bar(samples.len() as u64, "membrane");
    let results: Vec<_> = pool.install(|| {
        samples
            .par_iter()
            .map(|s| {
                let r = crate::app::eval::classify_file_measuring(
                    model,
                    &plan,
                    &s.path,
                    &options,
                    Some(node),
                );
                bar.inc(1);
                r
            })
            .collect()
    });
    bar.finish_and_clear();
    let mut total = MembraneHistograms::default();
    let mut measured = 0;
    for (s, r) in samples.iter().zip(results) {
        match r {
            Ok(Some(output)) => {
                if let Some(q) = output.quantization {
                    total.add(&q.histograms);
                    measured += 1;
                }
            }
            Ok(None) => eprintln!("{}: no events, not measured", s.path.display()),
            Err(e) => eprintln!("{}: {}", s.path.display(), crate::app::chain(&e)),
        }
    }
    if measured == 0 {
        return Err(bad_input(anyhow::anyhow!(
            "{}: no test recording could be run (see above)",
            dataset.display()
        )));
    }
    Ok((total, measured))
}

/// The bundled font: DejaVu Sans (`assets/fonts/LICENSE`), so no font is looked up on the
/// system.
const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
/// The font family the plots name.
pub(crate) const FAMILY: &str = "sans-serif";

pub(crate) fn register_font() -> anyhow::Result<()> {
    plotters::style::register_font(FAMILY, FontStyle::Normal, FONT)
        .map_err(|_| anyhow::anyhow!("the bundled font assets/fonts/DejaVuSans.ttf does not load"))
}

/// Renders `draw` onto a white `size` canvas and writes it to `path` as an 8-bit RGB PNG.
pub(crate) fn write_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut pixels = vec![255u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        draw(&root)?;
        root.present()
            .map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))?;
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), size.0, size.1);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .with_context(|| format!("writing {}", path.display()))?;
    writer
        .write_image_data(&pixels)
        .and_then(|()| writer.finish())
        .with_context(|| format!("writing {}", path.display()))
}

/// A drawing error as anyhow (plotters' errors borrow nothing but are not `Sync` for every
/// backend, so they are formatted).
pub(crate) fn drawing<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing a plot: {e}")
}

/// One named curve over epochs.
struct Curve {
    name: String,
    colour: RGBColor,
    points: Vec<(f64, f64)>,
}

/// The x range of epochs `first..=last`, widened around a single epoch.
fn epoch_range(history: &[EpochRecord]) -> Range<f64> {
    let first = history.first().map_or(1, |r| r.epoch) as f64;
    let last = history.last().map_or(1, |r| r.epoch) as f64;
    if last > first {
        first..last
    } else {
        first - 0.5..last + 0.5
    }
}

/// From 0 to a little above the largest finite value (1 when there is none).
fn value_range(curves: &[Curve]) -> Range<f64> {
    let max = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    0.0..if max > 0.0 { max * 1.08 } else { 1.0 }
}

/// A line chart of `curves` over epochs, with a point at each epoch and a legend.
fn curves_chart(
    root: &DrawingArea<BitMapBackend<'_>, Shift>,
    title: &str,
    x: Range<f64>,
    y: Range<f64>,
    y_desc: &str,
    curves: &[Curve],
    legend: SeriesLabelPosition,
) -> anyhow::Result<()> {
    root.fill(&WHITE).map_err(drawing)?;
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FAMILY, 26))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)
        .map_err(drawing)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_desc)
        .label_style((FAMILY, 15))
        .axis_desc_style((FAMILY, 18))
        .draw()
        .map_err(drawing)?;
    for curve in curves {
        let colour = curve.colour;
        // A diverged run records NaN or infinite losses; those epochs are left out.
        let points: Vec<(f64, f64)> = curve
            .points
            .iter()
            .copied()
            .filter(|p| p.1.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(drawing)?
            .label(curve.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(2))
            });
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
            .map_err(drawing)?;
    }
    chart
        .configure_series_labels()
        .position(legend)
        .label_font((FAMILY, 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(drawing)?;
    Ok(())
}

const TRAIN_COLOUR: RGBColor = RGBColor(31, 119, 180);
const TEST_COLOUR: RGBColor = RGBColor(214, 39, 40);
const SIZE: (u32, u32) = (960, 600);

fn epoch_curve(
    name: &str,
    colour: RGBColor,
    history: &[EpochRecord],
    value: impl Fn(&EpochRecord) -> f64,
) -> Curve {
    Curve {
        name: name.to_owned(),
        colour,
        points: history.iter().map(|r| (r.epoch as f64, value(r))).collect(),
    }
}

fn plot_loss(path: &Path, history: &[EpochRecord]) -> anyhow::Result<()> {
    let curves = [
        epoch_curve("train", TRAIN_COLOUR, history, |r| r.train_loss),
        epoch_curve("test", TEST_COLOUR, history, |r| r.test_loss),
    ];
    write_png(path, SIZE, |root| {
        curves_chart(
            root,
            "Loss",
            epoch_range(history),
            value_range(&curves),
            "loss",
            &curves,
            SeriesLabelPosition::UpperRight,
        )
    })
}

fn plot_accuracy(path: &Path, history: &[EpochRecord]) -> anyhow::Result<()> {
    let curves = [
        epoch_curve("train", TRAIN_COLOUR, history, |r| 100.0 * r.train_accuracy),
        epoch_curve("test", TEST_COLOUR, history, |r| 100.0 * r.test_accuracy),
    ];
    write_png(path, SIZE, |root| {
        curves_chart(
            root,
            "Top-1 accuracy",
            epoch_range(history),
            0.0..100.0,
            "accuracy (%)",
            &curves,
            // Accuracy rises to the right; the lower right is where the curves are not.
            SeriesLabelPosition::LowerRight,
        )
    })
}

/// One line per neuron layer, in the order of the first epoch's record; an epoch that lacks a
/// layer leaves a gap in that layer's points.
fn plot_firing(path: &Path, history: &[EpochRecord]) -> anyhow::Result<()> {
    let layers: Vec<&str> = history
        .first()
        .map(|r| r.firing_rates.iter().map(|(n, _)| n.as_str()).collect())
        .unwrap_or_default();
    let curves: Vec<Curve> = layers
        .iter()
        .enumerate()
        .map(|(i, &name)| {
            let c = Palette99::pick(i).to_rgba();
            Curve {
                name: name.to_owned(),
                colour: RGBColor(c.0, c.1, c.2),
                points: history
                    .iter()
                    .filter_map(|r| {
                        r.firing_rates
                            .iter()
                            .find(|(n, _)| n == name)
                            .map(|(_, rate)| (r.epoch as f64, *rate))
                    })
                    .collect(),
            }
        })
        .collect();
    write_png(path, SIZE, |root| {
        curves_chart(
            root,
            "Firing rate per neuron layer (training batches)",
            epoch_range(history),
            value_range(&curves),
            "spikes per neuron per timestep",
            &curves,
            SeriesLabelPosition::UpperRight,
        )
    })
}

/// Percent of `n` in `count`.
fn percent(count: u64, n: u64) -> f64 {
    100.0 * count as f64 / n.max(1) as f64
}

/// One histogram panel: the fraction of neuron-timesteps per bin, with Vth marked.
fn histogram_panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    title: &str,
    x_desc: &str,
    hist: &Histogram,
    y_max: f64,
    colour: RGBColor,
) -> anyhow::Result<()> {
    let n = hist.total();
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FAMILY, 20))
        .margin(16)
        .x_label_area_size(70)
        .y_label_area_size(70)
        .build_cartesian_2d(
            Histogram::bin_start(0)..Histogram::bin_start(inflor::exec::stats::HISTOGRAM_BINS),
            0.0..y_max,
        )
        .map_err(drawing)?;
    chart
        .configure_mesh()
        .x_desc(format!(
            "{x_desc}   ({:.2}% below {}, {:.2}% at or above {})",
            percent(hist.underflow, n),
            Histogram::bin_start(0),
            percent(hist.overflow, n),
            Histogram::bin_start(inflor::exec::stats::HISTOGRAM_BINS)
        ))
        .y_desc("fraction of neuron-timesteps")
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .draw()
        .map_err(drawing)?;
    chart
        .draw_series(hist.counts.iter().enumerate().map(|(i, &c)| {
            Rectangle::new(
                [
                    (Histogram::bin_start(i), 0.0),
                    (Histogram::bin_start(i + 1), c as f64 / n.max(1) as f64),
                ],
                colour.filled(),
            )
        }))
        .map_err(drawing)?;
    let vth = f64::from(VTH);
    chart
        .draw_series(DashedLineSeries::new(
            [(vth, 0.0), (vth, y_max)],
            8,
            5,
            BLACK.stroke_width(2),
        ))
        .map_err(drawing)?
        .label(format!("Vth = {vth}"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], BLACK.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FAMILY, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(drawing)?;
    Ok(())
}

/// H and φ(H) side by side on one y scale, so the two distributions compare directly.
fn plot_membrane(
    path: &Path,
    hist: &MembraneHistograms,
    layer: usize,
    node_name: &str,
    recordings: usize,
) -> anyhow::Result<()> {
    let n = hist.potential.total().max(1) as f64;
    let y_max = hist
        .potential
        .counts
        .iter()
        .chain(&hist.rectified.counts)
        .map(|&c| c as f64 / n)
        .fold(0.0, f64::max);
    let y_max = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };
    let size = (1400, 620);
    write_png(path, size, |root| {
        root.fill(&WHITE).map_err(drawing)?;
        let root = root
            .titled(
                &format!(
                    "Membrane potential before firing, neuron layer {layer} ({node_name}): \
                     {} neuron-timesteps, {recordings} test recordings",
                    hist.potential.total()
                ),
                (FAMILY, 22),
            )
            .map_err(drawing)?;
        let (left, right) = root.split_horizontally(size.0 / 2);
        histogram_panel(
            &left,
            "Without MPR: H",
            "H",
            &hist.potential,
            y_max,
            TRAIN_COLOUR,
        )?;
        histogram_panel(
            &right,
            "With MPR: φ(H)",
            "φ(H)",
            &hist.rectified,
            y_max,
            TEST_COLOUR,
        )
    })
}

/// Runs the command.
pub fn run(args: PlotArgs) -> anyhow::Result<()> {
    let (history, model_bytes) = read_history(&args.input).map_err(bad_input)?;
    // Everything about the input is checked before anything is written.
    let membrane = match &args.dataset {
        None => None,
        Some(dataset) => {
            let bytes = model_bytes.as_deref().ok_or_else(|| {
                bad_input(anyhow::anyhow!(
                    "--dataset needs a model file as input; {} is a metrics file",
                    args.input.display()
                ))
            })?;
            let model = Model::from_bytes(bytes).map_err(|e| {
                bad_input(
                    anyhow::Error::new(e)
                        .context(format!("loading model {}", args.input.display())),
                )
            })?;
            let node = neuron_layer_node(&model, args.layer)?;
            Some((model, node, dataset))
        }
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating the folder {}", args.out.display()))
        .map_err(bad_input)?;
    register_font()?;
    let mut written = Vec::new();
    let mut plot = |name: &str, f: &dyn Fn(&Path) -> anyhow::Result<()>| {
        let path = args.out.join(name);
        f(&path)?;
        println!("wrote {}", path.display());
        written.push(path);
        anyhow::Ok(())
    };
    plot("loss.png", &|p| plot_loss(p, &history))?;
    plot("accuracy.png", &|p| plot_accuracy(p, &history))?;
    plot("firing.png", &|p| plot_firing(p, &history))?;
    if let Some((model, node, dataset)) = membrane {
        let (hist, recordings) = measure(&model, &args, dataset, node)?;
        let name = model.network.nodes()[node].name.clone();
        plot("membrane.png", &|p| {
            plot_membrane(p, &hist, args.layer, &name, recordings)
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: usize, loss: f64) -> String {
        serde_json::to_string(&EpochRecord {
            epoch,
            lr: 0.01,
            train_loss: loss,
            train_accuracy: 0.5,
            test_loss: loss,
            test_accuracy: 0.5,
            firing_rates: vec![("lif1".into(), 0.1)],
            samples_per_s: 1.0,
            seconds: 1.0,
        })
        .unwrap()
    }

    #[test]
    fn metrics_lines_keep_the_last_run_and_each_epochs_latest_record() {
        let text = [
            record(1, 9.0),
            record(2, 9.0),
            String::new(),
            record(1, 3.0),
            record(2, 2.0),
            record(2, 1.5),
            record(3, 1.0),
        ]
        .join("\n");
        let h = history_of_metrics(Path::new("m.jsonl"), &text).unwrap();
        let got: Vec<(usize, f64)> = h.iter().map(|r| (r.epoch, r.train_loss)).collect();
        assert_eq!(got, [(1, 3.0), (2, 1.5), (3, 1.0)]);
    }

    #[test]
    fn a_bad_metrics_line_is_named_by_file_and_line() {
        let text = format!("{}\n{{\"epoch\": 2}}\n", record(1, 1.0));
        let e = history_of_metrics(Path::new("runs/m.jsonl"), &text).unwrap_err();
        assert!(matches!(e, HistoryError::BadLine { line: 2, .. }), "{e:?}");
        assert!(e.to_string().contains("runs/m.jsonl, line 2"), "{e}");
    }

    #[test]
    fn safetensors_are_told_from_json_by_their_header() {
        let mut st = 2u64.to_le_bytes().to_vec();
        st.extend(b"{}");
        assert!(looks_like_safetensors(&st));
        // A header length running past the end of the file is not safetensors.
        let mut short = 3u64.to_le_bytes().to_vec();
        short.extend(b"{}");
        assert!(!looks_like_safetensors(&short));
        assert!(!looks_like_safetensors(b"{\"epoch\": 1}"));
        assert!(!looks_like_safetensors(b"{"));
    }

    #[test]
    fn a_single_epoch_gets_a_visible_x_range() {
        let h = history_of_metrics(Path::new("m"), &record(4, 1.0)).unwrap();
        assert_eq!(epoch_range(&h), 3.5..4.5);
    }
}
