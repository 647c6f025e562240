//! The daemon's pipeline: per-stream bounded queues of windows between the sources and the
//! executor worker threads, the workers, the publisher thread that hands every `Output` to
//! the sinks, the registry of live streams, and the drain order on shutdown.
//!
//! ```text
//! source task ── StreamWriter (rate limiter, Windowing) ──► per-stream queue (bounded)
//!                                                              │ token (crossbeam)
//!                                                              ▼
//!                               worker thread: Classifier per stream, one Scratch, one Plan
//!                                                              │ Output (bounded crossbeam)
//!                                                              ▼
//!                               publisher thread ──► stdout / file / subscriber hub
//! ```
//!
//! # Backpressure
//!
//! Each stream's queue holds at most `limits.queue_windows` windows. When it is full:
//! - `block`: the source waits until the worker takes a window. Nothing is lost, and a file
//!   replay gives the same outputs as `infer`.
//! - `drop_oldest`: the oldest queued window is removed and counted (events and windows), and
//!   the next output of the stream carries `gap: true`. Latency stays bounded by the queue,
//!   however long the overload lasts, because nothing older than the queue is ever executed.
//!
//! # Scheduling
//!
//! Every stream runs on one worker (chosen when it opens, the least loaded), so its windows
//! run in order and its membranes never move between threads. A stream with queued windows
//! has exactly one "ready" token in its worker's crossbeam channel; the worker classifies one
//! window per token and re-queues the token behind the other streams while windows remain, so
//! streams on one worker take turns. Tokens are bounded by the number of streams.
//!
//! # Shutdown
//!
//! Sources call [`StreamWriter::finish`], which queues the windows the binner still holds and
//! closes the stream; its worker runs everything queued before it forgets the stream. Then
//! [`Pipeline::shutdown`] closes the workers' channels, the workers end and drop their output
//! senders, and the publisher drains and flushes every sink.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use dashmap::DashMap;
use serde::Serialize;

use crate::binner::InputSpec;
use crate::config::Backpressure;
use crate::event::Event;
use crate::exec::Plan;
use crate::model::Model;
use crate::session::{Classifier, Output, SessionError, SessionOptions, WindowFrames, Windowing};
use crate::telemetry as t;

mod limiter;

pub use limiter::RateLimiter;

/// How a stream is windowed and classified.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// Its id.
    pub id: String,
    /// What its source is, for `/streams`.
    pub source: String,
    /// The input spec (the model's, with the stream's overrides).
    pub input: InputSpec,
    /// Session options (hop, membranes, label, top-k).
    pub session: SessionOptions,
    /// What a full queue does.
    pub backpressure: Backpressure,
    /// Decimation limit, events/s.
    pub max_events_per_s: Option<u64>,
    /// Sensor size override.
    pub resolution: Option<(u16, u16)>,
}

/// Why a stream could not be opened or fed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The session could not be made (window policy, sensor size, hop).
    #[error(transparent)]
    Session(#[from] SessionError),
    /// Too many streams are open.
    #[error("{0} streams are open, the configured maximum")]
    TooManyStreams(usize),
    /// A stream with this id is open already.
    #[error("a stream named {0:?} is open already")]
    Duplicate(String),
    /// The stream does not say its sensor size and none was configured.
    #[error("the stream does not say its sensor size; set `resolution` in its configuration")]
    NoSensorSize,
    /// The pipeline is shutting down.
    #[error("the pipeline is shutting down")]
    Closed,
}

/// Exact per-stream counters (also exported as metrics).
#[derive(Debug, Default)]
pub struct StreamCounters {
    /// Events the source delivered.
    pub events_received: AtomicU64,
    /// Events the rate limiter removed.
    pub events_rate_limited: AtomicU64,
    /// Events in dropped windows.
    pub events_dropped: AtomicU64,
    /// Windows dropped under overload.
    pub windows_dropped: AtomicU64,
    /// Windows queued.
    pub windows: AtomicU64,
    /// Windows classified.
    pub inferences: AtomicU64,
    /// Reconnections.
    pub reconnects: AtomicU64,
    /// Decode errors that ended a connection.
    pub decode_errors: AtomicU64,
}

