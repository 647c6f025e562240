//! `inflor convert IN OUT`: any readable event file to AEDAT 4.0 or AEDAT 2.0, streamed, with
//! timestamps and polarity kept exactly.
//!
//! What a conversion keeps and drops:
//! - Polarity events, exactly. Frames, IMU samples, triggers and other records that inflor
//!   skips when decoding are not written; the summary line counts what was dropped.
//! - The time origin: a Prophesee `% t0` header line is added to every timestamp by the
//!   decoder, and AEDAT has no such field, so the output's timestamps are the absolute ones
//!   (a converted file decodes to the same events as its source). `--rebase-time` subtracts
//!   the first event's timestamp instead.
//! - The resolution `inspect` reports: an ATIS `.bin` file (which has no header) is decoded
//!   once first to settle it, so N-MNIST stays 34×34 and N-Caltech101 240×180.
//!
//! The output is written to `OUT.partial` and renamed when complete. Its path is checked
//! before any work: an existing file needs `--force`, and a missing folder is refused.

use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use inflor::event::{Event, StreamInfo};
use inflor::format::aedat2::Aedat2Encoder;
use inflor::format::aedat4::{
    Aedat4Encoder, Aedat4EncoderOptions, Compression as Aedat4Compression, HeaderPatch,
};
use inflor::format::{DecodeOptions, DecodeStats, Encoder, FileReader, JaerOrientation};

use super::bad_input;
use super::decode_args::DecodeArgs;

/// Output container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// AEDAT 4.0 file.
    Aedat4,
    /// jAER AEDAT 2.0: the DVS128 layout for 128x128 input, the DAVIS layout otherwise.
    Aedat2,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Aedat4 => "AEDAT 4.0",
            Target::Aedat2 => "AEDAT 2.0",
        }
    }
}

/// AEDAT 4.0 packet compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    /// LZ4 frames (what DV writes by default).
    Lz4,
    /// zstd frames.
    Zstd,
    /// No compression.
    None,
}

/// `inflor convert` arguments.
#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// Input event file (any readable format).
    pub input: PathBuf,
    /// Output file. Its extension picks the target (`.aedat4` or `.aedat`) unless `--to` is given.
    pub output: PathBuf,
    /// Output format.
    #[arg(long, value_enum)]
    pub to: Option<Target>,
    /// AEDAT 4.0 compression.
    #[arg(long, value_enum, default_value_t = Compression::Lz4)]
    pub compression: Compression,
    /// Subtract the first event's timestamp, so recordings with absolute clocks (or a large
    /// `% t0` origin) fit AEDAT 2.0's 32-bit microsecond field. Off by default: timestamps are
    /// kept exactly, the header's t0 included.
    #[arg(long)]
    pub rebase_time: bool,
    /// Overwrite OUT if it exists.
    #[arg(long)]
    pub force: bool,
    /// Decoder options for the input (`--orientation` also applies to an AEDAT 2.0 output, so
    /// converting a CIFAR10-DVS file back gives the same address words).
    #[command(flatten)]
    pub decode: DecodeArgs,
}

fn target_for(args: &ConvertArgs) -> anyhow::Result<Target> {
    if let Some(t) = args.to {
        return Ok(t);
    }
    let ext = args
        .output
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("aedat4") => Ok(Target::Aedat4),
        Some("aedat") | Some("aedat2") => Ok(Target::Aedat2),
        _ => Err(bad_input(anyhow::anyhow!(
            "cannot tell the output format from {}: use a .aedat4 or .aedat extension, or --to",
            args.output.display()
        ))),
    }
}

/// Refuses an output path that cannot be written as asked, before any decoding.
fn check_output(args: &ConvertArgs) -> anyhow::Result<()> {
    let output = &args.output;
    if output.is_dir() {
        return Err(bad_input(anyhow::anyhow!(
            "{} is a folder; give a file name",
            output.display()
        )));
    }
    let folder = match output.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        return Err(bad_input(anyhow::anyhow!(
            "cannot write {}: {} is not a folder",
            output.display(),
            folder.display()
        )));
    }
    if output.exists() {
        let same = std::fs::canonicalize(output).ok() == std::fs::canonicalize(&args.input).ok();
        if same {
            return Err(bad_input(anyhow::anyhow!(
                "{} is the input itself",
                output.display()
            )));
        }
        if !args.force {
            return Err(bad_input(anyhow::anyhow!(
                "{} exists; pass --force to overwrite it",
                output.display()
            )));
        }
    }
    Ok(())
}

