//! File replay: a recording read in bounded batches, as fast as the pipeline takes it or paced
//! by its timestamps at a speed factor, optionally looped.
//!
//! Each pass of a looped replay is a recording of its own (a per-recording window policy
//! classifies each pass), and each pass is shifted by the span of the recording (plus 1 µs), so the stream's
//! time keeps increasing and the windows of one pass never mix with the next's in a way a
//! camera could not produce.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::{Pacer, SourceError};
use crate::event::Event;
use crate::format::{DecodeOptions, FileReader, Format, ReadError};
use crate::pipeline::StreamWriter;

/// What to replay and how.
#[derive(Debug, Clone)]
pub struct Replay {
    /// The recording.
    pub path: PathBuf,
    /// Its format, when detection is skipped.
    pub format: Option<Format>,
    /// Real-time factor (2 = twice as fast); as fast as possible when None.
    pub speed: Option<f64>,
    /// Start again at the end.
    pub repeat: bool,
    /// Decoder options (the batch bound among them).
    pub options: DecodeOptions,
}

/// A recording in memory, replayed in place of a file (the bundled recording).
#[derive(Debug, Clone, Copy)]
pub struct Embedded {
    /// The name it goes by in logs and errors.
    pub name: &'static str,
    /// Its bytes.
    pub bytes: &'static [u8],
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Events read from the file (all passes).
    pub events: u64,
    /// Complete passes.
    pub passes: u64,
    /// It stopped because of the cancellation.
    pub cancelled: bool,
}

/// Replays `replay` (or `embedded` in its place) into `writer` until its end, or forever when
/// looping, or until `cancel`. Finishes the stream either way: the windows the binner holds are
/// queued and classified before this returns.
pub async fn replay(
    replay: &Replay,
    embedded: Option<Embedded>,
    mut writer: StreamWriter,
    cancel: CancellationToken,
) -> Result<ReplayReport, SourceError> {
    let result = run(replay, embedded, &mut writer, &cancel).await;
    let finished = writer.finish().await;
    let report = result?;
    finished?;
    Ok(report)
}

async fn run(
    replay: &Replay,
    embedded: Option<Embedded>,
    writer: &mut StreamWriter,
    cancel: &CancellationToken,
) -> Result<ReplayReport, SourceError> {
    let mut report = ReplayReport::default();
    let mut offset: i64 = 0;
    let mut pacer = Pacer::new(replay.speed);
    loop {
        let mut reader = open(&replay.path, replay.format, &replay.options, embedded).await?;
        let mut events = Vec::new();
        let mut span: Option<(i64, i64)> = None;
        loop {
            let (r, batch, more) = next_batch(reader, std::mem::take(&mut events)).await?;
            reader = r;
            events = batch;
            if !writer.started() && (reader.info().is_some() || !more) {
                let info = reader.info_or_default();
                writer.start((info.width, info.height))?;
            }
            if !events.is_empty() {
                for e in &mut events {
                    e.t = e.t.saturating_add(offset);
                }
                let first = events.first().map_or(0, |e| e.t);
                let last = events.last().map_or(0, |e| e.t);
                span = Some(span.map_or((first, last), |(a, b)| (a.min(first), b.max(last))));
                report.events += events.len() as u64;
                if push_paced(writer, &events, &mut pacer, cancel).await? {
                    report.cancelled = true;
                    return Ok(report);
                }
            }
            if !more {
                break;
            }
            if cancel.is_cancelled() {
                report.cancelled = true;
                return Ok(report);
            }
        }
        report.passes += 1;
        if !replay.repeat {
            return Ok(report);
        }
        // Each pass is a recording of its own: a per-recording window closes here, and the
        // next pass starts the windowing again (without a gap: nothing was lost).
        writer.disconnected().await?;
        match span {
            Some((first, last)) => offset = offset.saturating_add(last - first + 1),
            // An empty recording looped would spin: one pass says all there is.
            None => return Ok(report),
        }
        tracing::debug!(stream = writer.id(), pass = report.passes, "replay loops");
    }
}

/// Opens the recording (or the embedded one) on a blocking thread.
pub(crate) async fn open(
    path: &Path,
    format: Option<Format>,
    options: &DecodeOptions,
    embedded: Option<Embedded>,
) -> Result<FileReader, SourceError> {
    let path = path.to_path_buf();
    let name = path.clone();
    let options = options.clone();
    tokio::task::spawn_blocking(move || match embedded {
        Some(e) => FileReader::from_reader(
            Path::new(e.name),
            Box::new(std::io::Cursor::new(e.bytes)),
            format,
            &options,
        ),
        None => FileReader::open(&path, format, &options),
    })
    .await
    .map_err(|e| join_error(&name, e))?
    .map_err(SourceError::from)
}

/// The next batch, read on a blocking thread (file reads block).
pub(crate) async fn next_batch(
    mut reader: FileReader,
    mut events: Vec<Event>,
) -> Result<(FileReader, Vec<Event>, bool), SourceError> {
    let path = reader.path().to_path_buf();
    let (reader, events, more) = tokio::task::spawn_blocking(move || {
        events.clear();
        let more = reader.next_batch(&mut events);
        (reader, events, more)
    })
    .await
    .map_err(|e| join_error(&path, e))?;
    Ok((reader, events, more?))
}

fn join_error(path: &Path, e: tokio::task::JoinError) -> SourceError {
    SourceError::Read(ReadError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })
}

/// Pushes `events`, each slice when it is due. Returns true when cancelled.
async fn push_paced(
    writer: &mut StreamWriter,
    events: &[Event],
    pacer: &mut Pacer,
    cancel: &CancellationToken,
) -> Result<bool, SourceError> {
    let mut rest = events;
    while !rest.is_empty() {
        let Some(n) = pacer.take(rest, cancel).await else {
            return Ok(true);
        };
        let (now, later) = rest.split_at(n);
        writer.push(now, Instant::now()).await?;
        rest = later;
    }
    Ok(false)
}