/// Counts over every stream the pipeline has run, for the summary at shutdown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Streams opened.
    pub streams: u64,
    /// Events sources handed in.
    pub events_received: u64,
    /// Events removed by rate limiters.
    pub events_rate_limited: u64,
    /// Events of windows dropped under `drop_oldest`.
    pub events_dropped: u64,
    /// Windows binned and queued.
    pub windows: u64,
    /// Windows dropped under `drop_oldest`.
    pub windows_dropped: u64,
    /// Windows classified.
    pub inferences: u64,
    /// Outputs handed to the sinks.
    pub published: u64,
}

/// What `/streams` shows of the last output.
#[derive(Debug, Clone, Serialize)]
struct LastOutput {
    window: u64,
    class: String,
    logit: f32,
    label: Option<String>,
    gap: bool,
    compute_us: f64,
    end_to_end_us: f64,
}

/// A stream's queue and state, shared by its writer, its worker and the registry.
#[derive(Debug)]
struct StreamEntry {
    key: u64,
    id: String,
    source: String,
    worker: usize,
    backpressure: Backpressure,
    queue_tx: Sender<Queued>,
    /// The writer holds a receiver too, to drop the oldest window itself.
    queue_rx: Receiver<Queued>,
    /// A token for this stream is in its worker's channel (or the worker is about to look).
    scheduled: AtomicBool,
    /// Windows were dropped since the last one classified.
    gap_pending: AtomicBool,
    /// Wakes a blocked writer when the worker takes a window.
    space: tokio::sync::Notify,
    counters: StreamCounters,
    connected: AtomicBool,
    sensor: Mutex<Option<(u16, u16)>>,
    last: Mutex<Option<LastOutput>>,
    /// Completed when the worker has run everything of a closed stream.
    closed: tokio::sync::Notify,
    done: AtomicBool,
    metrics: StreamMetrics,
}

/// Metric handles, resolved once per stream.
#[derive(Debug)]
struct StreamMetrics {
    events_received: metrics::Counter,
    events_rate_limited: metrics::Counter,
    events_dropped: metrics::Counter,
    windows_dropped: metrics::Counter,
    windows: metrics::Counter,
    inferences: metrics::Counter,
    inference_latency: metrics::Histogram,
    end_to_end_latency: metrics::Histogram,
    queue_depth: metrics::Gauge,
    synaptic_ops: metrics::Counter,
    energy: metrics::Gauge,
    reconnects: metrics::Counter,
}

impl StreamMetrics {
    fn new(id: &str) -> Self {
        let l = [("stream", id.to_owned())];
        Self {
            events_received: metrics::counter!(t::EVENTS_RECEIVED, &l),
            events_rate_limited: metrics::counter!(t::EVENTS_RATE_LIMITED, &l),
            events_dropped: metrics::counter!(t::EVENTS_DROPPED, &l),
            windows_dropped: metrics::counter!(t::WINDOWS_DROPPED, &l),
            windows: metrics::counter!(t::WINDOWS, &l),
            inferences: metrics::counter!(t::INFERENCES, &l),
            inference_latency: metrics::histogram!(t::INFERENCE_LATENCY, &l),
            end_to_end_latency: metrics::histogram!(t::END_TO_END_LATENCY, &l),
            queue_depth: metrics::gauge!(t::QUEUE_DEPTH, &l),
            synaptic_ops: metrics::counter!(t::SYNAPTIC_OPS, &l),
            energy: metrics::gauge!(t::ENERGY, &l),
            reconnects: metrics::counter!(t::RECONNECTS, &l),
        }
    }
}

/// One queued window.
#[derive(Debug)]
struct Queued {
    window: WindowFrames,
    received: Instant,
}

/// Messages to a worker thread.
enum WorkerMsg {
    Open(Arc<StreamEntry>, Box<Classifier>),
    Ready(Arc<StreamEntry>),
    Gap(Arc<StreamEntry>),
    Close(Arc<StreamEntry>),
    /// Run what is queued, then end (at shutdown, once every source has finished).
    Stop,
}

/// What the pipeline shares with its writers.
struct Shared {
    model: Arc<Model>,
    plan: Arc<Plan>,
    workers: Vec<Sender<WorkerMsg>>,
    load: Vec<AtomicUsize>,
    registry: DashMap<u64, Arc<StreamEntry>>,
    next_key: AtomicU64,
    queue_windows: usize,
    max_streams: usize,
    open: AtomicBool,
    streams_gauge: metrics::Gauge,
    /// The counters of streams that have ended.
    ended: Arc<Mutex<Totals>>,
    published: Arc<AtomicU64>,
}