/// The output encoder. AEDAT 4.0 is kept concrete because its FileDataTable needs the header
/// patched once the table's position is known.
enum OutputEncoder {
    Aedat2(Aedat2Encoder),
    Aedat4(Aedat4Encoder),
}

impl OutputEncoder {
    fn new(
        target: Target,
        compression: Compression,
        orientation: JaerOrientation,
        info: &StreamInfo,
    ) -> anyhow::Result<Self> {
        // The DAVIS address layout has 10 x bits and 9 y bits.
        if target == Target::Aedat2
            && (info.width, info.height) != (128, 128)
            && (info.width > 1024 || info.height > 512)
        {
            return Err(bad_input(anyhow::anyhow!(
                "a {}x{} sensor does not fit AEDAT 2.0 (DVS128 is 128x128, the DAVIS layout \
                 holds at most 1024x512); convert to AEDAT 4.0 instead",
                info.width,
                info.height
            )));
        }
        Ok(match target {
            Target::Aedat2 if (info.width, info.height) == (128, 128) => {
                Self::Aedat2(Aedat2Encoder::dvs128(orientation))
            }
            Target::Aedat2 => {
                Self::Aedat2(Aedat2Encoder::davis(info.width, info.height, orientation))
            }
            Target::Aedat4 => Self::Aedat4(Aedat4Encoder::new(Aedat4EncoderOptions {
                compression: match compression {
                    Compression::Lz4 => Aedat4Compression::Lz4,
                    Compression::Zstd => Aedat4Compression::Zstd,
                    Compression::None => Aedat4Compression::None,
                },
                data_table: true,
                ..Aedat4EncoderOptions::default()
            })),
        })
    }

    fn encoder(&mut self) -> &mut dyn Encoder {
        match self {
            Self::Aedat2(e) => e,
            Self::Aedat4(e) => e,
        }
    }

    fn header_patch(&self) -> Option<&HeaderPatch> {
        match self {
            Self::Aedat2(_) => None,
            Self::Aedat4(e) => e.header_patch(),
        }
    }
}

/// What a conversion did.
struct Outcome {
    /// Events written.
    events: u64,
    /// The input's description, as the output was begun with.
    info: StreamInfo,
    /// The decode error that ended the input early, if one did.
    decode_error: Option<anyhow::Error>,
}

/// Streams `reader` into the target encoder, writing to `sink`. On a decode error the events
/// decoded before it are still encoded and the output finished cleanly; the error is then in
/// the outcome. Any other failure (an event the target cannot hold, I/O) is an `Err`, and the
/// output is to be discarded.
fn pump(
    reader: &mut FileReader,
    target: Target,
    args: &ConvertArgs,
    sink: &mut (impl Write + Seek),
) -> anyhow::Result<Outcome> {
    let mut batch: Vec<Event> = Vec::with_capacity(1 << 16);
    let mut bytes = Vec::with_capacity(1 << 20);
    let mut encoder: Option<OutputEncoder> = None;
    let mut origin: Option<i64> = None;
    let mut written = 0u64;
    let mut decode_error = None;
    loop {
        batch.clear();
        let more = match reader.next_batch(&mut batch) {
            Ok(more) => more,
            Err(e) => {
                decode_error = Some(anyhow::Error::new(e));
                false
            }
        };
        // The header is known once the decoder has read it, which may take several chunks;
        // encoders start at the first batch with events or at the end.
        if encoder.is_none() && (reader.info().is_some() || !more) && decode_error.is_none() {
            let info = reader.info_or_default();
            let mut e =
                OutputEncoder::new(target, args.compression, args.decode.orientation, &info)?;
            e.encoder().begin(&info, &mut bytes)?;
            encoder = Some(e);
        }
        if args.rebase_time {
            rebase(&mut batch, &mut origin, written)?;
        }
        if let Some(e) = encoder.as_mut() {
            e.encoder().encode(&batch, &mut bytes).map_err(|err| {
                let hint = if target == Target::Aedat2 && !args.rebase_time {
                    "; AEDAT 2.0 holds 32-bit microsecond timestamps, --rebase-time may help"
                } else {
                    ""
                };
                bad_input(anyhow::anyhow!("{}: {err}{hint}", target.name()))
            })?;
            written += batch.len() as u64;
        } else if !batch.is_empty() {
            anyhow::bail!("{} events arrived before the header was known", batch.len());
        }
        if !bytes.is_empty() {
            sink.write_all(&bytes)?;
            bytes.clear();
        }
        if !more || decode_error.is_some() {
            break;
        }
    }
    if let Some(e) = encoder.as_mut() {
        e.encoder().end(&mut bytes)?;
        sink.write_all(&bytes)?;
        if let Some(patch) = e.header_patch() {
            patch.apply(sink)?;
        }
    }
    Ok(Outcome {
        events: written,
        info: reader.info_or_default(),
        decode_error,
    })
}

