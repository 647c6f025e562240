//! Sinks: where each window's `Output` goes. Standard output and files are written by the
//! publisher thread in order and never drop anything. Subscribers (the TCP endpoint, gRPC)
//! each get a bounded buffer from the [`Hub`]: one that falls behind is disconnected and
//! counted, never allowed to stall the pipeline. Forwarders (NATS) get one too, but are never
//! disconnected: what does not fit is counted against them. The web view ([`web`]) keeps only
//! each stream's latest output, so a browser can skip windows but never hold one up. Imports
//! `session` (types), `pipeline` (the publish trait, and streams for gRPC `Ingest`), `binner`
//! (the frames the web view draws), `event`, `config` and `telemetry`.

pub mod grpc;
pub mod nats;
pub mod tcp;
pub mod web;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::config::StdoutFormat;
use crate::pipeline::Publish;
use crate::session::Output;
use crate::telemetry as t;

/// Standard output: JSON lines or one human-readable line per window.
pub struct Stdout {
    format: StdoutFormat,
    out: std::io::BufWriter<std::io::Stdout>,
    broken: bool,
}

impl Stdout {
    /// A stdout sink.
    pub fn new(format: StdoutFormat) -> Self {
        Self {
            format,
            out: std::io::BufWriter::new(std::io::stdout()),
            broken: false,
        }
    }
}

/// One human-readable line for a window.
pub fn text_line(o: &Output) -> String {
    let label = o
        .label
        .as_deref()
        .map(|l| {
            let mark = if l == o.class { "✓" } else { "✗" };
            format!(" (true: {l} {mark})")
        })
        .unwrap_or_default();
    format!(
        "{} #{:<5} {:>7.3}..{:>7.3} s  {:<12} {:>7.3}{}  spikes {:<7} {:>6.2} ms{}",
        o.stream,
        o.window,
        o.start_us as f64 / 1e6,
        o.end_us as f64 / 1e6,
        o.class,
        o.top_k.first().map_or(0.0, |s| s.logit),
        label,
        o.stats.spikes,
        o.latency.compute_us / 1e3,
        if o.gap { "  [gap]" } else { "" }
    )
}

impl Publish for Stdout {
    fn publish(&mut self, output: &Output, line: &str) {
        if self.broken {
            return;
        }
        let r = match self.format {
            StdoutFormat::Json => writeln!(self.out, "{line}"),
            StdoutFormat::Text => writeln!(self.out, "{}", text_line(output)),
        };
        if r.is_err() {
            // A closed stdout (`inflor run | head`) is not the pipeline's problem.
            self.broken = true;
            metrics::counter!(t::OUTPUTS_FAILED, "sink" => "stdout").increment(1);
        } else {
            metrics::counter!(t::OUTPUTS_PUBLISHED, "sink" => "stdout").increment(1);
        }
    }

    fn flush(&mut self) {
        if !self.broken && self.out.flush().is_err() {
            self.broken = true;
        }
    }
}

/// A JSON-lines file, appended to.
pub struct File {
    path: String,
    out: std::io::BufWriter<std::fs::File>,
    failed: bool,
}

impl File {
    /// Opens (creates or appends to) `path`.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self {
            path: path.display().to_string(),
            out: std::io::BufWriter::new(file),
            failed: false,
        })
    }
}