/// The running pipeline.
pub struct Pipeline {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    publisher: Option<JoinHandle<()>>,
}

/// Where the publisher sends each output.
pub trait Publish: Send {
    /// One output, with its JSON line (no newline).
    fn publish(&mut self, output: &Output, line: &str);
    /// Called when the output channel is momentarily empty, and at the end: flush buffers.
    fn flush(&mut self);
}

impl Pipeline {
    /// Starts `workers` executor threads and the publisher thread, which hands every output
    /// to `sinks` in order.
    pub fn start(
        model: Arc<Model>,
        plan: Arc<Plan>,
        workers: usize,
        queue_windows: usize,
        max_streams: usize,
        mut sinks: Vec<Box<dyn Publish>>,
    ) -> std::io::Result<Self> {
        // Outputs wait here for the publisher; a slow sink slows the workers rather than
        // growing memory (subscribers that fall behind are dropped inside their sink).
        let (out_tx, out_rx) = crossbeam_channel::bounded::<Output>(1024);
        let mut senders = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers.max(1) {
            // Tokens are bounded by the number of streams; opens and closes by the streams
            // that exist, so this channel cannot grow without bound.
            let (tx, rx) = crossbeam_channel::unbounded::<WorkerMsg>();
            let plan = Arc::clone(&plan);
            let out = out_tx.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("inflor-worker-{w}"))
                    .spawn(move || worker(plan, rx, out))?,
            );
            senders.push(tx);
        }
        drop(out_tx);
        let published_total = Arc::new(AtomicU64::new(0));
        let published_count = Arc::clone(&published_total);
        let publisher = std::thread::Builder::new()
            .name("inflor-publisher".into())
            .spawn(move || {
                let mut published = 0u64;
                loop {
                    let output = match out_rx.try_recv() {
                        Ok(o) => o,
                        Err(TryRecvError::Empty) => {
                            for s in &mut sinks {
                                s.flush();
                            }
                            match out_rx.recv() {
                                Ok(o) => o,
                                Err(_) => break,
                            }
                        }
                        Err(TryRecvError::Disconnected) => break,
                    };
                    let line = match serde_json::to_string(&output) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot serialise an output");
                            continue;
                        }
                    };
                    for s in &mut sinks {
                        s.publish(&output, &line);
                    }
                    published += 1;
                    published_count.fetch_add(1, Ordering::Relaxed);
                }
                for s in &mut sinks {
                    s.flush();
                }
                tracing::debug!(published, "publisher drained");
            })?;
        Ok(Self {
            shared: Arc::new(Shared {
                model,
                plan,
                load: (0..senders.len()).map(|_| AtomicUsize::new(0)).collect(),
                workers: senders,
                registry: DashMap::new(),
                next_key: AtomicU64::new(1),
                queue_windows: queue_windows.max(1),
                max_streams,
                open: AtomicBool::new(true),
                streams_gauge: metrics::gauge!(t::STREAMS),
                ended: Arc::new(Mutex::new(Totals::default())),
                published: published_total,
            }),
            workers: handles,
            publisher: Some(publisher),
        })
    }

    /// A handle for sources to open streams with.
    pub fn handle(&self) -> PipelineHandle {
        PipelineHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Counts over every stream so far (live ones included).
    pub fn totals(&self) -> Totals {
        self.handle().totals()
    }

    /// Stops accepting streams, waits for the workers to run everything queued and for the
    /// publisher to flush every sink, and returns the final counts. Call after every source
    /// has finished its streams.
    pub fn shutdown(mut self) -> Totals {
        let ended = Arc::clone(&self.shared.ended);
        let published = Arc::clone(&self.shared.published);
        self.shared.open.store(false, Ordering::Release);
        // Handles may outlive the pipeline (the admin server holds one), so the workers are
        // told to stop rather than waiting for their channels to close.
        for w in &self.shared.workers {
            let _ = w.send(WorkerMsg::Stop);
        }
        drop(self.shared);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if let Some(p) = self.publisher.take() {
            let _ = p.join();
        }
        let mut totals = ended.lock().map(|t| *t).unwrap_or_default();
        totals.published = published.load(Ordering::Relaxed);
        totals
    }
}

