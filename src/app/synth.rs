//! `inflor synth`: emulates a DVS128 watching labelled images move on a monitor and writes the
//! recordings as a CIFAR10-DVS-style dataset (see `inflor::dataset::synth` for the model).
//!
//! DVS-Digits, the dataset documented in `docs/dvs-digits.md`, is
//! `inflor synth --digits assets/digits.csv.gz --out dvs-digits --seed 1`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use inflor::dataset::digits as dvs_digits;
use inflor::dataset::generate::{GenerateConfig, LabelledImage, generate};
use inflor::dataset::images::{is_image_name, load_digits_csv, load_image};
use inflor::dataset::synth::{PixelParams, SceneParams, SynthParams};

use super::bad_input;
use super::dataset::progress_bar;

/// `inflor synth` arguments. Scene and pixel defaults are the library's
/// (`SceneParams::default()`, `PixelParams::default()`).
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["digits", "images"])))]
pub struct SynthArgs {
    /// The UCI handwritten-digits CSV (digits.csv.gz): 1797 8x8 images, classes "0".."9",
    /// each shown with a 1-pixel black margin (10x10).
    #[arg(long)]
    pub digits: Option<PathBuf>,
    /// A folder with one subfolder per class holding PGM or PNG images (sorted names).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Output folder (created; must be empty): <out>/<class>/<prefix>_<class>_<n>.aedat.
    #[arg(long)]
    pub out: PathBuf,
    /// Master seed: the sensor's mismatch and every recording's noise derive from it.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// File-name prefix [default: dvsdigits with --digits, synth with --images].
    #[arg(long)]
    pub prefix: Option<String>,
    /// Per class, recordings _0 .. _(N-1) are test data (written to split.txt)
    /// [default: 36 with --digits, 100 (CIFAR10-DVS) with --images].
    #[arg(long)]
    pub test_per_class: Option<u64>,
    /// Only the first N images (in input order).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,

    /// Sensor pixels spanned by the image's longer side.
    #[arg(long, default_value_t = 64.0, help_heading = "Scene")]
    pub image_size: f32,
    /// Monitor pixels per sensor pixel (bicubic upsampling onto the monitor).
    #[arg(long, default_value_t = 4, help_heading = "Scene")]
    pub monitor_oversample: usize,
    /// Monitor gamma.
    #[arg(long, default_value_t = 2.2, help_heading = "Scene")]
    pub gamma: f32,
    /// Monitor luminance of black, relative to white.
    #[arg(long, default_value_t = 0.05, help_heading = "Scene")]
    pub black_level: f32,
    /// Display code (0..1) around the image.
    #[arg(long, default_value_t = 0.0, help_heading = "Scene")]
    pub background: f32,
    /// Side of the triangular motion loop, sensor pixels.
    #[arg(long, default_value_t = 2.0, help_heading = "Scene")]
    pub amplitude: f32,
    /// Duration of one motion loop, ms.
    #[arg(long, default_value_t = 250.0, help_heading = "Scene")]
    pub loop_ms: f64,
    /// Recording duration, ms.
    #[arg(long, default_value_t = 1000.0, help_heading = "Scene")]
    pub duration_ms: f64,
    /// Rendering rate, Hz (events are interpolated between frames).
    #[arg(long, default_value_t = 1000.0, help_heading = "Scene")]
    pub render_hz: f64,

    /// Mean ON contrast threshold (log intensity).
    #[arg(long, default_value_t = 0.2, help_heading = "Pixel")]
    pub threshold_on: f32,
    /// Mean OFF contrast threshold (log intensity).
    #[arg(long, default_value_t = 0.2, help_heading = "Pixel")]
    pub threshold_off: f32,
    /// Per-pixel threshold standard deviation (mismatch).
    #[arg(long, default_value_t = 0.03, help_heading = "Pixel")]
    pub threshold_sigma: f32,
    /// Refractory period, µs.
    #[arg(long, default_value_t = 100.0, help_heading = "Pixel")]
    pub refractory_us: f64,
    /// Shot-noise rate per pixel and polarity, Hz.
    #[arg(long, default_value_t = 0.05, help_heading = "Pixel")]
    pub shot_noise_hz: f64,
    /// Leak-event rate per pixel, Hz.
    #[arg(long, default_value_t = 0.1, help_heading = "Pixel")]
    pub leak_hz: f64,
    /// Offset added to luminance before the log.
    #[arg(long, default_value_t = 1e-3, help_heading = "Pixel")]
    pub log_eps: f32,
}

