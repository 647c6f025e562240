//! Integration tests: the event-driven executor (`exec::sparse`) against the reference
//! executor. "Same" means identical spikes at every neuron layer and timestep, bit-identical
//! logits (the contract; the 1e-5 relative bound is checked first so a failure says how far
//! off it is), identical activity counters and an identical final state — on every built-in
//! architecture with random weights and random sparse inputs, with inputs confined to a patch
//! (so most neurons keep the background), and on real DVS recordings.

use std::sync::Arc;

use inflor::binner::{
    FrameBinner, FrameShape, FrameSpec, RecordingWindows, ResizeMode, SparseFrame,
};
use inflor::exec::dense::DenseExecutor;
use inflor::exec::reference::ReferenceExecutor;
use inflor::exec::sparse::{SparseExecutor, SparseOptions};
use inflor::exec::{ExecError, Executor, Output, RunOptions};
use inflor::format::{DecodeOptions, read_file};
use inflor::model::{ArchSpec, Architecture, BatchNormConfig, NodeOp, Parameters};
use inflor::snn::{Network, NeuronKind, State};
use proptest::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::support::shared_data;

/// A built-in architecture with random weights and random batch norms, so the folded biases
/// drive some neurons without any input (a non-trivial background).
fn random_network(arch: Architecture, h: usize, w: usize, seed: u64, kind: NeuronKind) -> Network {
    let spec = ArchSpec {
        arch,
        channels: 2,
        height: h,
        width: w,
        classes: 10,
    };
    let graph = spec.graph(BatchNormConfig::default()).expect("graph");
    let mut params: Parameters = graph.random_parameters(seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let (mut bn_biases, mut bn_weights) = (Vec::new(), Vec::new());
    for node in &graph.nodes {
        if let NodeOp::BatchNorm { weight, bias, .. } = &node.op {
            bn_weights.push(weight.clone());
            bn_biases.push(bias.clone());
        }
    }
    for (name, tensor) in params.iter_mut() {
        let range = if name.ends_with(".running_mean") {
            Some((-0.3, 0.3))
        } else if name.ends_with(".running_var") {
            Some((0.5, 2.0))
        } else if bn_biases.contains(name) {
            Some((-0.2, 0.4))
        } else if bn_weights.contains(name) {
            Some((0.6, 1.6))
        } else {
            None
        };
        if let Some((lo, hi)) = range {
            for v in &mut tensor.data {
                *v = rng.random_range(lo..hi);
            }
        }
    }
    graph.network(&params, kind).expect("build")
}

fn shape(h: usize, w: usize) -> FrameShape {
    FrameShape {
        channels: 2,
        height: h,
        width: w,
    }
}

/// `t` frames with each value nonzero with probability `density`: 1 if `binary`, else an
/// event count 1–3.
fn random_frames(
    h: usize,
    w: usize,
    t: usize,
    density: f64,
    binary: bool,
    seed: u64,
) -> Vec<SparseFrame> {
    let shape = shape(h, w);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..t)
        .map(|_| {
            let dense: Vec<f32> = (0..shape.len())
                .map(|_| match rng.random_bool(density) {
                    false => 0.0,
                    true if binary => 1.0,
                    true => rng.random_range(1..4) as f32,
                })
                .collect();
            SparseFrame::from_dense(shape, &dense)
        })
        .collect()
}

/// Frames whose events all fall in the square `[lo, hi)²`.
fn patch_frames(h: usize, w: usize, t: usize, lo: usize, hi: usize, seed: u64) -> Vec<SparseFrame> {
    let shape = shape(h, w);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..t)
        .map(|_| {
            let mut dense = vec![0.0f32; shape.len()];
            for y in lo..hi {
                for x in lo..hi {
                    if rng.random_bool(0.3) {
                        dense[shape.index(rng.random_range(0..2), y, x)] = 1.0;
                    }
                }
            }
            SparseFrame::from_dense(shape, &dense)
        })
        .collect()
}

fn recording() -> RunOptions {
    RunOptions {
        record_spikes: true,
        quantization_node: None,
    }
}