/// What sources use to open streams. Cheap to clone.
#[derive(Clone)]
pub struct PipelineHandle {
    shared: Arc<Shared>,
}

impl PipelineHandle {
    /// The model the pipeline runs.
    pub fn model(&self) -> &Arc<Model> {
        &self.shared.model
    }

    /// Registers a stream and returns its writer. The stream's session starts when the
    /// source knows the sensor size ([`StreamWriter::start`]).
    pub fn open(&self, spec: StreamSpec) -> Result<StreamWriter, PipelineError> {
        let s = &self.shared;
        if !s.open.load(Ordering::Acquire) {
            return Err(PipelineError::Closed);
        }
        if s.registry.len() >= s.max_streams {
            return Err(PipelineError::TooManyStreams(s.max_streams));
        }
        if s.registry.iter().any(|e| e.id == spec.id) {
            return Err(PipelineError::Duplicate(spec.id));
        }
        let worker = (0..s.workers.len())
            .min_by_key(|&w| s.load[w].load(Ordering::Relaxed))
            .unwrap_or(0);
        s.load[worker].fetch_add(1, Ordering::Relaxed);
        let (queue_tx, queue_rx) = crossbeam_channel::bounded(s.queue_windows);
        let key = s.next_key.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(StreamEntry {
            key,
            metrics: StreamMetrics::new(&spec.id),
            id: spec.id.clone(),
            source: spec.source.clone(),
            worker,
            backpressure: spec.backpressure,
            queue_tx,
            queue_rx,
            scheduled: AtomicBool::new(false),
            gap_pending: AtomicBool::new(false),
            space: tokio::sync::Notify::new(),
            counters: StreamCounters::default(),
            connected: AtomicBool::new(false),
            sensor: Mutex::new(None),
            last: Mutex::new(None),
            closed: tokio::sync::Notify::new(),
            done: AtomicBool::new(false),
        });
        s.registry.insert(key, Arc::clone(&entry));
        s.streams_gauge.set(s.registry.len() as f64);
        Ok(StreamWriter {
            limiter: spec.max_events_per_s.map(RateLimiter::new),
            spec,
            entry,
            shared: Arc::clone(s),
            windowing: None,
            opened: false,
            windows: Vec::new(),
            kept: Vec::new(),
            next_index: 0,
        })
    }

    /// Counts over every stream so far (live ones included).
    pub fn totals(&self) -> Totals {
        let s = &self.shared;
        let mut totals = s.ended.lock().map(|t| *t).unwrap_or_default();
        for e in s.registry.iter() {
            add_counters(&mut totals, &e.counters);
        }
        totals.published = s.published.load(Ordering::Relaxed);
        totals
    }