impl Publish for File {
    fn publish(&mut self, _output: &Output, line: &str) {
        if let Err(e) = writeln!(self.out, "{line}") {
            metrics::counter!(t::OUTPUTS_FAILED, "sink" => "file").increment(1);
            if !self.failed {
                tracing::error!(path = %self.path, error = %e, "cannot write outputs");
                self.failed = true;
            }
        } else {
            metrics::counter!(t::OUTPUTS_PUBLISHED, "sink" => "file").increment(1);
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.out.flush()
            && !self.failed
        {
            tracing::error!(path = %self.path, error = %e, "cannot write outputs");
            self.failed = true;
        }
    }
}

/// One output as subscribers receive it.
#[derive(Debug, Clone)]
pub struct Published {
    /// The record.
    pub output: Arc<Output>,
    /// Its JSON line (no newline).
    pub line: Arc<str>,
}

/// A subscriber's bounded buffer.
struct Subscriber {
    sink: &'static str,
    filter: Option<String>,
    tx: tokio::sync::mpsc::Sender<Published>,
    /// Set for a forwarder: outputs that found its buffer full, counted here instead of
    /// disconnecting it (it counts what it publishes itself).
    overflow: Option<Arc<std::sync::atomic::AtomicU64>>,
}

/// A forwarder's side of the hub: its outputs, and how many found its buffer full.
pub struct Forwarded {
    /// The outputs, in order; closed by [`Hub::close`].
    pub outputs: tokio::sync::mpsc::Receiver<Published>,
    /// Outputs that found the buffer full and were dropped (already counted in
    /// `inflor_outputs_failed_total`).
    pub overflow: Arc<std::sync::atomic::AtomicU64>,
}

/// Fans outputs out to subscribers, each with a bounded buffer. A subscriber whose buffer is
/// full is disconnected (its channel closes) and counted.
#[derive(Clone)]
pub struct Hub {
    subscribers: Arc<Mutex<Vec<Subscriber>>>,
    buffer: usize,
    /// Subscribers disconnected for falling behind, exactly (the metric is per sink kind).
    dropped: Arc<std::sync::atomic::AtomicU64>,
    /// Set by [`Hub::close`]: a subscriber whose channel ends before that was dropped.
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl Hub {
    /// A hub whose subscribers each buffer `buffer` outputs.
    pub fn new(buffer: usize) -> Self {
        Self {
            subscribers: Arc::new(Mutex::new(Vec::new())),
            buffer: buffer.max(1),
            dropped: Arc::default(),
            closed: Arc::default(),
        }
    }

    /// A new subscriber of sink kind `sink` (a metric label), receiving the outputs of the
    /// stream `filter` (all streams when None).
    pub fn subscribe(
        &self,
        sink: &'static str,
        filter: Option<String>,
    ) -> tokio::sync::mpsc::Receiver<Published> {
        let (tx, rx) = tokio::sync::mpsc::channel(self.buffer);
        if let Ok(mut subs) = self.subscribers.lock() {
            // Checked under the lock `close` takes, so a late subscriber cannot outlive it:
            // its channel is closed at once.
            if self.is_closed() {
                return rx;
            }
            subs.push(Subscriber {
                sink,
                filter,
                tx,
                overflow: None,
            });
            gauge(&subs, sink);
        }
        rx
    }

    /// A forwarder of sink kind `sink`, receiving every output: a sink that relays outputs
    /// elsewhere (NATS) and so must not be disconnected for a moment's lag. When its buffer is
    /// full the output is dropped and counted against it; it counts its own publications.
    pub fn forward(&self, sink: &'static str) -> Forwarded {
        let (tx, outputs) = tokio::sync::mpsc::channel(self.buffer);
        let overflow = Arc::<std::sync::atomic::AtomicU64>::default();
        if let Ok(mut subs) = self.subscribers.lock() {
            subs.push(Subscriber {
                sink,
                filter: None,
                tx,
                overflow: Some(Arc::clone(&overflow)),
            });
            gauge(&subs, sink);
        }
        Forwarded { outputs, overflow }
    }

    /// Subscribers connected now.
    pub fn len(&self) -> usize {
        self.subscribers.lock().map_or(0, |s| s.len())
    }

    /// Subscribers disconnected so far because their buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether nobody is subscribed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether [`Hub::close`] has run: a subscriber whose channel ends before that was
    /// disconnected for falling behind.
    pub fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Closes every subscriber's channel (at shutdown, after the last output): each ends once
    /// it has sent what it holds. Later subscribers get a channel that is closed already.
    pub fn close(&self) {
        if let Ok(mut subs) = self.subscribers.lock() {
            self.closed
                .store(true, std::sync::atomic::Ordering::Release);
            let kinds: Vec<&'static str> = subs.iter().map(|s| s.sink).collect();
            subs.clear();
            for k in kinds {
                gauge(&subs, k);
            }
        }
    }
}

fn gauge(subs: &[Subscriber], sink: &'static str) {
    let n = subs.iter().filter(|s| s.sink == sink).count();
    metrics::gauge!(t::SUBSCRIBERS, "sink" => sink).set(n as f64);
}

impl Publish for Hub {
    fn publish(&mut self, output: &Output, line: &str) {
        let Ok(mut subs) = self.subscribers.lock() else {
            return;
        };
        if subs.is_empty() {
            return;
        }
        // Subscribers get the record and its line; the frames (kept for the web view) would
        // only be copied for nothing.
        let published = Published {
            output: Arc::new(output.clone_without_frames()),
            line: Arc::from(line),
        };
        let mut changed = Vec::new();
        subs.retain(|s| {
            if s.filter.as_deref().is_some_and(|f| f != output.stream) {
                return !s.tx.is_closed();
            }
            match s.tx.try_send(published.clone()) {
                Ok(()) => {
                    if s.overflow.is_none() {
                        metrics::counter!(t::OUTPUTS_PUBLISHED, "sink" => s.sink).increment(1);
                    }
                    true
                }
                Err(tokio::sync::mpsc::error::TrySendError::Full(_)) if s.overflow.is_some() => {
                    if let Some(n) = &s.overflow
                        && n.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0
                    {
                        tracing::warn!(sink = s.sink, "a forwarder fell behind: outputs dropped");
                    }
                    metrics::counter!(t::OUTPUTS_FAILED, "sink" => s.sink).increment(1);
                    true
                }
                Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(
                        sink = s.sink,
                        "a subscriber fell behind and was disconnected"
                    );
                    metrics::counter!(t::SUBSCRIBERS_DROPPED, "sink" => s.sink).increment(1);
                    self.dropped
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    changed.push(s.sink);
                    false
                }
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                    changed.push(s.sink);
                    false
                }
            }
        });
        for k in changed {
            gauge(&subs, k);
        }
    }

    fn flush(&mut self) {}
}

/// Compares a presented token with the expected one in constant time.
pub fn token_matches(expected: &str, presented: &str) -> bool {
    use subtle::ConstantTimeEq;
    expected.as_bytes().ct_eq(presented.as_bytes()).into()
}
