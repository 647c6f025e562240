//! Per-stream state: what one stream carries from timestep to timestep against one plan.
//! Made by [`crate::exec::Plan::new_state`] and usable only with that plan.

use crate::exec::sparse::region::Region;

/// One stream's state: the membranes of every spiking neuron, the output accumulator and how
/// many timesteps each covers, and (for the event-driven executor) which neurons the input has
/// reached. No executor buffers (those are the worker's [`crate::exec::Scratch`]), so its size
/// is about 4 bytes per neuron.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// The plan that made this state ([`crate::exec::Plan`]'s id).
    pub(crate) plan: u64,
    /// `U[t]` of every neuron, node after node, each node NHWC (see
    /// [`crate::snn::Network::membrane_range`]). For the event-driven executor, the neurons
    /// outside a node's region hold stale values: their true membrane is the background's
    /// ([`crate::exec::Plan::membranes`] fills them in).
    pub(crate) membranes: Vec<f32>,
    /// Σ over timesteps since [`State::reset_output`] of the `Output` node's input, per class
    /// (f32, added in time order).
    pub(crate) output_sum: Vec<f32>,
    /// Timesteps in `output_sum`.
    pub(crate) output_steps: u32,
    /// Timesteps since [`State::reset`] (the membranes' age: indexes the background).
    pub(crate) steps: u64,
    /// Event-driven executor: per node, the pixels the input has reached since the reset
    /// (allocated only for neuron nodes whose background is tracked; empty otherwise).
    pub(crate) regions: Vec<Region>,
}

impl State {
    /// A state at rest for a plan with `neurons` neurons, `classes` outputs and the given
    /// per-node regions.
    pub(crate) fn new(plan: u64, neurons: usize, classes: usize, regions: Vec<Region>) -> Self {
        Self {
            plan,
            membranes: vec![0.0; neurons],
            output_sum: vec![0.0; classes],
            output_steps: 0,
            steps: 0,
            regions,
        }
    }

    /// Back to rest (membranes 0, nothing reached) and an empty output, keeping the
    /// allocations: the start of a new recording, or of each window when windows are
    /// classified independently (what training sees).
    pub fn reset(&mut self) {
        self.membranes.fill(0.0);
        for region in &mut self.regions {
            region.reset();
        }
        self.steps = 0;
        self.reset_output();
    }

    /// Empties the output accumulator and its timestep count only: the membranes carry on
    /// (continuous membranes across windows).
    pub fn reset_output(&mut self) {
        self.output_sum.fill(0.0);
        self.output_steps = 0;
    }

    /// The logits: the output accumulator divided by the timesteps since the last
    /// [`State::reset_output`] (zeros before the first timestep).
    pub fn logits(&self) -> Vec<f32> {
        let t = self.output_steps.max(1) as f32;
        self.output_sum.iter().map(|&s| s / t).collect()
    }

    /// Timesteps since the last [`State::reset`].
    pub fn timesteps(&self) -> u64 {
        self.steps
    }

    /// Timesteps since the last [`State::reset_output`] (what the logits average over).
    pub fn output_timesteps(&self) -> u32 {
        self.output_steps
    }

    /// Heap bytes held: 4 per neuron, 4 per class, and for the event-driven executor about
    /// 5 per pixel of each tracked neuron node.
    pub fn heap_bytes(&self) -> usize {
        (self.membranes.capacity() + self.output_sum.capacity()) * std::mem::size_of::<f32>()
            + self.regions.capacity() * std::mem::size_of::<Region>()
            + self.regions.iter().map(Region::heap_bytes).sum::<usize>()
    }
}