    /// The `/streams` document: every live stream with its counters and last output.
    pub fn streams_json(&self) -> serde_json::Value {
        let mut rows: Vec<(String, serde_json::Value)> = self
            .shared
            .registry
            .iter()
            .map(|e| {
                let c = &e.counters;
                let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
                (
                    e.id.clone(),
                    serde_json::json!({
                        "id": e.id,
                        "source": e.source,
                        "worker": e.worker,
                        "connected": e.connected.load(Ordering::Relaxed),
                        "sensor": e.sensor.lock().ok().and_then(|s| *s).map(|(w, h)| format!("{w}x{h}")),
                        "backpressure": e.backpressure,
                        "queue_depth": e.queue_rx.len(),
                        "events_received": get(&c.events_received),
                        "events_rate_limited": get(&c.events_rate_limited),
                        "events_dropped": get(&c.events_dropped),
                        "windows_dropped": get(&c.windows_dropped),
                        "windows": get(&c.windows),
                        "inferences": get(&c.inferences),
                        "reconnects": get(&c.reconnects),
                        "decode_errors": get(&c.decode_errors),
                        "last": e.last.lock().ok().and_then(|l| l.clone()),
                    }),
                )
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        serde_json::Value::Array(rows.into_iter().map(|(_, v)| v).collect())
    }
}

/// A source's handle on one stream: rate limiting and windowing happen here, on the source's
/// task; classification on the stream's worker.
pub struct StreamWriter {
    spec: StreamSpec,
    entry: Arc<StreamEntry>,
    shared: Arc<Shared>,
    limiter: Option<RateLimiter>,
    windowing: Option<Windowing>,
    /// The worker has this stream's classifier.
    opened: bool,
    windows: Vec<WindowFrames>,
    kept: Vec<Event>,
    /// The index of the next window binned.
    next_index: u64,
}

impl StreamWriter {
    /// The stream's id.
    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// The stream's counters.
    pub fn counters(&self) -> &StreamCounters {
        &self.entry.counters
    }

    /// Starts (or, after a reconnect, restarts) the stream's windowing for a sensor of
    /// `sensor` pixels (`(0, 0)` when unknown: the configured resolution is then needed).
    /// The first start also opens the stream's classifier on its worker.
    pub fn start(&mut self, sensor: (u16, u16)) -> Result<(), PipelineError> {
        let sensor = match self.spec.resolution {
            Some(r) => r,
            None if sensor.0 == 0 || sensor.1 == 0 => return Err(PipelineError::NoSensorSize),
            None => sensor,
        };
        let windowing = Windowing::new(
            &self.spec.input,
            sensor,
            self.spec.session.hop,
            self.spec.session.max_recording_events,
        )
        .map_err(SessionError::from)?;
        if !self.opened {
            let classifier = Classifier::new(
                Arc::clone(&self.shared.plan),
                &self.shared.model,
                &self.spec.session,
            )?;
            self.send(WorkerMsg::Open(
                Arc::clone(&self.entry),
                Box::new(classifier),
            ))?;
            self.opened = true;
        }
        self.windowing = Some(windowing);
        if let Ok(mut s) = self.entry.sensor.lock() {
            *s = Some(sensor);
        }
        self.entry.connected.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Whether [`StreamWriter::start`] has run.
    pub fn started(&self) -> bool {
        self.windowing.is_some()
    }

    /// The next events of the stream, which arrived at `received`. Waits while the queue is
    /// full under `block`; drops the oldest window under `drop_oldest`.
    pub async fn push(&mut self, events: &[Event], received: Instant) -> Result<(), PipelineError> {
        let c = &self.entry.counters;
        c.events_received
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        self.entry
            .metrics
            .events_received
            .increment(events.len() as u64);
        let Some(windowing) = self.windowing.as_mut() else {
            return Err(PipelineError::NoSensorSize);
        };
        let events: &[Event] = match &mut self.limiter {
            Some(limiter) => {
                self.kept.clear();
                let removed = limiter.keep(events, &mut self.kept);
                if removed > 0 {
                    c.events_rate_limited.fetch_add(removed, Ordering::Relaxed);
                    self.entry.metrics.events_rate_limited.increment(removed);
                }
                &self.kept
            }
            None => events,
        };
        self.windows.clear();
        windowing
            .push(events, &mut self.windows)
            .map_err(SessionError::from)?;
        self.enqueue_all(received).await
    }

    /// The connection behind the stream was lost and made again: counted, and the next
    /// output carries `gap: true`. The windowing restarts at the next [`StreamWriter::start`].
    pub fn reconnected(&mut self) {
        self.entry
            .counters
            .reconnects
            .fetch_add(1, Ordering::Relaxed);
        self.entry.metrics.reconnects.increment(1);
        self.entry.connected.store(false, Ordering::Relaxed);
        if self.opened {
            let _ = self.send(WorkerMsg::Gap(Arc::clone(&self.entry)));
        }
    }

    /// Events were lost upstream (a camera driver's ring overflowed) without the stream
    /// breaking: the next output carries `gap: true`.
    pub fn gap(&mut self) {
        if self.opened {
            let _ = self.send(WorkerMsg::Gap(Arc::clone(&self.entry)));
        }
    }

    /// The connection was lost (a reconnect may follow): queues what the binner holds.
    pub async fn disconnected(&mut self) -> Result<(), PipelineError> {
        self.entry.connected.store(false, Ordering::Relaxed);
        self.flush_windowing().await
    }

    /// Counts a decode error that ended a connection or a file.
    pub fn decode_error(&self, kind: &'static str) {
        self.entry
            .counters
            .decode_errors
            .fetch_add(1, Ordering::Relaxed);
        metrics::counter!(t::DECODE_ERRORS, "stream" => self.spec.id.clone(), "kind" => kind)
            .increment(1);
    }

    /// Ends the stream: queues the windows the binner still holds, then waits until the
    /// worker has classified everything queued and the stream is gone from the registry.
    pub async fn finish(mut self) -> Result<(), PipelineError> {
        let result = self.flush_windowing().await;
        self.close().await;
        result
    }

    /// Like [`StreamWriter::finish`], and returns the stream's final counts (`streams` is 1,
    /// `published` 0: outputs are counted by the publisher, over every stream).
    pub async fn finish_counted(mut self) -> (Result<(), PipelineError>, Totals) {
        let result = self.flush_windowing().await;
        self.close().await;
        let mut totals = Totals::default();
        add_counters(&mut totals, &self.entry.counters);
        (result, totals)
    }

    async fn flush_windowing(&mut self) -> Result<(), PipelineError> {
        let Some(mut windowing) = self.windowing.take() else {
            return Ok(());
        };
        self.windows.clear();
        windowing
            .finish(&mut self.windows)
            .map_err(SessionError::from)?;
        self.enqueue_all(Instant::now()).await
    }

    async fn close(&mut self) {
        if self.opened {
            let closed = self.entry.closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if self.send(WorkerMsg::Close(Arc::clone(&self.entry))).is_ok()
                && !self.entry.done.load(Ordering::Acquire)
            {
                closed.await;
            }
            self.opened = false;
        }
        self.deregister();
    }

    fn deregister(&self) {
        let s = &self.shared;
        if let Some((_, entry)) = s.registry.remove(&self.entry.key) {
            if let Ok(mut ended) = s.ended.lock() {
                add_counters(&mut ended, &entry.counters);
            }
            s.load[self.entry.worker].fetch_sub(1, Ordering::Relaxed);
            s.streams_gauge.set(s.registry.len() as f64);
        }
    }

    fn send(&self, msg: WorkerMsg) -> Result<(), PipelineError> {
        self.shared.workers[self.entry.worker]
            .send(msg)
            .map_err(|_| PipelineError::Closed)
    }

    async fn enqueue_all(&mut self, received: Instant) -> Result<(), PipelineError> {
        let windows = std::mem::take(&mut self.windows);
        for mut window in windows {
            // Numbered per stream, across reconnects and replay passes (each of which starts
            // a new windowing), so indices never repeat and dropped windows leave holes.
            window.index = self.next_index;
            self.next_index += 1;
            self.enqueue(Queued { window, received }).await?;
        }
        Ok(())
    }

    async fn enqueue(&mut self, mut item: Queued) -> Result<(), PipelineError> {
        let e = &self.entry;
        loop {
            // Registered before trying, so a window taken between the try and the wait
            // cannot be missed.
            let space = e.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            match e.queue_tx.try_send(item) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return Err(PipelineError::Closed),
                Err(TrySendError::Full(back)) => {
                    item = back;
                    match e.backpressure {
                        Backpressure::Block => space.await,
                        Backpressure::DropOldest => {
                            if let Ok(old) = e.queue_rx.try_recv() {
                                let c = &e.counters;
                                c.windows_dropped.fetch_add(1, Ordering::Relaxed);
                                c.events_dropped
                                    .fetch_add(old.window.events, Ordering::Relaxed);
                                e.metrics.windows_dropped.increment(1);
                                e.metrics.events_dropped.increment(old.window.events);
                                e.gap_pending.store(true, Ordering::Release);
                            }
                        }
                    }
                }
            }
        }
        e.counters.windows.fetch_add(1, Ordering::Relaxed);
        e.metrics.windows.increment(1);
        e.metrics.queue_depth.set(e.queue_rx.len() as f64);
        if !e.scheduled.swap(true, Ordering::AcqRel) {
            self.send(WorkerMsg::Ready(Arc::clone(e)))?;
        }
        Ok(())
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        // A writer dropped without `finish` (its source failed): the worker still runs what
        // was queued, and the stream leaves the registry.
        if self.opened {
            let _ = self.send(WorkerMsg::Close(Arc::clone(&self.entry)));
        }
        self.deregister();
    }
}

fn add_counters(totals: &mut Totals, c: &StreamCounters) {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    totals.streams += 1;
    totals.events_received += get(&c.events_received);
    totals.events_rate_limited += get(&c.events_rate_limited);
    totals.events_dropped += get(&c.events_dropped);
    totals.windows += get(&c.windows);
    totals.windows_dropped += get(&c.windows_dropped);
    totals.inferences += get(&c.inferences);
}

/// A worker thread: classifies windows of the streams assigned to it, one window per turn,
/// taking turns between the streams that have windows queued.
fn worker(plan: Arc<Plan>, rx: Receiver<WorkerMsg>, out: Sender<Output>) {
    let mut scratch = plan.new_scratch();
    let mut streams: HashMap<u64, Box<Classifier>> = HashMap::new();
    // Streams with windows queued, in turn order. A stream is here or has a token in `rx`
    // only while its `scheduled` flag is set, so it appears at most once.
    let mut ready: std::collections::VecDeque<Arc<StreamEntry>> = Default::default();
    let mut connected = true;
    loop {
        // Messages first (opens must precede windows), without blocking while work waits.
        let msg = if ready.is_empty() {
            if !connected {
                break;
            }
            match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => break,
            }
        } else if connected {
            match rx.try_recv() {
                Ok(m) => Some(m),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => {
                    connected = false;
                    None
                }
            }
        } else {
            None
        };
        if let Some(msg) = msg {
            match msg {
                WorkerMsg::Open(entry, classifier) => {
                    streams.insert(entry.key, classifier);
                }
                WorkerMsg::Gap(entry) => {
                    if let Some(c) = streams.get_mut(&entry.key) {
                        c.mark_gap();
                    }
                }
                WorkerMsg::Ready(entry) => ready.push_back(entry),
                WorkerMsg::Close(entry) => {
                    if let Some(mut c) = streams.remove(&entry.key) {
                        while let Ok(item) = entry.queue_rx.try_recv() {
                            entry.space.notify_one();
                            if !classify_one(&mut scratch, &mut c, &entry, item, &out) {
                                return;
                            }
                        }
                    }
                    entry.done.store(true, Ordering::Release);
                    entry.closed.notify_waiters();
                }
                WorkerMsg::Stop => connected = false,
            }
            continue;
        }
        let Some(entry) = ready.pop_front() else {
            continue;
        };
        entry.scheduled.store(false, Ordering::Release);
        let item = entry.queue_rx.try_recv();
        entry.space.notify_one();
        if let (Ok(item), Some(c)) = (item, streams.get_mut(&entry.key))
            && !classify_one(&mut scratch, c, &entry, item, &out)
        {
            return;
        }
        if !entry.queue_rx.is_empty() && !entry.scheduled.swap(true, Ordering::AcqRel) {
            ready.push_back(entry);
        }
    }
}

/// Classifies one window and hands its output to the publisher; false once the publisher is
/// gone.
fn classify_one(
    scratch: &mut crate::exec::Scratch,
    classifier: &mut Classifier,
    entry: &StreamEntry,
    item: Queued,
    out: &Sender<Output>,
) -> bool {
    if entry.gap_pending.swap(false, Ordering::AcqRel) {
        classifier.mark_gap();
    }
    match classifier.classify(scratch, &item.window, item.received) {
        Ok(output) => {
            let m = &entry.metrics;
            entry.counters.inferences.fetch_add(1, Ordering::Relaxed);
            m.inferences.increment(1);
            m.inference_latency.record(output.latency.compute_us * 1e-6);
            m.end_to_end_latency
                .record(item.received.elapsed().as_secs_f64());
            m.synaptic_ops.increment(output.stats.synaptic_ops);
            m.energy.increment(output.stats.energy_pj * 1e-12);
            m.queue_depth.set(entry.queue_rx.len() as f64);
            for layer in output.stats.layers.iter().filter(|l| l.neurons > 0) {
                metrics::gauge!(t::LAYER_FIRING_RATE, "stream" => entry.id.clone(), "layer" => layer.name.clone())
                    .set(layer.firing_rate);
            }
            if let Ok(mut last) = entry.last.lock() {
                *last = Some(LastOutput {
                    window: output.window,
                    class: output.class.clone(),
                    logit: output.top_k.first().map_or(0.0, |s| s.logit),
                    label: output.label.clone(),
                    gap: output.gap,
                    compute_us: output.latency.compute_us,
                    end_to_end_us: output.latency.end_to_end_us,
                });
            }
            out.send(output).is_ok()
        }
        Err(e) => {
            tracing::error!(stream = %entry.id, error = %e, "classification failed");
            true
        }
    }
}
