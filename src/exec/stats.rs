//! Spike statistics of one inference: per node firing rate, spike count, synaptic operations,
//! dense-equivalent MACs, work actually performed, neuron updates; an energy estimate; and the
//! optional quantization error with and without MPR, with histograms of the membrane potential
//! before firing and of its rectified value.
//!
//! Definitions (summed over the timesteps of one classification):
//! - **synaptic ops** of a weighted node: for every nonzero input value, the number of weights
//!   it meets (its fan-out: output positions covering it × Cout for a conv, Out for a linear).
//!   This depends only on the activity, not on the executor.
//! - **dense MACs**: what a dense executor multiplies: every output value × the kernel taps that
//!   fall inside the input (padding excluded).
//! - **performed ops**: the multiply-accumulates this executor actually did (reference: the
//!   dense MACs; dense: every GEMM term, zero padding included; event-driven: only what its
//!   events triggered).
//! - **neuron updates** performed versus total (neurons × T).
//! - **energy**: 0.9 pJ per accumulate (synaptic op) and 4.6 pJ per MAC (45 nm figures, as in
//!   the SNN literature). The first weighted layer sees real-valued event counts, so its
//!   synaptic ops are priced as MACs; every later layer's as accumulates.

use crate::exec::ConvNode;
use crate::snn::network::{Network, Op};
use crate::snn::neuron::phi;

/// Energy of one accumulate, picojoules.
pub const ENERGY_AC_PJ: f64 = 0.9;
/// Energy of one multiply-accumulate, picojoules.
pub const ENERGY_MAC_PJ: f64 = 4.6;

/// Counters of one node over one classification.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct NodeStats {
    /// Node index.
    pub node: usize,
    /// Node name.
    pub name: String,
    /// Op name.
    pub op: &'static str,
    /// Neurons in a `Neuron` node, else 0.
    pub neurons: u64,
    /// Spikes emitted (Neuron nodes).
    pub spikes: u64,
    /// Synaptic operations (weighted nodes).
    pub synaptic_ops: u64,
    /// Dense-equivalent MACs (weighted nodes).
    pub dense_macs: u64,
    /// Accumulates this executor performed (weighted nodes).
    pub performed_ops: u64,
    /// Neuron updates performed.
    pub neuron_updates: u64,
    /// Neuron updates a dense executor does (neurons × T).
    pub neuron_updates_total: u64,
    /// Whether this node's synaptic ops are priced as MACs (the first weighted layer).
    pub priced_as_mac: bool,
}

/// Bins of the membrane-potential histograms.
pub const HISTOGRAM_BINS: usize = 100;
/// Lower edge of the first histogram bin.
pub const HISTOGRAM_MIN: f32 = -1.0;
/// Upper edge of the last histogram bin (exclusive).
pub const HISTOGRAM_MAX: f32 = 2.0;

/// A fixed-bin histogram: [`HISTOGRAM_BINS`] equal bins over
/// [[`HISTOGRAM_MIN`], [`HISTOGRAM_MAX`]), plus counts below and above that range.
/// Fixed bins keep observing allocation-free, and let windows and recordings be summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Histogram {
    /// Count per bin; bin `i` holds values in [min + i·w, min + (i + 1)·w), w = (max − min) / bins.
    #[serde(serialize_with = "serialize_counts")]
    pub counts: [u64; HISTOGRAM_BINS],
    /// Values below [`HISTOGRAM_MIN`].
    pub underflow: u64,
    /// Values at or above [`HISTOGRAM_MAX`], and NaN (so every observation is counted once).
    pub overflow: u64,
}

// serde derives arrays only up to 32 elements.
fn serialize_counts<S: serde::Serializer>(
    counts: &[u64; HISTOGRAM_BINS],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(counts.iter())
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: [0; HISTOGRAM_BINS],
            underflow: 0,
            overflow: 0,
        }
    }
}

impl Histogram {
    /// Width of one bin.
    pub const BIN_WIDTH: f64 =
        (HISTOGRAM_MAX as f64 - HISTOGRAM_MIN as f64) / HISTOGRAM_BINS as f64;

