//! Event sources of the daemon: file replay ([`file`]), the DV TCP client ([`dv_tcp`]), the
//! push listener ([`listen`]) and the DV-compatible replay server behind
//! `inflor serve-events` ([`serve`]). Each runs on the tokio runtime, drives a sans-I/O decoder
//! and hands events to a [`StreamWriter`]; none does CPU-heavy work. Imports `format`,
//! `pipeline`, `config` (the resolved source types) and `telemetry`.

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use crate::event::Event;
use crate::format::{DecodeError, DecodeErrorKind, DecodeOptions, Decoder};
use crate::pipeline::{PipelineError, StreamWriter};

pub mod dv_tcp;
pub mod file;
pub mod listen;
pub mod serve;
pub mod usb;

/// Why a source stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The recording could not be read or decoded.
    #[error(transparent)]
    Read(#[from] crate::format::ReadError),
    /// A network stream was malformed.
    #[error("stream {stream}: {source}")]
    Decode {
        /// The stream id.
        stream: String,
        /// Where and why.
        source: DecodeError,
    },
    /// The pipeline refused the stream or its events.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// A USB camera could not be opened or failed while streaming.
    #[error(transparent)]
    Usb(#[from] usb::UsbError),
    /// A socket failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// The metric label of a decode error's kind.
pub fn error_kind(e: &DecodeError) -> &'static str {
    match e.kind {
        DecodeErrorKind::Truncated { .. } => "truncated",
        _ => "malformed",
    }
}

/// Reads a socket (or any async reader) through a decoder into a stream writer until the
/// end of the stream or `cancel`. Returns whether it ended because of `cancel`.
///
/// The writer is started once the decoder knows the sensor size; a decode error is counted
/// and returned, after the windows binned so far have been queued (nothing accepted is lost).
pub(crate) async fn pump<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
    decoder: &mut dyn Decoder,
    writer: &mut StreamWriter,
    chunk: &mut [u8],
    cancel: &CancellationToken,
) -> Result<bool, SourceError> {
    let mut events: Vec<Event> = Vec::new();
    loop {
        let n = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(true),
            r = reader.read(chunk) => r.map_err(|source| SourceError::Io {
                what: format!("reading stream {}", writer.id()),
                source,
            })?,
        };
        if n == 0 {
            events.clear();
            let finished = decoder.finish(&mut events);
            deliver(sensor(decoder), writer, &events).await?;
            return match finished {
                Ok(()) => Ok(false),
                Err(source) => Err(decode_failed(writer, source)),
            };
        }
        let mut input = chunk.get(..n).unwrap_or_default();
        loop {
            events.clear();
            let fed = match decoder.feed(input, &mut events) {
                Ok(fed) => fed,
                Err(source) => {
                    deliver(sensor(decoder), writer, &events).await?;
                    return Err(decode_failed(writer, source));
                }
            };
            deliver(sensor(decoder), writer, &events).await?;
            input = input.get(fed.consumed..).unwrap_or_default();
            if !fed.more {
                break;
            }
        }
    }
}

fn sensor(decoder: &dyn Decoder) -> Option<(u16, u16)> {
    decoder.info().map(|i| (i.width, i.height))
}

fn decode_failed(writer: &StreamWriter, source: DecodeError) -> SourceError {
    writer.decode_error(error_kind(&source));
    SourceError::Decode {
        stream: writer.id().to_owned(),
        source,
    }
}

/// Starts the writer when the decoder first knows the sensor, then pushes `events`.
async fn deliver(
    sensor: Option<(u16, u16)>,
    writer: &mut StreamWriter,
    events: &[Event],
) -> Result<(), SourceError> {
    if !writer.started() {
        match sensor {
            Some(sensor) => writer.start(sensor)?,
            None if events.is_empty() => return Ok(()),
            None => writer.start((0, 0))?,
        }
    }
    if !events.is_empty() {
        writer.push(events, Instant::now()).await?;
    }
    Ok(())
}

/// Decoder options for network streams under the configured limits.
pub fn network_options(max_packet_bytes: usize, batch_events: usize) -> DecodeOptions {
    DecodeOptions {
        max_record_bytes: max_packet_bytes,
        max_events_per_feed: batch_events.max(crate::format::MIN_EVENTS_PER_FEED),
        ..DecodeOptions::default()
    }
}

/// Pacing granularity: events due within this much wall time go out together.
const TICK: Duration = Duration::from_millis(1);

/// Stands for "never" in pacing (a year).
const FAR: Duration = Duration::from_secs(365 * 86_400);

/// Paces a replay by its timestamps at a speed factor (or not at all).
#[derive(Debug, Clone)]
pub struct Pacer {
    speed: Option<f64>,
    /// The wall time of the first event, and its timestamp.
    clock: Option<(Instant, i64)>,
}

impl Pacer {
    /// A pacer at `speed` times real time; as fast as possible when None.
    pub fn new(speed: Option<f64>) -> Self {
        Self { speed, clock: None }
    }

    /// Waits until the first of `events` is due and says how many of them are due by the next
    /// tick (at least one; all of them when unpaced). None when cancelled while waiting.
    pub async fn take(&mut self, events: &[Event], cancel: &CancellationToken) -> Option<usize> {
        let (Some(speed), Some(first)) = (self.speed, events.first()) else {
            return Some(events.len());
        };
        let (start, t0) = *self.clock.get_or_insert_with(|| (Instant::now(), first.t));
        let due = |t: i64| {
            let us = t.saturating_sub(t0).max(0) as f64;
            // A timestamp decades away (a damaged file) waits "forever", never overflows.
            Duration::try_from_secs_f64(us * 1e-6 / speed)
                .ok()
                .and_then(|d| start.checked_add(d))
                .unwrap_or(start + FAR)
        };
        let at = due(first.t);
        if at > Instant::now() {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep_until(at.into()) => {}
            }
        }
        let horizon = Instant::now() + TICK;
        let n = events
            .iter()
            .position(|e| due(e.t) > horizon)
            .unwrap_or(events.len());
        Some(n.max(1))
    }
}

/// Exponential backoff with full jitter between `min` and `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
    rng: rand_chacha::ChaCha8Rng,
}

impl Backoff {
    /// A backoff starting at `min`, doubling up to `max`; `seed` makes the jitter
    /// reproducible.
    pub fn new(min: Duration, max: Duration, seed: u64) -> Self {
        use rand::SeedableRng;
        Self {
            min,
            max: max.max(min),
            attempt: 0,
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The next delay: uniform in [min, min·2^attempt] capped at `max`, so many clients
    /// that lost one server do not come back in lockstep.
    pub fn next_delay(&mut self) -> Duration {
        use rand::RngExt;
        let cap = self
            .min
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let span = cap.saturating_sub(self.min).as_secs_f64();
        self.min + Duration::from_secs_f64(self.rng.random::<f64>() * span)
    }

    /// A connection succeeded: start again from `min`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_and_resets() {
        let min = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        let mut b = Backoff::new(min, max, 7);
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert_eq!(delays[0], min);
        assert!(delays.iter().all(|d| *d >= min && *d <= max), "{delays:?}");
        assert!(delays[4..].iter().any(|d| *d > Duration::from_millis(400)));
        b.reset();
        assert_eq!(b.next_delay(), min);
        let mut again = Backoff::new(min, max, 7);
        let same: Vec<Duration> = (0..8).map(|_| again.next_delay()).collect();
        assert_eq!(same, delays);
    }
}
