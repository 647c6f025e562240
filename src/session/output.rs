//! The `Output` record: one classified window of one stream, as every sink publishes it
//! (JSON lines, the TCP subscriber endpoint, gRPC, NATS, the web view).

use serde::{Deserialize, Serialize};

use crate::binner::SparseFrame;
use crate::exec::{InferenceStats, MembraneHistograms, NodeStats, QuantizationError};

/// One classified window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// The stream's id (a file path, a camera address, a configured name).
    pub stream: String,
    /// The window number within the stream, from 0.
    pub window: u64,
    /// First timestamp the window covers (µs, the stream's clock).
    pub start_us: i64,
    /// End of the window (µs, exclusive).
    pub end_us: i64,
    /// Events binned into the window.
    pub events: u64,
    /// The predicted class (largest logit; the first on ties).
    pub predicted: usize,
    /// Its name.
    pub class: String,
    /// The largest logits, largest first.
    pub top_k: Vec<Score>,
    /// Every logit (mean of the output layer over the window's timesteps), in class order.
    pub logits: Vec<f32>,
    /// Spikes, synaptic operations and the energy estimate of this window.
    pub stats: SpikeStats,
    /// How long the window took.
    pub latency: Latency,
    /// Whether events of this stream were dropped (overload, decimation or a reconnect)
    /// between the previous output and this one, so the window may be missing input.
    pub gap: bool,
    /// Whether the window holds T complete bins (false for a window cut short by the end of
    /// the stream).
    pub complete: bool,
    /// The executor that ran it (`reference`, `dense`, `event`).
    pub executor: String,
    /// The quantization error with and without MPR at one neuron layer (InfLoR Table 3),
    /// when the session was asked to measure it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<QuantizationStats>,
    /// The true class name, when the source knows it (a labelled dataset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The window's input frames, when the session was asked to keep them (for `--dump-frames`
    /// and the web view). Never serialised.
    #[serde(skip)]
    pub frames: Option<Vec<SparseFrame>>,
}

impl Output {
    /// A copy without the frames, for consumers that only read the record: the frames are
    /// the bulk of a kept window and copying them per subscriber would cost for nothing.
    pub fn clone_without_frames(&self) -> Self {
        Self {
            stream: self.stream.clone(),
            window: self.window,
            start_us: self.start_us,
            end_us: self.end_us,
            events: self.events,
            predicted: self.predicted,
            class: self.class.clone(),
            top_k: self.top_k.clone(),
            logits: self.logits.clone(),
            stats: self.stats.clone(),
            latency: self.latency,
            gap: self.gap,
            complete: self.complete,
            executor: self.executor.clone(),
            quantization: self.quantization.clone(),
            label: self.label.clone(),
            frames: None,
        }
    }
}

/// Mean (H − O)² without and with MPR over the neuron-timesteps of one layer in one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantizationStats {
    /// The neuron node measured.
    pub node: usize,
    /// Neuron-timesteps observed.
    pub samples: u64,
    /// Mean (H − O)².
    pub plain: f64,
    /// Mean (φ(H) − O)².
    pub mpr: f64,
    /// Histograms of H and φ(H) over the same neuron-timesteps. Not serialised: the sinks
    /// publish the means; `inflor plot` reads the histograms in-process.
    #[serde(skip)]
    pub histograms: Box<MembraneHistograms>,
}

impl QuantizationStats {
    /// The summary of the executor's accumulator.
    pub fn of(q: &QuantizationError) -> Self {
        Self {
            node: q.node,
            samples: q.samples,
            plain: q.mean_plain(),
            mpr: q.mean_mpr(),
            histograms: q.histograms.clone(),
        }
    }
}

/// One class and its logit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Class index.
    pub class: usize,
    /// Class name.
    pub name: String,
    /// Its logit.
    pub logit: f32,
}

