//! Sessions: one stream from events to classifications. A [`Session`] owns the stream's
//! windowing ([`windows`]: the streaming binner and the grouping into T bins) and its
//! executor [`State`] against a shared [`Plan`], and produces one [`Output`] record per window
//! ([`output`]). `infer`, `eval`, `replay` and the daemon all run their streams through it.
//! Imports `model`, `exec`, `binner` and `event`.
//!
//! # Live-stream semantics
//!
//! By default the state is reset at each window, so every window is classified from rest, as
//! in training ([`Membranes::Reset`]). With [`Membranes::Continuous`] the membranes carry
//! across windows: each bin is run once, and a window's logits average the output layer over
//! the bins that are new since the previous window.
//!
//! # Threads
//!
//! A session runs on whichever thread calls it. [`Session::push`] uses buffers of its own;
//! [`Session::push_with`] borrows a worker's [`Scratch`], so that many sessions on one worker
//! share one set of executor buffers (the daemon does this).

pub mod output;
pub mod windows;

use std::sync::Arc;
use std::time::Instant;

use crate::event::Event;
use crate::exec::{ExecError, Plan, RunOptions, Scratch, State};
use crate::model::Model;

pub use output::{Latency, LayerStats, Output, QuantizationStats, Score, SpikeStats};
pub use windows::{DEFAULT_MAX_RECORDING_EVENTS, WindowError, WindowFrames, Windowing};

/// Whether membranes carry across windows.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Membranes {
    /// Reset at each window: every window is classified from rest (what training sees).
    #[default]
    Reset,
    /// Carried across windows: each bin runs once; a window averages its new bins' outputs.
    Continuous,
}

/// How a session runs.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionOptions {
    /// The stream's id, copied into every output.
    pub stream: String,
    /// How many classes each output lists in `top_k`.
    pub top_k: usize,
    /// Stream policies: a window every `hop` bins (None: every T bins, tumbling).
    pub hop: Option<usize>,
    /// Reset or continuous membranes.
    pub membranes: Membranes,
    /// Keep each window's frames in its output (for `--dump-frames` and the web view).
    pub keep_frames: bool,
    /// The most events a per-recording window may hold.
    pub max_recording_events: usize,
    /// The true class, when the source knows it; copied into every output.
    pub label: Option<String>,
    /// Measure the quantization error at this neuron node (InfLoR Table 3); slows the run.
    pub quantization_node: Option<usize>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            stream: String::new(),
            top_k: 5,
            hop: None,
            membranes: Membranes::Reset,
            keep_frames: false,
            max_recording_events: DEFAULT_MAX_RECORDING_EVENTS,
            label: None,
            quantization_node: None,
        }
    }
}