    /// Counts one value.
    #[inline]
    pub fn observe(&mut self, v: f32) {
        // In f64 so that bin edges such as −1 + k·0.03 land where their decimal value says.
        let x = (f64::from(v) - f64::from(HISTOGRAM_MIN)) / Self::BIN_WIDTH;
        if x < 0.0 {
            self.underflow += 1;
        } else if x < HISTOGRAM_BINS as f64 {
            self.counts[x as usize] += 1;
        } else {
            self.overflow += 1;
        }
    }

    /// Lower edge of bin `i`.
    pub fn bin_start(i: usize) -> f64 {
        let range = f64::from(HISTOGRAM_MAX) - f64::from(HISTOGRAM_MIN);
        f64::from(HISTOGRAM_MIN) + i as f64 * range / HISTOGRAM_BINS as f64
    }

    /// Observations counted, in range or not.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum::<u64>() + self.underflow + self.overflow
    }

    /// Adds another histogram's counts to this one.
    pub fn add(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.underflow += other.underflow;
        self.overflow += other.overflow;
    }
}

/// Histograms of the membrane potential H before firing and of φ(H) (MPR), at one layer: the
/// InfLoR paper's Figures 4 and 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct MembraneHistograms {
    /// Of H.
    pub potential: Histogram,
    /// Of φ(H).
    pub rectified: Histogram,
}

impl MembraneHistograms {
    /// Adds another pair's counts to this one.
    pub fn add(&mut self, other: &MembraneHistograms) {
        self.potential.add(&other.potential);
        self.rectified.add(&other.rectified);
    }
}

/// Mean squared distance between the membrane potential before firing and the spike, without
/// and with MPR, at one `Neuron` node: mean (H − O)² and mean (φ(H) − O)²; and the histograms
/// of H and φ(H).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct QuantizationError {
    /// The node measured.
    pub node: usize,
    /// Neuron-timesteps observed.
    pub samples: u64,
    /// Σ (H − O)².
    pub sum_sq_plain: f64,
    /// Σ (φ(H) − O)².
    pub sum_sq_mpr: f64,
    /// Histograms of H and φ(H) (boxed: 1.6 kB that a run without the statistic never carries).
    pub histograms: Box<MembraneHistograms>,
}

impl QuantizationError {
    /// An empty accumulator for `node`.
    pub fn new(node: usize) -> Self {
        Self {
            node,
            ..Self::default()
        }
    }

    /// Adds one neuron-timestep: potential `h` before firing, spike `o`.
    #[inline]
    pub fn observe(&mut self, h: f32, o: f32) {
        let m = phi(h);
        self.histograms.potential.observe(h);
        self.histograms.rectified.observe(m);
        let (h, m, o) = (f64::from(h), f64::from(m), f64::from(o));
        self.samples += 1;
        self.sum_sq_plain += (h - o) * (h - o);
        self.sum_sq_mpr += (m - o) * (m - o);
    }

    /// Mean (H − O)².
    pub fn mean_plain(&self) -> f64 {
        self.sum_sq_plain / self.samples.max(1) as f64
    }

    /// Mean (φ(H) − O)².
    pub fn mean_mpr(&self) -> f64 {
        self.sum_sq_mpr / self.samples.max(1) as f64
    }
}

/// All counters of one classification.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct InferenceStats {
    /// Timesteps run.
    pub timesteps: u64,
    /// One entry per network node, by index.
    pub nodes: Vec<NodeStats>,
    /// Quantization error, when requested.
    pub quantization: Option<QuantizationError>,
}

impl InferenceStats {
    /// Zeroed counters for `network`, with the static fields (names, neurons, which layer is
    /// priced as MAC) filled in.
    pub fn new(network: &Network) -> Self {
        let first_weighted = network.nodes().iter().position(|n| n.op.is_weighted());
        let nodes = network
            .nodes()
            .iter()
            .enumerate()
            .map(|(i, n)| NodeStats {
                node: i,
                name: n.name.clone(),
                op: n.op.name(),
                neurons: if matches!(n.op, Op::Neuron(_)) {
                    n.shape.len() as u64
                } else {
                    0
                },
                priced_as_mac: Some(i) == first_weighted,
                ..NodeStats::default()
            })
            .collect();
        Self {
            timesteps: 0,
            nodes,
            quantization: None,
        }
    }

    /// Firing rate of a node: spikes / (neurons × T) (0 for non-neuron nodes).
    pub fn firing_rate(&self, node: usize) -> f64 {
        self.nodes.get(node).map_or(0.0, |n| {
            let denom = n.neurons * self.timesteps;
            if denom == 0 {
                0.0
            } else {
                n.spikes as f64 / denom as f64
            }
        })
    }

