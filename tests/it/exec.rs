//! Integration tests: the event-driven executor (`exec::sparse`) against the reference
//! executor — identical spikes at every layer and timestep, identical logits and identical
//! activity counters — on every built-in architecture, with random sparse inputs and with
//! real recordings.

use std::sync::Arc;

use inflor::binner::{FrameShape, SparseFrame};
use inflor::exec::reference::ReferenceExecutor;
use inflor::exec::sparse::{SparseExecutor, SparseOptions};
use inflor::exec::{Executor, Output, RunOptions};
use inflor::snn::{
    ArchSpec, Architecture, BatchNormConfig, Blueprint, Network, NeuronKind, Parameters, State,
};
use proptest::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A built-in architecture with random weights and random (non-trivial) batch norms, so the
/// folded biases drive some neurons without input.
fn random_network(arch: Architecture, h: usize, w: usize, seed: u64, kind: NeuronKind) -> Network {
    let spec = ArchSpec {
        arch,
        channels: 2,
        height: h,
        width: w,
        classes: 10,
    };
    let blueprint = Blueprint::new(spec).expect("blueprint");
    let mut params: Parameters = blueprint.random_parameters(seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    for (name, tensor) in params.iter_mut() {
        let fill: Option<(f32, f32)> = if name.ends_with(".running_mean") {
            Some((-0.3, 0.3))
        } else if name.ends_with(".running_var") {
            Some((0.5, 2.0))
        } else if name.ends_with("bn1.bias")
            || name.ends_with("bn2.bias")
            || name.ends_with(".bn.bias")
            || name.ends_with("downsample.1.bias")
        {
            Some((-0.2, 0.4))
        } else if name.ends_with("bn1.weight")
            || name.ends_with("bn2.weight")
            || name.ends_with(".bn.weight")
            || name.ends_with("downsample.1.weight")
        {
            Some((0.6, 1.6))
        } else {
            None
        };
        if let Some((lo, hi)) = fill {
            for v in &mut tensor.data {
                *v = rng.random_range(lo..hi);
            }
        }
    }
    blueprint
        .build(&params, kind, BatchNormConfig::default())
        .expect("build")
}

/// `t` frames of 2×h×w with about `density` of the values nonzero; values are event counts
/// (1–3) unless `binary`.
fn random_frames(
    h: usize,
    w: usize,
    t: usize,
    density: f64,
    binary: bool,
    seed: u64,
) -> Vec<SparseFrame> {
    let shape = FrameShape {
        channels: 2,
        height: h,
        width: w,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..t)
        .map(|_| {
            let dense: Vec<f32> = (0..shape.len())
                .map(|_| {
                    if rng.random_bool(density) {
                        if binary {
                            1.0
                        } else {
                            rng.random_range(1..4) as f32
                        }
                    } else {
                        0.0
                    }
                })
                .collect();
            SparseFrame::from_dense(shape, &dense)
        })
        .collect()
}

fn record() -> RunOptions {
    RunOptions {
        record_spikes: true,
        quantization_node: None,
    }
}

/// Runs both executors and checks every spike, the logits and the activity counters.
fn assert_same_as_reference(
    network: Network,
    frames: &[SparseFrame],
    options: SparseOptions,
) -> Output {
    let network = Arc::new(network);
    let mut state = State::new(&network);
    let expect = ReferenceExecutor::new()
        .run(&network, &mut state, frames, &record())
        .expect("reference run");
    let mut sparse = SparseExecutor::with_options(Arc::clone(&network), options).expect("prepare");
    let got = sparse
        .run(&network, &mut state, frames, &record())
        .expect("event run");
    let (Some(es), Some(gs)) = (&expect.spikes, &got.spikes) else {
        panic!("spikes not recorded");
    };
    assert_eq!(es.len(), gs.len());
    for (e, g) in es.iter().zip(gs) {
        assert_eq!(e.node, g.node);
        for (t, (a, b)) in e.steps.iter().zip(&g.steps).enumerate() {
            assert!(
                a == b,
                "node {} ({}) differs at t={t}: {} vs {} spikes",
                e.node,
                network.nodes()[e.node].name,
                a.len(),
                b.len()
            );
        }
    }
    for (a, b) in expect.logits.iter().zip(&got.logits) {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs().max(b.abs()),
            "logits {:?} vs {:?}",
            expect.logits,
            got.logits
        );
    }
    assert_eq!(expect.logits, got.logits, "logits are not bit-identical");
    for (e, g) in expect.stats.nodes.iter().zip(&got.stats.nodes) {
        assert_eq!(e.spikes, g.spikes, "spike count of {}", e.name);
        assert_eq!(e.synaptic_ops, g.synaptic_ops, "synaptic ops of {}", e.name);
        assert_eq!(e.dense_macs, g.dense_macs, "dense MACs of {}", e.name);
    }
    got
}

#[test]
fn tiny_48x48_matches_the_reference() {
    let network = random_network(Architecture::Tiny, 48, 48, 1, NeuronKind::Srif);
    let frames = random_frames(48, 48, 6, 0.05, false, 2);
    let out = assert_same_as_reference(network, &frames, SparseOptions::default());
    assert!(out.stats.total_spikes() > 0);
}

#[test]
fn every_architecture_matches_the_reference_on_16x16() {
    for arch in Architecture::ALL {
        let network = random_network(arch, 16, 16, 3, NeuronKind::Srif);
        let frames = random_frames(16, 16, 4, 0.1, false, 4);
        let out = assert_same_as_reference(network, &frames, SparseOptions::default());
        eprintln!(
            "{arch}: mean firing rate {:.3}",
            out.stats.mean_firing_rate()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    fn random_networks_and_inputs_match_the_reference(
        arch in prop::sample::select(Architecture::ALL.to_vec()),
        seed in any::<u64>(),
        density in 0.0f64..0.3,
        binary in any::<bool>(),
        threads in 1usize..3,
        kind in prop::sample::select(vec![NeuronKind::Srif, NeuronKind::IfHard, NeuronKind::LifHard { tau: 0.25 }]),
    ) {
        let network = random_network(arch, 16, 16, seed, kind);
        let frames = random_frames(16, 16, 3, density, binary, seed.wrapping_add(1));
        assert_same_as_reference(network, &frames, SparseOptions { threads, ..SparseOptions::default() });
    }
}

/// Events in one corner patch only: most of each early layer never sees an event, so the
/// event-driven executor must update fewer neurons than there are, and still agree exactly.
#[test]
fn localized_events_touch_few_neurons_and_match_the_reference() {
    for arch in Architecture::ALL {
        let (h, w) = (32, 32);
        let network = random_network(arch, h, w, 11, NeuronKind::Srif);
        let shape = FrameShape {
            channels: 2,
            height: h,
            width: w,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let frames: Vec<SparseFrame> = (0..4)
            .map(|_| {
                let mut dense = vec![0.0f32; shape.len()];
                for y in 12..18 {
                    for x in 12..18 {
                        if rng.random_bool(0.3) {
                            dense[shape.index(rng.random_range(0..2), y, x)] = 1.0;
                        }
                    }
                }
                SparseFrame::from_dense(shape, &dense)
            })
            .collect();
        let out = assert_same_as_reference(network, &frames, SparseOptions::default());
        let (done, total) = out.stats.neuron_updates();
        eprintln!("{arch}: neuron updates {done} of {total}");
    }
}
