//! [`Plan`]: everything one executor computes once per network, immutable and shared; and the
//! two kinds of mutable companions a plan makes, a per-stream [`State`] and a per-worker
//! [`Scratch`], each of which only runs against the plan that made it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::binner::SparseFrame;
use crate::exec::dense::{DensePlan, DenseScratch};
use crate::exec::pool::Pool;
use crate::exec::reference::{self, ReferenceScratch};
use crate::exec::sparse::{EventOptions, EventPlan, EventScratch};
use crate::exec::{ExecError, RunOptions, RunOutput, State, validate_run};
use crate::snn::network::Network;

/// Which executor a plan runs.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    /// Plain loops over every value and weight; slow, for checking.
    Reference,
    /// im2col + GEMM over every neuron and weight, layer by layer over the timesteps.
    Dense,
    /// The event-driven executor: only touches what receives spikes (the default).
    #[default]
    Event,
}

impl ExecutorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ExecutorKind; 3] = [Self::Reference, Self::Dense, Self::Event];

    /// The name used on the command line and in JSON (`reference`, `dense`, `event`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Reference => "reference",
            Self::Dense => "dense",
            Self::Event => "event",
        }
    }
}

impl std::fmt::Display for ExecutorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An executor name that is none of [`ExecutorKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown executor {0:?} (known: reference, dense, event)")]
pub struct UnknownExecutor(pub String);

impl std::str::FromStr for ExecutorKind {
    type Err = UnknownExecutor;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownExecutor(s.to_owned()))
    }
}

/// How a plan is built.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// The process's thread pool (None: every call runs on the caller's thread). The
    /// reference executor always runs on the caller's thread.
    pub pool: Option<Pool>,
    /// Timesteps the event-driven executor's background covers, computed when the plan is
    /// built: pass the model's T. A stream older than this (timesteps since its last
    /// [`State::reset`]) is computed everywhere from then on.
    pub background_steps: usize,
    /// The event-driven executor's knobs.
    pub event: EventOptions,
}

impl Default for PlanOptions {
    /// No pool, a background of 10 timesteps (the T of the built-in models), default event
    /// options.
    fn default() -> Self {
        Self {
            pool: None,
            background_steps: 10,
            event: EventOptions::default(),
        }
    }
}

/// Why a plan cannot be built for a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A weight tensor is too large for the event-driven executor's 32-bit row offsets.
    #[error(
        "node {node} ({name}) has {weights} weights; the event-driven executor handles fewer than 2^32"
    )]
    TooLarge {
        /// Node index.
        node: usize,
        /// Node name.
        name: String,
        /// Its weight count.
        weights: usize,
    },
}

/// The executor-specific part of a plan.
#[derive(Debug)]
enum Prepared {
    Reference,
    Dense(DensePlan),
    Event(Box<EventPlan>),
}

/// Everything one executor needs that depends only on the network, computed once when the
/// plan is built and never changed: f64 and reordered weights, fan-out tables, the
/// event-driven executor's background, and the thread-pool handle. Share it through its
/// `Arc` between every stream and worker that runs this network.
///
/// A plan makes the two mutable parts of a run: a [`State`] per stream and a [`Scratch`] per
/// worker thread. Each carries the id of the plan that made it and is refused by any other
/// plan, so a state can never run against another model, even one of the same shape.
#[derive(Debug)]
pub struct Plan {
    /// Unique among the plans of this process.
    id: u64,
    network: Arc<Network>,
    kind: ExecutorKind,
    pool: Option<Pool>,
    background_steps: usize,
    prepared: Prepared,
}

/// Source of plan ids; 0 is never handed out (the id of states made outside any plan).
static NEXT_PLAN: AtomicU64 = AtomicU64::new(1);

impl Plan {
    /// Builds the plan of `kind` for `network`: everything is computed here (for the
    /// event-driven executor this includes running the background over
    /// `options.background_steps` empty frames, on the pool if given).
    pub fn new(
        network: Arc<Network>,
        kind: ExecutorKind,
        options: PlanOptions,
    ) -> Result<Arc<Plan>, PlanError> {
        let prepared = match kind {
            ExecutorKind::Reference => Prepared::Reference,
            ExecutorKind::Dense => Prepared::Dense(DensePlan::new(&network)),
            ExecutorKind::Event => Prepared::Event(Box::new(EventPlan::new(
                &network,
                options.event,
                options.background_steps,
                options.pool.as_ref(),
            )?)),
        };
        Ok(Arc::new(Self {
            id: NEXT_PLAN.fetch_add(1, Ordering::Relaxed),
            network,
            kind,
            pool: options.pool,
            background_steps: options.background_steps,
            prepared,
        }))
    }

    /// The network this plan runs.
    pub fn network(&self) -> &Arc<Network> {
        &self.network
    }

    /// Which executor this plan runs.
    pub fn kind(&self) -> ExecutorKind {
        self.kind
    }

    /// The thread pool, if any.
    pub fn pool(&self) -> Option<&Pool> {
        self.pool.as_ref()
    }

    /// Timesteps the event-driven executor's background covers (see [`PlanOptions`]).
    pub fn background_steps(&self) -> usize {
        self.background_steps
    }

    /// The event-driven executor's part, for inspection (None for other kinds).
    pub fn event(&self) -> Option<&EventPlan> {
        match &self.prepared {
            Prepared::Event(e) => Some(e),
            _ => None,
        }
    }

    /// Bytes this plan holds besides the network itself.
    pub fn cache_bytes(&self) -> usize {
        match &self.prepared {
            Prepared::Reference => 0,
            Prepared::Dense(d) => d.cache_bytes(),
            Prepared::Event(e) => e.cache_bytes(),
        }
    }

    /// A new stream at rest: membranes and output accumulator (and, for the event-driven
    /// executor, which neurons the input has reached).
    pub fn new_state(&self) -> State {
        let regions = match &self.prepared {
            Prepared::Event(e) => e.new_regions(&self.network),
            _ => Vec::new(),
        };
        State::new(
            self.id,
            self.network.neuron_count(),
            self.network.classes(),
            regions,
        )
    }

    /// Buffers for one worker thread, shared by every stream it runs.
    pub fn new_scratch(&self) -> Scratch {
        let buffers = match &self.prepared {
            Prepared::Reference => Buffers::Reference(ReferenceScratch::default()),
            Prepared::Dense(_) => Buffers::Dense(DenseScratch::default()),
            Prepared::Event(e) => Buffers::Event(Box::new(e.new_scratch(&self.network))),
        };
        Scratch {
            plan: self.id,
            buffers,
            rest: None,
        }
    }

    /// Runs `frames` from rest on membranes the worker's `scratch` keeps, for streams whose
    /// windows are independent (membranes reset per window): such a stream then holds no
    /// membranes between its windows, so the memory of many streams is that of the workers.
    pub fn run_from_rest(
        &self,
        scratch: &mut Scratch,
        frames: &[SparseFrame],
        options: &RunOptions,
    ) -> Result<RunOutput, ExecError> {
        let mut state = match scratch.rest.take() {
            Some(s) if s.plan == self.id => s,
            _ => self.new_state(),
        };
        state.reset();
        let run = self.run(scratch, &mut state, frames, options);
        scratch.rest = Some(state);
        run
    }

    /// Runs `frames` as consecutive timesteps continuing from the state's membranes: it
    /// does **not** reset (call [`State::reset`] first for an independent classification,
    /// or only [`State::reset_output`] to keep the membranes). The output's logits are the
    /// state's accumulator over the timesteps since its last `reset_output`; its statistics
    /// cover this call only.
    pub fn run(
        &self,
        scratch: &mut Scratch,
        state: &mut State,
        frames: &[SparseFrame],
        options: &RunOptions,
    ) -> Result<RunOutput, ExecError> {
        self.check(scratch, state)?;
        validate_run(&self.network, frames, options)?;
        let pool = self.pool.as_ref();
        Ok(match (&self.prepared, &mut scratch.buffers) {
            (Prepared::Reference, Buffers::Reference(s)) => {
                reference::run(&self.network, s, state, frames, options)
            }
            (Prepared::Dense(d), Buffers::Dense(s)) => d.run(
                &self.network,
                s,
                state,
                frames,
                options,
                None,
                &mut |_, _, _| {},
                pool,
            ),
            (Prepared::Event(e), Buffers::Event(s)) => {
                e.run(&self.network, s, state, frames, options, pool)
            }
            _ => return Err(ExecError::ScratchMismatch),
        })
    }

    /// One timestep: the same as [`Plan::run`] with one frame.
    pub fn step(
        &self,
        scratch: &mut Scratch,
        state: &mut State,
        frame: &SparseFrame,
        options: &RunOptions,
    ) -> Result<RunOutput, ExecError> {
        self.run(scratch, state, std::slice::from_ref(frame), options)
    }

    /// Dense plans only: [`Plan::run`], calling `observer(node, t, values)` with every
    /// node's output at every timestep of the call (node by node, then t), and computing only
    /// the nodes up to `stop_after` when given (the logits and later membranes are then not
    /// advanced). For tools that measure per-layer activity, such as BN calibration.
    pub fn run_observed(
        &self,
        scratch: &mut Scratch,
        state: &mut State,
        frames: &[SparseFrame],
        options: &RunOptions,
        stop_after: Option<usize>,
        observer: &mut dyn FnMut(usize, usize, &[f32]),
    ) -> Result<RunOutput, ExecError> {
        self.check(scratch, state)?;
        validate_run(&self.network, frames, options)?;
        match (&self.prepared, &mut scratch.buffers) {
            (Prepared::Dense(d), Buffers::Dense(s)) => Ok(d.run(
                &self.network,
                s,
                state,
                frames,
                options,
                stop_after,
                observer,
                self.pool.as_ref(),
            )),
            _ => Err(ExecError::NotObservable(self.kind)),
        }
    }

    /// The exact membranes of `state` (node after node, NHWC), for inspection and tests.
    /// The event-driven executor never writes the neurons the input has not reached; their
    /// membranes are the background's, filled in here.
    pub fn membranes(&self, state: &State) -> Result<Vec<f32>, ExecError> {
        if state.plan != self.id {
            return Err(ExecError::StateMismatch);
        }
        Ok(match &self.prepared {
            Prepared::Event(e) => e.membranes(&self.network, state),
            _ => state.membranes.clone(),
        })
    }

    fn check(&self, scratch: &Scratch, state: &State) -> Result<(), ExecError> {
        if state.plan != self.id {
            return Err(ExecError::StateMismatch);
        }
        if scratch.plan != self.id {
            return Err(ExecError::ScratchMismatch);
        }
        Ok(())
    }
}

/// The executor-specific buffers of a scratch.
#[derive(Debug)]
enum Buffers {
    Reference(ReferenceScratch),
    Dense(DenseScratch),
    Event(Box<EventScratch>),
}

/// One worker thread's buffers for running a plan: every node's activations and the
/// executor's work areas. Made by [`Plan::new_scratch`] and refused by any other plan. It
/// carries nothing from one call to the next that a result depends on, so one scratch serves
/// any number of streams, in any interleaving.
#[derive(Debug)]
pub struct Scratch {
    /// The plan that made this scratch.
    plan: u64,
    buffers: Buffers,
    /// Membranes for [`Plan::run_from_rest`], reset before each use.
    rest: Option<State>,
}

impl Scratch {
    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        let rest = self.rest.as_ref().map_or(0, State::heap_bytes);
        rest + match &self.buffers {
            Buffers::Reference(s) => s.heap_bytes(),
            Buffers::Dense(s) => s.heap_bytes(),
            Buffers::Event(s) => s.heap_bytes(),
        }
    }

    /// The event-driven executor's buffers (None for other kinds), for its counters.
    pub fn event(&self) -> Option<&EventScratch> {
        match &self.buffers {
            Buffers::Event(s) => Some(s),
            _ => None,
        }
    }

    /// Wall time spent in each node since the last [`Scratch::reset_counters`] (event-driven
    /// executor with `profile` on; empty otherwise).
    pub fn node_times(&self) -> &[Duration] {
        self.event().map_or(&[], EventScratch::node_times)
    }

    /// Per node, the timesteps its conv ran as im2col + GEMM inside the event-driven
    /// executor since the last [`Scratch::reset_counters`] (empty for other kinds).
    pub fn gemm_steps(&self) -> &[u64] {
        self.event().map_or(&[], EventScratch::gemm_steps)
    }

    /// Forgets the node times and GEMM counts.
    pub fn reset_counters(&mut self) {
        if let Buffers::Event(s) = &mut self.buffers {
            s.reset_counters();
        }
    }
}