/// Checks that `got` (event-driven, final state `got_state`) is the same run as `expect`.
fn assert_same(
    network: &Network,
    expect: &Output,
    expect_state: &State,
    got: &Output,
    got_state: &State,
) {
    let (Some(es), Some(gs)) = (&expect.spikes, &got.spikes) else {
        panic!("spikes not recorded");
    };
    assert_eq!(es.len(), gs.len());
    for (e, g) in es.iter().zip(gs) {
        assert_eq!(e.node, g.node);
        assert_eq!(e.steps.len(), g.steps.len());
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
    assert_eq!(expect.stats.timesteps, got.stats.timesteps);
    for (e, g) in expect.stats.nodes.iter().zip(&got.stats.nodes) {
        assert_eq!(e.spikes, g.spikes, "spike count of {}", e.name);
        assert_eq!(e.synaptic_ops, g.synaptic_ops, "synaptic ops of {}", e.name);
        assert_eq!(e.dense_macs, g.dense_macs, "dense MACs of {}", e.name);
        assert_eq!(
            e.neuron_updates_total, g.neuron_updates_total,
            "neurons of {}",
            e.name
        );
        assert!(g.neuron_updates <= g.neuron_updates_total);
        assert!(g.performed_ops <= g.dense_macs);
    }
    // The membranes left behind (background ones included) are the reference's; `==` so a
    // zero's sign does not count.
    assert!(
        expect_state.membranes == got_state.membranes,
        "final membranes differ"
    );
    assert_eq!(expect_state.output_sum, got_state.output_sum);
    assert_eq!(expect_state.timesteps, got_state.timesteps);
}

/// Runs `expect_with` and the event-driven executor and checks they are the same.
fn check(
    network: Network,
    frames: &[SparseFrame],
    options: SparseOptions,
    expect_with: &mut dyn Executor,
) -> Output {
    let network = Arc::new(network);
    let mut expect_state = State::new(&network);
    let expect = expect_with
        .run(&network, &mut expect_state, frames, &recording())
        .expect("reference run");
    let mut sparse = SparseExecutor::with_options(Arc::clone(&network), options).expect("prepare");
    let mut state = State::new(&network);
    let got = sparse
        .run(&network, &mut state, frames, &recording())
        .expect("event run");
    assert_same(&network, &expect, &expect_state, &got, &state);
    // A second run through the same executor (warm buffers, cached background) agrees too.
    let again = sparse
        .run(&network, &mut state, frames, &recording())
        .expect("event run");
    assert_eq!(again, got, "second run differs");
    got
}

#[test]
fn tiny_48x48_matches_the_reference() {
    let network = random_network(Architecture::Tiny, 48, 48, 1, NeuronKind::Srif);
    let frames = random_frames(48, 48, 6, 0.05, false, 2);
    let out = check(
        network,
        &frames,
        SparseOptions::default(),
        &mut ReferenceExecutor::new(),
    );
    assert!(out.stats.total_spikes() > 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Random architecture, weights, neuron model, input density and kind (counts or
    /// spikes), thread count, region settings and the density above which convs run as
    /// im2col + GEMM: always the reference's run.
    #[test]
    fn random_networks_and_inputs_match_the_reference(
        arch in prop::sample::select(Architecture::ALL.to_vec()),
        seed in any::<u64>(),
        density in 0.0f64..0.3,
        binary in any::<bool>(),
        threads in 1usize..3,
        tracking in any::<bool>(),
        max_active_fraction in 0.0f64..1.0,
        dense_above in prop::sample::select(vec![0.0f64, 0.1, 0.5, 2.0]),
        kind in prop::sample::select(vec![
            NeuronKind::Srif,
            NeuronKind::IfHard,
            NeuronKind::LifHard { tau: 0.25 },
        ]),
    ) {
        let network = random_network(arch, 16, 16, seed, kind);
        let frames = random_frames(16, 16, 3, density, binary, seed.wrapping_add(1));
        let options = SparseOptions {
            threads,
            tracking,
            max_active_fraction,
            dense_above,
            ..SparseOptions::default()
        };
        check(network, &frames, options, &mut ReferenceExecutor::new());
    }
}

/// Events only in a patch: most neurons of the early layers never see one, so the executor
/// steps fewer neurons than there are (counted), keeps the background elsewhere, and still
/// agrees exactly — including the membranes it never stepped.
#[test]
fn events_in_a_patch_touch_few_neurons_and_match_the_reference() {
    for (arch, side) in [
        (Architecture::Tiny, 32),
        (Architecture::Resnet20, 24),
        (Architecture::VggSnn, 16),
        (Architecture::Resnet19, 16),
    ] {
        let network = random_network(arch, side, side, 11, NeuronKind::Srif);
        let frames = patch_frames(side, side, 4, side / 2 - 2, side / 2 + 1, 5);
        let out = check(
            network,
            &frames,
            SparseOptions::default(),
            &mut ReferenceExecutor::new(),
        );
        let (done, total) = out.stats.neuron_updates();
        assert!(done < total, "{arch}: {done} of {total} neuron updates");
    }
}

/// Forcing every conv onto the im2col + GEMM path, or never, gives the same run.
#[test]
fn dense_path_gives_the_same_bits() {
    for arch in [Architecture::Tiny, Architecture::Resnet20] {
        let network = random_network(arch, 24, 24, 13, NeuronKind::Srif);
        let frames = random_frames(24, 24, 3, 0.2, false, 13);
        let network = Arc::new(network);
        let mut outputs = Vec::new();
        for dense_above in [-1.0, 2.0] {
            let options = SparseOptions {
                dense_above,
                ..SparseOptions::default()
            };
            let mut ex =
                SparseExecutor::with_options(Arc::clone(&network), options).expect("prepare");
            let out = ex
                .run(&network, &mut State::new(&network), &frames, &recording())
                .expect("run");
            let dense_steps: u64 = ex.dense_steps().iter().sum();
            assert_eq!(
                dense_steps > 0,
                dense_above < 0.0,
                "{arch}: {dense_steps} dense steps"
            );
            outputs.push(out);
        }
        assert_eq!(outputs[0].spikes, outputs[1].spikes);
        assert_eq!(outputs[0].logits, outputs[1].logits);
    }
}

/// A run longer than the background covers switches to computing everything at that
/// timestep, giving never-reached neurons their background membranes: still the same run.
#[test]
fn runs_longer_than_the_background_match_the_reference() {
    for arch in [Architecture::Tiny, Architecture::Resnet20] {
        let network = random_network(arch, 24, 24, 17, NeuronKind::Srif);
        let frames = patch_frames(24, 24, 5, 10, 13, 17);
        let options = SparseOptions {
            max_background_steps: 2,
            ..SparseOptions::default()
        };
        let out = check(network, &frames, options, &mut ReferenceExecutor::new());
        let (done, total) = out.stats.neuron_updates();
        assert!(done < total, "{arch}: {done} of {total}");
    }
}

/// An empty input is exactly the background: no neuron of a tracked layer is stepped.
#[test]
fn empty_frames_step_only_untracked_layers() {
    let network = Arc::new(random_network(
        Architecture::Tiny,
        32,
        32,
        3,
        NeuronKind::Srif,
    ));
    let frames = vec![SparseFrame::empty(shape(32, 32)); 5];
    let mut reference_state = State::new(&network);
    let expect = ReferenceExecutor::new()
        .run(&network, &mut reference_state, &frames, &recording())
        .expect("reference");
    let mut ex = SparseExecutor::new(Arc::clone(&network)).expect("prepare");
    let mut state = State::new(&network);
    let got = ex
        .run(&network, &mut state, &frames, &recording())
        .expect("event");
    assert_same(&network, &expect, &reference_state, &got, &state);
    for n in network.neuron_nodes() {
        let row = &got.stats.nodes[n];
        if ex.tracks(n) {
            assert_eq!(row.neuron_updates, 0, "{} was stepped", row.name);
        }
    }
    assert!(
        network.neuron_nodes().any(|n| ex.tracks(n)),
        "no layer tracked"
    );
}

/// The quantization statistic observes every neuron, so it matches the reference's exactly.
#[test]
fn quantization_statistic_matches_the_reference() {
    let network = Arc::new(random_network(
        Architecture::Tiny,
        24,
        24,
        9,
        NeuronKind::Srif,
    ));
    let frames = random_frames(24, 24, 4, 0.1, false, 9);
    for node in network.neuron_nodes() {
        let options = RunOptions {
            record_spikes: false,
            quantization_node: Some(node),
        };
        let expect = ReferenceExecutor::new()
            .run(&network, &mut State::new(&network), &frames, &options)
            .expect("reference");
        let mut ex = SparseExecutor::new(Arc::clone(&network)).expect("prepare");
        let got = ex
            .run(&network, &mut State::new(&network), &frames, &options)
            .expect("event");
        assert_eq!(expect.stats.quantization, got.stats.quantization);
        assert!(got.stats.quantization.is_some_and(|q| q.samples > 0));
    }
}

/// Executors prepared for one network share its background; another network is refused.
#[test]
fn background_is_shared_and_networks_are_checked() {
    let network = Arc::new(random_network(
        Architecture::Tiny,
        16,
        16,
        4,
        NeuronKind::Srif,
    ));
    let frames = random_frames(16, 16, 3, 0.05, true, 4);
    let mut first = SparseExecutor::new(Arc::clone(&network)).expect("prepare");
    let out = first
        .run(
            &network,
            &mut State::new(&network),
            &frames,
            &RunOptions::default(),
        )
        .expect("run");
    let mut second = SparseExecutor::new(Arc::clone(&network)).expect("prepare");
    second.share_cache(&first).expect("same network");
    assert!(Arc::ptr_eq(first.background(), second.background()));
    let again = second
        .run(
            &network,
            &mut State::new(&network),
            &frames,
            &RunOptions::default(),
        )
        .expect("run");
    assert_eq!(out, again);
    // An equal copy is accepted; a different network is not.
    let copy = (*network).clone();
    assert!(
        first
            .run(
                &copy,
                &mut State::new(&copy),
                &frames,
                &RunOptions::default()
            )
            .is_ok()
    );
    let other = random_network(Architecture::Tiny, 16, 16, 5, NeuronKind::Srif);
    assert_eq!(
        first.run(
            &other,
            &mut State::new(&other),
            &frames,
            &RunOptions::default()
        ),
        Err(ExecError::NetworkMismatch)
    );
    let unrelated = SparseExecutor::new(Arc::new(other)).expect("prepare");
    assert_eq!(
        second.share_cache(&unrelated),
        Err(ExecError::NetworkMismatch)
    );
    // Bad frames are refused before anything runs.
    let wrong = random_frames(8, 8, 1, 0.1, true, 1);
    assert!(matches!(
        first.run(
            &network,
            &mut State::new(&network),
            &wrong,
            &RunOptions::default()
        ),
        Err(ExecError::FrameShape { .. })
    ));
}

/// Real MNIST-DVS recordings (DVS128, AEDAT 2.0), binned by the binner into T frames of
/// 2×48×48 with bilinear resizing (so inputs are real-valued, not counts): tiny is checked
/// against the reference executor, the larger networks against the dense executor (which
/// the snn tests check against the reference).
#[test]
fn real_recordings_match() {
    let files = [
        "mnist_dvs/mnist_0_scale04_0001_qt1.aedat",
        "mnist_dvs/mnist_0_scale08_0001_qt1.aedat",
        "mnist_dvs/mnist_0_scale16_0001_qt1.aedat",
    ];
    let (side, t) = (48u16, 6usize);
    let tiny = random_network(Architecture::Tiny, 48, 48, 21, NeuronKind::Srif);
    let resnet20 = random_network(Architecture::Resnet20, 48, 48, 22, NeuronKind::Srif);
    for file in files {
        let rec = read_file(&shared_data(file), None, &DecodeOptions::default()).expect("decode");
        assert!(!rec.events.is_empty(), "{file} has no events");
        let spec = FrameSpec {
            sensor_width: rec.info.width,
            sensor_height: rec.info.height,
            width: side,
            height: side,
            resize: ResizeMode::Bilinear,
            normalization: Default::default(),
        };
        let frames = FrameBinner::new(&spec)
            .expect("binner")
            .bin_recording(&rec.events, RecordingWindows::EqualCount { bins: t })
            .expect("bin");
        assert!(frames.iter().any(|f| f.nnz() > 0));
        let out = check(
            tiny.clone(),
            &frames,
            SparseOptions::default(),
            &mut ReferenceExecutor::new(),
        );
        assert!(out.stats.total_spikes() > 0);
        let dense = DenseExecutor::new(&resnet20);
        let options = SparseOptions {
            threads: 2,
            ..SparseOptions::default()
        };
        check(resnet20.clone(), &frames, options, &mut { dense });
    }
}