    /// Spikes over all neuron nodes.
    pub fn total_spikes(&self) -> u64 {
        self.nodes.iter().map(|n| n.spikes).sum()
    }

    /// Neurons over all neuron nodes.
    pub fn total_neurons(&self) -> u64 {
        self.nodes.iter().map(|n| n.neurons).sum()
    }

    /// Mean firing rate over all hidden neurons.
    pub fn mean_firing_rate(&self) -> f64 {
        let denom = self.total_neurons() * self.timesteps;
        if denom == 0 {
            0.0
        } else {
            self.total_spikes() as f64 / denom as f64
        }
    }

    /// Synaptic ops over all weighted nodes.
    pub fn total_synaptic_ops(&self) -> u64 {
        self.nodes.iter().map(|n| n.synaptic_ops).sum()
    }

    /// Dense MACs over all weighted nodes.
    pub fn total_dense_macs(&self) -> u64 {
        self.nodes.iter().map(|n| n.dense_macs).sum()
    }

    /// Accumulates performed over all weighted nodes.
    pub fn total_performed_ops(&self) -> u64 {
        self.nodes.iter().map(|n| n.performed_ops).sum()
    }

    /// Neuron updates performed / total, over all neuron nodes.
    pub fn neuron_updates(&self) -> (u64, u64) {
        self.nodes.iter().fold((0, 0), |(a, b), n| {
            (a + n.neuron_updates, b + n.neuron_updates_total)
        })
    }

    /// Estimated energy of the synaptic operations, picojoules.
    pub fn energy_pj(&self) -> f64 {
        self.nodes
            .iter()
            .map(|n| {
                let price = if n.priced_as_mac {
                    ENERGY_MAC_PJ
                } else {
                    ENERGY_AC_PJ
                };
                n.synaptic_ops as f64 * price
            })
            .sum()
    }

    /// Estimated energy of the same network run as an ANN: every dense MAC at 4.6 pJ.
    pub fn dense_energy_pj(&self) -> f64 {
        self.total_dense_macs() as f64 * ENERGY_MAC_PJ
    }
}

/// How many weights one input value meets, per input position: for a conv, the output
/// positions whose window covers it (separable per axis) times Cout; for a linear, Out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanOut {
    /// Per input row: output rows covering it.
    pub rows: Vec<u64>,
    /// Per input column: output columns covering it.
    pub cols: Vec<u64>,
    /// Input channels (the NHWC index divides by this).
    pub in_channels: usize,
    /// Weights met per covering output position.
    pub per_position: u64,
}

impl FanOut {
    /// The fan-out table of weighted node `node` (None for other nodes).
    pub fn of(network: &Network, node: usize) -> Option<Self> {
        if let Some(c) = ConvNode::of(network, node) {
            let g = &c.geometry;
            let cover = |len, out, k| cover(len, out, k, g.stride, g.padding);
            return Some(Self {
                rows: cover(g.in_height, g.out_height, g.kernel_height),
                cols: cover(g.in_width, g.out_width, g.kernel_width),
                in_channels: g.in_channels,
                per_position: c.out_channels as u64,
            });
        }
        let n = network.nodes().get(node)?;
        let input = network.nodes().get(*n.inputs.first()?)?.shape;
        match &n.op {
            Op::Linear { out_features, .. } => Some(Self {
                rows: vec![1],
                cols: vec![1; input.len()],
                in_channels: 1,
                per_position: *out_features as u64,
            }),
            _ => None,
        }
    }

    /// Synaptic ops triggered by the nonzero values of an NHWC input buffer.
    pub fn synaptic_ops(&self, input: &[f32]) -> u64 {
        let mut ops = 0u64;
        let row_len = self.cols.len() * self.in_channels;
        for (y, row) in input.chunks_exact(row_len.max(1)).enumerate() {
            let ry = self.rows.get(y).copied().unwrap_or(0);
            if ry == 0 {
                continue;
            }
            for (x, pixel) in row.chunks_exact(self.in_channels.max(1)).enumerate() {
                let nonzero = pixel.iter().filter(|v| **v != 0.0).count() as u64;
                ops += nonzero * ry * self.cols.get(x).copied().unwrap_or(0);
            }
        }
        ops * self.per_position
    }
}