impl SynthArgs {
    /// The emulator parameters these arguments describe.
    pub fn params(&self) -> SynthParams {
        SynthParams {
            pixel: PixelParams {
                threshold_on: self.threshold_on,
                threshold_off: self.threshold_off,
                threshold_sigma: self.threshold_sigma,
                refractory_us: self.refractory_us,
                shot_noise_hz: self.shot_noise_hz,
                leak_hz: self.leak_hz,
                log_eps: self.log_eps,
            },
            scene: SceneParams {
                image_size: self.image_size,
                monitor_oversample: self.monitor_oversample,
                gamma: self.gamma,
                black_level: self.black_level,
                background: self.background,
                amplitude: self.amplitude,
                loop_ms: self.loop_ms,
                duration_ms: self.duration_ms,
                render_hz: self.render_hz,
            },
        }
    }
}

/// Images of a class-folder tree: class names (sorted folder names) and images in sorted
/// file-name order within each class. Files that are not `.pgm`/`.png` are skipped with a
/// warning; an image that fails to load is an error.
fn load_image_folder(root: &Path) -> anyhow::Result<(Vec<String>, Vec<LabelledImage>)> {
    let mut classes = Vec::new();
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(root).with_context(|| format!("reading {}", root.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && entry.path().is_dir() {
            dirs.push((name, entry.path()));
        }
    }
    dirs.sort();
    if dirs.is_empty() {
        anyhow::bail!(
            "{}: no class folders (expected one subfolder per class)",
            root.display()
        );
    }
    let mut inputs = Vec::new();
    for (label, (name, dir)) in dirs.into_iter().enumerate() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for path in files {
            if !is_image_name(&path) {
                tracing::warn!(path = %path.display(), "skipping: not a .pgm or .png file");
                continue;
            }
            let image = load_image(&path)?;
            inputs.push(LabelledImage { image, label });
        }
        classes.push(name);
    }
    Ok((classes, inputs))
}

/// Runs the command.
pub fn run(args: SynthArgs) -> anyhow::Result<()> {
    let params = args.params();
    params.validate().map_err(bad_input)?;
    let (classes, mut inputs, source, prefix, test_per_class) = if let Some(csv) = &args.digits {
        let digits = load_digits_csv(csv).map_err(bad_input)?;
        (
            dvs_digits::classes(),
            dvs_digits::inputs(&digits).map_err(bad_input)?,
            format!("digits CSV {}", csv.display()),
            dvs_digits::PREFIX,
            dvs_digits::TEST_PER_CLASS,
        )
    } else if let Some(dir) = &args.images {
        let (classes, inputs) = load_image_folder(dir).map_err(bad_input)?;
        (
            classes,
            inputs,
            format!("image folder {}", dir.display()),
            "synth",
            inflor::dataset::split::DEFAULT_TEST_PER_CLASS,
        )
    } else {
        anyhow::bail!("give --digits or --images");
    };
    if let Some(limit) = args.limit {
        inputs.truncate(limit);
    }
    let config = GenerateConfig {
        out: args.out.clone(),
        classes,
        prefix: args.prefix.clone().unwrap_or_else(|| prefix.to_string()),
        test_per_class: args.test_per_class.unwrap_or(test_per_class),
        seed: args.seed,
        params,
        source,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()
        .context("starting worker threads")?;
    let bar = progress_bar(inputs.len() as u64, "emulating");
    let started = std::time::Instant::now();
    let summary = pool.install(|| generate(&inputs, &config, &|| bar.inc(1)));
    bar.finish_and_clear();
    let summary = summary.map_err(|e| match e {
        inflor::dataset::generate::GenerateError::Io { .. }
        | inflor::dataset::generate::GenerateError::Encode { .. } => anyhow::Error::new(e),
        other => bad_input(other),
    })?;
    let (min, mean, max) = summary
        .events_per_recording
        .as_ref()
        .map_or((0.0, 0.0, 0.0), |d| (d.min, d.mean, d.max));
    eprintln!(
        "wrote {} recordings ({} test) to {} in {:.1} s: {} events (per recording min {:.0}, \
         mean {:.0}, max {:.0}), {:.1} MB",
        summary.recordings,
        summary.test,
        config.out.display(),
        started.elapsed().as_secs_f64(),
        summary.total_events,
        min,
        mean,
        max,
        summary.bytes as f64 / 1e6
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: SynthArgs,
    }

    #[test]
    fn command_line_defaults_are_the_library_defaults() {
        let w = Wrapper::parse_from(["x", "--digits", "d.csv", "--out", "o"]);
        assert_eq!(w.args.params(), SynthParams::default());
        assert!(Wrapper::try_parse_from(["x", "--out", "o"]).is_err());
        assert!(
            Wrapper::try_parse_from(["x", "--digits", "a", "--images", "b", "--out", "o"]).is_err()
        );
    }
}