/// Why a session could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The plan was built for another model's network.
    #[error("the plan was built for another model")]
    PlanMismatch,
    /// The window policy, sensor size or hop does not work.
    #[error(transparent)]
    Window(#[from] WindowError),
    /// The executor refused a run.
    #[error(transparent)]
    Exec(#[from] ExecError),
}

/// The executor half of a session: one stream's state against a shared plan, turning windows
/// of frames into [`Output`] records. The daemon runs it on an executor worker thread while
/// the stream's [`Windowing`] runs where its events arrive.
#[derive(Debug)]
pub struct Classifier {
    plan: Arc<Plan>,
    classes: Arc<[String]>,
    /// The stream's membranes between windows; None when they reset per window, and the
    /// worker's own run each window from rest.
    state: Option<State>,
    stream: String,
    top_k: usize,
    keep_frames: bool,
    label: Option<String>,
    run_options: RunOptions,
    /// Events were lost since the last output.
    gap: bool,
    windows_out: u64,
}

impl Classifier {
    /// A classifier for one stream of `model` through `plan` (built for `model.network`).
    pub fn new(
        plan: Arc<Plan>,
        model: &Model,
        options: &SessionOptions,
    ) -> Result<Self, SessionError> {
        if !Arc::ptr_eq(plan.network(), &model.network) {
            return Err(SessionError::PlanMismatch);
        }
        Ok(Self {
            state: (options.membranes == Membranes::Continuous).then(|| plan.new_state()),
            classes: model.metadata.class_names.clone().into(),
            stream: options.stream.clone(),
            top_k: options.top_k.max(1),
            keep_frames: options.keep_frames,
            label: options.label.clone(),
            run_options: RunOptions {
                record_spikes: false,
                quantization_node: options.quantization_node,
            },
            gap: false,
            windows_out: 0,
            plan,
        })
    }

    /// The plan it runs.
    pub fn plan(&self) -> &Arc<Plan> {
        &self.plan
    }

    /// Windows classified so far.
    pub fn windows_out(&self) -> u64 {
        self.windows_out
    }

    /// Heap bytes of the stream's executor state (the membranes).
    pub fn state_bytes(&self) -> usize {
        self.state.as_ref().map_or(0, State::heap_bytes)
    }

    /// Marks that input of this stream was lost: the next output carries `gap: true`.
    pub fn mark_gap(&mut self) {
        self.gap = true;
    }

    /// Classifies one window on `scratch`; `received` is when the batch that completed it
    /// arrived (for the end-to-end latency).
    pub fn classify(
        &mut self,
        scratch: &mut Scratch,
        window: &WindowFrames,
        received: Instant,
    ) -> Result<Output, ExecError> {
        let started = Instant::now();
        let run = match &mut self.state {
            None => self
                .plan
                .run_from_rest(scratch, &window.frames, &self.run_options)?,
            Some(state) => {
                state.reset_output();
                let new = &window.frames[window.frames.len() - window.new_frames..];
                self.plan.run(scratch, state, new, &self.run_options)?
            }
        };
        let compute = started.elapsed();
        let top: Vec<Score> = run
            .top_k(self.top_k)
            .into_iter()
            .map(|(class, logit)| Score {
                class,
                name: self.class_name(class),
                logit,
            })
            .collect();
        let predicted = run.predicted();
        self.windows_out += 1;
        Ok(Output {
            stream: self.stream.clone(),
            window: window.index,
            start_us: window.start_us,
            end_us: window.end_us,
            events: window.events,
            predicted,
            class: self.class_name(predicted),
            top_k: top,
            logits: run.logits.clone(),
            stats: SpikeStats::of(&run.stats),
            latency: Latency {
                compute_us: compute.as_secs_f64() * 1e6,
                end_to_end_us: received.elapsed().as_secs_f64() * 1e6,
            },
            gap: std::mem::take(&mut self.gap),
            complete: window.complete,
            executor: self.plan.kind().name().to_owned(),
            quantization: run.stats.quantization.as_ref().map(QuantizationStats::of),
            label: self.label.clone(),
            frames: self.keep_frames.then(|| window.frames.clone()),
        })
    }

    fn class_name(&self, class: usize) -> String {
        self.classes
            .get(class)
            .cloned()
            .unwrap_or_else(|| format!("class{class}"))
    }
}

/// One stream: events in, one [`Output`] per classified window out.
#[derive(Debug)]
pub struct Session {
    windowing: Windowing,
    classifier: Classifier,
    /// Buffers for [`Session::push`]; made on first use, never by [`Session::push_with`].
    scratch: Option<Scratch>,
    options: SessionOptions,
    /// Windows completed by the current call, before they run.
    ready: Vec<WindowFrames>,
    /// When the last batch arrived (the end-to-end latency of windows closed by `finish`).
    last_received: Option<Instant>,
}

impl Session {
    /// A session for a stream from a sensor of `sensor` (width, height) pixels, running
    /// `model` through `plan` (which must have been built for `model.network`).
    pub fn new(
        plan: Arc<Plan>,
        model: &Model,
        sensor: (u16, u16),
        options: SessionOptions,
    ) -> Result<Self, SessionError> {
        let classifier = Classifier::new(plan, model, &options)?;
        let windowing = Windowing::new(
            &model.metadata.input,
            sensor,
            options.hop,
            options.max_recording_events,
        )?;
        Ok(Self {
            windowing,
            classifier,
            scratch: None,
            options,
            ready: Vec::new(),
            last_received: None,
        })
    }

    /// The session's options.
    pub fn options(&self) -> &SessionOptions {
        &self.options
    }

    /// The plan it runs.
    pub fn plan(&self) -> &Arc<Plan> {
        self.classifier.plan()
    }

    /// What the streaming binner counted (events off the sensor, late events...).
    pub fn binner_stats(&self) -> crate::binner::StreamStats {
        self.windowing.stream_stats()
    }

    /// Windows output so far.
    pub fn windows_out(&self) -> u64 {
        self.classifier.windows_out()
    }

    /// Heap bytes of the stream's executor state (the membranes).
    pub fn state_bytes(&self) -> usize {
        self.classifier.state_bytes()
    }

    /// Marks that events of this stream were lost (dropped under overload, decimated, or a
    /// reconnect): the next output carries `gap: true`.
    pub fn mark_gap(&mut self) {
        self.classifier.mark_gap();
    }

    /// The next events of the stream, which arrived now; appends the outputs of every
    /// window they complete to `out`. Uses the session's own executor buffers.
    pub fn push(&mut self, events: &[Event], out: &mut Vec<Output>) -> Result<(), SessionError> {
        let mut scratch = self.take_scratch();
        let result = self.push_with(&mut scratch, events, Instant::now(), out);
        self.scratch = Some(scratch);
        result
    }

    /// Ends the stream; appends the outputs of the windows it completes. Uses the session's
    /// own executor buffers.
    pub fn finish(&mut self, out: &mut Vec<Output>) -> Result<(), SessionError> {
        let mut scratch = self.take_scratch();
        let result = self.finish_with(&mut scratch, out);
        self.scratch = Some(scratch);
        result
    }

    /// [`Session::push`] on a worker's `scratch`, with the time the batch arrived (for the
    /// end-to-end latency).
    pub fn push_with(
        &mut self,
        scratch: &mut Scratch,
        events: &[Event],
        received: Instant,
        out: &mut Vec<Output>,
    ) -> Result<(), SessionError> {
        self.last_received = Some(received);
        self.ready.clear();
        self.windowing.push(events, &mut self.ready)?;
        self.run_ready(scratch, received, out)
    }

    /// [`Session::finish`] on a worker's `scratch`.
    pub fn finish_with(
        &mut self,
        scratch: &mut Scratch,
        out: &mut Vec<Output>,
    ) -> Result<(), SessionError> {
        self.ready.clear();
        self.windowing.finish(&mut self.ready)?;
        let received = self.last_received.unwrap_or_else(Instant::now);
        self.run_ready(scratch, received, out)
    }

    fn take_scratch(&mut self) -> Scratch {
        self.scratch
            .take()
            .unwrap_or_else(|| self.classifier.plan().new_scratch())
    }

    fn run_ready(
        &mut self,
        scratch: &mut Scratch,
        received: Instant,
        out: &mut Vec<Output>,
    ) -> Result<(), SessionError> {
        for window in &self.ready {
            out.push(self.classifier.classify(scratch, window, received)?);
        }
        self.ready.clear();
        Ok(())
    }
}
