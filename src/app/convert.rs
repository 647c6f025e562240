//! `inflor convert IN OUT`: any readable event file to AEDAT 4.0 or AEDAT 2.0, streamed, with
//! timestamps and polarity kept exactly.

use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use inflor::event::{Event, StreamInfo};
use inflor::format::aedat2::Aedat2Encoder;
use inflor::format::aedat4::{
    Aedat4Encoder, Aedat4EncoderOptions, Compression as Aedat4Compression, HeaderPatch,
};
use inflor::format::{Encoder, FileReader, JaerOrientation};

use super::decode_args::DecodeArgs;

/// Output container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// AEDAT 4.0 file.
    Aedat4,
    /// jAER AEDAT 2.0: the DVS128 layout for 128x128 input, the DAVIS layout otherwise.
    Aedat2,
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
    /// Subtract the first event's timestamp, so recordings with absolute clocks fit AEDAT 2.0's
    /// 32-bit microsecond field. Off by default: timestamps are kept exactly.
    #[arg(long)]
    pub rebase_time: bool,
    /// Decoder options for the input (`--orientation` also applies to a DVS128 AEDAT 2.0 output,
    /// so converting a CIFAR10-DVS file back gives the same address words).
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
        _ => Err(super::bad_input(anyhow::anyhow!(
            "cannot tell the output format from {:?}: use a .aedat4 or .aedat extension, or --to",
            args.output
        ))),
    }
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
            return Err(super::bad_input(anyhow::anyhow!(
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
            Target::Aedat2 => Self::Aedat2(Aedat2Encoder::davis(info.width, info.height)),
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

/// Counts of what a conversion wrote.
struct Written {
    events: u64,
}

/// Streams `reader` into `encoder`, writing to `sink`. On a decode error the events decoded
/// before it are still encoded and the output finished cleanly; the error is then returned.
fn pump(
    reader: &mut FileReader,
    target: Target,
    args: &ConvertArgs,
    sink: &mut (impl Write + Seek),
) -> anyhow::Result<(Written, Option<anyhow::Error>)> {
    let mut batch: Vec<Event> = Vec::with_capacity(1 << 16);
    let mut bytes = Vec::with_capacity(1 << 20);
    let mut encoder: Option<OutputEncoder> = None;
    let mut offset: Option<i64> = None;
    let mut written = Written { events: 0 };
    let mut failure = None;
    loop {
        batch.clear();
        let more = match reader.next_batch(&mut batch) {
            Ok(more) => more,
            Err(e) => {
                failure = Some(anyhow::Error::new(e));
                false
            }
        };
        // The header is known once the decoder has read it, which may take several chunks;
        // encoders start at the first batch with events or at the end.
        if encoder.is_none() && (reader.info().is_some() || !more) {
            let info = reader.info_or_default();
            let mut e =
                OutputEncoder::new(target, args.compression, args.decode.orientation, &info)?;
            e.encoder().begin(&info, &mut bytes)?;
            encoder = Some(e);
        }
        if args.rebase_time {
            if let (None, Some(first)) = (offset, batch.first()) {
                offset = Some(first.t);
            }
            let o = offset.unwrap_or(0);
            for e in &mut batch {
                e.t -= o;
            }
        }
        if let Some(e) = encoder.as_mut() {
            if let Err(err) = e.encoder().encode(&batch, &mut bytes) {
                let hint = if target == Target::Aedat2 && !args.rebase_time {
                    " (AEDAT 2.0 holds 32-bit microsecond timestamps; --rebase-time may help)"
                } else {
                    ""
                };
                failure = Some(anyhow::anyhow!("{err}{hint}"));
            } else {
                written.events += batch.len() as u64;
            }
        } else {
            debug_assert!(batch.is_empty(), "events before the header was known");
        }
        if !bytes.is_empty() {
            sink.write_all(&bytes)?;
            bytes.clear();
        }
        if !more || failure.is_some() {
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
    Ok((written, failure))
}

/// Runs the command. The output is written to `OUT.partial` and renamed when complete.
pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    let target = target_for(&args)?;
    let mut reader = FileReader::open(&args.input, args.decode.format, &args.decode.options())
        .map_err(super::bad_input)?;
    let partial = partial_path(&args.output);
    let file = std::fs::File::create(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let mut sink = std::io::BufWriter::new(file);
    let (written, failure) = match pump(&mut reader, target, &args, &mut sink) {
        Ok(outcome) => outcome,
        Err(e) => {
            // Nothing usable was produced (setup or I/O failed): leave no half-written file.
            drop(sink);
            let _ = std::fs::remove_file(&partial);
            return Err(e);
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
    eprintln!(
        "{}: wrote {} events as {:?} from {} ({})",
        args.output.display(),
        written.events,
        target,
        args.input.display(),
        reader.format()
    );
    match failure {
        None => Ok(()),
        Some(e) => Err(super::bad_input(e.context(format!(
            "conversion stopped early; {} contains the {} events decoded before the error",
            args.output.display(),
            written.events
        )))),
    }
}

fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    output.with_file_name(name)
}
