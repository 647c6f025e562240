//! Per-stream state: the membranes of every spiking neuron and the output accumulator. Holds
//! no scratch buffers (those belong to an executor), so its size is 4 bytes per neuron plus
//! 4 bytes per class plus a few words.

use crate::snn::network::Network;

/// What one stream carries between timesteps. Create one per stream with [`State::new`];
/// many states share one `Network`.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// `U[t]` of every neuron, node after node, each node NHWC; see
    /// [`Network::membrane_range`].
    pub membranes: Vec<f32>,
    /// Σ over timesteps of the `Output` node's input, per class (f32, added in time order).
    pub output_sum: Vec<f32>,
    /// Timesteps run since the last reset.
    pub timesteps: u32,
}

impl State {
    /// A state at rest (all membranes 0) for `network`.
    pub fn new(network: &Network) -> Self {
        Self {
            membranes: vec![0.0; network.neuron_count()],
            output_sum: vec![0.0; network.classes()],
            timesteps: 0,
        }
    }

    /// Back to rest, keeping the allocations.
    pub fn reset(&mut self) {
        self.membranes.fill(0.0);
        self.output_sum.fill(0.0);
        self.timesteps = 0;
    }

    /// Whether this state was made for a network of this size.
    pub fn fits(&self, network: &Network) -> bool {
        self.membranes.len() == network.neuron_count() && self.output_sum.len() == network.classes()
    }

    /// The logits so far: the output sum divided by the number of timesteps (zeros before the
    /// first timestep).
    pub fn logits(&self) -> Vec<f32> {
        let t = self.timesteps.max(1) as f32;
        self.output_sum.iter().map(|&s| s / t).collect()
    }

    /// Heap bytes held: 4 per neuron plus 4 per class.
    pub fn heap_bytes(&self) -> usize {
        (self.membranes.capacity() + self.output_sum.capacity()) * std::mem::size_of::<f32>()
    }
}