/// Subtracts the first event's timestamp (`origin`, set from the first batch with events)
/// from `batch`; `index` is the number of events before the batch, for the message.
fn rebase(batch: &mut [Event], origin: &mut Option<i64>, index: u64) -> anyhow::Result<()> {
    let Some(first) = origin.or(batch.first().map(|e| e.t)) else {
        return Ok(());
    };
    *origin = Some(first);
    for (i, e) in batch.iter_mut().enumerate() {
        e.t = e.t.checked_sub(first).ok_or_else(|| {
            bad_input(anyhow::anyhow!(
                "--rebase-time: event #{} at {} µs lies too far from the first event's {first} µs \
                 to be measured from it in 64 bits",
                index + i as u64,
                e.t
            ))
        })?;
    }
    Ok(())
}

/// Decodes the whole input once to learn what its format only settles at the end (an ATIS
/// file's resolution).
fn settled_resolution(path: &Path, args: &DecodeArgs) -> anyhow::Result<Option<(u16, u16)>> {
    let options = args.options();
    if options.resolution.is_some() {
        return Ok(options.resolution);
    }
    let mut reader = FileReader::open(path, args.format, &options).map_err(bad_input)?;
    if !reader.format().resolution_settles_at_end() {
        return Ok(None);
    }
    let mut batch = Vec::with_capacity(1 << 16);
    loop {
        batch.clear();
        // A decode error stops the pass; the conversion itself reports it.
        match reader.next_batch(&mut batch) {
            Ok(true) => {}
            Ok(false) | Err(_) => break,
        }
    }
    Ok(reader.info().map(|info| (info.width, info.height)))
}

/// What the decoder skipped, for the summary line: "59 frames/APS, 2363 IMU, 236 triggers".
fn dropped(stats: &DecodeStats) -> Option<String> {
    let parts: Vec<String> = [
        (stats.frames_skipped, "frames/APS"),
        (stats.imu_skipped, "IMU"),
        (stats.triggers_skipped, "triggers"),
        (stats.other_skipped, "other records"),
        (stats.bad_records_skipped, "bad records (lenient)"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// Runs the command.
pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    let target = target_for(&args)?;
    check_output(&args)?;
    let options = DecodeOptions {
        resolution: settled_resolution(&args.input, &args.decode)?,
        ..args.decode.options()
    };
    let mut reader =
        FileReader::open(&args.input, args.decode.format, &options).map_err(bad_input)?;
    let partial = partial_path(&args.output);
    let file = std::fs::File::create(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))
        .map_err(bad_input)?;
    let mut sink = std::io::BufWriter::new(file);
    let discard = |sink: std::io::BufWriter<std::fs::File>| {
        drop(sink);
        let _ = std::fs::remove_file(&partial);
    };
    let outcome = match pump(&mut reader, target, &args, &mut sink) {
        Ok(outcome) if outcome.decode_error.is_none() || outcome.events > 0 => outcome,
        Ok(outcome) => {
            // The input failed before a single event: there is nothing to keep.
            discard(sink);
            let error = outcome
                .decode_error
                .unwrap_or_else(|| anyhow::anyhow!("no events"));
            return Err(bad_input(error));
        }
        Err(e) => {
            discard(sink);
            return Err(e.context(format!(
                "cannot convert {} to {}",
                args.input.display(),
                target.name()
            )));
        }
    };
    sink.flush()
        .with_context(|| format!("cannot write {}", partial.display()))?;
    drop(sink);
    std::fs::rename(&partial, &args.output).with_context(|| {
        format!(
            "cannot rename {} to {}",
            partial.display(),
            args.output.display()
        )
    })?;
    let mut summary = format!(
        "{}: wrote {} events as {} from {} ({})",
        args.output.display(),
        outcome.events,
        target.name(),
        args.input.display(),
        reader.format()
    );
    if let Some(t0) = outcome.info.t0.filter(|_| !args.rebase_time) {
        summary.push_str(&format!("; timestamps include the header's t0 of {t0} us"));
    }
    match dropped(reader.stats()) {
        Some(what) => summary.push_str(&format!("; dropped {what}")),
        None => summary.push_str("; dropped nothing"),
    }
    eprintln!("{summary}");
    match outcome.decode_error {
        None => Ok(()),
        Some(e) => Err(bad_input(e.context(format!(
            "conversion stopped at a decode error; {} holds the {} events decoded before it",
            args.output.display(),
            outcome.events
        )))),
    }
}

fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    output.with_file_name(name)
}
