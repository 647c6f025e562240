//! `inflor inspect FILE...`: what each event file holds, streamed so any size fits in memory.

use std::io::Write;
use std::path::{Path, PathBuf};

use inflor::event::{EventSummary, StreamInfo};
use inflor::format::{DecodeStats, FileReader, Format, ReadError};
use serde::Serialize;

use super::decode_args::DecodeArgs;

/// `inflor inspect` arguments.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Event files (any readable format). Without any, the bundled recording (a DVS-Digits
    /// "0" made by `inflor synth`, see assets/README.md) is inspected.
    pub files: Vec<PathBuf>,
    /// One JSON object per file, one per line.
    #[arg(long)]
    pub json: bool,
    /// Decoder options.
    #[command(flatten)]
    pub decode: DecodeArgs,
}

/// What `inspect` reports about one file.
#[derive(Debug, Serialize)]
pub struct FileReport {
    /// The file.
    pub path: PathBuf,
    /// Its format, when it could be determined.
    pub format: Option<Format>,
    /// Header information.
    pub stream: Option<StreamInfo>,
    /// Event counts (ON and OFF included) and first and last timestamps.
    pub summary: EventSummary,
    /// Last minus first timestamp, µs (saturated to the `i64` range).
    pub duration_us: i64,
    /// Mean rate, events/s.
    pub mean_rate_hz: Option<f64>,
    /// Skipped records and tolerated problems.
    pub decode: DecodeStats,
    /// Why decoding stopped early, if it did (the counts above cover what came before).
    pub error: Option<String>,
}

/// The bundled recording, compiled into the binary so `inflor inspect` works anywhere.
pub const BUNDLED_NAME: &str = "<bundled>/dvs-digits-0.aedat";
/// Its bytes.
pub const BUNDLED: &[u8] = include_bytes!("../../assets/dvs-digits-0.aedat");

/// Decodes `path` (or the bundled recording when `path` is [`BUNDLED_NAME`]) to the end or the
/// first error, summarising as it goes.
pub fn inspect_file(path: &Path, decode: &DecodeArgs) -> FileReport {
    let mut report = FileReport {
        path: path.to_path_buf(),
        format: None,
        stream: None,
        summary: EventSummary::default(),
        duration_us: 0,
        mean_rate_hz: None,
        decode: DecodeStats::default(),
        error: None,
    };
    let opened = if path == Path::new(BUNDLED_NAME) {
        FileReader::from_reader(path, Box::new(BUNDLED), decode.format, &decode.options())
    } else {
        FileReader::open(path, decode.format, &decode.options())
    };
    let mut reader = match opened {
        Ok(r) => r,
        Err(e) => {
            report.error = Some(error_chain(&e));
            return report;
        }
    };
    report.format = Some(reader.format());
    let mut batch = Vec::with_capacity(1 << 16);
    loop {
        batch.clear();
        let more = reader.next_batch(&mut batch);
        report.summary.add(&batch);
        match more {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                report.error = Some(error_chain(&e));
                break;
            }
        }
    }
    report.stream = reader.info().cloned();
    report.decode = reader.stats().clone();
    report.duration_us = report.summary.duration_us();
    report.mean_rate_hz = report.summary.mean_rate();
    report
}

/// An error and its causes on one line: the library's messages name the file, and each cause
/// is its own link in the chain, so nothing repeats.
fn error_chain(error: &ReadError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `us` microseconds as seconds with six decimals, exactly (no rounding through `f64`).
fn seconds(us: i128) -> String {
    let sign = if us < 0 { "-" } else { "" };
    let us = us.unsigned_abs();
    format!("{sign}{}.{:06}", us / 1_000_000, us % 1_000_000)
}

fn print_text(out: &mut impl Write, r: &FileReport) -> std::io::Result<()> {
    writeln!(out, "{}", r.path.display())?;
    let format = r.format.map_or("unknown", Format::name);
    writeln!(out, "  format:      {format}")?;
    if let Some(s) = &r.stream {
        writeln!(out, "  resolution:  {}x{}", s.width, s.height)?;
        writeln!(out, "  source:      {}", s.source.as_deref().unwrap_or("-"))?;
        if let Some(orientation) = &s.orientation {
            writeln!(out, "  orientation: {orientation}")?;
        }
        if let Some(t0) = s.t0 {
            writeln!(
                out,
                "  t0:          {t0} us (from the header; added to every timestamp)"
            )?;
        }
    }
    let s = &r.summary;
    writeln!(
        out,
        "  events:      {} (ON {}, OFF {})",
        s.events, s.on, s.off
    )?;
    match (s.first_t, s.last_t) {
        (Some(a), Some(b)) => {
            writeln!(out, "  first t:     {a} us")?;
            writeln!(out, "  last t:      {b} us")?;
            let span = i128::from(b) - i128::from(a);
            writeln!(out, "  duration:    {} s", seconds(span))?;
        }
        _ => writeln!(out, "  first/last:  - (no events)")?,
    }
    match r.mean_rate_hz {
        Some(rate) => writeln!(out, "  mean rate:   {:.1} kev/s", rate / 1e3)?,
        None => writeln!(out, "  mean rate:   -")?,
    }
    let d = &r.decode;
    writeln!(
        out,
        "  skipped:     frames/APS {}, IMU {}, triggers {}, other {}",
        d.frames_skipped, d.imu_skipped, d.triggers_skipped, d.other_skipped
    )?;
    writeln!(out, "  t regressions: {}", d.timestamp_regressions)?;
    if d.bad_records_skipped > 0 {
        writeln!(
            out,
            "  bad records skipped (lenient): {} (first: {})",
            d.bad_records_skipped,
            d.first_bad_record.as_deref().unwrap_or("-")
        )?;
    }
    if let Some(e) = &r.error {
        writeln!(out, "  error:       {e}")?;
    }
    Ok(())
}

/// Runs the command. Every file is reported even when some fail; the exit code is then 2.
pub fn run(mut args: InspectArgs) -> anyhow::Result<()> {
    if args.files.is_empty() {
        args.files.push(PathBuf::from(BUNDLED_NAME));
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut failed = Vec::new();
    for path in &args.files {
        let report = inspect_file(path, &args.decode);
        if args.json {
            serde_json::to_writer(&mut out, &report)?;
            writeln!(out)?;
        } else {
            print_text(&mut out, &report)?;
        }
        if let Some(e) = &report.error {
            failed.push(e.clone());
        }
    }
    out.flush()?;
    if failed.is_empty() {
        Ok(())
    } else {
        Err(super::bad_input(anyhow::anyhow!(
            "{} of {} files could not be fully decoded:\n  {}",
            failed.len(),
            args.files.len(),
            failed.join("\n  ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_exact_at_the_extremes() {
        assert_eq!(seconds(1_500_000), "1.500000");
        assert_eq!(seconds(-1), "-0.000001");
        let widest = i128::from(i64::MAX) - i128::from(i64::MIN);
        assert_eq!(seconds(widest), "18446744073709.551615");
    }
}