/// Work and activity of one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpikeStats {
    /// Timesteps run.
    pub timesteps: u64,
    /// Spikes fired by every neuron layer.
    pub spikes: u64,
    /// Spikes per neuron per timestep, over all neuron layers.
    pub firing_rate: f64,
    /// Synaptic operations: for each weighted layer, Σ over nonzero inputs of their fan-out.
    pub synaptic_ops: u64,
    /// What a dense executor multiplies and adds for the same window.
    pub dense_macs: u64,
    /// Accumulates this executor actually performed.
    pub performed_ops: u64,
    /// Neurons stepped.
    pub neuron_updates: u64,
    /// Neurons a dense executor steps.
    pub neuron_updates_total: u64,
    /// Energy estimate in picojoules: synaptic operations priced as accumulates
    /// ([`ENERGY_AC_PJ`](crate::exec::stats::ENERGY_AC_PJ)) in layers fed by spikes, and as multiply-accumulates
    /// ([`ENERGY_MAC_PJ`](crate::exec::stats::ENERGY_MAC_PJ)) in the first weighted layer, whose inputs are real event counts:
    /// the 45 nm CMOS figures the SNN literature uses (Horowitz, ISSCC 2014).
    pub energy_pj: f64,
    /// The same estimate for the network run densely, as an ANN (every MAC at
    /// [`ENERGY_MAC_PJ`](crate::exec::stats::ENERGY_MAC_PJ)).
    pub dense_energy_pj: f64,
    /// Per layer (weighted and neuron layers only).
    pub layers: Vec<LayerStats>,
}

impl SpikeStats {
    /// The summary of an executor's counters.
    pub fn of(stats: &InferenceStats) -> Self {
        let (neuron_updates, neuron_updates_total) = stats.neuron_updates();
        Self {
            timesteps: stats.timesteps,
            spikes: stats.total_spikes(),
            firing_rate: stats.mean_firing_rate(),
            synaptic_ops: stats.total_synaptic_ops(),
            dense_macs: stats.total_dense_macs(),
            performed_ops: stats.total_performed_ops(),
            neuron_updates,
            neuron_updates_total,
            energy_pj: stats.energy_pj(),
            dense_energy_pj: stats.dense_energy_pj(),
            layers: stats
                .nodes
                .iter()
                .filter(|n| n.neurons > 0 || n.dense_macs > 0)
                .map(|n| LayerStats::of(n, stats.timesteps))
                .collect(),
        }
    }
}

/// Work and activity of one layer in one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerStats {
    /// Node index in the inference network.
    pub node: usize,
    /// Node name.
    pub name: String,
    /// Op name.
    pub op: String,
    /// Neurons (neuron layers), else 0.
    pub neurons: u64,
    /// Spikes emitted (neuron layers).
    pub spikes: u64,
    /// Spikes per neuron per timestep (neuron layers), else 0.
    pub firing_rate: f64,
    /// Synaptic operations (weighted layers).
    pub synaptic_ops: u64,
    /// Dense-equivalent MACs (weighted layers).
    pub dense_macs: u64,
    /// Accumulates the executor performed (weighted layers).
    pub performed_ops: u64,
    /// Neuron updates performed.
    pub neuron_updates: u64,
    /// Neuron updates a dense executor does.
    pub neuron_updates_total: u64,
    /// Whether the synaptic ops are priced as MACs (real-valued input).
    pub priced_as_mac: bool,
}

impl LayerStats {
    fn of(n: &NodeStats, timesteps: u64) -> Self {
        let denominator = n.neurons.saturating_mul(timesteps);
        Self {
            node: n.node,
            name: n.name.clone(),
            op: n.op.to_owned(),
            neurons: n.neurons,
            spikes: n.spikes,
            firing_rate: if denominator > 0 {
                n.spikes as f64 / denominator as f64
            } else {
                0.0
            },
            synaptic_ops: n.synaptic_ops,
            dense_macs: n.dense_macs,
            performed_ops: n.performed_ops,
            neuron_updates: n.neuron_updates,
            neuron_updates_total: n.neuron_updates_total,
            priced_as_mac: n.priced_as_mac,
        }
    }
}

/// Time taken by one window, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Executor time for the window's timesteps.
    pub compute_us: f64,
    /// From the arrival of the batch holding the window's last event to the output being
    /// ready (binning, queueing and compute).
    pub end_to_end_us: f64,
}