/// For each input index along one axis, how many output indices' windows cover it.
fn cover(len: usize, out: usize, k: usize, stride: usize, padding: usize) -> Vec<u64> {
    let mut counts = vec![0u64; len];
    for o in 0..out {
        for t in 0..k {
            let pos = (o * stride + t) as isize - padding as isize;
            if pos >= 0 && (pos as usize) < len {
                counts[pos as usize] += 1;
            }
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantization_error_of_a_spike_exactly_at_one_is_zero() {
        let mut q = QuantizationError::new(3);
        q.observe(1.0, 1.0);
        q.observe(0.0, 0.0);
        assert_eq!(q.mean_plain(), 0.0);
        assert_eq!(q.mean_mpr(), 0.0);
        q.observe(0.4, 0.0);
        // φ pulls 0.4 toward 0, so MPR's error is smaller.
        assert!(q.mean_mpr() < q.mean_plain());
        assert!((q.sum_sq_plain - 0.16).abs() < 1e-7);
    }

    #[test]
    fn histograms_count_every_observation_once_in_the_right_bin() {
        let mut h = Histogram::default();
        // Bin width 0.03: −1 + 0.03·k + 0.015 is the centre of bin k.
        for k in [0usize, 1, 33, 50, 99] {
            h.observe((f64::from(HISTOGRAM_MIN) + Histogram::BIN_WIDTH * (k as f64 + 0.5)) as f32);
        }
        for (k, &c) in h.counts.iter().enumerate() {
            assert_eq!(c, u64::from([0, 1, 33, 50, 99].contains(&k)), "bin {k}");
        }
        // Edges: the lower edge is in the first bin, the upper edge is overflow.
        h.observe(HISTOGRAM_MIN);
        assert_eq!(h.counts[0], 2);
        h.observe(HISTOGRAM_MAX);
        h.observe(-1.0001);
        h.observe(f32::NAN);
        h.observe(f32::INFINITY);
        h.observe(f32::NEG_INFINITY);
        assert_eq!((h.underflow, h.overflow), (2, 3));
        // 0.5 (Vth) is exactly 50 bins above −1.
        assert_eq!(Histogram::bin_start(50), 0.5);
        assert_eq!(h.total(), 11);
        let mut sum = h;
        sum.add(&h);
        assert_eq!(sum.total(), 22);
        assert_eq!(sum.counts[0], 4);
    }

    #[test]
    fn quantization_histograms_hold_h_and_phi_of_h() {
        let mut q = QuantizationError::new(0);
        let values = [-2.0f32, -0.3, 0.0, 0.2, 0.5, 0.75, 1.0, 1.4, 3.0];
        for &v in &values {
            q.observe(v, fire_of(v));
        }
        let hist = &q.histograms;
        assert_eq!(hist.potential.total(), values.len() as u64);
        assert_eq!(hist.rectified.total(), values.len() as u64);
        assert_eq!(q.samples, values.len() as u64);
        assert_eq!((hist.potential.underflow, hist.potential.overflow), (1, 1));
        // φ(−2) = 1 − 3^(1/3) ≈ −0.44 and φ(3) = 3^(1/3) ≈ 1.44 are inside the range.
        assert_eq!((hist.rectified.underflow, hist.rectified.overflow), (0, 0));
        let bin = |v: f32| ((f64::from(v) + 1.0) / Histogram::BIN_WIDTH) as usize;
        for &v in &values[1..8] {
            assert!(hist.potential.counts[bin(v)] >= 1, "H = {v}");
            assert!(hist.rectified.counts[bin(phi(v))] >= 1, "φ({v})");
        }
        // φ(0.2) is pulled toward 0: a lower bin than 0.2 itself.
        assert!(bin(phi(0.2)) < bin(0.2));
    }

    fn fire_of(h: f32) -> f32 {
        if h >= 0.5 { 1.0 } else { 0.0 }
    }

    #[test]
    fn cover_counts_windows() {
        // 5 inputs, 3-wide kernel, stride 1, padding 1: 5 outputs.
        assert_eq!(cover(5, 5, 3, 1, 1), vec![2, 3, 3, 3, 2]);
        // stride 2, padding 1 on 4 inputs: 2 outputs covering rows -1..1 and 1..3.
        assert_eq!(cover(4, 2, 3, 2, 1), vec![1, 2, 1, 1]);
    }
}
